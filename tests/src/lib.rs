//! Harness for end-to-end tests: real `cluster` processes in a throw-away profile folder.
//!
//! The binaries come from the same `target/<profile>/` folder as the test executable;
//! `cargo test --workspace` builds them (the `cluster-cli` package has an integration test,
//! which makes cargo build its binary, and examples are always built). Every process a test
//! starts is stopped by pid when its [`TestCluster`] is dropped, whatever the test's outcome.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `target/<profile>/`, where cargo put the binaries.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-exe>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_owned()
}

/// Path of a binary built by this workspace, with a clear failure if it is missing.
pub fn binary(relative: &str) -> PathBuf {
    let path = target_dir().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds it) or build it with `cargo build --workspace --bins --examples`",
        path.display()
    );
    path
}

/// The `cluster` binary.
pub fn cluster_bin() -> PathBuf {
    binary("cluster")
}

/// The example user engine (`engine/examples/custom_engine.rs`).
pub fn custom_engine_bin() -> PathBuf {
    binary("examples/custom_engine")
}

/// A cluster in its own temporary `CLUSTER_DIR`, stopped (and every recorded pid killed) on drop.
#[derive(Debug)]
pub struct TestCluster {
    /// The temporary cluster folder (`CLUSTER_DIR`).
    pub dir: tempfile::TempDir,
    /// Profile name used.
    pub profile: String,
    /// Pids seen while running, killed on drop if still alive.
    pub pids: std::cell::RefCell<Vec<u32>>,
}

/// Result of running the `cluster` binary.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics with both outputs unless the exit code is 0.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "cluster failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Default for TestCluster {
    fn default() -> Self {
        TestCluster::new()
    }
}

impl TestCluster {
    /// A fresh, empty cluster folder; nothing started yet.
    pub fn new() -> TestCluster {
        TestCluster {
            dir: tempfile::Builder::new()
                .prefix("cluster-test-")
                .tempdir()
                .expect("temp dir"),
            profile: "test".into(),
            pids: Default::default(),
        }
    }

    /// Runs `cluster --profile <p> ARGS…` with `CLUSTER_DIR` set to this cluster's folder.
    pub fn cluster(&self, args: &[&str]) -> Run {
        self.command(args).output().expect("run cluster").into()
    }

    /// The command `cluster` would run, for tests that need to add to it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(cluster_bin());
        cmd.env("CLUSTER_DIR", self.dir.path())
            .env_remove("CLUSTER_PROFILE")
            .arg("--profile")
            .arg(&self.profile)
            .args(args);
        cmd
    }

    /// The profile's folder.
    pub fn profile_dir(&self) -> PathBuf {
        self.dir.path().join(format!("profile_{}", self.profile))
    }

    /// `security/client.json`.
    pub fn client_file(&self) -> PathBuf {
        self.profile_dir().join("security/client.json")
    }

    /// `security/engine.json`.
    pub fn engine_file(&self) -> PathBuf {
        self.profile_dir().join("security/engine.json")
    }

    /// `cluster start -n N EXTRA… --json`, remembering every pid it reports.
    pub fn start(&self, n: usize, extra: &[&str]) -> serde_json::Value {
        let n = n.to_string();
        let mut args = vec!["start", "-n", &n, "--json"];
        args.extend_from_slice(extra);
        let run = self.cluster(&args).ok();
        let report: serde_json::Value =
            serde_json::from_str(run.stdout.trim()).expect("start --json prints JSON");
        self.remember_pids();
        report
    }

    /// A library client of this cluster.
    pub fn client(&self) -> client::Client {
        client::Client::connect_file(self.client_file()).expect("connect")
    }

    /// Records the pids in the profile's run folder so that drop can kill them.
    pub fn remember_pids(&self) {
        let Ok(profile) = profiles::Profile::in_root(self.dir.path(), &self.profile) else {
            return;
        };
        let mut pids = self.pids.borrow_mut();
        if let Ok(Some(rec)) = profile.controller_record() {
            pids.push(rec.pid);
        }
        if let Ok(engines) = profile.engine_records() {
            pids.extend(engines.into_iter().map(|(_, r)| r.pid));
        }
        pids.sort_unstable();
        pids.dedup();
    }

    /// Pids remembered so far that are still alive.
    pub fn alive(&self) -> Vec<u32> {
        self.pids
            .borrow()
            .iter()
            .copied()
            .filter(|p| profiles::process_alive(*p))
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.remember_pids();
        if self.profile_dir().exists() {
            let _ = self.command(&["stop", "--grace", "1"]).output();
        }
        for pid in self.alive() {
            // SAFETY: kill(2) on a pid this test started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// Polls `f` every 5 ms until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
