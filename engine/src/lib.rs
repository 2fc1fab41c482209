//! The engine daemon: runs the tasks a cluster controller hands it.
//!
//! An engine is one execution slot. It offers named functions (Rust functions whose argument
//! and result travel as msgpack) and runs commands (program, arguments, environment, stdin;
//! capped stdout and stderr; a run-time limit). Build one with [`Engine::builder`], add
//! functions, and call [`Engine::run`] (or [`Engine::main`] from a binary's `main`):
//!
//! ```no_run
//! use cluster_engine::{Context, Engine, Function};
//!
//! // Declared once, in a module the client code shares (it needs only `cluster-protocol`).
//! pub const SQUARE: Function<i64, i64> = Function::new("square");
//! pub const SCALED: Function<f64, f64> = Function::new("scaled");
//!
//! fn main() -> std::process::ExitCode {
//!     Engine::builder()
//!         .stock_functions()
//!         .register(SQUARE, |x: i64| Ok::<_, String>(x * x))
//!         // Reads a value a client pushed into this engine's store.
//!         .register_with_context(SCALED, |ctx: &Context, x: f64| {
//!             ctx.get::<f64>("factor").map(|k| k * x)
//!         })
//!         .build()
//!         .main() // reads `--file engine.json`
//! }
//! ```
//!
//! Each engine keeps a store of named values (see [`Context`]): clients fill it with
//! `DirectView::push`/`scatter` and read it back with `pull`/`gather`, through built-in
//! functions every engine offers (named in [`protocol::builtin`]).
//!
//! How data flows when running:
//!
//! ```text
//! engine.json ──> connect DEALER (routing id = uuid) ──> Register ──> Registered{id}
//!   heartbeat thread: own DEALER, answers Ping with Pong, never runs user code
//!   main loop: Tasks{batch} -> local FIFO -> run one at a time -> outbox
//!              outbox -> Results{batch} when the FIFO is empty, 64 are waiting or 1 ms passed
//!   silence (no ping): register again with the same uuid and id, backing off; give up
//!              after the lonely timeout
//!   Shutdown -> send what is done, Unregister, return Ok
//!   SIGTERM / SIGINT -> the running task ends, or after 250 ms is stopped (a command
//!              killed, a function abandoned in its thread) and reported lost with the
//!              engine; then send what is done, Unregister, return Ok
//! ```
//!
//! Where things live:
//!
//! | module | owns |
//! |---|---|
//! | `core` | the sans-IO core: local queue and start limits, outbox and batching rule, run-time estimates |
//! | `core::link` | the re-registration rule: silence threshold, back-off, next attempt, lonely timeout |
//! | `daemon` | the socket loop around the core: connect, register, serve, goodbye |
//! | `daemon::heartbeat` | the thread answering pings |
//! | `daemon::runner` | running a task inline or on a helper thread it may abandon |
//! | `daemon::signals` | SIGTERM/SIGINT handlers and the stop flag; SIGUSR1 and the drain flag |
//! | `exec` | running one task: functions, map chunks, built-ins, commands |
//! | `command` | command tasks: pipes served by poll(2), capped output, kills |
//! | `registry`, `context`, `msgpack` | named functions, the engine's store, cutting msgpack arrays |
//! | `python` | Python tasks: the persistent worker subprocess, its frames, its namespace |
//! | [`stock`] | the stock functions |
//! | [`sim`] | simulated engines (many wire peers in one process that answer pings and return `nil` at once), for benchmarks of a controller with thousands of engines |
//!
//! The loop is a thin shell around the core, which never reads the clock: the loop passes
//! `now` in, and the unit tests drive it with a fake clock. Panics in user functions are
//! caught and reported as task errors; the engine keeps running.

mod command;
mod context;
mod core;
mod daemon;
mod exec;
mod msgpack;
mod python;
mod registry;
pub mod sim;
pub mod stock;

use serde::{de::DeserializeOwned, Serialize};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub use context::{Context, StoreError};
pub use exec::{Whoami, WHOAMI};
pub use protocol::Function;
pub use python::{PYTHON, PYTHON_ENV, TASK_ENGINE_ENV};
use registry::Registry;

/// Default cap on each of a command's stdout and stderr, in bytes.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;

/// Environment variable naming the connection file when `--file` is not given.
pub const ENGINE_FILE_ENV: &str = "CLUSTER_ENGINE_FILE";

/// An engine: its functions and limits, ready to [`run`](Engine::run).
#[derive(Debug, Clone)]
pub struct Engine {
    registry: Registry,
    max_output_bytes: usize,
    python: Option<OsString>,
}

/// Collects an engine's functions and limits; made by [`Engine::builder`].
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    registry: Registry,
    max_output_bytes: usize,
    python: Option<OsString>,
}

/// Where an engine connects and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// The controller's engine connection file (`security/engine.json` of the profile).
    pub connection_file: PathBuf,
    /// How long to wait for the controller to accept the registration (default 10 s).
    pub register_timeout: Duration,
    /// How long the engine waits without a heartbeat ping before concluding that the
    /// controller is gone and exiting (default 60 s, or [`LONELY_TIMEOUT_ENV`] seconds).
    /// Meanwhile it keeps registering again, so a controller restarted within this time
    /// (`cluster controller --reuse`) gets it back.
    pub lonely_timeout: Duration,
}

/// Environment variable giving the default [`EngineOptions::lonely_timeout`] in seconds.
pub const LONELY_TIMEOUT_ENV: &str = "CLUSTER_LONELY_TIMEOUT";

impl EngineOptions {
    /// Options for this connection file, with default timeouts (the lonely timeout from
    /// [`LONELY_TIMEOUT_ENV`] when it holds a number of seconds).
    pub fn new(connection_file: PathBuf) -> Self {
        let lonely_timeout = std::env::var(LONELY_TIMEOUT_ENV)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .unwrap_or(Duration::from_secs(60));
        EngineOptions {
            connection_file,
            register_timeout: Duration::from_secs(10),
            lonely_timeout,
        }
    }
}

/// Why an engine stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The connection file is missing, unreadable, corrupt or for another protocol version
    /// (the message names the file). Retrying helps once the controller has (re)written it.
    #[error(transparent)]
    ConnectionFile(#[from] security::ConnectionFileError),
    /// A socket failed (bad address in the connection file, or a libzmq failure).
    #[error("socket error talking to the controller at {address}: {error}")]
    Transport {
        /// The controller address involved.
        address: String,
        /// What the transport reported (in the message, not also a `source()`: a printed
        /// chain says it once).
        error: transport::TransportError,
    },
    /// The controller did not answer the registration in time. Retrying helps only once the
    /// cause is fixed.
    #[error(
        "the controller at {address} did not accept the registration within {waited:?}. Is the \
         controller running? Is {file} from the running cluster, not a stale engine.json from \
         an earlier or another one? Does it hold that cluster's key? (The controller silently \
         drops messages signed with a wrong key.)",
        file = file.display()
    )]
    RegisterTimeout {
        /// The engine address tried.
        address: String,
        /// The connection file used.
        file: PathBuf,
        /// How long the engine waited.
        waited: Duration,
    },
    /// The controller refused the registration; its reason says what to change.
    #[error("the controller at {address} refused this engine: {reason}")]
    Refused {
        /// The controller's engine address.
        address: String,
        /// The controller's explanation.
        reason: String,
    },
    /// No heartbeat ping arrived for the lonely timeout: the controller stopped answering (it
    /// died, or the network is partitioned) and did not come back. Start the engine again
    /// once it is back.
    #[error(
        "the controller at {address} stopped answering (no heartbeat for {silent:?}) and did not come back; giving up (wait longer with --lonely-timeout or CLUSTER_LONELY_TIMEOUT)"
    )]
    ControllerLost {
        /// The controller's engine address.
        address: String,
        /// How long it was silent.
        silent: Duration,
    },
    /// The SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The heartbeat thread could not be started (out of threads or memory).
    #[error("cannot start the heartbeat thread: {0}")]
    Thread(std::io::Error),
    /// A bug in the engine.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Engine {
    /// A builder with no functions; command tasks and `whoami` are always available.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            registry: Registry::default(),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            python: None,
        }
    }

    /// The functions this engine offers, sorted, including the built-in `whoami` and the
    /// store functions of [`protocol::builtin`].
    pub fn function_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.registry.names().map(str::to_owned).collect();
        for builtin in [WHOAMI, PYTHON].into_iter().chain(protocol::builtin::ALL) {
            if !self.registry.contains(builtin) {
                names.push(builtin.to_owned());
            }
        }
        names.sort_unstable();
        names
    }

    /// Connects to the controller named in `options.connection_file`, registers, and runs
    /// tasks until the controller says `Shutdown` or the process gets SIGTERM/SIGINT (then it
    /// returns `Ok` after sending `Unregister`; a task still running 250 ms after the signal
    /// is stopped and reported lost with the engine, so the controller can run it elsewhere).
    /// Installs SIGTERM/SIGINT handlers for its duration: a second signal while the first is
    /// being handled exits the process at once. SIGUSR1 drains instead: the running task
    /// finishes, queued ones are left to the controller, then the engine unregisters and
    /// returns `Ok` (Slurm's `--signal=USR1@N` before a job's wall-time limit).
    pub fn run(mut self, options: EngineOptions) -> Result<(), EngineError> {
        self.registry.reset_store();
        python::install(
            &mut self.registry,
            self.python.as_ref(),
            &options.connection_file,
        );
        daemon::run(self, options)
    }

    /// Entry point for engine binaries: parses `--file PATH` (or [`ENGINE_FILE_ENV`]), logs
    /// to stderr (filter with `RUST_LOG`, default `info`), runs, and prints the error chain
    /// on failure. Exit codes: 0 after a clean shutdown, 1 on an error, 2 on bad arguments.
    pub fn main(self) -> ExitCode {
        let mut args = std::env::args_os();
        let program = args
            .next()
            .and_then(|p| {
                PathBuf::from(p)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "engine".into());
        let file = match parse_args(args) {
            Ok(Parsed::Help) => {
                print!("{}", self.usage(&program));
                return ExitCode::SUCCESS;
            }
            Ok(Parsed::File(Some(file))) => file,
            Ok(Parsed::File(None)) => match std::env::var_os(ENGINE_FILE_ENV) {
                Some(f) if !f.is_empty() => PathBuf::from(f),
                _ => {
                    eprintln!(
                        "error: no connection file: pass --file PATH (the profile's security/engine.json) or set {ENGINE_FILE_ENV}; see --help"
                    );
                    return ExitCode::from(2);
                }
            },
            Err(message) => {
                eprintln!("error: {message}; see --help");
                return ExitCode::from(2);
            }
        };
        init_tracing();
        match self.run(EngineOptions::new(file)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", error_chain(&e));
                ExitCode::FAILURE
            }
        }
    }

    fn usage(&self, program: &str) -> String {
        format!(
            "A cluster engine: runs tasks from a cluster controller.\n\n\
             Usage: {program} --file PATH\n\n\
             Options:\n  \
             --file PATH   the controller's engine connection file (security/engine.json);\n                \
             default: ${ENGINE_FILE_ENV}\n  \
             -h, --help    print this help\n\n\
             Functions: {}\n\
             Command tasks are always available. Log filter: RUST_LOG (default info).\n",
            self.function_names()
                .into_iter()
                .filter(|n| !protocol::builtin::is_builtin(n))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl EngineBuilder {
    /// Adds a typed function: its argument and result are serde values carried as msgpack
    /// with named fields. An `Err(e)` becomes a task error with `e.to_string()`; a panic is
    /// caught and reported the same way. A later function with the same name replaces an
    /// earlier one.
    pub fn function<A, R, E, F>(mut self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        E: std::fmt::Display,
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    {
        self.registry.add_typed(name, f);
        self
    }

    /// Adds the function behind a typed handle: [`EngineBuilder::function`] with the handle's
    /// name, and the compiler checking that `f` takes `A` and returns `R`. Share the handle
    /// (a `pub const`) with the clients that call it.
    pub fn register<A, R, E, F>(self, handle: Function<A, R>, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        E: std::fmt::Display,
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    {
        self.function(handle.name(), f)
    }

    /// Adds a typed function that also gets the task's [`Context`]: the engine's id and its
    /// store of named values (pushed by clients, or set by other functions).
    pub fn function_with_context<A, R, E, F>(mut self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        E: std::fmt::Display,
        F: Fn(&Context, A) -> Result<R, E> + Send + Sync + 'static,
    {
        self.registry.add_typed_with_context(name, f);
        self
    }

    /// [`EngineBuilder::function_with_context`] behind a typed handle.
    pub fn register_with_context<A, R, E, F>(self, handle: Function<A, R>, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        E: std::fmt::Display,
        F: Fn(&Context, A) -> Result<R, E> + Send + Sync + 'static,
    {
        self.function_with_context(handle.name(), f)
    }

    /// Adds a function over raw msgpack bytes (argument in, result out). In a map chunk it is
    /// applied to each item's bytes and the results are put into an array.
    pub fn raw_function<F>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync + 'static,
    {
        self.registry.add_raw(name, f);
        self
    }

    /// Adds the stock functions: `noop`, `echo`, `sleep`, `busy_wait`, `nth_prime` and
    /// `sum_range` (see [`stock`]).
    pub fn stock_functions(self) -> Self {
        stock::register(self)
    }

    /// Caps each of a command's stdout and stderr at `n` bytes (default 1 MiB); the rest is
    /// read and discarded, and the output is marked truncated.
    pub fn max_output_bytes(mut self, n: usize) -> Self {
        self.max_output_bytes = n;
        self
    }

    /// The Python interpreter that runs this engine's Python tasks (the built-in
    /// [`PYTHON`] function); default: [`PYTHON_ENV`], else `python3`. It needs cloudpickle.
    pub fn python(mut self, interpreter: impl Into<OsString>) -> Self {
        self.python = Some(interpreter.into());
        self
    }

    /// The engine.
    pub fn build(self) -> Engine {
        Engine {
            registry: self.registry,
            max_output_bytes: self.max_output_bytes,
            python: self.python,
        }
    }
}

#[derive(Debug, PartialEq)]
enum Parsed {
    Help,
    File(Option<PathBuf>),
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut file = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "-h" || text == "--help" {
            return Ok(Parsed::Help);
        } else if text == "--file" || text == "-f" {
            let value = args.next().ok_or("--file needs a path")?;
            file = Some(PathBuf::from(value));
        } else if let Some(value) = arg.as_bytes().strip_prefix(b"--file=") {
            // Bytes, not text, so that a non-UTF-8 path survives.
            file = Some(PathBuf::from(OsStr::from_bytes(value)));
        } else {
            return Err(format!("unexpected argument {text:?}"));
        }
    }
    Ok(Parsed::File(file))
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A host program may have set up its own subscriber already; that one wins.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Engine logs usually go to files under the profile's log/ folder: colour only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .try_init();
}

/// The error and its causes on one line, skipping causes the message already quotes.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn arguments() {
        assert_eq!(
            parse_args(os(&["--file", "/a/engine.json"])),
            Ok(Parsed::File(Some("/a/engine.json".into())))
        );
        assert_eq!(
            parse_args(os(&["--file=/b.json"])),
            Ok(Parsed::File(Some("/b.json".into())))
        );
        assert_eq!(parse_args(os(&[])), Ok(Parsed::File(None)));
        assert_eq!(
            parse_args(os(&["x", "--help"])).unwrap_err(),
            "unexpected argument \"x\""
        );
        assert_eq!(parse_args(os(&["--help"])), Ok(Parsed::Help));
        assert!(parse_args(os(&["--file"])).is_err());
    }

    #[test]
    fn function_names_include_whoami_once() {
        let engine = Engine::builder().stock_functions().build();
        assert_eq!(
            engine.function_names(),
            [
                "__clear",
                "__keys",
                "__pull",
                "__push",
                "busy_wait",
                "echo",
                "noop",
                "nth_prime",
                "python",
                "sleep",
                "sum_range",
                "whoami"
            ]
        );
        let usage = engine.usage("engine");
        assert!(usage.contains("--file PATH"));
        assert!(
            usage.contains("nth_prime") && !usage.contains("__push"),
            "{usage}"
        );
    }

    #[test]
    fn error_chain_does_not_repeat_itself() {
        let e = EngineError::Signals(std::io::Error::other("nope"));
        assert_eq!(error_chain(&e), "cannot install signal handlers: nope");
    }
}
