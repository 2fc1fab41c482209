//! Holds a shared lock until killed: `lock_holder NAME [LEASE_MS]` acquires the lock (with
//! that lease, default 10 s), prints `held LEASE` and sleeps. The end-to-end tests kill it
//! (`kill -9`, or stop it with SIGSTOP) to check that the lock is freed for the others.

use cluster_client::Client;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "lock".into());
    let lease: u64 = match std::env::args().nth(2) {
        Some(ms) => ms.parse()?,
        None => 10_000,
    };
    let client = Client::connect_env()?;
    let lock = client.lock(&name).with_lease(Duration::from_millis(lease));
    let guard = lock.acquire(Some(Duration::from_secs(30)))?;
    println!("held {}", guard.lease());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
