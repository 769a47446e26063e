//! A contract's state directory on disk: hashing it, and copying it.

use crate::contract::StateNode;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Reads the tree under `root`. Only regular files, directories and symlinks
/// (hashed by target, never followed) may be in it; anything else (a socket,
/// a device) is an error, since it has no content to agree on. Empty
/// directories are left out: state is its files.
pub fn scan(root: &Path) -> std::io::Result<StateNode> {
    let meta = std::fs::symlink_metadata(root)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = std::fs::read_link(root)?;
        return Ok(StateNode::Symlink {
            target: target.as_os_str().as_bytes().to_vec(),
        });
    }
    if kind.is_file() {
        let mut f = std::fs::File::open(root)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        return Ok(StateNode::File {
            size,
            digest: hasher.finalize().into(),
        });
    }
    if kind.is_dir() {
        let mut children = BTreeMap::new();
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let child = scan(&entry.path())?;
            if !matches!(&child, StateNode::Dir { children } if children.is_empty()) {
                children.insert(entry.file_name().as_bytes().to_vec(), child);
            }
        }
        return Ok(StateNode::Dir { children });
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "{} is neither a file, a directory nor a symlink",
            root.display()
        ),
    ))
}

/// Brings `snap` from `old` (what it held, if known) to `cur` (what `dir`
/// holds), copying only the paths that differ: creating files is what costs.
pub fn refresh_snapshot(
    dir: &Path,
    snap: &Path,
    old: Option<StateNode>,
    cur: &StateNode,
) -> io::Result<()> {
    match old {
        Some(old) if snap.is_dir() => {
            for p in old.differing_paths(cur) {
                let rel = Path::new(OsStr::from_bytes(&p));
                let (src, dst) = (dir.join(rel), snap.join(rel));
                let from = std::fs::symlink_metadata(&src).ok();
                let to = std::fs::symlink_metadata(&dst).ok();
                match (from, to) {
                    // Rewriting a file in place creates nothing.
                    (Some(f), Some(t)) if f.is_file() && t.is_file() => {
                        std::fs::copy(&src, &dst)?;
                    }
                    (Some(_), _) => {
                        remove_any(&dst)?;
                        if let Some(parent) = dst.parent() {
                            std::fs::create_dir_all(parent)?;
                        }
                        copy_tree(&src, &dst)?;
                    }
                    (None, _) => remove_any(&dst)?,
                }
            }
            Ok(())
        }
        _ => {
            remove_any(snap)?;
            copy_tree(dir, snap)
        }
    }
}

pub fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies a state tree: files, directories and symlinks (not followed).
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let kind = std::fs::symlink_metadata(from)?.file_type();
    if kind.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)
    } else if kind.is_dir() {
        std::fs::create_dir(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("hp-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn two_equal_directories_hash_equal_and_a_change_shows() {
        let (a, b) = (tmpdir("a"), tmpdir("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
            std::fs::write(d.join("sub/x"), vec![7u8; 200_000]).unwrap();
            std::fs::write(d.join("y"), b"y").unwrap();
            std::os::unix::fs::symlink("sub/x", d.join("link")).unwrap();
        }
        let (ta, tb) = (scan(&a).unwrap(), scan(&b).unwrap());
        assert_eq!(ta.hash(), tb.hash());
        std::fs::write(b.join("sub/x"), vec![8u8; 200_000]).unwrap();
        let tb = scan(&b).unwrap();
        assert_ne!(ta.hash(), tb.hash());
        assert_eq!(ta.differing_paths(&tb), vec![b"sub/x".to_vec()]);
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        assert!(scan(Path::new("/no/such/state/dir")).is_err());
    }
}
