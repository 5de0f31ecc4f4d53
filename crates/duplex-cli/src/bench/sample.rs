//! CPU time and resident memory from /proc: the server's and the
//! generator's own, sampled at the edges of a measured window.

use std::time::Instant;

/// Clock ticks per second of /proc's CPU times (USER_HZ: 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU time (user + system, all threads) of process `pid` ("self" too), s.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may
    // contain spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS)
}

/// Resident memory of process `pid`, in bytes: all of it (`VmRSS`), and
/// its anonymous part (`RssAnon`: heap, stacks and other private memory,
/// without the pages of the binary and the libraries it maps).
fn memory(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((kb("VmRSS:")? * 1024, kb("RssAnon:")? * 1024))
}

/// Growth per item between two readings of a memory figure.
///
/// The anonymous figure is the one to compare servers by when the items
/// are connections: the first connections also page in code that was not
/// run before (the same few hundred KiB whatever their number), which
/// `VmRSS` counts and `RssAnon` does not.
pub(super) fn growth_per(before: Option<u64>, after: Option<u64>, items: u64) -> Option<f64> {
    before
        .zip(after)
        .filter(|_| items > 0)
        .map(|(a, b)| (b as f64 - a as f64) / items as f64)
}

/// CPU and memory of the server and of this process at one instant.
#[derive(Clone, Copy)]
pub(super) struct Sample {
    pub(super) at: Instant,
    pub(super) server_cpu: Option<f64>,
    pub(super) server_rss: Option<u64>,
    /// The anonymous part of `server_rss`.
    pub(super) server_anon: Option<u64>,
    pub(super) own_cpu: Option<f64>,
}

pub(super) fn sample(server_pid: Option<u32>) -> Sample {
    let pid = server_pid.map(|p| p.to_string());
    let mem = pid.as_deref().and_then(memory);
    Sample {
        at: Instant::now(),
        server_cpu: pid.as_deref().and_then(cpu_seconds),
        server_rss: mem.map(|m| m.0),
        server_anon: mem.map(|m| m.1),
        own_cpu: cpu_seconds("self"),
    }
}

/// Figures over the window between two samples.
pub(super) struct Window {
    pub(super) secs: f64,
    pub(super) server_cpu: Option<f64>,
    pub(super) own_cpu: Option<f64>,
}

pub(super) fn window(a: &Sample, b: &Sample) -> Window {
    let secs = (b.at - a.at).as_secs_f64();
    Window {
        secs,
        server_cpu: a.server_cpu.zip(b.server_cpu).map(|(x, y)| y - x),
        own_cpu: a.own_cpu.zip(b.own_cpu).map(|(x, y)| y - x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_is_readable() {
        assert!(cpu_seconds("self").is_some());
        let (rss, anon) = memory("self").unwrap();
        assert!(anon > 0 && anon <= rss, "{anon} of {rss}");
        // 64 MiB written are about 64 MiB more of anonymous memory. The
        // slack covers what the allocator may reuse from pages already
        // resident, or other tests free meanwhile: far less than 16 MiB.
        const WRITTEN: u64 = 64 << 20;
        let v = vec![1u8; WRITTEN as usize];
        let (_, grown) = memory("self").unwrap();
        assert!(grown >= anon + WRITTEN - (16 << 20), "{anon} -> {grown}");
        assert_eq!(v.iter().map(|&b| b as u64).sum::<u64>(), WRITTEN);
    }
}
