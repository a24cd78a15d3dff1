//! Change management end to end (API.md "Change management"): the registry of live settings,
//! request → approval by another admin → apply → watch → closed or rolled back (by hand, or by
//! the server itself when latency gets worse), every step persisted across restarts (also in
//! the middle of a watch window) and written to the audit chain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{code, serial, unique, Client, Server};

/// A new key of `role`: its id and a client using it.
fn key_of(admin: &Client, role: &str) -> (String, Client) {
    let (status, key) = admin.post_json(
        "/v1/keys",
        // Each key a person of its own (four eyes compares owners).
        &json!({"name": unique(role), "role": role, "owner": unique(role)}),
        None,
    );
    assert_eq!(status, 201, "create a {role} key: {key}");
    (
        key["id"].as_str().expect("id").to_string(),
        admin.with_key(key["secret"].as_str().expect("secret")),
    )
}

/// The registry entry of `setting`.
fn setting(client: &Client, setting: &str) -> Value {
    let (status, config) = client.get_json("/v1/ops/config");
    assert_eq!(status, 200, "{config}");
    config["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|item| item["setting"] == setting)
        .unwrap_or_else(|| panic!("{setting} not in GET /v1/ops/config: {config}"))
        .clone()
}

fn request(client: &Client, body: Value) -> Value {
    let (status, change) = client.post_json("/v1/ops/changes", &body, None);
    assert_eq!(status, 201, "request {body}: {change}");
    assert_eq!(change["status"], "pending", "{change}");
    change
}

fn step(client: &Client, id: &str, action: &str) -> (u16, Value) {
    client.post_json(&format!("/v1/ops/changes/{id}/{action}"), &json!({}), None)
}

fn get_change(client: &Client, id: &str) -> Value {
    let (status, change) = client.get_json(&format!("/v1/ops/changes/{id}"));
    assert_eq!(status, 200, "{change}");
    change
}

/// Polls the change until its status is `want`, for at most `within`.
fn wait_status(client: &Client, id: &str, want: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let change = get_change(client, id);
        if change["status"] == want {
            return change;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not {want} within {within:?}: {change:#}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn steps(change: &Value) -> Vec<(String, String)> {
    change["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Audit entries of `action` on `target`, with their actors.
fn audited(admin: &Client, action: &str, target: &str) -> Vec<String> {
    let (status, page) = admin.get_json("/v1/audit?limit=1000");
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == action && e["target"] == target)
        .map(|e| e["actor"].as_str().unwrap().to_string())
        .collect()
}

/// [`audited`], waiting up to 10 s for at least one entry: the server's own steps are written
/// to the audit chain just after the change record that shows them.
fn audited_eventually(admin: &Client, action: &str, target: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let actors = audited(admin, action, target);
        if !actors.is_empty() || Instant::now() > deadline {
            return actors;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// How many of `n` quick reads of a stock record the rate limiter refused.
/// An admin who may approve the bootstrap admin's changes: another owner, with a key made by a
/// third person (a key the bootstrap admin made itself would not do: four eyes).
fn independent_admin(bootstrap: &Client) -> Client {
    let (_, third) = key_of(bootstrap, "admin");
    key_of(&third, "admin").1
}

fn refused_of(client: &Client, n: usize) -> usize {
    (0..n)
        .filter(|_| client.get("/v1/stock/CHG-SKU").status == 429)
        .count()
}

#[test]
fn the_whole_flow_with_four_eyes_and_a_manual_rollback() {
    let _serial = serial();
    let server = Server::start_with_env(2, &[("ORDERD__CHANGES__WATCH_CHECK_INTERVAL_MS", "100")]);
    let admin_a = server.client();
    admin_a.adjust_stock("CHG-SKU", 10);
    let (admin_b_id, admin_b) = key_of(&admin_a, "admin");
    let (operator_id, operator) = key_of(&admin_a, "operator");
    let (_, auditor) = key_of(&admin_a, "auditor");
    let (_, frontend) = key_of(&admin_a, "frontend");

    let rate = "http.rate_limit_per_key_per_s";
    let before = setting(&operator, rate);
    assert_eq!(before["value"], 0, "{before}");
    assert_eq!(before["type"], "integer");
    assert_eq!(
        (before["min"].clone(), before["max"].clone()),
        (json!(0), json!(1_000_000))
    );
    assert_eq!(before["risk"], "medium");
    assert_eq!(before["live"], true);
    assert_eq!(before["change_id"], Value::Null);
    assert_eq!(refused_of(&frontend, 20), 0, "no limit yet");

    // Requested by an operator, with the automatic assessment.
    let change = request(
        &operator,
        json!({"setting": rate, "value": 3, "reason": "a scraper hammers us",
               "rollback_plan": "set it back to 0", "watch_window_s": 600}),
    );
    let id = change["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("chg_"), "{change}");
    assert_eq!(change["old_value"], 0);
    assert_eq!(change["value"], 3);
    assert_eq!(change["risk"], "medium");
    assert_eq!(change["requested_by"], operator_id.as_str());
    assert_eq!(change["assessment"]["summary"], format!("{rate}: 0 → 3"));
    assert_eq!(change["assessment"]["restart_required"], false);
    assert_eq!(change["assessment"]["watch_window_s"], 600);
    assert_eq!(
        setting(&operator, rate)["value"],
        0,
        "a request changes nothing"
    );

    // Apply before approval: 409. Approval by anyone but an admin: 403.
    let (status, problem) = step(&operator, &id, "apply");
    assert_eq!(
        (status, code(&problem)),
        (409, "invalid_transition"),
        "{problem}"
    );
    let (status, problem) = step(&operator, &id, "approve");
    assert_eq!((status, code(&problem)), (403, "forbidden"), "{problem}");
    let (status, problem) = step(&auditor, &id, "approve");
    assert_eq!((status, code(&problem)), (403, "forbidden"), "{problem}");

    // Four eyes: an admin may not approve a change of its own.
    let own = request(
        &admin_b,
        json!({"setting": "inspection.interval_s", "value": 3600, "reason": "hourly"}),
    );
    let own_id = own["id"].as_str().unwrap();
    let (status, problem) = step(&admin_b, own_id, "approve");
    assert_eq!((status, code(&problem)), (403, "forbidden"), "{problem}");
    assert_eq!(get_change(&admin_b, own_id)["status"], "pending");
    let (status, approved) = step(&admin_a, own_id, "approve");
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["status"], "approved");

    let (status, approved) = step(&admin_b, &id, "approve");
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["status"], "approved");
    let (status, problem) = step(&admin_a, &id, "approve");
    assert_eq!(
        (status, code(&problem)),
        (409, "invalid_transition"),
        "approved once: {problem}"
    );

    // Applied live: the limit holds from the next request on.
    let (status, applied) = step(&operator, &id, "apply");
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["status"], "applied");
    assert_eq!(applied["watch"]["verdict"], "watching", "{applied}");
    assert!(applied["watch"]["until"].is_string(), "{applied}");
    let now = setting(&operator, rate);
    assert_eq!(
        (now["value"].clone(), now["change_id"].clone()),
        (json!(3), json!(id))
    );
    let refused = refused_of(&frontend, 20);
    assert!(refused >= 10, "3 per second: {refused} of 20 refused");

    // Rolled back by hand: the old value, from the configuration again.
    let (status, rolled) = step(&operator, &id, "rollback");
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["status"], "rolled_back");
    let now = setting(&operator, rate);
    assert_eq!(
        (now["value"].clone(), now["change_id"].clone()),
        (json!(0), Value::Null)
    );
    assert_eq!(refused_of(&frontend, 20), 0, "no limit again");
    let (status, problem) = step(&operator, &id, "rollback");
    assert_eq!(
        (status, code(&problem)),
        (409, "invalid_transition"),
        "{problem}"
    );

    // The history: every step with its actor and time; the auditor may read it.
    let history = get_change(&auditor, &id);
    assert_eq!(
        steps(&history),
        vec![
            ("requested".to_string(), operator_id.clone()),
            ("approved".to_string(), admin_b_id.clone()),
            ("applied".to_string(), operator_id.clone()),
            ("rolled_back".to_string(), operator_id.clone()),
        ]
    );
    for s in history["steps"].as_array().unwrap() {
        chrono::DateTime::parse_from_rfc3339(s["at"].as_str().unwrap()).expect("RFC 3339");
    }
    let (status, page) = auditor.get_json("/v1/ops/changes");
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![own_id, id.as_str()], "newest first");
    let (status, page) = auditor.get_json("/v1/ops/changes?limit=1");
    assert_eq!(status, 200);
    assert_eq!(page["next"], own_id, "{page}");
    let (status, problem) = auditor.post_json(
        "/v1/ops/changes",
        &json!({"setting": rate, "value": 1, "reason": "x"}),
        None,
    );
    assert_eq!((status, code(&problem)), (403, "forbidden"));

    // Every step is in the audit chain, and the chain holds.
    assert_eq!(
        audited(&admin_a, "change.request", &id),
        vec![operator_id.clone()]
    );
    assert_eq!(audited(&admin_a, "change.approve", &id), vec![admin_b_id]);
    assert_eq!(
        audited(&admin_a, "change.apply", &id),
        vec![operator_id.clone()]
    );
    assert_eq!(audited(&admin_a, "change.rollback", &id), vec![operator_id]);
    let (status, verify) = admin_a.get_json("/v1/audit/verify");
    assert_eq!(status, 200, "{verify}");
    assert_eq!(verify["ok"], true, "{verify}");
}

#[test]
fn bad_requests_are_400_and_unknown_changes_404() {
    let _serial = serial();
    let server = Server::start(1);
    let admin = server.client();
    let cases = [
        (
            json!({"setting": "no.such.setting", "value": 1, "reason": "x"}),
            "setting",
        ),
        (
            json!({"setting": "storage.data_dir", "value": "/tmp", "reason": "x"}),
            "setting",
        ),
        (
            json!({"setting": "http.rate_limit_per_key_per_s", "value": -1, "reason": "x"}),
            "value",
        ),
        (
            json!({"setting": "http.rate_limit_per_key_per_s", "value": 1_000_001, "reason": "x"}),
            "value",
        ),
        (
            json!({"setting": "http.rate_limit_per_key_per_s", "value": "fast", "reason": "x"}),
            "value",
        ),
        (
            json!({"setting": "http.rate_limit_per_key_per_s", "value": 2.5, "reason": "x"}),
            "value",
        ),
        (
            json!({"setting": "http.rate_limit_per_key_per_s", "value": 0, "reason": "x"}),
            "value",
        ),
        // Within its own bounds, but above the fail threshold (95): the whole config refuses.
        (
            json!({"setting": "inspection.cpu_warn_percent", "value": 99, "reason": "x"}),
            "value",
        ),
        (
            json!({"setting": "log.level", "value": "=[", "reason": "x"}),
            "value",
        ),
        (
            json!({"setting": "log.level", "value": 3, "reason": "x"}),
            "value",
        ),
        (
            json!({"setting": "http.rate_limit_per_key_per_s", "value": 5, "reason": " "}),
            "reason",
        ),
        (
            json!({"setting": "http.rate_limit_per_key_per_s", "value": 5, "reason": "x".repeat(1001)}),
            "reason",
        ),
        (
            json!({"setting": "http.rate_limit_per_key_per_s", "value": 5, "reason": "x", "rollback_plan": "y".repeat(1001)}),
            "rollback_plan",
        ),
        (
            json!({"setting": "http.rate_limit_per_key_per_s", "value": 5, "reason": "x", "watch_window_s": 0}),
            "watch_window_s",
        ),
        (
            json!({"setting": "http.rate_limit_per_key_per_s", "value": 5, "reason": "x", "watch_window_s": 3601}),
            "watch_window_s",
        ),
    ];
    for (body, param) in cases {
        let (status, problem) = admin.post_json("/v1/ops/changes", &body, None);
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(code(&problem), "invalid_request", "{problem}");
        assert_eq!(problem["param"], param, "{body}: {problem}");
    }
    for body in [
        json!({"setting": "http.rate_limit_per_key_per_s", "value": 5}),
        json!({"setting": "http.rate_limit_per_key_per_s", "value": 5, "reason": "x", "approved": true}),
        json!([1, 2]),
    ] {
        let (status, problem) = admin.post_json("/v1/ops/changes", &body, None);
        assert_eq!(
            (status, code(&problem)),
            (400, "invalid_request"),
            "{body}: {problem}"
        );
    }
    let (status, page) = admin.get_json("/v1/ops/changes");
    assert_eq!(status, 200);
    assert_eq!(page["items"], json!([]), "nothing was created: {page}");
    assert_eq!(setting(&admin, "http.rate_limit_per_key_per_s")["value"], 0);

    for id in ["chg_000001", "chg_999999", "x", "inc_0000000000000001"] {
        let (status, problem) = admin.get_json(&format!("/v1/ops/changes/{id}"));
        assert_eq!(
            (status, code(&problem)),
            (404, "not_found"),
            "{id}: {problem}"
        );
        for action in ["approve", "apply", "rollback"] {
            let (status, problem) = step(&admin, id, action);
            assert_eq!(
                (status, code(&problem)),
                (404, "not_found"),
                "{action} {id}: {problem}"
            );
        }
    }
}

#[test]
fn a_change_that_makes_latency_worse_is_rolled_back_by_itself() {
    let _serial = serial();
    let server = Server::start_with_env(
        2,
        &[
            ("ORDERD__CHANGES__WATCH_CHECK_INTERVAL_MS", "100"),
            ("ORDERD__CHANGES__WATCH_MIN_REQUESTS", "20"),
        ],
    );
    let admin_a = server.client();
    admin_a.adjust_stock("CHG-SKU", 10);
    let (_, admin_b) = key_of(&admin_a, "admin");
    let (_, frontend) = key_of(&admin_a, "frontend");

    // Steady traffic from four clients, before and after the change.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic: Vec<_> = (0..4)
        .map(|_| {
            let client = frontend.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let reply = client.get("/v1/stock/CHG-SKU");
                    assert_eq!(reply.status, 200);
                    thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(3));

    let delay = "test.added_latency_ms";
    assert_eq!(setting(&admin_a, delay)["value"], 0);
    // Requested by B (made by A): A, another owner whose key B's owner did not create, approves.
    let change = request(
        &admin_b,
        json!({"setting": delay, "value": 300, "reason": "prove the watch works", "watch_window_s": 60}),
    );
    let id = change["id"].as_str().unwrap().to_string();
    assert_eq!(change["risk"], "high");
    assert_eq!(step(&admin_a, &id, "approve").0, 200);
    let applied_at = Instant::now();
    let (status, applied) = step(&admin_a, &id, "apply");
    assert_eq!(status, 200, "{applied}");
    let baseline = applied["watch"]["baseline"].clone();
    assert!(baseline["requests"].as_u64().unwrap() >= 20, "{baseline}");
    assert!(baseline["p99_ms"].as_f64().unwrap() < 100.0, "{baseline}");

    let rolled = wait_status(&admin_a, &id, "auto_rolled_back", Duration::from_secs(30));
    let took = applied_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    for thread in traffic {
        thread.join().expect("traffic");
    }
    assert!(
        took < Duration::from_secs(60),
        "within its window: {took:?}"
    );
    // For docs/PERFORMANCE.md ("Change management"): run with --no-capture to see it.
    println!(
        "auto rollback seen {} ms after apply (polled every 100 ms)",
        took.as_millis()
    );
    assert_eq!(rolled["watch"]["verdict"], "breached", "{rolled:#}");
    let observed = &rolled["watch"]["observed"];
    assert!(observed["p99_ms"].as_f64().unwrap() >= 300.0, "{observed}");
    let last = rolled["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["step"].as_str(), last["actor"].as_str()),
        (Some("auto_rolled_back"), Some("system"))
    );
    assert!(last["detail"].as_str().unwrap().contains("p99"), "{last}");

    // The old value is back, from the configuration; requests are fast again.
    let now = setting(&admin_a, delay);
    assert_eq!(
        (now["value"].clone(), now["change_id"].clone()),
        (json!(0), Value::Null)
    );
    let started = Instant::now();
    assert_eq!(frontend.get("/v1/stock/CHG-SKU").status, 200);
    assert!(started.elapsed() < Duration::from_millis(300), "delay gone");

    // An incident, and the audit chain.
    let incident_id = rolled["incident_id"]
        .as_str()
        .expect("incident id")
        .to_string();
    let (status, incidents) = admin_a.get_json("/v1/ops/incidents");
    assert_eq!(status, 200);
    let incident = incidents
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == incident_id.as_str())
        .unwrap_or_else(|| panic!("{incident_id} not in {incidents}"))
        .clone();
    assert_eq!(incident["component"], format!("changes/{delay}"));
    assert_eq!(incident["kind"], "auto_rolled_back");
    // Counted for the OrderdChangeAutoRolledBack alert.
    let metrics = admin_a.get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap_or_default().to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with("orderd_incidents_total{")
                && l.contains("component=\"changes\"")
                && l.contains("kind=\"auto_rolled_back\"")
                && l.ends_with(" 1")),
        "{text}"
    );
    assert!(
        incident["detail"].as_str().unwrap().contains(&id),
        "{incident}"
    );
    assert_eq!(
        audited_eventually(&admin_a, "change.auto_rollback", &id),
        vec!["system".to_string()]
    );
    let (_, verify) = admin_a.get_json("/v1/audit/verify");
    assert_eq!(verify["ok"], true, "{verify}");
}

#[test]
fn steps_and_values_survive_restarts_and_a_watch_resumes() {
    let _serial = serial();
    let mut server =
        Server::start_with_env(2, &[("ORDERD__CHANGES__WATCH_CHECK_INTERVAL_MS", "100")]);
    let admin_a = server.client();
    let admin_b = independent_admin(&admin_a);
    let applied = |admin_a: &Client, body: Value| -> String {
        let change = request(admin_a, body);
        let id = change["id"].as_str().unwrap().to_string();
        assert_eq!(step(&admin_b, &id, "approve").0, 200);
        let (status, applied) = step(admin_a, &id, "apply");
        assert_eq!(status, 200, "{applied}");
        id
    };
    // A live setting in its watch window (long enough that the restart below falls inside it
    // on a loaded machine too), and one that needs a restart.
    let batch = applied(
        &admin_a,
        json!({"setting": "engine.batch_events_max", "value": 64, "reason": "smaller batches", "watch_window_s": 15}),
    );
    let body_limit = applied(
        &admin_a,
        json!({"setting": "http.body_limit_bytes", "value": 4096, "reason": "tighter bodies", "watch_window_s": 2}),
    );
    let waiting = get_change(&admin_a, &body_limit);
    assert_eq!(
        waiting["watch"]["verdict"], "awaiting_restart",
        "{waiting:#}"
    );
    let limit = setting(&admin_a, "http.body_limit_bytes");
    assert_eq!(limit["value"], 65536, "not before a restart");
    assert_eq!(limit["pending_value"], 4096);
    assert_eq!(limit["live"], false);
    // A 5,000-byte body is read (and refused for its too-long name) under the 64 KiB limit.
    let big = json!({"name": "x".repeat(5000), "email": "big@example.com"});
    let (status, problem) = admin_a.post_json("/v1/customers", &big, None);
    assert_eq!(
        (status, code(&problem)),
        (400, "invalid_request"),
        "{problem}"
    );

    // A crash in the middle of the watch window.
    server.restart();
    let admin_a = server.client();
    let resumed = get_change(&admin_a, &batch);
    assert_eq!(resumed["status"], "applied", "{resumed:#}");
    assert_eq!(resumed["watch"]["verdict"], "watching");
    assert!(
        steps(&resumed).contains(&("watch_resumed".to_string(), "system".to_string())),
        "{resumed:#}"
    );
    let now = setting(&admin_a, "engine.batch_events_max");
    assert_eq!(
        (now["value"].clone(), now["change_id"].clone()),
        (json!(64), json!(batch))
    );
    // The restart put the other change into effect, and started its watch.
    let limit = setting(&admin_a, "http.body_limit_bytes");
    assert_eq!(
        (limit["value"].clone(), limit["pending_value"].clone()),
        (json!(4096), Value::Null)
    );
    assert_eq!(limit["change_id"], body_limit.as_str());
    let (status, problem) = admin_a.post_json("/v1/customers", &big, None);
    assert_eq!(
        (status, code(&problem)),
        (413, "payload_too_large"),
        "{problem}"
    );
    let started = get_change(&admin_a, &body_limit);
    assert!(
        steps(&started).contains(&("watch_started".to_string(), "system".to_string())),
        "{started:#}"
    );
    assert_eq!(
        audited_eventually(&admin_a, "change.watch_start", &body_limit),
        vec!["system".to_string()]
    );

    // Both watches end within bounds: closed, the values stay.
    for id in [&batch, &body_limit] {
        let closed = wait_status(&admin_a, id, "closed", Duration::from_secs(40));
        // No traffic in the window: closed, but not judged.
        assert_eq!(closed["watch"]["verdict"], "unjudged", "{closed:#}");
        assert_eq!(steps(&closed).last().unwrap().0, "closed");
    }
    assert_eq!(
        audited_eventually(&admin_a, "change.watch_resume", &batch),
        vec!["system".to_string()]
    );
    assert_eq!(
        audited_eventually(&admin_a, "change.close", &batch),
        vec!["system".to_string()]
    );

    // And after one more restart, closed changes and their values are still there.
    server.restart();
    let admin_a = server.client();
    assert_eq!(get_change(&admin_a, &batch)["status"], "closed");
    assert_eq!(setting(&admin_a, "engine.batch_events_max")["value"], 64);
    // A closed change can still be rolled back by hand.
    let (status, rolled) = step(&admin_a, &batch, "rollback");
    assert_eq!(status, 200, "{rolled}");
    let now = setting(&admin_a, "engine.batch_events_max");
    assert_eq!(
        (now["value"].clone(), now["change_id"].clone()),
        (json!(4096), Value::Null)
    );
}

#[test]
fn live_values_reach_the_log_filter_and_the_engine_without_a_restart() {
    let _serial = serial();
    let mut server =
        Server::start_with_env(2, &[("ORDERD__CHANGES__WATCH_CHECK_INTERVAL_MS", "100")]);
    let admin_a = server.client();
    let admin_b = independent_admin(&admin_a);
    let apply = |setting: &str, value: Value| {
        let change = request(
            &admin_a,
            json!({"setting": setting, "value": value, "reason": "e2e", "watch_window_s": 60}),
        );
        let id = change["id"].as_str().unwrap().to_string();
        assert_eq!(step(&admin_b, &id, "approve").0, 200);
        let (status, applied) = step(&admin_a, &id, "apply");
        assert_eq!(status, 200, "{applied}");
    };
    // The inspection's listener check opens and closes a TCP connection, which orderd logs at
    // debug level ("TCP connection closed.").
    let inspect = || assert_eq!(admin_a.get_json("/v1/ops/inspection").0, 200);
    inspect();
    assert!(
        !server.log().contains("TCP connection closed."),
        "info level"
    );
    apply("log.level", json!("info,orderd_gateway=debug"));
    inspect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("TCP connection closed.") {
        assert!(Instant::now() < deadline, "no debug line after the change");
        thread::sleep(Duration::from_millis(50));
    }

    // The supervisor's restart intensity, live: with 0 restarts allowed, one panic leaves the
    // shard failed (with the default 5 it would be rebuilt).
    apply("supervisor.max_restarts", json!(0));
    let poison_and_wait_failed = |admin: &Client, poison: &str| {
        let (status, problem) = admin.post_json(
            &format!("/v1/stock/{poison}/adjustments"),
            &json!({"delta": 1, "reason": "x"}),
            None,
        );
        assert_eq!(status, 503, "{problem}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, shards) = admin.get_json("/v1/ops/shards");
            if shards
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["state"] == "failed")
            {
                break;
            }
            assert!(Instant::now() < deadline, "no shard failed: {shards}");
            thread::sleep(Duration::from_millis(50));
        }
    };
    poison_and_wait_failed(&admin_a, "FAILPOINT-PANIC-CHG");

    // After a restart the engine runs with the value the change left, not the configured one
    // (it opens before the stored values are read, and gets them pushed).
    server.restart();
    let admin_a = server.client();
    let (_, shards) = admin_a.get_json("/v1/ops/shards");
    assert!(
        shards
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "running"),
        "{shards}"
    );
    poison_and_wait_failed(&admin_a, "FAILPOINT-PANIC-CHG2");
    // And the log filter too: debug lines from this process.
    inspect_with(&admin_a);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        let this_process = log
            .rsplit("===== e2e: starting orderd")
            .next()
            .unwrap_or("");
        if this_process.contains("TCP connection closed.") {
            break;
        }
        assert!(Instant::now() < deadline, "no debug line after the restart");
        thread::sleep(Duration::from_millis(50));
    }
}

fn inspect_with(admin: &Client) {
    assert_eq!(admin.get_json("/v1/ops/inspection").0, 200);
}

#[test]
fn four_eyes_are_two_owners_and_an_owner_cannot_mint_the_second_pair() {
    let _serial = serial();
    let server = Server::start(1);
    let root = server.client();
    let create = |by: &Client, owner: Option<&str>| {
        let mut body = json!({"name": unique("admin"), "role": "admin"});
        if let Some(owner) = owner {
            body["owner"] = json!(owner);
        }
        let (status, key) = by.post_json("/v1/keys", &body, None);
        assert_eq!(status, 201, "{key}");
        (key.clone(), by.with_key(key["secret"].as_str().unwrap()))
    };
    // Ann holds a key (made by the bootstrap admin); she mints herself another admin key, with
    // another name as owner, and a third one left at her own name.
    let (ann_key, ann) = create(&root, Some("ann"));
    assert_eq!(ann_key["owner"], "ann");
    assert_eq!(ann_key["created_by"], root_key_id(&root));
    let (alias_key, alias) = create(&ann, Some("not ann"));
    assert_eq!(alias_key["created_by"], ann_key["id"]);
    let (same_key, same) = create(&ann, None);
    assert_eq!(same_key["owner"], "ann", "the creator's owner by default");
    // Bob is another person, made by the bootstrap admin.
    let (_, bob) = create(&root, Some("bob"));
    let (_, listed) = root.get_json("/v1/keys");
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == alias_key["id"]
                && k["owner"] == "not ann"
                && k["created_by"] == ann_key["id"]),
        "{listed}"
    );

    let (status, change) = ann.post_json(
        "/v1/ops/changes",
        &json!({"setting": "inspection.interval_s", "value": 7200, "reason": "less often"}),
        None,
    );
    assert_eq!(status, 201, "{change}");
    let id = change["id"].as_str().unwrap().to_string();
    let approve = |client: &Client| {
        client.post_json(&format!("/v1/ops/changes/{id}/approve"), &json!({}), None)
    };
    for (who, client) in [("ann's second key", &same), ("a key ann minted", &alias)] {
        let (status, problem) = approve(client);
        assert_eq!(
            (status, problem["code"].as_str()),
            (403, Some("forbidden")),
            "{who}: {problem}"
        );
    }
    let (status, approved) = approve(&bob);
    assert_eq!(
        (status, approved["status"].as_str()),
        (200, Some("approved")),
        "{approved}"
    );
}

/// The id of the key `client` uses.
fn root_key_id(client: &Client) -> Value {
    let (_, keys) = client.get_json("/v1/keys");
    keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["owner"] == "bootstrap")
        .map(|k| k["id"].clone())
        .expect("the bootstrap admin key")
}
