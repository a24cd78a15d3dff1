//! orderctl: the on-call CLI of orderd. Mostly a thin client of the server's public HTTP API
//! (wire types from `orderd-proto`): health, inspection, shards, incidents, quarantined
//! commands, API keys, the audit chain, backups (create, list, restore drills), the live
//! settings and change requests, bulk import of orders. One
//! command works without the server:
//! `backup restore` restores a backup into a data directory with orderd stopped, through the
//! public library APIs of the engine (the backup repository) and of the gateway (its
//! configuration and the off-site store); it needs no key.
//!
//! Data goes to stdout (a table, or with `--output json` the server's JSON, pretty); messages,
//! errors and progress (only when stderr is a terminal) go to stderr. Exit codes: 0 ok, 1 a
//! check failed, the server answered with an error or a restore could not be done, 2 usage
//! error (including a missing key), 3 server unreachable. `docs/OPERATIONS.md`, "orderctl",
//! shows every command with its output.

mod backup;
mod changes;
mod client;
mod orders;
mod progress;
mod quarantine;
mod table;

use clap::{Args, Parser, Subcommand, ValueEnum};
use client::{decode, http_error, pages, query_value, Api, CliError};
use orderd_proto::{
    AuditVerifyResponse, CreatedKeyResponse, IncidentResponse, InspectionResponse, KeyResponse,
    Problem, ShardResponse,
};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};
use table::{or_dash, Table};

/// The server when neither `--server` nor `ORDERD_SERVER` names one.
const SERVER_DEFAULT: &str = "http://127.0.0.1:8080";
/// Pages `keys list` follows at most (1000 keys each).
const KEY_PAGES_MAX: usize = 1000;
/// How often `shards restart --wait` polls `GET /v1/ops/shards`.
const WAIT_POLL_INTERVAL_MS: u64 = 100;

#[derive(Parser, Debug)]
#[command(
    name = "orderctl",
    version,
    about = "On-call CLI of orderd: health, inspection, shards, incidents, quarantined commands, \
API keys, audit, backups, settings and changes",
    after_help = "Exit codes: 0 ok; 1 a check failed (not ready, inspection fail, audit chain \
broken, backup drill failed, a change rolled back automatically under `changes apply --wait`) \
or the server answered with an error (printed as `code: detail`, \
also for 401 and 403) or a restore could not be done (unknown backup, `refused: ...` when the \
backup fails verification, a data directory in the way); 2 usage error or no key; 3 server \
unreachable.\n\nBackups: `backup create|list|verify` ask the server; `backup restore` works \
offline on the files, with orderd stopped, and needs no key.\n\nChanges: `changes request` \
(admin or operator), `changes approve` (an admin other than the requester), `changes apply` \
(the server then watches error rate and p99 and sets the old value back if they get worse), \
`changes rollback`.\n\nQuarantine: a command that made a shard panic twice is refused with \
422 quarantined; once the bug is fixed, `quarantine lift FINGERPRINT` (admin or operator) \
accepts it again."
)]
struct Cli {
    /// Base URL of the orderd HTTP API [env: ORDERD_SERVER] [default: http://127.0.0.1:8080]
    #[arg(long, global = true, value_name = "URL")]
    server: Option<String>,

    /// API key secret [env: ORDERD_KEY]; not needed by `health`
    #[arg(
        long,
        global = true,
        value_name = "SECRET",
        conflicts_with = "key_file"
    )]
    key: Option<String>,

    /// File holding the API key secret, e.g. `data/admin.key` (surrounding whitespace trimmed)
    #[arg(long, global = true, value_name = "PATH")]
    key_file: Option<PathBuf>,

    /// PEM file of the CA that signed the server's certificate, for an `https://` --server
    /// (orderd with `http.tls_cert_file`); trusted instead of the public CAs [env: ORDERD_CA_FILE]
    #[arg(long, global = true, value_name = "PATH")]
    ca_file: Option<PathBuf>,

    /// `table` for people, `json` for scripts (the server's JSON, pretty)
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,

    /// Time limit of each HTTP request, connect to last byte
    #[arg(long, global = true, value_name = "MS", default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// GET /livez and /readyz (no key needed); exit 1 when not ready, with the reasons
    Health,
    /// Run the health inspection now (GET /v1/ops/inspection); exit 1 when overall is fail
    Inspect,
    /// List the shards (GET /v1/ops/shards), or restart one
    Shards {
        #[command(subcommand)]
        action: Option<ShardsAction>,
    },
    /// List incidents (GET /v1/ops/incidents), oldest first
    Incidents(IncidentsArgs),
    /// Commands refused because they made a shard panic twice: list them, lift one
    #[command(subcommand)]
    Quarantine(quarantine::QuarantineAction),
    /// Create, list and revoke API keys
    #[command(subcommand)]
    Keys(KeysAction),
    /// The audit trail
    #[command(subcommand)]
    Audit(AuditAction),
    /// Take, list and verify backups on the server; restore one offline
    #[command(subcommand)]
    Backup(backup::BackupAction),
    /// The settings: value, type, bounds, risk, and the change that set each (GET /v1/ops/config)
    Config,
    /// Change a setting: request, approve (a second admin), apply and watch, roll back
    #[command(subcommand)]
    Changes(changes::ChangesAction),
    /// Orders: import an NDJSON file of them (POST /v1/orders/bulk)
    #[command(subcommand)]
    Orders(orders::OrdersAction),
}

#[derive(Subcommand, Debug)]
enum ShardsAction {
    /// Rebuild shard N from storage (POST /v1/ops/shards/N/restart)
    Restart {
        /// Shard number
        id: u16,
        /// Wait until the shard runs again (exit 1 if it fails or the wait times out)
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits
        #[arg(long, value_name = "S", default_value_t = 60, requires = "wait")]
        wait_timeout_s: u64,
    },
}

#[derive(Args, Debug)]
struct IncidentsArgs {
    /// Only incidents found at or after this RFC 3339 time; without it, the newest
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    since: Option<String>,
    /// At most this many (1–1000; the server's default is 100)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: Option<u16>,
}

#[derive(Subcommand, Debug)]
enum KeysAction {
    /// Create a key (POST /v1/keys); its secret is printed this once
    Create {
        /// 1 to 100 characters
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["admin", "frontend", "customer", "logistics", "analyst", "operator", "auditor", "merchandiser"])]
        role: String,
        /// Required for (and only for) the `customer` role
        #[arg(long, value_name = "ID")]
        customer_id: Option<String>,
        /// Who holds the key (1 to 100 characters); yours when absent. Four-eyes approval
        /// needs an admin of another owner
        #[arg(long)]
        owner: Option<String>,
    },
    /// List keys, without secrets (GET /v1/keys, every page)
    List,
    /// Revoke a key (DELETE /v1/keys/ID); it fails from then on
    Revoke {
        /// Key id (`key_…`)
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditAction {
    /// Recompute the hash chain (GET /v1/audit/verify); exit 1 when it is broken
    Verify,
}

fn parse_rfc3339(text: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|_| text.to_string())
        .map_err(|e| format!("not an RFC 3339 time ({e}), e.g. 2026-11-26T00:00:00Z"))
}

/// What a command found: `Ok(true)` all good, `Ok(false)` a check failed (exit 1).
type Outcome = Result<bool, CliError>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("orderctl: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn run(cli: &Cli) -> Outcome {
    // Offline: no server, no key (a bad --key-file must not stop a restore).
    if let Command::Backup(backup::BackupAction::Restore(args)) = &cli.command {
        return backup::restore(cli.output, args);
    }
    let server = cli
        .server
        .clone()
        .or_else(|| non_empty_env("ORDERD_SERVER"))
        .unwrap_or_else(|| SERVER_DEFAULT.to_string());
    let key = resolve_key(cli)?;
    let timeout = Duration::from_millis(cli.timeout_ms);
    let tls = match cli
        .ca_file
        .clone()
        .or_else(|| non_empty_env("ORDERD_CA_FILE").map(PathBuf::from))
    {
        Some(path) => Some(client::tls_trusting(&path)?),
        None => None,
    };
    let api = Api::new(&server, key, timeout, tls);
    let out = cli.output;
    match &cli.command {
        Command::Health => health(&api, out),
        Command::Inspect => inspect(&api, out),
        Command::Shards { action: None } => shards(&api, out),
        Command::Shards {
            action:
                Some(ShardsAction::Restart {
                    id,
                    wait,
                    wait_timeout_s,
                }),
        } => restart(
            &api,
            out,
            *id,
            wait.then(|| Duration::from_secs(*wait_timeout_s)),
        ),
        Command::Incidents(args) => incidents(&api, out, args),
        Command::Quarantine(action) => quarantine::run(&api, out, action),
        Command::Keys(KeysAction::Create {
            name,
            role,
            customer_id,
            owner,
        }) => keys_create(
            &api,
            out,
            name,
            role,
            customer_id.as_deref(),
            owner.as_deref(),
        ),
        Command::Keys(KeysAction::List) => keys_list(&api, out),
        Command::Keys(KeysAction::Revoke { id }) => keys_revoke(&api, id),
        Command::Audit(AuditAction::Verify) => audit_verify(&api, out),
        Command::Backup(action) => backup::run(&api, timeout, out, action),
        Command::Config => changes::config(&api, out),
        Command::Changes(action) => changes::run(&api, out, action),
        Command::Orders(action) => orders::run(&api, out, action),
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `--key`, else `--key-file`, else `ORDERD_KEY`; none is fine here (`health` needs none).
fn resolve_key(cli: &Cli) -> Result<Option<String>, CliError> {
    if let Some(key) = &cli.key {
        return Ok(Some(key.trim().to_string()).filter(|k| !k.is_empty()));
    }
    if let Some(path) = &cli.key_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!(
                "--key-file {}: cannot read it: {e}",
                path.display()
            ))
        })?;
        let key = text.trim();
        if key.is_empty() {
            return Err(CliError::Usage(format!(
                "--key-file {}: the file is empty",
                path.display()
            )));
        }
        return Ok(Some(key.to_string()));
    }
    Ok(non_empty_env("ORDERD_KEY").map(|k| k.trim().to_string()))
}

fn print_json(body: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(body).expect("a JSON value always serializes")
    );
}

fn health(api: &Api, out: Output) -> Outcome {
    let live = api.send("GET", "/livez", None)?;
    let ready = api.send("GET", "/readyz", None)?;
    let is_live = live.status == 200;
    let is_ready = ready.status == 200;
    let reasons = if is_ready {
        Vec::new()
    } else {
        match serde_json::from_value::<Problem>(ready.body.clone()) {
            Ok(problem) => problem.reasons.unwrap_or_else(|| vec![problem.detail]),
            Err(_) => vec![format!("status {}: {}", ready.status, ready.body)],
        }
    };
    match out {
        Output::Json => print_json(&json!({"livez": live.body, "readyz": ready.body})),
        Output::Table => {
            let mut table = Table::new(&["PROBE", "HTTP", "RESULT"]);
            let verdict = |ok: bool, good: &str, bad: &str| if ok { good } else { bad }.to_string();
            table.row(vec![
                "livez".into(),
                live.status.to_string(),
                verdict(is_live, "live", "not live"),
            ]);
            let mut result = verdict(is_ready, "ready", "not ready");
            if !reasons.is_empty() {
                result = format!("{result}: {}", reasons.join("; "));
            }
            table.row(vec!["readyz".into(), ready.status.to_string(), result]);
            print!("{}", table.render());
        }
    }
    if !is_live {
        eprintln!("orderctl: /livez answered {}", live.status);
    }
    for reason in &reasons {
        eprintln!("orderctl: not ready: {reason}");
    }
    Ok(is_live && is_ready)
}

fn inspect(api: &Api, out: Output) -> Outcome {
    api.require_key()?;
    let path = "/v1/ops/inspection";
    let body = api.get(path)?;
    let report: InspectionResponse = decode(path, &body)?;
    match out {
        Output::Json => print_json(&body),
        Output::Table => {
            let mut table = Table::new(&["CHECK", "STATUS", "VALUE", "DETAIL"]);
            for check in &report.checks {
                table.row(vec![
                    check.name.clone(),
                    check.status.clone(),
                    check.value.map_or("-".to_string(), |v| format!("{v:.1}")),
                    check.detail.clone(),
                ]);
            }
            print!("{}", table.render());
            println!(
                "overall: {} (at {}, {} ms)",
                report.overall, report.at, report.duration_ms
            );
        }
    }
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.status == "fail")
        .map(|c| c.name.as_str())
        .collect();
    if report.overall == "fail" {
        eprintln!("orderctl: inspection failed: {}", failed.join(", "));
        return Ok(false);
    }
    Ok(true)
}

fn shard_rows(shards: &[ShardResponse]) -> String {
    let mut table = Table::new(&[
        "ID", "STATE", "RESTARTS", "MAILBOX", "LAST_SEQ", "ORDERS", "SKUS",
    ]);
    for s in shards {
        table.row(vec![
            s.id.to_string(),
            s.state.clone(),
            s.restarts.to_string(),
            s.mailbox_depth.to_string(),
            s.last_seq.to_string(),
            s.orders.to_string(),
            s.skus.to_string(),
        ]);
    }
    table.render()
}

fn get_shards(api: &Api) -> Result<(Value, Vec<ShardResponse>), CliError> {
    let path = "/v1/ops/shards";
    let body = api.get(path)?;
    let shards = decode(path, &body)?;
    Ok((body, shards))
}

fn shards(api: &Api, out: Output) -> Outcome {
    api.require_key()?;
    let (body, shards) = get_shards(api)?;
    match out {
        Output::Json => print_json(&body),
        Output::Table => print!("{}", shard_rows(&shards)),
    }
    Ok(true)
}

fn restart(api: &Api, out: Output, id: u16, wait: Option<Duration>) -> Outcome {
    api.require_key()?;
    // The restart count before the request: `--wait` ends when it has grown and the shard runs.
    let restarts_before = match wait {
        Some(_) => get_shards(api)?
            .1
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.restarts),
        None => None,
    };
    let path = format!("/v1/ops/shards/{id}/restart");
    let accepted = api.expect("POST", &path, None)?;
    let Some(timeout) = wait else {
        match out {
            Output::Json => print_json(&accepted),
            Output::Table => println!("shard {id}: restarting"),
        }
        return Ok(true);
    };
    // The server accepted the id, so the shard exists; before it, it may have been missing only
    // if the listing raced a change of shard count, which orderd does not do at run time.
    let restarts_before = restarts_before.unwrap_or(0);
    eprintln!(
        "orderctl: shard {id} restarting; waiting up to {} s",
        timeout.as_secs()
    );
    let deadline = Instant::now() + timeout;
    loop {
        let (body, shards) = get_shards(api)?;
        let index = shards.iter().position(|s| s.id == id);
        if let Some(index) = index {
            let shard = &shards[index];
            let done = shard.restarts > restarts_before;
            if done && shard.state == "running" {
                match out {
                    Output::Json => print_json(&body[index]),
                    Output::Table => print!("{}", shard_rows(std::slice::from_ref(shard))),
                }
                return Ok(true);
            }
            if done && shard.state == "failed" {
                if out == Output::Table {
                    print!("{}", shard_rows(std::slice::from_ref(shard)));
                }
                eprintln!("orderctl: shard {id} failed to restart; see `orderctl incidents`");
                return Ok(false);
            }
        }
        if Instant::now() >= deadline {
            eprintln!(
                "orderctl: shard {id} not running again after {} s",
                timeout.as_secs()
            );
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(WAIT_POLL_INTERVAL_MS));
    }
}

fn incidents(api: &Api, out: Output, args: &IncidentsArgs) -> Outcome {
    api.require_key()?;
    let mut query = Vec::new();
    if let Some(since) = &args.since {
        query.push(format!("since={}", query_value(since)));
    }
    if let Some(limit) = args.limit {
        query.push(format!("limit={limit}"));
    }
    let mut path = "/v1/ops/incidents".to_string();
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let body = api.get(&path)?;
    let incidents: Vec<IncidentResponse> = decode(&path, &body)?;
    match out {
        Output::Json => print_json(&body),
        Output::Table => {
            let mut table = Table::new(&[
                "ID",
                "AT",
                "COMPONENT",
                "KIND",
                "RECOVERED_AT",
                "DETAIL",
                "ACTION",
            ]);
            for i in incidents {
                table.row(vec![
                    i.id,
                    i.at,
                    i.component,
                    i.kind,
                    or_dash(i.recovered_at.as_deref()),
                    i.detail,
                    i.action,
                ]);
            }
            print!("{}", table.render());
        }
    }
    Ok(true)
}

fn keys_create(
    api: &Api,
    out: Output,
    name: &str,
    role: &str,
    customer_id: Option<&str>,
    owner: Option<&str>,
) -> Outcome {
    api.require_key()?;
    let mut request = json!({"name": name, "role": role});
    if let Some(customer_id) = customer_id {
        request["customer_id"] = json!(customer_id);
    }
    if let Some(owner) = owner {
        request["owner"] = json!(owner);
    }
    let path = "/v1/keys";
    let body = api.expect("POST", path, Some(&request))?;
    let created: CreatedKeyResponse = decode(path, &body)?;
    match out {
        Output::Json => print_json(&body),
        Output::Table => {
            let mut table = Table::new(&["FIELD", "VALUE"]);
            table.row(vec!["id".into(), created.id.clone()]);
            table.row(vec!["name".into(), created.name]);
            table.row(vec!["role".into(), created.role]);
            table.row(vec!["owner".into(), created.owner]);
            table.row(vec![
                "created_by".into(),
                or_dash(created.created_by.as_deref()),
            ]);
            table.row(vec![
                "customer_id".into(),
                or_dash(created.customer_id.as_deref()),
            ]);
            table.row(vec!["created_at".into(), created.created_at]);
            table.row(vec!["secret".into(), created.secret]);
            print!("{}", table.render());
        }
    }
    eprintln!(
        "orderctl: created {}; its secret is shown only now: store it",
        created.id
    );
    Ok(true)
}

fn keys_list(api: &Api, out: Output) -> Outcome {
    api.require_key()?;
    let walk = pages::<KeyResponse>(api, "/v1/keys", KEY_PAGES_MAX, None, |_| 1000)?;
    if walk.next.is_some() {
        eprintln!("orderctl: stopped after {KEY_PAGES_MAX} pages of keys; the list is incomplete");
    }
    let (keys, raw, after) = (walk.items, walk.raw, walk.next);
    match out {
        Output::Json => print_json(&json!({"items": raw, "next": after})),
        Output::Table => {
            let mut table = Table::new(&[
                "ID",
                "NAME",
                "ROLE",
                "OWNER",
                "CREATED_BY",
                "CUSTOMER_ID",
                "CREATED_AT",
            ]);
            for k in keys {
                table.row(vec![
                    k.id,
                    k.name,
                    k.role,
                    k.owner,
                    or_dash(k.created_by.as_deref()),
                    or_dash(k.customer_id.as_deref()),
                    k.created_at,
                ]);
            }
            print!("{}", table.render());
        }
    }
    Ok(true)
}

fn keys_revoke(api: &Api, id: &str) -> Outcome {
    api.require_key()?;
    let path = format!("/v1/keys/{}", query_value(id));
    let answer = api.send("DELETE", &path, None)?;
    if !(200..300).contains(&answer.status) {
        return Err(http_error(answer));
    }
    eprintln!("orderctl: revoked {id}");
    Ok(true)
}

fn audit_verify(api: &Api, out: Output) -> Outcome {
    api.require_key()?;
    let path = "/v1/audit/verify";
    let body = api.get(path)?;
    let verdict: AuditVerifyResponse = decode(path, &body)?;
    match out {
        Output::Json => print_json(&body),
        Output::Table => {
            let mut table = Table::new(&["FIELD", "VALUE"]);
            table.row(vec!["ok".into(), verdict.ok.to_string()]);
            table.row(vec!["entries".into(), verdict.entries.to_string()]);
            table.row(vec![
                "first_bad_seq".into(),
                verdict
                    .first_bad_seq
                    .map_or("-".to_string(), |s| s.to_string()),
            ]);
            table.row(vec![
                "last_hash".into(),
                or_dash(verdict.last_hash.as_deref()),
            ]);
            table.row(vec!["detail".into(), verdict.detail.clone()]);
            print!("{}", table.render());
        }
    }
    if !verdict.ok {
        eprintln!(
            "orderctl: audit chain broken at seq {}: {}",
            verdict
                .first_bad_seq
                .map_or("?".to_string(), |s| s.to_string()),
            verdict.detail
        );
    }
    Ok(verdict.ok)
}
