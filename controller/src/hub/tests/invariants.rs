//! Property tests: the pure leastload rule, and random traffic through the core keeping its
//! invariants (limits, eligibility, one answer a task, work conservation, consistent counts).
//! The core also checks every pick of its fast paths against `SchedulerKind::pick` in tests.

use super::*;
use crate::scheduler::EngineLoad;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::{HashMap, HashSet};

fn load() -> impl Strategy<Value = EngineLoad> {
    (0u32..6, 0u32..8, 0u64..5, any::<bool>()).prop_map(|(outstanding, limit, last, eligible)| {
        EngineLoad {
            id: EngineId(0),
            outstanding,
            limit: if limit == 7 { u32::MAX } else { limit },
            last_assigned: last,
            eligible,
        }
    })
}

proptest! {
    /// leastload never picks a full or excluded engine, nor a busier one than the least
    /// loaded candidate, and picks something whenever a candidate exists.
    #[test]
    fn leastload_picks_a_least_loaded_candidate(mut engines in prop::collection::vec(load(), 0..12)) {
        for (i, e) in engines.iter_mut().enumerate() {
            e.id = EngineId(i as u32);
        }
        let pick = SchedulerKind::LeastLoad.pick(&engines, &mut SmallRng::seed_from_u64(0));
        let candidates: Vec<&EngineLoad> = engines.iter().filter(|e| e.can_take()).collect();
        match pick {
            None => prop_assert!(candidates.is_empty()),
            Some(id) => {
                let chosen = &engines[id.0 as usize];
                prop_assert!(chosen.eligible, "excluded engine picked");
                prop_assert!(chosen.outstanding < chosen.limit, "full engine picked");
                let least = candidates.iter().map(|e| e.outstanding).min().unwrap();
                prop_assert_eq!(chosen.outstanding, least);
                let lru = candidates.iter().filter(|e| e.outstanding == least).map(|e| e.last_assigned).min().unwrap();
                prop_assert_eq!(chosen.last_assigned, lru);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Submit {
        function: u8,
        targets: Vec<u32>,
        retries: u32,
        count: u8,
        /// Run after (or follow) a task submitted this many submissions ago.
        after: Option<(u8, bool)>,
        timeout: bool,
    },
    Finish {
        engine: u8,
        how_many: u8,
    },
    Fail {
        engine: u8,
    },
    Abort {
        back: u8,
    },
    Leave {
        engine: u8,
    },
    Join {
        engine: u8,
    },
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, prop::collection::vec(0u32..5, 0..3), 0u32..3, 1u8..6, prop::option::weighted(0.3, (1u8..8, any::<bool>())), prop::bool::weighted(0.2))
            .prop_map(|(function, targets, retries, count, after, timeout)| Op::Submit { function, targets, retries, count, after, timeout }),
        4 => (0u8..4, 1u8..4).prop_map(|(engine, how_many)| Op::Finish { engine, how_many }),
        1 => (0u8..4).prop_map(|engine| Op::Fail { engine }),
        1 => (1u8..10).prop_map(|back| Op::Abort { back }),
        1 => (0u8..4).prop_map(|engine| Op::Leave { engine }),
        1 => (0u8..4).prop_map(|engine| Op::Join { engine }),
        1 => Just(Op::Tick),
    ]
}

const FUNCTIONS: [&str; 3] = ["f", "g", "h"];
const UUIDS: [&str; 4] = ["e0", "e1", "e2", "e3"];

/// Engine `i` offers f, and g when `i` is odd; nobody offers h.
fn offers(i: u8) -> Vec<&'static str> {
    if i % 2 == 1 {
        vec!["f", "g"]
    } else {
        vec!["f"]
    }
}

/// What the test knows from the actions it saw.
#[derive(Default)]
struct Seen {
    running: HashMap<TaskId, EngineId>,
    answered: HashSet<TaskId>,
    submitted: u64,
    ids: HashMap<u8, EngineId>,
}

/// Performs `op`; the actions it caused.
fn perform(h: &mut Harness, seen: &mut Seen, op: Op) -> Vec<Action> {
    match op {
        Op::Submit {
            function,
            targets,
            retries,
            count,
            after: dep,
            timeout,
        } => {
            let reqs = (0..count)
                .map(|_| {
                    seen.submitted += 1;
                    let mut req = with(
                        call(seen.submitted, FUNCTIONS[function as usize]),
                        &targets,
                        retries,
                    );
                    if let Some((back, follows)) = dep {
                        let d = seen.submitted.saturating_sub(u64::from(back)).max(1);
                        req = if follows {
                            follow(req, &[d])
                        } else {
                            after(req, &[d])
                        };
                    }
                    if timeout {
                        req = timed(req, 1_500);
                    }
                    req
                })
                .collect();
            h.submit(reqs)
        }
        Op::Fail { engine } => {
            let id = seen.ids.get(&engine).copied();
            let mine: Vec<TaskId> = seen
                .running
                .iter()
                .filter(|(_, e)| Some(**e) == id)
                .map(|(t, _)| *t)
                .take(1)
                .collect();
            h.fail(UUIDS[engine as usize], &mine, ErrorKind::Remote)
        }
        Op::Abort { back } => {
            let id = tid(seen.submitted.saturating_sub(u64::from(back)).max(1));
            h.client(CLIENT, FromClient::Abort { ids: vec![id] })
        }
        Op::Finish { engine, how_many } => {
            let id = seen.ids.get(&engine).copied();
            let mut mine: Vec<TaskId> = seen
                .running
                .iter()
                .filter(|(_, e)| Some(**e) == id)
                .map(|(t, _)| *t)
                .collect();
            mine.sort();
            mine.truncate(how_many as usize);
            h.finish(UUIDS[engine as usize], &mine, 3)
        }
        Op::Leave { engine } => h.unregister(UUIDS[engine as usize]),
        Op::Join { engine } => {
            let (id, actions) = h.register(UUIDS[engine as usize], &offers(engine));
            seen.ids.insert(engine, id);
            actions
        }
        Op::Tick => {
            // Everyone alive answers, so nobody dies of silence.
            let actions = h.tick(h.now + secs(1));
            for a in &actions {
                if let Action::Ping { route, seq, .. } = a {
                    let uuid = String::from_utf8(route.clone()).unwrap();
                    h.pong(&uuid, *seq);
                }
            }
            actions
        }
    }
}

/// Checks what `actions` sent against the core's state, and records it in `seen`.
fn check_actions(h: &Harness, seen: &mut Seen, actions: &[Action]) -> Result<(), TestCaseError> {
    for a in actions {
        match a {
            Action::ToEngine {
                engine,
                msg: ToEngine::Tasks { tasks },
                payloads,
                ..
            } => {
                prop_assert_eq!(tasks.len(), payloads.len());
                let e = &h.core.engines[*engine];
                for t in tasks {
                    prop_assert!(e.alive);
                    if let Some(f) = function_of(&t.work) {
                        prop_assert!(e.functions.contains(f), "engine {} got {}", engine, f);
                    }
                    let task = h.core.tasks.get(t.id).expect("a task sent is known");
                    prop_assert!(task.targets.is_empty() || task.targets.contains(engine));
                    prop_assert!(!task.excluded.contains(engine));
                    seen.running.insert(t.id, *engine);
                }
            }
            Action::ToClient {
                msg: ToClient::Results { results },
                ..
            } => {
                for o in results {
                    prop_assert!(seen.answered.insert(o.id), "task {} answered twice", o.id);
                    seen.running.remove(&o.id);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks the core's state on its own.
fn check_state(h: &Harness, seen: &Seen, limit: u32) -> Result<(), TestCaseError> {
    let core = &h.core;
    for e in core.engines.all() {
        if limit > 0 {
            prop_assert!(e.running.len() as u32 <= limit);
        }
        prop_assert!(e.alive || e.running.is_empty());
    }
    // Work-conserving: no queued task has a free engine it could run on.
    for class in core.queues.classes() {
        if class
            .queue
            .iter()
            .any(|&(t, seq)| core.tasks.is_queued(t, seq))
        {
            let free = core
                .free
                .in_load_order()
                .any(|id| core.engines.eligible(id, &class.key));
            prop_assert!(!free, "class {:?} waits beside a free engine", class.key);
            // Nothing waits forever: with engines registered, some can run it.
            prop_assert!(
                core.engines.check(&class.key).is_ok(),
                "class {:?} can never run",
                class.key
            );
        }
    }
    let status = h.status();
    let queued: usize = core
        .queues
        .classes()
        .map(|c| {
            c.queue
                .iter()
                .filter(|&&(t, seq)| core.tasks.is_queued(t, seq))
                .count()
        })
        .sum();
    prop_assert_eq!(status.tasks.queued, queued as u64);
    let waiting = core
        .tasks
        .iter()
        .filter(|(_, t)| t.state == TaskState::Waiting)
        .count();
    prop_assert_eq!(status.tasks.waiting, waiting as u64);
    // A waiting task waits for something unfinished.
    for (id, t) in core.tasks.iter() {
        if t.state == TaskState::Waiting {
            prop_assert!(t.deps_left > 0);
            prop_assert!(core.deps.is_listed(*id, |d| core.tasks.contains(d)));
        }
    }
    prop_assert!(
        core.tasks.counts_agree(),
        "unfinished tasks per client miscounted"
    );
    prop_assert_eq!(
        status.tasks.done + status.tasks.failed,
        seen.answered.len() as u64
    );
    prop_assert_eq!(
        core.tasks.len() as u64,
        seen.submitted - seen.answered.len() as u64
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Random traffic: engines never exceed their limit nor get a task they cannot run,
    /// every task is answered exactly once, and nothing is left queued while an engine
    /// could take it. (The core also checks every pick against `SchedulerKind::pick`.)
    #[test]
    fn random_traffic_keeps_the_invariants(
        kind in prop::sample::select(SchedulerKind::ALL.to_vec()),
        limit in 0u32..4,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut h = Harness::with_scheduler(kind, Hwm::Limit(limit));
        let mut seen = Seen::default();
        for i in 0..2u8 {
            seen.ids.insert(i, h.register(UUIDS[i as usize], &offers(i)).0);
        }
        for op in ops {
            let actions = perform(&mut h, &mut seen, op);
            check_actions(&h, &mut seen, &actions)?;
            // A task re-sent elsewhere left its old engine.
            seen.running.retain(|t, e| h.core.tasks.get(*t).map(|t| t.state) == Some(TaskState::Running(*e)));
            check_state(&h, &seen, limit)?;
        }
    }
}
