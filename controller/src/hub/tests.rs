//! State-machine tests of the core: fake clock, fake engines and clients.

use super::*;
use protocol::{CommandSpec, TaskOptions};

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
            msg: ToClient::Welcome { client_id, engines },
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
    // Reusing an id is refused with an error message; the rest go through.
    let actions = submit(&mut core, vec![call(1, "f"), call(3, "f")]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(3))]);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::ToClient { msg: ToClient::Error { message }, .. } if message.contains("1:1")
    )));
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
            let pick = SchedulerKind::LeastLoad.pick(&engines);
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
        },
        Finish {
            engine: u8,
            how_many: u8,
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
            4 => (0u8..3, prop::collection::vec(0u32..5, 0..3), 0u32..3, 1u8..6)
                .prop_map(|(function, targets, retries, count)| Op::Submit { function, targets, retries, count }),
            4 => (0u8..4, 1u8..4).prop_map(|(engine, how_many)| Op::Finish { engine, how_many }),
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
        fn random_traffic_keeps_the_invariants(limit in 0u32..4, ops in prop::collection::vec(op(), 1..60)) {
            let mut core = new_core(Hwm::Limit(limit));
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
                    Op::Submit { function, targets, retries, count } => {
                        let reqs = (0..count).map(|_| {
                            submitted += 1;
                            with(call(submitted, FUNCTIONS[function as usize]), &targets, retries)
                        }).collect();
                        submit(&mut core, reqs)
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
                    if !class.queue.is_empty() {
                        let free = core.free.iter().any(|&(_, _, id)| core.eligible(id, &class.key));
                        prop_assert!(!free, "class {:?} waits beside a free engine", class.key);
                        // Nothing waits forever: with engines registered, some can run it.
                        prop_assert!(core.check(&class.key).is_ok(), "class {:?} can never run", class.key);
                    }
                }
                let status = core.status(now);
                let queued: usize = core.classes.iter().flatten().map(|c| c.queue.len()).sum();
                prop_assert_eq!(status.tasks.queued, queued as u64);
                prop_assert_eq!(status.tasks.done + status.tasks.failed, answered.len() as u64);
                prop_assert_eq!(core.tasks.len() as u64, submitted - answered.len() as u64);
            }
        }
    }
}
