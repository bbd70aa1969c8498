//! `fintech transform`: the gold layer. Plain SQL models in `sql/models` (staging →
//! intermediate → marts) run in dependency order, incremental models merge with a lookback
//! window, and data tests check the result. Replaces the reference system's dbt project and
//! its scheduler.

pub mod project;
pub mod runner;

pub use project::{Project, ProjectError};
pub use runner::{
    DEFAULT_LOOKBACK, NodeError, NodeKind, NodeStatus, TransformError, TransformOptions,
    TransformReport, run,
};
