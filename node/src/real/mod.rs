//! Real implementations of the environment traits: the filesystem here, the
//! system clock, sockets and processes as they come. Protocol modules never
//! import this.

pub mod contract;
pub mod host;
pub mod state_dir;
