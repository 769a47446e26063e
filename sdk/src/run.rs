//! One run as a contract sees it, and the traits contracts implement.

use crate::{Description, Npl, SdkError, State};
use std::collections::BTreeMap;
use std::future::Future;

/// One run as the contract sees it.
pub struct Run<'a> {
    pub description: Description,
    inputs: BTreeMap<String, Vec<u8>>,
    outputs: BTreeMap<String, Vec<u8>>,
    pub state: &'a mut dyn State,
}

impl<'a> Run<'a> {
    /// A run with these inputs (user pubkey hex -> bytes) over `state`, as
    /// the simulator gives it.
    pub fn in_memory(
        description: Description,
        inputs: BTreeMap<String, Vec<u8>>,
        state: &'a mut dyn State,
    ) -> Run<'a> {
        Run {
            description,
            inputs,
            outputs: BTreeMap::new(),
            state,
        }
    }

    /// Users with inputs in this run, in key order.
    pub fn users(&self) -> Vec<String> {
        self.inputs.keys().cloned().collect()
    }

    /// Everything `user` sent for this ledger.
    pub fn input(&self, user: &str) -> &[u8] {
        self.inputs.get(user).map_or(&[], |v| v.as_slice())
    }

    /// Appends to what `user` receives once the run is certified.
    pub fn output(&mut self, user: &str, data: &[u8]) {
        self.outputs
            .entry(user.to_string())
            .or_default()
            .extend_from_slice(data);
    }

    pub fn into_outputs(self) -> BTreeMap<String, Vec<u8>> {
        self.outputs
    }
}

pub trait Contract {
    fn run(&mut self, run: &mut Run<'_>) -> Result<(), SdkError>;
}

/// A contract that talks to its copies on the other UNL nodes during the
/// run. Async so the simulator can run it on simulated time; a binary
/// drives it with [`crate::main_npl`]. Implement it with `async fn run`.
pub trait NplContract {
    fn run(
        &mut self,
        run: &mut Run<'_>,
        npl: &mut Npl<'_>,
    ) -> impl Future<Output = Result<(), SdkError>>;
}
