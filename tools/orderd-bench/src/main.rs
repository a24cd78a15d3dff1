//! The `orderd-bench` binary: parses the command line, runs the comparison on a tokio runtime
//! and prints the report (markdown table or JSON) on stdout; or, as the hidden `serve-bare`
//! subcommand, serves the http-bare target's handler.

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
        .thread_name("bench-client")
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
