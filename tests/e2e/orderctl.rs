//! `orderctl`, the on-call CLI, run as a real process against a real server: tables on stdout,
//! messages on stderr, `--output json` equal to the API's answer, the exit codes (0 ok, 1 check
//! failed or error answer, 2 usage or no key, 3 unreachable), and the effects of its commands
//! seen through the API. Backups: create, list and verify through the server, and the offline
//! restore (local or off-site) checked by starting a new server on the restored directory.
//! Changes: request, four-eyes approval, apply (and `--wait` through a watch that closes or that
//! the server ends by rolling back), rollback, each seen through `orderctl config`.

use crate::support::{
    check_order, free_port, norm_lines, order_body, place_definitive, serial, unique, Client,
    Outcome, Server,
};
use orderd_proto::{BackupResponse, BackupVerifyResponse, Page};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The `orderd` binary of this test target; Cargo puts `orderctl` beside it.
const ORDERD: &str = env!("CARGO_BIN_EXE_orderd");

/// One finished `orderctl` run.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

fn orderctl_path() -> PathBuf {
    let path = PathBuf::from(ORDERD).with_file_name("orderctl");
    assert!(
        path.is_file(),
        "{} is missing: build the workspace's binaries first \
         (`cargo build --release --workspace --features orderd-gateway/failpoints --bins`, \
         as `make test-only` does)",
        path.display()
    );
    path
}

/// Runs `orderctl args...` with no `ORDERD_*` variables from the test's own environment.
pub(crate) fn orderctl(args: &[&str]) -> Run {
    orderctl_with_env(args, &[])
}

/// Runs `orderctl args...` with `env` and no other `ORDERD_*` variables (`backup restore` reads
/// `ORDERD__*` settings as orderd does).
pub(crate) fn orderctl_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(orderctl_path());
    command.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ORDERD_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("run orderctl");
    let run = Run {
        code: output.status.code().expect("orderctl exited by a signal"),
        stdout: String::from_utf8(output.stdout).expect("stdout UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr UTF-8"),
    };
    eprintln!(
        "orderctl {args:?} -> {}\n--- stdout\n{}--- stderr\n{}",
        run.code, run.stdout, run.stderr
    );
    run
}

/// The setting that gives `orderctl backup restore` the server's master key file (it
/// authenticates backup manifests with it).
pub(crate) struct KeyEnv(String);

impl KeyEnv {
    pub(crate) fn each(&self) -> [(&'static str, &str); 1] {
        [("ORDERD__SECURITY__MASTER_KEY_FILE", self.0.as_str())]
    }
}

pub(crate) fn master_key_env(server: &Server) -> KeyEnv {
    KeyEnv(path_str(&server.master_key_file()).to_string())
}

/// Runs `orderctl --server BASE --key KEY args...`.
pub(crate) fn as_key(server: &Server, key: &str, args: &[&str]) -> Run {
    let mut all = vec!["--server", server.base(), "--key", key];
    all.extend_from_slice(args);
    orderctl(&all)
}

fn admin(server: &Server, args: &[&str]) -> Run {
    as_key(server, server.admin_key(), args)
}

#[test]
fn keys_create_list_revoke_and_roles() {
    let _serial = serial();
    let server = Server::start(2);
    let api = server.client();
    let name = unique("oncall");

    // Created through the CLI (JSON, with the secret), and the secret works against the API.
    let created = admin(
        &server,
        &[
            "--output", "json", "keys", "create", "--name", &name, "--role", "analyst",
        ],
    );
    assert_eq!(created.code, 0);
    let key = created.json();
    let id = key["id"].as_str().expect("id").to_string();
    let secret = key["secret"].as_str().expect("secret").to_string();
    assert!(id.starts_with("key_"), "{key}");
    assert_eq!(key["name"], name.as_str());
    assert_eq!(key["role"], "analyst");
    assert!(
        created.stderr.contains("shown only now"),
        "{}",
        created.stderr
    );
    assert_eq!(api.with_key(&secret).get("/v1/orders").status, 200);

    // The table form prints the secret once, in its own row.
    let table = admin(
        &server,
        &[
            "keys",
            "create",
            "--name",
            &unique("t"),
            "--role",
            "operator",
        ],
    );
    assert_eq!(table.code, 0);
    assert!(
        table.stdout.lines().any(|l| l.starts_with("secret ")),
        "{}",
        table.stdout
    );

    // Listed (table and JSON); the JSON is the API's list, without secrets.
    let list = admin(&server, &["keys", "list"]);
    assert_eq!(list.code, 0);
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{}", list.stdout));
    assert!(row.contains(&name) && row.contains("analyst"), "{row}");
    assert!(list.stdout.starts_with("ID "), "{}", list.stdout);
    assert!(!list.stdout.contains(&secret), "a secret was listed");
    let listed = admin(&server, &["--output", "json", "keys", "list"]).json();
    let (status, from_api) = api.get_json("/v1/keys?limit=1000");
    assert_eq!(status, 200);
    assert_eq!(listed["items"], from_api["items"]);
    assert_eq!(listed["items"].as_array().expect("items").len(), 3);

    // The key file is read and trimmed.
    let key_file = server.root().join("admin-copy.key");
    fs::write(&key_file, format!("  {}\n\n", server.admin_key())).expect("write key file");
    let by_file = orderctl(&[
        "--server",
        server.base(),
        "--key-file",
        key_file.to_str().expect("path"),
        "keys",
        "list",
    ]);
    assert_eq!(by_file.code, 0, "{}", by_file.stderr);
    assert_eq!(by_file.stdout, list.stdout);

    // A role that may not list keys: exit 1, `forbidden` on stderr, nothing on stdout.
    let forbidden = as_key(&server, &secret, &["keys", "list"]);
    assert_eq!(forbidden.code, 1);
    assert!(
        forbidden.stderr.contains("forbidden"),
        "{}",
        forbidden.stderr
    );
    assert_eq!(forbidden.stdout, "");

    // Revoked: the secret fails against the API and through the CLI.
    let revoked = admin(&server, &["keys", "revoke", &id]);
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    assert_eq!(revoked.stdout, "");
    assert_eq!(api.with_key(&secret).get("/v1/orders").status, 401);
    let after = as_key(&server, &secret, &["shards"]);
    assert_eq!(after.code, 1);
    assert!(after.stderr.contains("unauthorized"), "{}", after.stderr);
    let relisted = admin(&server, &["keys", "list"]);
    assert!(!relisted.stdout.contains(&id), "{}", relisted.stdout);

    // Revoking it again is an error answer (404), not a usage error.
    let again = admin(&server, &["keys", "revoke", &id]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("not_found"), "{}", again.stderr);

    // An unknown role never reaches the server: clap's usage error.
    let bad_role = admin(
        &server,
        &["keys", "create", "--name", "x", "--role", "root"],
    );
    assert_eq!(bad_role.code, 2);
}

#[test]
fn shard_restart_waits_and_leaves_an_incident() {
    let _serial = serial();
    let server = Server::start(2);
    let api = server.client();

    let table = admin(&server, &["shards"]);
    assert_eq!(table.code, 0);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", table.stdout);
    assert!(lines[0].starts_with("ID "), "{}", lines[0]);
    assert!(lines[1].starts_with("0 ") && lines[1].contains("running"));
    let json = admin(&server, &["--output", "json", "shards"]).json();
    let (status, from_api) = api.get_json("/v1/ops/shards");
    assert_eq!(status, 200);
    let ids_states = |v: &Value| -> Vec<(Value, Value, Value)> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| (s["id"].clone(), s["state"].clone(), s["restarts"].clone()))
            .collect()
    };
    assert_eq!(ids_states(&json), ids_states(&from_api));
    assert_eq!(json.as_array().expect("array").len(), 2);

    let restarted = admin(&server, &["shards", "restart", "1", "--wait"]);
    assert_eq!(restarted.code, 0, "{}", restarted.stderr);
    let row = restarted.stdout.lines().nth(1).expect("shard row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..3], ["1", "running", "1"], "{row}");
    let (_, shards) = api.get_json("/v1/ops/shards");
    let shard1 = shards
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["id"] == 1)
        .expect("shard 1");
    assert_eq!(shard1["restarts"], 1);
    assert_eq!(shard1["state"], "running");
    let shard0 = shards
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["id"] == 0)
        .expect("shard 0");
    assert_eq!(shard0["restarts"], 0, "only shard 1 was restarted");

    let listed = admin(&server, &["incidents"]);
    assert_eq!(listed.code, 0);
    let row = listed
        .stdout
        .lines()
        .find(|l| l.contains("shard/1"))
        .unwrap_or_else(|| panic!("no shard/1 incident:\n{}", listed.stdout));
    assert!(row.split_whitespace().any(|c| c == "restart"), "{row}");
    let json = admin(&server, &["--output", "json", "incidents"]).json();
    let (status, from_api) = api.get_json("/v1/ops/incidents");
    assert_eq!(status, 200);
    assert_eq!(json, from_api);
    assert!(json
        .as_array()
        .expect("array")
        .iter()
        .any(|i| i["kind"] == "restart" && i["component"] == "shard/1"));

    let since = admin(
        &server,
        &[
            "--output",
            "json",
            "incidents",
            "--since",
            "2000-01-01T00:00:00Z",
            "--limit",
            "1",
        ],
    )
    .json();
    assert_eq!(since.as_array().expect("array").len(), 1);
    let future = admin(
        &server,
        &[
            "--output",
            "json",
            "incidents",
            "--since",
            "2999-01-01T00:00:00+00:00",
        ],
    )
    .json();
    assert_eq!(future, Value::Array(vec![]));
    assert_eq!(
        admin(&server, &["incidents", "--since", "yesterday"]).code,
        2
    );
    assert_eq!(admin(&server, &["incidents", "--limit", "0"]).code, 2);

    // A shard that does not exist: the server's 404, exit 1.
    let missing = admin(&server, &["shards", "restart", "7"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("not_found"), "{}", missing.stderr);
}

#[test]
fn health_audit_inspect_and_exit_codes() {
    let _serial = serial();
    // Disk thresholds at 0%: the machine's real free space must not turn `warn` into `fail`.
    let server = Server::start_with_env(
        2,
        &[
            ("ORDERD__INSPECTION__DISK_FREE_WARN_PERCENT", "0"),
            ("ORDERD__INSPECTION__DISK_FREE_FAIL_PERCENT", "0"),
        ],
    );
    let api = server.client();

    // health needs no key.
    let health = orderctl(&["--server", server.base(), "health"]);
    assert_eq!(health.code, 0, "{}", health.stderr);
    assert!(health.stdout.contains("ready"), "{}", health.stdout);
    let json = orderctl(&["--server", server.base(), "--output", "json", "health"]).json();
    assert_eq!(json["livez"]["status"], "live");
    assert_eq!(json["readyz"]["status"], "ready");

    // The server from the environment.
    let by_env = Command::new(orderctl_path())
        .arg("health")
        .env("ORDERD_SERVER", server.base())
        .env_remove("ORDERD_KEY")
        .output()
        .expect("run orderctl");
    assert_eq!(by_env.status.code(), Some(0));

    // Nobody listening: 3, for health and for a keyed command.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let unreachable = orderctl(&["--server", &closed, "health"]);
    assert_eq!(unreachable.code, 3);
    assert!(
        unreachable.stderr.contains("cannot reach"),
        "{}",
        unreachable.stderr
    );
    assert_eq!(unreachable.stdout, "");
    assert_eq!(
        orderctl(&[
            "--server",
            &closed,
            "--key",
            "k",
            "--timeout-ms",
            "500",
            "shards"
        ])
        .code,
        3
    );

    // No key: a usage error, before any request.
    let no_key = orderctl(&["--server", server.base(), "shards"]);
    assert_eq!(no_key.code, 2);
    assert!(no_key.stderr.contains("needs a key"), "{}", no_key.stderr);
    assert_eq!(no_key.stdout, "");
    let empty_file = server.root().join("empty.key");
    fs::write(&empty_file, "\n").expect("write");
    let empty = orderctl(&[
        "--server",
        server.base(),
        "--key-file",
        empty_file.to_str().expect("path"),
        "shards",
    ]);
    assert_eq!(empty.code, 2);

    // The audit chain is intact; JSON is the API's answer (the chain has grown by then only
    // through reads, which are not audited).
    let audit = admin(&server, &["audit", "verify"]);
    assert_eq!(audit.code, 0, "{}", audit.stderr);
    assert!(
        audit
            .stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["ok", "true"]),
        "{}",
        audit.stdout
    );
    let json = admin(&server, &["--output", "json", "audit", "verify"]).json();
    let (status, from_api) = api.get_json("/v1/audit/verify");
    assert_eq!(status, 200);
    assert_eq!(json, from_api);
    assert_eq!(json["ok"], true);

    // A healthy server inspects as `warn` (no backup yet): exit 0.
    let inspect = admin(&server, &["inspect"]);
    assert_eq!(inspect.code, 0, "{}", inspect.stderr);
    assert!(
        inspect.stdout.contains("overall: warn"),
        "{}",
        inspect.stdout
    );
    for check in orderd_control::inspection::CHECK_NAMES {
        assert!(
            inspect
                .stdout
                .lines()
                .any(|l| l.starts_with(&format!("{check} "))),
            "no {check} row:\n{}",
            inspect.stdout
        );
    }
    let json = admin(&server, &["--output", "json", "inspect"]).json();
    assert_eq!(json["overall"], "warn");
    let names: Vec<&str> = json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert!(names.contains(&"backup_verified"), "{names:?}");
}

#[test]
fn inspect_exits_1_when_a_check_fails() {
    let _serial = serial();
    let server = Server::start_with_env(
        2,
        &[
            ("ORDERD__INSPECTION__DISK_FREE_WARN_PERCENT", "100"),
            ("ORDERD__INSPECTION__DISK_FREE_FAIL_PERCENT", "100"),
        ],
    );
    let inspect = admin(&server, &["inspect"]);
    assert_eq!(inspect.code, 1);
    assert!(
        inspect.stdout.contains("overall: fail"),
        "{}",
        inspect.stdout
    );
    let disk = inspect
        .stdout
        .lines()
        .find(|l| l.starts_with("disk "))
        .expect("disk row");
    assert_eq!(disk.split_whitespace().nth(1), Some("fail"), "{disk}");
    assert!(
        inspect.stderr.contains("inspection failed: disk"),
        "{}",
        inspect.stderr
    );
    let json = admin(&server, &["--output", "json", "inspect"]);
    assert_eq!(json.code, 1);
    assert_eq!(json.json()["overall"], "fail");
}

#[test]
fn a_failed_shard_makes_health_and_inspect_exit_1_and_restart_brings_it_back() {
    let _serial = serial();
    // Failpoints (test build): with no automatic restart allowed, one panic leaves a shard
    // failed.
    let server = Server::start_with_env(2, &[("ORDERD__SUPERVISOR__MAX_RESTARTS", "0")]);
    let client = server.client();
    let (status, body) = client.post_json(
        "/v1/stock/FAILPOINT-PANIC-CTL/adjustments",
        &serde_json::json!({"delta": 1, "reason": "orderctl test"}),
        None,
    );
    assert_eq!(status, 503, "{body}");
    let shard = orderd_engine::state::shard_of_sku("FAILPOINT-PANIC-CTL", 2).to_string();

    // The 503 answers the caller as soon as the shard panics; the supervisor then decides, a
    // moment later, that it may not restart it ("restarting" turns into "failed").
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let health = loop {
        let health = admin(&server, &["health"]);
        assert_eq!(health.code, 1, "not ready is a failed check");
        if health.stderr.contains(&format!("shard {shard} failed"))
            || std::time::Instant::now() > deadline
        {
            break health;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        health.stderr.contains(&format!("shard {shard} failed")),
        "{}",
        health.stderr
    );
    let inspect = admin(&server, &["inspect"]);
    assert_eq!(inspect.code, 1);
    assert!(inspect.stderr.contains("shards"), "{}", inspect.stderr);
    let incidents = admin(&server, &["--output", "json", "incidents"]);
    assert_eq!(incidents.code, 0, "{}", incidents.stderr);
    let kinds: Vec<String> = incidents
        .json()
        .as_array()
        .expect("incidents")
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["component"].as_str().unwrap(),
                i["kind"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        kinds.contains(&format!("shard/{shard}:escalation")),
        "{kinds:?}"
    );

    // The operator's repair: restart the failed shard and wait; then healthy again.
    let restart = admin(&server, &["shards", "restart", &shard, "--wait"]);
    assert_eq!(restart.code, 0, "{}", restart.stderr);
    assert_eq!(admin(&server, &["health"]).code, 0);
}

// ---------------------------------------------------------------------------------------------
// Backups

/// The master key file in a server's root (`security.master_key_file` by default); a backup
/// never carries it.
const MASTER_KEY_FILE: &str = "orderd-master.key";

/// A server for backup tests: backups only on request (no schedule, no scheduled drills). The
/// harness puts `backup.dir` and `backup.offsite` in the test's root (`backups/`, `offsite/`).
pub(crate) fn backup_server() -> Server {
    Server::start_with_env(
        2,
        &[
            ("ORDERD__BACKUP__INTERVAL_S", "0"),
            ("ORDERD__BACKUP__VERIFY_INTERVAL_S", "0"),
        ],
    )
}

pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Places `n` confirmed orders over six SKUs of one customer (so both shards get some).
fn place_orders(client: &Client, n: usize, tag: &str) -> Vec<Value> {
    let customer = client.create_customer();
    let skus: Vec<String> = (0..6).map(|i| format!("BAK-{tag}-{i}")).collect();
    for sku in &skus {
        client.adjust_stock(sku, 1000);
    }
    (0..n)
        .map(|i| {
            let body = order_body(
                &customer,
                &[(skus[i % skus.len()].clone(), 1 + (i % 3) as u32, 150)],
            );
            match place_definitive(client, &unique("bak"), &body) {
                Outcome::Confirmed(order) => {
                    check_order(&order, &body);
                    order
                }
                other => panic!("order {i}: {other:?}"),
            }
        })
        .collect()
}

fn ids_of(orders: &[Value]) -> BTreeSet<String> {
    orders
        .iter()
        .map(|o| o["id"].as_str().expect("order id").to_string())
        .collect()
}

/// `backup create --output json`: asserts exit 0 and the API's shape; returns the backup.
pub(crate) fn create_backup(server: &Server) -> Value {
    let run = admin(server, &["--output", "json", "backup", "create"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let body = run.json();
    let parsed: BackupResponse = serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("not a BackupResponse ({e}): {body}"));
    assert!(parsed.id.starts_with("bak_"), "{body}");
    body
}

fn total_orders(backup: &Value) -> u64 {
    backup["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| s["orders"].as_u64().expect("orders"))
        .sum()
}

/// Polls `GET /v1/ops/backups` until backup `id`'s off-site copy is `copied` (the upload runs
/// after the answer to the create); returns the listed backup.
pub(crate) fn wait_offsite_copied(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, page) = server.get_json("/v1/ops/backups?limit=1000");
        assert_eq!(status, 200, "{page}");
        let backup = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|b| b["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {page}"))
            .clone();
        match backup["offsite"].as_str() {
            Some("copied") => return backup,
            Some("failed") => panic!("the off-site copy of {id} failed: {backup}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "{id} not copied off-site within 60 s: {backup}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The listed backup `id` (`GET /v1/ops/backups`).
fn listed(server: &Server, id: &str) -> Value {
    let (status, page) = server.get_json("/v1/ops/backups?limit=1000");
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {page}"))
        .clone()
}

/// A table's value column for `field` (`FIELD  VALUE` tables).
fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .filter(|rest| rest.starts_with(' '))
                .map(str::trim)
        })
        .unwrap_or_else(|| panic!("no {name} row:\n{stdout}"))
}

/// A fresh directory for a restored server (removed on drop).
pub(crate) fn fresh_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("orderd-e2e-restored-")
        .tempdir()
        .expect("tempdir")
}

/// Starts orderd on `root`, whose `data/` was just restored from a backup of `source`: with
/// `source`'s master key file (it never travels in a backup, the operator keeps it), and with
/// `source`'s `admin.key` when the restored key table came without it.
pub(crate) fn start_restored(source: &Server, root: &Path) -> Server {
    fs::copy(
        source.root().join(MASTER_KEY_FILE),
        root.join(MASTER_KEY_FILE),
    )
    .expect("copy the master key file");
    let data = root.join("data");
    if data.join("keys.json").is_file() && !data.join("admin.key").is_file() {
        fs::copy(source.data_dir().join("admin.key"), data.join("admin.key"))
            .expect("copy admin.key");
    }
    Server::start_in(root, 2)
}

/// Every order of `before` is on `server`, as it was acknowledged, and nothing else is listed.
fn assert_orders_restored(server: &Server, before: &[Value]) {
    let client = server.client();
    let listed = client.list_orders("");
    assert_eq!(
        ids_of(&listed),
        ids_of(before),
        "the restored server lists exactly the orders placed before the backup"
    );
    for order in before {
        let id = order["id"].as_str().expect("id");
        let (status, got) = client.get_json(&format!("/v1/orders/{id}"));
        assert_eq!(status, 200, "GET {id} after the restore: {got}");
        assert_eq!(got["status"], order["status"], "{id}");
        assert_eq!(got["customer_id"], order["customer_id"], "{id}");
        assert_eq!(got["total"], order["total"], "{id}");
        assert_eq!(norm_lines(&got), norm_lines(order), "{id}");
    }
    // Personal data still opens: the restored store and the same master key fit together.
    let customer = before[0]["customer_id"].as_str().expect("customer id");
    let (status, body) = client.get_json(&format!("/v1/customers/{customer}"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body["email"]
            .as_str()
            .is_some_and(|e| e.ends_with("@example.com")),
        "{body}"
    );
}

/// Names of the entries beside `dir` that start with its name and a dot (`data.replaced-…`,
/// `data.restoring`).
fn siblings(dir: &Path) -> Vec<String> {
    let name = dir.file_name().expect("name").to_string_lossy().to_string();
    let mut found: Vec<String> = fs::read_dir(dir.parent().expect("parent"))
        .expect("read parent")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&format!("{name}.")))
        .collect();
    found.sort();
    found
}

#[test]
fn orderctl_backup_create_list_verify_and_json() {
    let _serial = serial();
    let server = backup_server();
    let api = server.client();
    let orders = place_orders(&api, 5, "clv");

    // Created through the table form: one row, newest fields, the drill not run yet.
    let table = admin(&server, &["backup", "create"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", table.stdout);
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "CREATED_AT",
            "SIZE",
            "NEW",
            "OFFSITE",
            "VERIFIED",
            "DURATION"
        ]
    );
    let first = lines[1].split_whitespace().next().expect("id").to_string();
    assert!(first.starts_with("bak_"), "{}", lines[1]);
    assert!(
        table.stderr.contains(&format!("created {first}")),
        "{}",
        table.stderr
    );

    // The JSON form is the API's `BackupResponse`.
    let second = create_backup(&server);
    let second_id = second["id"].as_str().expect("id").to_string();
    assert_ne!(second_id, first);
    assert_eq!(second["shards"].as_array().expect("shards").len(), 2);
    assert_eq!(total_orders(&second), orders.len() as u64);
    assert!(
        ["pending", "copied"].contains(&second["offsite"].as_str().unwrap_or("")),
        "{second}"
    );
    assert_eq!(second["verified"], Value::Null, "no drill yet: {second}");
    assert!(second["size_bytes"].as_u64().expect("size") > 0);
    wait_offsite_copied(&server, &first);
    wait_offsite_copied(&server, &second_id);

    // Listed newest first, as a table and as the API's page.
    let list = admin(&server, &["backup", "list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let rows: Vec<Vec<&str>> = list
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "ID",
            "CREATED_AT",
            "SIZE",
            "OFFSITE",
            "VERIFIED",
            "VERIFIED_AT"
        ]
    );
    assert_eq!(rows.len(), 3, "{}", list.stdout);
    assert_eq!(rows[1][0], second_id);
    assert_eq!(rows[2][0], first);
    assert!(rows[1].contains(&"copied"), "{:?}", rows[1]);
    let json = admin(&server, &["--output", "json", "backup", "list"]);
    assert_eq!(json.code, 0);
    let json = json.json();
    let page: Page<BackupResponse> =
        serde_json::from_value(json.clone()).expect("a Page<BackupResponse>");
    assert_eq!(
        page.items.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        [second_id.as_str(), first.as_str()]
    );
    assert_eq!(page.next, None);
    let (status, from_api) = api.get_json("/v1/ops/backups?limit=1000");
    assert_eq!(status, 200);
    assert_eq!(json["items"], from_api["items"]);

    // --limit: the newest only, with the cursor to go on.
    let one = admin(
        &server,
        &["--output", "json", "backup", "list", "--limit", "1"],
    )
    .json();
    let items = one["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], second_id.as_str());
    assert!(one["next"].is_string(), "{one}");
    let one = admin(&server, &["backup", "list", "--limit", "1"]);
    assert_eq!(one.stdout.lines().count(), 2, "{}", one.stdout);

    // A restore drill on the server: exit 0, verified, and the list shows it.
    let verify = admin(&server, &["backup", "verify", &first]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    assert_eq!(field(&verify.stdout, "id"), first);
    assert_eq!(field(&verify.stdout, "verified"), "true");
    assert_eq!(field(&verify.stdout, "source"), "local");
    let verify = admin(
        &server,
        &["--output", "json", "backup", "verify", &second_id],
    );
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    let report: BackupVerifyResponse =
        serde_json::from_value(verify.json()).expect("a BackupVerifyResponse");
    assert_eq!(report.id, second_id);
    assert!(report.verified, "{report:?}");
    let first_listed = listed(&server, &first);
    assert_eq!(first_listed["verified"], true, "{first_listed}");
    assert!(first_listed["verified_at"].is_string(), "{first_listed}");
    let list = admin(&server, &["backup", "list"]);
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&first))
        .expect("first listed");
    assert_eq!(row.split_whitespace().nth(4), Some("true"), "{row}");

    // Errors: an unknown backup is the server's 404 (exit 1); no key is a usage error (2);
    // nobody listening is 3.
    let unknown = admin(&server, &["backup", "verify", "bak_999999_deadbeef"]);
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("not_found"), "{}", unknown.stderr);
    assert_eq!(unknown.stdout, "");
    let no_key = orderctl(&["--server", server.base(), "backup", "list"]);
    assert_eq!(no_key.code, 2);
    assert!(no_key.stderr.contains("needs a key"), "{}", no_key.stderr);
    let closed = format!("http://127.0.0.1:{}", free_port());
    assert_eq!(
        orderctl(&["--server", &closed, "--key", "k", "backup", "create"]).code,
        3
    );
    assert_eq!(admin(&server, &["backup", "list", "--limit", "0"]).code, 2);

    // Roles: an operator may, an analyst may not.
    let key = |role: &str| {
        let (status, body) = api.post_json(
            "/v1/keys",
            &json!({"name": unique(role), "role": role}),
            None,
        );
        assert_eq!(status, 201, "{body}");
        body["secret"].as_str().expect("secret").to_string()
    };
    let operator = key("operator");
    let by_operator = as_key(&server, &operator, &["backup", "list"]);
    assert_eq!(by_operator.code, 0, "{}", by_operator.stderr);
    let analyst = key("analyst");
    let by_analyst = as_key(&server, &analyst, &["backup", "create"]);
    assert_eq!(by_analyst.code, 1);
    assert!(
        by_analyst.stderr.contains("forbidden"),
        "{}",
        by_analyst.stderr
    );
}

#[test]
fn orderctl_backup_restore_brings_back_every_order_placed_before_the_backup() {
    let _serial = serial();
    let mut server = backup_server();
    let api = server.client();
    let before = place_orders(&api, 24, "rst");
    let backup = create_backup(&server);
    let id = backup["id"].as_str().expect("id").to_string();
    assert_eq!(total_orders(&backup), 24);
    // Placed after the backup: not in it.
    let late = place_orders(&api, 3, "late");
    wait_offsite_copied(&server, &id);
    server.terminate();

    let restored_root = fresh_root();
    let data = restored_root.path().join("data");
    let backups = server.root().join("backups");
    let offsite = server.root().join("offsite");
    let key_env = master_key_env(&server);
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "backup",
            "restore",
            &id,
            "--data-dir",
            path_str(&data),
            "--backup-dir",
            path_str(&backups),
            "--offsite",
            path_str(&offsite),
        ];
        args.extend_from_slice(extra);
        orderctl_with_env(&args, &key_env.each())
    };
    let run = restore(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(field(&run.stdout, "id"), id);
    assert_eq!(field(&run.stdout, "shards"), "2");
    assert_eq!(field(&run.stdout, "orders"), "24");
    assert_eq!(field(&run.stdout, "source"), "local");
    assert_eq!(field(&run.stdout, "replaced"), "-");
    assert!(run.stderr.contains("restored"), "{}", run.stderr);
    assert!(data.join("db").join("CURRENT").is_file());

    // A new server on the restored directory has every order placed before the backup.
    let mut restored = start_restored(&server, restored_root.path());
    assert_orders_restored(&restored, &before);
    for order in &late {
        let id = order["id"].as_str().expect("id");
        let (status, _) = restored.get_json(&format!("/v1/orders/{id}"));
        assert_eq!(status, 404, "{id} was placed after the backup");
    }

    // While a server holds the directory, even --replace is refused, and nothing moves.
    let held = restore(&["--replace"]);
    assert_eq!(held.code, 1);
    assert!(held.stderr.contains("still running"), "{}", held.stderr);
    assert_eq!(siblings(&data), Vec::<String>::new());
    assert_eq!(restored.client().get("/readyz").status, 200);
    restored.terminate();

    // Stopped: without --replace the non-empty directory is refused; with it, moved aside.
    let occupied = restore(&[]);
    assert_eq!(occupied.code, 1);
    assert!(occupied.stderr.contains("--replace"), "{}", occupied.stderr);
    assert_eq!(occupied.stdout, "");
    let replaced = restore(&["--replace", "--output", "json"]);
    assert_eq!(replaced.code, 0, "{}", replaced.stderr);
    let summary = replaced.json();
    assert_eq!(summary["id"], id.as_str());
    assert_eq!(summary["orders"], 24);
    let moved = PathBuf::from(summary["replaced"].as_str().expect("replaced path"));
    assert!(
        moved.join("db").join("CURRENT").is_file(),
        "the previous store was moved to {}",
        moved.display()
    );
    assert!(data.join("db").join("CURRENT").is_file());
    drop(restored);
}

#[test]
fn orderctl_a_damaged_backup_fails_verify_and_restore_is_refused() {
    let _serial = serial();
    let mut server = backup_server();
    place_orders(&server.client(), 8, "dmg");
    let backup = create_backup(&server);
    let id = backup["id"].as_str().expect("id").to_string();
    // The upload reads the local files: let it finish before one is damaged.
    wait_offsite_copied(&server, &id);

    // One byte flipped in the largest shared file of the local backup.
    let shared = server.root().join("backups/rocksdb/shared_checksum");
    let victim = fs::read_dir(&shared)
        .unwrap_or_else(|e| panic!("{}: {e}", shared.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .max_by_key(|p| fs::metadata(p).expect("metadata").len())
        .expect("a shared file");
    let mut bytes = fs::read(&victim).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&victim, &bytes).expect("write");

    let verify = admin(&server, &["backup", "verify", &id]);
    assert_eq!(verify.code, 1, "a failed drill is a failed check");
    assert_eq!(field(&verify.stdout, "verified"), "false");
    assert!(
        verify.stderr.contains("failed verification"),
        "{}",
        verify.stderr
    );
    let json = admin(&server, &["--output", "json", "backup", "verify", &id]);
    assert_eq!(json.code, 1);
    let report: BackupVerifyResponse =
        serde_json::from_value(json.json()).expect("a BackupVerifyResponse");
    assert!(!report.verified);
    assert!(!report.detail.is_empty(), "{report:?}");
    assert_eq!(listed(&server, &id)["verified"], false);
    server.terminate();

    // Restore is refused: an occupied target with --replace keeps its contents, nothing is
    // moved or left beside it; a fresh target is not even created.
    let other = fresh_root();
    let target = other.path().join("data");
    fs::create_dir_all(&target).expect("target");
    fs::write(target.join("marker"), b"previous data").expect("marker");
    let backups = server.root().join("backups");
    let offsite = server.root().join("offsite");
    let key_env = master_key_env(&server);
    let restore = |target: &Path, extra: &[&str]| {
        let mut args = vec![
            "backup",
            "restore",
            &id,
            "--data-dir",
            path_str(target),
            "--backup-dir",
            path_str(&backups),
            "--offsite",
            path_str(&offsite),
        ];
        args.extend_from_slice(extra);
        orderctl_with_env(&args, &key_env.each())
    };
    let refused = restore(&target, &["--replace"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("refused"), "{}", refused.stderr);
    assert_eq!(refused.stdout, "");
    assert_eq!(
        fs::read(target.join("marker")).expect("marker kept"),
        b"previous data"
    );
    assert_eq!(fs::read_dir(&target).expect("read").count(), 1);
    assert_eq!(siblings(&target), Vec::<String>::new());
    let fresh = other.path().join("fresh");
    let refused = restore(&fresh, &[]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("refused"), "{}", refused.stderr);
    assert!(!fresh.exists(), "no target created for a refused restore");
    assert_eq!(siblings(&fresh), Vec::<String>::new());
}

#[test]
fn orderctl_restore_from_offsite_when_the_local_backups_are_gone() {
    let _serial = serial();
    let mut server = backup_server();
    let before = place_orders(&server.client(), 10, "off");
    let backup = create_backup(&server);
    let id = backup["id"].as_str().expect("id").to_string();
    wait_offsite_copied(&server, &id);
    server.terminate();
    let backups = server.root().join("backups");
    fs::remove_dir_all(&backups).expect("lose the local backups");

    // Settings as an operator has them: a config file, and the off-site store from the
    // environment (`ORDERD__*`, as for orderd).
    let restored_root = fresh_root();
    let data = restored_root.path().join("data");
    let config = restored_root.path().join("orderd.toml");
    fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = {:?}\n\n[backup]\ndir = {:?}\n",
            path_str(&data),
            path_str(&backups)
        ),
    )
    .expect("write config");
    let offsite = server.root().join("offsite");
    let key_env = master_key_env(&server);
    let env = [
        ("ORDERD__BACKUP__OFFSITE", path_str(&offsite)),
        key_env.each()[0],
    ];

    let local = orderctl_with_env(
        &["backup", "restore", &id, "--config", path_str(&config)],
        &env,
    );
    assert_eq!(local.code, 1);
    assert!(local.stderr.contains("--from offsite"), "{}", local.stderr);
    assert!(!data.exists());

    let run = orderctl_with_env(
        &[
            "--output",
            "json",
            "backup",
            "restore",
            &id,
            "--config",
            path_str(&config),
            "--from",
            "offsite",
        ],
        &env,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary = run.json();
    assert_eq!(summary["id"], id.as_str());
    assert_eq!(summary["source"], "offsite");
    assert_eq!(summary["orders"], 10);
    assert_eq!(summary["shards"].as_array().expect("shards").len(), 2);
    assert_eq!(summary["replaced"], Value::Null);
    assert_eq!(summary["data_dir"], path_str(&data));
    assert!(
        !backups
            .join("scratch")
            .join(format!("restore-{id}"))
            .exists(),
        "the downloaded copy is removed"
    );

    let restored = start_restored(&server, restored_root.path());
    assert_orders_restored(&restored, &before);
}

// ---------------------------------------------------------------------------------------------
// Settings and change requests

/// A live setting that every test build has; 100000 a second never limits a test.
const RATE_SETTING: &str = "http.rate_limit_per_key_per_s";

/// The cells of `setting`'s row of `orderctl config` (SETTING VALUE TYPE BOUNDS RISK LIVE SOURCE
/// PENDING; no cell holds a space).
fn config_row(server: &Server, setting: &str) -> Vec<String> {
    let run = admin(server, &["config"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let header: Vec<&str> = run
        .stdout
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["SETTING", "VALUE", "TYPE", "BOUNDS", "RISK", "LIVE", "SOURCE", "PENDING"]
    );
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{setting} ")))
        .unwrap_or_else(|| panic!("no {setting} row:\n{}", run.stdout));
    let cells: Vec<String> = row.split_whitespace().map(str::to_string).collect();
    assert_eq!(cells.len(), 8, "{row}");
    cells
}

/// A second admin key's secret, created through `orderctl keys create`.
fn second_admin(server: &Server) -> String {
    // Four eyes: the approver must be another owner than the requester (the bootstrap admin),
    // with a key the requester's owner did not create, so a third person makes it.
    let create = |key: &str, owner: &str| {
        let created = as_key(
            server,
            key,
            &[
                "--output",
                "json",
                "keys",
                "create",
                "--name",
                &unique("admin"),
                "--role",
                "admin",
                "--owner",
                owner,
            ],
        );
        assert_eq!(created.code, 0, "{}", created.stderr);
        let json = created.json();
        assert_eq!(json["owner"], owner, "{json}");
        json["secret"].as_str().expect("secret").to_string()
    };
    let third = create(server.admin_key(), "security officer");
    create(&third, "admin b")
}

/// `changes request RATE_SETTING value` by the server's admin with a 1 s watch window: the id.
fn request_rate_change(server: &Server, value: &str) -> String {
    let run = admin(
        server,
        &[
            "--output",
            "json",
            "changes",
            "request",
            RATE_SETTING,
            value,
            "--reason",
            "e2e: raise the per-key rate limit",
            "--watch-window-s",
            "1",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.json()["id"].as_str().expect("id").to_string()
}

#[test]
fn orderctl_changes_request_approve_apply_rollback() {
    let _serial = serial();
    let server = Server::start(2);
    let admin_b = second_admin(&server);

    // Before: the value of the configuration.
    let before = config_row(&server, RATE_SETTING);
    assert_eq!(
        &before[2..],
        ["integer", "0..=1000000", "medium", "true", "config", "-"]
    );
    let old = before[1].clone();
    assert_ne!(old, "100000");

    // Requested by admin A: pending, old → new, the watch window asked for.
    let requested = admin(
        &server,
        &[
            "changes",
            "request",
            RATE_SETTING,
            "100000",
            "--reason",
            "e2e: raise the per-key rate limit",
            "--rollback-plan",
            "orderctl changes rollback",
            "--watch-window-s",
            "1",
        ],
    );
    assert_eq!(requested.code, 0, "{}", requested.stderr);
    let out = &requested.stdout;
    let id = field(out, "id").to_string();
    assert!(id.starts_with("chg_"), "{out}");
    assert_eq!(field(out, "status"), "pending");
    assert_eq!(field(out, "setting"), RATE_SETTING);
    assert_eq!(field(out, "change"), format!("{old} → 100000"));
    assert_eq!(field(out, "risk"), "medium");
    assert_eq!(field(out, "live"), "true");
    assert_eq!(field(out, "watch_window"), "1s");
    assert_eq!(field(out, "watch"), "-");
    assert!(field(out, "assessment").contains(RATE_SETTING), "{out}");
    assert!(
        requested.stderr.contains(&format!("changes approve {id}")),
        "{}",
        requested.stderr
    );

    // The requester may not approve their own change; nothing changed.
    let own = admin(&server, &["changes", "approve", &id]);
    assert_eq!(own.code, 1);
    assert!(own.stderr.contains("forbidden"), "{}", own.stderr);
    assert_eq!(own.stdout, "");
    assert_eq!(config_row(&server, RATE_SETTING)[1], old);

    // Admin B approves; the value is still the old one until apply.
    let approved = as_key(&server, &admin_b, &["changes", "approve", &id]);
    assert_eq!(approved.code, 0, "{}", approved.stderr);
    assert_eq!(field(&approved.stdout, "status"), "approved");
    assert_eq!(config_row(&server, RATE_SETTING)[1], old);
    // Approving twice is an invalid transition.
    let again = as_key(&server, &admin_b, &["changes", "approve", &id]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("invalid_transition"),
        "{}",
        again.stderr
    );

    // Applied and watched; with --wait orderctl returns once the 1 s window has closed (the
    // test sends far fewer requests than the bounds need to judge, so it closes).
    let applied = admin(&server, &["changes", "apply", &id, "--wait"]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert_eq!(field(&applied.stdout, "status"), "closed");
    assert!(
        field(&applied.stdout, "watch").starts_with("unjudged"),
        "{}",
        applied.stdout
    );
    assert!(
        applied.stderr.contains(&format!("{id} closed")),
        "{}",
        applied.stderr
    );

    // The new value, set by the change.
    let after = config_row(&server, RATE_SETTING);
    assert_eq!(
        (after[1].as_str(), after[6].as_str()),
        ("100000", id.as_str())
    );

    // Listed, and shown with every step and its actor.
    let list = admin(&server, &["changes", "list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let row: Vec<&str> = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{id} ")))
        .unwrap_or_else(|| panic!("{id} not listed:\n{}", list.stdout))
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..6],
        [
            id.as_str(),
            "closed",
            RATE_SETTING,
            &old,
            "100000",
            "medium"
        ]
    );
    let show = admin(&server, &["changes", "show", &id]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert_eq!(
        field(&show.stdout, "reason"),
        "e2e: raise the per-key rate limit"
    );
    assert_eq!(
        field(&show.stdout, "rollback_plan"),
        "orderctl changes rollback"
    );
    assert_eq!(field(&show.stdout, "watch_verdict"), "unjudged");
    assert!(show.stdout.contains("\nWINDOW "), "{}", show.stdout);
    let steps: Vec<&str> = show
        .stdout
        .split("\nSTEP ")
        .nth(1)
        .unwrap_or_else(|| panic!("no steps table:\n{}", show.stdout))
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().expect("step"))
        .collect();
    assert_eq!(steps, ["requested", "approved", "applied", "closed"]);

    // Rolled back: the old value again.
    let rolled = admin(&server, &["changes", "rollback", &id]);
    assert_eq!(rolled.code, 0, "{}", rolled.stderr);
    assert_eq!(field(&rolled.stdout, "status"), "rolled_back");
    assert!(
        rolled
            .stderr
            .contains(&format!("{RATE_SETTING} is {old} again")),
        "{}",
        rolled.stderr
    );
    assert_eq!(config_row(&server, RATE_SETTING)[1], old);
    // Only once.
    let twice = admin(&server, &["changes", "rollback", &id]);
    assert_eq!(twice.code, 1);
    assert!(
        twice.stderr.contains("invalid_transition"),
        "{}",
        twice.stderr
    );
}

#[test]
fn orderctl_changes_errors_and_json() {
    let _serial = serial();
    let server = Server::start(2);
    let api = server.client();
    let admin_b = second_admin(&server);

    // An unknown setting, a value out of bounds or of the wrong type: the server's 400, exit 1.
    for (setting, value) in [
        ("no.such.setting", "1"),
        (RATE_SETTING, "1000001"),
        (RATE_SETTING, "fast"),
    ] {
        let run = admin(
            &server,
            &["changes", "request", setting, value, "--reason", "x"],
        );
        assert_eq!(run.code, 1, "{setting} {value}");
        assert!(run.stderr.contains("invalid_request"), "{}", run.stderr);
        assert_eq!(run.stdout, "");
    }
    // Nothing was created.
    let (status, listed) = api.get_json("/v1/ops/changes");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["items"], json!([]));
    // Unknown ids are the server's 404.
    for action in ["show", "approve", "apply", "rollback"] {
        let run = admin(&server, &["changes", action, "chg_999999"]);
        assert_eq!(run.code, 1, "{action}");
        assert!(run.stderr.contains("not_found"), "{action}: {}", run.stderr);
    }
    // Usage errors never reach the server.
    assert_eq!(
        admin(&server, &["changes", "request", RATE_SETTING, "1"]).code,
        2
    );
    assert_eq!(orderctl(&["--server", server.base(), "config"]).code, 2);

    // --output json is the API's answer: the config, a created change, a change shown in each
    // state that does not move on its own, and the list.
    let config = admin(&server, &["--output", "json", "config"]);
    assert_eq!(config.code, 0, "{}", config.stderr);
    let (status, from_api) = api.get_json("/v1/ops/config");
    assert_eq!(status, 200);
    assert_eq!(config.json(), from_api);
    let setting = from_api["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|s| s["setting"] == RATE_SETTING)
        .unwrap_or_else(|| panic!("no {RATE_SETTING}: {from_api}"));
    assert_eq!(setting["change_id"], Value::Null);

    let id = request_rate_change(&server, "100000");
    let show_json = |id: &str| {
        let run = admin(&server, &["--output", "json", "changes", "show", id]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let (status, from_api) = api.get_json(&format!("/v1/ops/changes/{id}"));
        assert_eq!(status, 200, "{from_api}");
        assert_eq!(run.json(), from_api);
        from_api
    };
    let pending = show_json(&id);
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["value"], 100000);
    assert_eq!(pending["assessment"]["watch_window_s"], 1);
    let approved = as_key(
        &server,
        &admin_b,
        &["--output", "json", "changes", "approve", &id],
    );
    assert_eq!(approved.code, 0, "{}", approved.stderr);
    assert_eq!(approved.json(), show_json(&id));
    assert_eq!(approved.json()["status"], "approved");

    let applied = admin(&server, &["--output", "json", "changes", "apply", &id]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert_eq!(applied.json()["status"], "applied");
    assert_eq!(applied.json()["watch"]["verdict"], "watching");
    let rolled = admin(&server, &["--output", "json", "changes", "rollback", &id]);
    assert_eq!(rolled.code, 0, "{}", rolled.stderr);
    assert_eq!(rolled.json()["status"], "rolled_back");
    assert_eq!(rolled.json(), show_json(&id));

    let second = request_rate_change(&server, "200000");
    let list = admin(&server, &["--output", "json", "changes", "list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let (status, from_api) = api.get_json("/v1/ops/changes?limit=1000");
    assert_eq!(status, 200);
    assert_eq!(list.json()["items"], from_api["items"]);
    let ids: Vec<&str> = from_api["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [second.as_str(), id.as_str()], "newest first");
    let one = admin(
        &server,
        &["--output", "json", "changes", "list", "--limit", "1"],
    )
    .json();
    assert_eq!(one["items"], json!([from_api["items"][0]]));
}

#[test]
fn orderctl_changes_apply_wait_exits_1_when_the_server_rolls_the_change_back() {
    let _serial = serial();
    // The watch judges every 100 ms, from 20 requests on.
    let server = Server::start_with_env(
        2,
        &[
            ("ORDERD__CHANGES__WATCH_CHECK_INTERVAL_MS", "100"),
            ("ORDERD__CHANGES__WATCH_MIN_REQUESTS", "20"),
        ],
    );
    let api = server.client();
    api.adjust_stock("CTL-CHG-SKU", 10);
    let admin_b = second_admin(&server);

    // Steady traffic outside /v1/ops, before and after the change, for the watch to compare.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic: Vec<_> = (0..4)
        .map(|_| {
            let client = api.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(client.get("/v1/stock/CTL-CHG-SKU").status, 200);
                    thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(3));

    // A change that makes every request 300 ms slower (test builds only).
    let delay = "test.added_latency_ms";
    let requested = admin(
        &server,
        &[
            "--output",
            "json",
            "changes",
            "request",
            delay,
            "300",
            "--reason",
            "e2e: prove that the watch rolls back",
            "--watch-window-s",
            "30",
        ],
    );
    assert_eq!(requested.code, 0, "{}", requested.stderr);
    let id = requested.json()["id"].as_str().expect("id").to_string();
    let approved = as_key(&server, &admin_b, &["changes", "approve", &id]);
    assert_eq!(approved.code, 0, "{}", approved.stderr);
    let applied = admin(
        &server,
        &["changes", "apply", &id, "--wait", "--wait-timeout-s", "30"],
    );
    stop.store(true, Ordering::Relaxed);
    for thread in traffic {
        thread.join().expect("traffic");
    }

    // Exit 1, the change as the server left it, and why on stderr.
    assert_eq!(applied.code, 1, "{}", applied.stderr);
    assert_eq!(field(&applied.stdout, "status"), "auto_rolled_back");
    assert!(
        field(&applied.stdout, "watch").starts_with("breached"),
        "{}",
        applied.stdout
    );
    let incident = field(&applied.stdout, "incident_id").to_string();
    assert!(incident.starts_with("inc_"), "{}", applied.stdout);
    assert!(
        applied.stderr.contains("rolled back automatically")
            && applied
                .stderr
                .contains(&format!("{delay} is 0 again; see incident {incident}")),
        "{}",
        applied.stderr
    );

    // The old value is back; the last step is the server's.
    assert_eq!(config_row(&server, delay)[1], "0");
    let show = admin(&server, &["changes", "show", &id]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    let last: Vec<&str> = show
        .stdout
        .lines()
        .last()
        .expect("a step")
        .split_whitespace()
        .collect();
    assert_eq!(
        &last[..2],
        ["auto_rolled_back", "system"],
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.lines().any(|l| l.starts_with("observed ")),
        "{}",
        show.stdout
    );
}

/// Issue 17, item 11: a key created before a backup and revoked after it stays revoked when the
/// backup is restored, from the local backup directory and from the off-site copy alone. Fails
/// on the code before: the restored `keys.json` brought the key back.
#[test]
fn orderctl_restore_keeps_keys_revoked_after_the_backup_revoked() {
    let _serial = serial();
    let mut server = backup_server();
    let api = server.client();
    let (status, key) = api.post_json(
        "/v1/keys",
        &json!({"name": unique("revoked-later"), "role": "frontend"}),
        None,
    );
    assert_eq!(status, 201, "{key}");
    let key_id = key["id"].as_str().expect("id").to_string();
    let secret = key["secret"].as_str().expect("secret").to_string();
    assert_ne!(api.with_key(&secret).get("/v1/orders").status, 401);
    let backup = create_backup(&server);
    let id = backup["id"].as_str().expect("id").to_string();
    wait_offsite_copied(&server, &id);
    let revoked = api.call("DELETE", &format!("/v1/keys/{key_id}"), None, None);
    assert_eq!(revoked.status, 204);
    assert_eq!(api.with_key(&secret).get("/v1/orders").status, 401);
    // The worker merges the revocation off-site in the background.
    let offsite = server.root().join("offsite");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !offsite.join("revocations").is_file() {
        assert!(Instant::now() < deadline, "no revocation list off-site");
        thread::sleep(Duration::from_millis(50));
    }
    server.terminate();
    let backups = server.root().join("backups");
    let key_env = master_key_env(&server);
    let restore = |data: &Path, extra: &[&str]| {
        let mut args = vec![
            "backup",
            "restore",
            &id,
            "--data-dir",
            path_str(data),
            "--backup-dir",
            path_str(&backups),
            "--offsite",
            path_str(&offsite),
        ];
        args.extend_from_slice(extra);
        let run = orderctl_with_env(&args, &key_env.each());
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stderr.contains("re-applied 1 key revocation") && run.stderr.contains(&key_id),
            "{}",
            run.stderr
        );
    };

    // From the local backup directory.
    let local_root = fresh_root();
    restore(&local_root.path().join("data"), &[]);
    let mut restored = start_restored(&server, local_root.path());
    assert_eq!(
        restored.client().with_key(&secret).get("/v1/orders").status,
        401
    );
    assert_ne!(
        restored.client().get("/v1/orders").status,
        401,
        "admin key works"
    );
    restored.terminate();

    // From the off-site copy alone (the local backup directory, and its list, lost).
    fs::remove_dir_all(&backups).expect("lose the local backups");
    let offsite_root = fresh_root();
    restore(&offsite_root.path().join("data"), &["--from", "offsite"]);
    let restored = start_restored(&server, offsite_root.path());
    assert_eq!(
        restored.client().with_key(&secret).get("/v1/orders").status,
        401
    );
}
