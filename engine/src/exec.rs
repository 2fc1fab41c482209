//! Running one task: a registered function, a map chunk, the built-in `whoami` and store
//! functions, or a command.

use protocol::{Assignment, EngineId, ErrorKind, Status, TaskError, TaskOutcome, Work};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use protocol::Whoami;

use crate::command::run_command;
use crate::context::{self, Context};
use crate::msgpack;
use crate::registry::{unknown_function, CallError, Mode, Registry};

/// Name of the built-in function that says which engine ran it.
pub const WHOAMI: &str = "whoami";

/// Largest result payload an engine sends; the rest of the message needs some room under
/// the controller's size limit.
pub(crate) const MAX_RESULT_BYTES: usize = protocol::DEFAULT_MAX_MESSAGE_BYTES - (1 << 20);

/// How long a running task may go on after SIGTERM/SIGINT before it is stopped (a command
/// killed, a function abandoned in its thread) and reported as lost with the engine, so that
/// the controller runs it elsewhere if its retries allow. Short enough that the engine is gone
/// well within `cluster stop`'s grace period.
pub(crate) const STOP_GRACE: Duration = Duration::from_millis(250);

/// Runs tasks for one registered engine.
#[derive(Debug)]
pub(crate) struct Executor<'a> {
    pub registry: &'a Registry,
    pub engine: EngineId,
    pub max_output: usize,
    /// `whoami`'s answer, encoded once.
    pub whoami: Vec<u8>,
    /// Set when the engine is told to stop: a running command is killed [`STOP_GRACE`] later.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Executor<'_> {
    /// Runs `task` and returns its outcome and result payload (empty on failure), plus the
    /// name of the offered function that ran, for run-time estimates.
    pub(crate) fn run<'t>(
        &self,
        task: &'t Assignment,
        payload: &[u8],
    ) -> (TaskOutcome, Vec<u8>, Option<&'t str>) {
        let started_us = transport::now_us();
        let start = Instant::now();
        let mut ran = None;
        let result = match &task.work {
            Work::Call { function } | Work::Map { function } => {
                let mode = match task.work {
                    Work::Map { .. } => Mode::Map,
                    _ => Mode::Call,
                };
                if self.registry.contains(function)
                    || function == WHOAMI
                    || context::is_builtin(function)
                {
                    ran = Some(function.as_str());
                }
                self.call(function, mode, payload)
            }
            Work::Command(spec) => {
                // A zero timeout means no limit, like an absent one.
                let timeout = task
                    .timeout_ms
                    .filter(|&ms| ms > 0)
                    .map(Duration::from_millis);
                run_command(spec, timeout, self.max_output, self.stop.as_deref()).and_then(|out| {
                    protocol::encode(&out).map_err(|e| {
                        CallError::new(ErrorKind::Remote, format!("cannot encode the output: {e}"))
                    })
                })
            }
        };
        let elapsed_us = start.elapsed().as_micros() as u64;
        let (outcome, payload) = self.outcome(task, result, started_us, elapsed_us);
        (outcome, payload, ran)
    }

    /// Runs tasks of one function that has a batch handler in one go (see
    /// [`Registry::get_batch`]); one outcome each, in order. Each task's start and run time
    /// are its own, as the handler measured them.
    pub(crate) fn run_batch<'t>(
        &self,
        function: &'t str,
        tasks: &[(&Assignment, &[u8])],
    ) -> Vec<(TaskOutcome, Vec<u8>, Option<&'t str>)> {
        let started_us = transport::now_us();
        let ctx = Context::new(self.engine, self.registry.store().clone());
        let ran = match self.registry.get_batch(function) {
            Some(handler) => {
                let payloads: Vec<&[u8]> = tasks.iter().map(|(_, payload)| *payload).collect();
                handler(&ctx, &payloads)
            }
            None => Vec::new(),
        };
        let mut ran = ran.into_iter();
        tasks
            .iter()
            .map(|(task, payload)| match ran.next() {
                Some(r) => {
                    let started = started_us + r.offset.as_micros() as u64;
                    let elapsed = r.elapsed.as_micros() as u64;
                    let (outcome, payload) = self.outcome(task, r.result, started, elapsed);
                    (outcome, payload, Some(function))
                }
                // A handler that answered for fewer tasks (or none: no batch handler) leaves
                // the rest to run one by one.
                None => {
                    let (outcome, payload, ran) = self.run(task, payload);
                    (outcome, payload, ran.map(|_| function))
                }
            })
            .collect()
    }

    /// The outcome of `task` from its result, with the size limit applied.
    fn outcome(
        &self,
        task: &Assignment,
        result: Result<Vec<u8>, CallError>,
        started_us: u64,
        elapsed_us: u64,
    ) -> (TaskOutcome, Vec<u8>) {
        let result = result.and_then(|bytes| {
            if bytes.len() > MAX_RESULT_BYTES {
                Err(CallError::new(
                    ErrorKind::Remote,
                    format!(
                        "the result of {} is {} bytes, more than the {MAX_RESULT_BYTES}-byte limit of one message; return less per task (smaller map chunks) or write large results to files",
                        task.work.name(),
                        bytes.len()
                    ),
                ))
            } else {
                Ok(bytes)
            }
        });
        let (status, payload) = match result {
            Ok(bytes) => (Status::Ok, bytes),
            Err(e) => (
                Status::Err(TaskError {
                    kind: e.kind,
                    message: e.message,
                    engine: Some(self.engine),
                }),
                e.payload,
            ),
        };
        let outcome = TaskOutcome {
            id: task.id,
            engine: Some(self.engine),
            status,
            started_us,
            elapsed_us,
        };
        (outcome, payload)
    }

    fn call(&self, function: &str, mode: Mode, payload: &[u8]) -> Result<Vec<u8>, CallError> {
        let ctx = Context::new(self.engine, self.registry.store().clone());
        if let Some(handler) = self.registry.get(function) {
            return handler(&ctx, mode, payload);
        }
        if let Some(result) = context::call_builtin(function, &ctx, mode, payload) {
            return result;
        }
        if function != WHOAMI {
            return Err(unknown_function(function));
        }
        match mode {
            Mode::Call => Ok(self.whoami.clone()),
            Mode::Map => {
                let split = msgpack::split_array(payload).map_err(|e| {
                    CallError::new(
                        ErrorKind::BadArguments,
                        format!("a map chunk must be a msgpack array of arguments: {e}"),
                    )
                })?;
                let mut out =
                    Vec::with_capacity(split.header.len() + split.items.len() * self.whoami.len());
                out.extend_from_slice(split.header);
                for _ in 0..split.items.len() {
                    out.extend_from_slice(&self.whoami);
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ClientId, CommandOutput, CommandSpec, TaskId};

    fn assignment(work: Work, timeout_ms: Option<u64>) -> Assignment {
        Assignment {
            id: TaskId::new(ClientId(2), 9),
            work,
            timeout_ms,
            start_within_ms: None,
        }
    }

    fn executor(registry: &Registry) -> Executor<'_> {
        Executor {
            registry,
            engine: EngineId(4),
            max_output: 1 << 20,
            whoami: protocol::encode(&Whoami {
                engine_id: EngineId(4),
                pid: 1,
                host: "h".into(),
                rank: None,
            })
            .unwrap(),
            stop: None,
        }
    }

    #[test]
    fn outcomes_carry_ids_engine_and_errors() {
        let mut registry = Registry::default();
        registry.add_typed("double", |x: u32| Ok::<_, String>(x * 2));
        let ex = executor(&registry);
        let task = assignment(
            Work::Call {
                function: "double".into(),
            },
            None,
        );
        let (outcome, payload, ran) = ex.run(&task, &protocol::encode(&21u32).unwrap());
        assert_eq!(outcome.id, task.id);
        assert_eq!(outcome.engine, Some(EngineId(4)));
        assert_eq!(outcome.status, Status::Ok);
        assert!(outcome.started_us > 0);
        assert_eq!(protocol::decode::<u32>(&payload).unwrap(), 42);
        assert_eq!(ran, Some("double"));

        let task = assignment(
            Work::Call {
                function: "nope".into(),
            },
            None,
        );
        let (outcome, payload, ran) = ex.run(&task, b"");
        assert!(payload.is_empty());
        assert_eq!(ran, None, "unknown names are not remembered");
        match outcome.status {
            Status::Err(e) => {
                assert_eq!(e.kind, ErrorKind::UnknownFunction);
                assert_eq!(e.engine, Some(EngineId(4)));
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn whoami_is_built_in() {
        let registry = Registry::default();
        let ex = executor(&registry);
        let (_, payload, _) = ex.run(
            &assignment(
                Work::Call {
                    function: WHOAMI.into(),
                },
                None,
            ),
            b"\xc0",
        );
        let me: Whoami = protocol::decode(&payload).unwrap();
        assert_eq!(me.engine_id, EngineId(4));
        let (_, payload, _) = ex.run(
            &assignment(
                Work::Map {
                    function: WHOAMI.into(),
                },
                None,
            ),
            &protocol::encode(&[(), (), ()]).unwrap(),
        );
        assert_eq!(protocol::decode::<Vec<Whoami>>(&payload).unwrap().len(), 3);
    }

    #[test]
    fn store_functions_are_built_in_and_shared_with_context_functions() {
        let mut registry = Registry::default();
        registry.add_typed_with_context("total", |ctx: &Context, (): ()| {
            ctx.get_shared::<Vec<u64>>("xs")
                .map(|xs| (ctx.engine_id(), xs.iter().sum::<u64>()))
        });
        let ex = executor(&registry);
        let call = |function: &str, arg: &[u8]| {
            let work = Work::Call {
                function: function.into(),
            };
            let task = assignment(work, None);
            let (outcome, payload, ran) = ex.run(&task, arg);
            (outcome, payload, ran.map(str::to_owned))
        };
        let mut push = std::collections::BTreeMap::new();
        push.insert("xs", vec![1u64, 2, 3]);
        let (outcome, _, ran) = call(protocol::builtin::PUSH, &protocol::encode(&push).unwrap());
        assert_eq!(outcome.status, Status::Ok);
        assert_eq!(ran.as_deref(), Some(protocol::builtin::PUSH));
        let (_, payload, _) = call("total", &protocol::encode(&()).unwrap());
        assert_eq!(
            protocol::decode::<(EngineId, u64)>(&payload).unwrap(),
            (EngineId(4), 6)
        );
        let (_, payload, _) = call(protocol::builtin::PULL, &protocol::encode(&["xs"]).unwrap());
        assert_eq!(
            protocol::decode::<(Vec<u64>,)>(&payload).unwrap().0,
            vec![1, 2, 3]
        );
    }

    #[test]
    fn command_outcomes() {
        let registry = Registry::default();
        let ex = executor(&registry);
        let spec = CommandSpec {
            program: "sh".into(),
            args: vec!["-c".into(), "echo out; exit 3".into()],
            ..Default::default()
        };
        let (outcome, payload, _) = ex.run(&assignment(Work::Command(spec), Some(0)), b"");
        assert_eq!(
            outcome.status,
            Status::Ok,
            "a failing command is still a result"
        );
        let out: CommandOutput = protocol::decode(&payload).unwrap();
        assert_eq!(
            (out.status, out.stdout.as_slice()),
            (Some(3), &b"out\n"[..])
        );

        let spec = CommandSpec {
            program: "sleep".into(),
            args: vec!["10".into()],
            ..Default::default()
        };
        let (outcome, _, _) = ex.run(&assignment(Work::Command(spec), Some(100)), b"");
        match outcome.status {
            Status::Err(e) => assert_eq!(e.kind, ErrorKind::Timeout),
            s => panic!("{s:?}"),
        }
        assert!(outcome.elapsed_us < 5_000_000);
    }

    #[test]
    fn oversized_results_become_errors() {
        let mut registry = Registry::default();
        registry.add_raw("big", |_| Ok(vec![0; MAX_RESULT_BYTES + 1]));
        let ex = executor(&registry);
        let (outcome, payload, _) = ex.run(
            &assignment(
                Work::Call {
                    function: "big".into(),
                },
                None,
            ),
            b"",
        );
        assert!(payload.is_empty());
        match outcome.status {
            Status::Err(e) => assert!(e.message.contains("limit"), "{}", e.message),
            s => panic!("{s:?}"),
        }
    }
}
