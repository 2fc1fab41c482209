//! Views: how tasks are made, chunked, batched into messages and handed to the I/O thread.

use crate::error::Error;
use crate::io::{Outgoing, Registration, Shared};
use crate::result::{AsyncMapResult, AsyncResult, Cell};
use protocol::{
    CommandOutput, CommandSpec, EngineId, FromClient, TaskId, TaskOptions, TaskRequest, Work,
};
use serde::{de::DeserializeOwned, Serialize};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Largest payload of one task: the message limit less room for the other frames.
pub(crate) const MAX_PAYLOAD: usize = protocol::DEFAULT_MAX_MESSAGE_BYTES - (1 << 20);

/// A submit message is closed once it holds this many tasks…
const SUBMIT_MAX_TASKS: usize = 4096;
/// …or this many payload bytes, so that one message never stalls the controller for long.
const SUBMIT_MAX_BYTES: usize = 1 << 20;

/// Automatic chunking aims at this many chunks per engine: enough to balance uneven items,
/// few enough that per-task overhead vanishes.
const CHUNKS_PER_ENGINE: usize = 32;
/// Automatic chunks are also cut at this size, so large items still spread over engines.
const AUTO_CHUNK_BYTES: usize = 1 << 20;

/// A task about to be submitted.
struct NewTask {
    request: TaskRequest,
    payload: Vec<u8>,
    cell: Arc<Cell>,
    index: u32,
}

/// Encodes `tasks` into as few submit messages as the limits allow and queues them all at
/// once (one wake-up of the I/O thread).
fn submit(shared: &Shared, tasks: Vec<NewTask>) -> Result<(), Error> {
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

/// Writes a msgpack array header for `len` elements.
fn array_header(out: &mut Vec<u8>, len: usize) {
    if len < 16 {
        out.push(0x90 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0xdc);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Splits items (given by the end offsets of their encodings) into chunks: consecutive runs
/// of `counts` items, each run cut further so that no chunk passes `max_bytes` (a chunk always
/// holds at least one item).
fn plan_chunks(
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
fn auto_counts(n: usize, engines: usize) -> Vec<usize> {
    let wanted = if engines == 0 {
        CHUNKS_PER_ENGINE
    } else {
        engines.saturating_mul(CHUNKS_PER_ENGINE)
    };
    let k = wanted.clamp(1, n.max(1));
    (0..k).map(|i| n / k + usize::from(i < n % k)).collect()
}

/// A view whose tasks go to whichever engine the controller's scheduler picks.
///
/// Options chain and return a new view: `client.load_balanced_view().retries(2).chunksize(100)`.
#[derive(Clone)]
pub struct LoadBalancedView {
    shared: Arc<Shared>,
    options: TaskOptions,
    chunksize: usize,
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

    /// Times a task may be re-run on another engine after its engine is lost.
    pub fn retries(mut self, n: u32) -> Self {
        self.options.retries = n;
        self
    }

    /// Run-time limit of each task on its engine (commands are killed at it).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.options.timeout_ms = Some(t.as_millis().min(u64::MAX as u128) as u64);
        self
    }

    /// Items per map task; 0 (the default) chooses: about 32 chunks per engine.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = n;
        self
    }

    /// The task options this view submits with.
    pub fn options(&self) -> &TaskOptions {
        &self.options
    }

    fn one(&self, work: Work, payload: Vec<u8>) -> Result<(Arc<Cell>, TaskId), Error> {
        let id = self.shared.task_ids(1);
        let cell = Cell::new(work.name().to_owned(), vec![1]);
        let task = NewTask {
            request: TaskRequest {
                id,
                work,
                options: self.options.clone(),
            },
            payload,
            cell: cell.clone(),
            index: 0,
        };
        submit(&self.shared, vec![task])?;
        Ok((cell, id))
    }

    /// Runs `function(arg)` on one engine.
    pub fn apply<A: Serialize, R: DeserializeOwned>(
        &self,
        function: &str,
        arg: &A,
    ) -> Result<AsyncResult<R>, Error> {
        let payload = encode_arg(arg, || format!("the argument of {function}"))?;
        let work = Work::Call {
            function: function.to_owned(),
        };
        let (cell, id) = self.one(work, payload)?;
        Ok(AsyncResult::new(cell, id))
    }

    /// Runs `function` on each item, in chunks spread over the engines; results come back in
    /// item order.
    ///
    /// Items are encoded here, one after another into one buffer; each chunk's payload is a
    /// msgpack array of its items, and all chunks go out in as few messages as possible.
    pub fn map<A: Serialize, R: DeserializeOwned>(
        &self,
        function: &str,
        items: impl IntoIterator<Item = A>,
    ) -> Result<AsyncMapResult<R>, Error> {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let start = buf.len();
            rmp_serde::encode::write_named(&mut buf, &item).map_err(|e| Error::Encode {
                what: format!("item {i} of the map of {function}"),
                message: e.to_string(),
            })?;
            if buf.len() - start > MAX_PAYLOAD - 8 {
                return Err(Error::TooLarge {
                    what: format!("item {i} of the map of {function}"),
                    size: buf.len() - start,
                    limit: MAX_PAYLOAD - 8,
                });
            }
            ends.push(buf.len());
        }
        let n = ends.len();
        if n == 0 {
            return Ok(AsyncMapResult::new(None, None, 0));
        }
        let chunks = if self.chunksize == 0 {
            let engines = self.shared.engines.load(Ordering::Relaxed);
            plan_chunks(&ends, auto_counts(n, engines), AUTO_CHUNK_BYTES)
        } else {
            let count = self.chunksize;
            plan_chunks(
                &ends,
                std::iter::repeat_n(count, n.div_ceil(count)),
                MAX_PAYLOAD - 8,
            )
        };
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        let cell = Cell::new(function.to_owned(), sizes);
        let first = self.shared.task_ids(chunks.len());
        let mut tasks = Vec::with_capacity(chunks.len());
        for (i, chunk) in chunks.into_iter().enumerate() {
            let from = if chunk.start == 0 {
                0
            } else {
                ends[chunk.start - 1]
            };
            let to = ends[chunk.end - 1];
            let mut payload = Vec::with_capacity(to - from + 5);
            array_header(&mut payload, chunk.len());
            payload.extend_from_slice(&buf[from..to]);
            tasks.push(NewTask {
                request: TaskRequest {
                    id: TaskId(first.0 + i as u64),
                    work: Work::Map {
                        function: function.to_owned(),
                    },
                    options: self.options.clone(),
                },
                payload,
                cell: cell.clone(),
                index: i as u32,
            });
        }
        submit(&self.shared, tasks)?;
        Ok(AsyncMapResult::new(Some(cell), Some(first), n))
    }

    /// Runs a program on one engine.
    pub fn command(&self, spec: CommandSpec) -> Result<AsyncResult<CommandOutput>, Error> {
        let (cell, id) = self.one(Work::Command(spec), Vec::new())?;
        Ok(AsyncResult::new(cell, id))
    }

    /// [`LoadBalancedView::apply`] with JSON values in and out (for the command line): the
    /// argument travels as msgpack and the result is read back as JSON. Results with binary
    /// data or non-string map keys do not convert and give [`Error::Decode`].
    pub fn apply_json(
        &self,
        function: &str,
        arg: serde_json::Value,
    ) -> Result<AsyncResult<serde_json::Value>, Error> {
        self.apply(function, &arg)
    }

    /// [`LoadBalancedView::map`] with JSON values in and out (see
    /// [`LoadBalancedView::apply_json`]).
    pub fn map_json(
        &self,
        function: &str,
        items: Vec<serde_json::Value>,
    ) -> Result<AsyncMapResult<serde_json::Value>, Error> {
        self.map(function, items)
    }
}

/// A view that runs each task on every one of its engines.
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

impl DirectView {
    pub(crate) fn new(shared: Arc<Shared>, ids: Vec<EngineId>) -> DirectView {
        DirectView { shared, ids }
    }

    /// The engines this view runs on.
    pub fn ids(&self) -> &[EngineId] {
        &self.ids
    }

    /// One task per engine, all in one message; results in the order of the view's ids.
    fn each<R>(&self, work: Work, payload: Vec<u8>) -> Result<Vec<AsyncResult<R>>, Error> {
        let first = self.shared.task_ids(self.ids.len());
        let mut tasks = Vec::with_capacity(self.ids.len());
        let mut results = Vec::with_capacity(self.ids.len());
        for (i, engine) in self.ids.iter().enumerate() {
            let id = TaskId(first.0 + i as u64);
            let cell = Cell::new(work.name().to_owned(), vec![1]);
            tasks.push(NewTask {
                request: TaskRequest {
                    id,
                    work: work.clone(),
                    options: TaskOptions {
                        targets: vec![*engine],
                        ..TaskOptions::default()
                    },
                },
                payload: payload.clone(),
                cell: cell.clone(),
                index: 0,
            });
            results.push(AsyncResult::new(cell, id));
        }
        if !tasks.is_empty() {
            submit(&self.shared, tasks)?;
        }
        Ok(results)
    }

    /// Runs `function(arg)` on each engine of the view.
    pub fn apply<A: Serialize, R: DeserializeOwned>(
        &self,
        function: &str,
        arg: &A,
    ) -> Result<Vec<AsyncResult<R>>, Error> {
        let payload = encode_arg(arg, || format!("the argument of {function}"))?;
        self.each(
            Work::Call {
                function: function.to_owned(),
            },
            payload,
        )
    }

    /// Runs a program on each engine of the view.
    pub fn command(&self, spec: CommandSpec) -> Result<Vec<AsyncResult<CommandOutput>>, Error> {
        self.each(Work::Command(spec), Vec::new())
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
            array_header(&mut header, len);
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
