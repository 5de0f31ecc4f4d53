//! Plain TCP echo on one `epoll` loop (mio), without an async runtime:
//! the event-loop prototype of bench/notes.md. Each wake-up reads every
//! ready connection until it would block, into one 256 KiB buffer, and
//! writes each read back at once; bytes a socket cannot take wait for its
//! next writable event. No tasks, no wakers, no per-connection buffer
//! unless a socket is full. `tcp-echo` is the same echo on tokio.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    tcp: TcpStream,
    /// What the socket had no room for.
    backlog: Vec<u8>,
}

/// Writes `data` behind whatever is queued; queues what the socket
/// does not take. `false` once the connection failed.
fn send(c: &mut Conn, data: &[u8]) -> bool {
    if !c.backlog.is_empty() {
        c.backlog.extend_from_slice(data);
        return flush(c);
    }
    let mut at = 0;
    while at < data.len() {
        match c.tcp.write(&data[at..]) {
            Ok(0) => return false,
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    c.backlog.extend_from_slice(&data[at..]);
    true
}

/// Writes the backlog out as far as the socket takes it.
fn flush(c: &mut Conn) -> bool {
    while !c.backlog.is_empty() {
        match c.tcp.write(&c.backlog) {
            Ok(0) => return false,
            Ok(n) => drop(c.backlog.drain(..n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Reads until the socket would block, echoing each read.
fn echo(c: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        match c.tcp.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                if !send(c, &buf[..n]) {
                    return false;
                }
                if n < buf.len() {
                    // A short read: nothing more is queued (edge-triggered
                    // readiness would report new bytes again).
                    return true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(duplex_bench_peers::listen_addr())?;
    eprintln!("mio-echo listening on {}", listener.local_addr()?);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    let (mut tcp, _) = match listener.accept() {
                        Ok(a) => a,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("accept: {e}");
                            break;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let i = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    poll.registry().register(
                        &mut tcp,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    conns[i] = Some(Conn {
                        tcp,
                        backlog: Vec::new(),
                    });
                }
                continue;
            }
            let i = ev.token().0;
            let Some(c) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let mut open = true;
            if ev.is_writable() {
                open = flush(c);
            }
            if open && (ev.is_readable() || ev.is_read_closed()) {
                open = echo(c, &mut buf);
            }
            if !open {
                if let Some(mut c) = conns[i].take() {
                    let _ = poll.registry().deregister(&mut c.tcp);
                }
                free.push(i);
            }
        }
    }
}
