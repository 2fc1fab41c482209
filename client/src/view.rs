//! Views: how tasks are made, chunked, batched into messages and handed to the I/O thread.

use crate::cell::{Cell, Layout};
use crate::command::Command;
use crate::error::Error;
use crate::function::{Argument, IntoFunction};
use crate::io::{Outgoing, Registration, Shared};
use crate::result::{AsyncMapResult, AsyncResult};
use protocol::{
    builtin, CommandOutput, EngineId, FromClient, TaskId, TaskOptions, TaskRequest, Work,
};
use serde::{de::DeserializeOwned, Serialize};

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Largest payload of one task: the message limit less room for the other frames.
pub(crate) const MAX_PAYLOAD: usize = protocol::DEFAULT_MAX_MESSAGE_BYTES - (1 << 20);

/// A submit message is closed once it holds this many tasks…
pub(crate) const SUBMIT_MAX_TASKS: usize = 4096;
/// …or this many payload bytes, so that one message never stalls the controller for long.
pub(crate) const SUBMIT_MAX_BYTES: usize = 1 << 20;

/// Automatic chunking aims at this many chunks per engine: enough to balance uneven items,
/// few enough that per-task overhead vanishes.
const CHUNKS_PER_ENGINE: usize = 32;
/// Automatic chunks are also cut at this size, so large items still spread over engines.
pub(crate) const AUTO_CHUNK_BYTES: usize = 1 << 20;

/// A task about to be submitted.
pub(crate) struct NewTask {
    pub(crate) request: TaskRequest,
    pub(crate) payload: Vec<u8>,
    pub(crate) cell: Arc<Cell>,
    pub(crate) index: u32,
}

/// Encodes `tasks` into as few submit messages as the limits allow and queues them all at
/// once (one wake-up of the I/O thread). A single task is queued unencoded instead: a burst
/// of them (`apply` in a loop) is merged into few messages by the I/O thread.
pub(crate) fn submit(shared: &Shared, tasks: Vec<NewTask>) -> Result<(), Error> {
    if tasks.len() == 1 {
        let Some(task) = tasks.into_iter().next() else {
            return Ok(());
        };
        let outgoing = Outgoing {
            msg_type: "submit",
            content: Vec::new(),
            tasks: vec![Registration {
                id: task.request.id,
                cell: task.cell,
                index: task.index,
            }],
            requests: vec![task.request],
            payloads: vec![task.payload],
            reply: None,
        };
        return shared.send([outgoing]).map_err(|lost| lost.error());
    }
    let mut messages = Vec::new();
    let mut requests = Vec::new();
    let mut payloads = Vec::new();
    let mut regs = Vec::new();
    let mut bytes = 0;
    let mut tasks = tasks.into_iter().peekable();
    while let Some(task) = tasks.next() {
        bytes += task.payload.len();
        regs.push(Registration {
            id: task.request.id,
            cell: task.cell,
            index: task.index,
        });
        requests.push(task.request);
        payloads.push(task.payload);
        let full = requests.len() >= SUBMIT_MAX_TASKS
            || tasks
                .peek()
                .is_some_and(|next| bytes + next.payload.len() > SUBMIT_MAX_BYTES);
        if full || tasks.peek().is_none() {
            let msg = FromClient::Submit {
                tasks: std::mem::take(&mut requests),
            };
            let content = protocol::encode(&msg).map_err(|e| Error::Encode {
                what: "a submit message".into(),
                message: e.to_string(),
            })?;
            messages.push(Outgoing {
                msg_type: "submit",
                content,
                requests: Vec::new(),
                payloads: std::mem::take(&mut payloads),
                tasks: std::mem::take(&mut regs),
                reply: None,
            });
            bytes = 0;
        }
    }
    shared.send(messages).map_err(|lost| lost.error())
}

fn encode_arg<A: Serialize + ?Sized>(arg: &A, what: impl Fn() -> String) -> Result<Vec<u8>, Error> {
    let bytes = rmp_serde::to_vec_named(arg).map_err(|e| Error::Encode {
        what: what(),
        message: e.to_string(),
    })?;
    if bytes.len() > MAX_PAYLOAD {
        return Err(Error::TooLarge {
            what: what(),
            size: bytes.len(),
            limit: MAX_PAYLOAD,
        });
    }
    Ok(bytes)
}

/// Splits items (given by the end offsets of their encodings) into chunks: consecutive runs
/// of `counts` items, each run cut further so that no chunk passes `max_bytes` (a chunk always
/// holds at least one item).
pub(crate) fn plan_chunks(
    ends: &[usize],
    counts: impl IntoIterator<Item = usize>,
    max_bytes: usize,
) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let offset = |i: usize| if i == 0 { 0 } else { ends[i - 1] };
    for count in counts {
        if start >= ends.len() {
            break;
        }
        let stop = (start + count.max(1)).min(ends.len());
        let mut first = start;
        for (i, &end) in ends.iter().enumerate().take(stop).skip(start) {
            if i > first && end - offset(first) > max_bytes {
                chunks.push(first..i);
                first = i;
            }
        }
        chunks.push(first..stop);
        start = stop;
    }
    chunks
}

/// Item counts for automatic chunking: `n` items spread evenly over about `engines × 32`
/// chunks.
pub(crate) fn auto_counts(n: usize, engines: usize) -> Vec<usize> {
    let wanted = if engines == 0 {
        CHUNKS_PER_ENGINE
    } else {
        engines.saturating_mul(CHUNKS_PER_ENGINE)
    };
    let k = wanted.clamp(1, n.max(1));
    (0..k).map(|i| n / k + usize::from(i < n % k)).collect()
}

/// Items encoded one after another into one buffer, with the end offset of each.
pub(crate) struct Encoded {
    pub(crate) buf: Vec<u8>,
    pub(crate) ends: Vec<usize>,
}

impl Encoded {
    pub(crate) fn new() -> Encoded {
        Encoded {
            buf: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Appends one item; `what` names it in errors.
    pub(crate) fn push<A: Serialize + ?Sized>(
        &mut self,
        item: &A,
        what: impl Fn() -> String,
    ) -> Result<(), Error> {
        let start = self.buf.len();
        if let Err(e) = rmp_serde::encode::write_named(&mut self.buf, item) {
            self.buf.truncate(start);
            return Err(Error::Encode {
                what: what(),
                message: e.to_string(),
            });
        }
        if self.buf.len() - start > MAX_PAYLOAD - 8 {
            let size = self.buf.len() - start;
            self.buf.truncate(start);
            return Err(Error::TooLarge {
                what: what(),
                size,
                limit: MAX_PAYLOAD - 8,
            });
        }
        self.ends.push(self.buf.len());
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The bytes of items `range`.
    pub(crate) fn bytes(&self, range: Range<usize>) -> &[u8] {
        if range.is_empty() {
            return &[];
        }
        let from = if range.start == 0 {
            0
        } else {
            self.ends[range.start - 1]
        };
        &self.buf[from..self.ends[range.end - 1]]
    }

    /// A msgpack array of items `range`, with `prefix` written first.
    pub(crate) fn array(&self, prefix: &[u8], range: Range<usize>) -> Vec<u8> {
        let bytes = self.bytes(range.clone());
        let mut payload = Vec::with_capacity(prefix.len() + bytes.len() + 5);
        payload.extend_from_slice(prefix);
        protocol::write_array_header(&mut payload, range.len());
        payload.extend_from_slice(bytes);
        payload
    }

    /// Forgets every item, keeping the buffers' capacity.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
}

/// Map-chunk tasks for `chunks` of `items`, all in one new cell.
pub(crate) fn chunk_tasks(
    shared: &Shared,
    function: &str,
    options: &TaskOptions,
    items: &Encoded,
    chunks: Vec<Range<usize>>,
) -> (Arc<Cell>, Vec<NewTask>) {
    let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
    let first = shared.task_ids(chunks.len());
    let cell = Cell::new(function.to_owned(), first, sizes, Layout::Chunks, false);
    let tasks = chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| NewTask {
            request: TaskRequest {
                id: TaskId(first.0 + i as u64),
                work: Work::Map {
                    function: function.to_owned(),
                },
                options: options.clone(),
            },
            payload: items.array(&[], chunk),
            cell: cell.clone(),
            index: i as u32,
        })
        .collect();
    (cell, tasks)
}

fn timeout_ms(t: Duration) -> u64 {
    t.as_millis().min(u64::MAX as u128) as u64
}

/// A view whose tasks go to whichever engine the controller's scheduler picks.
///
/// Options chain and return a new view: `client.load_balanced_view().retries(2).chunksize(100)`.
/// Functions are given as typed handles ([`protocol::Function`], checked by the compiler)
/// or by name (types from the call site):
///
/// ```no_run
/// # fn main() -> Result<(), cluster_client::Error> {
/// use cluster_client::{stock::NTH_PRIME, Client};
/// let client = Client::connect_env()?;
/// let view = client.load_balanced_view();
/// let primes = view.map(NTH_PRIME, 0..1000)?.get(None)?;   // Vec<u64>
/// let p: u64 = view.apply("nth_prime", 999u64)?.get(None)?; // by name
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LoadBalancedView {
    pub(crate) shared: Arc<Shared>,
    pub(crate) options: TaskOptions,
    pub(crate) chunksize: usize,
}

impl std::fmt::Debug for LoadBalancedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadBalancedView")
            .field("options", &self.options)
            .field("chunksize", &self.chunksize)
            .finish()
    }
}

impl LoadBalancedView {
    pub(crate) fn new(shared: Arc<Shared>) -> LoadBalancedView {
        LoadBalancedView {
            shared,
            options: TaskOptions::default(),
            chunksize: 0,
        }
    }

    /// Only these engines may run the tasks (any engine when empty).
    pub fn targets(mut self, ids: &[EngineId]) -> Self {
        self.options.targets = ids.to_vec();
        self
    }

    /// Times a task may be re-run on another engine after it fails or its engine is lost.
    pub fn retries(mut self, n: u32) -> Self {
        self.options.retries = n;
        self
    }

    /// Run the tasks only after these tasks have finished successfully (if one fails, or is
    /// unknown to the controller, the tasks fail at once with [`crate::ErrorKind::Dependency`]).
    pub fn after(mut self, ids: &[TaskId]) -> Self {
        self.options.after = ids.to_vec();
        self
    }

    /// Run the tasks on the engine where these tasks ran, once they have finished
    /// successfully (they must all have run on one engine).
    pub fn follow(mut self, ids: &[TaskId]) -> Self {
        self.options.follow = ids.to_vec();
        self
    }

    /// Time limit of each task, twice: one not started within it fails with
    /// [`crate::ErrorKind::Timeout`], and one running longer on its engine is stopped
    /// (commands are killed, functions abandoned in a thread) and fails the same way.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.options.timeout_ms = Some(timeout_ms(t));
        self
    }

    /// Run-time limit only: a task running longer than `t` on its engine is stopped and
    /// fails with [`crate::ErrorKind::Timeout`], however long it waited to start (the meaning
    /// of a command's timeout, and of `cluster map --timeout`).
    pub fn run_timeout(mut self, t: Duration) -> Self {
        self.options.run_timeout_ms = Some(timeout_ms(t));
        self
    }

    /// Items per map task; 0 (the default) chooses: about 32 chunks per engine for
    /// [`map`](LoadBalancedView::map), and a size adapted to the items' run time for
    /// [`imap`](LoadBalancedView::imap).
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = n;
        self
    }

    /// The task options this view submits with.
    pub fn options(&self) -> &TaskOptions {
        &self.options
    }

    fn one(&self, work: Work, payload: Vec<u8>, options: TaskOptions) -> Result<Arc<Cell>, Error> {
        let id = self.shared.task_ids(1);
        let command = matches!(work, Work::Command(_));
        let cell = Cell::new(work.name().to_owned(), id, vec![1], Layout::Values, command);
        let task = NewTask {
            request: TaskRequest { id, work, options },
            payload,
            cell: cell.clone(),
            index: 0,
        };
        submit(&self.shared, vec![task])?;
        Ok(cell)
    }

    /// Runs `function(arg)` on one engine.
    ///
    /// `arg` may be the value or a reference to it (`view.apply(NTH_PRIME, 10)`,
    /// `view.apply(SUM, &big_vec)`).
    pub fn apply<A: Serialize, R>(
        &self,
        function: impl IntoFunction<A, R>,
        arg: impl Argument<A>,
    ) -> Result<AsyncResult<R>, Error> {
        let name = function.function_name();
        let payload = encode_arg(arg.argument(), || format!("the argument of {name}"))?;
        let work = Work::Call {
            function: name.to_owned(),
        };
        let cell = self.one(work, payload, self.options.clone())?;
        Ok(AsyncResult::new(cell, self.shared.clone()))
    }

    /// Runs `function` on each item, in chunks spread over the engines; results come back in
    /// item order (or as they arrive: iterate the result, or call
    /// [`unordered`](AsyncMapResult::unordered) on it).
    ///
    /// Items are encoded here, one after another into one buffer; each chunk's payload is a
    /// msgpack array of its items, and all chunks go out in as few messages as possible. The
    /// items are all read at once: for a long or endless stream use
    /// [`imap`](LoadBalancedView::imap), which keeps a bounded number of tasks in flight.
    pub fn map<A: Serialize, R>(
        &self,
        function: impl IntoFunction<A, R>,
        items: impl IntoIterator<Item: Argument<A>>,
    ) -> Result<AsyncMapResult<R>, Error> {
        let name = function.function_name();
        let mut encoded = Encoded::new();
        for (i, item) in items.into_iter().enumerate() {
            encoded.push(item.argument(), || format!("item {i} of the map of {name}"))?;
        }
        let n = encoded.len();
        let chunks = if n == 0 {
            Vec::new()
        } else if self.chunksize == 0 {
            let engines = self.shared.engines.load(Ordering::Relaxed);
            plan_chunks(&encoded.ends, auto_counts(n, engines), AUTO_CHUNK_BYTES)
        } else {
            let count = self.chunksize;
            plan_chunks(
                &encoded.ends,
                std::iter::repeat_n(count, n.div_ceil(count)),
                MAX_PAYLOAD - 8,
            )
        };
        let (cell, tasks) = chunk_tasks(&self.shared, name, &self.options, &encoded, chunks);
        drop(encoded);
        if !tasks.is_empty() {
            submit(&self.shared, tasks)?;
        }
        Ok(AsyncMapResult::new(cell, self.shared.clone()))
    }

    /// Runs a program on one engine (see [`Command`]; a [`protocol::CommandSpec`] converts
    /// too).
    pub fn command(
        &self,
        command: impl Into<Command>,
    ) -> Result<AsyncResult<CommandOutput>, Error> {
        let (spec, limit) = command.into().into_parts();
        let mut options = self.options.clone();
        if let Some(limit) = limit {
            options.run_timeout_ms = Some(timeout_ms(limit));
        }
        let cell = self.one(Work::Command(spec), Vec::new(), options)?;
        Ok(AsyncResult::new(cell, self.shared.clone()))
    }

    /// Runs many programs, one task each, submitted together; outputs come back in the
    /// order given (or as they finish, with [`AsyncMapResult::unordered`]).
    pub fn commands(
        &self,
        commands: impl IntoIterator<Item: Into<Command>>,
    ) -> Result<AsyncMapResult<CommandOutput>, Error> {
        let commands: Vec<Command> = commands.into_iter().map(Into::into).collect();
        let first = self.shared.task_ids(commands.len());
        let name = match commands.first() {
            Some(c)
                if commands
                    .iter()
                    .all(|o| o.spec().program == c.spec().program) =>
            {
                c.spec().program.clone()
            }
            _ => "commands".to_owned(),
        };
        let cell = Cell::new(name, first, vec![1; commands.len()], Layout::Values, true);
        let tasks: Vec<NewTask> = commands
            .into_iter()
            .enumerate()
            .map(|(i, command)| {
                let (spec, limit) = command.into_parts();
                let mut options = self.options.clone();
                if let Some(limit) = limit {
                    options.run_timeout_ms = Some(timeout_ms(limit));
                }
                NewTask {
                    request: TaskRequest {
                        id: TaskId(first.0 + i as u64),
                        work: Work::Command(spec),
                        options,
                    },
                    payload: Vec::new(),
                    cell: cell.clone(),
                    index: i as u32,
                }
            })
            .collect();
        if !tasks.is_empty() {
            submit(&self.shared, tasks)?;
        }
        Ok(AsyncMapResult::new(cell, self.shared.clone()))
    }

    /// [`LoadBalancedView::apply`] with JSON values in and out (for the command line): the
    /// argument travels as msgpack and the result is read back as JSON. Results with binary
    /// data or non-string map keys do not convert and give [`Error::Decode`].
    pub fn apply_json(
        &self,
        function: &str,
        arg: serde_json::Value,
    ) -> Result<AsyncResult<serde_json::Value>, Error> {
        self.apply::<serde_json::Value, serde_json::Value>(function, arg)
    }

    /// [`LoadBalancedView::map`] with JSON values in and out (see
    /// [`LoadBalancedView::apply_json`]).
    pub fn map_json(
        &self,
        function: &str,
        items: Vec<serde_json::Value>,
    ) -> Result<AsyncMapResult<serde_json::Value>, Error> {
        self.map::<serde_json::Value, serde_json::Value>(function, items)
    }
}

/// A view that runs each task on every one of its engines, and reaches each engine's store
/// of named values.
///
/// Results come as an [`AsyncMapResult`] with one value per engine, in the order of the
/// view's ids:
///
/// ```no_run
/// # fn main() -> Result<(), cluster_client::Error> {
/// use cluster_client::{stock::WHOAMI, Client};
/// let client = Client::connect_env()?;
/// let dv = client.direct_view(&client.ids()?);
/// dv.scatter("xs", 0..1000u64)?.get(None)?;     // a slice of 0..1000 on each engine
/// let back: Vec<u64> = dv.gather("xs", None)?;  // and back, in order
/// assert_eq!(back, (0..1000).collect::<Vec<_>>());
/// for who in dv.apply(WHOAMI, ())?.get(None)? {
///     println!("engine {} is pid {} on {}", who.engine_id, who.pid, who.host);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DirectView {
    shared: Arc<Shared>,
    ids: Vec<EngineId>,
}

impl std::fmt::Debug for DirectView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectView")
            .field("ids", &self.ids)
            .finish()
    }
}

/// Writes the msgpack map `{name: <value bytes>}` with one entry.
fn store_entry(name: &str, value: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(value.len() + name.len() + 8);
    out.push(0x81);
    rmp_serde::encode::write(&mut out, name).map_err(|e| Error::Encode {
        what: format!("the name {name:?}"),
        message: e.to_string(),
    })?;
    out.extend_from_slice(value);
    Ok(out)
}

/// Splits `n` items into `parts` contiguous runs whose sizes differ by at most one.
fn even_split(n: usize, parts: usize) -> Vec<Range<usize>> {
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let len = n / parts + usize::from(i < n % parts);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

impl DirectView {
    pub(crate) fn new(shared: Arc<Shared>, ids: Vec<EngineId>) -> DirectView {
        DirectView { shared, ids }
    }

    /// The engines this view runs on.
    pub fn ids(&self) -> &[EngineId] {
        &self.ids
    }

    /// One task per engine, all in one message, `payload(i)` for the `i`-th engine;
    /// `run_limit` bounds each run (commands).
    fn each<R>(
        &self,
        work: Work,
        run_limit: Option<Duration>,
        mut payload: impl FnMut(usize) -> Vec<u8>,
    ) -> Result<AsyncMapResult<R>, Error> {
        let n = self.ids.len();
        let first = self.shared.task_ids(n);
        let command = matches!(work, Work::Command(_));
        let cell = Cell::new(
            work.name().to_owned(),
            first,
            vec![1; n],
            Layout::Values,
            command,
        );
        let tasks: Vec<NewTask> = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, engine)| NewTask {
                request: TaskRequest {
                    id: TaskId(first.0 + i as u64),
                    work: work.clone(),
                    options: TaskOptions {
                        targets: vec![*engine],
                        run_timeout_ms: run_limit.map(timeout_ms),
                        ..TaskOptions::default()
                    },
                },
                payload: payload(i),
                cell: cell.clone(),
                index: i as u32,
            })
            .collect();
        if !tasks.is_empty() {
            submit(&self.shared, tasks)?;
        }
        Ok(AsyncMapResult::new(cell, self.shared.clone()))
    }

    fn call_each<R>(&self, function: &str, payload: Vec<u8>) -> Result<AsyncMapResult<R>, Error> {
        self.each(
            Work::Call {
                function: function.to_owned(),
            },
            None,
            |_| payload.clone(),
        )
    }

    /// Runs `function(arg)` on each engine of the view; one result per engine.
    pub fn apply<A: Serialize, R>(
        &self,
        function: impl IntoFunction<A, R>,
        arg: impl Argument<A>,
    ) -> Result<AsyncMapResult<R>, Error> {
        let name = function.function_name();
        let payload = encode_arg(arg.argument(), || format!("the argument of {name}"))?;
        self.call_each(name, payload)
    }

    /// Runs `function` on each item, load-balanced over this view's engines only; results in
    /// item order (see [`LoadBalancedView::map`]).
    pub fn map<A: Serialize, R>(
        &self,
        function: impl IntoFunction<A, R>,
        items: impl IntoIterator<Item: Argument<A>>,
    ) -> Result<AsyncMapResult<R>, Error> {
        LoadBalancedView::new(self.shared.clone())
            .targets(&self.ids)
            .map(function, items)
    }

    /// Runs a program on each engine of the view; one output per engine.
    pub fn command(
        &self,
        command: impl Into<Command>,
    ) -> Result<AsyncMapResult<CommandOutput>, Error> {
        let (spec, limit) = command.into().into_parts();
        self.each(Work::Command(spec), limit, |_| Vec::new())
    }

    /// Stores `value` under `name` in each engine's store, replacing what was there;
    /// functions registered with a context read it (`ctx.get("name")`).
    pub fn push<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<AsyncMapResult<()>, Error> {
        let value = encode_arg(value, || format!("the value pushed as {name:?}"))?;
        self.call_each(builtin::PUSH, store_entry(name, &value)?)
    }

    /// Reads the value stored under `name` from each engine; one value per engine. An
    /// engine without it fails its task with a message naming the name and the engine.
    pub fn pull<T>(&self, name: &str) -> Result<AsyncMapResult<T>, Error> {
        let payload = encode_arg(name, || format!("the name {name:?}"))?;
        self.call_each(builtin::PULL, payload)
    }

    /// Splits `items` into as many contiguous parts as the view has engines (sizes differing
    /// by at most one) and stores part `i`, as a list, under `name` on the `i`-th engine.
    pub fn scatter<T: Serialize>(
        &self,
        name: &str,
        items: impl IntoIterator<Item: Argument<T>>,
    ) -> Result<AsyncMapResult<()>, Error> {
        let mut encoded = Encoded::new();
        for (i, item) in items.into_iter().enumerate() {
            encoded.push(item.argument(), || {
                format!("item {i} scattered as {name:?}")
            })?;
        }
        let prefix = store_entry(name, &[])?;
        let mut payloads = Vec::with_capacity(self.ids.len());
        for (i, part) in even_split(encoded.len(), self.ids.len())
            .into_iter()
            .enumerate()
        {
            let payload = encoded.array(&prefix, part);
            if payload.len() > MAX_PAYLOAD {
                return Err(Error::TooLarge {
                    what: format!("the part of {name:?} scattered to engine {}", self.ids[i]),
                    size: payload.len(),
                    limit: MAX_PAYLOAD,
                });
            }
            payloads.push(payload);
        }
        drop(encoded);
        self.each(
            Work::Call {
                function: builtin::PUSH.to_owned(),
            },
            None,
            |i| std::mem::take(&mut payloads[i]),
        )
    }

    /// Pulls the list stored under `name` from each engine (by [`scatter`], or set by
    /// functions) and concatenates the lists in the view's order; waits up to `timeout`.
    ///
    /// [`scatter`]: DirectView::scatter
    pub fn gather<T: DeserializeOwned>(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<Vec<T>, Error> {
        let parts: Vec<Vec<T>> = self.pull(name)?.get(timeout)?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// Forgets every stored value on each engine.
    pub fn clear(&self) -> Result<AsyncMapResult<()>, Error> {
        let payload = encode_arg(&[(); 0], || "an empty list".into())?;
        self.call_each(builtin::CLEAR, payload)
    }

    /// The names stored on each engine, sorted; one list per engine.
    pub fn keys(&self) -> Result<AsyncMapResult<Vec<String>>, Error> {
        self.call_each(builtin::KEYS, vec![0xc0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_header_matches_rmp_serde() {
        for len in [0usize, 1, 15, 16, 65535, 65536] {
            let items = vec![0u8; len];
            let full = rmp_serde::to_vec_named(&items).unwrap();
            let mut header = Vec::new();
            protocol::write_array_header(&mut header, len);
            assert_eq!(&full[..header.len()], &header[..], "len {len}");
            assert_eq!(full.len() - header.len(), len);
        }
    }

    #[test]
    fn automatic_chunking_is_thirty_two_per_engine_and_even() {
        assert_eq!(auto_counts(10_000, 2).len(), 64);
        assert_eq!(auto_counts(10_000, 2).iter().sum::<usize>(), 10_000);
        assert_eq!(auto_counts(10_000, 0).len(), 32);
        assert_eq!(auto_counts(3, 2), vec![1, 1, 1]);
        assert_eq!(auto_counts(100, 2).iter().max(), Some(&2));
        let ends: Vec<usize> = (1..=10_000).collect();
        assert_eq!(
            plan_chunks(&ends, auto_counts(10_000, 2), 1 << 20).len(),
            64
        );
    }

    #[test]
    fn chunks_are_cut_by_count_and_by_bytes() {
        // Items of 10 bytes each.
        let ends: Vec<usize> = (1..=10).map(|i| i * 10).collect();
        assert_eq!(
            plan_chunks(&ends, std::iter::repeat_n(4, 3), 1000),
            vec![0..4, 4..8, 8..10]
        );
        assert_eq!(
            plan_chunks(&ends, [10], 25),
            vec![0..2, 2..4, 4..6, 6..8, 8..10]
        );
        // An item larger than the cap still gets a chunk of its own.
        assert_eq!(plan_chunks(&[100, 110], [2], 50), vec![0..1, 1..2]);
    }
}
