//! Engines joining, registering again, leaving and coming back.

use super::*;

#[test]
fn registration_gives_ids_in_order_and_reregistration_keeps_them() {
    let mut h = Harness::new(Hwm::Auto);
    let (a, actions) = h.register("a", &["f"]);
    assert_eq!(a, EngineId(0));
    assert!(actions.iter().any(|x| matches!(
        x,
        Action::ToEngine { msg: ToEngine::Registered { heartbeat_period_ms: 1000, .. }, route, .. } if route == b"a"
    )));
    assert!(actions.iter().any(|x| matches!(
        x,
        Action::Publish(Notification::EngineJoined(info)) if info.id == a && info.host == "host-a"
    )));
    let (b, _) = h.register("b", &["f"]);
    assert_eq!(b, EngineId(1));

    // Re-registration while alive, and after leaving, keeps the id.
    assert_eq!(h.register("a", &["f", "g"]).0, a);
    let left = h.unregister("a");
    assert!(left.contains(&Action::Publish(Notification::EngineLeft {
        id: a,
        reason: "unregistered".into()
    })));
    assert_eq!(h.register("c", &[]).0, EngineId(2));
    assert_eq!(h.register("a", &["f"]).0, a);
    let ids: Vec<_> = h.status().engines.iter().map(|e| e.id.0).collect();
    assert_eq!(ids, [0, 1, 2]);

    // A registration without an identity is refused, not numbered.
    let refused = h.engine("x", registration("", &[]));
    assert!(matches!(
        &refused[..],
        [Action::ToEngine {
            msg: ToEngine::Refused { .. },
            ..
        }]
    ));
}

#[test]
fn a_repeated_registration_is_acknowledged_quietly_and_a_dead_engine_comes_back() {
    let mut h = Harness::new(Hwm::Limit(1));
    let (a, _) = h.register("a", &["f"]);
    h.submit(vec![call(1, "f")]);
    let again = h.engine("a", registration("a", &["f"]));
    assert_eq!(registered_id(&again), Some(a));
    assert_eq!(again.len(), 1, "no notification: {again:?}");
    assert_eq!(h.engine_status(0).outstanding, 1, "its task is kept");
    // Declared dead (its connection closed), it registers again with the same uuid.
    let gone = h.core.on_engine_disconnected(b"a", h.now);
    assert!(gone.contains(&Action::Publish(Notification::EngineLeft {
        id: a,
        reason: "disconnected".into()
    })));
    assert_eq!(
        error_of(&delivered(&gone)[0].1[0]).kind,
        ErrorKind::EngineLost
    );
    assert!(h.core.on_engine_disconnected(b"a", h.now).is_empty());
    assert!(h.core.on_engine_disconnected(b"nobody", h.now).is_empty());
    let (_, actions) = h.register("a", &["f"]);
    assert!(actions
        .iter()
        .any(|x| matches!(x, Action::Publish(Notification::EngineJoined(i)) if i.id == a)));
    assert_eq!(h.engine_status(0).outstanding, 0);
}
