//! The handshake relay: a UNL insider that runs the honest protocol on its
//! own links and, beside them, works the peer handshake between honest
//! nodes, as the hardening work's attacker did on real sockets. Three plays:
//!
//! - **splice**: an honest node dials us; we pass its hello on to another
//!   honest node and relay both ways, hoping each takes the other's answer;
//! - **claim**: we dial J claiming I's key, then dial I claiming J with the
//!   hello J answered, and hand what I says to J: version 1's hole;
//! - **replay**: a handshake message an honest node once sent us, replayed
//!   on a new connection to another node.
//!
//! Every session an honest node reaches on one of these connections names a
//! key whose holder is not at its other end; the world's session check
//! reports it.

use crate::scenario::HandshakeKind;
use crate::scenario::Role;
use crate::world::links::{Hs, Wire};
use crate::world::World;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// Connections the relay keeps track of at once; the oldest are forgotten.
const MAX_TRACKED: usize = 512;
/// Handshake messages remembered for replays.
const HEARD: usize = 64;
const HELLO_BYTES: usize = 65;

#[derive(Clone, Copy)]
struct Leg {
    /// The paired connection, and the machine at its far end.
    other: u64,
    end: usize,
    /// Pass on only what follows a hello: version 1's acceptor answers
    /// with hello and proof at once, and the other leg of a claim waits for
    /// the proof alone.
    proof_only: bool,
}

enum Play {
    /// Claimed `victim`'s key to the node dialled; its answer opens the
    /// second leg to the victim.
    Claim { victim: usize },
    /// Replayed a hello of `of`; its answer gets a proof `of` once sent.
    Replay { of: usize },
}

pub struct Relay {
    kind: HandshakeKind,
    rng: ChaCha8Rng,
    every_ms: u64,
    next_ms: u64,
    /// Each relayed connection and where what arrives on it goes.
    pairs: BTreeMap<u64, Leg>,
    plays: BTreeMap<u64, Play>,
    /// Connections already judged (ours to work, or left to the honest
    /// links).
    judged: BTreeSet<u64>,
    /// Handshake messages heard, with their sender.
    heard: VecDeque<(usize, Vec<u8>)>,
}

impl Relay {
    pub fn new(kind: HandshakeKind, roundtime_ms: u64, seed: u64) -> Relay {
        Relay {
            kind,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x0072_656c_6179),
            every_ms: (roundtime_ms / 2).max(50),
            next_ms: 0,
            pairs: BTreeMap::new(),
            plays: BTreeMap::new(),
            judged: BTreeSet::new(),
            heard: VecDeque::new(),
        }
    }

    fn pick(&mut self, from: &[usize]) -> Option<usize> {
        (!from.is_empty()).then(|| from[(self.rng.next_u64() % from.len() as u64) as usize])
    }

    fn honest(world: &World) -> Vec<usize> {
        let honest = world.playing(Role::Honest);
        honest.into_iter().map(|(i, _)| i).collect()
    }

    /// Marks `conn` judged; false if it was already.
    fn judge(&mut self, conn: u64) -> bool {
        let new = self.judged.insert(conn);
        while self.judged.len() > 4 * MAX_TRACKED {
            self.judged.pop_first();
        }
        new
    }

    fn track(&mut self, a: u64, b: u64, b_end: usize, a_end: usize, proof_only: bool) {
        let leg = |other, end| Leg {
            other,
            end,
            proof_only,
        };
        self.pairs.insert(a, leg(b, b_end));
        self.pairs.insert(b, leg(a, a_end));
        while self.pairs.len() > MAX_TRACKED {
            self.pairs.pop_first();
        }
    }

    /// Starts a claim or a replay, at most once per half round.
    pub fn tick(&mut self, world: &Arc<World>, me: usize) {
        let now = world.now();
        if now < self.next_ms {
            return;
        }
        self.next_ms = now + self.every_ms;
        let honest = Self::honest(world);
        let (Some(j), Some(i)) = (self.pick(&honest), self.pick(&honest)) else {
            return;
        };
        if i == j {
            return;
        }
        let conn = world.open_conn(me, j);
        self.judge(conn);
        let replay = self
            .heard
            .iter()
            .find(|(of, m)| *of != j && m.len() == HELLO_BYTES)
            .cloned();
        let (play, hello) = match replay {
            Some((of, hello)) if self.rng.next_u64().is_multiple_of(2) => {
                (Play::Replay { of }, hello)
            }
            _ => {
                let victim_key = world.key(i);
                let mut x = [0u8; 32];
                self.rng.fill_bytes(&mut x);
                (
                    Play::Claim { victim: i },
                    Hs::hello(self.kind, victim_key, x),
                )
            }
        };
        self.plays.insert(conn, play);
        while self.plays.len() > MAX_TRACKED {
            self.plays.pop_first();
        }
        world.send(me, j, Wire::Handshake { conn, bytes: hello });
    }

    /// Looks at what arrived from `from`; true if it was the relay's to
    /// handle, so the honest links never see it.
    pub fn take(&mut self, world: &Arc<World>, me: usize, from: usize, wire: &Wire) -> bool {
        let (conn, data) = match wire {
            Wire::Handshake { conn, .. } => (*conn, false),
            Wire::Data { conn, .. } => (*conn, true),
            Wire::Reset { conn } => return self.pairs.contains_key(conn),
        };
        // Frames of the honest links (every proposal) pass untouched and
        // uncopied: only a relayed connection carries data for the relay.
        if data && !self.pairs.contains_key(&conn) {
            return false;
        }
        let bytes = wire.bytes().to_vec();
        if !data {
            self.heard.push_back((from, bytes.clone()));
            if self.heard.len() > HEARD {
                self.heard.pop_front();
            }
        }
        if let Some(&Leg {
            other,
            end,
            proof_only,
        }) = self.pairs.get(&conn)
        {
            let bytes = match proof_only && bytes.len() > HELLO_BYTES && !data {
                true => bytes[HELLO_BYTES..].to_vec(),
                false => bytes,
            };
            let wire = match data {
                true => Wire::Data { conn: other, bytes },
                false => Wire::Handshake { conn: other, bytes },
            };
            world.send(me, end, wire);
            return true;
        }
        if let Some(play) = self.plays.remove(&conn) {
            match play {
                Play::Claim { victim } => {
                    // J answered the claim: ask the victim as J, with J's
                    // own hello.
                    let second = world.open_conn(me, victim);
                    self.judge(second);
                    self.track(conn, second, victim, from, true);
                    let hello = bytes[..bytes.len().min(HELLO_BYTES)].to_vec();
                    world.send(
                        me,
                        victim,
                        Wire::Handshake {
                            conn: second,
                            bytes: hello,
                        },
                    );
                }
                Play::Replay { of } => {
                    let proof = self
                        .heard
                        .iter()
                        .rev()
                        .find(|(s, m)| *s == of && m.len() != HELLO_BYTES)
                        .map(|(_, m)| m.clone());
                    if let Some(proof) = proof {
                        world.send(me, from, Wire::Handshake { conn, bytes: proof });
                    }
                }
            }
            return true;
        }
        let dialled_us = world.conn_ends(conn) == Some((from, me));
        if !dialled_us || !self.judge(conn) {
            return false;
        }
        // A new dial to us: splice half of them.
        if self.rng.next_u64() % 2 == 1 {
            return false;
        }
        let honest = Self::honest(world);
        let others: Vec<usize> = honest.into_iter().filter(|&j| j != from).collect();
        let Some(j) = self.pick(&others) else {
            return false;
        };
        let second = world.open_conn(me, j);
        self.judge(second);
        self.track(conn, second, j, from, false);
        world.send(
            me,
            j,
            Wire::Handshake {
                conn: second,
                bytes,
            },
        );
        true
    }
}
