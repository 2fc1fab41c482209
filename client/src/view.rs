//! Views: the task options users set and the calls they make (`apply`, `map`, `command`,
//! the direct view's store); [`crate::submit`] turns the tasks into messages.

use crate::cell::{Cell, Layout};
use crate::command::Command;
use crate::error::Error;
use crate::function::{Argument, IntoFunction};
use crate::result::{AsyncMapResult, AsyncResult};
use crate::shared::Shared;
use crate::submit::{
    auto_counts, chunk_tasks, encode_arg, plan_chunks, submit, Encoded, NewTask, AUTO_CHUNK_BYTES,
    MAX_PAYLOAD,
};
use protocol::{builtin, CommandOutput, EngineId, TaskId, TaskOptions, TaskRequest, Work};
use serde::{de::DeserializeOwned, Serialize};

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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
