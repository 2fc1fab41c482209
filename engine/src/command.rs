//! Command tasks: run a program, feed its stdin, capture capped stdout and stderr, and kill
//! it at its timeout.
//!
//! One thread serves all three pipes with poll(2), so that a program writing a lot to stderr
//! while we wait on stdout (or not reading its stdin) cannot deadlock us, without the cost of
//! a reader thread per pipe (which, for a short program, is more than starting it: measured
//! here, 180 µs of engine CPU per `true` with two reader threads against 70 µs without). The
//! child runs in its own process group so that a timeout kills what it started too; otherwise
//! a grandchild holding the pipes open would keep us waiting after the kill. The engine's stop
//! flag kills it the same way, a moment after SIGTERM/SIGINT.

use protocol::{CommandOutput, CommandSpec, ErrorKind};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::io::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::exec::STOP_GRACE;
use crate::registry::CallError;

/// Runs `spec`, killing it after `timeout` (none: no limit), or [`STOP_GRACE`] after `stop`
/// is set (the engine is stopping). A non-zero exit status is a successful task (the output
/// says how the program ended); only a program that cannot be started, that times out or that
/// is killed because the engine stops is an error.
pub(crate) fn run_command(
    spec: &CommandSpec,
    timeout: Option<Duration>,
    max_output: usize,
    stop: Option<&AtomicBool>,
) -> Result<CommandOutput, CallError> {
    let program = &spec.program;
    let mut child = spawn(spec)?;
    let pid = child.id();
    let mut pipes = Pipes::new(
        child.stdin.take(),
        spec.stdin.as_deref(),
        child.stdout.take(),
        child.stderr.take(),
        max_output,
    );
    let mut watch = Watch::new(pid, timeout.map(|t| Instant::now() + t), stop);
    // Drain the pipes until both close (or, after a kill, until a grandchild that left the
    // process group is given up on).
    let mut give_up: Option<Instant> = None;
    while pipes.open() {
        let now = Instant::now();
        let wake = match give_up {
            Some(g) if now >= g => break,
            Some(g) => Some(g),
            None => {
                let wake = watch.check(now);
                if watch.killed.is_some() {
                    give_up = Some(now + AFTER_KILL);
                }
                give_up.or(wake)
            }
        };
        pipes.wait(wake.map(|w| w.saturating_duration_since(now)));
    }
    let (stdout, stderr, truncated) = pipes.finish();
    // The pipes are closed; the program may still run (it closed them itself).
    let status = loop {
        if watch.killed.is_some() || !watch.watching() {
            break child.wait();
        }
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {
                watch.check(Instant::now());
                if watch.killed.is_none() {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            Err(e) => break Err(e),
        }
    };
    match watch.killed {
        Some(Kill::Timeout) => {
            let ms = timeout.map(|t| t.as_millis()).unwrap_or_default();
            return Err(CallError::new(
                ErrorKind::Timeout,
                format!(
                    "command `{program}` ran longer than its timeout of {ms} ms and was killed"
                ),
            ));
        }
        Some(Kill::Stop) => {
            return Err(CallError::new(
                ErrorKind::EngineLost,
                format!("command `{program}` was killed because its engine is stopping (SIGTERM or SIGINT); submit it with retries > 0 to have it re-run on another engine"),
            ));
        }
        None => {}
    }
    let status = status.map_err(|e| {
        CallError::new(
            ErrorKind::CommandFailed,
            format!("cannot wait for `{program}`: {e}"),
        )
    })?;
    Ok(CommandOutput {
        status: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
        truncated,
    })
}

/// Starts `spec` in a process group of its own, with piped output.
fn spawn(spec: &CommandSpec) -> Result<std::process::Child, CallError> {
    let program = &spec.program;
    if let Some(cwd) = &spec.cwd {
        // std reports a bad directory as a spawn error that looks like a missing program.
        if !Path::new(cwd).is_dir() {
            return Err(CallError::new(
                ErrorKind::CommandFailed,
                format!("cannot run `{program}`: working directory {cwd:?} is not a directory on this engine"),
            ));
        }
    }
    let mut cmd = Command::new(program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    cmd.spawn().map_err(|e| {
        CallError::new(
            ErrorKind::CommandFailed,
            format!("cannot start `{program}`: {e}"),
        )
    })
}

/// Why a command's process group was killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// It ran past its timeout.
    Timeout,
    /// The engine is stopping.
    Stop,
}

/// How often a command with a stop flag looks at it.
const STOP_POLL: Duration = Duration::from_millis(50);

/// When to kill a running command: at its deadline, or [`STOP_GRACE`] after the stop flag
/// was first seen set.
struct Watch<'a> {
    pid: u32,
    deadline: Option<Instant>,
    stop: Option<&'a AtomicBool>,
    stop_at: Option<Instant>,
    killed: Option<Kill>,
}

impl<'a> Watch<'a> {
    fn new(pid: u32, deadline: Option<Instant>, stop: Option<&'a AtomicBool>) -> Watch<'a> {
        Watch {
            pid,
            deadline,
            stop,
            stop_at: None,
            killed: None,
        }
    }

    /// True when something may kill the command (a deadline or a stop flag).
    fn watching(&self) -> bool {
        self.deadline.is_some() || self.stop.is_some()
    }

    /// Kills the command's group if it is due at `now`; returns when to look again (`None`:
    /// nothing to watch for).
    fn check(&mut self, now: Instant) -> Option<Instant> {
        if self.killed.is_some() {
            return None;
        }
        if self.stop_at.is_none() && self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            self.stop_at = Some(now + STOP_GRACE);
        }
        let due = if self.deadline.is_some_and(|d| now >= d) {
            Some(Kill::Timeout)
        } else if self.stop_at.is_some_and(|d| now >= d) {
            Some(Kill::Stop)
        } else {
            None
        };
        if let Some(kill) = due {
            kill_group(self.pid);
            self.killed = Some(kill);
            return None;
        }
        let poll_stop = self.stop.map(|_| now + STOP_POLL);
        [self.deadline, self.stop_at, poll_stop]
            .into_iter()
            .flatten()
            .min()
    }
}

/// How long, after a timeout kill, output pipes may stay open (held by a grandchild that left
/// the process group) before they are given up on.
const AFTER_KILL: Duration = Duration::from_secs(2);

/// Kills the process group of a child that is its own group leader.
fn kill_group(pid: u32) {
    // SAFETY: plain syscall. The child has not been reaped (only `Child::wait`/`try_wait`
    // reap it, after this), so its pid, which is also its process group id, is not reused.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

/// One output pipe being captured: the first `cap` bytes are kept, the rest read and dropped
/// so the program never blocks on a full pipe.
struct Capture {
    pipe: Option<File>,
    kept: Vec<u8>,
    cut: bool,
}

impl Capture {
    fn new(pipe: Option<impl Into<OwnedFd>>) -> Capture {
        Capture {
            pipe: pipe.map(|p| File::from(p.into())),
            kept: Vec::new(),
            cut: false,
        }
    }

    fn fd(&self) -> Option<RawFd> {
        self.pipe.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Reads what is there without blocking; closes on end of file or error.
    fn read(&mut self, cap: usize, buf: &mut [u8]) {
        while let Some(pipe) = &mut self.pipe {
            match pipe.read(buf) {
                Ok(0) => self.pipe = None,
                Ok(n) => {
                    let room = cap.saturating_sub(self.kept.len());
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                    if n > room {
                        self.cut = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // A read error (rare on a pipe) ends the capture with what was read so far.
                Err(_) => self.pipe = None,
            }
        }
    }
}

/// The child's pipes, served by one thread with poll(2): no reader threads per command, which
/// would cost more than starting a short program does.
struct Pipes<'a> {
    stdin: Option<File>,
    input: &'a [u8],
    out: Capture,
    err: Capture,
    cap: usize,
    buf: Vec<u8>,
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own; failure leaves it blocking, which poll still
    // serves correctly (each read then returns what one poll reported).
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

impl<'a> Pipes<'a> {
    fn new(
        stdin: Option<std::process::ChildStdin>,
        input: Option<&'a [u8]>,
        stdout: Option<std::process::ChildStdout>,
        stderr: Option<std::process::ChildStderr>,
        cap: usize,
    ) -> Pipes<'a> {
        let input = input.unwrap_or_default();
        // Nothing to write: close stdin at once so the program sees end of file.
        let stdin = stdin.filter(|_| !input.is_empty());
        for fd in [
            stdin.as_ref().map(AsRawFd::as_raw_fd),
            stdout.as_ref().map(AsRawFd::as_raw_fd),
            stderr.as_ref().map(AsRawFd::as_raw_fd),
        ]
        .into_iter()
        .flatten()
        {
            set_nonblocking(fd);
        }
        Pipes {
            stdin: stdin.map(|p| File::from(OwnedFd::from(p))),
            input,
            out: Capture::new(stdout),
            err: Capture::new(stderr),
            cap,
            buf: vec![0; 64 * 1024],
        }
    }

    /// True while an output pipe is open.
    fn open(&self) -> bool {
        self.out.fd().is_some() || self.err.fd().is_some()
    }

    /// Waits up to `timeout` (`None`: no limit) for a pipe to be ready, and serves it.
    fn wait(&mut self, timeout: Option<Duration>) {
        let mut fds = Vec::with_capacity(3);
        for fd in [self.out.fd(), self.err.fd()].into_iter().flatten() {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(p) = &self.stdin {
            fds.push(libc::pollfd {
                fd: p.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        let ms = timeout.map_or(-1, |t| {
            t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int
        });
        // SAFETY: `fds` is a live, correctly sized array of pollfd.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc <= 0 {
            // Timeout, or EINTR: the caller's loop checks its deadline and comes back.
            return;
        }
        for p in &fds {
            if p.revents == 0 {
                continue;
            }
            if Some(p.fd) == self.out.fd() {
                self.out.read(self.cap, &mut self.buf);
            } else if Some(p.fd) == self.err.fd() {
                self.err.read(self.cap, &mut self.buf);
            } else {
                self.write_input();
            }
        }
    }

    fn write_input(&mut self) {
        let Some(pipe) = &mut self.stdin else { return };
        loop {
            if self.input.is_empty() {
                self.stdin = None;
                return;
            }
            match pipe.write(self.input) {
                Ok(n) => self.input = &self.input[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // A program that exits without reading its input gives a broken pipe: not an
                // error, the input is simply not wanted.
                Err(_) => {
                    self.stdin = None;
                    return;
                }
            }
        }
    }

    /// What was captured: stdout, stderr, and whether either was cut.
    fn finish(self) -> (Vec<u8>, Vec<u8>, bool) {
        let cut = self.out.cut || self.err.cut;
        (self.out.kept, self.err.kept, cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn spec(program: &str, args: &[&str]) -> CommandSpec {
        CommandSpec {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    const MIB: usize = 1 << 20;

    #[test]
    fn echo_hello() {
        let out = run_command(&spec("echo", &["hello"]), None, MIB, None).unwrap();
        assert_eq!(out.stdout, b"hello\n");
        assert!(out.stderr.is_empty());
        assert!(out.success());
        assert!(!out.truncated);
    }

    #[test]
    fn exit_status_stderr_env_and_cwd() {
        let mut s = spec(
            "sh",
            &["-c", "echo oops >&2; echo \"$GREETING\"; pwd; exit 3"],
        );
        s.env = vec![("GREETING".into(), "hi there".into())];
        s.cwd = Some("/tmp".into());
        let out = run_command(&s, None, MIB, None).unwrap();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.signal, None);
        assert_eq!(out.stderr, b"oops\n");
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.starts_with("hi there\n"), "{stdout}");
        assert!(stdout.trim_end().ends_with("tmp"), "{stdout}");
    }

    #[test]
    fn stdin_is_passed_through() {
        let mut s = spec("cat", &[]);
        // Larger than a pipe buffer, so writing and reading must overlap.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        s.stdin = Some(data.clone());
        let out = run_command(&s, None, MIB, None).unwrap();
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn stdin_not_read_is_not_an_error() {
        let mut s = spec("true", &[]);
        s.stdin = Some(vec![b'x'; 1 << 20]);
        assert!(run_command(&s, None, MIB, None).unwrap().success());
    }

    #[test]
    fn timeout_kills_the_command_and_its_children() {
        let t = Instant::now();
        let s = spec("sh", &["-c", "sleep 30 & sleep 30"]);
        let err = run_command(&s, Some(Duration::from_millis(200)), MIB, None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(
            err.message.contains("`sh`") && err.message.contains("200 ms"),
            "{}",
            err.message
        );
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        // A quick command under a timeout is not affected.
        let out = run_command(
            &spec("echo", &["ok"]),
            Some(Duration::from_secs(10)),
            MIB,
            None,
        )
        .unwrap();
        assert_eq!(out.stdout, b"ok\n");
    }

    #[test]
    fn timeout_holds_after_the_program_closes_its_output() {
        let t = Instant::now();
        let s = spec("sh", &["-c", "exec >&- 2>&-; sleep 30"]);
        let err = run_command(&s, Some(Duration::from_millis(200)), MIB, None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    #[test]
    fn many_short_commands_in_a_row() {
        for i in 0..200 {
            let out = run_command(&spec("echo", &[&i.to_string()]), None, MIB, None).unwrap();
            assert_eq!(out.stdout, format!("{i}\n").as_bytes());
        }
    }

    #[test]
    fn missing_program_and_bad_cwd_fail_to_start() {
        let err = run_command(&spec("no-such-program-xyz", &[]), None, MIB, None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::CommandFailed);
        assert!(
            err.message.contains("no-such-program-xyz"),
            "{}",
            err.message
        );
        assert!(err.message.contains("No such file"), "{}", err.message);
        let mut s = spec("true", &[]);
        s.cwd = Some("/no/such/dir".into());
        let err = run_command(&s, None, MIB, None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::CommandFailed);
        assert!(err.message.contains("/no/such/dir"), "{}", err.message);
    }

    #[test]
    fn output_is_capped_and_marked_truncated() {
        let s = spec(
            "sh",
            &["-c", "head -c 100000 /dev/zero; head -c 10 /dev/zero >&2"],
        );
        let out = run_command(&s, None, 1000, None).unwrap();
        assert_eq!(out.stdout.len(), 1000);
        assert_eq!(out.stderr.len(), 10);
        assert!(out.truncated);
        assert!(
            out.success(),
            "the program was not blocked by the full pipe"
        );
    }

    #[test]
    fn killed_by_a_signal_reports_it() {
        let out = run_command(&spec("sh", &["-c", "kill -9 $$"]), None, MIB, None).unwrap();
        assert_eq!(out.status, None);
        assert_eq!(out.signal, Some(9));
    }

    #[test]
    fn a_stop_kills_a_long_command_after_the_grace_period_but_lets_a_short_one_end() {
        let stop = AtomicBool::new(true);
        let t = Instant::now();
        let err = run_command(&spec("sleep", &["30"]), None, MIB, Some(&stop)).unwrap_err();
        let took = t.elapsed();
        assert_eq!(err.kind, ErrorKind::EngineLost);
        assert!(
            err.message.contains("`sleep`") && err.message.contains("stopping"),
            "{}",
            err.message
        );
        assert!(
            took >= STOP_GRACE && took < Duration::from_secs(5),
            "{took:?}"
        );
        // One that ends within the grace period ends as usual.
        let out = run_command(
            &spec("sh", &["-c", "sleep 0.05; echo done"]),
            None,
            MIB,
            Some(&stop),
        )
        .unwrap();
        assert_eq!(out.stdout, b"done\n");
        // A flag that stays clear changes nothing.
        let clear = AtomicBool::new(false);
        let out = run_command(&spec("echo", &["hi"]), None, MIB, Some(&clear)).unwrap();
        assert_eq!(out.stdout, b"hi\n");
    }
}
