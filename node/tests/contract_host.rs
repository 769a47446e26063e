//! The real contract host against real processes: the Python and shell
//! example contracts in `fixtures/contracts`, both description formats,
//! and the node party line's pipes.
#![cfg(feature = "runtime")]

use hotpocket_node::consensus::input_hash;
use hotpocket_node::contract::{FdlistFormat, RunLimits, RunOutcome, RunRequest, Stamper, UserIo};
use hotpocket_node::crypto::{Hash, Keypair, PubKey};
use hotpocket_node::env::{ContractHost, RollbackError, RunEvent, RunLink, RunSession};
use hotpocket_node::ledger::LedgerRecord;
use hotpocket_node::npl::frame;
use hotpocket_node::real::contract_host::ProcessHost;
use hotpocket_node::real::process::{ProcessRunner, Workdir};
use std::path::PathBuf;
use std::time::Duration;

fn fixture(name: &str) -> String {
    format!(
        "{}/../fixtures/contracts/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn state_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hp-host-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn host(
    binary: &str,
    args: &[&str],
    dir: PathBuf,
    format: FdlistFormat,
    limits: RunLimits,
) -> ProcessRunner {
    ProcessRunner {
        binary: binary.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        state_dir: dir,
        workdir: Workdir::State,
        format,
        io: UserIo::Raw,
        limits,
    }
}

fn user(i: u8) -> PubKey {
    Keypair::from_seed([i; 32]).public()
}

fn request(inputs: Vec<(PubKey, Vec<Vec<u8>>)>) -> RunRequest {
    RunRequest {
        seq: 7,
        lcl: Hash([9; 32]),
        time_ms: 1_700_000_000_000,
        node: user(100),
        unl: vec![user(100)],
        rand: None,
        contract_seed: None,
        inputs: inputs.into_iter().collect(),
        readonly: false,
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test]
async fn python_contract_reads_large_inputs_and_keeps_state() {
    let dir = state_dir("py");
    let h = host(
        "python3",
        &[&fixture("echo.py")],
        dir.clone(),
        FdlistFormat::Json,
        RunLimits::default(),
    );
    // 1.5 MiB: far more than a pipe buffer, all there before the contract starts.
    let big: Vec<u8> = (0..1_572_864u32).map(|i| (i % 251) as u8).collect();
    let (a, b) = (user(1), user(2));
    let req = request(vec![
        (a, vec![b"hello ".to_vec(), b"world".to_vec()]),
        (b, vec![big.clone()]),
    ]);
    let r = h.run(&req).await;
    assert_eq!(r.outcome, RunOutcome::Exited(Some(0)));
    let out_a = String::from_utf8(r.outputs[&a].clone()).unwrap();
    assert!(out_a.starts_with("11 bytes sha256 "), "{out_a}");
    assert!(out_a.contains(&sha256_hex(b"hello world")));
    assert!(out_a.contains("fionread 11 seq 7"), "{out_a}");
    let out_b = String::from_utf8(r.outputs[&b].clone()).unwrap();
    assert!(
        out_b.starts_with(&format!("{} bytes sha256 {}", big.len(), sha256_hex(&big))),
        "{out_b}"
    );
    assert!(
        out_b.contains(&format!("fionread {}", big.len())),
        "{out_b}"
    );
    assert_eq!(std::fs::read_to_string(dir.join("count")).unwrap(), "2");

    // A second node running the same ledger from the same state agrees on
    // the outputs and the state.
    let dir2 = state_dir("py2");
    let h2 = host(
        "python3",
        &[&fixture("echo.py")],
        dir2,
        FdlistFormat::Json,
        RunLimits::default(),
    );
    let r2 = h2.run(&req).await;
    assert_eq!(r.output_hash(), r2.output_hash());
    assert_eq!(h.state().unwrap().hash(), h2.state().unwrap().hash());
    // And the next ledger changes the state.
    let before = h.state().unwrap().hash();
    h.run(&request(vec![(a, vec![b"again".to_vec()])])).await;
    assert_ne!(h.state().unwrap().hash(), before);
}

#[tokio::test]
async fn shell_contract_speaks_the_text_format() {
    let h = host(
        &fixture("upper.sh"),
        &[],
        state_dir("sh"),
        FdlistFormat::Text,
        RunLimits::default(),
    );
    let (a, b) = (user(1), user(2));
    let r = h
        .run(&request(vec![
            (a, vec![b"abc".to_vec()]),
            (b, vec![b"Hot Pocket".to_vec()]),
        ]))
        .await;
    assert_eq!(r.outcome, RunOutcome::Exited(Some(0)));
    assert_eq!(r.outputs[&a], b"ABC");
    assert_eq!(r.outputs[&b], b"HOT POCKET");
}

#[tokio::test]
async fn a_hanging_contract_is_killed_at_the_time_limit() {
    let limits = RunLimits {
        time_limit_ms: 500,
        ..RunLimits::default()
    };
    let h = host(
        "python3",
        &[&fixture("echo.py")],
        state_dir("hang"),
        FdlistFormat::Json,
        limits,
    );
    let r = h
        .run(&request(vec![(user(1), vec![b"hang".to_vec()])]))
        .await;
    assert_eq!(r.outcome, RunOutcome::TimedOut);
    assert!(r.outputs.is_empty());
}

#[tokio::test]
async fn a_flooding_contract_is_cut_at_the_output_limit() {
    let limits = RunLimits {
        max_output_bytes: 1 << 20,
        ..RunLimits::default()
    };
    let h = host(
        "python3",
        &[&fixture("echo.py")],
        state_dir("flood"),
        FdlistFormat::Json,
        limits,
    );
    let r = h
        .run(&request(vec![
            (user(1), vec![b"flood".to_vec()]),
            (user(2), vec![b"ok".to_vec()]),
        ]))
        .await;
    assert_eq!(r.outcome, RunOutcome::OutputLimit);
    assert!(
        r.outputs.is_empty(),
        "outputs of a killed run are discarded"
    );
}

#[tokio::test]
async fn a_missing_binary_is_reported_not_panicked() {
    let h = host(
        "/no/such/contract",
        &[],
        state_dir("missing"),
        FdlistFormat::Json,
        RunLimits::default(),
    );
    let r = h.run(&request(vec![(user(1), vec![b"x".to_vec()])])).await;
    assert!(
        matches!(r.outcome, RunOutcome::SpawnFailed(_)),
        "{:?}",
        r.outcome
    );
}

/// A closed ledger holding `payloads` from `who`, as consensus hands it over.
fn ledger(seq: u64, who: PubKey, payloads: &[&[u8]]) -> LedgerRecord {
    let mut record = LedgerRecord::genesis();
    record.ledger.seq = seq;
    let mut stamp = Stamper::default();
    for p in payloads {
        let body = stamp.stamp(seq, who, p.to_vec());
        let h = input_hash(&body);
        record.ledger.inputs.push(h);
        record.bodies.insert(h, body);
    }
    record.ledger.inputs.sort();
    record.hash = record.ledger.hash();
    record
}

#[tokio::test]
async fn the_host_behind_the_seam_runs_ledgers_and_rolls_back_one() {
    let dir = state_dir("seam");
    let h = host(
        &fixture("echo.py"),
        &[],
        dir.clone(),
        FdlistFormat::Json,
        RunLimits::default(),
    );
    let mut contract = ProcessHost::open(h, user(100), vec![user(100)]).unwrap();
    let first = contract
        .execute(&ledger(1, user(1), &[b"ab", b"cd"]), RunLink::default())
        .await;
    // Both inputs reach user 1's fd, in order, and only user 1 answers.
    let out = String::from_utf8(first.run.outputs[&user(1)].clone()).unwrap();
    assert!(
        out.starts_with(&format!("4 bytes sha256 {}", sha256_hex(b"abcd"))),
        "{out}"
    );
    assert_eq!(first.run.outputs.len(), 1);
    assert_eq!(first.state, contract.state_hash().unwrap());
    let second = contract
        .execute(&ledger(2, user(2), &[b"x"]), RunLink::default())
        .await;
    assert_ne!(second.state, first.state);
    assert_eq!(std::fs::read_to_string(dir.join("count")).unwrap(), "2");
    contract.rollback(1).unwrap();
    assert_eq!(contract.state_hash().unwrap(), first.state);
    assert_eq!(std::fs::read_to_string(dir.join("count")).unwrap(), "1");
    // Only one step back is kept: the protocol never asks for more, and a
    // rollback past it fails without touching the state.
    assert!(matches!(
        contract.rollback(0),
        Err(RollbackError::NoSnapshot { want: 0, ran: 1 })
    ));
    assert_eq!(contract.state_hash().unwrap(), first.state);
    // A crash between the rollback's two renames: the snapshot is kept.
    let second = contract
        .execute(&ledger(2, user(2), &[b"y"]), RunLink::default())
        .await;
    let snap = dir.with_extension("prev");
    assert!(snap.is_dir());
    std::fs::rename(&dir, dir.with_extension("rolledback")).unwrap();
    let h = contract.host.clone();
    let reopened = ProcessHost::open(h.clone(), user(100), vec![user(100)]).unwrap();
    assert_eq!(reopened.state_hash().unwrap(), first.state);
    assert_eq!(reopened.ran().seq, 1);
    assert!(!dir.with_extension("rolledback").exists());
    // A crash in the middle of a run: the half-written state is undone.
    let mut contract = reopened;
    let again = contract
        .execute(&ledger(2, user(2), &[b"y"]), RunLink::default())
        .await;
    assert_eq!(again.state, second.state);
    std::fs::remove_dir_all(&snap).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(&dir)
        .arg(&snap)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::write(dir.join("count"), "half written").unwrap();
    let reopened = ProcessHost::open(h, user(100), vec![user(100)]).unwrap();
    assert_eq!(reopened.ran().seq, 2);
    assert_eq!(reopened.state_hash().unwrap(), second.state);
    let _ = std::fs::remove_dir_all(&snap);
    let _ = std::fs::remove_file(dir.with_extension("ran"));
}

/// The next thing a run in progress did: a message it emitted on the
/// party line, or its end.
async fn next_event<'a, T: 'a>(session: &mut RunSession<'a, T>) -> RunEvent<T> {
    std::future::poll_fn(|cx| session.poll_event(cx)).await
}

/// What the SDK writes on the party line for one message: length, bytes.
fn sdk_frame(msg: &[u8]) -> Vec<u8> {
    let mut out = (msg.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

#[tokio::test]
async fn npl_bytes_pass_both_ways_between_the_link_and_the_process() {
    let me = user(100);
    let peer = user(101);
    let h = host(
        "python3",
        &[&fixture("npl.py")],
        state_dir("npl"),
        FdlistFormat::Json,
        RunLimits::default(),
    );
    let mut req = request(vec![(user(1), vec![b"hi".to_vec()])]);
    req.unl = vec![me, peer];
    let link = RunLink::default();
    let mut session = RunSession::new(h.run_with_link(&req, link.clone()), link);
    // A peer's message, delivered before the contract even starts, cut in
    // two records as chunk boundaries may fall anywhere.
    let from_peer = sdk_frame(br#"{"node":"peer"}"#);
    session.deliver(frame(&peer, &from_peer[..3]));
    session.deliver(frame(&peer, &from_peer[3..]));
    // npl.py sends one message, then waits for every UNL node to be heard:
    // its own message comes back from the node, as the node echoes it.
    let mut emitted = Vec::new();
    let result = loop {
        match next_event(&mut session).await {
            RunEvent::Message(bytes) => {
                session.deliver(frame(&me, &bytes));
                emitted.extend_from_slice(&bytes);
            }
            RunEvent::Finished(r) => break r,
        }
    };
    assert_eq!(result.outcome, RunOutcome::Exited(Some(0)));
    let len = u32::from_be_bytes(emitted[..4].try_into().unwrap()) as usize;
    assert_eq!(emitted.len(), 4 + len, "one whole message");
    let sent: serde_json::Value = serde_json::from_slice(&emitted[4..]).unwrap();
    assert_eq!(sent["node"], me.to_hex());
    let out: serde_json::Value = serde_json::from_slice(&result.outputs[&user(1)]).unwrap();
    let mut both = vec![me.to_hex(), peer.to_hex()];
    both.sort();
    assert_eq!(out["heard"], serde_json::json!(both), "{out}");
}

#[tokio::test]
async fn a_contract_deaf_to_its_npl_input_still_finishes() {
    let h = host(
        "python3",
        &[&fixture("npl_rude.py"), "deaf"],
        state_dir("npl-deaf"),
        FdlistFormat::Json,
        RunLimits {
            time_limit_ms: 20_000,
            ..RunLimits::default()
        },
    );
    let req = request(vec![(user(1), vec![b"x".to_vec()])]);
    let link = RunLink::default();
    let mut session = RunSession::new(h.run_with_link(&req, link.clone()), link);
    // 8 MiB in 64 KiB records: far past both the pipe and the host's queue.
    let chunk = frame(&user(101), &[7u8; 64 << 10]);
    for _ in 0..64 {
        session.deliver(chunk.clone());
    }
    let mut pushed = 64;
    let run = async {
        loop {
            let event = tokio::time::timeout(Duration::from_millis(20), next_event(&mut session));
            match event.await {
                Ok(RunEvent::Finished(r)) => return r,
                Ok(RunEvent::Message(m)) => panic!("it sends nothing, got {} bytes", m.len()),
                // Still running: the node goes on delivering, and never waits.
                Err(_) if pushed < 128 => {
                    session.deliver(chunk.clone());
                    pushed += 1;
                }
                Err(_) => {}
            }
        }
    };
    // Well inside the time limit: the run ends when the contract exits,
    // whatever is still queued for it.
    let result = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("the run ends when the contract does");
    assert_eq!(result.outcome, RunOutcome::Exited(Some(0)));
    assert_eq!(result.outputs[&user(1)], b"done deaf\n");
}

#[tokio::test]
async fn npl_output_past_the_bound_is_drained_not_sent() {
    let limits = RunLimits {
        time_limit_ms: 20_000,
        ..RunLimits::default()
    };
    let cap = limits.max_npl_out_bytes;
    let total = 3 << 20;
    assert!(total > cap);
    let h = host(
        "python3",
        &[&fixture("npl_rude.py"), "flood", &total.to_string()],
        state_dir("npl-flood"),
        FdlistFormat::Json,
        limits,
    );
    let req = request(vec![(user(1), vec![b"x".to_vec()])]);
    let link = RunLink::default();
    let mut session = RunSession::new(h.run_with_link(&req, link.clone()), link);
    let mut got = Vec::new();
    let result = loop {
        match next_event(&mut session).await {
            RunEvent::Message(m) => got.extend_from_slice(&m),
            RunEvent::Finished(r) => break r,
        }
    };
    // It wrote all it wanted (a host that stopped reading would have left
    // it blocked until the time limit); the node got the first `cap` bytes.
    assert_eq!(result.outcome, RunOutcome::Exited(Some(0)));
    assert_eq!(result.outputs[&user(1)], b"done flood\n");
    assert_eq!(got.len(), cap);
    assert!(got.iter().enumerate().all(|(i, b)| *b as usize == i % 251));
}

/// Kills, when dropped, the `sleep`s whose pids a `detach.sh` run wrote
/// to `.0`: this process is no subreaper, so they outlive the run here.
struct Sleepers(PathBuf);

impl Drop for Sleepers {
    fn drop(&mut self) {
        let pids = std::fs::read_to_string(&self.0).unwrap_or_default();
        for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // Only if the pid still runs a `sleep`: it may have been reused.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                // SAFETY: signalling a process checked to be our sleeper.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

#[tokio::test]
async fn a_process_that_left_the_group_does_not_hold_up_the_run() {
    // The sleeper holds every fd the contract had, its outputs too; the
    // run still ends with the contract, plus a short grace for the pipes.
    // (Killing the sleeper too takes a subreaper: see contract_reaper.rs.)
    let dir = state_dir("detach");
    let pids = dir.with_extension("pids");
    let _ = std::fs::remove_file(&pids);
    let _sleepers = Sleepers(pids.clone());
    let h = host(
        &fixture("detach.sh"),
        &["setsid", pids.to_str().unwrap()],
        dir,
        FdlistFormat::Text,
        RunLimits::default(),
    );
    let a = user(1);
    for _ in 0..2 {
        let req = request(vec![(a, vec![b"hi".to_vec()])]);
        let run = h.run(&req);
        // Far below the hour the sleeper holds the pipes for.
        let r = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the run ends when the contract does");
        assert_eq!(r.outcome, RunOutcome::Exited(Some(0)));
        assert_eq!(r.outputs[&a], b"bye\n");
    }
    let left = std::fs::read_to_string(&pids).unwrap();
    assert_eq!(left.lines().count(), 2, "{left}");
}
