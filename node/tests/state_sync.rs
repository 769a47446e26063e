//! State sync between two real process hosts: one serves its state
//! directory, the other fetches the differences through the protocol's
//! `StateFetch` and swaps them in; then what a crash in the middle of that
//! swap leaves behind is recovered on open.
#![cfg(feature = "runtime")]

#[path = "support/state.rs"]
mod support;

use hotpocket_node::contract::ExecResult;
use hotpocket_node::crypto::Hash;
use hotpocket_node::env::{ContractHost, InstallError};
use hotpocket_node::real::state_dir::scan;
use hotpocket_node::sync::state_transfer::StatePatch;
use support::{dir, fetch, open, sibling, write};

#[tokio::test]
async fn a_host_fetches_only_what_differs_and_swaps_it_in() {
    let (a, b) = (dir("a"), dir("b"));
    let big: Vec<u8> = (0..1_200_000u32).map(|i| (i % 253) as u8).collect();
    for d in [&a, &b] {
        write(d, "same/one", b"1");
        write(d, "same/two", &big);
        std::os::unix::fs::symlink("same/one", d.join("link")).unwrap();
    }
    write(&a, "data/changed", &big[..700_000]);
    write(&b, "data/changed", b"old");
    write(&a, "data/new", b"new");
    write(&b, "gone", b"only here");
    write(&a, "shape", b"a file here");
    write(&b, "shape/inner", b"a directory there");
    let (mut src, mut dst) = (open(&a), open(&b));
    assert_ne!(src.ran().state, dst.ran().state);

    let (patch, stats) = fetch(&mut src, &mut dst, 9);
    assert_eq!(
        stats.files, 3,
        "data/changed, data/new and shape; not same/*"
    );
    dst.install_state(patch).await.unwrap();
    assert_eq!(scan(&b).unwrap().hash(), src.ran().state);
    assert_eq!(dst.ran().seq, 9);
    assert_eq!(dst.state_tree().hash(), src.ran().state);
    assert!(!b.join("gone").exists());
    // The old state is the next snapshot's starting point, not a rollback.
    assert!(sibling(&b, "prev").join("gone").exists());
    drop(dst);
    let again = open(&b);
    assert_eq!(again.ran().seq, 9);
    assert_eq!(again.ran().state, src.ran().state);
}

#[tokio::test]
async fn a_patch_that_misses_the_certified_hash_changes_nothing() {
    let (a, b) = (dir("c"), dir("d"));
    write(&a, "x", b"new");
    write(&b, "x", b"old");
    let (mut src, mut dst) = (open(&a), open(&b));
    let before = dst.ran();
    let (mut patch, _) = fetch(&mut src, &mut dst, 3);
    patch.result.state = Hash([7; 32]);
    let err = dst.install_state(patch).await.unwrap_err();
    assert!(matches!(err, InstallError::Hash { .. }), "{err}");
    assert_eq!(dst.ran(), before);
    assert_eq!(std::fs::read(b.join("x")).unwrap(), b"old");
    drop(dst);
    assert_eq!(open(&b).ran(), before);

    // Paths that climb out of the state directory are refused outright.
    let mut dst = open(&b);
    let evil = StatePatch {
        seq: 4,
        result: ExecResult {
            state: Hash::ZERO,
            output: Hash::ZERO,
        },
        remove: vec![b"../escape".to_vec()],
        files: vec![],
        links: vec![],
    };
    assert!(matches!(
        dst.install_state(evil).await,
        Err(InstallError::Io(_))
    ));
    assert_eq!(dst.ran(), before);
}

#[tokio::test]
async fn a_crash_during_the_swap_leaves_old_or_new_never_half() {
    let (a, b) = (dir("e"), dir("f"));
    write(&a, "k/1", b"new one");
    write(&a, "k/2", b"new two");
    write(&b, "k/1", b"old one");
    let (mut src, mut dst) = (open(&a), open(&b));
    let old = dst.ran();
    let (patch, _) = fetch(&mut src, &mut dst, 5);
    dst.install_state(patch).await.unwrap();
    drop(dst);
    let (s, prev, rolled) = (b.clone(), sibling(&b, "prev"), sibling(&b, "rolledback"));
    let tmp = sibling(&b, "tmp");

    // Cut between the renames: S gone, the new state still in S.prev, the
    // old one in S.rolledback. Open finishes the swap.
    std::fs::rename(&s, &tmp).unwrap();
    std::fs::rename(&prev, &rolled).unwrap();
    std::fs::rename(&tmp, &prev).unwrap();
    let c = open(&b);
    assert_eq!(c.ran().seq, 5);
    assert_eq!(scan(&b).unwrap().hash(), src.ran().state);
    drop(c);

    // Cut before the swap: S.ran already names the new state, but S still
    // holds the old one. Open keeps the old state and says so.
    write(&prev, "k/1", b"old one");
    let _ = std::fs::remove_file(prev.join("k/2"));
    std::fs::rename(&s, &tmp).unwrap();
    std::fs::rename(&prev, &s).unwrap();
    std::fs::rename(&tmp, &prev).unwrap();
    assert_eq!(scan(&b).unwrap().hash(), old.state);
    let record = serde_json::json!({
        "latest": {"seq": 5, "state": src.ran().state, "output": Hash::ZERO},
        "before": old,
    });
    std::fs::write(sibling(&b, "ran"), record.to_string()).unwrap();
    let c = open(&b);
    assert_eq!(c.ran(), old);
}
