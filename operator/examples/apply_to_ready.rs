//! Benchmark: the time from creating a `FintechPipeline` to all of its children existing and
//! its status written, with the operator running as its own process.
//!
//! ```text
//! cargo build --release -p fintech-operator --bins --examples
//! target/release/examples/apply_to_ready --runs 20 --json out.json
//!
//! or as the `operator` stage of `scripts/bench.sh`
//! ```
//!
//! Needs a cluster in `KUBECONFIG` (the test environment's kube-apiserver will do:
//! `scripts/testenv.sh up`). It installs or updates the CRD first, so that it runs from a
//! clean start, then starts the release `fintech-operator` built next to it, watching a fresh
//! namespace, and removes the namespace at the end.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use fintech_operator::crd::FintechPipeline;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::conditions::is_crd_established;
use kube::runtime::wait::await_condition;
use kube::{Api, Client, CustomResourceExt};

/// Flags of the benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Pipelines to create, one after the other.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// The operator binary; by default the one built alongside this example.
    #[arg(long)]
    operator: Option<std::path::PathBuf>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Kills the operator when the benchmark ends, however it ends.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::try_default().await?;
    install_crd(&client).await?;
    let namespace = format!("bench-operator-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: named(&namespace),
                ..Namespace::default()
            },
        )
        .await?;
    let result = measure(&args, &client, &namespace).await;
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await?;
    result
}

/// Installs the CRD this build serves, or brings an installed one up to date, and waits
/// until the API server serves it.
async fn install_crd(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = FintechPipeline::crd();
    let name = crd.metadata.name.clone().context("the CRD has a name")?;
    crds.patch(
        &name,
        &PatchParams::apply("fintech-bench").force(),
        &Patch::Apply(&crd),
    )
    .await
    .context("installing the FintechPipeline CRD")?;
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(crds, &name, is_crd_established()),
    )
    .await
    .context("the FintechPipeline CRD was not established within 60 s")??;
    Ok(())
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

async fn measure(args: &Args, client: &Client, namespace: &str) -> anyhow::Result<()> {
    // With its Secrets present the pipeline takes the full path: every child, then Pending.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for (name, keys) in [
        (
            "fintech-minio",
            &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"][..],
        ),
        ("fintech-postgres", &["url"][..]),
    ] {
        let secret = Secret {
            metadata: named(name),
            string_data: Some(keys.iter().map(|k| (k.to_string(), "x".into())).collect()),
            ..Secret::default()
        };
        secrets.create(&PostParams::default(), &secret).await?;
    }
    let binary = match &args.operator {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .map(|dir| dir.join("fintech-operator"))
            .ok_or_else(|| anyhow::anyhow!("cannot find the operator next to this example"))?,
    };
    let _operator = Operator(
        Command::new(&binary)
            .args(["run", "--listen", "127.0.0.1:0"])
            .env("FINTECH_OPERATOR_WATCH_NAMESPACE", namespace)
            .env("RUST_LOG", "warn")
            .spawn()?,
    );
    let pipelines: Api<FintechPipeline> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    // The first pipeline also waits for the operator to start; it is a warm-up, not a sample.
    let mut samples = Vec::with_capacity(args.runs);
    for run in 0..=args.runs {
        let name = format!("bench-{run}");
        let started = Instant::now();
        pipelines
            .create(
                &PostParams::default(),
                &FintechPipeline::new(&name, serde_json::from_str("{}")?),
            )
            .await?;
        let written = |p: Option<&FintechPipeline>| {
            p.and_then(|p| p.status.as_ref())
                .is_some_and(|s| s.observed_generation == Some(1))
        };
        tokio::time::timeout(
            Duration::from_secs(120),
            await_condition(pipelines.clone(), &name, written),
        )
        .await??;
        let took = started.elapsed();
        anyhow::ensure!(
            children(client, namespace, &name).await? == 8,
            "pipeline {name} has a status but not all eight children"
        );
        if run > 0 {
            samples.push(took.as_secs_f64() * 1000.0);
        }
    }
    let peak_rss_mb = peak_rss_mb(_operator.0.id());
    samples.sort_by(f64::total_cmp);
    let percentile = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let p95 = percentile(0.95);
    // The same shape as `fintech-bench`'s reports, so scripts/bench.sh collects it.
    let figures = serde_json::json!({
        "stage": "operator",
        "title": "operator: creating a FintechPipeline to all eight children present and the status written",
        "version": env!("CARGO_PKG_VERSION"),
        "parameters": {"runs": samples.len()},
        "rows": samples.len(),
        "seconds": started.elapsed().as_secs_f64(),
        "apply_to_ready_mean_ms": mean,
        "apply_to_ready_p50_ms": percentile(0.5),
        "apply_to_ready_p95_ms": p95,
        "apply_to_ready_max_ms": percentile(1.0),
        "peak_rss_mb": peak_rss_mb,
        "targets": [{
            "figure": "apply_to_ready_p95_ms",
            "at_most": 2000.0,
            "unit": "ms",
            "value": p95,
            "met": p95 <= 2000.0,
        }],
    });
    println!(
        "operator apply-to-ready over {} pipelines: mean {mean:.0} ms, p50 {:.0} ms, p95 {p95:.0} ms, max {:.0} ms (target p95 <= 2000 ms: {}); operator peak RSS {:.1} MB",
        samples.len(),
        percentile(0.5),
        percentile(1.0),
        if p95 <= 2000.0 { "met" } else { "missed" },
        peak_rss_mb.unwrap_or(f64::NAN),
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
    }
    Ok(())
}

/// The peak resident memory of process `pid` so far, in MB (10^6 bytes), from `VmHWM`.
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024.0 / 1_000_000.0)
}

/// How many of the pipeline's eight children exist: the ConfigMap, three Deployments, three
/// Services and the CronJob.
async fn children(client: &Client, namespace: &str, name: &str) -> anyhow::Result<usize> {
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/instance={name}"));
    let count = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .list(&selector)
        .await?
        .items
        .len()
        + Api::<Deployment>::namespaced(client.clone(), namespace)
            .list(&selector)
            .await?
            .items
            .len()
        + Api::<Service>::namespaced(client.clone(), namespace)
            .list(&selector)
            .await?
            .items
            .len()
        + Api::<CronJob>::namespaced(client.clone(), namespace)
            .list(&selector)
            .await?
            .items
            .len();
    Ok(count)
}
