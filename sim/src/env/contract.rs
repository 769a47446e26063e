//! The example key-value contract, run in-process: the same code the
//! `kv-contract` binary runs under the real host, over an in-memory state.
//!
//! Its state is the simulated node's state directory: it lives in the world,
//! so it survives a crash like a disk does. A run is written at once, at
//! its end (a run that takes time sleeps first), so a crash cannot split
//! one.

use crate::check::violation::Kind;
use crate::env::npl::{run_multisig, SimTransport};
use crate::scenario::latency::sample;
use crate::scenario::{ContractKind, Latency};
use crate::world::disk::ContractDisk;
use crate::world::World;
use hotpocket_contract::{parse_description, Changes, Contract, MemState, Overlay, Run, State};
use hotpocket_kv_contract::Kv;
use hotpocket_node::contract::{describe, ExecResult, FdlistFormat};
use hotpocket_node::contract::{RunOutcome, RunReport, RunRequest, RunResult, StateNode, UserIo};
use hotpocket_node::crypto::PubKey;
use hotpocket_node::env::{ContractHost, InstallError, RollbackError, RunLink};
use hotpocket_node::ledger::LedgerRecord;
use hotpocket_node::sync::state_transfer::{
    serve, StateIndex, StatePatch, StateRequest, StateResponse,
};
use madsim::time::Duration;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

/// The contract host of simulated node `node`.
pub struct SimContract {
    pub world: Arc<World>,
    pub node: usize,
    pub key: PubKey,
    pub unl: Vec<PubKey>,
    /// How long a run takes (none: no simulated time at all), drawn from
    /// `rng`, which nothing else draws from.
    pub run_ms: Option<Latency>,
    pub rng: ChaCha8Rng,
    pub kind: ContractKind,
    /// The multisig contract's wait for signatures.
    pub npl_timeout_ms: u64,
    /// The contract's signing seed on this node (`Keypair::contract_seed`).
    pub contract_seed: [u8; 32],
    pub keys: KeyMemo,
}

impl SimContract {
    /// Keeps what run `seq` changed, all at once, as the process host's
    /// snapshot does.
    fn finish(&self, seq: u64, changes: Changes, run: RunResult) -> RunReport {
        let (ran, _) = self.world.with_contract(self.node, |disk| disk.latest());
        if ran + 1 != seq {
            let what = format!(
                "node {} ran ledger {seq} on the state of ledger {ran}",
                self.node
            );
            self.world.violation(Kind::Contract, self.node, what);
        }
        let output = run.output_hash();
        let keep = |disk: &mut ContractDisk| disk.keep(seq, &changes, output);
        let result = self.world.with_contract(self.node, keep);
        RunReport {
            state: result.state,
            run,
        }
    }
}

/// What a run that ended in `after`, having started from `before`, changed.
fn changes_between(before: &MemState, after: &MemState) -> Changes {
    let gone = (before.0.keys())
        .filter(|k| !after.0.contains_key(*k))
        .map(|k| (k.clone(), None));
    let written = (after.0.iter())
        .filter(|(k, v)| before.0.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), Some(v.clone())));
    gone.chain(written).collect()
}

/// In-process runs have no file descriptors: the inputs and outputs are
/// handed over directly, so the description names none.
const NO_FD: i32 = -1;

/// The run an SDK contract sees for `req`, as in a process: the
/// description the real host writes, in the default format, parsed as the
/// SDK parses it. `None` if it does not parse.
pub(crate) fn sdk_run<'a>(req: &RunRequest, state: &'a mut dyn State) -> Option<Run<'a>> {
    let fds = req.inputs.keys().map(|k| (*k, (NO_FD, NO_FD))).collect();
    let text = describe(
        (FdlistFormat::default(), UserIo::Raw),
        req,
        (NO_FD, NO_FD),
        &fds,
    );
    let description = parse_description(&text).ok()?;
    let inputs = req
        .inputs
        .iter()
        .map(|(user, ins)| (user.to_hex(), ins.concat()))
        .collect();
    Some(Run::in_memory(description, inputs, state))
}

/// User keys as the SDK names them (hex), parsed and checked once: a
/// check decompresses the point, which costs as much as a signature.
pub(crate) type KeyMemo = BTreeMap<String, Option<PubKey>>;

/// What the node gets from a finished SDK run: its outputs, or (`None`,
/// the contract failed) nothing, as the SDK's binary exits 1 before
/// writing any output.
pub(crate) fn sdk_result(keys: &mut KeyMemo, run: Option<Run<'_>>) -> RunResult {
    let Some(run) = run else {
        return RunResult {
            outcome: RunOutcome::Exited(Some(1)),
            outputs: BTreeMap::new(),
            io: UserIo::Raw,
        };
    };
    let outputs = run
        .into_outputs()
        .into_iter()
        .filter_map(|(user, out)| {
            let key = *keys
                .entry(user)
                .or_insert_with_key(|u| PubKey::from_hex(u).ok());
            key.map(|k| (k, out))
        })
        .collect();
    RunResult {
        outcome: RunOutcome::Exited(Some(0)),
        outputs,
        io: UserIo::Raw,
    }
}

/// One run of the kv contract.
fn run_kv(req: &RunRequest, state: &mut dyn State, keys: &mut KeyMemo) -> RunResult {
    let run = sdk_run(req, state).and_then(|mut run| Kv.run(&mut run).is_ok().then_some(run));
    sdk_result(keys, run)
}

impl ContractHost for SimContract {
    fn ran(&self) -> (u64, ExecResult) {
        self.world.with_contract(self.node, |disk| disk.latest())
    }

    /// A run that takes time sleeps first and then runs: a crash meanwhile
    /// leaves the state as it was, as the process host's `open` does. The
    /// multisig contract talks over `link` while it runs.
    fn execute(&mut self, record: &LedgerRecord, link: RunLink) -> impl Future<Output = RunReport> {
        let missing = record
            .ledger
            .inputs
            .iter()
            .filter(|h| !record.bodies.contains_key(h))
            .count();
        let honest = self.world.role(self.node) == crate::scenario::Role::Honest;
        if missing > 0 && honest {
            let what = format!(
                "node {} ran ledger {} with {missing} input bodies missing",
                self.node, record.ledger.seq
            );
            self.world.violation(Kind::Contract, self.node, what);
        }
        let delay = self.run_ms.map_or(0, |l| sample(&mut self.rng, l));
        // Simulated users speak the prototype's protocol: every network
        // takes vouched inputs.
        let mut req = RunRequest::for_ledger(record, self.key, &self.unl, true);
        req.contract_seed = Some(self.contract_seed);
        async move {
            if delay > 0 {
                madsim::time::sleep(Duration::from_millis(delay)).await;
            }
            let (run, changes) = match self.kind {
                // Over the state in place: the kv run does not wait.
                ContractKind::Kv => {
                    let keys = &mut self.keys;
                    self.world.with_contract(self.node, |disk| {
                        let mut state = Overlay::new(disk.files());
                        let run = run_kv(&req, &mut state, keys);
                        (run, state.into_changes())
                    })
                }
                // It waits on its peers, so it runs on a copy.
                ContractKind::Multisig => {
                    self.world.npl_run_opened(self.node, req.seq);
                    let transport = SimTransport {
                        link,
                        world: self.world.clone(),
                        node: self.node,
                        seq: req.seq,
                    };
                    let mut state =
                        (self.world).with_contract(self.node, |disk| disk.files().clone());
                    let run = run_multisig(&req, &mut state, transport, self.npl_timeout_ms).await;
                    // The host runs one job at a time: the disk is still
                    // where this run started.
                    let changes = (self.world)
                        .with_contract(self.node, |disk| changes_between(disk.files(), &state));
                    (run, changes)
                }
            };
            self.finish(req.seq, changes, run)
        }
    }

    fn rollback(&mut self, seq: u64) -> Result<(), RollbackError> {
        self.world
            .with_contract(self.node, |disk| disk.rollback(seq))
    }

    fn state_tree(&mut self) -> StateNode {
        self.world.with_contract(self.node, |disk| disk.tree())
    }

    /// Serves from the latest run and the one before, as the real host.
    fn serve_state(&mut self, req: &StateRequest) -> StateResponse {
        self.world.with_contract(self.node, |disk| {
            let previous = disk.previous();
            let mut kept = vec![(disk.files(), disk.tree())];
            kept.extend(previous.as_ref().map(|(files, tree)| (files, tree.clone())));
            let indexes: Vec<StateIndex> =
                kept.iter().map(|(_, tree)| StateIndex::new(tree)).collect();
            let refs: Vec<&StateIndex> = indexes.iter().collect();
            serve(&refs, req, |i, path, offset, len| {
                let path = std::str::from_utf8(path).map_err(|_| ())?;
                let bytes = kept[i].0 .0.get(path).ok_or(())?;
                let end = offset as usize + len as usize;
                bytes
                    .get(offset as usize..end)
                    .map(<[u8]>::to_vec)
                    .ok_or(())
            })
        })
    }

    /// All at once, like the atomic swap of the real host: a crash falls
    /// before or after it.
    fn install_state(
        &mut self,
        patch: StatePatch,
    ) -> impl Future<Output = Result<(), InstallError>> {
        let install = |disk: &mut ContractDisk| {
            let (files, tree) = disk.patched(&patch);
            let got = tree.hash();
            if got == patch.result.state {
                disk.install(patch.seq, files, tree, patch.result);
            }
            got
        };
        let got = self.world.with_contract(self.node, install);
        let result = if got == patch.result.state {
            Ok(())
        } else {
            // Every piece was checked against the certified root: a patch
            // that misses it is a protocol bug.
            let what = format!(
                "node {} fetched a state for ledger {} that hashes to {got}, not {}",
                self.node, patch.seq, patch.result.state
            );
            self.world.violation(Kind::Contract, self.node, what);
            Err(InstallError::Hash {
                want: patch.result.state,
                got,
            })
        };
        std::future::ready(result)
    }
}
