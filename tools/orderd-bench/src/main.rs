//! The `orderd-bench` binary: parses the command line, runs the comparison on a tokio runtime
//! and prints the report (markdown table or JSON) on stdout; or, as the `serve-bare` subcommand,
//! serves the http-bare target's handler (for the bench itself, and for wrk in
//! `ops/wrk-compare.sh`).

use std::process::ExitCode;

use clap::Parser;
use orderd_bench::cli::{Command, Options, Output};

fn main() -> ExitCode {
    let options = Options::parse();
    if let Some(Command::ServeBare { listen, workers }) = &options.command {
        return match orderd_bench::targets::http_bare::serve(listen, *workers) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("orderd-bench serve-bare: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let args: Vec<String> = std::env::args().collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // inproc's server CPU is every thread of this process but these (cpu.rs).
        .thread_name(orderd_bench::cpu::CLIENT_THREAD_NAME)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("orderd-bench: start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(orderd_bench::run::run(&options, &args)) {
        Ok(report) => {
            match options.output {
                Output::Table => print!("{}", report.markdown()),
                Output::Json => println!("{}", report.json()),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("orderd-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
