//! Failures: remote errors mapped to `Error`, timeouts that name the task, cancelling.

use super::*;

#[test]
fn remote_failures_map_to_errors() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let err = view
        .apply::<(), ()>("fail", &())
        .unwrap()
        .get(SECOND)
        .unwrap_err();
    match &err {
        Error::Remote {
            engine,
            kind,
            message,
        } => {
            assert!(engine.is_some());
            assert_eq!(*kind, ErrorKind::Remote);
            assert_eq!(message, "boom");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());

    let err = view
        .apply::<(), ()>("lost", &())
        .unwrap()
        .get(SECOND)
        .unwrap_err();
    assert!(matches!(err, Error::EngineLost { .. }), "{err:?}");
    assert!(err.is_retryable());

    let err = view
        .apply::<(), ()>("nope", &())
        .unwrap()
        .get(SECOND)
        .unwrap_err();
    match &err {
        Error::UnknownFunction { function, .. } => assert_eq!(function, "nope"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("\"nope\""), "{err}");

    // A map fails with its failed chunk's error.
    let err = view
        .chunksize(5)
        .map::<_, u64>("fail_on_13", 0..20u64)
        .unwrap()
        .get(SECOND)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message, .. } if message == "13 is unlucky"),
        "{err:?}"
    );
}

#[test]
fn get_timeout_names_the_task() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let ar = view.apply::<(), ()>("hold", &()).unwrap();
    let id = ar.id();
    assert!(!ar.ready());
    assert!(!ar.wait(Some(Duration::from_millis(20))));
    let start = Instant::now();
    let err = ar.get(Some(Duration::from_millis(100))).unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(100));
    match &err {
        Error::Timeout { what } => assert_eq!(what, &format!("task {id}")),
        other => panic!("{other:?}"),
    }
    assert!(id.to_string().starts_with("3:"));
    assert_eq!(err.to_string(), format!("timed out waiting for task {id}"));

    let m = view.chunksize(1).map::<_, ()>("hold", [(), ()]).unwrap();
    let err = m.get(Some(Duration::from_millis(50))).unwrap_err();
    assert!(
        err.to_string().contains("map of hold over 2 items"),
        "{err}"
    );
}

#[test]
fn cancel_ends_waits_with_aborted_and_done_tasks_stay_done() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let held = view.apply::<(), ()>("hold", ()).unwrap();
    let id = held.id();
    assert_eq!(held.successful(), None);
    assert!(held.cancel());
    assert!(held.ready() && held.cancelled());
    assert_eq!(held.successful(), Some(false));
    let err = held.get(SECOND).unwrap_err();
    assert!(
        matches!(&err, Error::Aborted { what, .. } if what == &format!("task {id}")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(!held.cancel(), "a second cancel finds it done");
    let done = view.apply(DOUBLE, 1).unwrap();
    assert!(done.wait(SECOND));
    assert!(!done.cancel() && !done.cancelled());
    assert!(!done.abort().unwrap());
    // abort: the controller aborts what is queued.
    let held = view.apply::<(), ()>("hold", ()).unwrap();
    assert!(held.abort().unwrap());
    assert!(matches!(held.get(SECOND), Err(Error::Aborted { .. })));
    // A map cancels its unfinished chunks only.
    let m = view
        .chunksize(1)
        .map::<(), ()>("hold", [(), (), ()])
        .unwrap();
    assert_eq!(m.cancel(), 3);
    assert!(m.ready());
    assert_eq!(m.metadata()[0].state, TaskState::Failed(ErrorKind::Aborted));
}

#[test]
fn an_abort_goes_on_the_clients_own_connection_behind_its_submits() {
    // The controller handles one connection's messages in order. An abort sent on a
    // connection of its own could reach it before the submit of the task it aborts, still
    // queued on the client's connection, and find the task unknown while it went on to run
    // (seen as a flaky Python test on a loaded machine).
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let held = view.apply::<(), ()>("hold", ()).unwrap();
    let report = client.abort(&[held.id()]).unwrap();
    let received = f.received.lock().unwrap().clone();
    let kinds: Vec<&str> = received.iter().map(|(_, kind)| *kind).collect();
    let submit = kinds.iter().position(|k| *k == "submit").unwrap();
    let abort = kinds.iter().position(|k| *k == "abort").unwrap();
    assert_eq!(
        received[submit].0, received[abort].0,
        "the abort came on another connection than the submit: {kinds:?}"
    );
    assert!(submit < abort, "{kinds:?}");
    assert_eq!(report.aborted, [held.id()], "{report:?}");
    assert!(matches!(held.get(SECOND), Err(Error::Aborted { .. })));
}

#[test]
fn an_abort_from_a_done_callback_answers_without_waiting_for_the_io_thread() {
    // The I/O thread runs done callbacks and cannot wait for its own answers: there the
    // abort takes a connection of its own.
    let f = fake(Config::default());
    let client = Arc::new(Client::connect_file(&f.file).unwrap());
    let view = client.load_balanced_view();
    let held = view.apply::<(), ()>("hold", ()).unwrap();
    let id = held.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let c = client.clone();
    view.apply(DOUBLE, 1u64)
        .unwrap()
        .add_done_callback(move |_| tx.send(c.abort(&[id])).unwrap());
    let report = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(report.aborted, [id]);
    // (The fake sends the aborted outcome to the asking connection, not to the submitter.)
    drop(held);
}
