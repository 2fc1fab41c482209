//! Ids: [`EngineId`], [`ClientId`] and [`TaskId`] (with the task id's bit layout, its
//! `CLIENT:SEQ` text form and its parser).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Id of an engine, assigned by the controller at registration (0, 1, 2, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EngineId(pub u32);

impl fmt::Display for EngineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Id of a connected client, assigned by the controller when the client says hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(pub u32);

/// Id of a task, unique within one controller's lifetime.
///
/// Clients make their own ids without a round trip: the top 24 bits are the [`ClientId`]
/// the controller gave them, the low 40 bits a per-client sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub u64);

impl TaskId {
    const SEQ_BITS: u32 = 40;

    /// The id of the `seq`-th task of client `client`.
    pub fn new(client: ClientId, seq: u64) -> TaskId {
        TaskId(((client.0 as u64) << Self::SEQ_BITS) | (seq & ((1 << Self::SEQ_BITS) - 1)))
    }

    /// The client that made this id.
    pub fn client(self) -> ClientId {
        ClientId((self.0 >> Self::SEQ_BITS) as u32)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.client().0,
            self.0 & ((1 << Self::SEQ_BITS) - 1)
        )
    }
}

/// Parses a task id as [`TaskId`]'s `Display` writes it (`CLIENT:SEQ`, like `3:17`) or as the
/// raw 64-bit number.
impl std::str::FromStr for TaskId {
    type Err = ParseTaskIdError;

    fn from_str(text: &str) -> Result<TaskId, ParseTaskIdError> {
        let bad = || ParseTaskIdError(text.to_owned());
        match text.split_once(':') {
            Some((client, seq)) => {
                let client: u32 = client.trim().parse().map_err(|_| bad())?;
                let seq: u64 = seq.trim().parse().map_err(|_| bad())?;
                if u64::from(client) >= 1 << (64 - Self::SEQ_BITS) || seq >= 1 << Self::SEQ_BITS {
                    return Err(bad());
                }
                Ok(TaskId::new(ClientId(client), seq))
            }
            None => text.trim().parse().map(TaskId).map_err(|_| bad()),
        }
    }
}

/// A text that is not a task id (see [`TaskId`]'s `FromStr`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a task id: give it as `cluster submit` prints it, like 3:1")]
pub struct ParseTaskIdError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_packs_client_and_sequence() {
        let id = TaskId::new(ClientId(7), 12345);
        assert_eq!(id.client(), ClientId(7));
        assert_eq!(id.to_string(), "7:12345");
    }

    #[test]
    fn task_ids_parse_as_printed() {
        let id = TaskId::new(ClientId(3), 17);
        assert_eq!(id.to_string().parse::<TaskId>(), Ok(id));
        assert_eq!(id.0.to_string().parse::<TaskId>(), Ok(id));
        let top = TaskId::new(ClientId((1 << 24) - 1), (1 << 40) - 1);
        assert_eq!(top.to_string().parse::<TaskId>(), Ok(top));
        for bad in ["x", "1:", ":1", "16777216:1", "1:1099511627776", "-1:2"] {
            let err = bad.parse::<TaskId>().unwrap_err();
            assert!(err.to_string().contains("like 3:1"), "{bad}: {err}");
        }
    }
}
