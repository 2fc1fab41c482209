//! Harness for end-to-end tests: real `cluster` processes in a throw-away profile folder.
//!
//! The binaries come from the same `target/<profile>/` folder as the test executable;
//! `cargo test --workspace` builds them (the `cluster-cli` package has an integration test,
//! which makes cargo build its binary, and examples are always built). Every process a test
//! starts is stopped by pid when its [`TestCluster`] is dropped, whatever the test's outcome.
//! [`netns`] makes fake hosts (network namespaces running sshd) for the ssh launcher's tests.

pub mod netns;

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
            // Engines on other hosts are stopped over ssh by `cluster stop`, not by pid here.
            pids.extend(
                engines
                    .into_iter()
                    .filter(|(_, r)| r.launcher == "local")
                    .map(|(_, r)| r.pid),
            );
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

/// Helpers for the controller's end-to-end tests (engine death, restarts, settings).
impl TestCluster {
    /// [`TestCluster::start`] with extra environment variables (settings such as
    /// `CLUSTER_HEARTBEAT_PERIOD_MS`, inherited by the controller and engines).
    pub fn start_env(&self, n: usize, extra: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
        let n = n.to_string();
        let mut args = vec!["start", "-n", &n, "--json"];
        args.extend_from_slice(extra);
        let mut cmd = self.command(&args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let run = Run::from(cmd.output().expect("run cluster")).ok();
        let report: serde_json::Value =
            serde_json::from_str(run.stdout.trim()).expect("start --json prints JSON");
        self.remember_pids();
        report
    }

    /// Pids of the engines the profile's run folder records.
    pub fn engine_pids(&self) -> Vec<u32> {
        let profile = profiles::Profile::in_root(self.dir.path(), &self.profile).expect("profile");
        let mut pids: Vec<u32> = profile
            .engine_records()
            .expect("engine records")
            .into_iter()
            .map(|(_, r)| r.pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Pid of the controller the profile's run folder records.
    pub fn controller_pid(&self) -> Option<u32> {
        let profile = profiles::Profile::in_root(self.dir.path(), &self.profile).ok()?;
        profile.controller_record().ok().flatten().map(|r| r.pid)
    }

    /// Starts `cluster controller ARGS…` in the background (its pid is killed on drop).
    pub fn spawn_controller(&self, args: &[&str]) -> u32 {
        let mut full = vec!["controller"];
        full.extend_from_slice(args);
        let child = self
            .command(&full)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the controller");
        let pid = child.id();
        self.pids.borrow_mut().push(pid);
        // Reap it when it exits, so that it does not linger as a zombie that looks alive.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        pid
    }
}

/// Sends signal `sig` to `pid` (a process the test started).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid the test started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}
