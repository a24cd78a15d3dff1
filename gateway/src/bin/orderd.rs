//! The `orderd` binary: parses the command line, loads the configuration and runs the server of
//! `orderd_gateway` inside an actix system.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: requests allocate many small values on one thread and
/// free them on another (docs/PERFORMANCE.md, "TCP protocol").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// orderd, an order-processing server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML file layered over the embedded default configuration (ORDERD__SECTION__KEY
    /// environment variables override both).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Internal: rebuilds every shard of the RocksDB store in DB_DIR at low priority and prints
    /// their digests (the backup worker runs it as a child process, see
    /// `orderd_control::backups::ChildDigester`).
    #[command(hide = true)]
    DigestStore { db_dir: PathBuf },
}

/// Exit code of a configuration error (as in sysexits' EX_CONFIG spirit: distinct from a crash).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::DigestStore { db_dir }) = &cli.command {
        return orderd_control::backups::digest_store_main(db_dir);
    }
    let config = match orderd_gateway::Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("orderd: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match actix_web::rt::System::new().block_on(orderd_gateway::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the chain of causes on one line, without a backtrace.
            tracing::error!(message = "orderd failed.", error = format!("{error:#}"));
            eprintln!("orderd: {error:#}");
            ExitCode::FAILURE
        }
    }
}
