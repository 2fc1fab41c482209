//! Harness for the launcher's tests against real Slurm and MPI: fake hosts in network
//! namespaces (`testkit::netns`), a multi-node Slurm 22.05 (Debian `slurm-wlm`,
//! `auth/none`) on them, and a real `cluster` controller the engines register with.
//!
//! ```text
//!  root namespace                         namespace ls-A-B-lsctl  (host name lsctl)
//!  bridge lsbr-A-B 10.A.B.254/24 ──veth──► 10.A.B.1: slurmctld
//!  controller binds here, sbatch/squeue ──► namespaces ls-A-B-n1..nN (host names n1..nN)
//!  run here with SLURM_CONF               10.A.B.2..: slurmd -N ni, the jobs' engines
//! ```
//!
//! Each net claims a /24 of its own in 10.224-253.x (the ssh tests use 10.160-223.x). Tests
//! skip (with a message) when not root or Slurm/MPI are not installed, except under CI (`CI`
//! set), where that is a failure.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
pub use testkit::netns::{eventually, or_skip, unavailable, Host, Net};

/// Fake hosts named `names` (their host names), at 10.A.B.1.. in order.
pub fn net(names: &[&str]) -> Result<Net, String> {
    Net::new("ls", 224..=253, names.len(), |_, _, i| {
        names[i - 1].to_owned()
    })
}

/// Slurm on fake hosts: slurmctld on `lsctl`, one slurmd on each of `n1..nN`.
#[derive(Debug)]
pub struct Slurm {
    /// Config, state, spool folders and logs.
    pub dir: tempfile::TempDir,
    /// `slurm.conf`.
    pub conf: PathBuf,
    /// Node names.
    pub nodes: Vec<String>,
    /// Pid files of the daemons.
    pid_files: Vec<PathBuf>,
    // Last: dropped after the daemons are stopped.
    /// The hosts.
    pub net: Net,
}

impl Slurm {
    /// Slurm with `nodes` nodes of `cpus` CPUs each, waiting until all are idle.
    pub fn start(nodes: usize, cpus: u32) -> Result<Slurm, String> {
        if let Some(why) = unavailable(&[
            ("/usr/sbin/slurmctld", "slurm-wlm"),
            ("/usr/sbin/slurmd", "slurm-wlm"),
            ("sbatch", "slurm-wlm"),
        ]) {
            return Err(why);
        }
        let names: Vec<String> = std::iter::once("lsctl".to_owned())
            .chain((1..=nodes).map(|i| format!("n{i}")))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let net = net(&refs)?;
        let dir = tempfile::Builder::new()
            .prefix("cluster-slurm-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path();
        for sub in ["state", "log"] {
            std::fs::create_dir_all(d.join(sub)).map_err(|e| e.to_string())?;
        }
        let ctl = net.host("lsctl").clone();
        let mut conf = format!(
            "ClusterName=lt\nSlurmctldHost=lsctl({ctl})\nSlurmUser=root\nSlurmdUser=root\n\
             AuthType=auth/none\nCredType=cred/none\nStateSaveLocation={d}/state\n\
             SlurmdSpoolDir={d}/spool-%n\nSlurmctldPidFile={d}/slurmctld.pid\n\
             SlurmdPidFile={d}/slurmd-%n.pid\nSlurmctldLogFile={d}/log/slurmctld.log\n\
             SlurmdLogFile={d}/log/slurmd-%n.log\nProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\nMpiDefault=none\nMailProg=/bin/true\n\
             SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
             SlurmdParameters=config_overrides\nReturnToService=2\n\
             AccountingStorageType=accounting_storage/none\nJobAcctGatherType=jobacct_gather/none\n\
             JobCompType=jobcomp/none\nSchedulerParameters=sched_interval=1\nKillWait=5\n\
             MinJobAge=300\n",
            ctl = ctl.address,
            d = d.display()
        );
        let mut node_names = Vec::new();
        for h in net.hosts.iter().filter(|h| h.hostname != "lsctl") {
            conf.push_str(&format!(
                "NodeName={} NodeAddr={} CPUs={cpus} State=UNKNOWN\n",
                h.hostname, h.address
            ));
            node_names.push(h.hostname.clone());
            std::fs::create_dir_all(d.join(format!("spool-{}", h.hostname)))
                .map_err(|e| e.to_string())?;
        }
        conf.push_str("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n");
        let conf_path = d.join("slurm.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let mut slurm = Slurm {
            conf: conf_path.clone(),
            nodes: node_names.clone(),
            pid_files: vec![d.join("slurmctld.pid")],
            dir,
            net,
        };
        let c = conf_path.display().to_string();
        slurm.daemon(
            &ctl,
            &["/usr/sbin/slurmctld".into(), "-f".into(), c.clone()],
        )?;
        for name in &node_names {
            let host = slurm.net.host(name).clone();
            slurm.daemon(
                &host,
                &[
                    "/usr/sbin/slurmd".into(),
                    "-f".into(),
                    c.clone(),
                    "-N".into(),
                    name.clone(),
                ],
            )?;
            slurm
                .pid_files
                .push(slurm.dir.path().join(format!("slurmd-{name}.pid")));
        }
        let want = node_names.len();
        let idle = eventually(Duration::from_secs(20), || {
            slurm
                .command("sinfo", &["-h", "-N", "-o", "%T"])
                .map(|out| out.lines().filter(|l| l.trim() == "idle").count() == want)
                .unwrap_or(false)
        });
        if !idle {
            return Err(format!(
                "Slurm's nodes did not become idle; slurmctld log:\n{}",
                std::fs::read_to_string(slurm.dir.path().join("log/slurmctld.log"))
                    .unwrap_or_default()
            ));
        }
        Ok(slurm)
    }

    fn daemon(&self, host: &Host, argv: &[String]) -> Result<(), String> {
        let wrapped = self.net.wrap(host, argv);
        let refs: Vec<&str> = wrapped.iter().map(String::as_str).collect();
        let out = Command::new(refs[0])
            .args(&refs[1..])
            .env("SLURM_CONF", &self.conf)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "{} failed to start on {}: {}",
                argv[0],
                host.hostname,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Runs a Slurm client command here (root namespace) against this Slurm.
    pub fn command(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(program)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `[slurm]` settings reaching this Slurm.
    pub fn settings(&self) -> cluster_launcher::slurm::SlurmSettings {
        cluster_launcher::slurm::SlurmSettings {
            conf: Some(self.conf.display().to_string()),
            poll_interval_ms: 200,
            ..Default::default()
        }
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // Jobs first, so that no step outlives its slurmd in the way.
        let _ = self.command("scancel", &["--user=root"]);
        for f in &self.pid_files {
            if let Some(pid) = std::fs::read_to_string(f)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                // SAFETY: kill(2) on a daemon this harness started (its pid file).
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        // `net` drops next: SIGKILL for whatever is left in the namespaces.
    }
}

/// The `cluster` binary, built if needed (`cargo build -p cluster-cli`), next to this test.
pub fn cluster_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-exe>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_owned();
    let bin = dir.join("cluster");
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "cluster-cli", "--bin", "cluster"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile == "release" {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p cluster-cli failed");
    assert!(bin.exists(), "{} is missing after the build", bin.display());
    bin
}

/// A real controller (`cluster start -n 0`) in a temporary `CLUSTER_DIR`, listening on
/// `ip`; stopped on drop (shutdown request, then SIGKILL of its pid).
#[derive(Debug)]
pub struct Controller {
    /// The `cluster` binary.
    pub bin: PathBuf,
    /// `CLUSTER_DIR`.
    pub dir: tempfile::TempDir,
    /// Profile name.
    pub profile: String,
    /// The controller's pid.
    pub pid: u32,
}

impl Controller {
    /// Starts a controller listening on `ip`, with `env` settings.
    pub fn start(ip: &str, env: &[(&str, &str)]) -> Controller {
        let bin = cluster_bin();
        let dir = tempfile::Builder::new()
            .prefix("cluster-launch-")
            .tempdir()
            .expect("temp dir");
        let mut c = Controller {
            bin,
            dir,
            profile: "t".into(),
            pid: 0,
        };
        let mut cmd = c.command(&["start", "-n", "0", "--ip", ip, "--json"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run cluster start");
        assert!(
            out.status.success(),
            "cluster start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("start --json prints JSON");
        c.pid = report["controller_pid"].as_u64().expect("controller pid") as u32;
        c
    }

    /// `cluster --profile t ARGS…` in this cluster's folder.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("CLUSTER_DIR", self.dir.path())
            .env_remove("CLUSTER_PROFILE")
            .arg("--profile")
            .arg(&self.profile)
            .args(args);
        cmd
    }

    /// The profile.
    pub fn profile(&self) -> profiles::Profile {
        profiles::Profile::in_root(self.dir.path(), &self.profile).expect("profile")
    }

    /// The engine command line (`cluster engine --file …/engine.json`).
    pub fn engine_command(&self) -> Vec<String> {
        vec![
            self.bin.display().to_string(),
            "engine".into(),
            "--file".into(),
            self.profile().engine_file().display().to_string(),
        ]
    }

    /// A client of this controller.
    pub fn client(&self) -> client::Client {
        client::Client::connect_file(self.profile().client_file()).expect("connect")
    }

    /// Engines registered now.
    pub fn engines(&self, client: &client::Client) -> usize {
        client.status().map(|s| s.engines.len()).unwrap_or(0)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.command(&["stop", "--grace", "1"]).output();
        if profiles::process_alive(self.pid) {
            // SAFETY: kill(2) on the controller this harness started.
            unsafe {
                libc::kill(self.pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// Waits until `addr` accepts TCP connections.
pub fn wait_port(addr: &str, timeout: Duration) -> bool {
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return false;
    };
    eventually(timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
    })
}

/// A profile `s` in a temporary `CLUSTER_DIR` whose `[slurm]` section reaches `slurm`, driven
/// through the `cluster` binary; `cluster stop` on drop, whatever the test's outcome.
#[derive(Debug)]
pub struct Cli {
    /// The `cluster` binary.
    pub bin: PathBuf,
    /// `CLUSTER_DIR`.
    pub dir: tempfile::TempDir,
}

impl Cli {
    /// Creates the profile; `slurm_extra` goes into `[slurm]`, `more` after it (other
    /// tables).
    pub fn new(slurm: &Slurm, slurm_extra: &str, more: &str) -> Cli {
        let cli = Cli {
            bin: cluster_bin(),
            dir: tempfile::Builder::new()
                .prefix("cluster-launch-")
                .tempdir()
                .expect("temp dir"),
        };
        let (code, out, err) = cli.run(&["profile", "create", "s"]);
        assert_eq!(code, 0, "{out}{err}");
        let file = cli.profile().config_file();
        let mut toml = std::fs::read_to_string(&file).unwrap();
        toml.push_str(&format!(
            "\n[slurm]\nconf = \"{}\"\npoll_interval_ms = 200\n{slurm_extra}\n{more}\n",
            slurm.conf.display()
        ));
        std::fs::write(&file, toml).unwrap();
        cli
    }

    /// `cluster --profile s ARGS…`: exit code, stdout, stderr.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&self.bin)
            .env("CLUSTER_DIR", self.dir.path())
            .env_remove("CLUSTER_PROFILE")
            .args(["--profile", "s"])
            .args(args)
            .output()
            .expect("run cluster");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Like [`Cli::run`], failing the test unless it exits 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "cluster {args:?} failed:\n{out}{err}");
        out
    }

    /// The profile.
    pub fn profile(&self) -> profiles::Profile {
        profiles::Profile::in_root(self.dir.path(), "s").expect("profile")
    }

    /// A client of its controller.
    pub fn client(&self) -> client::Client {
        client::Client::connect_file(self.profile().client_file()).expect("connect")
    }

    /// The autoscaler's or supervisor's `run/scale.json`, if there is one.
    pub fn scale_state(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.profile().run_dir().join("scale.json")).ok()?;
        serde_json::from_str(&text).ok()
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        if self.profile().run_dir().exists() {
            let _ = self.run(&["stop", "--grace", "1"]);
        }
    }
}
