//! A streaming `imap` over a large range (default 1,000,000 items) with flat memory: items
//! are read from the iterator only as results come back, at most a few chunks per engine in
//! flight, and every result is consumed as it arrives. Prints the rate and this process's
//! peak resident memory (VmHWM), which stays the same whether the stream is a million items
//! long or a hundred million.
//!
//! ```text
//! cluster start -n 2
//! cargo run --release -p cluster-client --example imap_stream -- 1000000
//! cargo run --release -p cluster-client --example imap_stream -- 10000000
//! ```

use cluster_client::{stock, Client};
use std::time::Instant;

/// Peak resident set size of this process, in KiB (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let json = args.any(|a| a == "--json");
    let client = Client::connect_env()?;
    let view = client.load_balanced_view();
    let before_kib = peak_rss_kib().unwrap_or(0);

    let start = Instant::now();
    let mut stream = view.imap(stock::echo::<u64>(), 0..n);
    let mut total: u64 = 0;
    let mut count: u64 = 0;
    for result in stream.by_ref() {
        total = total.wrapping_add(result?);
        count += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    let chunksize = stream.current_chunksize();
    drop(stream);

    let expected = (0..n).fold(0u64, |a, b| a.wrapping_add(b));
    if count != n || total != expected {
        return Err(
            format!("got {count} results summing to {total}, expected {n} and {expected}").into(),
        );
    }
    let peak_kib = peak_rss_kib().unwrap_or(0);
    if json {
        println!(
            "{{\"items\":{n},\"seconds\":{seconds:.4},\"items_per_s\":{:.0},\"chunksize\":{chunksize},\"peak_rss_kib\":{peak_kib},\"rss_before_kib\":{before_kib}}}",
            n as f64 / seconds
        );
    } else {
        println!(
            "imap of {n} items: {seconds:.3} s, {:.0} items/s, final chunk {chunksize} items",
            n as f64 / seconds
        );
        println!(
            "peak resident memory: {:.1} MiB (before the stream: {:.1} MiB)",
            peak_kib as f64 / 1024.0,
            before_kib as f64 / 1024.0
        );
    }
    Ok(())
}
