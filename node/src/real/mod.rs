//! Real implementations of the environment traits: the filesystem here, the
//! system clock, sockets and processes as they come. Protocol modules never
//! import this.

pub mod bench;
pub mod client;
pub mod cluster;
pub mod config;
pub mod contract;
pub mod host;
pub mod peers;
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
