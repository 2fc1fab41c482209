//! The `cluster` command's library: what the binary wires together.
//!
//! * [`launch`] starts and stops the processes of a local cluster and records them in the
//!   profile's `run/` folder;
//! * [`args`] turns command-line words into task arguments;
//! * [`render`] formats status for people;
//! * [`demo`] runs the seed examples and the benchmarks on throw-away clusters.
//!
//! The controller, engine and client logic live in their own crates; nothing here schedules,
//! executes or speaks the wire protocol.

pub mod args;
pub mod demo;
pub mod launch;
pub mod render;
