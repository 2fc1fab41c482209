//! The heartbeat rule: pings, missed rounds, death by silence, and coming back.

use super::*;

#[test]
fn heartbeat_misses_make_an_engine_unresponsive_then_dead() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f"]);
    h.register("b", &["f"]);
    h.submit(vec![call(1, "f"), call(2, "f")]);
    assert_eq!(h.core.next_tick(), secs(1));
    assert!(h.tick(Duration::from_millis(999)).is_empty());
    for n in 1..=6u64 {
        let actions = h.tick(secs(n));
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
                // Nobody left (the activity feed is published meanwhile).
                assert!(!actions
                    .iter()
                    .any(|a| matches!(a, Action::Publish(Notification::EngineLeft { .. }))));
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
            assert_eq!(h.engine_status(1).state, "unresponsive");
            assert_eq!(h.engine_status(0).state, "alive");
        }
        h.pong("a", n);
    }
    assert_eq!(h.status().engines.len(), 1);
    // Pongs for rounds not yet sent are ignored.
    h.pong("a", 99);
    h.tick(secs(7));
    h.tick(secs(8));
    assert_eq!(h.engine_status(0).state, "unresponsive");
}

#[test]
fn a_late_loop_does_not_fire_a_burst_of_pings() {
    let mut h = Harness::new(Hwm::Auto);
    h.register("a", &[]);
    h.tick(secs(10));
    assert_eq!(h.core.next_tick(), secs(11));
    assert_eq!(h.status().engines.len(), 1, "one miss only");
}

#[test]
fn an_engine_declared_dead_by_heartbeat_that_answers_again_is_taken_back() {
    let mut h = Harness::new(Hwm::Limit(1));
    let (a, _) = h.register("a", &["f"]);
    h.register("b", &["f"]);
    // Engine a is silent (stopped) for four rounds: dead.
    for n in 1..=4u64 {
        h.tick(secs(n));
        h.pong("b", n);
    }
    assert_eq!(h.status().engines.len(), 1);
    // Resumed, it answers the pings that waited for it: it is back, and gets work.
    let back = h.pong("a", 2);
    assert!(back
        .iter()
        .any(|x| matches!(x, Action::Publish(Notification::EngineJoined(i)) if i.id == a)));
    assert_eq!(h.status().engines.len(), 2);
    let actions = h.submit(vec![with(call(1, "f"), &[0], 0)]);
    assert_eq!(sent_to(&actions), [(a, tid(1))]);
    // One that said goodbye stays gone whatever arrives late.
    h.unregister("b");
    assert!(h.pong("b", 4).is_empty());
    assert_eq!(h.status().engines.len(), 1);
}
