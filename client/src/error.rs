//! The client's error type.

use protocol::{EngineId, ErrorKind, TaskError};
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in the client, from a bad connection file to a task that
/// failed on its engine. [`Error::is_retryable`] says whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The task failed on its engine (the function returned an error or panicked, its
    /// arguments did not decode, it ran past its time limit, the command could not start…).
    /// Retrying the same task does not help, except after a [`ErrorKind::Timeout`] perhaps.
    #[error("{kind} on {}: {message}", engine_name(engine))]
    Remote {
        /// Engine that reported it, if the task reached one.
        engine: Option<EngineId>,
        /// What kind of failure.
        kind: ErrorKind,
        /// The engine's or controller's message.
        message: String,
    },
    /// The engine running the task died or left before finishing it. Retrying can help
    /// (or submit with `retries(n)` so that the controller retries on another engine).
    #[error(
        "{} was lost while running the task: {message}; retry it, or submit with retries",
        engine_name(engine)
    )]
    EngineLost {
        /// The engine that was lost.
        engine: Option<EngineId>,
        /// The controller's explanation.
        message: String,
    },
    /// No engine offers the function. Retrying helps only once engines that register it
    /// have joined.
    #[error("no engine offers the function {function:?}: {message}; start engines built with it")]
    UnknownFunction {
        /// The function name that was asked for.
        function: String,
        /// The controller's or engine's message.
        message: String,
    },
    /// The task was cancelled before it ran: by this client ([`crate::AsyncResult::cancel`]),
    /// or aborted at the controller. Retrying means submitting it again.
    #[error("{what} was aborted: {message}")]
    Aborted {
        /// Which task (`task 3:17`).
        what: String,
        /// Who aborted it and why.
        message: String,
    },
    /// The [`crate::Executor`] was shut down; it takes no new work. Not retryable: make a new
    /// executor.
    #[error("the executor was shut down: {what} was not submitted")]
    Shutdown {
        /// What was refused.
        what: String,
    },
    /// Waiting ended before the answer came. The work may still finish: waiting again can help.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What was waited for (`task 3:17`, `4 engines (2 registered)`…).
        what: String,
    },
    /// The controller did not answer the hello within the connect timeout. Retrying helps once
    /// the controller is started; a file from another cluster needs the right profile or file.
    #[error("no answer from the controller at {address} within {} s (connection file {}): the controller may be stopped, or the file/key may belong to another cluster — start it with `cluster start` or check --profile/--file", seconds(timeout), file.display())]
    ConnectTimeout {
        /// The client socket address from the file.
        address: String,
        /// The connection file.
        file: PathBuf,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The connection to the controller is gone (the controller stopped answering, sending
    /// failed, or the [`crate::Client`] was dropped). Unfinished tasks' results are not coming
    /// to this client; reconnecting and resubmitting can help.
    #[error("connection to the controller at {address} lost: {reason}")]
    ConnectionLost {
        /// The controller's client socket address.
        address: String,
        /// What happened.
        reason: String,
    },
    /// The controller answered a request (status, purge, shutdown) with an error. Retrying
    /// the same request does not help.
    #[error("the controller refused the {request} request: {message}")]
    Refused {
        /// The request (`status`, `purge`, `shutdown`).
        request: String,
        /// The controller's message.
        message: String,
    },
    /// The connection file is missing, unreadable, corrupt or for another protocol version.
    #[error(transparent)]
    BadConnectionFile(#[from] security::ConnectionFileError),
    /// The profile does not exist or cannot be read.
    #[error(transparent)]
    Profile(#[from] profiles::ProfileError),
    /// A result did not decode as the type asked for (a mismatch between the caller's type
    /// and the engine function's return type). Retrying does not help.
    #[error("cannot decode {what}: {message} (does the result type match the function's?)")]
    Decode {
        /// What was being decoded (`result of task 3:17`).
        what: String,
        /// The decoder's message.
        message: String,
    },
    /// An argument could not be encoded as msgpack. Retrying does not help.
    #[error("cannot encode {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The encoder's message.
        message: String,
    },
    /// An argument (or one map item) is larger than a message may be. Retrying does not help;
    /// send smaller arguments (or a smaller `chunksize`).
    #[error("{what} is {size} bytes, more than the {limit}-byte message limit; send smaller arguments or use a smaller chunksize")]
    TooLarge {
        /// What is too large.
        what: String,
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The socket could not be made or connected (a malformed address in the file, or
    /// libzmq failing). Only [`transport::TransportError::Full`] is worth retrying.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
}

fn engine_name(engine: &Option<EngineId>) -> String {
    match engine {
        Some(e) => format!("engine {e}"),
        None => "the controller".to_owned(),
    }
}

fn seconds(d: &Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

impl Error {
    /// True when trying again (later, or on another engine) can succeed: timeouts, lost
    /// engines, lost connections, a full send queue.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::EngineLost { .. }
            | Error::Timeout { .. }
            | Error::ConnectTimeout { .. }
            | Error::ConnectionLost { .. } => true,
            Error::Remote { kind, .. } => {
                matches!(kind, ErrorKind::Timeout | ErrorKind::EngineLost)
            }
            Error::Transport(e) => matches!(e, transport::TransportError::Full),
            _ => false,
        }
    }

    /// The error for a task that failed remotely; `function` names the work for
    /// [`Error::UnknownFunction`].
    pub(crate) fn from_task(err: TaskError, function: &str) -> Error {
        match err.kind {
            ErrorKind::EngineLost => Error::EngineLost {
                engine: err.engine,
                message: err.message,
            },
            ErrorKind::UnknownFunction => Error::UnknownFunction {
                function: function.to_owned(),
                message: err.message,
            },
            ErrorKind::Aborted => Error::Aborted {
                what: format!("a task of {function}"),
                message: err.message,
            },
            kind => Error::Remote {
                engine: err.engine,
                kind,
                message: err.message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_timeout_message_names_address_file_and_seconds() {
        let e = Error::ConnectTimeout {
            address: "tcp://127.0.0.1:5555".into(),
            file: "/x/client.json".into(),
            timeout: Duration::from_millis(300),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("no answer from the controller at tcp://127.0.0.1:5555 within 0.3 s (connection file /x/client.json)"),
            "{text}"
        );
        let e = Error::ConnectTimeout {
            address: "a".into(),
            file: "f".into(),
            timeout: Duration::from_secs(10),
        };
        assert!(e.to_string().contains("within 10 s"));
        assert!(e.is_retryable());
    }

    #[test]
    fn task_errors_map_by_kind() {
        let lost = Error::from_task(
            TaskError {
                kind: ErrorKind::EngineLost,
                message: "gone".into(),
                engine: Some(EngineId(2)),
            },
            "f",
        );
        assert!(matches!(
            lost,
            Error::EngineLost {
                engine: Some(EngineId(2)),
                ..
            }
        ));
        assert!(lost.is_retryable());
        assert!(lost.to_string().contains("engine 2"));
        let unknown = Error::from_task(
            TaskError {
                kind: ErrorKind::UnknownFunction,
                message: "no".into(),
                engine: None,
            },
            "nope",
        );
        assert!(
            matches!(unknown, Error::UnknownFunction { ref function, .. } if function == "nope")
        );
        assert!(!unknown.is_retryable());
        let remote = Error::from_task(
            TaskError {
                kind: ErrorKind::BadArguments,
                message: "bad".into(),
                engine: Some(EngineId(0)),
            },
            "f",
        );
        assert!(matches!(
            remote,
            Error::Remote {
                kind: ErrorKind::BadArguments,
                ..
            }
        ));
        assert_eq!(remote.to_string(), "bad arguments on engine 0: bad");
    }
}
