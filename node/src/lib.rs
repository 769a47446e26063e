//! Hot Pocket node: the consensus protocol (sans-IO), the environment traits
//! it is driven through, and the driver loop shared by the real runtime and
//! the simulator.

pub mod beacon;
#[cfg(feature = "runtime")]
pub mod cli;
pub mod consensus;
pub mod contract;
pub mod crypto;
pub mod driver;
pub mod env;
pub mod gate;
pub mod handshake;
pub mod ledger;
pub mod ledger_id;
mod memo;
pub mod npl;
#[cfg(feature = "runtime")]
pub mod real;
pub mod sync;
pub mod users;
pub mod wire;
