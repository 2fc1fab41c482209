//! The `cluster` command's library: what the binary wires together.
//!
//! * [`main_with`] runs the whole command line (the `cluster` binary is one call to it; the
//!   Python wheel's `python -m ferrocluster` is another); [`program`] says what to run when
//!   the CLI launches itself (`CLUSTER_PROGRAM`);
//! * [`launch`] starts and stops the processes of a local cluster and records them in the
//!   profile's `run/` folder;
//! * [`ssh`] starts and stops engines on other machines over ssh;
//! * [`args`] turns command-line words into task arguments;
//! * [`render`] formats status for people;
//! * [`template`] turns GNU-parallel style command templates into command lines, and
//!   [`tasks`] runs them as command maps, submits, result look-ups and waits;
//! * [`interrupt`] aborts the queued tasks of an interrupted `call` or `map`;
//! * [`demo`] runs the seed examples and the benchmarks on throw-away clusters,
//!   [`bench_commands`] compares command maps with `xargs -P`, and [`bench_controller`]
//!   times engine-death notices and holds many simulated engines.
//!
//! The controller, engine and client logic live in their own crates; nothing here schedules,
//! executes or speaks the wire protocol.

pub mod args;
pub mod bench_commands;
pub mod bench_controller;
mod cli;
pub mod demo;
pub mod interrupt;
pub mod launch;
pub mod program;
pub mod render;
pub mod ssh;
pub mod tasks;
pub mod template;

pub use cli::{main_status, main_with};
