//! [`Command`]: a program to run on an engine, built like [`std::process::Command`].

use protocol::CommandSpec;
use std::time::Duration;

/// A command task: program, arguments, environment, working directory, standard input and
/// a run-time limit. Run it with [`crate::LoadBalancedView::command`] (one engine) or
/// [`crate::DirectView::command`] (every engine of the view); the result is a
/// [`protocol::CommandOutput`] (exit status, stdout, stderr).
///
/// ```no_run
/// # fn main() -> Result<(), cluster_client::Error> {
/// use cluster_client::{Client, Command};
/// use std::time::Duration;
/// let client = Client::connect_env()?;
/// let out = client
///     .load_balanced_view()
///     .command(
///         Command::new("sh")
///             .args(["-c", "wc -w"])
///             .stdin("three little words")
///             .timeout(Duration::from_secs(10)),
///     )?
///     .get(None)?;
/// assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    spec: CommandSpec,
    timeout: Option<Duration>,
}

impl Command {
    /// Runs `program` (looked up in the engine's `PATH`, or a path on the engine's host).
    pub fn new(program: impl Into<String>) -> Command {
        Command {
            spec: CommandSpec {
                program: program.into(),
                ..CommandSpec::default()
            },
            timeout: None,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Command {
        self.spec.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Command {
        self.spec.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (added to the engine's environment).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Command {
        self.spec.env.push((key.into(), value.into()));
        self
    }

    /// Sets environment variables.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Command {
        self.spec
            .env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Runs it in this directory of the engine's host (default: the engine's own).
    pub fn current_dir(mut self, dir: impl Into<String>) -> Command {
        self.spec.cwd = Some(dir.into());
        self
    }

    /// Writes these bytes to its standard input (default: an empty, closed stdin).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Command {
        self.spec.stdin = Some(bytes.into());
        self
    }

    /// Kills it after this long on the engine (the task then fails with a timeout error);
    /// overrides the view's [`timeout`](crate::LoadBalancedView::timeout).
    pub fn timeout(mut self, limit: Duration) -> Command {
        self.timeout = Some(limit);
        self
    }

    /// The wire form of the command.
    pub fn spec(&self) -> &CommandSpec {
        &self.spec
    }

    /// Its run-time limit, if set.
    pub fn time_limit(&self) -> Option<Duration> {
        self.timeout
    }

    pub(crate) fn into_parts(self) -> (CommandSpec, Option<Duration>) {
        (self.spec, self.timeout)
    }
}

impl From<CommandSpec> for Command {
    fn from(spec: CommandSpec) -> Command {
        Command {
            spec,
            timeout: None,
        }
    }
}

impl From<&str> for Command {
    /// A program with no arguments.
    fn from(program: &str) -> Command {
        Command::new(program)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_wire_spec() {
        let c = Command::new("sh")
            .arg("-c")
            .args(["echo $X"])
            .env("X", "1")
            .envs([("Y", "2")])
            .current_dir("/tmp")
            .stdin("in")
            .timeout(Duration::from_secs(3));
        let (spec, timeout) = c.clone().into_parts();
        assert_eq!(spec.program, "sh");
        assert_eq!(spec.args, ["-c", "echo $X"]);
        assert_eq!(
            spec.env,
            [("X".into(), "1".into()), ("Y".into(), "2".into())]
        );
        assert_eq!(spec.cwd.as_deref(), Some("/tmp"));
        assert_eq!(spec.stdin.as_deref(), Some(&b"in"[..]));
        assert_eq!(timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.time_limit(), timeout);
        assert_eq!(Command::from("true").spec().program, "true");
    }
}
