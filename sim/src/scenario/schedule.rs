//! When, and through which nodes, a table of users acts: the one schedule
//! honest `[[workload]]` and `[[byzantine_users]]` tables share, its fields
//! flattened into each.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `users` users (one per listed node when unset), each connected to one
/// of `nodes` (all nodes when empty) in turn; together they act once every
/// `every_ms` from `start_ms` until `stop_ms`, taking turns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    #[serde(default)]
    pub nodes: Vec<usize>,
    #[serde(default)]
    pub users: Option<usize>,
    pub every_ms: u64,
    #[serde(default)]
    pub start_ms: u64,
    pub stop_ms: u64,
}

/// The fields of a users table that no table has. Serde cannot refuse
/// unknown fields in a table another is flattened into, so they are kept
/// here and `Schedule::check` refuses them: a typo is never ignored.
pub type Unknown = BTreeMap<String, toml::Value>;

impl Schedule {
    /// What is wrong with table `table` whose other fields are `unknown`,
    /// in a network of `n` nodes.
    pub fn check(&self, table: &str, unknown: &Unknown, n: usize) -> Result<(), String> {
        if let Some(field) = unknown.keys().next() {
            return Err(format!("[[{table}]] has an unknown field `{field}`"));
        }
        if self.every_ms == 0 {
            return Err(format!("{table} every_ms must be positive"));
        }
        if self.users == Some(0) {
            return Err(format!("{table} users must be positive"));
        }
        match self.nodes.iter().find(|&&i| i >= n) {
            Some(i) => Err(format!(
                "{table} names node {i}, but there are only {n} nodes (0..{})",
                n - 1
            )),
            None => Ok(()),
        }
    }

    /// The node each of its users connects to, in a network of `n`.
    pub fn homes(&self, n: usize) -> Vec<usize> {
        let targets: Vec<usize> = if self.nodes.is_empty() {
            (0..n).collect()
        } else {
            self.nodes.clone()
        };
        let users = self.users.unwrap_or(targets.len());
        (0..users).map(|u| targets[u % targets.len()]).collect()
    }

    /// When it acts: the k-th action at `start_ms + k * every_ms`.
    pub fn times(&self) -> impl Iterator<Item = (u64, u64)> {
        let (start, stop, every) = (self.start_ms, self.stop_ms, self.every_ms);
        (0u64..)
            .map(move |k| (k, start + k * every))
            .take_while(move |&(_, t)| t < stop)
    }
}

/// Every user of `tables`, in order: (its table, the node it uses).
pub fn expand(tables: impl Iterator<Item = Schedule>, n: usize) -> Vec<(usize, usize)> {
    let per_table = tables.enumerate();
    let users = per_table.flat_map(|(i, s)| s.homes(n).into_iter().map(move |home| (i, home)));
    users.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_take_their_nodes_in_turn_and_act_until_the_stop() {
        let s = Schedule {
            nodes: vec![2, 4],
            users: Some(3),
            every_ms: 100,
            start_ms: 50,
            stop_ms: 300,
        };
        assert_eq!(s.homes(5), [2, 4, 2]);
        let all = Schedule {
            nodes: vec![],
            users: None,
            ..s.clone()
        };
        assert_eq!(all.homes(3), [0, 1, 2]);
        assert_eq!(s.times().collect::<Vec<_>>(), [(0, 50), (1, 150), (2, 250)]);
        let two = expand([s, all].into_iter(), 3);
        assert_eq!(two, [(0, 2), (0, 4), (0, 2), (1, 0), (1, 1), (1, 2)]);
    }
}
