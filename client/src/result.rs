//! Result handles: [`AsyncResult`] for one task, [`AsyncMapResult`] for many (a map's chunks,
//! or one task per engine of a direct view), their metadata and their iterators.
//!
//! Both wrap a [`Cell`] that the I/O thread fills with raw payloads; decoding happens on the
//! caller's thread. Each can be waited on in every style: blocking (`wait`, `get`), polling
//! (`ready`, `progress`), callbacks (`add_done_callback`), `.await` (both implement
//! [`Future`]), and for maps, iteration in item order or in completion order.

use crate::cell::{deadline, part_error, Cell, CellState, Layout, Lost, Part};
use crate::error::Error;
use crate::shared::Shared;
use crate::wait::Completion;
use protocol::{CommandOutput, EngineId, ErrorKind, Status, TaskId};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

fn decode<T: DeserializeOwned>(payload: &[u8], what: impl FnOnce() -> String) -> Result<T, Error> {
    rmp_serde::from_slice(payload).map_err(|e| Error::Decode {
        what: what(),
        message: e.to_string(),
    })
}

/// The values of a successful part, checked against the number of items it carries.
fn part_values<R: DeserializeOwned>(
    cell: &Cell,
    index: usize,
    payload: &[u8],
) -> Result<Vec<R>, Error> {
    let what = || format!("the result of task {}", cell.task_id(index));
    match cell.layout {
        Layout::Values => Ok(vec![decode(payload, what)?]),
        Layout::Chunks => {
            let values: Vec<R> = decode(payload, what)?;
            let expected = cell.sizes.get(index).copied().unwrap_or(0);
            if values.len() != expected {
                return Err(Error::Decode {
                    what: what(),
                    message: format!("{} values for {expected} items", values.len()),
                });
            }
            Ok(values)
        }
    }
}

/// What is left of a part once it is taken out of the cell for decoding.
pub(crate) enum Taken {
    Ok(Arc<Vec<u8>>),
    Failed(protocol::TaskError),
    /// Never filled: the connection ended.
    Lost(Lost),
    /// An iterator already consumed it.
    Consumed,
}

/// Takes (or, with `keep`, copies the handle of) part `index` under the lock.
fn take_part(state: &mut CellState, index: usize, keep: bool) -> Taken {
    match state.parts.get_mut(index).and_then(Option::as_mut) {
        Some(Part {
            status: Status::Err(err),
            ..
        }) => Taken::Failed(err.clone()),
        Some(part) => {
            let payload = if keep {
                part.payload.clone()
            } else {
                part.payload.take()
            };
            payload.map_or(Taken::Consumed, Taken::Ok)
        }
        None => match &state.lost {
            Some(lost) => Taken::Lost(lost.clone()),
            // Callers only take parts that are filled or lost.
            None => Taken::Consumed,
        },
    }
}

/// One result per item of part `index`, whatever happened to it.
fn part_items<R: DeserializeOwned>(
    cell: &Cell,
    index: usize,
    taken: Taken,
) -> Vec<Result<R, Error>> {
    let n = cell.sizes.get(index).copied().unwrap_or(1);
    let each = |make: &dyn Fn() -> Error| (0..n).map(|_| Err(make())).collect();
    match taken {
        Taken::Ok(payload) => match part_values(cell, index, &payload) {
            Ok(values) => values.into_iter().map(Ok).collect(),
            Err(Error::Decode { what, message }) => each(&|| Error::Decode {
                what: what.clone(),
                message: message.clone(),
            }),
            Err(other) => vec![Err(other)],
        },
        Taken::Failed(err) => each(&|| part_error(cell, index, &err)),
        Taken::Lost(lost) => each(&|| lost.error()),
        Taken::Consumed => each(&|| consumed(cell, index)),
    }
}

fn consumed(cell: &Cell, index: usize) -> Error {
    Error::Decode {
        what: format!("the result of task {}", cell.task_id(index)),
        message: "it was already taken by an iterator over this map".into(),
    }
}

/// Takes the single part of a one-part cell out for streaming (the payload is freed from
/// the cell).
pub(crate) fn take_for_stream(state: &mut CellState) -> Taken {
    take_part(state, 0, false)
}

/// The items of a one-part cell's taken part.
pub(crate) fn items_of<R: DeserializeOwned>(cell: &Cell, taken: Taken) -> Vec<Result<R, Error>> {
    part_items(cell, 0, taken)
}

const CANCELLED: &str = "cancelled by the client before it started";

/// Cancels every unfinished task of `cells` that has not started; returns how many.
///
/// The controller is asked first (one request for all of them) and only tasks it aborted,
/// or no longer knows, end here; a task already running goes on and keeps its result. If the
/// controller cannot be asked (an older controller, a lost connection, or a caller on the
/// I/O thread, which must not wait), every unfinished task ends here at once, and results
/// that still arrive are ignored.
pub(crate) fn cancel_cells(shared: &Shared, cells: &[&Cell]) -> usize {
    let mut pending: Vec<(usize, usize, TaskId)> = Vec::new();
    for (c, cell) in cells.iter().enumerate() {
        let state = cell.lock();
        if state.lost.is_some() {
            continue;
        }
        for (i, part) in state.parts.iter().enumerate() {
            if part.is_none() {
                pending.push((c, i, cell.task_id(i)));
            }
        }
    }
    if pending.is_empty() {
        return 0;
    }
    let ids: Vec<TaskId> = pending.iter().map(|p| p.2).collect();
    let (chosen, confirmed) = if crate::cell::on_io_thread() {
        shared.abort_quietly(ids);
        (pending, false)
    } else {
        match shared.abort(ids) {
            Ok(answer) => {
                let gone: std::collections::HashSet<TaskId> =
                    answer.aborted.into_iter().chain(answer.unknown).collect();
                let chosen: Vec<_> = pending
                    .into_iter()
                    .filter(|p| gone.contains(&p.2))
                    .collect();
                (chosen, true)
            }
            Err(e) => {
                tracing::debug!("cancelling on the client side only: {e}");
                (pending, false)
            }
        }
    };
    let mut ended = 0;
    for (c, cell) in cells.iter().enumerate() {
        let indices = chosen.iter().filter(|p| p.0 == c).map(|p| p.1);
        ended += cell.cancel(indices, CANCELLED);
    }
    // The controller's own `aborted` outcome may have landed first; either way those tasks
    // are cancelled.
    if confirmed {
        chosen.len()
    } else {
        ended
    }
}

/// Asks the controller to abort the unfinished tasks of `cell`; returns how many it
/// aborted (tasks already running are not).
fn abort_cell(shared: &Shared, cell: &Cell) -> Result<usize, Error> {
    let ids: Vec<TaskId> = {
        let state = cell.lock();
        (0..state.parts.len())
            .filter(|&i| state.parts[i].is_none())
            .map(|i| cell.task_id(i))
            .collect()
    };
    if ids.is_empty() {
        return Ok(0);
    }
    let answer = shared.abort(ids)?;
    let aborted: std::collections::HashSet<TaskId> = answer.aborted.into_iter().collect();
    let indices = (0..cell.sizes.len()).filter(|&i| aborted.contains(&cell.task_id(i)));
    cell.cancel(indices, CANCELLED);
    Ok(aborted.len())
}

/// How a task is doing, in [`Metadata`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Queued or running; no outcome yet.
    Pending,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error of this kind ([`ErrorKind::Aborted`] when cancelled).
    Failed(ErrorKind),
    /// The connection to the controller ended before the outcome arrived.
    ConnectionLost,
}

/// What is known about one task: where and when it ran, and for command tasks what it
/// printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The task's id.
    pub task: TaskId,
    /// The function called, or the program run.
    pub function: String,
    /// Items the task carries (map chunks carry several; everything else one).
    pub items: usize,
    /// How it is doing.
    pub state: TaskState,
    /// The engine that ran it (`None` until it finished, or when it never ran).
    pub engine: Option<EngineId>,
    /// When this client submitted it (this machine's clock).
    pub submitted: SystemTime,
    /// When it started on its engine (the engine's clock).
    pub started: Option<SystemTime>,
    /// When it ended on its engine (the engine's clock): `started + elapsed`.
    pub completed: Option<SystemTime>,
    /// When its outcome reached this client (this machine's clock).
    pub received: Option<SystemTime>,
    /// Run time on the engine.
    pub elapsed: Option<Duration>,
    /// Standard output of a finished command task.
    pub stdout: Option<Vec<u8>>,
    /// Standard error of a finished command task.
    pub stderr: Option<Vec<u8>>,
}

fn metadata(cell: &Cell, state: &CellState, index: usize) -> Metadata {
    let mut m = Metadata {
        task: cell.task_id(index),
        function: cell.name.clone(),
        items: cell.sizes.get(index).copied().unwrap_or(1),
        state: if state.lost.is_some() {
            TaskState::ConnectionLost
        } else {
            TaskState::Pending
        },
        engine: None,
        submitted: cell.submitted,
        started: None,
        completed: None,
        received: None,
        elapsed: None,
        stdout: None,
        stderr: None,
    };
    let Some(Some(part)) = state.parts.get(index) else {
        return m;
    };
    m.state = match &part.status {
        Status::Ok => TaskState::Succeeded,
        Status::Err(e) => TaskState::Failed(e.kind),
    };
    m.engine = part.engine;
    m.received = Some(part.received);
    if part.started_us > 0 {
        let started = SystemTime::UNIX_EPOCH + Duration::from_micros(part.started_us);
        let elapsed = Duration::from_micros(part.elapsed_us);
        m.started = Some(started);
        m.completed = Some(started + elapsed);
        m.elapsed = Some(elapsed);
    }
    if cell.command {
        if let (Status::Ok, Some(payload)) = (&part.status, &part.payload) {
            if let Ok(out) = rmp_serde::from_slice::<CommandOutput>(payload) {
                m.stdout = Some(out.stdout);
                m.stderr = Some(out.stderr);
            }
        }
    }
    m
}

/// Whether a finished cell succeeded everywhere; `None` while unfinished.
fn successful(state: &CellState) -> Option<bool> {
    if !state.finished() {
        return None;
    }
    Some(state.failures == 0 && state.lost.is_none())
}

/// The pending result of one task, typed by what the function returns.
///
/// Wait for it in whichever style suits: [`get`](AsyncResult::get) with a timeout,
/// `.await` (it is a [`Future`]), [`add_done_callback`](AsyncResult::add_done_callback), or
/// the [`crate::wait`] and [`crate::as_completed`] helpers. Clones share the same task.
///
/// It never waits forever by itself: when the connection to the controller ends (the
/// controller stops answering, or the [`crate::Client`] is dropped), waits end and `get`
/// returns [`Error::ConnectionLost`].
pub struct AsyncResult<R> {
    cell: Arc<Cell>,
    shared: Arc<Shared>,
    _type: PhantomData<fn() -> R>,
}

impl<R> Clone for AsyncResult<R> {
    fn clone(&self) -> Self {
        AsyncResult {
            cell: self.cell.clone(),
            shared: self.shared.clone(),
            _type: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("id", &self.id())
            .field("function", &self.cell.name)
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R> AsyncResult<R> {
    pub(crate) fn new(cell: Arc<Cell>, shared: Arc<Shared>) -> AsyncResult<R> {
        AsyncResult {
            cell,
            shared,
            _type: PhantomData,
        }
    }

    pub(crate) fn cell(&self) -> &Arc<Cell> {
        &self.cell
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.cell.first
    }

    /// True when the task has finished (or can no longer finish: connection lost).
    pub fn ready(&self) -> bool {
        self.cell.lock().finished()
    }

    /// `Some(true)` when it finished successfully, `Some(false)` when it failed (or was
    /// cancelled, or the connection was lost), `None` while it is still pending.
    pub fn successful(&self) -> Option<bool> {
        successful(&self.cell.lock())
    }

    /// Waits up to `timeout` (`None`: until it ends); true if the task is done.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        self.cell
            .wait_until(deadline(timeout), CellState::finished)
            .1
    }

    /// Waits up to `timeout` (`None`: until it ends) and decodes the result. It can be
    /// called again (each call decodes afresh).
    ///
    /// Errors: [`Error::Timeout`] naming the task when `timeout` passes first;
    /// [`Error::ConnectionLost`]; the task's own failure ([`Error::Remote`],
    /// [`Error::EngineLost`], [`Error::UnknownFunction`], [`Error::Aborted`]);
    /// [`Error::Decode`] when the result is not an `R`.
    pub fn get(&self, timeout: Option<Duration>) -> Result<R, Error>
    where
        R: DeserializeOwned,
    {
        let (mut state, done) = self.cell.wait_until(deadline(timeout), CellState::finished);
        if !done {
            return Err(self.timeout_error());
        }
        let taken = take_part(&mut state, 0, true);
        drop(state);
        part_items(&self.cell, 0, taken)
            .pop()
            .unwrap_or_else(|| Err(consumed(&self.cell, 0)))
    }

    fn timeout_error(&self) -> Error {
        let what = if crate::cell::on_io_thread() {
            format!(
                "task {} (a done callback cannot wait: it runs on the client's I/O thread, which delivers results)",
                self.id()
            )
        } else {
            format!("task {}", self.id())
        };
        Error::Timeout { what }
    }

    /// Cancels the task if it has not started, like `concurrent.futures.Future.cancel`: the
    /// controller drops it from its queue, waits on it end at once with [`Error::Aborted`],
    /// and true is returned. False when it is already running or finished (it then runs to
    /// its end). If the controller cannot be asked (an older one, or from inside a done
    /// callback), the task is cancelled here only: it may still run, and its result is
    /// ignored.
    pub fn cancel(&self) -> bool {
        cancel_cells(&self.shared, &[&self.cell]) > 0
    }

    /// Asks the controller to abort the task if it has not started (IPyparallel's `abort`);
    /// `Ok(true)` when it was aborted, `Ok(false)` when it is running or done. Errors when
    /// the controller cannot be asked ([`Error::Refused`] by a controller without abort,
    /// [`Error::Timeout`], [`Error::ConnectionLost`]).
    pub fn abort(&self) -> Result<bool, Error> {
        Ok(abort_cell(&self.shared, &self.cell)? > 0)
    }

    /// True when [`cancel`](AsyncResult::cancel) ended it (or the controller aborted it).
    pub fn cancelled(&self) -> bool {
        matches!(self.metadata().state, TaskState::Failed(ErrorKind::Aborted))
    }

    /// Runs `f` with this result once it is done (finished, failed, cancelled, or the
    /// connection was lost): at once on this thread if it already is, else on the client's
    /// I/O thread. `f` must be quick and must not wait for other tasks (their results are
    /// delivered by that same thread; a wait there returns a timeout error at once).
    pub fn add_done_callback(&self, f: impl FnOnce(&AsyncResult<R>) + Send + 'static)
    where
        R: 'static,
    {
        let this = self.clone();
        self.cell.on_finish(Box::new(move || f(&this)));
    }

    /// Where and when it ran (and, for a command task, what it printed).
    pub fn metadata(&self) -> Metadata {
        metadata(&self.cell, &self.cell.lock(), 0)
    }

    /// The engine that ran the task, once it is done (`None` before, or if it never ran).
    pub fn engine(&self) -> Option<EngineId> {
        self.cell.lock().parts.first()?.as_ref()?.engine
    }

    /// How long the task ran on its engine, once it is done.
    pub fn elapsed(&self) -> Option<Duration> {
        let state = self.cell.lock();
        let part = state.parts.first()?.as_ref()?;
        Some(Duration::from_micros(part.elapsed_us))
    }
}

impl<R: DeserializeOwned> Future for AsyncResult<R> {
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.cell.poll_ready(cx.waker(), CellState::finished) {
            Poll::Ready(self.get(Some(Duration::ZERO)))
        } else {
            Poll::Pending
        }
    }
}

impl<R> Completion for AsyncResult<R> {
    fn ready(&self) -> bool {
        AsyncResult::ready(self)
    }

    fn successful(&self) -> Option<bool> {
        AsyncResult::successful(self)
    }

    fn on_done(&self, f: Box<dyn FnOnce() + Send>) {
        self.cell.on_finish(f);
    }
}

/// The pending results of many tasks that make one list: the chunks of a map (one value
/// per item, in item order) or one task per engine of a direct view (one value per engine,
/// in the view's order).
///
/// Get everything with [`get`](AsyncMapResult::get) (or `.await`), or iterate to see values
/// as they arrive: in item order (`for r in result`) or in completion order
/// ([`unordered`](AsyncMapResult::unordered)). Iterating consumes the handle and frees each
/// chunk once its values are handed out.
pub struct AsyncMapResult<R> {
    cell: Arc<Cell>,
    shared: Arc<Shared>,
    _type: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for AsyncMapResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncMapResult")
            .field("function", &self.cell.name)
            .field("first_task", &self.cell.first)
            .field("len", &self.len())
            .field("progress", &self.progress())
            .finish()
    }
}

impl<R> AsyncMapResult<R> {
    pub(crate) fn new(cell: Arc<Cell>, shared: Arc<Shared>) -> Self {
        AsyncMapResult {
            cell,
            shared,
            _type: PhantomData,
        }
    }

    fn share(&self) -> Self {
        AsyncMapResult::new(self.cell.clone(), self.shared.clone())
    }

    /// Number of items (and of results).
    pub fn len(&self) -> usize {
        self.cell.items()
    }

    /// True when there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of the first task (task `i` has the `i`-th following id); `None` when there
    /// are no tasks.
    pub fn first_task(&self) -> Option<TaskId> {
        (!self.cell.sizes.is_empty()).then_some(self.cell.first)
    }

    /// The ids of all tasks, in order.
    pub fn task_ids(&self) -> Vec<TaskId> {
        (0..self.tasks()).map(|i| self.cell.task_id(i)).collect()
    }

    /// Number of tasks (chunks) the items travel in.
    pub fn tasks(&self) -> usize {
        self.cell.sizes.len()
    }

    /// True when every task has finished (or can no longer finish: connection lost).
    pub fn ready(&self) -> bool {
        self.cell.lock().finished()
    }

    /// `Some(true)` when every task succeeded, `Some(false)` when all finished and some
    /// failed (or the connection was lost), `None` while tasks are pending.
    pub fn successful(&self) -> Option<bool> {
        successful(&self.cell.lock())
    }

    /// Waits up to `timeout` (`None`: until it ends); true if every task is done.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        self.cell
            .wait_until(deadline(timeout), CellState::finished)
            .1
    }

    /// (items done, total items); failed chunks count as done.
    pub fn progress(&self) -> (usize, usize) {
        (self.cell.lock().items_done, self.len())
    }

    /// Waits up to `timeout` (`None`: until it ends) and returns the results in item order.
    ///
    /// The first error wins: as soon as a task fails, `get` returns the error of the
    /// earliest failed task received so far, without waiting for the others (use
    /// [`get_return_exceptions`](AsyncMapResult::get_return_exceptions) for every item's
    /// own outcome). [`Error::Timeout`] names the tasks and how far they got.
    pub fn get(&self, timeout: Option<Duration>) -> Result<Vec<R>, Error>
    where
        R: DeserializeOwned,
    {
        let (mut state, done) = self.cell.wait_until(deadline(timeout), CellState::settled);
        if !done {
            return Err(Error::Timeout {
                what: self.describe(state.items_done),
            });
        }
        if state.failures > 0 {
            let failed = state.parts.iter().enumerate().find_map(|(i, p)| match p {
                Some(Part {
                    status: Status::Err(err),
                    ..
                }) => Some((i, err.clone())),
                _ => None,
            });
            if let Some((index, err)) = failed {
                return Err(part_error(&self.cell, index, &err));
            }
        }
        if let Some(lost) = &state.lost {
            return Err(lost.error());
        }
        let payloads: Vec<Taken> = (0..self.tasks())
            .map(|i| take_part(&mut state, i, true))
            .collect();
        drop(state);
        let mut out = Vec::with_capacity(self.len());
        for (index, taken) in payloads.into_iter().enumerate() {
            match taken {
                Taken::Ok(payload) => out.extend(part_values(&self.cell, index, &payload)?),
                _ => return Err(consumed(&self.cell, index)),
            }
        }
        Ok(out)
    }

    /// Waits up to `timeout` for every task and returns each item's own outcome, in item
    /// order (like `return_exceptions=True`): a value, or the error of the task that carried
    /// it. Only the wait itself can fail ([`Error::Timeout`]).
    ///
    /// A map chunk fails as a whole (its engine stops at the first failing item and says
    /// which), so every item of a failed chunk carries that error; use `chunksize(1)` to
    /// isolate failures item by item.
    pub fn get_return_exceptions(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Vec<Result<R, Error>>, Error>
    where
        R: DeserializeOwned,
    {
        let (mut state, done) = self.cell.wait_until(deadline(timeout), CellState::finished);
        if !done {
            return Err(Error::Timeout {
                what: self.describe(state.items_done),
            });
        }
        let taken: Vec<Taken> = (0..self.tasks())
            .map(|i| take_part(&mut state, i, true))
            .collect();
        drop(state);
        let mut out = Vec::with_capacity(self.len());
        for (index, t) in taken.into_iter().enumerate() {
            out.extend(part_items(&self.cell, index, t));
        }
        Ok(out)
    }

    /// Cancels every task that has not started (see [`AsyncResult::cancel`]); returns how
    /// many were cancelled.
    pub fn cancel(&self) -> usize {
        cancel_cells(&self.shared, &[&self.cell])
    }

    /// Asks the controller to abort every task that has not started (see
    /// [`AsyncResult::abort`]); returns how many it aborted.
    pub fn abort(&self) -> Result<usize, Error> {
        abort_cell(&self.shared, &self.cell)
    }

    /// Runs `f` with this handle once every task is done (see
    /// [`AsyncResult::add_done_callback`] for where it runs and what it must not do).
    pub fn add_done_callback(&self, f: impl FnOnce(&AsyncMapResult<R>) + Send + 'static)
    where
        R: 'static,
    {
        let this = self.share();
        self.cell.on_finish(Box::new(move || f(&this)));
    }

    /// Each task's metadata, in task order.
    pub fn metadata(&self) -> Vec<Metadata> {
        let state = self.cell.lock();
        (0..self.tasks())
            .map(|i| metadata(&self.cell, &state, i))
            .collect()
    }

    /// An iterator over the results in item order, each yielded as soon as its task is in.
    pub fn iter_ordered(self) -> MapIter<R> {
        MapIter {
            cell: self.cell,
            next_part: 0,
            next_item: 0,
            current: Vec::new().into_iter(),
            timeout: None,
        }
    }

    /// An iterator over `(item index, result)` in the order tasks finish.
    pub fn unordered(self) -> UnorderedIter<R> {
        let mut offsets = Vec::with_capacity(self.tasks());
        let mut at = 0;
        for &n in &self.cell.sizes {
            offsets.push(at);
            at += n;
        }
        UnorderedIter {
            cell: self.cell,
            offsets,
            cursor: 0,
            lost_parts: None,
            current: Vec::new().into_iter(),
            timeout: None,
        }
    }

    fn describe(&self, done: usize) -> String {
        let tasks = self.tasks();
        let range = match tasks {
            0 => "no tasks".to_owned(),
            1 => format!("task {}", self.cell.first),
            _ => format!("tasks {}…{}", self.cell.first, self.cell.task_id(tasks - 1)),
        };
        match self.cell.layout {
            Layout::Chunks => format!(
                "map of {} over {} items ({range}; {done} items done)",
                self.cell.name,
                self.len()
            ),
            Layout::Values => format!(
                "{} tasks of {} ({range}; {done} done)",
                self.len(),
                self.cell.name
            ),
        }
    }
}

impl<R: DeserializeOwned> Future for AsyncMapResult<R> {
    type Output = Result<Vec<R>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.cell.poll_ready(cx.waker(), CellState::settled) {
            Poll::Ready(self.get(Some(Duration::ZERO)))
        } else {
            Poll::Pending
        }
    }
}

impl<R> Completion for AsyncMapResult<R> {
    fn ready(&self) -> bool {
        AsyncMapResult::ready(self)
    }

    fn successful(&self) -> Option<bool> {
        AsyncMapResult::successful(self)
    }

    fn on_done(&self, f: Box<dyn FnOnce() + Send>) {
        self.cell.on_finish(f);
    }
}

impl<R: DeserializeOwned> IntoIterator for AsyncMapResult<R> {
    type Item = Result<R, Error>;
    type IntoIter = MapIter<R>;

    fn into_iter(self) -> MapIter<R> {
        self.iter_ordered()
    }
}

/// Results of a map in item order, each as soon as its task is in; made by iterating an
/// [`AsyncMapResult`]. Every item yields once: a value, or the error of its task.
pub struct MapIter<R> {
    cell: Arc<Cell>,
    next_part: usize,
    next_item: usize,
    current: std::vec::IntoIter<Result<R, Error>>,
    timeout: Option<Duration>,
}

impl<R> std::fmt::Debug for MapIter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapIter")
            .field("function", &self.cell.name)
            .field("next_item", &self.next_item)
            .finish()
    }
}

impl<R> MapIter<R> {
    /// Waits at most `timeout` for each next result; when it passes, the iterator yields
    /// [`Error::Timeout`] (and may be asked again).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<R: DeserializeOwned> Iterator for MapIter<R> {
    type Item = Result<R, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.next() {
                self.next_item += 1;
                return Some(item);
            }
            let index = self.next_part;
            if index >= self.cell.sizes.len() {
                return None;
            }
            let (mut state, done) = self.cell.wait_until(deadline(self.timeout), |s| {
                s.parts[index].is_some() || s.lost.is_some()
            });
            if !done {
                return Some(Err(Error::Timeout {
                    what: format!(
                        "item {} of {} (task {})",
                        self.next_item,
                        self.cell.name,
                        self.cell.task_id(index)
                    ),
                }));
            }
            let taken = take_part(&mut state, index, false);
            drop(state);
            self.current = part_items(&self.cell, index, taken).into_iter();
            self.next_part += 1;
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.cell.items() - self.next_item;
        (left, Some(left))
    }
}

/// `(item index, result)` pairs of a map in the order its tasks finish; made by
/// [`AsyncMapResult::unordered`].
pub struct UnorderedIter<R> {
    cell: Arc<Cell>,
    offsets: Vec<usize>,
    /// Position in the cell's arrival list.
    cursor: usize,
    /// Parts that will never arrive (connection lost), still to report.
    lost_parts: Option<std::vec::IntoIter<usize>>,
    current: std::vec::IntoIter<(usize, Result<R, Error>)>,
    timeout: Option<Duration>,
}

impl<R> std::fmt::Debug for UnorderedIter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnorderedIter")
            .field("function", &self.cell.name)
            .field("tasks_seen", &self.cursor)
            .finish()
    }
}

impl<R> UnorderedIter<R> {
    /// Waits at most `timeout` for each next result; when it passes, the iterator yields
    /// `(usize::MAX, Err(Error::Timeout))` (and may be asked again).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn load(&mut self, index: usize, taken: Taken)
    where
        R: DeserializeOwned,
    {
        let offset = self.offsets[index];
        self.current = part_items(&self.cell, index, taken)
            .into_iter()
            .enumerate()
            .map(|(i, r)| (offset + i, r))
            .collect::<Vec<_>>()
            .into_iter();
    }
}

impl<R: DeserializeOwned> Iterator for UnorderedIter<R> {
    type Item = (usize, Result<R, Error>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            if let Some(parts) = &mut self.lost_parts {
                let index = parts.next()?;
                let lost = self.cell.lock().lost.clone();
                let taken = lost.map_or(Taken::Consumed, Taken::Lost);
                self.load(index, taken);
                continue;
            }
            if self.cursor >= self.cell.sizes.len() {
                return None;
            }
            let cursor = self.cursor;
            let (mut state, done) = self.cell.wait_until(deadline(self.timeout), |s| {
                s.arrivals.len() > cursor || s.lost.is_some()
            });
            if !done {
                return Some((
                    usize::MAX,
                    Err(Error::Timeout {
                        what: format!(
                            "the next result of {} ({} of {} tasks in)",
                            self.cell.name,
                            cursor,
                            self.cell.sizes.len()
                        ),
                    }),
                ));
            }
            if let Some(&index) = state.arrivals.get(cursor) {
                self.cursor += 1;
                let taken = take_part(&mut state, index as usize, false);
                drop(state);
                self.load(index as usize, taken);
            } else {
                // Lost: whatever has not arrived never will.
                let missing: Vec<usize> = (0..state.parts.len())
                    .filter(|&i| state.parts[i].is_none())
                    .collect();
                self.cursor = self.cell.sizes.len();
                self.lost_parts = Some(missing.into_iter());
            }
        }
    }
}
