//! Waiting on a cluster with no engine: after a second, say so on stderr (once), and go on
//! waiting; an engine may still join (`cluster engines -n N`). A wait that then times out says
//! there were no engines.

use crate::output::Output;
use std::time::{Duration, Instant};

/// How long a wait goes before asking whether any engine is there.
const AFTER: Duration = Duration::from_secs(1);

/// Watches one wait; call [`NoEngines::check`] whenever it has waited a while.
#[derive(Debug)]
pub struct NoEngines {
    start: Instant,
    asked: bool,
    /// The controller said it had no engine.
    pub none: bool,
}

impl Default for NoEngines {
    fn default() -> Self {
        NoEngines {
            start: Instant::now(),
            asked: false,
            none: false,
        }
    }
}

impl NoEngines {
    /// Once the wait has lasted a second: asks the controller for its engines and, if there
    /// are none, says so on stderr.
    pub fn check(&mut self, client: &client::Client, out: &Output) -> std::io::Result<()> {
        if self.asked || self.start.elapsed() < AFTER {
            return Ok(());
        }
        self.asked = true;
        if client.status().is_ok_and(|s| s.engines.is_empty()) {
            self.none = true;
            out.note("no engine is registered with the controller; waiting for one (add engines with `cluster engines -n N`)")?;
        }
        Ok(())
    }

    /// What a timed-out wait for `what` says.
    pub fn timeout(&self, what: String) -> client::Error {
        let what = if self.none {
            format!("{what} (no engine was registered to run it)")
        } else {
            what
        };
        client::Error::Timeout { what }
    }
}
