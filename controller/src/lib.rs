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
//! heartbeat pings). It also watches the engine socket's connections, so that an engine whose
//! connection closes (a killed process) is reported to the core at once. All rules live in the core, which never reads a clock or touches a socket,
//! so they are tested with a fake clock and fake peers. Scheduling policy (which engine, how
//! many tasks an engine may hold) is in [`scheduler`], as pure functions of engine loads.
//!
//! Arguments and results cross the controller as opaque payload frames, never decoded.

mod hub;
mod server;

pub mod scheduler;

pub use hub::{Action, Core, CoreConfig, Payload, Route, RUN_TIMEOUT_GRACE};
pub use scheduler::{Hwm, ParseSettingError, SchedulerKind};
pub use server::{run, ControllerConfig, ControllerError};
