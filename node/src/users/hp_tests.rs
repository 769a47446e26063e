use super::*;
use crate::crypto::Hash;

fn node() -> HpNode {
    let key = Keypair::from_seed([1; 32]);
    HpNode {
        unl: vec![key.public(), Keypair::from_seed([2; 32]).public()],
        key,
        contract_id: "3b1f2c4e-contract".into(),
        contract_version: "1.0".into(),
    }
}

fn response(user: &Keypair, challenge: &str, theirs: &str) -> Value {
    json!({
        "type": "user_challenge_response",
        "sig": user.sign_raw(challenge.as_bytes()).to_hex(),
        "pubkey": ed_hex(&user.public()),
        "server_challenge": theirs,
        "protocol": "json",
    })
}

#[test]
fn the_handshake_proves_both_sides_and_hands_over_the_unl() {
    let n = node();
    let first: Value = serde_json::from_str(&user_challenge(&n, "00ff")).unwrap();
    assert_eq!(first["type"], "user_challenge");
    assert!(first["hp_version"].as_str().unwrap().starts_with("0.6."));
    assert_eq!(first["contract_id"], "3b1f2c4e-contract");

    let user = Keypair::from_seed([9; 32]);
    let theirs = "0123456789abcdef0123456789abcdef";
    let ok = response(&user, "00ff", theirs).to_string();
    let (who, answer) = accept_user(&n, "00ff", ok.as_bytes()).unwrap();
    assert_eq!(who, user.public());
    let a: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(a["type"], "server_challenge_response");
    assert_eq!(a["pubkey"], ed_hex(&n.key.public()));
    assert_eq!(a["unl"].as_array().unwrap().len(), 2);
    let sig = Sig::from_hex(a["sig"].as_str().unwrap()).unwrap();
    let signed = format!("{theirs}3b1f2c4e-contract1.0");
    assert!(verify_raw(&n.key.public(), signed.as_bytes(), &sig).is_ok());
}

#[test]
fn a_bad_handshake_answer_is_refused_with_the_reason() {
    let n = node();
    let user = Keypair::from_seed([9; 32]);
    let good = "0123456789abcdef0123456789abcdef";
    let refuse = |v: Value, what: &str| {
        let e = accept_user(&n, "00ff", v.to_string().as_bytes()).unwrap_err();
        assert!(e.contains(what), "{e}");
    };
    refuse(response(&user, "00fe", good), "does not verify");
    // The node signs the user's challenge raw: it must not be free text.
    refuse(
        response(&user, "00ff", "hotpocket/proposal/v1"),
        "32 lower-case hex",
    );
    let not_hex = r#"{"input":"xyz","nonce":1,"m":22}"#;
    assert_eq!(not_hex.len(), 32);
    refuse(response(&user, "00ff", not_hex), "32 lower-case hex");
    let mut bson = response(&user, "00ff", good);
    bson["protocol"] = json!("bson");
    refuse(bson, "not served");
    let mut upper = response(&user, "00ff", good);
    upper["pubkey"] = json!(format!("ED{}", user.public().to_hex()));
    refuse(upper, "pubkey");
}

fn container_text(input: &str, max: u64) -> String {
    json!({"input": input, "nonce": 5, "max_ledger_seq_no": max}).to_string()
}

#[test]
fn inputs_are_read_with_their_name_or_refused_with_hpcores_reasons() {
    let user = Keypair::from_seed([9; 32]);
    let c = container_text("hello\n", 12);
    let sig = user.sign_raw(c.as_bytes());
    let msg = json!({"type": "contract_input", "input_container": c, "sig": sig.to_hex()});
    let Ok(Request::Input {
        signed,
        container,
        hash,
    }) = request(user.public(), msg.to_string().as_bytes())
    else {
        panic!("a good input");
    };
    assert_eq!(container.input, "hello\n");
    assert_eq!(signed.container, c);
    assert_eq!(hash, hex::encode(blake3::hash(&sig.0).as_bytes()));

    let other = Keypair::from_seed([8; 32]).public();
    let reason = |user: PubKey, m: Value| request(user, m.to_string().as_bytes()).unwrap_err();
    assert_eq!(reason(other, msg.clone()).reason, Reason::BadSig);
    assert_eq!(reason(other, msg.clone()).hash, hash);
    let junk = container_text("x", 1).replace('}', ",\"x\":1}");
    let sig = user.sign_raw(junk.as_bytes()).to_hex();
    let m = json!({"type": "contract_input", "input_container": junk, "sig": sig});
    assert_eq!(reason(user.public(), m).reason, Reason::BadMsgFormat);
    let m = json!({"type": "contract_input", "input_container": "{}"});
    assert_eq!(reason(user.public(), m).reason, Reason::BadMsgFormat);
    assert_eq!(
        reason(user.public(), json!({"type": "nope"})).reason,
        Reason::InvalidMsgType
    );
    let refused = request(user.public(), b"not json").unwrap_err();
    assert_eq!(refused.reason, Reason::BadMsgFormat);
    let status: Value = serde_json::from_str(&rejected(&refused)).unwrap();
    assert_eq!(status["reason"], "bad_msg_format");
    assert_eq!(status["input_hash"], "");
}

#[test]
fn other_requests_are_recognised() {
    let u = PubKey([1; 32]);
    let ask = |v: Value| request(u, v.to_string().as_bytes()).unwrap();
    assert_eq!(ask(json!({"type": "stat"})), Request::Stat);
    assert_eq!(ask(json!({"type": "lcl"})), Request::Lcl);
    assert_eq!(
        ask(json!({"type": "ledger_query", "id": "q1"})),
        Request::LedgerQuery(crate::users::hp_ledger::Query {
            id: "q1".into(),
            seq: None,
            inputs: false,
            outputs: false
        })
    );
    assert_eq!(
        ask(json!({"type": "subscription", "channel": "unl_change", "enabled": true})),
        Request::Subscribe {
            ledger_events: None
        }
    );
    assert_eq!(
        ask(json!({"type": "subscription", "channel": "ledger_event", "enabled": false})),
        Request::Subscribe {
            ledger_events: Some(false)
        }
    );
    for bad in [
        json!({"type": "subscription", "channel": "health_event", "enabled": true}),
        json!({"type": "subscription", "channel": "ledger_event"}),
    ] {
        let refused = request(u, bad.to_string().as_bytes()).unwrap_err();
        assert_eq!(refused.reason, Reason::BadMsgFormat, "{bad}");
    }
}

#[test]
fn a_read_request_needs_an_id_and_content_and_is_answered_by_id() {
    let u = PubKey([1; 32]);
    let ask = |v: Value| request(u, v.to_string().as_bytes());
    assert_eq!(
        ask(json!({"type": "contract_read_request", "id": "17", "content": "get k"})),
        Ok(Request::Read {
            id: "17".into(),
            content: "get k".into()
        })
    );
    for bad in [
        json!({"type": "contract_read_request", "id": "17"}),
        json!({"type": "contract_read_request", "content": "get k"}),
        json!({"type": "contract_read_request", "id": 17, "content": "get k"}),
    ] {
        let refused = ask(bad.clone()).unwrap_err();
        assert_eq!(refused.reason, Reason::BadMsgFormat, "{bad}");
    }
    let ok: Value = serde_json::from_str(&read_response("17", Ok(b"k=v\n"))).unwrap();
    assert_eq!(
        ok,
        json!({"type": "contract_read_response", "reply_for": "17", "content": "k=v\n"})
    );
    let failed: Value = serde_json::from_str(&read_response("17", Err("busy".into()))).unwrap();
    assert_eq!(
        (failed["content"].clone(), failed["error"].as_str()),
        (Value::Null, Some("busy"))
    );
}

#[test]
fn the_last_ledger_must_be_ahead_and_not_too_far() {
    assert_eq!(check_max_ledger(5, 5), Err(Reason::MaxLedgerExpired));
    assert_eq!(check_max_ledger(6, 5), Ok(()));
    assert_eq!(check_max_ledger(15, 5), Ok(()));
    assert_eq!(
        check_max_ledger(16, 5),
        Err(Reason::MaxLedgerOffsetExceeded)
    );
}

#[test]
fn status_answers_have_the_fields_the_client_reads() {
    let n = node();
    let view = View {
        lcl: LedgerId {
            seq: 7,
            hash: Hash([0xab; 32]),
        },
        vote_status: "synced",
        roundtime_ms: 1000,
        read_requests: false,
    };
    let stat: Value = serde_json::from_str(&stat_response(&n, &view)).unwrap();
    assert_eq!(stat["ledger_seq_no"], 7);
    assert_eq!(stat["current_unl"].as_array().unwrap().len(), 2);
    let lcl: Value = serde_json::from_str(&lcl_response(&view)).unwrap();
    assert_eq!(lcl["ledger_hash"], "ab".repeat(32));
    let ok: Value = serde_json::from_str(&accepted("h", view.lcl)).unwrap();
    assert_eq!(
        (ok["status"].as_str(), ok["ledger_seq_no"].as_u64()),
        (Some("accepted"), Some(7))
    );
}
