//! The fintech pipeline's workers. Each stage is a module; [`cli`] maps the `fintech`
//! binary's subcommands and flags to them, and [`harness`] runs a stage as a process.

pub mod bank;
pub mod bronze;
pub mod cli;
pub mod clock;
pub mod event;
pub mod faults;
pub mod harness;
pub mod in_process;
pub mod kafka;
pub mod kaggle;
pub mod loader;
pub mod producer;
#[cfg(feature = "embedded")]
pub mod quickstart;
pub mod redrive;
pub mod settlement;
pub mod sink;
pub mod source;
pub mod storage;
pub mod streamer;
pub mod synthetic;
pub mod telemetry;
pub mod transform;
pub mod warehouse;
