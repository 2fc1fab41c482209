//! SIGTERM and SIGINT: the first sets a flag that the loops and the task runner look at; a
//! second one while the flag is set exits the process at once (for a task that will not stop).

use signal_hook::SigId;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::EngineError;

/// The installed handlers; dropping this removes them.
pub(crate) struct Signals {
    stop: Stop,
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
        Ok(Signals {
            stop: Stop { flag, which },
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
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
