//! The contract's side of the protocol: how its state is named by a hash.

mod state;

pub use state::{file_leaf, StateNode};
