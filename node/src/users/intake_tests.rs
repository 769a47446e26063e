use super::*;
use crate::contract::{RunOutcome, RunResult, UserInput, UserIo};
use crate::env::Entropy;
use crate::users::*;
use std::collections::BTreeMap;

const NOW: u64 = 1_700_000_000_000;

/// Counts up from 0, so every challenge is known in advance.
struct Counting(u8);

impl Entropy for Counting {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.0;
            self.0 = self.0.wrapping_add(1);
        }
    }
}

fn intake() -> Intake<Counting> {
    Intake::new(SessionLimits::default(), Counting(0))
}

/// A session of `key` through `intake`, past the handshake.
fn connected(intake: &mut Intake<Counting>, key: &Keypair) -> Session {
    let (mut s, msg) = intake.open();
    let helo = answer_challenge(key, &msg, NOW / 1000).unwrap();
    let replies = s.on_message(NOW, helo.as_bytes(), true);
    assert!(intake.act(NOW, replies).is_empty());
    assert_eq!(s.user(), Some(key.public()));
    s
}

#[test]
fn every_connection_is_challenged_with_fresh_entropy() {
    let mut intake = intake();
    let challenge = |msg: &str| {
        let v: Value = serde_json::from_str(msg).unwrap();
        v["challenge"].as_str().unwrap().to_string()
    };
    let (_, first) = intake.open();
    let (_, second) = intake.open();
    assert_eq!(challenge(&first), hex::encode((0..16).collect::<Vec<u8>>()));
    assert_eq!(
        challenge(&second),
        hex::encode((16..32).collect::<Vec<u8>>())
    );
    assert_eq!(intake.limits(), &SessionLimits::default());
}

#[test]
fn inputs_are_stamped_for_the_node_and_messages_pass_through() {
    let mut intake = intake();
    let (a, b) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
    let mut sa = connected(&mut intake, &a);
    let mut sb = connected(&mut intake, &b);
    let mut submitted = Vec::new();
    for (s, body) in [(&mut sa, &b"set x 1"[..]), (&mut sb, b"get x")] {
        let replies = s.on_message(NOW, body, false);
        match &intake.act(NOW, replies)[..] {
            [ConnAction::Submit(stamped)] => submitted.push(UserInput::decode(stamped).unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(submitted[0].user, a.public());
    assert_eq!(submitted[0].payload, b"set x 1");
    assert_eq!(submitted[1].user, b.public());
    assert!(
        submitted[1].nonce > submitted[0].nonce,
        "one stamper for all of the node's users"
    );
    let replies = vec![Reply::Send("s".into()), Reply::Close("c".into())];
    assert_eq!(
        intake.act(NOW, replies),
        vec![ConnAction::Send("s".into()), ConnAction::Close("c".into())]
    );
}

#[test]
fn outputs_go_to_every_connection_of_their_user_except_empty_ones() {
    let (a, b, c) = (PubKey([1; 32]), PubKey([2; 32]), PubKey([3; 32]));
    let run = RunResult {
        outcome: RunOutcome::Exited(Some(0)),
        outputs: BTreeMap::from([
            (a, b"to a".to_vec()),
            (b, Vec::new()),
            (PubKey([9; 32]), b"not here".to_vec()),
        ]),
        io: UserIo::Raw,
    };
    let connected = [("a1", a), ("b", b), ("c", c), ("a2", a)];
    assert_eq!(
        outputs_for(&run, connected),
        vec![("a1", &b"to a"[..]), ("a2", &b"to a"[..])]
    );
    assert!(outputs_for(&run, Vec::<(u8, PubKey)>::new()).is_empty());
}

#[test]
fn a_session_opened_with_other_limits_keeps_them_and_draws_the_same_entropy() {
    let mut intake = intake();
    let k = Keypair::from_seed([1; 32]);
    let tight = SessionLimits {
        max_messages_per_minute: 2,
        ..SessionLimits::default()
    };
    let (mut s, msg) = intake.open_with(tight);
    let v: Value = serde_json::from_str(&msg).unwrap();
    assert_eq!(v["challenge"], hex::encode((0..16).collect::<Vec<u8>>()));
    let helo = answer_challenge(&k, &msg, NOW / 1000).unwrap();
    assert!(s.on_message(NOW, helo.as_bytes(), true).is_empty());
    assert_eq!(s.on_message(NOW, b"a", false).len(), 1);
    assert!(
        matches!(&s.on_message(NOW, b"b", false)[..], [Reply::Send(m)] if m.contains("too many"))
    );
    // The intake's own sessions are unchanged, and the stream went on.
    let (_, next) = intake.open();
    let v: Value = serde_json::from_str(&next).unwrap();
    assert_eq!(v["challenge"], hex::encode((16..32).collect::<Vec<u8>>()));
    assert_eq!(intake.limits(), &SessionLimits::default());
}

#[test]
fn an_hpcore_users_nonces_must_grow_while_its_last_input_is_alive() {
    use crate::crypto::Hash;
    use crate::ledger::LedgerId;
    use crate::users::hp::{HpNode, View};
    use crate::users::hp_client;
    let key = Keypair::from_seed([1; 32]);
    let node = HpNode {
        key: Keypair::from_seed([9; 32]),
        contract_id: "c".into(),
        contract_version: "1".into(),
        unl: vec![Keypair::from_seed([9; 32]).public()],
    };
    let view = |seq| View {
        lcl: LedgerId {
            seq,
            hash: Hash([5; 32]),
        },
        vote_status: "synced",
        roundtime_ms: 1000,
        read_requests: false,
    };
    let mut intake = Intake::new(SessionLimits::default(), Counting(0)).serving_hp(node, view(5));
    let session_with = |intake: &mut Intake<Counting>, limits: SessionLimits| {
        let (mut s, msg) = intake.open_with(limits);
        let c = hp_client::read_challenge(msg.as_bytes(), None).unwrap();
        let answer = hp_client::challenge_response(&key, &c, "0123456789abcdef0123456789abcdef");
        let r = s.on_message(NOW, answer.as_bytes(), false);
        assert!(matches!(&intake.act(NOW, r)[..], [ConnAction::SendHp(_)]));
        s
    };
    let session = |intake: &mut Intake<Counting>| session_with(intake, SessionLimits::default());
    let send = |intake: &mut Intake<Counting>, s: &mut Session, nonce, max| {
        let (m, name) = hp_client::input_message(&key, "x", nonce, max);
        let r = s.on_message(NOW, m.as_bytes(), false);
        let action = intake.act(NOW, r);
        match &action[..] {
            [ConnAction::SubmitSigned { body, .. }] => {
                ("taken".to_string(), name, Some(input_hash(body)))
            }
            [ConnAction::SendHp(m)] => {
                let v: Value = serde_json::from_str(m).unwrap();
                (v["reason"].as_str().unwrap().to_string(), name, None)
            }
            other => panic!("{other:?}"),
        }
    };
    let (mut s, mut t) = (session(&mut intake), session(&mut intake));
    assert_eq!(send(&mut intake, &mut s, 10, 12).0, "taken");
    assert_eq!(send(&mut intake, &mut s, 9, 12).0, "nonce_expired");
    // The same input on another connection (a session drops its own
    // repeats silently: the first copy's status answers them).
    assert_eq!(send(&mut intake, &mut t, 10, 12).0, "already_submitted");
    let (status, name, ours) = send(&mut intake, &mut s, 11, 13);
    assert_eq!(status, "taken");
    // Refused by the node after all (busy): the same input is new again,
    // on the same connection too, and the one before it still counts.
    intake.unsubmit(&mut s, ours.unwrap(), &name);
    assert_eq!(send(&mut intake, &mut t, 10, 13).0, "nonce_expired");
    assert_eq!(send(&mut intake, &mut s, 11, 13).0, "taken");
    // Once the lcl passes the last one's last ledger, its nonce is free.
    *intake.view_mut().unwrap() = view(13);
    assert_eq!(send(&mut intake, &mut s, 3, 20).0, "taken");
    // Past the round's input limit, at once.
    let one = SessionLimits {
        max_inputs_per_round: 1,
        ..SessionLimits::default()
    };
    let mut u = session_with(&mut intake, one);
    assert_eq!(send(&mut intake, &mut u, 30, 20).0, "taken");
    assert_eq!(send(&mut intake, &mut u, 31, 20).0, "round_inputs_overflow");
}
