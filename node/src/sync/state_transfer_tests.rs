use super::*;
use crate::crypto::Hash;

type Files = BTreeMap<String, Vec<u8>>;

fn tree(files: &Files) -> StateNode {
    StateNode::from_files(files.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}

fn target_of(files: &Files) -> ExecResult {
    ExecResult {
        state: tree(files).hash(),
        output: Hash::ZERO,
    }
}

/// Serves from `files` and feeds every answer back until the fetch is done
/// (the patch), or `stop` holds after a batch of answers (`None`).
fn fetch_until(
    fetch: &mut StateFetch,
    files: &Files,
    stop: impl Fn(&FetchStats) -> bool,
) -> Option<StatePatch> {
    let index = StateIndex::new(&tree(files));
    let read = |_: usize, path: &[u8], off: u64, len: u32| -> Result<Vec<u8>, ()> {
        let f = files.get(std::str::from_utf8(path).unwrap()).ok_or(())?;
        Ok(f[off as usize..off as usize + len as usize].to_vec())
    };
    for _ in 0..1000 {
        match fetch.step() {
            Step::Done(patch) => return Some(patch),
            Step::Want(reqs) => {
                for r in reqs {
                    let resp = serve(&[&index], &r, read);
                    fetch.on_response(&r, resp).expect("an honest answer holds");
                }
                if stop(&fetch.stats) {
                    return None;
                }
            }
        }
    }
    panic!("fetch never finished");
}

fn fetch_all(fetch: &mut StateFetch, files: &Files) -> StatePatch {
    fetch_until(fetch, files, |_| false).expect("runs to the end")
}

/// Fetches all of `remote` and checks that the patch turns `local` into it.
fn fetch_exactly(fetch: &mut StateFetch, local: &Files, remote: &Files) -> StatePatch {
    let patch = fetch_all(fetch, remote);
    let mut got = local.clone();
    apply_to_files(&mut got, &patch);
    assert_eq!(&got, remote);
    patch
}

fn big_state() -> Files {
    let mut f = Files::new();
    for i in 0..40 {
        f.insert(format!("data/{}/blob{i}", i % 4), vec![i as u8; 100_000]);
    }
    f.insert("top".into(), b"t".to_vec());
    f
}

#[test]
fn fetches_only_the_differing_files() {
    let local = big_state();
    let mut remote = local.clone();
    remote.insert("data/1/blob5".into(), vec![0xee; 1_300_000]); // 3 chunks
    remote.insert("data/new/x".into(), b"new".to_vec());
    remote.remove("data/2/blob2");
    remote.remove("top");
    let mut fetch = StateFetch::new(7, target_of(&remote), &tree(&local));
    let patch = fetch_exactly(&mut fetch, &local, &remote);
    assert_eq!(patch.seq, 7);
    assert_eq!(fetch.stats.files, 2);
    assert!(fetch.stats.bytes < 1_310_000, "{:?}", fetch.stats);
    // root, data, data/1, data/2, data/new; data/0 and data/3 are skipped
    assert_eq!(fetch.stats.dirs, 5);
}

#[test]
fn an_equal_state_needs_nothing() {
    let s = big_state();
    let mut fetch = StateFetch::new(1, target_of(&s), &tree(&s));
    let Step::Done(p) = fetch.step() else {
        panic!("nothing to fetch")
    };
    assert!(p.remove.is_empty() && p.files.is_empty());
}

#[test]
fn a_file_where_a_directory_was_replaces_it() {
    let mut local = Files::new();
    local.insert("a/b".into(), b"1".to_vec());
    let mut remote = Files::new();
    remote.insert("a".into(), b"2".to_vec());
    let mut fetch = StateFetch::new(1, target_of(&remote), &tree(&local));
    fetch_exactly(&mut fetch, &local, &remote);
}

#[test]
fn lies_are_rejected() {
    let local = Files::new();
    let remote = big_state();
    let mut fetch = StateFetch::new(1, target_of(&remote), &tree(&local));
    let root = target_of(&remote).state;
    let ask = StateRequest::Dir(root);
    let index = StateIndex::new(&tree(&remote));
    let entries = index.listing(&root).unwrap().clone();

    let mut changed = entries.clone();
    changed[0].1 = Entry::Dir(Hash([9; 32]));
    let lie = StateResponse::Dir {
        hash: root,
        entries: changed,
    };
    assert_eq!(fetch.on_response(&ask, lie), Err(FetchError::DirHash(root)));

    let mut evil = entries.clone();
    evil.insert(0, (b"..".to_vec(), Entry::Dir(Hash([1; 32]))));
    let lie = StateResponse::Dir {
        hash: root,
        entries: evil,
    };
    assert_eq!(fetch.on_response(&ask, lie), Err(FetchError::BadName));

    // An answer to something else is not an answer.
    let other = StateResponse::Dir {
        hash: Hash([3; 32]),
        entries: vec![],
    };
    assert_eq!(fetch.on_response(&ask, other), Err(FetchError::Unasked));

    // The true listing, then a file with forged bytes.
    let ok = StateResponse::Dir {
        hash: root,
        entries: entries.clone(),
    };
    assert_eq!(fetch.on_response(&ask, ok), Ok(()));
    let top = remote.get("top").unwrap();
    let digest: [u8; 32] = Sha256::digest(top).into();
    let ask = StateRequest::Chunk {
        digest,
        size: 1,
        offset: 0,
        len: 1,
    };
    let forged = StateResponse::Chunk {
        digest,
        offset: 0,
        bytes: b"x".to_vec(),
    };
    assert_eq!(fetch.on_response(&ask, forged), Err(FetchError::FileDigest));
    let long = StateResponse::Chunk {
        digest,
        offset: 0,
        bytes: b"tt".to_vec(),
    };
    assert!(matches!(
        fetch.on_response(&ask, long),
        Err(FetchError::ChunkLength { .. })
    ));
    let skewed = StateResponse::Chunk {
        digest,
        offset: 1,
        bytes: b"t".to_vec(),
    };
    assert!(matches!(
        fetch.on_response(&ask, skewed),
        Err(FetchError::ChunkOffset { .. })
    ));
    // Nothing false was kept: the fetch still completes and is exact.
    fetch_exactly(&mut fetch, &local, &remote);
}

#[test]
fn a_new_target_reuses_what_was_fetched() {
    let local = Files::new();
    let first = big_state();
    let mut fetch = StateFetch::new(1, target_of(&first), &tree(&local));
    // Everything of the first target arrives, but before the patch is
    // taken a newer ledger is certified.
    assert!(fetch_until(&mut fetch, &first, |s| s.files == 41).is_none());
    let before = fetch.stats;
    assert_eq!((before.files, before.dirs), (41, 6));
    let mut second = first.clone();
    second.insert("data/3/blob3".into(), b"changed".to_vec());
    fetch.retarget(2, target_of(&second));
    fetch_exactly(&mut fetch, &local, &second);
    assert_eq!(fetch.stats.files - before.files, 1);
    // root, data, data/3 listed again; nothing else
    assert_eq!(fetch.stats.dirs - before.dirs, 3);
}

#[test]
fn serving_says_missing_for_what_it_lacks() {
    let s = big_state();
    let index = StateIndex::new(&tree(&s));
    let read = |_: usize, _: &[u8], _: u64, _: u32| -> Result<Vec<u8>, ()> { Err(()) };
    let r = StateRequest::Dir(Hash([5; 32]));
    assert_eq!(
        serve(&[&index], &r, read),
        StateResponse::Missing(r.clone())
    );
    // A piece past the end of the file is never read.
    let digest: [u8; 32] = Sha256::digest(b"t").into();
    let r = StateRequest::Chunk {
        digest,
        size: 1,
        offset: 1,
        len: 1,
    };
    assert_eq!(
        serve(&[&index], &r, read),
        StateResponse::Missing(r.clone())
    );
}
