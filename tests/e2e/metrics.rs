//! `GET /metrics` on the real binary: counts that match the requests made, histograms with
//! their buckets, gauges that agree with `/v1/ops/shards` and `/proc`, the text accepted by
//! `promtool check metrics`; the alert rules pass `promtool check rules` and their unit tests,
//! link runbook sections that exist; the Grafana dashboard queries only metrics the server
//! exports.
//!
//! `promtool` comes from the Debian package `prometheus` (`make deps` installs it). These tests
//! fail, never skip, when it is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::support::{serial, unique, Client, Server};

/// Buckets of `orderd_request_duration_seconds`, as the server must render them.
const REQUEST_BUCKETS: &[&str] = &[
    "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
    "1", "2.5", "5", "10", "+Inf",
];

/// Metrics a panel or alert may use that the server exports only once an event happened.
/// `orderd_incidents_total` appears with the first incident (the supervisor records them).
const EXPORTED_LATER: &[&str] = &["orderd_incidents_total"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the gateway crate lies in the repository")
        .to_path_buf()
}

/// One sample line of the text format: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the sample lines (our label values hold no `,`, `"` or `}`).
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("labels end with }");
                let labels = inner
                    .split(',')
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once('=').expect("label has =");
                        (key.to_string(), value.trim_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The value of the sample with exactly these labels, if any.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn must(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

fn scrape(client: &Client) -> String {
    let reply = client.without_key().get("/metrics");
    assert_eq!(reply.status, 200, "GET /metrics: {:?}", reply.body);
    assert_eq!(reply.content_type, "text/plain");
    match reply.body {
        Value::String(text) => text,
        other => panic!("/metrics is not text: {other}"),
    }
}

/// Runs `promtool` with `args` (and `stdin`), returning (success, stdout + stderr). Panics if
/// promtool is not installed.
fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed (Debian package `prometheus`; `make deps` installs it): {e}")
        });
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write to promtool");
        }
    }
    let output = child.wait_with_output().expect("promtool runs");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// Names a scrape exports: every sample name, and every family of a `# TYPE` line.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = parse(text).into_iter().map(|s| s.name).collect();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            names.insert(rest.split(' ').next().unwrap_or_default().to_string());
        }
    }
    names
}

/// Every `orderd_…` and `process_…` identifier in a PromQL expression.
fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut names = prefixed_names_in(expr, "orderd_");
    names.extend(prefixed_names_in(expr, "process_"));
    names
}

/// Every identifier starting with `prefix` in a PromQL expression.
fn prefixed_names_in(expr: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(found) = expr[i..].find(prefix) {
        let start = i + found;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if before_ok {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

/// Waits until every shard runs again with the given restart count on `shard`.
fn wait_running(client: &Client, shard: u64, restarts: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, shards) = client.get_json("/v1/ops/shards");
        if status == 200 {
            let list = shards.as_array().expect("shard list");
            let all_running = list.iter().all(|s| s["state"] == "running");
            let restarted = list
                .iter()
                .any(|s| s["id"] == shard && s["restarts"].as_u64() == Some(restarts));
            if all_running && restarted {
                return;
            }
        }
        assert!(Instant::now() < deadline, "shard {shard} did not come back");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A server that answered a known mix of requests exports exactly those counts, histograms
/// with the configured buckets, shard and process figures that agree with other sources, and
/// text that promtool accepts.
#[test]
fn metrics_count_what_happened_and_pass_promtool() {
    let _serial = serial();
    let started_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let server = Server::start(2);
    let client = server.client();

    let customer = client.create_customer();
    let sku = unique("metrics-sku");
    client.adjust_stock(&sku, 3);
    // 5 orders of one unit on 3 units: 3 placed, 2 insufficient_stock; 1 unknown customer.
    let mut placed_ids = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let body =
            json!({"customer_id": customer, "lines": [{"sku": sku, "qty": 1, "unit_price": 100}]});
        let (status, order) = client.post_json("/v1/orders", &body, None);
        statuses.push(status);
        if status == 201 {
            placed_ids.push(order["id"].as_str().expect("order id").to_string());
        }
    }
    assert_eq!(statuses, [201, 201, 201, 409, 409]);
    let unknown =
        json!({"customer_id": "cus_nobody", "lines": [{"sku": sku, "qty": 1, "unit_price": 100}]});
    assert_eq!(client.post_json("/v1/orders", &unknown, None).0, 422);
    // 4 reads that succeed, 1 that does not find its order, 1 unknown path.
    for id in placed_ids.iter().cycle().take(4) {
        assert_eq!(client.get_json(&format!("/v1/orders/{id}")).0, 200);
    }
    assert_eq!(client.get_json("/v1/orders/ord_nothing").0, 404);
    assert_eq!(client.get_json("/no/such/route").0, 404);
    // Refusals: 2 without a key, 1 of a role (an analyst may not adjust stock).
    assert_eq!(server.client().without_key().get_json("/v1/orders").0, 401);
    assert_eq!(server.client().without_key().get_json("/v1/stock/X").0, 401);
    let (_, analyst) = client.post_json(
        "/v1/keys",
        &json!({"name": unique("analyst"), "role": "analyst"}),
        None,
    );
    let analyst = client.with_key(analyst["secret"].as_str().expect("secret"));
    assert_eq!(
        analyst
            .post_json(
                &format!("/v1/stock/{sku}/adjustments"),
                &json!({"delta": 1, "reason": "x"}),
                None
            )
            .0,
        403
    );
    // One shard restart.
    let restart = client.call("POST", "/v1/ops/shards/1/restart", None, None);
    assert_eq!(restart.status, 202, "{:?}", restart.body);
    wait_running(&client, 1, 1);

    // Scrape until the log writer is quiet (log counters and histograms are read one after
    // the other, so a group commit in between could make them differ by one).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (text, samples) = loop {
        let text = scrape(&client);
        let samples = parse(&text);
        let syncs = must(&samples, "orderd_log_syncs_total", &[]);
        let fsyncs = must(&samples, "orderd_log_fsync_duration_seconds_count", &[]);
        let events = must(&samples, "orderd_log_events_total", &[]);
        let batched = must(&samples, "orderd_log_batch_events_sum", &[]);
        if (syncs == fsyncs && events == batched) || Instant::now() > deadline {
            // sync durability: one fsync per group commit, each recorded once.
            assert_eq!(syncs, fsyncs, "fsyncs recorded vs counted");
            assert_eq!(
                events, batched,
                "events per group commit add up to events written"
            );
            assert!(
                syncs >= 3.0,
                "at least the stock, customer and orders were synced"
            );
            break (text, samples);
        }
        thread::sleep(Duration::from_millis(100));
    };

    // Refusals by reason (and no other reason: 409 and 422 are answers, not refusals).
    let refusals = |reason| value(&samples, "orderd_refusals_total", &[("reason", reason)]);
    assert_eq!(refusals("unauthorized"), Some(2.0));
    assert_eq!(refusals("forbidden"), Some(1.0));
    // Every reason is exported from the start (rates and alerts see 0, not no series).
    assert_eq!(refusals("rate_limited"), Some(0.0));
    assert_eq!(refusals("insufficient_storage"), Some(0.0));

    // Orders by outcome.
    let orders = |outcome| value(&samples, "orderd_orders_total", &[("outcome", outcome)]);
    assert_eq!(orders("placed"), Some(3.0));
    assert_eq!(orders("insufficient_stock"), Some(2.0));
    assert_eq!(orders("rejected"), Some(1.0));
    assert_eq!(
        orders("unavailable"),
        Some(0.0),
        "every outcome is exported from the start"
    );

    // Request histograms by route template and outcome, with every bucket.
    let count = |route, outcome| {
        value(
            &samples,
            "orderd_request_duration_seconds_count",
            &[("route", route), ("outcome", outcome)],
        )
    };
    assert_eq!(count("/v1/orders", "ok"), Some(3.0));
    // 2 insufficient_stock, 1 unknown customer, 1 without a key.
    assert_eq!(count("/v1/orders", "client_error"), Some(4.0));
    assert_eq!(count("/v1/orders/{id}", "ok"), Some(4.0));
    assert_eq!(count("/v1/orders/{id}", "client_error"), Some(1.0));
    assert_eq!(count("/v1/customers", "ok"), Some(1.0));
    assert_eq!(count("/v1/stock/{sku}/adjustments", "ok"), Some(1.0));
    assert_eq!(count("/v1/ops/shards/{id}/restart", "ok"), Some(1.0));
    assert_eq!(count("unmatched", "client_error"), Some(1.0));
    for sample in &samples {
        for value in sample.labels.values() {
            assert!(
                !value.starts_with("ord_") && !value.starts_with("cus_") && !value.contains(&sku),
                "an id in a label: {sample:?}"
            );
        }
    }
    for (route, outcome, expected) in [("/v1/orders", "ok", 3.0), ("/v1/orders/{id}", "ok", 4.0)] {
        let mut previous = 0.0;
        for le in REQUEST_BUCKETS {
            let bucket = must(
                &samples,
                "orderd_request_duration_seconds_bucket",
                &[("route", route), ("outcome", outcome), ("le", le)],
            );
            assert!(bucket >= previous, "{route} buckets are cumulative");
            previous = bucket;
        }
        assert_eq!(previous, expected, "{route} +Inf bucket = count");
        let sum = must(
            &samples,
            "orderd_request_duration_seconds_sum",
            &[("route", route), ("outcome", outcome)],
        );
        assert!(sum > 0.0 && sum < expected * 10.0, "{route} sum {sum}");
    }
    assert!(!text.contains("quantile="), "histograms, never summaries");
    assert!(text.contains("# TYPE orderd_log_fsync_duration_seconds histogram"));
    assert!(text.contains("orderd_log_batch_events_bucket{le=\"+Inf\"}"));

    // Shards agree with /v1/ops/shards; shard 1 was restarted once.
    let (_, shards) = client.get_json("/v1/ops/shards");
    for shard in shards.as_array().expect("shards") {
        let id = shard["id"].as_u64().unwrap().to_string();
        let labels = [("shard", id.as_str())];
        assert_eq!(must(&samples, "orderd_shard_up", &labels), 1.0);
        assert_eq!(
            must(&samples, "orderd_shard_orders", &labels),
            shard["orders"].as_u64().unwrap() as f64
        );
        assert_eq!(
            must(&samples, "orderd_shard_restarts_total", &labels),
            shard["restarts"].as_u64().unwrap() as f64
        );
        assert_eq!(must(&samples, "orderd_shard_mailbox_depth", &labels), 0.0);
    }
    assert_eq!(
        must(&samples, "orderd_shard_restarts_total", &[("shard", "1")]),
        1.0
    );
    assert_eq!(
        must(&samples, "orderd_shard_restarts_total", &[("shard", "0")]),
        0.0
    );
    // The restart is an incident too (component class and kind only, never an id).
    assert_eq!(
        must(
            &samples,
            "orderd_incidents_total",
            &[("component", "shard"), ("kind", "restart")]
        ),
        1.0
    );
    let orders_held: f64 = samples
        .iter()
        .filter(|s| s.name == "orderd_shard_orders")
        .map(|s| s.value)
        .sum();
    assert!(
        orders_held >= 3.0,
        "the 3 placed orders are held: {orders_held}"
    );

    // Process figures, under the standard process_* names, agree with /proc of the server's pid.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("status");
    let status_kb = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/pid/status"))
            * 1024.0
    };
    let vm_rss_bytes = status_kb("VmRSS:");
    let rss = must(&samples, "process_resident_memory_bytes", &[]);
    assert!(
        rss > vm_rss_bytes * 0.5 && rss < vm_rss_bytes * 2.0,
        "rss {rss} vs VmRSS {vm_rss_bytes}"
    );
    let vm_size_bytes = status_kb("VmSize:");
    let virtual_bytes = must(&samples, "process_virtual_memory_bytes", &[]);
    assert!(
        virtual_bytes > vm_size_bytes * 0.5 && virtual_bytes < vm_size_bytes * 2.0,
        "virtual {virtual_bytes} vs VmSize {vm_size_bytes}"
    );
    let fds_now = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("fd dir")
        .count() as f64;
    let open_fds = must(&samples, "process_open_fds", &[]);
    assert!(
        open_fds >= 10.0 && open_fds < fds_now * 2.0 + 10.0,
        "open fds {open_fds} vs {fds_now} now"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("limits");
    let soft_nofile: f64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("Max open files");
    assert_eq!(must(&samples, "process_max_fds", &[]), soft_nofile);
    assert!(
        value(&samples, "orderd_process_resident_memory_bytes", &[]).is_none(),
        "the old orderd_process_* names are gone"
    );
    let start = must(&samples, "process_start_time_seconds", &[]);
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start >= started_s - 2.0 && start <= now_s,
        "start {start} in [{started_s}, {now_s}]"
    );
    let cpu = must(&samples, "process_cpu_seconds_total", &[]);
    // Counted in clock ticks (10 ms): a server that started quickly may show 0 yet.
    assert!(cpu >= 0.0 && cpu < now_s - started_s + 60.0, "cpu {cpu}");
    assert_eq!(
        must(
            &samples,
            "orderd_backup_last_success_timestamp_seconds",
            &[]
        ),
        0.0
    );
    assert_eq!(
        must(&samples, "orderd_audit_refusals_dropped_total", &[]),
        0.0
    );
    for kind in ["backup_failed", "offsite_failed", "verify_failed"] {
        assert_eq!(
            must(&samples, "orderd_backup_failing", &[("kind", kind)]),
            0.0,
            "{kind}"
        );
    }

    // The data directory's file system, read at scrape time, and the disk guard's bound.
    let free = must(&samples, "orderd_storage_free_bytes", &[]);
    let size = must(&samples, "orderd_storage_size_bytes", &[]);
    assert!(free > 0.0 && free <= size, "free {free} of {size}");
    assert_eq!(
        must(&samples, "orderd_storage_min_free_bytes", &[]),
        64.0 * 1024.0 * 1024.0,
        "storage.min_free_bytes (default)"
    );
    // Every shard's mailbox capacity (engine.mailbox_capacity, default).
    for shard in ["0", "1"] {
        assert_eq!(
            must(
                &samples,
                "orderd_shard_mailbox_capacity",
                &[("shard", shard)]
            ),
            100_000.0
        );
    }

    // The build: version of the package, revision of the commit built (or "unknown").
    let build = samples
        .iter()
        .find(|s| s.name == "orderd_build_info")
        .expect("orderd_build_info");
    assert_eq!(build.value, 1.0);
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));
    let revision = &build.labels["revision"];
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(repo_root())
            .output()
            .ok()
            .filter(|output| output.status.success())
    };
    if git(&["rev-parse", "HEAD"]).is_some() {
        // Built from this history: HEAD, or an ancestor when a commit came after the build.
        assert!(
            revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()),
            "revision {revision}"
        );
        assert!(
            git(&["merge-base", "--is-ancestor", revision, "HEAD"]).is_some(),
            "revision {revision} is not HEAD or one of its ancestors"
        );
    } else {
        assert_eq!(revision, "unknown", "no git, no revision");
    }

    // A second scrape counts the first one.
    let again = parse(&scrape(&client));
    assert!(
        must(
            &again,
            "orderd_request_duration_seconds_count",
            &[("route", "/metrics"), ("outcome", "ok")]
        ) >= 1.0
    );

    let (ok, report) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "promtool check metrics:\n{report}\n{text}");
    assert!(report.trim().is_empty(), "promtool lint: {report}");
}

/// The alert rules load, their unit tests pass, and they (like every dashboard panel) use only
/// metrics a real server exports.
#[test]
fn alert_rules_and_dashboard_use_exported_metrics() {
    let (ok, report) = promtool(&["check", "rules", "ops/prometheus/alerts.yml"], None);
    assert!(ok, "promtool check rules:\n{report}");
    let (ok, report) = promtool(&["test", "rules", "ops/prometheus/alerts.test.yml"], None);
    assert!(ok, "promtool test rules:\n{report}");
    let (ok, report) = promtool(&["check", "config", "ops/prometheus/prometheus.yml"], None);
    assert!(ok, "promtool check config:\n{report}");

    let _serial = serial();
    let server = Server::start(2);
    let client = server.client();
    // One write so that the log writer's histograms exist, and one TCP connection opened and
    // closed so that the TCP front door's gauge and counter do.
    client.adjust_stock(&unique("metrics-sku"), 1);
    drop(std::net::TcpStream::connect(server.tcp_addr()).expect("connect to the TCP port"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let exported = loop {
        let exported = exported_names(&scrape(&client));
        if exported.contains("orderd_tcp_connections_closed_total") {
            break exported;
        }
        assert!(
            Instant::now() < deadline,
            "no TCP close counted: {exported:?}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    let known = |name: &str| exported.contains(name) || EXPORTED_LATER.contains(&name);

    let root = repo_root();
    let rules = std::fs::read_to_string(root.join("ops/prometheus/alerts.yml")).expect("alerts");
    let mut in_rules = BTreeSet::new();
    for line in rules.lines() {
        in_rules.extend(metric_names_in(line));
    }
    assert!(in_rules.len() >= 5, "rules use {in_rules:?}");
    for name in &in_rules {
        assert!(
            known(name),
            "alerts.yml uses {name}, which the server does not export"
        );
    }

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("ops/grafana/orderd-dashboard.json"))
            .expect("dashboard"),
    )
    .expect("the dashboard is valid JSON");
    let mut panels: Vec<&Value> = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = stack.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            stack.extend(inner);
        }
        if panel["type"] != "row" {
            panels.push(panel);
        }
    }
    assert!(panels.len() >= 11, "{} panels", panels.len());
    let mut used = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("?");
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: no expr"));
            let names = metric_names_in(expr);
            assert!(
                !names.is_empty(),
                "{title}: {expr} queries no orderd_ metric"
            );
            for name in names {
                assert!(
                    known(&name),
                    "panel {title} uses {name}, which the server does not export"
                );
                used.insert(name);
            }
        }
    }
    for family in [
        "orderd_request_duration_seconds_count",
        "orderd_request_duration_seconds_bucket",
        "orderd_orders_total",
        "orderd_shard_mailbox_depth",
        "orderd_log_fsync_duration_seconds_bucket",
        "orderd_log_batch_events_bucket",
        "orderd_shard_restarts_total",
        "orderd_incidents_total",
        "orderd_backup_last_success_timestamp_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "orderd_build_info",
        // The TCP front door.
        "orderd_tcp_connections",
        "orderd_tcp_connections_closed_total",
        // Refusals by reason (429, 503, 507, …).
        "orderd_refusals_total",
    ] {
        assert!(used.contains(family), "no panel shows {family}");
    }
}

/// GitHub's anchor of a Markdown heading: lower case, spaces to `-`, other punctuation but
/// `-` and `_` dropped.
fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every alert has a `description` and an absolute `runbook_url` whose anchor is a heading of
/// docs/OPERATIONS.md (its own section: the alert's name); the unit tests expect the same
/// links; no alert keeps the old relative `runbook` annotation.
#[test]
fn every_alert_links_a_runbook_section_that_exists() {
    let root = repo_root();
    let operations = std::fs::read_to_string(root.join("docs/OPERATIONS.md")).expect("OPERATIONS");
    let anchors: BTreeSet<String> = operations
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| heading_anchor(line.trim_start_matches('#')))
        .collect();
    assert!(anchors.contains("orderddown"), "{anchors:?}");

    let rules = std::fs::read_to_string(root.join("ops/prometheus/alerts.yml")).expect("alerts");
    // alert name -> (description seen, runbook_url)
    let mut alerts: BTreeMap<String, (bool, Option<String>)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in rules.lines() {
        let line = line.trim();
        assert!(
            !line.starts_with("runbook:"),
            "relative runbook left: {line}"
        );
        if let Some(name) = line.strip_prefix("- alert: ") {
            current = Some(name.trim().to_string());
            alerts.insert(name.trim().to_string(), (false, None));
        } else if let Some(name) = &current {
            let entry = alerts.get_mut(name).expect("inserted");
            if line.starts_with("description: ") && line.len() > "description: \"\"".len() {
                entry.0 = true;
            } else if let Some(url) = line.strip_prefix("runbook_url: ") {
                entry.1 = Some(url.trim_matches('"').to_string());
            }
        }
    }
    assert!(alerts.len() >= 16, "{} alerts", alerts.len());
    let mut bases = BTreeSet::new();
    for (name, (described, url)) in &alerts {
        assert!(described, "{name} has no description");
        let url = url
            .as_ref()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        assert!(
            url.starts_with("https://") || url.starts_with("http://"),
            "{name}: runbook_url {url} is not absolute"
        );
        let (base, anchor) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} has no anchor"));
        assert!(
            base.ends_with("OPERATIONS.md") || base.contains("OPERATIONS"),
            "{name}: {url}"
        );
        bases.insert(base.to_string());
        assert_eq!(anchor, name.to_lowercase(), "{name}: its own section");
        assert!(
            anchors.contains(anchor),
            "{name}: docs/OPERATIONS.md has no heading with anchor #{anchor}"
        );
    }
    assert_eq!(bases.len(), 1, "one base for every link: {bases:?}");

    // The unit tests expect the same links (set-runbook-base.sh rewrites both files).
    let tests =
        std::fs::read_to_string(root.join("ops/prometheus/alerts.test.yml")).expect("tests");
    let base = bases.into_iter().next().expect("a base");
    for line in tests.lines().map(str::trim) {
        if let Some(url) = line.strip_prefix("runbook_url: ") {
            let url = url.trim_matches('"');
            assert!(
                url.starts_with(&format!("{base}#")),
                "alerts.test.yml: {url}"
            );
        }
    }
}
