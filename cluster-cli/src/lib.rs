//! The `cluster` command's library: the whole command line, and what it wires together.
//!
//! * [`main_with`] runs the command line ([`cli`] parses and dispatches; the `cluster` binary
//!   is one call to it, the Python wheel's `python -m ferrocluster` another); [`program`]
//!   says what to run when the CLI launches itself (`CLUSTER_PROGRAM`);
//! * [`cmd`] has one module per command, each with its clap `Args` and a `run(args, &Ctx)`
//!   returning a report; [`ctx`] is what they share; [`output`] prints every report as text
//!   or JSON (every JSON shape is there); [`exit`] is the table of exit statuses;
//!   [`connfile`] checks a connection file and says what is wrong with it;
//! * [`launch`] starts and stops the processes of a local cluster and records them in the
//!   profile's `run/` folder; [`controller_process`] is the controller process itself;
//! * [`ssh`] starts and stops engines on other machines over ssh, and [`ssh_start`] starts a
//!   whole cluster that way, stopping it again when no engine could start;
//! * [`args`] turns command-line words into task arguments;
//! * [`fmap`] streams the results of function maps, whose items [`signatures`] checks
//!   before sending (for the stock functions);
//! * [`template`] turns GNU-parallel style command templates into command lines, and
//!   [`tasks`] runs them as command maps and turns outcomes into printable records;
//!   [`progress`] draws the maps' progress bar;
//! * [`noengines`] says when a wait is on a cluster without engines;
//! * [`interrupt`] aborts the queued tasks of an interrupted `call` or `map`;
//! * [`render`] formats status for people;
//! * [`demo`] runs the seed examples beside this machine's own ceiling, and [`bench`] the
//!   benchmarks on throw-away clusters.
//!
//! The controller, engine and client logic live in their own crates (the submitted-task
//! ledger of `submit`/`wait` is [`client::Ledger`], the simulated engines of `bench scale`
//! [`engine::sim`]); nothing here schedules, executes or speaks the wire protocol.

pub mod args;
pub mod batch;
pub mod bench;
pub mod cli;
pub mod cmd;
pub mod connfile;
pub mod controller_process;
pub mod ctx;
pub mod demo;
pub mod exit;
pub mod fmap;
pub mod interrupt;
pub mod launch;
pub mod noengines;
pub mod output;
pub mod program;
pub mod progress;
pub mod render;
pub mod scale;
pub mod signatures;
pub mod ssh;
pub mod ssh_start;
pub mod tasks;
pub mod template;

pub use cli::{main_status, main_with};
