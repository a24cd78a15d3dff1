//! `orderctl config` and `orderctl changes`: the live settings (`GET /v1/ops/config`) and change
//! requests over `/v1/ops/changes` (request, approval by a second admin, apply and watch, roll
//! back). The answers stay `serde_json::Value`: orderctl shows what the server sent and checks
//! only the members it acts on (the `items` of a list, a change's `id` and `status`).

use crate::client::{pages, query_value, Api, CliError};
use crate::progress::{stderr_is_terminal, Spinner};
use crate::table::Table;
use crate::{print_json, Outcome, Output};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::thread;
use std::time::{Duration, Instant};

/// What `GET /v1/ops/changes` answers per page at most.
const LIST_PAGE_MAX: u16 = 1000;
/// Pages `changes list` follows at most.
const LIST_PAGES_MAX: usize = 1000;
/// How often `changes apply --wait` polls `GET /v1/ops/changes/ID`.
const WAIT_POLL_INTERVAL_MS: u64 = 250;
/// How long `changes apply --wait` waits beyond the change's watch window unless told: the
/// server closes a window at its next check after `until`, not at `until` exactly.
const WAIT_SLACK_S: u64 = 60;

#[derive(Subcommand, Debug)]
pub enum ChangesAction {
    /// Request a change of a setting (POST /v1/ops/changes); an admin other than the requester
    /// approves it
    Request(RequestArgs),
    /// List change requests, newest first (GET /v1/ops/changes, every page unless --limit)
    List {
        /// At most this many, the newest (1–1000)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: Option<u16>,
    },
    /// Show a change: assessment, watch and every step (GET /v1/ops/changes/ID)
    Show {
        /// Change id (`chg_…`)
        id: String,
    },
    /// Approve a pending change (POST /v1/ops/changes/ID/approve); admin only, and not the
    /// admin who requested it
    Approve {
        /// Change id (`chg_…`)
        id: String,
    },
    /// Apply an approved change (POST /v1/ops/changes/ID/apply); the server then watches error
    /// rate and p99 for the watch window and sets the old value back if they get worse
    Apply {
        /// Change id (`chg_…`)
        id: String,
        /// Wait until the watch ends: exit 0 when it closed, 1 when the server rolled the change
        /// back automatically or the wait timed out
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits [default: the change's watch window + 60]
        #[arg(long, value_name = "S", requires = "wait",
            value_parser = clap::value_parser!(u64).range(1..))]
        wait_timeout_s: Option<u64>,
    },
    /// Set the old value back (POST /v1/ops/changes/ID/rollback)
    Rollback {
        /// Change id (`chg_…`)
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct RequestArgs {
    /// Setting name, e.g. `http.rate_limit_per_key_per_s` (`orderctl config` lists them)
    pub setting: String,
    /// New value: JSON when it parses as JSON (`100`, `-1`, `true`, `"100"`), else sent as a
    /// string (`debug`, `info,orderd=debug`)
    #[arg(allow_negative_numbers = true, value_parser = parse_value)]
    pub value: Value,
    /// Why (1–1000 characters)
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// What to do if setting the old value back is not enough (at most 1000 characters)
    #[arg(long, value_name = "TEXT")]
    pub rollback_plan: Option<String>,
    /// How long the server watches after apply [default: the server's, 300]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_window_s: Option<u64>,
}

/// A VALUE argument: JSON when it is JSON, else the text as a JSON string. Never fails: which
/// values a setting takes is the server's to say.
fn parse_value(text: &str) -> Result<Value, String> {
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())))
}

/// Runs `orderctl config`.
pub fn config(api: &Api, out: Output) -> Outcome {
    api.require_key()?;
    let path = "/v1/ops/config";
    let body = api.get(path)?;
    let settings = items(path, &body)?;
    match out {
        Output::Json => print_json(&body),
        Output::Table => print!("{}", config_table(settings)),
    }
    Ok(true)
}

/// Runs one `changes` subcommand.
pub fn run(api: &Api, out: Output, action: &ChangesAction) -> Outcome {
    api.require_key()?;
    match action {
        ChangesAction::Request(args) => request(api, out, args),
        ChangesAction::List { limit } => list(api, out, *limit),
        ChangesAction::Show { id } => show(api, out, id),
        ChangesAction::Approve { id } => {
            let change = transition(api, id, "approve")?;
            print_change(out, &change);
            eprintln!("orderctl: approved {id}; apply it with `orderctl changes apply {id}`");
            Ok(true)
        }
        ChangesAction::Apply {
            id,
            wait,
            wait_timeout_s,
        } => apply(api, out, id, *wait, *wait_timeout_s),
        ChangesAction::Rollback { id } => {
            let change = transition(api, id, "rollback")?;
            print_change(out, &change);
            eprintln!(
                "orderctl: rolled back {id}: {} is {} again",
                text(&change, "setting"),
                text(&change, "old_value")
            );
            Ok(true)
        }
    }
}

fn request(api: &Api, out: Output, args: &RequestArgs) -> Outcome {
    let mut body = json!({"setting": args.setting, "value": args.value, "reason": args.reason});
    if let Some(plan) = &args.rollback_plan {
        body["rollback_plan"] = json!(plan);
    }
    if let Some(window) = args.watch_window_s {
        body["watch_window_s"] = json!(window);
    }
    let path = "/v1/ops/changes";
    let change = api.expect("POST", path, Some(&body))?;
    let id = change_id(path, &change)?;
    print_change(out, &change);
    eprintln!(
        "orderctl: requested {id}; an admin other than the requester approves it \
         (`orderctl changes approve {id}`)"
    );
    Ok(true)
}

fn list(api: &Api, out: Output, limit: Option<u16>) -> Outcome {
    let walk = pages::<Value>(
        api,
        "/v1/ops/changes",
        LIST_PAGES_MAX,
        limit.map(usize::from),
        |got| match limit {
            Some(limit) => usize::from(limit) - got,
            None => usize::from(LIST_PAGE_MAX),
        },
    )?;
    if walk.next.is_some() && limit.is_none() {
        eprintln!(
            "orderctl: stopped after {LIST_PAGES_MAX} pages of changes; the list is incomplete"
        );
    }
    match out {
        Output::Json => print_json(&json!({"items": walk.raw, "next": walk.next})),
        Output::Table => print!("{}", list_table(&walk.items)),
    }
    Ok(true)
}

fn show(api: &Api, out: Output, id: &str) -> Outcome {
    let path = format!("/v1/ops/changes/{}", query_value(id));
    let change = api.get(&path)?;
    change_id(&path, &change)?;
    match out {
        Output::Json => print_json(&change),
        Output::Table => print!("{}", details(&change)),
    }
    Ok(true)
}

/// `POST /v1/ops/changes/ID/<action>`: the change as the server left it.
fn transition(api: &Api, id: &str, action: &str) -> Result<Value, CliError> {
    let path = format!("/v1/ops/changes/{}/{action}", query_value(id));
    let change = api.expect("POST", &path, None)?;
    change_id(&path, &change)?;
    Ok(change)
}

fn apply(api: &Api, out: Output, id: &str, wait: bool, wait_timeout_s: Option<u64>) -> Outcome {
    let applied = transition(api, id, "apply")?;
    let setting = text(&applied, "setting");
    let window_s = applied["assessment"]["watch_window_s"]
        .as_u64()
        .unwrap_or(0);
    if applied["watch"]["verdict"] == "awaiting_restart" {
        print_change(out, &applied);
        eprintln!("orderctl: applied {id}; {setting} takes effect at the next restart of orderd");
        return Ok(true);
    }
    if !wait {
        print_change(out, &applied);
        eprintln!(
            "orderctl: applied {id}; the server watches it for {window_s} s (until {}): \
             `orderctl changes show {id}`",
            text(&applied["watch"], "until")
        );
        return Ok(true);
    }
    let timeout_s = wait_timeout_s.unwrap_or(window_s + WAIT_SLACK_S);
    eprintln!(
        "orderctl: applied {id}; the server watches it for {window_s} s; waiting up to \
         {timeout_s} s"
    );
    let path = format!("/v1/ops/changes/{}", query_value(id));
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let last = {
        let _spinner = Spinner::start(
            "watch",
            &format!("the server watches {id}"),
            stderr_is_terminal(),
        );
        loop {
            let change = api.get(&path)?;
            change_id(&path, &change)?;
            if change["status"] != "applied" || Instant::now() >= deadline {
                break change;
            }
            thread::sleep(Duration::from_millis(WAIT_POLL_INTERVAL_MS));
        }
    };
    print_change(out, &last);
    let (good, message) = watch_outcome(&last, timeout_s);
    eprintln!("orderctl: {message}");
    Ok(good)
}

/// How `changes apply --wait` ends for the change as last polled: whether all is well (exit 0)
/// and what to say. Closed, or rolled back by someone during the window: fine. Rolled back by
/// the server, still watched after `timeout_s`, or any other status: exit 1.
fn watch_outcome(change: &Value, timeout_s: u64) -> (bool, String) {
    let id = text(change, "id");
    // The step that ended the watch says why (the server's own words).
    let why = change["steps"]
        .as_array()
        .and_then(|steps| steps.last())
        .map_or_else(|| "-".to_string(), |step| prose(step, "detail"));
    match change["status"].as_str().unwrap_or("-") {
        "closed" => (true, format!("{id} closed: {why}")),
        "rolled_back" => (
            true,
            format!("{id} was rolled back during its watch window: {why}"),
        ),
        "auto_rolled_back" => (
            false,
            format!(
                "{id} was rolled back automatically: {why}; {} is {} again; see incident {}",
                text(change, "setting"),
                text(change, "old_value"),
                text(change, "incident_id")
            ),
        ),
        "applied" => (
            false,
            format!(
                "{id} still applied (watch {}) after {timeout_s} s",
                text(&change["watch"], "verdict")
            ),
        ),
        other => (
            false,
            format!("{id} is {other}, which apply never leads to"),
        ),
    }
}

/// The `items` array of a list answer.
fn items<'a>(path: &str, body: &'a Value) -> Result<&'a [Value], CliError> {
    body.get("items")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| CliError::BadAnswer {
            path: path.to_string(),
            detail: "no `items` array".to_string(),
        })
}

/// The id of a change record, checking that the answer is one (an `id` and a `status`).
fn change_id(path: &str, change: &Value) -> Result<String, CliError> {
    match (change["id"].as_str(), change["status"].as_str()) {
        (Some(id), Some(_)) => Ok(id.to_string()),
        _ => Err(CliError::BadAnswer {
            path: path.to_string(),
            detail: "not a change record (no `id` or `status`)".to_string(),
        }),
    }
}

fn print_change(out: Output, change: &Value) {
    match out {
        Output::Json => print_json(change),
        Output::Table => print!("{}", summary(change)),
    }
}

/// A value as a table cell: strings without their quotes (`""` when empty), `-` for null or
/// absent, anything else as JSON.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) if text.is_empty() => "\"\"".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The member `key` of `object` as a cell (`-` when absent).
fn text(object: &Value, key: &str) -> String {
    object.get(key).map_or_else(|| "-".to_string(), cell)
}

/// A text member (a detail, a description) as a cell: `-` when absent or empty.
fn prose(object: &Value, key: &str) -> String {
    match object[key].as_str() {
        Some("") | None => "-".to_string(),
        Some(text) => text.to_string(),
    }
}

/// `old → new` of a change.
fn old_to_new(change: &Value) -> String {
    format!("{} → {}", text(change, "old_value"), text(change, "value"))
}

/// A setting's allowed values: `sync|async`, `0..=1000000`, `1..`, or `-`.
fn bounds(setting: &Value) -> String {
    if let Some(values) = setting["values"].as_array() {
        return values.iter().map(cell).collect::<Vec<_>>().join("|");
    }
    let end = |key: &str| Some(&setting[key]).filter(|v| !v.is_null()).map(cell);
    match (end("min"), end("max")) {
        (Some(min), Some(max)) => format!("{min}..={max}"),
        (Some(min), None) => format!("{min}.."),
        (None, Some(max)) => format!("..={max}"),
        (None, None) => "-".to_string(),
    }
}

fn config_table(settings: &[Value]) -> String {
    let mut table = Table::new(&[
        "SETTING", "VALUE", "TYPE", "BOUNDS", "RISK", "LIVE", "SOURCE", "PENDING",
    ]);
    for s in settings {
        let source = match s["change_id"].as_str() {
            Some(change) => change.to_string(),
            None => "config".to_string(),
        };
        table.row(vec![
            text(s, "setting"),
            text(s, "value"),
            text(s, "type"),
            bounds(s),
            text(s, "risk"),
            text(s, "live"),
            source,
            text(s, "pending_value"),
        ]);
    }
    table.render()
}

fn list_table(changes: &[Value]) -> String {
    let mut table = Table::new(&[
        "ID",
        "STATUS",
        "SETTING",
        "OLD",
        "NEW",
        "RISK",
        "REQUESTED_BY",
        "REQUESTED_AT",
    ]);
    for c in changes {
        table.row(vec![
            text(c, "id"),
            text(c, "status"),
            text(c, "setting"),
            text(c, "old_value"),
            text(c, "value"),
            text(c, "risk"),
            text(c, "requested_by"),
            text(c, "requested_at"),
        ]);
    }
    table.render()
}

/// A watch in one cell: `watching until T`, `passed at T`, `awaiting_restart`, or `-`.
fn watch_cell(watch: &Value) -> String {
    match watch["verdict"].as_str() {
        None => "-".to_string(),
        Some("awaiting_restart") => "awaiting_restart".to_string(),
        Some("watching") => format!("watching until {}", text(watch, "until")),
        Some(verdict) => format!("{verdict} (window until {})", text(watch, "until")),
    }
}

/// A change after request, approve, apply or rollback: what it is and where it stands.
fn summary(change: &Value) -> String {
    let assessment = &change["assessment"];
    let mut table = Table::new(&["FIELD", "VALUE"]);
    table.row(vec!["id".into(), text(change, "id")]);
    table.row(vec!["status".into(), text(change, "status")]);
    table.row(vec!["setting".into(), text(change, "setting")]);
    table.row(vec!["change".into(), old_to_new(change)]);
    table.row(vec!["risk".into(), text(change, "risk")]);
    table.row(vec!["live".into(), text(change, "live")]);
    table.row(vec!["assessment".into(), text(assessment, "summary")]);
    table.row(vec![
        "watch_window".into(),
        assessment["watch_window_s"]
            .as_u64()
            .map_or("-".to_string(), |s| format!("{s}s")),
    ]);
    table.row(vec!["watch".into(), watch_cell(&change["watch"])]);
    table.row(vec!["incident_id".into(), text(change, "incident_id")]);
    table.render()
}

/// `key=value` pairs of an object, space-separated (`-` when it is not one).
fn pairs(object: &Value) -> String {
    match object.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(key, value)| format!("{key}={}", cell(value)))
            .collect::<Vec<_>>()
            .join(" "),
        _ => "-".to_string(),
    }
}

/// Every field of a change, then its watch (baseline and observed) when it has one, then its
/// steps.
fn details(change: &Value) -> String {
    let assessment = &change["assessment"];
    let watch = &change["watch"];
    let mut fields = Table::new(&["FIELD", "VALUE"]);
    for key in [
        "id",
        "status",
        "setting",
        "old_value",
        "value",
        "risk",
        "live",
    ] {
        fields.row(vec![key.into(), text(change, key)]);
    }
    for key in ["reason", "rollback_plan", "requested_by", "requested_at"] {
        fields.row(vec![key.into(), text(change, key)]);
    }
    for key in ["summary", "restart_required", "touches", "watch_window_s"] {
        fields.row(vec![key.into(), text(assessment, key)]);
    }
    fields.row(vec!["bounds".into(), pairs(&assessment["bounds"])]);
    for key in ["started_at", "until", "verdict"] {
        fields.row(vec![format!("watch_{key}"), text(watch, key)]);
    }
    fields.row(vec!["incident_id".into(), text(change, "incident_id")]);
    let mut out = fields.render();

    let windows: Vec<(&str, &Value)> = ["baseline", "observed"]
        .into_iter()
        .map(|name| (name, &watch[name]))
        .filter(|(_, window)| window.is_object())
        .collect();
    if !windows.is_empty() {
        let mut table = Table::new(&["WINDOW", "REQUESTS", "ERRORS", "ERROR_RATE", "P99_MS"]);
        for (name, window) in windows {
            table.row(vec![
                name.into(),
                text(window, "requests"),
                text(window, "errors"),
                text(window, "error_rate"),
                text(window, "p99_ms"),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }

    let mut steps = Table::new(&["STEP", "ACTOR", "AT", "DETAIL"]);
    for step in change["steps"].as_array().map_or(&[][..], Vec::as_slice) {
        steps.row(vec![
            text(step, "step"),
            text(step, "actor"),
            text(step, "at"),
            prose(step, "detail"),
        ]);
    }
    out.push('\n');
    out.push_str(&steps.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("orderctl").chain(args.iter().copied()))
    }

    fn action(args: &[&str]) -> ChangesAction {
        match parse(args).expect("parses").command {
            Command::Changes(action) => action,
            other => panic!("not a changes command: {other:?}"),
        }
    }

    fn requested(args: &[&str]) -> RequestArgs {
        let mut all = vec!["changes", "request"];
        all.extend_from_slice(args);
        match action(&all) {
            ChangesAction::Request(args) => args,
            other => panic!("{other:?}"),
        }
    }

    /// A change record as SPEC.md describes it: applied, watched, then rolled back
    /// automatically.
    fn change() -> Value {
        json!({
            "id": "chg_000003",
            "status": "auto_rolled_back",
            "setting": "http.rate_limit_per_key_per_s",
            "old_value": 0,
            "value": 100,
            "risk": "medium",
            "live": true,
            "reason": "shed a noisy client",
            "rollback_plan": null,
            "requested_by": "key_aaaa",
            "requested_at": "2026-11-26T03:00:00Z",
            "assessment": {
                "summary": "http.rate_limit_per_key_per_s: 0 → 100",
                "risk": "medium",
                "live": true,
                "restart_required": false,
                "touches": "every HTTP request with a key",
                "watch_window_s": 300,
                "bounds": {
                    "error_rate_increase_max_percent": 1.0,
                    "p99_increase_max_percent": 50,
                    "p99_increase_min_ms": 20,
                    "min_requests": 50
                }
            },
            "watch": {
                "started_at": "2026-11-26T03:02:00Z",
                "until": "2026-11-26T03:07:00Z",
                "baseline": {"requests": 1200, "errors": 3, "error_rate": 0.25, "p99_ms": 4.1},
                "observed": {"requests": 900, "errors": 450, "error_rate": 50.0, "p99_ms": 3.9},
                "verdict": "breached"
            },
            "incident_id": "inc_0000000000000007",
            "steps": [
                {"step": "requested", "actor": "key_aaaa", "at": "2026-11-26T03:00:00Z",
                 "detail": "shed a noisy client"},
                {"step": "approved", "actor": "key_bbbb", "at": "2026-11-26T03:01:00Z",
                 "detail": ""},
                {"step": "applied", "actor": "key_aaaa", "at": "2026-11-26T03:02:00Z",
                 "detail": "0 → 100"},
                {"step": "auto_rolled_back", "actor": "system", "at": "2026-11-26T03:03:10Z",
                 "detail": "error rate 50.00% over 0.25%"}
            ]
        })
    }

    #[test]
    fn values_are_json_when_they_parse_and_strings_otherwise() {
        for (text, value) in [
            ("100000", json!(100000)),
            ("-1", json!(-1)),
            ("2.5", json!(2.5)),
            ("true", json!(true)),
            ("false", json!(false)),
            ("\"100\"", json!("100")),
            ("\"true\"", json!("true")),
            ("debug", json!("debug")),
            ("info,orderd=debug", json!("info,orderd=debug")),
            ("sync", json!("sync")),
            ("", json!("")),
            ("100 ms", json!("100 ms")),
            ("\"unterminated", json!("\"unterminated")),
        ] {
            assert_eq!(parse_value(text), Ok(value), "{text:?}");
        }
    }

    #[test]
    fn request_parses() {
        let args = requested(&[
            "http.rate_limit_per_key_per_s",
            "100000",
            "--reason",
            "load test",
        ]);
        assert_eq!(args.setting, "http.rate_limit_per_key_per_s");
        assert_eq!(args.value, json!(100000));
        assert_eq!(args.reason, "load test");
        assert_eq!(args.rollback_plan, None);
        assert_eq!(args.watch_window_s, None);

        let args = requested(&[
            "log.level",
            "debug",
            "--reason",
            "why",
            "--rollback-plan",
            "set info",
            "--watch-window-s",
            "1",
        ]);
        assert_eq!(args.value, json!("debug"));
        assert_eq!(args.rollback_plan.as_deref(), Some("set info"));
        assert_eq!(args.watch_window_s, Some(1));

        // A negative number is a value, not an option; options go anywhere.
        let args = requested(&["--reason", "r", "x", "-5"]);
        assert_eq!((args.setting.as_str(), args.value), ("x", json!(-5)));
        let cli = parse(&[
            "changes", "request", "x", "1", "--reason", "r", "--output", "json",
        ])
        .expect("parses");
        assert_eq!(cli.output, Output::Json);
    }

    #[test]
    fn the_other_changes_commands_parse() {
        match action(&["changes", "list"]) {
            ChangesAction::List { limit } => assert_eq!(limit, None),
            other => panic!("{other:?}"),
        }
        match action(&["changes", "list", "--limit", "20"]) {
            ChangesAction::List { limit } => assert_eq!(limit, Some(20)),
            other => panic!("{other:?}"),
        }
        match action(&["changes", "show", "chg_000001"]) {
            ChangesAction::Show { id } => assert_eq!(id, "chg_000001"),
            other => panic!("{other:?}"),
        }
        match action(&["changes", "approve", "chg_000001"]) {
            ChangesAction::Approve { id } => assert_eq!(id, "chg_000001"),
            other => panic!("{other:?}"),
        }
        match action(&["changes", "rollback", "chg_000001"]) {
            ChangesAction::Rollback { id } => assert_eq!(id, "chg_000001"),
            other => panic!("{other:?}"),
        }
        match action(&["changes", "apply", "chg_000001"]) {
            ChangesAction::Apply {
                id,
                wait,
                wait_timeout_s,
            } => assert_eq!(
                (id.as_str(), wait, wait_timeout_s),
                ("chg_000001", false, None)
            ),
            other => panic!("{other:?}"),
        }
        match action(&[
            "changes",
            "apply",
            "chg_1",
            "--wait",
            "--wait-timeout-s",
            "9",
        ]) {
            ChangesAction::Apply {
                wait,
                wait_timeout_s,
                ..
            } => assert_eq!((wait, wait_timeout_s), (true, Some(9))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["config"]).expect("parses").command,
            Command::Config
        ));
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["changes"][..],
            &["changes", "request", "log.level", "debug"],
            &["changes", "request", "log.level", "--reason", "r"],
            &["changes", "request", "--reason", "r"],
            &[
                "changes",
                "request",
                "x",
                "1",
                "--reason",
                "r",
                "--watch-window-s",
                "0",
            ],
            &[
                "changes",
                "request",
                "x",
                "1",
                "--reason",
                "r",
                "--watch-window-s",
                "-1",
            ],
            &["changes", "request", "x", "1", "2", "--reason", "r"],
            &["changes", "list", "--limit", "0"],
            &["changes", "list", "--limit", "1001"],
            &["changes", "show"],
            &["changes", "approve"],
            &["changes", "apply", "chg_1", "--wait-timeout-s", "5"],
            &[
                "changes",
                "apply",
                "chg_1",
                "--wait",
                "--wait-timeout-s",
                "0",
            ],
            &["changes", "rollback"],
            &["changes", "undo", "chg_1"],
            &["config", "http.rate_limit_per_key_per_s"],
        ] {
            let error = parse(bad).expect_err(&format!("{bad:?} must not parse"));
            assert_eq!(error.exit_code(), 2, "{bad:?}: {error}");
        }
    }

    #[test]
    fn a_change_summary() {
        assert_eq!(
            summary(&change()),
            "\
FIELD         VALUE
id            chg_000003
status        auto_rolled_back
setting       http.rate_limit_per_key_per_s
change        0 → 100
risk          medium
live          true
assessment    http.rate_limit_per_key_per_s: 0 → 100
watch_window  300s
watch         breached (window until 2026-11-26T03:07:00Z)
incident_id   inc_0000000000000007
"
        );
        let mut pending = change();
        pending["status"] = json!("pending");
        pending["watch"] = Value::Null;
        pending["incident_id"] = Value::Null;
        let text = summary(&pending);
        assert!(text.contains("\nwatch         -\n"), "{text}");
        assert!(text.contains("\nincident_id   -\n"), "{text}");
    }

    #[test]
    fn a_change_in_full_with_its_watch_and_steps() {
        assert_eq!(
            details(&change()),
            "\
FIELD             VALUE
id                chg_000003
status            auto_rolled_back
setting           http.rate_limit_per_key_per_s
old_value         0
value             100
risk              medium
live              true
reason            shed a noisy client
rollback_plan     -
requested_by      key_aaaa
requested_at      2026-11-26T03:00:00Z
summary           http.rate_limit_per_key_per_s: 0 → 100
restart_required  false
touches           every HTTP request with a key
watch_window_s    300
bounds            error_rate_increase_max_percent=1.0 min_requests=50 p99_increase_max_percent=50 p99_increase_min_ms=20
watch_started_at  2026-11-26T03:02:00Z
watch_until       2026-11-26T03:07:00Z
watch_verdict     breached
incident_id       inc_0000000000000007

WINDOW    REQUESTS  ERRORS  ERROR_RATE  P99_MS
baseline  1200      3       0.25        4.1
observed  900       450     50.0        3.9

STEP              ACTOR     AT                    DETAIL
requested         key_aaaa  2026-11-26T03:00:00Z  shed a noisy client
approved          key_bbbb  2026-11-26T03:01:00Z  -
applied           key_aaaa  2026-11-26T03:02:00Z  0 → 100
auto_rolled_back  system    2026-11-26T03:03:10Z  error rate 50.00% over 0.25%
"
        );
    }

    #[test]
    fn a_pending_change_has_no_watch_table() {
        let mut pending = change();
        pending["status"] = json!("pending");
        pending["watch"] = Value::Null;
        pending["incident_id"] = Value::Null;
        pending["steps"] = json!([pending["steps"][0]]);
        let text = details(&pending);
        assert!(!text.contains("WINDOW"), "{text}");
        assert!(text.contains("\nwatch_verdict     -\n"), "{text}");
        assert!(
            text.ends_with("\nrequested  key_aaaa  2026-11-26T03:00:00Z  shed a noisy client\n")
        );

        // Watching: the baseline is known, nothing observed yet.
        let mut watching = change();
        watching["status"] = json!("applied");
        watching["watch"]["observed"] = Value::Null;
        watching["watch"]["verdict"] = json!("watching");
        let text = details(&watching);
        assert!(text.contains("\nbaseline  1200"), "{text}");
        assert!(!text.contains("\nobserved"), "{text}");
        assert!(
            summary(&watching).contains("\nwatch         watching until 2026-11-26T03:07:00Z\n")
        );
    }

    #[test]
    fn the_settings_table() {
        let body = json!({"items": [
            {"setting": "http.body_limit_bytes", "value": 65536, "type": "integer",
             "min": 1024, "max": null, "values": null, "risk": "medium", "live": false,
             "description": "...", "change_id": "chg_000002", "pending_value": 131072},
            {"setting": "http.rate_limit_per_key_per_s", "value": 100000, "type": "integer",
             "min": 0, "max": 1000000, "values": null, "risk": "medium", "live": true,
             "description": "...", "change_id": "chg_000001", "pending_value": null},
            {"setting": "log.level", "value": "info", "type": "string", "min": null,
             "max": null, "values": null, "risk": "low", "live": true, "description": "...",
             "change_id": null, "pending_value": null},
            {"setting": "storage.durability", "value": "sync", "type": "string", "min": null,
             "max": null, "values": ["sync", "async"], "risk": "high", "live": true,
             "description": "...", "change_id": null, "pending_value": null}
        ]});
        let settings = items("/v1/ops/config", &body).expect("items");
        assert_eq!(
            config_table(settings),
            "\
SETTING                        VALUE   TYPE     BOUNDS       RISK    LIVE   SOURCE      PENDING
http.body_limit_bytes          65536   integer  1024..       medium  false  chg_000002  131072
http.rate_limit_per_key_per_s  100000  integer  0..=1000000  medium  true   chg_000001  -
log.level                      info    string   -            low     true   config      -
storage.durability             sync    string   sync|async   high    true   config      -
"
        );
        let error = items("/v1/ops/config", &json!([])).expect_err("not a list answer");
        assert_eq!(error.exit_code(), 1);
    }

    #[test]
    fn the_list_table() {
        let mut pending = change();
        pending["id"] = json!("chg_000004");
        pending["status"] = json!("pending");
        pending["setting"] = json!("log.level");
        pending["old_value"] = json!("info");
        pending["value"] = json!("debug");
        pending["risk"] = json!("low");
        assert_eq!(
            list_table(&[pending, change()]),
            "\
ID          STATUS            SETTING                        OLD   NEW    RISK    REQUESTED_BY  REQUESTED_AT
chg_000004  pending           log.level                      info  debug  low     key_aaaa      2026-11-26T03:00:00Z
chg_000003  auto_rolled_back  http.rate_limit_per_key_per_s  0     100    medium  key_aaaa      2026-11-26T03:00:00Z
"
        );
    }

    #[test]
    fn cells_and_bounds() {
        assert_eq!(cell(&json!("debug")), "debug");
        assert_eq!(cell(&json!("")), "\"\"");
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(1.5)), "1.5");
        assert_eq!(cell(&json!(false)), "false");
        assert_eq!(text(&json!({}), "missing"), "-");
        assert_eq!(bounds(&json!({"min": null, "max": 10})), "..=10");
        assert_eq!(bounds(&json!({})), "-");
        assert_eq!(pairs(&json!(null)), "-");
    }

    #[test]
    fn how_a_wait_ends() {
        let (good, message) = watch_outcome(&change(), 60);
        assert!(!good, "an automatic rollback exits 1");
        assert_eq!(
            message,
            "chg_000003 was rolled back automatically: error rate 50.00% over 0.25%; \
             http.rate_limit_per_key_per_s is 0 again; see incident inc_0000000000000007"
        );

        let ended = |status: &str, step: &str, detail: &str| {
            let mut c = change();
            c["status"] = json!(status);
            c["incident_id"] = Value::Null;
            c["steps"][3] = json!({"step": step, "actor": "system", "at": "T", "detail": detail});
            watch_outcome(&c, 60)
        };
        assert_eq!(
            ended("closed", "closed", "watch window ended within the bounds"),
            (
                true,
                "chg_000003 closed: watch window ended within the bounds".to_string()
            )
        );
        assert_eq!(
            ended("rolled_back", "rolled_back", ""),
            (
                true,
                "chg_000003 was rolled back during its watch window: -".to_string()
            )
        );
        let mut watching = change();
        watching["status"] = json!("applied");
        watching["watch"]["verdict"] = json!("watching");
        assert_eq!(
            watch_outcome(&watching, 9),
            (
                false,
                "chg_000003 still applied (watch watching) after 9 s".to_string()
            )
        );
        assert!(!ended("pending", "requested", "x").0);
    }

    #[test]
    fn only_a_change_record_is_a_change() {
        assert_eq!(change_id("/p", &change()).expect("a change"), "chg_000003");
        for bad in [json!(null), json!({"id": "chg_1"}), json!([change()])] {
            let error = change_id("/p", &bad).expect_err("not a change");
            assert_eq!(error.exit_code(), 1, "{bad}");
        }
    }
}
