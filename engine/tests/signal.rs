//! SIGTERM makes a running engine unregister and return `Ok`. In its own test binary because
//! it signals the whole process.

use cluster_engine::{Engine, EngineOptions};
use protocol::{EngineId, FromEngine, ToEngine};
use testkit::FakeController;

#[test]
fn sigterm_unregisters_and_returns_ok() {
    let mut fake = FakeController::new();
    let options = EngineOptions::new(fake.file.clone());
    let engine =
        std::thread::spawn(move || Engine::builder().stock_functions().build().run(options));
    // The handlers are installed before the engine registers, so signalling after the
    // registration arrived cannot kill the test process.
    let (route, _) = fake.expect_register();
    fake.send_engine(
        &route,
        &ToEngine::Registered {
            engine_id: EngineId(2),
            heartbeat_period_ms: 1000,
        },
        &[],
    );
    // SAFETY: plain syscall on our own process.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
    assert_eq!(fake.recv_engine().msg, FromEngine::Unregister);
    engine
        .join()
        .unwrap()
        .expect("a signal is a clean shutdown");
}
