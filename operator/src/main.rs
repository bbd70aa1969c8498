//! `fintech-operator`: reconciles `FintechPipeline` resources into the pipeline's workloads.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fintech_operator::controller::{self, Context};
use fintech_operator::crd::FintechPipeline;
use fintech_operator::metrics::Metrics;
use fintech_status_server::Readiness;
use kube::Api;
use kube::api::ListParams;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

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
    Run(RunArgs),
}

/// Flags of `fintech-operator run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "FINTECH_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,

    /// Watch pipelines in this namespace only (for namespaced RBAC); all namespaces when empty.
    #[arg(long, env = "FINTECH_OPERATOR_WATCH_NAMESPACE", default_value = "")]
    watch_namespace: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", fintech_operator::crd_yaml());
            std::process::ExitCode::SUCCESS
        }
        Command::Run(args) => {
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            match run(args).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    eprintln!("fintech-operator: {error:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API")?;
    let namespace = (!args.watch_namespace.is_empty()).then_some(args.watch_namespace);
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let readiness = Readiness::default();
    let cancel = CancellationToken::new();
    let server =
        fintech_status_server::serve(args.listen, registry, readiness.clone(), cancel.clone())
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
    tokio::spawn(stop_on_signal(cancel.clone()));

    // Ready once the API server serves FintechPipelines: with the CRD missing the operator
    // could do nothing, and says so instead of crashing while an install is still applying it.
    let pipelines: Api<FintechPipeline> = controller::scoped(&client, namespace.as_deref());
    while let Err(error) = pipelines.list(&ListParams::default().limit(1)).await {
        tracing::warn!(%error, "cannot list FintechPipelines yet; is the CRD installed? retrying in 5 s");
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    readiness.set(true);
    tracing::info!(
        namespace = namespace.as_deref().unwrap_or("(all)"),
        "controller starting"
    );
    let stopping = cancel.clone();
    controller::run(Context::new(client, metrics), namespace, async move {
        stopping.cancelled().await
    })
    .await;
    readiness.set(false);
    cancel.cancel();
    let _ = server.await;
    tracing::info!("controller stopped");
    Ok(())
}

/// Cancels `cancel` on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
async fn stop_on_signal(cancel: CancellationToken) {
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
    tracing::info!("shutting down");
    cancel.cancel();
}
