//! Status reports: the controller, its engines and task counts (`cluster status`), and where
//! the unfinished tasks are (queue status). Read-only views over the other parts' state.

use super::{reply, Action, Core};
use protocol::{
    ControllerStatus, EngineQueue, EngineStatus, QueueStatus, StatusReport, TaskCounts, ToClient,
};
use std::time::Duration;

impl Core {
    /// The status report as of `now`.
    pub fn status(&self, now: Duration) -> StatusReport {
        let a = &self.config.addresses;
        let controller = ControllerStatus {
            pid: self.config.pid,
            host: self.config.host.clone(),
            scheduler: self.config.scheduler.name().to_owned(),
            hwm: self.config.hwm.to_string(),
            engine_address: a.engine.clone().unwrap_or_default(),
            client_address: a.client.clone().unwrap_or_default(),
            heartbeat_address: a.heartbeat.clone().unwrap_or_default(),
            notify_address: a.notify.clone().unwrap_or_default(),
            uptime_s: now.saturating_sub(self.started).as_secs_f64(),
            clients: u32::try_from(self.clients.count()).unwrap_or(u32::MAX),
            instance: self.config.instance,
        };
        // Engines are stored by id, so this is already sorted.
        let engines = self
            .engines
            .alive()
            .map(|e| EngineStatus {
                id: e.id,
                host: e.host.clone(),
                pid: e.pid,
                state: if e.missed == 0 {
                    "alive"
                } else {
                    "unresponsive"
                }
                .to_owned(),
                outstanding: e.outstanding(),
                completed: e.completed,
                hwm: if e.limit == u32::MAX { 0 } else { e.limit },
                rank: e.launch.as_ref().map(|l| l.rank),
                job: e.launch.as_ref().and_then(|l| l.job_id.clone()),
                usage: e.usage,
            })
            .collect();
        let running: u64 = self.engines.all().map(|e| e.running.len() as u64).sum();
        let (done, failed) = self.results.counts();
        StatusReport {
            controller,
            engines,
            tasks: TaskCounts {
                queued: self.queues.queued(),
                running,
                done,
                failed,
                stored: self.results.len() as u64,
                waiting: self.deps.waiting(),
            },
            dropped: self.dropped.clone(),
            store: self.store_health.clone(),
            functions: None,
        }
    }

    /// Where the unfinished tasks are: per engine, queued for one, waiting on dependencies.
    pub fn queue_status(&self) -> QueueStatus {
        QueueStatus {
            engines: self
                .engines
                .alive()
                .map(|e| EngineQueue {
                    id: e.id,
                    outstanding: e.outstanding(),
                    completed: e.completed,
                    failed: e.failed,
                })
                .collect(),
            unassigned: self.queues.queued(),
            waiting: self.deps.waiting(),
        }
    }

    /// `FromClient::Status`. With a task store the report waits for its per-function
    /// figures (answered in [`Core::on_lookup_answer`]).
    pub(super) fn status_request(&mut self, route: &[u8], now: Duration, out: &mut Vec<Action>) {
        if self.config.persist {
            let route = route.to_vec();
            self.ask_store(
                store::Query::Stats,
                super::lookups::Deferred::Status { route },
                out,
            );
            return;
        }
        let report = ToClient::Status(Box::new(self.status(now)));
        reply(out, route, report, Vec::new());
    }

    /// `FromClient::QueueStatus`.
    pub(super) fn queue_status_request(&self, route: &[u8], out: &mut Vec<Action>) {
        reply(
            out,
            route,
            ToClient::QueueStatus(self.queue_status()),
            Vec::new(),
        );
    }
}
