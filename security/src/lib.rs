//! Cluster keys, message signing and sealing, the replay window and connection files.
//!
//! A cluster has one secret [`Key`], made fresh when its controller starts and written into the
//! profile's connection files (mode 0600). Every frame after the MAC frame is signed with
//! HMAC-SHA256 under that key by a [`Signer`]; a [`ReplayGuard`] remembers the highest
//! sequence number seen per sender session so that a captured message cannot be played again.
//! A [`Sealer`] encrypts frames (AES-256-GCM under a key derived from the cluster key)
//! so that arguments, results and commands do not cross the network in the clear.
//! This crate only sees bytes; it knows nothing of message types.
//!
//! | module | owns |
//! |---|---|
//! | `keys` | [`Key`]: generating, hex form, never printed |
//! | `signing` | [`Signer`]: HMAC-SHA256 over frames, constant-time checks |
//! | `sealing` | [`Sealer`]: AES-256-GCM frames, nonces that never repeat |
//! | `replay` | [`ReplayGuard`]: per-session sequence numbers and the time window |
//! | `connection` | [`ConnectionInfo`] and its file: [`ConnectionInfo::new`], `load` (checked), `save` (0600, atomic) |

mod connection;
mod keys;
mod replay;
mod sealing;
mod signing;

pub use connection::{Addresses, ConnectionFileError, ConnectionInfo};
pub use keys::Key;
pub use replay::{Refusal, ReplayGuard, DEFAULT_REPLAY_WINDOW_S};
pub use sealing::{Sealer, ENCRYPTION_SCHEME, SEAL_OVERHEAD};
pub use signing::{Signer, MAC_LEN, SIGNATURE_SCHEME};
