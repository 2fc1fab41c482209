//! The cluster's client library: connect to a controller, submit tasks, wait for results.
//!
//! ```no_run
//! use cluster_client::Client;
//! use std::time::Duration;
//!
//! let client = Client::connect_profile("default")?;
//! let view = client.load_balanced_view();
//! let primes: Vec<u64> = view.map("nth_prime", 0..1000u64)?.get(None)?;
//! let sum: u64 = view.apply("sum_range", &(0u64, 100u64))?.get(Some(Duration::from_secs(5)))?;
//! let each: Vec<()> = client
//!     .direct_view(&client.ids()?)
//!     .apply::<_, ()>("noop", &())?
//!     .into_iter()
//!     .map(|r| r.get(None))
//!     .collect::<Result<_, _>>()?;
//! # let _ = (primes, sum, each);
//! # Ok::<(), cluster_client::Error>(())
//! ```
//!
//! How data flows:
//!
//! ```text
//!  caller threads                      I/O thread (one per Client)        controller
//!  view.apply/map: encode args,  --outbox + wake pipe-->  send Submit  ------->
//!  make a Cell per submission                             register tasks
//!  AsyncResult::get: wait on the  <--Cell + Condvar----   fill Cells   <------- Results
//!  Cell, decode the payload                               answer requests <---- Status/Ack
//! ```
//!
//! * A [`Client`] owns one background thread that alone touches its ZeroMQ socket (sockets
//!   are not thread-safe). Callers encode on their own threads and queue ready messages; the
//!   thread sends them, receives results, and wakes waiters through per-submission cells.
//! * Task ids are made here, without a round trip, from the client id in the controller's
//!   welcome and a counter.
//! * `map` encodes items into chunks (about 8 per engine by default), each chunk one task
//!   whose payload is a msgpack array; many tasks share one submit message.
//! * Nothing waits forever: when the controller goes silent while work is outstanding the
//!   I/O thread probes it, then declares the connection lost, and every wait ends with
//!   [`Error::ConnectionLost`]; dropping the [`Client`] does the same.
//!
//! Typed function handles and futures can be layered on [`AsyncResult`]: its cell is the
//! single place a result lands, so a waker list beside the condition variable is all a
//! `Future` needs.

mod client;
mod error;
mod io;
mod result;
mod view;

#[cfg(test)]
mod tests;

pub use client::{Client, ClientOptions};
pub use error::Error;
pub use result::{AsyncMapResult, AsyncResult};
pub use view::{DirectView, LoadBalancedView};

pub use protocol::{
    ClientId, CommandOutput, CommandSpec, EngineId, ErrorKind, StatusReport, TaskId, TaskOptions,
};
