//! Contracts that talk over the node party line, run in-process: the SDK's
//! `NplTransport` over the run's session link, on simulated time. What the
//! contract writes goes to the node through the link, and what the node
//! delivers comes back through it, so NPL chunks cross the simulated
//! network with its latency, loss and partitions like any other frame.

use crate::env::contract::{sdk_result, sdk_run, KeyMemo};
use crate::world::World;
use hotpocket_contract::{MemState, Npl, NplContract, NplTransport, RecvFuture};
use hotpocket_multisig_contract::Multisig;
use hotpocket_node::contract::{RunRequest, RunResult};
use hotpocket_node::env::RunLink;
use madsim::time::Duration;
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

/// One run of the multisig contract over `state`, talking through
/// `transport`.
pub async fn run_multisig(
    req: &RunRequest,
    state: &mut MemState,
    transport: SimTransport,
    timeout_ms: u64,
) -> RunResult {
    let Some(mut run) = sdk_run(req, state) else {
        return sdk_result(&mut KeyMemo::new(), None);
    };
    let mut npl = Npl::new(Box::new(transport));
    let ok = Multisig { timeout_ms }
        .run(&mut run, &mut npl)
        .await
        .is_ok();
    sdk_result(&mut KeyMemo::new(), ok.then_some(run))
}
