//! A client of the custom engine (`engine/examples/custom_engine.rs`), calling its functions
//! through the typed handles both share (`engine/examples/shared/functions.rs`): the compiler
//! checks every argument and result type here against the engine's declarations.
//!
//! ```text
//! cargo build --release -p cluster-engine --example custom_engine
//! cluster start -n 4 --engine-program target/release/examples/custom_engine
//! cargo run --release -p cluster-client --example custom_client
//! ```

#[path = "../../engine/examples/shared/functions.rs"]
mod functions;

use cluster_client::Client;
use functions::{Point, LOCAL_SUM, NORM, SCALED, SQUARE, WORD_COUNT};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect_env()?;
    let view = client.load_balanced_view();
    let limit = Some(Duration::from_secs(60));

    // Typed calls: `view.apply(SQUARE, "7")` would not compile.
    let squares: Vec<i64> = view.map(SQUARE, 0..10)?.get(limit)?;
    println!("squares: {squares:?}");
    let words = view
        .apply(WORD_COUNT, "the quick brown fox".to_string())?
        .get(limit)?;
    println!("words: {words}");
    let norm = view.apply(NORM, Point { x: 3.0, y: 4.0 })?.get(limit)?;
    println!("norm of (3, 4): {norm}");
    // An error from the function comes back as an error naming the engine.
    match view.apply(SQUARE, i64::MAX)?.get(limit) {
        Err(e) => println!("square of i64::MAX: {e}"),
        Ok(v) => return Err(format!("expected an overflow error, got {v}").into()),
    }

    // Data kept on the engines between calls: push a value, scatter a list, and run
    // functions that read them through their context.
    let dv = client.direct_view(&client.ids()?);
    dv.push("factor", &2.5f64)?.get(limit)?;
    let scaled = dv.map(SCALED, [1.0, 2.0, 4.0])?.get(limit)?;
    println!("scaled by the pushed factor: {scaled:?}");
    dv.scatter("xs", 1..=1000u64)?.get(limit)?;
    let sums = dv.apply(LOCAL_SUM, "xs".to_string())?.get(limit)?;
    for (engine, sum) in &sums {
        println!("engine {engine} holds a part summing to {sum}");
    }
    let total: u64 = sums.iter().map(|(_, s)| s).sum();
    let back: Vec<u64> = dv.gather("xs", limit)?;
    if total != 500_500 || back != (1..=1000).collect::<Vec<_>>() {
        return Err(format!(
            "scatter/gather went wrong: total {total}, {} items back",
            back.len()
        )
        .into());
    }
    println!(
        "total over {} engines: {total}; gathered {} items in order",
        sums.len(),
        back.len()
    );
    Ok(())
}
