use super::*;
use crate::contract::{output_text, OutputTree, RunOutcome, RunResult, UserIo};
use crate::crypto::Hash;
use crate::users::hp::{self, HpNode, Request};
use crate::users::hp_outputs::contract_output;
use std::collections::BTreeMap;

fn keys(n: u8) -> Vec<Keypair> {
    (1..=n).map(|i| Keypair::from_seed([i; 32])).collect()
}

fn node(unl: &[Keypair]) -> HpNode {
    HpNode {
        key: unl[0].clone(),
        contract_id: "c-1".into(),
        contract_version: "1.0".into(),
        unl: unl.iter().map(Keypair::public).collect(),
    }
}

const OURS: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn the_handshake_round_trips_with_the_node_side_and_checks_trust() {
    let unl = keys(3);
    let n = node(&unl);
    let user = Keypair::from_seed([50; 32]);
    let first = hp::user_challenge(&n, "aa".repeat(16).as_str());
    let c = read_challenge(first.as_bytes(), Some("c-1")).unwrap();
    let (who, answer) = hp::accept_user(
        &n,
        &c.challenge,
        challenge_response(&user, &c, OURS).as_bytes(),
    )
    .unwrap();
    assert_eq!(who, user.public());
    let server = check_server(answer.as_bytes(), &c, OURS, &[unl[0].public()]).unwrap();
    assert_eq!((server.node, server.unl.len()), (unl[0].public(), 3));
    // Any node, when nothing is trusted; not one outside what is.
    assert!(check_server(answer.as_bytes(), &c, OURS, &[]).is_ok());
    assert!(matches!(
        check_server(answer.as_bytes(), &c, OURS, &[unl[1].public()]),
        Err(ClientError::Untrusted(_))
    ));
    // A signature over another challenge, or another contract.
    let other = "ff".repeat(16);
    assert_eq!(
        check_server(answer.as_bytes(), &c, &other, &[]),
        Err(ClientError::BadServerSig)
    );
    assert!(matches!(
        read_challenge(first.as_bytes(), Some("c-2")),
        Err(ClientError::OtherContract { .. })
    ));
    assert!(matches!(
        read_challenge(b"{\"type\":\"public_challenge\"}", None),
        Err(ClientError::NotAChallenge(_))
    ));
}

#[test]
fn an_input_message_is_what_the_node_reads_under_the_same_name() {
    let user = Keypair::from_seed([50; 32]);
    let (msg, name) = input_message(&user, "set k v", 17, 9);
    match hp::request(user.public(), msg.as_bytes()) {
        Ok(Request::Input {
            container, hash, ..
        }) => {
            assert_eq!(hash, name);
            assert_eq!((container.input.as_str(), container.nonce), ("set k v", 17));
            assert_eq!(container.max_ledger_seq_no, 9);
        }
        other => panic!("{other:?}"),
    }
}

/// A `contract_output` for `user` of a run with 20 other users, signed by
/// the first `signers` of `unl`.
fn output(unl: &[Keypair], signers: usize, user: PubKey) -> Value {
    let mut outputs: BTreeMap<PubKey, Vec<u8>> =
        (0..20u8).map(|i| (PubKey([i; 32]), vec![i])).collect();
    outputs.insert(user, b"k=v\n".to_vec());
    let run = RunResult {
        outcome: RunOutcome::Exited(Some(0)),
        outputs,
        io: UserIo::Raw,
    };
    let tree = OutputTree::of(&run, 4, &Hash([4; 32]));
    let text = vec![output_text(b"k=v\n")];
    let mine = leaf(&user, &text);
    let mut sigs: Vec<_> = (unl[..signers].iter())
        .map(|k| (k.public(), tree.sign(k)))
        .collect();
    // The same signer twice counts once.
    sigs.extend(sigs.first().cloned());
    let view = tree.for_user(&mine).unwrap();
    serde_json::from_str(&contract_output(
        4,
        &Hash([4; 32]),
        &text,
        &mine,
        view,
        &sigs,
    ))
    .unwrap()
}

#[test]
fn an_output_is_taken_with_80_percent_of_the_unl_and_not_below() {
    let unl = keys(5);
    let keys: Vec<PubKey> = unl.iter().map(Keypair::public).collect();
    let user = Keypair::from_seed([50; 32]).public();
    let ok = verify_output(&output(&unl, 4, user), &user, &keys).unwrap();
    assert_eq!(
        (ok.seq, ok.signers, ok.outputs.clone()),
        (4, 4, vec!["k=v\n".to_string()])
    );
    assert_eq!(
        verify_output(&output(&unl, 3, user), &user, &keys),
        Err(OutputError::TooFewSigners { signers: 3, unl: 5 })
    );
    // Another user's view of it, or outputs changed on the way.
    let other = PubKey([99; 32]);
    assert_eq!(
        verify_output(&output(&unl, 4, user), &other, &keys),
        Err(OutputError::Hash)
    );
    let mut changed = output(&unl, 4, user);
    changed["outputs"][0] = "k=w\n".into();
    assert_eq!(
        verify_output(&changed, &user, &keys),
        Err(OutputError::Hash)
    );
    // A tree that leaves the user's leaf out, or holds it twice.
    let mut no_leaf = output(&unl, 4, user);
    no_leaf["hash_tree"] = serde_json::json!([hex::encode([1u8; 32])]);
    assert_eq!(
        verify_output(&no_leaf, &user, &keys),
        Err(OutputError::Tree)
    );
    let mut twice = output(&unl, 4, user);
    twice["hash_tree"] = serde_json::json!([null, [null]]);
    assert_eq!(verify_output(&twice, &user, &keys), Err(OutputError::Tree));
}
