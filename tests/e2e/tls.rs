//! TLS on both front doors (`http.tls_*`, `tcp.tls_*`) against the real `orderd`, with a CA
//! and a server certificate the test makes (rcgen): HTTPS and TCP over TLS serve, plaintext
//! gets no service on either port, a client that stalls the handshake is dropped, orderctl
//! trusts the CA with `--ca-file`, a key that does not match its certificate (or a
//! certificate without its key) stops orderd before it serves, HTTPS connections count
//! toward `http.max_connections_per_peer`, and the inspection probes both listeners over TLS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderd_client::{Client, ClientConfig, ClientError, TlsOptions};
use orderd_proto::tcp as msg;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::orderctl::orderctl;
use crate::support::{serial, unique, Server};

/// The files of a test PKI: a CA, a server certificate for `localhost` and `127.0.0.1` that it
/// signed, the server's key, and another key that fits nothing.
pub(crate) struct Pki {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    other_key: PathBuf,
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub(crate) fn make_pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        other_key: dir.join("other.key"),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, server_cert.pem()).unwrap();
    write_private(&pki.key, &server_key.serialize_pem());
    write_private(
        &pki.other_key,
        &KeyPair::generate().unwrap().serialize_pem(),
    );
    pki
}

/// A TLS client configuration that trusts `ca` alone.
pub(crate) fn trusting(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The environment that turns TLS on for both listeners with `cert` and `key`.
pub(crate) fn tls_env(cert: &Path, key: &Path) -> Vec<(&'static str, String)> {
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    vec![
        ("ORDERD__HTTP__TLS_CERT_FILE", cert.clone()),
        ("ORDERD__HTTP__TLS_KEY_FILE", key.clone()),
        ("ORDERD__TCP__TLS_CERT_FILE", cert),
        ("ORDERD__TCP__TLS_KEY_FILE", key),
        // A client that stalls the handshake is dropped after this.
        ("ORDERD__TCP__AUTH_TIMEOUT_MS", "1000".to_string()),
    ]
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().unwrap().parse().unwrap()
}

/// The HTTP answer (status line) a plaintext client gets from `port`, if any.
fn plain_http_answer(port: u16) -> Option<String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    match agent.get(&format!("http://127.0.0.1:{port}/livez")).call() {
        Ok(response) => Some(response.status().to_string()),
        Err(ureq::Error::Status(status, _)) => Some(status.to_string()),
        Err(ureq::Error::Transport(_)) => None,
    }
}

#[test]
fn both_front_doors_serve_tls_only_with_a_certificate_the_test_makes() {
    let _serial = serial();
    let dir = tempfile::Builder::new()
        .prefix("orderd-e2e-tls-")
        .tempdir()
        .unwrap();
    let pki = make_pki(dir.path());
    let env = tls_env(&pki.cert, &pki.key);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_https(dir.path(), 2, &env, trusting(&pki.ca));
    assert!(server.base().starts_with("https://"), "{}", server.base());
    let http_port = port_of(server.base());

    // HTTPS with the CA: the API works (readiness was probed over HTTPS too).
    let api = server.client();
    let customer = api.create_customer();
    let sku = unique("TLS-SKU");
    api.adjust_stock(&sku, 5);

    // Plain HTTP to the HTTPS port gets no answer.
    assert_eq!(plain_http_answer(http_port), None, "plain HTTP was served");
    // HTTPS without the CA (the public roots) does not trust the server.
    let untrusting = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let error = untrusting
        .get(&format!("https://127.0.0.1:{http_port}/livez"))
        .call()
        .expect_err("a certificate of an unknown CA was trusted");
    assert!(
        matches!(error, ureq::Error::Transport(_)),
        "expected a TLS failure, got {error}"
    );

    let rt = runtime();
    // TCP over TLS: AUTH and PLACE_ORDER through orderd-client, trusting the CA.
    let tls = TlsOptions::from_ca_file(&pki.ca, "localhost").expect("CA file");
    let config = ClientConfig {
        tls: Some(tls),
        ..ClientConfig::default()
    };
    let client = Client::new(server.tcp_addr(), server.admin_key(), config);
    let order = rt
        .block_on(client.place_order(&msg::PlaceOrder {
            customer_id: customer.clone(),
            lines: vec![msg::Line {
                sku: sku.clone(),
                qty: 2,
                unit_price: 1999,
            }],
            shipping_address: None,
            note: None,
            idempotency_key: Some(unique("tls-order")),
        }))
        .expect("PLACE_ORDER over TLS");
    assert_eq!(order.status, "confirmed", "{order:?}");
    let (status, body) = api.get_json(&format!("/v1/orders/{}", order.id));
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.stock(&sku).available, 3);
    rt.block_on(client.close());

    // A TLS client that expects another name is refused by its own check.
    let wrong_name = ClientConfig {
        tls: Some(TlsOptions::from_ca_file(&pki.ca, "orders.example").unwrap()),
        connect_attempts: 1,
        ..ClientConfig::default()
    };
    let error = rt
        .block_on(Client::new(server.tcp_addr(), server.admin_key(), wrong_name).connect())
        .expect_err("a certificate for another name was trusted");
    assert!(matches!(error, ClientError::Tls(_)), "{error:?}");

    // A plaintext client gets no service: its AUTH (the secret) is not answered.
    let plain = ClientConfig {
        connect_attempts: 1,
        ..ClientConfig::default()
    };
    let result = rt.block_on(Client::new(server.tcp_addr(), server.admin_key(), plain).connect());
    assert!(result.is_err(), "plaintext AUTH was answered: {result:?}");

    // A client that connects and never starts the handshake is closed at
    // tcp.auth_timeout_ms (1 s here), freeing its slot.
    let mut stalled = TcpStream::connect(server.tcp_addr()).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let read = stalled.read(&mut byte);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "a stalled handshake got bytes: {read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "a stalled handshake held its connection for {:?}",
        started.elapsed()
    );
    // And a client that sends garbage instead of a ClientHello is closed at once.
    let mut garbage = TcpStream::connect(server.tcp_addr()).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = garbage.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "plaintext was answered in plaintext"
    );

    let (status, metrics) = {
        let reply = api.get("/metrics");
        (
            reply.status,
            reply.body.as_str().unwrap_or_default().to_string(),
        )
    };
    assert_eq!(status, 200);
    for reason in ["tls_handshake", "auth_timeout"] {
        assert!(
            metrics.contains(&format!(
                "orderd_tcp_connections_closed_total{{reason=\"{reason}\"}}"
            )),
            "no {reason} in the metrics:\n{metrics}"
        );
    }

    // The inspection's listener probe speaks TLS to both listeners (it failed both before):
    // a handshake that presents the configured certificate, then /livez and PING.
    let (status, report) = api.get_json("/v1/ops/inspection");
    assert_eq!(status, 200, "{report}");
    let listeners = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "listeners")
        .cloned()
        .expect("a listeners check");
    assert_eq!(listeners["status"], "pass", "{listeners}");

    // orderctl over HTTPS: with --ca-file it works; without it the server is not trusted.
    let ca = pki.ca.display().to_string();
    let run = orderctl(&[
        "--server",
        server.base(),
        "--key",
        server.admin_key(),
        "--ca-file",
        &ca,
        "shards",
    ]);
    assert_eq!(run.code, 0, "orderctl with --ca-file: {}", run.stderr);
    let run = orderctl(&["--server", server.base(), "health"]);
    assert_eq!(run.code, 3, "orderctl without the CA reached the server");
}

#[test]
fn a_key_that_does_not_fit_or_a_missing_half_refuses_start_naming_the_setting() {
    let _serial = serial();
    let dir = tempfile::Builder::new()
        .prefix("orderd-e2e-tls-")
        .tempdir()
        .unwrap();
    let pki = make_pki(dir.path());
    let mut server = Server::start_in(dir.path(), 1);

    // Both listeners' files set, the key of another certificate.
    let env = tls_env(&pki.cert, &pki.other_key);
    server.set_env(
        &env.iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    let (status, log) = server.start_expecting_exit(Duration::from_secs(30));
    assert!(!status.success(), "orderd started with a mismatched key");
    assert!(
        log.contains("http.tls_key_file") && log.contains("does not fit"),
        "the refusal does not name the setting:\n{log}"
    );

    // A certificate without its key.
    let cert = pki.cert.display().to_string();
    server.set_env(&[("ORDERD__TCP__TLS_CERT_FILE", cert.as_str())]);
    let (status, log) = server.start_expecting_exit(Duration::from_secs(30));
    assert!(!status.success(), "orderd started with half a TLS setting");
    assert!(log.contains("tcp.tls_key_file"), "{log}");

    // An unreadable key file.
    let missing = dir.path().join("missing.key").display().to_string();
    server.set_env(&[
        ("ORDERD__TCP__TLS_CERT_FILE", cert.as_str()),
        ("ORDERD__TCP__TLS_KEY_FILE", missing.as_str()),
    ]);
    let (status, log) = server.start_expecting_exit(Duration::from_secs(30));
    assert!(!status.success(), "orderd started without its key file");
    assert!(log.contains("tcp.tls_key_file: cannot read"), "{log}");
}

type Https = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A kept-alive HTTPS connection to `port` that trusts `config`'s roots.
fn https_connect(port: u16, config: &Arc<rustls::ClientConfig>) -> Https {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(config.clone(), name).unwrap();
    rustls::StreamOwned::new(connection, tcp)
}

/// `GET /livez` on `stream`: the status and the body, or `None` when the connection ends.
fn https_livez(stream: &mut Https) -> Option<(u16, String)> {
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

#[test]
fn the_per_peer_connection_limit_counts_https_connections() {
    let _serial = serial();
    let dir = tempfile::Builder::new()
        .prefix("orderd-e2e-tls-")
        .tempdir()
        .unwrap();
    let pki = make_pki(dir.path());
    let mut env = tls_env(&pki.cert, &pki.key);
    env.push(("ORDERD__HTTP__MAX_CONNECTIONS_PER_PEER", "2".to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config = trusting(&pki.ca);
    let server = Server::start_https(dir.path(), 1, &env, config.clone());
    let port = port_of(server.base());
    // Two connections served (retrying while a probe of the server's own may hold a slot).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = Vec::new();
    while held.len() < 2 {
        let mut stream = https_connect(port, &config);
        match https_livez(&mut stream) {
            Some((200, _)) => held.push(stream),
            other => {
                assert!(Instant::now() < deadline, "never served: {other:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // The third, over TLS like the others, is refused as the plain listener refuses it.
    let mut third = https_connect(port, &config);
    let (status, body) = https_livez(&mut third).expect("an answer");
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("http.max_connections_per_peer"), "{body}");
    // The two held are still served.
    for stream in &mut held {
        assert_eq!(https_livez(stream).map(|r| r.0), Some(200));
    }
}
