//! The lock file beside the database: one controller a database.
//!
//! SQLite alone would let two controllers share the file (WAL serialises their writes), and
//! both would then answer for the same tasks. An exclusive `flock` on `<db>.lock` refuses the
//! second one with a clear message instead. The kernel drops the lock when its holder dies,
//! however it dies, so a `kill -9` leaves no stale lock behind; the pid written in the file
//! only serves the error message.

use crate::StoreError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Holds the lock until dropped.
#[derive(Debug)]
pub(crate) struct LockFile {
    _file: File,
}

impl LockFile {
    /// `<db>.lock`.
    pub(crate) fn path_for(db: &Path) -> PathBuf {
        let mut p = db.as_os_str().to_owned();
        p.push(".lock");
        PathBuf::from(p)
    }

    /// Takes the lock of database `db`, or says who holds it.
    pub(crate) fn acquire(db: &Path) -> Result<LockFile, StoreError> {
        let path = Self::path_for(db);
        let unreadable = |e: std::io::Error| StoreError::Unreadable {
            path: path.clone(),
            detail: e.to_string(),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(unreadable)?;
        // SAFETY: flock on a file descriptor we own, for the life of `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::InUse {
                    path: db.to_path_buf(),
                    holder: text.trim().parse().ok(),
                });
            }
            return Err(unreadable(e));
        }
        // Best effort: the pid is for the message of a controller refused later.
        let _ = file
            .set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()));
        Ok(LockFile { _file: file })
    }
}
