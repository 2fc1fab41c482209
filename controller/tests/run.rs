//! In-process tests of `run` over real sockets on 127.0.0.1 with free ports: a fake engine
//! and a fake client speak the wire protocol to a controller running in a thread.

use cluster_controller::{run, ControllerConfig, ControllerError, Hwm};
use protocol::{
    ClientId, FromClient, FromEngine, Heartbeat, Registration, Status, TaskId, TaskOptions,
    TaskOutcome, TaskRequest, ToClient, ToEngine, Work, PROTOCOL_VERSION,
};
use security::{ConnectionInfo, Key};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport::{poll, Context, Encryption, Kind, Received, Socket, Waitable};

const WAIT: Duration = Duration::from_secs(10);

struct Controller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ControllerError>>>,
    engine: ConnectionInfo,
    client: ConnectionInfo,
}

impl Controller {
    fn start(key: &Key, security: &Path) -> Controller {
        let mut config = ControllerConfig::new(key.clone(), security.to_owned());
        config.hwm = Hwm::Limit(0);
        config.heartbeat_period = Duration::from_millis(50);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || run(config, flag));
        let deadline = Instant::now() + WAIT;
        loop {
            let engine = ConnectionInfo::load(
                &security.join("engine.json"),
                PROTOCOL_VERSION,
                &["engine", "heartbeat"],
            );
            let client = ConnectionInfo::load(
                &security.join("client.json"),
                PROTOCOL_VERSION,
                &["client", "notify"],
            );
            if let (Ok((engine, k1)), Ok((client, k2))) = (engine, client) {
                assert_eq!((&k1, &k2), (key, key));
                assert_eq!(client.controller_pid, std::process::id());
                assert!(client.encrypted() && engine.encrypted());
                return Controller {
                    stop,
                    thread: Some(thread),
                    engine,
                    client,
                };
            }
            assert!(
                !thread.is_finished(),
                "controller exited: {:?}",
                thread.join().unwrap()
            );
            assert!(Instant::now() < deadline, "no connection files");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn join(mut self) -> Result<(), ControllerError> {
        let thread = self.thread.take().unwrap();
        let deadline = Instant::now() + WAIT;
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "controller did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().unwrap()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn recv<M: DeserializeOwned>(sock: &mut Socket) -> Received<M> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(m) = sock.recv::<M>().unwrap() {
            return m;
        }
        assert!(Instant::now() < deadline, "nothing received");
        poll(&[Waitable::Socket(sock)], 100).unwrap();
    }
}

fn dealer(ctx: &Context, key: &Key, id: Option<&[u8]>, address: &Option<String>) -> Socket {
    let mut sock = Socket::new(ctx, Kind::Dealer, key, id).unwrap();
    // The controller encrypts by default; its peers follow the connection files.
    sock.set_encryption(Encryption::Endpoint);
    sock.connect(address.as_deref().unwrap()).unwrap();
    sock
}

/// A fake engine registered as uuid "fake-engine".
fn engine(ctx: &Context, key: &Key, ctl: &Controller) -> (Socket, Socket) {
    let uuid = b"fake-engine";
    let mut tasks = dealer(ctx, key, Some(uuid), &ctl.engine.addresses.engine);
    let beats = dealer(ctx, key, Some(uuid), &ctl.engine.addresses.heartbeat);
    let reg = FromEngine::Register(Registration {
        uuid: "fake-engine".into(),
        host: "here".into(),
        pid: 1,
        functions: vec!["double".into()],
        slots: 1,
        engine_id: None,
        held: Vec::new(),
        launch: None,
    });
    tasks.send(None, &reg, &[]).unwrap();
    let got: Received<ToEngine> = recv(&mut tasks);
    assert!(matches!(
        got.msg,
        ToEngine::Registered { engine_id, heartbeat_period_ms: 50 } if engine_id.0 == 0
    ));
    (tasks, beats)
}

#[test]
fn a_call_travels_client_to_engine_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate();
    let ctl = Controller::start(&key, &dir.path().join("security"));
    let ctx = Context::new();
    let (mut eng, mut beats) = engine(&ctx, &key, &ctl);

    let mut client = dealer(&ctx, &key, None, &ctl.client.addresses.client);
    client.send(None, &FromClient::Hello, &[]).unwrap();
    let ToClient::Welcome {
        client_id, engines, ..
    } = recv(&mut client).msg
    else {
        panic!("no welcome")
    };
    assert_eq!(client_id, ClientId(1));
    assert_eq!(engines.len(), 1);

    let id = TaskId::new(client_id, 1);
    let submit = FromClient::Submit {
        tasks: vec![TaskRequest {
            id,
            work: Work::Call {
                function: "double".into(),
            },
            options: TaskOptions::default(),
        }],
    };
    client.send(None, &submit, &[b"21"]).unwrap();

    let got: Received<ToEngine> = recv(&mut eng);
    let ToEngine::Tasks { tasks } = got.msg else {
        panic!("expected tasks, got {:?}", got.msg)
    };
    assert_eq!(tasks[0].id, id);
    assert_eq!(got.payloads, [b"21".to_vec()]);
    let outcome = TaskOutcome {
        id,
        engine: None,
        status: Status::Ok,
        started_us: 1,
        elapsed_us: 2,
    };
    eng.send(
        None,
        &FromEngine::Results {
            results: vec![outcome],
        },
        &[b"42"],
    )
    .unwrap();

    let got: Received<ToClient> = recv(&mut client);
    let ToClient::Results { results } = got.msg else {
        panic!("expected results, got {:?}", got.msg)
    };
    assert_eq!(results[0].id, id);
    assert_eq!(results[0].engine.map(|e| e.0), Some(0));
    assert_eq!(got.payloads, [b"42".to_vec()]);

    // The heartbeat socket is pinged; answering keeps the engine alive.
    let ping: Received<Heartbeat> = recv(&mut beats);
    let Heartbeat::Ping { seq } = ping.msg else {
        panic!("expected a ping")
    };
    beats
        .send(
            None,
            &Heartbeat::Pong {
                seq,
                uuid: "fake-engine".into(),
                usage: None,
            },
            &[],
        )
        .unwrap();

    client.send(None, &FromClient::Status, &[]).unwrap();
    let ToClient::Status(report) = recv(&mut client).msg else {
        panic!("expected status")
    };
    assert_eq!(report.engines.len(), 1);
    assert_eq!(report.tasks.done, 1);
    assert_eq!(
        report.controller.client_address,
        ctl.client.addresses.client.clone().unwrap()
    );

    ctl.stop.store(true, Ordering::Relaxed);
    ctl.join().unwrap();
}

#[test]
fn a_client_can_shut_the_cluster_down() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate();
    let ctl = Controller::start(&key, dir.path());
    let ctx = Context::new();
    let (mut eng, _beats) = engine(&ctx, &key, &ctl);
    let mut client = dealer(&ctx, &key, None, &ctl.client.addresses.client);
    client
        .send(None, &FromClient::Shutdown { controller: true }, &[])
        .unwrap();
    assert_eq!(recv::<ToClient>(&mut client).msg, ToClient::Ack);
    assert_eq!(recv::<ToEngine>(&mut eng).msg, ToEngine::Shutdown);
    ctl.join().unwrap();
}

#[test]
fn a_port_in_use_is_an_error_naming_the_address() {
    let key = Key::generate();
    let ctx = Context::new();
    let squatter = Socket::new(&ctx, Kind::Router, &key, None).unwrap();
    let address = squatter.bind("tcp://127.0.0.1:0").unwrap();
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ControllerConfig::new(key, dir.path().to_owned());
    config.client_port = port;
    let err = run(config, Arc::new(AtomicBool::new(false))).unwrap_err();
    assert!(
        matches!(err, ControllerError::Bind { role: "client", .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&address), "{err}");
    assert!(!dir.path().join("client.json").exists());
}

/// Issue 9 ("up 622.4 s, 19 client(s)" with only `cluster status` connected): clients that
/// come and go the way `cluster status` does (hello, status, goodbye, close) or the way a
/// killed one does (its connection just closes) are forgotten, so the last of twenty sees
/// only itself.
#[test]
fn clients_that_come_and_go_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate();
    let ctl = Controller::start(&key, dir.path());
    let ctx = Context::new();
    let clients_seen = |client: &mut Socket| {
        client.send(None, &FromClient::Status, &[]).unwrap();
        let ToClient::Status(report) = recv(client).msg else {
            panic!("expected status")
        };
        report.controller.clients
    };
    for n in 0..20 {
        // A routing id of its own, as the client library gives each connection.
        let id = format!("client-{n}");
        let mut client = dealer(
            &ctx,
            &key,
            Some(id.as_bytes()),
            &ctl.client.addresses.client,
        );
        client.send(None, &FromClient::Hello, &[]).unwrap();
        assert!(matches!(recv(&mut client).msg, ToClient::Welcome { .. }));
        assert!(clients_seen(&mut client) >= 1);
        if n % 2 == 0 {
            client.set_linger(1000).unwrap();
            client.send(None, &FromClient::Goodbye, &[]).unwrap();
        }
    }
    let mut last = dealer(&ctx, &key, Some(b"last"), &ctl.client.addresses.client);
    last.send(None, &FromClient::Hello, &[]).unwrap();
    assert!(matches!(recv(&mut last).msg, ToClient::Welcome { .. }));
    // Closed connections are noticed within milliseconds; allow for a slow machine.
    let deadline = Instant::now() + WAIT;
    let mut seen = clients_seen(&mut last);
    while seen != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        seen = clients_seen(&mut last);
    }
    assert_eq!(seen, 1, "clients that left are still counted");
    ctl.stop.store(true, Ordering::Relaxed);
    ctl.join().unwrap();
}
