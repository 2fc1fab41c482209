//! Exit statuses: one table for every command (README's "Exit status" lists it).

use std::fmt;

/// Success.
pub const OK: u8 = 0;
/// Any other error (a file that cannot be read, a process that cannot start…).
pub const ERROR: u8 = 1;
/// The command line is wrong (clap's usage errors, and input the CLI checks before sending:
/// malformed ranges, a command template that does not fit, a map without its command).
pub const USAGE: u8 = 2;
/// A task failed on an engine (remote error, unknown function, engine lost, aborted).
pub const TASK_FAILED: u8 = 3;
/// The controller cannot be reached, or its connection file is missing or bad.
pub const NO_CONTROLLER: u8 = 4;
/// A wait ran out of time, or tasks were not finished and the caller did not ask to wait.
pub const TIMEOUT: u8 = 5;

macro_rules! message_error {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::error::Error for $name {}
    };
}

message_error!(
    /// Tasks ran but some failed: the one-line summary (exit status 3).
    TasksFailed
);
message_error!(
    /// Tasks not finished yet, and the caller did not ask to wait (exit status 5).
    NotFinished
);
message_error!(
    /// Input the CLI refused before sending anything (exit status 2).
    Usage
);

/// The exit status for an error: the first cause in its chain that has one, else 1.
pub fn code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<TasksFailed>().is_some() {
            return TASK_FAILED;
        }
        if cause.downcast_ref::<NotFinished>().is_some() {
            return TIMEOUT;
        }
        if cause.downcast_ref::<Usage>().is_some()
            || cause
                .downcast_ref::<crate::template::TemplateError>()
                .is_some()
        {
            return USAGE;
        }
        if let Some(e) = cause.downcast_ref::<client::LedgerError>() {
            if let Some(e) = e.client_error() {
                return client_code(e);
            }
        }
        if let Some(e) = cause.downcast_ref::<client::Error>() {
            return client_code(e);
        }
        if let Some(e) = cause.downcast_ref::<client::ObjectError>() {
            use client::ObjectError as O;
            return match e {
                O::Empty { .. } | O::Full { .. } | O::Timeout { .. } => TIMEOUT,
                O::BadName { .. } => USAGE,
                O::Client(e) => client_code(e),
                _ => ERROR,
            };
        }
        if cause
            .downcast_ref::<security::ConnectionFileError>()
            .is_some()
            || cause.downcast_ref::<crate::connfile::BadFile>().is_some()
            || matches!(
                cause.downcast_ref::<engine::EngineError>(),
                Some(engine::EngineError::ConnectionFile(_))
            )
        {
            return NO_CONTROLLER;
        }
    }
    ERROR
}

fn client_code(e: &client::Error) -> u8 {
    use client::Error as E;
    match e {
        E::Remote { .. } | E::EngineLost { .. } | E::UnknownFunction { .. } | E::Aborted { .. } => {
            TASK_FAILED
        }
        E::Timeout { .. } => TIMEOUT,
        E::ConnectTimeout { .. }
        | E::ConnectionLost { .. }
        | E::BadConnectionFile(_)
        | E::Profile(_) => NO_CONTROLLER,
        _ => ERROR,
    }
}

/// The error as one sentence chain: each cause once, and the client's task errors in the
/// controller's words alone. The errors of protocol, security, transport, profiles, client,
/// controller and engine say their cause either in their message or as their `source()`,
/// never both (regression tests beside them); the launcher's and the task store's I/O,
/// SQLite and `mpiexec` errors still do both, so a cause whose text an outer message already
/// holds is left out here.
pub fn message(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = match cause.downcast_ref::<client::Error>() {
            Some(client::Error::EngineLost { message, .. }) => message.clone(),
            Some(client::Error::UnknownFunction { function, message }) => {
                unknown_function(function, message)
            }
            _ => cause.to_string(),
        };
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// "No engine offers F", with the functions engines do offer (the controller leaves their
/// built-in `__*` ones out).
fn unknown_function(function: &str, message: &str) -> String {
    let offered = message.split_once("offered: ").map(|(_, rest)| {
        rest.split(';')
            .next()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    });
    match offered {
        Some(list) if !list.is_empty() => format!(
            "no engine offers the function {function:?} (they offer {list}); start engines that register it (`cluster start --engine-program …`)"
        ),
        _ => format!(
            "no engine offers the function {function:?}; start engines that register it (`cluster start --engine-program …`)"
        ),
    }
}

/// True when the error is a closed stdout (`cluster … | head`): not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn the_first_cause_with_a_status_decides() {
        let e: anyhow::Error = TasksFailed("x".into()).into();
        assert_eq!(code(&e.context("while mapping")), TASK_FAILED);
        let e: anyhow::Error = client::Error::Timeout { what: "t".into() }.into();
        assert_eq!(code(&e), TIMEOUT);
        assert_eq!(code(&Usage("bad range".into()).into()), USAGE);
        assert_eq!(code(&NotFinished("later".into()).into()), TIMEOUT);
        assert_eq!(code(&anyhow::anyhow!("other")), ERROR);
        let io: Result<(), std::io::Error> =
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        let e = io.context("printing").unwrap_err();
        assert!(is_broken_pipe(&e));
    }

    #[test]
    fn messages_say_each_thing_once() {
        let e = anyhow::anyhow!("cannot listen on tcp://127.0.0.1:8765: Address already in use")
            .context("cannot open the engine socket");
        assert_eq!(
            message(&e),
            "cannot open the engine socket: cannot listen on tcp://127.0.0.1:8765: Address already in use"
        );
        // A cause an outer message already quotes (the launcher's and the store's errors).
        #[derive(Debug, thiserror::Error)]
        #[error("Permission denied (os error 13)")]
        struct Inner;
        #[derive(Debug, thiserror::Error)]
        #[error("/x/job.sh: Permission denied (os error 13)")]
        struct Outer(#[source] Inner);
        let e: anyhow::Error = Outer(Inner).into();
        assert_eq!(message(&e), "/x/job.sh: Permission denied (os error 13)");
        let lost: anyhow::Error = client::Error::EngineLost {
            engine: None,
            message: "engine 0 on vm was lost (disconnected) while running task 3:1".into(),
        }
        .into();
        assert_eq!(
            message(&lost),
            "engine 0 on vm was lost (disconnected) while running task 3:1"
        );
        let unknown: anyhow::Error = client::Error::UnknownFunction {
            function: "nosuch".into(),
            message: "no registered engine offers function \"nosuch\"; offered: echo, noop".into(),
        }
        .into();
        let m = message(&unknown);
        assert!(m.contains("(they offer echo, noop)"), "{m}");
        assert_eq!(m.matches("nosuch").count(), 1, "{m}");
    }
}
