//! `ferrocluster._native`: the Rust client crate and the `cluster` program, for Python.
//!
//! Deliberately thin: the client crate does the wire, signing, encryption, batching,
//! resubmission after a controller restart and cancelling; this module moves bytes and
//! numbers across, and the pure-Python package (`ferrocluster/`) pickles and shapes the API.
//!
//! * [`NativeClient`] connects with a connection file and submits raw tasks
//!   ([`client::Client::submit_raw`]); each submission is a [`NativeBatch`] whose outcomes
//!   Python reads by index as they arrive.
//! * Every blocking call releases the GIL (`Python::detach`), so other Python threads run and
//!   the client's I/O thread never waits for Python.
//! * Completions reach Python on a Python thread: [`NativeBatch::notify`] makes the I/O thread
//!   queue a Python object when a batch finishes, and the package's dispatcher thread takes
//!   them with [`NativeClient::completions`] (GIL released while it waits) and runs the
//!   futures' callbacks there. The I/O thread itself never takes the GIL.
//! * Shared objects (queues, namespaces, locks, semaphores, events): see [`objects`].
//! * [`cli_main`] runs the whole `cluster` command line in this process, for the
//!   `ferrocluster` console script and `python -m ferrocluster`.

use client::{
    Client, ClientOptions, CommandSpec, EngineId, Error, ErrorKind, RawBatch, RawOutcome, RawTask,
    TaskId, TaskOptions,
};
use protocol::Work;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

mod objects;

/// Raises the package's exception class `name` (from `ferrocluster._errors`) with `message`.
fn raise(py: Python<'_>, name: &str, message: String) -> PyErr {
    let class = py
        .import("ferrocluster._errors")
        .and_then(|m| m.getattr(name));
    match class {
        Ok(class) => match class.call1((message.clone(),)) {
            Ok(value) => PyErr::from_value(value),
            Err(e) => e,
        },
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(message),
    }
}

/// A client error as the package's exception.
fn error(py: Python<'_>, e: Error) -> PyErr {
    let name = match &e {
        Error::BadConnectionFile(_) | Error::Profile(_) => "ConnectionFileError",
        Error::ConnectTimeout { .. } => "ConnectTimeoutError",
        Error::ConnectionLost { .. } => "ConnectionLostError",
        Error::Timeout { .. } => "TimeoutError",
        Error::TooLarge { .. } => "TooLargeError",
        Error::Shutdown { .. } => "ShutdownError",
        _ => "ClusterError",
    };
    raise(py, name, e.to_string())
}

fn seconds(t: Option<f64>) -> PyResult<Option<Duration>> {
    match t {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) if s.is_infinite() && s > 0.0 => Ok(None),
        Some(s) => Err(PyValueError::new_err(format!(
            "a timeout must be a non-negative number of seconds, got {s}"
        ))),
    }
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Remote => "remote",
        ErrorKind::UnknownFunction => "unknown_function",
        ErrorKind::BadArguments => "bad_arguments",
        ErrorKind::EngineLost => "engine_lost",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Aborted => "aborted",
        ErrorKind::Unschedulable => "unschedulable",
        ErrorKind::CommandFailed => "command_failed",
        ErrorKind::Dependency => "dependency",
    }
}

/// Objects waiting for the dispatcher thread, and whether the client closed.
#[derive(Default)]
struct Completions {
    queue: Mutex<(VecDeque<Py<PyAny>>, bool)>,
    cond: Condvar,
}

impl Completions {
    fn lock(&self) -> MutexGuard<'_, (VecDeque<Py<PyAny>>, bool)> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, obj: Py<PyAny>) {
        self.lock().0.push_back(obj);
        self.cond.notify_one();
    }
}

/// A connection to a cluster's controller (see the module docs).
#[pyclass(frozen, module = "ferrocluster._native")]
struct NativeClient {
    client: Mutex<Option<Arc<Client>>>,
    completions: Arc<Completions>,
    file: PathBuf,
}

impl NativeClient {
    fn get(&self, py: Python<'_>) -> PyResult<Arc<Client>> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                raise(
                    py,
                    "ClusterError",
                    format!(
                        "this client (connection file {}) is closed",
                        self.file.display()
                    ),
                )
            })
    }
}

/// Task options from Python's keyword arguments.
fn options(
    targets: Vec<u32>,
    retries: u32,
    timeout: Option<f64>,
    after: Vec<u64>,
    follow: Vec<u64>,
) -> PyResult<TaskOptions> {
    Ok(TaskOptions {
        targets: targets.into_iter().map(EngineId).collect(),
        retries,
        timeout_ms: seconds(timeout)?.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
        run_timeout_ms: None,
        after: after.into_iter().map(TaskId).collect(),
        follow: follow.into_iter().map(TaskId).collect(),
    })
}

#[pymethods]
impl NativeClient {
    /// Connects with a client connection file, waiting up to `connect_timeout` seconds for
    /// the controller's welcome.
    #[new]
    #[pyo3(signature = (file, connect_timeout = 10.0))]
    fn new(py: Python<'_>, file: PathBuf, connect_timeout: f64) -> PyResult<NativeClient> {
        let timeout = seconds(Some(connect_timeout))?.unwrap_or(Duration::from_secs(10));
        let path = file.clone();
        let client = py
            .detach(move || {
                Client::connect_file_with(
                    &path,
                    ClientOptions {
                        connect_timeout: timeout,
                    },
                )
            })
            .map_err(|e| error(py, e))?;
        Ok(NativeClient {
            client: Mutex::new(Some(Arc::new(client))),
            completions: Arc::default(),
            file,
        })
    }

    /// The connection file.
    #[getter]
    fn connection_file(&self) -> String {
        self.file.display().to_string()
    }

    /// The controller's client address.
    #[getter]
    fn address(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.get(py)?.address().to_owned())
    }

    /// Registered engine ids (asks the controller).
    fn ids(&self, py: Python<'_>) -> PyResult<Vec<u32>> {
        let c = self.get(py)?;
        let ids = py.detach(move || c.ids()).map_err(|e| error(py, e))?;
        Ok(ids.into_iter().map(|e| e.0).collect())
    }

    /// Engines registered as last heard (no round trip).
    fn engines_known(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.get(py)?.engines_known())
    }

    /// Waits until at least `n` engines are registered; their ids.
    fn wait_for_engines(&self, py: Python<'_>, n: usize, timeout: f64) -> PyResult<Vec<u32>> {
        let c = self.get(py)?;
        let t = seconds(Some(timeout))?.unwrap_or(Duration::from_secs(u64::MAX / 4));
        let ids = py
            .detach(move || c.wait_for_engines(n, t))
            .map_err(|e| error(py, e))?;
        Ok(ids.into_iter().map(|e| e.0).collect())
    }

    /// The controller's status report, as JSON.
    fn status_json(&self, py: Python<'_>) -> PyResult<String> {
        let c = self.get(py)?;
        let report = py.detach(move || c.status()).map_err(|e| error(py, e))?;
        serde_json::to_string(&report).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Where the unfinished tasks are, as JSON.
    fn queue_status_json(&self, py: Python<'_>) -> PyResult<String> {
        let c = self.get(py)?;
        let q = py
            .detach(move || c.queue_status())
            .map_err(|e| error(py, e))?;
        serde_json::to_string(&q).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Aborts tasks that have not started; returns (aborted, running, finished, unknown).
    #[allow(clippy::type_complexity)]
    fn abort(
        &self,
        py: Python<'_>,
        ids: Vec<u64>,
    ) -> PyResult<(Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>)> {
        let c = self.get(py)?;
        let ids: Vec<TaskId> = ids.into_iter().map(TaskId).collect();
        let r = py.detach(move || c.abort(&ids)).map_err(|e| error(py, e))?;
        let raw = |v: Vec<TaskId>| v.into_iter().map(|t| t.0).collect();
        Ok((
            raw(r.aborted),
            raw(r.running),
            raw(r.finished),
            raw(r.unknown),
        ))
    }

    /// Forgets stored results of these tasks (all of them when `ids` is empty).
    fn purge(&self, py: Python<'_>, ids: Vec<u64>) -> PyResult<()> {
        let c = self.get(py)?;
        let ids: Vec<TaskId> = ids.into_iter().map(TaskId).collect();
        py.detach(move || {
            if ids.is_empty() {
                c.purge()
            } else {
                c.purge_tasks(&ids)
            }
        })
        .map_err(|e| error(py, e))
    }

    /// Stops the engines, and the controller too when `controller`.
    fn shutdown(&self, py: Python<'_>, controller: bool) -> PyResult<()> {
        let c = self.get(py)?;
        py.detach(move || c.shutdown(controller))
            .map_err(|e| error(py, e))
    }

    /// Closes the connection: pending results end with a connection-lost error, and the
    /// dispatcher thread is told to stop.
    fn close(&self, py: Python<'_>) {
        let client = self.client.lock().unwrap_or_else(|p| p.into_inner()).take();
        // Dropping the client joins its I/O thread, which may be finishing callbacks.
        py.detach(move || drop(client));
        self.completions.lock().1 = true;
        self.completions.cond.notify_all();
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Submits tasks that call `function` (a function name) with one payload each; `items`
    /// says how many items each task carries (all 1 when absent). `each_target` gives every
    /// task an engine of its own (direct views); otherwise `targets` applies to all.
    ///
    /// With `python_op` the tasks are Python tasks: `function` is ignored, and each payload
    /// (a pickle) becomes the `args` of a `{op, function, args}` request with the pickled
    /// callable `python_function`.
    #[pyo3(signature = (function, payloads, *, items = None, map = false, each_target = None,
                        targets = vec![], retries = 0, timeout = None, after = vec![],
                        follow = vec![], name = None, python_op = None,
                        python_function = None))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        function: String,
        payloads: Vec<Vec<u8>>,
        items: Option<Vec<usize>>,
        map: bool,
        each_target: Option<Vec<u32>>,
        targets: Vec<u32>,
        retries: u32,
        timeout: Option<f64>,
        after: Vec<u64>,
        follow: Vec<u64>,
        name: Option<String>,
        python_op: Option<String>,
        python_function: Option<Vec<u8>>,
    ) -> PyResult<NativeBatch> {
        let c = self.get(py)?;
        let (function, payloads) = match &python_op {
            None => (function, payloads),
            Some(op) => {
                let f = python_function.as_deref().unwrap_or_default();
                let mut wrapped = Vec::with_capacity(payloads.len());
                for args in &payloads {
                    let task = PythonTask {
                        op,
                        function: f,
                        args,
                    };
                    wrapped.push(
                        protocol::encode(&task)
                            .map_err(|e| PyValueError::new_err(e.to_string()))?,
                    );
                }
                (PYTHON.to_owned(), wrapped)
            }
        };
        let opts = options(targets, retries, timeout, after, follow)?;
        if let Some(each) = &each_target {
            if each.len() != payloads.len() {
                return Err(PyValueError::new_err(format!(
                    "{} targets for {} tasks",
                    each.len(),
                    payloads.len()
                )));
            }
        }
        if let Some(items) = &items {
            if items.len() != payloads.len() {
                return Err(PyValueError::new_err(format!(
                    "{} item counts for {} tasks",
                    items.len(),
                    payloads.len()
                )));
            }
        }
        let tasks: Vec<RawTask> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let mut options = opts.clone();
                if let Some(each) = &each_target {
                    options.targets = vec![EngineId(each[i])];
                }
                RawTask {
                    work: if map {
                        Work::Map {
                            function: function.clone(),
                        }
                    } else {
                        Work::Call {
                            function: function.clone(),
                        }
                    },
                    options,
                    payload,
                    items: items.as_ref().map_or(1, |v| v[i]),
                }
            })
            .collect();
        let name = name.unwrap_or_else(|| function.clone());
        let batch = py
            .detach(move || c.submit_raw(&name, tasks))
            .map_err(|e| error(py, e))?;
        Ok(NativeBatch { batch })
    }

    /// Submits command tasks, one per JSON command spec (`{program, args, env, cwd, stdin}`);
    /// with `each_target` one command per engine.
    #[pyo3(signature = (specs, *, each_target = None, targets = vec![], retries = 0,
                        timeout = None, after = vec![], follow = vec![]))]
    #[allow(clippy::too_many_arguments)]
    fn submit_commands(
        &self,
        py: Python<'_>,
        specs: Vec<String>,
        each_target: Option<Vec<u32>>,
        targets: Vec<u32>,
        retries: u32,
        timeout: Option<f64>,
        after: Vec<u64>,
        follow: Vec<u64>,
    ) -> PyResult<NativeBatch> {
        let c = self.get(py)?;
        let mut opts = options(targets, retries, None, after, follow)?;
        opts.run_timeout_ms = seconds(timeout)?.map(|d| d.as_millis() as u64);
        let mut tasks = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let spec: CommandSpec = serde_json::from_str(spec)
                .map_err(|e| PyValueError::new_err(format!("command {i}: {e}")))?;
            let mut options = opts.clone();
            if let Some(each) = &each_target {
                if let Some(&e) = each.get(i) {
                    options.targets = vec![EngineId(e)];
                }
            }
            tasks.push(RawTask {
                work: Work::Command(spec),
                options,
                payload: Vec::new(),
                items: 1,
            });
        }
        let batch = py
            .detach(move || c.submit_raw("command", tasks))
            .map_err(|e| error(py, e))?;
        Ok(NativeBatch { batch })
    }

    /// The cluster's queue `name` (bounded to `maxsize` items when > 0).
    #[pyo3(signature = (name, maxsize = 0))]
    fn queue(&self, py: Python<'_>, name: &str, maxsize: u64) -> PyResult<objects::NativeQueue> {
        objects::queue(py, &*self.get(py)?, name, maxsize)
    }

    /// The cluster's namespace `name`.
    fn namespace(&self, py: Python<'_>, name: &str) -> PyResult<objects::NativeNamespace> {
        Ok(objects::namespace(&*self.get(py)?, name))
    }

    /// The cluster's lock `name`, with leases of `lease` seconds (default: the client's).
    #[pyo3(signature = (name, lease = None))]
    fn lock(
        &self,
        py: Python<'_>,
        name: &str,
        lease: Option<f64>,
    ) -> PyResult<objects::NativeLeased> {
        objects::lock(&*self.get(py)?, name, lease)
    }

    /// The cluster's semaphore `name` of `permits` permits.
    #[pyo3(signature = (name, permits, lease = None))]
    fn semaphore(
        &self,
        py: Python<'_>,
        name: &str,
        permits: u32,
        lease: Option<f64>,
    ) -> PyResult<objects::NativeLeased> {
        objects::semaphore(&*self.get(py)?, name, permits, lease)
    }

    /// The cluster's event `name`.
    fn event(&self, py: Python<'_>, name: &str) -> PyResult<objects::NativeEvent> {
        Ok(objects::event(&*self.get(py)?, name))
    }

    /// The cluster's shared objects, as JSON.
    fn objects_json(&self, py: Python<'_>) -> PyResult<String> {
        objects::objects_json(py, &*self.get(py)?)
    }

    /// Waits up to `timeout` seconds for finished batches' objects (see
    /// [`NativeBatch::notify`]); returns them, empty on timeout, `None` once closed.
    fn completions(&self, py: Python<'_>, timeout: f64) -> Option<Vec<Py<PyAny>>> {
        let done = self.completions.clone();
        let t = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
        py.detach(move || {
            let mut q = done.lock();
            if q.0.is_empty() && !q.1 {
                q = done
                    .cond
                    .wait_timeout(q, t)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if q.0.is_empty() && q.1 {
                return None;
            }
            Some(q.0.drain(..).collect())
        })
    }
}

/// Tasks submitted together: read their outcomes by index.
#[pyclass(frozen, module = "ferrocluster._native")]
struct NativeBatch {
    batch: RawBatch,
}

#[pymethods]
impl NativeBatch {
    fn __len__(&self) -> usize {
        self.batch.len()
    }

    /// Task id of task `index` (a number; `client << 40 | seq`).
    fn task_id(&self, index: usize) -> u64 {
        self.batch.task_id(index).0
    }

    /// All task ids.
    fn task_ids(&self) -> Vec<u64> {
        (0..self.batch.len())
            .map(|i| self.batch.task_id(i).0)
            .collect()
    }

    /// Every task finished (or the connection ended).
    fn ready(&self) -> bool {
        self.batch.ready()
    }

    /// (tasks finished, items finished, items in all).
    fn progress(&self) -> (usize, usize, usize) {
        self.batch.progress()
    }

    /// When it was submitted (seconds since the epoch).
    fn submitted(&self) -> f64 {
        epoch(self.batch.submitted())
    }

    /// Waits for every task, at most `timeout` seconds (`None`: no limit); true when done.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let t = seconds(timeout)?;
        let b = &self.batch;
        Ok(py.detach(|| b.wait(t)))
    }

    /// Waits for task `index`; true when it finished (or the connection ended).
    #[pyo3(signature = (index, timeout = None))]
    fn wait_task(&self, py: Python<'_>, index: usize, timeout: Option<f64>) -> PyResult<bool> {
        let t = seconds(timeout)?;
        let b = &self.batch;
        Ok(py.detach(|| b.wait_task(index, t)))
    }

    /// Waits until more than `seen` tasks finished; (indices in finishing order, over).
    #[pyo3(signature = (seen, timeout = None))]
    fn arrivals(
        &self,
        py: Python<'_>,
        seen: usize,
        timeout: Option<f64>,
    ) -> PyResult<(Vec<usize>, bool)> {
        let t = seconds(timeout)?;
        let b = &self.batch;
        Ok(py.detach(|| b.arrivals(seen, t)))
    }

    /// `None` while task `index` runs; else `(ok, kind, message, engine, payload, started,
    /// elapsed, received)` (kind and message `None` when ok; `kind` is `"connection_lost"`
    /// when the connection ended first).
    #[allow(clippy::type_complexity)]
    fn outcome<'py>(
        &self,
        py: Python<'py>,
        index: usize,
    ) -> PyResult<
        Option<(
            bool,
            Option<&'static str>,
            Option<String>,
            Option<u32>,
            Bound<'py, PyBytes>,
            Option<f64>,
            f64,
            f64,
        )>,
    > {
        if index >= self.batch.len() {
            return Err(pyo3::exceptions::PyIndexError::new_err(format!(
                "task index {index} out of range for {} tasks",
                self.batch.len()
            )));
        }
        Ok(match self.batch.outcome(index) {
            RawOutcome::Pending => None,
            RawOutcome::Done(part) => {
                let (kind, message) = match part.error {
                    None => (None, None),
                    Some(e) => (Some(kind_name(e.kind)), Some(e.message)),
                };
                Some((
                    kind.is_none(),
                    kind,
                    message,
                    part.engine.map(|e| e.0),
                    PyBytes::new(py, &part.payload),
                    part.started.map(epoch),
                    part.elapsed.as_secs_f64(),
                    epoch(part.received),
                ))
            }
            RawOutcome::Lost(e) => Some((
                false,
                Some("connection_lost"),
                Some(e.to_string()),
                None,
                PyBytes::new(py, b""),
                None,
                0.0,
                epoch(SystemTime::now()),
            )),
        })
    }

    /// The values of the Python tasks that finished successfully without output, by index:
    /// each the value's pickle (`bytes`), `None` for every other task (running, failed,
    /// with captured output, or not a Python task), which the caller reads with
    /// [`NativeBatch::outcome`]. One call for a whole map instead of one per task.
    fn python_values<'py>(&self, py: Python<'py>) -> Vec<Option<Bound<'py, PyBytes>>> {
        self.batch
            .ok_payloads()
            .into_iter()
            .map(|payload| {
                let reply: PythonReply = rmp_serde::from_slice(payload?.as_slice()).ok()?;
                match (
                    reply.value,
                    reply.stdout.is_empty() && reply.stderr.is_empty(),
                ) {
                    (Some(value), true) => Some(PyBytes::new(py, &value)),
                    _ => None,
                }
            })
            .collect()
    }

    /// Queues `obj` on `client`'s completions once every task finished (at once if they
    /// have).
    fn notify(&self, client: &NativeClient, obj: Py<PyAny>) {
        let done = client.completions.clone();
        self.batch.on_finish(move || done.push(obj));
    }

    /// Cancels the tasks that have not started; how many were.
    fn cancel(&self, py: Python<'_>) -> usize {
        let b = &self.batch;
        py.detach(|| b.cancel())
    }
}

/// Name of the engines' built-in function for Python tasks.
const PYTHON: &str = "python";

/// A Python task's argument payload (see the engine's `python` module).
#[derive(serde::Serialize)]
struct PythonTask<'a> {
    op: &'a str,
    #[serde(with = "serde_bytes")]
    function: &'a [u8],
    #[serde(with = "serde_bytes")]
    args: &'a [u8],
}

/// A Python task's result or failure payload.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct PythonReply {
    #[serde(with = "serde_bytes")]
    value: Option<Vec<u8>>,
    stdout: String,
    stderr: String,
    ename: Option<String>,
    evalue: String,
    traceback: String,
}

/// A Python task's result payload: `(value pickle, stdout, stderr)`, or for a failure
/// payload `(None, stdout, stderr, ename, evalue, traceback)`; `None` when the payload is
/// not a Python task's.
#[allow(clippy::type_complexity)]
#[pyfunction]
fn python_reply<'py>(
    py: Python<'py>,
    payload: &[u8],
) -> Option<(
    Option<Bound<'py, PyBytes>>,
    String,
    String,
    Option<String>,
    String,
    String,
)> {
    let reply: PythonReply = rmp_serde::from_slice(payload).ok()?;
    if reply.value.is_none() && reply.ename.is_none() {
        return None;
    }
    Some((
        reply.value.map(|v| PyBytes::new(py, &v)),
        reply.stdout,
        reply.stderr,
        reply.ename,
        reply.evalue,
        reply.traceback,
    ))
}

/// A command task's result payload: `(exit status, signal, stdout, stderr, truncated)`.
#[allow(clippy::type_complexity)]
#[pyfunction]
fn command_output<'py>(
    py: Python<'py>,
    payload: &[u8],
) -> PyResult<(
    Option<i32>,
    Option<i32>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    bool,
)> {
    let out: client::CommandOutput = protocol::decode(payload)
        .map_err(|e| PyValueError::new_err(format!("not a command's output: {e}")))?;
    Ok((
        out.status,
        out.signal,
        PyBytes::new(py, &out.stdout),
        PyBytes::new(py, &out.stderr),
        out.truncated,
    ))
}

/// Chunk sizes of an automatic map of `items` items over `engines` engines.
#[pyfunction]
fn auto_chunk_counts(items: usize, engines: usize) -> Vec<usize> {
    client::auto_chunk_counts(items, engines)
}

/// JSON text to msgpack bytes (arguments of Rust functions).
#[pyfunction]
fn json_to_msgpack<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyBytes>> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let bytes = protocol::encode(&value).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &bytes))
}

/// msgpack bytes to JSON text (results of Rust functions); binary data becomes a list of
/// numbers.
#[pyfunction]
fn msgpack_to_json(bytes: &[u8]) -> PyResult<String> {
    let value: serde_json::Value = rmp_serde::from_slice(bytes)
        .map_err(|e| PyValueError::new_err(format!("result is not msgpack: {e}")))?;
    serde_json::to_string(&value).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Runs the `cluster` command line (`args[0]` is the program name) in this process with
/// the GIL released; returns its exit status.
#[pyfunction]
fn cli_main(py: Python<'_>, args: Vec<OsString>) -> u8 {
    py.detach(move || cluster_cli::main_status(args))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeClient>()?;
    m.add_class::<NativeBatch>()?;
    m.add_function(wrap_pyfunction!(auto_chunk_counts, m)?)?;
    m.add_function(wrap_pyfunction!(json_to_msgpack, m)?)?;
    m.add_function(wrap_pyfunction!(msgpack_to_json, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(python_reply, m)?)?;
    m.add_function(wrap_pyfunction!(command_output, m)?)?;
    m.add_class::<objects::NativeQueue>()?;
    m.add_class::<objects::NativeNamespace>()?;
    m.add_class::<objects::NativeLeased>()?;
    m.add_class::<objects::NativeEvent>()?;
    m.add_function(wrap_pyfunction!(objects::decode_item, m)?)?;
    m.add("ITEM_MSGPACK", objects::ITEM_MSGPACK)?;
    m.add("ITEM_PICKLE", objects::ITEM_PICKLE)?;
    m.add("ITEM_BYTES", objects::ITEM_BYTES)?;
    m.add("DEFAULT_LEASE_S", client::DEFAULT_LEASE.as_secs_f64())?;
    m.add("PYTHON_FUNCTION", PYTHON)?;
    m.add("TASK_SEQ_BITS", 40)?;
    Ok(())
}
