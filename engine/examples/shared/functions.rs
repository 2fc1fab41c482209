//! The custom engine's functions as typed handles: declared once, used by the engine that
//! registers them (`engine/examples/custom_engine.rs`) and by the clients that call them
//! (`client/examples/custom_client.rs`), so both sides agree on names and types at compile
//! time.
//!
//! In a real project this module is a small crate of its own that depends only on
//! `cluster-protocol` (and serde, for argument types); the engine binary and every client
//! depend on it. The examples include it by path instead.

#![allow(dead_code)] // each side uses only some of it

use protocol::Function;
use serde::{Deserialize, Serialize};

/// A point in the plane: structs travel as msgpack maps with named fields.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Horizontal coordinate.
    pub x: f64,
    /// Vertical coordinate.
    pub y: f64,
}

/// `x²`, or an error when it overflows.
pub const SQUARE: Function<i64, i64> = Function::new("square");
/// Number of whitespace-separated words.
pub const WORD_COUNT: Function<String, u64> = Function::new("word_count");
/// Distance of a point from the origin.
pub const NORM: Function<Point, f64> = Function::new("norm");
/// `x × factor`, where `factor` is a number pushed into the engine's store.
pub const SCALED: Function<f64, f64> = Function::new("scaled");
/// Sum of the list of numbers stored under the given name on the engine that runs it
/// (put there by `DirectView::scatter` or `push`), with that engine's id.
pub const LOCAL_SUM: Function<String, (u32, u64)> = Function::new("local_sum");
