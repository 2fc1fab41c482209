//! Giving freed memory back to the system after a burst.
//!
//! A burst of tasks (a 100k-task map) makes the controller allocate a great deal for a
//! short while: the task table, each task's request, the task store's records on their way
//! to the writer. Once they are freed, glibc's allocator keeps most of those pages in its
//! arenas rather than returning them (measured: 79 MB held by the main arena, 27 MB of it in
//! use, after one such map), so the resident size would stay at the high-water mark of the
//! largest burst and creep up with fragmentation. Two settings keep it flat:
//!
//! * [`configure`] fixes glibc's mmap threshold at 256 KiB. By default the threshold rises
//!   to the size of the largest block freed (up to 32 MiB), so after the first burst every
//!   table and batch of a few MiB comes from the heap, where the small allocations around
//!   it keep its pages pinned once it is freed: the resident size grew from 61 to 99 MiB
//!   between 100k and 1M one-item tasks; with the threshold fixed, 33 to 35 MiB.
//! * When the loop goes idle after enough work, [`Trim`] asks the allocator to return its
//!   free pages (`malloc_trim`, a few milliseconds).
//!
//! Nothing happens on other C libraries.

use std::time::{Duration, Instant};

/// Messages handled since the last trim before an idle loop trims again: a busy spell, not
/// a dashboard's status polls.
const AFTER_MESSAGES: u64 = 1000;

/// The least time between two trims.
const MIN_GAP: Duration = Duration::from_secs(1);

/// How long no message may have come before the loop counts as idle: a gap between two
/// messages of a burst is not the end of it (a trim mid-burst would hand back pages that
/// the next messages fault in again).
const QUIET: Duration = Duration::from_millis(200);

/// When to give memory back.
#[derive(Debug)]
pub(super) struct Trim {
    last: Instant,
    handled_at_last: u64,
    /// The message count when last seen, and since when it has not changed.
    seen: u64,
    quiet_since: Instant,
}

impl Trim {
    pub(super) fn new() -> Trim {
        Trim {
            last: Instant::now(),
            handled_at_last: 0,
            seen: 0,
            quiet_since: Instant::now(),
        }
    }

    /// The loop found nothing to do; `handled` counts the messages it has handled so far.
    /// Trims if enough happened since the last trim, that was long enough ago, and no
    /// message has come for a while.
    pub(super) fn idle(&mut self, handled: u64) {
        if handled != self.seen {
            self.seen = handled;
            self.quiet_since = Instant::now();
            return;
        }
        if handled.saturating_sub(self.handled_at_last) < AFTER_MESSAGES
            || self.last.elapsed() < MIN_GAP
            || self.quiet_since.elapsed() < QUIET
        {
            return;
        }
        let t = Instant::now();
        release();
        tracing::debug!(
            "gave freed memory back to the system in {} µs",
            t.elapsed().as_micros()
        );
        self.last = Instant::now();
        self.handled_at_last = handled;
    }
}

/// Blocks at least this large get their own mapping, returned to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 << 10;

/// Sets the allocator up for a long-running controller (see the module documentation).
/// Called once, before the first burst.
pub(super) fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters; setting the mmap threshold
    // also turns off its dynamic adjustment, which is the point.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release() {
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the system;
    // it touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}
