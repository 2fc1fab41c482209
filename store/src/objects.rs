//! Shared objects on disk: the queues, namespaces and events of the controller (locks and
//! semaphores are not kept: their leases belong to client connections, and the holders'
//! renewals take them back from a restarted controller).
//!
//! The hub emits [`ObjectRecord`]s (an object made or changed, an item pushed or popped, a
//! key set or deleted, an object removed); the socket loop hands them to
//! [`Writer::send_objects`](crate::Writer::send_objects), and the writer thread applies them,
//! in order, in the same batched transactions as the task records. At start,
//! [`Reader::objects`](crate::Reader::objects) reads them back ([`StoredObject`]) for the hub.
//!
//! **Durability** is the task records': a change is on disk at most one commit interval
//! (`db_commit_interval`, 100 ms) after it was made, so a `kill -9` of the controller loses
//! at most the changes of that last interval (an item put then may be missing, one taken then
//! may come back). With `db = "memory"` or `"none"` the objects live in memory only.
//!
//! Tables (made by the first batch with object records, so a database never used for objects
//! stays as it was; no schema version change):
//!
//! * `objects`: one row an object: name, kind, a queue's maxsize, an event's flag;
//! * `object_items`: a queue's items by (name, seq), in order: format and data (as received:
//!   sealed when the cluster encrypts);
//! * `object_entries`: a namespace's keys by (name, key): format, digest and data.

use crate::Payload;
use protocol::{ItemFormat, ObjectKind};
use rusqlite::{params, Connection};

/// One change to the shared objects, for the writer.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectRecord {
    /// The object exists with these settings (made, or its maxsize or flag changed).
    Put {
        /// Its name.
        name: String,
        /// Its kind (`queue`, `namespace` or `event`).
        kind: ObjectKind,
        /// A queue's maxsize.
        maxsize: Option<u64>,
        /// An event's flag.
        set: bool,
    },
    /// An item appended to a queue.
    Pushed {
        /// The queue.
        name: String,
        /// Its place in the queue (increasing).
        seq: u64,
        /// Its format.
        format: ItemFormat,
        /// Its bytes.
        data: Payload,
    },
    /// The item `seq` taken out of a queue.
    Popped {
        /// The queue.
        name: String,
        /// The item.
        seq: u64,
    },
    /// A namespace key set.
    Set {
        /// The namespace.
        name: String,
        /// The key.
        key: String,
        /// The value's format.
        format: ItemFormat,
        /// The value's digest.
        digest: Vec<u8>,
        /// Its bytes.
        data: Payload,
    },
    /// A namespace key removed.
    Deleted {
        /// The namespace.
        name: String,
        /// The key.
        key: String,
    },
    /// The object and everything in it removed.
    Removed {
        /// Its name.
        name: String,
    },
}

/// A queue item read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    /// Its place.
    pub seq: u64,
    /// Its format.
    pub format: ItemFormat,
    /// Its bytes.
    pub data: Payload,
}

/// A namespace entry read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    /// The key.
    pub key: String,
    /// The value's format.
    pub format: ItemFormat,
    /// The value's digest.
    pub digest: Vec<u8>,
    /// Its bytes.
    pub data: Payload,
}

/// An object read back at start.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: ObjectKind,
    /// A queue's maxsize.
    pub maxsize: Option<u64>,
    /// An event's flag.
    pub set: bool,
    /// A queue's items, oldest first.
    pub items: Vec<StoredItem>,
    /// A namespace's entries, by key.
    pub entries: Vec<StoredEntry>,
}

pub(crate) const TABLES: &str = "
CREATE TABLE IF NOT EXISTS objects (
    name TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    maxsize INTEGER,
    flag INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS object_items (
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    format TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (name, seq)
);
CREATE TABLE IF NOT EXISTS object_entries (
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    format TEXT NOT NULL,
    digest BLOB NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (name, key)
);";

/// Makes the tables if missing (in the writer's transaction, once a batch with object
/// records).
pub(crate) fn create_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(TABLES)
}

fn kind_of(name: &str) -> Option<ObjectKind> {
    Some(match name {
        "queue" => ObjectKind::Queue,
        "namespace" => ObjectKind::Namespace,
        "lock" => ObjectKind::Lock,
        "semaphore" => ObjectKind::Semaphore,
        "event" => ObjectKind::Event,
        _ => return None,
    })
}

fn format_of(name: &str) -> ItemFormat {
    match name {
        "msgpack" => ItemFormat::Msgpack,
        "pickle" => ItemFormat::Pickle,
        _ => ItemFormat::Bytes,
    }
}

fn seq(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Applies one record inside the writer's transaction.
pub(crate) fn apply(conn: &Connection, record: &ObjectRecord) -> rusqlite::Result<()> {
    match record {
        ObjectRecord::Put {
            name,
            kind,
            maxsize,
            set,
        } => {
            conn.prepare_cached(
                "INSERT INTO objects (name, kind, maxsize, flag) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET kind = excluded.kind,
                     maxsize = excluded.maxsize, flag = excluded.flag",
            )?
            .execute(params![name, kind.name(), maxsize.map(seq), *set as i64])?;
        }
        ObjectRecord::Pushed {
            name,
            seq: s,
            format,
            data,
        } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO object_items (name, seq, format, data)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![name, seq(*s), format.name(), data.as_slice()])?;
        }
        ObjectRecord::Popped { name, seq: s } => {
            conn.prepare_cached("DELETE FROM object_items WHERE name = ?1 AND seq = ?2")?
                .execute(params![name, seq(*s)])?;
        }
        ObjectRecord::Set {
            name,
            key,
            format,
            digest,
            data,
        } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO object_entries (name, key, format, digest, data)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![name, key, format.name(), digest, data.as_slice()])?;
        }
        ObjectRecord::Deleted { name, key } => {
            conn.prepare_cached("DELETE FROM object_entries WHERE name = ?1 AND key = ?2")?
                .execute(params![name, key])?;
        }
        ObjectRecord::Removed { name } => {
            for sql in [
                "DELETE FROM objects WHERE name = ?1",
                "DELETE FROM object_items WHERE name = ?1",
                "DELETE FROM object_entries WHERE name = ?1",
            ] {
                conn.prepare_cached(sql)?.execute(params![name])?;
            }
        }
    }
    Ok(())
}

/// Every object stored, by name, with its items and entries. A database whose tables do not
/// exist yet (older, or read-only) holds none.
pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Vec<StoredObject>> {
    let exists: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'objects'",
        [],
        |r| r.get(0),
    )?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let mut objects: Vec<StoredObject> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut stmt = conn.prepare("SELECT name, kind, maxsize, flag FROM objects ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<i64>>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (name, kind, maxsize, flag) = row?;
        let Some(kind) = kind_of(&kind) else {
            tracing::warn!("task store: object {name:?} has an unknown kind {kind:?}; skipped");
            continue;
        };
        index.insert(name.clone(), objects.len());
        objects.push(StoredObject {
            name,
            kind,
            maxsize: maxsize.map(|m| m.max(0) as u64),
            set: flag != 0,
            items: Vec::new(),
            entries: Vec::new(),
        });
    }
    let mut stmt =
        conn.prepare("SELECT name, seq, format, data FROM object_items ORDER BY name, seq")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Vec<u8>>(3)?,
        ))
    })?;
    for row in rows {
        let (name, s, format, data) = row?;
        if let Some(&i) = index.get(&name) {
            objects[i].items.push(StoredItem {
                seq: s.max(0) as u64,
                format: format_of(&format),
                data: Payload::new(data),
            });
        }
    }
    let mut stmt = conn
        .prepare("SELECT name, key, format, digest, data FROM object_entries ORDER BY name, key")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Vec<u8>>(3)?,
            r.get::<_, Vec<u8>>(4)?,
        ))
    })?;
    for row in rows {
        let (name, key, format, digest, data) = row?;
        if let Some(&i) = index.get(&name) {
            objects[i].entries.push(StoredEntry {
                key,
                format: format_of(&format),
                digest,
                data: Payload::new(data),
            });
        }
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreConfig};
    use std::sync::Arc;

    fn data(s: &str) -> Payload {
        Arc::new(s.as_bytes().to_vec())
    }

    #[test]
    fn objects_written_in_batches_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path().join("tasks.db"));
        {
            let store = Store::open(&config).unwrap();
            assert!(store.reader.objects().unwrap().is_empty());
            let put = |name: &str, kind, maxsize, set| ObjectRecord::Put {
                name: name.into(),
                kind,
                maxsize,
                set,
            };
            store.writer.send_objects(vec![
                put("jobs", ObjectKind::Queue, Some(10), false),
                put("ns", ObjectKind::Namespace, None, false),
                put("go", ObjectKind::Event, None, false),
                put("gone", ObjectKind::Queue, None, false),
            ]);
            let mut records = Vec::new();
            for s in 1..=5u64 {
                records.push(ObjectRecord::Pushed {
                    name: "jobs".into(),
                    seq: s,
                    format: ItemFormat::Msgpack,
                    data: data(&format!("item {s}")),
                });
            }
            records.push(ObjectRecord::Popped {
                name: "jobs".into(),
                seq: 1,
            });
            records.push(ObjectRecord::Set {
                name: "ns".into(),
                key: "a".into(),
                format: ItemFormat::Pickle,
                digest: vec![1],
                data: data("A"),
            });
            records.push(ObjectRecord::Set {
                name: "ns".into(),
                key: "b".into(),
                format: ItemFormat::Bytes,
                digest: vec![2],
                data: data("B"),
            });
            records.push(ObjectRecord::Deleted {
                name: "ns".into(),
                key: "b".into(),
            });
            records.push(put("go", ObjectKind::Event, None, true));
            records.push(ObjectRecord::Pushed {
                name: "gone".into(),
                seq: 1,
                format: ItemFormat::Bytes,
                data: data("x"),
            });
            records.push(ObjectRecord::Removed {
                name: "gone".into(),
            });
            store.writer.send_objects(records);
            store.writer.close().unwrap();
        }
        let store = Store::open(&config).unwrap();
        let objects = store.reader.objects().unwrap();
        let names: Vec<&str> = objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["go", "jobs", "ns"]);
        assert!(objects[0].set);
        let jobs = &objects[1];
        assert_eq!(jobs.maxsize, Some(10));
        let seqs: Vec<u64> = jobs.items.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, [2, 3, 4, 5]);
        assert_eq!(jobs.items[0].data.as_slice(), b"item 2");
        let ns = &objects[2];
        assert_eq!(ns.entries.len(), 1);
        assert_eq!(ns.entries[0].key, "a");
        assert_eq!(ns.entries[0].format, ItemFormat::Pickle);
        assert_eq!(ns.entries[0].digest, vec![1]);
    }

    #[test]
    fn without_a_database_objects_go_nowhere() {
        let store = Store::open(&StoreConfig::none()).unwrap();
        store
            .writer
            .send_objects(vec![ObjectRecord::Removed { name: "x".into() }]);
        assert!(store.reader.objects().unwrap().is_empty());
    }
}
