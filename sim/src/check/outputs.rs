//! Checks on inputs and outputs: an input lands in at most one ledger; an
//! output reaches only its own user, at most once, and only after the next
//! ledger certified it; and (as an expectation) every input's answer does
//! reach its user.
//!
//! With the kv example, every input `set KEY VALUE` is answered `ok KEY`,
//! and KEY names the input: that is how an output is tied back to the
//! input that caused it. With the multisig example, every output must be
//! for its ledger and carry only valid signatures, each by another node.
//!
//! Where inputs come from: every input in a ledger an honest node closes
//! must have been taken by some node from a user's session, in the name of
//! that session's user, and not be one the session should have refused.

use crate::scenario::ContractKind;
use hotpocket_node::contract::RunResult;
use hotpocket_node::crypto::{Hash, PubKey};
use hotpocket_node::ledger::Ledger;
use std::collections::BTreeMap;

pub struct InputInfo {
    pub user: usize,
    pub node: usize,
    pub key: String,
    pub at_ms: u64,
    pub source: Source,
}

/// Who sent an input, as far as the checks care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Honest,
    /// A byzantine user's input the session was right to take: its own
    /// key, within the limits. It may land, but need not be answered (its
    /// sender may have been cut off since).
    Byzantine,
    /// A byzantine user's message the session should have refused, and why.
    Refusable(String),
}

/// A ledger as far as these checks care.
struct Closed {
    inputs: Vec<Hash>,
    /// Its verdicts: run seq and certified output hash (`None`: the run
    /// went uncertified).
    verdicts: Vec<(u64, Option<Hash>)>,
}

#[derive(Default)]
pub struct OutputChecker {
    /// Each node's chain as its events describe it.
    chains: BTreeMap<usize, BTreeMap<u64, Closed>>,
    pub inputs: BTreeMap<Hash, InputInfo>,
    /// Where each input landed at each node.
    landed: BTreeMap<(usize, Hash), u64>,
    /// What each user received for each seq.
    pub delivered: BTreeMap<(usize, u64), Vec<u8>>,
    pub kind: ContractKind,
    /// The fewest valid signatures a delivered multisig output carried.
    pub fewest_signatures: Option<usize>,
    /// Runs handed to (would-be) hpcore users with the UNL signatures
    /// their client asks for, and with fewer (`env::users::signed`).
    pub signed_runs: [u64; 2],
    /// Byzantine nodes may get inputs nobody sent agreed on: then an input
    /// of unknown origin is no violation.
    pub unsourced_ok: bool,
    /// Signed inputs their node answered `rejected`: they will not run,
    /// and their user knows.
    rejected: std::collections::BTreeSet<Hash>,
    /// Statuses sent: (accepted, rejected).
    pub statuses: (u64, u64),
    /// The nonce of each signed input taken.
    pub nonces: BTreeMap<Hash, u64>,
}

/// How many ledgers back a signed input's nonce is compared with its
/// user's others: as far as a replay of an honest user's input can reach
/// (its last ledger is at most 10 past the lcl it was signed at).
const NONCE_WINDOW: u64 = hotpocket_node::users::hp::MAX_LEDGER_OFFSET;

/// Checks a multisig output for ledger `seq`: returns how many valid
/// signatures, by distinct nodes, it carries.
pub fn multisig_signatures(seq: u64, bytes: &[u8]) -> Result<usize, String> {
    use ed25519_dalek::{Signature, VerifyingKey};
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("seq").and_then(|s| s.as_u64()) != Some(seq) {
        return Err(format!("not for ledger {seq}: {v}"));
    }
    let hex_of = |v: &serde_json::Value, k: &str| -> Option<Vec<u8>> {
        hex::decode(v.get(k)?.as_str()?).ok()
    };
    let digest = hex_of(&v, "digest").ok_or("no digest")?;
    let sigs = v
        .get("signatures")
        .and_then(|s| s.as_array())
        .ok_or("no signatures")?;
    let mut nodes = std::collections::BTreeSet::new();
    for s in sigs {
        let key: [u8; 32] = hex_of(s, "key")
            .and_then(|k| k.try_into().ok())
            .ok_or("bad key")?;
        let sig: [u8; 64] = hex_of(s, "sig")
            .and_then(|k| k.try_into().ok())
            .ok_or("bad sig")?;
        VerifyingKey::from_bytes(&key)
            .map_err(|_| "bad key")?
            .verify_strict(&digest, &Signature::from_bytes(&sig))
            .map_err(|_| format!("a signature that does not verify: {s}"))?;
        if !nodes.insert(hex_of(s, "node").ok_or("no node")?) {
            return Err(format!("two signatures by one node: {s}"));
        }
    }
    Ok(sigs.len())
}

impl OutputChecker {
    pub fn on_closed(&mut self, node: usize, ledger: &Ledger, out: &mut Vec<String>) {
        for h in &ledger.inputs {
            self.check_nonce(node, ledger.seq, h, out);
        }
        let chain = self.chains.entry(node).or_default();
        for h in &ledger.inputs {
            match self.inputs.get(h).map(|i| (i.user, &i.source)) {
                None if !self.unsourced_ok => out.push(format!(
                    "node {node} closed ledger {} with input {h:?}, which no node took from any user",
                    ledger.seq
                )),
                Some((u, Source::Refusable(why))) => out.push(format!(
                    "node {node} closed ledger {} with byzantine user {u}'s input {h:?}, which its session should have refused: {why}",
                    ledger.seq
                )),
                _ => {}
            }
            if let Some(&seq) = self.landed.get(&(node, *h)) {
                let still_there = chain
                    .get(&seq)
                    .is_some_and(|c| c.inputs.binary_search(h).is_ok());
                if seq != ledger.seq && still_there {
                    out.push(format!(
                        "node {node}: input {h:?} is in ledger {seq} and again in {}",
                        ledger.seq
                    ));
                }
            }
            self.landed.insert((node, *h), ledger.seq);
        }
        chain.insert(
            ledger.seq,
            Closed {
                inputs: ledger.inputs.clone(),
                verdicts: ledger
                    .verdicts
                    .iter()
                    .map(|v| (v.seq, v.result.map(|c| c.output)))
                    .collect(),
            },
        );
    }

    /// A user's signed inputs run in the order it signed them: none lands
    /// after one of the same user's with a nonce as high, within
    /// `NONCE_WINDOW` ledgers of this node's chain. Stricter than the
    /// node's rule, which lets a nonce go once its input's last ledger
    /// passed: simulated users' clocks never step back, so they never
    /// need that.
    fn check_nonce(&self, node: usize, seq: u64, h: &Hash, out: &mut Vec<String>) {
        let (Some(&nonce), Some(user)) = (self.nonces.get(h), self.inputs.get(h).map(|i| i.user))
        else {
            return;
        };
        let Some(chain) = self.chains.get(&node) else {
            return;
        };
        for (s, c) in chain.range(seq.saturating_sub(NONCE_WINDOW)..seq) {
            for other in &c.inputs {
                let same_user = self.inputs.get(other).is_some_and(|i| i.user == user);
                match self.nonces.get(other) {
                    Some(&n) if same_user && n >= nonce => out.push(format!(
                        "node {node} closed ledger {seq} with user {user}'s input of nonce {nonce}, after its input of nonce {n} in ledger {s}"
                    )),
                    _ => {}
                }
            }
        }
    }

    /// A node took input `h` from user `info.user`'s session, whose key is
    /// `owner`; the input's body names `claimed` as its sender.
    pub fn taken(
        &mut self,
        h: Hash,
        info: InputInfo,
        claimed: Option<PubKey>,
        owner: PubKey,
        out: &mut Vec<String>,
    ) {
        if claimed != Some(owner) {
            out.push(format!(
                "user {}'s session gave an input in the name of {claimed:?}, not its own key {owner:?}",
                info.user
            ));
        }
        self.inputs.insert(h, info);
    }

    /// Node `node` told user `u` `status` for its signed input `h`: an
    /// accepted one must name the ledger that holds the input there; a
    /// rejected one answers the input.
    pub fn on_status(
        &mut self,
        node: usize,
        u: usize,
        h: Hash,
        status: &str,
        out: &mut Vec<String>,
    ) {
        let v: serde_json::Value = serde_json::from_str(status).unwrap_or_default();
        let landed = self.landed.get(&(node, h)).copied();
        match (v["status"].as_str(), v["ledger_seq_no"].as_u64()) {
            (Some("accepted"), Some(seq)) if landed == Some(seq) => self.statuses.0 += 1,
            (Some("rejected"), None) => {
                self.statuses.1 += 1;
                self.rejected.insert(h);
            }
            _ => out.push(format!(
                "user {u} was told {status} for input {h:?}, which landed in {landed:?} at node {node}"
            )),
        }
    }

    /// The node's chain now ends at `lcl` (a rollback or a restart).
    pub fn truncate(&mut self, node: usize, lcl: u64) {
        if let Some(c) = self.chains.get_mut(&node) {
            c.retain(|s, _| *s <= lcl);
        }
    }

    /// `node` handed `seq`'s outputs to the users connected to it.
    pub fn on_delivered(
        &mut self,
        node: usize,
        seq: u64,
        run: &RunResult,
        to: &[(usize, Vec<u8>)],
        out: &mut Vec<String>,
    ) {
        let chain = self.chains.get(&node);
        let certified = chain
            .and_then(|c| {
                c.values()
                    .rev()
                    .find_map(|l| l.verdicts.iter().find(|(s, _)| *s == seq))
            })
            .is_some_and(|(_, output)| *output == Some(run.output_hash()));
        if !certified {
            out.push(format!(
                "node {node} delivered outputs of ledger {seq} before a ledger certified them"
            ));
        }
        let inputs = chain
            .and_then(|c| c.get(&seq))
            .map_or(&[][..], |c| &c.inputs[..]);
        for (user, bytes) in to {
            if self.delivered.insert((*user, seq), bytes.clone()).is_some() {
                out.push(format!("user {user} got the outputs of ledger {seq} twice"));
            }
            if self.kind == ContractKind::Multisig {
                match multisig_signatures(seq, bytes) {
                    Ok(n) => {
                        self.fewest_signatures =
                            Some(self.fewest_signatures.map_or(n, |f| f.min(n)))
                    }
                    Err(e) => out.push(format!(
                        "user {user} got a bad multisig output from node {node}: {e}"
                    )),
                }
                continue;
            }
            let mut expected: Vec<&str> = inputs
                .iter()
                .filter_map(|h| self.inputs.get(h))
                .filter(|i| i.user == *user)
                .map(|i| i.key.as_str())
                .collect();
            expected.sort();
            let text = String::from_utf8_lossy(bytes);
            let mut got: Vec<&str> = text
                .lines()
                .map(|l| l.strip_prefix("ok ").unwrap_or(l))
                .collect();
            got.sort();
            if got != expected {
                out.push(format!(
                    "user {user} got {got:?} for ledger {seq} at node {node}, its inputs there were {expected:?}"
                ));
            }
        }
    }

    /// (honest users' inputs taken, of them answered at their user).
    pub fn summary(&self) -> (u64, u64) {
        let honest = || {
            self.inputs
                .iter()
                .filter(|(_, i)| i.source == Source::Honest)
        };
        let answered = honest().filter(|(h, i)| self.answered(h, i)).count();
        (honest().count() as u64, answered as u64)
    }

    fn answered(&self, h: &Hash, i: &InputInfo) -> bool {
        self.rejected.contains(h)
            || self.landed.get(&(i.node, *h)).is_some_and(|seq| {
                self.delivered.get(&(i.user, *seq)).is_some_and(|b| {
                    self.kind == ContractKind::Multisig
                        || String::from_utf8_lossy(b).contains(&format!("ok {}\n", i.key))
                })
            })
    }

    /// Every input taken by one of `nodes` in `sent` (ms) was answered,
    /// of those `owed` says could land.
    pub fn check_all_answered(
        &self,
        nodes: &[usize],
        sent: std::ops::RangeInclusive<u64>,
        owed: impl Fn(u64) -> bool,
        out: &mut Vec<String>,
    ) {
        let mut missing = 0;
        for (h, i) in &self.inputs {
            let judged = sent.contains(&i.at_ms) && owed(i.at_ms);
            if !judged || !nodes.contains(&i.node) || i.source != Source::Honest {
                continue;
            }
            if !self.answered(h, i) {
                missing += 1;
                if missing <= 5 {
                    let seq = self.landed.get(&(i.node, *h));
                    out.push(format!(
                        "user {} never got the answer to {} (sent to node {} at {}ms, landed in {seq:?})",
                        i.user, i.key, i.node, i.at_ms
                    ));
                }
            }
        }
        if missing > 5 {
            out.push(format!("... {missing} unanswered inputs in all"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpocket_node::contract::{ExecResult, RunOutcome, UserIo};
    use hotpocket_node::crypto::PubKey;
    use hotpocket_node::ledger::Verdict;

    fn run(outputs: &[(u8, &str)]) -> RunResult {
        RunResult {
            outcome: RunOutcome::Exited(Some(0)),
            outputs: (outputs.iter())
                .map(|(k, o)| (PubKey([*k; 32]), o.as_bytes().to_vec()))
                .collect(),
            io: UserIo::Raw,
        }
    }

    fn ledger(seq: u64, inputs: &[Hash], output: Hash) -> Ledger {
        let mut inputs = inputs.to_vec();
        inputs.sort();
        Ledger {
            seq,
            prev: Hash::ZERO,
            time: 0,
            inputs,
            verdicts: vec![Verdict {
                seq: seq - 1,
                result: Some(ExecResult {
                    state: Hash::ZERO,
                    output,
                }),
            }],
            beacon: Default::default(),
        }
    }

    /// User 0's input "a" lands in ledger 1 at node 0; ledger 2 certifies
    /// `certified` as ledger 1's outputs.
    fn setup(certified: &RunResult) -> (OutputChecker, Hash) {
        let mut c = OutputChecker::default();
        let h = Hash([7; 32]);
        c.inputs.insert(
            h,
            InputInfo {
                user: 0,
                node: 0,
                key: "a".into(),
                at_ms: 10,
                source: Source::Honest,
            },
        );
        let mut v = Vec::new();
        c.on_closed(0, &ledger(1, &[h], Hash::ZERO), &mut v);
        c.on_closed(0, &ledger(2, &[], certified.output_hash()), &mut v);
        assert!(v.is_empty());
        (c, h)
    }

    #[test]
    fn a_certified_answer_to_its_own_user_once_passes() {
        let r = run(&[(0, "ok a\n")]);
        let (mut c, _) = setup(&r);
        let mut v = Vec::new();
        c.on_delivered(0, 1, &r, &[(0, b"ok a\n".to_vec())], &mut v);
        assert!(v.is_empty(), "{v:?}");
        c.check_all_answered(&[0], 0..=100, |_| true, &mut v);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(c.summary(), (1, 1));
    }

    #[test]
    fn each_broken_promise_is_reported() {
        let r = run(&[(0, "ok a\n")]);
        // Outputs nobody certified.
        let (mut c, _) = setup(&run(&[(0, "ok b\n")]));
        let mut v = Vec::new();
        c.on_delivered(0, 1, &r, &[(0, b"ok a\n".to_vec())], &mut v);
        assert!(v[0].contains("before a ledger certified"), "{v:?}");
        // Twice.
        let (mut c, _) = setup(&r);
        let mut v = Vec::new();
        c.on_delivered(0, 1, &r, &[(0, b"ok a\n".to_vec())], &mut v);
        c.on_delivered(0, 1, &r, &[(0, b"ok a\n".to_vec())], &mut v);
        assert!(v.iter().any(|m| m.contains("twice")), "{v:?}");
        // To a user whose input it was not.
        let (mut c, _) = setup(&r);
        let mut v = Vec::new();
        c.on_delivered(0, 1, &r, &[(1, b"ok a\n".to_vec())], &mut v);
        assert!(v.iter().any(|m| m.contains("user 1 got")), "{v:?}");
        // Never.
        let (c, _) = setup(&r);
        let mut v = Vec::new();
        c.check_all_answered(&[0], 0..=100, |_| true, &mut v);
        assert!(v[0].contains("never got the answer to a"), "{v:?}");
    }

    #[test]
    fn an_input_no_session_took_or_one_it_should_have_refused_is_reported() {
        let (mut c, _) = setup(&run(&[]));
        let stray = Hash([8; 32]);
        let mut v = Vec::new();
        c.on_closed(0, &ledger(3, &[stray], Hash::ZERO), &mut v);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("which no node took from any user"), "{v:?}");
        // Byzantine nodes may get such inputs agreed.
        let (mut c, _) = setup(&run(&[]));
        c.unsourced_ok = true;
        let mut v = Vec::new();
        c.on_closed(0, &ledger(3, &[stray], Hash::ZERO), &mut v);
        assert!(v.is_empty(), "{v:?}");
        // A byzantine user's input its session should have refused.
        let (mut c, _) = setup(&run(&[]));
        let bad = Hash([9; 32]);
        c.inputs.insert(
            bad,
            InputInfo {
                user: 5,
                node: 0,
                key: "b5-1".into(),
                at_ms: 20,
                source: Source::Refusable("oversize".into()),
            },
        );
        let mut v = Vec::new();
        c.on_closed(0, &ledger(3, &[bad], Hash::ZERO), &mut v);
        assert!(
            v[0].contains("user 5's input") && v[0].contains("should have refused"),
            "{v:?}"
        );
    }

    #[test]
    fn an_input_in_another_users_name_is_reported() {
        let mut c = OutputChecker::default();
        let info = |user| InputInfo {
            user,
            node: 0,
            key: "k".into(),
            at_ms: 0,
            source: Source::Byzantine,
        };
        let (me, victim) = (PubKey([1; 32]), PubKey([2; 32]));
        let mut v = Vec::new();
        c.taken(Hash([1; 32]), info(5), Some(me), me, &mut v);
        assert!(v.is_empty(), "{v:?}");
        c.taken(Hash([2; 32]), info(5), Some(victim), me, &mut v);
        c.taken(Hash([3; 32]), info(5), None, me, &mut v);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(
            v[0].contains("user 5's session gave an input in the name of"),
            "{v:?}"
        );
    }

    #[test]
    fn a_byzantine_user_gets_only_its_own_answers_and_need_not_get_them() {
        // User 0 (honest, "a") and user 5 (byzantine, "b5-1") both have an
        // input in ledger 1, which ledger 2 certifies.
        let r = run(&[(0, "ok a\n"), (5, "ok b5-1\n")]);
        let both = || {
            let mut c = OutputChecker::default();
            for (h, user, key, source) in [
                (Hash([7; 32]), 0, "a", Source::Honest),
                (Hash([6; 32]), 5, "b5-1", Source::Byzantine),
            ] {
                let at_ms = 10;
                let key = key.into();
                c.inputs.insert(
                    h,
                    InputInfo {
                        user,
                        node: 0,
                        key,
                        at_ms,
                        source,
                    },
                );
            }
            let mut v = Vec::new();
            c.on_closed(
                0,
                &ledger(1, &[Hash([7; 32]), Hash([6; 32])], Hash::ZERO),
                &mut v,
            );
            c.on_closed(0, &ledger(2, &[], r.output_hash()), &mut v);
            assert!(v.is_empty(), "{v:?}");
            c
        };
        // The honest user's answer reaching the byzantine one.
        let mut v = Vec::new();
        both().on_delivered(0, 1, &r, &[(5, b"ok b5-1\nok a\n".to_vec())], &mut v);
        assert!(v.iter().any(|m| m.contains("user 5 got")), "{v:?}");
        // Its own answer is fine; its unanswered input does not count
        // against all_answered, the honest one does.
        let mut c = both();
        let mut v = Vec::new();
        c.on_delivered(0, 1, &r, &[(5, b"ok b5-1\n".to_vec())], &mut v);
        assert!(v.is_empty(), "{v:?}");
        c.check_all_answered(&[0], 0..=100, |_| true, &mut v);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("user 0 never got"), "{v:?}");
        assert_eq!(c.summary(), (1, 0));
    }

    #[test]
    fn multisig_outputs_must_carry_valid_signatures_by_distinct_nodes() {
        use ed25519_dalek::{Signer, SigningKey};
        let digest = [7u8; 32];
        let entry = |node: u8, key: u8, signed: &[u8; 32]| {
            let k = SigningKey::from_bytes(&[key; 32]);
            format!(
                r#"{{"node":"{}","key":"{}","sig":"{}"}}"#,
                hex::encode([node; 32]),
                hex::encode(k.verifying_key().as_bytes()),
                hex::encode(k.sign(signed).to_bytes())
            )
        };
        let out = |seq: u64, entries: &[String]| {
            format!(
                r#"{{"seq":{seq},"digest":"{}","signatures":[{}]}}"#,
                hex::encode(digest),
                entries.join(",")
            )
        };
        let good = [entry(1, 1, &digest), entry(2, 2, &digest)];
        assert_eq!(multisig_signatures(3, out(3, &good).as_bytes()), Ok(2));
        assert!(multisig_signatures(4, out(3, &good).as_bytes()).is_err());
        let forged = [entry(1, 1, &digest), entry(2, 2, &[8; 32])];
        assert!(multisig_signatures(3, out(3, &forged).as_bytes()).is_err());
        let twice = [entry(1, 1, &digest), entry(1, 2, &digest)];
        assert!(multisig_signatures(3, out(3, &twice).as_bytes()).is_err());
        assert!(multisig_signatures(3, b"ok a").is_err());
    }

    #[test]
    fn an_input_in_two_ledgers_is_reported_unless_the_first_was_rolled_back() {
        let (mut c, h) = setup(&run(&[]));
        let mut v = Vec::new();
        c.on_closed(0, &ledger(3, &[h], Hash::ZERO), &mut v);
        assert!(v[0].contains("again in 3"), "{v:?}");
        let (mut c, h) = setup(&run(&[]));
        c.truncate(0, 0);
        let mut v = Vec::new();
        c.on_closed(0, &ledger(1, &[h], Hash::ZERO), &mut v);
        assert!(v.is_empty(), "{v:?}");
    }
}
