//! Real implementations of the environment traits: the filesystem here, the
//! system clock, sockets and processes as they come. Protocol modules never
//! import this.
// The real runtime is where the wall clock and OS randomness enter.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod config;
pub mod contract_host;
pub mod peers;
pub mod process;
pub mod runtime;
pub mod state_dir;
pub mod store;
pub mod users_ws;

use crate::crypto::Keypair;

/// A new key pair from the OS's randomness.
pub fn random_key() -> Keypair {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).expect("the OS has randomness");
    Keypair::from_seed(seed)
}
