//! The cluster's client library: connect to a controller, submit tasks, get results.
//!
//! The common path, in ten lines:
//!
//! ```no_run
//! use cluster_client::{stock::NTH_PRIME, Client};
//! use std::time::Duration;
//!
//! let client = Client::connect_env()?;                 // $CLUSTER_CLIENT_FILE, or the profile
//! let view = client.load_balanced_view();              // the scheduler picks engines
//! let primes = view.map(NTH_PRIME, 0..1000)?.get(None)?;  // Vec<u64>, in item order
//! let task = view.apply(NTH_PRIME, 5000)?;             // one task: an AsyncResult<u64>
//! let p = task.get(Some(Duration::from_secs(10)))?;    // or `task.await` in async code
//! let each = client.direct_view(&client.ids()?).apply(NTH_PRIME, 10)?.get(None)?; // every engine
//! # let _ = (primes, p, each);
//! # Ok::<(), cluster_client::Error>(())
//! ```
//!
//! What there is:
//!
//! * **Typed functions.** A [`Function<A, R>`] handle (`pub const SQUARE: Function<i64, i64>
//!   = Function::new("square")`) declared once and shared by the engine that registers the
//!   function and the clients that call it; calls by name stay possible
//!   (`view.apply::<i64, i64>("square", 7)`). Handles of the stock functions are in
//!   [`stock`].
//! * **Views.** [`LoadBalancedView`] (`apply`, `map`, `imap`, `command`, with `targets`,
//!   `retries`, `timeout`, `chunksize`) and [`DirectView`] (`apply` on every engine,
//!   `scatter`/`gather`, `push`/`pull` into each engine's store that registered functions read
//!   through their context, `command`).
//! * **Results.** [`AsyncResult`] and [`AsyncMapResult`]: `ready`, `wait`, `get(timeout)`,
//!   `successful`, `cancel`, `add_done_callback`, [`Metadata`]; both are [`Future`]s. Maps
//!   iterate in item order or completion order; [`Imap`] streams a sequence of any length
//!   with a bounded number of tasks in flight.
//! * **`concurrent.futures`.** [`wait`] with [`ReturnWhen`], [`as_completed`], and
//!   [`Executor`] (`submit`, `map`, `shutdown`).
//! * **Commands.** [`Command`], built like [`std::process::Command`].
//! * **Submit now, wait later.** [`Ledger`] records submitted tasks in a file, so that
//!   another process can wait for them and a restarted controller gets them again (what
//!   `cluster submit` and `cluster wait` do).
//! * **Errors.** One [`Error`] enum; [`Error::is_retryable`] says whether trying again can help.
//!
//! How data flows:
//!
//! ```text
//!  caller threads                      I/O thread (one per Client)        controller
//!  view.apply/map: encode args,  --outbox + wake pipe-->  send Submit  ------->
//!  make a Cell per submission                             register tasks
//!  get / iterators / .await /    <--Cell: Condvar,  ----  fill Cells   <------- Results
//!  callbacks; decode payloads        wakers, callbacks    answer requests <---- Status/Ack
//! ```
//!
//! * A [`Client`] owns one background thread that alone touches its ZeroMQ socket (sockets
//!   are not thread-safe). Callers encode on their own threads and queue ready messages; the
//!   thread sends them, receives results, and hands each to its submission's cell, which
//!   wakes blocked threads, async tasks and callbacks. Decoding happens on the caller's side.
//! * Task ids are made here, without a round trip, from the client id in the controller's
//!   welcome and a counter.
//! * `map` encodes items into chunks (about 32 per engine by default), each chunk one task
//!   whose payload is a msgpack array; many tasks share one submit message.
//! * Nothing waits forever: when the controller goes silent while work is outstanding the
//!   I/O thread probes it, then declares the connection lost, and every wait ends with
//!   [`Error::ConnectionLost`]; dropping the [`Client`] does the same.
//!
//!
//! Where things live:
//!
//! | module | owns |
//! |---|---|
//! | `client` | [`Client`]: connecting, requests, making views |
//! | `view`, `command`, `function` | [`LoadBalancedView`], [`DirectView`], [`Command`], typed handles |
//! | `submit` | chunk planning, and packing tasks into submit messages (views and `imap` use it) |
//! | `shared` | what callers share with the I/O thread: the outbox, the wake-up pipe, reply slots |
//! | `core` | the sans-IO client core: pending tasks and requests, probe and give-up timers, resubmission to a restarted controller (no socket, no clock) |
//! | `io` | the I/O thread: the socket, a thin shell around the core |
//! | `cell`, `result` | where outcomes land, and the [`AsyncResult`]/[`AsyncMapResult`] handles |
//! | `imap`, `wait`, `executor` | streaming maps, `concurrent.futures` helpers |
//! | `fetch`, `requests` | results by id, queue status and abort on connections of their own |
//! | [`ledger`] | the submitted-task ledger file behind `cluster submit` / `cluster wait` |
//! | `objects` | shared objects in the controller: [`RawQueue`], [`Queue`], [`Namespace`], [`Lock`], [`Semaphore`], [`Event`]; lease renewal |
//! | `raw` | raw tasks: payloads in and out as bytes, for clients in other languages (the Python extension) |
//! | `error` | [`Error`], and which of its kinds are worth retrying |
//!
//! [`Future`]: std::future::Future

mod cell;
mod client;
mod command;
mod core;
mod error;
mod executor;
mod fetch;
mod function;
mod imap;
mod io;
pub mod ledger;
mod objects;
mod raw;
mod requests;
mod result;
mod shared;
mod submit;
mod view;
mod wait;

#[cfg(test)]
mod tests;

pub use client::{Client, ClientOptions, CLIENT_FILE_ENV};
pub use command::Command;
pub use error::Error;
pub use executor::Executor;
pub use fetch::{Lookup, ResultStore};
pub use function::{Argument, IntoFunction};
pub use imap::{Imap, ImapUnordered, TARGET_CHUNK};
pub use ledger::{Ledger, LedgerEntry, LedgerError};
pub use objects::{
    Event, Item, Lock, LockGuard, Namespace, ObjectError, Queue, RawQueue, Semaphore,
    DEFAULT_LEASE, MIN_LEASE,
};
pub use protocol::{
    ItemFormat, LeaseId, ObjectInfo, ObjectKind, DEFAULT_NAMESPACE, MAX_OBJECT_NAME,
};
pub use raw::{auto_chunk_counts, RawBatch, RawOutcome, RawPart, RawTask};
pub use requests::{AbortReport, QueueStatus, StoredResult};
pub use result::{AsyncMapResult, AsyncResult, MapIter, Metadata, TaskState, UnorderedIter};
pub use view::{DirectView, LoadBalancedView};
pub use wait::{as_completed, wait, AsCompleted, Completion, ReturnWhen, Waited};

pub use protocol::{
    stock, ClientId, CommandOutput, CommandSpec, EngineId, ErrorKind, Function, FunctionSummary,
    HistoryFilter, HistoryRecord, RecordState, StatusReport, TaskId, TaskOptions, Whoami,
};
