//! `fintech-bench`: measures a stage of the pipeline; `scripts/bench.sh` runs every stage.

use clap::Parser;
use fintech_bench::BenchArgs;
use fintech_workers::telemetry::{self, LogFormat};

/// Throughput, latency and peak memory of one stage of the fintech pipeline.
#[derive(Debug, Parser)]
#[command(name = "fintech-bench", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "FINTECH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,

    #[command(flatten)]
    bench: BenchArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, "info");
    match cli.bench.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
