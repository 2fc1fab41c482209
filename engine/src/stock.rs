//! The stock functions every `cluster engine` offers, for demos and benchmarks.
//!
//! Their typed handles ([`NTH_PRIME`], [`SUM_RANGE`], …) come from `cluster-protocol`, so
//! that client code uses the very same declarations without depending on this crate.
//!
//! They are public so that tests and benchmarks compute expected values locally with the
//! very same code. Each does its work honestly: [`std::hint::black_box`] keeps the optimiser
//! from replacing a loop with its closed form or folding a known argument.

pub use protocol::stock::{echo, BUSY_WAIT, NOOP, NTH_PRIME, SLEEP, SUM_RANGE, WHOAMI};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The `n`-th prime, counting from 0 (`nth_prime(0) == 2`, `nth_prime(999) == 7919`).
///
/// Trial division as in the seed chapter's `prime_generator`: each candidate is divided by
/// every prime found so far until one divides it. That costs roughly `n²` divisions, which is
/// the point: a CPU-bound task whose cost grows with its argument.
pub fn nth_prime(n: u64) -> u64 {
    // Capacity is bounded so that a huge `n` from the network cannot allocate up front.
    let mut primes: Vec<u64> = Vec::with_capacity((n.min(1 << 16) + 1) as usize);
    let mut candidate: u64 = 2;
    loop {
        let c = black_box(candidate);
        if primes.iter().all(|&p| c % p != 0) {
            if primes.len() as u64 == n {
                return c;
            }
            primes.push(c);
        }
        candidate += 1;
    }
}

/// The sum of `0..n` (wrapping on overflow), by a real loop over every value.
pub fn sum_range(n: u64) -> u64 {
    let mut total: u64 = 0;
    for i in 0..n {
        total = total.wrapping_add(black_box(i));
    }
    total
}

/// Spins on the clock for `seconds` (at once for zero, negative or NaN), keeping a core busy.
pub fn busy_wait(seconds: f64) {
    let until = Instant::now() + to_duration(seconds);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Sleeps for `seconds` (at once for zero, negative or NaN).
pub fn sleep(seconds: f64) {
    std::thread::sleep(to_duration(seconds));
}

/// Seconds to a duration, saturating rather than panicking on odd values.
fn to_duration(seconds: f64) -> Duration {
    if seconds.is_nan() || seconds <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }
}

/// Refuses durations that are not a finite, non-negative number of seconds, so a caller's
/// typo fails the task instead of holding the engine forever.
fn check_seconds(seconds: f64) -> Result<f64, String> {
    if seconds.is_finite() && seconds >= 0.0 {
        Ok(seconds)
    } else {
        Err(format!(
            "seconds must be a finite, non-negative number, got {seconds}"
        ))
    }
}

/// Registers the stock functions on a builder.
pub(crate) fn register(builder: crate::EngineBuilder) -> crate::EngineBuilder {
    builder
        // Raw, so that it accepts anything at all (even an empty payload) and costs nothing.
        .raw_function(NOOP.name(), |_| Ok(vec![0xc0]))
        .raw_function(echo::<()>().name(), |bytes| Ok(bytes.to_vec()))
        .register(SLEEP, |seconds: f64| check_seconds(seconds).map(sleep))
        .register(BUSY_WAIT, |seconds: f64| {
            check_seconds(seconds).map(busy_wait)
        })
        .register(NTH_PRIME, |n: u64| Ok::<_, String>(nth_prime(n)))
        .register(SUM_RANGE, |n: u64| Ok::<_, String>(sum_range(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_prime_is_zero_based() {
        assert_eq!(nth_prime(0), 2);
        assert_eq!(nth_prime(1), 3);
        assert_eq!(nth_prime(4), 11);
        assert_eq!(nth_prime(999), 7919);
    }

    #[test]
    fn sum_range_loops_honestly() {
        assert_eq!(sum_range(0), 0);
        assert_eq!(sum_range(10), 45);
        assert_eq!(sum_range(10_000_000), 49_999_995_000_000);
    }

    #[test]
    fn registered_stock_functions_take_msgpack_arguments() {
        use crate::registry::Mode;
        let engine = crate::Engine::builder().stock_functions().build();
        let call = |name: &str, arg: &[u8]| engine.registry.call(name, Mode::Call, arg);
        fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
            rmp_serde::to_vec_named(v).unwrap()
        }
        // An integer where a float is expected is accepted (clients in other languages).
        assert_eq!(call("sleep", &enc(&0u8)).unwrap(), vec![0xc0]);
        assert_eq!(call("busy_wait", &enc(&0.001f64)).unwrap(), vec![0xc0]);
        assert!(call("sleep", &enc(&-1.0f64)).is_err());
        assert_eq!(call("nth_prime", &enc(&999u64)).unwrap(), enc(&7919u64));
        assert_eq!(call("sum_range", &enc(&10u8)).unwrap(), enc(&45u64));
        assert_eq!(
            call("noop", b"").unwrap(),
            vec![0xc0],
            "noop takes anything"
        );
        assert_eq!(call("echo", &enc(&"x")).unwrap(), enc(&"x"));
    }

    #[test]
    fn waits_take_about_their_time_and_odd_values_return_at_once() {
        let t = Instant::now();
        busy_wait(0.02);
        sleep(0.02);
        let e = t.elapsed();
        assert!(e >= Duration::from_millis(40), "{e:?}");
        let t = Instant::now();
        busy_wait(-1.0);
        busy_wait(f64::NAN);
        sleep(-5.0);
        assert!(t.elapsed() < Duration::from_millis(20));
        assert!(check_seconds(f64::INFINITY).is_err());
        assert!(check_seconds(-1.0).is_err());
        assert_eq!(check_seconds(0.5), Ok(0.5));
    }
}
