//! SIGTERM and SIGINT: the first sets a flag that the loops and the task runner look at; a
//! second one while the flag is set exits the process at once (for a task that will not stop).
//!
//! SIGUSR1 asks for a drain (Slurm sends it before a job's wall-time limit, `--signal`): it
//! sets a flag of its own that only the loop looks at, so the running task finishes (it is not
//! abandoned as on SIGTERM), then the engine hands back the tasks it holds and leaves.

use signal_hook::SigId;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::EngineError;

/// The installed handlers; dropping this removes them.
pub(crate) struct Signals {
    stop: Stop,
    drain: Arc<AtomicBool>,
    ids: Vec<SigId>,
}

/// Whether a stop signal came, and which; cheap to clone into the threads that look at it.
#[derive(Debug, Clone)]
pub(crate) struct Stop {
    flag: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

impl Stop {
    /// True once SIGTERM or SIGINT arrived.
    pub(crate) fn requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// The flag itself, for code that knows nothing of signals (command tasks).
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    /// The signal received, if any.
    pub(crate) fn received(&self) -> Option<&'static str> {
        if !self.requested() {
            return None;
        }
        Some(match self.which.load(Ordering::Relaxed) as i32 {
            signal_hook::consts::SIGINT => "SIGINT",
            _ => "SIGTERM",
        })
    }
}

impl Signals {
    pub(crate) fn install() -> Result<Signals, EngineError> {
        let flag = Arc::new(AtomicBool::new(false));
        let which = Arc::new(AtomicUsize::new(0));
        let drain = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            let installed = (|| -> std::io::Result<()> {
                // Order matters: the exit check runs before this signal sets the flag.
                ids.push(signal_hook::flag::register_conditional_shutdown(
                    sig,
                    128 + sig,
                    Arc::clone(&flag),
                )?);
                ids.push(signal_hook::flag::register(sig, Arc::clone(&flag))?);
                ids.push(signal_hook::flag::register_usize(
                    sig,
                    Arc::clone(&which),
                    sig as usize,
                )?);
                Ok(())
            })();
            if let Err(e) = installed {
                for id in ids {
                    signal_hook::low_level::unregister(id);
                }
                return Err(EngineError::Signals(e));
            }
        }
        match signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&drain)) {
            Ok(id) => ids.push(id),
            Err(e) => {
                for id in ids {
                    signal_hook::low_level::unregister(id);
                }
                return Err(EngineError::Signals(e));
            }
        }
        Ok(Signals {
            stop: Stop { flag, which },
            drain,
            ids,
        })
    }

    /// What the handlers set.
    pub(crate) fn stop(&self) -> &Stop {
        &self.stop
    }

    /// The signal received, if any.
    pub(crate) fn received(&self) -> Option<&'static str> {
        self.stop.received()
    }

    /// True once SIGUSR1 asked for a drain.
    pub(crate) fn draining(&self) -> bool {
        self.drain.load(Ordering::Relaxed)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
