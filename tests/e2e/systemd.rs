//! orderd under systemd, without systemd: the notification protocol (`Type=notify`,
//! `WatchdogSec=`) seen on a unix datagram socket the test binds as `NOTIFY_SOCKET`, and the
//! master key read from a credential directory (`LoadCredential=`) as `CREDENTIALS_DIRECTORY`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{serial, Server};

/// The socket systemd would listen on, bound by the test.
struct NotifySocket {
    socket: UnixDatagram,
    /// Every message received so far, one `KEY=value` line each, with when it came.
    seen: Vec<(Instant, String)>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        NotifySocket {
            socket,
            seen: Vec::new(),
        }
    }

    /// Reads until a line equal to `line` arrives after `after` lines were seen; returns its
    /// index in `seen`. Panics (with what came) after `within`.
    fn wait_for(&mut self, line: &str, after: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(index) = self.seen.iter().skip(after).position(|(_, l)| l == line) {
                return after + index;
            }
            assert!(
                Instant::now() < deadline,
                "no {line} within {within:?}; seen: {:?}",
                self.lines()
            );
            let mut buffer = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                let now = Instant::now();
                self.seen
                    .extend(text.lines().map(|line| (now, line.to_string())));
            }
        }
    }

    fn lines(&self) -> Vec<&str> {
        self.seen.iter().map(|(_, line)| line.as_str()).collect()
    }
}

/// With `NOTIFY_SOCKET` and `WATCHDOG_USEC` set as systemd sets them, orderd sends `READY=1`
/// once ready, `WATCHDOG=1` every half interval while its shards answer their heartbeats, and
/// `STOPPING=1` when SIGTERM makes it drain; it still exits 0.
#[test]
fn orderd_tells_systemd_ready_watchdog_and_stopping() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let mut notify = NotifySocket::bind(&path);
    let socket = path.to_str().expect("utf-8 path");
    // 400 ms: a pet every 200 ms. Heartbeats every 100 ms so that the supervisor's rounds are
    // many within one watchdog interval.
    let mut server = Server::start_with_env(
        2,
        &[
            ("NOTIFY_SOCKET", socket),
            ("WATCHDOG_USEC", "400000"),
            ("ORDERD__SUPERVISOR__HEARTBEAT_INTERVAL_MS", "100"),
        ],
    );
    // /readyz already answered 200 (Server::start waited for it): READY=1 is on its way.
    let ready = notify.wait_for("READY=1", 0, Duration::from_secs(5));
    // Then the watchdog keeps being fed, about every 200 ms.
    let first = notify.wait_for("WATCHDOG=1", ready + 1, Duration::from_secs(2));
    let mut last = first;
    for _ in 0..4 {
        last = notify.wait_for("WATCHDOG=1", last + 1, Duration::from_secs(2));
    }
    let span = notify.seen[last].0 - notify.seen[first].0;
    assert!(
        span >= Duration::from_millis(500) && span <= Duration::from_millis(2_000),
        "4 pets after the first took {span:?} (expected about 800 ms)"
    );
    assert!(
        !notify.lines().contains(&"STOPPING=1"),
        "{:?}",
        notify.lines()
    );
    // The server serves meanwhile.
    let client = server.client();
    client.adjust_stock("SYSTEMD-SKU", 1);

    let before = notify.seen.len();
    server.terminate();
    notify.wait_for("STOPPING=1", before, Duration::from_secs(5));
    let stopping = notify
        .lines()
        .iter()
        .filter(|line| **line == "STOPPING=1")
        .count();
    assert_eq!(stopping, 1, "STOPPING=1 once: {:?}", notify.lines());
    assert_eq!(
        notify
            .lines()
            .iter()
            .filter(|line| **line == "READY=1")
            .count(),
        1,
        "READY=1 once"
    );
    assert!(
        !server.log().contains("Cannot notify systemd"),
        "{}",
        server.log()
    );
}

/// With `LoadCredential=master.key:…`, systemd puts the key in `$CREDENTIALS_DIRECTORY`: orderd
/// uses it rather than `security.master_key_file` (which it neither reads nor creates), does
/// not rotate it over the API (409: the operator rotates it with a restart), and the data it
/// sealed opens with the same key from the environment.
#[test]
fn the_master_key_comes_from_the_systemd_credential() {
    let _serial = serial();
    let credentials = tempfile::tempdir().expect("tempdir");
    let key_hex: String = (0..32).map(|i| format!("{:02x}", 0xa0 + i)).collect();
    let key_path = credentials.path().join("master.key");
    std::fs::write(&key_path, format!("{key_hex}\n")).expect("write the credential");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o400)).expect("0400");
    let credentials_dir = credentials.path().to_str().expect("utf-8 path");

    let mut server = Server::start_with_env(2, &[("CREDENTIALS_DIRECTORY", credentials_dir)]);
    assert!(
        !server.master_key_file().exists(),
        "security.master_key_file was created although the credential is there"
    );
    let client = server.client();
    let (status, customer) = client.post_json(
        "/v1/customers",
        &json!({"name": "Credential Carol", "email": "carol@example.com"}),
        None,
    );
    assert_eq!(status, 201, "{customer}");
    let id = customer["id"].as_str().expect("customer id").to_string();
    let rotate = client.call("POST", "/v1/ops/keys/rotate", None, None);
    assert_eq!(rotate.status, 409, "{:?}", rotate.body);
    assert!(
        rotate.body.to_string().contains("systemd credential"),
        "{:?}",
        rotate.body
    );
    assert_eq!(
        std::fs::read_dir(credentials.path()).expect("list").count(),
        1,
        "nothing written into the credential directory"
    );

    // The same key from the environment opens what was sealed under the credential.
    server.set_env(&[("ORDERD_MASTER_KEY", key_hex.as_str())]);
    server.restart();
    let (status, got) = server.client().get_json(&format!("/v1/customers/{id}"));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["name"], "Credential Carol");
    assert_eq!(got["email"], "carol@example.com");

    // Without either, there is no key: the start is refused, nothing is generated over it.
    server.set_env(&[]);
    let (status, log) = server.start_expecting_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(log.contains("no master key"), "{log}");
    assert!(!server.master_key_file().exists());
}
