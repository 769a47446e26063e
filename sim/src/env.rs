//! Simulated implementations of the node's environment traits.

use crate::byzantine::Byzantine;
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
        let g = self.world.lock();
        World::local_time(&g, self.node, self.world.now())
    }

    fn sleep_until(&self, local_ms: u64) -> impl Future<Output = ()> {
        let world = self.world.clone();
        let node = self.node;
        async move {
            // Re-checked after waking: a clock fault may have moved the
            // node's time while it slept.
            loop {
                let at = {
                    let g = world.lock();
                    if World::local_time(&g, node, world.now()) >= local_ms {
                        return;
                    }
                    World::sim_time_for(&g, node, local_ms)
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
}

impl SimNet {
    fn index_of(&self, key: &PubKey) -> Option<usize> {
        self.world.lock().index.get(key).copied()
    }
}

impl PeerNetwork for SimNet {
    fn send(&mut self, to: &PubKey, bytes: Vec<u8>) {
        let Some(to) = self.index_of(to) else { return };
        match &mut self.byzantine {
            None => self.world.send(self.node, to, bytes),
            Some(b) => {
                let fault = self.world.mutation(self.node, to);
                for (dest, frame) in b.outgoing(to, bytes, fault) {
                    self.world.send(self.node, dest, frame);
                }
            }
        }
    }

    fn broadcast(&mut self, bytes: Vec<u8>) {
        let peers: Vec<PubKey> = {
            let g = self.world.lock();
            let me = g.nodes[self.node].key.public();
            g.unl.iter().filter(|k| **k != me).copied().collect()
        };
        // A copy per peer but the last, which takes the frame itself.
        if let Some((last, rest)) = peers.split_last() {
            for p in rest {
                self.send(p, bytes.clone());
            }
            self.send(last, bytes);
        }
    }

    async fn recv(&mut self) -> Option<(PubKey, Vec<u8>)> {
        let frame = self.rx.recv().await?;
        if let Some(b) = &mut self.byzantine {
            for (to, bytes) in b.observe(&frame.1) {
                self.world.send(self.node, to, bytes);
            }
        }
        Some(frame)
    }
}

/// The node's disk: appends wait in `unsynced` until `sync`; a crash drops
/// them.
pub struct SimStore {
    pub world: Arc<World>,
    pub node: usize,
}

impl Store for SimStore {
    fn load(&mut self) -> Result<Vec<LedgerRecord>, StoreError> {
        let disk = &self.world.lock().nodes[self.node].disk;
        Ok(disk.synced.iter().map(|r| LedgerRecord::clone(r)).collect())
    }
    fn append(&mut self, record: Arc<LedgerRecord>) -> Result<(), StoreError> {
        let mut g = self.world.lock();
        let n = &mut g.nodes[self.node];
        if n.crash_at_write {
            // The driver stops at this error: nothing after the write runs.
            drop(g);
            self.world.crash(self.node);
            return Err(StoreError::Io("crashed in the middle of a write".into()));
        }
        n.disk.unsynced.push(record);
        Ok(())
    }
    fn truncate(&mut self, keep_through: u64) -> Result<(), StoreError> {
        // Modelled as durable at once: a crash right after cannot bring the
        // dropped ledger back, which is the cautious direction.
        let mut g = self.world.lock();
        let disk = &mut g.nodes[self.node].disk;
        disk.synced.retain(|r| r.ledger.seq <= keep_through);
        disk.unsynced.retain(|r| r.ledger.seq <= keep_through);
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        let mut g = self.world.lock();
        let disk = &mut g.nodes[self.node].disk;
        let pending = std::mem::take(&mut disk.unsynced);
        disk.synced.extend(pending);
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
        self.world.lock().nodes[self.node].stats = stats.clone();
    }
}
