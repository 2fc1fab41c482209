//! Tests of the whole client against a small fake controller ([`fake`]), by topic. The
//! client core's rules (timers, resubmission, answer matching) have fake-clock unit tests
//! of their own in `crate::core`.

mod bench;
mod connect;
mod failures;
mod fake;
mod futures;
mod liveness;
mod notifications;
mod views;

use crate::*;
use fake::{fake, Config};
use protocol::{
    ControllerStatus, DropCounts, EngineInfo, EngineStatus, FromClient, Status, TaskCounts,
    TaskError, TaskOutcome, TaskRequest, ToClient, Work,
};
use security::Key;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use testkit::{Endpoint, Role};
use transport::{Socket, Waitable};

/// The client id the fake gives.
const CLIENT_ID: u32 = 3;

/// The fake's doubling function, typed.
const DOUBLE: Function<u64, u64> = Function::new("double");

/// A short connect timeout: probes after 75 ms of silence, lost after 900 ms.
fn quick() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(300),
    }
}

/// Long enough for anything the fake does.
const SECOND: Option<Duration> = Some(Duration::from_secs(5));
