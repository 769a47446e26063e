use super::attack::{plan, Ctx, Expect, Victim, R_CHALLENGE, R_ROUND, R_SIG};
use super::byzantine::{judge, Misjudged, Outcome};
use crate::scenario::AttackKind;
use hotpocket_node::contract::{Stamper, UserInput};
use hotpocket_node::crypto::Keypair;
use hotpocket_node::env::Entropy;
use hotpocket_node::users::{answer_challenge, ConnAction, Intake, SessionLimits};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use serde_json::Value;

const NOW_MS: u64 = 1_700_000_000_000;

struct Counting(u8);

impl Entropy for Counting {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.0;
            self.0 = self.0.wrapping_add(1);
        }
    }
}

fn challenge(msg: &str) -> String {
    let v: Value = serde_json::from_str(msg).unwrap();
    v["challenge"].as_str().unwrap().to_string()
}

/// Runs one attack of `kind` (plan drawn from `seed`) against sessions of
/// an intake with `limits`; returns each message's verdict.
fn attack(
    kind: AttackKind,
    seed: u64,
    limits: SessionLimits,
) -> Vec<(&'static str, Result<Outcome, Misjudged>)> {
    let mut intake = Intake::new(limits.clone(), Counting(seed as u8));
    let me = Keypair::from_seed([1; 32]);
    let victim_key = Keypair::from_seed([2; 32]);
    // The victim's helo to some other session, overheard.
    let (_, vmsg) = intake.open();
    let victim = Victim {
        key: victim_key.public(),
        kv_key: Some("w0-u0-3".into()),
        helo: Some(answer_challenge(&victim_key, &vmsg, NOW_MS / 1000).unwrap()),
    };
    let (_, old_msg) = intake.open();
    let old_c = challenge(&old_msg);
    let old = (
        old_c.clone(),
        answer_challenge(&me, &old_msg, NOW_MS / 1000).unwrap(),
    );
    let (mut session, msg) = intake.open();
    let (_, other) = intake.open();
    let (c, other) = (challenge(&msg), challenge(&other));
    let ctx = Ctx {
        key: &me,
        user: 7,
        challenge: &c,
        other_challenge: Some(&other),
        old: Some(&old),
        victim: Some(&victim),
        now_s: NOW_MS / 1000,
        limits: intake.limits(),
    };
    let steps = plan(kind, &mut ChaCha8Rng::seed_from_u64(seed), &ctx);
    let mut out = Vec::new();
    for s in steps {
        let replies = session.on_message(NOW_MS, &s.bytes, s.text);
        let actions = intake.act(NOW_MS, replies);
        let v = judge(
            &s.expect,
            me.public(),
            &s.bytes,
            &actions,
            session.user(),
            session.is_closed(),
        );
        out.push((s.what, v));
    }
    out
}

fn limits() -> SessionLimits {
    SessionLimits::default()
}

#[test]
fn the_real_session_answers_every_attack_as_planned() {
    let mut refused = std::collections::BTreeMap::new();
    let mut variants = std::collections::BTreeSet::new();
    for kind in AttackKind::ALL {
        for seed in 0..60 {
            for (what, v) in attack(kind, seed, limits()) {
                variants.insert(what);
                match v {
                    Ok(Outcome::Refused) => *refused.entry(kind).or_insert(0) += 1,
                    Ok(_) => {}
                    Err(m) => panic!("{kind:?} seed {seed} ({what}): {m:?}"),
                }
            }
        }
    }
    // Every kind was refused somewhere, and the plans do vary.
    assert_eq!(refused.len(), AttackKind::ALL.len(), "{refused:?}");
    assert!(variants.len() >= 40, "{variants:?}");
}

#[test]
fn a_node_with_laxer_limits_than_planned_is_caught_accepting() {
    // The plans follow the default limits; a node that lets more through
    // takes what it should drop or close on.
    let lax = SessionLimits {
        max_inputs_per_round: 10_000,
        max_messages_per_minute: 10_000,
        max_message_bytes: 4 << 20,
        ..limits()
    };
    for kind in [
        AttackKind::InputFlood,
        AttackKind::MessageFlood,
        AttackKind::Oversize,
    ] {
        let caught = (0..10).any(|seed| {
            let verdicts = attack_planned_with(kind, seed, &limits(), lax.clone());
            verdicts
                .iter()
                .any(|v| matches!(v, Err(Misjudged { accepted: true, .. })))
        });
        assert!(caught, "{kind:?}");
    }
}

/// As `attack`, but planned for `planned` limits and run against a node
/// with `actual` ones.
fn attack_planned_with(
    kind: AttackKind,
    seed: u64,
    planned: &SessionLimits,
    actual: SessionLimits,
) -> Vec<Result<Outcome, Misjudged>> {
    let mut intake = Intake::new(actual, Counting(0));
    let me = Keypair::from_seed([1; 32]);
    let (mut session, msg) = intake.open();
    let c = challenge(&msg);
    let ctx = Ctx {
        key: &me,
        user: 7,
        challenge: &c,
        other_challenge: None,
        old: None,
        victim: None,
        now_s: NOW_MS / 1000,
        limits: planned,
    };
    let mut out = Vec::new();
    for s in plan(kind, &mut ChaCha8Rng::seed_from_u64(seed), &ctx) {
        let replies = session.on_message(NOW_MS, &s.bytes, s.text);
        let actions = intake.act(NOW_MS, replies);
        out.push(judge(
            &s.expect,
            me.public(),
            &s.bytes,
            &actions,
            session.user(),
            session.is_closed(),
        ));
    }
    out
}

#[test]
fn every_wrong_answer_is_judged_and_acceptance_is_told_apart() {
    let me = Keypair::from_seed([1; 32]).public();
    let victim = Keypair::from_seed([2; 32]).public();
    let close = |why: &str| ConnAction::Close(format!(r#"{{"type":"error","error":"{why}"}}"#));
    let mut stamper = Stamper::default();
    let stamped = |s: &mut Stamper, user, body: &[u8]| {
        ConnAction::Submit(s.stamp(NOW_MS, user, body.to_vec()))
    };
    let accepted = |r: Result<Outcome, Misjudged>| match r {
        Err(m) => m.accepted,
        Ok(o) => panic!("judged fine: {o:?}"),
    };
    // A helo that should be refused, let through.
    assert!(accepted(judge(
        &Expect::Closed(R_SIG),
        me,
        b"h",
        &[],
        Some(me),
        false
    )));
    // Refused, but for another reason: a misjudgement, not an acceptance.
    let other = [close(R_CHALLENGE)];
    assert!(!accepted(judge(
        &Expect::Closed(R_SIG),
        me,
        b"h",
        &other,
        None,
        true
    )));
    // Right reason, but the session stays open.
    assert!(!accepted(judge(
        &Expect::Closed(R_SIG),
        me,
        b"h",
        &[close(R_SIG)],
        None,
        false
    )));
    // A session opened in another user's name.
    assert!(accepted(judge(
        &Expect::Open,
        me,
        b"h",
        &[],
        Some(victim),
        false
    )));
    assert!(accepted(judge(
        &Expect::Closed(R_SIG),
        me,
        b"h",
        &[],
        Some(victim),
        false
    )));
    // An input taken in another user's name.
    let forged = [stamped(&mut stamper, victim, b"x")];
    let r = judge(&Expect::Input, me, b"x", &forged, Some(me), false);
    assert!(
        matches!(&r, Err(m) if m.accepted && m.what.contains("in the name of")),
        "{r:?}"
    );
    // An input taken with another body.
    let changed = [stamped(&mut stamper, me, b"y")];
    assert!(accepted(judge(
        &Expect::Input,
        me,
        b"x",
        &changed,
        Some(me),
        false
    )));
    // An input past the round's limit, taken; a repeat, taken.
    let took = [stamped(&mut stamper, me, b"x")];
    assert!(accepted(judge(
        &Expect::Dropped(R_ROUND),
        me,
        b"x",
        &took,
        Some(me),
        false
    )));
    assert!(accepted(judge(
        &Expect::Nothing,
        me,
        b"x",
        &took,
        Some(me),
        false
    )));
    // A valid input or helo refused.
    assert!(!accepted(judge(
        &Expect::Input,
        me,
        b"x",
        &[close("no")],
        None,
        true
    )));
    assert!(!accepted(judge(
        &Expect::Open,
        me,
        b"h",
        &[close("no")],
        None,
        true
    )));
    // And the right answers pass.
    assert_eq!(
        judge(&Expect::Input, me, b"x", &took, Some(me), false),
        Ok(Outcome::Taken)
    );
    assert_eq!(
        judge(
            &Expect::Closed(R_SIG),
            me,
            b"h",
            &[close(R_SIG)],
            None,
            true
        ),
        Ok(Outcome::Refused)
    );
    let drop = [ConnAction::Send(format!(
        r#"{{"error":"at most 64 {R_ROUND}"}}"#
    ))];
    assert_eq!(
        judge(&Expect::Dropped(R_ROUND), me, b"x", &drop, Some(me), false),
        Ok(Outcome::Refused)
    );
    assert_eq!(
        judge(&Expect::Nothing, me, b"x", &[], None, true),
        Ok(Outcome::Ignored)
    );
}

#[test]
fn impersonating_inputs_are_taken_in_the_senders_own_name() {
    let mut seen = 0;
    for seed in 0..200 {
        for (what, v) in attack(AttackKind::Impersonation, seed, limits()) {
            if what.contains("victim") && v == Ok(Outcome::Taken) {
                seen += 1;
            }
            assert!(v.is_ok(), "{what}: {v:?}");
        }
    }
    assert!(seen > 20, "the post-handshake variants ran {seen} times");
    // The decoded body of such an input names the sender (what `judge`
    // checks on each `Submit`): a stamped body decodes to its user.
    let me = Keypair::from_seed([1; 32]).public();
    let body = Stamper::default().stamp(NOW_MS, me, b"set k v".to_vec());
    assert_eq!(UserInput::decode(&body).unwrap().user, me);
}
