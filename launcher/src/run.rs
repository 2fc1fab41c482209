//! The one door to external commands (`sbatch`, `squeue`, `mpiexec --version`…), so that the
//! code around them can be tested against a fake that answers from a script, or a real Slurm.

use std::process::{Command, Stdio};

/// What a finished command printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// True when the command exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// A successful output with this text on stdout (for fakes).
    pub fn ok(stdout: &str) -> Output {
        Output {
            code: Some(0),
            stdout: stdout.to_owned(),
            stderr: String::new(),
        }
    }

    /// A failed output with this text on stderr (for fakes).
    pub fn failed(code: i32, stderr: &str) -> Output {
        Output {
            code: Some(code),
            stdout: String::new(),
            stderr: stderr.to_owned(),
        }
    }
}

/// Why a command could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program is not installed (not in `PATH`). Retrying does not help; installing does.
    #[error("`{program}` was not found on host {host} (PATH={path})")]
    NotFound {
        /// The program.
        program: String,
        /// This machine.
        host: String,
        /// The `PATH` it was looked up in.
        path: String,
    },
    /// Starting or waiting for it failed otherwise (permissions, resources).
    #[error("cannot run `{program}` on host {host}: {source}")]
    Io {
        /// The program.
        program: String,
        /// This machine.
        host: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs external commands to completion.
pub trait CommandRunner {
    /// Runs `program args…` and returns what it printed, whatever its exit code.
    fn run(&self, program: &str, args: &[String]) -> Result<Output, RunError>;

    /// The host the commands run on, for messages.
    fn host(&self) -> String {
        crate::hostname()
    }
}

/// Runs commands on this machine, with extra environment variables (`SLURM_CONF`).
#[derive(Debug, Clone, Default)]
pub struct SystemRunner {
    /// Variables added to every command's environment.
    pub env: Vec<(String, String)>,
}

impl SystemRunner {
    /// A runner adding `env` to each command's environment.
    pub fn with_env(env: Vec<(String, String)>) -> SystemRunner {
        SystemRunner { env }
    }
}

impl CommandRunner for SystemRunner {
    fn run(&self, program: &str, args: &[String]) -> Result<Output, RunError> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        match cmd.output() {
            Ok(out) => Ok(Output {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RunError::NotFound {
                program: program.to_owned(),
                host: self.host(),
                path: std::env::var("PATH").unwrap_or_default(),
            }),
            Err(source) => Err(RunError::Io {
                program: program.to_owned(),
                host: self.host(),
                source,
            }),
        }
    }
}

/// A fake for tests: answers each call from a function of the command line, and records the
/// calls.
pub struct FakeRunner<F: Fn(&str, &[String]) -> Result<Output, RunError>> {
    answer: F,
    calls: std::cell::RefCell<Vec<Vec<String>>>,
}

impl<F: Fn(&str, &[String]) -> Result<Output, RunError>> std::fmt::Debug for FakeRunner<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRunner")
            .field("calls", &self.calls)
            .finish()
    }
}

impl<F: Fn(&str, &[String]) -> Result<Output, RunError>> FakeRunner<F> {
    /// A fake answering with `answer(program, args)`.
    pub fn new(answer: F) -> Self {
        FakeRunner {
            answer,
            calls: Default::default(),
        }
    }

    /// Every call so far, as `[program, args…]`.
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.calls.borrow().clone()
    }
}

impl<F: Fn(&str, &[String]) -> Result<Output, RunError>> CommandRunner for FakeRunner<F> {
    fn run(&self, program: &str, args: &[String]) -> Result<Output, RunError> {
        let mut call = vec![program.to_owned()];
        call.extend(args.iter().cloned());
        self.calls.borrow_mut().push(call);
        (self.answer)(program, args)
    }

    fn host(&self) -> String {
        "testhost".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_runner_reports_missing_programs_with_the_host() {
        let r = SystemRunner::default();
        let err = r
            .run("surely-not-a-program-xyz", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("surely-not-a-program-xyz") && err.contains("host"),
            "{err}"
        );
        let out = r
            .run("sh", &["-c".into(), "echo hi; exit 3".into()])
            .unwrap();
        assert_eq!((out.code, out.stdout.as_str()), (Some(3), "hi\n"));
    }
}
