//! The HTTP endpoints of a long-running worker: `/metrics`, `/healthz` and `/readyz`, served
//! by the code the operator shares.

pub use fintech_status_server::{Readiness, serve};
