//! `orderd-client`: an async Rust client of orderd's binary TCP protocol (`docs/PROTOCOL.md`).
//!
//! One [`Client`] holds one connection and pipelines every call made on it: calls from many
//! tasks share the connection, each with its own request id, and their replies are matched by
//! id in whatever order they come back. The client never has more requests in flight than the
//! server's `max_in_flight` (told in the `AUTH` reply); more calls wait for a slot.
//!
//! Reconnects: when the connection breaks, every call in flight fails with
//! [`ClientError::ConnectionLost`] (the request may or may not have been applied: retry the
//! mutation with the same idempotency key to find out; every mutation's body has one), and the
//! next call connects and authenticates again, retrying the connect with a doubling wait.
//!
//! ```no_run
//! # async fn example() -> Result<(), orderd_client::ClientError> {
//! use orderd_client::{Client, ClientConfig};
//! use orderd_proto::tcp::{Line, PlaceOrder};
//! let client = Client::new("127.0.0.1:7070", "the API key's secret", ClientConfig::default());
//! let order = client
//!     .place_order(&PlaceOrder {
//!         customer_id: "cus_…".into(),
//!         lines: vec![Line { sku: "SKU-1".into(), qty: 1, unit_price: 1999 }],
//!         shipping_address: None,
//!         note: None,
//!         idempotency_key: Some("checkout-42".into()),
//!     })
//!     .await?;
//! println!("{} {}", order.id, order.status);
//! # Ok(()) }
//! ```
//!
//! TLS: a server whose `tcp.tls_cert_file` is set speaks TLS only; give the client
//! [`ClientConfig::tls`] ([`TlsOptions::from_ca_file`]: the CA to trust and the name the
//! server's certificate must carry), and everything, `AUTH`'s secret first, crosses encrypted.
//!
//! Many orders in one frame ([`Client::place_orders`], the `PLACE_ORDERS` opcode) cost one
//! round trip and one engine submission: each order gets its own outcome.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orderd_proto::frame::{self, Frame, FrameDecoder};
use orderd_proto::tcp::{self as msg, op, ErrorBody, CONNECTION_REQUEST_ID};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

pub use orderd_proto::tcp;

/// How the client connects.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Time allowed for one connect and its `AUTH`.
    pub connect_timeout: Duration,
    /// Connect attempts before a call fails with the last error (at least 1).
    pub connect_attempts: u32,
    /// Wait before the second attempt; doubles up to [`ClientConfig::reconnect_wait_max`].
    pub reconnect_wait: Duration,
    pub reconnect_wait_max: Duration,
    /// The largest frame the client reads before the server told its own maximum.
    pub max_frame_bytes: usize,
    /// TLS to a server with `tcp.tls_cert_file` set; `None`: plaintext.
    pub tls: Option<TlsOptions>,
}

/// How the client speaks TLS: the certificates it trusts and the name the server's
/// certificate must carry (a DNS name, or an IP address in the certificate's SAN).
#[derive(Clone, Debug)]
pub struct TlsOptions {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsOptions {
    /// Trusts the CA certificates of the PEM file `ca_file` (and nothing else), TLS 1.2 and
    /// 1.3, and expects `server_name` in the server's certificate.
    pub fn from_ca_file(
        ca_file: impl AsRef<Path>,
        server_name: &str,
    ) -> Result<TlsOptions, ClientError> {
        let path = ca_file.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| ClientError::Tls(format!("cannot read {}: {e}", path.display())))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| {
                ClientError::Tls(format!("{} is not PEM certificates: {e}", path.display()))
            })?;
            roots.add(cert).map_err(|e| {
                ClientError::Tls(format!("{}: unusable CA certificate: {e}", path.display()))
            })?;
        }
        if roots.is_empty() {
            return Err(ClientError::Tls(format!(
                "{} holds no certificate",
                path.display()
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsOptions::new(Arc::new(config), server_name)
    }

    /// A rustls configuration of the caller's own (client certificates, other roots).
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<TlsOptions, ClientError> {
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| ClientError::Tls(format!("server name {server_name:?}: {e}")))?;
        Ok(TlsOptions {
            config,
            server_name,
        })
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            connect_attempts: 5,
            reconnect_wait: Duration::from_millis(50),
            reconnect_wait_max: Duration::from_secs(2),
            max_frame_bytes: frame::MAX_FRAME_BYTES_DEFAULT,
            tls: None,
        }
    }
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server answered the request with an error (the codes of API.md).
    #[error("{} ({}): {}", .0.code, .0.status, .0.detail)]
    Api(ErrorBody),
    /// The server ended the connection with this error (bad frame, idle timeout, shutdown,
    /// refused authentication, too many connections).
    #[error("connection closed by the server: {} ({}): {}", .0.code, .0.status, .0.detail)]
    Closed(ErrorBody),
    /// The connection broke with the request in flight: it may or may not have been applied.
    #[error("connection lost with the request in flight")]
    ConnectionLost,
    /// No connection could be made.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// TLS could not be set up: an unusable CA file or server name, or a failed handshake
    /// (a certificate not signed by the CA or not for the name, a plaintext server).
    #[error("TLS: {0}")]
    Tls(String),
    /// The server sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request would not fit one frame of the server's `max_frame_bytes` (told in the
    /// `AUTH` reply): not sent, since the server would close the connection over it.
    #[error("a frame of {length} bytes exceeds the server's maximum of {max}")]
    FrameTooLarge { length: usize, max: usize },
}

impl ClientError {
    /// The error code when the server gave one (`insufficient_stock`, `not_found`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api(body) | ClientError::Closed(body) => Some(&body.code),
            _ => None,
        }
    }
}

type Waiter = oneshot::Sender<Result<Frame, ClientError>>;

/// One live connection.
struct Conn {
    outgoing: mpsc::Sender<Frame>,
    pending: Arc<Pending>,
    slots: Arc<Semaphore>,
    auth: msg::AuthOk,
}

/// Calls waiting for their reply, and whether the connection can still answer them.
struct Pending {
    state: Mutex<PendingState>,
}

struct PendingState {
    alive: bool,
    /// Why the connection ended, for the calls it fails.
    closed_with: Option<ClientError>,
    waiters: HashMap<u64, Waiter>,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            state: Mutex::new(PendingState {
                alive: true,
                closed_with: None,
                waiters: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a call; refused once the connection is dead.
    fn insert(&self, id: u64, waiter: Waiter) -> Result<(), ClientError> {
        let mut state = self.lock();
        if !state.alive {
            return Err(state
                .closed_with
                .clone()
                .unwrap_or(ClientError::ConnectionLost));
        }
        state.waiters.insert(id, waiter);
        Ok(())
    }

    fn complete(&self, frame: Frame) {
        let waiter = self.lock().waiters.remove(&frame.request_id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(Ok(frame));
        }
    }

    /// Marks the connection dead and fails every call in flight.
    fn fail_all(&self, error: ClientError) {
        let waiters = {
            let mut state = self.lock();
            state.alive = false;
            if state.closed_with.is_none() {
                state.closed_with = Some(error.clone());
            }
            std::mem::take(&mut state.waiters)
        };
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(error.clone()));
        }
    }

    fn alive(&self) -> bool {
        self.lock().alive
    }
}

/// A pipelining, reconnecting client. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    api_key: String,
    config: ClientConfig,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU64,
    /// Connections made so far (for callers that count reconnects).
    connects: AtomicU64,
    closed: AtomicBool,
}

impl Client {
    /// A client of the server at `addr` (`host:port`) using the API key `api_key`. Nothing
    /// connects until the first call (or [`Client::connect`]).
    pub fn new(
        addr: impl Into<String>,
        api_key: impl Into<String>,
        config: ClientConfig,
    ) -> Client {
        Client {
            inner: Arc::new(Inner {
                addr: addr.into(),
                api_key: api_key.into(),
                config,
                conn: tokio::sync::Mutex::new(None),
                // 0 is the connection-level id.
                next_id: AtomicU64::new(1),
                connects: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Connects and authenticates now (a call does it when needed); answers who the key is.
    pub async fn connect(&self) -> Result<msg::AuthOk, ClientError> {
        Ok(self.connection().await?.auth.clone())
    }

    /// Connections made so far: 1 after the first call, more after reconnects.
    pub fn connects(&self) -> u64 {
        self.inner.connects.load(Ordering::Relaxed)
    }

    /// Closes the connection (calls in flight fail); later calls fail too.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(conn) = self.inner.conn.lock().await.take() {
            conn.pending.fail_all(ClientError::ConnectionLost);
        }
    }

    /// The live connection, connecting (with retries) when there is none.
    async fn connection(&self) -> Result<Arc<Conn>, ClientError> {
        let mut slot = self.inner.conn.lock().await;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Connect("the client was closed".into()));
        }
        if let Some(conn) = slot.as_ref() {
            if conn.pending.alive() {
                return Ok(conn.clone());
            }
        }
        let config = &self.inner.config;
        let mut wait = config.reconnect_wait;
        let mut attempt = 0;
        let conn = loop {
            attempt += 1;
            match tokio::time::timeout(config.connect_timeout, self.open()).await {
                Ok(Ok(conn)) => break conn,
                // A refused key, a full server or a certificate we do not trust will not change
                // by retrying at once.
                Ok(Err(
                    error @ (ClientError::Api(_) | ClientError::Closed(_) | ClientError::Tls(_)),
                )) => return Err(error),
                Ok(Err(error)) if attempt >= config.connect_attempts.max(1) => return Err(error),
                Err(_) if attempt >= config.connect_attempts.max(1) => {
                    return Err(ClientError::Connect(format!(
                        "no answer from {} within {:?}",
                        self.inner.addr, config.connect_timeout
                    )))
                }
                _ => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(config.reconnect_wait_max);
                }
            }
        };
        let conn = Arc::new(conn);
        *slot = Some(conn.clone());
        self.inner.connects.fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    /// One connection: TCP, TLS when configured, then `AUTH`, then the reader and writer tasks.
    async fn open(&self) -> Result<Conn, ClientError> {
        let stream = TcpStream::connect(&self.inner.addr)
            .await
            .map_err(|e| ClientError::Connect(format!("{}: {e}", self.inner.addr)))?;
        let _ = stream.set_nodelay(true);
        match &self.inner.config.tls {
            None => {
                let (reader, writer) = stream.into_split();
                self.start(reader, writer).await
            }
            Some(tls) => {
                let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map_err(|e| {
                        ClientError::Tls(format!("handshake with {}: {e}", self.inner.addr))
                    })?;
                let (reader, writer) = tokio::io::split(stream);
                self.start(reader, writer).await
            }
        }
    }

    /// `AUTH` over a fresh connection, then its reader and writer tasks.
    async fn start<R, W>(&self, mut reader: R, mut writer: W) -> Result<Conn, ClientError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut decoder = FrameDecoder::new(self.inner.config.max_frame_bytes);
        let auth_id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut bytes = Vec::new();
        frame::encode(
            &msg::frame(
                op::AUTH,
                auth_id,
                &msg::Auth {
                    api_key: self.inner.api_key.clone(),
                },
            ),
            &mut bytes,
        );
        async {
            writer.write_all(&bytes).await?;
            writer.flush().await
        }
        .await
        .map_err(|e| ClientError::Connect(format!("send AUTH: {e}")))?;
        let reply = read_one(&mut reader, &mut decoder).await?;
        let auth: msg::AuthOk = match reply.opcode {
            code if code == op::AUTH | op::REPLY => decode_reply(&reply.payload)?,
            op::ERROR => {
                let body: ErrorBody = decode_reply(&reply.payload)?;
                return Err(if reply.request_id == CONNECTION_REQUEST_ID {
                    ClientError::Closed(body)
                } else {
                    ClientError::Api(body)
                });
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "AUTH answered with opcode 0x{other:02x}"
                )))
            }
        };
        // From now on the server's own maximum bounds its replies (nothing else has been sent,
        // so nothing is buffered past the AUTH reply).
        if decoder.buffered() == 0 {
            decoder = FrameDecoder::new(auth.max_frame_bytes as usize);
        }
        let pending = Arc::new(Pending::new());
        let (outgoing, outgoing_rx) = mpsc::channel(auth.max_in_flight.max(1) as usize);
        tokio::spawn(write_frames(writer, outgoing_rx, pending.clone()));
        tokio::spawn(read_frames(reader, decoder, pending.clone()));
        Ok(Conn {
            outgoing,
            pending,
            slots: Arc::new(Semaphore::new(auth.max_in_flight.max(1) as usize)),
            auth,
        })
    }

    /// Sends one request and waits for its reply frame. A payload too large for the server's
    /// frames fails with [`ClientError::FrameTooLarge`] without being sent.
    pub async fn call(&self, opcode: u8, payload: Vec<u8>) -> Result<Frame, ClientError> {
        let conn = self.connection().await?;
        let length = frame::HEADER_AFTER_LENGTH + payload.len();
        let max = conn.auth.max_frame_bytes as usize;
        if length > max {
            return Err(ClientError::FrameTooLarge { length, max });
        }
        let _slot: OwnedSemaphorePermit = conn
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::ConnectionLost)?;
        let request_id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (waiter, reply) = oneshot::channel();
        conn.pending.insert(request_id, waiter)?;
        let frame = Frame {
            opcode,
            request_id,
            payload,
        };
        if conn.outgoing.send(frame).await.is_err() {
            conn.pending.fail_all(ClientError::ConnectionLost);
        }
        let reply = reply.await.map_err(|_| ClientError::ConnectionLost)??;
        match reply.opcode {
            op::ERROR => Err(ClientError::Api(decode_reply(&reply.payload)?)),
            code if code == opcode | op::REPLY => Ok(reply),
            other => Err(ClientError::Protocol(format!(
                "request 0x{opcode:02x} answered with opcode 0x{other:02x}"
            ))),
        }
    }

    async fn request<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        opcode: u8,
        body: &Req,
    ) -> Result<Rep, ClientError> {
        let reply = self.call(opcode, msg::encode_body(body)).await?;
        decode_reply(&reply.payload)
    }

    /// `PING`: a round trip that needs no role.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.call(op::PING, Vec::new()).await.map(|_| ())
    }

    pub async fn place_order(&self, order: &msg::PlaceOrder) -> Result<msg::Order, ClientError> {
        self.request(op::PLACE_ORDER, order).await
    }

    /// Places many orders in one `PLACE_ORDERS` frame: one round trip, and one engine
    /// submission on the server. Answers one outcome per order, in the same order: the placed
    /// order (its id, status, total and creation time; `get_order` has the rest) or the error a
    /// [`Client::place_order`] of that order alone would get (`insufficient_stock`,
    /// `idempotency_conflict`, …; when the whole reply would not fit a frame otherwise, the
    /// server sends errors' `status` and `code` only).
    ///
    /// Each order keeps its own `idempotency_key`, identified by the order's own encoding: a
    /// retry of an order, alone or inside any other batch, answers its first outcome and
    /// places nothing more.
    ///
    /// The call as a whole fails with [`ClientError::Api`] when the server refuses the frame:
    /// no order, or more than the server's `tcp.batch_orders_max` (8,189 by default), or more
    /// than [`tcp::place_orders_fit`] of its `max_frame_bytes` (1,023 for 64 KiB) (`400
    /// invalid_request`, param `orders`); a key whose role may not place orders (`403
    /// forbidden`). A batch whose frame is larger than the server's `max_frame_bytes` fails
    /// with [`ClientError::FrameTooLarge`] without being sent. Nothing is placed then.
    pub async fn place_orders(
        &self,
        orders: &[msg::PlaceOrder],
    ) -> Result<Vec<Result<msg::PlacedOrder, ErrorBody>>, ClientError> {
        // A slice encodes as the `orders` list of `msg::PlaceOrders` (its only field).
        let reply: msg::PlaceOrdersReply = self.request(op::PLACE_ORDERS, &orders).await?;
        if reply.outcomes.len() != orders.len() {
            return Err(ClientError::Protocol(format!(
                "{} outcomes for {} orders",
                reply.outcomes.len(),
                orders.len()
            )));
        }
        Ok(reply
            .outcomes
            .into_iter()
            .map(|outcome| match outcome {
                msg::PlaceOutcome::Placed(order) => Ok(order),
                msg::PlaceOutcome::Error(error) => Err(error),
            })
            .collect())
    }

    pub async fn get_order(&self, id: &str) -> Result<msg::Order, ClientError> {
        self.request(op::GET_ORDER, &msg::OrderRef { id: id.into() })
            .await
    }

    /// Cancels an order, without an idempotency key (see [`Client::cancel_order_with`]).
    pub async fn cancel_order(
        &self,
        id: &str,
        reason: Option<String>,
    ) -> Result<msg::Order, ClientError> {
        self.cancel_order_with(&msg::CancelOrder {
            id: id.into(),
            reason,
            idempotency_key: None,
        })
        .await
    }

    /// Cancels an order; with `idempotency_key`, a retry of the same body answers the first
    /// answer.
    pub async fn cancel_order_with(
        &self,
        cancel: &msg::CancelOrder,
    ) -> Result<msg::Order, ClientError> {
        self.request(op::CANCEL_ORDER, cancel).await
    }

    pub async fn list_orders(
        &self,
        query: &msg::ListOrders,
    ) -> Result<msg::OrderPage, ClientError> {
        self.request(op::LIST_ORDERS, query).await
    }

    pub async fn create_shipment(
        &self,
        shipment: &msg::CreateShipment,
    ) -> Result<msg::Shipment, ClientError> {
        self.request(op::CREATE_SHIPMENT, shipment).await
    }

    pub async fn get_stock(&self, sku: &str) -> Result<msg::Stock, ClientError> {
        self.request(op::GET_STOCK, &msg::SkuRef { sku: sku.into() })
            .await
    }

    /// Adjusts a SKU's stock, without an idempotency key (see [`Client::adjust_stock_with`]).
    pub async fn adjust_stock(
        &self,
        sku: &str,
        delta: i64,
        reason: &str,
    ) -> Result<msg::Stock, ClientError> {
        self.adjust_stock_with(&msg::AdjustStock {
            sku: sku.into(),
            delta,
            reason: reason.into(),
            idempotency_key: None,
        })
        .await
    }

    /// Adjusts a SKU's stock; with `idempotency_key`, a retry of the same body answers the
    /// stock as the first adjustment left it and adjusts nothing.
    pub async fn adjust_stock_with(
        &self,
        adjust: &msg::AdjustStock,
    ) -> Result<msg::Stock, ClientError> {
        self.request(op::ADJUST_STOCK, adjust).await
    }

    pub async fn create_customer(
        &self,
        customer: &msg::CreateCustomer,
    ) -> Result<msg::Customer, ClientError> {
        self.request(op::CREATE_CUSTOMER, customer).await
    }

    pub async fn get_customer(&self, id: &str) -> Result<msg::Customer, ClientError> {
        self.request(op::GET_CUSTOMER, &msg::CustomerRef { id: id.into() })
            .await
    }
}

fn decode_reply<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ClientError> {
    msg::decode_body(payload).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// Reads until one whole frame has arrived.
async fn read_one(
    reader: &mut (impl AsyncRead + Unpin),
    decoder: &mut FrameDecoder,
) -> Result<Frame, ClientError> {
    let mut chunk = [0u8; 4096];
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(error) => return Err(ClientError::Protocol(error.to_string())),
        }
        match reader.read(&mut chunk).await {
            Ok(0) => {
                return Err(ClientError::Connect(
                    "the server closed the connection".into(),
                ))
            }
            Ok(n) => decoder.feed(&chunk[..n]),
            Err(e) => return Err(ClientError::Connect(format!("read: {e}"))),
        }
    }
}

/// Writes requests as they come, many per write when they queue up.
async fn write_frames(
    mut writer: impl AsyncWrite + Unpin,
    mut frames: mpsc::Receiver<Frame>,
    pending: Arc<Pending>,
) {
    let mut bytes = Vec::with_capacity(64 * 1024);
    while let Some(first) = frames.recv().await {
        bytes.clear();
        frame::encode(&first, &mut bytes);
        while bytes.len() < 64 * 1024 {
            match frames.try_recv() {
                Ok(next) => frame::encode(&next, &mut bytes),
                Err(_) => break,
            }
        }
        // The flush sends what TLS still holds (nothing to do over plain TCP).
        if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
            pending.fail_all(ClientError::ConnectionLost);
            return;
        }
    }
}

/// Hands each reply to its call; fails every call in flight when the connection ends.
async fn read_frames(
    mut reader: impl AsyncRead + Unpin,
    mut decoder: FrameDecoder,
    pending: Arc<Pending>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    let error = 'read: loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break ClientError::ConnectionLost,
            Ok(n) => decoder.feed(&chunk[..n]),
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) if frame.request_id == CONNECTION_REQUEST_ID => {
                    break 'read match msg::decode_body::<ErrorBody>(&frame.payload) {
                        Ok(body) => ClientError::Closed(body),
                        Err(e) => ClientError::Protocol(e.to_string()),
                    };
                }
                Ok(Some(frame)) => pending.complete(frame),
                Ok(None) => break,
                Err(error) => break 'read ClientError::Protocol(error.to_string()),
            }
        }
    };
    pending.fail_all(error);
}
