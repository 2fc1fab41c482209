//! The controller hub of the cluster: registration, heartbeats, scheduling, the task table and
//! the result store.
//!
//! ```text
//!            client ROUTER ──► ┌────────────┐ ──► engine ROUTER     (tasks out, results in)
//!  clients ◄─────────────────  │    Core    │ ◄── heartbeat ROUTER  (pings out, pongs in)
//!            notify PUB ◄───── └────────────┘
//! ```
//!
//! [`run`] owns the four sockets and nothing else: it receives every message waiting, feeds it
//! to the sans-IO [`Core`], and performs the [`Action`]s the core returns (sends, publications,
//! heartbeat pings). It also watches the engine and client sockets' connections, so that an
//! engine whose connection closes (a killed process) is reported to the core at once, and a
//! client that closed is forgotten once its tasks are done. All rules live in the
//! core, which never reads a clock or touches a socket, so they are tested with a fake clock
//! and fake peers. Arguments and results cross the controller as opaque payload frames, never
//! decoded.
//!
//! Where things are:
//!
//! - `hub/` — the core, one file per piece of state (its `mod.rs` has the table): engines
//!   and registration (`engines.rs`), **the heartbeat rule** (`heartbeat.rs`), **the scheduling
//!   pass** (`schedule.rs`) over the free-engine indexes (`free.rs`) and the queue classes
//!   (`queues.rs`), the task table with submission, retries and abort (`tasks.rs`),
//!   dependencies (`deps.rs`), time limits (`timers.rs`), **the result store** and delivery
//!   (`results.rs`), client ids and connections (`clients.rs`), status reports (`status.rs`),
//!   the shared objects: queues, namespaces, locks and semaphores under leases, events
//!   (`objects/`).
//!   Its tests are in `hub/tests/`, one file a topic, around one `Harness`.
//! - [`scheduler`] — scheduling *policy* as pure functions of engine loads: the five schemes
//!   and the adaptive per-engine limit (`hwm = auto`).
//! - `server/` — the socket loop (`mod.rs`): configuration and errors, the sockets and how an action
//!   is sent, the connection files.

mod hub;
mod server;

pub mod scheduler;

pub use hub::{
    Action, Core, CoreConfig, ObjectLimits, Payload, Route, DEFAULT_RESULT_CACHE_BYTES,
    RUN_TIMEOUT_GRACE,
};
pub use scheduler::{Hwm, ParseSettingError, SchedulerKind};
pub use server::{run, ControllerConfig, ControllerError};
