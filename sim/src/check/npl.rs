//! Checks on the node party line, from what contracts wrote and heard:
//! a run hears only UNL members; and from each honest author, only bytes
//! that author's contract wrote in its run of the same ledger, in order,
//! each at most once. One prefix check says all of that: the bytes a
//! receiver's run heard from an author, in arrival order, must be a prefix
//! of what that author wrote (a re-run of a ledger after a restart or a
//! state install may write again; any of its runs will do).
//!
//! Byzantine authors are only held to UNL membership: what they "wrote" is
//! whatever they chose to send.

use std::collections::BTreeMap;

#[derive(Default)]
pub struct NplChecker {
    /// What each node's contract wrote in each of its runs of each seq.
    written: BTreeMap<(usize, u64), Vec<Vec<u8>>>,
    /// What each node's latest run of each seq heard from each author.
    heard: BTreeMap<(usize, u64, usize), Vec<u8>>,
    /// Records and data bytes delivered to contracts.
    pub records: u64,
    pub bytes: u64,
}

/// A record as the node frames it: `Length: N\nPubkey: <hex>\n\n<data>`.
pub fn parse_record(b: &[u8]) -> Option<(String, &[u8])> {
    let rest = b.strip_prefix(b"Length: ")?;
    let nl = rest.iter().position(|&c| c == b'\n')?;
    let len: usize = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
    let rest = rest[nl + 1..].strip_prefix(b"Pubkey: ")?;
    let nl = rest.iter().position(|&c| c == b'\n')?;
    let key = std::str::from_utf8(&rest[..nl]).ok()?.to_string();
    let data = rest[nl + 1..].strip_prefix(b"\n")?;
    (data.len() == len).then_some((key, data))
}

impl NplChecker {
    /// `node` started (again) running ledger `seq`.
    pub fn run_opened(&mut self, node: usize, seq: u64) {
        self.written
            .entry((node, seq))
            .or_default()
            .push(Vec::new());
        self.heard.retain(|(n, s, _), _| !(*n == node && *s == seq));
    }

    pub fn written(&mut self, node: usize, seq: u64, bytes: &[u8]) {
        let runs = self.written.entry((node, seq)).or_default();
        if runs.is_empty() {
            runs.push(Vec::new());
        }
        runs.last_mut()
            .expect("one pushed")
            .extend_from_slice(bytes);
    }

    /// `node`'s run of `seq` was handed `record`. `author` maps the
    /// record's key to (node index, honest), `None` outside the UNL.
    pub fn heard(
        &mut self,
        node: usize,
        seq: u64,
        record: &[u8],
        author: impl Fn(&str) -> Option<(usize, bool)>,
        out: &mut Vec<String>,
    ) {
        let Some((key, data)) = parse_record(record) else {
            out.push(format!(
                "node {node}'s run of {seq} got a malformed NPL record"
            ));
            return;
        };
        self.records += 1;
        self.bytes += data.len() as u64;
        let Some((from, honest)) = author(&key) else {
            out.push(format!(
                "node {node}'s run of {seq} heard NPL data from {key}, not a UNL member"
            ));
            return;
        };
        if !honest {
            return;
        }
        let heard = self.heard.entry((node, seq, from)).or_default();
        heard.extend_from_slice(data);
        let wrote = self.written.get(&(from, seq));
        let ok = wrote.is_some_and(|runs| runs.iter().any(|w| w.starts_with(heard)));
        if !ok {
            out.push(format!(
                "node {node}'s run of {seq} heard from node {from} bytes its run of {seq} did not write in that order (a duplicate, a reordering, another ledger's or forged data)"
            ));
            // Reported once per stream.
            heard.clear();
            self.written.remove(&(from, seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, data: &[u8]) -> Vec<u8> {
        let mut v = format!("Length: {}\nPubkey: {key}\n\n", data.len()).into_bytes();
        v.extend_from_slice(data);
        v
    }

    fn unl(key: &str) -> Option<(usize, bool)> {
        match key {
            "aa" => Some((1, true)),
            "bb" => Some((2, false)),
            _ => None,
        }
    }

    fn check(c: &mut NplChecker, seq: u64, r: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        c.heard(0, seq, r, unl, &mut out);
        out
    }

    #[test]
    fn what_was_written_heard_in_order_passes() {
        let mut c = NplChecker::default();
        c.run_opened(1, 5);
        c.written(1, 5, b"hello world");
        assert!(check(&mut c, 5, &rec("aa", b"hello")).is_empty());
        assert!(check(&mut c, 5, &rec("aa", b" world")).is_empty());
        // A byzantine author is held to UNL membership only.
        assert!(check(&mut c, 5, &rec("bb", b"anything")).is_empty());
    }

    #[test]
    fn each_broken_rule_is_reported() {
        let fresh = || {
            let mut c = NplChecker::default();
            c.run_opened(1, 5);
            c.written(1, 5, b"hello world");
            c
        };
        // Not a UNL member.
        assert!(check(&mut fresh(), 5, &rec("cc", b"x"))[0].contains("not a UNL member"));
        // Another ledger's run.
        assert!(!check(&mut fresh(), 6, &rec("aa", b"hello")).is_empty());
        // Twice.
        let mut c = fresh();
        assert!(check(&mut c, 5, &rec("aa", b"hello")).is_empty());
        assert!(!check(&mut c, 5, &rec("aa", b"hello")).is_empty());
        // Out of order.
        assert!(!check(&mut fresh(), 5, &rec("aa", b" world")).is_empty());
        // Forged content.
        assert!(!check(&mut fresh(), 5, &rec("aa", b"hellO")).is_empty());
        // Malformed framing.
        assert!(check(&mut fresh(), 5, b"Length: 9\nPubkey: aa\n\nshort")[0].contains("malformed"));
    }

    #[test]
    fn a_rerun_of_a_ledger_may_be_heard_instead() {
        let mut c = NplChecker::default();
        c.run_opened(1, 5);
        c.written(1, 5, b"first");
        c.run_opened(1, 5);
        c.written(1, 5, b"second");
        assert!(check(&mut c, 5, &rec("aa", b"sec")).is_empty());
    }
}
