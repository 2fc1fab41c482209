//! The function registry: names mapped to type-erased handlers over msgpack bytes.
//!
//! A typed function `Fn(A) -> Result<R, E>` is wrapped once, at registration, into a handler
//! that decodes the argument (or, for a map chunk, the array of arguments), calls the
//! function under `catch_unwind`, and encodes the result with field names. The execution loop
//! then only sees bytes in and bytes (or a [`CallError`]) out.
//!
//! Every handler gets the task's [`Context`] (engine id and the per-engine store); functions
//! registered without one simply ignore it.

use protocol::ErrorKind;
use serde::{de::DeserializeOwned, Serialize};
use std::any::Any;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::context::{Context, Store};
use crate::msgpack;

/// Longest error message kept; a function returning megabytes of error text must not make
/// the results message oversized.
const MAX_ERROR_CHARS: usize = 64 * 1024;

/// Whether a task is one call or a map chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The payload is one argument.
    Call,
    /// The payload is a msgpack array of arguments.
    Map,
}

/// Why a function task failed; becomes the task's [`protocol::TaskError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallError {
    pub kind: ErrorKind,
    pub message: String,
    /// Result payload sent with the failure (empty for most; Python tasks put the
    /// exception's details here).
    pub payload: Vec<u8>,
}

impl CallError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> CallError {
        let mut message = message.into();
        if message.len() > MAX_ERROR_CHARS {
            let mut cut = MAX_ERROR_CHARS;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("… (cut)");
        }
        CallError {
            kind,
            message,
            payload: Vec::new(),
        }
    }
}

/// A registered function, type-erased.
pub(crate) type Handler = dyn Fn(&Context, Mode, &[u8]) -> Result<Vec<u8>, CallError> + Send + Sync;

/// What one task of a batch gave: its result, when it started (time since the batch started)
/// and how long it ran.
#[derive(Debug)]
pub(crate) struct BatchRan {
    pub result: Result<Vec<u8>, CallError>,
    pub offset: std::time::Duration,
    pub elapsed: std::time::Duration,
}

/// A function that runs several queued tasks (their payloads) in one go, one result each in
/// order (Python tasks: one pipe round trip to the worker for the lot instead of one per
/// task). Its tasks' payloads say themselves whether they are calls or map chunks.
pub(crate) type BatchHandler = dyn Fn(&Context, &[&[u8]]) -> Vec<BatchRan> + Send + Sync;

/// Stops a function's running task from another thread (the runner gave up on it at its
/// time limit or after a stop signal); says what it did, `None` when nothing was running.
pub(crate) type CancelHook = dyn Fn() -> Option<String> + Send + Sync;

/// Registered functions by name, and the store their contexts read.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    functions: HashMap<String, Arc<Handler>>,
    /// Functions that can also take several tasks at once.
    batch: HashMap<String, Arc<BatchHandler>>,
    /// Functions whose abandoned task can be stopped.
    cancel: HashMap<String, Arc<CancelHook>>,
    store: Arc<Store>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.functions.keys().collect();
        names.sort();
        f.debug_struct("Registry")
            .field("functions", &names)
            .finish()
    }
}

impl Registry {
    /// Adds (or replaces) a typed function.
    pub(crate) fn add_typed<A, R, E, F>(&mut self, name: &str, f: F)
    where
        A: DeserializeOwned,
        R: Serialize,
        E: std::fmt::Display,
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    {
        self.add_typed_with_context(name, move |_: &Context, arg: A| f(arg));
    }

    /// Adds (or replaces) a typed function that also gets the task's [`Context`].
    pub(crate) fn add_typed_with_context<A, R, E, F>(&mut self, name: &str, f: F)
    where
        A: DeserializeOwned,
        R: Serialize,
        E: std::fmt::Display,
        F: Fn(&Context, A) -> Result<R, E> + Send + Sync + 'static,
    {
        let handler = move |ctx: &Context, mode: Mode, payload: &[u8]| match mode {
            Mode::Call => {
                let arg: A = decode_arg(payload, std::any::type_name::<A>())?;
                let result = call_guarded(|a| f(ctx, a), arg)
                    .map_err(|m| CallError::new(ErrorKind::Remote, m))?;
                encode_result(&result)
            }
            Mode::Map => {
                let args: Vec<A> = decode_arg(payload, std::any::type_name::<Vec<A>>())?;
                let mut results = Vec::with_capacity(args.len());
                for (i, arg) in args.into_iter().enumerate() {
                    let r = call_guarded(|a| f(ctx, a), arg)
                        .map_err(|m| CallError::new(ErrorKind::Remote, format!("item {i}: {m}")))?;
                    results.push(r);
                }
                encode_result(&results)
            }
        };
        self.insert(name, Arc::new(handler));
    }

    /// Adds (or replaces) a function over raw msgpack bytes. For a map chunk it is applied to
    /// each item's bytes and the results are assembled into an array.
    pub(crate) fn add_raw<F>(&mut self, name: &str, f: F)
    where
        F: Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync + 'static,
    {
        let handler = move |_: &Context, mode: Mode, payload: &[u8]| match mode {
            Mode::Call => {
                call_guarded(&f, payload).map_err(|m| CallError::new(ErrorKind::Remote, m))
            }
            Mode::Map => {
                let split = msgpack::split_array(payload).map_err(|e| {
                    CallError::new(
                        ErrorKind::BadArguments,
                        format!("a map chunk must be a msgpack array of arguments: {e}"),
                    )
                })?;
                // Same length, so the input's header serves the output unchanged.
                let mut out = Vec::with_capacity(payload.len());
                out.extend_from_slice(split.header);
                for (i, item) in split.items.into_iter().enumerate() {
                    let r = call_guarded(&f, item)
                        .map_err(|m| CallError::new(ErrorKind::Remote, format!("item {i}: {m}")))?;
                    out.extend_from_slice(&r);
                }
                Ok(out)
            }
        };
        self.insert(name, Arc::new(handler));
    }

    /// Adds (or replaces) a type-erased handler (built-in functions such as `python`).
    pub(crate) fn add_handler(&mut self, name: &str, handler: Arc<Handler>) {
        self.insert(name, handler);
    }

    /// Registers `handler` as `name`, dropping the batch handler and cancel hook of a
    /// function it replaces.
    fn insert(&mut self, name: &str, handler: Arc<Handler>) {
        self.batch.remove(name);
        self.cancel.remove(name);
        self.functions.insert(name.to_owned(), handler);
    }

    /// Lets `name` (registered with [`Registry::add_handler`]) run several tasks at once.
    pub(crate) fn add_batch_handler(&mut self, name: &str, handler: Arc<BatchHandler>) {
        self.batch.insert(name.to_owned(), handler);
    }

    /// Lets the runner stop an abandoned task of `name` (see [`CancelHook`]).
    pub(crate) fn add_cancel_hook(&mut self, name: &str, hook: Arc<CancelHook>) {
        self.cancel.insert(name.to_owned(), hook);
    }

    /// The batch handler of `name`, if it has one.
    pub(crate) fn get_batch(&self, name: &str) -> Option<&Arc<BatchHandler>> {
        self.batch.get(name)
    }

    /// Stops the running task of `name` if its function can be told to; what was done.
    pub(crate) fn cancel(&self, name: &str) -> Option<String> {
        self.cancel.get(name).and_then(|hook| hook())
    }

    /// The handler registered under `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Handler>> {
        self.functions.get(name)
    }

    /// True when `name` is registered.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    /// Registered names, unsorted.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().map(String::as_str)
    }

    /// The per-engine store that contexts read.
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Starts with an empty store (an engine that runs gets its own, even if it was cloned).
    pub(crate) fn reset_store(&mut self) {
        self.store = Arc::default();
    }

    /// Runs `name` on `payload`.
    #[cfg(test)]
    pub(crate) fn call(
        &self,
        name: &str,
        mode: Mode,
        payload: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let ctx = Context::new(protocol::EngineId(0), self.store.clone());
        match self.get(name) {
            Some(handler) => handler(&ctx, mode, payload),
            None => Err(unknown_function(name)),
        }
    }
}

/// The error for a name no one registered.
pub(crate) fn unknown_function(name: &str) -> CallError {
    CallError::new(
        ErrorKind::UnknownFunction,
        format!("this engine has no function named {name:?}"),
    )
}

fn decode_arg<T: DeserializeOwned>(payload: &[u8], type_name: &str) -> Result<T, CallError> {
    rmp_serde::from_slice(payload).map_err(|e| {
        CallError::new(
            ErrorKind::BadArguments,
            format!("argument does not decode as {type_name}: {e}"),
        )
    })
}

fn encode_result<R: Serialize + ?Sized>(result: &R) -> Result<Vec<u8>, CallError> {
    rmp_serde::to_vec_named(result).map_err(|e| {
        CallError::new(
            ErrorKind::Remote,
            format!(
                "result of type {} cannot be encoded as msgpack: {e}",
                std::any::type_name::<R>()
            ),
        )
    })
}

/// Calls `f`, turning both its error and a panic into a message. A panic in user code must
/// not take the engine down with it.
fn call_guarded<A, R, E, F>(f: F, arg: A) -> Result<R, String>
where
    E: std::fmt::Display,
    F: Fn(A) -> Result<R, E>,
{
    match catch_unwind(AssertUnwindSafe(|| f(arg))) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!("function panicked: {}", panic_message(&*panic))),
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.add_typed("square", |x: i64| Ok::<_, String>(x * x));
        r.add_typed("swap", |p: Point| Ok::<_, String>(Point { x: p.y, y: p.x }));
        r.add_typed("fails", |x: u32| {
            if x == 3 {
                Err("three is not allowed".to_string())
            } else {
                Ok(x)
            }
        });
        r.add_typed("panics", |x: u32| -> Result<u32, String> {
            if x == 2 {
                panic!("boom at {x}");
            }
            Ok(x)
        });
        r.add_raw("echo", |b| Ok(b.to_vec()));
        r
    }

    fn enc<T: Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap()
    }

    #[test]
    fn typed_call_round_trips_named_fields() {
        let r = registry();
        let out = r.call("square", Mode::Call, &enc(&7i64)).unwrap();
        assert_eq!(rmp_serde::from_slice::<i64>(&out).unwrap(), 49);
        let out = r
            .call("swap", Mode::Call, &enc(&Point { x: 1, y: 2 }))
            .unwrap();
        assert_eq!(out, enc(&Point { x: 2, y: 1 }), "results use named fields");
    }

    #[test]
    fn map_applies_in_order() {
        let r = registry();
        let out = r
            .call("square", Mode::Map, &enc(&vec![1i64, 2, 3]))
            .unwrap();
        assert_eq!(
            rmp_serde::from_slice::<Vec<i64>>(&out).unwrap(),
            vec![1, 4, 9]
        );
        let input = enc(&vec!["a", "bb", "ccc"]);
        assert_eq!(r.call("echo", Mode::Map, &input).unwrap(), input);
        let empty = enc(&Vec::<i64>::new());
        assert_eq!(r.call("square", Mode::Map, &empty).unwrap(), empty);
    }

    #[test]
    fn bad_arguments_name_the_expected_type() {
        let r = registry();
        let err = r.call("square", Mode::Call, &enc(&"seven")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadArguments);
        assert!(err.message.contains("i64"), "{}", err.message);
        let err = r.call("square", Mode::Map, &enc(&7i64)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadArguments);
        assert!(err.message.contains("Vec<i64>"), "{}", err.message);
        let err = r.call("square", Mode::Call, b"").unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadArguments);
        let err = r.call("echo", Mode::Map, &enc(&7i64)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadArguments);
    }

    #[test]
    fn unknown_function() {
        let err = registry().call("nope", Mode::Call, b"").unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnknownFunction);
        assert!(err.message.contains("nope"));
    }

    #[test]
    fn function_errors_are_remote_and_map_names_the_item() {
        let r = registry();
        let err = r.call("fails", Mode::Call, &enc(&3u32)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Remote);
        assert_eq!(err.message, "three is not allowed");
        let err = r
            .call("fails", Mode::Map, &enc(&vec![1u32, 3, 3]))
            .unwrap_err();
        assert_eq!(err.message, "item 1: three is not allowed");
    }

    #[test]
    fn panics_are_caught_and_reported() {
        let r = registry();
        let err = r.call("panics", Mode::Call, &enc(&2u32)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Remote);
        assert!(err.message.contains("boom at 2"), "{}", err.message);
        let err = r
            .call("panics", Mode::Map, &enc(&vec![0u32, 1, 2]))
            .unwrap_err();
        assert!(
            err.message
                .starts_with("item 2: function panicked: boom at 2"),
            "{}",
            err.message
        );
        // Still usable afterwards.
        assert!(r.call("panics", Mode::Call, &enc(&1u32)).is_ok());
    }

    #[test]
    fn context_functions_read_the_store() {
        let mut r = registry();
        r.add_typed_with_context("scaled", |ctx: &Context, x: f64| {
            ctx.get::<f64>("factor").map(|k| k * x)
        });
        let err = r.call("scaled", Mode::Call, &enc(&2.0f64)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Remote);
        assert!(err.message.contains("\"factor\""), "{}", err.message);
        Context::new(protocol::EngineId(0), r.store().clone())
            .set("factor", &1.5f64)
            .unwrap();
        let out = r.call("scaled", Mode::Map, &enc(&[2.0f64, 4.0])).unwrap();
        assert_eq!(rmp_serde::from_slice::<Vec<f64>>(&out).unwrap(), [3.0, 6.0]);
        // A clone that runs gets a store of its own.
        let mut other = r.clone();
        other.reset_store();
        assert!(other.call("scaled", Mode::Call, &enc(&2.0f64)).is_err());
    }

    #[test]
    fn huge_error_messages_are_cut() {
        let e = CallError::new(ErrorKind::Remote, "é".repeat(MAX_ERROR_CHARS));
        assert!(e.message.len() < MAX_ERROR_CHARS + 20);
        assert!(e.message.ends_with("(cut)"));
    }
}
