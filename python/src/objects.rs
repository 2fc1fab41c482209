//! The shared objects of the client crate (`client::RawQueue`, `Namespace`, `Lock`,
//! `Semaphore`, `Event`) for Python: thin handles over the Rust ones, which do the wire,
//! the waiting in the controller and the lease renewals. `ferrocluster/_objects.py`
//! pickles values and shapes the `queue`/`threading`-like API.
//!
//! * Items cross as `(format, payload)`: [`ITEM_PICKLE`] and [`ITEM_BYTES`] payloads are
//!   `bytes`; msgpack items (from the CLI or Rust) are decoded here into Python values
//!   ([`msgpack_to_python`]), so Python never needs a msgpack package.
//! * Timeouts are seconds as `float` (`None`: wait as long as it takes; `0`: do not wait).
//!   Every call releases the GIL while it waits.
//! * The outcomes a caller expects (an empty or full queue, a timed-out wait) come back as
//!   values (`None`, `False`), not exceptions: they are the common case of a `get_nowait`
//!   loop and cost nothing that way. Other failures raise the package's exceptions
//!   ([`object_error`]).

use client::{
    Client, Event, Item, ItemFormat, LeaseId, Lock, Namespace, ObjectError, RawQueue, Semaphore,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::time::Duration;

use crate::{error, raise, seconds};

/// Format tag of a msgpack item (the Rust typed API, the CLI).
pub(crate) const ITEM_MSGPACK: u8 = 0;
/// Format tag of a pickle item (the Python API).
pub(crate) const ITEM_PICKLE: u8 = 1;
/// Format tag of a raw bytes item.
pub(crate) const ITEM_BYTES: u8 = 2;

fn format_of(tag: u8) -> PyResult<ItemFormat> {
    match tag {
        ITEM_MSGPACK => Ok(ItemFormat::Msgpack),
        ITEM_PICKLE => Ok(ItemFormat::Pickle),
        ITEM_BYTES => Ok(ItemFormat::Bytes),
        other => Err(PyValueError::new_err(format!(
            "unknown item format {other} (0 msgpack, 1 pickle, 2 bytes)"
        ))),
    }
}

fn tag_of(format: ItemFormat) -> u8 {
    match format {
        ItemFormat::Msgpack => ITEM_MSGPACK,
        ItemFormat::Pickle => ITEM_PICKLE,
        ItemFormat::Bytes => ITEM_BYTES,
    }
}

/// An object error as the package's exception (see `ferrocluster/_errors.py`).
fn object_error(py: Python<'_>, e: ObjectError) -> PyErr {
    match e {
        ObjectError::Client(inner) => error(py, inner),
        other => {
            let name = match &other {
                ObjectError::BadName { .. } => "ObjectNameError",
                ObjectError::WrongKind { .. } | ObjectError::Invalid { .. } => "ObjectKindError",
                ObjectError::Limit { .. } => "ObjectLimitError",
                ObjectError::LeaseLost { .. } => "LeaseLostError",
                _ => "ObjectError",
            };
            raise(py, name, other.to_string())
        }
    }
}

/// `(format, payload)` for Python: msgpack decoded, the others as `bytes`.
fn item_to_python<'py>(py: Python<'py>, item: Item) -> PyResult<Bound<'py, PyTuple>> {
    let payload = match item.format {
        ItemFormat::Msgpack => msgpack_to_python(py, &item.data)?,
        ItemFormat::Pickle | ItemFormat::Bytes => PyBytes::new(py, &item.data).into_any(),
    };
    (tag_of(item.format), payload).into_pyobject(py)
}

/// `(format, bytes)` as they are stored (for compare-and-set).
fn item_raw<'py>(py: Python<'py>, item: Item) -> PyResult<Bound<'py, PyTuple>> {
    (tag_of(item.format), PyBytes::new(py, &item.data)).into_pyobject(py)
}

fn item_from(format: u8, data: Vec<u8>) -> PyResult<Item> {
    Ok(Item::new(format_of(format)?, data))
}

/// Whether a timeout means "do not wait".
fn is_nowait(t: Option<Duration>) -> bool {
    t.is_some_and(|t| t.is_zero())
}

/// A queue of the cluster ([`client::RawQueue`]).
#[pyclass(frozen, module = "ferrocluster._native")]
pub(crate) struct NativeQueue {
    queue: RawQueue,
}

#[pymethods]
impl NativeQueue {
    /// The queue's name.
    #[getter]
    fn name(&self) -> &str {
        self.queue.name()
    }

    /// Appends an item, waiting up to `timeout` seconds while the queue is full; false when
    /// it stayed full.
    #[pyo3(signature = (format, data, timeout = None))]
    fn put(
        &self,
        py: Python<'_>,
        format: u8,
        data: Vec<u8>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let item = item_from(format, data)?;
        let t = seconds(timeout)?;
        let q = &self.queue;
        let done = py.detach(|| {
            if is_nowait(t) {
                q.put_nowait(item)
            } else {
                q.put(item, t)
            }
        });
        match done {
            Ok(()) => Ok(true),
            Err(ObjectError::Full { .. } | ObjectError::Timeout { .. }) => Ok(false),
            Err(e) => Err(object_error(py, e)),
        }
    }

    /// Appends items in order, sent at once rather than a round trip each (each may wait up
    /// to `timeout` seconds while the queue is full); false when one stayed full (those
    /// before it are in).
    #[pyo3(signature = (items, timeout = None))]
    fn put_many(
        &self,
        py: Python<'_>,
        items: Vec<(u8, Vec<u8>)>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let items = items
            .into_iter()
            .map(|(f, d)| item_from(f, d))
            .collect::<PyResult<Vec<_>>>()?;
        let t = seconds(timeout)?;
        let q = &self.queue;
        match py.detach(|| q.put_many(items, t)) {
            Ok(()) => Ok(true),
            Err(ObjectError::Full { .. } | ObjectError::Timeout { .. }) => Ok(false),
            Err(e) => Err(object_error(py, e)),
        }
    }

    /// Takes the oldest item, waiting up to `timeout` seconds; `(format, payload)`, or
    /// `None` when none came.
    #[pyo3(signature = (timeout = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let t = seconds(timeout)?;
        let q = &self.queue;
        let got = py.detach(|| {
            if is_nowait(t) {
                q.get_nowait()
            } else {
                q.get(t)
            }
        });
        match got {
            Ok(item) => item_to_python(py, item).map(Some),
            Err(ObjectError::Empty { .. } | ObjectError::Timeout { .. }) => Ok(None),
            Err(e) => Err(object_error(py, e)),
        }
    }

    /// Items in the queue now.
    fn qsize(&self, py: Python<'_>) -> PyResult<u64> {
        let q = &self.queue;
        py.detach(|| q.qsize()).map_err(|e| object_error(py, e))
    }
}

/// A namespace of the cluster ([`client::Namespace`]).
#[pyclass(frozen, module = "ferrocluster._native")]
pub(crate) struct NativeNamespace {
    ns: Namespace,
}

#[pymethods]
impl NativeNamespace {
    /// The namespace's name.
    #[getter]
    fn name(&self) -> &str {
        self.ns.name()
    }

    /// Sets `key`.
    fn set(&self, py: Python<'_>, key: &str, format: u8, data: Vec<u8>) -> PyResult<()> {
        let item = item_from(format, data)?;
        let ns = &self.ns;
        py.detach(|| ns.set(key, item))
            .map_err(|e| object_error(py, e))
    }

    /// `(format, payload)` at `key` (msgpack decoded), or `None`.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let ns = &self.ns;
        match py.detach(|| ns.get(key)).map_err(|e| object_error(py, e))? {
            Some(item) => item_to_python(py, item).map(Some),
            None => Ok(None),
        }
    }

    /// `(format, bytes)` at `key` as stored, or `None`.
    fn get_raw<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let ns = &self.ns;
        match py.detach(|| ns.get(key)).map_err(|e| object_error(py, e))? {
            Some(item) => item_raw(py, item).map(Some),
            None => Ok(None),
        }
    }

    /// Removes `key`; true if it was there.
    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        let ns = &self.ns;
        py.detach(|| ns.delete(key))
            .map_err(|e| object_error(py, e))
    }

    /// The keys, sorted.
    fn keys(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let ns = &self.ns;
        py.detach(|| ns.keys()).map_err(|e| object_error(py, e))
    }

    /// Sets `key` to `new` (`(format, bytes)`; `None` removes it) only if its stored item is
    /// `expected` now (`None`: absent), in one step; true if it did.
    fn compare_and_set(
        &self,
        py: Python<'_>,
        key: &str,
        expected: Option<(u8, Vec<u8>)>,
        new: Option<(u8, Vec<u8>)>,
    ) -> PyResult<bool> {
        let expected = expected.map(|(f, d)| item_from(f, d)).transpose()?;
        let new = new.map(|(f, d)| item_from(f, d)).transpose()?;
        let ns = &self.ns;
        py.detach(|| ns.compare_and_set(key, expected, new))
            .map_err(|e| object_error(py, e))
    }
}

/// A lock or a semaphore of the cluster.
enum Leased {
    Lock(Lock),
    Semaphore(Semaphore),
}

/// A lock or semaphore ([`client::Lock`], [`client::Semaphore`]) by leases: the Rust
/// client renews them while held; Python keeps their ids.
#[pyclass(frozen, module = "ferrocluster._native")]
pub(crate) struct NativeLeased {
    inner: Leased,
}

#[pymethods]
impl NativeLeased {
    /// The object's name.
    #[getter]
    fn name(&self) -> &str {
        match &self.inner {
            Leased::Lock(l) => l.name(),
            Leased::Semaphore(s) => s.name(),
        }
    }

    /// Takes it (one permit), waiting up to `timeout` seconds; the lease id, or `None` when
    /// it stayed taken.
    #[pyo3(signature = (timeout = None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<u64>> {
        let t = seconds(timeout)?;
        let inner = &self.inner;
        let got = py.detach(|| match (inner, is_nowait(t)) {
            (Leased::Lock(l), true) => l.try_acquire_lease(),
            (Leased::Lock(l), false) => l.acquire_lease(t).map(Some),
            (Leased::Semaphore(s), true) => s.try_acquire_lease(),
            (Leased::Semaphore(s), false) => s.acquire_lease(t).map(Some),
        });
        match got {
            Ok(lease) => Ok(lease.map(|l| l.0)),
            Err(ObjectError::Timeout { .. }) => Ok(None),
            Err(e) => Err(object_error(py, e)),
        }
    }

    /// Gives back a lease.
    fn release(&self, py: Python<'_>, lease: u64) -> PyResult<()> {
        let inner = &self.inner;
        let lease = LeaseId(lease);
        py.detach(|| match inner {
            Leased::Lock(l) => l.release_lease(lease),
            Leased::Semaphore(s) => s.release_lease(lease),
        })
        .map_err(|e| object_error(py, e))
    }
}

/// An event of the cluster ([`client::Event`]).
#[pyclass(frozen, module = "ferrocluster._native")]
pub(crate) struct NativeEvent {
    event: Event,
}

#[pymethods]
impl NativeEvent {
    /// The event's name.
    #[getter]
    fn name(&self) -> &str {
        self.event.name()
    }

    fn set(&self, py: Python<'_>) -> PyResult<()> {
        let e = &self.event;
        py.detach(|| e.set()).map_err(|e| object_error(py, e))
    }

    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let e = &self.event;
        py.detach(|| e.clear()).map_err(|e| object_error(py, e))
    }

    fn is_set(&self, py: Python<'_>) -> PyResult<bool> {
        let e = &self.event;
        py.detach(|| e.is_set()).map_err(|e| object_error(py, e))
    }

    /// Waits up to `timeout` seconds for it to be set; true if it is.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let t = seconds(timeout)?;
        let e = &self.event;
        match py.detach(|| e.wait(t)) {
            Ok(set) => Ok(set),
            Err(ObjectError::Timeout { .. }) => Ok(false),
            Err(err) => Err(object_error(py, err)),
        }
    }
}

/// The handles a [`crate::NativeClient`] makes.
pub(crate) fn queue(py: Python<'_>, c: &Client, name: &str, maxsize: u64) -> PyResult<NativeQueue> {
    let queue = c.raw_queue(name);
    if maxsize > 0 {
        let q = &queue;
        py.detach(|| q.set_maxsize(Some(maxsize)))
            .map_err(|e| object_error(py, e))?;
    }
    Ok(NativeQueue { queue })
}

pub(crate) fn namespace(c: &Client, name: &str) -> NativeNamespace {
    NativeNamespace {
        ns: c.namespace(name),
    }
}

pub(crate) fn lock(c: &Client, name: &str, lease: Option<f64>) -> PyResult<NativeLeased> {
    let mut lock = c.lock(name);
    if let Some(l) = seconds(lease)? {
        lock = lock.with_lease(l);
    }
    Ok(NativeLeased {
        inner: Leased::Lock(lock),
    })
}

pub(crate) fn semaphore(
    c: &Client,
    name: &str,
    permits: u32,
    lease: Option<f64>,
) -> PyResult<NativeLeased> {
    let mut sem = c.semaphore(name, permits);
    if let Some(l) = seconds(lease)? {
        sem = sem.with_lease(l);
    }
    Ok(NativeLeased {
        inner: Leased::Semaphore(sem),
    })
}

pub(crate) fn event(c: &Client, name: &str) -> NativeEvent {
    NativeEvent {
        event: c.event(name),
    }
}

/// The object list as JSON.
pub(crate) fn objects_json(py: Python<'_>, c: &Client) -> PyResult<String> {
    let list = py.detach(|| c.objects()).map_err(|e| object_error(py, e))?;
    serde_json::to_string(&list).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// An item's payload for Python (`(format, payload)`, msgpack decoded).
#[pyfunction]
pub(crate) fn decode_item<'py>(
    py: Python<'py>,
    format: u8,
    data: Vec<u8>,
) -> PyResult<Bound<'py, PyTuple>> {
    item_to_python(py, item_from(format, data)?)
}

// ---- msgpack to Python ----

/// A msgpack value, decoded without a schema.
enum MsgValue {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<MsgValue>),
    Map(Vec<(MsgValue, MsgValue)>),
}

/// Longest a container's announced length may pre-allocate (the length comes from the
/// bytes, which anyone may have written).
const MAX_PREALLOC: usize = 4096;

struct MsgVisitor;

impl<'de> Visitor<'de> for MsgVisitor {
    type Value = MsgValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a msgpack value")
    }
    fn visit_unit<E>(self) -> Result<MsgValue, E> {
        Ok(MsgValue::Nil)
    }
    fn visit_none<E>(self) -> Result<MsgValue, E> {
        Ok(MsgValue::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<MsgValue, D::Error> {
        MsgValue::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<MsgValue, D::Error> {
        // An extension type: its (tag, bytes).
        MsgValue::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<MsgValue, E> {
        Ok(MsgValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<MsgValue, E> {
        Ok(MsgValue::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<MsgValue, E> {
        Ok(MsgValue::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<MsgValue, E> {
        Ok(MsgValue::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<MsgValue, E> {
        Ok(MsgValue::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<MsgValue, E> {
        Ok(MsgValue::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<MsgValue, E> {
        Ok(MsgValue::Bin(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<MsgValue, E> {
        Ok(MsgValue::Bin(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MsgValue, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(MsgValue::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MsgValue, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(kv) = map.next_entry()? {
            out.push(kv);
        }
        Ok(MsgValue::Map(out))
    }
}

impl<'de> Deserialize<'de> for MsgValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MsgValue, D::Error> {
        d.deserialize_any(MsgVisitor)
    }
}

impl MsgValue {
    fn to_python<'py>(&self, py: Python<'py>, as_key: bool) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            MsgValue::Nil => py.None().into_bound(py),
            MsgValue::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
            MsgValue::Int(i) => i.into_pyobject(py)?.into_any(),
            MsgValue::UInt(u) => u.into_pyobject(py)?.into_any(),
            MsgValue::Float(f) => f.into_pyobject(py)?.into_any(),
            MsgValue::Str(s) => s.into_pyobject(py)?.into_any(),
            MsgValue::Bin(b) => PyBytes::new(py, b).into_any(),
            // A list cannot be a dict key: an array used as one becomes a tuple.
            MsgValue::Array(items) if as_key => {
                let items = items
                    .iter()
                    .map(|v| v.to_python(py, true))
                    .collect::<PyResult<Vec<_>>>()?;
                PyTuple::new(py, items)?.into_any()
            }
            MsgValue::Array(items) => {
                let items = items
                    .iter()
                    .map(|v| v.to_python(py, false))
                    .collect::<PyResult<Vec<_>>>()?;
                PyList::new(py, items)?.into_any()
            }
            MsgValue::Map(_) if as_key => {
                return Err(raise(
                    py,
                    "ObjectError",
                    "a msgpack item has a map as a map key, which Python cannot hold".into(),
                ))
            }
            MsgValue::Map(pairs) => {
                let dict = PyDict::new(py);
                for (k, v) in pairs {
                    dict.set_item(k.to_python(py, true)?, v.to_python(py, false)?)?;
                }
                dict.into_any()
            }
        })
    }
}

/// msgpack bytes as a Python value: nil `None`, booleans, integers, floats, strings `str`,
/// binary `bytes`, arrays `list` (`tuple` as dict keys), maps `dict`.
pub(crate) fn msgpack_to_python<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let value: MsgValue = rmp_serde::from_slice(data).map_err(|e| {
        raise(
            py,
            "ObjectError",
            format!("a msgpack item does not decode: {e}"),
        )
    })?;
    value.to_python(py, false)
}
