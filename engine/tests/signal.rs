//! SIGTERM makes a running engine finish or hand back its task, unregister and return `Ok`
//! within about a second. In its own test binary because it signals the whole process; the
//! tests take turns, since every engine in the process sees each signal.

use cluster_engine::{Engine, EngineOptions};
use protocol::{
    Assignment, ClientId, CommandSpec, ErrorKind, FromEngine, Status, TaskId, TaskOutcome,
    ToEngine, Work,
};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use testkit::{encode, FakeController, RegisteredEngine};

/// One signalling test at a time.
static TURN: Mutex<()> = Mutex::new(());

fn sigterm() {
    // SAFETY: plain syscall on our own process.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
}

/// Starts a stock engine against `fake` and registers it as engine 2. The handlers are
/// installed before the engine registers, so signalling after that cannot kill the test.
fn start(
    fake: &mut FakeController,
) -> (
    RegisteredEngine,
    std::thread::JoinHandle<Result<(), cluster_engine::EngineError>>,
) {
    let options = EngineOptions::new(fake.file.clone());
    let engine =
        std::thread::spawn(move || Engine::builder().stock_functions().build().run(options));
    (fake.register_engine(2, 1000), engine)
}

/// The outcomes the engine sends before `Unregister`, and how long after `since` that came.
fn outcomes_until_unregister(
    fake: &mut FakeController,
    since: Instant,
) -> (Vec<TaskOutcome>, Duration) {
    let (outcomes, _, took) = until_unregister(fake, since);
    (outcomes, took)
}

/// Tasks handed back, each with its payload.
type HandedBack = Vec<(Assignment, Vec<u8>)>;

/// What the engine sends before `Unregister`: outcomes, the tasks it hands back with their
/// payloads, and how long after `since` the `Unregister` came.
fn until_unregister(
    fake: &mut FakeController,
    since: Instant,
) -> (Vec<TaskOutcome>, HandedBack, Duration) {
    let mut outcomes = Vec::new();
    let mut handed = Vec::new();
    loop {
        let got = fake.recv_engine();
        match got.msg {
            FromEngine::Results { results } => outcomes.extend(results),
            FromEngine::HandBack { tasks } => {
                assert!(outcomes.len() <= 1, "results go before the hand-back");
                handed.extend(tasks.into_iter().zip(got.payloads));
            }
            FromEngine::Unregister => return (outcomes, handed, since.elapsed()),
            _ => {}
        }
    }
}

#[test]
fn sigterm_unregisters_and_returns_ok() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let mut fake = FakeController::new();
    let (_, engine) = start(&mut fake);
    sigterm();
    assert_eq!(fake.recv_engine().msg, FromEngine::Unregister);
    engine
        .join()
        .unwrap()
        .expect("a signal is a clean shutdown");
}

/// Issue 9: an engine busy in `sleep 30` ignored SIGTERM, so `cluster stop` needed SIGKILL.
#[test]
fn sigterm_kills_a_running_command_and_reports_it_lost_within_a_second() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let mut fake = FakeController::new();
    let (engine, thread) = start(&mut fake);
    let id = TaskId::new(ClientId(3), 1);
    let task = Assignment {
        id,
        work: Work::Command(CommandSpec {
            program: "sleep".into(),
            args: vec!["30".into()],
            ..Default::default()
        }),
        // A run-time limit makes the engine say when the command starts.
        timeout_ms: Some(60_000),
        start_within_ms: None,
    };
    fake.send_engine(&engine.route, &ToEngine::Tasks { tasks: vec![task] }, &[]);
    assert_eq!(
        fake.recv_engine().msg,
        FromEngine::Started { ids: vec![id] }
    );
    std::thread::sleep(Duration::from_millis(50));
    let signalled = Instant::now();
    sigterm();
    let (outcomes, took) = outcomes_until_unregister(&mut fake, signalled);
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].id, id);
    match &outcomes[0].status {
        Status::Err(e) => {
            assert_eq!(e.kind, ErrorKind::EngineLost, "{e:?}");
            assert!(e.message.contains("killed"), "{}", e.message);
            assert_eq!(e.engine, Some(engine.id));
        }
        Status::Ok => panic!("sleep 30 cannot have finished"),
    }
    thread
        .join()
        .unwrap()
        .expect("a signal is a clean shutdown");
}

#[test]
fn sigterm_abandons_a_running_function_and_reports_it_lost_within_a_second() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let mut fake = FakeController::new();
    let (engine, thread) = start(&mut fake);
    // `sleep` has not run on this engine before, so it may be long: it runs on the helper
    // thread, where the engine can leave it.
    let call = |seq, function: &str| Assignment {
        id: TaskId::new(ClientId(3), seq),
        work: Work::Call {
            function: function.into(),
        },
        timeout_ms: None,
        start_within_ms: None,
    };
    fake.send_engine(
        &engine.route,
        &ToEngine::Tasks {
            tasks: vec![call(1, "echo"), call(2, "sleep"), call(3, "echo")],
        },
        &[&encode(&"x"), &encode(&30.0f64), &encode(&"y")],
    );
    // The first echo's result goes out before the sleep starts.
    match fake.recv_engine().msg {
        FromEngine::Results { results } => assert_eq!(results[0].id, call(1, "").id),
        other => panic!("expected the first result, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(100));
    let signalled = Instant::now();
    sigterm();
    let (outcomes, took) = outcomes_until_unregister(&mut fake, signalled);
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // The sleep is reported lost; the echo queued behind it is left to the controller.
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].id, call(2, "").id);
    match &outcomes[0].status {
        Status::Err(e) => {
            assert_eq!(e.kind, ErrorKind::EngineLost, "{e:?}");
            assert!(
                e.message.contains("SIGTERM") && e.message.contains("retries"),
                "{}",
                e.message
            );
        }
        Status::Ok => panic!("sleep(30) cannot have finished"),
    }
    thread
        .join()
        .unwrap()
        .expect("a signal is a clean shutdown");
}

/// SIGUSR1 (Slurm's `--signal` before the wall-time limit) drains: the running task
/// finishes and reports its result (it is not abandoned as on SIGTERM), the tasks queued
/// behind it are not started but handed back with their arguments as received
/// (`HandBack`), and the engine unregisters.
#[test]
fn sigusr1_finishes_the_running_task_then_hands_back_the_queue() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let mut fake = FakeController::new();
    let (engine, thread) = start(&mut fake);
    let call = |seq, function: &str| Assignment {
        id: TaskId::new(ClientId(3), seq),
        work: Work::Call {
            function: function.into(),
        },
        timeout_ms: None,
        start_within_ms: None,
    };
    fake.send_engine(
        &engine.route,
        &ToEngine::Tasks {
            tasks: vec![call(1, "sleep"), call(2, "echo"), call(3, "echo")],
        },
        &[&encode(&0.6f64), &encode(&"x"), &encode(&"y")],
    );
    std::thread::sleep(Duration::from_millis(100));
    let signalled = Instant::now();
    // SAFETY: plain syscall on our own process.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGUSR1);
    }
    let (outcomes, handed, took) = until_unregister(&mut fake, signalled);
    // The sleep ran to its end (0.5 s more), well past SIGTERM's 250 ms grace.
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].id, call(1, "").id);
    assert_eq!(outcomes[0].status, Status::Ok, "{outcomes:?}");
    assert_eq!(
        handed,
        [
            (call(2, "echo"), encode(&"x")),
            (call(3, "echo"), encode(&"y"))
        ],
        "the queue, in order, with each argument as received"
    );
    thread.join().unwrap().expect("a drain is a clean shutdown");
}
