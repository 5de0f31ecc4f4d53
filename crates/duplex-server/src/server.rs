//! The accept loop and per-connection routing.
//!
//! Each accepted TCP connection gets its own task. The number of live
//! connections is bounded by a semaphore (`max_connections`); a connection
//! over the limit is answered 503 instead of being queued — at most
//! `REFUSAL_BACKLOG` (64) of those at a time, further ones are closed at once —
//! so a flood cannot grow memory. Shutdown: stop accepting, tell every connection
//! through a watch channel (each sends close 1001), and wait at most
//! `shutdown_grace` for them to finish.

use crate::config::ServerConfig;
use crate::echo;
use crate::web;
use duplex::tls::TlsAcceptor;
use duplex::{Handshake, WebSocket};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

/// How many over-the-limit connections may be answered 503 at once; more
/// are closed without an answer, so a flood costs no memory.
const REFUSAL_BACKLOG: usize = 64;

/// What every connection task shares.
struct Shared {
    config: ServerConfig,
    /// `config.ws` behind one `Arc`, handed to every connection (instead
    /// of a copy each).
    ws: Arc<duplex::Config>,
}

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    config: ServerConfig,
}

impl Server {
    /// Binds the listening socket.
    pub async fn bind(config: ServerConfig) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Server { listener, config })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then closes connections gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        let refusals = Arc::new(Semaphore::new(REFUSAL_BACKLOG));
        let config = Arc::new(Shared {
            ws: Arc::new(self.config.ws.clone()),
            config: self.config,
        });
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of descriptors and similar: back off briefly.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Over the limit, a few connections at a time are told
                    // so with a 503; beyond that they are dropped at once.
                    let permit = match limit.clone().try_acquire_owned() {
                        Ok(p) => p,
                        Err(_) => match refusals.clone().try_acquire_owned() {
                            Ok(p) => p,
                            Err(_) => {
                                warn!(%peer, "dropped: connection limit and refusal backlog full");
                                continue;
                            }
                        },
                    };
                    let admitted = Arc::ptr_eq(permit.semaphore(), &limit);
                    let config = config.clone();
                    let stop = stop_rx.clone();
                    let fut = async move {
                        handle(tcp, peer, config, stop, admitted).await;
                        drop(permit);
                    };
                    tasks.spawn(fut);
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        info!(connections = tasks.len(), "shutting down");
        let _ = stop_tx.send(true);
        let grace = config.config.shutdown_grace;
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tasks.abort_all();
        }
        Ok(())
    }
}

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<Shared>,
    stop: watch::Receiver<bool>,
    admitted: bool,
) {
    let started = Instant::now();
    let _ = tcp.set_nodelay(true);
    match &config.config.tls {
        None => serve_stream(tcp, peer, &config, stop, admitted, started).await,
        // Boxed: the TLS state is several KiB, and a future's size is that
        // of its largest branch, which plain connections would pay for too.
        Some(tls) => {
            Box::pin(serve_tls(
                tcp,
                tls.clone(),
                peer,
                &config,
                stop,
                admitted,
                started,
            ))
            .await
        }
    }
}

async fn serve_tls(
    tcp: TcpStream,
    tls: Arc<duplex::tls::rustls::ServerConfig>,
    peer: SocketAddr,
    config: &Shared,
    stop: watch::Receiver<bool>,
    admitted: bool,
    started: Instant,
) {
    // The TLS handshake counts against the opening-handshake time.
    let acceptor = TlsAcceptor::from(tls);
    match tokio::time::timeout(config.ws.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => serve_stream(stream, peer, config, stop, admitted, started).await,
        Ok(Err(e)) => info!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => info!(%peer, "TLS handshake timed out"),
    }
}

/// Serves one connection: the request is read and routed in a future of
/// its own, boxed and freed once the socket is open, so that a connection
/// waiting for messages holds only the socket and the echo loop's state.
async fn serve_stream<S>(
    stream: S,
    peer: SocketAddr,
    config: &Shared,
    stop: watch::Receiver<bool>,
    admitted: bool,
    started: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(mut ws) = Box::pin(route(stream, peer, config, admitted)).await else {
        return;
    };
    let stats = echo::run(&mut ws, stop).await;
    info!(
        %peer,
        path = "/echo",
        extensions = ws.extensions(),
        protocol = ws.protocol().unwrap_or(""),
        messages = stats.messages,
        bytes = stats.bytes,
        close_code = ws.close_code().map(|c| c.0),
        clean = ws.was_clean(),
        error = stats.error.as_deref().unwrap_or(""),
        ms = started.elapsed().as_millis() as u64,
        "connection closed"
    );
}

/// Reads one request and answers it: the page at `/`, 404 for unknown
/// paths, 503 over the connection limit; an upgrade at `/echo` (subject to
/// the policy) returns the open socket.
async fn route<S>(
    stream: S,
    peer: SocketAddr,
    config: &Shared,
    admitted: bool,
) -> Option<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hs = match Handshake::read(stream, config.ws.clone()).await {
        Ok(h) => h,
        Err(e) => {
            info!(%peer, error = %e, "bad request");
            return None;
        }
    };
    let path = hs.request().path().to_string();
    if !admitted {
        let _ = hs.respond(503, "server is at its connection limit").await;
        warn!(%peer, %path, status = 503, "refused: connection limit");
        return None;
    }
    let is_upgrade = hs.request().is_upgrade();
    match path.as_str() {
        "/" | "/index.html" if !is_upgrade => {
            let method = hs.request().method.clone();
            match method.as_str() {
                "GET" => {
                    let body = web::INDEX_HTML.as_bytes();
                    let _ = hs.respond_with(200, &web::page_headers(), body).await;
                }
                _ => {
                    let _ = hs.respond(405, "only GET is served here").await;
                }
            }
            info!(%peer, %path, %method, "page");
            None
        }
        "/echo" => match hs.upgrade(|req| config.config.policy.decide(req)).await {
            Ok(ws) => Some(ws),
            Err(e) => {
                info!(%peer, %path, error = %e, "upgrade refused");
                None
            }
        },
        _ => {
            let _ = hs.respond(404, "not found").await;
            info!(%peer, %path, status = 404, "not found");
            None
        }
    }
}
