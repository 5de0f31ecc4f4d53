//! The accept loop and per-connection routing.
//!
//! A connection's first request head is read by the WebSocket handshake
//! parser: an upgrade to `/echo` or `/connection/websocket` opens at once
//! (the fast path, which keeps an idle socket within its memory budget);
//! any other request is handed to hyper ([`crate::http`]) with the bytes
//! already read replayed, and hyper serves the connection from then on.
//!
//! Each accepted TCP connection gets its own task. The number of live
//! connections is bounded by a semaphore (`max_connections`); a connection
//! over the limit is answered 503 instead of being queued — at most
//! `REFUSAL_BACKLOG` (64) of those at a time, further ones are closed at once —
//! so a flood cannot grow memory. Shutdown: stop accepting, tell every connection
//! through the shared [`Shutdown`] signal (each sends close 1001), wait at
//! most `shutdown_grace` for every permit to come back, then tell the rest
//! to stop at once.

use crate::app::App;
use crate::config::ServerConfig;
use crate::echo::{self, EchoStats};
use crate::front::centrifuge;
use crate::http::{Rewind, UpgradeSlot};
use crate::router::{self, Route};
use crate::shared_tcp::SharedTcp;
use crate::shutdown::{Shutdown, Stage};
use duplex::tls::TlsAcceptor;
use duplex::{Handshake, WebSocket};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// How many over-the-limit connections may be answered 503 at once; more
/// are closed without an answer, so a flood costs no memory.
const REFUSAL_BACKLOG: usize = 64;

/// What every connection task shares.
struct Shared {
    app: Arc<App>,
    shutdown: Shutdown,
    /// Admitted connections (`max_connections` permits).
    limit: Semaphore,
    /// Connections being answered 503 (`REFUSAL_BACKLOG` permits).
    refusals: Semaphore,
    /// Connections per source address.
    per_ip: crate::per_ip::PerIp,
    /// When the server started: connections keep their start relative to it.
    epoch: Instant,
    /// Accepted sockets have `TCP_NODELAY` from the listener already.
    nodelay_inherited: bool,
    /// The metrics every connection touches, looked up once.
    counts: Counts,
}

/// The labelled metrics every HTTP/1.1 WebSocket touches, looked up once
/// (a family lookup takes a lock and hashes the label: three of them were
/// about 3 % of a handshake's user-space time).
struct Counts {
    /// WebSockets opened over HTTP/1.1.
    websockets_h1: prometheus_client::metrics::counter::Counter,
    /// Echo connections accepted, and open.
    echo_total: prometheus_client::metrics::counter::Counter,
    echo_open: prometheus_client::metrics::gauge::Gauge,
}

impl Counts {
    fn new(m: &crate::metrics::Metrics) -> Counts {
        Counts {
            websockets_h1: m
                .websockets
                .get_or_create(&crate::metrics::HttpLabel { http: HTTP1 })
                .clone(),
            echo_total: m.connections_total.get_or_create(&EchoGauge::LABEL).clone(),
            echo_open: m.connections.get_or_create(&EchoGauge::LABEL).clone(),
        }
    }
}

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds the listening socket. Fails on an unusable configuration
    /// (a key that does not parse) as well as on a socket error.
    pub async fn bind(config: ServerConfig) -> std::io::Result<Server> {
        let (listener, nodelay_inherited) = bind_nodelay(config.listen).await?;
        #[cfg(target_os = "linux")]
        if let Some(d) = config.defer_accept {
            // An optimisation only: a listener without it still works.
            if let Err(e) = listen_opts::set_defer_accept(&listener, d) {
                tracing::debug!(error = %e, "TCP_DEFER_ACCEPT not set");
            }
        }
        let mut config = config;
        if let (Some(tls), true) = (&config.tls, config.http2) {
            // HTTP/2 first: a browser then keeps one connection per origin
            // for the page, its API calls, EventSource streams and its
            // WebSockets (RFC 8441).
            let mut c = (**tls).clone();
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            config.tls = Some(Arc::new(c));
        }
        let app = App::new(config).await.map_err(std::io::Error::other)?;
        let max = app.config.max_connections;
        let shared = Arc::new(Shared {
            shutdown: Shutdown::new(),
            limit: Semaphore::new(max),
            refusals: Semaphore::new(REFUSAL_BACKLOG),
            per_ip: crate::per_ip::PerIp::new(app.config.per_ip.clone()),
            counts: Counts::new(app.hub.metrics()),
            app,
            epoch: Instant::now(),
            nodelay_inherited,
        });
        Ok(Server { listener, shared })
    }

    /// The application state (hub, metrics...), shared with the running
    /// server.
    pub fn app(&self) -> &Arc<App> {
        &self.shared.app
    }

    /// The server's connection count, observable while it runs (take it
    /// before [`run`](Self::run) consumes the server).
    pub fn connections(&self) -> Connections {
        Connections(self.shared.clone())
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then closes connections gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let shared = self.shared;
        let max = shared.app.config.max_connections;
        let upkeep = shared.app.spawn_upkeep();
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and similar: back off briefly.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Over the limit, a few connections at a time are told so with
            // a 503; beyond that they are dropped at once.
            let Some(slot) = Slot::take(&shared, peer) else {
                warn!(%peer, "dropped: connection limit and refusal backlog full");
                continue;
            };
            // The request is read and routed in a boxed future, freed once
            // the socket is open; the task then holds the session alone.
            let opening = Box::pin(open(tcp, peer, slot));
            tokio::spawn(Task::Opening { opening });
        }
        // Every connection holds a permit of `limit` or `refusals` until it
        // ends: all permits back means all connections are done.
        info!(
            connections = max - shared.limit.available_permits(),
            "shutting down"
        );
        shared.shutdown.advance(Stage::Closing);
        // Centrifugo connections wait on their alarms, not on the signal.
        shared.app.centrifuge.wake_all();
        let all_done = async {
            let a = shared
                .limit
                .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
                .await;
            let b = shared.refusals.acquire_many(REFUSAL_BACKLOG as u32).await;
            drop((a, b));
        };
        if tokio::time::timeout(shared.app.config.shutdown_grace, all_done)
            .await
            .is_err()
        {
            shared.shutdown.advance(Stage::Now);
            shared.app.centrifuge.wake_all();
        }
        upkeep.abort();
        Ok(())
    }
}

/// A running server's connection count ([`Server::connections`]): a
/// pointer to the server's shared state, cheap to clone.
#[derive(Clone)]
pub struct Connections(Arc<Shared>);

impl Connections {
    /// How many connections hold a place under `max_connections` now
    /// (those being refused with 503 are not counted). Once shutdown has
    /// begun the server gathers the places back as connections end, and
    /// the count reads as full.
    pub fn open(&self) -> usize {
        self.0.app.config.max_connections - self.0.limit.available_permits()
    }

    /// Completes once fewer than `max_connections` connections are open,
    /// so that the next one is admitted (unless another takes the place
    /// first). The signal a test or a health check waits for instead of
    /// retrying; during shutdown it waits until the server is done.
    pub async fn below_limit(&self) {
        // Only `Semaphore::close` makes `acquire` fail, and it is never
        // called; the permit goes back at once.
        let _ = self.0.limit.acquire().await;
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("open", &self.open())
            .finish()
    }
}

/// A connection's place under the limit (or in the refusal backlog),
/// given back when it ends. Holds the shared state too, so a connection
/// carries one pointer for both.
struct Slot {
    shared: Arc<Shared>,
    /// When the connection was accepted, in milliseconds since the server
    /// started (beside `state`, this fits where the padding was).
    started_ms: u32,
    /// Admitted (and whether its address is counted), or which refusal
    /// the connection gets. The count of a counted address is given back
    /// by whoever holds the peer's address beside the slot: the opening
    /// phase ([`IpCount`]), then the [`Session`] when it ends — an idle
    /// connection's task carries no copy of the address.
    state: SlotState,
    /// Counted in the open-echo-connections gauge, which `Drop` then
    /// decrements (a flag here instead of a gauge handle in every idle
    /// echo task).
    echo_open: bool,
}

/// Whether a connection was admitted, and whether its address is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum SlotState {
    Admitted,
    AdmittedCounted,
    /// `max_connections` reached: 503.
    Full,
    /// The address holds its share already: 503.
    IpFull,
    /// The address opens connections too fast: 429.
    IpTooFast,
}

impl Slot {
    fn take(shared: &Arc<Shared>, peer: SocketAddr) -> Option<Slot> {
        use crate::per_ip::Refusal;
        let mut counted = false;
        let mut state = SlotState::Admitted;
        if shared.per_ip.applies(peer.ip()) {
            match shared.per_ip.admit(peer.ip(), std::time::Instant::now()) {
                Ok(_) => {
                    counted = true;
                    state = SlotState::AdmittedCounted;
                }
                Err(Refusal::TooManyConnections) => state = SlotState::IpFull,
                Err(Refusal::TooFast) => state = SlotState::IpTooFast,
            }
        }
        if matches!(state, SlotState::Admitted | SlotState::AdmittedCounted) {
            match shared.limit.try_acquire() {
                Ok(p) => p.forget(),
                Err(_) => state = SlotState::Full,
            }
        }
        if !matches!(state, SlotState::Admitted | SlotState::AdmittedCounted) {
            if counted {
                shared.per_ip.release(crate::per_ip::key(peer.ip()));
            }
            shared.refusals.try_acquire().ok()?.forget();
        }
        Some(Slot {
            started_ms: u32::try_from(shared.epoch.elapsed().as_millis()).unwrap_or(u32::MAX),
            shared: shared.clone(),
            state,
            echo_open: false,
        })
    }

    /// The answer to a refused connection: status, reason, metrics label.
    fn refusal(&self) -> Option<(u16, &'static str, &'static str)> {
        match self.state {
            SlotState::Admitted | SlotState::AdmittedCounted => None,
            SlotState::Full => Some((503, "server is at its connection limit", "connection limit")),
            SlotState::IpFull => Some((
                503,
                "too many connections from your address",
                "per-address connection limit",
            )),
            SlotState::IpTooFast => Some((
                429,
                "too many new connections from your address; retry later",
                "per-address connection rate",
            )),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.echo_open {
            self.shared.counts.echo_open.dec();
        }
        match self.state {
            SlotState::Admitted | SlotState::AdmittedCounted => self.shared.limit.add_permits(1),
            _ => self.shared.refusals.add_permits(1),
        }
    }
}

/// The services a WebSocket can be opened to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Echo,
    Centrifuge,
}

impl Service {
    fn of(route: &Route) -> Option<Service> {
        match route {
            Route::Echo => Some(Service::Echo),
            Route::Centrifuge => Some(Service::Centrifuge),
            _ => None,
        }
    }

    /// Whether and how to accept a socket: the Centrifugo endpoint also
    /// speaks `centrifuge-protobuf`.
    fn decide(
        self,
        policy: &duplex::Policy,
        req: &duplex_proto::handshake::server::UpgradeRequest,
    ) -> duplex::Decision {
        match self {
            Service::Echo => policy.decide(req),
            Service::Centrifuge => centrifuge::decide(policy, req),
        }
    }

    fn path(self) -> &'static str {
        match self {
            Service::Echo => "/echo",
            Service::Centrifuge => router::CENTRIFUGE_PATH,
        }
    }
}

/// An open plain-TCP WebSocket: what an idle connection's task holds.
/// The echo service owns its `TcpStream`; the Centrifugo front shares it
/// with the hub, which writes broadcasts into it while the connection is
/// idle ([`SharedTcp`]).
struct Session<S> {
    ws: WebSocket<S>,
    peer: Peer,
    slot: Slot,
}

/// A peer's address and port in 20 bytes, where a `SocketAddr` takes 32
/// (an IPv6 flow label and scope, which nothing here reads): every idle
/// connection's task carries one.
#[derive(Clone, Copy)]
struct Peer {
    ip: std::net::IpAddr,
    port: u16,
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Self {
        Peer {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

impl Peer {
    fn addr(self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// The session an opening phase ends in (the two are different futures,
/// and [`Task`] holds either in place, under its own tag).
enum Opened<E, H> {
    Echo(E),
    Hub(H),
}

/// Gives a counted address's place back when the opening phase ends
/// without a [`Session`] (which then takes the duty over).
struct IpCount {
    shared: Arc<Shared>,
    peer: SocketAddr,
    armed: bool,
}

impl Drop for IpCount {
    fn drop(&mut self) {
        if self.armed {
            self.shared
                .per_ip
                .release(crate::per_ip::key(self.peer.ip()));
        }
    }
}

impl<S> Session<S> {
    /// The address's place (a session ends here, or with the runtime at
    /// exit).
    fn release(&self) {
        if self.slot.state == SlotState::AdmittedCounted {
            let shared = &self.slot.shared;
            shared.per_ip.release(crate::per_ip::key(self.peer.ip));
        }
    }
}

impl Session<TcpStream> {
    /// Serves the echo service, then logs. A plain function returning an
    /// `async move` block, not an `async fn`: an `async fn` stores its
    /// by-value arguments twice (as argument and as local), which here
    /// would be the whole session.
    fn run(self) -> impl Future<Output = ()> {
        let mut this = self;
        // The close reply and the FIN in one packet.
        this.ws.coalesce_fin();
        async move {
            // Counted open until the slot is dropped (a flag in the slot,
            // where a gauge handle held here would grow every idle task).
            EchoGauge::count(&this.slot.shared, HTTP1);
            this.slot.echo_open = true;
            let stats = echo::run(&mut this.ws, &this.slot.shared.shutdown).await;
            let shared = &this.slot.shared;
            let started = this.slot.started_ms;
            log_close(
                &this.ws,
                this.peer.addr(),
                shared,
                started,
                Service::Echo,
                &stats,
                HTTP1,
            );
            this.release();
        }
    }
}

impl Session<SharedTcp> {
    /// Serves the Centrifugo front, then logs (as [`Session::run`]).
    fn run(self) -> impl Future<Output = ()> {
        let mut this = self;
        this.ws.coalesce_fin();
        async move {
            // Boxed: an idle echo connection must not carry the centrifuge
            // loop's state (nor this one the echo's).
            let slot = &this.slot;
            Box::pin(serve_centrifuge(
                &mut this.ws,
                this.peer.addr(),
                &slot.shared,
                slot.started_ms,
                HTTP1,
            ))
            .await;
            this.release();
        }
    }
}

/// Counts an open echo connection in the metrics while it lives (the
/// Centrifugo front counts its own).
struct EchoGauge(prometheus_client::metrics::gauge::Gauge);

impl EchoGauge {
    const LABEL: crate::metrics::FrontLabel = crate::metrics::FrontLabel { front: "echo" };

    /// Counts the socket (by the HTTP version of its handshake) and the
    /// open echo connection; the gauge goes down when this is dropped.
    fn open(shared: &Shared, http: &'static str) -> EchoGauge {
        Self::count(shared, http);
        EchoGauge(shared.counts.echo_open.clone())
    }

    /// Counts the socket and the open echo connection, leaving the
    /// decrement to the caller.
    fn count(shared: &Shared, http: &'static str) {
        count_websocket(shared, http);
        shared.counts.echo_total.inc();
        shared.counts.echo_open.inc();
    }
}

impl Drop for EchoGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves an open socket to the end (the TLS and hyper paths, and the
/// Centrifugo front on the fast path), then logs.
async fn serve_socket<S>(ws: &mut WebSocket<S>, service: Service, peer: SocketAddr, slot: &Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    serve_socket_over(ws, service, peer, &slot.shared, slot.started_ms, HTTP1).await;
}

/// HTTP versions, for the metrics and the log.
const HTTP1: &str = "1.1";
const HTTP2: &str = "2";

/// Serves an open socket to the end, then logs; `http` is the version of
/// its handshake.
async fn serve_socket_over<S>(
    ws: &mut WebSocket<S>,
    service: Service,
    peer: SocketAddr,
    shared: &Shared,
    started_ms: u32,
    http: &'static str,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    match service {
        Service::Echo => {
            let stats = {
                let _open = EchoGauge::open(shared, http);
                echo::run(ws, &shared.shutdown).await
            };
            log_close(ws, peer, shared, started_ms, service, &stats, http);
        }
        Service::Centrifuge => serve_centrifuge(ws, peer, shared, started_ms, http).await,
    }
}

/// Serves an open socket on the Centrifugo front to the end, then logs.
/// A plain function returning an `async move` block (see
/// [`Session::run`]): this future is boxed beside every idle Centrifugo
/// connection's task.
#[allow(clippy::manual_async_fn)]
fn serve_centrifuge<'a, S>(
    ws: &'a mut WebSocket<S>,
    peer: SocketAddr,
    shared: &'a Shared,
    started_ms: u32,
    http: &'static str,
) -> impl Future<Output = ()> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    async move {
        count_websocket(shared, http);
        centrifuge::serve(&shared.app.centrifuge, ws, &shared.shutdown).await;
        let stats = EchoStats::default();
        log_close(
            ws,
            peer,
            shared,
            started_ms,
            Service::Centrifuge,
            &stats,
            http,
        );
    }
}

/// Counts an opened socket by its handshake's HTTP version.
fn count_websocket(shared: &Shared, http: &'static str) {
    if http == HTTP1 {
        shared.counts.websockets_h1.inc();
        return;
    }
    shared
        .app
        .hub
        .metrics()
        .websockets
        .get_or_create(&crate::metrics::HttpLabel { http })
        .inc();
}

pin_project_lite::pin_project! {
    /// One connection's task: the boxed opening phase, then the session in
    /// place (so the session is not stored twice, as it would be in an
    /// `async` block that awaits one and then the other).
    #[project = TaskProj]
    enum Task<O, E, H> {
        Opening { opening: Pin<Box<O>> },
        Echo { #[pin] session: E },
        Hub { #[pin] session: H },
        Done,
    }
}

impl<O, E, H> Future for Task<O, E, H>
where
    O: Future<Output = Option<Opened<E, H>>>,
    E: Future<Output = ()>,
    H: Future<Output = ()>,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.as_mut().project() {
                TaskProj::Opening { opening } => match ready!(opening.as_mut().poll(cx)) {
                    Some(Opened::Echo(session)) => self.set(Task::Echo { session }),
                    Some(Opened::Hub(session)) => self.set(Task::Hub { session }),
                    None => {
                        self.set(Task::Done);
                        return Poll::Ready(());
                    }
                },
                TaskProj::Echo { session } => {
                    ready!(session.poll(cx));
                    self.set(Task::Done);
                    return Poll::Ready(());
                }
                TaskProj::Hub { session } => {
                    ready!(session.poll(cx));
                    self.set(Task::Done);
                    return Poll::Ready(());
                }
                TaskProj::Done => return Poll::Ready(()),
            }
        }
    }
}

/// Binds the listening socket with `TCP_NODELAY` set. Linux copies the
/// listener's options to every socket it accepts, which saves each
/// connection a `setsockopt` (about 1 % of a handshake's server CPU);
/// returns whether that holds, and elsewhere each connection sets it.
async fn bind_nodelay(addr: SocketAddr) -> std::io::Result<(TcpListener, bool)> {
    let listener = TcpListener::bind(addr).await?;
    let inherited = cfg!(target_os = "linux")
        && socket2::SockRef::from(&listener)
            .set_tcp_nodelay(true)
            .is_ok();
    Ok((listener, inherited))
}

/// Listening-socket options that neither tokio nor socket2 offers.
#[cfg(target_os = "linux")]
pub(crate) mod listen_opts {
    use std::os::fd::AsRawFd;
    use std::time::Duration;
    use tokio::net::TcpListener;

    /// Sets `TCP_DEFER_ACCEPT` (tcp(7)): the kernel completes a connection
    /// only once its first data arrive, or after `wait` (rounded by the
    /// kernel to its SYN-ACK retransmissions), so the server wakes once per
    /// connection, finds its request already readable, and a client that
    /// never sends costs no socket of the server's until then.
    #[allow(unsafe_code)]
    pub(crate) fn set_defer_accept(listener: &TcpListener, wait: Duration) -> std::io::Result<()> {
        let secs = libc::c_int::try_from(wait.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: the descriptor belongs to `listener`, which is borrowed
        // and so stays open for the call; the value points to a `c_int` on
        // this stack frame, alive for the call, and its size is the one
        // passed. setsockopt(2) reads that many bytes and keeps no pointer.
        let r = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&secs as *const libc::c_int).cast::<libc::c_void>(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// Reads and answers the request; returns the session's future if a plain
/// socket was opened. TLS connections are served to the end in here
/// (their state is several KiB anyway).
async fn open(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
) -> Option<Opened<impl Future<Output = ()>, impl Future<Output = ()>>> {
    if !slot.shared.nodelay_inherited {
        let _ = tcp.set_nodelay(true);
    }
    let mut count = IpCount {
        shared: slot.shared.clone(),
        peer,
        armed: slot.state == SlotState::AdmittedCounted,
    };
    if let Some(tls) = slot.shared.app.config.tls.clone() {
        // Boxed: the TLS state is several KiB, and every plain connection
        // would otherwise allocate (and move) this future at that size.
        Box::pin(serve_tls(tcp, tls, peer, slot)).await;
        return None;
    }
    let (ws, service) = route(tcp, peer, &slot).await?;
    count.armed = false;
    Some(match service {
        Service::Echo => Opened::Echo(
            Session {
                ws,
                peer: peer.into(),
                slot,
            }
            .run(),
        ),
        Service::Centrifuge => Opened::Hub(
            Session {
                ws: {
                    let framing = ws.connection().shared_framing();
                    ws.map_stream(|tcp| SharedTcp::new(tcp, framing))
                },
                peer: peer.into(),
                slot,
            }
            .run(),
        ),
    })
}

/// A TLS connection, from the TLS handshake to the end.
async fn serve_tls(
    tcp: TcpStream,
    tls: Arc<duplex::tls::rustls::ServerConfig>,
    peer: SocketAddr,
    slot: Slot,
) {
    let shared = &slot.shared;
    // The TLS handshake counts against the opening-handshake time.
    let accept = TlsAcceptor::from(tls).accept(tcp);
    match tokio::time::timeout(shared.app.ws.handshake_timeout, accept).await {
        Ok(Ok(stream)) => {
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                serve_h2(stream, peer, &slot).await;
            } else if let Some((mut ws, service)) = route(stream, peer, &slot).await {
                serve_socket(&mut ws, service, peer, &slot).await;
            }
        }
        Ok(Err(e)) => {
            shared.app.hub.metrics().refuse("tls handshake");
            info!(%peer, error = %e, "TLS handshake failed")
        }
        Err(_) => {
            shared.app.hub.metrics().refuse("tls handshake timeout");
            info!(%peer, "TLS handshake timed out")
        }
    }
}

fn log_close<S>(
    ws: &WebSocket<S>,
    peer: SocketAddr,
    shared: &Shared,
    started_ms: u32,
    service: Service,
    stats: &EchoStats,
    http: &'static str,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    info!(
        %peer,
        path = service.path(),
        http,
        extensions = ws.extensions(),
        protocol = ws.protocol().unwrap_or(""),
        messages = stats.messages,
        bytes = stats.bytes,
        close_code = ws.close_code().map(|c| c.0),
        clean = ws.was_clean(),
        error = stats.error.as_deref().unwrap_or(""),
        ms = (shared.epoch.elapsed().as_millis() as u64).saturating_sub(started_ms.into()),
        "connection closed"
    );
}

/// Reads the first request. An upgrade to a WebSocket service (subject
/// to the policy) returns the open socket; anything else is served by
/// hyper here, to the end of the connection (an upgrade that hyper
/// accepts on it is served here too). Over the connection limit: 503.
async fn route<S>(stream: S, peer: SocketAddr, slot: &Slot) -> Option<(WebSocket<S>, Service)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = &slot.shared;
    let hs = match Handshake::read(stream, shared.app.ws.clone()).await {
        Ok(h) => h,
        Err(e) => {
            info!(%peer, error = %e, "bad request");
            shared.app.hub.metrics().refuse("bad request");
            return None;
        }
    };
    let path = hs.request().path().to_string();
    if let Some((status, reason, label)) = slot.refusal() {
        let _ = hs.respond(status, reason).await;
        warn!(%peer, %path, status, "refused: {label}");
        shared.app.hub.metrics().refuse(label);
        return None;
    }
    let route = router::route(&hs.request().method, &path);
    if let Some(service) = Service::of(&route).filter(|_| hs.request().is_upgrade()) {
        let hs = match service {
            Service::Centrifuge => hs.with_config(shared.app.ws_centrifuge.clone()),
            Service::Echo => hs,
        };
        let policy = &shared.app.config.policy;
        return match hs.upgrade(|req| service.decide(policy, req)).await {
            Ok(ws) => Some((ws, service)),
            Err(e) => {
                info!(%peer, %path, error = %e, "upgrade refused");
                shared.app.hub.metrics().refuse("upgrade");
                None
            }
        };
    }
    let (stream, read) = hs.into_raw_parts();
    Box::pin(serve_http(Rewind::new(stream, read), peer, slot)).await;
    None
}

/// Most streams at once on one HTTP/2 connection: its requests, and the
/// WebSockets and EventSource streams it carries (all within the one
/// connection slot it holds).
const H2_MAX_STREAMS: u32 = 100;

/// Serves an HTTP/2 connection (TLS with ALPN `h2`): requests as on
/// HTTP/1.1, and WebSockets opened by extended CONNECT (RFC 8441), each on
/// its own stream and served by its own task until it closes.
async fn serve_h2<S>(io: S, peer: SocketAddr, slot: &Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Some((_, _, label)) = slot.refusal() {
        // Over a limit: HTTP/2 has no 503 before a request; close.
        slot.shared.app.hub.metrics().refuse(label);
        return;
    }
    let shared = slot.shared.clone();
    let started_ms = slot.started_ms;
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        async move {
            // An extended CONNECT is HTTP/2's GET with Upgrade.
            let connect = req.method() == http::Method::CONNECT;
            let method = if connect {
                "GET"
            } else {
                req.method().as_str()
            };
            let route = router::route(method, req.uri().path());
            let service = Service::of(&route).filter(|_| connect);
            let Some(service) = service else {
                // Plain requests, and CONNECT to anything else (refused
                // by the router with 405).
                let plain = route_for_h2(route, req.method());
                return crate::http::handle_route(
                    shared.app.clone(),
                    peer,
                    Default::default(),
                    req,
                    plain,
                )
                .await;
            };
            let config = match service {
                Service::Centrifuge => (*shared.app.ws_centrifuge).clone(),
                Service::Echo => (*shared.app.ws).clone(),
            };
            let policy = &shared.app.config.policy;
            let (resp, pending) =
                duplex::upgrade::upgrade_h2(req, config, |r| service.decide(policy, r));
            match pending {
                Some(p) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        match p.into_websocket().await {
                            Ok(mut ws) => {
                                serve_socket_over(
                                    &mut ws, service, peer, &shared, started_ms, HTTP2,
                                )
                                .await
                            }
                            Err(e) => info!(%peer, error = %e, "HTTP/2 WebSocket failed to open"),
                        }
                    });
                }
                None => shared.app.hub.metrics().refuse("upgrade"),
            }
            Ok(resp.map(crate::http::Body::Full))
        }
    });
    let mut builder =
        hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(H2_MAX_STREAMS);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    let shutdown = &slot.shared.shutdown;
    tokio::select! {
        r = conn => if let Err(e) = r {
            info!(%peer, error = %e, "HTTP/2 connection ended with an error");
        },
        _ = shutdown.reached(Stage::Closing) => {}
    }
}

/// The route of a request on HTTP/2 that is not a WebSocket: a WebSocket
/// path asked for with another method than extended CONNECT is refused.
fn route_for_h2(route: Route, method: &http::Method) -> Route {
    match route {
        Route::Echo | Route::Centrifuge if method != http::Method::CONNECT => {
            Route::MethodNotAllowed("CONNECT")
        }
        r => r,
    }
}

/// Serves a connection with hyper (keep-alive, request bodies), then any
/// WebSocket it upgraded to.
async fn serve_http<S>(io: Rewind<S>, peer: SocketAddr, slot: &Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = slot.shared.app.clone();
    let upgrades: UpgradeSlot = Default::default();
    let service = {
        let upgrades = upgrades.clone();
        hyper::service::service_fn(move |req| {
            crate::http::handle(app.clone(), peer, upgrades.clone(), req)
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(slot.shared.app.ws.handshake_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades();
    let shutdown = &slot.shared.shutdown;
    tokio::select! {
        r = conn => if let Err(e) = r {
            info!(%peer, error = %e, "HTTP connection ended with an error");
        },
        _ = shutdown.reached(Stage::Closing) => return,
    }
    let pending = upgrades.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((pending, route)) = pending {
        let Some(service) = Service::of(&route) else {
            return;
        };
        match pending.into_websocket().await {
            Ok(mut ws) => serve_socket(&mut ws, service, peer, slot).await,
            Err(e) => info!(%peer, error = %e, "upgrade through hyper failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the task an open, idle connection lives in.
    fn task_size<O, E, H>(_: &Pin<Box<O>>) -> usize
    where
        O: Future<Output = Option<Opened<E, H>>>,
    {
        std::mem::size_of::<Task<O, E, H>>()
    }

    /// A server's shared state with the default settings and room for one
    /// connection.
    async fn one_slot_server() -> Arc<Shared> {
        let app = App::new(ServerConfig::default()).await.unwrap();
        Arc::new(Shared {
            counts: Counts::new(app.hub.metrics()),
            app,
            shutdown: Shutdown::new(),
            limit: Semaphore::new(1),
            refusals: Semaphore::new(1),
            per_ip: crate::per_ip::PerIp::new(Default::default()),
            epoch: Instant::now(),
            nodelay_inherited: false,
        })
    }

    #[tokio::test]
    async fn accepted_sockets_have_nodelay_set() {
        let (listener, inherited) = bind_nodelay("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert_eq!(inherited, cfg!(target_os = "linux"));
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, _client) = tokio::join!(listener.accept(), client);
        let (tcp, _) = accepted.unwrap();
        assert_eq!(tcp.nodelay().unwrap(), inherited);
    }

    /// With `TCP_DEFER_ACCEPT` the kernel hands over the connection that
    /// has sent something before one that connected earlier and has not:
    /// without it, `accept` would return the silent one first.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn deferred_accept_hands_over_connections_once_they_speak() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listen_opts::set_defer_accept(&listener, std::time::Duration::from_secs(30)).unwrap();
        let addr = listener.local_addr().unwrap();
        async fn accept(l: &TcpListener) -> (TcpStream, SocketAddr) {
            let accepted = l.accept();
            tokio::time::timeout(std::time::Duration::from_secs(10), accepted)
                .await
                .expect("accept within 10 s")
                .unwrap()
        }
        // connect() returns once the client's side is established.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut speaking = TcpStream::connect(addr).await.unwrap();
        speaking.write_all(b"GET").await.unwrap();
        let (mut first, peer) = accept(&listener).await;
        assert_eq!(
            peer,
            speaking.local_addr().unwrap(),
            "the connection with data first"
        );
        let mut got = [0u8; 3];
        first.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET");
        silent.write_all(b"late").await.unwrap();
        let (_, peer) = accept(&listener).await;
        assert_eq!(
            peer,
            silent.local_addr().unwrap(),
            "then the other, once it speaks"
        );
    }

    /// tokio allocates a task as its future plus ~100 bytes of header and
    /// trailer, rounded up to 128 bytes: at most 536 bytes of future keep
    /// an idle connection's task in a 640-byte allocation. Growing past it
    /// costs every idle connection 128 bytes (see BENCHMARKS.md).
    #[tokio::test]
    async fn an_idle_connection_task_fits_its_memory_budget() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, client) = tokio::join!(listener.accept(), client);
        let (tcp, peer) = accepted.unwrap();
        let shared = one_slot_server().await;
        let slot = Slot::take(&shared, "127.0.0.1:1".parse().unwrap()).unwrap();
        let opening = Box::pin(open(tcp, peer, slot));
        let size = task_size(&opening);
        assert!(size <= 536, "idle connection task is {size} bytes");
        drop((opening, client));
        assert_eq!(shared.limit.available_permits(), 1, "the slot came back");
    }

    /// A Centrifugo connection's loop lives in its own allocation beside
    /// the task (boxed in `Session::run`); an idle subscribed connection
    /// carries it, so its size is part of that connection's budget
    /// (≤ 2 KiB in all, BENCHMARKS.md). 448 bytes is a jemalloc size
    /// class; it was 768 while each connection kept its own timer and
    /// shutdown waiter (now one shared task: `alarms`) and the closing
    /// handshake and cleanup in place.
    #[tokio::test]
    async fn an_idle_centrifuge_loop_fits_its_allocation() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, _client) = tokio::join!(listener.accept(), client);
        let (tcp, peer) = accepted.unwrap();
        let conn = duplex::proto::Connection::new(
            duplex::proto::Role::Server,
            duplex::Config::default(),
            None,
        );
        let mut ws = WebSocket::from_parts(tcp, conn, Default::default(), None, None, None);
        let shared = one_slot_server().await;
        let boxed = serve_centrifuge(&mut ws, peer, &shared, 0, HTTP1);
        let size = std::mem::size_of_val(&boxed);
        assert!(size <= 448, "the centrifuge loop is {size} bytes");
    }
}
