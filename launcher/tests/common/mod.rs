//! Harness for the launcher's tests against real Slurm and MPI: fake hosts in network
//! namespaces, a multi-node Slurm 22.05 (Debian `slurm-wlm`, `auth/none`) on them, and a real
//! `cluster` controller the engines register with.
//!
//! ```text
//!  root namespace                         namespace ls-A-B-ctl  (host name lsctl)
//!  bridge lsbr-A-B 10.A.B.254/24 ──veth──► 10.A.B.100: slurmctld
//!  controller binds here, sbatch/squeue ──► namespaces ls-A-B-n1..nN (host names n1..nN)
//!  run here with SLURM_CONF               10.A.B.i: slurmd -N ni, the jobs' engines
//! ```
//!
//! Each [`Net`] claims a /24 of its own (creating the bridge named after the subnet is the
//! lock; 10.224-253.x, apart from the ssh tests' 10.160-223.x). Drop kills every process in
//! its namespaces, by pid, and deletes them and the bridge, whatever the test's outcome.
//! Tests skip (with a message) when not root or Slurm/MPI are not installed, except under CI
//! (`CI` set), where that is a failure.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Runs a command, returning stdout or a message with stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why the tests cannot run here, if they cannot: not root, or a program missing.
pub fn unavailable(programs: &[(&str, &str)]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces need it)".into());
    }
    for tool in ["ip", "unshare", "nsenter"] {
        if run("sh", &["-c", &format!("command -v {tool}")]).is_err() {
            return Some(format!(
                "{tool} is missing (apt-get install iproute2 util-linux)"
            ));
        }
    }
    for (path, package) in programs {
        if run("sh", &["-c", &format!("command -v {path}")]).is_err() {
            return Some(format!("{path} is missing (apt-get install {package})"));
        }
    }
    None
}

/// Skips the test (returns `None`, printing why) or, under CI, fails it.
pub fn or_skip<T>(what: &str, made: Result<T, String>) -> Option<T> {
    match made {
        Ok(t) => Some(t),
        Err(reason) => {
            if std::env::var_os("CI").is_some() {
                panic!("{what} is required under CI but cannot be made: {reason}");
            }
            eprintln!("SKIPPED: {what} cannot be made here: {reason}");
            None
        }
    }
}

/// Polls `f` every 20 ms until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One fake host.
#[derive(Debug, Clone)]
pub struct Host {
    /// Network namespace.
    pub ns: String,
    /// Host name inside it (processes started with [`Net::spawn_in`] see it).
    pub hostname: String,
    /// Its address on the bridge.
    pub address: String,
}

/// Fake hosts on a bridge of their own.
#[derive(Debug)]
pub struct Net {
    /// The bridge (in the root namespace).
    pub bridge: String,
    /// The root namespace's address on the bridge: bind the controller here.
    pub gateway: String,
    /// The hosts.
    pub hosts: Vec<Host>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Net {
    /// Makes hosts named `names` (their host names), at 10.A.B.1.. in order, except a host
    /// named `lsctl`, which gets 10.A.B.100.
    pub fn new(names: &[&str]) -> Result<Net, String> {
        let pid = std::process::id();
        let mut claimed = None;
        for _ in 0..512 {
            let k = pid
                .wrapping_mul(7919)
                .wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst));
            let (a, b) = (224 + (k / 256) % 30, k % 256);
            let bridge = format!("lsbr-{a}-{b}");
            if run("ip", &["link", "add", &bridge, "type", "bridge"]).is_ok() {
                claimed = Some((a, b, bridge));
                break;
            }
        }
        let (a, b, bridge) = claimed.ok_or("no free subnet for a test bridge")?;
        let mut net = Net {
            bridge: bridge.clone(),
            gateway: format!("10.{a}.{b}.254"),
            hosts: Vec::new(),
        };
        // From here on, drop cleans up whatever was made.
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.gateway),
                "dev",
                &bridge,
            ],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        let mut next = 1;
        for (i, name) in names.iter().enumerate() {
            let octet = if *name == "lsctl" {
                100
            } else {
                next += 1;
                next - 1
            };
            let ns = format!("ls-{a}-{b}-{name}");
            let veth = format!("lsv{a}-{b}-{i}");
            let address = format!("10.{a}.{b}.{octet}");
            run("ip", &["netns", "add", &ns])?;
            net.hosts.push(Host {
                ns: ns.clone(),
                hostname: (*name).to_owned(),
                address: address.clone(),
            });
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &bridge])?;
            run("ip", &["link", "set", &veth, "up"])?;
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    "eth0",
                ],
            )?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.hostname == name)
            .expect("a host of this net")
    }

    /// The command line running `argv` in `host`'s namespace under its own host name
    /// (`nsenter`, not `ip netns exec`, which remounts /sys and upsets slurmd).
    pub fn wrap(&self, host: &Host, argv: &[String]) -> Vec<String> {
        let script = format!(
            "hostname {} && exec {}",
            host.hostname,
            cluster_launcher::shell_join(argv)
        );
        vec![
            "nsenter".into(),
            format!("--net=/run/netns/{}", host.ns),
            "unshare".into(),
            "--uts".into(),
            "sh".into(),
            "-c".into(),
            script,
        ]
    }

    /// Pids of the processes in `host`'s namespace.
    pub fn pids(&self, host: &Host) -> Vec<i32> {
        run("ip", &["netns", "pids", &host.ns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for _ in 0..3 {
            let mut any = false;
            for h in &self.hosts {
                for p in self.pids(h) {
                    any = true;
                    // SAFETY: kill(2) on processes inside a namespace this harness made.
                    unsafe {
                        libc::kill(p, libc::SIGKILL);
                    }
                }
            }
            if !any {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for h in &self.hosts {
            let _ = run("ip", &["netns", "del", &h.ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
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
        let net = Net::new(&refs)?;
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
