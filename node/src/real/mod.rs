//! Real implementations of the environment traits: the filesystem here, the
//! system clock, sockets and processes as they come. Protocol modules never
//! import this.
// The real runtime is where the wall clock and OS randomness enter.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod config;
pub mod contract_host;
pub mod metrics;
mod npl_pipes;
pub mod peers;
pub mod process;
pub mod reads;
pub mod reaper;
mod run_log;
pub mod runtime;
pub mod state_dir;
pub mod store;
pub mod tls;
pub mod users_ws;

use crate::crypto::Keypair;
use crate::env::Entropy;

/// The OS's randomness. The only caller of `getrandom` in the node, so
/// every key and challenge is drawn through `Entropy`.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        // `Entropy` has no error path: without the OS's randomness a node
        // could only make keys and challenges others can guess.
        getrandom::getrandom(buf).expect("the OS has randomness");
    }
}

/// A new key pair from `entropy`.
pub fn random_key(entropy: &mut impl Entropy) -> Keypair {
    Keypair::from_seed(entropy.seed32())
}
