//! Client requests: hello, where results go, fetch and purge, status, shutdown, abort, and
//! submissions that are malformed or repeated.

use super::*;
use protocol::DropCounts;

#[test]
fn clients_get_ids_and_the_engine_list() {
    let mut h = Harness::new(Hwm::Auto);
    h.register("a", &["f"]);
    assert_eq!(h.hello(CLIENT), ClientId(1));
    assert_eq!(h.hello(OTHER_CLIENT), ClientId(2));
    assert_eq!(h.hello(CLIENT), ClientId(1), "same connection");
    let welcome = h.client(b"c3", FromClient::Hello);
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
    assert_eq!(h.status().controller.clients, 3);
}

#[test]
fn results_go_to_the_connection_that_submitted_them() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    h.submit(vec![call(1, "f")]);
    h.submit_from(OTHER_CLIENT, vec![call(2, "f")]);
    let back = h.finish("a", &[tid(1), tid(2)], 5);
    let msgs = delivered(&back);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].0, CLIENT);
    assert_eq!(msgs[0].1[0].id, tid(1));
    assert_eq!(msgs[1].0, OTHER_CLIENT);
    assert_eq!(msgs[1].1[0].id, tid(2));
}

#[test]
fn fetch_answers_results_and_pending_and_purge_forgets() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f"]);
    h.submit(vec![call(1, "f"), call(2, "f"), call(3, "f")]);
    h.finish("a", &[tid(1)], 1);
    let fetch = |h: &mut Harness, ids: Vec<TaskId>| h.client(CLIENT, FromClient::Fetch { ids });
    let actions = fetch(&mut h, vec![tid(1), tid(2), tid(3), tid(9)]);
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
        &fetch(&mut h, vec![])[..],
        [Action::ToClient {
            msg: ToClient::Pending { .. },
            ..
        }]
    ));

    let purge = |h: &mut Harness, ids| h.client(CLIENT, FromClient::Purge { ids });
    assert!(matches!(
        &purge(&mut h, vec![tid(1)])[..],
        [Action::ToClient {
            msg: ToClient::Ack,
            ..
        }]
    ));
    let actions = fetch(&mut h, vec![tid(1)]);
    assert!(delivered(&actions).is_empty());
    h.finish("a", &[tid(2)], 1);
    h.finish("a", &[tid(3)], 1);
    assert_eq!(h.status().tasks.stored, 2);
    purge(&mut h, vec![]);
    assert_eq!(h.status().tasks.stored, 0);
}

#[test]
fn status_reports_controller_engines_tasks_and_drops() {
    let mut h = Harness::with_config(
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
    h.register("b", &["f"]);
    h.register("a", &["f"]);
    h.hello(CLIENT);
    h.submit(vec![call(1, "f")]);
    h.core.set_dropped(DropCounts {
        replayed: 3,
        ..Default::default()
    });
    h.at(secs(7));
    let actions = h.client(CLIENT, FromClient::Status);
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
    let mut h = Harness::new(Hwm::Auto);
    h.register("a", &[]);
    h.register("b", &[]);
    let shutdown =
        |h: &mut Harness, controller| h.client(CLIENT, FromClient::Shutdown { controller });
    let actions = shutdown(&mut h, false);
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
    assert_eq!(shutdown(&mut h, true).last(), Some(&Action::Stop));
}

#[test]
fn unreachable_engine_is_gone_and_unreachable_client_gets_nothing_more() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    h.register("b", &["f"]);
    h.submit(vec![with(call(1, "f"), &[], 1)]);
    let actions = h.core.on_engine_unreachable(EngineId(0), h.now);
    assert!(actions.contains(&Action::Publish(Notification::EngineLeft {
        id: EngineId(0),
        reason: "unreachable".into()
    })));
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(1))]);

    h.core.on_client_unreachable(CLIENT);
    let actions = h.finish("b", &[tid(1)], 1);
    assert!(delivered(&actions).is_empty());
    // Stored all the same, for a fetch; a client that speaks again gets results again.
    let actions = h.client(CLIENT, FromClient::Fetch { ids: vec![tid(1)] });
    assert_eq!(delivered(&actions).len(), 1);
    h.submit(vec![call(2, "f")]);
    assert_eq!(delivered(&h.finish("b", &[tid(2)], 1)).len(), 1);
}

#[test]
fn bad_submissions_are_answered_not_lost() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    // Payload count mismatch: every task fails with BadArguments.
    let actions = h.core.on_client(
        CLIENT,
        FromClient::Submit {
            tasks: vec![call(1, "f"), call(2, "f")],
        },
        vec![b"only one".to_vec()],
        h.now,
    );
    let outcomes = &delivered(&actions)[0].1;
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes
        .iter()
        .all(|o| error_of(o).kind == ErrorKind::BadArguments));
    // Submitting a task again is harmless (a client after a controller restart does): an
    // unfinished one runs once, a finished one is answered with its stored result.
    h.submit(vec![call(3, "f")]);
    let actions = h.submit(vec![call(1, "f"), call(3, "f"), call(4, "f")]);
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
    let actions = h.submit_from(OTHER_CLIENT, vec![call(3, "f")]);
    assert!(sent_to(&actions).is_empty());
    let msgs = delivered(&h.finish("a", &[tid(3)], 1));
    assert_eq!(msgs[0].0, OTHER_CLIENT);
}

#[test]
fn abort_stops_queued_and_waiting_tasks_only() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f"]);
    h.submit(vec![
        call(1, "f"),
        call(2, "f"),
        call(3, "f"),
        after(call(4, "f"), &[1]),
    ]);
    h.finish("a", &[tid(1)], 5);
    // 2 runs now, 3 is queued, 4 is queued too (1 is done).
    let q = h.core.queue_status();
    assert_eq!((q.unassigned, q.waiting), (2, 0));
    assert_eq!(q.engines[0].outstanding, 1);
    let actions = h.client(
        OTHER_CLIENT,
        FromClient::Abort {
            ids: vec![tid(1), tid(2), tid(3), tid(99)],
        },
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
    let actions = h.finish("a", &[tid(2)], 5);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(4))]);
    let q = h.core.queue_status();
    assert_eq!((q.unassigned, q.waiting), (0, 0));
    let actions = h.client(CLIENT, FromClient::QueueStatus);
    assert!(matches!(
        &actions[..],
        [Action::ToClient { msg: ToClient::QueueStatus(q), .. }] if q.engines.len() == 1 && q.engines[0].completed == 2
    ));
}
