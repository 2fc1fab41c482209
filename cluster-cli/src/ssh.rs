//! Engines on other machines over ssh: `cluster start --launcher ssh --hosts node1:4,node2:4`.
//!
//! For each host, in parallel, one ssh session does everything: it makes the remote folder,
//! receives the engine connection file on stdin (written 0600 under a temporary name and
//! renamed, so hosts sharing a home folder never see half a file), checks the `cluster`
//! program, and starts the engines with `setsid` so they outlive the session, printing their
//! pids. Nothing else needs to be installed remotely: plain `sh`, `sed`, `uname`.
//!
//! Hosts are recorded in the profile's `run/` folder (`ssh-<host>.json`, and one engine record
//! per remote pid) so that `cluster stop` can reach them again: after the controller's
//! shutdown request it checks each host over ssh, sends SIGTERM then SIGKILL to engines still
//! there, and removes the connection file.
//!
//! A host that fails (unreachable, key refused, program missing, engines dying at start) is
//! reported with what ssh or the remote log said; the other hosts' engines still start.

use crate::template::shell_quote;
use anyhow::{bail, Context as _, Result};
use profiles::{EngineRecord, Profile, SshHostRecord, SshSettings};
use security::ConnectionInfo;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A host as written on the command line or in a host file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// ssh destination, `[user@]host`.
    pub destination: String,
    /// Engines asked for on it, if said.
    pub engines: Option<usize>,
}

fn host_item(item: &str) -> Result<HostSpec> {
    let item = item.trim();
    if item.is_empty() {
        bail!("empty host name in the host list");
    }
    // `host:4`, `user@host:4`, `[::1]:4`; a bare IPv6 address has several colons.
    let (destination, engines) = match item.rsplit_once(':') {
        Some((d, n)) if !d.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            if d.contains(':') && !d.ends_with(']') {
                (item, None)
            } else {
                let n: usize = n
                    .parse()
                    .with_context(|| format!("host {item:?}: {n:?} is not a number of engines"))?;
                if n == 0 {
                    bail!("host {item:?}: 0 engines; leave the host out instead");
                }
                (d, Some(n))
            }
        }
        _ => (item, None),
    };
    let destination = destination
        .strip_prefix('[')
        .and_then(|d| d.strip_suffix(']'))
        .unwrap_or(destination);
    if destination.starts_with('-') || destination.contains(char::is_whitespace) {
        bail!("{destination:?} is not a host name");
    }
    Ok(HostSpec {
        destination: destination.to_owned(),
        engines,
    })
}

/// Parses `--hosts node1:4,node2,user@node3:2`.
pub fn parse_hosts(list: &str) -> Result<Vec<HostSpec>> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(host_item)
        .collect()
}

/// Parses a host file: one host a line as `host`, `host:4`, `host 4` or `host slots=4`
/// (MPI style); `#` starts a comment.
pub fn parse_hostfile(text: &str) -> Result<Vec<HostSpec>> {
    let mut out = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        let mut spec = host_item(first).with_context(|| format!("host file line {}", no + 1))?;
        if let Some(count) = words.next() {
            let count = count.strip_prefix("slots=").unwrap_or(count);
            let n: usize = count.parse().map_err(|_| {
                anyhow::anyhow!(
                    "host file line {}: {count:?} is not a number of engines",
                    no + 1
                )
            })?;
            spec.engines = Some(n);
        }
        out.push(spec);
    }
    Ok(out)
}

/// Engines per host: explicit counts kept, the rest of `total` spread over hosts without one
/// (one each when `total` is not given). The same destination twice adds up.
pub fn assign_counts(hosts: &[HostSpec], total: Option<usize>) -> Result<Vec<(String, usize)>> {
    if hosts.is_empty() {
        bail!("no hosts: give --hosts node1:4,node2:4, --hostfile FILE, or `hosts` in the [ssh] section of cluster.toml");
    }
    let explicit: usize = hosts.iter().filter_map(|h| h.engines).sum();
    let open = hosts.iter().filter(|h| h.engines.is_none()).count();
    let rest = match total {
        Some(n) if n < explicit => {
            bail!("-n {n} is fewer than the {explicit} engines the host list asks for")
        }
        Some(n) if open == 0 && n != explicit => bail!(
            "-n {n} but the host list adds up to {explicit} engines; leave -n out or change a count"
        ),
        Some(n) => n - explicit,
        None => open,
    };
    if open > 0 && rest < open {
        bail!("{rest} engine(s) left for {open} host(s) without a count: raise -n or give counts");
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut order = Vec::new();
    let mut k = 0;
    for h in hosts {
        let n = match h.engines {
            Some(n) => n,
            None => {
                let share = rest / open + usize::from(k < rest % open);
                k += 1;
                share
            }
        };
        if !counts.contains_key(&h.destination) {
            order.push(h.destination.clone());
        }
        *counts.entry(h.destination.clone()).or_default() += n;
    }
    Ok(order
        .into_iter()
        .map(|d| {
            let n = counts[&d];
            (d, n)
        })
        .collect())
}

/// True when `ip` (a setting or the host part of an address) is reachable from this machine
/// only.
pub fn is_loopback(ip: &str) -> bool {
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    ip == "localhost"
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

fn is_unspecified(ip: &str) -> bool {
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    ip == "*"
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_unspecified())
}

/// Splits `tcp://HOST:PORT` into host and port.
fn split_address(address: &str) -> Option<(&str, &str)> {
    address.strip_prefix("tcp://")?.rsplit_once(':')
}

/// Stands for the controller's address in a copied engine file until the remote side puts in
/// the address it sees the ssh connection come from.
const ADDRESS_MARKER: &str = "@CLUSTER_CONTROLLER@";

/// The engine connection file as the hosts should see it: a controller listening on every
/// interface is named by `controller_address`, or by [`ADDRESS_MARKER`].
pub fn engine_file_for_hosts(path: &Path, controller_address: Option<&str>) -> Result<String> {
    let (mut info, _) =
        ConnectionInfo::load(path, protocol::PROTOCOL_VERSION, &["engine", "heartbeat"])
            .with_context(|| "cannot read the engine connection file to copy it to the hosts")?;
    for address in [&mut info.addresses.engine, &mut info.addresses.heartbeat]
        .into_iter()
        .flatten()
    {
        let Some((host, port)) = split_address(address) else {
            continue;
        };
        if is_loopback(host) {
            bail!(
                "the controller listens on {host} only, which other machines cannot reach; start it with `cluster start --ip ADDRESS` (an address of this machine the hosts can reach, or 0.0.0.0 for every interface), or set ip in cluster.toml"
            );
        }
        if is_unspecified(host) {
            let to = match controller_address {
                Some(a) if a.contains(':') && !a.starts_with('[') => format!("[{a}]"),
                Some(a) => a.to_owned(),
                None => ADDRESS_MARKER.to_owned(),
            };
            *address = format!("tcp://{to}:{port}");
        }
    }
    Ok(serde_json::to_string_pretty(&info)? + "\n")
}

/// How to reach the hosts, from the `[ssh]` settings.
#[derive(Debug, Clone)]
pub struct SshLaunch {
    /// The `[ssh]` settings (flags already applied).
    pub settings: SshSettings,
    /// Profile name (part of the default remote folder).
    pub profile: String,
    /// Send this machine's `cluster` binary to each host and run that.
    pub copy_binary: bool,
    /// How long to wait for the engines to register.
    pub timeout: Duration,
}

impl SshLaunch {
    /// Everything between `ssh` and the destination.
    pub fn ssh_args(&self) -> Vec<String> {
        let s = &self.settings;
        let mut args = vec![
            "-o".to_owned(),
            "BatchMode=yes".to_owned(),
            "-o".to_owned(),
            format!("ConnectTimeout={}", s.connect_timeout_s.max(1)),
            "-T".to_owned(),
        ];
        if let Some(port) = s.port {
            args.extend(["-p".to_owned(), port.to_string()]);
        }
        if let Some(id) = &s.identity_file {
            args.extend(["-i".to_owned(), expand_home(id)]);
        }
        if let Some(user) = &s.user {
            args.extend(["-l".to_owned(), user.clone()]);
        }
        for o in &s.options {
            args.extend(["-o".to_owned(), o.clone()]);
        }
        args
    }

    /// The remote folder.
    pub fn remote_dir(&self) -> String {
        self.settings
            .remote_dir
            .clone()
            .unwrap_or_else(|| format!(".cluster/remote/{}", self.profile))
    }
}

fn expand_home(path: &str) -> String {
    match (path.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => path.to_owned(),
    }
}

/// What one ssh session printed and how it ended.
#[derive(Debug)]
struct SshRun {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `sh -c SCRIPT` on `destination`, feeding `input` to its stdin.
fn ssh_run(args: &[String], destination: &str, script: &str, input: &[u8]) -> Result<SshRun> {
    let mut cmd = Command::new("ssh");
    cmd.args(args)
        .arg("--")
        .arg(destination)
        .arg(format!("sh -c {}", shell_quote(script)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("cannot run ssh: is the OpenSSH client installed and on PATH?")?;
    if let Some(mut stdin) = child.stdin.take() {
        let data = input.to_vec();
        // The remote side may exit without reading everything (a failed check): a broken
        // pipe is then expected, and what it printed says why.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let out = child.wait_with_output().context("waiting for ssh failed")?;
    Ok(SshRun {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// What ssh's own failure (exit status 255) means, in words.
pub fn explain_ssh_failure(destination: &str, stderr: &str) -> String {
    let text = stderr.trim();
    let last: Vec<&str> = text.lines().rev().take(3).collect::<Vec<_>>();
    let said = last.into_iter().rev().collect::<Vec<_>>().join(" / ");
    let lower = text.to_ascii_lowercase();
    let what = if lower.contains("permission denied") {
        format!("ssh to {destination} was refused: the key was not accepted (check user, identity_file and the host's authorized_keys)")
    } else if lower.contains("host key verification failed") {
        format!("ssh to {destination} failed host key verification: add the host to known_hosts, or set options = [\"StrictHostKeyChecking=accept-new\"] in [ssh]")
    } else if lower.contains("could not resolve") || lower.contains("name or service not known") {
        format!("host {destination} is unknown (its name does not resolve)")
    } else if lower.contains("connection refused") {
        format!("host {destination} refuses ssh connections (is sshd running, and on this port?)")
    } else if lower.contains("timed out")
        || lower.contains("no route")
        || lower.contains("unreachable")
    {
        format!("host {destination} is unreachable")
    } else {
        format!("ssh to {destination} failed")
    };
    if said.is_empty() {
        what
    } else {
        format!("{what}; ssh said: {said}")
    }
}

/// Engines started on one host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostStarted {
    /// ssh destination.
    pub destination: String,
    /// The host's own name (as its engines report it).
    pub hostname: String,
    /// Remote pids.
    pub pids: Vec<u32>,
    /// Remote log files, by pid order.
    pub logs: Vec<String>,
}

/// A host whose engines did not start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostFailed {
    /// ssh destination.
    pub destination: String,
    /// What went wrong, with what ssh or the remote log said.
    pub error: String,
}

/// What a launch on several hosts did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LaunchReport {
    /// Hosts where engines started.
    pub started: Vec<HostStarted>,
    /// Hosts that failed.
    pub failed: Vec<HostFailed>,
    /// Engines registered with the controller at the end.
    pub engines_ready: usize,
    /// Seconds from the call until the engines were ready.
    pub seconds: f64,
}

impl LaunchReport {
    /// Engines started on all hosts.
    pub fn engines(&self) -> usize {
        self.started.iter().map(|h| h.pids.len()).sum()
    }

    /// The failures as one message (for an error), `None` when every host worked.
    pub fn failure_message(&self) -> Option<String> {
        if self.failed.is_empty() {
            return None;
        }
        let mut msg = format!(
            "engines could not start on {} of {} host(s)",
            self.failed.len(),
            self.failed.len() + self.started.len()
        );
        if !self.started.is_empty() {
            msg.push_str(&format!(
                " (the other hosts run {} engine(s); `cluster stop` stops everything)",
                self.engines()
            ));
        }
        msg.push(':');
        for f in &self.failed {
            msg.push_str(&format!("\n  {}: {}", f.destination, f.error));
        }
        Some(msg)
    }
}

/// The remote start script: receive the engine file, check the program, start `count`
/// engines detached, print their pids and the host name.
fn start_script(dir: &str, program: &str, count: usize, stamp: u64) -> String {
    format!(
        r#"D={dir}; P={program}; N={count}
case "$D" in /*) ;; *) D="$HOME/$D" ;; esac
case "$P" in /*|*/*) case "$P" in /*) ;; *) P="$HOME/$P" ;; esac ;; esac
umask 077
mkdir -p "$D" || {{ echo "CLUSTER-ERROR cannot create the folder $D"; exit 0; }}
H=$(uname -n)
A=${{SSH_CLIENT%% *}}
case "$A" in *:*) A="[$A]" ;; esac
T="$D/engine.json.$$"
sed "s/{marker}/$A/g" > "$T" && mv -f "$T" "$D/engine.json" || {{ echo "CLUSTER-ERROR cannot write $D/engine.json"; exit 0; }}
case "$P" in
  */*) [ -x "$P" ] || {{ echo "CLUSTER-MISSING $P $(uname -s) $(uname -m)"; exit 0; }} ;;
  *) command -v "$P" >/dev/null 2>&1 || {{ echo "CLUSTER-MISSING $P $(uname -s) $(uname -m)"; exit 0; }} ;;
esac
if command -v setsid >/dev/null 2>&1; then S=setsid; else S=nohup; fi
i=0
while [ $i -lt $N ]; do
  L="$D/engine-$H-{stamp}-$i.log"
  $S "$P" engine --file "$D/engine.json" </dev/null >"$L" 2>&1 &
  echo "CLUSTER-PID $! $L"
  i=$((i+1))
done
echo "CLUSTER-HOST $H"
"#,
        dir = shell_quote(dir),
        program = shell_quote(program),
        marker = ADDRESS_MARKER,
    )
}

/// Uploads this machine's `cluster` binary to `DIR/cluster` after checking the system and
/// architecture match.
fn copy_binary(launch: &SshLaunch, args: &[String], destination: &str) -> Result<String, String> {
    let exe = crate::program::binary().map_err(|e| format!("{e:#}"))?;
    let data = std::fs::read(&exe)
        .map_err(|e| format!("cannot read {} to copy it: {e}", exe.display()))?;
    let dir = launch.remote_dir();
    let script = format!(
        r#"D={dir}
case "$D" in /*) ;; *) D="$HOME/$D" ;; esac
S=$(uname -s); M=$(uname -m)
if [ "$S" != {os} ] || [ "$M" != {arch} ]; then echo "CLUSTER-ARCH $S $M"; exit 0; fi
umask 077; mkdir -p "$D" || exit 1
T="$D/cluster.$$"
cat > "$T" && chmod 755 "$T" && mv -f "$T" "$D/cluster" && echo "CLUSTER-COPIED $D/cluster"
"#,
        dir = shell_quote(&dir),
        os = shell_quote(local_os()),
        arch = shell_quote(std::env::consts::ARCH),
    );
    let run = ssh_run(args, destination, &script, &data).map_err(|e| format!("{e:#}"))?;
    if run.code == Some(255) {
        return Err(explain_ssh_failure(destination, &run.stderr));
    }
    for line in run.stdout.lines() {
        if let Some(rest) = line.strip_prefix("CLUSTER-ARCH ") {
            return Err(format!(
                "--copy-binary: {destination} is {rest}, this machine is {} {}: the binary would not run there; install cluster on it and set cluster_path in [ssh]",
                local_os(),
                std::env::consts::ARCH
            ));
        }
        if let Some(path) = line.strip_prefix("CLUSTER-COPIED ") {
            return Ok(path.to_owned());
        }
    }
    Err(format!(
        "copying the cluster binary to {destination} failed: {}",
        run.stderr.trim()
    ))
}

fn local_os() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        other => other,
    }
}

/// Starts `count` engines on `destination`.
fn start_on_host(
    launch: &SshLaunch,
    destination: &str,
    count: usize,
    engine_file: &str,
    stamp: u64,
) -> Result<HostStarted, String> {
    let args = launch.ssh_args();
    let program = if launch.copy_binary {
        copy_binary(launch, &args, destination)?
    } else {
        launch.settings.cluster_path.clone()
    };
    let script = start_script(&launch.remote_dir(), &program, count, stamp);
    let run = ssh_run(&args, destination, &script, engine_file.as_bytes())
        .map_err(|e| format!("{e:#}"))?;
    read_started(destination, count, &run)
}

/// What the start script printed on `destination`: the engines' pids and logs, or why
/// they did not start.
fn read_started(destination: &str, count: usize, run: &SshRun) -> Result<HostStarted, String> {
    if run.code == Some(255) {
        return Err(explain_ssh_failure(destination, &run.stderr));
    }
    let mut started = HostStarted {
        destination: destination.to_owned(),
        hostname: String::new(),
        pids: Vec::new(),
        logs: Vec::new(),
    };
    for line in run.stdout.lines() {
        if let Some(rest) = line.strip_prefix("CLUSTER-PID ") {
            if let Some((pid, log)) = rest.split_once(' ') {
                if let Ok(pid) = pid.parse() {
                    started.pids.push(pid);
                    started.logs.push(log.to_owned());
                }
            }
        } else if let Some(h) = line.strip_prefix("CLUSTER-HOST ") {
            started.hostname = h.trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("CLUSTER-MISSING ") {
            let path = rest.split(' ').next().unwrap_or(rest);
            let system = rest.split_once(' ').map(|x| x.1).unwrap_or("");
            let same = system == format!("{} {}", local_os(), std::env::consts::ARCH);
            return Err(format!(
                "the cluster program {path:?} is not on {destination} (set cluster_path in the [ssh] section of cluster.toml to where it is{})",
                if same {
                    ", or pass --copy-binary to send this machine's binary: the host is the same system and architecture"
                } else {
                    ""
                }
            ));
        } else if let Some(rest) = line.strip_prefix("CLUSTER-ERROR ") {
            return Err(format!("{destination}: {rest}"));
        }
    }
    if started.pids.len() != count {
        return Err(format!(
            "the start script on {destination} did not report {count} engines (exit status {:?}); it printed: {} {}",
            run.code,
            run.stdout.trim(),
            run.stderr.trim()
        ));
    }
    Ok(started)
}

/// Which of `pids` on a host have died, each with the last lines of its log.
fn dead_engines(launch: &SshLaunch, host: &HostStarted) -> Result<Vec<(u32, String)>, String> {
    dead_engines_with(&launch.ssh_args(), host)
}

/// [`dead_engines`] with the ssh options given.
fn dead_engines_with(args: &[String], host: &HostStarted) -> Result<Vec<(u32, String)>, String> {
    let mut script = String::new();
    for (pid, log) in host.pids.iter().zip(&host.logs) {
        script.push_str(&format!(
            "kill -0 {pid} 2>/dev/null || {{ echo \"CLUSTER-DEAD {pid}\"; tail -n 5 {log} 2>/dev/null | sed 's/^/| /'; }}\n",
            log = shell_quote(log)
        ));
    }
    let run = ssh_run(args, &host.destination, &script, b"").map_err(|e| format!("{e:#}"))?;
    if run.code == Some(255) {
        return Err(explain_ssh_failure(&host.destination, &run.stderr));
    }
    let mut dead: Vec<(u32, String)> = Vec::new();
    for line in run.stdout.lines() {
        if let Some(pid) = line.strip_prefix("CLUSTER-DEAD ") {
            if let Ok(pid) = pid.trim().parse() {
                dead.push((pid, String::new()));
            }
        } else if let (Some(l), Some(last)) = (line.strip_prefix("| "), dead.last_mut()) {
            last.1.push_str("\n      ");
            last.1.push_str(l);
        }
    }
    Ok(dead)
}

/// Which of `pids` (engines of this cluster on `record`'s host) are gone, each with the last
/// lines of its log: one ssh session, with the options recorded at the start (for restarts).
pub fn dead_on_host(
    profile: &Profile,
    record: &SshHostRecord,
    pids: &[u32],
) -> Result<Vec<(u32, String)>, String> {
    let logs: BTreeMap<u32, PathBuf> = profile
        .engine_records()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, r)| r.host == record.hostname && r.launcher == "ssh")
        .map(|(_, r)| (r.pid, r.log))
        .collect();
    let host = HostStarted {
        destination: record.destination.clone(),
        hostname: record.hostname.clone(),
        pids: pids.to_vec(),
        logs: pids
            .iter()
            .map(|p| {
                logs.get(p)
                    .map(|l| l.display().to_string())
                    .unwrap_or_default()
            })
            .collect(),
    };
    dead_engines_with(&record.ssh_args, &host)
}

/// Starts one engine again on `record`'s host (a restart after one died there), with the
/// options recorded at the start and the `[ssh]` settings' program (or the binary
/// `--copy-binary` left in the remote folder); records it like the first ones and returns
/// its pid. Does not wait for it to register: the supervisor's next rounds see it.
pub fn restart_one(
    profile: &Profile,
    record: &SshHostRecord,
    settings: &SshSettings,
    copied_binary: bool,
) -> Result<u32, String> {
    let engine_file = engine_file_for_hosts(
        &profile.engine_file(),
        settings.controller_address.as_deref(),
    )
    .map_err(|e| format!("{e:#}"))?;
    let program = if copied_binary {
        format!("{}/cluster", record.remote_dir.trim_end_matches('/'))
    } else {
        settings.cluster_path.clone()
    };
    let script = start_script(&record.remote_dir, &program, 1, transport::now_us());
    let run = ssh_run(
        &record.ssh_args,
        &record.destination,
        &script,
        engine_file.as_bytes(),
    )
    .map_err(|e| format!("{e:#}"))?;
    let started = read_started(&record.destination, 1, &run)?;
    let pid = started.pids[0];
    profile
        .write_remote_engine_record(&EngineRecord {
            pid,
            host: started.hostname.clone(),
            launcher: "ssh".into(),
            log: PathBuf::from(&started.logs[0]),
        })
        .map_err(|e| e.to_string())?;
    let mut now = profile
        .ssh_host_records()
        .ok()
        .and_then(|all| {
            all.into_iter()
                .find(|r| r.destination == record.destination)
        })
        .unwrap_or_else(|| record.clone());
    now.pids.push(pid);
    profile
        .write_ssh_host_record(&now)
        .map_err(|e| e.to_string())?;
    Ok(pid)
}

/// Crosses `pid` off `record`'s host record (an engine that died there).
pub fn forget_engine(profile: &Profile, destination: &str, pid: u32) {
    let Some(mut now) = profile
        .ssh_host_records()
        .ok()
        .and_then(|all| all.into_iter().find(|r| r.destination == destination))
    else {
        return;
    };
    now.pids.retain(|p| *p != pid);
    let _ = profile.write_ssh_host_record(&now);
}

/// Starts engines on hosts over ssh for the running controller of `profile` and waits until
/// they have registered (`already` engines were registered before). Hosts fail one by one;
/// see [`LaunchReport::failed`].
pub fn launch(
    profile: &Profile,
    launch: &SshLaunch,
    hosts: &[(String, usize)],
    already: usize,
) -> Result<LaunchReport> {
    let t0 = Instant::now();
    let engine_file = engine_file_for_hosts(
        &profile.engine_file(),
        launch.settings.controller_address.as_deref(),
    )?;
    let stamp = transport::now_us();
    let results: Vec<(String, Result<HostStarted, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|(dest, n)| {
                let file = &engine_file;
                (
                    dest.clone(),
                    scope.spawn(move || start_on_host(launch, dest, *n, file, stamp)),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(d, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err("the launch thread panicked".into()));
                (d, r)
            })
            .collect()
    });
    let mut report = LaunchReport::default();
    let ssh_args = launch.ssh_args();
    for (destination, result) in results {
        match result {
            Ok(started) => {
                record_host(profile, launch, &ssh_args, &started)?;
                report.started.push(started);
            }
            Err(error) => report.failed.push(HostFailed { destination, error }),
        }
    }
    if report.started.is_empty() {
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok(report);
    }
    wait_registered(profile, launch, &mut report, already)?;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

fn record_host(
    profile: &Profile,
    launch: &SshLaunch,
    ssh_args: &[String],
    started: &HostStarted,
) -> Result<()> {
    for (pid, log) in started.pids.iter().zip(&started.logs) {
        profile.write_remote_engine_record(&EngineRecord {
            pid: *pid,
            host: started.hostname.clone(),
            launcher: "ssh".into(),
            log: PathBuf::from(log),
        })?;
    }
    // `cluster engines` may add to a host already running engines of this cluster.
    let mut pids = profile
        .ssh_host_records()?
        .into_iter()
        .find(|r| r.destination == started.destination)
        .map(|r| r.pids)
        .unwrap_or_default();
    pids.extend(&started.pids);
    profile.write_ssh_host_record(&SshHostRecord {
        destination: started.destination.clone(),
        ssh_args: ssh_args.to_vec(),
        remote_dir: launch.remote_dir(),
        hostname: started.hostname.clone(),
        pids,
    })?;
    Ok(())
}

/// Waits for the started engines to register, checking over ssh (after a second, then every
/// two) for engines that died, so that a host whose engines crash is reported with its log
/// instead of a bare timeout.
fn wait_registered(
    profile: &Profile,
    launch: &SshLaunch,
    report: &mut LaunchReport,
    already: usize,
) -> Result<()> {
    let client = client::Client::connect_file(profile.client_file())?;
    let deadline = Instant::now() + launch.timeout;
    let mut next_check = Instant::now() + Duration::from_secs(1);
    loop {
        let want = already + report.engines();
        let have = client.ids()?.len();
        if have >= want {
            report.engines_ready = have;
            return Ok(());
        }
        let now = Instant::now();
        if now >= next_check || now >= deadline {
            next_check = now + Duration::from_secs(2);
            let mut still = Vec::new();
            for mut host in std::mem::take(&mut report.started) {
                match dead_engines(launch, &host) {
                    Ok(dead) if !dead.is_empty() => {
                        let mut msg = format!(
                            "{} of {} engine(s) exited right after starting:",
                            dead.len(),
                            host.pids.len()
                        );
                        for (pid, tail) in &dead {
                            msg.push_str(&format!(
                                "\n    pid {pid} (log {}), last lines:{}",
                                host.logs
                                    .iter()
                                    .zip(&host.pids)
                                    .find(|(_, p)| *p == pid)
                                    .map(|(l, _)| l.as_str())
                                    .unwrap_or("?"),
                                if tail.is_empty() { " (empty)" } else { tail }
                            ));
                        }
                        let keep: Vec<usize> = (0..host.pids.len())
                            .filter(|&i| !dead.iter().any(|(p, _)| *p == host.pids[i]))
                            .collect();
                        host.logs = keep.iter().map(|&i| host.logs[i].clone()).collect();
                        host.pids = keep.iter().map(|&i| host.pids[i]).collect();
                        report.failed.push(HostFailed {
                            destination: host.destination.clone(),
                            error: msg,
                        });
                        if !host.pids.is_empty() {
                            still.push(host);
                        }
                    }
                    _ => still.push(host),
                }
            }
            report.started = still;
            if now >= deadline {
                let want = already + report.engines();
                let have = client.ids()?.len();
                report.engines_ready = have;
                if have >= want {
                    return Ok(());
                }
                bail!(
                    "only {have} of {want} engines registered within {:.0} s; the engines may not reach the controller's address (check the firewall, `ip`/--ip, or controller_address in [ssh]); their logs are in {} on the hosts; the controller log is {}",
                    launch.timeout.as_secs_f64(),
                    launch.remote_dir(),
                    profile.log_dir().join("controller.log").display()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What stopping one host did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostStopped {
    /// ssh destination.
    pub destination: String,
    /// Engines that were still running and were signalled.
    pub signalled: Vec<u32>,
    /// Engines that needed SIGKILL.
    pub killed: Vec<u32>,
    /// Why the host could not be stopped, if it could not.
    pub error: Option<String>,
}

/// Stops the engines recorded on each host: waits briefly for them to leave after the
/// controller's shutdown request, then SIGTERM, then SIGKILL after `grace`; removes the
/// engine file. Only processes whose command line names this cluster's engine file are
/// signalled, so a reused pid is left alone.
pub fn stop_hosts(records: &[SshHostRecord], grace: Duration) -> Vec<HostStopped> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = records
            .iter()
            .map(|r| scope.spawn(move || stop_host(r, grace)))
            .collect();
        handles
            .into_iter()
            .zip(records)
            .map(|(h, r)| {
                h.join().unwrap_or_else(|_| HostStopped {
                    destination: r.destination.clone(),
                    signalled: Vec::new(),
                    killed: Vec::new(),
                    error: Some("the stop thread panicked".into()),
                })
            })
            .collect()
    })
}

fn stop_host(record: &SshHostRecord, grace: Duration) -> HostStopped {
    let pids: Vec<String> = record.pids.iter().map(u32::to_string).collect();
    let tenths = (grace.as_secs_f64() * 10.0).ceil().max(1.0) as u64;
    let script = format!(
        r#"D={dir}; PIDS={pids}
case "$D" in /*) ;; *) D="$HOME/$D" ;; esac
alive() {{
  A=""
  for p in $PIDS; do
    kill -0 "$p" 2>/dev/null || continue
    if [ -r "/proc/$p/cmdline" ]; then tr '\0' ' ' < "/proc/$p/cmdline" | grep -qF "$D/engine.json" || continue; fi
    A="$A $p"
  done
}}
waitgone() {{ n=0; alive; while [ -n "$A" ] && [ $n -lt $1 ]; do sleep 0.1; n=$((n+1)); alive; done; }}
waitgone 20
if [ -n "$A" ]; then echo "CLUSTER-TERM$A"; kill -TERM $A 2>/dev/null; waitgone {tenths}; fi
if [ -n "$A" ]; then echo "CLUSTER-KILL$A"; kill -KILL $A 2>/dev/null; waitgone 50; fi
[ -n "$A" ] && echo "CLUSTER-SURVIVED$A"
rm -f "$D/engine.json"
echo CLUSTER-DONE
"#,
        dir = shell_quote(&record.remote_dir),
        pids = shell_quote(&pids.join(" ")),
    );
    let mut out = HostStopped {
        destination: record.destination.clone(),
        signalled: Vec::new(),
        killed: Vec::new(),
        error: None,
    };
    let run = match ssh_run(&record.ssh_args, &record.destination, &script, b"") {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            return out;
        }
    };
    let nums = |rest: &str| -> Vec<u32> {
        rest.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let mut done = false;
    for line in run.stdout.lines() {
        if let Some(rest) = line.strip_prefix("CLUSTER-TERM") {
            out.signalled = nums(rest);
        } else if let Some(rest) = line.strip_prefix("CLUSTER-KILL") {
            out.killed = nums(rest);
        } else if let Some(rest) = line.strip_prefix("CLUSTER-SURVIVED") {
            out.error = Some(format!("engines{rest} survived SIGKILL"));
        } else if line == "CLUSTER-DONE" {
            done = true;
        }
    }
    if !done && out.error.is_none() {
        out.error = Some(if run.code == Some(255) {
            format!(
                "{}; engines {} may still run there",
                explain_ssh_failure(&record.destination, &run.stderr),
                pids.join(" ")
            )
        } else {
            format!(
                "the stop script failed (exit status {:?}): {}",
                run.code,
                run.stderr.trim()
            )
        });
    }
    let _ = run.ok;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(d: &str, n: Option<usize>) -> HostSpec {
        HostSpec {
            destination: d.into(),
            engines: n,
        }
    }

    #[test]
    fn host_lists() {
        assert_eq!(
            parse_hosts("node1:4, root@node2,[::1]:2,fe80::1").unwrap(),
            vec![
                spec("node1", Some(4)),
                spec("root@node2", None),
                spec("::1", Some(2)),
                spec("fe80::1", None)
            ]
        );
        assert!(parse_hosts("node1:0").is_err());
        assert!(parse_hosts("-oProxyCommand=x").is_err());
        assert_eq!(
            parse_hostfile("# hosts\nnode1 slots=3\nnode2:2  # two\n\nnode3 5\nnode4\n").unwrap(),
            vec![
                spec("node1", Some(3)),
                spec("node2", Some(2)),
                spec("node3", Some(5)),
                spec("node4", None)
            ]
        );
        assert!(parse_hostfile("node1 many").is_err());
    }

    #[test]
    fn counts() {
        let h = parse_hosts("a:4,b:4").unwrap();
        assert_eq!(
            assign_counts(&h, Some(8)).unwrap(),
            [("a".to_owned(), 4), ("b".to_owned(), 4)]
        );
        assert!(assign_counts(&h, Some(10)).is_err());
        assert!(assign_counts(&h, Some(6)).is_err());
        let h = parse_hosts("a,b,c:2").unwrap();
        assert_eq!(
            assign_counts(&h, Some(7)).unwrap(),
            [
                ("a".to_owned(), 3),
                ("b".to_owned(), 2),
                ("c".to_owned(), 2)
            ]
        );
        assert_eq!(
            assign_counts(&h, None).unwrap(),
            [
                ("a".to_owned(), 1),
                ("b".to_owned(), 1),
                ("c".to_owned(), 2)
            ]
        );
        assert!(assign_counts(&h, Some(3)).is_err());
        let h = parse_hosts("a:1,a:2").unwrap();
        assert_eq!(assign_counts(&h, None).unwrap(), [("a".to_owned(), 3)]);
        assert!(assign_counts(&[], None).is_err());
    }

    #[test]
    fn addresses() {
        assert!(is_loopback("127.0.0.1") && is_loopback("::1") && is_loopback("localhost"));
        assert!(!is_loopback("0.0.0.0") && !is_loopback("10.1.2.3"));
        assert!(is_unspecified("0.0.0.0") && is_unspecified("[::]") && is_unspecified("*"));
    }

    #[test]
    fn engine_file_is_rewritten_for_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.json");
        let info = |ip: &str| {
            let addresses = security::Addresses {
                engine: Some(format!("tcp://{ip}:5000")),
                heartbeat: Some(format!("tcp://{ip}:5001")),
                ..Default::default()
            };
            let key = security::Key::generate();
            ConnectionInfo::new(protocol::PROTOCOL_VERSION, &key, addresses)
                .with_location("h", 1)
                .with_encryption(false)
        };
        info("127.0.0.1").save(&path).unwrap();
        let err = engine_file_for_hosts(&path, None).unwrap_err().to_string();
        assert!(err.contains("--ip"), "{err}");
        info("0.0.0.0").save(&path).unwrap();
        let text = engine_file_for_hosts(&path, None).unwrap();
        assert!(
            text.contains(&format!("tcp://{ADDRESS_MARKER}:5000")),
            "{text}"
        );
        let text = engine_file_for_hosts(&path, Some("10.0.0.5")).unwrap();
        assert!(text.contains("tcp://10.0.0.5:5001"), "{text}");
        info("10.9.9.9").save(&path).unwrap();
        let text = engine_file_for_hosts(&path, Some("10.0.0.5")).unwrap();
        assert!(text.contains("tcp://10.9.9.9:5000"), "{text}");
    }

    #[test]
    fn ssh_failures_are_explained() {
        let m = explain_ssh_failure("n1", "root@n1: Permission denied (publickey).");
        assert!(m.contains("key was not accepted"), "{m}");
        let m = explain_ssh_failure(
            "n1",
            "ssh: connect to host 10.0.0.1 port 22: Connection refused",
        );
        assert!(m.contains("refuses ssh"), "{m}");
        let m = explain_ssh_failure("n1", "ssh: connect to host n1 port 22: No route to host");
        assert!(m.contains("unreachable"), "{m}");
    }

    #[test]
    fn start_script_quotes_its_inputs() {
        let s = start_script("dir with space", "/opt/x'y/cluster", 2, 7);
        assert!(
            s.starts_with("D='dir with space'; P='/opt/x'\\''y/cluster'; N=2"),
            "{s}"
        );
        assert!(s.contains(ADDRESS_MARKER));
    }
}
