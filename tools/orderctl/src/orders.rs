//! `orderctl orders import FILE`: a bulk import of an NDJSON file of orders through
//! `POST /v1/orders/bulk`, in chunks, with a progress bar and a summary; each line's outcome
//! (numbered by its line in FILE) can be written to a results file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use orderd_proto::BulkOutcome;
use serde_json::json;

use crate::client::{Api, CliError};
use crate::progress::stderr_is_terminal;
use crate::table::Table;
use crate::{print_json, Outcome, Output};

#[derive(Subcommand, Debug)]
pub enum OrdersAction {
    /// Place the orders of an NDJSON file (one `POST /v1/orders` body per line, plus
    /// `idempotency_key`) through POST /v1/orders/bulk, in chunks; exit 1 when a line failed.
    /// A rerun of the same file is safe for lines with keys: they answer their first outcome
    Import {
        /// The NDJSON file; blank lines are skipped
        file: PathBuf,
        /// Lines per request (1 to 10000; at most the server's orders.bulk_max)
        #[arg(long, value_name = "N", default_value_t = 1000,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        chunk: u32,
        /// Write every line's outcome here, as NDJSON numbered by FILE's lines
        #[arg(long, value_name = "FILE")]
        results: Option<PathBuf>,
    },
}

/// Runs one `orders` subcommand.
pub fn run(api: &Api, out: Output, action: &OrdersAction) -> Outcome {
    api.require_key()?;
    match action {
        OrdersAction::Import {
            file,
            chunk,
            results,
        } => import(api, out, file, *chunk as usize, results.as_ref()),
    }
}

/// What an import found: placed orders, and failed lines counted by error code.
#[derive(Default)]
struct Summary {
    lines: usize,
    placed: usize,
    failed: BTreeMap<String, usize>,
}

fn import(
    api: &Api,
    out: Output,
    file: &PathBuf,
    chunk: usize,
    results: Option<&PathBuf>,
) -> Outcome {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Usage(format!("{}: cannot read it: {e}", file.display())))?;
    // (line number in the file, the line)
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| !line.trim().is_empty())
        .collect();
    let mut sink = match results {
        Some(path) => Some(std::fs::File::create(path).map_err(|e| {
            CliError::Usage(format!(
                "--results {}: cannot create it: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    let bar = ProgressBar::with_draw_target(
        Some(lines.len() as u64),
        if stderr_is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    )
    .with_style(
        ProgressStyle::with_template(
            "{prefix:>9} [{bar:32}] {pos}/{len} orders {per_sec} eta {eta}",
        )
        .expect("the bar template is valid")
        .progress_chars("=> "),
    )
    .with_prefix("import");
    let mut summary = Summary::default();
    for part in lines.chunks(chunk) {
        let body: String = part.iter().map(|(_, line)| format!("{line}\n")).collect();
        let answer = api.send_ndjson("/v1/orders/bulk", body)?;
        let outcomes: Vec<BulkOutcome> = answer
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(|e| CliError::BadAnswer {
                path: "/v1/orders/bulk".to_string(),
                detail: format!("an answer line is not an outcome ({e})"),
            })?;
        if outcomes.len() != part.len() {
            return Err(CliError::BadAnswer {
                path: "/v1/orders/bulk".to_string(),
                detail: format!(
                    "{} outcomes for {} lines (the answer was cut off; lines from file line {} on may not have been placed: rerun the file, keys make it safe)",
                    outcomes.len(),
                    part.len(),
                    part[0].0
                ),
            });
        }
        for mut outcome in outcomes {
            // The server numbers the lines of the request from 1.
            let Some((file_line, _)) = outcome.line.checked_sub(1).and_then(|i| part.get(i)) else {
                return Err(CliError::BadAnswer {
                    path: "/v1/orders/bulk".to_string(),
                    detail: format!("an outcome for line {} of {}", outcome.line, part.len()),
                });
            };
            outcome.line = *file_line;
            summary.lines += 1;
            match &outcome.error {
                None => summary.placed += 1,
                Some(problem) => *summary.failed.entry(problem.code.clone()).or_default() += 1,
            }
            if let Some(sink) = sink.as_mut() {
                let line = serde_json::to_string(&outcome).expect("an outcome serializes");
                writeln!(sink, "{line}")
                    .map_err(|e| CliError::Failed(format!("writing the results file: {e}")))?;
            }
        }
        bar.inc(part.len() as u64);
    }
    bar.finish_and_clear();
    let failed: usize = summary.failed.values().sum();
    match out {
        Output::Json => print_json(&json!({
            "lines": summary.lines,
            "placed": summary.placed,
            "failed": failed,
            "failed_by_code": summary.failed,
        })),
        Output::Table => {
            let mut table = Table::new(&["OUTCOME", "LINES"]);
            table.row(vec!["placed".to_string(), summary.placed.to_string()]);
            for (code, count) in &summary.failed {
                table.row(vec![code.clone(), count.to_string()]);
            }
            table.row(vec!["total".to_string(), summary.lines.to_string()]);
            print!("{}", table.render());
        }
    }
    Ok(failed == 0)
}
