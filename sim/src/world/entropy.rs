//! The simulated nodes' entropy: a ChaCha8 stream drawn from the run's seed,
//! so a seed fixes every challenge a node makes.

use hotpocket_node::env::Entropy;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

pub struct SimEntropy(ChaCha8Rng);

impl SimEntropy {
    /// The stream of node `node` after `boots` crashes: a restarted node
    /// draws new challenges, as a real one would.
    pub fn for_boot(seed: u64, node: usize, boots: u64) -> SimEntropy {
        SimEntropy(ChaCha8Rng::seed_from_u64(
            seed ^ 0x6368_616c ^ ((node as u64) << 32) ^ boots,
        ))
    }
}

impl Entropy for SimEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf);
    }
}
