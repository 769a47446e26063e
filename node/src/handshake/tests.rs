use super::*;

fn key(n: u8) -> Keypair {
    Keypair::from_seed([n; 32])
}

/// Nodes 1 and 2 are the UNL; 3 is an outsider.
fn unl() -> Vec<PubKey> {
    vec![key(1).public(), key(2).public()]
}

fn challenge(n: u8) -> [u8; 32] {
    [n.wrapping_mul(37).wrapping_add(1); 32]
}

/// Runs a whole honest handshake and returns both sessions and every
/// message, in order, as a wiretap would see them.
fn honest(dialer: u8, acceptor: u8, cd: u8, ca: u8) -> (PeerSession, PeerSession, Vec<Vec<u8>>) {
    let (mut d, hello) = Handshake::dialer(key(dialer), unl(), challenge(cd));
    let mut a = Handshake::acceptor(key(acceptor), unl(), challenge(ca));
    let Step::Send(a_hello) = a.receive(&hello).unwrap() else {
        panic!("acceptor answers a hello with a hello")
    };
    let Step::Send(d_proof) = d.receive(&a_hello).unwrap() else {
        panic!("dialer answers a hello with its proof")
    };
    let Step::Done {
        last: Some(a_proof),
        session: sa,
    } = a.receive(&d_proof).unwrap()
    else {
        panic!("acceptor ends with its proof")
    };
    let Step::Done {
        last: None,
        session: sd,
    } = d.receive(&a_proof).unwrap()
    else {
        panic!("dialer ends")
    };
    (sd, sa, vec![hello, a_hello, d_proof, a_proof])
}

#[test]
fn honest_handshake_both_ways_agrees_on_the_session() {
    for (d, a) in [(1, 2), (2, 1)] {
        let (sd, sa, _) = honest(d, a, 10, 20);
        assert_eq!(sd.id, sa.id);
        assert_eq!(sd.peer, key(a).public());
        assert_eq!(sa.peer, key(d).public());
        assert_eq!(sd.role, Role::Dialer);
        assert_eq!(sa.role, Role::Acceptor);
    }
    // Another challenge, another session; the other direction, another too.
    let (s1, _, _) = honest(1, 2, 10, 20);
    let (s2, _, _) = honest(1, 2, 10, 21);
    let (s3, _, _) = honest(2, 1, 10, 20);
    assert_ne!(s1.id, s2.id);
    assert_ne!(s1.id, s3.id);
}

#[test]
fn acceptor_signs_nothing_before_the_dialer_proved_its_key() {
    let i = key(1).public();
    let hello = Hello {
        version: VERSION,
        key: i,
        challenge: challenge(1),
    };
    let mut a = Handshake::acceptor(key(2), unl(), challenge(2));
    // Its answer to a hello is its own hello: no signature in it.
    assert_eq!(
        a.receive(&hello.encode()),
        Ok(Step::Send(
            Hello {
                version: VERSION,
                key: key(2).public(),
                challenge: challenge(2)
            }
            .encode()
        ))
    );
    // A forged proof ends the handshake without a word.
    assert_eq!(a.receive(&[0u8; 64]), Err(HandshakeError::BadProof(i)));
    assert_eq!(a.receive(&[0u8; 64]), Err(HandshakeError::Finished));
}

/// What the attacker feeds an acceptor in place of the dialer's proof.
fn proof_fails(acceptor: u8, claimed: u8, cd: u8, ca: u8, proof: &[u8]) -> HandshakeError {
    let mut a = Handshake::acceptor(key(acceptor), unl(), challenge(ca));
    let hello = Hello {
        version: VERSION,
        key: key(claimed).public(),
        challenge: challenge(cd),
    };
    a.receive(&hello.encode()).unwrap();
    a.receive(proof).unwrap_err()
}

#[test]
fn proofs_for_another_role_connection_or_challenge_are_refused() {
    let (i, j) = (1, 2);
    let t = Transcript {
        dialer: key(i).public(),
        acceptor: key(j).public(),
        dialer_challenge: challenge(10),
        acceptor_challenge: challenge(20),
    };
    let bad = HandshakeError::BadProof(key(i).public());
    // Right transcript, but signed as the acceptor.
    let wrong_role = t.sign(&key(i), Role::Acceptor);
    assert_eq!(proof_fails(j, i, 10, 20, &wrong_role), bad);
    // The right proof works, so the refusals above and below are for what
    // they change.
    let right = t.sign(&key(i), Role::Dialer);
    let mut a = Handshake::acceptor(key(j), unl(), challenge(20));
    let hello = Hello {
        version: VERSION,
        key: key(i).public(),
        challenge: challenge(10),
    };
    a.receive(&hello.encode()).unwrap();
    assert!(matches!(a.receive(&right), Ok(Step::Done { .. })));
    // The acceptor's fresh challenge differs: the proof is for another one.
    assert_eq!(proof_fails(j, i, 10, 21, &right), bad);
    // The dialer's challenge differs.
    assert_eq!(proof_fails(j, i, 11, 20, &right), bad);
    // A proof recorded from an earlier honest handshake, replayed.
    let (_, _, wire) = honest(i, j, 10, 20);
    assert_eq!(proof_fails(j, i, 10, 22, &wire[2]), bad);
    // The acceptor's proof of that handshake, replayed as a dialer's.
    assert_eq!(proof_fails(j, i, 10, 20, &wire[3]), bad);
    // A proof by another key.
    assert_eq!(
        proof_fails(j, i, 10, 20, &t.sign(&key(3), Role::Dialer)),
        bad
    );
    // And on the dialer's side: its peer's dialer proof is no acceptor's.
    let (mut d, _) = Handshake::dialer(key(i), unl(), challenge(10));
    let a_hello = Hello {
        version: VERSION,
        key: key(j).public(),
        challenge: challenge(20),
    };
    d.receive(&a_hello.encode()).unwrap();
    let mirrored = t.sign(&key(j), Role::Dialer);
    assert_eq!(
        d.receive(&mirrored),
        Err(HandshakeError::BadProof(key(j).public()))
    );
}

#[test]
fn outsiders_ourselves_and_malformed_hellos_are_refused() {
    let hello = |k: u8, v: u8| {
        Hello {
            version: v,
            key: key(k).public(),
            challenge: challenge(1),
        }
        .encode()
    };
    let acceptor = || Handshake::acceptor(key(2), unl(), challenge(2));
    let dialer = || Handshake::dialer(key(2), unl(), challenge(2)).0;
    for mut hs in [acceptor(), dialer()] {
        assert_eq!(
            hs.clone().receive(&hello(3, VERSION)),
            Err(HandshakeError::NotInUnl(key(3).public()))
        );
        assert_eq!(
            hs.clone().receive(&hello(2, VERSION)),
            Err(HandshakeError::Loopback)
        );
        assert_eq!(
            hs.clone().receive(&hello(1, 1)),
            Err(HandshakeError::Version(1))
        );
        assert_eq!(
            hs.clone().receive(&hello(1, VERSION)[..64]),
            Err(HandshakeError::Malformed(64))
        );
        assert_eq!(hs.clone().receive(&[]), Err(HandshakeError::Malformed(0)));
        let mut long = hello(1, VERSION);
        long.push(0);
        assert_eq!(hs.receive(&long), Err(HandshakeError::Malformed(66)));
        // A failed step closes the handshake.
        assert_eq!(
            hs.receive(&hello(1, VERSION)),
            Err(HandshakeError::Finished)
        );
    }
}

/// What an attacker in the middle reaches: it can connect to an honest
/// node as often as it likes, claim any key, copy any challenge it has
/// seen, replay any message an honest node ever sent (including a wiretap
/// of earlier honest handshakes between I and J both ways), sign anything
/// with its own key, and even fork an honest handshake to try every message
/// in the same state (more than a real attacker can: each real connection
/// gets a fresh challenge). `open` are the honest handshakes talking to it,
/// `seen` what it has heard already. Returns the sessions honest nodes
/// reached, how many handshakes it left waiting for a proof, and how many
/// (state, message) pairs it tried.
fn attack(mut open: Vec<Handshake>, mut seen: Vec<Vec<u8>>) -> (Vec<PeerSession>, usize, usize) {
    let i = key(1).public();
    let j = key(2).public();
    let m = key(3);
    seen.extend([honest(1, 2, 40, 41).2, honest(2, 1, 42, 43).2].concat());
    let mut challenges: Vec<[u8; 32]> = vec![challenge(100)];
    let mut sessions = vec![];
    let mut tried = std::collections::BTreeSet::new();
    // Until the attacker learns nothing new and reaches no new state.
    loop {
        // Every hello the attacker can write: any key, any challenge seen.
        for h in &seen {
            if let Ok(hello) = Hello::decode(h) {
                challenges.push(hello.challenge);
            }
        }
        challenges.sort();
        challenges.dedup();
        let mut inputs = seen.clone();
        for c in &challenges {
            for k in [i, j, m.public()] {
                let hello = Hello {
                    version: VERSION,
                    key: k,
                    challenge: *c,
                };
                inputs.push(hello.encode());
            }
            // And proofs it can make itself, with its own key, for every
            // transcript it can name.
            for c2 in &challenges {
                for (d, a) in [(i, j), (j, i), (m.public(), i), (m.public(), j)] {
                    let t = Transcript {
                        dialer: d,
                        acceptor: a,
                        dialer_challenge: *c,
                        acceptor_challenge: *c2,
                    };
                    for role in [Role::Dialer, Role::Acceptor] {
                        inputs.push(t.sign(&m, role));
                    }
                }
            }
        }
        inputs.sort();
        inputs.dedup();
        let before = (tried.len(), open.len(), seen.len());
        let mut next = vec![];
        for hs in &open {
            let state = format!("{:?}/{:?}", hs.key.public(), hs.state);
            for msg in &inputs {
                if !tried.insert((state.clone(), msg.clone())) {
                    continue;
                }
                let mut fork = hs.clone();
                match fork.receive(msg) {
                    Ok(Step::Send(out)) => {
                        seen.push(out);
                        next.push(fork);
                    }
                    Ok(Step::Done { last, session }) => {
                        seen.extend(last);
                        sessions.push(session);
                    }
                    Err(_) => {}
                }
            }
        }
        seen.sort();
        seen.dedup();
        open.extend(next);
        // Forks that reached the same state are one state.
        let mut states = std::collections::BTreeSet::new();
        open.retain(|hs| states.insert(format!("{:?}/{:?}", hs.key.public(), hs.state)));
        if (tried.len(), open.len(), seen.len()) == before {
            break;
        }
    }
    let tried = tried.len();
    let waiting = open
        .iter()
        .filter(|hs| matches!(hs.state, State::Proof(_)))
        .count();
    (sessions, waiting, tried)
}

/// The relay attack on version 1, and everything else an attacker in the
/// middle can try against two honest nodes that only accept its
/// connections (it is in no one's peer list): no session, anywhere.
#[test]
fn a_relaying_attacker_gets_no_session() {
    let open = vec![
        Handshake::acceptor(key(1), unl(), challenge(1)),
        Handshake::acceptor(key(1), unl(), challenge(2)),
        Handshake::acceptor(key(2), unl(), challenge(3)),
        Handshake::acceptor(key(2), unl(), challenge(4)),
    ];
    let (sessions, waiting, tried) = attack(open, vec![]);
    // The search reached handshakes waiting for a proof, and fed them
    // everything it had.
    assert!(
        waiting >= 8 && tried > 5_000,
        "{waiting} waiting, {tried} tried"
    );
    assert_eq!(sessions, vec![], "the attacker got a session");
}

/// The same search finds what there is to find: if I itself dials the
/// attacker (its address is in I's peer list) and J accepts, the attacker
/// can pass I's genuine handshake on to J. That session is I's own: the
/// attacker is a wire between I and J, and every frame on it must be
/// signed by I under a session id only I and J agreed on.
#[test]
fn the_search_finds_a_relay_of_a_genuine_dial() {
    let (dialer, hello) = Handshake::dialer(key(1), unl(), challenge(5));
    let open = vec![dialer, Handshake::acceptor(key(2), unl(), challenge(6))];
    let (sessions, _, _) = attack(open, vec![hello]);
    let on_j: Vec<_> = sessions
        .iter()
        .filter(|s| s.role == Role::Acceptor)
        .collect();
    let on_i: Vec<_> = sessions.iter().filter(|s| s.role == Role::Dialer).collect();
    assert!(!on_j.is_empty());
    assert!(on_j.iter().all(|s| s.peer == key(1).public()));
    // I's sessions are with J, under the same ids as J's.
    assert!(on_i.iter().all(|s| s.peer == key(2).public()));
    assert!(on_j.iter().all(|sj| on_i.iter().any(|si| si.id == sj.id)));
}

/// ...unless I pins the key it dialled: answered as J by the attacker's
/// address, it refuses, and the same search finds no session at all.
#[test]
fn a_pinned_dialer_cannot_be_relayed() {
    let (dialer, hello) = Handshake::dialer(key(1), unl(), challenge(5));
    let dialer = dialer.expecting(key(3).public());
    let open = vec![dialer, Handshake::acceptor(key(2), unl(), challenge(6))];
    let (sessions, _, tried) = attack(open, vec![hello]);
    assert!(tried > 1_000, "{tried} tried");
    assert_eq!(sessions, vec![], "the attacker got a session");

    let (mut dialer, _) = Handshake::dialer(key(1), unl(), challenge(5));
    dialer = dialer.expecting(key(3).public());
    let as_j = Hello {
        version: VERSION,
        key: key(2).public(),
        challenge: challenge(6),
    };
    assert_eq!(
        dialer.receive(&as_j.encode()),
        Err(HandshakeError::Unexpected {
            expected: key(3).public(),
            got: key(2).public()
        })
    );
}

#[test]
fn the_version_1_relay_gets_two_bare_hellos() {
    // The relay, step by step: the attacker claims I to J and J to I, and
    // hands J's challenge to I as its own. Under version 1, I would now sign
    // exactly what J expects from I. Here both ends are acceptors: each
    // answers with a bare hello and waits for a proof nobody can make.
    let mut on_j = Handshake::acceptor(key(2), unl(), challenge(2));
    let as_i = Hello {
        version: VERSION,
        key: key(1).public(),
        challenge: challenge(9),
    };
    let Ok(Step::Send(j_hello)) = on_j.receive(&as_i.encode()) else {
        panic!("J answers a hello")
    };
    let cj = Hello::decode(&j_hello).unwrap().challenge;
    let mut on_i = Handshake::acceptor(key(1), unl(), challenge(1));
    let as_j = Hello {
        version: VERSION,
        key: key(2).public(),
        challenge: cj,
    };
    let Ok(Step::Send(i_hello)) = on_i.receive(&as_j.encode()) else {
        panic!("I answers a hello")
    };
    // I said nothing but its hello: 65 bytes, no signature.
    assert_eq!(i_hello.len(), HELLO_BYTES);
    // Relaying it, or J's, as a proof gets nowhere.
    assert!(on_j.clone().receive(&i_hello).is_err());
    assert!(on_i.clone().receive(&j_hello).is_err());
    assert!(on_j.receive(&i_hello[..64]).is_err());
}
