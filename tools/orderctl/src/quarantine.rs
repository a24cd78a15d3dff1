//! `orderctl quarantine`: the commands that made a shard panic twice and are refused with
//! `422 quarantined` (`GET /v1/ops/quarantine`, every page), and lifting one once the bug behind
//! it is fixed (`DELETE /v1/ops/quarantine/FINGERPRINT`; the server audits the lift and writes
//! it as a `quarantine_lifted` incident).

use crate::client::{decode, pages, Api};
use crate::table::Table;
use crate::{print_json, Outcome, Output};
use clap::Subcommand;
use orderd_proto::QuarantineResponse;
use serde_json::json;

/// Pages `quarantine list` follows at most (1000 commands each).
const LIST_PAGES_MAX: usize = 1000;

#[derive(Subcommand, Debug)]
pub enum QuarantineAction {
    /// List quarantined commands, oldest first (GET /v1/ops/quarantine, every page)
    List,
    /// Lift a quarantine (DELETE /v1/ops/quarantine/FINGERPRINT): the command is accepted
    /// again, and quarantined anew if it panics twice more; admin or operator
    Lift {
        /// The command's fingerprint, 16 hex digits, as `quarantine list`, the `quarantine`
        /// incident and the `422 quarantined` answer show it
        #[arg(value_parser = parse_fingerprint)]
        fingerprint: String,
    },
}

/// A FINGERPRINT argument: exactly 16 hex digits, in lower case from here on.
fn parse_fingerprint(text: &str) -> Result<String, String> {
    if text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err("a fingerprint is 16 hex digits, e.g. 5c1f0e6b2a9d4471".to_string())
    }
}

/// Runs one `quarantine` subcommand.
pub fn run(api: &Api, out: Output, action: &QuarantineAction) -> Outcome {
    api.require_key()?;
    match action {
        QuarantineAction::List => list(api, out),
        QuarantineAction::Lift { fingerprint } => lift(api, out, fingerprint),
    }
}

fn list(api: &Api, out: Output) -> Outcome {
    let walk =
        pages::<QuarantineResponse>(api, "/v1/ops/quarantine", LIST_PAGES_MAX, None, |_| 1000)?;
    if walk.next.is_some() {
        eprintln!(
            "orderctl: stopped after {LIST_PAGES_MAX} pages of quarantined commands; the list is incomplete"
        );
    }
    match out {
        Output::Json => print_json(&json!({"items": walk.raw, "next": walk.next})),
        Output::Table => print!("{}", list_table(&walk.items)),
    }
    if walk.items.is_empty() {
        eprintln!("orderctl: no command is quarantined");
    }
    Ok(true)
}

fn lift(api: &Api, out: Output, fingerprint: &str) -> Outcome {
    let path = format!("/v1/ops/quarantine/{fingerprint}");
    let body = api.expect("DELETE", &path, None)?;
    let lifted: QuarantineResponse = decode(&path, &body)?;
    match out {
        Output::Json => print_json(&body),
        Output::Table => print!("{}", lifted_table(&lifted)),
    }
    eprintln!(
        "orderctl: lifted the quarantine of {} ({}); the command is accepted again",
        lifted.fingerprint, lifted.command
    );
    Ok(true)
}

/// One row per quarantined command; the panic message last, as it is the longest.
fn list_table(entries: &[QuarantineResponse]) -> String {
    let mut table = Table::new(&["FINGERPRINT", "COMMAND", "QUARANTINED_AT", "MESSAGE"]);
    for e in entries {
        table.row(vec![
            e.fingerprint.clone(),
            e.command.clone(),
            e.quarantined_at.clone(),
            e.message.clone(),
        ]);
    }
    table.render()
}

/// The lifted command, field by field.
fn lifted_table(entry: &QuarantineResponse) -> String {
    let mut table = Table::new(&["FIELD", "VALUE"]);
    table.row(vec!["fingerprint".into(), entry.fingerprint.clone()]);
    table.row(vec!["command".into(), entry.command.clone()]);
    table.row(vec!["quarantined_at".into(), entry.quarantined_at.clone()]);
    table.row(vec!["message".into(), entry.message.clone()]);
    table.row(vec!["state".into(), "lifted".into()]);
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{http_error, Answer, CliError};
    use crate::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("orderctl").chain(args.iter().copied()))
    }

    fn action(args: &[&str]) -> QuarantineAction {
        match parse(args).expect("parses").command {
            Command::Quarantine(action) => action,
            other => panic!("not a quarantine command: {other:?}"),
        }
    }

    fn entry(fingerprint: &str, command: &str, at: &str, message: &str) -> QuarantineResponse {
        QuarantineResponse {
            fingerprint: fingerprint.into(),
            command: command.into(),
            message: message.into(),
            quarantined_at: at.into(),
        }
    }

    #[test]
    fn the_quarantine_commands_parse() {
        assert!(matches!(
            action(&["quarantine", "list"]),
            QuarantineAction::List
        ));
        match action(&["quarantine", "lift", "5c1f0e6b2a9d4471"]) {
            QuarantineAction::Lift { fingerprint } => assert_eq!(fingerprint, "5c1f0e6b2a9d4471"),
            other => panic!("{other:?}"),
        }
        // Upper case is the same fingerprint; the server is asked in lower case.
        match action(&["quarantine", "lift", "5C1F0E6B2A9D4471"]) {
            QuarantineAction::Lift { fingerprint } => assert_eq!(fingerprint, "5c1f0e6b2a9d4471"),
            other => panic!("{other:?}"),
        }
        let cli = parse(&["quarantine", "list", "--output", "json"]).expect("parses");
        assert_eq!(cli.output, Output::Json);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["quarantine"][..],
            &["quarantine", "lift"],
            &["quarantine", "lift", "5c1f0e6b2a9d447"],
            &["quarantine", "lift", "5c1f0e6b2a9d44711"],
            &["quarantine", "lift", "5c1f0e6b2a9d447g"],
            &["quarantine", "lift", "0x1f0e6b2a9d4471"],
            &["quarantine", "lift", "5c1f0e6b2a9d4471", "00000000000000a1"],
            &["quarantine", "list", "5c1f0e6b2a9d4471"],
            &["quarantine", "clear"],
        ] {
            let error = parse(bad).expect_err(&format!("{bad:?} must not parse"));
            assert_eq!(error.exit_code(), 2, "{bad:?}: {error}");
        }
        let error = parse(&["quarantine", "lift", "xyz"]).expect_err("not a fingerprint");
        assert!(error.to_string().contains("16 hex digits"), "{error}");
    }

    #[test]
    fn the_list_table() {
        let entries = [
            entry(
                "5c1f0e6b2a9d4471",
                "create_customer",
                "2026-11-26T02:01:07.114385Z",
                "index out of bounds: the len is 0 but the index is 3",
            ),
            entry(
                "00000000000000a1",
                "adjust_stock",
                "2026-11-26T02:05:00.000001Z",
                "failpoint: panic on SKU FAILPOINT-PANIC-Q-3",
            ),
        ];
        assert_eq!(
            list_table(&entries),
            "\
FINGERPRINT       COMMAND          QUARANTINED_AT               MESSAGE
5c1f0e6b2a9d4471  create_customer  2026-11-26T02:01:07.114385Z  index out of bounds: the len is 0 but the index is 3
00000000000000a1  adjust_stock     2026-11-26T02:05:00.000001Z  failpoint: panic on SKU FAILPOINT-PANIC-Q-3
"
        );
        assert_eq!(
            list_table(&[]),
            "FINGERPRINT  COMMAND  QUARANTINED_AT  MESSAGE\n"
        );
    }

    #[test]
    fn the_lifted_table() {
        assert_eq!(
            lifted_table(&entry(
                "00000000000000a1",
                "adjust_stock",
                "2026-11-26T02:05:00.000001Z",
                "failpoint: panic on SKU FAILPOINT-PANIC-Q-3",
            )),
            "\
FIELD           VALUE
fingerprint     00000000000000a1
command         adjust_stock
quarantined_at  2026-11-26T02:05:00.000001Z
message         failpoint: panic on SKU FAILPOINT-PANIC-Q-3
state           lifted
"
        );
    }

    #[test]
    fn a_lift_of_an_unknown_fingerprint_is_an_error_answer() {
        let error = http_error(Answer {
            status: 404,
            body: json!({"type": "/problems/not_found", "title": "Not found", "status": 404,
                         "detail": "no quarantined command 00000000000000ff", "code": "not_found"}),
        });
        assert!(matches!(error, CliError::Http { status: 404, .. }));
        assert_eq!(error.exit_code(), 1);
        assert_eq!(
            error.to_string(),
            "not_found: no quarantined command 00000000000000ff"
        );
        // What the list answers decodes into the wire type.
        let body = json!({"fingerprint": "00000000000000a1", "command": "adjust_stock",
                          "message": "m", "quarantined_at": "2026-11-26T02:05:00.000001Z"});
        let decoded: QuarantineResponse = decode("/p", &body).expect("decodes");
        assert_eq!(decoded.fingerprint, "00000000000000a1");
        let error = decode::<QuarantineResponse>("/p", &json!([])).expect_err("not an entry");
        assert_eq!(error.exit_code(), 1);
    }
}
