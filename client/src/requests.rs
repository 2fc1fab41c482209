//! Controller requests about the queue: [`Client::queue_status`], [`Client::abort`],
//! [`Client::purge_tasks`], [`Client::purge_before`], [`Client::submit_as_is`] for tools
//! that keep their requests; and about the task store: [`Client::history`] and
//! [`Client::result_of`].
//!
//! Each request is a short synchronous exchange on a socket of its own (made from the
//! client's connection file), apart from the client's I/O thread: the answers are not tied to
//! any submission, and the exchange is all they need. Abort is the exception: it is about
//! tasks this client may have just submitted, so it goes on the client's own connection,
//! behind them (see [`Client::abort`]).

use crate::client::{dial, Client};
use crate::error::Error;
use crate::shared::Expect;
use protocol::{
    FromClient, HistoryFilter, HistoryRecord, MessageType, TaskId, TaskOutcome, TaskRequest,
    ToClient,
};
use std::time::{Duration, Instant};
use transport::Waitable;

pub use protocol::QueueStatus;

/// How long a request waits for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`Client::abort`] did: every id asked for is in exactly one list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AbortReport {
    /// Not started yet, now aborted: their results are errors of kind
    /// [`protocol::ErrorKind::Aborted`].
    pub aborted: Vec<TaskId>,
    /// Already running on an engine: not aborted (they finish normally).
    pub running: Vec<TaskId>,
    /// Already finished.
    pub finished: Vec<TaskId>,
    /// Unknown to the controller (never submitted, purged, or sent to an earlier one).
    pub unknown: Vec<TaskId>,
}

/// What [`Client::result_of`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredResult {
    /// The task finished: its outcome and result payload (empty for failures).
    Finished(TaskOutcome, Vec<u8>),
    /// The task is queued or running.
    Pending,
    /// The controller (memory and task store) has no record of it: never submitted, or
    /// purged, or dropped by retention.
    Unknown,
}

impl Client {
    /// The task store's records matching `filter`, newest first (any client's tasks, across
    /// controller restarts). A controller without a store (`db = "none"`) refuses with
    /// [`Error::Refused`], saying so.
    pub fn history(&self, filter: HistoryFilter) -> Result<Vec<HistoryRecord>, Error> {
        match self.exchange(FromClient::History { filter })? {
            ToClient::History { records } => Ok(records),
            other => Err(unexpected("history", &other)),
        }
    }

    /// The result of any task, whichever client submitted it, from the controller's memory
    /// or its task store (across restarts).
    pub fn result_of(&self, id: TaskId) -> Result<StoredResult, Error> {
        let mut store = crate::ResultStore::open(self.connection_file(), REQUEST_TIMEOUT)?;
        let mut found = store.fetch(&[id])?;
        Ok(match found.done.pop() {
            Some((outcome, payload)) => StoredResult::Finished(outcome, payload),
            None if found.pending.contains(&id) => StoredResult::Pending,
            None => StoredResult::Unknown,
        })
    }

    /// Makes the controller forget the results of tasks submitted before `before_us`
    /// (µs since the epoch), in memory and in its task store. Unfinished tasks stay.
    pub fn purge_before(&self, before_us: u64) -> Result<(), Error> {
        match self.exchange(FromClient::PurgeBefore { before_us })? {
            ToClient::Ack => Ok(()),
            other => Err(unexpected("purge", &other)),
        }
    }

    /// Where the unfinished tasks are: per engine (outstanding, completed, failed), ready but
    /// unassigned, and waiting for dependencies.
    pub fn queue_status(&self) -> Result<QueueStatus, Error> {
        match self.exchange(FromClient::QueueStatus)? {
            ToClient::QueueStatus(status) => Ok(status),
            other => Err(unexpected("queue_status", &other)),
        }
    }

    /// Aborts tasks that have not started (queued, or waiting for dependencies). Tasks
    /// already running are not stopped; the report says which were which.
    ///
    /// The request goes on the client's own connection, after the submits queued before it:
    /// the controller handles one connection's messages in order, so a task submitted just
    /// before is known when the abort arrives. (On a connection of its own, the abort could
    /// reach the controller first and find the task unknown, while the task went on to
    /// run.) From the I/O thread (a done callback), which must not wait for its own
    /// answers, and once the client's connection is lost, it uses a connection of its own.
    pub fn abort(&self, ids: &[TaskId]) -> Result<AbortReport, Error> {
        let request = FromClient::Abort { ids: ids.to_vec() };
        let answer = if crate::cell::on_io_thread() {
            self.exchange(request)?
        } else {
            match self.request(request.clone(), Expect::Aborted) {
                Err(Error::ConnectionLost { .. }) => self.exchange(request)?,
                answer => answer?,
            }
        };
        match answer {
            ToClient::Aborted {
                aborted,
                running,
                finished,
                unknown,
            } => Ok(AbortReport {
                aborted,
                running,
                finished,
                unknown,
            }),
            other => Err(unexpected("abort", &other)),
        }
    }

    /// Makes the controller forget the stored results of these tasks (an empty list
    /// forgets nothing; [`Client::purge`] forgets them all). Ids it does not know are
    /// ignored.
    pub fn purge_tasks(&self, ids: &[TaskId]) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        match self.exchange(FromClient::Purge { ids: ids.to_vec() })? {
            ToClient::Ack => Ok(()),
            other => Err(unexpected("purge", &other)),
        }
    }

    /// Submits tasks exactly as given, their ids included, and returns once the controller
    /// has them: for tools that keep their requests to submit again after a controller
    /// restart, as `cluster submit` does. Their results are stored by the controller for
    /// lookup by id ([`crate::ResultStore`]); a task it already has, finished or not, is
    /// not run again. The i-th payload is the i-th task's argument.
    pub fn submit_as_is(
        &self,
        tasks: Vec<TaskRequest>,
        payloads: Vec<Vec<u8>>,
    ) -> Result<(), Error> {
        let submit = FromClient::Submit { tasks };
        // Answered in order on one connection: the status answer means the submit is in.
        match self.exchange_after(Some((&submit, &payloads)), FromClient::Status)? {
            ToClient::Status(_) => Ok(()),
            other => Err(unexpected("status", &other)),
        }
    }

    /// Sends `request` on a fresh connection and waits for the answer.
    fn exchange(&self, request: FromClient) -> Result<ToClient, Error> {
        self.exchange_after(None, request)
    }

    /// Sends `before` (with its payloads), then `request`, on a fresh connection, and waits for
    /// the answer to `request` (results of submitted tasks that arrive first are skipped:
    /// they are stored for lookup all the same).
    fn exchange_after(
        &self,
        before: Option<(&FromClient, &[Vec<u8>])>,
        request: FromClient,
    ) -> Result<ToClient, Error> {
        let name = request.msg_type();
        let (mut sock, address) = dial(self.connection_file())?;
        sock.set_send_timeout(REQUEST_TIMEOUT.as_millis() as i32)?;
        if let Some((msg, payloads)) = before {
            let payloads: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            sock.send(None, msg, &payloads)?;
        }
        sock.send(None, &request, &[])?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            if let Some(received) = sock.recv::<ToClient>()? {
                return match received.msg {
                    ToClient::Error { message } => Err(Error::Refused {
                        request: name.to_owned(),
                        message,
                    }),
                    ToClient::Results { .. } => continue,
                    answer => Ok(answer),
                };
            }
            if sock.readable() {
                // A message that failed its checks was dropped; look at the next one.
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!("the controller at {address} to answer the {name} request"),
                });
            }
            let ms = (deadline - now).as_millis().max(1) as i64;
            transport::poll(&[Waitable::Socket(&sock)], ms)?;
        }
    }
}

fn unexpected(request: &str, answer: &ToClient) -> Error {
    Error::Decode {
        what: format!("the answer to the {request} request"),
        message: format!("unexpected {:?} message", answer.msg_type()),
    }
}
