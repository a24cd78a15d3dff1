//! Lifting a quarantine, through the real binary built with failpoints: a command that made a
//! shard panic twice is listed (`GET /v1/ops/quarantine`, `orderctl quarantine list`); lifted
//! while its bug is still there, it runs again and is quarantined anew only after two more
//! panics; after a restart with the failpoints disarmed (`ORDERD_FAILPOINTS=off`, standing for
//! the fixed build) it is still refused until an operator lifts it with orderctl, and then it
//! is applied. Every lift is in the audit trail and is an incident; a second lift is 404.

use crate::orderctl::as_key;
use crate::supervisor::{adjust, incidents_of, sku_on, wait_shard};
use crate::support::{serial, Client, Server};
use serde_json::{json, Value};
use std::time::Duration;

/// A new key of `role`: its id and a client using it.
fn key_of(admin: &Client, role: &str) -> (String, String, Client) {
    let (status, key) = admin.post_json(
        "/v1/keys",
        &json!({"name": format!("quarantine-{role}"), "role": role}),
        None,
    );
    assert_eq!(status, 201, "{key}");
    let id = key["id"].as_str().expect("id").to_string();
    let secret = key["secret"].as_str().expect("secret").to_string();
    let client = admin.with_key(&secret);
    (id, secret, client)
}

/// The quarantined commands, as one page (there are few).
fn listed(client: &Client) -> Vec<Value> {
    let (status, page) = client.get_json("/v1/ops/quarantine");
    assert_eq!(status, 200, "GET /v1/ops/quarantine: {page}");
    assert!(page["next"].is_null(), "{page}");
    page["items"].as_array().expect("items").clone()
}

/// Panics shard 1 with `sku`'s adjustment until it is refused as quarantined; `restarts` is
/// the shard's restart count before. Returns the count after.
fn panic_until_quarantined(client: &Client, sku: &str, mut restarts: u64) -> u64 {
    for _ in 0..2 {
        let (status, problem) = adjust(client, sku, 5);
        assert_eq!(status, 503, "the command runs and panics: {problem}");
        restarts += 1;
        wait_shard(client, 1, "running", restarts, Duration::from_secs(5));
    }
    let (status, problem) = adjust(client, sku, 5);
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "quarantined", "{problem}");
    restarts
}

#[test]
fn an_operator_lists_and_lifts_a_quarantine_and_the_command_is_accepted_again() {
    let _serial = serial();
    let mut server = Server::start(2);
    let admin = server.client();
    let (operator_id, operator_secret, operator) = key_of(&admin, "operator");
    let (_, _, auditor) = key_of(&admin, "auditor");
    let poison = sku_on(1, "FAILPOINT-PANIC-LIFT");

    let restarts = panic_until_quarantined(&admin, &poison, 0);
    assert_eq!(listed(&admin).len(), 1);

    // Listed over HTTP, for operators and auditors alike.
    let items = listed(&operator);
    assert_eq!(listed(&auditor), items);
    let entry = items[0].clone();
    let fingerprint = entry["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    assert_eq!(fingerprint.len(), 16, "{entry}");
    assert!(
        fingerprint
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{entry}"
    );
    assert_eq!(entry["command"], "adjust_stock", "{entry}");
    assert!(
        entry["message"]
            .as_str()
            .expect("message")
            .contains("failpoint: panic"),
        "{entry}"
    );
    let at = entry["quarantined_at"].as_str().expect("quarantined_at");
    chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
    // The refusal and the quarantine incident name the same fingerprint.
    let (_, problem) = adjust(&admin, &poison, 5);
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains(&fingerprint),
        "{problem}"
    );
    let quarantines = incidents_of(&admin, "shard/1", "quarantine");
    assert_eq!(quarantines.len(), 1, "{quarantines:?}");
    assert!(
        quarantines[0]["detail"]
            .as_str()
            .expect("detail")
            .contains(&fingerprint),
        "{}",
        quarantines[0]
    );

    // And by orderctl: a table, and with --output json the server's page.
    let run = as_key(&server, &operator_secret, &["quarantine", "list"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(lines[0].starts_with("FINGERPRINT"), "{}", run.stdout);
    assert!(
        lines[1].starts_with(&format!(
            "{fingerprint}  adjust_stock  {at}  failpoint: panic"
        )),
        "{}",
        run.stdout
    );
    let run = as_key(
        &server,
        &operator_secret,
        &["--output", "json", "quarantine", "list"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json(), json!({"items": [entry.clone()], "next": null}));

    // An auditor may read but not lift.
    let path = format!("/v1/ops/quarantine/{fingerprint}");
    let refused = auditor.call("DELETE", &path, None, None);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(listed(&admin).len(), 1);

    // Lifted over HTTP while the bug is still there: the command runs again (503: it panics,
    // rather than 422), and its count starts over, so one panic does not quarantine it again;
    // the second does.
    let lifted = operator.call("DELETE", &path, None, None);
    assert_eq!(lifted.status, 200, "{}", lifted.body);
    assert_eq!(lifted.body, entry);
    assert!(listed(&admin).is_empty());
    let (status, problem) = adjust(&admin, &poison, 5);
    assert_eq!(status, 503, "runs again after the lift: {problem}");
    wait_shard(&admin, 1, "running", restarts + 1, Duration::from_secs(5));
    assert!(
        listed(&admin).is_empty(),
        "one panic after a lift quarantines nothing"
    );
    let (status, problem) = adjust(&admin, &poison, 5);
    assert_eq!(status, 503, "{problem}");
    wait_shard(&admin, 1, "running", restarts + 2, Duration::from_secs(5));
    let (status, problem) = adjust(&admin, &poison, 5);
    assert_eq!(status, 422, "quarantined anew: {problem}");
    let again = listed(&admin);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["fingerprint"], fingerprint.as_str());

    // The fix is deployed: a restart with the failpoints disarmed. The quarantine is stored, so
    // the command is still refused until an operator lifts it.
    server.set_env(&[("ORDERD_FAILPOINTS", "off")]);
    server.restart();
    let admin = server.client();
    let operator = admin.with_key(&operator_secret);
    let (status, problem) = adjust(&admin, &poison, 5);
    assert_eq!(
        status, 422,
        "still quarantined after the restart: {problem}"
    );
    // orderctl takes the fingerprint in either case.
    let run = as_key(
        &server,
        &operator_secret,
        &["quarantine", "lift", &fingerprint.to_ascii_uppercase()],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("fingerprint     {fingerprint}\n")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("state           lifted\n"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("accepted again"), "{}", run.stderr);
    assert!(listed(&admin).is_empty());
    // The same command is accepted and applied now.
    let (status, stock) = adjust(&admin, &poison, 5);
    assert_eq!(status, 200, "accepted after the lift: {stock}");
    assert_eq!(stock["on_hand"], 5, "{stock}");
    assert_eq!(admin.stock(&poison).on_hand, 5);

    // A second lift: 404 over HTTP, exit 1 from orderctl; a malformed fingerprint is 404 too.
    let second = operator.call("DELETE", &path, None, None);
    assert_eq!(second.status, 404, "{}", second.body);
    assert_eq!(second.body["code"], "not_found", "{}", second.body);
    let run = as_key(
        &server,
        &operator_secret,
        &["quarantine", "lift", &fingerprint],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("not_found"), "{}", run.stderr);
    let malformed = operator.call("DELETE", "/v1/ops/quarantine/not-a-fingerprint", None, None);
    assert_eq!(malformed.status, 404, "{}", malformed.body);
    assert_eq!(malformed.body["code"], "not_found");

    // The audit trail has both lifts, by the operator, and its chain holds.
    let (status, audit) = admin.get_json("/v1/audit?limit=1000");
    assert_eq!(status, 200, "{audit}");
    let lifts: Vec<&Value> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "quarantine.lift")
        .collect();
    assert_eq!(lifts.len(), 2, "{audit}");
    for lift in &lifts {
        assert_eq!(lift["actor"], operator_id.as_str(), "{lift}");
        assert_eq!(lift["target"], fingerprint.as_str(), "{lift}");
        assert_eq!(lift["detail"], "command=adjust_stock", "{lift}");
    }
    let (status, verdict) = admin.get_json("/v1/audit/verify");
    assert_eq!(status, 200, "{verdict}");
    assert_eq!(verdict["ok"], true, "{verdict}");
    // On-call sees each lift as an incident, closed at once.
    let incidents = incidents_of(&admin, "shard", "quarantine_lifted");
    assert_eq!(incidents.len(), 2, "{incidents:?}");
    for incident in &incidents {
        let detail = incident["detail"].as_str().expect("detail");
        assert!(
            detail.starts_with(&format!("adjust_stock (command {fingerprint})")),
            "{incident}"
        );
        assert!(
            incident["action"]
                .as_str()
                .expect("action")
                .contains(&operator_id),
            "{incident}"
        );
        assert!(incident["recovered_at"].is_string(), "{incident}");
    }
    assert_eq!(admin.get("/readyz").status, 200);
}
