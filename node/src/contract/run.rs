//! One contract run: what goes in, what comes out, and how the outcome is
//! named by a hash every node can compare.

use super::UserIo;
use crate::crypto::{Hash, Hasher, PubKey};
use crate::npl::NplLimits;
use serde_json::json;
use std::collections::BTreeMap;

/// How the run's description is written to the contract's stdin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FdlistFormat {
    /// The prototype's later JSON description (the default).
    #[default]
    Json,
    /// The prototype's first format: `HOTPOCKET 0.1` then `<pubkey>=<in>:<out>`.
    Text,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunLimits {
    /// Wall time the contract may take before it is killed.
    pub time_limit_ms: u64,
    /// Bytes it may write to all user outputs together before it is killed.
    pub max_output_bytes: usize,
    /// Bytes of its NPL output one run hands the node. Past it the host
    /// reads on and discards, so the contract never blocks on a full pipe;
    /// it is not killed, as what it said to peers is not part of the
    /// result nodes agree on.
    pub max_npl_out_bytes: usize,
    /// Bytes the host holds for a contract that reads its NPL input slower
    /// than the node delivers. Past it the rest of the run's NPL input is
    /// dropped, so the contract sees a prefix of the line, never a stream
    /// with a hole.
    pub max_npl_in_queue_bytes: usize,
}

impl RunLimits {
    /// The NPL bounds that match the party line's `npl`: one read past its
    /// per-run limit (so it sees the overrun and cuts its own node off, as
    /// its peers do), and its buffer size.
    pub fn with_npl(self, npl: &NplLimits) -> RunLimits {
        RunLimits {
            max_npl_out_bytes: npl
                .max_bytes_per_author_per_run
                .saturating_add(npl.max_chunk_bytes),
            max_npl_in_queue_bytes: npl.max_buffered_bytes,
            ..self
        }
    }
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            time_limit_ms: 5_000,
            max_output_bytes: 16 << 20,
            max_npl_out_bytes: 0,
            max_npl_in_queue_bytes: 0,
        }
        .with_npl(&NplLimits::default())
    }
}

/// Everything a run needs besides the contract itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRequest {
    pub seq: u64,
    /// Hash of the ledger being run (the contract's "lcl").
    pub lcl: Hash,
    /// Agreed ledger time, unix ms.
    pub time_ms: u64,
    /// This node's key.
    pub node: PubKey,
    pub unl: Vec<PubKey>,
    pub rand: Option<Hash>,
    /// The contract's own signing seed on this node (`Keypair::
    /// contract_seed`), for contracts that sign over the party line.
    pub contract_seed: Option<[u8; 32]>,
    /// Each user's inputs in this ledger, in ledger order.
    pub inputs: BTreeMap<PubKey, Vec<Vec<u8>>>,
    /// A user's read request, not a ledger: the contract runs on a copy of
    /// the state that is thrown away after (hpcore's `readonly` runs).
    pub readonly: bool,
}

/// How a run ended. Part of the output hash, so nodes agree on it too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Exit code, or `None` if a signal ended it.
    Exited(Option<i32>),
    TimedOut,
    OutputLimit,
    /// The contract could not be started at all (a local fault).
    SpawnFailed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunResult {
    pub outcome: RunOutcome,
    /// What the contract wrote to each user's output fd (cut at the limit).
    pub outputs: BTreeMap<PubKey, Vec<u8>>,
    /// How those bytes are read as messages (`messages`).
    pub io: UserIo,
}

impl RunResult {
    /// Names the outcome and every user's output; equal on two nodes exactly
    /// when they saw the same thing.
    pub fn output_hash(&self) -> Hash {
        let mut h = Hasher::new("hotpocket/outputs/v1");
        match &self.outcome {
            RunOutcome::Exited(Some(c)) => h.bytes(b"exit").u64(*c as u32 as u64),
            RunOutcome::Exited(None) => h.bytes(b"signal"),
            RunOutcome::TimedOut => h.bytes(b"timeout"),
            RunOutcome::OutputLimit => h.bytes(b"output-limit"),
            RunOutcome::SpawnFailed(_) => h.bytes(b"spawn-failed"),
        };
        // Only when framed: raw runs hash as they always have.
        if self.io == UserIo::Framed {
            h.bytes(b"framed");
        }
        h.u64(self.outputs.len() as u64);
        for (user, out) in &self.outputs {
            h.bytes(&user.0).bytes(out);
        }
        h.finish()
    }

    /// The messages the run has for `user`, in the order written.
    pub fn messages(&self, user: &PubKey) -> Vec<&[u8]> {
        (self.outputs.get(user)).map_or(vec![], |out| self.io.messages(out))
    }
}

/// What a host reports after running a ledger: the state hash it left and
/// the run's outcome and outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    pub state: Hash,
    pub run: RunResult,
}

/// The description written to stdin, given the fd numbers the contract
/// gets and what its users' fds carry (the text format cannot say, so
/// framed users need the JSON one: the config refuses the pair).
pub fn describe(
    (format, io): (FdlistFormat, UserIo),
    req: &RunRequest,
    npl: (i32, i32),
    users: &BTreeMap<PubKey, (i32, i32)>,
) -> String {
    match format {
        FdlistFormat::Text => {
            let mut s = String::from("HOTPOCKET 0.1\n");
            for (k, (i, o)) in users {
                s.push_str(&format!("{}={i}:{o}\n", k.to_hex()));
            }
            s
        }
        FdlistFormat::Json => {
            let user: serde_json::Map<String, serde_json::Value> = users
                .iter()
                .map(|(k, (i, o))| (k.to_hex(), json!([i, o])))
                .collect();
            // Field types follow the prototype exactly (a number for
            // "hotpocket", seconds as a string for "time") so its contracts
            // parse this unchanged; seq, time_ms and rand are additions.
            let mut v = json!({
                "hotpocket": 0.1,
                "type": "binexec",
                "lcl": req.lcl.to_string(),
                "seq": req.seq,
                "time": (req.time_ms / 1000).to_string(),
                "time_ms": req.time_ms,
                "pubkey": req.node.to_hex(),
                "unl": req.unl.iter().map(|k| k.to_hex()).collect::<Vec<_>>(),
                "npl": [npl.0, npl.1],
                "user": user,
            });
            if let Some(r) = req.rand {
                v["rand"] = json!(r.to_string());
            }
            if let Some(seed) = req.contract_seed {
                v["contract_seed"] = json!(hex::encode(seed));
            }
            // Only when set: ledger runs' descriptions stay as they were.
            if req.readonly {
                v["readonly"] = json!(true);
            }
            if io == UserIo::Framed {
                v["user_io"] = json!(io);
            }
            v.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RunRequest {
        RunRequest {
            seq: 9,
            lcl: Hash([1; 32]),
            time_ms: 1_568_193_881_500,
            node: PubKey([2; 32]),
            unl: vec![PubKey([2; 32]), PubKey([3; 32])],
            rand: None,
            contract_seed: None,
            inputs: BTreeMap::new(),
            readonly: false,
        }
    }

    #[test]
    fn json_matches_the_prototype_shape() {
        let users = BTreeMap::from([(PubKey([4; 32]), (33, 32))]);
        let v: serde_json::Value = serde_json::from_str(&describe(
            (FdlistFormat::Json, UserIo::Raw),
            &req(),
            (29, 28),
            &users,
        ))
        .unwrap();
        assert_eq!(v["hotpocket"], 0.1);
        assert_eq!(v["type"], "binexec");
        assert_eq!(v["time"], "1568193881");
        assert_eq!(v["npl"], json!([29, 28]));
        assert_eq!(v["user"][PubKey([4; 32]).to_hex()], json!([33, 32]));
        assert_eq!(v["lcl"].as_str().unwrap().len(), 64);
        assert_eq!(v["unl"].as_array().unwrap().len(), 2);
        assert!(v.get("rand").is_none());
        assert!(v.get("readonly").is_none());
        assert!(v.get("user_io").is_none());
        let read = RunRequest {
            readonly: true,
            ..req()
        };
        let v: serde_json::Value = serde_json::from_str(&describe(
            (FdlistFormat::Json, UserIo::Framed),
            &read,
            (29, 28),
            &users,
        ))
        .unwrap();
        assert_eq!(v["readonly"], true);
        assert_eq!(v["user_io"], "framed");
    }

    /// The whole description a contract reads, both formats, with users,
    /// the party line, a beacon value and a signing seed.
    #[test]
    fn the_description_is_the_snapshot() {
        let users = BTreeMap::from([(PubKey([4; 32]), (30, 29)), (PubKey([5; 32]), (34, 33))]);
        let full = RunRequest {
            rand: Some(Hash([6; 32])),
            contract_seed: Some([7; 32]),
            ..req()
        };
        let json = describe((FdlistFormat::Json, UserIo::Raw), &full, (27, 26), &users);
        let pretty: serde_json::Value = serde_json::from_str(&json).unwrap();
        let text = describe((FdlistFormat::Text, UserIo::Raw), &full, (0, 0), &users);
        insta::assert_snapshot!(format!(
            "{}\n---\n{text}",
            serde_json::to_string_pretty(&pretty).unwrap()
        ));
    }

    #[test]
    fn text_matches_the_first_prototype_format() {
        let users = BTreeMap::from([(PubKey([4; 32]), (30, 29)), (PubKey([5; 32]), (34, 33))]);
        let text = describe((FdlistFormat::Text, UserIo::Raw), &req(), (0, 0), &users);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "HOTPOCKET 0.1");
        assert_eq!(lines[1], format!("{}=30:29", PubKey([4; 32]).to_hex()));
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn output_hash_covers_outcome_and_outputs() {
        let base = RunResult {
            outcome: RunOutcome::Exited(Some(0)),
            outputs: BTreeMap::from([(PubKey([4; 32]), b"hi".to_vec())]),
            io: UserIo::Raw,
        };
        let mut other = base.clone();
        other.outcome = RunOutcome::TimedOut;
        assert_ne!(base.output_hash(), other.output_hash());
        let mut other = base.clone();
        other.outputs.insert(PubKey([4; 32]), b"ho".to_vec());
        assert_ne!(base.output_hash(), other.output_hash());
        assert_eq!(base.output_hash(), base.clone().output_hash());
        // The same bytes read as frames are another result.
        let mut other = base.clone();
        other.io = UserIo::Framed;
        assert_ne!(base.output_hash(), other.output_hash());
    }
}
