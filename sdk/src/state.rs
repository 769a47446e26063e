//! The contract's persistent state: the state directory on disk for a real
//! run, a map in memory for the simulator.

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The contract's persistent state: files under relative paths.
pub trait State {
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>>;
    fn write(&mut self, path: &str, data: &[u8]) -> io::Result<()>;
    fn remove(&mut self, path: &str) -> io::Result<()>;
}

/// Refuses absolute paths and `..`, so a contract cannot leave its state.
fn checked(path: &str) -> io::Result<&Path> {
    let p = Path::new(path);
    if path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("state path {path:?} must be relative and plain"),
        ));
    }
    Ok(p)
}

/// State in a directory on disk (the real node's state directory).
pub struct DirState(pub PathBuf);

impl State for DirState {
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.0.join(checked(path)?)) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn write(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let p = self.0.join(checked(path)?);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(p, data)
    }
    fn remove(&mut self, path: &str) -> io::Result<()> {
        match std::fs::remove_file(self.0.join(checked(path)?)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// State in memory: relative path -> bytes (the simulator's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemState(pub BTreeMap<String, Vec<u8>>);

impl State for MemState {
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        checked(path)?;
        Ok(self.0.get(path).cloned())
    }
    fn write(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        checked(path)?;
        self.0.insert(path.to_string(), data.to_vec());
        Ok(())
    }
    fn remove(&mut self, path: &str) -> io::Result<()> {
        checked(path)?;
        self.0.remove(path);
        Ok(())
    }
}

/// What a run wrote, by path: the new bytes, or `None` for removed.
pub type Changes = BTreeMap<String, Option<Vec<u8>>>;

impl MemState {
    /// Makes `changes`; returns what they replaced (the bytes each path
    /// held before, `None` where there was no file), which undoes them.
    pub fn apply(&mut self, changes: &Changes) -> Changes {
        changes
            .iter()
            .map(|(path, bytes)| {
                let before = match bytes {
                    Some(b) => self.0.insert(path.clone(), b.clone()),
                    None => self.0.remove(path),
                };
                (path.clone(), before)
            })
            .collect()
    }
}

/// A state that reads through to `base` and keeps what is written apart:
/// a run over it changes nothing else, and its writes come out as
/// [`Changes`] without a copy of the rest (the simulator's runs, whose
/// states hold hundreds of files of which a run touches a few).
pub struct Overlay<'a> {
    base: &'a MemState,
    changes: Changes,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a MemState) -> Overlay<'a> {
        Overlay {
            base,
            changes: Changes::new(),
        }
    }
    pub fn into_changes(self) -> Changes {
        self.changes
    }
}

impl State for Overlay<'_> {
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        checked(path)?;
        Ok(match self.changes.get(path) {
            Some(changed) => changed.clone(),
            None => self.base.0.get(path).cloned(),
        })
    }
    fn write(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        checked(path)?;
        self.changes.insert(path.to_string(), Some(data.to_vec()));
        Ok(())
    }
    fn remove(&mut self, path: &str) -> io::Result<()> {
        checked(path)?;
        self.changes.insert(path.to_string(), None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_paths_cannot_escape() {
        let mut m = MemState::default();
        for p in ["../x", "/etc/passwd", "", "a/../../b"] {
            assert!(m.write(p, b"x").is_err(), "{p}");
        }
        m.write("kv/a", b"1").unwrap();
        assert_eq!(m.read("kv/a").unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn an_overlay_reads_through_and_keeps_its_writes_apart() {
        let mut base = MemState::default();
        base.write("kv/a", b"1").unwrap();
        base.write("kv/b", b"2").unwrap();
        let mut o = Overlay::new(&base);
        assert!(o.write("../x", b"x").is_err());
        o.write("kv/a", b"9").unwrap();
        o.remove("kv/b").unwrap();
        o.write("kv/c", b"3").unwrap();
        assert_eq!(o.read("kv/a").unwrap(), Some(b"9".to_vec()));
        assert_eq!(o.read("kv/b").unwrap(), None);
        assert_eq!(o.read("kv/c").unwrap(), Some(b"3".to_vec()));
        let changes = o.into_changes();
        assert_eq!(base.read("kv/a").unwrap(), Some(b"1".to_vec()));
        // The same run on a copy ends where base + changes does.
        let mut copy = base.clone();
        copy.write("kv/a", b"9").unwrap();
        copy.remove("kv/b").unwrap();
        copy.write("kv/c", b"3").unwrap();
        let mut applied = base.clone();
        let undo = applied.apply(&changes);
        assert_eq!(applied, copy);
        applied.apply(&undo);
        assert_eq!(applied, base, "what apply replaced undoes it");
    }
}
