//! `mutate` windows: for a while, what one node sends on some links is
//! mutated by the sender's adversary code (`adversary/mutate.rs`); the
//! world only says which windows are open.

use super::World;

/// An active `mutate` window, as the world hands it to the sender.
#[derive(Clone, Copy, Debug)]
pub struct MutationFault {
    pub seed: u64,
    pub any_scope: bool,
}

impl World {
    /// Opens a `mutate` window on `node`'s links to `to` (all when empty).
    pub fn open_mutation(&self, node: usize, to: Vec<usize>, for_ms: u64, fault: MutationFault) {
        let until = self.now() + for_ms;
        let mut g = self.lock();
        g.mutations.retain(|m| m.2 > until - for_ms);
        g.mutations.push((node, to, until, fault));
    }

    /// The `mutate` window open now on the link `from` → `to`, if any.
    pub fn mutation(&self, from: usize, to: usize) -> Option<MutationFault> {
        let now = self.now();
        let g = self.lock();
        g.mutations
            .iter()
            .find(|(n, peers, until, _)| {
                *n == from && now < *until && (peers.is_empty() || peers.contains(&to))
            })
            .map(|m| m.3)
    }
}
