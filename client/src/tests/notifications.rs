//! [`Subscriber`]: notifications from a PUB socket, checked with the cluster key, and a new
//! controller followed through its connection file.

use crate::Subscriber;
use protocol::{Notification, TaskStats};
use security::{Addresses, Key};
use std::time::{Duration, Instant};
use transport::{Context, Kind, Socket};

/// A PUB socket on a free loopback port with `key`; its address.
fn publisher(ctx: &Context, key: &Key) -> (Socket, String) {
    let sock = Socket::new(ctx, Kind::Pub, key, None).unwrap();
    let address = sock.bind("tcp://127.0.0.1:0").unwrap();
    (sock, address)
}

fn stats(n: u64) -> Notification {
    Notification::TaskStats(Box::new(TaskStats {
        submitted: n,
        ..TaskStats::default()
    }))
}

/// Publishes `stats(n)` every 50 ms until `sub` hears it (a subscriber hears only what comes
/// after it has joined), within 10 s.
fn heard(publisher: &mut Socket, sub: &mut Subscriber, n: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        publisher.send(None, &stats(n), &[]).unwrap();
        if let Some(Notification::TaskStats(s)) = sub.next(Duration::from_millis(50)).unwrap() {
            if s.submitted == n {
                return true;
            }
        }
    }
    false
}

#[test]
fn a_subscriber_hears_its_controller_and_follows_a_new_one_through_the_file() {
    let ctx = Context::new();
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate();
    let (mut first, address) = publisher(&ctx, &key);
    let file = |address: &str, key: &Key| {
        testkit::connection_file(
            dir.path(),
            "client.json",
            key,
            Addresses {
                notify: Some(address.to_owned()),
                ..Addresses::default()
            },
        )
    };
    let path = file(&address, &key);
    let mut sub = Subscriber::connect_file(&path).unwrap();
    assert!(heard(&mut first, &mut sub, 1));

    // A new controller: another port and key, written into the same file.
    drop(first);
    let key2 = Key::generate();
    let (mut second, address2) = publisher(&ctx, &key2);
    file(&address2, &key2);
    assert!(
        heard(&mut second, &mut sub, 2),
        "follows the new controller"
    );
    assert_eq!(sub.reconnects(), 1);
}

#[test]
fn messages_signed_with_another_key_are_dropped() {
    let ctx = Context::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut forger, address) = publisher(&ctx, &Key::generate());
    let path = testkit::connection_file(
        dir.path(),
        "client.json",
        &Key::generate(),
        Addresses {
            notify: Some(address),
            ..Addresses::default()
        },
    );
    let mut sub = Subscriber::connect_file(&path).unwrap();
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        forger.send(None, &stats(9), &[]).unwrap();
        assert_eq!(sub.next(Duration::from_millis(50)).unwrap(), None);
    }
}
