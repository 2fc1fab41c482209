//! Fake hosts for tests that need machines: network namespaces on a bridge of their own, each
//! with its own address (and, for what runs in it through [`Net::wrap`], its own host name).
//! The ssh tests (`cluster_tests::netns`, sshd in each) and the Slurm and MPI tests
//! (`launcher/tests/common`, slurmd in each) build on it.
//!
//! ```text
//!  root namespace                          namespace <prefix>-A-B-<name>
//!  bridge <prefix>br-A-B 10.A.B.254/24 ──veth──► eth0 10.A.B.i/24
//!  (bind the controller on the gateway)  ──veth──► namespace …
//! ```
//!
//! Each [`Net`] claims a /24 of its own: creating the bridge named after the subnet is the
//! lock, so parallel tests (and parallel test runs) never share addresses or names; each kind
//! of test passes its own range of `A` so that they do not meet either. Drop kills every
//! process left in the namespaces, by pid, and deletes them and the bridge, whatever the
//! test's outcome.
//!
//! Needs root, `ip` (iproute2) and `unshare`/`nsenter` (util-linux): [`unavailable`] says what
//! is missing, and [`or_skip`] skips a test then, except under CI (`CI` set), where it fails.

use std::ops::RangeInclusive;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Runs a command, returning its stdout, or a message with its stderr.
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

/// Why fake hosts cannot be made here, if they cannot: not root, the namespace tools missing,
/// or one of `programs` (path or name, Debian package) missing.
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

/// `word` quoted for a POSIX shell.
fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// One fake host.
#[derive(Debug, Clone)]
pub struct Host {
    /// Network namespace.
    pub ns: String,
    /// Host name inside it (processes started with [`Net::wrap`] see it).
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
    /// The hosts, at 10.A.B.1, .2, … in order.
    pub hosts: Vec<Host>,
    /// `A` and `B` of the subnet.
    pub subnet: (u32, u32),
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Net {
    /// Makes `n` hosts (at most 200) on a subnet 10.A.B.0/24 with `A` in `first_octets`:
    /// bridge `<prefix>br-A-B`, namespaces `<prefix>-A-B-<name>`, host `i` (from 1) named
    /// `name(A, B, i)`.
    pub fn new(
        prefix: &str,
        first_octets: RangeInclusive<u32>,
        n: usize,
        name: impl Fn(u32, u32, usize) -> String,
    ) -> Result<Net, String> {
        assert!((1..=200).contains(&n), "1 to 200 fake hosts");
        let (low, span) = (
            *first_octets.start(),
            first_octets.end() - first_octets.start() + 1,
        );
        let pid = std::process::id();
        let mut claimed = None;
        for _ in 0..512 {
            let k = pid
                .wrapping_mul(7919)
                .wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst));
            let (a, b) = (low + (k / 256) % span, k % 256);
            let bridge = format!("{prefix}br-{a}-{b}");
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
            subnet: (a, b),
        };
        // From here on, drop cleans up whatever was made.
        let gw = format!("{}/24", net.gateway);
        run("ip", &["addr", "add", &gw, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for i in 1..=n {
            let hostname = name(a, b, i);
            let ns = format!("{prefix}-{a}-{b}-{hostname}");
            let veth = format!("{prefix}v{a}-{b}-{i}");
            let address = format!("10.{a}.{b}.{i}");
            run("ip", &["netns", "add", &ns])?;
            net.hosts.push(Host {
                ns: ns.clone(),
                hostname,
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
            let cidr = format!("{address}/24");
            run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
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
        let words: Vec<String> = argv.iter().map(|w| shell_quote(w)).collect();
        let script = format!("hostname {} && exec {}", host.hostname, words.join(" "));
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
    pub fn pids(&self, host: &Host) -> Vec<u32> {
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
                        libc::kill(p as i32, libc::SIGKILL);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_commands_are_quoted() {
        let net = Net {
            bridge: String::new(),
            gateway: String::new(),
            hosts: Vec::new(),
            subnet: (0, 0),
        };
        let host = Host {
            ns: "t-1-2-h1".into(),
            hostname: "h1".into(),
            address: "10.1.2.1".into(),
        };
        let argv = net.wrap(&host, &["echo".into(), "a b".into(), "it's".into()]);
        assert_eq!(argv[1], "--net=/run/netns/t-1-2-h1");
        assert_eq!(argv[6], r"hostname h1 && exec echo 'a b' 'it'\''s'");
        // An empty net has nothing to clean up.
        drop(net);
    }
}
