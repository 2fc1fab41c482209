//! Python tasks: the built-in function [`PYTHON`], which runs cloudpickled calls in one
//! persistent Python worker subprocess per engine.
//!
//! The worker starts on the engine's first Python task and is kept: its globals are the
//! engine's Python namespace between tasks (what `DirectView.push`/`pull`/`execute` reach).
//! Frames travel over its stdin/stdout pipes (see `worker.py`, which the engine ships and
//! runs with `python -c`, so the engine's Python needs only cloudpickle). Functions are
//! cached in the worker by a hash of their pickle: a map sends its function once per chunk
//! on the wire, the pipe carries it once per worker, and the worker unpickles it once.
//!
//! The worker runs user code, so the engine treats it as untrusted to stay alive: a segfault
//! or `os._exit()` fails that task with an error naming the engine (the controller retries
//! it elsewhere when the task allows), and the next Python task gets a fresh worker.
//! Heartbeats run on their own thread and never wait for Python.
//!
//! # Batches
//!
//! Quick Python tasks queued together on the engine (see `Core::take_alike`: same function,
//! quick by the last run, no time limits) go down the pipe as one batch frame, and their
//! replies come back one by one as each task finishes, so a stream of one-item tasks costs
//! few pipe writes per batch (the worker holds quick calls' replies back for about 0.2 ms
//! and writes them together), not a round trip per task. Each task keeps its own outcome,
//! captured output, exception and run time. A worker that dies during a batch fails only
//! the task it was running: the tasks without a reply run again one at a time on a fresh
//! worker, and the one that kills it again fails with `WorkerDied` (the controller retries
//! it elsewhere when its retries allow); a quick task that had finished in the last moment
//! before the death (its reply still held back) runs twice. See [`Runtime::run_batch`].
//!
//! # Time limits
//!
//! A task with a time limit runs on the runner's helper thread; when the runner gives up on
//! it (its limit, or a stop signal) it calls the cancel hook registered here, which kills
//! the worker at once: the task fails with `Timeout` naming the engine, and the next Python
//! task gets a fresh worker (with an empty namespace).
//!
//! # Shared objects from tasks
//!
//! A task's Python code reaches the cluster that runs it (its queues, locks, namespaces:
//! `ferrocluster.task_client()`, or `ferrocluster.Client()` with no arguments): the worker's
//! environment carries [`TASK_ENGINE_ENV`] (the engine's id) and, when the profile's
//! `client.json` sits beside the engine's `engine.json` (every local engine, and remote ones
//! where it was copied), `CLUSTER_CLIENT_FILE` naming it. A worker that ends because its
//! stdin closed (the engine stopping) first closes the clients its tasks opened, so the
//! controller hears their goodbyes: the engine closes the pipe and waits a moment before it
//! kills the worker.
//!
//! # Payloads (msgpack, named fields)
//!
//! Argument: a map `{op, function, args}`: `op` is `"call"` (`function` is a cloudpickled
//! callable, `args` a pickle of `(args, kwargs)`), `"map"` (`args` a pickle of `(items,
//! star)`: the value is `list(map(function, items))`, or `starmap` over argument tuples when
//! `star` is true), `"push"` (`args` a pickled dict put
//! into the namespace), `"pull"` (`args` a pickled name or list of names) or `"execute"`
//! (`args` UTF-8 source code run in the namespace).
//!
//! Result: `{value, stdout, stderr}` with `value` the pickled return value and the task's
//! captured output. A Python exception fails the task ([`ErrorKind::Remote`], message
//! `Type: message` and the remote traceback) and its result frame still carries
//! `{ename, evalue, traceback, stdout, stderr}`, which the Python client raises as a
//! `RemoteError`.

use protocol::ErrorKind;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::ffi::OsString;
use std::hash::{BuildHasher, RandomState};
use std::io::{BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::registry::{BatchHandler, BatchRan, CallError, CancelHook, Handler, Mode, Registry};

/// Name of the built-in function that runs Python tasks.
pub const PYTHON: &str = "python";

/// Environment variable naming the Python interpreter of engines (default `python3`).
pub const PYTHON_ENV: &str = "CLUSTER_PYTHON";

/// Environment variable set in the worker: the id of the engine running it.
pub const TASK_ENGINE_ENV: &str = "CLUSTER_TASK_ENGINE";

/// Environment variable naming a client connection file (as the client crate reads it).
const CLIENT_FILE_ENV: &str = "CLUSTER_CLIENT_FILE";

/// How long a worker whose stdin was closed may take to close its clients and exit
/// before it is killed.
const EXIT_GRACE: Duration = Duration::from_millis(300);

/// The worker's code, run with `python -c`.
const WORKER_PY: &str = include_str!("worker.py");

/// Functions cached in one worker before the cache is emptied (a long-lived engine serving
/// many interactive sessions must not grow without bound).
const MAX_CACHED_FUNCTIONS: usize = 1024;

/// Longest a frame from the worker may be (its results must fit one message anyway).
const MAX_FRAME: usize = protocol::DEFAULT_MAX_MESSAGE_BYTES;

/// The interpreter to use: `configured` (the engine's `--python`), else [`PYTHON_ENV`],
/// else `python3`.
pub(crate) fn interpreter(configured: Option<&OsString>) -> OsString {
    if let Some(p) = configured.filter(|p| !p.is_empty()) {
        return p.clone();
    }
    match std::env::var_os(PYTHON_ENV) {
        Some(p) if !p.is_empty() => p,
        _ => "python3".into(),
    }
}

/// Registers [`PYTHON`] on `registry` with a fresh worker slot (one per running engine),
/// unless a function of that name is registered already. `engine_file` is the engine's
/// connection file: the client file beside it goes to the worker (see the module docs).
pub(crate) fn install(registry: &mut Registry, configured: Option<&OsString>, engine_file: &Path) {
    if registry.contains(PYTHON) {
        return;
    }
    let mut runtime = Runtime::new(interpreter(configured));
    runtime.client_file = engine_file.parent().map(|d| d.join("client.json"));
    let runtime = Arc::new(runtime);
    let rt = Arc::clone(&runtime);
    let handler: Arc<Handler> =
        Arc::new(move |ctx: &Context, _mode: Mode, payload: &[u8]| rt.run(ctx, payload));
    registry.add_handler(PYTHON, handler);
    let rt = Arc::clone(&runtime);
    let batch: Arc<BatchHandler> =
        Arc::new(move |ctx: &Context, tasks: &[&[u8]]| rt.run_batch(ctx, tasks));
    registry.add_batch_handler(PYTHON, batch);
    let cancel: Arc<CancelHook> = Arc::new(move || runtime.kill_busy());
    registry.add_cancel_hook(PYTHON, cancel);
}

#[derive(Deserialize)]
struct Request<'a> {
    op: &'a str,
    #[serde(borrow, default)]
    function: Option<&'a [u8]>,
    #[serde(borrow)]
    args: &'a [u8],
}

#[derive(Serialize)]
struct Value<'a> {
    #[serde(with = "serde_bytes")]
    value: &'a [u8],
    stdout: &'a str,
    stderr: &'a str,
}

#[derive(Serialize)]
struct Failure<'a> {
    ename: &'a str,
    evalue: &'a str,
    traceback: &'a str,
    stdout: &'a str,
    stderr: &'a str,
}

/// One live worker process and the channel to it.
struct Worker {
    child: Child,
    /// `None` only while the worker is dropped.
    input: Option<ChildStdin>,
    /// Buffered: the replies to a batch arrive back to back.
    output: BufReader<ChildStdout>,
    /// Keys of the functions the worker has cached.
    known: HashSet<u128>,
}

impl Worker {
    fn input(&mut self) -> Result<&mut ChildStdin, Trouble> {
        self.input.as_mut().ok_or(Trouble::Died)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing stdin ends an idle worker, which first closes the clients its tasks
        // opened (see the module docs); a busy or stuck one is killed after a moment.
        drop(self.input.take());
        let deadline = Instant::now() + EXIT_GRACE;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                _ => return,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The worker slot: the idle worker, or the pid of the one a task holds.
#[derive(Default)]
struct Slot {
    idle: Option<Worker>,
    busy: Option<u32>,
}

/// Why talking to the worker failed.
enum Trouble {
    /// It could not be started; the message says why and what to do.
    Start(String),
    /// The pipe broke: the worker died (or closed its channel).
    Died,
}

struct Runtime {
    interpreter: OsString,
    /// The cluster's client connection file, for tasks (when it exists at a worker's start).
    client_file: Option<PathBuf>,
    slot: Mutex<Slot>,
    hashers: (RandomState, RandomState),
}

impl Runtime {
    fn new(interpreter: OsString) -> Runtime {
        Runtime {
            interpreter,
            client_file: None,
            slot: Mutex::default(),
            hashers: (RandomState::new(), RandomState::new()),
        }
    }

    fn key(&self, function: &[u8]) -> u128 {
        let a = self.hashers.0.hash_one(function) as u128;
        let b = self.hashers.1.hash_one(function) as u128;
        (a << 64) | b
    }

    /// A task's request, checked: the worker's op byte, the function (its cache key and
    /// pickle) for calls and maps, and the arguments.
    fn prepare<'p>(&self, payload: &'p [u8]) -> Result<Prepared<'p>, CallError> {
        let request: Request<'_> = rmp_serde::from_slice(payload).map_err(|e| {
            CallError::new(
                ErrorKind::BadArguments,
                format!(
                    "a Python task's payload must be a msgpack map {{op, function, args}}: {e}"
                ),
            )
        })?;
        let (op, with_function) = match request.op {
            "call" => (b'c', true),
            "map" => (b'm', true),
            "push" => (b'p', false),
            "pull" => (b'g', false),
            "execute" => (b'e', false),
            other => {
                return Err(CallError::new(
                    ErrorKind::BadArguments,
                    format!(
                    "unknown Python task op {other:?} (expected call, map, push, pull or execute)"
                ),
                ))
            }
        };
        let function = match (with_function, request.function) {
            (true, Some(f)) if !f.is_empty() => Some((self.key(f), f)),
            (true, _) => {
                return Err(CallError::new(
                    ErrorKind::BadArguments,
                    format!("a Python {} task needs a pickled function", request.op),
                ))
            }
            (false, _) => None,
        };
        Ok(Prepared {
            op,
            function,
            args: request.args,
        })
    }

    fn run(&self, ctx: &Context, payload: &[u8]) -> Result<Vec<u8>, CallError> {
        let task = self.prepare(payload)?;
        self.run_one(ctx, &task)
    }

    /// Runs one checked task in a frame of its own.
    fn run_one(&self, ctx: &Context, task: &Prepared<'_>) -> Result<Vec<u8>, CallError> {
        let mut worker = self
            .take_worker(ctx)
            .map_err(|t| self.trouble(ctx, t, None))?;
        let pid = worker.child.id();
        let reply = exchange(&mut worker, task);
        match reply {
            Ok(reply) => {
                self.give_back(worker);
                reply_to_result(&reply)
            }
            Err(t) => {
                self.forget(pid);
                let status = reap(&mut worker.child);
                drop(worker);
                Err(self.trouble(ctx, t, Some((pid, status))))
            }
        }
    }

    /// Runs several tasks with one frame to the worker (see `worker.py`); one answer each,
    /// in order, with its start (after the batch's) and run time as the replies arrived.
    ///
    /// The worker runs the batch's requests in order and holds quick calls' and maps'
    /// replies back for a moment (about 0.2 ms) to write them together (namespace tasks'
    /// replies go out at once). So when it dies, the tasks without a reply are those it
    /// had not started, the one it was running, and perhaps a few quick calls that had
    /// just finished: they run again one at a time, each in a frame of its own, on a
    /// fresh worker (with an empty namespace, as any task after a death). The one that kills the worker again fails with
    /// `WorkerDied` (the controller retries it elsewhere when its retries allow); a quick
    /// task that had finished just before the death runs twice. When only one task was
    /// left without a reply, it is the one that was running and fails at once. A worker
    /// gone before it took the frame (the write failed) fails no task: the batch goes to
    /// a fresh worker once.
    fn run_batch(&self, ctx: &Context, tasks: &[&[u8]]) -> Vec<BatchRan> {
        let start = Instant::now();
        let mut answers: Vec<Option<BatchRan>> = tasks.iter().map(|_| None).collect();
        let mut todo: Vec<(usize, Prepared<'_>)> = Vec::with_capacity(tasks.len());
        for (i, task) in tasks.iter().enumerate() {
            match self.prepare(task) {
                Ok(p) => todo.push((i, p)),
                Err(e) => answers[i] = Some(ran(Err(e), start, start)),
            }
        }
        let rest: &[(usize, Prepared<'_>)] = &todo;
        let mut may_resend = true;
        while !rest.is_empty() {
            let mut worker = match self.take_worker(ctx) {
                Ok(w) => w,
                Err(t) => {
                    let e = self.trouble(ctx, t, None);
                    let now = Instant::now();
                    for (i, _) in rest {
                        answers[*i] = Some(ran(Err(e.clone()), start, now));
                    }
                    break;
                }
            };
            let pid = worker.child.id();
            let sent = send_batch(&mut worker, rest);
            let mut last = Instant::now();
            let mut answered = 0;
            if sent.is_ok() {
                for (i, _) in rest {
                    let Ok(reply) = read_frame(&mut worker.output) else {
                        break;
                    };
                    let now = Instant::now();
                    answers[*i] = Some(BatchRan {
                        result: reply_to_result(&reply),
                        offset: last - start,
                        elapsed: now - last,
                    });
                    last = now;
                    answered += 1;
                }
            }
            if answered == rest.len() {
                self.give_back(worker);
                break;
            }
            self.forget(pid);
            let status = reap(&mut worker.child);
            drop(worker);
            if sent.is_err() && may_resend {
                tracing::warn!(
                    "the Python worker {pid} of engine {} was gone before it took a batch of {} tasks ({status}); sending them to a new worker",
                    ctx.engine_id(),
                    rest.len()
                );
                may_resend = false;
                continue;
            }
            let unanswered = &rest[answered..];
            if let [(i, _)] = unanswered {
                let e = self.trouble(ctx, Trouble::Died, Some((pid, status)));
                answers[*i] = Some(BatchRan {
                    result: Err(e),
                    offset: last - start,
                    elapsed: last.elapsed(),
                });
                break;
            }
            tracing::warn!(
                "the Python worker {pid} of engine {} died during a batch ({status}); running its {} unanswered tasks again one at a time",
                ctx.engine_id(),
                unanswered.len()
            );
            for (i, task) in unanswered {
                let began = Instant::now();
                let result = self.run_one(ctx, task);
                answers[*i] = Some(BatchRan {
                    result,
                    offset: began - start,
                    elapsed: began.elapsed(),
                });
            }
            break;
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    let e = CallError::new(ErrorKind::Remote, "not run (internal error)");
                    ran(Err(e), start, start)
                })
            })
            .collect()
    }

    /// Kills the worker a task holds (the runner gave up on that task); says what it did.
    fn kill_busy(&self) -> Option<String> {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let pid = slot.busy?;
        // SAFETY: kill(2) has no memory-safety preconditions. The pid is not reaped yet:
        // its holder forgets it (under this lock) before reaping it.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
        Some(format!(
            "its Python worker (pid {pid}) was killed; the engine's next Python task gets a new worker, with an empty namespace"
        ))
    }

    /// The idle worker, or a new one. A worker held by another task means that task was
    /// abandoned past its time limit (an engine runs one task at a time): that worker is
    /// killed, so that it stops using the CPU, and its task's thread sees it die.
    fn take_worker(&self, ctx: &Context) -> Result<Worker, Trouble> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = slot.idle.take() {
            slot.busy = Some(w.child.id());
            return Ok(w);
        }
        if let Some(pid) = slot.busy.take() {
            tracing::warn!(
                "killing Python worker {pid}, still busy with a task abandoned past its time limit"
            );
            // SAFETY: kill(2) has no memory-safety preconditions; at worst the pid is gone.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let w = self.spawn(ctx)?;
        slot.busy = Some(w.child.id());
        Ok(w)
    }

    fn give_back(&self, worker: Worker) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.busy == Some(worker.child.id()) && slot.idle.is_none() {
            slot.busy = None;
            slot.idle = Some(worker);
        }
        // Otherwise another task replaced it meanwhile; dropping it ends it.
    }

    fn forget(&self, pid: u32) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.busy == Some(pid) {
            slot.busy = None;
        }
    }

    fn spawn(&self, ctx: &Context) -> Result<Worker, Trouble> {
        let path = self.interpreter.to_string_lossy().into_owned();
        let started = Instant::now();
        let mut command = Command::new(&self.interpreter);
        command
            .arg("-c")
            .arg(WORKER_PY)
            .env(TASK_ENGINE_ENV, ctx.engine_id().to_string());
        if let Some(file) = self.client_file.as_ref().filter(|f| f.is_file()) {
            command.env(CLIENT_FILE_ENV, file);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                Trouble::Start(format!(
                    "cannot start the Python interpreter {path:?}: {e}; install Python 3 with cloudpickle there, or choose another interpreter with `cluster engine --python PATH`, `python = \"PATH\"` in cluster.toml or {PYTHON_ENV}"
                ))
            })?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(Trouble::Start(
                "the Python worker's pipes are missing".into(),
            ));
        };
        let mut worker = Worker {
            child,
            input: Some(input),
            output: BufReader::with_capacity(64 * 1024, output),
            known: HashSet::new(),
        };
        match read_frame(&mut worker.output) {
            Ok((b'r', parts)) => {
                let version = parts
                    .first()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                tracing::info!(
                    "started Python worker {} ({path}, Python {version}) in {:?}",
                    worker.child.id(),
                    started.elapsed()
                );
                Ok(worker)
            }
            Ok((b'x', parts)) => {
                let text = |i: usize| {
                    parts
                        .get(i)
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or_default()
                };
                Err(Trouble::Start(format!(
                    "the Python interpreter {path:?} cannot import cloudpickle ({}: {}); install it with `{path} -m pip install cloudpickle`, or choose another interpreter with `cluster engine --python PATH`, `python = \"PATH\"` in cluster.toml or {PYTHON_ENV}",
                    text(0),
                    text(1)
                )))
            }
            _ => {
                let status = reap(&mut worker.child);
                Err(Trouble::Start(format!(
                    "{path:?} did not start as a Python 3 worker ({status}); is it a Python 3 interpreter? Choose another with `cluster engine --python PATH`, `python = \"PATH\"` in cluster.toml or {PYTHON_ENV} (its messages are in the engine's log)"
                )))
            }
        }
    }

    fn trouble(&self, ctx: &Context, t: Trouble, died: Option<(u32, String)>) -> CallError {
        let engine = ctx.engine_id();
        let (ename, message) = match (t, died) {
            (Trouble::Start(m), _) => ("WorkerUnavailable", format!("engine {engine}: {m}")),
            (Trouble::Died, Some((pid, status))) => (
                "WorkerDied",
                format!(
                    "the Python worker (pid {pid}) of engine {engine} died while running this task ({status}); the engine starts a new worker for its next Python task, with an empty namespace"
                ),
            ),
            (Trouble::Died, None) => (
                "WorkerDied",
                format!("the Python worker of engine {engine} died while running this task"),
            ),
        };
        let mut e = CallError::new(ErrorKind::Remote, message);
        e.payload = encode_failure(ename, &e.message, "", "", "");
        e
    }
}

/// A checked request (see [`Runtime::prepare`]).
struct Prepared<'a> {
    op: u8,
    function: Option<(u128, &'a [u8])>,
    args: &'a [u8],
}

/// The answer for a task that did not reach the worker.
fn ran(result: Result<Vec<u8>, CallError>, start: Instant, now: Instant) -> BatchRan {
    BatchRan {
        result,
        offset: now - start,
        elapsed: Duration::ZERO,
    }
}

/// Empties the worker's function cache first when `new` more functions would overflow it.
fn make_room(worker: &mut Worker, new: usize) -> Result<(), Trouble> {
    if worker.known.len() + new > MAX_CACHED_FUNCTIONS {
        write_frame(worker.input()?, b'f', &[])?;
        read_frame(&mut worker.output)?;
        worker.known.clear();
    }
    Ok(())
}

/// The parts of a request's frame, noting its function as cached by the worker: its
/// pickle goes along only the first time.
fn request_parts<'a>(worker: &mut Worker, task: &Prepared<'a>, key: &'a [u8; 16]) -> Vec<&'a [u8]> {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(3);
    if let Some((k, blob)) = task.function {
        parts.push(key);
        parts.push(if worker.known.insert(k) { blob } else { &[] });
    }
    parts.push(task.args);
    parts
}

/// Sends one request and reads its reply.
fn exchange(worker: &mut Worker, task: &Prepared<'_>) -> Result<(u8, Vec<Vec<u8>>), Trouble> {
    let new = task
        .function
        .is_some_and(|(k, _)| !worker.known.contains(&k));
    make_room(worker, usize::from(new))?;
    let key = task
        .function
        .map(|(k, _)| k.to_le_bytes())
        .unwrap_or_default();
    let parts = request_parts(worker, task, &key);
    write_frame(worker.input()?, task.op, &parts)?;
    read_frame(&mut worker.output)
}

/// Sends the requests of `tasks` as one batch frame: each part is a request's body (its
/// op byte and parts, as `write_frame` lays them out).
fn send_batch(worker: &mut Worker, tasks: &[(usize, Prepared<'_>)]) -> Result<(), Trouble> {
    let new: HashSet<u128> = tasks
        .iter()
        .filter_map(|(_, t)| t.function.map(|(k, _)| k))
        .filter(|k| !worker.known.contains(k))
        .collect();
    make_room(worker, new.len())?;
    let keys: Vec<[u8; 16]> = tasks
        .iter()
        .map(|(_, t)| t.function.map(|(k, _)| k.to_le_bytes()).unwrap_or_default())
        .collect();
    let mut bodies = Vec::with_capacity(tasks.len());
    for ((_, task), key) in tasks.iter().zip(&keys) {
        let parts = request_parts(worker, task, key);
        let len = 1 + parts.iter().map(|p| 4 + p.len()).sum::<usize>();
        let mut body = Vec::with_capacity(len);
        body.push(task.op);
        for p in parts {
            body.extend_from_slice(&(p.len() as u32).to_le_bytes());
            body.extend_from_slice(p);
        }
        bodies.push(body);
    }
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    write_frame(worker.input()?, b'b', &refs)
}

fn write_frame(to: &mut ChildStdin, op: u8, parts: &[&[u8]]) -> Result<(), Trouble> {
    let len = 1 + parts.iter().map(|p| 4 + p.len()).sum::<usize>();
    let mut head = Vec::with_capacity(5 + 4 * parts.len());
    head.extend_from_slice(&(len as u32).to_le_bytes());
    head.push(op);
    // Small parts are copied into one write; a large one goes out on its own.
    let mut out = head;
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        if p.len() < 64 * 1024 {
            out.extend_from_slice(p);
        } else {
            to.write_all(&out).map_err(|_| Trouble::Died)?;
            to.write_all(p).map_err(|_| Trouble::Died)?;
            out.clear();
        }
    }
    to.write_all(&out).map_err(|_| Trouble::Died)?;
    to.flush().map_err(|_| Trouble::Died)
}

fn read_frame(from: &mut impl Read) -> Result<(u8, Vec<Vec<u8>>), Trouble> {
    let mut head = [0u8; 4];
    from.read_exact(&mut head).map_err(|_| Trouble::Died)?;
    let len = u32::from_le_bytes(head) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(Trouble::Died);
    }
    let mut body = vec![0u8; len];
    from.read_exact(&mut body).map_err(|_| Trouble::Died)?;
    let op = body[0];
    let mut parts = Vec::new();
    let mut pos = 1;
    while pos < body.len() {
        let Some(size) = body.get(pos..pos + 4) else {
            return Err(Trouble::Died);
        };
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
        pos += 4;
        let Some(part) = body.get(pos..pos + size) else {
            return Err(Trouble::Died);
        };
        parts.push(part.to_vec());
        pos += size;
    }
    Ok((op, parts))
}

/// The exit of a worker whose pipe broke: waits a moment for it to end, then kills it.
fn reap(child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return describe_status(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                return match child.wait() {
                    Ok(_) => "it closed its channel and was killed".into(),
                    Err(e) => format!("cannot wait for it: {e}"),
                };
            }
            Err(e) => return format!("cannot wait for it: {e}"),
        }
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGFPE => " (SIGFPE)",
            libc::SIGILL => " (SIGILL)",
            _ => "",
        };
        format!("killed by signal {sig}{name}")
    } else {
        match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "exited".into(),
        }
    }
}

fn text(parts: &[Vec<u8>], i: usize) -> std::borrow::Cow<'_, str> {
    parts
        .get(i)
        .map(|p| String::from_utf8_lossy(p))
        .unwrap_or_default()
}

fn encode_failure(
    ename: &str,
    evalue: &str,
    traceback: &str,
    stdout: &str,
    stderr: &str,
) -> Vec<u8> {
    protocol::encode(&Failure {
        ename,
        evalue,
        traceback,
        stdout,
        stderr,
    })
    .unwrap_or_default()
}

/// The task's result payload, or its error, from the worker's reply.
fn reply_to_result((op, parts): &(u8, Vec<Vec<u8>>)) -> Result<Vec<u8>, CallError> {
    match op {
        b'o' => protocol::encode(&Value {
            value: parts.first().map(Vec::as_slice).unwrap_or_default(),
            stdout: &text(parts, 1),
            stderr: &text(parts, 2),
        })
        .map_err(|e| CallError::new(ErrorKind::Remote, format!("cannot encode the result: {e}"))),
        b'x' => {
            let (ename, evalue, traceback) = (text(parts, 0), text(parts, 1), text(parts, 2));
            let message = if traceback.is_empty() {
                format!("{ename}: {evalue}")
            } else {
                format!("{ename}: {evalue}\n{}", traceback.trim_end())
            };
            let mut e = CallError::new(ErrorKind::Remote, message);
            e.payload = encode_failure(
                &ename,
                &evalue,
                &traceback,
                &text(parts, 3),
                &text(parts, 4),
            );
            Err(e)
        }
        other => Err(CallError::new(
            ErrorKind::Remote,
            format!("the Python worker answered with an unknown frame type {other}"),
        )),
    }
}

#[cfg(test)]
mod tests;
