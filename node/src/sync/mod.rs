//! Catching up from peers: checking fetched history ([`history`]) and
//! fetching contract state by hash ([`state_transfer`]). Both are sans-IO;
//! the consensus node drives them.

pub mod history;
pub mod state_transfer;

pub use history::{verify_record, SyncError};
