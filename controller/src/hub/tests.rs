//! State-machine tests of the core: fake clock, fake engines and clients.

use super::*;
use protocol::{CommandSpec, TaskOptions};
use rand::rngs::SmallRng;
use rand::SeedableRng;

const CLIENT: &[u8] = b"client-a";
const OTHER_CLIENT: &[u8] = b"client-b";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn new_core(hwm: Hwm) -> Core {
    Core::new(
        CoreConfig {
            hwm,
            host: "ctl".into(),
            pid: 42,
            ..Default::default()
        },
        Duration::ZERO,
    )
}

fn registration(uuid: &str, functions: &[&str]) -> FromEngine {
    FromEngine::Register(Registration {
        uuid: uuid.into(),
        host: format!("host-{uuid}"),
        pid: 100,
        functions: functions.iter().map(|f| f.to_string()).collect(),
        slots: 1,
        engine_id: None,
        held: Vec::new(),
    })
}

/// Registers engine `uuid` (its route is its uuid) and returns its id and the actions.
fn register(core: &mut Core, uuid: &str, functions: &[&str]) -> (EngineId, Vec<Action>) {
    let actions = core.on_engine(
        uuid.as_bytes(),
        registration(uuid, functions),
        vec![],
        Duration::ZERO,
    );
    let id = actions
        .iter()
        .find_map(|a| match a {
            Action::ToEngine {
                msg: ToEngine::Registered { engine_id, .. },
                ..
            } => Some(*engine_id),
            _ => None,
        })
        .expect("registered");
    (id, actions)
}

fn hello(core: &mut Core, route: &[u8]) -> ClientId {
    match &core.on_client(route, FromClient::Hello, vec![], Duration::ZERO)[..] {
        [Action::ToClient {
            msg: ToClient::Welcome { client_id, .. },
            ..
        }] => *client_id,
        other => panic!("expected a welcome, got {other:?}"),
    }
}

fn tid(seq: u64) -> TaskId {
    TaskId::new(ClientId(1), seq)
}

fn call(seq: u64, function: &str) -> TaskRequest {
    TaskRequest {
        id: tid(seq),
        work: Work::Call {
            function: function.into(),
        },
        options: TaskOptions::default(),
    }
}

fn with(mut req: TaskRequest, targets: &[u32], retries: u32) -> TaskRequest {
    req.options.targets = targets.iter().map(|&t| EngineId(t)).collect();
    req.options.retries = retries;
    req
}

fn payload_of(id: TaskId) -> Vec<u8> {
    format!("arg-{id}").into_bytes()
}

fn submit(core: &mut Core, reqs: Vec<TaskRequest>) -> Vec<Action> {
    let payloads = reqs.iter().map(|r| payload_of(r.id)).collect();
    core.on_client(
        CLIENT,
        FromClient::Submit { tasks: reqs },
        payloads,
        Duration::ZERO,
    )
}

/// The `Tasks` messages among `actions`: engine, task ids, payloads.
fn sent(actions: &[Action]) -> Vec<(EngineId, Vec<TaskId>, Vec<Vec<u8>>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToEngine {
                engine,
                msg: ToEngine::Tasks { tasks },
                payloads,
                ..
            } => Some((
                *engine,
                tasks.iter().map(|t| t.id).collect(),
                payloads.iter().map(|p| p.to_vec()).collect(),
            )),
            _ => None,
        })
        .collect()
}

/// Tasks sent per engine, flattened.
fn sent_to(actions: &[Action]) -> Vec<(EngineId, TaskId)> {
    sent(actions)
        .into_iter()
        .flat_map(|(e, ids, _)| ids.into_iter().map(move |t| (e, t)))
        .collect()
}

/// The `Results` messages to clients among `actions`.
fn delivered(actions: &[Action]) -> Vec<(Route, Vec<TaskOutcome>, Vec<Vec<u8>>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToClient {
                route,
                msg: ToClient::Results { results },
                payloads,
            } => Some((
                route.clone(),
                results.clone(),
                payloads.iter().map(|p| p.to_vec()).collect(),
            )),
            _ => None,
        })
        .collect()
}

fn error_of(outcome: &TaskOutcome) -> &TaskError {
    match &outcome.status {
        Status::Err(e) => e,
        Status::Ok => panic!("task {} succeeded", outcome.id),
    }
}

/// Engine `uuid` reports success for `ids`, each having run `elapsed_us`.
fn finish(core: &mut Core, uuid: &str, ids: &[TaskId], elapsed_us: u64) -> Vec<Action> {
    let results = ids
        .iter()
        .map(|&id| TaskOutcome {
            id,
            engine: None,
            status: Status::Ok,
            started_us: 1,
            elapsed_us,
        })
        .collect();
    let payloads = ids
        .iter()
        .map(|id| format!("res-{id}").into_bytes())
        .collect();
    core.on_engine(
        uuid.as_bytes(),
        FromEngine::Results { results },
        payloads,
        Duration::ZERO,
    )
}

/// The first task sent to an engine among `actions`, as the engine gets it.
fn first_assignment(actions: &[Action]) -> Option<Assignment> {
    actions.iter().find_map(|a| match a {
        Action::ToEngine {
            msg: ToEngine::Tasks { tasks },
            ..
        } => tasks.first().cloned(),
        _ => None,
    })
}

fn engine_status(core: &Core, id: u32) -> EngineStatus {
    core.status(Duration::ZERO)
        .engines
        .into_iter()
        .find(|e| e.id == EngineId(id))
        .expect("engine in status")
}

#[test]
fn registration_gives_ids_in_order_and_reregistration_keeps_them() {
    let mut core = new_core(Hwm::Auto);
    let (a, actions) = register(&mut core, "a", &["f"]);
    assert_eq!(a, EngineId(0));
    assert!(actions.iter().any(|x| matches!(
        x,
        Action::ToEngine { msg: ToEngine::Registered { heartbeat_period_ms: 1000, .. }, route, .. } if route == b"a"
    )));
    assert!(actions.iter().any(|x| matches!(
        x,
        Action::Publish(Notification::EngineJoined(info)) if info.id == a && info.host == "host-a"
    )));
    let (b, _) = register(&mut core, "b", &["f"]);
    assert_eq!(b, EngineId(1));

    // Re-registration while alive, and after leaving, keeps the id.
    assert_eq!(register(&mut core, "a", &["f", "g"]).0, a);
    let left = core.on_engine(b"a", FromEngine::Unregister, vec![], Duration::ZERO);
    assert!(left.contains(&Action::Publish(Notification::EngineLeft {
        id: a,
        reason: "unregistered".into()
    })));
    assert_eq!(register(&mut core, "c", &[]).0, EngineId(2));
    assert_eq!(register(&mut core, "a", &["f"]).0, a);
    let ids: Vec<_> = core
        .status(Duration::ZERO)
        .engines
        .iter()
        .map(|e| e.id.0)
        .collect();
    assert_eq!(ids, [0, 1, 2]);

    // A registration without an identity is refused, not numbered.
    let refused = core.on_engine(b"x", registration("", &[]), vec![], Duration::ZERO);
    assert!(matches!(
        &refused[..],
        [Action::ToEngine {
            msg: ToEngine::Refused { .. },
            ..
        }]
    ));
}

#[test]
fn clients_get_ids_and_the_engine_list() {
    let mut core = new_core(Hwm::Auto);
    register(&mut core, "a", &["f"]);
    assert_eq!(hello(&mut core, CLIENT), ClientId(1));
    assert_eq!(hello(&mut core, OTHER_CLIENT), ClientId(2));
    assert_eq!(hello(&mut core, CLIENT), ClientId(1), "same connection");
    let welcome = core.on_client(b"c3", FromClient::Hello, vec![], Duration::ZERO);
    match &welcome[..] {
        [Action::ToClient {
            route,
            msg: ToClient::Welcome {
                client_id, engines, ..
            },
            ..
        }] => {
            assert_eq!(route, b"c3");
            assert_eq!(*client_id, ClientId(3));
            assert_eq!(engines.len(), 1);
            assert_eq!(engines[0].functions, ["f"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(core.status(Duration::ZERO).controller.clients, 3);
}

#[test]
fn leastload_picks_fewest_outstanding_then_least_recently_assigned() {
    let mut core = new_core(Hwm::Limit(0));
    for uuid in ["a", "b", "c"] {
        register(&mut core, uuid, &["f"]);
    }
    let mut next = 0;
    let mut one = |core: &mut Core| {
        next += 1;
        let actions = submit(core, vec![call(next, "f")]);
        let to = sent_to(&actions);
        assert_eq!(to.len(), 1);
        to[0].0 .0
    };
    // All idle: ties go to the never-assigned, lowest id first.
    assert_eq!(one(&mut core), 0);
    assert_eq!(one(&mut core), 1);
    assert_eq!(one(&mut core), 2);
    // All hold one: least recently assigned is engine 0.
    assert_eq!(one(&mut core), 0);
    // Engine 1 finishes its task: it is now the least loaded.
    finish(&mut core, "b", &[tid(2)], 10);
    assert_eq!(one(&mut core), 1);
    // 0 holds 2, 1 and 2 hold 1: 2 was assigned before 1.
    assert_eq!(one(&mut core), 2);
    assert_eq!(one(&mut core), 1);
}

#[test]
fn tasks_of_one_pass_go_to_each_engine_as_one_message() {
    let mut core = new_core(Hwm::Limit(0));
    register(&mut core, "a", &["f"]);
    register(&mut core, "b", &["f"]);
    let actions = submit(&mut core, (1..=10).map(|i| call(i, "f")).collect());
    let batches = sent(&actions);
    assert_eq!(batches.len(), 2, "one Tasks message per engine");
    for (engine, ids, payloads) in &batches {
        assert_eq!(ids.len(), 5, "engine {engine} gets half");
        // Positional payloads, moved untouched.
        for (id, p) in ids.iter().zip(payloads) {
            assert_eq!(p, &payload_of(*id));
        }
    }
    // Results of one message go back to the client as one message, each stored.
    let (_, ids, _) = &batches[0];
    let uuid = if batches[0].0 == EngineId(0) {
        "a"
    } else {
        "b"
    };
    let back = finish(&mut core, uuid, ids, 5);
    let msgs = delivered(&back);
    assert_eq!(msgs.len(), 1);
    let (route, outcomes, payloads) = &msgs[0];
    assert_eq!(route, CLIENT);
    assert_eq!(outcomes.len(), 5);
    assert!(outcomes.iter().all(|o| o.engine == Some(batches[0].0)));
    assert_eq!(payloads[0], format!("res-{}", outcomes[0].id).into_bytes());
    assert_eq!(core.status(Duration::ZERO).tasks.stored, 5);
}

#[test]
fn results_go_to_the_connection_that_submitted_them() {
    let mut core = new_core(Hwm::Limit(0));
    register(&mut core, "a", &["f"]);
    submit(&mut core, vec![call(1, "f")]);
    core.on_client(
        OTHER_CLIENT,
        FromClient::Submit {
            tasks: vec![call(2, "f")],
        },
        vec![b"x".to_vec()],
        Duration::ZERO,
    );
    let back = finish(&mut core, "a", &[tid(1), tid(2)], 5);
    let msgs = delivered(&back);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].0, CLIENT);
    assert_eq!(msgs[0].1[0].id, tid(1));
    assert_eq!(msgs[1].0, OTHER_CLIENT);
    assert_eq!(msgs[1].1[0].id, tid(2));
}

#[test]
fn hwm_limit_one_keeps_one_outstanding_and_drains_as_results_return() {
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "a", &["f"]);
    let actions = submit(&mut core, (1..=5).map(|i| call(i, "f")).collect());
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(1))]);
    let status = core.status(Duration::ZERO);
    assert_eq!((status.tasks.queued, status.tasks.running), (4, 1));
    assert_eq!(status.engines[0].hwm, 1);
    for i in 1..=4 {
        let actions = finish(&mut core, "a", &[tid(i)], 1);
        assert_eq!(sent_to(&actions), [(EngineId(0), tid(i + 1))], "in order");
        assert_eq!(engine_status(&core, 0).outstanding, 1);
    }
    let actions = finish(&mut core, "a", &[tid(5)], 1);
    assert!(sent(&actions).is_empty());
    let status = core.status(Duration::ZERO);
    assert_eq!((status.tasks.queued, status.tasks.running), (0, 0));
    assert_eq!(status.tasks.done, 5);
    assert_eq!(status.engines[0].completed, 5);
}

#[test]
fn auto_hwm_grows_for_short_tasks_and_stays_one_for_long_ones() {
    let mut core = new_core(Hwm::Auto);
    register(&mut core, "short", &["f"]);
    let actions = submit(&mut core, (1..=1000).map(|i| call(i, "f")).collect());
    assert_eq!(sent_to(&actions).len(), 1, "no samples yet: one at a time");
    assert_eq!(engine_status(&core, 0).hwm, 1);
    // 10 µs tasks: the limit doubles with each result (slow start) up to
    // budget 2 ms / 10 µs = 200 in flight.
    let actions = finish(&mut core, "short", &[tid(1)], 10);
    let batches = sent(&actions);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].1.len(), 2);
    assert_eq!(engine_status(&core, 0).hwm, 2);
    let actions = finish(&mut core, "short", &[tid(2), tid(3)], 10);
    assert_eq!(sent(&actions)[0].1.len(), 8, "two results: 2 → 4 → 8");
    for i in 4..=11 {
        finish(&mut core, "short", &[tid(i)], 10);
    }
    assert_eq!(engine_status(&core, 0).hwm, 200);
    assert_eq!(engine_status(&core, 0).outstanding, 200);

    let mut core = new_core(Hwm::Auto);
    register(&mut core, "long", &["f"]);
    submit(&mut core, (1..=5).map(|i| call(i, "f")).collect());
    for i in 1..=4 {
        let actions = finish(&mut core, "long", &[tid(i)], 500_000);
        assert_eq!(sent_to(&actions), [(EngineId(0), tid(i + 1))]);
        assert_eq!(engine_status(&core, 0).hwm, 1);
    }
}

#[test]
fn unknown_function_fails_fast_naming_what_is_offered() {
    let mut core = new_core(Hwm::Auto);
    register(&mut core, "a", &["noop", "echo"]);
    register(&mut core, "b", &["sleep"]);
    let actions = submit(&mut core, vec![call(1, "nth_prime")]);
    assert!(sent(&actions).is_empty());
    let msgs = delivered(&actions);
    let err = error_of(&msgs[0].1[0]);
    assert_eq!(err.kind, ErrorKind::UnknownFunction);
    assert!(err.message.contains("\"nth_prime\""), "{}", err.message);
    assert!(err.message.contains("echo, noop, sleep"), "{}", err.message);
    assert_eq!(
        msgs[1 - 1].2,
        [Vec::<u8>::new()],
        "empty payload for a failure"
    );
    // The failure is stored like any result.
    let fetched = core.on_client(
        CLIENT,
        FromClient::Fetch { ids: vec![tid(1)] },
        vec![],
        Duration::ZERO,
    );
    assert_eq!(delivered(&fetched).len(), 1);

    // Commands run on any engine.
    let cmd = TaskRequest {
        id: tid(2),
        work: Work::Command(CommandSpec {
            program: "true".into(),
            ..Default::default()
        }),
        options: TaskOptions::default(),
    };
    assert_eq!(sent_to(&submit(&mut core, vec![cmd])).len(), 1);
}

#[test]
fn with_no_engine_tasks_wait_and_run_when_one_registers() {
    let mut core = new_core(Hwm::Auto);
    let actions = submit(&mut core, vec![call(1, "f"), call(2, "g")]);
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(core.status(Duration::ZERO).tasks.queued, 2);
    // An engine offering only f: the f task runs, the g task can never run and fails.
    let (_, actions) = register(&mut core, "a", &["f"]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(1))]);
    let msgs = delivered(&actions);
    assert_eq!(msgs[0].1[0].id, tid(2));
    assert_eq!(error_of(&msgs[0].1[0]).kind, ErrorKind::UnknownFunction);
}

#[test]
fn targets_are_honoured_and_missing_targets_fail() {
    let mut core = new_core(Hwm::Limit(0));
    register(&mut core, "a", &["f"]);
    register(&mut core, "b", &["f"]);
    register(&mut core, "c", &["g"]);
    // Engine 1 is busier than 0 but it is the only target.
    submit(&mut core, vec![with(call(1, "f"), &[1], 0)]);
    let actions = submit(&mut core, vec![with(call(2, "f"), &[1], 0)]);
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(2))]);
    // Targets that do not exist are dropped if another target exists…
    let actions = submit(&mut core, vec![with(call(3, "f"), &[0, 7], 0)]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(3))]);
    // …and fail the task if none does.
    let actions = submit(&mut core, vec![with(call(4, "f"), &[7, 9], 0)]);
    let err = error_of(&delivered(&actions)[0].1[0]).clone();
    assert_eq!(err.kind, ErrorKind::Unschedulable);
    assert!(err.message.contains("7, 9"), "{}", err.message);
    // A target that exists but lacks the function.
    let actions = submit(&mut core, vec![with(call(5, "f"), &[2], 0)]);
    let err = error_of(&delivered(&actions)[0].1[0]).clone();
    assert_eq!(err.kind, ErrorKind::UnknownFunction);
    assert!(err.message.contains("they offer: g"), "{}", err.message);
}

#[test]
fn queued_targeted_task_fails_when_its_target_leaves() {
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "a", &["f"]);
    register(&mut core, "b", &["f"]);
    submit(&mut core, vec![with(call(1, "f"), &[1], 0)]);
    let actions = submit(&mut core, vec![with(call(2, "f"), &[1], 0)]);
    assert!(sent(&actions).is_empty(), "engine 1 is full");
    let actions = core.on_engine(b"b", FromEngine::Unregister, vec![], Duration::ZERO);
    let kinds: Vec<_> = delivered(&actions)
        .into_iter()
        .flat_map(|(_, o, _)| o)
        .map(|o| (o.id, error_of(&o).kind))
        .collect();
    assert!(kinds.contains(&(tid(1), ErrorKind::EngineLost)));
    assert!(kinds.contains(&(tid(2), ErrorKind::Unschedulable)));
    assert_eq!(core.status(Duration::ZERO).tasks.queued, 0);
}

#[test]
fn engine_leaving_retries_elsewhere_or_fails_with_engine_lost() {
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "a", &["f"]);
    register(&mut core, "b", &["f"]);
    let actions = submit(&mut core, vec![with(call(1, "f"), &[], 1), call(2, "f")]);
    assert_eq!(
        sent_to(&actions),
        [(EngineId(0), tid(1)), (EngineId(1), tid(2))]
    );
    // Engine 1 finishes, engine 0 leaves: task 1 is re-sent to 1 with its payload.
    finish(&mut core, "b", &[tid(2)], 10);
    let actions = core.on_engine(b"a", FromEngine::Unregister, vec![], Duration::ZERO);
    let batches = sent(&actions);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].0, EngineId(1));
    assert_eq!(batches[0].1, [tid(1)]);
    assert_eq!(batches[0].2, [payload_of(tid(1))]);
    assert!(delivered(&actions).is_empty());

    // Without retries: EngineLost naming the engine and its host.
    let actions = submit(&mut core, vec![call(3, "f")]);
    assert!(sent(&actions).is_empty(), "engine 1 is busy");
    finish(&mut core, "b", &[tid(1)], 10);
    let actions = core.on_engine(b"b", FromEngine::Unregister, vec![], Duration::ZERO);
    let msgs = delivered(&actions);
    let outcome = &msgs[0].1[0];
    assert_eq!(outcome.id, tid(3));
    let err = error_of(outcome);
    assert_eq!(err.kind, ErrorKind::EngineLost);
    assert_eq!(err.engine, Some(EngineId(1)));
    assert!(
        err.message.contains("engine 1") && err.message.contains("host-b"),
        "{}",
        err.message
    );
}

#[test]
fn retries_never_reuse_an_engine_and_fail_when_none_is_left() {
    let mut core = new_core(Hwm::Limit(0));
    register(&mut core, "a", &["f"]);
    register(&mut core, "b", &["f"]);
    let actions = submit(&mut core, vec![with(call(1, "f"), &[], 5)]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(1))]);
    let actions = core.on_engine(b"a", FromEngine::Unregister, vec![], Duration::ZERO);
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(1))]);
    // Engine 0 comes back while the task runs on 1; then 1 dies. Engine 0 is blacklisted.
    register(&mut core, "a", &["f"]);
    let actions = core.on_engine(b"b", FromEngine::Unregister, vec![], Duration::ZERO);
    assert!(sent(&actions).is_empty());
    let msgs = delivered(&actions);
    let err = error_of(&msgs[0].1[0]);
    assert_eq!(err.kind, ErrorKind::EngineLost);
    assert!(err.message.contains("0, 1"), "{}", err.message);
}

#[test]
fn retried_task_waits_while_no_engine_is_registered() {
    let mut core = new_core(Hwm::Limit(0));
    register(&mut core, "a", &["f"]);
    submit(&mut core, vec![with(call(1, "f"), &[], 1)]);
    let actions = core.on_engine(b"a", FromEngine::Unregister, vec![], Duration::ZERO);
    assert!(delivered(&actions).is_empty());
    assert_eq!(core.status(Duration::ZERO).tasks.queued, 1);
    let (_, actions) = register(&mut core, "b", &["f"]);
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(1))]);
}

#[test]
fn late_and_duplicate_results_are_ignored() {
    let mut core = new_core(Hwm::Limit(0));
    register(&mut core, "a", &["f"]);
    register(&mut core, "b", &["f"]);
    submit(&mut core, vec![with(call(1, "f"), &[0], 0)]);
    submit(&mut core, vec![with(call(2, "f"), &[], 1)]);
    // Task 2 went to engine 1 (engine 0 was busier). Engine 1 leaves, comes back.
    core.on_engine(b"b", FromEngine::Unregister, vec![], Duration::ZERO);
    // Its result while gone is ignored…
    assert!(finish(&mut core, "b", &[tid(2)], 1).is_empty());
    register(&mut core, "b", &["f"]);
    // …task 2 was retried on engine 0; a late result from engine 1 is still ignored.
    let actions = finish(&mut core, "b", &[tid(2)], 1);
    assert!(delivered(&actions).is_empty());
    let actions = finish(&mut core, "a", &[tid(1), tid(2)], 1);
    assert_eq!(delivered(&actions)[0].1.len(), 2);
    // A duplicate from the right engine is ignored too.
    assert!(delivered(&finish(&mut core, "a", &[tid(2)], 1)).is_empty());
    assert_eq!(core.status(Duration::ZERO).tasks.done, 2);
    // Results from a stranger are dropped.
    assert!(finish(&mut core, "zz", &[tid(1)], 1).is_empty());
}

#[test]
fn heartbeat_misses_make_an_engine_unresponsive_then_dead() {
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "a", &["f"]);
    register(&mut core, "b", &["f"]);
    submit(&mut core, vec![call(1, "f"), call(2, "f")]);
    assert_eq!(core.next_tick(), secs(1));
    assert!(core.on_tick(Duration::from_millis(999)).is_empty());
    let pong = |core: &mut Core, uuid: &str, seq| {
        core.on_heartbeat(
            uuid.as_bytes(),
            Heartbeat::Pong {
                seq,
                uuid: uuid.into(),
            },
            Duration::ZERO,
        )
    };
    for n in 1..=6u64 {
        let actions = core.on_tick(secs(n));
        let pings: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Ping { route, seq, .. } => Some((route.clone(), *seq)),
                _ => None,
            })
            .collect();
        match n {
            1..=3 => {
                assert_eq!(pings, [(b"a".to_vec(), n), (b"b".to_vec(), n)]);
                assert!(!actions.iter().any(|a| matches!(a, Action::Publish(_))));
            }
            4 => {
                // b has not answered pings 1, 2, 3: dead, its task fails.
                assert!(actions.contains(&Action::Publish(Notification::EngineLeft {
                    id: EngineId(1),
                    reason: "heartbeat".into()
                })));
                let msgs = delivered(&actions);
                assert_eq!(msgs[0].1[0].id, tid(2));
                assert_eq!(error_of(&msgs[0].1[0]).kind, ErrorKind::EngineLost);
                assert_eq!(pings, [(b"a".to_vec(), 4)]);
            }
            _ => assert_eq!(pings.len(), 1),
        }
        if n == 2 {
            assert_eq!(engine_status(&core, 1).state, "unresponsive");
            assert_eq!(engine_status(&core, 0).state, "alive");
        }
        pong(&mut core, "a", n);
    }
    assert_eq!(core.status(Duration::ZERO).engines.len(), 1);
    // Pongs for rounds not yet sent are ignored.
    pong(&mut core, "a", 99);
    core.on_tick(secs(7));
    core.on_tick(secs(8));
    assert_eq!(engine_status(&core, 0).state, "unresponsive");
}

#[test]
fn a_late_loop_does_not_fire_a_burst_of_pings() {
    let mut core = new_core(Hwm::Auto);
    register(&mut core, "a", &[]);
    core.on_tick(secs(10));
    assert_eq!(core.next_tick(), secs(11));
    assert_eq!(
        core.status(Duration::ZERO).engines.len(),
        1,
        "one miss only"
    );
}

#[test]
fn fetch_answers_results_and_pending_and_purge_forgets() {
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "a", &["f"]);
    submit(&mut core, vec![call(1, "f"), call(2, "f"), call(3, "f")]);
    finish(&mut core, "a", &[tid(1)], 1);
    let fetch = |core: &mut Core, ids: Vec<TaskId>| {
        core.on_client(CLIENT, FromClient::Fetch { ids }, vec![], Duration::ZERO)
    };
    let actions = fetch(&mut core, vec![tid(1), tid(2), tid(3), tid(9)]);
    assert_eq!(actions.len(), 2);
    let msgs = delivered(&actions);
    assert_eq!(msgs[0].1[0].id, tid(1));
    assert_eq!(msgs[0].2, [b"res-1:1".to_vec()]);
    assert!(actions.contains(&Action::ToClient {
        route: CLIENT.to_vec(),
        msg: ToClient::Pending {
            pending: vec![tid(2), tid(3)],
            unknown: vec![tid(9)]
        },
        payloads: vec![]
    }));
    // Always an answer, even for nothing.
    assert!(matches!(
        &fetch(&mut core, vec![])[..],
        [Action::ToClient {
            msg: ToClient::Pending { .. },
            ..
        }]
    ));

    let purge = |core: &mut Core, ids| {
        core.on_client(CLIENT, FromClient::Purge { ids }, vec![], Duration::ZERO)
    };
    assert!(matches!(
        &purge(&mut core, vec![tid(1)])[..],
        [Action::ToClient {
            msg: ToClient::Ack,
            ..
        }]
    ));
    let actions = fetch(&mut core, vec![tid(1)]);
    assert!(delivered(&actions).is_empty());
    finish(&mut core, "a", &[tid(2)], 1);
    finish(&mut core, "a", &[tid(3)], 1);
    assert_eq!(core.status(Duration::ZERO).tasks.stored, 2);
    purge(&mut core, vec![]);
    assert_eq!(core.status(Duration::ZERO).tasks.stored, 0);
}

#[test]
fn status_reports_controller_engines_tasks_and_drops() {
    let mut core = Core::new(
        CoreConfig {
            hwm: Hwm::Limit(4),
            host: "ctl".into(),
            pid: 42,
            addresses: Addresses {
                client: Some("tcp://127.0.0.1:1".into()),
                ..Default::default()
            },
            ..Default::default()
        },
        secs(5),
    );
    register(&mut core, "b", &["f"]);
    register(&mut core, "a", &["f"]);
    hello(&mut core, CLIENT);
    submit(&mut core, vec![call(1, "f")]);
    core.set_dropped(DropCounts {
        replayed: 3,
        ..Default::default()
    });
    let actions = core.on_client(CLIENT, FromClient::Status, vec![], secs(7));
    let [Action::ToClient {
        msg: ToClient::Status(report),
        ..
    }] = &actions[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(report.controller.pid, 42);
    assert_eq!(report.controller.scheduler, "leastload");
    assert_eq!(report.controller.hwm, "4");
    assert_eq!(report.controller.client_address, "tcp://127.0.0.1:1");
    assert_eq!(report.controller.uptime_s, 2.0);
    assert_eq!(report.controller.clients, 1);
    let engines: Vec<_> = report
        .engines
        .iter()
        .map(|e| (e.id.0, e.host.as_str(), e.outstanding, e.hwm))
        .collect();
    assert_eq!(engines, [(0, "host-b", 1, 4), (1, "host-a", 0, 4)]);
    assert_eq!(report.tasks.running, 1);
    assert_eq!(report.dropped.total(), 3);
}

#[test]
fn shutdown_tells_every_engine_and_stops_when_asked() {
    let mut core = new_core(Hwm::Auto);
    register(&mut core, "a", &[]);
    register(&mut core, "b", &[]);
    let shutdown = |core: &mut Core, controller| {
        core.on_client(
            CLIENT,
            FromClient::Shutdown { controller },
            vec![],
            Duration::ZERO,
        )
    };
    let actions = shutdown(&mut core, false);
    let engines: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::ToEngine {
                engine,
                msg: ToEngine::Shutdown,
                ..
            } => Some(engine.0),
            _ => None,
        })
        .collect();
    assert_eq!(engines, [0, 1]);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::ToClient {
            msg: ToClient::Ack,
            ..
        }
    )));
    assert!(!actions.contains(&Action::Stop));
    assert_eq!(shutdown(&mut core, true).last(), Some(&Action::Stop));
}

#[test]
fn unreachable_engine_is_gone_and_unreachable_client_gets_nothing_more() {
    let mut core = new_core(Hwm::Limit(0));
    register(&mut core, "a", &["f"]);
    register(&mut core, "b", &["f"]);
    submit(&mut core, vec![with(call(1, "f"), &[], 1)]);
    let actions = core.on_engine_unreachable(EngineId(0), Duration::ZERO);
    assert!(actions.contains(&Action::Publish(Notification::EngineLeft {
        id: EngineId(0),
        reason: "unreachable".into()
    })));
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(1))]);

    core.on_client_unreachable(CLIENT);
    let actions = finish(&mut core, "b", &[tid(1)], 1);
    assert!(delivered(&actions).is_empty());
    // Stored all the same, for a fetch; a client that speaks again gets results again.
    let actions = core.on_client(
        CLIENT,
        FromClient::Fetch { ids: vec![tid(1)] },
        vec![],
        Duration::ZERO,
    );
    assert_eq!(delivered(&actions).len(), 1);
    submit(&mut core, vec![call(2, "f")]);
    assert_eq!(delivered(&finish(&mut core, "b", &[tid(2)], 1)).len(), 1);
}

#[test]
fn bad_submissions_are_answered_not_lost() {
    let mut core = new_core(Hwm::Limit(0));
    register(&mut core, "a", &["f"]);
    // Payload count mismatch: every task fails with BadArguments.
    let actions = core.on_client(
        CLIENT,
        FromClient::Submit {
            tasks: vec![call(1, "f"), call(2, "f")],
        },
        vec![b"only one".to_vec()],
        Duration::ZERO,
    );
    let outcomes = &delivered(&actions)[0].1;
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes
        .iter()
        .all(|o| error_of(o).kind == ErrorKind::BadArguments));
    // Submitting a task again is harmless (a client after a controller restart does): an
    // unfinished one runs once, a finished one is answered with its stored result.
    submit(&mut core, vec![call(3, "f")]);
    let actions = submit(&mut core, vec![call(1, "f"), call(3, "f"), call(4, "f")]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(4))]);
    assert!(!actions.iter().any(|a| matches!(
        a,
        Action::ToClient {
            msg: ToClient::Error { .. },
            ..
        }
    )));
    let outcomes = &delivered(&actions)[0].1;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(error_of(&outcomes[0]).kind, ErrorKind::BadArguments);
    // Submitted again from another connection, its result goes there.
    let actions = core.on_client(
        OTHER_CLIENT,
        FromClient::Submit {
            tasks: vec![call(3, "f")],
        },
        vec![payload_of(tid(3))],
        Duration::ZERO,
    );
    assert!(sent_to(&actions).is_empty());
    let msgs = delivered(&finish(&mut core, "a", &[tid(3)], 1));
    assert_eq!(msgs[0].0, OTHER_CLIENT);
}

#[test]
fn classes_are_served_in_submission_order() {
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "a", &["f", "g"]);
    // Interleaved functions make separate queues; a free slot takes the oldest head.
    submit(
        &mut core,
        vec![call(1, "f"), call(2, "g"), call(3, "f"), call(4, "g")],
    );
    let mut order = vec![tid(1)];
    for _ in 0..3 {
        let last = *order.last().unwrap();
        let actions = finish(&mut core, "a", &[last], 1);
        order.push(sent_to(&actions)[0].1);
    }
    assert_eq!(order, [tid(1), tid(2), tid(3), tid(4)]);
}

#[test]
fn ten_thousand_queued_tasks_drain_one_by_one() {
    // Would take minutes if a result scanned the queue.
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "a", &["f"]);
    register(&mut core, "b", &["f"]);
    let n = 10_000;
    let actions = submit(&mut core, (1..=n).map(|i| call(i, "f")).collect());
    let mut running: Vec<(EngineId, TaskId)> = sent_to(&actions);
    let mut done = 0;
    while let Some((engine, task)) = running.pop() {
        let uuid = if engine == EngineId(0) { "a" } else { "b" };
        let actions = finish(&mut core, uuid, &[task], 1);
        done += delivered(&actions).len();
        running.extend(sent_to(&actions));
    }
    assert_eq!(done as u64, n);
    assert_eq!(core.status(Duration::ZERO).tasks.done, n);
}

// ----- schedulers in the core -----

fn core_with(scheduler: SchedulerKind, hwm: Hwm) -> Core {
    Core::new(
        CoreConfig {
            scheduler,
            hwm,
            host: "ctl".into(),
            pid: 42,
            seed: 7,
            ..Default::default()
        },
        Duration::ZERO,
    )
}

/// Submits one task `seq` of `f` and returns the engine it went to, if any.
fn one_to(core: &mut Core, seq: u64) -> Option<u32> {
    let to = sent_to(&submit(core, vec![call(seq, "f")]));
    assert!(to.len() <= 1);
    to.first().map(|(e, _)| e.0)
}

#[test]
fn lru_takes_the_least_recently_assigned_even_if_busier() {
    let mut core = core_with(SchedulerKind::Lru, Hwm::Limit(0));
    for uuid in ["a", "b", "c"] {
        register(&mut core, uuid, &["f"]);
    }
    assert_eq!(core.status(Duration::ZERO).controller.scheduler, "lru");
    let picks: Vec<u32> = (1..=6).map(|i| one_to(&mut core, i).unwrap()).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    // Engine 2 finishes everything: leastload would pick it, lru still takes 0.
    finish(&mut core, "c", &[tid(3), tid(6)], 5);
    assert_eq!(one_to(&mut core, 7), Some(0));
}

#[test]
fn random_schedulers_spread_over_every_engine_and_respect_limits() {
    for kind in [
        SchedulerKind::PlainRandom,
        SchedulerKind::TwoBin,
        SchedulerKind::Weighted,
    ] {
        let mut core = core_with(kind, Hwm::Limit(0));
        for uuid in ["a", "b", "c", "d"] {
            register(&mut core, uuid, &["f"]);
        }
        let mut counts = [0u32; 4];
        for seq in 1..=400 {
            let e = one_to(&mut core, seq).unwrap();
            counts[e as usize] += 1;
            // Finish at once so that loads stay level (weighted favours idle engines).
            finish(&mut core, ["a", "b", "c", "d"][e as usize], &[tid(seq)], 5);
        }
        assert!(counts.iter().all(|&c| c > 40), "{kind}: {counts:?}");

        // With a limit of one, nobody ever gets a second task.
        let mut core = core_with(kind, Hwm::Limit(1));
        for uuid in ["a", "b", "c"] {
            register(&mut core, uuid, &["f"]);
        }
        let actions = submit(&mut core, (1..=5).map(|i| call(i, "f")).collect());
        let mut to: Vec<u32> = sent_to(&actions).iter().map(|(e, _)| e.0).collect();
        to.sort();
        assert_eq!(to, [0, 1, 2], "{kind}");
        assert_eq!(core.status(Duration::ZERO).tasks.queued, 2);
    }
}

#[test]
fn weighted_prefers_idle_engines() {
    let mut core = core_with(SchedulerKind::Weighted, Hwm::Limit(0));
    for uuid in ["a", "b", "c"] {
        register(&mut core, uuid, &["f"]);
    }
    // Load 0 and 1 with three tasks each (targeted), leave 2 idle.
    let mut reqs = Vec::new();
    for i in 0..6 {
        reqs.push(with(call(100 + i, "f"), &[(i % 2) as u32], 0));
    }
    submit(&mut core, reqs);
    for seq in 1..=50 {
        assert_eq!(one_to(&mut core, seq), Some(2));
        finish(&mut core, "c", &[tid(seq)], 5);
    }
}

// ----- retries after failures -----

/// Engine `uuid` reports failures of `kind` for `ids`.
fn fail(core: &mut Core, uuid: &str, ids: &[TaskId], kind: ErrorKind) -> Vec<Action> {
    let results = ids
        .iter()
        .map(|&id| failure(id, None, kind, format!("{kind} on {uuid}")))
        .collect();
    core.on_engine(
        uuid.as_bytes(),
        FromEngine::Results { results },
        ids.iter().map(|_| Vec::new()).collect(),
        Duration::ZERO,
    )
}

#[test]
fn a_failed_task_with_retries_runs_again_elsewhere_then_reports_its_last_error() {
    let mut core = new_core(Hwm::Limit(1));
    for uuid in ["a", "b", "c"] {
        register(&mut core, uuid, &["f"]);
    }
    let actions = submit(&mut core, vec![with(call(1, "f"), &[], 1)]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(1))]);
    let actions = fail(&mut core, "a", &[tid(1)], ErrorKind::Remote);
    assert!(delivered(&actions).is_empty(), "retried, not reported");
    let batches = sent(&actions);
    assert_eq!(batches.len(), 1);
    assert_ne!(batches[0].0, EngineId(0), "never the engine it failed on");
    assert_eq!(batches[0].2, [payload_of(tid(1))], "same argument");
    let second = ["a", "b", "c"][batches[0].0 .0 as usize];
    // Out of retries: the real error is delivered.
    let actions = fail(&mut core, second, &[tid(1)], ErrorKind::Remote);
    let msgs = delivered(&actions);
    let err = error_of(&msgs[0].1[0]);
    assert_eq!(err.kind, ErrorKind::Remote);
    assert_eq!(err.message, format!("remote error on {second}"));
    let q = core.queue_status();
    assert_eq!(q.engines.iter().map(|e| e.failed).sum::<u64>(), 2);

    // Bad arguments fail the same way on any engine: no retry.
    let actions = submit(&mut core, vec![with(call(2, "f"), &[], 3)]);
    let (e, _) = sent_to(&actions)[0];
    let actions = fail(
        &mut core,
        ["a", "b", "c"][e.0 as usize],
        &[tid(2)],
        ErrorKind::BadArguments,
    );
    assert_eq!(
        error_of(&delivered(&actions)[0].1[0]).kind,
        ErrorKind::BadArguments
    );
}

#[test]
fn a_failed_task_with_no_other_engine_reports_its_error() {
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "a", &["f"]);
    submit(&mut core, vec![with(call(1, "f"), &[], 2)]);
    let actions = fail(&mut core, "a", &[tid(1)], ErrorKind::Timeout);
    assert_eq!(
        error_of(&delivered(&actions)[0].1[0]).kind,
        ErrorKind::Timeout
    );
}

// ----- dependencies -----

fn after(mut req: TaskRequest, deps: &[u64]) -> TaskRequest {
    req.options.after = deps.iter().map(|&d| tid(d)).collect();
    req
}

fn follow(mut req: TaskRequest, deps: &[u64]) -> TaskRequest {
    req.options.follow = deps.iter().map(|&d| tid(d)).collect();
    req
}

#[test]
fn after_waits_for_its_dependencies_to_succeed() {
    let mut core = new_core(Hwm::Limit(0));
    register(&mut core, "a", &["f"]);
    register(&mut core, "b", &["f"]);
    let actions = submit(
        &mut core,
        vec![call(1, "f"), call(2, "f"), after(call(3, "f"), &[1, 2])],
    );
    let to = sent_to(&actions);
    assert_eq!(to.len(), 2, "3 waits: {to:?}");
    let status = core.status(Duration::ZERO);
    assert_eq!((status.tasks.waiting, status.tasks.queued), (1, 0));
    assert_eq!(core.queue_status().waiting, 1);
    let actions = finish(&mut core, "a", &[tid(1)], 5);
    assert!(sent(&actions).is_empty(), "still waits for 2");
    let actions = finish(&mut core, "b", &[tid(2)], 5);
    assert_eq!(sent_to(&actions).len(), 1);
    assert_eq!(sent_to(&actions)[0].1, tid(3));
    assert_eq!(core.status(Duration::ZERO).tasks.waiting, 0);

    // A dependency that finished long ago is met at once.
    let actions = submit(&mut core, vec![after(call(4, "f"), &[1])]);
    assert_eq!(sent_to(&actions).len(), 1);
}

#[test]
fn dependencies_that_cannot_be_met_fail_at_once_and_in_cascade() {
    let mut core = new_core(Hwm::Limit(0));
    register(&mut core, "a", &["f"]);
    let kind_and_message = |actions: &[Action], id: TaskId| {
        delivered(actions)
            .into_iter()
            .flat_map(|(_, o, _)| o)
            .find(|o| o.id == id)
            .map(|o| {
                let e = error_of(&o);
                (e.kind, e.message.clone())
            })
            .expect("an outcome")
    };
    // On itself.
    let actions = submit(&mut core, vec![after(call(1, "f"), &[1])]);
    let (kind, message) = kind_and_message(&actions, tid(1));
    assert_eq!(kind, ErrorKind::Dependency);
    assert!(message.contains("itself"), "{message}");
    // On a task nobody submitted.
    let actions = submit(&mut core, vec![after(call(2, "f"), &[77])]);
    let (kind, message) = kind_and_message(&actions, tid(2));
    assert_eq!(kind, ErrorKind::Dependency);
    assert!(
        message.contains("1:77") && message.contains("does not know"),
        "{message}"
    );
    // On a task that fails: the dependent fails, and its own dependent too.
    submit(
        &mut core,
        vec![
            call(3, "f"),
            after(call(4, "f"), &[3]),
            follow(call(5, "f"), &[4]),
        ],
    );
    let actions = fail(&mut core, "a", &[tid(3)], ErrorKind::Remote);
    let (kind, message) = kind_and_message(&actions, tid(4));
    assert_eq!(kind, ErrorKind::Dependency);
    assert!(
        message.contains("1:3") && message.contains("remote error"),
        "{message}"
    );
    assert_eq!(kind_and_message(&actions, tid(5)).0, ErrorKind::Dependency);
    // On a task that failed long ago.
    let actions = submit(&mut core, vec![after(call(6, "f"), &[3])]);
    assert_eq!(kind_and_message(&actions, tid(6)).0, ErrorKind::Dependency);
    let status = core.status(Duration::ZERO);
    assert_eq!((status.tasks.waiting, status.tasks.failed), (0, 6));
}

#[test]
fn follow_runs_where_the_followed_tasks_ran() {
    let mut core = new_core(Hwm::Limit(0));
    for uuid in ["a", "b", "c"] {
        register(&mut core, uuid, &["f"]);
    }
    // 1 and 2 go to engines 0 and 1.
    let actions = submit(&mut core, vec![call(1, "f"), call(2, "f")]);
    assert_eq!(
        sent_to(&actions),
        [(EngineId(0), tid(1)), (EngineId(1), tid(2))]
    );
    // 3 follows 2 (on engine 1, though 2 is the least loaded); it waits until 2 is done.
    let actions = submit(&mut core, vec![follow(call(3, "f"), &[2])]);
    assert!(sent(&actions).is_empty());
    let actions = finish(&mut core, "b", &[tid(2)], 5);
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(3))]);
    // Following tasks that ran on two engines can never be met.
    finish(&mut core, "a", &[tid(1)], 5);
    let actions = submit(&mut core, vec![follow(call(4, "f"), &[1, 2])]);
    let err = error_of(&delivered(&actions)[0].1[0]).clone();
    assert_eq!(err.kind, ErrorKind::Dependency);
    assert!(err.message.contains("different engines"), "{}", err.message);
    // Nor can a follow whose engine is not among the targets…
    let actions = submit(&mut core, vec![with(follow(call(5, "f"), &[1]), &[2], 0)]);
    assert_eq!(
        error_of(&delivered(&actions)[0].1[0]).kind,
        ErrorKind::Dependency
    );
    // …nor one whose engine is gone.
    core.on_engine(b"a", FromEngine::Unregister, vec![], Duration::ZERO);
    let actions = submit(&mut core, vec![follow(call(6, "f"), &[1])]);
    let err = error_of(&delivered(&actions)[0].1[0]).clone();
    assert!(
        err.message.contains("no longer registered"),
        "{}",
        err.message
    );
}

// ----- time limits -----

fn timed(mut req: TaskRequest, ms: u64) -> TaskRequest {
    req.options.timeout_ms = Some(ms);
    req
}

#[test]
fn a_task_not_started_in_time_fails_with_a_timeout() {
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "a", &["f"]);
    // 1 occupies the engine; 2 and 3 wait in the queue, 4 waits for 2.
    let actions = submit(
        &mut core,
        vec![
            call(1, "f"),
            timed(call(2, "f"), 500),
            timed(call(3, "f"), 5_000),
            timed(after(call(4, "f"), &[2]), 300),
        ],
    );
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(1))]);
    assert_eq!(core.next_tick(), Duration::from_millis(300));
    let actions = core.on_tick(Duration::from_millis(300));
    let msgs = delivered(&actions);
    assert_eq!(msgs[0].1[0].id, tid(4));
    let err = error_of(&msgs[0].1[0]);
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(err.message.contains("dependencies"), "{}", err.message);
    let actions = core.on_tick(Duration::from_millis(500));
    let msgs = delivered(&actions);
    assert_eq!(msgs[0].1[0].id, tid(2));
    assert!(error_of(&msgs[0].1[0]).message.contains("500 ms"));
    // The engine frees: the timed-out entry is skipped, 3 runs (its limit now counts on the
    // engine), and nothing fires at its old start deadline.
    let actions = finish(&mut core, "a", &[tid(1)], 5);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(3))]);
    let status = core.status(Duration::ZERO);
    assert_eq!((status.tasks.queued, status.tasks.failed), (0, 2));
    assert!(delivered(&core.on_tick(Duration::from_millis(5_000))).is_empty());
}

/// Regression: `cluster map --timeout 0.5 -- …` failed commands that merely waited behind a
/// long one; a run-time limit must not bound the wait to start.
#[test]
fn a_run_time_limit_does_not_fail_a_task_waiting_to_start() {
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "a", &["f"]);
    let mut waiting = call(2, "f");
    waiting.options.run_timeout_ms = Some(500);
    let actions = submit(&mut core, vec![call(1, "f"), waiting]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(1))]);
    assert!(delivered(&core.on_tick(Duration::from_millis(10_000))).is_empty());
    let actions = finish(&mut core, "a", &[tid(1)], 5);
    let assignment = first_assignment(&actions).expect("task 2 is assigned");
    assert_eq!(assignment.id, tid(2));
    assert_eq!(
        assignment.timeout_ms,
        Some(500),
        "the engine enforces the run limit"
    );
    assert_eq!(
        assignment.start_within_ms, None,
        "it may wait in the engine's queue"
    );
}

/// What is left of a start limit travels with the task, for the engine's own queue.
#[test]
fn an_assigned_task_carries_what_is_left_of_its_start_limit() {
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "a", &["f"]);
    submit(&mut core, vec![call(1, "f"), timed(call(2, "f"), 1_000)]);
    core.on_tick(Duration::from_millis(300));
    let actions = finish(&mut core, "a", &[tid(1)], 5);
    let assignment = first_assignment(&actions).expect("task 2 is assigned");
    assert_eq!(
        (assignment.timeout_ms, assignment.start_within_ms),
        (Some(1_000), Some(700))
    );
}

#[test]
fn a_task_running_past_its_limit_without_word_from_the_engine_fails_or_retries() {
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "a", &["f"]);
    register(&mut core, "b", &["f"]);
    let t0 = Duration::from_secs(10);
    let actions = core.on_client(
        CLIENT,
        FromClient::Submit {
            tasks: vec![
                timed(with(call(1, "f"), &[0], 0), 1_000),
                timed(with(call(2, "f"), &[], 1), 1_000),
            ],
        },
        vec![payload_of(tid(1)), payload_of(tid(2))],
        t0,
    );
    assert_eq!(
        sent_to(&actions),
        [(EngineId(0), tid(1)), (EngineId(1), tid(2))]
    );
    // Waiting in an engine's queue does not count: without word of a start, nothing fires.
    assert!(delivered(&core.on_tick(t0 + secs(60))).is_empty());
    let t1 = t0 + secs(61);
    let started = |core: &mut Core, uuid: &str, id, at| {
        core.on_engine(
            uuid.as_bytes(),
            FromEngine::Started { ids: vec![id] },
            vec![],
            at,
        )
    };
    started(&mut core, "a", tid(1), t1);
    // A start reported by an engine the task is not on is ignored.
    started(&mut core, "a", tid(2), t1);
    started(&mut core, "b", tid(2), t1 + secs(1) / 2);
    // The engine's own limit comes first; the controller waits a grace period more.
    assert!(delivered(&core.on_tick(t1 + secs(1))).is_empty());
    let actions = core.on_tick(t1 + secs(1) + RUN_TIMEOUT_GRACE);
    let msgs = delivered(&actions);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].1[0].id, tid(1));
    let err = error_of(&msgs[0].1[0]);
    assert_eq!(
        (err.kind, err.engine),
        (ErrorKind::Timeout, Some(EngineId(0)))
    );
    assert!(sent_to(&actions).is_empty());
    // Task 2 had a retry: it goes to engine 0, now free, never back to engine 1.
    let actions = core.on_tick(t1 + secs(1) * 3 / 2 + RUN_TIMEOUT_GRACE);
    assert!(delivered(&actions).is_empty());
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(2))]);
    // A late result for task 1 is ignored.
    assert!(delivered(&finish(&mut core, "a", &[tid(1)], 5)).is_empty());
}

// ----- abort, queue status -----

#[test]
fn abort_stops_queued_and_waiting_tasks_only() {
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "a", &["f"]);
    submit(
        &mut core,
        vec![
            call(1, "f"),
            call(2, "f"),
            call(3, "f"),
            after(call(4, "f"), &[1]),
        ],
    );
    finish(&mut core, "a", &[tid(1)], 5);
    // 2 runs now, 3 is queued, 4 is queued too (1 is done).
    let q = core.queue_status();
    assert_eq!((q.unassigned, q.waiting), (2, 0));
    assert_eq!(q.engines[0].outstanding, 1);
    let actions = core.on_client(
        OTHER_CLIENT,
        FromClient::Abort {
            ids: vec![tid(1), tid(2), tid(3), tid(99)],
        },
        vec![],
        Duration::ZERO,
    );
    let answer = actions
        .iter()
        .find_map(|a| match a {
            Action::ToClient {
                route,
                msg:
                    ToClient::Aborted {
                        aborted,
                        running,
                        finished,
                        unknown,
                    },
                ..
            } if route == OTHER_CLIENT => Some((
                aborted.clone(),
                running.clone(),
                finished.clone(),
                unknown.clone(),
            )),
            _ => None,
        })
        .expect("an abort answer");
    assert_eq!(
        answer,
        (vec![tid(3)], vec![tid(2)], vec![tid(1)], vec![tid(99)])
    );
    // The submitter hears about the aborted task.
    let msgs = delivered(&actions);
    assert_eq!(msgs[0].0, CLIENT);
    assert_eq!(error_of(&msgs[0].1[0]).kind, ErrorKind::Aborted);
    // The scheduler skips it: 4 runs next.
    let actions = finish(&mut core, "a", &[tid(2)], 5);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(4))]);
    let q = core.queue_status();
    assert_eq!((q.unassigned, q.waiting), (0, 0));
    let actions = core.on_client(CLIENT, FromClient::QueueStatus, vec![], Duration::ZERO);
    assert!(matches!(
        &actions[..],
        [Action::ToClient { msg: ToClient::QueueStatus(q), .. }] if q.engines.len() == 1 && q.engines[0].completed == 2
    ));
}

// ----- engines coming back, disconnects, clients of an earlier life -----

fn registration_with_id(uuid: &str, id: u32) -> FromEngine {
    let FromEngine::Register(mut reg) = registration(uuid, &["f"]) else {
        unreachable!()
    };
    reg.engine_id = Some(EngineId(id));
    FromEngine::Register(reg)
}

fn registered_id(actions: &[Action]) -> Option<EngineId> {
    actions.iter().find_map(|a| match a {
        Action::ToEngine {
            msg: ToEngine::Registered { engine_id, .. },
            ..
        } => Some(*engine_id),
        _ => None,
    })
}

#[test]
fn engines_of_an_earlier_controller_get_their_ids_back() {
    let mut core = new_core(Hwm::Auto);
    let back = |core: &mut Core, uuid: &str, id: u32| {
        registered_id(&core.on_engine(
            uuid.as_bytes(),
            registration_with_id(uuid, id),
            vec![],
            Duration::ZERO,
        ))
    };
    assert_eq!(back(&mut core, "x", 3), Some(EngineId(3)));
    assert_eq!(back(&mut core, "y", 1), Some(EngineId(1)));
    // A fresh engine takes a new id, never one kept for a returning engine.
    assert_eq!(register(&mut core, "z", &["f"]).0, EngineId(4));
    // A returning engine whose id is taken gets a new one; absurd ids are not honoured.
    assert_eq!(back(&mut core, "w", 3), Some(EngineId(5)));
    assert_eq!(back(&mut core, "v", u32::MAX), Some(EngineId(6)));
    let ids: Vec<u32> = core
        .status(Duration::ZERO)
        .engines
        .iter()
        .map(|e| e.id.0)
        .collect();
    assert_eq!(ids, [1, 3, 4, 5, 6]);
    // Work goes only to real engines.
    let actions = submit(&mut core, (1..=5).map(|i| call(i, "f")).collect());
    assert_eq!(sent_to(&actions).len(), 5);
}

#[test]
fn a_repeated_registration_is_acknowledged_quietly_and_a_dead_engine_comes_back() {
    let mut core = new_core(Hwm::Limit(1));
    let (a, _) = register(&mut core, "a", &["f"]);
    submit(&mut core, vec![call(1, "f")]);
    let again = core.on_engine(b"a", registration("a", &["f"]), vec![], Duration::ZERO);
    assert_eq!(registered_id(&again), Some(a));
    assert_eq!(again.len(), 1, "no notification: {again:?}");
    assert_eq!(engine_status(&core, 0).outstanding, 1, "its task is kept");
    // Declared dead (its connection closed), it registers again with the same uuid.
    let gone = core.on_engine_disconnected(b"a", Duration::ZERO);
    assert!(gone.contains(&Action::Publish(Notification::EngineLeft {
        id: a,
        reason: "disconnected".into()
    })));
    assert_eq!(
        error_of(&delivered(&gone)[0].1[0]).kind,
        ErrorKind::EngineLost
    );
    assert!(core.on_engine_disconnected(b"a", Duration::ZERO).is_empty());
    assert!(core
        .on_engine_disconnected(b"nobody", Duration::ZERO)
        .is_empty());
    let (_, actions) = register(&mut core, "a", &["f"]);
    assert!(actions
        .iter()
        .any(|x| matches!(x, Action::Publish(Notification::EngineJoined(i)) if i.id == a)));
    assert_eq!(engine_status(&core, 0).outstanding, 0);
}

#[test]
fn an_engine_declared_dead_by_heartbeat_that_answers_again_is_taken_back() {
    let mut core = new_core(Hwm::Limit(1));
    let (a, _) = register(&mut core, "a", &["f"]);
    register(&mut core, "b", &["f"]);
    let pong = |core: &mut Core, uuid: &str, seq| {
        core.on_heartbeat(
            uuid.as_bytes(),
            Heartbeat::Pong {
                seq,
                uuid: uuid.into(),
            },
            Duration::ZERO,
        )
    };
    // Engine a is silent (stopped) for four rounds: dead.
    for n in 1..=4u64 {
        core.on_tick(secs(n));
        pong(&mut core, "b", n);
    }
    assert_eq!(core.status(Duration::ZERO).engines.len(), 1);
    // Resumed, it answers the pings that waited for it: it is back, and gets work.
    let back = pong(&mut core, "a", 2);
    assert!(back
        .iter()
        .any(|x| matches!(x, Action::Publish(Notification::EngineJoined(i)) if i.id == a)));
    assert_eq!(core.status(Duration::ZERO).engines.len(), 2);
    let actions = submit(&mut core, vec![with(call(1, "f"), &[0], 0)]);
    assert_eq!(sent_to(&actions), [(a, tid(1))]);
    // One that said goodbye stays gone whatever arrives late.
    core.on_engine(b"b", FromEngine::Unregister, vec![], Duration::ZERO);
    assert!(pong(&mut core, "b", 4).is_empty());
    assert_eq!(core.status(Duration::ZERO).engines.len(), 1);
}

#[test]
fn clients_of_an_earlier_controller_keep_their_ids_and_new_ones_avoid_them() {
    let mut core = Core::new(
        CoreConfig {
            first_client_id: 500,
            ..Default::default()
        },
        Duration::ZERO,
    );
    register(&mut core, "a", &["f"]);
    // A client of the previous life submits without saying hello.
    core.on_client(
        b"old",
        FromClient::Submit {
            tasks: vec![TaskRequest {
                id: TaskId::new(ClientId(700), 1),
                ..call(1, "f")
            }],
        },
        vec![b"x".to_vec()],
        Duration::ZERO,
    );
    assert_eq!(hello(&mut core, b"new"), ClientId(701));
    assert_eq!(core.status(Duration::ZERO).controller.clients, 2);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn load() -> impl Strategy<Value = EngineLoad> {
        (0u32..6, 0u32..8, 0u64..5, any::<bool>()).prop_map(
            |(outstanding, limit, last, eligible)| EngineLoad {
                id: EngineId(0),
                outstanding,
                limit: if limit == 7 { u32::MAX } else { limit },
                last_assigned: last,
                eligible,
            },
        )
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

    /// Engine `i` offers f, and g when `i` is odd; nobody offers h.
    fn offers(i: u8) -> Vec<&'static str> {
        if i % 2 == 1 {
            vec!["f", "g"]
        } else {
            vec!["f"]
        }
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
            let mut core = core_with(kind, Hwm::Limit(limit));
            let uuids = ["e0", "e1", "e2", "e3"];
            let mut running: HashMap<TaskId, EngineId> = HashMap::new();
            let mut answered: HashSet<TaskId> = HashSet::new();
            let mut submitted = 0u64;
            let mut now = Duration::ZERO;
            let mut ids: HashMap<u8, EngineId> = HashMap::new();
            for i in 0..2u8 {
                ids.insert(i, register(&mut core, uuids[i as usize], &offers(i)).0);
            }
            for op in ops {
                let actions = match op {
                    Op::Submit { function, targets, retries, count, after: dep, timeout } => {
                        let reqs = (0..count).map(|_| {
                            submitted += 1;
                            let mut req = with(call(submitted, FUNCTIONS[function as usize]), &targets, retries);
                            if let Some((back, follows)) = dep {
                                let d = submitted.saturating_sub(u64::from(back)).max(1);
                                req = if follows { follow(req, &[d]) } else { after(req, &[d]) };
                            }
                            if timeout {
                                req = timed(req, 1_500);
                            }
                            req
                        }).collect();
                        submit(&mut core, reqs)
                    }
                    Op::Fail { engine } => {
                        let id = ids.get(&engine).copied();
                        let mine: Vec<TaskId> = running.iter().filter(|(_, e)| Some(**e) == id).map(|(t, _)| *t).take(1).collect();
                        fail(&mut core, uuids[engine as usize], &mine, ErrorKind::Remote)
                    }
                    Op::Abort { back } => {
                        let id = tid(submitted.saturating_sub(u64::from(back)).max(1));
                        core.on_client(CLIENT, FromClient::Abort { ids: vec![id] }, vec![], now)
                    }
                    Op::Finish { engine, how_many } => {
                        let id = ids.get(&engine).copied();
                        let mut mine: Vec<TaskId> = running.iter().filter(|(_, e)| Some(**e) == id).map(|(t, _)| *t).collect();
                        mine.sort();
                        mine.truncate(how_many as usize);
                        finish(&mut core, uuids[engine as usize], &mine, 3)
                    }
                    Op::Leave { engine } => core.on_engine(uuids[engine as usize].as_bytes(), FromEngine::Unregister, vec![], now),
                    Op::Join { engine } => {
                        let (id, actions) = register(&mut core, uuids[engine as usize], &offers(engine));
                        ids.insert(engine, id);
                        actions
                    }
                    Op::Tick => {
                        now += secs(1);
                        // Everyone alive answers, so nobody dies of silence.
                        let actions = core.on_tick(now);
                        for a in &actions {
                            if let Action::Ping { route, seq, .. } = a {
                                let uuid = String::from_utf8(route.clone()).unwrap();
                                core.on_heartbeat(route, Heartbeat::Pong { seq: *seq, uuid }, now);
                            }
                        }
                        actions
                    }
                };
                for a in &actions {
                    match a {
                        Action::ToEngine { engine, msg: ToEngine::Tasks { tasks }, payloads, .. } => {
                            prop_assert_eq!(tasks.len(), payloads.len());
                            let e = &core.engines[engine.0 as usize];
                            for t in tasks {
                                prop_assert!(e.alive);
                                if let Some(f) = function_of(&t.work) {
                                    prop_assert!(e.functions.contains(f), "engine {} got {}", engine, f);
                                }
                                let targets = &core.tasks[&t.id].targets;
                                prop_assert!(targets.is_empty() || targets.contains(engine));
                                prop_assert!(!core.tasks[&t.id].excluded.contains(engine));
                                running.insert(t.id, *engine);
                            }
                        }
                        Action::ToClient { msg: ToClient::Results { results }, .. } => {
                            for o in results {
                                prop_assert!(answered.insert(o.id), "task {} answered twice", o.id);
                                running.remove(&o.id);
                            }
                        }
                        _ => {}
                    }
                }
                // A task re-sent elsewhere left its old engine.
                running.retain(|t, e| core.tasks.get(t).map(|t| t.state) == Some(TaskState::Running(*e)));
                for e in &core.engines {
                    if limit > 0 {
                        prop_assert!(e.running.len() as u32 <= limit);
                    }
                    prop_assert!(e.alive || e.running.is_empty());
                }
                // Work-conserving: no queued task has a free engine it could run on.
                for class in core.classes.iter().flatten() {
                    if class.queue.iter().any(|&(t, seq)| core.is_queued(t, seq)) {
                        let free = core.free.iter().any(|&(_, _, id)| core.eligible(id, &class.key));
                        prop_assert!(!free, "class {:?} waits beside a free engine", class.key);
                        // Nothing waits forever: with engines registered, some can run it.
                        prop_assert!(core.check(&class.key).is_ok(), "class {:?} can never run", class.key);
                    }
                }
                let status = core.status(now);
                let queued: usize = core.classes.iter().flatten().map(|c| c.queue.iter().filter(|&&(t, seq)| core.is_queued(t, seq)).count()).sum();
                prop_assert_eq!(status.tasks.queued, queued as u64);
                let waiting = core.tasks.values().filter(|t| t.state == TaskState::Waiting).count();
                prop_assert_eq!(status.tasks.waiting, waiting as u64);
                // A waiting task waits for something unfinished.
                for (id, t) in &core.tasks {
                    if t.state == TaskState::Waiting {
                        prop_assert!(t.deps_left > 0);
                        prop_assert!(core.dependents.iter().any(|(d, list)| core.tasks.contains_key(d) && list.iter().any(|(w, _)| w == id)));
                    }
                }
                prop_assert_eq!(status.tasks.done + status.tasks.failed, answered.len() as u64);
                prop_assert_eq!(core.tasks.len() as u64, submitted - answered.len() as u64);
            }
        }
    }
}

// ----- a controller restarted under running engines and waiting clients -----

/// Engine `uuid` (offering `f`) registering again, asking for `id` and holding `held`.
fn held_registration(uuid: &str, id: Option<EngineId>, held: &[TaskId]) -> FromEngine {
    match registration(uuid, &["f"]) {
        FromEngine::Register(reg) => FromEngine::Register(Registration {
            engine_id: id,
            held: held.to_vec(),
            ..reg
        }),
        other => other,
    }
}

/// After a restart (a fresh core), engines bring what they finished and what they hold, and
/// clients submit their unfinished tasks again: nothing is lost, and nothing held runs twice.
#[test]
fn a_restarted_controller_keeps_what_engines_finished_and_hold_for_clients_that_resubmit() {
    let mut core = new_core(Hwm::Limit(0));
    // Engine "a" delivers a result it finished while the controller was down, before it
    // registers again: kept, delivered to nobody yet.
    let actions = finish(&mut core, "a", &[tid(1)], 5);
    assert!(delivered(&actions).is_empty());
    // It registers again, holding tasks 2 and 3 in its own queue.
    let actions = core.on_engine(
        b"a",
        held_registration("a", Some(EngineId(0)), &[tid(2), tid(3)]),
        vec![],
        Duration::ZERO,
    );
    assert!(sent_to(&actions).is_empty());
    assert_eq!(engine_status(&core, 0).outstanding, 2);
    register(&mut core, "b", &["f"]);
    // A new client must not get the id of the old one, whose task ids are in use.
    assert_eq!(hello(&mut core, OTHER_CLIENT), ClientId(2));
    // Task 3 finishes before its client is back.
    assert!(delivered(&finish(&mut core, "a", &[tid(3)], 5)).is_empty());
    // The client submits its unfinished tasks again.
    let actions = submit(
        &mut core,
        vec![call(1, "f"), call(2, "f"), call(3, "f"), call(4, "f")],
    );
    // Only the task nobody had runs; 1 and 3 are answered from the store at once.
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(4))]);
    let msgs = delivered(&actions);
    let answered: Vec<TaskId> = msgs[0].1.iter().map(|o| o.id).collect();
    assert_eq!(answered, [tid(1), tid(3)]);
    assert!(!actions.iter().any(|a| matches!(
        a,
        Action::ToClient {
            msg: ToClient::Error { .. },
            ..
        }
    )));
    // Task 2, still held by engine 0, reaches the client when it finishes there.
    let msgs = delivered(&finish(&mut core, "a", &[tid(2)], 5));
    assert_eq!(msgs[0].0, CLIENT);
    assert_eq!(msgs[0].1[0].id, tid(2));
    assert_eq!(engine_status(&core, 0).outstanding, 0);
}

/// A task submitted again before its engine re-registered waits in the queue; when the
/// engine says it holds it, it is not handed out a second time.
#[test]
fn a_held_task_already_queued_again_is_not_handed_to_a_second_engine() {
    let mut core = new_core(Hwm::Limit(1));
    register(&mut core, "b", &["f"]);
    // Engine b is busy; the resubmitted task 2 waits.
    submit(&mut core, vec![call(1, "f"), call(2, "f")]);
    assert_eq!(core.status(Duration::ZERO).tasks.queued, 1);
    core.on_engine(
        b"a",
        held_registration("a", None, &[tid(2)]),
        vec![],
        Duration::ZERO,
    );
    assert_eq!(core.status(Duration::ZERO).tasks.queued, 0);
    // Engine b frees: task 2 is not sent to it.
    let actions = finish(&mut core, "b", &[tid(1)], 5);
    assert!(sent_to(&actions).is_empty());
    let msgs = delivered(&finish(&mut core, "a", &[tid(2)], 5));
    assert_eq!(msgs[0].1[0].id, tid(2));
}
