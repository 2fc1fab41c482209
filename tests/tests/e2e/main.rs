//! End-to-end tests: real `cluster`, controller and engine processes on loopback, one module
//! per area, all in this one test binary (one link instead of one per area).
//!
//! Run one area or one test by its path:
//! `cargo test -p cluster-tests --test e2e -- controller_failover::` or
//! `cargo test -p cluster-tests --test e2e -- local_cluster::stop_leaves_no_process_behind`.
//!
//! Tests of every area run side by side (libtest's threads, one per core by default), so each
//! test owns everything it starts: its own `CLUSTER_DIR` ([`cluster_tests::TestCluster`]),
//! ports chosen at run time, fake ssh hosts on a subnet of their own, and settings passed to
//! the processes it starts rather than set in this process's environment. No test needs the
//! machine to itself; timing bounds leave room for a neighbour's load (one test keeps a core
//! busy for 30 s: `controller_heartbeat`).

mod cli_commands;
mod client_api;
mod client_examples;
mod controller_failover;
mod controller_heartbeat;
mod controller_options;
mod crate_arrows;
mod local_cluster;
mod objects;
mod ssh_engines;
