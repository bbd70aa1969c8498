//! The fintech pipeline's workers. Each stage is a module; the `fintech` binary wires them
//! to its subcommands.

pub mod bronze;
pub mod clock;
pub mod event;
pub mod faults;
pub mod kafka;
pub mod kaggle;
pub mod loader;
pub mod producer;
#[cfg(feature = "embedded")]
pub mod quickstart;
pub mod redrive;
pub mod settlement;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod status_server;
pub mod storage;
pub mod streamer;
pub mod synthetic;
pub mod telemetry;
pub mod transform;
pub mod warehouse;
