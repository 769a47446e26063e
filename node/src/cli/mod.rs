//! The `hotpocket` command's tools beyond running one node: a local
//! cluster, a websocket client, a node's status, a load bench and a memory
//! bench under attack. They drive real node processes from outside, so they live apart
//! from the runtime in `real/`.
// Tools that time and drive real processes from outside.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod bench;
mod bench_hp;
pub mod bench_memory;
pub mod client;
pub mod client_hp;
pub mod cluster;
pub mod signals;
pub mod status;

/// An error and its causes as one line, `outer: cause: root`, leaving out
/// a cause whose text the message before already holds. Many errors embed
/// their source in their own message (`#[error("I/O: {0}")]` with
/// `#[from]`, tungstenite's among them), and anyhow's `{:#}` then prints
/// it twice: "Connection refused (os error 111): Connection refused (os
/// error 111)".
pub fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !last.is_empty() && last.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        last = text;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::report;

    #[derive(Debug, thiserror::Error)]
    #[error("I/O: {0}")]
    struct Embeds(#[from] std::io::Error);

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::from_raw_os_error(111);
        let e = anyhow::Error::from(Embeds(io)).context("connecting to ws://x");
        let root = std::io::Error::from_raw_os_error(111).to_string();
        // anyhow's own `{:#}` says it twice.
        assert_eq!(format!("{e:#}").matches(&root).count(), 2);
        assert_eq!(report(&e), format!("connecting to ws://x: I/O: {root}"));
    }

    #[test]
    fn distinct_causes_are_all_kept() {
        let e = anyhow::anyhow!("root").context("middle").context("outer");
        assert_eq!(report(&e), "outer: middle: root");
    }
}
