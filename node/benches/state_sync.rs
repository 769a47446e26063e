//! How fast a node takes in fetched state on this machine, between two real
//! process hosts in one process (no network): serving reads pieces from
//! disk, fetching checks every listing and file, installing writes the
//! patch beside the state, hashes it and swaps it in.
//!
//! `cargo bench -p hotpocket-node --bench state_sync [-- FILES KIB_EACH CHANGED]`
// A bench times real work on the wall clock.
#![allow(clippy::disallowed_methods)]

#[path = "../tests/support/state.rs"]
mod support;

use hotpocket_node::env::ContractHost;
use hotpocket_node::real::contract_host::ProcessHost;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (files, kib, changed) = match args[..] {
        [f, m, c] => (f, m, c),
        _ => (64, 1024, 4),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = (support::dir("bench-a"), support::dir("bench-b"));
    let blob = |i: usize, salt: u8| -> Vec<u8> {
        (0..kib << 10)
            .map(|j| (j as u32).wrapping_mul(2_654_435_761).to_le_bytes()[0] ^ i as u8 ^ salt)
            .collect()
    };
    for i in 0..files {
        support::write(&a, &format!("d{}/f{i}", i % 8), &blob(i, 0));
    }
    let total = (files * kib) as f64 / 1024.0;
    // Fetches `src`'s state into `dst` and installs it: (what was fetched,
    // ms to fetch, ms to fetch and install).
    let sync = |src: &mut ProcessHost, dst: &mut ProcessHost, seq| {
        let t = Instant::now();
        let (patch, stats) = support::fetch(src, dst, seq);
        let fetched = t.elapsed().as_secs_f64() * 1e3;
        rt.block_on(dst.install_state(patch)).unwrap();
        (stats, fetched, t.elapsed().as_secs_f64() * 1e3)
    };
    let (mut src, mut dst) = (support::open(&a), support::open(&b));
    let (stats, fetched, all) = sync(&mut src, &mut dst, 1);
    println!(
        "full state, {files} files of {kib} KiB ({total:.0} MiB): fetched {} bytes in {fetched:.0} ms, installed after {all:.0} ms: {:.0} MiB/s",
        stats.bytes,
        total * 1e3 / all
    );

    for i in 0..changed {
        support::write(&a, &format!("d{}/f{i}", i % 8), &blob(i, 1));
    }
    drop(src);
    // Changed behind the host's back: it would refuse the directory.
    std::fs::remove_file(support::sibling(&a, "ran")).unwrap();
    let mut src = support::open(&a);
    let (stats, fetched, all) = sync(&mut src, &mut dst, 2);
    println!(
        "{changed} of {files} files changed: fetched {} bytes ({} files, {} listings) in {fetched:.0} ms, installed after {all:.0} ms",
        stats.bytes, stats.files, stats.dirs,
    );
    support::remove(&a);
    support::remove(&b);
}
