//! Messages between the controller and engines: [`Registration`], [`FromEngine`],
//! [`ToEngine`] on the engine socket and [`Heartbeat`] on the heartbeat socket.

use serde::{Deserialize, Serialize};

use crate::codec::message_types;
use crate::{Assignment, EngineId, LaunchInfo, TaskId, TaskOutcome};

/// What an engine offers when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Random id the engine keeps for its lifetime; re-registering with it keeps the old id.
    pub uuid: String,
    /// Host name of the engine's machine.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Names of the functions this engine can run (command tasks are always available).
    pub functions: Vec<String>,
    /// Tasks the engine runs at once (1 for the stock engine).
    pub slots: u32,
    /// The id this engine had before, when it registers again (after a network blip or a
    /// controller restart); the controller gives it back unless another engine holds it.
    #[serde(default)]
    pub engine_id: Option<EngineId>,
    /// Tasks already in this engine's own queue when it registers again (after a controller
    /// restart): the controller counts them as running here instead of handing them out anew.
    #[serde(default)]
    pub held: Vec<TaskId>,
    /// Its rank and batch job, when `mpiexec` or `srun` started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<LaunchInfo>,
}

/// Engine → controller, on the engine socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromEngine {
    /// First message: who the engine is.
    Register(Registration),
    /// Finished tasks; the i-th payload frame is the i-th outcome's value.
    Results {
        /// Outcomes in any order.
        results: Vec<TaskOutcome>,
    },
    /// The engine is leaving (SIGTERM, end of its life).
    Unregister,
    /// These tasks, which have a run-time limit, started running now (after waiting in the
    /// engine's own queue); the controller's safety timer counts from here.
    Started {
        /// Ids of the tasks.
        ids: Vec<TaskId>,
    },
    /// Tasks the engine held in its own queue and will not run (it is draining, SIGUSR1),
    /// sent back before `Unregister`: the controller queues them again without counting a
    /// retry. The i-th payload frame is the i-th task's argument payload as it was received.
    HandBack {
        /// The tasks, as they were assigned.
        tasks: Vec<Assignment>,
    },
}
message_types!(FromEngine { Register => "register", Results => "results", Unregister => "unregister", Started => "started", HandBack => "hand_back" });

/// Controller → engine, on the engine socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToEngine {
    /// Registration accepted.
    Registered {
        /// The engine's id in this cluster.
        engine_id: EngineId,
        /// How often the controller pings, in milliseconds.
        heartbeat_period_ms: u64,
    },
    /// Registration refused (for example another protocol version).
    Refused {
        /// What is wrong and what to do.
        reason: String,
    },
    /// Tasks to run; the i-th payload frame is the i-th task's argument.
    Tasks {
        /// Tasks in the order to run them.
        tasks: Vec<Assignment>,
    },
    /// Stop: unregister and exit.
    Shutdown,
}
message_types!(ToEngine {
    Registered => "registered",
    Refused => "refused",
    Tasks => "tasks",
    Shutdown => "shutdown",
});

/// Heartbeats, on their own socket in both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Heartbeat {
    /// Controller → engine.
    Ping {
        /// Round number.
        seq: u64,
    },
    /// Engine → controller, echoing the ping's round.
    Pong {
        /// Round number being answered.
        seq: u64,
        /// The engine's uuid (the heartbeat socket's routing id is the same).
        uuid: String,
        /// The engine's CPU and memory use, sampled about once a second (absent from
        /// engines that do not report it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<crate::EngineUsage>,
    },
}
message_types!(Heartbeat { Ping => "ping", Pong => "pong" });
