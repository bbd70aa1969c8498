//! `fintech-operator`: reconciles `FintechPipeline` resources into the pipeline's workloads.

use clap::{Parser, Subcommand};

/// The fintech pipeline operator.
#[derive(Debug, Parser)]
#[command(name = "fintech-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the FintechPipeline CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller (not built yet).
    Run,
}

fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", fintech_operator::crd_yaml());
            std::process::ExitCode::SUCCESS
        }
        Command::Run => {
            eprintln!("fintech-operator: the FintechPipeline controller is not implemented yet");
            std::process::ExitCode::FAILURE
        }
    }
}
