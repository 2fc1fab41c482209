//! Tasks: what runs ([`Work`], [`CommandSpec`], [`CommandOutput`]), how it is scheduled
//! ([`TaskOptions`], [`TaskRequest`], [`Assignment`]) and how it ends ([`TaskOutcome`],
//! [`Status`], [`TaskError`], [`ErrorKind`]).

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::{EngineId, TaskId};

/// What runs: a named function, a chunk of a map, or a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// Call a registered function; the payload is its msgpack-encoded argument and the
    /// result payload its msgpack-encoded return value.
    Call {
        /// Registered function name.
        function: String,
    },
    /// Apply a registered function to each item of a msgpack array (the payload); the result
    /// payload is the msgpack array of return values, in order.
    Map {
        /// Registered function name.
        function: String,
    },
    /// Run a program; the payload is empty and the result payload a [`CommandOutput`].
    Command(CommandSpec),
}

impl Work {
    /// Function name, or the program for command tasks (for messages and logs).
    pub fn name(&self) -> &str {
        match self {
            Work::Call { function } | Work::Map { function } => function,
            Work::Command(c) => &c.program,
        }
    }
}

/// A program to run on an engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSpec {
    /// Program name (looked up in `PATH`) or path.
    pub program: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory (the engine's when absent).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Bytes written to the program's standard input (closed, empty, when absent).
    #[serde(default, with = "serde_bytes")]
    pub stdin: Option<Vec<u8>>,
}

/// What a command task produced (the result payload of [`Work::Command`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// Exit code, absent when killed by a signal.
    pub status: Option<i32>,
    /// Signal that killed it, if any.
    pub signal: Option<i32>,
    /// Standard output, cut at the engine's limit.
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    /// Standard error, cut at the engine's limit.
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
    /// True when stdout or stderr was cut.
    pub truncated: bool,
}

impl CommandOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Scheduling options of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOptions {
    /// Engines allowed to run it (any when empty).
    #[serde(default)]
    pub targets: Vec<EngineId>,
    /// Times the task may be re-run on another engine after it failed there or its engine
    /// died (never on an engine it already failed on).
    #[serde(default)]
    pub retries: u32,
    /// Time limit in milliseconds, twice: a task not started this long after it was
    /// submitted fails with [`ErrorKind::Timeout`], and one running longer than this on its
    /// engine is stopped (commands are killed, functions abandoned) and fails the same way.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Run-time limit only, in milliseconds: a task running longer on its engine is stopped
    /// and fails with [`ErrorKind::Timeout`], however long it waited to start (what a command's
    /// `--timeout` means, as in GNU parallel). Overrides `timeout_ms` on the engine.
    #[serde(default)]
    pub run_timeout_ms: Option<u64>,
    /// Run only after these tasks have finished successfully (a failed one fails this task
    /// with [`ErrorKind::Dependency`]).
    #[serde(default)]
    pub after: Vec<TaskId>,
    /// Run on the engine where these tasks ran, after they finished successfully (they must
    /// all have run on the same engine).
    #[serde(default)]
    pub follow: Vec<TaskId>,
}

/// A task as submitted by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRequest {
    /// Client-made id.
    pub id: TaskId,
    /// What to run.
    pub work: Work,
    /// Where and how.
    #[serde(default)]
    pub options: TaskOptions,
}

/// A task as handed to an engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Task id.
    pub id: TaskId,
    /// What to run.
    pub work: Work,
    /// Run-time limit, milliseconds. An engine starting such a task says so
    /// ([`FromEngine::Started`](crate::FromEngine::Started)), so the controller times the run
    /// from its real start.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// How much longer, in milliseconds, the task may still wait to start (what is left of
    /// its `TaskOptions::timeout_ms`); past that it fails in the engine's queue without running.
    /// `None`: it may wait as long as it takes.
    #[serde(default)]
    pub start_within_ms: Option<u64>,
}

/// Kinds of task failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The function returned an error or panicked.
    Remote,
    /// No engine offers this function name.
    UnknownFunction,
    /// The argument payload does not decode as the function's argument type.
    BadArguments,
    /// The engine running it died or left.
    EngineLost,
    /// It ran longer than its timeout.
    Timeout,
    /// It was aborted before running.
    Aborted,
    /// No engine can ever run it (targets do not exist).
    Unschedulable,
    /// The command could not be started (program missing, bad cwd).
    CommandFailed,
    /// A task it depends on (`after`, `follow`) failed, is unknown, or the dependency can
    /// no longer be met.
    Dependency,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::Remote => "remote error",
            ErrorKind::UnknownFunction => "unknown function",
            ErrorKind::BadArguments => "bad arguments",
            ErrorKind::EngineLost => "engine lost",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Aborted => "aborted",
            ErrorKind::Unschedulable => "unschedulable",
            ErrorKind::CommandFailed => "command failed to start",
            ErrorKind::Dependency => "dependency not met",
        };
        f.write_str(s)
    }
}

/// A failed task's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Human-readable message.
    pub message: String,
    /// Engine where it happened, if any.
    pub engine: Option<EngineId>,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Success; the matching payload frame is the value.
    Ok,
    /// Failure. The matching payload frame is empty, except for Python tasks (the engine's
    /// built-in `python` function): their frame is a msgpack map
    /// `{ename, evalue, traceback, stdout, stderr}` (the exception's type name, its message,
    /// the remote traceback and the task's captured output), which the Python client raises
    /// as a `RemoteError`. Failures made by the controller (engine lost, timeout, aborted…)
    /// always have an empty frame.
    Err(TaskError),
}

/// The end of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutcome {
    /// Which task.
    pub id: TaskId,
    /// Engine that ran it (absent when it never ran).
    pub engine: Option<EngineId>,
    /// Success or error.
    pub status: Status,
    /// Engine wall clock when it started, microseconds since the epoch (0 if it never ran).
    pub started_us: u64,
    /// Run time on the engine, microseconds.
    pub elapsed_us: u64,
}
