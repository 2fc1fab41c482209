//! Not timed assertions: numbers against the fake controller, printed for comparison.

use super::*;

/// Not a timed assertion: prints the round trip against the fake for comparison.
#[test]
fn round_trip_latency() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let mut times = Vec::new();
    for i in 0..500u64 {
        let start = Instant::now();
        let _: u64 = view.apply(DOUBLE, i).unwrap().get(SECOND).unwrap();
        times.push(start.elapsed());
    }
    times.sort();
    eprintln!(
        "apply round trip against the fake: median {:?}, p90 {:?}",
        times[times.len() / 2],
        times[times.len() * 9 / 10]
    );
}

/// Not a timed assertion: prints throughputs against the fake for comparison.
#[test]
fn throughput() {
    let f = fake(Config {
        batch: 4096,
        ..Config::default()
    });
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let n = 20_000u64;
    let start = Instant::now();
    let results: Vec<AsyncResult<u64>> = (0..n).map(|i| view.apply(DOUBLE, i).unwrap()).collect();
    for r in results {
        r.get(SECOND).unwrap();
    }
    let applies = n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    view.clone()
        .chunksize(1)
        .map::<_, u64>("double", 0..n)
        .unwrap()
        .get(SECOND)
        .unwrap();
    let one_item = n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let big: u64 = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    view.map::<_, u64>("double", 0..big)
        .unwrap()
        .get(SECOND)
        .unwrap();
    let chunked = big as f64 / start.elapsed().as_secs_f64();
    eprintln!(
        "against the fake: {applies:.0} applies/s, {one_item:.0} one-item map tasks/s, {chunked:.0} chunked map items/s"
    );
}
