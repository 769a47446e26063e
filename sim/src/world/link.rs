//! The link model: latency, loss, duplication, reordering, partitions and
//! one-way cuts between machines, and the check that every session an
//! honest node holds is with the key it names.

use super::{Inner, World};
use crate::check::violation::{Kind, Violation};
use crate::scenario::latency::ppm;
use crate::scenario::{NetworkSettings, Role};
use crate::world::links::Wire;
use crate::world::log::{self, Fate};
use hotpocket_node::consensus::PeerMessage;
use hotpocket_node::crypto::PubKey;
use hotpocket_node::handshake::PeerSession;
use madsim::time::Duration;
use rand_core::RngCore;
use std::sync::Arc;

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

    pub fn heal(&self) {
        let mut g = self.lock();
        g.blocked.clear();
        g.npl_blocked.clear();
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
