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
