//! The HTTP side of orderctl: one blocking agent, the bearer key, and the mapping of every
//! failure to the exit code it stands for.

use orderd_proto::Problem;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Why a command could not finish. Each variant has one exit code (see [`CliError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Wrong use of orderctl itself: a missing key, an unreadable key file, a bad server URL.
    #[error("{0}")]
    Usage(String),
    /// No HTTP answer at all: connection refused, DNS failure, timeout.
    #[error("cannot reach {server}: {detail}")]
    Unreachable { server: String, detail: String },
    /// The server answered with an error (a problem document, or an unexpected status).
    #[error("{code}: {detail}")]
    Http {
        status: u16,
        code: String,
        detail: String,
    },
    /// The server answered 2xx with a body orderctl does not understand.
    #[error("unexpected answer from {path}: {detail}")]
    BadAnswer { path: String, detail: String },
    /// An offline operation (`backup restore`) could not be done: no such backup, a backup
    /// that fails verification, a target directory in the way, an unreadable off-site store.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// 2 for usage errors, 3 when the server is unreachable, 1 for every answer that is an
    /// error (including 401 and 403: the server was reached and said no).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
            CliError::Http { .. } | CliError::BadAnswer { .. } | CliError::Failed(_) => 1,
        }
    }
}

/// An HTTP answer: its status and its body as JSON (`null` when empty).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// A client of one server, with an optional bearer secret.
pub struct Api {
    agent: ureq::Agent,
    server: String,
    key: Option<String>,
    /// With `--ca-file`: HTTPS trusts that CA alone.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// An agent with orderctl's settings: no redirects, and `tls` when given.
fn agent(builder: ureq::AgentBuilder, tls: &Option<Arc<rustls::ClientConfig>>) -> ureq::Agent {
    let builder = builder.redirects(0);
    match tls {
        Some(tls) => builder.tls_config(tls.clone()).build(),
        None => builder.build(),
    }
}

/// The TLS configuration of `--ca-file`: HTTPS servers are trusted only when the CA
/// certificates of that PEM file signed theirs (for the server's host name).
pub fn tls_trusting(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, CliError> {
    let usage =
        |detail: String| CliError::Usage(format!("--ca-file {}: {detail}", ca_file.display()));
    let bytes = std::fs::read(ca_file).map_err(|e| usage(format!("cannot read it: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| usage(format!("not PEM certificates: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| usage(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(usage("holds no certificate".to_string()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| usage(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Api {
    /// A client of `server`; `tls` (from [`tls_trusting`]) replaces the public CAs ureq
    /// trusts by default for `https://` URLs.
    pub fn new(
        server: &str,
        key: Option<String>,
        timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Api {
        Api {
            agent: agent(ureq::AgentBuilder::new().timeout(timeout), &tls),
            server: server.trim_end_matches('/').to_string(),
            key,
            tls,
        }
    }

    /// The same server and key, for requests whose answer may take up to `wait` (a backup, a
    /// restore drill): connecting is still limited to `connect`.
    pub fn patient(&self, connect: Duration, wait: Duration) -> Api {
        Api {
            agent: agent(
                ureq::AgentBuilder::new()
                    .timeout_connect(connect)
                    .timeout(wait),
                &self.tls,
            ),
            server: self.server.clone(),
            key: self.key.clone(),
            tls: self.tls.clone(),
        }
    }

    /// Fails with a usage error when no key was given: every `/v1` route needs one.
    pub fn require_key(&self) -> Result<(), CliError> {
        if self.key.is_none() {
            return Err(CliError::Usage(
                "this command needs a key: pass --key, --key-file or set ORDERD_KEY".to_string(),
            ));
        }
        Ok(())
    }

    /// Sends one request and returns the answer whatever its status; only a request that got no
    /// answer is an error.
    pub fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer, CliError> {
        let url = format!("{}{path}", self.server);
        let mut request = self.agent.request(method, &url);
        if let Some(key) = &self.key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        let result = match body {
            Some(body) => request
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
            None if method == "GET" => request.call(),
            None => request.send_bytes(&[]),
        };
        let response = match result {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(transport)) => return Err(self.transport(transport)),
        };
        let status = response.status();
        let text = response.into_string().map_err(|e| CliError::Unreachable {
            server: self.server.clone(),
            detail: format!("reading the answer to {method} {path}: {e}"),
        })?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| CliError::BadAnswer {
                path: path.to_string(),
                detail: format!("status {status}, body is not JSON ({e})"),
            })?
        };
        Ok(Answer { status, body })
    }

    /// `POST path` with an NDJSON body; the answer's text when it is 2xx, else the error.
    pub fn send_ndjson(&self, path: &str, body: String) -> Result<String, CliError> {
        let url = format!("{}{path}", self.server);
        let mut request = self.agent.request("POST", &url);
        if let Some(key) = &self.key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        let response = match request
            .set("Content-Type", "application/x-ndjson")
            .send_string(&body)
        {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(transport)) => return Err(self.transport(transport)),
        };
        let status = response.status();
        // Not `into_string`, which stops at 10 MB: a chunk's answer may be longer.
        let mut text = String::new();
        std::io::Read::read_to_string(&mut response.into_reader(), &mut text).map_err(|e| {
            CliError::Unreachable {
                server: self.server.clone(),
                detail: format!("reading the answer to POST {path}: {e}"),
            }
        })?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Err(http_error(Answer { status, body }))
    }

    /// Sends one request and expects a 2xx answer; any other status becomes [`CliError::Http`].
    pub fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let answer = self.send(method, path, body)?;
        if (200..300).contains(&answer.status) {
            Ok(answer.body)
        } else {
            Err(http_error(answer))
        }
    }

    /// `GET path`, expecting 2xx.
    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        self.expect("GET", path, None)
    }

    fn transport(&self, transport: ureq::Transport) -> CliError {
        match transport.kind() {
            ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => {
                CliError::Usage(format!(
                    "--server {}: not a usable http URL ({transport})",
                    self.server
                ))
            }
            _ => CliError::Unreachable {
                server: self.server.clone(),
                detail: transport.to_string(),
            },
        }
    }
}

/// The error of a non-2xx answer: `code: detail` from its problem document, or the bare status.
pub fn http_error(answer: Answer) -> CliError {
    match serde_json::from_value::<Problem>(answer.body.clone()) {
        Ok(problem) => CliError::Http {
            status: answer.status,
            code: problem.code,
            detail: problem.detail,
        },
        Err(_) => CliError::Http {
            status: answer.status,
            code: format!("http_{}", answer.status),
            detail: answer.body.to_string(),
        },
    }
}

/// Reads a server answer into its wire type.
pub fn decode<T: DeserializeOwned>(path: &str, body: &Value) -> Result<T, CliError> {
    serde_json::from_value(body.clone()).map_err(|e| CliError::BadAnswer {
        path: path.to_string(),
        detail: e.to_string(),
    })
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
pub fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The pages of a list endpoint, followed through their `next` cursors.
pub struct Pages<T> {
    /// The items, typed.
    pub items: Vec<T>,
    /// The same items as the server sent them (for `--output json`).
    pub raw: Vec<Value>,
    /// The cursor to go on from when the walk stopped early (page or item cap), else `None`.
    pub next: Option<String>,
}

/// Walks `path` (without a query), asking each page for `page_limit(items so far)` items, until
/// the last page, `pages_max` pages, or `stop_at` items.
pub fn pages<T: DeserializeOwned>(
    api: &Api,
    path: &str,
    pages_max: usize,
    stop_at: Option<usize>,
    page_limit: impl Fn(usize) -> usize,
) -> Result<Pages<T>, CliError> {
    let mut walk = Pages {
        items: Vec::new(),
        raw: Vec::new(),
        next: None,
    };
    for _ in 0..pages_max {
        let mut url = format!("{path}?limit={}", page_limit(walk.items.len()));
        if let Some(cursor) = &walk.next {
            url = format!("{url}&after={}", query_value(cursor));
        }
        let body = api.get(&url)?;
        let page: orderd_proto::Page<T> = decode(&url, &body)?;
        walk.items.extend(page.items);
        if let Some(items) = body.get("items").and_then(Value::as_array) {
            walk.raw.extend(items.iter().cloned());
        }
        match page.next {
            // A server that repeats a cursor would loop: treat it as the end.
            Some(next) if walk.next.as_ref() != Some(&next) => walk.next = Some(next),
            _ => {
                walk.next = None;
                return Ok(walk);
            }
        }
        if stop_at.is_some_and(|stop| walk.items.len() >= stop) {
            break;
        }
    }
    Ok(walk)
}
