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

/// Resident set size of process `pid`, in bytes.
fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU and memory of the server and of this process at one instant.
#[derive(Clone, Copy)]
pub(super) struct Sample {
    pub(super) at: Instant,
    pub(super) server_cpu: Option<f64>,
    pub(super) server_rss: Option<u64>,
    pub(super) own_cpu: Option<f64>,
}

pub(super) fn sample(server_pid: Option<u32>) -> Sample {
    let pid = server_pid.map(|p| p.to_string());
    Sample {
        at: Instant::now(),
        server_cpu: pid.as_deref().and_then(cpu_seconds),
        server_rss: pid.as_deref().and_then(rss_bytes),
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
        assert!(rss_bytes("self").unwrap() > 0);
    }
}
