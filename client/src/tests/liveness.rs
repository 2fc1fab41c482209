//! Liveness over real sockets: status answered while results stream, a silent controller,
//! probes that keep a held task waiting, a dropped client. (The timer rules themselves are
//! fake-clock tests in `crate::core`.)

use super::*;

#[test]
fn status_is_answered_while_results_stream() {
    let f = fake(Config {
        batch: 10,
        pause: Duration::from_millis(1),
        ..Config::default()
    });
    let client = Arc::new(Client::connect_file(&f.file).unwrap());
    let view = client.load_balanced_view().chunksize(1);
    let m = view.map::<_, u64>("double", 0..2000u64).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.progress().0 == 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    let other = {
        let client = client.clone();
        std::thread::spawn(move || client.status().map(|s| s.engines.len()))
    };
    let report = client.status().unwrap();
    assert_eq!(report.engines.len(), 2);
    assert_eq!(other.join().unwrap().unwrap(), 2);
    let sent = f.sent_at_status.load(Ordering::SeqCst);
    assert!(
        sent > 0 && sent < 2000,
        "status answered after {sent} results"
    );
    assert_eq!(
        m.get(SECOND).unwrap(),
        (0..2000u64).map(|x| 2 * x).collect::<Vec<_>>()
    );
}

#[test]
fn a_silent_controller_ends_waits_with_connection_lost() {
    let f = fake(Config::default());
    let client = Client::connect_file_with(&f.file, quick()).unwrap();
    let ar = client
        .load_balanced_view()
        .apply::<(), ()>("hold", &())
        .unwrap();
    drop(f);
    let start = Instant::now();
    let err = ar.get(None).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, Error::ConnectionLost { .. }), "{err:?}");
    assert!(err.is_retryable());
    // Later submissions fail at once.
    let err = client
        .load_balanced_view()
        .apply::<(), ()>("echo", &())
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionLost { .. }), "{err:?}");
}

#[test]
fn a_held_task_keeps_waiting_while_the_controller_answers_probes() {
    let f = fake(Config::default());
    let client = Client::connect_file_with(&f.file, quick()).unwrap();
    let ar = client
        .load_balanced_view()
        .apply::<(), ()>("hold", &())
        .unwrap();
    // Well past the 0.9 s silence limit: probes are answered, so it is still waiting.
    let err = ar.get(Some(Duration::from_millis(1500))).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[test]
fn dropping_the_client_ends_pending_waits() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let ar = view.apply::<(), ()>("hold", &()).unwrap();
    drop(client);
    let err = ar.get(None).unwrap_err();
    assert!(err.to_string().contains("dropped"), "{err}");
    assert!(matches!(
        view.apply::<(), ()>("echo", &()),
        Err(Error::ConnectionLost { .. })
    ));
    drop(f);
}
