//! `orderctl backup`: take a backup, list them, run a restore drill (over the server's HTTP API,
//! `/v1/ops/backups`), and restore one into a data directory offline, with orderd stopped,
//! through the engine's backup repository and the gateway's off-site store.

use crate::client::{decode, pages, query_value, Api, CliError};
use crate::progress::{stderr_is_terminal, Bars, Spinner};
use crate::table::{or_dash, Table};
use crate::{print_json, Outcome, Output};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::HumanBytes;
use orderd_config::Config;
use orderd_config::ADMIN_KEY_FILE;
use orderd_control::offsite::Offsite;
use orderd_control::revocations::Revocations;
use orderd_engine::backup::{
    valid_id, BackupError, Manifest, ManifestKeys, Repo, RestoreOptions, SCRATCH_DIR,
};
use orderd_proto::{BackupResponse, BackupVerifyResponse};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `GET /v1/ops/backups` answers per page at most.
const LIST_PAGE_MAX: u16 = 1000;
/// Pages `backup list` follows at most.
const LIST_PAGES_MAX: usize = 1000;

#[derive(Subcommand, Debug)]
pub enum BackupAction {
    /// Take a backup now (POST /v1/ops/backups); its off-site copy follows in the background
    Create(WaitArgs),
    /// List backups, newest first (GET /v1/ops/backups, every page unless --limit)
    List {
        /// At most this many, the newest (1–1000)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: Option<u16>,
    },
    /// Run a restore drill of a backup on the server (POST /v1/ops/backups/ID/verify); exit 1
    /// when it fails
    Verify {
        /// Backup id (`bak_…`)
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Restore a backup into a data directory, offline (orderd stopped; no server, no key)
    ///
    /// The backup is verified first (every file's SHA-256, then every shard rebuilt and its
    /// digests compared with the manifest) and refused, exit 1, when anything differs; the
    /// target is then left as it was. The master key is not part of a backup: start orderd on
    /// the restored directory with the key file (or `ORDERD_MASTER_KEY`) it had.
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// How long to wait for the server's answer (a backup or a drill of a large store takes a
    /// while); connecting is still limited by --timeout-ms
    #[arg(long, value_name = "S", default_value_t = 3600,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub wait_timeout_s: u64,
}

/// Where `backup restore` reads the backup from.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The local backup directory (`backup.dir`)
    Local,
    /// The off-site store (`backup.offsite`), downloaded into `<backup-dir>/scratch` first
    Offsite,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Offsite => "offsite",
        }
    }
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Backup id (`bak_…`)
    pub id: String,
    /// Data directory to restore into: absent or empty, or with --replace [default:
    /// storage.data_dir of the configuration]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// orderd's configuration file; without it the embedded default. `ORDERD__*` variables
    /// apply on top, as for orderd. Relative paths are relative to the current directory.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Local backup directory [default: backup.dir of the configuration]
    #[arg(long, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Off-site store, a directory or `s3://bucket/prefix` [default: backup.offsite of the
    /// configuration]
    #[arg(long, value_name = "SPEC")]
    pub offsite: Option<String>,
    /// Where the backup is read from
    #[arg(long, value_enum, default_value_t = Source::Local)]
    pub from: Source,
    /// Move a non-empty data directory aside to `<dir>.replaced-<unix time>` instead of
    /// refusing (a store that a running orderd holds is always refused)
    #[arg(long)]
    pub replace: bool,
    /// Restore even when the backup's manifest is not authenticated (made before manifests
    /// were signed, or altered to look so): trust every copy of the backup directory first.
    /// Its files are still checked against the manifest; a warning is printed
    #[arg(long)]
    pub allow_unauthenticated: bool,
}

/// Runs one `backup` subcommand.
pub fn run(api: &Api, timeout: Duration, out: Output, action: &BackupAction) -> Outcome {
    match action {
        BackupAction::Create(wait) => create(api, timeout, out, wait),
        BackupAction::List { limit } => list(api, out, *limit),
        BackupAction::Verify { id, wait } => verify(api, timeout, out, id, wait),
        BackupAction::Restore(args) => restore(out, args),
    }
}

fn verified_cell(verified: Option<bool>) -> String {
    verified.map_or("-".to_string(), |v| v.to_string())
}

/// Bytes for people, without a space (`38.62KiB`) so that every table cell is one word.
fn size_cell(bytes: u64) -> String {
    HumanBytes(bytes).to_string().replace(' ', "")
}

/// Milliseconds as one word (`1234ms`).
fn ms_cell(ms: u64) -> String {
    format!("{ms}ms")
}

fn create(api: &Api, timeout: Duration, out: Output, wait: &WaitArgs) -> Outcome {
    api.require_key()?;
    let api = api.patient(timeout, Duration::from_secs(wait.wait_timeout_s));
    let path = "/v1/ops/backups";
    let body = {
        let _spinner = Spinner::start(
            "backup",
            "the server is taking a backup",
            stderr_is_terminal(),
        );
        api.expect("POST", path, None)?
    };
    let backup: BackupResponse = decode(path, &body)?;
    match out {
        Output::Json => print_json(&body),
        Output::Table => {
            let mut table = Table::new(&[
                "ID",
                "CREATED_AT",
                "SIZE",
                "NEW",
                "OFFSITE",
                "VERIFIED",
                "DURATION",
            ]);
            table.row(vec![
                backup.id.clone(),
                backup.created_at.clone(),
                size_cell(backup.size_bytes),
                size_cell(backup.new_bytes),
                backup.offsite.clone(),
                verified_cell(backup.verified),
                ms_cell(backup.duration_ms),
            ]);
            print!("{}", table.render());
        }
    }
    let orders: u64 = backup.shards.iter().map(|s| s.orders).sum();
    eprintln!(
        "orderctl: created {}: {} shards, {orders} orders, {} files; off-site copy {}",
        backup.id,
        backup.shards.len(),
        backup.files,
        backup.offsite
    );
    Ok(true)
}

fn list(api: &Api, out: Output, limit: Option<u16>) -> Outcome {
    api.require_key()?;
    let walk = pages::<BackupResponse>(
        api,
        "/v1/ops/backups",
        LIST_PAGES_MAX,
        limit.map(usize::from),
        |got| match limit {
            Some(limit) => usize::from(limit) - got,
            None => usize::from(LIST_PAGE_MAX),
        },
    )?;
    if walk.next.is_some() && limit.is_none() {
        eprintln!(
            "orderctl: stopped after {LIST_PAGES_MAX} pages of backups; the list is incomplete"
        );
    }
    let (backups, raw, after) = (walk.items, walk.raw, walk.next);
    match out {
        Output::Json => print_json(&json!({"items": raw, "next": after})),
        Output::Table => {
            let mut table = Table::new(&[
                "ID",
                "CREATED_AT",
                "SIZE",
                "OFFSITE",
                "VERIFIED",
                "VERIFIED_AT",
            ]);
            for b in backups {
                table.row(vec![
                    b.id,
                    b.created_at,
                    size_cell(b.size_bytes),
                    b.offsite,
                    verified_cell(b.verified),
                    or_dash(b.verified_at.as_deref()),
                ]);
            }
            print!("{}", table.render());
        }
    }
    Ok(true)
}

fn verify(api: &Api, timeout: Duration, out: Output, id: &str, wait: &WaitArgs) -> Outcome {
    api.require_key()?;
    let api = api.patient(timeout, Duration::from_secs(wait.wait_timeout_s));
    let path = format!("/v1/ops/backups/{}/verify", query_value(id));
    let body = {
        let _spinner = Spinner::start(
            "verify",
            &format!("the server is restoring {id} to check it"),
            stderr_is_terminal(),
        );
        api.expect("POST", &path, None)?
    };
    let report: BackupVerifyResponse = decode(&path, &body)?;
    match out {
        Output::Json => print_json(&body),
        Output::Table => {
            let mut table = Table::new(&["FIELD", "VALUE"]);
            table.row(vec!["id".into(), report.id.clone()]);
            table.row(vec!["verified".into(), report.verified.to_string()]);
            table.row(vec!["source".into(), report.source.clone()]);
            table.row(vec!["duration".into(), ms_cell(report.duration_ms)]);
            table.row(vec!["detail".into(), report.detail.clone()]);
            print!("{}", table.render());
        }
    }
    if !report.verified {
        eprintln!(
            "orderctl: backup {} failed verification: {}",
            report.id, report.detail
        );
    }
    Ok(report.verified)
}

/// Where a restore reads and writes, once the configuration and the flags are combined.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    id: String,
    from: Source,
    data_dir: PathBuf,
    backup_dir: PathBuf,
    offsite: String,
    offsite_attempts: u32,
    offsite_retry_base: Duration,
    replace: bool,
    allow_unauthenticated: bool,
    /// The manifest keys of the configured master key (why not, when it cannot be read).
    keys: Result<ManifestKeys, String>,
}

impl Plan {
    /// The flags over the configuration (`--config`, else the embedded default; then
    /// `ORDERD__*`).
    fn new(args: &RestoreArgs) -> Result<Plan, CliError> {
        let config = Config::load(args.config.as_deref()).map_err(|e| {
            let file = args
                .config
                .as_ref()
                .map_or(String::new(), |f| format!("--config {}: ", f.display()));
            CliError::Usage(format!("{file}{e}"))
        })?;
        Ok(Plan {
            id: args.id.clone(),
            from: args.from,
            data_dir: args
                .data_dir
                .clone()
                .unwrap_or(config.storage.data_dir.clone()),
            backup_dir: args.backup_dir.clone().unwrap_or(config.backup.dir.clone()),
            offsite: args
                .offsite
                .clone()
                .unwrap_or(config.backup.offsite.clone()),
            offsite_attempts: config.backup.offsite_attempts,
            offsite_retry_base: Duration::from_millis(config.backup.offsite_retry_base_ms),
            replace: args.replace,
            allow_unauthenticated: args.allow_unauthenticated,
            keys: orderd_control::backups::manifest_keys(&config).map_err(|e| {
                format!(
                    "the master key (it authenticates backup manifests; give orderctl the \
                     orderd configuration or ORDERD_MASTER_KEY): {e}"
                )
            }),
        })
    }

    /// `<backup-dir>/scratch/restore-<id>`: where an off-site copy is downloaded to.
    fn staging(&self) -> PathBuf {
        self.backup_dir
            .join(SCRATCH_DIR)
            .join(format!("restore-{}", self.id))
    }
}

/// What a restore did.
struct Restored {
    manifest: Manifest,
    /// Where the previous data directory went (`--replace` of a non-empty one).
    moved: Option<PathBuf>,
}

/// `backup restore`: offline, from the local backup directory or the off-site store.
pub fn restore(out: Output, args: &RestoreArgs) -> Outcome {
    let plan = Plan::new(args)?;
    let bars = Bars::stderr();
    let restored = restore_plan(&plan, &bars);
    bars.finish();
    let Restored { manifest, moved } = restored?;
    let orders: u64 = manifest.shards.iter().map(|s| s.orders).sum();
    let created_at = created_at(&manifest);
    let moved_text = moved.as_ref().map(|p| p.display().to_string());
    match out {
        Output::Json => {
            let shards: Vec<Value> = manifest
                .shards
                .iter()
                .map(|s| json!({"id": s.shard, "seq": s.seq, "orders": s.orders}))
                .collect();
            print_json(&json!({
                "id": manifest.id,
                "created_at": created_at,
                "source": plan.from.name(),
                "data_dir": plan.data_dir.display().to_string(),
                "shards": shards,
                "orders": orders,
                "files": manifest.files.len(),
                "size_bytes": manifest.size_bytes,
                "replaced": moved_text,
            }));
        }
        Output::Table => {
            let mut table = Table::new(&["FIELD", "VALUE"]);
            table.row(vec!["id".into(), manifest.id.clone()]);
            table.row(vec!["created_at".into(), created_at]);
            table.row(vec!["source".into(), plan.from.name().into()]);
            table.row(vec!["data_dir".into(), plan.data_dir.display().to_string()]);
            table.row(vec!["shards".into(), manifest.shards.len().to_string()]);
            table.row(vec!["orders".into(), orders.to_string()]);
            table.row(vec!["size".into(), size_cell(manifest.size_bytes)]);
            table.row(vec!["replaced".into(), or_dash(moved_text.as_deref())]);
            print!("{}", table.render());
        }
    }
    if let Some(moved) = &moved {
        eprintln!(
            "orderctl: the previous data directory was moved to {}",
            moved.display()
        );
    }
    eprintln!(
        "orderctl: restored {} into {}; start orderd on it with the same master key",
        manifest.id,
        plan.data_dir.display()
    );
    Ok(true)
}

/// RFC 3339 UTC of a manifest's creation time.
fn created_at(manifest: &Manifest) -> String {
    chrono::DateTime::from_timestamp_micros(manifest.created_at_us).map_or_else(
        || manifest.created_at_us.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// Restores as `plan` says, reporting to `progress`.
fn restore_plan(plan: &Plan, progress: &Bars) -> Result<Restored, CliError> {
    let id = plan.id.as_str();
    if !valid_id(id) {
        return Err(CliError::Failed(format!(
            "no backup {id}: backup ids look like bak_000001_0a1b2c3d (see `orderctl backup list`)"
        )));
    }
    let keys = plan.keys.clone().map_err(CliError::Failed)?;
    match plan.from {
        Source::Local => {
            let repo = Repo::new(&plan.backup_dir, keys);
            let manifest = repo.manifest(id).map_err(|error| match error {
                BackupError::NotFound(_) => CliError::Failed(format!(
                    "no backup {id} in {}; if only its off-site copy is left, pass --from offsite",
                    plan.backup_dir.display()
                )),
                other => restore_error(other),
            })?;
            restore_from(&repo, manifest, plan, progress)
        }
        Source::Offsite => {
            // A target in the way is found before a long download, not after.
            if !plan.replace && dir_has_entries(&plan.data_dir) {
                return Err(CliError::Failed(format!(
                    "{} is not empty; stop orderd and pass --replace to move it aside",
                    plan.data_dir.display()
                )));
            }
            let staging = plan.staging();
            remove_dir(&staging)?;
            let outcome = download_and_restore(plan, keys, &staging, progress);
            let cleanup = remove_dir(&staging);
            let restored = outcome?;
            if let Err(error) = cleanup {
                eprintln!("orderctl: warning: {error}");
            }
            Ok(restored)
        }
    }
}

fn download_and_restore(
    plan: &Plan,
    keys: ManifestKeys,
    staging: &Path,
    progress: &Bars,
) -> Result<Restored, CliError> {
    std::fs::create_dir_all(staging)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", staging.display())))?;
    let store = Offsite::open(
        &plan.offsite,
        plan.offsite_attempts,
        plan.offsite_retry_base,
        keys.clone(),
    )
    .map_err(|e| CliError::Failed(format!("off-site store: {e}")))?;
    let manifest = store
        .download(&plan.id, staging, progress)
        .map_err(|e| CliError::Failed(format!("downloading {} failed: {e}", plan.id)))?;
    restore_from(&Repo::new(staging, keys), manifest, plan, progress)
}

fn restore_from(
    repo: &Repo,
    manifest: Manifest,
    plan: &Plan,
    progress: &Bars,
) -> Result<Restored, CliError> {
    if !manifest.authenticated() && plan.allow_unauthenticated {
        eprintln!(
            "orderctl: WARNING: the manifest of {} is NOT AUTHENTICATED (made before manifests \
             were signed, or altered to look so); restoring it because --allow-unauthenticated \
             was given",
            plan.id
        );
    }
    let options = RestoreOptions {
        replace: plan.replace,
        allow_unauthenticated: plan.allow_unauthenticated,
    };
    let revocations = revocations(plan, repo.keys());
    let moved = repo
        .restore(&plan.id, &plan.data_dir, options, progress)
        .map_err(restore_error)?;
    match revocations.apply(&plan.data_dir) {
        Ok(applied) if applied.is_empty() => {}
        Ok(applied) => eprintln!(
            "orderctl: re-applied {} key revocation(s) kept beside the backups: {}",
            applied.len(),
            applied.join(", ")
        ),
        Err(error) => {
            return Err(CliError::Failed(format!(
                "restored {} into {}, but re-applying the key revocations failed: {error}; \
                 revoke them again before starting orderd",
                plan.id,
                plan.data_dir.display()
            )))
        }
    }
    install_customer_keys(plan, repo.keys(), moved.as_deref())?;
    if let Some(old) = &moved {
        keep_admin_key(old, &plan.data_dir);
    }
    Ok(Restored { manifest, moved })
}

/// Installs the customer key store into the restored data directory: a backup holds none
/// (docs/ARCHITECTURE.md, erasure), so it is the current one, merged from every copy at hand:
/// beside the backups, the data directory the restore replaced, and off-site when reachable.
/// A key erased in any of them stays erased, so the restored backup's erased customers read
/// as erased.
fn install_customer_keys(
    plan: &Plan,
    keys: &ManifestKeys,
    moved: Option<&Path>,
) -> Result<(), CliError> {
    use orderd_control::customer_keys::{Records, CUSTOMER_KEYS_FILE};
    let target = plan.data_dir.join(CUSTOMER_KEYS_FILE);
    let mut all = Records::default();
    let mut sources = 0;
    // Oldest first: where a key is in several copies, the newest wrapping wins (a merge keeps
    // every tombstone whatever the order).
    let reachable = plan.from == Source::Offsite
        || plan.offsite.starts_with("s3://")
        || Path::new(&plan.offsite).is_dir();
    if reachable {
        let fetched = Offsite::open(
            &plan.offsite,
            plan.offsite_attempts,
            plan.offsite_retry_base,
            keys.clone(),
        )
        .and_then(|store| store.customer_keys());
        match fetched {
            Ok(offsite) => {
                all.merge(offsite);
                sources += 1;
            }
            Err(error) => eprintln!("orderctl: warning: off-site customer keys: {error}"),
        }
    }
    let mut local = vec![plan.backup_dir.join(CUSTOMER_KEYS_FILE), target.clone()];
    local.extend(moved.map(|old| old.join(CUSTOMER_KEYS_FILE)));
    for path in local.iter().filter(|p| p.exists()) {
        match Records::read(path) {
            Ok(records) => {
                all.merge(records);
                sources += 1;
            }
            Err(error) => eprintln!("orderctl: warning: {error}"),
        }
    }
    if sources == 0 {
        eprintln!(
            "orderctl: warning: no copy of the customer key store was found (beside the \
             backups, off-site or in a replaced data directory); customers sealed under their \
             own keys will not open"
        );
        return Ok(());
    }
    all.write_atomic(&target).map_err(|error| {
        CliError::Failed(format!(
            "restored {} into {}, but installing the customer key store failed: {error}",
            plan.id,
            plan.data_dir.display()
        ))
    })?;
    eprintln!(
        "orderctl: installed the customer key store ({} keys, {} erased)",
        all.keys.len(),
        all.erased.len()
    );
    Ok(())
}

/// The key revocations kept beside the backups: the local list, and the off-site one when
/// restoring from off-site or when the off-site store is S3 or an existing directory. An
/// unreadable list is a warning (the restore goes on with what can be read).
fn revocations(plan: &Plan, keys: &ManifestKeys) -> Revocations {
    let mut all = Revocations::default();
    match Revocations::read_local(&plan.backup_dir, keys) {
        Ok(local) => all.merge(local),
        Err(error) => eprintln!("orderctl: warning: local {error}"),
    }
    let reachable = plan.from == Source::Offsite
        || plan.offsite.starts_with("s3://")
        || Path::new(&plan.offsite).is_dir();
    if reachable {
        let fetched = Offsite::open(
            &plan.offsite,
            plan.offsite_attempts,
            plan.offsite_retry_base,
            keys.clone(),
        )
        .and_then(|store| store.revocations());
        match fetched {
            Ok(offsite) => all.merge(offsite),
            Err(error) => eprintln!("orderctl: warning: off-site {error}"),
        }
    }
    all
}

/// A backup holds no `admin.key` (a plaintext secret); when the restore replaced a data
/// directory, its `admin.key` comes along, so the admin key (if the restored key table has it)
/// is still at hand. A failure is only a warning: the restore is done.
fn keep_admin_key(old: &Path, data_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let (from, to) = (old.join(ADMIN_KEY_FILE), data_dir.join(ADMIN_KEY_FILE));
    if !from.is_file() || to.exists() {
        return;
    }
    let copied = std::fs::copy(&from, &to)
        .and_then(|_| std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)));
    if let Err(error) = copied {
        eprintln!(
            "orderctl: warning: cannot copy {} to {}: {error}",
            from.display(),
            to.display()
        );
    }
}

/// A failed restore as orderctl reports it (exit 1 for all of them).
fn restore_error(error: BackupError) -> CliError {
    match error {
        BackupError::Refused { .. } => CliError::Failed(format!("refused: {error}")),
        other => CliError::Failed(other.to_string()),
    }
}

fn dir_has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

fn remove_dir(dir: &Path) -> Result<(), CliError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CliError::Failed(format!(
            "cannot remove {}: {e}",
            dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("orderctl").chain(args.iter().copied()))
    }

    fn action(args: &[&str]) -> BackupAction {
        match parse(args).expect("parses").command {
            Command::Backup(action) => action,
            other => panic!("not a backup command: {other:?}"),
        }
    }

    /// A fresh empty directory under the system's temporary directory.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "orderctl-test-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    fn plan(root: &Path, from: Source) -> Plan {
        Plan {
            id: "bak_000001_0000abcd".into(),
            from,
            data_dir: root.join("data"),
            backup_dir: root.join("backups"),
            offsite: root.join("offsite").display().to_string(),
            offsite_attempts: 1,
            offsite_retry_base: Duration::from_millis(1),
            replace: false,
            allow_unauthenticated: false,
            keys: Ok(test_keys()),
        }
    }

    fn test_keys() -> ManifestKeys {
        ManifestKeys::new(
            orderd_engine::backup::ManifestKey::derive([4; 8], &[4; 32]),
            [],
        )
    }

    #[test]
    fn create_list_verify_parse() {
        match action(&["backup", "create"]) {
            BackupAction::Create(wait) => assert_eq!(wait.wait_timeout_s, 3600),
            other => panic!("{other:?}"),
        }
        match action(&["backup", "list", "--limit", "5"]) {
            BackupAction::List { limit } => assert_eq!(limit, Some(5)),
            other => panic!("{other:?}"),
        }
        match action(&["backup", "list"]) {
            BackupAction::List { limit } => assert_eq!(limit, None),
            other => panic!("{other:?}"),
        }
        match action(&["backup", "verify", "bak_1", "--wait-timeout-s", "9"]) {
            BackupAction::Verify { id, wait } => {
                assert_eq!(id, "bak_1");
                assert_eq!(wait.wait_timeout_s, 9);
            }
            other => panic!("{other:?}"),
        }
        // Global flags go anywhere, as for every other command.
        let cli = parse(&["backup", "list", "--output", "json"]).expect("parses");
        assert_eq!(cli.output, Output::Json);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["backup"][..],
            &["backup", "list", "--limit", "0"],
            &["backup", "list", "--limit", "1001"],
            &["backup", "verify"],
            &["backup", "create", "--wait-timeout-s", "0"],
            &["backup", "restore"],
            &["backup", "restore", "bak_1", "--from", "tape"],
            &["backup", "restore", "bak_1", "--replace=yes"],
        ] {
            let error = parse(bad).expect_err(&format!("{bad:?} must not parse"));
            assert_eq!(error.exit_code(), 2, "{bad:?}: {error}");
        }
    }

    #[test]
    fn restore_parses_with_defaults() {
        match action(&["backup", "restore", "bak_000001_0000abcd"]) {
            BackupAction::Restore(args) => {
                assert_eq!(args.id, "bak_000001_0000abcd");
                assert_eq!(args.from, Source::Local);
                assert!(!args.replace);
                assert_eq!(args.data_dir, None);
                assert_eq!(args.config, None);
                assert_eq!(args.backup_dir, None);
                assert_eq!(args.offsite, None);
            }
            other => panic!("{other:?}"),
        }
        match action(&[
            "backup",
            "restore",
            "bak_2",
            "--data-dir",
            "/d",
            "--backup-dir",
            "/b",
            "--offsite",
            "s3://bucket/p",
            "--from",
            "offsite",
            "--replace",
        ]) {
            BackupAction::Restore(args) => {
                assert_eq!(args.from, Source::Offsite);
                assert!(args.replace);
                assert_eq!(args.data_dir, Some(PathBuf::from("/d")));
                assert_eq!(args.backup_dir, Some(PathBuf::from("/b")));
                assert_eq!(args.offsite.as_deref(), Some("s3://bucket/p"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_plan_takes_flags_over_the_configuration() {
        let root = temp_dir("plan");
        let config = root.join("orderd.toml");
        std::fs::write(
            &config,
            "[storage]\ndata_dir = \"/srv/data\"\n[backup]\ndir = \"/srv/backups\"\n\
             offsite = \"/mnt/offsite\"\noffsite_attempts = 3\noffsite_retry_base_ms = 250\n",
        )
        .expect("write config");
        let args = |extra: &[&str]| {
            let mut all = vec![
                "backup",
                "restore",
                "bak_1",
                "--config",
                config.to_str().expect("path"),
            ];
            all.extend_from_slice(extra);
            match action(&all) {
                BackupAction::Restore(args) => args,
                other => panic!("{other:?}"),
            }
        };
        let from_file = Plan::new(&args(&[])).expect("plan");
        if std::env::vars().any(|(name, _)| name.starts_with("ORDERD__")) {
            // The environment of this test run overrides the file; the rest still holds.
            return;
        }
        assert_eq!(from_file.data_dir, PathBuf::from("/srv/data"));
        assert_eq!(from_file.backup_dir, PathBuf::from("/srv/backups"));
        assert_eq!(from_file.offsite, "/mnt/offsite");
        assert_eq!(from_file.offsite_attempts, 3);
        assert_eq!(from_file.offsite_retry_base, Duration::from_millis(250));
        assert_eq!(
            from_file.staging(),
            PathBuf::from("/srv/backups/scratch/restore-bak_1")
        );
        let flags = Plan::new(&args(&[
            "--data-dir",
            "/x/data",
            "--backup-dir",
            "/x/b",
            "--offsite",
            "/x/o",
        ]))
        .expect("plan");
        assert_eq!(flags.data_dir, PathBuf::from("/x/data"));
        assert_eq!(flags.backup_dir, PathBuf::from("/x/b"));
        assert_eq!(flags.offsite, "/x/o");

        let missing = args(&[]);
        let missing = RestoreArgs {
            config: Some(root.join("nope.toml")),
            ..missing
        };
        let error = Plan::new(&missing).expect_err("missing config file");
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("nope.toml"), "{error}");
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn an_unknown_local_backup_suggests_the_offsite_copy() {
        let root = temp_dir("local-missing");
        let error = restore_plan(&plan(&root, Source::Local), &Bars::new(false))
            .err()
            .expect("no such backup");
        assert_eq!(error.exit_code(), 1);
        let text = error.to_string();
        assert!(
            text.contains("no backup bak_000001_0000abcd") && text.contains("--from offsite"),
            "{text}"
        );
        assert!(!root.join("data").exists(), "the target was not created");
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn a_malformed_id_is_an_unknown_backup() {
        let root = temp_dir("bad-id");
        for id in ["bak_../../etc", "key_1", ""] {
            let mut plan = plan(&root, Source::Offsite);
            plan.id = id.to_string();
            let error = restore_plan(&plan, &Bars::new(false))
                .err()
                .expect("refused");
            assert_eq!(error.exit_code(), 1);
            assert!(error.to_string().contains("no backup"), "{error}");
        }
        assert!(!root.join("backups").exists(), "nothing was staged");
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn an_unknown_offsite_backup_fails_and_leaves_no_staging() {
        let root = temp_dir("offsite-missing");
        let plan = plan(&root, Source::Offsite);
        let error = restore_plan(&plan, &Bars::new(false))
            .err()
            .expect("no such backup off-site");
        assert_eq!(error.exit_code(), 1);
        assert!(error.to_string().contains("bak_000001_0000abcd"), "{error}");
        assert!(!plan.staging().exists(), "staging removed");
        assert!(!root.join("data").exists(), "the target was not created");
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn an_occupied_target_is_refused_before_any_download() {
        let root = temp_dir("occupied");
        let plan = plan(&root, Source::Offsite);
        std::fs::create_dir_all(&plan.data_dir).expect("data dir");
        std::fs::write(plan.data_dir.join("keep"), b"x").expect("write");
        let error = restore_plan(&plan, &Bars::new(false))
            .err()
            .expect("occupied");
        assert_eq!(error.exit_code(), 1);
        assert!(error.to_string().contains("--replace"), "{error}");
        assert_eq!(
            std::fs::read(plan.data_dir.join("keep")).expect("kept"),
            b"x"
        );
        assert!(!plan.staging().exists());
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn refusals_read_refused() {
        let error = restore_error(BackupError::Refused {
            id: "bak_1".into(),
            detail: "rocksdb/shared_checksum/1.sst does not match its SHA-256".into(),
        });
        assert_eq!(error.exit_code(), 1);
        assert!(
            error
                .to_string()
                .starts_with("refused: backup bak_1 failed verification"),
            "{error}"
        );
        let error = restore_error(BackupError::Target("in the way".into()));
        assert_eq!(error.to_string(), "in the way");
        assert_eq!(error.exit_code(), 1);
    }

    #[test]
    fn table_cells_are_one_word() {
        assert_eq!(size_cell(0), "0B");
        assert_eq!(size_cell(39_547), "38.62KiB");
        assert_eq!(ms_cell(12), "12ms");
    }

    #[test]
    fn created_at_is_rfc3339_utc() {
        let manifest = Manifest {
            id: "bak_1".into(),
            engine_id: 1,
            created_at_us: 1_700_000_000_123_456,
            shard_count: 0,
            shards: Vec::new(),
            files: Vec::new(),
            size_bytes: 0,
            new_bytes: 0,
            duration_ms: 0,
            audit_anchor: None,
            shard_anchors: Vec::new(),
            signed_by: None,
        };
        assert_eq!(created_at(&manifest), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// A store of `shards` empty shards plus some filler (so the backup has SST files), backed
    /// up into `<root>/backups` with a `keys.json` beside it, as the server does.
    fn make_backup(root: &Path, shards: u16) -> (Repo, Manifest) {
        use orderd_engine::backup::NoProgress;
        use orderd_engine::{RocksStorage, Storage};
        use orderd_storage::{Family, Write};
        let live = RocksStorage::open(&root.join("live").join("db")).expect("open store");
        let mut writes = vec![Write::Put {
            family: Family::Control,
            key: orderd_engine::engine::SHARD_COUNT_KEY.to_vec(),
            value: shards.to_be_bytes().to_vec(),
        }];
        for i in 0..2000u32 {
            writes.push(Write::Put {
                family: Family::Control,
                key: format!("test/filler/{i:05}").into_bytes(),
                value: vec![(i % 251) as u8; 64],
            });
        }
        live.write(writes, true).expect("write");
        let repo = Repo::new(root.join("backups"), test_keys());
        let manifest = repo
            .create(
                &live,
                &root.join("checkpoint"),
                &vec![0; usize::from(shards)],
                &[("keys.json", b"{\"keys\":[]}".to_vec())],
                None,
                &NoProgress,
            )
            .expect("backup");
        (repo, manifest)
    }

    fn siblings(dir: &Path) -> Vec<String> {
        let name = dir.file_name().expect("name").to_string_lossy().to_string();
        let mut found: Vec<String> = std::fs::read_dir(dir.parent().expect("parent"))
            .expect("read parent")
            .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(&format!("{name}.")))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn restores_a_local_backup_and_replaces_only_when_asked() {
        let root = temp_dir("restore-local");
        let (_repo, manifest) = make_backup(&root, 2);
        let mut plan = plan(&root, Source::Local);
        plan.id = manifest.id.clone();

        let restored = restore_plan(&plan, &Bars::new(false)).expect("restored");
        assert_eq!(restored.manifest, manifest);
        assert_eq!(restored.moved, None);
        assert!(plan.data_dir.join("db").join("CURRENT").is_file());
        assert_eq!(
            std::fs::read(plan.data_dir.join("keys.json")).expect("keys.json restored"),
            b"{\"keys\":[]}"
        );
        let store = orderd_engine::RocksStorage::open(&plan.data_dir.join("db")).expect("opens");
        let (count, shards) = orderd_engine::backup::digest_store(&store).expect("digests");
        assert_eq!(count, 2);
        assert_eq!(
            shards.iter().map(|s| s.state_digest).collect::<Vec<_>>(),
            manifest
                .shards
                .iter()
                .map(|s| s.state_digest)
                .collect::<Vec<_>>()
        );

        // Held by a running process (here: this one): refused even with --replace.
        plan.replace = true;
        let error = restore_plan(&plan, &Bars::new(false))
            .err()
            .expect("a held store is refused");
        assert_eq!(error.exit_code(), 1);
        assert!(error.to_string().contains("still running"), "{error}");
        drop(store);

        // Not empty, no --replace: refused, nothing moved.
        plan.replace = false;
        let error = restore_plan(&plan, &Bars::new(false))
            .err()
            .expect("occupied");
        assert!(error.to_string().contains("--replace"), "{error}");
        assert_eq!(siblings(&plan.data_dir), Vec::<String>::new());

        // --replace: the old directory is moved aside and returned; its admin.key comes along.
        std::fs::write(plan.data_dir.join(ADMIN_KEY_FILE), "secret\n").expect("admin.key");
        plan.replace = true;
        let restored = restore_plan(&plan, &Bars::new(false)).expect("replaced");
        assert_eq!(
            std::fs::read_to_string(plan.data_dir.join(ADMIN_KEY_FILE)).expect("admin.key kept"),
            "secret\n"
        );
        let moved = restored.moved.expect("moved aside");
        assert!(
            moved.join("db").join("CURRENT").is_file(),
            "{}",
            moved.display()
        );
        assert!(plan.data_dir.join("db").join("CURRENT").is_file());
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn a_damaged_backup_is_refused_and_the_target_left_alone() {
        let root = temp_dir("restore-damaged");
        let (repo, manifest) = make_backup(&root, 2);
        let largest = manifest
            .files
            .iter()
            .filter(|f| f.path.contains("/shared_checksum/"))
            .max_by_key(|f| f.size)
            .expect("a shared file");
        let path = repo.dir().join(&largest.path);
        let mut bytes = std::fs::read(&path).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");

        let mut plan = plan(&root, Source::Local);
        plan.id = manifest.id.clone();
        plan.replace = true;
        std::fs::create_dir_all(&plan.data_dir).expect("target");
        std::fs::write(plan.data_dir.join("marker"), b"old").expect("marker");
        let error = restore_plan(&plan, &Bars::new(false))
            .err()
            .expect("refused");
        assert_eq!(error.exit_code(), 1);
        let text = error.to_string();
        assert!(text.starts_with("refused: "), "{text}");
        assert!(text.contains(&largest.path), "{text}");
        assert_eq!(
            std::fs::read(plan.data_dir.join("marker")).expect("kept"),
            b"old"
        );
        assert_eq!(
            std::fs::read_dir(&plan.data_dir).expect("read").count(),
            1,
            "nothing added to the target"
        );
        assert_eq!(siblings(&plan.data_dir), Vec::<String>::new());
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn restores_from_the_offsite_copy_when_the_local_one_is_gone() {
        let root = temp_dir("restore-offsite");
        let (repo, manifest) = make_backup(&root, 3);
        let mut plan = plan(&root, Source::Offsite);
        plan.id = manifest.id.clone();
        let store =
            Offsite::open(&plan.offsite, 1, Duration::from_millis(1), test_keys()).expect("open");
        store
            .upload(repo.dir(), &manifest, &orderd_engine::backup::NoProgress)
            .expect("upload");
        drop(store);
        std::fs::remove_dir_all(repo.dir()).expect("lose the local copy");

        let mut local = plan.clone();
        local.from = Source::Local;
        let error = restore_plan(&local, &Bars::new(false))
            .err()
            .expect("no local copy");
        assert!(error.to_string().contains("--from offsite"), "{error}");

        let restored = restore_plan(&plan, &Bars::new(false)).expect("restored");
        assert_eq!(restored.manifest, manifest);
        assert!(plan.data_dir.join("db").join("CURRENT").is_file());
        assert!(plan.data_dir.join("keys.json").is_file());
        assert!(!plan.staging().exists(), "the staging copy is removed");
        std::fs::remove_dir_all(&root).expect("clean up");
    }
}
