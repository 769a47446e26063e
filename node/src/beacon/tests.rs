//! Whole sessions through `decide`: the three exits, inputs in any order,
//! junk ignored, and the value's bits.

use super::testkit::{keys, lcl, unl};
use super::*;
use crate::crypto::{Hash, KeyRing, Keypair, PubKey};
use crate::ledger::LedgerId;
use proptest::prelude::*;

/// What one node does in a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// Commits and reveals its secret.
    Honest,
    /// Commits, never reveals.
    Silent,
    /// Commits, reveals another secret.
    Lies,
    /// Commits twice (to its secret and to another), reveals its secret.
    Twice,
    /// Takes no part.
    Away,
}

const ACTS: [Act; 5] = [Act::Honest, Act::Silent, Act::Lies, Act::Twice, Act::Away];

/// The agreed commits and reveals if each node of `ks` acts as told.
fn play(ks: &[Keypair], acts: &[Act], l: LedgerId) -> (Vec<SignedCommit>, Vec<SignedReveal>) {
    let (mut commits, mut reveals) = (vec![], vec![]);
    for (k, act) in ks.iter().zip(acts) {
        if *act == Act::Away {
            continue;
        }
        commits.push(SignedCommit::new(k, l));
        match act {
            Act::Honest => reveals.push(SignedReveal::new(k, l)),
            Act::Lies => {
                let mut s = secret_for(k, &l);
                s[0] ^= 1;
                reveals.push(SignedReveal::sign(k, l, s));
            }
            Act::Twice => {
                commits.push(SignedCommit::sign(k, l, Hash([0xee; 32])));
                reveals.push(SignedReveal::new(k, l));
            }
            _ => {}
        }
    }
    (commits, reveals)
}

/// The outcome `acts` must give, worked out without `decide`.
fn expected(
    ks: &[Keypair],
    acts: &[Act],
    l: LedgerId,
) -> (Hash, Vec<PubKey>, Vec<PubKey>, Vec<PubKey>) {
    let with = |want: &[Act]| {
        let mut v: Vec<PubKey> = ks
            .iter()
            .zip(acts)
            .filter(|(_, a)| want.contains(a))
            .map(|(k, _)| k.public())
            .collect();
        v.sort();
        v
    };
    let mut contributions: Vec<(PubKey, [u8; 32])> = ks
        .iter()
        .zip(acts)
        .filter(|(_, a)| **a == Act::Honest)
        .map(|(k, _)| (k.public(), secret_for(k, &l)))
        .collect();
    contributions.sort();
    let v = value(&l, &contributions);
    (
        v,
        with(&[Act::Honest]),
        with(&[Act::Silent]),
        with(&[Act::Lies, Act::Twice]),
    )
}

fn check(ks: &[Keypair], acts: &[Act]) -> Outcome {
    let ring = KeyRing::new(&unl(ks));
    let (commits, reveals) = play(ks, acts, lcl(4));
    let out = decide(&ring, &unl(ks), lcl(4), &commits, &reveals, &[]);
    let (v, revealed, absent, fraud) = expected(ks, acts, lcl(4));
    assert_eq!(out.value, v, "{acts:?}");
    assert_eq!(out.revealed, revealed, "{acts:?}");
    assert_eq!(out.absent, absent, "{acts:?}");
    let accused: Vec<PubKey> = out.fraud.iter().map(|p| p.accused()).collect();
    assert_eq!(accused, fraud, "{acts:?}");
    for p in &out.fraud {
        // Each proof convicts from the ledger alone.
        assert_eq!(p.verify(&KeyRing::new(&[])), Ok(p.accused()));
        assert_eq!(p.lcl(), lcl(4));
    }
    out
}

#[test]
fn success_every_committer_revealed() {
    let ks = keys(4);
    let out = check(&ks, &[Act::Honest; 4]);
    assert_eq!(out.revealed.len(), 4);
    assert!(out.is_random());
}

#[test]
fn offline_committers_are_absent_and_the_rest_decide() {
    let ks = keys(4);
    let all = check(&ks, &[Act::Honest; 4]);
    let out = check(&ks, &[Act::Honest, Act::Silent, Act::Honest, Act::Away]);
    assert_eq!(out.absent, vec![ks[1].public()]);
    assert_ne!(out.value, all.value);
    // Only reveals that arrived count; nothing is re-rolled: the value is
    // the one from the two who revealed.
    let mut two = [ks[0].public(), ks[2].public()];
    two.sort();
    assert_eq!(out.revealed, two);
    // Nobody revealed: still a value, but not a random one.
    let none = check(&ks, &[Act::Silent; 4]);
    assert_eq!(none.value, value(&lcl(4), &[]));
    assert!(!none.is_random());
    assert_eq!(none.absent.len(), 4);
}

#[test]
fn fraudsters_are_recorded_and_left_out() {
    let ks = keys(4);
    let out = check(&ks, &[Act::Honest, Act::Lies, Act::Twice, Act::Honest]);
    assert!(matches!(
        out.fraud[..],
        [FraudProof::BadReveal(..), FraudProof::DoubleCommit(..)]
            | [FraudProof::DoubleCommit(..), FraudProof::BadReveal(..)]
    ));
    // The double committer revealed a secret that opens one of its
    // commitments, and is still left out.
    assert!(!out.revealed.contains(&ks[2].public()));
    // A node convicted by a proof consensus carried is left out too, even
    // when its reveal in this session opens its commitment.
    let ring = KeyRing::new(&unl(&ks));
    let (commits, reveals) = play(&ks, &[Act::Honest; 4], lcl(4));
    let other = SignedCommit::sign(&ks[3], lcl(4), Hash([1; 32]));
    let proof = FraudProof::double_commit(SignedCommit::new(&ks[3], lcl(4)), other);
    let out = decide(
        &ring,
        &unl(&ks),
        lcl(4),
        &commits,
        &reveals,
        std::slice::from_ref(&proof),
    );
    assert_eq!(out.fraud, vec![proof.clone()]);
    assert_eq!(out.revealed.len(), 3);
    assert!(!out.revealed.contains(&ks[3].public()));
    // Proofs that prove nothing, or prove it of another session, are not
    // recorded and exclude no one.
    let mut forged = proof.clone();
    if let FraudProof::DoubleCommit(_, b) = &mut forged {
        b.sig.0[0] ^= 1;
    }
    let elsewhere = FraudProof::double_commit(
        SignedCommit::new(&ks[3], lcl(5)),
        SignedCommit::sign(&ks[3], lcl(5), Hash([1; 32])),
    );
    let honest = FraudProof::BadReveal(
        SignedCommit::new(&ks[0], lcl(4)),
        SignedReveal::new(&ks[0], lcl(4)),
    );
    let out = decide(
        &ring,
        &unl(&ks),
        lcl(4),
        &commits,
        &reveals,
        &[forged, elsewhere, honest],
    );
    assert!(out.fraud.is_empty());
    assert_eq!(out.revealed.len(), 4);
    // The least proof is kept when several convict one node.
    let lie = FraudProof::BadReveal(
        SignedCommit::new(&ks[3], lcl(4)),
        SignedReveal::sign(&ks[3], lcl(4), [0; 32]),
    );
    let out = decide(
        &ring,
        &unl(&ks),
        lcl(4),
        &commits,
        &reveals,
        &[lie.clone(), proof.clone()],
    );
    assert_eq!(out.fraud, vec![proof.min(lie)]);
}

#[test]
fn junk_entries_are_ignored() {
    let ks = keys(5);
    let members = &ks[..4];
    let ring = KeyRing::new(&unl(members));
    let (mut commits, mut reveals) = play(members, &[Act::Honest; 4], lcl(4));
    let clean = decide(&ring, &unl(members), lcl(4), &commits, &reveals, &[]);
    // An outsider's commit and reveal, a commit and a reveal with broken
    // signatures, another session's entries, a reveal from a node with no
    // commit, and copies of everything.
    let outsider = &ks[4];
    commits.push(SignedCommit::new(outsider, lcl(4)));
    reveals.push(SignedReveal::new(outsider, lcl(4)));
    let mut bad = SignedCommit::sign(&ks[0], lcl(4), Hash([3; 32]));
    bad.sig.0[0] ^= 1;
    commits.push(bad);
    let mut bad = SignedReveal::sign(&ks[1], lcl(4), [3; 32]);
    bad.sig.0[0] ^= 1;
    reveals.push(bad);
    commits.push(SignedCommit::sign(&ks[2], lcl(5), Hash([3; 32])));
    reveals.push(SignedReveal::sign(&ks[2], lcl(5), [3; 32]));
    commits.extend(commits.clone());
    reveals.extend(reveals.clone());
    let out = decide(&ring, &unl(members), lcl(4), &commits, &reveals, &[]);
    assert_eq!(out, clean);
    assert_eq!(out.revealed.len(), 4);
    // A reveal with no commit in the agreed set makes no one a committer.
    let out = decide(&ring, &unl(members), lcl(4), &[], &reveals, &[]);
    assert_eq!(out.value, value(&lcl(4), &[]));
    assert!(out.revealed.is_empty() && out.absent.is_empty() && out.fraud.is_empty());
}

#[test]
fn value_changes_with_any_contributing_secret_and_the_lcl() {
    let contributions: Vec<(PubKey, [u8; 32])> =
        (0..4u8).map(|i| (PubKey([i; 32]), [i + 10; 32])).collect();
    let v = value(&lcl(4), &contributions);
    for i in 0..contributions.len() {
        for bit in [0, 7, 255] {
            let mut c = contributions.clone();
            c[i].1[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(value(&lcl(4), &c), v, "secret {i} bit {bit}");
        }
        // Leaving one out changes it too: that is the withholder's choice.
        let mut c = contributions.clone();
        c.remove(i);
        assert_ne!(value(&lcl(4), &c), v);
    }
    assert_ne!(value(&lcl(5), &contributions), v);
    assert_ne!(value(&lcl(5), &[]), value(&lcl(4), &[]));
    // Through decide: one node on another key changes the value.
    let ks = keys(3);
    let a = check(&ks, &[Act::Honest; 3]);
    let b = check(
        &[ks[0].clone(), ks[1].clone(), Keypair::from_seed([99; 32])],
        &[Act::Honest; 3],
    );
    assert_ne!(a.value, b.value);
}

#[test]
fn value_encoding_is_stable() {
    // Golden values: the beacon value is chained in ledgers and handed to
    // contracts; changing how it is made must be a conscious act.
    assert_eq!(
        value(&lcl(4), &[]).to_string(),
        "71be73a37416c82eb25d18c4da1a35449fdf4c2d48719a4b10a2c0205c96fe79"
    );
    assert_eq!(
        value(&lcl(4), &[(PubKey([1; 32]), [2; 32])]).to_string(),
        "2eece1768616ffba919617eb186c6d383f90d9e94bd8a771334c0e795e111742"
    );
}

#[test]
fn outcomes_travel_and_feed_absences() {
    let ks = keys(4);
    let out = check(&ks, &[Act::Honest, Act::Silent, Act::Lies, Act::Honest]);
    let bytes = postcard::to_allocvec(&out).unwrap();
    assert_eq!(postcard::from_bytes::<Outcome>(&bytes).unwrap(), out);
    let mut w = Absences::new(8);
    w.record(6, &out).unwrap();
    w.record(7, &out).unwrap();
    assert_eq!(w.absent(&ks[1].public()), 2);
    assert_eq!(w.fraud(&ks[2].public()), 2);
    assert_eq!(w.absent(&ks[0].public()) + w.fraud(&ks[0].public()), 0);
}

#[test]
fn value_bits_look_balanced() {
    // Monobit over many values made from low-entropy secrets (counters):
    // a loose sanity bound; the statistical tests proper run in the
    // simulator.
    let ks = keys(3);
    let mut per_bit = [0u32; 256];
    let rounds = 1024u32;
    for i in 0..rounds {
        let mut contributions: Vec<(PubKey, [u8; 32])> = ks
            .iter()
            .zip(0u32..)
            .map(|(k, j)| {
                let mut s = [0u8; 32];
                s[..4].copy_from_slice(&(i * 3 + j).to_le_bytes());
                (k.public(), s)
            })
            .collect();
        contributions.sort();
        let v = value(&lcl(u64::from(i % 7)), &contributions);
        for (bit, count) in per_bit.iter_mut().enumerate() {
            *count += u32::from(v.0[bit / 8] >> (bit % 8) & 1);
        }
    }
    // 262144 bits: standard deviation 256; allow 5.
    let ones: u32 = per_bit.iter().sum();
    let half = 256 * rounds / 2;
    assert!(
        ones.abs_diff(half) <= 5 * 256,
        "{ones} ones of {}",
        2 * half
    );
    // Each bit position over 1024 values: deviation 16; allow 6.
    for (bit, n) in per_bit.iter().enumerate() {
        assert!(n.abs_diff(rounds / 2) <= 96, "bit {bit}: {n} of {rounds}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    // Whatever each node does, and in whatever order the sets arrive, the
    // outcome is the one worked out by hand, identical byte for byte.
    #[test]
    fn outcome_does_not_depend_on_input_order(
        acts in proptest::collection::vec(proptest::sample::select(&ACTS[..]), 1..6),
        seed in any::<u64>(),
    ) {
        let ks = keys(acts.len() as u8);
        let (commits, reveals) = play(&ks, &acts, lcl(4));
        let ring = KeyRing::new(&unl(&ks));
        let base = check(&ks, &acts);
        let mut c = commits.clone();
        let mut r = reveals.clone();
        shuffle(&mut c, seed);
        shuffle(&mut r, seed.rotate_left(17));
        let out = decide(&ring, &unl(&ks), lcl(4), &c, &r, &base.fraud);
        prop_assert_eq!(&out, &base);
        c.reverse();
        let out = decide(&ring, &unl(&ks), lcl(4), &c, &r, &[]);
        prop_assert_eq!(postcard::to_allocvec(&out).unwrap(), postcard::to_allocvec(&base).unwrap());
    }
}

/// A Fisher-Yates shuffle driven by `seed` through sha256: the crate has no
/// random number generator, and a test needs none beyond this.
fn shuffle<T>(v: &mut [T], seed: u64) {
    for i in (1..v.len()).rev() {
        let h = Hash::of(
            "test/shuffle",
            &[&seed.to_le_bytes(), &(i as u64).to_le_bytes()],
        );
        let j = (u64::from_le_bytes(h.0[..8].try_into().unwrap()) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}
