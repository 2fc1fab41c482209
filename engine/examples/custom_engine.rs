//! A user's own engine binary: the stock functions plus its own, registered through typed
//! handles that client code shares (see `shared/functions.rs` and
//! `client/examples/custom_client.rs`).
//!
//! Build it, then let the cluster launch it instead of the stock engine; it is started as
//! `PROGRAM --file engine.json`, like `cluster engine`:
//!
//! ```text
//! cargo build --release --example custom_engine
//! cluster start -n 4 --engine-program target/release/examples/custom_engine
//! cargo run --release -p cluster-client --example custom_client
//! ```

#[path = "shared/functions.rs"]
mod functions;

use cluster_engine::{Context, Engine};
use functions::{Point, LOCAL_SUM, NORM, SCALED, SQUARE, WORD_COUNT};
use std::process::ExitCode;

fn main() -> ExitCode {
    Engine::builder()
        .stock_functions()
        .register(SQUARE, |x: i64| {
            x.checked_mul(x)
                .ok_or_else(|| format!("{x} squared overflows an i64"))
        })
        .register(WORD_COUNT, |text: String| {
            Ok::<_, String>(text.split_whitespace().count() as u64)
        })
        .register(NORM, |p: Point| Ok::<_, String>(p.x.hypot(p.y)))
        // Functions with a context read what clients pushed into this engine's store.
        .register_with_context(SCALED, |ctx: &Context, x: f64| {
            ctx.get::<f64>("factor").map(|k| k * x)
        })
        .register_with_context(LOCAL_SUM, |ctx: &Context, name: String| {
            // Decoded once and shared until the name is pushed again.
            let xs = ctx.get_shared::<Vec<u64>>(&name)?;
            Ok::<_, cluster_engine::StoreError>((ctx.engine_id().0, xs.iter().sum()))
        })
        .build()
        .main()
}
