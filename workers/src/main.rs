//! `fintech`: the pipeline's workers in one binary.

use clap::Parser;
use fintech_workers::cli::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    fintech_workers::telemetry::init(cli.log_format, cli.command.default_log_level());
    match cli.command.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
