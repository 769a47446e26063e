//! The name of a closed ledger, below both the ledgers and the beacon:
//! a beacon session is named by the ledger its commits are proposed on.

use crate::crypto::Hash;
use serde::{Deserialize, Serialize};

/// The id of a closed ledger: what proposals call the "last closed ledger".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LedgerId {
    pub seq: u64,
    pub hash: Hash,
}
