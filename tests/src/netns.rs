//! Fake hosts for ssh tests: network namespaces with their own address, host name and sshd.
//!
//! ```text
//!  root namespace                              namespace cl-A-B-h1 (host name clBh1)
//!  bridge clbr-A-B  10.A.B.254/24  ──veth──►   eth0 10.A.B.1/24, sshd on :22
//!  (the controller binds here)     ──veth──►   namespace cl-A-B-h2 …
//! ```
//!
//! Each [`FakeHosts`] takes a /24 of its own: creating the bridge named after the subnet is the
//! lock, so parallel tests (and parallel test runs) never share addresses or names. Every host
//! runs sshd in its own UTS namespace (`unshare --uts`), so commands run over ssh there see the
//! host's own name. Drop kills every process left in the namespaces and deletes them and the
//! bridge, whatever the test's outcome.
//!
//! Needs root, `ip` (iproute2), `unshare`/`nsenter` (util-linux) and `/usr/sbin/sshd`
//! (openssh-server). [`FakeHosts::new`] says what is missing; tests skip then, except under
//! CI (`CI` set), where a missing piece is a failure.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One fake host.
#[derive(Debug, Clone)]
pub struct FakeHost {
    /// Network namespace name.
    pub ns: String,
    /// Its host name (`uname -n` there).
    pub hostname: String,
    /// Its address.
    pub address: String,
    /// Pid of its sshd (0 once stopped).
    pub sshd_pid: u32,
}

/// Fake hosts on a bridge of their own.
#[derive(Debug)]
pub struct FakeHosts {
    /// Keys, sshd configs and logs.
    pub dir: tempfile::TempDir,
    /// The bridge in the root namespace.
    pub bridge: String,
    /// Address of this (root) namespace on the bridge: bind the controller here.
    pub gateway: String,
    /// The hosts.
    pub hosts: Vec<FakeHost>,
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
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

/// Why fake hosts cannot be made here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces need it)".into());
    }
    for (path, package) in [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/ssh", "openssh-client"),
        ("/usr/bin/ssh-keygen", "openssh-client"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} is missing (apt-get install {package})"));
        }
    }
    for tool in ["ip", "unshare", "nsenter"] {
        if run("sh", &["-c", &format!("command -v {tool}")]).is_err() {
            return Some(format!(
                "{tool} is missing (apt-get install iproute2 util-linux)"
            ));
        }
    }
    None
}

/// Skips the calling test (returns `None`) when fake hosts are not possible here, printing
/// why; under CI that is a failure instead.
pub fn fake_hosts_or_skip(n: usize) -> Option<FakeHosts> {
    let reason = match unavailable() {
        None => match FakeHosts::new(n) {
            Ok(h) => return Some(h),
            Err(e) => e,
        },
        Some(r) => r,
    };
    if std::env::var_os("CI").is_some() {
        panic!("fake ssh hosts are required under CI but cannot be made: {reason}");
    }
    eprintln!("SKIPPED: fake ssh hosts cannot be made here: {reason}");
    None
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl FakeHosts {
    /// Makes `n` hosts (at most 200), each running sshd.
    pub fn new(n: usize) -> Result<FakeHosts, String> {
        assert!((1..=200).contains(&n));
        let dir = tempfile::Builder::new()
            .prefix("cluster-hosts-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        // Claim a subnet: 10.A.B.0/24 with A in 160..=223, starting from this process's pid.
        let pid = std::process::id();
        let mut claimed = None;
        for _ in 0..512 {
            let k = pid
                .wrapping_mul(7919)
                .wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst));
            let (a, b) = (160 + (k / 256) % 64, k % 256);
            let bridge = format!("clbr-{a}-{b}");
            if run("ip", &["link", "add", &bridge, "type", "bridge"]).is_ok() {
                claimed = Some((a, b, bridge));
                break;
            }
        }
        let (a, b, bridge) = claimed.ok_or("no free subnet for a test bridge")?;
        let mut hosts = FakeHosts {
            dir,
            bridge: bridge.clone(),
            gateway: format!("10.{a}.{b}.254"),
            hosts: Vec::new(),
        };
        // From here on, drop cleans up whatever was made.
        hosts.setup(a, b, n)?;
        Ok(hosts)
    }

    fn setup(&mut self, a: u32, b: u32, n: usize) -> Result<(), String> {
        let gw = format!("{}/24", self.gateway);
        run("ip", &["addr", "add", &gw, "dev", &self.bridge])?;
        run("ip", &["link", "set", &self.bridge, "up"])?;
        let d = self.dir.path().to_owned();
        for key in ["host_ed25519", "id_ed25519", "other_ed25519"] {
            let path = d.join(key);
            run(
                "ssh-keygen",
                &[
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-f",
                    path.to_str().unwrap_or(""),
                ],
            )?;
        }
        std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys"))
            .map_err(|e| e.to_string())?;
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
        for i in 1..=n {
            let ns = format!("cl-{a}-{b}-h{i}");
            let veth = format!("clv{a}-{b}-{i}");
            let address = format!("10.{a}.{b}.{i}");
            let hostname = format!("cl{a}x{b}h{i}");
            run("ip", &["netns", "add", &ns])?;
            self.hosts.push(FakeHost {
                ns: ns.clone(),
                hostname: hostname.clone(),
                address: address.clone(),
                sshd_pid: 0,
            });
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &self.bridge])?;
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
            self.start_sshd(i - 1)?;
        }
        Ok(())
    }

    fn sshd_config(&self, index: usize) -> PathBuf {
        let d = self.dir.path();
        let h = &self.hosts[index];
        let path = d.join(format!("sshd_config-{}", h.hostname));
        let text = format!(
            "Port 22\nListenAddress {addr}\nHostKey {d}/host_ed25519\nPidFile {d}/sshd-{name}.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nMaxStartups 200\nMaxSessions 200\nLogLevel VERBOSE\n",
            addr = h.address,
            d = d.display(),
            name = h.hostname,
        );
        let _ = std::fs::write(&path, text);
        path
    }

    /// Starts (or restarts) the sshd of host `index` and waits until it accepts connections.
    pub fn start_sshd(&mut self, index: usize) -> Result<(), String> {
        let config = self.sshd_config(index);
        let d = self.dir.path().to_owned();
        let h = self.hosts[index].clone();
        let pid_file = d.join(format!("sshd-{}.pid", h.hostname));
        let _ = std::fs::remove_file(&pid_file);
        let script = format!(
            "hostname {} && exec /usr/sbin/sshd -f {} -E {}",
            h.hostname,
            config.display(),
            d.join(format!("sshd-{}.log", h.hostname)).display()
        );
        run(
            "nsenter",
            &[
                &format!("--net=/run/netns/{}", h.ns),
                "unshare",
                "--uts",
                "sh",
                "-c",
                &script,
            ],
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr: SocketAddr = format!("{}:22", h.address)
            .parse()
            .map_err(|e| format!("{e}"))?;
        loop {
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            if let Some(pid) = pid {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    self.hosts[index].sshd_pid = pid;
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "sshd of {} did not come up; its log: {}",
                    h.hostname,
                    std::fs::read_to_string(d.join(format!("sshd-{}.log", h.hostname)))
                        .unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the sshd of host `index` (the host then refuses ssh connections).
    pub fn stop_sshd(&mut self, index: usize) {
        let pid = self.hosts[index].sshd_pid;
        if pid != 0 {
            // SAFETY: kill(2) on the sshd this harness started.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
            crate::eventually(Duration::from_secs(5), || !profiles::process_alive(pid));
            self.hosts[index].sshd_pid = 0;
        }
    }

    /// The private key the hosts accept.
    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// A private key the hosts do not accept.
    pub fn wrong_identity(&self) -> PathBuf {
        self.dir.path().join("other_ed25519")
    }

    /// An `[ssh]` section for `cluster.toml` reaching these hosts as root with `identity`.
    pub fn ssh_section(&self, identity: &Path, cluster_path: &Path, remote_dir: &Path) -> String {
        format!(
            "\n[ssh]\nuser = \"root\"\nidentity_file = \"{}\"\noptions = [\"StrictHostKeyChecking=no\", \"UserKnownHostsFile=/dev/null\", \"LogLevel=ERROR\"]\ncluster_path = \"{}\"\nremote_dir = \"{}\"\nconnect_timeout_s = 5\n",
            identity.display(),
            cluster_path.display(),
            remote_dir.display()
        )
    }

    /// Pids running in host `index`'s namespace, apart from its sshd listener.
    pub fn processes(&self, index: usize) -> Vec<(u32, String)> {
        let h = &self.hosts[index];
        let text = run("ip", &["netns", "pids", &h.ns]).unwrap_or_default();
        text.split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter(|p| *p != h.sshd_pid)
            .filter(|p| profiles::process_alive(*p))
            .map(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                    .unwrap_or_default();
                (p, cmd)
            })
            .collect()
    }
}

impl Drop for FakeHosts {
    fn drop(&mut self) {
        for h in &self.hosts {
            let text = run("ip", &["netns", "pids", &h.ns]).unwrap_or_default();
            for p in text
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2) on processes inside a namespace this harness made.
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
        }
        for h in &self.hosts {
            let _ = run("ip", &["netns", "del", &h.ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}
