//! Command tasks: run a program, feed its stdin, capture capped stdout and stderr, and kill
//! it at its timeout.
//!
//! Each pipe gets its own thread so that a program writing a lot to stderr while we wait on
//! stdout (or not reading its stdin) cannot deadlock us. The child runs in its own process
//! group so that a timeout kills what it started too; otherwise a grandchild holding the
//! pipes open would keep us waiting after the kill.

use protocol::{CommandOutput, CommandSpec, ErrorKind};
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::registry::CallError;

/// Runs `spec`, killing it after `timeout` (none: no limit). A non-zero exit status is a
/// successful task (the output says how the program ended); only a program that cannot be
/// started or that times out is an error.
pub(crate) fn run_command(
    spec: &CommandSpec,
    timeout: Option<Duration>,
    max_output: usize,
) -> Result<CommandOutput, CallError> {
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
    let mut child = cmd.spawn().map_err(|e| {
        CallError::new(
            ErrorKind::CommandFailed,
            format!("cannot start `{program}`: {e}"),
        )
    })?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    std::thread::scope(|scope| {
        if let (Some(mut pipe), Some(data)) = (stdin, spec.stdin.as_deref()) {
            // A program that exits without reading its input gives a broken pipe: not an error.
            scope.spawn(move || {
                let _ = pipe.write_all(data);
            });
        }
        let out_reader = stdout.map(|p| scope.spawn(move || read_capped(p, max_output)));
        let err_reader = stderr.map(|p| scope.spawn(move || read_capped(p, max_output)));

        let mut timed_out = false;
        if let Some(limit) = timeout {
            let (tx, rx) = mpsc::channel();
            scope.spawn(move || {
                wait_exited_without_reaping(pid);
                let _ = tx.send(());
            });
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                timed_out = true;
                // SAFETY: plain syscall. The child has not been reaped (the waiter uses
                // WNOWAIT and we have not called wait), so its pid, which is also its process
                // group id, cannot have been reused.
                unsafe {
                    libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                }
            }
        }
        let status = child.wait();
        let (stdout, out_cut) = join_reader(out_reader);
        let (stderr, err_cut) = join_reader(err_reader);

        if timed_out {
            let ms = timeout.map(|t| t.as_millis()).unwrap_or_default();
            return Err(CallError::new(
                ErrorKind::Timeout,
                format!(
                    "command `{program}` ran longer than its timeout of {ms} ms and was killed"
                ),
            ));
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
            truncated: out_cut || err_cut,
        })
    })
}

type Reader<'s> = Option<std::thread::ScopedJoinHandle<'s, (Vec<u8>, bool)>>;

fn join_reader(reader: Reader<'_>) -> (Vec<u8>, bool) {
    reader.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// Reads up to `cap` bytes, then reads and discards the rest (so the program never blocks
/// on a full pipe); the flag says whether anything was discarded.
fn read_capped(mut pipe: impl Read, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    // A read error (rare on a pipe) ends the capture with what was read so far.
    let _ = (&mut pipe).take(cap as u64).read_to_end(&mut kept);
    let extra = io::copy(&mut pipe, &mut io::sink()).unwrap_or(0);
    (kept, extra > 0)
}

/// Blocks until process `pid` has exited, leaving it to be reaped by `Child::wait`.
fn wait_exited_without_reaping(pid: u32) {
    loop {
        // SAFETY: waitid writes only into `info`, a zeroed plain C struct we own.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
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
        let out = run_command(&spec("echo", &["hello"]), None, MIB).unwrap();
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
        let out = run_command(&s, None, MIB).unwrap();
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
        let out = run_command(&s, None, MIB).unwrap();
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn stdin_not_read_is_not_an_error() {
        let mut s = spec("true", &[]);
        s.stdin = Some(vec![b'x'; 1 << 20]);
        assert!(run_command(&s, None, MIB).unwrap().success());
    }

    #[test]
    fn timeout_kills_the_command_and_its_children() {
        let t = Instant::now();
        let s = spec("sh", &["-c", "sleep 30 & sleep 30"]);
        let err = run_command(&s, Some(Duration::from_millis(200)), MIB).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(
            err.message.contains("`sh`") && err.message.contains("200 ms"),
            "{}",
            err.message
        );
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        // A quick command under a timeout is not affected.
        let out = run_command(&spec("echo", &["ok"]), Some(Duration::from_secs(10)), MIB).unwrap();
        assert_eq!(out.stdout, b"ok\n");
    }

    #[test]
    fn missing_program_and_bad_cwd_fail_to_start() {
        let err = run_command(&spec("no-such-program-xyz", &[]), None, MIB).unwrap_err();
        assert_eq!(err.kind, ErrorKind::CommandFailed);
        assert!(
            err.message.contains("no-such-program-xyz"),
            "{}",
            err.message
        );
        assert!(err.message.contains("No such file"), "{}", err.message);
        let mut s = spec("true", &[]);
        s.cwd = Some("/no/such/dir".into());
        let err = run_command(&s, None, MIB).unwrap_err();
        assert_eq!(err.kind, ErrorKind::CommandFailed);
        assert!(err.message.contains("/no/such/dir"), "{}", err.message);
    }

    #[test]
    fn output_is_capped_and_marked_truncated() {
        let s = spec(
            "sh",
            &["-c", "head -c 100000 /dev/zero; head -c 10 /dev/zero >&2"],
        );
        let out = run_command(&s, None, 1000).unwrap();
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
        let out = run_command(&spec("sh", &["-c", "kill -9 $$"]), None, MIB).unwrap();
        assert_eq!(out.status, None);
        assert_eq!(out.signal, Some(9));
    }
}
