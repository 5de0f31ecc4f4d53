//! Plain TCP fan-out: whatever one connection sends is written, as read,
//! to every other connection. The physical-limit reference for broadcast
//! (`duplex bench broadcast --raw-tcp-peer`): the publisher sends ready-made
//! WebSocket frames, and this server copies each read's bytes to every
//! subscriber socket with one write each — no parsing, no framing, no
//! queue unless a socket is full. One thread (current-thread runtime), so
//! the subscriber list needs no lock and every connection reads into the
//! same buffer: an idle connection holds its socket, a small struct and
//! its task.

use std::cell::RefCell;
use std::rc::Rc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A connection: its socket, and the bytes its socket had no room for.
struct Conn {
    id: u64,
    tcp: TcpStream,
    backlog: RefCell<Vec<u8>>,
    more: Notify,
}

type Conns = Rc<RefCell<Vec<Rc<Conn>>>>;

thread_local! {
    /// Where every connection reads (one thread: one read at a time).
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 64 << 10]);
}

/// Writes `data` to every connection but `from`: straight into the socket
/// when nothing is queued before it, else behind the queue.
fn fan_out(conns: &Conns, from: u64, data: &[u8]) {
    for c in conns.borrow().iter() {
        if c.id == from {
            continue;
        }
        let mut backlog = c.backlog.borrow_mut();
        if !backlog.is_empty() {
            backlog.extend_from_slice(data);
            continue;
        }
        let n = match c.tcp.try_write(data) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => continue,
        };
        if n < data.len() {
            backlog.extend_from_slice(&data[n..]);
            c.more.notify_one();
        }
    }
}

/// Writes the backlog out (and what joins it meanwhile).
async fn flush(c: &Conn) -> std::io::Result<()> {
    loop {
        c.tcp.writable().await?;
        let mut backlog = c.backlog.borrow_mut();
        match c.tcp.try_write(&backlog) {
            Ok(n) => {
                backlog.drain(..n);
                if backlog.is_empty() {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads one connection and fans out what it sends; flushes its backlog.
async fn serve(c: Rc<Conn>, conns: Conns) {
    loop {
        tokio::select! {
            r = c.tcp.readable() => {
                if r.is_err() {
                    break;
                }
                let open = BUF.with_borrow_mut(|buf| match c.tcp.try_read(buf) {
                    Ok(0) => false,
                    Ok(n) => {
                        fan_out(&conns, c.id, &buf[..n]);
                        true
                    }
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
                if !open {
                    break;
                }
            }
            _ = c.more.notified() => {
                if flush(&c).await.is_err() {
                    break;
                }
            }
        }
    }
    conns.borrow_mut().retain(|x| x.id != c.id);
}

fn main() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let listener = TcpListener::bind(duplex_bench_peers::listen_addr()).await?;
        eprintln!("tcp-fanout listening on {}", listener.local_addr()?);
        let conns: Conns = Rc::new(RefCell::new(Vec::new()));
        let mut next_id = 0u64;
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            next_id += 1;
            let c = Rc::new(Conn {
                id: next_id,
                tcp,
                backlog: RefCell::new(Vec::new()),
                more: Notify::new(),
            });
            conns.borrow_mut().push(c.clone());
            tokio::task::spawn_local(serve(c, conns.clone()));
        }
    })
}
