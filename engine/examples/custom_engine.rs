//! A user's own engine binary: the stock functions plus two of its own.
//!
//! Build it, then let the cluster launch it instead of the stock engine; it is started as
//! `PROGRAM --file engine.json`, like `cluster engine`:
//!
//! ```text
//! cargo build --release --example custom_engine
//! cluster start -n 4 --engine-program target/release/examples/custom_engine
//! ```

use cluster_engine::Engine;
use std::process::ExitCode;

fn main() -> ExitCode {
    Engine::builder()
        .stock_functions()
        .function("square", |x: i64| {
            x.checked_mul(x)
                .ok_or_else(|| format!("{x} squared overflows an i64"))
        })
        .function("word_count", |text: String| {
            Ok::<_, String>(text.split_whitespace().count() as u64)
        })
        .build()
        .main()
}
