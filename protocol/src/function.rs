//! Typed function handles, shared by the code that registers a function on engines and the
//! code that calls it from a client.
//!
//! A [`Function<A, R>`] is only a name with the argument type `A` and the result type `R`
//! attached at compile time. Declare it once, in a module both sides can see (a small crate
//! that depends on this one), and the compiler checks every call site against it:
//!
//! ```
//! use cluster_protocol::Function;
//!
//! /// The n-th prime, counting from 0.
//! pub const NTH_PRIME: Function<u64, u64> = Function::new("nth_prime");
//! assert_eq!(NTH_PRIME.name(), "nth_prime");
//! ```
//!
//! On the wire nothing changes: a call still names the function, and the argument and result
//! travel as msgpack. A handle is a promise the two sides keep by sharing the declaration.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;

/// A registered function's name with its argument type `A` and result type `R`.
///
/// `const`-constructible, `Copy`, and free of any bound on `A` and `R`, so a handle can be a
/// `pub const` next to the types it uses.
pub struct Function<A, R> {
    name: &'static str,
    // `fn(A) -> R`: the handle owns neither, is Send + Sync + Copy whatever they are.
    _types: PhantomData<fn(A) -> R>,
}

impl<A, R> Function<A, R> {
    /// The handle of the function registered under `name`.
    pub const fn new(name: &'static str) -> Self {
        Function {
            name,
            _types: PhantomData,
        }
    }

    /// The name the function is registered under.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

// Written by hand: derives would demand `A: Clone`, `R: Debug`… which a handle does not need.
impl<A, R> Clone for Function<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for Function<A, R> {}

impl<A, R> PartialEq for Function<A, R> {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl<A, R> Eq for Function<A, R> {}

impl<A, R> std::hash::Hash for Function<A, R> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl<A, R> fmt::Debug for Function<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Function<{}, {}>({:?})",
            std::any::type_name::<A>(),
            std::any::type_name::<R>(),
            self.name
        )
    }
}

impl<A, R> fmt::Display for Function<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// What the built-in `whoami` function returns: which engine ran the task, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    /// The engine's id in its cluster.
    pub engine_id: crate::EngineId,
    /// The engine's process id.
    pub pid: u32,
    /// The engine's host name.
    pub host: String,
    /// Its rank, when `mpiexec` or `srun` started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
}

/// Handles of the functions every stock engine (`cluster engine`, or any engine built with
/// `stock_functions()`) offers.
pub mod stock {
    use super::{Function, Whoami};

    /// Does nothing; accepts any argument (use `()`), returns nothing.
    pub const NOOP: Function<(), ()> = Function::new("noop");
    /// Sleeps for the given seconds.
    pub const SLEEP: Function<f64, ()> = Function::new("sleep");
    /// Keeps a core busy for the given seconds.
    pub const BUSY_WAIT: Function<f64, ()> = Function::new("busy_wait");
    /// The n-th prime, counting from 0 (`2` for `0`, `7919` for `999`).
    pub const NTH_PRIME: Function<u64, u64> = Function::new("nth_prime");
    /// The sum of `0..n`, computed by a real loop.
    pub const SUM_RANGE: Function<u64, u64> = Function::new("sum_range");
    /// Which engine ran the task (built into every engine).
    pub const WHOAMI: Function<(), Whoami> = Function::new("whoami");

    /// Returns its argument unchanged, typed for whatever `T` is sent.
    pub const fn echo<T>() -> Function<T, T> {
        Function::new("echo")
    }
}

/// Names of the functions every engine has built in for its per-engine store (used by the
/// client's `DirectView::push`, `pull`, `scatter` and `gather`). Arguments and results are
/// msgpack, so any client can call them by name.
pub mod builtin {
    /// Argument: a msgpack map from names to values; each value is stored under its name in
    /// the engine's store, replacing what was there. Result: nil.
    pub const PUSH: &str = "__push";
    /// Argument: a name (result: the value stored under it) or a msgpack array of names
    /// (result: a msgpack array of their values, in order). A name nothing was stored under
    /// fails the task.
    pub const PULL: &str = "__pull";
    /// Argument: a msgpack array of names (an empty array: every name). Result: nil.
    pub const CLEAR: &str = "__clear";
    /// Argument: anything. Result: the stored names, sorted, as a msgpack array.
    pub const KEYS: &str = "__keys";
    /// Every built-in store function.
    pub const ALL: [&str; 4] = [PUSH, PULL, CLEAR, KEYS];

    /// True for a name of the `__` family reserved for engines' built-in functions (the
    /// ones above, and any an engine adds for its clients' plumbing): no user calls them by
    /// name, so lists shown to people (what engines offer) leave them out.
    pub fn is_builtin(name: &str) -> bool {
        name.starts_with("__")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQUARE: Function<i64, i64> = Function::new("square");

    #[test]
    fn handles_are_const_copy_and_compare_by_name() {
        let a = SQUARE;
        let b = a;
        assert_eq!(a, b);
        assert_eq!(a.name(), "square");
        assert_eq!(a.to_string(), "square");
        assert!(format!("{a:?}").contains("i64"));
        assert_eq!(stock::echo::<String>().name(), "echo");
        assert_eq!(stock::NTH_PRIME.name(), "nth_prime");
    }

    #[test]
    fn handles_are_send_and_sync_whatever_their_types() {
        fn check<T: Send + Sync + Copy + 'static>(_: T) {}
        check(Function::<std::rc::Rc<u8>, *const u8>::new("x"));
    }
}
