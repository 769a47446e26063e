use super::*;
use crate::crypto::Keypair;

const NOW: u64 = 1_700_000_000_000;

fn open(limits: SessionLimits) -> (Session, String) {
    let (s, msg) = Session::open(limits, [0xab; 16]);
    let v: Value = serde_json::from_str(&msg).unwrap();
    assert_eq!(v["type"], "public_challenge");
    assert_eq!(v["hotpocket"], "0.1");
    let challenge = v["challenge"].as_str().unwrap().to_string();
    assert_eq!(challenge.len(), 32);
    (s, challenge)
}

fn hp_node() -> std::sync::Arc<hp::HpNode> {
    std::sync::Arc::new(hp::HpNode {
        key: Keypair::from_seed([1; 32]),
        contract_id: "c".into(),
        contract_version: "1.0".into(),
        unl: vec![],
    })
}

/// `k`'s answer to the `user_challenge` message `first`.
fn hp_response(k: &Keypair, first: &str) -> String {
    let challenge = serde_json::from_str::<Value>(first).unwrap()["challenge"]
        .as_str()
        .unwrap()
        .to_string();
    json!({
        "type": "user_challenge_response",
        "sig": k.sign_raw(challenge.as_bytes()).to_hex(),
        "pubkey": hp::ed_hex(&k.public()),
        "server_challenge": "0123456789abcdef0123456789abcdef",
        "protocol": "json",
    })
    .to_string()
}

fn closed_with(r: &[Reply], needle: &str) -> bool {
    matches!(r, [Reply::Close(m)] if m.contains(needle) && m.contains("\"type\":\"error\""))
}

#[test]
fn handshake_then_every_message_is_an_input() {
    let k = Keypair::from_seed([5; 32]);
    let (mut s, c) = open(SessionLimits::default());
    let r = s.on_message(NOW, helo_message(&k, &c, NOW / 1000).as_bytes(), true);
    assert!(r.is_empty(), "{r:?}");
    assert_eq!(s.user(), Some(k.public()));
    let r = s.on_message(NOW + 1, b"hello contract", false);
    assert_eq!(
        r,
        vec![Reply::Input {
            user: k.public(),
            body: b"hello contract".to_vec()
        }]
    );
    let r = s.on_message(NOW + 2, b"{\"type\":\"helo\"}", true);
    assert!(
        matches!(&r[..], [Reply::Input { .. }]),
        "after the handshake JSON is just input"
    );
}

#[test]
fn every_bad_helo_is_refused_with_a_reason() {
    let k = Keypair::from_seed([5; 32]);
    let other = Keypair::from_seed([6; 32]);
    let now_s = NOW / 1000;
    let cases: Vec<(Vec<u8>, bool, &str)> = vec![
        (b"not json".to_vec(), true, "not valid JSON"),
        (b"{}".to_vec(), true, "no \\\"type\\\""),
        (
            json!({"type": "input"}).to_string().into_bytes(),
            true,
            "expected a helo",
        ),
        (
            helo_message(&k, "00000000000000000000000000000000", now_s).into_bytes(),
            true,
            "challenge does not match",
        ),
        (b"\x01\x02".to_vec(), false, "expected a helo text"),
    ];
    for (msg, text, needle) in cases {
        let (mut s, _) = open(SessionLimits::default());
        let r = s.on_message(NOW, &msg, text);
        assert!(closed_with(&r, needle), "{needle}: {r:?}");
        assert!(s.is_closed());
        assert!(
            s.on_message(NOW, b"x", false).is_empty(),
            "a closed session ignores input"
        );
    }
    let (mut s, c) = open(SessionLimits::default());
    // Signed by another key than the one named.
    let mut v: Value = serde_json::from_str(&helo_message(&other, &c, now_s)).unwrap();
    v["pubkey"] = json!(k.public().to_hex());
    assert!(closed_with(
        &s.on_message(NOW, v.to_string().as_bytes(), true),
        "signature does not verify"
    ));
    let (mut s, c) = open(SessionLimits::default());
    let mut v: Value = serde_json::from_str(&helo_message(&k, &c, now_s)).unwrap();
    v["pubkey"] = json!("abcd");
    assert!(closed_with(
        &s.on_message(NOW, v.to_string().as_bytes(), true),
        "pubkey"
    ));
    let (mut s, c) = open(SessionLimits::default());
    let mut v: Value = serde_json::from_str(&helo_message(&k, &c, now_s)).unwrap();
    v["sig"] = json!("zz");
    assert!(closed_with(
        &s.on_message(NOW, v.to_string().as_bytes(), true),
        "sig"
    ));
    let (mut s, c) = open(SessionLimits::default());
    assert!(closed_with(
        &s.on_message(NOW, helo_message(&k, &c, now_s - 3600).as_bytes(), true),
        "timestamp is 3600 s away"
    ));
    // The tolerance itself is still in time; a second more is not.
    let tolerance = SessionLimits::default().timestamp_tolerance_s;
    let (mut s, c) = open(SessionLimits::default());
    let edge = helo_message(&k, &c, now_s - tolerance);
    let r = s.on_message(NOW, edge.as_bytes(), true);
    assert!(r.is_empty() && s.user() == Some(k.public()), "{r:?}");
    let (mut s, c) = open(SessionLimits::default());
    let late = helo_message(&k, &c, now_s + tolerance + 1);
    let r = s.on_message(NOW, late.as_bytes(), true);
    assert!(closed_with(&r, "s away"));
}

#[test]
fn limits_on_size_rate_round_and_repeats() {
    let k = Keypair::from_seed([5; 32]);
    let limits = SessionLimits {
        max_message_bytes: 400,
        max_messages_per_minute: 10,
        max_inputs_per_round: 3,
        ..SessionLimits::default()
    };
    let authed = || {
        let (mut s, c) = open(limits.clone());
        assert!(s
            .on_message(NOW, helo_message(&k, &c, NOW / 1000).as_bytes(), true)
            .is_empty());
        s
    };
    let mut s = authed();
    assert!(closed_with(
        &s.on_message(NOW, &[0u8; 401], false),
        "exceeds the 400-byte limit"
    ));

    let mut s = authed();
    let inputs = |s: &mut Session, t: u64, body: &[u8]| s.on_message(t, body, false);
    assert_eq!(inputs(&mut s, NOW, b"a").len(), 1);
    assert!(inputs(&mut s, NOW, b"a").is_empty(), "a repeat is ignored");
    assert!(matches!(
        &inputs(&mut s, NOW, b"b")[..],
        [Reply::Input { .. }]
    ));
    assert!(matches!(
        &inputs(&mut s, NOW, b"c")[..],
        [Reply::Input { .. }]
    ));
    let r = inputs(&mut s, NOW, b"d");
    assert!(
        matches!(&r[..], [Reply::Send(m)] if m.contains("at most 3 inputs a round")),
        "{r:?}"
    );
    assert!(!s.is_closed(), "a full round drops the input, not the user");
    assert!(
        matches!(&inputs(&mut s, NOW + 1000, b"d")[..], [Reply::Input { .. }]),
        "next round"
    );
    // 7 messages so far this minute counting the helo; three more are fine.
    for i in 0..3u8 {
        assert!(!s.is_closed(), "{i}");
        inputs(&mut s, NOW + 2000, &[b'x', i]);
    }
    // Past the minute's limit a message is refused, naming it, and the
    // user keeps its connection (answers of inputs taken still come) ...
    let r = inputs(&mut s, NOW + 2000, b"y");
    assert!(
        matches!(&r[..], [Reply::Send(m)] if m.contains("too many messages") && m.contains("input_sha256")),
        "{r:?}"
    );
    assert!(!s.is_closed());
    // ... until it is four times past it: a flood, closed.
    for i in 0..29u8 {
        let r = inputs(&mut s, NOW + 2000, &[b'z', i]);
        assert!(matches!(&r[..], [Reply::Send(_)]), "{i}: {r:?}");
    }
    assert!(closed_with(
        &inputs(&mut s, NOW + 2000, b"w"),
        "too many messages"
    ));
}

#[test]
fn an_equal_message_rounds_later_is_a_new_input() {
    let k = Keypair::from_seed([5; 32]);
    let (mut s, c) = open(SessionLimits::default());
    assert!(s
        .on_message(NOW, helo_message(&k, &c, NOW / 1000).as_bytes(), true)
        .is_empty());
    assert_eq!(s.on_message(NOW, b"get x", false).len(), 1);
    assert!(
        s.on_message(NOW + 900, b"get x", false).is_empty(),
        "a retry"
    );
    assert!(
        s.on_message(NOW + 1_500, b"get x", false).is_empty(),
        "a retry the next round"
    );
    assert_eq!(s.on_message(NOW + 2_500, b"get x", false).len(), 1);
}

#[test]
fn a_user_answers_the_challenge_message_and_the_session_accepts_it() {
    let k = Keypair::from_seed([6; 32]);
    let (mut s, msg) = Session::open(SessionLimits::default(), [7; 16]);
    let helo = crate::users::answer_challenge(&k, &msg, NOW / 1000).unwrap();
    assert!(s.on_message(NOW, helo.as_bytes(), true).is_empty());
    assert_eq!(s.user(), Some(k.public()));
    assert!(matches!(
        crate::users::answer_challenge(&k, r#"{"type":"helo"}"#, 0),
        Err(crate::users::ChallengeError::NotAChallenge(_))
    ));
    assert!(matches!(
        crate::users::answer_challenge(&k, "{nope", 0),
        Err(crate::users::ChallengeError::NotJson(_))
    ));
    // A challenge that is not a node's 32 hex digits is not signed: it
    // could be a signed input's container.
    let lure = json!({"type": "user_challenge", "challenge": "{\"input\":\"x\"}"}).to_string();
    assert!(crate::users::answer_challenge(&k, &lure, 0).is_err());
}

#[test]
fn a_node_serving_hpcore_offers_it_first_and_the_prototype_after_a_silence() {
    let node = hp_node();
    let (mut s, first) = Session::open_hp(SessionLimits::default(), [7; 16], node.clone());
    let v: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["type"], "user_challenge");
    let quiet = s.on_quiet();
    assert!(matches!(&quiet[..], [Reply::Send(m)] if m.contains("public_challenge")));
    assert!(s.on_quiet().is_empty(), "offered once");
    // A helo answers the same challenge, in a prototype session.
    let k = Keypair::from_seed([6; 32]);
    let helo = crate::users::answer_challenge(&k, &first, NOW / 1000).unwrap();
    assert!(s.on_message(NOW, helo.as_bytes(), true).is_empty());
    assert!(!s.is_hp() && s.user() == Some(k.public()));

    // An hpcore user: its inputs are signed, a retry is silent, `stat`
    // is the intake's to answer.
    let (mut s, first) = Session::open_hp(SessionLimits::default(), [8; 16], node);
    let response = hp_response(&k, &first);
    let r = s.on_message(NOW, response.as_bytes(), false);
    assert!(matches!(&r[..], [Reply::SendHp(m)] if m.contains("server_challenge_response")));
    assert!(s.is_hp());
    let c = r#"{"input":"x","nonce":1,"max_ledger_seq_no":9}"#;
    let input = json!({"type": "contract_input", "input_container": c, "sig": k.sign_raw(c.as_bytes()).to_hex()});
    let r = s.on_message(NOW, input.to_string().as_bytes(), false);
    assert!(
        matches!(&r[..], [Reply::Signed { max_ledger: 9, .. }]),
        "{r:?}"
    );
    assert!(s
        .on_message(NOW, input.to_string().as_bytes(), false)
        .is_empty());
    let r = s.on_message(NOW, br#"{"type":"stat"}"#, false);
    assert_eq!(r, vec![Reply::Stat]);
}

#[test]
fn with_prototype_sessions_off_a_helo_is_refused_and_hpcores_handshake_still_works() {
    let node = hp_node();
    let limits = SessionLimits {
        prototype_sessions: false,
        ..SessionLimits::default()
    };
    let (mut s, first) = Session::open_hp(limits.clone(), [7; 16], node.clone());
    assert!(
        s.on_quiet().is_empty(),
        "the prototype's challenge is never offered"
    );
    let k = Keypair::from_seed([6; 32]);
    let helo = crate::users::answer_challenge(&k, &first, NOW / 1000).unwrap();
    let r = s.on_message(NOW, helo.as_bytes(), true);
    assert!(closed_with(&r, "prototype's sessions are off"), "{r:?}");
    assert_eq!(s.user(), None);

    let (mut s, first) = Session::open_hp(limits, [8; 16], node);
    let response = hp_response(&k, &first);
    s.on_message(NOW, response.as_bytes(), false);
    assert!(s.is_hp() && s.user() == Some(k.public()));
}

#[test]
fn an_input_the_node_refused_may_be_sent_again_at_once() {
    let k = Keypair::from_seed([5; 32]);
    let limits = SessionLimits {
        max_inputs_per_round: 2,
        ..SessionLimits::default()
    };
    let (mut s, c) = open(limits);
    assert!(s
        .on_message(NOW, helo_message(&k, &c, NOW / 1000).as_bytes(), true)
        .is_empty());
    let taken = |r: Vec<Reply>| matches!(&r[..], [Reply::Input { .. }]);
    assert!(taken(s.on_message(NOW, b"a", false)));
    assert!(s.on_message(NOW, b"a", false).is_empty(), "a repeat");
    // The node refused it (busy): the same bytes again are a new try.
    s.unsubmit(input_hash(b"a"));
    assert!(taken(s.on_message(NOW, b"a", false)));
    // Nor did the refused one use the round's quota of two.
    assert!(taken(s.on_message(NOW, b"b", false)));
    assert!(
        !taken(s.on_message(NOW, b"c", false)),
        "the third this round"
    );
}

/// The notices a user gets about a run say which run and what became of
/// it (mutation testing found their text unchecked).
#[test]
fn notices_name_the_run_and_what_became_of_it() {
    let v: Value = serde_json::from_str(&withheld_message(7, Withheld::Differs)).unwrap();
    assert_eq!(
        (&v["type"], &v["seq"], &v["reason"]),
        (&json!("uncertified"), &json!(7), &json!("differs"))
    );
    let v: Value = serde_json::from_str(&failed_message(3, &RunOutcome::TimedOut)).unwrap();
    assert_eq!(
        (&v["type"], &v["seq"]),
        (&json!("contract_failed"), &json!(3))
    );
    assert!(v["error"].as_str().unwrap().contains("time limit"), "{v}");
    let v: Value = serde_json::from_str(&failed_message(3, &RunOutcome::Exited(Some(2)))).unwrap();
    assert!(v["error"].as_str().unwrap().contains("code 2"), "{v}");
    assert!(busy_reason(4).contains("4 ledgers behind"));
}

/// A message of exactly the size limit is taken, and a new minute starts
/// its count afresh (mutation testing found both edges unchecked).
#[test]
fn the_limits_take_up_to_their_edge_and_a_new_minute_starts_afresh() {
    let k = Keypair::from_seed([5; 32]);
    let limits = SessionLimits {
        max_message_bytes: 400,
        max_messages_per_minute: 10,
        ..SessionLimits::default()
    };
    let (mut s, c) = open(limits);
    let helo = helo_message(&k, &c, NOW / 1000);
    assert!(s.on_message(NOW, helo.as_bytes(), true).is_empty());
    let r = s.on_message(NOW, &[7u8; 400], false);
    assert!(matches!(&r[..], [Reply::Input { .. }]), "{r:?}");
    // NOW is 20 s into its minute: 8 more messages fill it, one a second.
    for i in 0..8u8 {
        let r = s.on_message(NOW + 1000 * u64::from(i + 1), &[b'm', i], false);
        assert!(matches!(&r[..], [Reply::Input { .. }]), "{i}: {r:?}");
    }
    let r = s.on_message(NOW + 9000, b"over", false);
    assert!(
        matches!(&r[..], [Reply::Send(m)] if m.contains("too many messages")),
        "{r:?}"
    );
    let r = s.on_message(NOW + 40_000, b"next minute", false);
    assert!(matches!(&r[..], [Reply::Input { .. }]), "{r:?}");
}

/// A refused input leaves the session's other recent inputs to expire as
/// they would, and the memory of repeats holds 1 024 inputs (mutation
/// testing found both unchecked).
#[test]
fn the_memory_of_repeats_expires_and_is_bounded() {
    let k = Keypair::from_seed([5; 32]);
    let limits = SessionLimits {
        max_inputs_per_round: 5000,
        max_messages_per_minute: 5000,
        ..SessionLimits::default()
    };
    let authed = || {
        let (mut s, c) = open(limits.clone());
        let helo = helo_message(&k, &c, NOW / 1000);
        assert!(s.on_message(NOW, helo.as_bytes(), true).is_empty());
        s
    };
    let taken = |r: Vec<Reply>| matches!(&r[..], [Reply::Input { .. }]);
    let mut s = authed();
    assert!(taken(s.on_message(NOW, b"x", false)));
    assert!(taken(s.on_message(NOW, b"y", false)));
    s.unsubmit(input_hash(b"x"));
    assert!(taken(s.on_message(NOW + 3_000, b"y", false)), "y expired");

    let mut s = authed();
    for i in 0..RECENT_INPUTS as u32 {
        assert!(taken(s.on_message(NOW, &i.to_be_bytes(), false)), "{i}");
    }
    // Full: the next input pushes the oldest out, and that one is new again.
    assert!(taken(s.on_message(NOW, &0u32.to_be_bytes(), false)));
}
