//! `duplex bench handshake`: connect, upgrade and close, as many per
//! second as possible.

use super::frame::{put_frame, OP_CLOSE};
use super::json::Json;
use super::open::{open, resolve, upgrade_request, Target};
use super::sample::{sample, window};
use super::shared::{progress, secs, Phase, Shared};
use super::{Common, Report};
use clap::Args;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Args, Debug)]
pub(super) struct HandshakeArgs {
    #[command(flatten)]
    common: Common,
    /// Handshakes in progress at once.
    #[arg(short = 'c', long, default_value_t = 16)]
    concurrency: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

/// A masked close frame with code 1000.
fn close_frame() -> Vec<u8> {
    let mut f = Vec::new();
    put_frame(&mut f, OP_CLOSE, &1000u16.to_be_bytes(), true);
    f
}

/// One cycle: connect, upgrade, send a close, and wait for the server to
/// end the connection (its close frame, then end of stream), so that the
/// server side closes first and keeps the TIME_WAIT state.
async fn handshake_once(t: &Target, request: &[u8], close: &[u8]) -> Result<Duration, String> {
    let start = Instant::now();
    let mut o = open(t, request).await?;
    let upgraded = start.elapsed();
    o.tcp
        .write_all(close)
        .await
        .map_err(|e| format!("send close: {e}"))?;
    let mut buf = [0u8; 256];
    let wait = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match o.tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    if wait.await.is_err() {
        return Err("server did not close within 5 s of the close frame".into());
    }
    Ok(upgraded)
}

pub(super) async fn handshake(a: HandshakeArgs) -> Result<Report, String> {
    let target = Rc::new(resolve(&a.common.url).await?);
    let request = Rc::new(upgrade_request(&target, false));
    let close = Rc::new(close_frame());
    let sh = Shared::new();
    eprintln!(
        "handshake: {} at a time against {}",
        a.concurrency, a.common.url
    );
    for _ in 0..a.concurrency.max(1) {
        let (target, request, close, sh) =
            (target.clone(), request.clone(), close.clone(), sh.clone());
        tokio::task::spawn_local(async move {
            while sh.phase.get() != Phase::Done {
                match handshake_once(&target, &request, &close).await {
                    Ok(d) => {
                        if sh.phase.get() == Phase::Measure {
                            sh.measured.set(sh.measured.get() + 1);
                            sh.hist.borrow_mut().record(d);
                        }
                        sh.total.set(sh.total.get() + 1);
                    }
                    Err(e) => {
                        sh.error(e);
                        // Do not spin on a server that refuses.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    let start = Instant::now();
    let measure_at = start + secs(a.warmup);
    let end = measure_at + secs(a.duration);
    progress("handshakes", &sh, measure_at).await;
    let s0 = sample(a.common.server_pid);
    sh.phase.set(Phase::Measure);
    progress("handshakes", &sh, end).await;
    // Handshakes still in flight finish outside the window and are not
    // counted; errors are counted up to here.
    let errors = sh.errors.get();
    sh.phase.set(Phase::Done);
    let s1 = sample(a.common.server_pid);
    let w = window(&s0, &s1);
    let n = sh.measured.get();
    let rate = n as f64 / w.secs;
    let h = sh.hist.borrow();
    let (p50, p99, p999) = (
        h.quantile_us(0.5),
        h.quantile_us(0.99),
        h.quantile_us(0.999),
    );
    let cpu_per = w.server_cpu.filter(|_| n > 0).map(|c| c * 1e6 / n as f64);
    let mut human = format!(
        "handshake x{}: {rate:.0} handshakes/s, upgrade p50 {p50:.0} us, p99 {p99:.0} us, {errors} errors",
        a.concurrency
    );
    if let Some(c) = cpu_per {
        let _ = write!(human, ", server {c:.1} us CPU/handshake");
    }
    if let Some(c) = w.own_cpu {
        let _ = write!(human, ", generator {:.0}% of a core", 100.0 * c / w.secs);
    }
    if errors > 0 {
        let _ = write!(human, "; first error: {}", sh.first_error());
    }
    let json = Json::new()
        .str("mode", "handshake")
        .str("label", &a.common.label)
        .str("url", &a.common.url)
        .int("concurrency", a.concurrency as u64)
        .num("duration_s", w.secs)
        .int("handshakes", n)
        .num("handshakes_per_s", rate)
        .num("p50_us", p50)
        .num("p99_us", p99)
        .num("p999_us", p999)
        .int("errors", errors)
        .str("first_error", &sh.first_error())
        .opt("server_cpu_us_per_handshake", cpu_per)
        .opt("server_cpu_util", w.server_cpu.map(|c| c / w.secs))
        .opt("generator_cpu_util", w.own_cpu.map(|c| c / w.secs))
        .finish();
    Ok(Report {
        human,
        json,
        ok: errors == 0 && n > 0,
    })
}
