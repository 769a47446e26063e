//! One simulated node's surroundings, implementing the node's `env`
//! traits over the world: its clock (offset and drift), its peer network
//! (links, and the adversary rewriting what a byzantine node sends), its
//! store (a disk in the world), its observer (events to the checkers and
//! trace), its contract host (`contract`, `npl`) and its users (`users`).

pub mod contract;
pub mod npl;
pub mod users;

use crate::adversary::{Byzantine, Relay};
use crate::world::links::Links;
use crate::world::{PeerFrame, World};
use hotpocket_node::consensus::{Event, Stats};
use hotpocket_node::crypto::PubKey;
use hotpocket_node::env::{Clock, Observer, PeerNetwork, Store, StoreError};
use hotpocket_node::ledger::LedgerRecord;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// Virtual time as node `i` sees it, with its offset and drift.
pub struct SimClock {
    pub world: Arc<World>,
    pub node: usize,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.world.local_now(self.node)
    }

    fn sleep_until(&self, local_ms: u64) -> impl Future<Output = ()> {
        let world = self.world.clone();
        let node = self.node;
        async move {
            // Re-checked after waking: a clock fault may have moved the
            // node's time while it slept.
            loop {
                let Some(at) = world.wake_at(node, local_ms) else {
                    return;
                };
                madsim::time::sleep_until(world.instant_at(at.max(world.now() + 1))).await;
            }
        }
    }
}

/// The node's links; byzantine roles rewrite what goes out.
pub struct SimNet {
    pub world: Arc<World>,
    pub node: usize,
    pub rx: UnboundedReceiver<PeerFrame>,
    pub byzantine: Option<Byzantine>,
    pub links: Links,
    /// A relaying role's own connections, beside the honest ones.
    pub relay: Option<Relay>,
}

impl SimNet {
    /// Every UNL key but ours.
    fn peers(&self) -> Vec<PubKey> {
        self.world.peers_of(self.node)
    }

    /// Dials every peer, as a node does when it starts.
    pub fn start(&mut self) {
        let dests: Vec<usize> = (self.peers().iter())
            .filter_map(|k| self.world.resolve(self.node, k))
            .collect();
        self.links.dial_all(&self.world, dests);
    }

    /// Sends to node number `n` as its key is reached now (a byzantine
    /// role names nodes by number; the twin split picks the copy).
    fn send_node(&mut self, n: usize, bytes: Vec<u8>) {
        let key = self.world.key(n);
        if let Some(dest) = self.world.resolve(self.node, &key) {
            self.links.send(&self.world, dest, bytes);
        }
    }
}

impl PeerNetwork for SimNet {
    fn send(&mut self, to: &PubKey, bytes: Vec<u8>) {
        if let Some(r) = &mut self.relay {
            r.tick(&self.world, self.node);
        }
        match &mut self.byzantine {
            None => {
                if let Some(dest) = self.world.resolve(self.node, to) {
                    self.links.send(&self.world, dest, bytes);
                }
            }
            // Byzantine roles name nodes by number, the twin's first copy
            // for its key; `send_node` finds the machine.
            Some(b) => {
                let Some(n) = self.world.node_of(to) else {
                    return;
                };
                let fault = self.world.mutation(self.node, n);
                for (dest, frame) in b.outgoing(n, bytes, fault) {
                    self.send_node(dest, frame);
                }
            }
        }
    }

    fn broadcast(&mut self, bytes: Vec<u8>) {
        if self.byzantine.is_none() {
            self.world.broadcast_sent(self.node, &bytes);
        }
        let peers = self.peers();
        // A copy per peer but the last, which takes the frame itself.
        if let Some((last, rest)) = peers.split_last() {
            for p in rest {
                self.send(p, bytes.clone());
            }
            self.send(last, bytes);
        }
    }

    async fn recv(&mut self) -> Option<(PubKey, Vec<u8>)> {
        loop {
            let (from, wire) = self.rx.recv().await?;
            if let Some(r) = &mut self.relay {
                if r.take(&self.world, self.node, from, &wire) {
                    continue;
                }
            }
            let Some(frame) = self.links.receive(&self.world, from, wire) else {
                continue;
            };
            let sends = match &mut self.byzantine {
                Some(b) => b.observe(&frame.0, &frame.1),
                None => vec![],
            };
            for (to, bytes) in sends {
                self.send_node(to, bytes);
            }
            return Some(frame);
        }
    }
}

/// The node's disk: appends wait in `unsynced` until `sync`; a crash drops
/// them.
pub struct SimStore {
    pub world: Arc<World>,
    pub node: usize,
}

impl Store for SimStore {
    fn tip(&mut self) -> Result<u64, StoreError> {
        Ok(self.world.disk_tip(self.node))
    }
    fn read(
        &mut self,
        from: u64,
        count: u64,
        max_bytes: usize,
    ) -> Result<Vec<LedgerRecord>, StoreError> {
        Ok(self.world.disk_read(self.node, from, count, max_bytes))
    }
    fn append(&mut self, record: Arc<LedgerRecord>) -> Result<(), StoreError> {
        if !self.world.disk_append(self.node, record) {
            // The driver stops at this error: nothing after the write runs.
            return Err(StoreError::Io("crashed in the middle of a write".into()));
        }
        Ok(())
    }
    fn truncate(&mut self, keep_through: u64) -> Result<(), StoreError> {
        // Modelled as durable at once: a crash right after cannot bring the
        // dropped ledger back, which is the cautious direction.
        self.world.disk_truncate(self.node, keep_through);
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.world.disk_sync(self.node);
        Ok(())
    }
}

pub struct SimObserver {
    pub world: Arc<World>,
    pub node: usize,
}

impl Observer for SimObserver {
    fn notify(&mut self, event: &Event) {
        self.world.notify(self.node, event);
    }
    fn stats(&mut self, stats: &Stats) {
        self.world.set_stats(self.node, stats.clone());
    }
}
