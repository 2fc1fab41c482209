//! The per-engine store and the [`Context`] functions read it through.
//!
//! IPyparallel users keep data on engines between calls (`dview.push({'data': …})`, then
//! functions that read `data`). Here the store is a map from names to msgpack values that
//! lives as long as the engine process. Clients fill it through the built-in functions named
//! in [`protocol::builtin`] (`__push`, `__pull`, `__clear`, `__keys`), which are ordinary
//! tasks, so the controller needs to know nothing about it. Functions registered with a
//! context ([`crate::EngineBuilder::function_with_context`]) read and write it.
//!
//! Values are kept as the msgpack bytes the client sent. A function that reads a large value
//! on every call uses [`Context::get_shared`], which decodes once per type and keeps the
//! decoded value until the name is written again.

use protocol::{builtin, EngineId, ErrorKind};
use serde::{de::DeserializeOwned, Serialize};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::msgpack;
use crate::registry::{CallError, Mode};

/// Why reading or writing the store failed. Display it as the function's error; retrying the
/// same call does not help until a client has pushed the right value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Nothing is stored under this name on this engine.
    #[error(
        "engine {engine} has no value named {name:?}; push it first (DirectView::push or scatter)"
    )]
    Missing {
        /// The name asked for.
        name: String,
        /// This engine.
        engine: EngineId,
    },
    /// The stored value does not decode as the type asked for.
    #[error(
        "the value named {name:?} on engine {engine} does not decode as {type_name}: {message}"
    )]
    Decode {
        /// The name asked for.
        name: String,
        /// This engine.
        engine: EngineId,
        /// The Rust type asked for.
        type_name: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// A value could not be encoded as msgpack.
    #[error("cannot store the value named {name:?}: {message}")]
    Encode {
        /// The name written.
        name: String,
        /// The encoder's message.
        message: String,
    },
}

/// One stored value: its msgpack bytes, and the last decoded form handed out by
/// [`Context::get_shared`].
struct Entry {
    bytes: Arc<[u8]>,
    decoded: Option<(TypeId, Arc<dyn Any + Send + Sync>)>,
}

/// The engine's named values. One engine runs one task at a time, so the lock is never
/// contended; it is there so that an [`crate::Engine`] stays `Send + Sync`.
#[derive(Default)]
pub(crate) struct Store {
    values: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("names", &self.lock().len())
            .finish()
    }
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Updates are single inserts/removes: a poisoned map is still consistent.
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, name: String, bytes: Vec<u8>) {
        self.lock().insert(
            name,
            Entry {
                bytes: bytes.into(),
                decoded: None,
            },
        );
    }

    fn bytes(&self, name: &str) -> Option<Arc<[u8]>> {
        self.lock().get(name).map(|e| e.bytes.clone())
    }
}

/// What a function registered with a context sees of its engine: its id and its store.
///
/// Cheap to clone; every task gets one.
#[derive(Clone)]
pub struct Context {
    engine: EngineId,
    store: Arc<Store>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("engine", &self.engine)
            .finish()
    }
}

impl Context {
    pub(crate) fn new(engine: EngineId, store: Arc<Store>) -> Context {
        Context { engine, store }
    }

    /// The id of the engine running the task.
    pub fn engine_id(&self) -> EngineId {
        self.engine
    }

    /// Decodes the value stored under `name` (a fresh copy each call; for large values read
    /// often, see [`Context::get_shared`]).
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T, StoreError> {
        let bytes = self.store.bytes(name).ok_or_else(|| self.missing(name))?;
        self.decode(name, &bytes)
    }

    /// The value stored under `name`, decoded once and shared: later calls with the same type
    /// return the same `Arc` until the name is written again.
    pub fn get_shared<T>(&self, name: &str) -> Result<Arc<T>, StoreError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let bytes = {
            let values = self.store.lock();
            let entry = values.get(name).ok_or_else(|| self.missing(name))?;
            if let Some((type_id, value)) = &entry.decoded {
                if *type_id == TypeId::of::<T>() {
                    if let Ok(value) = value.clone().downcast::<T>() {
                        return Ok(value);
                    }
                }
            }
            entry.bytes.clone()
        };
        // Decoded outside the lock; the store cannot change meanwhile (one task at a time),
        // and if it did, the pointer check below keeps a stale decoding out.
        let value: Arc<T> = Arc::new(self.decode(name, &bytes)?);
        if let Some(entry) = self.store.lock().get_mut(name) {
            if Arc::ptr_eq(&entry.bytes, &bytes) {
                entry.decoded = Some((TypeId::of::<T>(), value.clone()));
            }
        }
        Ok(value)
    }

    /// Stores `value` under `name`, replacing what was there (clients read it with `pull`).
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        let bytes = rmp_serde::to_vec_named(value).map_err(|e| StoreError::Encode {
            name: name.to_owned(),
            message: e.to_string(),
        })?;
        self.store.insert(name.to_owned(), bytes);
        Ok(())
    }

    /// True when a value is stored under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.store.lock().contains_key(name)
    }

    /// Forgets the value stored under `name`; true if there was one.
    pub fn remove(&self, name: &str) -> bool {
        self.store.lock().remove(name).is_some()
    }

    /// The stored names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.store.lock().keys().cloned().collect();
        names.sort_unstable();
        names
    }

    fn missing(&self, name: &str) -> StoreError {
        StoreError::Missing {
            name: name.to_owned(),
            engine: self.engine,
        }
    }

    fn decode<T: DeserializeOwned>(&self, name: &str, bytes: &[u8]) -> Result<T, StoreError> {
        rmp_serde::from_slice(bytes).map_err(|e| StoreError::Decode {
            name: name.to_owned(),
            engine: self.engine,
            type_name: std::any::type_name::<T>(),
            message: e.to_string(),
        })
    }
}

/// True for the names of the built-in store functions.
pub(crate) fn is_builtin(name: &str) -> bool {
    builtin::ALL.contains(&name)
}

/// Runs a built-in store function; `None` when `name` is not one.
pub(crate) fn call_builtin(
    name: &str,
    ctx: &Context,
    mode: Mode,
    payload: &[u8],
) -> Option<Result<Vec<u8>, CallError>> {
    if !is_builtin(name) {
        return None;
    }
    if mode == Mode::Map {
        return Some(Err(CallError::new(
            ErrorKind::BadArguments,
            format!("{name} is a store function and cannot be mapped; call it once per engine"),
        )));
    }
    Some(match name {
        builtin::PUSH => push(ctx, payload),
        builtin::PULL => pull(ctx, payload),
        builtin::CLEAR => clear(ctx, payload),
        _ => encode(&ctx.names()),
    })
}

const NIL: u8 = 0xc0;

fn bad(message: String) -> CallError {
    CallError::new(ErrorKind::BadArguments, message)
}

fn push(ctx: &Context, payload: &[u8]) -> Result<Vec<u8>, CallError> {
    let entries = msgpack::split_map(payload).map_err(|e| {
        bad(format!(
            "{} takes a map of names to values: {e}",
            builtin::PUSH
        ))
    })?;
    // Check every name before storing any, so a bad push changes nothing.
    let mut named = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let name: String = rmp_serde::from_slice(key)
            .map_err(|e| bad(format!("{}: names must be strings: {e}", builtin::PUSH)))?;
        named.push((name, value));
    }
    for (name, value) in named {
        ctx.store.insert(name, value.to_vec());
    }
    Ok(vec![NIL])
}

fn names(payload: &[u8], function: &str) -> Result<Vec<String>, CallError> {
    rmp_serde::from_slice(payload)
        .map_err(|e| bad(format!("{function} takes an array of names: {e}")))
}

fn pull(ctx: &Context, payload: &[u8]) -> Result<Vec<u8>, CallError> {
    let missing = |name: &str| CallError::new(ErrorKind::Remote, ctx.missing(name).to_string());
    // One name: the value itself.
    if let Ok(name) = rmp_serde::from_slice::<String>(payload) {
        return ctx
            .store
            .bytes(&name)
            .map(|bytes| bytes.to_vec())
            .ok_or_else(|| missing(&name));
    }
    let names = names(payload, builtin::PULL)?;
    let mut out = Vec::new();
    protocol::write_array_header(&mut out, names.len());
    for name in &names {
        let bytes = ctx.store.bytes(name).ok_or_else(|| missing(name))?;
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

fn clear(ctx: &Context, payload: &[u8]) -> Result<Vec<u8>, CallError> {
    let names = names(payload, builtin::CLEAR)?;
    if names.is_empty() {
        ctx.store.lock().clear();
    } else {
        let mut values = ctx.store.lock();
        for name in &names {
            values.remove(name);
        }
    }
    Ok(vec![NIL])
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CallError> {
    rmp_serde::to_vec_named(value)
        .map_err(|e| CallError::new(ErrorKind::Remote, format!("cannot encode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn enc<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap()
    }

    fn ctx() -> Context {
        Context::new(EngineId(3), Arc::default())
    }

    fn call(ctx: &Context, name: &str, payload: &[u8]) -> Result<Vec<u8>, CallError> {
        call_builtin(name, ctx, Mode::Call, payload).expect("a builtin")
    }

    #[test]
    fn push_then_pull_returns_the_bytes_sent() {
        let ctx = ctx();
        let mut map: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
        map.insert("a", serde_json::json!([1, 2, 3]));
        map.insert("b", serde_json::json!({"x": "y"}));
        assert_eq!(call(&ctx, builtin::PUSH, &enc(&map)).unwrap(), vec![NIL]);
        let out = call(&ctx, builtin::PULL, &enc(&["b", "a"])).unwrap();
        let back: (serde_json::Value, Vec<u64>) = rmp_serde::from_slice(&out).unwrap();
        assert_eq!(back.0, serde_json::json!({"x": "y"}));
        assert_eq!(back.1, vec![1, 2, 3]);
        // One name: the value itself.
        let out = call(&ctx, builtin::PULL, &enc("a")).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<Vec<u64>>(&out).unwrap(),
            vec![1, 2, 3]
        );
        let keys: Vec<String> =
            rmp_serde::from_slice(&call(&ctx, builtin::KEYS, &[NIL]).unwrap()).unwrap();
        assert_eq!(keys, ["a", "b"]);
        // A function reads the same values.
        assert_eq!(ctx.get::<Vec<u64>>("a").unwrap(), vec![1, 2, 3]);
        call(&ctx, builtin::CLEAR, &enc(&["a"])).unwrap();
        assert!(!ctx.contains("a") && ctx.contains("b"));
        call(&ctx, builtin::CLEAR, &enc(&Vec::<String>::new())).unwrap();
        assert!(ctx.names().is_empty());
    }

    #[test]
    fn pulling_a_missing_name_names_it_and_the_engine() {
        let err = call(&ctx(), builtin::PULL, &enc(&["nope"])).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Remote);
        assert!(
            err.message.contains("\"nope\"") && err.message.contains("engine 3"),
            "{}",
            err.message
        );
    }

    #[test]
    fn bad_store_arguments_change_nothing() {
        let ctx = ctx();
        let mut bad_map = Vec::new();
        bad_map.extend_from_slice(&[0x82]);
        bad_map.extend_from_slice(&enc("ok"));
        bad_map.extend_from_slice(&enc(&1u8));
        bad_map.extend_from_slice(&enc(&7u8)); // a key that is not a string
        bad_map.extend_from_slice(&enc(&1u8));
        let err = call(&ctx, builtin::PUSH, &bad_map).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadArguments);
        assert!(!ctx.contains("ok"));
        assert!(call(&ctx, builtin::PUSH, &enc(&[1, 2])).is_err());
        assert!(call(&ctx, builtin::PULL, &enc(&7)).is_err());
        let err = call_builtin(builtin::PUSH, &ctx, Mode::Map, &enc(&[1])).unwrap();
        assert!(err.is_err());
        assert!(call_builtin("square", &ctx, Mode::Call, b"").is_none());
    }

    #[test]
    fn get_shared_decodes_once_until_the_value_changes() {
        let ctx = ctx();
        ctx.set("v", &vec![1.5f64; 1000]).unwrap();
        let a = ctx.get_shared::<Vec<f64>>("v").unwrap();
        let b = ctx.get_shared::<Vec<f64>>("v").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // Another type decodes afresh.
        let c = ctx.get_shared::<Vec<f32>>("v").unwrap();
        assert_eq!(c.len(), 1000);
        ctx.set("v", &vec![2.0f64]).unwrap();
        assert_eq!(*ctx.get_shared::<Vec<f64>>("v").unwrap(), vec![2.0]);
        let err = ctx.get_shared::<String>("v").unwrap_err();
        assert!(matches!(err, StoreError::Decode { .. }), "{err}");
        let err = ctx.get::<u8>("none").unwrap_err();
        assert!(err.to_string().contains("push it first"), "{err}");
        assert!(ctx.remove("v") && !ctx.remove("v"));
    }
}
