//! Test harness: starts and kills real `orderd` processes, speaks HTTP to them, and holds the
//! shared bookkeeping (outcomes, ledger of acknowledged orders, conservation checks).

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The server binary built by Cargo for this test target.
const BIN: &str = env!("CARGO_BIN_EXE_orderd");

/// How long a request that got 503 or a transport error is retried before the test gives up.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(60);

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the tests one at a time when they share a process (`cargo test`): they are load- and
/// timing-sensitive and must not skew each other. Under nextest every test is a process of its
/// own, so this mutex serializes nothing there; the `serial-e2e` test group in
/// `.config/nextest.toml` (`max-threads = 1`) does it instead.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request that got no HTTP answer at all (refused, reset, timed out: the server is gone).
#[derive(Debug, Clone)]
pub struct TransportErr(pub String);

/// An HTTP answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// The media type without parameters, e.g. `application/problem+json`.
    pub content_type: String,
    pub location: Option<String>,
    pub retry_after: Option<String>,
}

/// The TLS client configuration of a server started with [`Server::start_https`].
pub type Https = Option<Arc<rustls::ClientConfig>>;

fn agent(https: &Https) -> ureq::Agent {
    let builder = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(2))
        .timeout_read(Duration::from_secs(30))
        .timeout_write(Duration::from_secs(30))
        .max_idle_connections(256)
        .max_idle_connections_per_host(128)
        .redirects(0);
    match https {
        Some(tls) => builder.tls_config(tls.clone()).build(),
        None => builder.build(),
    }
}

fn parse_body(text: &str) -> Value {
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
    }
}

/// A cheap, cloneable, thread-safe HTTP client bound to one server address and (optionally) a key.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    key: Option<String>,
}

impl Client {
    /// The same client without `Authorization`.
    pub fn without_key(&self) -> Client {
        Client {
            key: None,
            ..self.clone()
        }
    }

    /// The same client with another bearer secret.
    pub fn with_key(&self, key: &str) -> Client {
        Client {
            key: Some(key.to_string()),
            ..self.clone()
        }
    }

    fn request(&self, method: &str, path: &str, idem: Option<&str>) -> ureq::Request {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        if let Some(idem) = idem {
            req = req.set("Idempotency-Key", idem);
        }
        req
    }

    fn finish(res: Result<ureq::Response, ureq::Error>) -> Result<Reply, TransportErr> {
        let resp = match res {
            Ok(resp) => resp,
            Err(ureq::Error::Status(_, resp)) => resp,
            Err(ureq::Error::Transport(t)) => return Err(TransportErr(t.to_string())),
        };
        let status = resp.status();
        let content_type = resp.content_type().to_string();
        let location = resp.header("Location").map(str::to_string);
        let retry_after = resp.header("Retry-After").map(str::to_string);
        let text = resp
            .into_string()
            .map_err(|e| TransportErr(format!("reading body: {e}")))?;
        Ok(Reply {
            status,
            body: parse_body(&text),
            content_type,
            location,
            retry_after,
        })
    }

    /// Sends one request; a JSON body if `body` is given, an empty body for other POSTs.
    /// Any HTTP status is an `Ok`; only transport failures are `Err`.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        idem: Option<&str>,
    ) -> Result<Reply, TransportErr> {
        let req = self.request(method, path, idem);
        let res = match body {
            Some(body) => req
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
            None if method == "GET" => req.call(),
            None => req.send_bytes(&[]),
        };
        Self::finish(res)
    }

    /// Sends a raw text body with the given content type (for malformed JSON).
    pub fn send_text(&self, method: &str, path: &str, content_type: &str, text: &str) -> Reply {
        let req = self
            .request(method, path, None)
            .set("Content-Type", content_type);
        Self::finish(req.send_string(text))
            .unwrap_or_else(|e| panic!("{method} {path}: transport error {}", e.0))
    }

    /// Opens `GET path` as a stream (server-sent events) with extra `headers`: the answer
    /// unread when it is a 2xx, else the whole (finite) error answer.
    pub fn open_stream(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<ureq::Response, Reply> {
        let mut req = self.request("GET", path, None);
        for (name, value) in headers {
            req = req.set(name, value);
        }
        match req.call() {
            Ok(resp) => Ok(resp),
            res => {
                Err(Self::finish(res)
                    .unwrap_or_else(|e| panic!("GET {path}: transport error {}", e.0)))
            }
        }
    }

    /// `send`, panicking on a transport error (for when the server must be up).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        idem: Option<&str>,
    ) -> Reply {
        self.send(method, path, body, idem)
            .unwrap_or_else(|e| panic!("{method} {path}: transport error {}", e.0))
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None, None)
    }

    pub fn post(&self, path: &str, body: &Value, idem: Option<&str>) -> Reply {
        self.call("POST", path, Some(body), idem)
    }

    pub fn post_json(&self, path: &str, body: &Value, idem: Option<&str>) -> (u16, Value) {
        let r = self.post(path, body, idem);
        (r.status, r.body)
    }

    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.get(path);
        (r.status, r.body)
    }

    /// Creates a customer and returns its id.
    pub fn create_customer(&self) -> String {
        let n = unique("c");
        let (status, body) = self.post_json(
            "/v1/customers",
            &json!({"name": format!("Customer {n}"), "email": format!("{n}@example.com")}),
            None,
        );
        assert_eq!(status, 201, "create customer: {body}");
        let id = body["id"].as_str().expect("customer id").to_string();
        assert!(
            id.starts_with("cus_"),
            "customer id {id} should start with cus_"
        );
        id
    }

    /// Adjusts stock and asserts 200; returns the stock record.
    pub fn adjust_stock(&self, sku: &str, delta: i64) -> Stock {
        let (status, body) = self.post_json(
            &format!("/v1/stock/{sku}/adjustments"),
            &json!({"delta": delta, "reason": "receive"}),
            None,
        );
        assert_eq!(status, 200, "adjust {sku} by {delta}: {body}");
        Stock::from_json(sku, &body)
    }

    /// Reads stock and asserts 200.
    pub fn stock(&self, sku: &str) -> Stock {
        let (status, body) = self.get_json(&format!("/v1/stock/{sku}"));
        assert_eq!(status, 200, "GET stock {sku}: {body}");
        Stock::from_json(sku, &body)
    }

    /// All orders matching `query` (e.g. `customer_id=cus_1`), following `next` with limit 1000.
    /// Asserts the page shape and that no order appears twice.
    pub fn list_orders(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut seen_ids = HashSet::new();
        let mut seen_cursors = HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = String::from("/v1/orders?limit=1000");
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(cursor) = &after {
                path.push_str("&after=");
                path.push_str(&pct(cursor));
            }
            let (status, page) = self.get_json(&path);
            assert_eq!(status, 200, "GET {path}: {page}");
            let items = page["items"]
                .as_array()
                .unwrap_or_else(|| panic!("GET {path}: no items array: {page}"));
            assert!(items.len() <= 1000, "page larger than limit");
            for item in items {
                let id = item["id"].as_str().expect("order id").to_string();
                assert!(seen_ids.insert(id.clone()), "order {id} listed twice");
                out.push(item.clone());
            }
            match &page["next"] {
                Value::Null => return out,
                Value::String(cursor) => {
                    assert!(
                        seen_cursors.insert(cursor.clone()),
                        "cursor {cursor} returned twice"
                    );
                    after = Some(cursor.clone());
                }
                other => panic!("GET {path}: next must be a string or null, got {other}"),
            }
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A stock record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock {
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

impl Stock {
    fn from_json(sku: &str, v: &Value) -> Stock {
        assert_eq!(v["sku"], sku, "stock record for the wrong sku: {v}");
        let field = |name: &str| {
            v[name]
                .as_i64()
                .unwrap_or_else(|| panic!("stock {sku}: {name} not an integer: {v}"))
        };
        let stock = Stock {
            on_hand: field("on_hand"),
            reserved: field("reserved"),
            available: field("available"),
        };
        assert_eq!(
            stock.available,
            stock.on_hand - stock.reserved,
            "stock {sku}: available != on_hand - reserved: {v}"
        );
        assert!(stock.available >= 0, "stock {sku}: negative available: {v}");
        stock
    }
}

/// Picks a free local port (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A process-unique string such as an Idempotency-Key or a name.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{:x}",
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// A running (or killed) `orderd` on a directory that survives restarts.
pub struct Server {
    root: PathBuf,
    _tmp: Option<TempDir>,
    shards: usize,
    child: Option<Child>,
    port: u16,
    /// The binary TCP protocol's port: chosen once, kept across restarts (so that a client's
    /// reconnect finds the restarted server).
    tcp_port: u16,
    key: String,
    client: Client,
    log_path: PathBuf,
    /// Extra environment of every start (e.g. `ORDERD__HTTP__RATE_LIMIT_PER_KEY_PER_S`).
    extra_env: Vec<(String, String)>,
    /// HTTPS (the server's `http.tls_*` are in `extra_env`): how the harness trusts it.
    https: Https,
    /// `--config FILE` of every start, if any (a profile layered over the embedded defaults;
    /// the harness's ORDERD__ variables still win over it).
    config: Option<PathBuf>,
}

impl Server {
    /// Starts a server with `shards` shards on a fresh temporary directory (removed on drop).
    pub fn start(shards: usize) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("orderd-e2e-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().to_path_buf();
        Self::launch(root, Some(tmp), shards, &[], None, None)
    }

    /// Like [`Server::start`] with extra environment variables, kept for every restart.
    pub fn start_with_env(shards: usize, env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("orderd-e2e-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().to_path_buf();
        Self::launch(root, Some(tmp), shards, env, None, None)
    }

    /// Like [`Server::start_with_env`] for a server whose `env` turns HTTPS on: the harness
    /// (readiness probe, [`Server::client`]) speaks HTTPS to it with `tls`.
    pub fn start_https(
        dir: &Path,
        shards: usize,
        env: &[(&str, &str)],
        tls: Arc<rustls::ClientConfig>,
    ) -> Server {
        Self::launch(dir.to_path_buf(), None, shards, env, Some(tls), None)
    }

    /// Like [`Server::start_with_env`], started with `--config config` (e.g. a profile of
    /// `config/examples/`); HTTPS when `tls` is given (and `env` turns it on).
    pub fn start_with_config(
        config: &Path,
        shards: usize,
        env: &[(&str, &str)],
        tls: Https,
    ) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("orderd-e2e-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().to_path_buf();
        Self::launch(
            root,
            Some(tmp),
            shards,
            env,
            tls,
            Some(config.to_path_buf()),
        )
    }

    /// Starts a server on `dir` (kept by the caller; it may already hold data).
    pub fn start_in(dir: &Path, shards: usize) -> Server {
        Self::launch(dir.to_path_buf(), None, shards, &[], None, None)
    }

    /// Like [`Server::start_in`] with extra environment variables, kept for every restart.
    pub fn start_in_with_env(dir: &Path, shards: usize, env: &[(&str, &str)]) -> Server {
        Self::launch(dir.to_path_buf(), None, shards, env, None, None)
    }

    fn launch(
        root: PathBuf,
        tmp: Option<TempDir>,
        shards: usize,
        env: &[(&str, &str)],
        https: Https,
        config: Option<PathBuf>,
    ) -> Server {
        for sub in ["data", "backups", "offsite"] {
            fs::create_dir_all(root.join(sub)).expect("create dirs");
        }
        let log_path = root.join("orderd.log");
        let mut server = Server {
            root,
            _tmp: tmp,
            shards,
            child: None,
            port: 0,
            tcp_port: free_port(),
            key: String::new(),
            client: Client {
                agent: agent(&https),
                base: String::new(),
                key: None,
            },
            log_path,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            https,
            config,
        };
        server.spawn();
        server
    }

    /// Replaces the extra environment of later starts.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.extra_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// The temporary root: the working directory of the server (holds `data/` and, by
    /// default, the master key file `orderd-master.key`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The master key file (`security.master_key_file`, the default one in the root).
    pub fn master_key_file(&self) -> PathBuf {
        self.root.join("orderd-master.key")
    }

    /// The manifest keys of the server's master key file (signing and verifying backup
    /// manifests, as the server does).
    pub fn manifest_keys(&self) -> orderd_engine::backup::ManifestKeys {
        orderd_service::vault::MasterKeySource::File {
            path: self.master_key_file(),
        }
        .manifest_keys()
        .expect("the server's master key file")
    }

    /// The data directory (`storage.data_dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        for attempt in 1..=3 {
            let port = free_port();
            let offset = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
            let mut log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
                .expect("open log");
            writeln!(log, "===== e2e: starting orderd on port {port} =====").expect("log");
            let log_err = log.try_clone().expect("clone log");
            let mut cmd = self.command(port);
            cmd.stdout(log).stderr(log_err);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
            self.child = Some(child);
            self.port = port;
            match self.wait_ready() {
                Ok(()) => {
                    self.after_ready();
                    return;
                }
                Err((exited, why)) => {
                    let log = self.log_since(offset);
                    if exited && attempt < 3 && log.to_lowercase().contains("in use") {
                        self.child = None;
                        continue;
                    }
                    self.kill_9();
                    panic!("orderd not ready: {why}\n----- orderd log -----\n{log}");
                }
            }
        }
    }

    /// The command line and environment of a start on `port` (output not yet redirected).
    fn command(&self, port: u16) -> Command {
        let mut cmd = Command::new(BIN);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        // Nothing of the test runner's own orderd settings (ORDERD__*, ORDERD_MASTER_KEY) leaks in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ORDERD_") {
                cmd.env_remove(name);
            }
        }
        // Nor a service manager's (the runner may itself run under systemd): tests that speak
        // its protocol set these in their extra environment.
        for name in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "CREDENTIALS_DIRECTORY",
        ] {
            cmd.env_remove(name);
        }
        let root = &self.root;
        cmd.env("ORDERD__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "ORDERD__TCP__LISTEN",
                format!("127.0.0.1:{}", self.tcp_port),
            )
            .env("ORDERD__STORAGE__DATA_DIR", root.join("data"))
            .env("ORDERD__ENGINE__SHARDS", self.shards.to_string())
            .env("ORDERD__BACKUP__DIR", root.join("backups"))
            .env("ORDERD__BACKUP__OFFSITE", root.join("offsite"))
            .env("RUST_LOG", "warn")
            // Every refusal its own audit entry, as most tests count them; the aggregation per
            // peer is tested with a window of its own (`audit::refusals_from_one_peer_…`).
            .env("ORDERD__AUDIT__REFUSAL_WINDOW_S", "0")
            // Tests take backups back to back; the limit has a test of its own.
            .env("ORDERD__BACKUP__MIN_INTERVAL_S", "0")
            .current_dir(root)
            .stdin(Stdio::null());
        for (name, value) in &self.extra_env {
            cmd.env(name, value);
        }
        cmd
    }

    /// Starts orderd on this directory expecting it to refuse to start: waits up to `within`
    /// for it to exit and returns its exit status and its output. Panics if it gets ready.
    pub fn start_expecting_exit(&mut self, within: Duration) -> (ExitStatus, String) {
        self.kill_9();
        let offset = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        writeln!(
            log,
            "===== e2e: starting orderd, expecting it to refuse ====="
        )
        .expect("log");
        let log_err = log.try_clone().expect("clone log");
        let port = free_port();
        let mut cmd = self.command(port);
        cmd.stdout(log).stderr(log_err);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return (status, self.log_since(offset));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "orderd did not exit within {within:?}\n----- orderd log -----\n{}",
                    self.log_since(offset)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits up to 30 s for a clean exit (asserted).
    pub fn terminate(&mut self) {
        // SAFETY: plain syscall on the pid of our own child process.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM)");
        let status = self.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "exit status after SIGTERM: {status}");
    }

    fn after_ready(&mut self) {
        let key_path = self.data_dir().join("admin.key");
        let key = fs::read_to_string(&key_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", key_path.display()))
            .trim()
            .to_string();
        assert!(!key.is_empty(), "admin.key is empty");
        assert!(
            !key.contains('\n'),
            "admin.key must hold the secret alone on one line"
        );
        if !self.key.is_empty() {
            assert_eq!(key, self.key, "admin.key changed across a restart");
        }
        self.key = key.clone();
        self.client = Client {
            agent: agent(&self.https),
            base: format!("{}://127.0.0.1:{}", self.scheme(), self.port),
            key: Some(key),
        };
    }

    fn scheme(&self) -> &'static str {
        if self.https.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Polls `GET /readyz` every 20 ms for up to 60 s. `Err((exited, why))`.
    fn wait_ready(&mut self) -> Result<(), (bool, String)> {
        let builder = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_millis(500))
            .timeout_read(Duration::from_secs(2));
        let probe = match &self.https {
            Some(tls) => builder.tls_config(tls.clone()).build(),
            None => builder.build(),
        };
        let url = format!("{}://127.0.0.1:{}/readyz", self.scheme(), self.port);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let child = self.child.as_mut().expect("child");
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Err((true, format!("orderd exited before ready: {status}")));
            }
            if let Ok(resp) = probe.get(&url).call() {
                if resp.status() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err((false, "GET /readyz not 200 within 60 s".to_string()));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let bytes = fs::read(&self.log_path).unwrap_or_default();
        let start = (offset as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// The whole server log (all starts on this directory).
    pub fn log(&self) -> String {
        self.log_since(0)
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `http://127.0.0.1:<port>` (`https://` with [`Server::start_https`]) of the current process.
    pub fn base(&self) -> &str {
        &self.client.base
    }

    /// `127.0.0.1:<port>` of the binary TCP protocol.
    pub fn tcp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.tcp_port)
    }

    /// The admin secret from `<data_dir>/admin.key`.
    pub fn admin_key(&self) -> &str {
        &self.key
    }

    /// A client (cloneable, for threads) authenticated with the admin key.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server not running").id()
    }

    pub fn post_json(&self, path: &str, body: &Value, idem: Option<&str>) -> (u16, Value) {
        self.client.post_json(path, body, idem)
    }

    pub fn get_json(&self, path: &str) -> (u16, Value) {
        self.client.get_json(path)
    }

    /// SIGKILL (`Child::kill`) and reap. No-op if not running.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `within` for the process to exit by itself; panics (with the log) otherwise.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut().expect("server not running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "orderd did not exit within {within:?}\n----- orderd log -----\n{}",
                    self.log_tail(100)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same directory (SIGKILLs it first if still running),
    /// on a new port, and waits for `/readyz`. Asserts `admin.key` is unchanged.
    pub fn restart(&mut self) {
        self.kill_9();
        self.spawn();
    }

    /// A raw HTTP/1.1 POST with an admin key. Sends the head first and only sends the body if
    /// no early answer comes within 500 ms, so an early 413 is read before any reset.
    pub fn raw_post(&self, path: &str, body: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            self.key,
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("write head");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        match stream.read(&mut chunk) {
            Ok(0) => panic!("server closed the connection without an answer"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // A server may stop reading once over the limit; the answer is what matters.
                let _ = stream.write_all(body);
            }
            Err(e) => panic!("reading early answer: {e}"),
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        loop {
            if let Some(reply) = parse_http(&buf) {
                return reply;
            }
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if !buf.is_empty() => {
                    eprintln!("raw_post: read error after partial answer: {e}");
                    break;
                }
                Err(e) => panic!("raw_post: no answer: {e}"),
            }
        }
        parse_http(&buf).unwrap_or_else(|| {
            panic!(
                "raw_post: incomplete answer: {}",
                String::from_utf8_lossy(&buf)
            )
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_9();
        if thread::panicking() {
            eprintln!(
                "----- orderd log ({}) last 200 lines -----\n{}",
                self.log_path.display(),
                self.log_tail(200)
            );
        }
    }
}

/// Parses a complete HTTP/1.1 response from `buf`; `None` if more bytes are needed.
fn parse_http(buf: &[u8]) -> Option<Reply> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = &buf[end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let line_end = rest[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
            let size_str = String::from_utf8_lossy(&rest[pos..line_end]).into_owned();
            let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                break;
            }
            if rest.len() < pos + size + 2 {
                return None;
            }
            out.extend_from_slice(&rest[pos..pos + size]);
            pos += size + 2;
        }
        out
    } else {
        let len: usize = headers.get("content-length")?.parse().ok()?;
        if rest.len() < len {
            return None;
        }
        rest[..len].to_vec()
    };
    let content_type = headers
        .get("content-type")
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    Some(Reply {
        status,
        body: parse_body(&String::from_utf8_lossy(&body)),
        content_type,
        location: headers.get("location").cloned(),
        retry_after: headers.get("retry-after").cloned(),
    })
}

/// Runs `f(0..n)` on `threads` threads; results in index order.
pub fn run_parallel<T: Send>(threads: usize, n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    thread::scope(|s| {
        for _ in 0..threads.min(n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let r = f(i);
                results.lock().expect("results")[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .expect("results")
        .into_iter()
        .map(|r| r.expect("every index ran"))
        .collect()
}

/// The `code` member of a problem document ("" if absent).
pub fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

/// Asserts an RFC 9457 problem with the contract's shape.
pub fn assert_problem(r: &Reply, status: u16, code: &str) {
    assert_eq!(
        r.status, status,
        "expected {status} {code}, got {} {}",
        r.status, r.body
    );
    assert_eq!(
        r.content_type, "application/problem+json",
        "problem content type for {code}: {}",
        r.body
    );
    assert_eq!(r.body["code"], code, "problem code: {}", r.body);
    assert_eq!(
        r.body["status"], status,
        "problem status member: {}",
        r.body
    );
    assert_eq!(
        r.body["type"],
        format!("/problems/{code}"),
        "problem type: {}",
        r.body
    );
    assert!(r.body["title"].is_string(), "problem title: {}", r.body);
}

/// `{"customer_id", "lines": [{"sku", "qty", "unit_price"}]}`.
pub fn order_body(customer: &str, lines: &[(String, u32, u64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(sku, qty, price)| json!({"sku": sku, "qty": qty, "unit_price": price}))
        .collect();
    json!({"customer_id": customer, "lines": lines})
}

/// A random order for `customer`: `n_skus` distinct SKUs out of `skus`, qty in `qty`.
pub fn random_order(
    rng: &mut impl rand::Rng,
    customer: &str,
    skus: &[String],
    n_skus: std::ops::RangeInclusive<usize>,
    qty: std::ops::RangeInclusive<u32>,
) -> Value {
    use rand::seq::SliceRandom;
    let n = rng.gen_range(n_skus);
    let lines: Vec<(String, u32, u64)> = skus
        .choose_multiple(rng, n)
        .map(|sku| {
            (
                sku.clone(),
                rng.gen_range(qty.clone()),
                rng.gen_range(100..=5000),
            )
        })
        .collect();
    order_body(customer, &lines)
}

/// `(sku, qty, unit_price)` of every line, sorted by SKU.
pub fn norm_lines(order: &Value) -> Vec<(String, u64, u64)> {
    let lines = order["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines array: {order}"));
    let mut out: Vec<(String, u64, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().expect("line sku").to_string(),
                l["qty"].as_u64().expect("line qty"),
                l["unit_price"].as_u64().expect("line unit_price"),
            )
        })
        .collect();
    out.sort();
    out
}

/// Per-SKU quantity of an order.
pub fn qty_by_sku(order: &Value) -> Vec<(String, i64)> {
    norm_lines(order)
        .into_iter()
        .map(|(sku, qty, _)| (sku, qty as i64))
        .collect()
}

/// Asserts that a 201 order body is the confirmed order for `request`.
pub fn check_order(order: &Value, request: &Value) {
    let id = order["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {order}"));
    assert!(
        id.starts_with("ord_"),
        "order id {id} should start with ord_"
    );
    assert_eq!(order["status"], "confirmed", "new order status: {order}");
    assert_eq!(
        order["customer_id"], request["customer_id"],
        "customer: {order}"
    );
    let lines = norm_lines(order);
    assert_eq!(
        lines,
        norm_lines(request),
        "order lines differ from request"
    );
    let total: u64 = lines.iter().map(|(_, q, p)| q * p).sum();
    assert_eq!(order["total"].as_u64(), Some(total), "order total: {order}");
    for line in order["lines"].as_array().into_iter().flatten() {
        assert_eq!(
            line["shipped_qty"], 0,
            "new order line shipped_qty: {order}"
        );
    }
}

/// What became of one order placement.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 201: the order.
    Confirmed(Value),
    /// 409 `insufficient_stock`: the problem.
    Rejected(Value),
    /// Transport error or 503 `unavailable`: must be retried with the same key.
    Unknown(String),
    /// Anything else: always a failure.
    Unexpected(u16, Value),
}

pub fn classify(res: Result<Reply, TransportErr>) -> Outcome {
    match res {
        Err(TransportErr(e)) => Outcome::Unknown(e),
        Ok(r) => match (r.status, code(&r.body)) {
            (201, _) => Outcome::Confirmed(r.body),
            (409, "insufficient_stock") => Outcome::Rejected(r.body),
            (503, "unavailable") => Outcome::Unknown(format!("503 {}", r.body)),
            _ => Outcome::Unexpected(r.status, r.body),
        },
    }
}

/// Asserts a 409 `insufficient_stock` lists a non-empty subset of the request's SKUs.
pub fn check_rejection(problem: &Value, request: &Value) {
    let skus = problem["skus"]
        .as_array()
        .unwrap_or_else(|| panic!("409 without skus: {problem}"));
    assert!(!skus.is_empty(), "409 with empty skus: {problem}");
    let requested: HashSet<String> = norm_lines(request).into_iter().map(|l| l.0).collect();
    for sku in skus {
        let sku = sku.as_str().expect("sku string");
        assert!(
            requested.contains(sku),
            "409 lists {sku} which the order does not contain: {problem}"
        );
    }
}

/// Places an order, retrying 503 and transport errors with the same key until an answer
/// other than those comes (or `SETTLE_DEADLINE` passes, which fails the test).
pub fn place_definitive(client: &Client, key: &str, body: &Value) -> Outcome {
    let start = Instant::now();
    loop {
        match classify(client.send("POST", "/v1/orders", Some(body), Some(key))) {
            Outcome::Unknown(why) => {
                assert!(
                    start.elapsed() < SETTLE_DEADLINE,
                    "key {key}: still no definitive answer after {SETTLE_DEADLINE:?}: {why}"
                );
                thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// One placement attempt made by a load thread.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub key: String,
    pub body: Value,
    pub outcome: Outcome,
    /// When the answer (or error) arrived.
    pub at: Instant,
}

/// Every order the test knows to be confirmed, by id and by Idempotency-Key.
#[derive(Default)]
pub struct Ledger {
    /// id → the acknowledged order body.
    pub orders: HashMap<String, Value>,
    /// Idempotency-Key → (request body, acknowledged response body).
    pub by_key: HashMap<String, (Value, Value)>,
}

impl Ledger {
    /// Records an acknowledged order; asserts it matches the request and is not a duplicate.
    pub fn record(&mut self, key: &str, request: &Value, order: &Value) {
        check_order(order, request);
        let id = order["id"].as_str().expect("id").to_string();
        assert!(
            !self.by_key.contains_key(key),
            "key {key} recorded twice as confirmed"
        );
        if let Some(prev) = self.orders.get(&id) {
            panic!("order {id} acknowledged for two different keys: {prev} and {order}");
        }
        self.orders.insert(id, order.clone());
        self.by_key
            .insert(key.to_string(), (request.clone(), order.clone()));
    }

    /// Settles a batch of attempts: records confirmations, checks rejections, retries every
    /// unknown one with the same key and body until definitive. Returns the keys confirmed.
    pub fn settle(&mut self, client: &Client, attempts: &[Attempt]) -> Vec<String> {
        let mut confirmed = Vec::new();
        let mut unknown = Vec::new();
        for a in attempts {
            match &a.outcome {
                Outcome::Confirmed(order) => {
                    self.record(&a.key, &a.body, order);
                    confirmed.push(a.key.clone());
                }
                Outcome::Rejected(problem) => check_rejection(problem, &a.body),
                Outcome::Unknown(_) => unknown.push(a),
                Outcome::Unexpected(status, body) => {
                    panic!("key {}: unexpected answer {status} {body}", a.key)
                }
            }
        }
        let retried = run_parallel(8, unknown.len(), |i| {
            place_definitive(client, &unknown[i].key, &unknown[i].body)
        });
        for (a, outcome) in unknown.iter().zip(retried) {
            match outcome {
                Outcome::Confirmed(order) => {
                    self.record(&a.key, &a.body, &order);
                    confirmed.push(a.key.clone());
                }
                Outcome::Rejected(problem) => check_rejection(&problem, &a.body),
                other => panic!("key {}: retry got {other:?}", a.key),
            }
        }
        confirmed
    }

    /// Re-sends each key with its body: must be 201 with exactly the acknowledged body.
    pub fn replay(&self, client: &Client, keys: &[String]) {
        run_parallel(8, keys.len(), |i| {
            let key = &keys[i];
            let (request, ack) = &self.by_key[key];
            match place_definitive(client, key, request) {
                Outcome::Confirmed(again) => assert_eq!(
                    &again, ack,
                    "replaying key {key} must return the first response"
                ),
                other => panic!("replaying acknowledged key {key} gave {other:?}"),
            }
        });
    }

    /// `GET /v1/orders/{id}` of each key's order: 200, confirmed, identical lines and total.
    pub fn verify_readable(&self, client: &Client, keys: &[String]) {
        run_parallel(8, keys.len(), |i| {
            let ack = &self.by_key[&keys[i]].1;
            let id = ack["id"].as_str().expect("id");
            let (status, got) = client.get_json(&format!("/v1/orders/{id}"));
            assert_eq!(status, 200, "GET acknowledged order {id}: {got}");
            assert_eq!(got["id"], id);
            assert_eq!(got["status"], "confirmed", "order {id}: {got}");
            assert_eq!(got["customer_id"], ack["customer_id"], "order {id}");
            assert_eq!(got["total"], ack["total"], "order {id} total");
            assert_eq!(norm_lines(&got), norm_lines(ack), "order {id} lines");
        });
    }

    /// Lists every order and checks it against the ledger (no order unknown to the test, none
    /// missing, all confirmed, same lines), then checks per-SKU stock: on_hand == `initial`,
    /// reserved == sum of the confirmed quantities, available == on_hand - reserved >= 0.
    pub fn check_conservation(&self, client: &Client, skus: &[String], initial: i64) {
        let listed = client.list_orders("");
        for order in &listed {
            let id = order["id"].as_str().expect("id");
            let known = self
                .orders
                .get(id)
                .unwrap_or_else(|| panic!("listed order {id} was never acknowledged: {order}"));
            assert_eq!(order["status"], "confirmed", "listed order {id}: {order}");
            assert_eq!(
                norm_lines(order),
                norm_lines(known),
                "listed order {id} lines"
            );
        }
        assert_eq!(
            listed.len(),
            self.orders.len(),
            "orders listed vs confirmed orders known"
        );
        let mut reserved: HashMap<String, i64> = HashMap::new();
        for order in self.orders.values() {
            for (sku, qty) in qty_by_sku(order) {
                *reserved.entry(sku).or_default() += qty;
            }
        }
        for sku in skus {
            let stock = client.stock(sku);
            let want = reserved.get(sku).copied().unwrap_or(0);
            assert_eq!(stock.on_hand, initial, "{sku}: on_hand (nothing shipped)");
            assert_eq!(stock.reserved, want, "{sku}: reserved vs confirmed orders");
            assert_eq!(stock.available, initial - want, "{sku}: available");
        }
    }
}

/// `GET /v1/ops/shards`, asserting the documented shape.
pub fn shards(client: &Client) -> Vec<Value> {
    let (status, body) = client.get_json("/v1/ops/shards");
    assert_eq!(status, 200, "GET /v1/ops/shards: {body}");
    let list = body
        .as_array()
        .unwrap_or_else(|| panic!("/v1/ops/shards is not an array: {body}"))
        .clone();
    for s in &list {
        for field in ["restarts", "mailbox_depth", "last_seq", "orders", "skus"] {
            assert!(s[field].is_u64(), "shard {field} not a count: {s}");
        }
        let state = s["state"].as_str().unwrap_or("");
        assert!(
            ["running", "restarting", "failed"].contains(&state),
            "shard state {state}: {s}"
        );
    }
    list
}

/// A shard's id as it appears in URLs.
pub fn shard_id(shard: &Value) -> String {
    match &shard["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Asserts at least two shards own SKUs.
pub fn assert_spread(client: &Client) {
    let list = shards(client);
    let owning = list
        .iter()
        .filter(|s| s["skus"].as_u64().unwrap_or(0) > 0)
        .count();
    assert!(
        owning >= 2,
        "SKUs should span at least 2 shards: {}",
        Value::Array(list)
    );
}
