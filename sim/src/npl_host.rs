//! Contracts that talk over the node party line, run in-process: the SDK's
//! `NplTransport` over the run's session link, on simulated time. What the
//! contract writes goes to the node through the link, and what the node
//! delivers comes back through it, so NPL chunks cross the simulated
//! network with its latency, loss and partitions like any other frame.

use crate::world::World;
use hotpocket_contract::{
    parse_description, MemState, Npl, NplContract, NplTransport, RecvFuture, Run,
};
use hotpocket_multisig_contract::Multisig;
use hotpocket_node::contract::{describe, FdlistFormat, RunOutcome, RunRequest, RunResult};
use hotpocket_node::crypto::PubKey;
use hotpocket_node::env::RunLink;
use madsim::time::Duration;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

/// The contract's end of the party line in the simulator. Every byte that
/// passes is shown to the world's NPL checker.
pub struct SimTransport {
    pub link: RunLink,
    pub world: Arc<World>,
    pub node: usize,
    pub seq: u64,
}

impl NplTransport for SimTransport {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.world.npl_written(self.node, self.seq, bytes);
        self.link.send(bytes.to_vec());
        Ok(())
    }

    fn recv(&mut self, timeout_ms: u64) -> RecvFuture<'_> {
        Box::pin(async move {
            let got = match self.link.try_recv() {
                Some(b) => Some(b),
                None if timeout_ms == 0 => None,
                None => madsim::time::timeout(Duration::from_millis(timeout_ms), self.link.recv())
                    .await
                    .ok(),
            };
            if let Some(b) = &got {
                self.world.npl_heard(self.node, self.seq, b);
            }
            Ok(got)
        })
    }

    fn now_ms(&self) -> u64 {
        self.world.now()
    }
}

/// In-process runs have no file descriptors.
const NO_FD: i32 = -1;

/// One run of the multisig contract over `state`, as the SDK runs it in a
/// process: the description is the one the real host writes, parsed as the
/// SDK parses it.
pub async fn run_multisig(
    req: &RunRequest,
    state: &mut MemState,
    transport: SimTransport,
    timeout_ms: u64,
) -> RunResult {
    let failed = RunResult {
        outcome: RunOutcome::Exited(Some(1)),
        outputs: BTreeMap::new(),
    };
    let fds = req.inputs.keys().map(|k| (*k, (NO_FD, NO_FD))).collect();
    let text = describe(FdlistFormat::default(), req, (NO_FD, NO_FD), &fds);
    let Ok(description) = parse_description(&text) else {
        return failed;
    };
    let inputs = req
        .inputs
        .iter()
        .map(|(user, ins)| (user.to_hex(), ins.concat()))
        .collect();
    let mut run = Run::in_memory(description, inputs, state);
    let mut npl = Npl::new(Box::new(transport));
    let mut contract = Multisig { timeout_ms };
    if contract.run(&mut run, &mut npl).await.is_err() {
        return failed;
    }
    let outputs = run
        .into_outputs()
        .into_iter()
        .filter_map(|(user, out)| PubKey::from_hex(&user).ok().map(|k| (k, out)))
        .collect();
    RunResult {
        outcome: RunOutcome::Exited(Some(0)),
        outputs,
    }
}
