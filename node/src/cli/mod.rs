//! The `hotpocket` command's tools beyond running one node: a local
//! cluster, a websocket client and a load bench. They drive real node
//! processes from outside, so they live apart from the runtime in `real/`.
// Tools that time and drive real processes from outside.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod bench;
pub mod client;
pub mod cluster;
pub mod signals;
