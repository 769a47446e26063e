//! The consensus state machine driven directly, with no runtime at all: a
//! perfect, instant bus and a stepped clock. This is what sans-IO buys.
#![allow(dead_code)] // each test file uses its own part

use hotpocket_node::consensus::{
    Action, ConsensusConfig, Event, ExecResult, Input, Job, Node, PeerMessage, Proposal,
};
use hotpocket_node::contract::{RunOutcome, RunReport, RunRequest, RunResult, StateNode, UserIo};
use hotpocket_node::crypto::{Hash, Keypair, PubKey};
use hotpocket_node::ledger::LedgerRecord;
use std::collections::VecDeque;
use std::sync::Arc;

pub const T0: u64 = 1_700_000_000_000;

/// How a byzantine node rewrites a proposal to one peer.
pub type Rewrite<'a> = &'a mut dyn FnMut(usize, &mut Proposal);

pub struct Net {
    /// `ConsensusConfig::vouched_inputs`, which the runs follow.
    pub vouched: bool,
    pub nodes: Vec<Node>,
    pub keys: Vec<Keypair>,
    pub closed: Vec<Vec<(u64, Hash)>>,
    /// Per node: (seq run, whether every input body was there).
    pub runs: Vec<Vec<(u64, bool)>>,
    /// Per node: (seq, outputs, whether seq + 1 had closed there before).
    pub delivered: Vec<Vec<(u64, RunResult, bool)>>,
    /// Per node: (seq, signatures) of each `OutputsSigned`.
    pub signed: Vec<Vec<(u64, usize)>>,
    /// Per node: state syncs given up, by target seq.
    pub abandoned: Vec<Vec<u64>>,
    /// Frames in flight: (to, from, bytes).
    pub queue: VecDeque<(usize, PubKey, Vec<u8>)>,
    /// Nodes stopped: no ticks, and frames to them are lost.
    pub down: Vec<bool>,
    /// Per node: the ledgers persisted, from seq 1 (its store).
    pub disks: Vec<Vec<Arc<LedgerRecord>>>,
}

/// An echo contract: each user gets back what they sent, joined by `|`.
/// A run of `r` whose output to each user is its inputs joined by `|`,
/// on a network that takes vouched inputs when `vouched`.
pub fn run_of(r: &LedgerRecord, node: PubKey, vouched: bool) -> RunReport {
    let req = RunRequest::for_ledger(r, node, &[], vouched);
    let outputs = req
        .inputs
        .into_iter()
        .map(|(user, inputs)| (user, inputs.join(&b'|')))
        .collect();
    RunReport {
        state: Hash::of("test-state", &[&r.ledger.seq.to_le_bytes()]),
        run: RunResult {
            outcome: RunOutcome::Exited(Some(0)),
            outputs,
            io: UserIo::Raw,
        },
    }
}

/// The contract state every node starts from.
pub fn initial() -> (u64, ExecResult) {
    let state = Hash::of("test-state", &[&0u64.to_le_bytes()]);
    (
        0,
        ExecResult {
            state,
            output: Hash::ZERO,
        },
    )
}

impl Net {
    pub fn new(n: usize) -> Net {
        Net::with(n, |_| {})
    }

    /// `n` nodes whose config `set` changes from the default.
    pub fn with(n: usize, set: impl Fn(&mut ConsensusConfig)) -> Net {
        let keys: Vec<Keypair> = (0..n)
            .map(|i| Keypair::from_seed([i as u8 + 1; 32]))
            .collect();
        let mut cfg = ConsensusConfig::new(keys.iter().map(|k| k.public()).collect());
        set(&mut cfg);
        let nodes = keys
            .iter()
            .map(|k| Node::new(cfg.clone(), k.clone(), vec![], initial()).unwrap())
            .collect();
        Net {
            vouched: cfg.vouched_inputs,
            nodes,
            keys,
            closed: vec![vec![]; n],
            runs: vec![vec![]; n],
            delivered: vec![vec![]; n],
            signed: vec![vec![]; n],
            abandoned: vec![vec![]; n],
            queue: VecDeque::new(),
            down: vec![false; n],
            disks: vec![vec![]; n],
        }
    }

    pub fn index(&self, k: &PubKey) -> usize {
        self.keys.iter().position(|x| x.public() == *k).unwrap()
    }

    pub fn apply(&mut self, i: usize, now: u64, actions: Vec<Action>) {
        let mut pending: VecDeque<Action> = actions.into();
        while let Some(a) = pending.pop_front() {
            let me = self.keys[i].public();
            match a {
                Action::Broadcast { bytes } => {
                    for j in 0..self.nodes.len() {
                        if j != i {
                            self.queue.push_back((j, me, bytes.clone()));
                        }
                    }
                }
                Action::Send { to, bytes } => {
                    let j = self.index(&to);
                    self.queue.push_back((j, me, bytes));
                }
                Action::Contract(Job::Execute(r)) => {
                    let complete = r.ledger.inputs.iter().all(|h| r.bodies.contains_key(h));
                    self.runs[i].push((r.ledger.seq, complete));
                    let more = self.nodes[i].handle(
                        now,
                        Input::Executed {
                            seq: r.ledger.seq,
                            hash: r.hash,
                            report: run_of(&r, me, self.vouched),
                        },
                    );
                    pending.extend(more);
                }
                Action::OutputsSigned { seq, sigs, .. } => self.signed[i].push((seq, sigs.len())),
                Action::Deliver { seq, run, .. } => {
                    let certified = self.closed[i].iter().any(|(s, _)| *s == seq + 1);
                    self.delivered[i].push((seq, run, certified));
                }
                Action::Notify(Event::LedgerClosed { ledger, hash, .. }) => {
                    self.closed[i].push((ledger.seq, hash))
                }
                Action::Notify(Event::StateSyncAbandoned { seq }) => self.abandoned[i].push(seq),
                Action::Persist(r) => {
                    let disk = &mut self.disks[i];
                    match disk.get_mut(r.ledger.seq as usize - 1) {
                        Some(old) => *old = r, // written again, with bodies
                        None => disk.push(r),
                    }
                }
                Action::Truncate { keep_through } => self.disks[i].truncate(keep_through as usize),
                Action::ReadStored {
                    to,
                    from_seq,
                    count,
                    want,
                } => {
                    let disk = &self.disks[i];
                    let from = (from_seq.max(1) - 1) as usize;
                    let records = (disk.iter().skip(from).take(count as usize))
                        .map(|r| LedgerRecord::clone(r))
                        .collect();
                    let fed = Input::Stored { to, records, want };
                    pending.extend(self.nodes[i].handle(now, fed));
                }
                // No contract host here: the state is an empty directory,
                // and nobody answers state requests.
                Action::Contract(Job::ReadState { id }) => {
                    let tree = StateNode::empty_dir();
                    pending.extend(self.nodes[i].handle(now, Input::LocalState { id, tree }));
                }
                _ => {}
            }
        }
    }

    /// Advances every node to `now` and delivers everything sent meanwhile.
    pub fn step(&mut self, now: u64) {
        self.step_with(now, None);
    }

    /// `step`, and if `byz` is (node, rewrite): each proposal that node
    /// sends to node `to` goes through `rewrite(to, proposal)` and is
    /// signed again with its key.
    fn step_with(&mut self, now: u64, mut byz: Option<(usize, Rewrite)>) {
        for i in 0..self.nodes.len() {
            if !self.down[i] {
                let a = self.nodes[i].handle(now, Input::Tick);
                self.apply(i, now, a);
            }
        }
        while let Some((to, from, mut bytes)) = self.queue.pop_front() {
            if self.down[to] {
                continue;
            }
            if let Some((b, rewrite)) = byz.as_mut() {
                let key = &self.keys[*b];
                if from == key.public() {
                    if let Ok(PeerMessage::Proposal(sp)) = PeerMessage::decode(&bytes) {
                        let mut p = sp.proposal;
                        rewrite(to, &mut p);
                        bytes = PeerMessage::Proposal(Box::new(p.sign(key))).encode();
                    }
                }
            }
            let a = self.nodes[to].handle(now, Input::Peer { from, bytes });
            self.apply(to, now, a);
        }
    }

    /// Steps every 50 ms from `start` to `end` with node `byz` byzantine,
    /// as `step_with` says.
    pub fn run_rewriting(&mut self, start: u64, end: u64, byz: usize, rewrite: Rewrite) {
        let mut t = start;
        while t <= end {
            self.step_with(t, Some((byz, &mut *rewrite)));
            t += 50;
        }
    }

    pub fn run_until(&mut self, end: u64) {
        self.run_between(T0, end);
    }

    pub fn run_between(&mut self, start: u64, end: u64) {
        let mut t = start;
        while t <= end {
            self.step(t);
            t += 50;
        }
    }

    /// Node `i` restarts from an empty disk, with these settings.
    pub fn restart_empty(&mut self, i: usize, cfg: ConsensusConfig) {
        self.nodes[i] = Node::new(cfg, self.keys[i].clone(), vec![], initial()).unwrap();
        self.closed[i].clear();
        self.runs[i].clear();
        self.disks[i].clear();
    }

    pub fn config(&self) -> ConsensusConfig {
        ConsensusConfig::new(self.keys.iter().map(|k| k.public()).collect())
    }
}
