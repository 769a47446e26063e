//! A simulated node's connections: the peer handshake of
//! `hotpocket_node::handshake` run over the simulated wire, as the real
//! transport runs it over TCP. Each node dials every peer and sends only on
//! connections it dialled; a frame that arrives on an accepted connection
//! is attributed to the key that connection proved, never to the wire's
//! idea of who sent it. So an adversary that relays or replays handshakes
//! gets exactly the sessions the protocol would give it on a real network,
//! and the world checks that every session an honest node holds is with the
//! node whose key it names.

mod v1;

use crate::scenario::HandshakeKind;
use crate::world::World;
use hotpocket_node::crypto::{Keypair, PubKey};
use hotpocket_node::handshake::{Handshake, HandshakeError, PeerSession, Step};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A dial that has not finished by then is given up and made again on the
/// next send: its messages were lost or its peer is cut off.
const DIAL_TIMEOUT_MS: u64 = 1_000;
/// Frames kept while a link is being dialled; the rest are dropped, as the
/// real transport drops what it has no connection for.
const DIAL_QUEUE: usize = 256;
/// Handshakes accepted but not finished; the oldest is dropped past this.
const PENDING_ACCEPTS: usize = 32;
/// Proven connections kept per peer key (twins are two machines with one
/// key); the oldest goes first.
const SESSIONS_PER_PEER: usize = 2;

/// What travels on the simulated wire between two nodes.
#[derive(Clone, Debug)]
pub enum Wire {
    /// A handshake message on connection `conn`.
    Handshake { conn: u64, bytes: Vec<u8> },
    /// A frame on a connection the dialer has proved.
    Data { conn: u64, bytes: Vec<u8> },
    /// "I know no such connection" (its receiver restarted): dial again.
    Reset { conn: u64 },
}

impl Wire {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Wire::Handshake { bytes, .. } | Wire::Data { bytes, .. } => bytes,
            Wire::Reset { .. } => &[],
        }
    }
}

/// One side of one handshake, of whichever kind runs.
#[derive(Clone)]
pub(crate) enum Hs {
    V2(Handshake),
    V1(v1::Handshake),
}

impl Hs {
    pub(crate) fn dialer(
        kind: HandshakeKind,
        key: &Keypair,
        unl: &[PubKey],
        expect: PubKey,
        challenge: [u8; 32],
    ) -> (Hs, Vec<u8>) {
        match kind {
            HandshakeKind::V1 => {
                let (hs, hello) = v1::Handshake::new(key.clone(), unl.to_vec(), challenge, true);
                (Hs::V1(hs), hello)
            }
            _ => {
                let (mut hs, hello) = Handshake::dialer(key.clone(), unl.to_vec(), challenge);
                if kind == HandshakeKind::V2 {
                    hs = hs.expecting(expect);
                }
                (Hs::V2(hs), hello)
            }
        }
    }

    fn acceptor(kind: HandshakeKind, key: &Keypair, unl: &[PubKey], challenge: [u8; 32]) -> Hs {
        match kind {
            HandshakeKind::V1 => {
                Hs::V1(v1::Handshake::new(key.clone(), unl.to_vec(), challenge, false).0)
            }
            _ => Hs::V2(Handshake::acceptor(key.clone(), unl.to_vec(), challenge)),
        }
    }

    pub(crate) fn receive(&mut self, msg: &[u8]) -> Result<Step, HandshakeError> {
        match self {
            Hs::V2(h) => h.receive(msg),
            Hs::V1(h) => h.receive(msg),
        }
    }

    /// The first message a dialer claiming `key` with `challenge` sends.
    pub(crate) fn hello(kind: HandshakeKind, key: PubKey, challenge: [u8; 32]) -> Vec<u8> {
        match kind {
            HandshakeKind::V1 => v1::hello(key, challenge),
            _ => hotpocket_node::handshake::Hello {
                version: hotpocket_node::handshake::VERSION,
                key,
                challenge,
            }
            .encode(),
        }
    }
}

/// Every connection ever opened, by id, with its two ends: the world's
/// ground truth the session check compares against.
#[derive(Default)]
pub struct Conns {
    ends: BTreeMap<u64, (usize, usize)>,
}

impl Conns {
    pub fn open(&mut self, dialer: usize, acceptor: usize) -> u64 {
        let id = self.ends.len() as u64 + 1;
        self.ends.insert(id, (dialer, acceptor));
        id
    }

    /// The dialer and the acceptor of `conn`.
    pub fn ends(&self, conn: u64) -> Option<(usize, usize)> {
        self.ends.get(&conn).copied()
    }

    /// The end of `conn` that is not `node`.
    pub fn other_end(&self, conn: u64, node: usize) -> Option<usize> {
        let &(d, a) = self.ends.get(&conn)?;
        Some(if d == node { a } else { d })
    }
}

enum Out {
    Dialing {
        conn: u64,
        hs: Box<Hs>,
        since_ms: u64,
        queue: Vec<Vec<u8>>,
    },
    Up {
        conn: u64,
    },
}

/// An accepted connection, with the machine that dialled it: frames on it
/// from any other machine are dropped, as TCP would never deliver them.
enum In {
    Accepting(Box<Hs>, usize),
    Up(PubKey, usize),
}

/// One node's connections, for one life of the node: a restart starts
/// with none.
pub struct Links {
    node: usize,
    key: Keypair,
    unl: Vec<PubKey>,
    kind: HandshakeKind,
    entropy: crate::world::entropy::SimEntropy,
    /// By the node dialled (its "address"), not by key.
    out: BTreeMap<usize, Out>,
    inbound: BTreeMap<u64, In>,
}

impl Links {
    pub fn new(
        node: usize,
        key: Keypair,
        unl: Vec<PubKey>,
        kind: HandshakeKind,
        entropy: crate::world::entropy::SimEntropy,
    ) -> Links {
        Links {
            node,
            key,
            unl,
            kind,
            entropy,
            out: BTreeMap::new(),
            inbound: BTreeMap::new(),
        }
    }

    /// Sends `bytes` to node `dest` on this node's link to it, dialling
    /// first if there is none.
    pub fn send(&mut self, world: &Arc<World>, dest: usize, bytes: Vec<u8>) {
        let now = world.now();
        match self.out.get_mut(&dest) {
            Some(Out::Up { conn }) => {
                let conn = *conn;
                world.send(self.node, dest, Wire::Data { conn, bytes });
            }
            Some(Out::Dialing {
                since_ms, queue, ..
            }) if now < *since_ms + DIAL_TIMEOUT_MS => {
                if queue.len() < DIAL_QUEUE {
                    queue.push(bytes);
                }
            }
            // Stuck or gone: dial again, keeping what waited.
            stale => {
                let mut queue = match stale {
                    Some(Out::Dialing { queue, .. }) => std::mem::take(queue),
                    _ => vec![],
                };
                queue.push(bytes);
                self.dial(world, dest, queue);
            }
        }
    }

    /// Dials every node in `dests` that has no link yet, as a node does
    /// when it starts.
    pub fn dial_all(&mut self, world: &Arc<World>, dests: impl IntoIterator<Item = usize>) {
        for d in dests {
            if !self.out.contains_key(&d) {
                self.dial(world, d, vec![]);
            }
        }
    }

    fn dial(&mut self, world: &Arc<World>, dest: usize, queue: Vec<Vec<u8>>) {
        let (conn, expect) = {
            let mut g = world.lock();
            (g.conns.open(self.node, dest), g.nodes[dest].key.public())
        };
        let challenge = hotpocket_node::env::Entropy::seed32(&mut self.entropy);
        let (hs, hello) = Hs::dialer(self.kind, &self.key, &self.unl, expect, challenge);
        self.out.insert(
            dest,
            Out::Dialing {
                conn,
                hs: Box::new(hs),
                since_ms: world.now(),
                queue,
            },
        );
        world.send(self.node, dest, Wire::Handshake { conn, bytes: hello });
    }

    /// Takes what arrived from node `from`; returns a frame for the
    /// protocol, attributed to the key its connection proved.
    pub fn receive(
        &mut self,
        world: &Arc<World>,
        from: usize,
        wire: Wire,
    ) -> Option<(PubKey, Vec<u8>)> {
        match wire {
            Wire::Data { conn, bytes } => match self.inbound.get(&conn) {
                Some(In::Up(peer, m)) if *m == from => Some((*peer, bytes)),
                // A late handshake message may still make it: wait.
                Some(_) => None,
                None => {
                    world.send(self.node, from, Wire::Reset { conn });
                    None
                }
            },
            Wire::Reset { conn } => {
                self.out.retain(|dest, o| match o {
                    Out::Up { conn: c } | Out::Dialing { conn: c, .. } => {
                        *c != conn || *dest != from
                    }
                });
                None
            }
            Wire::Handshake { conn, bytes } => {
                let dialled = self.out.iter().find_map(|(d, o)| match o {
                    Out::Dialing { conn: c, .. } if *c == conn => Some(*d),
                    _ => None,
                });
                match dialled {
                    Some(dest) if dest == from => self.dialer_step(world, dest, &bytes),
                    Some(_) => {}
                    None => self.acceptor_step(world, from, conn, &bytes),
                }
                None
            }
        }
    }

    fn dialer_step(&mut self, world: &Arc<World>, dest: usize, bytes: &[u8]) {
        let now = world.now();
        let Some(Out::Dialing {
            conn, hs, since_ms, ..
        }) = self.out.get_mut(&dest)
        else {
            return;
        };
        let conn = *conn;
        // A handshake that moves is not stuck, however slow its link.
        *since_ms = now;
        match step(world, self.node, dest, conn, hs, bytes) {
            Ok(None) => {}
            Ok(Some(_)) => {
                let Some(Out::Dialing { queue, .. }) = self.out.insert(dest, Out::Up { conn })
                else {
                    return;
                };
                for bytes in queue {
                    world.send(self.node, dest, Wire::Data { conn, bytes });
                }
            }
            // Given up: the next send dials again.
            Err(()) => {
                self.out.remove(&dest);
            }
        }
    }

    fn acceptor_step(&mut self, world: &Arc<World>, from: usize, conn: u64, bytes: &[u8]) {
        let hs = match self.inbound.get_mut(&conn) {
            Some(In::Accepting(hs, m)) if *m == from => hs,
            // Proven already (a late or replayed handshake message), or
            // from a machine not at this connection's other end.
            Some(_) => return,
            // Only a connection dialled to us starts a handshake here (not
            // a late answer to a dial of ours we gave up on).
            None if world.lock().conns.ends(conn) != Some((from, self.node)) => return,
            None => {
                let pending: Vec<u64> = (self.inbound.iter())
                    .filter(|(_, i)| matches!(i, In::Accepting(..)))
                    .map(|(c, _)| *c)
                    .collect();
                if pending.len() >= PENDING_ACCEPTS {
                    self.inbound.remove(&pending[0]);
                }
                let challenge = hotpocket_node::env::Entropy::seed32(&mut self.entropy);
                let hs = Hs::acceptor(self.kind, &self.key, &self.unl, challenge);
                match self
                    .inbound
                    .entry(conn)
                    .or_insert(In::Accepting(Box::new(hs), from))
                {
                    In::Accepting(hs, _) => hs,
                    In::Up(..) => return,
                }
            }
        };
        match step(world, self.node, from, conn, hs, bytes) {
            Ok(None) => {}
            Ok(Some(session)) => self.admit(conn, session, from),
            Err(()) => {
                self.inbound.remove(&conn);
            }
        }
    }

    /// Keeps `conn` as a proven session, dropping the oldest of the same
    /// peer past the cap.
    fn admit(&mut self, conn: u64, session: PeerSession, from: usize) {
        self.inbound.insert(conn, In::Up(session.peer, from));
        let same: Vec<u64> = (self.inbound.iter())
            .filter(|(_, i)| matches!(i, In::Up(p, _) if *p == session.peer))
            .map(|(c, _)| *c)
            .collect();
        for c in same
            .iter()
            .take(same.len().saturating_sub(SESSIONS_PER_PEER))
        {
            self.inbound.remove(c);
        }
    }
}

/// Feeds `bytes` to `hs` and sends what it answers on `conn` to machine
/// `to`. A finished handshake is reported to the world and returned; a
/// failed one is `Err`, and its side is done.
fn step(
    world: &Arc<World>,
    node: usize,
    to: usize,
    conn: u64,
    hs: &mut Hs,
    bytes: &[u8],
) -> Result<Option<PeerSession>, ()> {
    let send = |m| world.send(node, to, Wire::Handshake { conn, bytes: m });
    match hs.receive(bytes) {
        Ok(Step::Send(m)) => {
            send(m);
            Ok(None)
        }
        Ok(Step::Done { last, session }) => {
            last.map(send);
            world.session_opened(node, conn, &session);
            Ok(Some(session))
        }
        Err(_) => Err(()),
    }
}
