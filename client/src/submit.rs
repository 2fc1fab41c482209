//! Submission: turning tasks into submit messages for the I/O thread.
//!
//! * **Chunk planning.** A map's items are encoded one after another into one buffer
//!   ([`Encoded`]); [`plan_chunks`] cuts them into chunks by count (automatic: about 32 per
//!   engine, [`auto_counts`]) and by bytes, and each chunk becomes one task whose payload is
//!   a msgpack array of its items ([`chunk_tasks`]).
//! * **Submit messages.** [`submit`] packs tasks into as few messages as the limits allow
//!   ([`SUBMIT_MAX_TASKS`], [`SUBMIT_MAX_BYTES`]) and queues them at once. A single task is
//!   queued unencoded instead; the I/O thread merges a burst of them with
//!   [`merge_submits`] just before sending.
//!
//! Views and `imap` build tasks with this module; the I/O thread only merges and sends.

use crate::cell::{Cell, Layout};
use crate::error::Error;
use crate::shared::{Outgoing, Registration, Shared};
use protocol::{FromClient, TaskId, TaskOptions, TaskRequest, Work};
use serde::Serialize;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

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

/// `arg` as msgpack with field names, refused past [`MAX_PAYLOAD`]; `what` names it in errors.
pub(crate) fn encode_arg<A: Serialize + ?Sized>(
    arg: &A,
    what: impl Fn() -> String,
) -> Result<Vec<u8>, Error> {
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

/// Merges each run of consecutive unencoded submits into as few messages as the limits allow
/// (order is kept), and encodes them. A burst of single-task submits then costs the
/// controller one message instead of one each.
pub(crate) fn merge_submits(queue: VecDeque<Outgoing>) -> Result<Vec<Outgoing>, String> {
    let mut out: Vec<Outgoing> = Vec::with_capacity(queue.len());
    let bytes = |m: &Outgoing| m.payloads.iter().map(Vec::len).sum::<usize>();
    for msg in queue {
        if !msg.requests.is_empty() {
            if let Some(last) = out.last_mut().filter(|last| {
                !last.requests.is_empty()
                    && last.requests.len() + msg.requests.len() <= SUBMIT_MAX_TASKS
                    && bytes(last) + bytes(&msg) <= SUBMIT_MAX_BYTES
            }) {
                last.requests.extend(msg.requests);
                last.payloads.extend(msg.payloads);
                last.tasks.extend(msg.tasks);
                continue;
            }
        }
        out.push(msg);
    }
    for msg in out.iter_mut().filter(|m| !m.requests.is_empty()) {
        let tasks = std::mem::take(&mut msg.requests);
        msg.content = protocol::encode(&FromClient::Submit { tasks })
            .map_err(|e| format!("cannot encode a submit message: {e}"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::Expect;
    use protocol::ClientId;

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

    fn single(seq: u64) -> Outgoing {
        Outgoing {
            msg_type: "submit",
            content: Vec::new(),
            requests: vec![TaskRequest {
                id: TaskId::new(ClientId(1), seq),
                work: Work::Call {
                    function: "f".into(),
                },
                options: TaskOptions::default(),
            }],
            payloads: vec![vec![seq as u8]],
            tasks: Vec::new(),
            reply: None,
        }
    }

    fn ids(msg: &Outgoing) -> Vec<TaskId> {
        match protocol::decode::<FromClient>(&msg.content) {
            Ok(FromClient::Submit { tasks }) => tasks.iter().map(|t| t.id).collect(),
            other => panic!("not a submit: {other:?}"),
        }
    }

    #[test]
    fn consecutive_single_submits_become_one_message_in_order() {
        let status = Outgoing {
            msg_type: "status",
            content: protocol::encode(&FromClient::Status).unwrap(),
            requests: Vec::new(),
            payloads: Vec::new(),
            tasks: Vec::new(),
            reply: Some((Expect::Status, None)),
        };
        let queue = VecDeque::from([single(1), single(2), single(3), status, single(4)]);
        let out = merge_submits(queue).unwrap();
        assert_eq!(out.len(), 3);
        let id = |seq| TaskId::new(ClientId(1), seq);
        assert_eq!(ids(&out[0]), [id(1), id(2), id(3)]);
        assert_eq!(out[0].payloads, [vec![1], vec![2], vec![3]]);
        assert_eq!(out[1].msg_type, "status");
        assert_eq!(ids(&out[2]), [id(4)]);
    }
}
