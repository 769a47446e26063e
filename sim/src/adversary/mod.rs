//! Byzantine peers. A byzantine node runs the honest protocol and then
//! rewrites what it sends, so its messages are well-timed and plausible:
//! the hardest kind of wrong.

mod beacon;
mod collude;
mod history;
mod inputs;
mod lcl;
mod mutate;
mod relay;
mod votes;

pub use relay::Relay;

use crate::scenario::Role;
use crate::world::mutate::MutationFault;
use hotpocket_node::consensus::{ExecResult, PeerMessage};
use hotpocket_node::crypto::{Hash, Keypair, PubKey};
use hotpocket_node::ledger::Verdict;
use hotpocket_node::npl::{NplChunk, NplEnvelope};
use hotpocket_node::sync::state_transfer::{Entry, StateRequest, StateResponse};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::VecDeque;
use std::sync::Arc;

pub struct Byzantine {
    role: Role,
    key: Keypair,
    unl: Vec<PubKey>,
    roundtime_ms: u64,
    rng: ChaCha8Rng,
    /// Frames sent and received, for the replayer.
    seen: VecDeque<Vec<u8>>,
    withholding: beacon::Withholding,
    /// The coalition's plan, the same for every colluder in a run.
    plan: u64,
    memory: mutate::Memory,
    mutation_rngs: std::collections::BTreeMap<u64, ChaCha8Rng>,
    /// Every node's key, by node number.
    peers: Vec<PubKey>,
    /// The keys of every node playing the same role, shared among them
    /// (colluding withholders choose together).
    coalition: Vec<Keypair>,
    victim: votes::Victim,
    overheard: inputs::Overheard,
    lie: lcl::Lie,
}

const SEEN_CAP: usize = 512;

impl Byzantine {
    pub fn new(
        role: Role,
        key: Keypair,
        unl: Vec<PubKey>,
        roundtime_ms: u64,
        seed: u64,
        plan: u64,
    ) -> Option<Byzantine> {
        (role != Role::Honest).then(|| Byzantine {
            role,
            key,
            unl,
            roundtime_ms,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seen: VecDeque::new(),
            withholding: Default::default(),
            plan,
            memory: Default::default(),
            mutation_rngs: Default::default(),
            peers: vec![],
            coalition: vec![],
            victim: Default::default(),
            overheard: Default::default(),
            lie: Default::default(),
        })
    }

    /// Every node's key, by node number (for roles that pick a victim),
    /// and the keys of the nodes that play this node's role.
    pub fn set_peers(&mut self, keys: Vec<PubKey>, coalition: Vec<Keypair>) {
        self.peers = keys;
        self.coalition = coalition;
    }

    fn coin(&mut self, percent: u64) -> bool {
        self.rng.next_u64() % 100 < percent
    }

    /// Sees a frame that arrived from `from`; returns frames it now sends.
    pub fn observe(&mut self, from: &PubKey, frame: &[u8]) -> Vec<(usize, Vec<u8>)> {
        match self.role {
            Role::LclLiar => return self.lcl_observe(from, frame),
            Role::Replayer => self.remember(frame.to_vec()),
            Role::Mutator => {
                if let Ok(PeerMessage::Proposal(sp)) = PeerMessage::decode(frame) {
                    self.memory.proposal(&sp.proposal);
                }
            }
            Role::BeaconWithholder => return self.beacon_observe(frame),
            Role::VoteForger | Role::Sybil => self.watch_victim(frame),
            Role::InputForger => self.overhear_inputs(frame),
            _ => {}
        }
        vec![]
    }

    fn remember(&mut self, frame: Vec<u8>) {
        if self.seen.len() == SEEN_CAP {
            self.seen.pop_front();
        }
        self.seen.push_back(frame);
    }

    /// What actually leaves for peer `to` when the protocol sends `bytes`;
    /// `fault` is the `mutate` window open on that link, if any.
    pub fn outgoing(
        &mut self,
        to: usize,
        bytes: Vec<u8>,
        fault: Option<MutationFault>,
    ) -> Vec<(usize, Vec<u8>)> {
        match self.role {
            Role::Honest | Role::Twin | Role::Relay => vec![(to, bytes)],
            Role::Mutator => match fault {
                Some(f) => self.mutate(bytes, f).into_iter().map(|b| (to, b)).collect(),
                None => vec![(to, bytes)],
            },
            Role::Colluder => vec![(to, self.collude(to, bytes))],
            Role::InputForger => self.forge_inputs(to, bytes),
            Role::VoteForger | Role::Sybil => self.forge_votes(to, bytes),
            Role::HistoryForger => vec![(to, self.forge_history(bytes, false))],
            Role::ProofForger => vec![(to, self.forge_history(bytes, true))],
            Role::BodySwapper => vec![(to, self.swap_bodies(bytes))],
            Role::HistorySkipper => vec![(to, self.skip_history(bytes))],
            Role::LclLiar => vec![(to, self.lie_about_lcl(to, bytes))],
            Role::Silent => vec![],
            Role::Equivocator => vec![(to, self.equivocate(bytes))],
            Role::Forger => vec![(to, self.forge(bytes))],
            Role::HistoryLiar => vec![(to, self.lie_about_history(bytes))],
            Role::StateLiar => vec![(to, self.lie_about_state(bytes))],
            Role::NplSpammer => self.spam_npl(to, bytes),
            Role::NplEquivocator => vec![(to, self.equivocate_npl(to, bytes))],
            Role::BeaconWithholder
            | Role::BeaconEquivocator
            | Role::BeaconLiar
            | Role::BeaconForger => self.beacon_outgoing(to, bytes),
            Role::Replayer => {
                self.remember(bytes.clone());
                let mut out = vec![(to, bytes)];
                if !self.seen.is_empty() && self.coin(40) {
                    let i = (self.rng.next_u64() % self.seen.len() as u64) as usize;
                    out.push((to, self.seen[i].clone()));
                }
                out
            }
        }
    }

    /// With each party line chunk it sends, one kind of abuse besides:
    /// a flood past the per-run limits, an oversize chunk, a chunk in
    /// another node's name, or a replay for an older ledger. Each must be
    /// refused and cost honest nodes nothing but the counting.
    fn spam_npl(&mut self, to: usize, bytes: Vec<u8>) -> Vec<(usize, Vec<u8>)> {
        let Ok(PeerMessage::Npl(env)) = PeerMessage::decode(&bytes) else {
            return vec![(to, bytes)];
        };
        let mut out = vec![(to, bytes)];
        let base = env.chunk.chunk.clone();
        let sign = |c: NplChunk, key: &Keypair| {
            let env = NplEnvelope {
                hops: 0,
                chunk: c.sign(key),
            };
            PeerMessage::Npl(Box::new(env)).encode()
        };
        match self.rng.next_u64() % 4 {
            0 => {
                for k in 0..40 {
                    let mut c = base.clone();
                    c.index += 1 + k * 40;
                    c.data = vec![b'#'; 32 << 10];
                    out.push((to, sign(c, &self.key)));
                }
            }
            1 => {
                let mut c = base;
                c.index += 1;
                c.data = vec![b'!'; (64 << 10) + 1];
                out.push((to, sign(c, &self.key)));
            }
            2 => {
                let other = self.unl[(self.rng.next_u64() % self.unl.len() as u64) as usize];
                let mut c = base;
                c.author = other;
                out.push((to, sign(c, &self.key)));
            }
            _ => {
                let mut c = base;
                c.seq = c.seq.saturating_sub(1 + self.rng.next_u64() % 3);
                out.push((to, sign(c, &self.key)));
            }
        }
        out
    }

    /// Different party line data for odd and even peers, both validly
    /// signed: the copies of the contract hear different things.
    fn equivocate_npl(&mut self, to: usize, bytes: Vec<u8>) -> Vec<u8> {
        let Ok(PeerMessage::Npl(env)) = PeerMessage::decode(&bytes) else {
            return bytes;
        };
        if to.is_multiple_of(2) {
            return bytes;
        }
        let mut c = env.chunk.chunk;
        for b in c.data.iter_mut() {
            *b = b.wrapping_add(1);
        }
        let env = NplEnvelope {
            hops: 0,
            chunk: c.sign(&self.key),
        };
        PeerMessage::Npl(Box::new(env)).encode()
    }

    /// Half the time, a different but validly signed proposal.
    fn equivocate(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        let Ok(PeerMessage::Proposal(sp)) = PeerMessage::decode(&bytes) else {
            return bytes;
        };
        if self.coin(50) {
            return bytes;
        }
        let mut p = sp.proposal;
        match self.rng.next_u64() % 4 {
            0 => {
                let mut fake = [0u8; 32];
                self.rng.fill_bytes(&mut fake);
                p.inputs.push(Hash(fake));
                p.inputs.sort();
                p.inputs.dedup();
            }
            1 => p.inputs.clear(),
            2 => p.time += self.roundtime_ms,
            _ => {
                let mut fake = [0u8; 32];
                self.rng.fill_bytes(&mut fake);
                let result = Some(ExecResult {
                    state: Hash(fake),
                    output: Hash(fake),
                });
                match p.results.first_mut() {
                    Some(v) => v.result = result,
                    None => p.results.push(Verdict {
                        seq: p.lcl.seq,
                        result,
                    }),
                }
            }
        }
        PeerMessage::Proposal(Box::new(p.sign(&self.key))).encode()
    }

    /// History answers that must all be refused, or (truncated) are merely
    /// short: a changed ledger under its old hash, a re-hashed ledger whose
    /// proof no longer matches, a proof stripped below the threshold, a
    /// chain of ledgers it signed alone.
    fn lie_about_history(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        let Ok(PeerMessage::HistoryResponse(mut records)) = PeerMessage::decode(&bytes) else {
            return bytes;
        };
        if records.is_empty() {
            return bytes;
        }
        let k = (self.rng.next_u64() % records.len() as u64) as usize;
        match self.rng.next_u64() % 5 {
            0 => records[k].ledger.time += 1,
            1 => {
                records[k].ledger.inputs.clear();
                records[k].hash = records[k].ledger.hash();
            }
            2 => records[k].proof.truncate(1),
            3 => records.truncate(1),
            _ => {
                // A whole fake chain from the first asked seq on, proven by
                // stage-3 proposals the liar signed itself, under every
                // author's name.
                let mut prev = records[0].ledger.prev;
                for r in records.iter_mut() {
                    r.ledger.prev = prev;
                    r.ledger.inputs.clear();
                    r.bodies.clear();
                    r.hash = r.ledger.hash();
                    for sp in r.proof.iter_mut() {
                        let mut p = sp.proposal.clone();
                        p.lcl.hash = r.ledger.prev;
                        p.inputs.clear();
                        *sp = Arc::new(p.sign(&self.key));
                    }
                    prev = r.hash;
                }
            }
        }
        PeerMessage::HistoryResponse(records).encode()
    }

    /// Proposals with broken signatures, misattributed authors, or garbage.
    /// Every state sync answer is a lie: a listing with an entry changed
    /// or a name that climbs out of the state directory, a file piece with
    /// a flipped byte, cut short or at another offset, or a false "missing".
    fn lie_about_state(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        let Ok(PeerMessage::StateResponse(resp)) = PeerMessage::decode(&bytes) else {
            return bytes;
        };
        let lie = match resp {
            StateResponse::Dir { hash, mut entries } if !entries.is_empty() => {
                let k = (self.rng.next_u64() % entries.len() as u64) as usize;
                if self.coin(50) {
                    entries[k].0 = b"..".to_vec();
                } else {
                    let mut fake = [0u8; 32];
                    self.rng.fill_bytes(&mut fake);
                    entries[k].1 = Entry::Dir(Hash(fake));
                }
                StateResponse::Dir { hash, entries }
            }
            StateResponse::Chunk {
                digest,
                offset,
                mut bytes,
            } if !bytes.is_empty() => match self.rng.next_u64() % 3 {
                0 => {
                    let i = (self.rng.next_u64() % bytes.len() as u64) as usize;
                    bytes[i] ^= 1;
                    StateResponse::Chunk {
                        digest,
                        offset,
                        bytes,
                    }
                }
                1 => {
                    bytes.pop();
                    StateResponse::Chunk {
                        digest,
                        offset,
                        bytes,
                    }
                }
                _ => StateResponse::Chunk {
                    digest,
                    offset: offset + 1,
                    bytes,
                },
            },
            StateResponse::Dir { hash, .. } => StateResponse::Missing(StateRequest::Dir(hash)),
            other => other,
        };
        PeerMessage::StateResponse(lie).encode()
    }

    fn forge(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        let Ok(PeerMessage::Proposal(mut sp)) = PeerMessage::decode(&bytes) else {
            return bytes;
        };
        match self.rng.next_u64() % 3 {
            0 => {
                let bit = (self.rng.next_u64() % 512) as usize;
                sp.sig.0[bit / 8] ^= 1 << (bit % 8);
                PeerMessage::Proposal(sp).encode()
            }
            1 => {
                // Claims to be another UNL member, signed with its own key.
                let victim = self.unl[(self.rng.next_u64() % self.unl.len() as u64) as usize];
                sp.proposal.author = victim;
                sp.sig = sp.proposal.clone().sign(&self.key).sig;
                PeerMessage::Proposal(sp).encode()
            }
            _ => {
                let mut junk = vec![0u8; (self.rng.next_u64() % 300) as usize];
                self.rng.fill_bytes(&mut junk);
                if let Some(b) = junk.first_mut() {
                    *b = 1; // right version byte, so the decoder is exercised
                }
                junk
            }
        }
    }
}
