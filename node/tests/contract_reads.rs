//! Users' read requests on the real contract host: the contract runs on a
//! copy of the state the latest run left, writes nothing back, and is
//! bounded in time and in how many run at once.
#![cfg(feature = "runtime")]

use hotpocket_node::consensus::input_hash;
use hotpocket_node::contract::{FdlistFormat, RunLimits, Stamper, UserIo};
use hotpocket_node::crypto::{Keypair, PubKey};
use hotpocket_node::env::{ContractHost, RunLink};
use hotpocket_node::ledger::LedgerRecord;
use hotpocket_node::real::contract_host::ProcessHost;
use hotpocket_node::real::process::{ProcessRunner, Workdir};
use hotpocket_node::real::reads::{
    ContractReads, ReadError, ReadView, READS_AT_ONCE, READS_PER_USER,
};
use std::path::PathBuf;
use std::time::Duration;

fn echo(dir: PathBuf, time_limit_ms: u64) -> ProcessRunner {
    echo_io(dir, time_limit_ms, UserIo::Raw)
}

fn echo_io(dir: PathBuf, time_limit_ms: u64, io: UserIo) -> ProcessRunner {
    ProcessRunner {
        binary: format!(
            "{}/../fixtures/contracts/echo.py",
            env!("CARGO_MANIFEST_DIR")
        )
        .into(),
        args: vec![],
        state_dir: dir,
        format: FdlistFormat::Json,
        workdir: Workdir::State,
        io,
        limits: RunLimits {
            time_limit_ms,
            ..RunLimits::default()
        },
    }
}

fn state_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hp-reads-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn user(i: u8) -> PubKey {
    Keypair::from_seed([i; 32]).public()
}

/// A closed ledger holding one input of user 1's.
fn ledger(seq: u64) -> LedgerRecord {
    let mut record = LedgerRecord::genesis();
    record.ledger.seq = seq;
    let body = Stamper::default().stamp(seq, user(1), b"in".to_vec());
    let h = input_hash(&body);
    record.ledger.inputs.push(h);
    record.bodies.insert(h, body);
    record.hash = record.ledger.hash();
    record
}

/// A host running echo.py (it counts the users it answered in the file
/// `count`), with reads served from it.
fn host(tag: &str, time_limit_ms: u64) -> (ProcessHost, ContractReads, PathBuf) {
    host_io(tag, time_limit_ms, UserIo::Raw)
}

fn host_io(tag: &str, time_limit_ms: u64, io: UserIo) -> (ProcessHost, ContractReads, PathBuf) {
    let dir = state_dir(tag);
    let runner = echo_io(dir.clone(), time_limit_ms, io);
    let mut host = ProcessHost::open(runner.clone(), user(100), vec![user(100)]).unwrap();
    let view = host.serve_reads().unwrap();
    let reads = ContractReads::new(
        runner,
        view,
        host.reads_scratch(),
        user(100),
        vec![user(100)],
    )
    .unwrap();
    (host, reads, dir)
}

async fn read(reads: &ContractReads, content: &str) -> String {
    let out = reads.read(user(2), content.as_bytes().to_vec()).await;
    let msgs = out.expect("the read runs");
    assert_eq!(msgs.len(), 1, "a raw contract's answer is one message");
    String::from_utf8(msgs.concat()).unwrap()
}

#[tokio::test]
async fn a_read_sees_the_latest_state_and_writes_nothing_back() {
    let (mut host, reads, dir) = host("latest", 5_000);
    // The state as the host opened it (empty), and, once a read was
    // asked for, every state after.
    assert!(read(&reads, "q").await.contains("seq 0 count 1"));
    host.execute(&ledger(1), RunLink::default()).await;
    let state = host.state_hash().unwrap();
    // echo.py bumps `count` in every run it answers: a read sees the
    // count ledger 1 left, and its own bump is thrown away.
    for _ in 0..2 {
        let out = read(&reads, "q").await;
        assert!(out.contains("seq 1 count 2"), "{out}");
    }
    assert_eq!(std::fs::read_to_string(dir.join("count")).unwrap(), "1");
    assert_eq!(host.state_hash().unwrap(), state);
    host.execute(&ledger(2), RunLink::default()).await;
    assert!(read(&reads, "q").await.contains("seq 2 count 3"));
    // After a rollback, reads wait for the next run's copy.
    host.rollback(1).unwrap();
    let reads = std::sync::Arc::new(reads);
    let r = reads.clone();
    let waiting = tokio::spawn(async move { read(&r, "q").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "it read the rolled-back state");
    host.execute(&ledger(2), RunLink::default()).await;
    let out = waiting.await.unwrap();
    assert!(out.contains("seq 2 count 3"), "{out}");
    // Each read's copy is removed once it is over.
    let scratch = host.reads_scratch();
    let mut left = usize::MAX;
    for _ in 0..50 {
        left = std::fs::read_dir(&scratch).unwrap().count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "copies left in {}", scratch.display());
}

#[tokio::test]
async fn a_read_of_a_copy_gone_stale_waits_for_the_next_run() {
    let (mut host, reads, _dir) = host("stale", 5_000);
    // Nobody asked for a read: the run leaves the reads' copy stale.
    host.execute(&ledger(1), RunLink::default()).await;
    let reads = std::sync::Arc::new(reads);
    let r = reads.clone();
    let waiting = tokio::spawn(async move { read(&r, "q").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "it read a stale copy");
    host.execute(&ledger(2), RunLink::default()).await;
    let out = waiting.await.unwrap();
    assert!(out.contains("seq 2 count 3"), "{out}");
}

#[tokio::test]
async fn a_read_that_hangs_is_ended_at_the_time_limit() {
    let (_host, reads, _dir) = host("hang", 300);
    let out = reads.read(user(2), b"hang".to_vec()).await;
    assert!(matches!(out, Err(ReadError::TimedOut(300))), "{out:?}");
}

#[tokio::test]
async fn reads_past_the_node_bound_wait_then_are_refused() {
    let (_host, reads, _dir) = host("busy", 20_000);
    let reads = std::sync::Arc::new(reads);
    let mut hanging = tokio::task::JoinSet::new();
    // Each user two at most: a third of one user's is refused at once.
    for i in 0..READS_AT_ONCE {
        let reads = reads.clone();
        let who = user(10 + (i / READS_PER_USER) as u8);
        hanging.spawn(async move { reads.read(who, b"hang".to_vec()).await });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = reads.read(user(10), b"q".to_vec()).await;
    assert!(matches!(third, Err(ReadError::UserBusy)), "{third:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = reads.read(user(3), b"q".to_vec()).await;
    assert!(matches!(out, Err(ReadError::Busy)), "{out:?}");
    // Abandoned reads (their users gone) end their contracts and free
    // their places.
    hanging.shutdown().await;
    assert!(read(&reads, "q").await.contains("bytes sha256"));
}

#[tokio::test]
async fn before_the_state_is_copied_reads_are_refused() {
    let dir = state_dir("unready");
    let view = ReadView::new(dir.with_extension("read"));
    let reads = ContractReads::new(
        echo(dir.clone(), 1_000),
        view,
        dir.with_extension("reads"),
        user(100),
        vec![user(100)],
    )
    .unwrap();
    let out = reads.read(user(2), b"q".to_vec()).await;
    assert!(matches!(out, Err(ReadError::NotReady)), "{out:?}");
}

/// Framed, a read's input is one message and each message the contract
/// writes is one answer.
#[tokio::test]
async fn a_framed_read_answers_one_message() {
    let (_host, reads, _dir) = host_io("framed", 5_000, UserIo::Framed);
    let msgs = reads
        .read(user(2), b"q?".to_vec())
        .await
        .expect("the read runs");
    let texts: Vec<String> = (msgs.iter())
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert_eq!(texts, ["message 0 of 2 bytes seq 0 count 1"]);
}
