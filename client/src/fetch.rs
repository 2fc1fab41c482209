//! Looking up stored results by task id, from any client: [`ResultStore`].
//!
//! The controller keeps every finished task's outcome until it is purged, and answers
//! [`FromClient::Fetch`] with [`ToClient::Results`] for the finished ones and
//! [`ToClient::Pending`] for the rest. This is how `cluster result ID` reads the outcome of a
//! task that another process (`cluster submit`) sent and then forgot.
//!
//! It uses a socket of its own, apart from any [`crate::Client`]'s I/O thread: fetch answers
//! carry ids that no view registered, and a short synchronous exchange is all a lookup needs.

use crate::client::dial;
use crate::error::Error;
use protocol::{FromClient, TaskId, TaskOutcome, ToClient};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use transport::{Socket, Waitable};

/// Ids asked for in one fetch message, so that the answer stays well under the message limit
/// for ordinary outputs.
const IDS_PER_FETCH: usize = 512;

/// What the controller knows about some task ids.
#[derive(Debug, Default)]
pub struct Lookup {
    /// Finished tasks: outcome and result payload (empty for failures).
    pub done: Vec<(TaskOutcome, Vec<u8>)>,
    /// Tasks still queued or running.
    pub pending: Vec<TaskId>,
    /// Ids the controller has no record of (never submitted, purged, or from an earlier
    /// controller).
    pub unknown: Vec<TaskId>,
}

/// A connection for looking up stored results.
#[derive(Debug)]
pub struct ResultStore {
    sock: Socket,
    address: String,
    file: PathBuf,
    timeout: Duration,
}

impl ResultStore {
    /// Connects with a client connection file; `timeout` bounds each lookup.
    pub fn open(path: impl AsRef<Path>, timeout: Duration) -> Result<ResultStore, Error> {
        let path = path.as_ref();
        let (sock, address) = dial(path)?;
        sock.set_send_timeout(timeout.as_millis().clamp(1, i32::MAX as u128) as i32)?;
        Ok(ResultStore {
            sock,
            address,
            file: path.to_owned(),
            timeout,
        })
    }

    /// Asks the controller about `ids`. Every id lands in exactly one of the three lists.
    ///
    /// Errors: [`Error::ConnectTimeout`] when the controller does not answer in time.
    pub fn fetch(&mut self, ids: &[TaskId]) -> Result<Lookup, Error> {
        let mut lookup = Lookup::default();
        for chunk in ids.chunks(IDS_PER_FETCH) {
            self.fetch_chunk(chunk, &mut lookup)?;
        }
        Ok(lookup)
    }

    fn fetch_chunk(&mut self, ids: &[TaskId], lookup: &mut Lookup) -> Result<(), Error> {
        self.sock
            .send(None, &FromClient::Fetch { ids: ids.to_vec() }, &[])?;
        let deadline = Instant::now() + self.timeout;
        // The controller answers a fetch with an optional `results` and then `pending`, in
        // this order on this connection, so `pending` closes the answer.
        loop {
            while let Some(received) = self.sock.recv::<ToClient>()? {
                match received.msg {
                    ToClient::Results { results } => {
                        let mut payloads = received.payloads.into_iter();
                        for outcome in results {
                            // Positional rule: a missing frame is an empty payload.
                            let payload = payloads.next().unwrap_or_default();
                            if ids.contains(&outcome.id) {
                                lookup.done.push((outcome, payload));
                            }
                        }
                    }
                    ToClient::Pending { pending, unknown } => {
                        lookup.pending.extend(pending);
                        lookup.unknown.extend(unknown);
                        return Ok(());
                    }
                    ToClient::Error { message } => {
                        return Err(Error::Refused {
                            request: "fetch".into(),
                            message,
                        })
                    }
                    _ => {}
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::ConnectTimeout {
                    address: self.address.clone(),
                    file: self.file.clone(),
                    timeout: self.timeout,
                });
            }
            let ms = (deadline - now).as_millis().max(1) as i64;
            transport::poll(&[Waitable::Socket(&self.sock)], ms)?;
        }
    }
}
