//! The link model: latency, loss, duplication, reordering, partitions and
//! one-way cuts between machines, and the check that every session an
//! honest node holds is with the key it names.

use super::{Inner, World};
use crate::check::violation::{Kind, Violation};
use crate::scenario::latency::ppm;
use crate::scenario::{clock, NetworkSettings, Role};
use crate::world::links::Wire;
use crate::world::log::{self, Fate};
use hotpocket_node::consensus::{PeerMessage, ProposalHead};
use hotpocket_node::crypto::PubKey;
use hotpocket_node::handshake::PeerSession;
use madsim::time::Duration;
use rand_core::RngCore;
use std::collections::BTreeSet;
use std::sync::Arc;

/// A cut of chosen rounds' proposals: a `block` with `rounds`.
pub struct ScopedCut {
    pairs: BTreeSet<(usize, usize)>,
    rounds: [u64; 2],
    /// Bit `s` set: stage `s` is cut; none set: every stage.
    stages: u8,
}

/// Stage `s`'s bit in `ScopedCut::stages`; none for a stage past 7 (a
/// byzantine frame may name any).
fn stage_bit(s: u8) -> u8 {
    1u8.checked_shl(u32::from(s)).unwrap_or(0)
}

impl ScopedCut {
    /// Whether this cut loses a proposal with head `h` from `from` to `to`.
    fn cuts(&self, from: usize, to: usize, h: &ProposalHead) -> bool {
        let [first, last] = self.rounds;
        self.pairs.contains(&(from, to))
            && (first..=last).contains(&h.round)
            && (self.stages == 0 || self.stages & stage_bit(h.stage) != 0)
    }
}

/// Whether one of `cuts` loses `frame` from `from` to `to`: the frame's
/// head is read once, and only when a cut holds that link.
fn scoped_cut(cuts: &[ScopedCut], from: usize, to: usize, frame: &[u8]) -> bool {
    cuts.iter().any(|c| c.pairs.contains(&(from, to)))
        && PeerMessage::proposal_head(frame)
            .is_some_and(|h| cuts.iter().any(|c| c.cuts(from, to, &h)))
}

impl World {
    /// The machine node `from` reaches when it dials `key` now: the
    /// twin's split decides which of its copies.
    pub fn resolve(&self, from: usize, key: &PubKey) -> Option<usize> {
        let now = self.now();
        let g = self.lock();
        let to = *g.index.get(key)?;
        Some(match &g.twins {
            Some((t, second, roundtime)) => t.redirect(*second, *roundtime, from, to, now),
            None => to,
        })
    }

    /// Sends one frame from machine `from` to machine `to` through the
    /// link model. Connection set-up (handshakes, resets) rides a reliable
    /// stream as TCP's does: partitions and latency hold it up, random
    /// loss and duplication do not.
    pub fn send(self: &Arc<World>, from: usize, to: usize, wire: Wire) {
        let now = self.now();
        let mut g = self.lock();
        let cut = match &g.twins {
            Some((t, second, roundtime)) => t.cut(*second, *roundtime, from, to, now),
            None => false,
        };
        let bytes = wire.bytes();
        if cut {
            g.net.blocked += 1;
            log::record(&mut g.log, now, from, to, bytes, Some(Fate::Blocked(now)));
            return;
        }
        let data = matches!(wire, Wire::Data { .. });
        g.net.sent += 1;
        g.net.bytes += bytes.len() as u64;
        let mut tag = [0u8; 17];
        tag[0] = b's';
        tag[1..9].copy_from_slice(&(to as u64).to_le_bytes());
        tag[9..].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.record(&mut g, from, &tag);
        if g.blocked.contains(&(from, to))
            || (g.npl_blocked.contains(&(from, to))
                && data
                && matches!(PeerMessage::decode(bytes), Ok(PeerMessage::Npl(_))))
            || (data && scoped_cut(&g.scoped, from, to, bytes))
        {
            g.net.blocked += 1;
            log::record(&mut g.log, now, from, to, bytes, Some(Fate::Blocked(now)));
            return;
        }
        let (latency, loss) = match g.links.get(&(from, to)) {
            Some((l, p)) => (
                l.unwrap_or(g.network.latency_ms),
                p.unwrap_or(g.network.loss_pct),
            ),
            None => (g.network.latency_ms, g.network.loss_pct),
        };
        if data && g.rng.next_u64() % 1_000_000 < ppm(loss) {
            g.net.lost += 1;
            log::record(&mut g.log, now, from, to, bytes, Some(Fate::Lost));
            return;
        }
        let copies = if data && g.rng.next_u64() % 1_000_000 < ppm(g.network.duplicate_pct) {
            g.net.duplicated += 1;
            2
        } else {
            1
        };
        let mut wire = wire;
        for copy in 0..copies {
            let mut delay = crate::scenario::latency::sample(&mut g.rng, latency);
            if g.rng.next_u64() % 1_000_000 < ppm(g.network.reorder_pct) {
                delay += g.rng.next_u64() % (g.network.reorder_extra_ms + 1);
            }
            let world = self.clone();
            let id = log::record(&mut g.log, now, from, to, wire.bytes(), None);
            // The last copy takes the frame itself.
            let frame = match copy + 1 < copies {
                true => wire.clone(),
                false => std::mem::replace(&mut wire, Wire::Reset { conn: 0 }),
            };
            let carrier = self.wire.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let Some(carrier) = carrier else { return };
            carrier.spawn(async move {
                madsim::time::sleep(Duration::from_millis(delay)).await;
                world.deliver(from, to, frame, id);
            });
        }
    }

    fn deliver(&self, from: usize, to: usize, wire: Wire, id: Option<usize>) {
        let mut g = self.lock();
        let now = self.now();
        let fate = |g: &mut Inner, f| g.log.as_mut().zip(id).map(|(l, i)| l.fate(i, f));
        // A partition raised while the frame was in flight drops it too.
        if g.blocked.contains(&(from, to)) {
            g.net.blocked += 1;
            fate(&mut g, Fate::Blocked(now));
            return;
        }
        let delivered = match &g.nodes[to].inbox {
            Some(tx) if g.nodes[to].alive => tx.send((from, wire)).is_ok(),
            _ => false,
        };
        fate(
            &mut g,
            if delivered {
                Fate::Delivered(now)
            } else {
                Fate::Dead(now)
            },
        );
        if delivered {
            g.net.delivered += 1;
            let tag = [b'r', from as u8, to as u8];
            self.record(&mut g, to, &tag);
        } else {
            g.net.to_dead_node += 1;
        }
    }

    /// Node `node` finished a handshake on `conn`: an honest node must only
    /// ever hold a session with the key of the machine at its other end.
    pub fn session_opened(&self, node: usize, conn: u64, session: &PeerSession) {
        let t = self.now();
        let mut g = self.lock();
        if g.nodes[node].role != Role::Honest {
            return;
        }
        let Some(other) = g.conns.other_end(conn, node) else {
            return;
        };
        if g.nodes[other].key.public() != session.peer {
            let claimed = g.index.get(&session.peer).copied();
            let v = Violation::at(
                t,
                Kind::Session,
                format!(
                    "node {node} holds a session ({:?}, connection {conn}) attributed to node {claimed:?}'s key, \
                     but node {other} is at the other end",
                    session.role
                ),
            )
            .by(node);
            g.checker.violate(v);
        }
    }

    pub fn set_network(&self, n: NetworkSettings) {
        self.lock().network = n;
    }

    pub fn partition(&self, groups: &[Vec<usize>]) {
        let mut g = self.lock();
        for (a, ga) in groups.iter().enumerate() {
            for (b, gb) in groups.iter().enumerate() {
                if a != b {
                    for &x in ga {
                        for &y in gb {
                            g.blocked.insert((x, y));
                        }
                    }
                }
            }
        }
    }

    pub fn block(&self, from: &[usize], to: &[usize], npl_only: bool) {
        let mut g = self.lock();
        for &x in from {
            for &y in to {
                if x != y {
                    if npl_only {
                        g.npl_blocked.insert((x, y));
                    } else {
                        g.blocked.insert((x, y));
                    }
                }
            }
        }
    }

    /// Cuts proposals of `rounds` (of `stages` only, when given; counted
    /// from the round the run starts in) from `from` to `to`.
    pub fn block_rounds(&self, from: &[usize], to: &[usize], rounds: [u64; 2], stages: &[u8]) {
        let pairs = (from.iter())
            .flat_map(|&x| to.iter().filter(move |&&y| x != y).map(move |&y| (x, y)))
            .collect();
        let stages = stages.iter().fold(0u8, |m, &s| m | stage_bit(s));
        let mut g = self.lock();
        let zero = clock::round_zero(g.roundtime_ms);
        g.scoped.push(ScopedCut {
            pairs,
            rounds: rounds.map(|r| zero.saturating_add(r)),
            stages,
        });
    }

    /// Ends every partition and block but the cuts scoped to rounds,
    /// which end with their rounds.
    pub fn heal(&self) {
        let mut g = self.lock();
        g.blocked.clear();
        g.npl_blocked.clear();
    }

    /// Honest `node` broadcast `bytes`: a stage-3 proposal is a vote the
    /// checkers track across rounds.
    pub fn broadcast_sent(&self, node: usize, bytes: &[u8]) {
        let Some(mut head) = PeerMessage::proposal_head(bytes).filter(|h| h.stage == 3) else {
            return;
        };
        let t = self.now();
        let mut g = self.lock();
        if g.nodes[node].role == Role::Honest {
            // Rounds as scenarios count them.
            head.round = head.round.saturating_sub(clock::round_zero(g.roundtime_ms));
            g.checker.on_vote(t, node, &head);
        }
    }

    /// Opens a connection from `dialer` to `acceptor`; its number.
    pub fn open_conn(&self, dialer: usize, acceptor: usize) -> u64 {
        self.lock().conns.open(dialer, acceptor)
    }

    /// The dialer and the acceptor of `conn`.
    pub fn conn_ends(&self, conn: u64) -> Option<(usize, usize)> {
        self.lock().conns.ends(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::{scoped_cut, ScopedCut};
    use hotpocket_node::consensus::PeerMessage;
    use hotpocket_node::crypto::{Hash, Keypair};
    use hotpocket_node::ledger::{LedgerId, Proposal};

    fn frame(round: u64, stage: u8) -> Vec<u8> {
        let k = Keypair::from_seed([1; 32]);
        let p = Proposal {
            author: k.public(),
            round,
            stage,
            time: 0,
            lcl: LedgerId {
                seq: 3,
                hash: Hash::ZERO,
            },
            inputs: vec![],
            results: vec![],
            beacon: Default::default(),
        };
        let (sp, _) = p.sign_keeping_bytes(&k);
        PeerMessage::Proposal(Box::new(sp)).encode()
    }

    #[test]
    fn a_scoped_cut_loses_only_its_rounds_stages_and_links() {
        let cut = |stages| {
            vec![ScopedCut {
                pairs: [(0, 1)].into(),
                rounds: [10, 11],
                stages,
            }]
        };
        let stage_3 = cut(1 << 3);
        assert!(scoped_cut(&stage_3, 0, 1, &frame(10, 3)));
        assert!(scoped_cut(&stage_3, 0, 1, &frame(11, 3)));
        assert!(!scoped_cut(&stage_3, 0, 1, &frame(12, 3)));
        assert!(!scoped_cut(&stage_3, 0, 1, &frame(10, 2)));
        assert!(!scoped_cut(&stage_3, 1, 0, &frame(10, 3)));
        // A byzantine stage number, and other messages, pass.
        assert!(!scoped_cut(&stage_3, 0, 1, &frame(10, 200)));
        let inputs = PeerMessage::Inputs(vec![vec![0; 90]]).encode();
        assert!(!scoped_cut(&stage_3, 0, 1, &inputs));
        assert!(scoped_cut(&cut(0), 0, 1, &frame(11, 0)));
    }
}
