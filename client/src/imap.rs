//! [`Imap`]: a map over a stream of any length with a bounded number of tasks in flight.
//!
//! `map` reads all its items at once, which is right for a list and wrong for a billion-item
//! stream. `imap` reads items only as tasks finish: at most `max_outstanding` chunks are
//! submitted and not yet handed to the caller, so memory stays flat however long the stream.
//! Results come in item order ([`Imap`]) or in completion order ([`ImapUnordered`]).
//!
//! Chunk size adapts when not fixed: the first chunks carry one item each, and every
//! finished chunk's run time on its engine sets the next size (up to four times larger each
//! step) so that a chunk runs for about [`TARGET_CHUNK`]: short items travel by the thousand,
//! long ones one by one, and no engine waits for work meanwhile.

use crate::cell::{deadline, Cell, Layout, Part};
use crate::error::Error;
use crate::function::{Argument, IntoFunction};
use crate::shared::Shared;
use crate::submit::{submit, Encoded, NewTask, AUTO_CHUNK_BYTES, MAX_PAYLOAD};
use crate::view::LoadBalancedView;
use protocol::{Status, TaskOptions, TaskRequest, Work};
use serde::{de::DeserializeOwned, Serialize};

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Run time on the engine that adaptive chunking aims each chunk at.
pub const TARGET_CHUNK: Duration = Duration::from_millis(5);
/// Largest adaptive chunk, in items.
const MAX_AUTO_CHUNK: usize = 16_384;
/// Default bound on chunks in flight, per engine (at least [`MIN_OUTSTANDING`] in all).
const OUTSTANDING_PER_ENGINE: usize = 4;
const MIN_OUTSTANDING: usize = 4;

/// Reads the next item into the buffer; `None` at the end of the stream.
type Source<'a> = Box<dyn FnMut(&mut Encoded) -> Option<Result<(), Error>> + 'a>;

/// One chunk in flight.
struct Flight {
    cell: Arc<Cell>,
    /// Index of its first item in the stream.
    first_item: u64,
}

/// Chunks finished, by sequence number, for unordered iteration.
#[derive(Default)]
struct Arrivals {
    done: Mutex<VecDeque<u64>>,
    cond: Condvar,
}

/// The part shared by both iteration orders: reading the stream, submitting chunks,
/// adapting their size.
struct Pump<'a> {
    shared: Arc<Shared>,
    function: String,
    options: TaskOptions,
    source: Source<'a>,
    exhausted: bool,
    /// An item that failed to encode: reported after the items before it.
    source_error: Option<Error>,
    encoded: Encoded,
    fixed_chunksize: Option<usize>,
    chunksize: usize,
    max_outstanding: usize,
    items_read: u64,
    timeout: Option<Duration>,
}

impl<'a> Pump<'a> {
    /// Moves this pump out, leaving one with an empty stream in its place.
    fn take(&mut self) -> Pump<'a> {
        let husk = Pump {
            shared: self.shared.clone(),
            function: self.function.clone(),
            options: TaskOptions::default(),
            source: Box::new(|_| None),
            exhausted: true,
            source_error: None,
            encoded: Encoded::new(),
            fixed_chunksize: None,
            chunksize: 1,
            max_outstanding: 1,
            items_read: 0,
            timeout: None,
        };
        std::mem::replace(self, husk)
    }

    /// Reads up to one chunk of items; `None` when nothing was read.
    fn read_chunk(&mut self) -> Option<(u64, usize)> {
        if self.exhausted {
            return None;
        }
        self.encoded.clear();
        let want = self.fixed_chunksize.unwrap_or(self.chunksize).max(1);
        let cap = if self.fixed_chunksize.is_some() {
            MAX_PAYLOAD - 8
        } else {
            AUTO_CHUNK_BYTES
        };
        while self.encoded.len() < want && self.encoded.buf.len() < cap {
            match (self.source)(&mut self.encoded) {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    self.source_error = Some(e);
                    self.exhausted = true;
                    break;
                }
                None => {
                    self.exhausted = true;
                    break;
                }
            }
        }
        let n = self.encoded.len();
        if n == 0 {
            return None;
        }
        let first_item = self.items_read;
        self.items_read += n as u64;
        Some((first_item, n))
    }

    /// Submits chunks until `in_flight` reaches the bound or the stream ends; each new chunk
    /// goes to `add`. All of them travel in as few messages as possible.
    fn refill(&mut self, in_flight: usize, mut add: impl FnMut(Flight)) -> Result<(), Error> {
        let mut tasks = Vec::new();
        let mut count = in_flight;
        while count < self.max_outstanding {
            let Some((first_item, n)) = self.read_chunk() else {
                break;
            };
            let id = self.shared.task_ids(1);
            let cell = Cell::new(self.function.clone(), id, vec![n], Layout::Chunks, false);
            tasks.push(NewTask {
                request: TaskRequest {
                    id,
                    work: Work::Map {
                        function: self.function.clone(),
                    },
                    options: self.options.clone(),
                },
                payload: self.encoded.array(&[], 0..n),
                cell: cell.clone(),
                index: 0,
            });
            add(Flight { cell, first_item });
            count += 1;
        }
        if tasks.is_empty() {
            return Ok(());
        }
        submit(&self.shared, tasks)
    }

    /// Learns from a finished chunk how many items the next ones should carry.
    fn adapt(&mut self, part: &Part, items: usize) {
        if self.fixed_chunksize.is_some() || part.status != Status::Ok {
            return;
        }
        let target = TARGET_CHUNK.as_micros() as f64;
        let per_item = (part.elapsed_us as f64 / items.max(1) as f64).max(0.01);
        let wanted = (target / per_item) as usize;
        let grown = self.chunksize.saturating_mul(4);
        self.chunksize = wanted.min(grown).clamp(1, MAX_AUTO_CHUNK);
    }

    /// Takes the finished part out of `flight`'s cell and turns it into items.
    fn harvest<R: DeserializeOwned>(&mut self, flight: &Flight) -> Vec<Result<R, Error>> {
        let items = flight.cell.sizes[0];
        let taken = {
            let mut state = flight.cell.lock();
            if let Some(Some(part)) = state.parts.first() {
                let part = part.clone();
                self.adapt(&part, items);
            }
            crate::result::take_for_stream(&mut state)
        };
        crate::result::items_of(&flight.cell, taken)
    }
}

/// Results of [`LoadBalancedView::imap`] in item order. Iterating reads the stream and keeps
/// at most `max_outstanding` chunks in flight; dropping it cancels what is still in flight.
pub struct Imap<'a, R> {
    pump: Pump<'a>,
    window: VecDeque<Flight>,
    current: std::vec::IntoIter<Result<R, Error>>,
    _type: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Imap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("function", &self.pump.function)
            .field("items_read", &self.pump.items_read)
            .field("in_flight", &self.window.len())
            .field("chunksize", &self.pump.chunksize)
            .finish()
    }
}

impl LoadBalancedView {
    /// Runs `function` on each item of a stream of any length (even endless), keeping a
    /// bounded number of tasks in flight so that memory stays flat; results come in item
    /// order as the iterator is advanced ([`Imap::unordered`] for completion order).
    ///
    /// Nothing is read or submitted until the first `next()`. The chunk size is the view's
    /// [`chunksize`](LoadBalancedView::chunksize), or adapts to the items' run time when
    /// it is 0; the bound is 4 chunks per engine unless set with
    /// [`Imap::max_outstanding`].
    ///
    /// ```no_run
    /// # fn main() -> Result<(), cluster_client::Error> {
    /// use cluster_client::{stock::SUM_RANGE, Client};
    /// let client = Client::connect_env()?;
    /// let view = client.load_balanced_view();
    /// let mut total = 0u64;
    /// for r in view.imap(SUM_RANGE, (0..1_000_000_000u64).map(|i| i % 100)) {
    ///     total = total.wrapping_add(r?);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn imap<'a, A, R>(
        &self,
        function: impl IntoFunction<A, R>,
        items: impl IntoIterator<Item: Argument<A>> + 'a,
    ) -> Imap<'a, R>
    where
        A: Serialize,
    {
        let name = function.function_name().to_owned();
        let mut items = items.into_iter();
        let mut index = 0u64;
        let what_name = name.clone();
        let source: Source<'a> = Box::new(move |encoded: &mut Encoded| {
            let item = items.next()?;
            let i = index;
            index += 1;
            Some(encoded.push(item.argument(), || {
                format!("item {i} of the imap of {what_name}")
            }))
        });
        let engines = self.shared.engines.load(Ordering::Relaxed);
        let pump = Pump {
            shared: self.shared.clone(),
            function: name,
            options: self.options.clone(),
            source,
            exhausted: false,
            source_error: None,
            encoded: Encoded::new(),
            fixed_chunksize: (self.chunksize > 0).then_some(self.chunksize),
            chunksize: 1,
            max_outstanding: engines
                .saturating_mul(OUTSTANDING_PER_ENGINE)
                .max(MIN_OUTSTANDING),
            items_read: 0,
            timeout: None,
        };
        Imap {
            pump,
            window: VecDeque::new(),
            current: Vec::new().into_iter(),
            _type: PhantomData,
        }
    }
}

impl<'a, R> Imap<'a, R> {
    /// At most `n` chunks (tasks) submitted and not yet handed out (at least 1).
    pub fn max_outstanding(mut self, n: usize) -> Self {
        self.pump.max_outstanding = n.max(1);
        self
    }

    /// Waits at most `timeout` for each next result; when it passes, the iterator yields
    /// [`Error::Timeout`] (and may be asked again).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.pump.timeout = Some(timeout);
        self
    }

    /// An imap that reads nothing and yields `error` once.
    pub(crate) fn refused(mut self, error: Error) -> Self {
        self.pump.exhausted = true;
        self.pump.source_error = Some(error);
        self
    }

    /// Items per chunk now (it changes as chunking adapts).
    pub fn current_chunksize(&self) -> usize {
        self.pump.fixed_chunksize.unwrap_or(self.pump.chunksize)
    }

    /// Items read from the stream so far.
    pub fn items_read(&self) -> u64 {
        self.pump.items_read
    }

    /// The same stream with results in completion order, as `(item index, result)`.
    pub fn unordered(mut self) -> ImapUnordered<'a, R> {
        let window = std::mem::take(&mut self.window);
        let arrivals = Arc::new(Arrivals::default());
        let mut flights = HashMap::new();
        let mut next_seq = 0;
        for flight in window {
            watch(&arrivals, next_seq, &flight.cell);
            flights.insert(next_seq, flight);
            next_seq += 1;
        }
        // `Imap` has a `Drop`, so its pump is swapped out rather than moved; the husk left
        // behind has nothing in flight to cancel.
        let pump = self.pump.take();
        ImapUnordered {
            pump,
            flights,
            arrivals,
            next_seq,
            current: Vec::new().into_iter(),
            _type: PhantomData,
        }
    }
}

impl<R: DeserializeOwned> Iterator for Imap<'_, R> {
    type Item = Result<R, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            let window = &mut self.window;
            if let Err(e) = self.pump.refill(window.len(), |f| window.push_back(f)) {
                return Some(Err(e));
            }
            let Some(head) = self.window.front() else {
                return self.pump.source_error.take().map(Err);
            };
            let done = {
                let (state, done) = head
                    .cell
                    .wait_until(deadline(self.pump.timeout), |s| s.finished());
                drop(state);
                done
            };
            if !done {
                return Some(Err(Error::Timeout {
                    what: format!(
                        "item {} of the imap of {} (task {})",
                        head.first_item, self.pump.function, head.cell.first
                    ),
                }));
            }
            let head = self.window.pop_front()?;
            self.current = self.pump.harvest(&head).into_iter();
        }
    }
}

impl<R> Drop for Imap<'_, R> {
    fn drop(&mut self) {
        cancel_all(&self.pump.shared, self.window.drain(..));
    }
}

/// Cancels chunks still in flight without waiting: the controller is asked to drop those
/// not started, and results that still come are ignored.
fn cancel_all(shared: &Shared, flights: impl Iterator<Item = Flight>) {
    let mut ids = Vec::new();
    for flight in flights {
        if flight
            .cell
            .cancel([0], "the imap it belonged to was dropped")
            > 0
        {
            ids.push(flight.cell.first);
        }
    }
    shared.abort_quietly(ids);
}

fn watch(arrivals: &Arc<Arrivals>, seq: u64, cell: &Cell) {
    let arrivals = arrivals.clone();
    cell.on_finish(Box::new(move || {
        arrivals
            .done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(seq);
        arrivals.cond.notify_all();
    }));
}

/// Results of an [`Imap`] in completion order, as `(item index, result)`; made by
/// [`Imap::unordered`]. The same bound on chunks in flight holds.
pub struct ImapUnordered<'a, R> {
    pump: Pump<'a>,
    flights: HashMap<u64, Flight>,
    arrivals: Arc<Arrivals>,
    next_seq: u64,
    current: std::vec::IntoIter<(u64, Result<R, Error>)>,
    _type: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for ImapUnordered<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapUnordered")
            .field("function", &self.pump.function)
            .field("items_read", &self.pump.items_read)
            .field("in_flight", &self.flights.len())
            .finish()
    }
}

impl<R: DeserializeOwned> Iterator for ImapUnordered<'_, R> {
    type Item = (u64, Result<R, Error>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            let (flights, arrivals, next_seq) =
                (&mut self.flights, &self.arrivals, &mut self.next_seq);
            let refilled = self.pump.refill(flights.len(), |flight| {
                watch(arrivals, *next_seq, &flight.cell);
                flights.insert(*next_seq, flight);
                *next_seq += 1;
            });
            if let Err(e) = refilled {
                return Some((self.pump.items_read, Err(e)));
            }
            if self.flights.is_empty() {
                return self
                    .pump
                    .source_error
                    .take()
                    .map(|e| (self.pump.items_read, Err(e)));
            }
            let seq = {
                let deadline = deadline(self.pump.timeout);
                let mut done = self.arrivals.done.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(seq) = done.pop_front() {
                        break Some(seq);
                    }
                    match deadline {
                        None => {
                            done = self
                                .arrivals
                                .cond
                                .wait(done)
                                .unwrap_or_else(|p| p.into_inner())
                        }
                        Some(deadline) => {
                            let now = std::time::Instant::now();
                            if now >= deadline {
                                break None;
                            }
                            done = self
                                .arrivals
                                .cond
                                .wait_timeout(done, deadline - now)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                    }
                }
            };
            let Some(seq) = seq else {
                return Some((
                    u64::MAX,
                    Err(Error::Timeout {
                        what: format!(
                            "the next result of the imap of {} ({} chunks in flight)",
                            self.pump.function,
                            self.flights.len()
                        ),
                    }),
                ));
            };
            let Some(flight) = self.flights.remove(&seq) else {
                continue;
            };
            let first = flight.first_item;
            self.current = self
                .pump
                .harvest(&flight)
                .into_iter()
                .enumerate()
                .map(|(i, r)| (first + i as u64, r))
                .collect::<Vec<_>>()
                .into_iter();
        }
    }
}

impl<R> Drop for ImapUnordered<'_, R> {
    fn drop(&mut self) {
        cancel_all(&self.pump.shared, self.flights.drain().map(|(_, f)| f));
    }
}
