//! The binary TCP protocol's server (`docs/PROTOCOL.md`): the listener on `tcp.listen`, one
//! task per connection that reads frames, runs their requests and writes their replies,
//! authentication once per connection, the bounds (`tcp.max_connections`, `tcp.max_in_flight`,
//! `tcp.max_frame_bytes`, `tcp.idle_timeout_ms`, `tcp.batch_orders_max`) and the mapping of
//! opcodes onto [`orderd_service::ops`].
//! Placements go to the engine in batches: a `PLACE_ORDERS` frame in one
//! [`ops::place_orders`] call, and so do all the `PLACE_ORDER` frames of one read.
//!
//! It runs on a tokio runtime of its own (`tcp.workers` threads named `orderd-tcp`), beside
//! actix's HTTP workers, so that neither front door can starve the other's event loops.
//!
//! With `tcp.tls_cert_file` and `tcp.tls_key_file` the listener speaks TLS only: the handshake
//! runs first, within `tcp.auth_timeout_ms` with AUTH, and the connection task is the same code
//! over a [`Wire`] that is the TLS stream instead of the plain socket (monomorphised, so the
//! plaintext path is what it was).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::{self, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use orderd_engine::Engine;
use orderd_proto::frame::{self, Frame, FrameDecoder, FrameError};
use orderd_proto::tcp::{self as msg, op, ErrorBody, PlaceOrdersError, CONNECTION_REQUEST_ID};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use orderd_config::TcpConfig;

use crate::peers::PeerCounts;
use orderd_control::telemetry;
use orderd_control::window::RequestWindow;
use orderd_service::audit::{AuditLog, ANONYMOUS};
use orderd_service::auth::{Auth, Caller};
use orderd_service::idem::IdempotencyKey;
use orderd_service::input::OrderQuery;
use orderd_service::ops::{self, Ctx, PlaceInput, Pricing};
use orderd_service::vault::Vault;
use orderd_service::ApiError;
use orderd_service::{page, wire};

/// Seconds that connections get, after shutdown begins, to finish what they have in flight.
const SHUTDOWN_GRACE_S: u64 = 10;
/// Bytes read from a socket at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// What a `PLACE_ORDER` reserves of `tcp.max_reply_buffer_bytes` beyond twice its own payload:
/// its reply is the order it placed (its lines, as sent, plus the id, status, totals and one
/// history step) or an error naming at most its SKUs, so twice the request and this bound it.
const PLACE_REPLY_EXTRA_BYTES: usize = 1024;
/// Capacity of a connection's reply buffer kept after it empties; a larger one is freed.
const OUT_KEEP_BYTES: usize = 256 * 1024;

/// The limits of one server, from `[tcp]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    pub max_in_flight: usize,
    /// Reply bytes a connection may hold, queued or reserved (`tcp.max_reply_buffer_bytes`).
    pub max_reply_buffer_bytes: usize,
    pub idle_timeout: Duration,
    /// AUTH must be answered within this (`tcp.auth_timeout_ms`).
    pub auth_timeout: Duration,
    /// Connections one peer address may hold (`tcp.max_connections_per_peer`).
    pub max_connections_per_peer: usize,
    /// Most orders in one `PLACE_ORDERS` frame (`tcp.batch_orders_max`).
    pub batch_orders_max: usize,
}

impl Limits {
    pub fn from_config(config: &TcpConfig) -> Limits {
        Limits {
            max_frame_bytes: config.max_frame_bytes,
            max_connections: config.max_connections,
            max_in_flight: config.max_in_flight,
            max_reply_buffer_bytes: config.max_reply_buffer_bytes,
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            auth_timeout: Duration::from_millis(config.auth_timeout_ms),
            max_connections_per_peer: config.max_connections_per_peer,
            batch_orders_max: config.batch_orders_max,
        }
    }
}

/// What every connection serves with.
pub struct Shared {
    pub engine: Engine,
    pub vault: Arc<Vault>,
    pub audit: Arc<AuditLog>,
    pub auth: Arc<Auth>,
    /// The request window change management watches; every answered request is recorded.
    pub window: Arc<RequestWindow>,
    pub limits: Limits,
    /// With `tcp.tls_cert_file` and `tcp.tls_key_file`: every connection speaks TLS.
    pub tls: Option<TlsAcceptor>,
    /// How placements are priced (`orders.client_prices`, `shop.currency`).
    pub pricing: Pricing,
}

impl Shared {
    fn ctx(&self) -> Ctx<'_> {
        Ctx::new(&self.engine, &self.vault, &self.audit)
    }
}

/// A running TCP server.
pub struct TcpServer {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpServer {
    /// Binds `listen` (failing at once if it cannot) and serves it on `workers` threads.
    pub fn start(listen: &str, workers: usize, shared: Shared) -> anyhow::Result<TcpServer> {
        let std_listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen} (tcp.listen)"))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("orderd-tcp")
            .enable_all()
            .build()
            .context("cannot start the TCP runtime")?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(shared);
        let thread = std::thread::Builder::new()
            .name("orderd-tcp-accept".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(listener) => accept_loop(listener, shared, shutdown_rx).await,
                        Err(error) => tracing::error!(
                            message = "The TCP listener could not join its runtime.",
                            %error
                        ),
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("cannot start the TCP thread")?;
        Ok(TcpServer {
            addr,
            shutdown,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets every connection finish what it has in flight (up to
    /// [`SHUTDOWN_GRACE_S`]), tells it `unavailable` and closes it. Blocks until done.
    pub fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections));
    let peers = Arc::new(PeerCounts::default());
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set stays as small as the connections open.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(message = "TCP accept failed.", %error);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let refusal = match slots.clone().try_acquire_owned() {
            Err(_) => {
                let max = shared.limits.max_connections;
                Err((
                    "too_many_connections",
                    connection_error(
                        503,
                        "unavailable",
                        format!("the server has its maximum of {max} TCP connections"),
                    ),
                ))
            }
            Ok(permit) => match peers.enter(peer.ip(), shared.limits.max_connections_per_peer) {
                Some(peer_slot) => Ok((permit, peer_slot)),
                None => {
                    let max = shared.limits.max_connections_per_peer;
                    Err((
                        "too_many_connections_from_peer",
                        connection_error(
                            429,
                            "rate_limited",
                            format!(
                                "{} holds its maximum of {max} TCP connections \
                                 (tcp.max_connections_per_peer)",
                                peer.ip()
                            ),
                        ),
                    ))
                }
            },
        };
        let accepted_at = Instant::now();
        match refusal {
            Ok((permit, peer_slot)) => {
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    ::metrics::gauge!(telemetry::TCP_CONNECTIONS).increment(1.0);
                    match shared.tls.clone() {
                        None => serve_connection(stream, peer, shared, shutdown, accepted_at).await,
                        Some(acceptor) => {
                            serve_tls(acceptor, stream, peer, shared, shutdown, accepted_at).await
                        }
                    }
                    ::metrics::gauge!(telemetry::TCP_CONNECTIONS).decrement(1.0);
                    drop(peer_slot);
                    drop(permit);
                });
            }
            Err((reason, error)) => {
                ::metrics::counter!(telemetry::TCP_CLOSED_TOTAL, "reason" => reason).increment(1);
                telemetry::record_refusal(reason);
                if shared.tls.is_some() {
                    // A TLS client could not read a plaintext frame, and a handshake for a
                    // refusal would spend the CPU the limit protects: closed as it is.
                    drop(stream);
                    continue;
                }
                connections.spawn(async move {
                    let mut stream = stream;
                    let mut bytes = Vec::new();
                    frame::encode(&error, &mut bytes);
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        let _ = stream.write_all(&bytes).await;
                        let _ = AsyncWriteExt::shutdown(&mut stream).await;
                    })
                    .await;
                });
            }
        }
    }
    drop(listener);
    // Connections see the same signal and wind down; give them the grace period.
    let _ = tokio::time::timeout(Duration::from_secs(SHUTDOWN_GRACE_S + 1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// An error frame about the connection itself (request id 0).
fn connection_error(status: u16, code: &str, detail: String) -> Frame {
    msg::frame(
        op::ERROR,
        CONNECTION_REQUEST_ID,
        &ErrorBody {
            status,
            code: code.to_string(),
            detail,
            param: None,
            skus: Vec::new(),
        },
    )
}

/// The error frame of a request.
/// The error frame of a request; a refusal (401, 403, 429, 503, 507) is counted in
/// `orderd_refusals_total`.
fn error_frame(request_id: u64, error: &ApiError) -> Frame {
    telemetry::record_status(error.status());
    msg::frame(op::ERROR, request_id, &error_body(error))
}

/// An error as the fields of the HTTP problem document.
fn error_body(error: &ApiError) -> ErrorBody {
    let problem = error.problem();
    ErrorBody {
        status: problem.status,
        code: problem.code,
        detail: problem.detail,
        param: problem.param,
        skus: problem.skus.unwrap_or_default(),
    }
}

/// Why a connection ends, for the log and `orderd_tcp_connections_closed_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    /// The client closed its side.
    Eof,
    /// A read failed (reset).
    ReadError,
    /// The client stopped reading its replies: a write blocked for the idle timeout.
    WriteTimeout,
    /// Bytes that are not frames.
    BadFrame,
    Unauthorized,
    /// No AUTH (and, over TLS, no finished handshake) within `tcp.auth_timeout_ms`.
    AuthTimeout,
    /// The TLS handshake failed (not TLS, nothing in common, a bad record).
    TlsHandshake,
    IdleTimeout,
    Shutdown,
}

impl Close {
    fn label(self) -> &'static str {
        match self {
            Close::Eof => "client_closed",
            Close::ReadError => "read_error",
            Close::WriteTimeout => "write_timeout",
            Close::BadFrame => "bad_frame",
            Close::Unauthorized => "unauthorized",
            Close::AuthTimeout => "auth_timeout",
            Close::TlsHandshake => "tls_handshake",
            Close::IdleTimeout => "idle_timeout",
            Close::Shutdown => "shutdown",
        }
    }
}

/// The authenticated side of a connection.
struct Session {
    caller: Caller,
    /// The secret, checked again before each request so that a revoked key stops working on
    /// connections it opened earlier too.
    secret: String,
}

/// The reply bytes a connection holds unwritten, and since when the client has not taken them.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    /// Bytes of `bytes` already written.
    written: usize,
    /// Since when the socket has refused bytes we hold (the client is not reading).
    stalled_since: Option<Instant>,
}

impl Outbox {
    fn push(&mut self, reply: &Frame) {
        frame::encode(reply, &mut self.bytes);
    }

    fn pending(&self) -> usize {
        self.bytes.len() - self.written
    }

    /// Writes what the socket takes now, without waiting; `Err` when the connection is broken.
    /// Over TLS, then pushes the records the TLS stream still holds.
    fn flush<W: Wire>(&mut self, stream: &W) -> std::io::Result<()> {
        if self.pending() == 0 {
            return self.flush_wire(stream);
        }
        while self.pending() > 0 {
            match stream.try_write(&self.bytes[self.written..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.stalled_since = None;
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    self.stalled_since.get_or_insert_with(Instant::now);
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
        }
        self.bytes.clear();
        self.written = 0;
        if self.bytes.capacity() > OUT_KEEP_BYTES {
            self.bytes = Vec::new();
        }
        self.flush_wire(stream)
    }

    /// Pushes what the stream itself holds (TLS records; nothing for the plain socket).
    fn flush_wire<W: Wire>(&mut self, stream: &W) -> std::io::Result<()> {
        if !stream.holds_unsent() {
            return Ok(());
        }
        if stream.try_flush()? {
            self.stalled_since = None;
        } else {
            self.stalled_since.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    /// Whether reply bytes wait for the client: ours, or the TLS stream's.
    fn unsent<W: Wire>(&self, stream: &W) -> bool {
        self.pending() > 0 || stream.holds_unsent()
    }
}

/// The byte stream a connection is served over: the plain socket, or TLS over it
/// ([`TlsWire`]). The connection task polls reading and writing in one `select!`, so every
/// method takes `&self`.
trait Wire: Send + Sync + 'static {
    /// Reads what has arrived, waiting for some; `Ok(0)` at the end. Cancel-safe: dropped
    /// before it completes, it has taken nothing.
    fn read<'a>(&'a self, buf: &'a mut [u8])
        -> impl Future<Output = io::Result<usize>> + Send + 'a;
    /// Writes what the stream takes now, without waiting (`WouldBlock` when nothing).
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Whether the stream holds bytes it took but has not sent (TLS records).
    fn holds_unsent(&self) -> bool;
    /// Sends what the stream holds, without waiting: `Ok(true)` once nothing is left.
    fn try_flush(&self) -> io::Result<bool>;
    /// Waits until the socket takes bytes again.
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
    /// Ends the stream cleanly (TLS `close_notify`, then FIN).
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

impl Wire for TcpStream {
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.readable().await?;
            match self.try_read(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                read => return read,
            }
        }
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }

    fn holds_unsent(&self) -> bool {
        false
    }

    fn try_flush(&self) -> io::Result<bool> {
        Ok(true)
    }

    async fn writable(&self) -> io::Result<()> {
        TcpStream::writable(self).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        AsyncWriteExt::shutdown(self).await
    }
}

/// A TLS connection as a [`Wire`]. rustls needs `&mut` to read or write, and the task polls
/// both directions at once, so the stream sits in a mutex that each poll holds for its own
/// duration only (one task uses it: never contended).
struct TlsWire(std::sync::Mutex<TlsStream<TcpStream>>);

impl TlsWire {
    fn with<T>(&self, f: impl FnOnce(Pin<&mut TlsStream<TcpStream>>) -> T) -> T {
        let mut stream = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(Pin::new(&mut *stream))
    }
}

/// A [`Poll`] taken without waiting: `Pending` is `WouldBlock`.
fn now_or_would_block<T>(poll: Poll<io::Result<T>>) -> io::Result<T> {
    match poll {
        Poll::Ready(result) => result,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl Wire for TlsWire {
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            let mut read = ReadBuf::new(&mut *buf);
            self.with(|stream| stream.poll_read(cx, &mut read))
                .map_ok(|()| read.filled().len())
        })
        .await
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut cx = std::task::Context::from_waker(Waker::noop());
        now_or_would_block(self.with(|stream| stream.poll_write(&mut cx, buf)))
    }

    fn holds_unsent(&self) -> bool {
        self.with(|stream| stream.get_ref().1.wants_write())
    }

    fn try_flush(&self) -> io::Result<bool> {
        let mut cx = std::task::Context::from_waker(Waker::noop());
        match self.with(|stream| stream.poll_flush(&mut cx)) {
            Poll::Ready(result) => result.map(|()| true),
            Poll::Pending => Ok(false),
        }
    }

    async fn writable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.with(|stream| stream.get_ref().0.poll_write_ready(cx))).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.with(|stream| stream.poll_shutdown(cx))).await
    }
}

/// A TLS connection: the handshake, within the connection's AUTH deadline
/// (`tcp.auth_timeout_ms`), then [`serve_connection`] over it. A client that never finishes
/// the handshake is closed at the deadline (`auth_timeout`), one that fails it at once
/// (`tls_handshake`: not TLS, no common version or cipher, a bad record).
async fn serve_tls(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    accepted_at: Instant,
) {
    let deadline = accepted_at + shared.limits.auth_timeout;
    let handshake = tokio::select! {
        _ = shutdown.changed() => Err(Close::Shutdown),
        handshake = tokio::time::timeout_at(deadline.into(), acceptor.accept(stream)) => {
            match handshake {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(error)) => {
                    tracing::debug!(message = "TLS handshake failed.", %peer, %error);
                    Err(Close::TlsHandshake)
                }
                Err(_) => {
                    telemetry::record_refusal("auth_timeout");
                    Err(Close::AuthTimeout)
                }
            }
        }
    };
    match handshake {
        Ok(stream) => {
            let wire = TlsWire(std::sync::Mutex::new(stream));
            serve_connection(wire, peer, shared, shutdown, accepted_at).await
        }
        Err(close) => {
            ::metrics::counter!(telemetry::TCP_CLOSED_TOTAL, "reason" => close.label())
                .increment(1);
            tracing::debug!(message = "TCP connection closed.", %peer, reason = close.label());
        }
    }
}

/// A request (or the placements of one read) running on its connection: its reply frames, and
/// the reply bytes it reserved.
type Running = Pin<Box<dyn Future<Output = (Replies, usize)> + Send>>;

/// What one connection's task owns: the replies waiting to be written and the requests running.
struct Conn {
    out: Outbox,
    running: FuturesUnordered<Running>,
    /// Requests running (each holds one slot of `tcp.max_in_flight` until its reply is queued).
    in_flight: usize,
    /// Reply bytes the requests running may still produce ([`reply_reserve`]), released when
    /// their replies are queued (and then counted as pending bytes of `out`).
    reserved: usize,
}

impl Conn {
    /// Starts the requests decoded from one read: every `PLACE_ORDER` of the read goes to the
    /// engine in one [`ops::place_orders`] call ([`run_placements`]): one submission and one
    /// answer for all of them; every other request runs on its own. They run on this
    /// connection's task (no task per request), and each reply is queued as soon as its request
    /// is done (the placements' together).
    fn start(&mut self, batch: Vec<Request>, shared: &Arc<Shared>) {
        // One group per caller; a connection has one, so in practice one group per read.
        let mut placements: Vec<Vec<Request>> = Vec::new();
        for request in batch {
            if request.frame.opcode != op::PLACE_ORDER {
                let shared = shared.clone();
                let reserve = request.reserve;
                self.running.push(Box::pin(async move {
                    (Replies::One(run_request(&shared, request).await), reserve)
                }));
                continue;
            }
            match placements
                .iter_mut()
                .find(|group| group[0].caller == request.caller)
            {
                Some(group) => group.push(request),
                None => placements.push(vec![request]),
            }
        }
        for group in placements {
            let shared = shared.clone();
            let reserve = group.iter().map(|request| request.reserve).sum();
            self.running.push(Box::pin(async move {
                (Replies::Many(run_placements(&shared, group).await), reserve)
            }));
        }
    }

    /// Queues the replies of a finished request (or group), and of every other request that
    /// is done too, so that they share one write.
    fn answered_all(&mut self, first: (Replies, usize)) {
        self.answered(first);
        while let Some(Some(replies)) = self.running.next().now_or_never() {
            self.answered(replies);
        }
    }

    /// Queues the replies of a finished request (or group) and frees their slots and their
    /// reservation.
    fn answered(&mut self, (replies, reserved): (Replies, usize)) {
        self.reserved -= reserved;
        match replies {
            Replies::One(reply) => {
                self.out.push(&reply);
                self.in_flight -= 1;
            }
            Replies::Many(frames) => {
                for reply in &frames {
                    self.out.push(reply);
                }
                self.in_flight -= frames.len();
            }
        }
    }

    /// Whether the replies held (queued, and reserved by requests running) leave room under
    /// `tcp.max_reply_buffer_bytes` for more requests.
    fn has_reply_room(&self, limits: &Limits) -> bool {
        self.out.pending() + self.reserved < limits.max_reply_buffer_bytes
    }

    /// Lets what is running finish and writes every reply, for at most `grace`.
    async fn finish<W: Wire>(&mut self, stream: &W, grace: Duration) {
        let _ = tokio::time::timeout(grace, async {
            loop {
                if self.out.flush(stream).is_err() {
                    return;
                }
                let unsent = self.out.unsent(stream);
                if self.running.is_empty() && !unsent {
                    return;
                }
                tokio::select! {
                    Some(replies) = self.running.next(), if !self.running.is_empty() => {
                        self.answered_all(replies);
                    }
                    ready = stream.writable(), if unsent => {
                        if ready.is_err() {
                            return;
                        }
                    }
                    else => return,
                }
            }
        })
        .await;
    }
}

/// One connection, served by one task: it reads frames, runs the requests of each read
/// together ([`Conn::start`]), and writes replies as they are ready, many per write when they
/// queue up. Reading stops while the replies held reach `tcp.max_reply_buffer_bytes` (a client
/// that does not read them), and a write that makes no progress for `tcp.idle_timeout_ms` closes the
/// connection (`write_timeout`).
async fn serve_connection<W: Wire>(
    mut stream: W,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    accepted_at: Instant,
) {
    let limits = shared.limits;
    let mut conn = Conn {
        out: Outbox::default(),
        running: FuturesUnordered::new(),
        in_flight: 0,
        reserved: 0,
    };
    let mut decoder = FrameDecoder::new(limits.max_frame_bytes);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut session: Option<Session> = None;
    let mut last_frame_at = Instant::now();
    let auth_deadline = accepted_at + limits.auth_timeout;
    let close = 'conn: loop {
        if conn.out.flush(&stream).is_err() {
            break Close::WriteTimeout;
        }
        if *shutdown.borrow() {
            break Close::Shutdown;
        }
        // Frames read earlier and held back while the replies were at their bound.
        if decoder.buffered() > 0 && conn.has_reply_room(&limits) {
            let read = &mut last_frame_at;
            if let Some(close) =
                drain(&mut decoder, &mut session, &shared, &mut conn, peer, read).await
            {
                break close;
            }
        }
        let idle_deadline = last_frame_at + limits.idle_timeout;
        let stall_deadline = conn
            .out
            .stalled_since
            .map(|since| since + limits.idle_timeout);
        // At the bound, the client must read its replies before we read its requests.
        let may_read = conn.has_reply_room(&limits);
        let unsent = conn.out.unsent(&stream);
        // Biased: a stalled writer is named as the reason even when the idle deadline has
        // passed too.
        tokio::select! {
            biased;
            _ = shutdown.changed() => break Close::Shutdown,
            _ = tokio::time::sleep_until(stall_deadline.unwrap_or(idle_deadline).into()),
                if stall_deadline.is_some() => break Close::WriteTimeout,
            _ = tokio::time::sleep_until(auth_deadline.into()), if session.is_none() => {
                break Close::AuthTimeout
            }
            Some(replies) = conn.running.next(), if !conn.running.is_empty() => {
                conn.answered_all(replies);
            }
            ready = stream.writable(), if unsent => {
                if ready.is_err() {
                    break Close::WriteTimeout;
                }
            }
            _ = tokio::time::sleep_until(idle_deadline.into()) => {
                if conn.in_flight == 0 && conn.out.pending() == 0 {
                    break Close::IdleTimeout;
                }
                // Busy on our side: the client is waiting for us, not idle.
                last_frame_at = Instant::now();
            }
            read = stream.read(&mut chunk), if may_read => {
                let n = match read {
                    Ok(0) => break Close::Eof,
                    Ok(n) => n,
                    Err(_) => break Close::ReadError,
                };
                decoder.feed(&chunk[..n]);
                let read = &mut last_frame_at;
                if let Some(close) = drain(&mut decoder, &mut session, &shared, &mut conn, peer, read).await {
                    break 'conn close;
                }
            }
        }
    };
    match close {
        // The client is gone or not reading: nothing more can reach it.
        Close::WriteTimeout | Close::ReadError => {}
        Close::AuthTimeout => {
            telemetry::record_refusal("auth_timeout");
            conn.out.push(&connection_error(
                401,
                "unauthorized",
                format!(
                    "no AUTH within {} ms (tcp.auth_timeout_ms)",
                    limits.auth_timeout.as_millis()
                ),
            ));
            conn.finish(&stream, limits.idle_timeout).await;
        }
        Close::IdleTimeout => {
            conn.out.push(&connection_error(
                408,
                "idle_timeout",
                format!(
                    "nothing received for {} ms",
                    limits.idle_timeout.as_millis()
                ),
            ));
            conn.finish(&stream, limits.idle_timeout).await;
        }
        Close::Shutdown => {
            // What is in flight finishes and is answered first.
            conn.finish(&stream, Duration::from_secs(SHUTDOWN_GRACE_S))
                .await;
            conn.out.push(&connection_error(
                503,
                "unavailable",
                "the server is shutting down".into(),
            ));
            conn.finish(&stream, limits.idle_timeout).await;
        }
        Close::Eof | Close::BadFrame | Close::Unauthorized | Close::TlsHandshake => {
            // What was read is answered before the connection closes.
            conn.finish(&stream, Duration::from_secs(SHUTDOWN_GRACE_S))
                .await;
        }
    }
    ::metrics::counter!(telemetry::TCP_CLOSED_TOTAL, "reason" => close.label()).increment(1);
    tracing::debug!(message = "TCP connection closed.", %peer, reason = close.label());
    if !matches!(close, Close::WriteTimeout | Close::ReadError) {
        // A clean end (TLS close_notify, FIN) once every reply is written.
        let _ = tokio::time::timeout(limits.idle_timeout, stream.shutdown()).await;
    }
}

/// Decodes the frames read so far and starts their requests, the `PLACE_ORDER`s of them together
/// ([`Conn::start`]), while the connection's replies leave room ([`Conn::has_reply_room`]):
/// frames past the bound stay in the decoder until the client reads its replies. `Some` when
/// the connection must close (what was decoded before is still run and answered).
async fn drain(
    decoder: &mut FrameDecoder,
    session: &mut Option<Session>,
    shared: &Arc<Shared>,
    conn: &mut Conn,
    peer: SocketAddr,
    last_frame_at: &mut Instant,
) -> Option<Close> {
    let mut batch = Vec::new();
    let closing = loop {
        if !conn.has_reply_room(&shared.limits) {
            break None;
        }
        let frame = match decoder.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break None,
            Err(error) => {
                let (status, code) = match error {
                    FrameError::TooLarge { .. } => {
                        telemetry::record_refusal("payload_too_large");
                        (413, "payload_too_large")
                    }
                    _ => (400, "invalid_frame"),
                };
                conn.out
                    .push(&connection_error(status, code, error.to_string()));
                break Some(Close::BadFrame);
            }
        };
        *last_frame_at = Instant::now();
        match handle_frame(frame, session, shared, conn, peer).await {
            Step::Done => {}
            Step::Run(request) => batch.push(request),
            Step::Close(close) => break Some(close),
        }
    };
    if !batch.is_empty() {
        conn.start(batch, shared);
    }
    closing
}

/// What the reader does after a frame.
enum Step {
    /// Answered already (or nothing to answer): go on reading.
    Done,
    /// Run this request.
    Run(Request),
    /// End the connection (after whatever was queued is written).
    Close(Close),
}

/// One authenticated request that passed the connection's checks, holding one in-flight slot
/// and its reply's room.
struct Request {
    caller: Caller,
    name: &'static str,
    frame: Frame,
    /// Reply bytes reserved for it ([`reply_reserve`]).
    reserve: usize,
}

/// The most reply bytes a request can produce, reserved of `tcp.max_reply_buffer_bytes` while
/// it runs: a `PLACE_ORDER` twice its payload and [`PLACE_REPLY_EXTRA_BYTES`], anything else one
/// frame of the largest size (every reply fits `tcp.max_frame_bytes`: pages are shortened).
fn reply_reserve(frame: &Frame, limits: &Limits) -> usize {
    let whole_frame = frame::LENGTH_BYTES + limits.max_frame_bytes;
    match frame.opcode {
        op::PLACE_ORDER => (2 * frame.payload.len() + PLACE_REPLY_EXTRA_BYTES).min(whole_frame),
        _ => whole_frame,
    }
}

/// Checks one frame against the connection's state: `PING`, `AUTH` and refusals are answered
/// here; a request to run holds an in-flight slot.
async fn handle_frame(
    frame: Frame,
    session: &mut Option<Session>,
    shared: &Arc<Shared>,
    conn: &mut Conn,
    peer: SocketAddr,
) -> Step {
    let request_id = frame.request_id;
    // PING too only after AUTH: a keyless client cannot keep a connection open with it.
    if frame.opcode == op::PING && session.is_some() {
        conn.out.push(&Frame {
            opcode: op::PING | op::REPLY,
            request_id,
            payload: Vec::new(),
        });
        return Step::Done;
    }
    let Some(current) = session.as_ref() else {
        if frame.opcode != op::AUTH {
            let error = ApiError::Unauthorized(
                "send AUTH first: the connection is not authenticated".into(),
            );
            refuse(shared, &mut conn.out, request_id, &error, "tcp", peer).await;
            return Step::Close(Close::Unauthorized);
        }
        return match authenticate(shared, &frame.payload) {
            Ok((caller, secret)) => {
                let ok = msg::AuthOk {
                    key_id: caller.key_id.clone(),
                    role: caller.role.to_string(),
                    max_in_flight: shared.limits.max_in_flight as u32,
                    max_frame_bytes: shared.limits.max_frame_bytes as u32,
                };
                conn.out
                    .push(&msg::frame(op::AUTH | op::REPLY, request_id, &ok));
                *session = Some(Session { caller, secret });
                Step::Done
            }
            Err(error) => {
                refuse(shared, &mut conn.out, request_id, &error, "tcp auth", peer).await;
                Step::Close(Close::Unauthorized)
            }
        };
    };
    if frame.opcode == op::AUTH {
        let error = ApiError::invalid("opcode", "this connection is already authenticated");
        conn.out.push(&error_frame(request_id, &error));
        return Step::Done;
    }
    // The key may have been revoked since AUTH.
    let Some(record) = shared.auth.keys.lookup(&current.secret) else {
        let error = ApiError::Unauthorized("unknown or revoked API key".into());
        refuse(shared, &mut conn.out, request_id, &error, "tcp", peer).await;
        return Step::Close(Close::Unauthorized);
    };
    if !shared.auth.limiter.allow(&record.id, Instant::now()) {
        // A refusal counts as a request in change management's watch, as a 429 over HTTP does.
        shared.window.record(Duration::ZERO, 429);
        conn.out
            .push(&error_frame(request_id, &ApiError::RateLimited));
        return Step::Done;
    }
    let Some(name) = op::name(frame.opcode) else {
        let error = ApiError::invalid("opcode", format!("unknown opcode 0x{:02x}", frame.opcode));
        conn.out.push(&error_frame(request_id, &error));
        return Step::Done;
    };
    let max = shared.limits.max_in_flight;
    if conn.in_flight >= max {
        shared.window.record(Duration::ZERO, 429);
        telemetry::record_refusal("rate_limited");
        let mut body = ApiError::RateLimited.problem();
        body.detail = format!("more than {max} requests in flight on this connection");
        conn.out.push(&msg::frame(
            op::ERROR,
            request_id,
            &ErrorBody {
                status: body.status,
                code: body.code,
                detail: body.detail,
                param: None,
                skus: Vec::new(),
            },
        ));
        return Step::Done;
    }
    conn.in_flight += 1;
    let reserve = reply_reserve(&frame, &shared.limits);
    conn.reserved += reserve;
    Step::Run(Request {
        caller: current.caller.clone(),
        name,
        frame,
        reserve,
    })
}

/// The reply frames of one request, or of the placements of one read.
enum Replies {
    One(Frame),
    Many(Vec<Frame>),
}

/// Runs the `PLACE_ORDER` requests of one read, all of one caller, with one
/// [`ops::place_orders`] call. Each request still gets its own reply frame with the bytes and
/// errors [`run_request`] would give it, its own metrics (`orderd_orders_total`, the request
/// duration) and change-management sample, and a 403 its own audit entry; the replies in the
/// requests' order.
async fn run_placements(shared: &Shared, requests: Vec<Request>) -> Vec<Frame> {
    let started = Instant::now();
    let caller = &requests[0].caller;
    // Whether each request's body decoded (only those count in `orderd_orders_total`).
    let mut decoded = Vec::with_capacity(requests.len());
    let inputs: Vec<Result<PlaceInput, ApiError>> = requests
        .iter()
        .map(|request| {
            let payload = &request.frame.payload;
            let input = decode::<msg::PlaceOrder>(payload);
            decoded.push(input.is_ok());
            input.and_then(|order| place_input(order, payload))
        })
        .collect();
    let answers = match ops::allow::<ops::op::PlaceOrder>(caller) {
        Ok(allowed) => ops::place_orders(shared.ctx(), &shared.pricing, &allowed, inputs).await,
        // Every placement of the read is refused alike (and audited, below), except those
        // whose body did not decode.
        Err(error) => inputs
            .into_iter()
            .map(|input| input.and(Err(error.clone())))
            .collect(),
    };
    let mut frames = Vec::with_capacity(requests.len());
    let mut statuses = Vec::with_capacity(requests.len());
    let mut forbidden = Vec::new();
    let mut answers = answers.into_iter();
    for (request, decoded) in requests.iter().zip(decoded) {
        let request_id = request.frame.request_id;
        let answer = answers.next().unwrap_or_else(|| Err(ops::no_outcome()));
        if decoded {
            telemetry::record_order(answer.as_ref());
        }
        let answer = answer.and_then(|view| {
            fits_frame(
                msg::encode_body(&wire::tcp::order(view, false)),
                &shared.limits,
            )
        });
        match answer {
            Ok(payload) => {
                frames.push(Frame {
                    opcode: op::PLACE_ORDER | op::REPLY,
                    request_id,
                    payload,
                });
                statuses.push(200);
            }
            Err(error) => {
                if matches!(error, ApiError::Forbidden(_)) {
                    forbidden.push(record_forbidden(&shared.audit, request.name, caller));
                }
                frames.push(error_frame(request_id, &error));
                statuses.push(error.status());
            }
        }
    }
    // A 403 is answered once its audit entry is written, as over HTTP.
    future::join_all(forbidden).await;
    let elapsed = started.elapsed();
    for (request, status) in requests.iter().zip(statuses) {
        telemetry::record_tcp_request(request.name, telemetry::request_outcome(status), elapsed);
        shared.window.record(elapsed, status);
    }
    frames
}

/// One placement for [`ops::place_orders`]. `bytes` is the order's own postcard encoding (a
/// `PLACE_ORDER` payload, or the order's bytes inside a `PLACE_ORDERS` body): its hash
/// identifies the request for idempotency, so a retry of the order finds its first answer
/// whichever of the two opcodes carried it each time.
/// Its Idempotency-Key is validated here (a bad one fails this order alone).
fn place_input(mut order: msg::PlaceOrder, bytes: &[u8]) -> Result<PlaceInput, ApiError> {
    let key = IdempotencyKey::parse_opt(order.idempotency_key.take())?;
    Ok(PlaceInput {
        order: order.into(),
        key,
        request_hash: orderd_service::idem::placement_hash(bytes),
    })
}

/// `PLACE_ORDERS`: the whole frame is refused (400, param `orders`) when it holds no order or
/// more than `tcp.batch_orders_max`, or more than fit one reply frame
/// ([`msg::place_orders_fit`]), and (403) when the caller's role may not place orders; then
/// every order is placed in one [`ops::place_orders`] call, each with its own outcome.
async fn place_orders(
    shared: &Shared,
    caller: &Caller,
    payload: &[u8],
) -> Result<Vec<u8>, ApiError> {
    let limits = &shared.limits;
    let max = limits
        .batch_orders_max
        .min(msg::place_orders_fit(limits.max_frame_bytes));
    let orders = msg::split_place_orders(payload, max).map_err(|error| match error {
        PlaceOrdersError::Body(error) => ApiError::invalid("body", error.to_string()),
        PlaceOrdersError::Empty => {
            ApiError::invalid("orders", "a PLACE_ORDERS frame holds at least one order")
        }
        PlaceOrdersError::TooMany { count, .. } if count > limits.batch_orders_max as u64 => {
            ApiError::invalid(
                "orders",
                format!(
                    "{count} orders: at most {} per PLACE_ORDERS frame (tcp.batch_orders_max)",
                    limits.batch_orders_max
                ),
            )
        }
        PlaceOrdersError::TooMany { count, max } => ApiError::invalid(
            "orders",
            format!(
                "{count} orders: the replies of at most {max} fit one frame of {} bytes \
                 (tcp.max_frame_bytes)",
                limits.max_frame_bytes
            ),
        ),
    })?;
    let allowed = ops::allow::<ops::op::PlaceOrder>(caller)?;
    let inputs = orders
        .into_iter()
        .map(|(order, bytes)| place_input(order, bytes))
        .collect();
    let answers = ops::place_orders(shared.ctx(), &shared.pricing, &allowed, inputs).await;
    let mut reply = msg::PlaceOrdersReply {
        outcomes: Vec::with_capacity(answers.len()),
    };
    let mut forbidden = Vec::new();
    for answer in answers {
        telemetry::record_order(answer.as_ref());
        reply.outcomes.push(match answer {
            Ok(view) => msg::PlaceOutcome::Placed(msg::PlacedOrder {
                id: view.id.to_string(),
                status: view.status.as_str().to_string(),
                total: view.total,
                created_at_us: view.created_at_us,
            }),
            Err(error) => {
                if matches!(error, ApiError::Forbidden(_)) {
                    forbidden.push(record_forbidden(&shared.audit, "place_orders", caller));
                }
                msg::PlaceOutcome::Error(error_body(&error))
            }
        });
    }
    future::join_all(forbidden).await;
    let mut bytes = msg::encode_body(&reply);
    if frame::HEADER_AFTER_LENGTH + bytes.len() > limits.max_frame_bytes {
        // Too many long error details for one frame: status and code only (always fits).
        reply.compact_errors();
        bytes = msg::encode_body(&reply);
    }
    Ok(bytes)
}

/// Runs one request; its reply frame.
async fn run_request(shared: &Shared, request: Request) -> Frame {
    let Request {
        caller,
        name,
        frame,
        reserve: _,
    } = request;
    let started = Instant::now();
    let (reply, outcome, status) =
        match dispatch(shared, &caller, frame.opcode, &frame.payload).await {
            Ok(payload) => (
                Frame {
                    opcode: frame.opcode | op::REPLY,
                    request_id: frame.request_id,
                    payload,
                },
                "ok",
                200,
            ),
            Err(error) => {
                if matches!(error, ApiError::Forbidden(_)) {
                    record_forbidden(&shared.audit, name, &caller).await;
                }
                let status = error.status();
                (
                    error_frame(frame.request_id, &error),
                    telemetry::request_outcome(status),
                    status,
                )
            }
        };
    let elapsed = started.elapsed();
    telemetry::record_tcp_request(name, outcome, elapsed);
    if frame.opcode != op::PING {
        shared.window.record(elapsed, status);
    }
    reply
}

/// Answers a refused authentication, and writes it to the audit trail first (as HTTP does:
/// `auth.unauthorized`, actor `anonymous`, never the secret).
async fn refuse(
    shared: &Shared,
    out: &mut Outbox,
    request_id: u64,
    error: &ApiError,
    target: &str,
    peer: SocketAddr,
) {
    match shared
        .audit
        .refusal_from(
            Some(peer.ip()),
            ANONYMOUS,
            "auth.unauthorized",
            target.to_string(),
            error.to_string(),
        )
        .await
    {
        // The first of this peer's window: logged once, the rest counted into one entry.
        Ok(true) => {
            tracing::warn!(message = "TCP request refused.", %peer, code = error.code(), detail = %error)
        }
        Ok(false) => {}
        Err(audit_error) => {
            tracing::warn!(message = "Could not write the audit entry of a refused request.", error = %audit_error)
        }
    }
    out.push(&error_frame(request_id, error));
}

/// Writes a 403 to the audit trail, as HTTP does (`auth.forbidden`, the key and its role).
/// Not aggregated per peer as 401s are: the caller holds a key, whose rate limit bounds these.
async fn record_forbidden(audit: &AuditLog, op_name: &str, caller: &Caller) {
    if let Err(error) = audit
        .record_refusal(
            &caller.key_id,
            "auth.forbidden",
            format!("tcp {op_name}"),
            format!("role={}", caller.role),
        )
        .await
    {
        tracing::warn!(message = "Could not write the audit entry of a refused request.", %error);
    }
}

/// Checks an `AUTH` body against the key table.
fn authenticate(shared: &Shared, payload: &[u8]) -> Result<(Caller, String), ApiError> {
    let auth: msg::Auth = msg::decode_body(payload)
        .map_err(|_| ApiError::Unauthorized("malformed AUTH body".into()))?;
    let Some(record) = shared.auth.keys.lookup(&auth.api_key) else {
        return Err(ApiError::Unauthorized("unknown or revoked API key".into()));
    };
    Ok((Caller::from(record), auth.api_key))
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, ApiError> {
    msg::decode_body(payload).map_err(|error| ApiError::invalid("body", error.to_string()))
}

/// [`decode`] for the body of a mutation, whose last field is its idempotency key (a body
/// from before that field reads as having none).
fn decode_keyed<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, ApiError> {
    msg::decode_keyed_body(payload).map_err(|error| ApiError::invalid("body", error.to_string()))
}

/// The request hash of a mutation other than a placement: `tcp `, the opcode's name and the
/// payload (which names the object), so that a key reused with another opcode or object is a
/// conflict ([`orderd_service::idem::request_hash`]).
fn keyed_hash(opcode: u8, payload: &[u8]) -> u128 {
    let name = op::name(opcode).unwrap_or("unknown");
    orderd_service::idem::request_hash(&format!("tcp {name}"), payload)
}

/// Runs one authenticated request; the reply's payload. `PLACE_ORDER` is not run here but
/// with the other placements of its read ([`run_placements`]).
async fn dispatch(
    shared: &Shared,
    caller: &Caller,
    opcode: u8,
    payload: &[u8],
) -> Result<Vec<u8>, ApiError> {
    let ctx = shared.ctx();
    let payload = match opcode {
        op::PLACE_ORDERS => place_orders(shared, caller, payload).await?,
        op::GET_ORDER => {
            let request: msg::OrderRef = decode(payload)?;
            msg::encode_body(&wire::tcp::order(
                ops::get_order(ctx, ops::allow(caller)?, &request.id).await?,
                true,
            ))
        }
        op::CANCEL_ORDER => {
            let request: msg::CancelOrder = decode_keyed(payload)?;
            let hash = keyed_hash(opcode, payload);
            let key = IdempotencyKey::parse_opt(request.idempotency_key)?;
            let allowed = ops::allow(caller)?;
            let view =
                ops::cancel_order(ctx, allowed, &request.id, request.reason, key, hash).await?;
            msg::encode_body(&wire::tcp::order(view, true))
        }
        op::LIST_ORDERS => {
            let request: msg::ListOrders = decode(payload)?;
            let query = OrderQuery::from(request);
            let (items, next) = ops::list_orders(ctx, ops::allow(caller)?, &query).await?;
            let items = items
                .into_iter()
                .map(|view| {
                    let cursor = page::cursor_after(&view);
                    (wire::tcp::order(view, true), cursor)
                })
                .collect();
            // A page that would not fit one frame is shortened; `next` continues it.
            page::encode_fitting(
                items,
                next,
                payload_max(&shared.limits),
                |items, next| msg::encode_body(&msg::OrderPage { items, next }),
                "tcp.max_frame_bytes",
            )?
        }
        op::CREATE_SHIPMENT => {
            let request: msg::CreateShipment = decode_keyed(payload)?;
            let hash = keyed_hash(opcode, payload);
            let (order_id, key) = (
                request.order_id.clone(),
                IdempotencyKey::parse_opt(request.idempotency_key.clone())?,
            );
            let allowed = ops::allow(caller)?;
            let view =
                ops::create_shipment(ctx, allowed, &order_id, request.into(), key, hash).await?;
            msg::encode_body(&wire::tcp::shipment(view))
        }
        op::GET_STOCK => {
            let request: msg::SkuRef = decode(payload)?;
            msg::encode_body(&wire::tcp::stock(
                ops::get_stock(ctx, ops::allow(caller)?, &request.sku).await?,
            ))
        }
        op::ADJUST_STOCK => {
            let request: msg::AdjustStock = decode_keyed(payload)?;
            let hash = keyed_hash(opcode, payload);
            let (sku, key) = (
                request.sku.clone(),
                IdempotencyKey::parse_opt(request.idempotency_key.clone())?,
            );
            let allowed = ops::allow(caller)?;
            msg::encode_body(&wire::tcp::stock(
                ops::adjust_stock(ctx, allowed, &sku, request.into(), key, hash).await?,
            ))
        }
        op::CREATE_CUSTOMER => {
            let request: msg::CreateCustomer = decode_keyed(payload)?;
            let hash = keyed_hash(opcode, payload);
            let key = IdempotencyKey::parse_opt(request.idempotency_key.clone())?;
            let allowed = ops::allow(caller)?;
            msg::encode_body(&wire::tcp::customer(
                ops::create_customer(ctx, allowed, request.into(), key, hash).await?,
                false,
            ))
        }
        op::GET_CUSTOMER => {
            let request: msg::CustomerRef = decode(payload)?;
            let (view, masked) = ops::get_customer(ctx, ops::allow(caller)?, &request.id).await?;
            msg::encode_body(&wire::tcp::customer(view, masked))
        }
        other => {
            return Err(ApiError::invalid(
                "opcode",
                format!("unknown opcode 0x{other:02x}"),
            ))
        }
    };
    fits_frame(payload, &shared.limits)
}

/// The most payload bytes of a frame (`tcp.max_frame_bytes` counts the header after the length).
fn payload_max(limits: &Limits) -> usize {
    limits.max_frame_bytes - frame::HEADER_AFTER_LENGTH
}

/// A reply's payload, or the error that says it does not fit one frame: no reply ever exceeds
/// `tcp.max_frame_bytes`, which clients size their buffers by. Pages are shortened before
/// ([`page::encode_fitting`]); anything else this long means the limit is set too low.
fn fits_frame(payload: Vec<u8>, limits: &Limits) -> Result<Vec<u8>, ApiError> {
    if payload.len() > payload_max(limits) {
        return Err(ApiError::Internal(format!(
            "the reply ({} bytes) does not fit tcp.max_frame_bytes ({} bytes); raise it",
            payload.len() + frame::HEADER_AFTER_LENGTH,
            limits.max_frame_bytes
        )));
    }
    Ok(payload)
}
