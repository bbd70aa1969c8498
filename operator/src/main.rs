//! `fintech-operator`: reconciles `FintechPipeline` resources into the pipeline's workloads.
//!
//! The controller itself is not built yet; this binary only reports that, so that nothing
//! deploys it believing it works.

fn main() -> std::process::ExitCode {
    eprintln!(
        "fintech-operator {}: the FintechPipeline controller is not implemented yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}
