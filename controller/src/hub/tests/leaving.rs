//! Clients leaving: by goodbye, by a closed connection, by silence. What they leave behind is
//! their results, fetchable by any client; no route or per-client entry stays.

use super::*;
use crate::hub::clients::CLIENT_SILENCE;

/// Client `id`'s task `seq` of function `f`.
fn task_of(id: ClientId, seq: u64) -> TaskRequest {
    TaskRequest {
        id: TaskId::new(id, seq),
        ..call(seq, "f")
    }
}

/// Regression (`cluster status` said "up 622.4 s, 19 client(s)" with only itself connected):
/// the controller kept every client that ever said hello. A thousand clients that come, run
/// a task, and leave (a third by goodbye, a third by closing their connection, a third by
/// going silent) leave every table as it was and the client count where it started, and
/// their results fetchable by another client.
#[test]
fn a_thousand_short_lived_clients_leave_the_controller_as_it_was() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    h.hello(CLIENT);
    h.submit(vec![call(1, "f")]);
    h.finish("a", &[tid(1)], 5);
    let before = h.tables();
    assert_eq!(h.status().controller.clients, 1);

    let mut ids = Vec::new();
    for n in 0..1000u64 {
        let route = format!("short-lived-{n}").into_bytes();
        let id = h.hello(&route);
        assert!(!ids.iter().any(|&(_, i)| i == id), "ids are never reused");
        let sent = sent_to(&h.submit_from(&route, vec![task_of(id, 1)]));
        assert_eq!(sent.len(), 1);
        let delivered_to = delivered(&h.finish("a", &[sent[0].1], 5));
        assert_eq!(delivered_to[0].0, route);
        h.client(&route, FromClient::Status);
        match n % 3 {
            0 => h.goodbye(&route),
            1 => {
                h.core.on_client_disconnected(&route, h.now);
            }
            _ => {} // silent from now on
        }
        ids.push((sent[0].1, id));
        h.at(h.now + Duration::from_millis(1));
    }
    assert_eq!(
        h.status().controller.clients,
        1 + 333,
        "the silent ones are still known"
    );
    // Ten minutes on, the long-lived client speaks, and a heartbeat round passes.
    h.at(h.now + CLIENT_SILENCE);
    h.client(CLIENT, FromClient::Status);
    h.tick(h.now);
    assert_eq!(h.tables(), before);
    assert_eq!(h.status().controller.clients, 1);
    // Every result is still there, for anyone.
    let wanted: Vec<TaskId> = ids.iter().map(|&(t, _)| t).collect();
    let actions = h.client(b"someone-else", FromClient::Fetch { ids: wanted });
    assert_eq!(delivered(&actions)[0].1.len(), 1000);
    assert_eq!(h.tables(), before, "fetching registers nobody");
}

#[test]
fn a_client_that_says_goodbye_with_tasks_running_leaves_their_results_fetchable() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    let empty = h.tables();
    h.hello(CLIENT);
    h.submit(vec![call(1, "f"), call(2, "f")]);
    h.finish("a", &[tid(1)], 5);
    h.goodbye(CLIENT);
    assert_eq!(h.status().controller.clients, 0);
    // Task 2 finishes after its client left: stored, sent to nobody.
    assert!(delivered(&h.finish("a", &[tid(2)], 5)).is_empty());
    assert_eq!(h.tables(), empty);
    let actions = h.client(
        OTHER_CLIENT,
        FromClient::Fetch {
            ids: vec![tid(1), tid(2)],
        },
    );
    assert_eq!(delivered(&actions)[0].1.len(), 2);
    // A goodbye from a stranger, or a second one, changes nothing.
    h.goodbye(b"stranger");
    h.goodbye(CLIENT);
    assert_eq!(h.tables(), empty);
}

#[test]
fn a_client_whose_connection_closed_is_forgotten_once_its_tasks_are_done() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    let empty = h.tables();
    h.hello(CLIENT);
    h.submit(vec![call(1, "f"), call(2, "f")]);
    h.core.on_client_disconnected(CLIENT, h.now);
    // Unfinished tasks keep it: it may be a network blip, and it reconnects...
    assert_eq!(h.status().controller.clients, 1);
    h.tick(secs(1));
    assert_eq!(h.status().controller.clients, 1);
    h.client(CLIENT, FromClient::Status);
    let msgs = delivered(&h.finish("a", &[tid(1)], 5));
    assert_eq!(msgs[0].0, CLIENT, "reconnected, it gets its results");
    // ...or not: closed again, it goes once its last task is done, at the next round.
    h.core.on_client_disconnected(CLIENT, h.now);
    h.finish("a", &[tid(2)], 5);
    assert_eq!(h.status().controller.clients, 1);
    h.tick(secs(2));
    assert_eq!(h.status().controller.clients, 0);
    assert_eq!(h.tables(), empty);
    // A closed connection nobody knew is ignored.
    h.core.on_client_disconnected(b"stranger", h.now);
    assert_eq!(h.tables(), empty);
}

#[test]
fn a_silent_client_is_forgotten_after_ten_minutes_unless_it_has_unfinished_tasks() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    h.hello(CLIENT);
    h.hello(OTHER_CLIENT);
    h.submit_from(OTHER_CLIENT, vec![task_of(ClientId(2), 1)]);
    // Just under the limit: both stay.
    h.tick(CLIENT_SILENCE - secs(1));
    h.pong("a", 1);
    assert_eq!(h.status().controller.clients, 2);
    // Past it: the one with a task running stays, however long it runs.
    h.tick(CLIENT_SILENCE + secs(1));
    assert_eq!(h.status().controller.clients, 1);
    h.tick(CLIENT_SILENCE * 3);
    assert_eq!(h.status().controller.clients, 1);
    let msgs = delivered(&h.finish("a", &[TaskId::new(ClientId(2), 1)], 5));
    assert_eq!(msgs[0].0, OTHER_CLIENT);
    h.tick(CLIENT_SILENCE * 3 + secs(1));
    assert_eq!(h.status().controller.clients, 0);
}

/// A forgotten client may still be there (silent, not gone): when it submits again it is
/// known again by its old id, which no newcomer got meanwhile.
#[test]
fn a_forgotten_client_that_speaks_again_keeps_its_id() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    let id = h.hello(CLIENT);
    h.tick(CLIENT_SILENCE);
    assert_eq!(h.status().controller.clients, 0);
    let newcomer = h.hello(OTHER_CLIENT);
    assert_ne!(newcomer, id);
    let sent = sent_to(&h.submit(vec![task_of(id, 1)]));
    let msgs = delivered(&h.finish("a", &[sent[0].1], 5));
    assert_eq!(msgs[0].0, CLIENT);
    assert_eq!(
        h.hello(CLIENT),
        id,
        "known again, by the id its tasks carry"
    );
    assert_eq!(h.status().controller.clients, 2);
}
