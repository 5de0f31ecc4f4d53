//! How much a server's CPU per echoed 64 KiB message depends on where in a
//! page its receive buffer's data starts — nothing else changes.
//!
//! A plain blocking echo over loopback, no WebSocket library: the client
//! thread sends N masked 65,550-byte frames (one per connection), then reads
//! N 65,546-byte replies; the server thread reads each frame into one buffer
//! whose data starts at page offset O and writes back a 10-byte header and
//! the payload (at O + 14) with `writev`, as an echo server does. The
//! kernel copies that payload into the socket's page fragments with
//! `rep movsb` (on CPUs with FSRM), whose speed on some CPUs (AMD Zen)
//! depends on the distance between source and destination modulo 4 KiB.
//! Rounds interleave the offsets; prints the server thread's CPU per
//! message, median and every round (from /proc, 10 ms ticks over 2 s).
//!
//! usage: page-offset [CONNECTIONS=10] [ROUNDS=4]

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FRAME: usize = 65550;
const OFFSETS: [usize; 5] = [0, 48, 1024, 2048, 3072];

fn thread_cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    let rest = &s[s.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    ticks / 100.0
}

/// Server CPU µs per message with the buffer's data at page offset `offset`.
fn run(offset: usize, conns: usize, secs: f64) -> std::io::Result<f64> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let mut clients = Vec::new();
    for _ in 0..conns {
        let c = TcpStream::connect(addr)?;
        c.set_nodelay(true)?;
        clients.push(c);
    }
    let mut servers = Vec::new();
    for _ in 0..conns {
        let (s, _) = l.accept()?;
        s.set_nodelay(true)?;
        servers.push(s);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let client = std::thread::spawn(move || -> std::io::Result<()> {
        let mut frame = vec![7u8; FRAME];
        frame[0] = 0x82;
        frame[1] = 0xff;
        frame[2..10].copy_from_slice(&65536u64.to_be_bytes());
        let mut back = vec![0u8; FRAME - 4];
        while !st.load(Ordering::Relaxed) {
            for c in clients.iter_mut() {
                c.write_all(&frame)?;
            }
            for c in clients.iter_mut() {
                c.read_exact(&mut back)?;
            }
        }
        Ok(())
    });
    let mut store = vec![0u8; FRAME + 8192];
    let start = offset.wrapping_sub(store.as_ptr() as usize) & 4095;
    let header = [0x82u8, 127, 0, 0, 0, 0, 0, 1, 0, 0];
    let echo = |s: &mut TcpStream, buf: &mut [u8]| -> std::io::Result<()> {
        s.read_exact(buf)?;
        let mut iov = [IoSlice::new(&header), IoSlice::new(&buf[14..])];
        let mut rest = &mut iov[..];
        while !rest.is_empty() {
            let n = s.write_vectored(rest)?;
            IoSlice::advance_slices(&mut rest, n);
        }
        Ok(())
    };
    let t0 = Instant::now();
    let c0 = thread_cpu_s();
    let mut msgs = 0u64;
    while t0.elapsed() < Duration::from_secs_f64(secs) {
        for s in servers.iter_mut() {
            echo(s, &mut store[start..start + FRAME])?;
            msgs += 1;
        }
    }
    let cpu = thread_cpu_s() - c0;
    // The client is in its last round: answer it, then hang up.
    stop.store(true, Ordering::Relaxed);
    for s in servers.iter_mut() {
        echo(s, &mut store[start..start + FRAME])?;
    }
    drop(servers);
    client.join().expect("client thread")?;
    Ok(cpu / msgs as f64 * 1e6)
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let conns = args.next().and_then(Result::ok).unwrap_or(10);
    let rounds = args.next().and_then(Result::ok).unwrap_or(4);
    let mut res = vec![Vec::new(); OFFSETS.len()];
    for _ in 0..rounds {
        for (i, &o) in OFFSETS.iter().enumerate() {
            match run(o, conns, 2.0) {
                Ok(us) => res[i].push(us),
                Err(e) => {
                    eprintln!("page-offset: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    for (i, &o) in OFFSETS.iter().enumerate() {
        let mut v = res[i].clone();
        v.sort_by(f64::total_cmp);
        let all: Vec<String> = res[i].iter().map(|x| format!("{x:.1}")).collect();
        println!(
            "data at page offset {o:4} (payload at {:4}): {:.1} µs per message, rounds {}",
            o + 14,
            v[v.len() / 2],
            all.join(" ")
        );
    }
}
