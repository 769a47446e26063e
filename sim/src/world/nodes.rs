//! What the rest of the simulator may ask of, or do to, a node's slot in
//! the world: its keys and role, its clock, its disk and contract
//! directory, its boot and the faults the timeline applies to it. The slots
//! themselves stay private to the world.

use super::disk::ContractDisk;
use super::mutate::MutationFault;
use super::users::UserMsg;
use super::{PeerFrame, World};
use crate::check::violation::{Kind, Violation};
use crate::scenario::{clock, Fault, HandshakeKind, Role};
use hotpocket_node::consensus::Stats;
use hotpocket_node::crypto::{Keypair, PubKey};
use hotpocket_node::ledger::LedgerRecord;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// What a node boots with.
pub struct Boot {
    pub key: Keypair,
    pub role: Role,
    pub unl: Vec<PubKey>,
    /// How many times it has booted before.
    pub boots: u64,
    pub handshake: HandshakeKind,
}

impl World {
    pub fn key(&self, i: usize) -> PubKey {
        self.lock().nodes[i].key.public()
    }

    pub fn role(&self, i: usize) -> Role {
        self.lock().nodes[i].role
    }

    /// Every slot's public key, twins' second copies included.
    pub fn keys(&self) -> Vec<PubKey> {
        self.lock().nodes.iter().map(|n| n.key.public()).collect()
    }

    /// The slots playing `role`, and their keys.
    pub fn playing(&self, role: Role) -> Vec<(usize, Keypair)> {
        let g = self.lock();
        let mine = g.nodes.iter().enumerate().filter(|(_, n)| n.role == role);
        mine.map(|(i, n)| (i, n.key.clone())).collect()
    }

    /// The node a key names (a twin's key names its first copy).
    pub fn node_of(&self, key: &PubKey) -> Option<usize> {
        self.lock().index.get(key).copied()
    }

    /// The UNL, less node `i`'s own key: the peers it dials.
    pub fn peers_of(&self, i: usize) -> Vec<PubKey> {
        let g = self.lock();
        let me = g.nodes[i].key.public();
        g.unl.iter().filter(|k| **k != me).copied().collect()
    }

    /// Node `i`'s local unix-ms clock now.
    pub fn local_now(&self, i: usize) -> u64 {
        World::local_time(&self.lock(), i, self.now())
    }

    /// The simulated time at which node `i`'s clock shows `local_ms`, or
    /// `None` if it already does.
    pub fn wake_at(&self, i: usize, local_ms: u64) -> Option<u64> {
        let g = self.lock();
        (World::local_time(&g, i, self.now()) < local_ms)
            .then(|| World::sim_time_for(&g, i, local_ms))
    }

    /// Node `i` boots: it is up, and its peers' frames and its users'
    /// messages reach it through `inbox` and `users`.
    pub fn boot(
        &self,
        i: usize,
        inbox: UnboundedSender<PeerFrame>,
        users: UnboundedSender<UserMsg>,
    ) -> Boot {
        let mut g = self.lock();
        let n = &mut g.nodes[i];
        n.inbox = Some(inbox);
        n.users = Some(users);
        n.alive = true;
        let (key, role, boots) = (n.key.clone(), n.role, n.crashes as u64);
        Boot {
            key,
            role,
            unl: g.unl.clone(),
            boots,
            handshake: g.handshake,
        }
    }

    /// Node `i`'s driver stopped with `error`: a violation unless a crash
    /// killed it mid-write.
    pub fn stopped(&self, i: usize, error: String) {
        let t = self.now();
        let mut g = self.lock();
        if g.nodes[i].alive {
            let v = Violation::at(t, Kind::Stopped, format!("node {i} stopped: {error}"));
            g.checker.violate(v.by(i));
        }
    }

    pub fn set_stats(&self, i: usize, stats: Stats) {
        self.lock().nodes[i].stats = stats;
    }

    /// Node `i`'s synced ledgers, as its store loads them at boot.
    /// The seq of node `i`'s newest ledger on disk, synced or not.
    pub fn disk_tip(&self, i: usize) -> u64 {
        let g = self.lock();
        let disk = &g.nodes[i].disk;
        let last = disk.unsynced.last().or(disk.synced.last());
        last.map_or(0, |r| r.ledger.seq)
    }

    /// Up to `count` of node `i`'s ledgers on disk from seq `from` on,
    /// synced or not (as a database reads its own open transaction), as
    /// many as fit in `max_bytes` encoded (the first whatever its size).
    pub fn disk_read(
        &self,
        i: usize,
        from: u64,
        count: u64,
        max_bytes: usize,
    ) -> Vec<LedgerRecord> {
        let g = self.lock();
        let disk = &g.nodes[i].disk;
        let start = disk.synced.partition_point(|r| r.ledger.seq < from);
        let rest = disk.unsynced.iter().filter(|r| r.ledger.seq >= from);
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let (mut bytes, mut out) = (0usize, Vec::new());
        for r in disk.synced[start..].iter().chain(rest).take(count) {
            bytes = bytes.saturating_add(r.encoded_len());
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(LedgerRecord::clone(r));
        }
        out
    }

    /// Appends to node `i`'s disk, unsynced until `disk_sync`; false, and
    /// the node dead, if a `crash_mid_write` fault was armed for it.
    pub fn disk_append(&self, i: usize, record: Arc<LedgerRecord>) -> bool {
        let armed = self.lock().nodes[i].crash_at_write;
        if armed {
            self.crash(i);
            return false;
        }
        let disk = &mut self.lock().nodes[i].disk;
        // A ledger written again (with bodies fetched since) replaces its
        // first copy, as the database's `INSERT OR REPLACE` does.
        let seq = record.ledger.seq;
        let at = disk.synced.partition_point(|r| r.ledger.seq < seq);
        let old = (disk.unsynced.iter_mut().find(|r| r.ledger.seq == seq))
            .or_else(|| disk.synced.get_mut(at).filter(|r| r.ledger.seq == seq));
        match old {
            Some(old) => *old = record,
            None => disk.unsynced.push(record),
        }
        true
    }

    /// Drops node `i`'s ledgers after `keep_through`, synced or not.
    pub fn disk_truncate(&self, i: usize, keep_through: u64) {
        let disk = &mut self.lock().nodes[i].disk;
        disk.synced.retain(|r| r.ledger.seq <= keep_through);
        disk.unsynced.retain(|r| r.ledger.seq <= keep_through);
    }

    pub fn disk_sync(&self, i: usize) {
        let disk = &mut self.lock().nodes[i].disk;
        let pending = std::mem::take(&mut disk.unsynced);
        disk.synced.extend(pending);
    }

    /// Lends node `i`'s contract state directory to its contract host.
    /// `f` must not call the world: it holds the world's lock.
    pub fn with_contract<R>(&self, i: usize, f: impl FnOnce(&mut ContractDisk) -> R) -> R {
        f(&mut self.lock().nodes[i].contract)
    }

    /// What the timeline does to the world (links, clocks, crashed disks,
    /// armed crashes, mutation windows) and what the checkers must know of
    /// it (who is away); killing and starting node tasks is the runner's.
    pub fn apply(&self, fault: &Fault) {
        let t = self.now();
        let mut g = self.lock();
        let roundtime = g.roundtime_ms;
        let until = clock::scoped_end_ms(fault, roundtime);
        if let Some(log) = g.log.as_mut() {
            log.fault(t, fault, until);
        }
        let b = &mut g.checker.beacon;
        match fault {
            Fault::Partition { groups } => b.partition(groups, t),
            Fault::Block { npl_only: true, .. } => {}
            // Away only for its rounds, whether or not a heal comes.
            Fault::Block {
                from,
                to,
                rounds: Some(_),
                ..
            } => {
                let until = until.unwrap_or(t);
                (from.iter().chain(to)).for_each(|&n| b.away_until(n, t, until))
            }
            Fault::Block { from, to, .. } => from.iter().chain(to).for_each(|&n| b.away(n, t)),
            Fault::Heal => b.all_back(t),
            Fault::Crash { node } | Fault::CrashMidWrite { node } | Fault::Pause { node } => {
                b.away(*node, t)
            }
            // Away only a moment: the grace covers its catching up.
            Fault::Restart { node } | Fault::Clock { node, .. } => {
                b.away(*node, t);
                b.back(*node, t);
            }
            Fault::Resume { node } => b.back(*node, t),
            Fault::Network(_) | Fault::Mutate { .. } => {}
        }
        match fault {
            Fault::CrashMidWrite { node } => g.nodes[*node].crash_at_write = true,
            Fault::Clock {
                node,
                offset_ms,
                drift_ppm,
            } => {
                g.nodes[*node].clock_offset_ms = *offset_ms;
                g.nodes[*node].clock_drift_ppm = *drift_ppm;
            }
            _ => {}
        }
        drop(g);
        match fault {
            Fault::Partition { groups } => self.partition(groups),
            Fault::Block {
                from,
                to,
                rounds: Some(rounds),
                stages,
                ..
            } => self.block_rounds(from, to, *rounds, stages),
            Fault::Block {
                from, to, npl_only, ..
            } => self.block(from, to, *npl_only),
            Fault::Heal => self.heal(),
            Fault::Crash { node } | Fault::Restart { node } => self.crash(*node),
            Fault::Network(n) => self.set_network(n.clone()),
            &Fault::Mutate {
                node,
                ref to,
                seed,
                for_ms,
                any_scope,
            } => self.open_mutation(node, to.clone(), for_ms, MutationFault { seed, any_scope }),
            _ => {}
        }
    }
}
