//! Fake hosts for ssh tests: network namespaces with their own address, host name and sshd.
//!
//! ```text
//!  root namespace                              namespace cl-A-B-clAxBh1 (host name clAxBh1)
//!  bridge clbr-A-B  10.A.B.254/24  ──veth──►   eth0 10.A.B.1/24, sshd on :22
//!  (the controller binds here)     ──veth──►   namespace cl-A-B-h2 …
//! ```
//!
//! The namespaces and the bridge are `testkit::netns`'s (shared with the Slurm and MPI
//! tests): each [`FakeHosts`] takes a /24 of its own, so parallel tests (and parallel test
//! runs) never share addresses or names. Every host
//! runs sshd in its own UTS namespace (`unshare --uts`), so commands run over ssh there see the
//! host's own name. Drop kills every process left in the namespaces and deletes them and the
//! bridge, whatever the test's outcome.
//!
//! Needs root, `ip` (iproute2), `unshare`/`nsenter` (util-linux) and `/usr/sbin/sshd`
//! (openssh-server). [`FakeHosts::new`] says what is missing; tests skip then, except under
//! CI (`CI` set), where a missing piece is a failure.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testkit::netns::{self, run, Net};

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
    /// The hosts.
    pub hosts: Vec<FakeHost>,
    /// Address of this (root) namespace on the bridge: bind the controller here.
    pub gateway: String,
    /// The bridge in the root namespace.
    pub bridge: String,
    // Dropped after the fields above, before `dir`: kills what runs in the namespaces
    // (sshd, engines) and deletes them and the bridge.
    net: Net,
    /// Keys, sshd configs and logs.
    pub dir: tempfile::TempDir,
}

/// Why fake hosts cannot be made here, if they cannot.
pub fn unavailable() -> Option<String> {
    netns::unavailable(&[
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/ssh", "openssh-client"),
        ("/usr/bin/ssh-keygen", "openssh-client"),
    ])
}

/// Skips the calling test (returns `None`) when fake hosts are not possible here, printing
/// why; under CI that is a failure instead.
pub fn fake_hosts_or_skip(n: usize) -> Option<FakeHosts> {
    let made = match unavailable() {
        None => FakeHosts::new(n),
        Some(r) => Err(r),
    };
    netns::or_skip("fake ssh hosts", made)
}

impl FakeHosts {
    /// Makes `n` hosts (at most 200), each running sshd.
    pub fn new(n: usize) -> Result<FakeHosts, String> {
        let dir = tempfile::Builder::new()
            .prefix("cluster-hosts-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        // 10.A.B.0/24 with A in 160..=223; host i is `clAxBhi`.
        let net = Net::new("cl", 160..=223, n, |a, b, i| format!("cl{a}x{b}h{i}"))?;
        let mut hosts = FakeHosts {
            hosts: net
                .hosts
                .iter()
                .map(|h| FakeHost {
                    ns: h.ns.clone(),
                    hostname: h.hostname.clone(),
                    address: h.address.clone(),
                    sshd_pid: 0,
                })
                .collect(),
            gateway: net.gateway.clone(),
            bridge: net.bridge.clone(),
            net,
            dir,
        };
        // From here on, drop cleans up whatever was made.
        hosts.setup()?;
        Ok(hosts)
    }

    fn setup(&mut self) -> Result<(), String> {
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
        for i in 0..self.hosts.len() {
            self.start_sshd(i)?;
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
        self.net
            .pids(&self.net.hosts[index])
            .into_iter()
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
