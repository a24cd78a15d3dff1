//! `orderctl`, the on-call CLI, run as a real process against a real server: tables on stdout,
//! messages on stderr, `--output json` equal to the API's answer, the exit codes (0 ok, 1 check
//! failed or error answer, 2 usage or no key, 3 unreachable), and the effects of its commands
//! seen through the API.

use crate::support::{free_port, serial, unique, Server};
use serde_json::Value;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// The `orderd` binary of this test target; Cargo puts `orderctl` beside it.
const ORDERD: &str = env!("CARGO_BIN_EXE_orderd");

/// One finished `orderctl` run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
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
fn orderctl(args: &[&str]) -> Run {
    let output = Command::new(orderctl_path())
        .args(args)
        .env_remove("ORDERD_KEY")
        .env_remove("ORDERD_SERVER")
        .output()
        .expect("run orderctl");
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

/// Runs `orderctl --server BASE --key KEY args...`.
fn as_key(server: &Server, key: &str, args: &[&str]) -> Run {
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
    let server = Server::start(2);
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
    for check in orderd_gateway::inspection::CHECK_NAMES {
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

    let health = admin(&server, &["health"]);
    assert_eq!(health.code, 1, "not ready is a failed check");
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
