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
    /// Run the controller until SIGTERM or Ctrl-C.
    Run,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", fintech_operator::crd_yaml());
            std::process::ExitCode::SUCCESS
        }
        Command::Run => {
            tracing_subscriber::fmt()
                .json()
                .with_writer(std::io::stderr)
                .init();
            let client = match kube::Client::try_default().await {
                Ok(client) => client,
                Err(error) => {
                    eprintln!("fintech-operator: cannot reach the Kubernetes API: {error}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let shutdown = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut terminate) => {
                        tokio::select! {
                            _ = terminate.recv() => {}
                            _ = tokio::signal::ctrl_c() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            };
            fintech_operator::controller::run(client, shutdown).await;
            std::process::ExitCode::SUCCESS
        }
    }
}
