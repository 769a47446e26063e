//! `contract_output`, hpcore's message carrying a user's outputs with the
//! proof its client checks (`contract::OutputTree`).

use crate::contract::B3;
use crate::crypto::{Hash, PubKey, Sig};
use serde_json::{json, Value};

/// A `contract_output` message: the user's outputs of the run of ledger
/// `seq` (hash `ledger`), with the proof that `sigs` sign.
pub fn contract_output(
    seq: u64,
    ledger: &Hash,
    outputs: &[String],
    mine: &B3,
    hash_tree: Value,
    sigs: &[(PubKey, Sig)],
) -> String {
    let unl_sig: Vec<[String; 2]> = (sigs.iter())
        .map(|(k, s)| [super::hp::ed_hex(k), s.to_hex()])
        .collect();
    json!({
        "type": "contract_output",
        "ledger_seq_no": seq,
        "ledger_hash": hex::encode(ledger.0),
        "outputs": outputs,
        "output_hash": hex::encode(mine),
        "hash_tree": hash_tree,
        "unl_sig": unl_sig,
    })
    .to_string()
}
