//! What the client's threads share with its I/O thread: the outbox of encoded messages and
//! the wake-up pipe, the task-id counter, and the slots answers are put into.
//!
//! Callers encode their messages on their own threads and push them into the outbox, then
//! wake the I/O thread through a socket pair (one byte, written only when no wake-up is
//! already pending). A request's caller then waits on its [`Reply`] slot.

use crate::cell::{Cell, Lost};
pub(crate) use crate::core::Expect;
use crate::error::Error;
use protocol::{FromClient, MessageType, TaskId, TaskRequest, ToClient};
use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The part of the controller's answer to an abort request that the client acts on (the
/// other ids are running or finished, and will deliver or have delivered their results).
#[derive(Debug, Default)]
pub(crate) struct Aborted {
    /// Aborted now.
    pub(crate) aborted: Vec<TaskId>,
    /// Unknown to the controller: nobody will ever deliver their results.
    pub(crate) unknown: Vec<TaskId>,
}

/// Where the answer to a request goes.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    slot: Mutex<Option<Result<ToClient, Lost>>>,
    cond: Condvar,
}

impl Reply {
    pub(crate) fn put(&self, answer: Result<ToClient, Lost>) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(answer);
            self.cond.notify_all();
        }
    }

    /// Waits up to `timeout` for the answer; `None` when it did not come in time.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<Result<ToClient, Lost>> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(answer) = slot.take() {
                return Some(answer);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            slot = self
                .cond
                .wait_timeout(slot, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A task whose outcome goes into part `index` of `cell`.
#[derive(Debug)]
pub(crate) struct Registration {
    pub(crate) id: TaskId,
    pub(crate) cell: Arc<Cell>,
    pub(crate) index: u32,
}

/// A message ready to send, encoded by the caller.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) msg_type: &'static str,
    pub(crate) content: Vec<u8>,
    /// Submit requests not encoded yet (`content` is empty): the I/O thread merges a run of
    /// such messages into as few submits as the limits allow, then encodes them.
    pub(crate) requests: Vec<TaskRequest>,
    pub(crate) payloads: Vec<Vec<u8>>,
    /// Tasks in this message, registered before it is sent.
    pub(crate) tasks: Vec<Registration>,
    /// For requests: the answer expected and where it goes (`None` for submits).
    /// A request whose answer nobody waits for still takes its place in the queue of
    /// requests, so that later answers go to the right waiters.
    pub(crate) reply: Option<(Expect, Option<Arc<Reply>>)>,
}

/// Messages waiting for the I/O thread.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) queue: VecDeque<Outgoing>,
    /// Set once, when the I/O thread ends or is asked to; nothing is queued after it.
    pub(crate) closed: Option<Arc<str>>,
    /// Shared-object requests (`objects.rs`), answered by id rather than in order.
    pub(crate) objects: crate::objects::ObjectOutbox,
}

/// State shared by the client, its views and the I/O thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) address: Arc<str>,
    pub(crate) client_id: protocol::ClientId,
    next_seq: AtomicU64,
    /// Engines registered, as last heard (welcome, any status answer).
    pub(crate) engines: AtomicUsize,
    outbox: Mutex<Outbox>,
    pub(crate) wake_pending: AtomicBool,
    wake_tx: UnixStream,
    pub(crate) request_timeout: Duration,
    /// Shared objects: request ids and the leases held.
    pub(crate) objects: crate::objects::ObjectsShared,
}

impl Shared {
    pub(crate) fn new(
        address: String,
        client_id: protocol::ClientId,
        engines: usize,
        request_timeout: Duration,
        wake_tx: UnixStream,
    ) -> Shared {
        Shared {
            address: address.into(),
            client_id,
            next_seq: AtomicU64::new(1),
            engines: AtomicUsize::new(engines),
            outbox: Mutex::new(Outbox::default()),
            wake_pending: AtomicBool::new(false),
            wake_tx,
            request_timeout,
            objects: Default::default(),
        }
    }

    /// Reserves `n` consecutive task ids and returns the first.
    pub(crate) fn task_ids(&self, n: usize) -> TaskId {
        let seq = self.next_seq.fetch_add(n as u64, Ordering::Relaxed);
        TaskId::new(self.client_id, seq)
    }

    pub(crate) fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues messages for the I/O thread; fails when the connection has ended.
    pub(crate) fn send(&self, messages: impl IntoIterator<Item = Outgoing>) -> Result<(), Lost> {
        {
            let mut outbox = self.outbox();
            if let Some(reason) = &outbox.closed {
                return Err(Lost {
                    address: self.address.clone(),
                    reason: reason.clone(),
                });
            }
            outbox.queue.extend(messages);
        }
        self.wake();
        Ok(())
    }

    /// Queues an object request for the I/O thread; fails when the connection has ended.
    pub(crate) fn send_objects(&self, msg: crate::objects::ObjectOutgoing) -> Result<(), Lost> {
        {
            let mut outbox = self.outbox();
            if let Some(reason) = &outbox.closed {
                return Err(Lost {
                    address: self.address.clone(),
                    reason: reason.clone(),
                });
            }
            outbox.objects.push_back(msg);
        }
        self.wake();
        Ok(())
    }

    fn wake(&self) {
        // One byte per batch of pushes: the I/O thread clears the flag before it drains.
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            // A full pipe already means a wake-up is pending; nothing else can go wrong that
            // the I/O thread would not notice by itself.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }

    /// Sends a request and waits (up to the request timeout) for its answer.
    pub(crate) fn request(&self, msg: FromClient, expect: Expect) -> Result<ToClient, Error> {
        let name = msg.msg_type();
        let content = protocol::encode(&msg).map_err(|e| Error::Encode {
            what: format!("the {name} request"),
            message: e.to_string(),
        })?;
        let reply = Arc::new(Reply::default());
        self.send([Outgoing {
            msg_type: name,
            content,
            requests: Vec::new(),
            payloads: Vec::new(),
            tasks: Vec::new(),
            reply: Some((expect, Some(reply.clone()))),
        }])
        .map_err(|lost| lost.error())?;
        match reply.wait(self.request_timeout) {
            None => Err(Error::Timeout {
                what: format!(
                    "the controller at {} to answer the {name} request",
                    self.address
                ),
            }),
            Some(Err(lost)) => Err(lost.error()),
            Some(Ok(ToClient::Error { message })) => Err(Error::Refused {
                request: name.to_owned(),
                message,
            }),
            Some(Ok(answer)) => Ok(answer),
        }
    }

    /// Asks the controller to abort tasks that have not started, and waits for its answer.
    pub(crate) fn abort(&self, ids: Vec<TaskId>) -> Result<Aborted, Error> {
        match self.request(FromClient::Abort { ids }, Expect::Aborted)? {
            ToClient::Aborted {
                aborted, unknown, ..
            } => Ok(Aborted { aborted, unknown }),
            other => Err(Error::Decode {
                what: "the answer to the abort request".into(),
                message: format!("unexpected {:?} message", other.msg_type()),
            }),
        }
    }

    /// Asks the controller to abort tasks that have not started, without waiting for the
    /// answer (for callers that cannot wait: drops, and done callbacks on the I/O thread).
    /// Best effort: if the tasks run anyway, their results are ignored when they arrive.
    pub(crate) fn abort_quietly(&self, ids: Vec<TaskId>) {
        if ids.is_empty() {
            return;
        }
        let Ok(content) = protocol::encode(&FromClient::Abort { ids }) else {
            return;
        };
        // A closed connection has nothing left to abort.
        let _ = self.send([Outgoing {
            msg_type: "abort",
            content,
            requests: Vec::new(),
            payloads: Vec::new(),
            tasks: Vec::new(),
            reply: Some((Expect::Aborted, None)),
        }]);
    }

    /// Asks the I/O thread to finish (the client is being dropped).
    pub(crate) fn close(&self, reason: &str) {
        {
            let mut outbox = self.outbox();
            if outbox.closed.is_none() {
                outbox.closed = Some(reason.into());
            }
        }
        self.wake_pending.store(false, Ordering::SeqCst);
        self.wake();
    }
}
