//! The run description the node writes on the contract's stdin, in the
//! seed's JSON or the older `HOTPOCKET 0.1` text format.

use crate::SdkError;
use std::collections::BTreeMap;

/// What the node tells the contract about this run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description {
    /// Hash of the ledger being run, hex (empty in the text format).
    pub lcl: String,
    pub seq: u64,
    /// Ledger time, unix seconds.
    pub time: u64,
    /// This node's public key, hex.
    pub pubkey: String,
    pub unl: Vec<String>,
    /// The agreed random value, hex, when the beacon gives one.
    pub rand: Option<String>,
    /// Users with inputs in this ledger: pubkey hex -> (input fd, output fd).
    pub users: BTreeMap<String, (i32, i32)>,
    /// The node party line: (input fd, output fd). None in the text format
    /// and in descriptions from nodes without an NPL.
    pub npl: Option<(i32, i32)>,
    /// A 32-byte ed25519 signing seed for this node's contract, 64 hex,
    /// derived by the node from its key (never the node key itself). None
    /// from older nodes.
    pub contract_seed: Option<String>,
    /// A user's read request, not a ledger's run: what the contract writes
    /// to its state is thrown away, so it should answer without writing.
    pub readonly: bool,
    /// Users' fds carry messages, each a 4-byte big-endian length then its
    /// bytes (the node's `user_io: framed`), rather than one raw stream.
    /// [`crate::Run::messages`] and [`crate::Run::send`] read and write
    /// either way.
    pub framed: bool,
}

fn bad(m: &str) -> SdkError {
    SdkError::Description(m.to_string())
}

/// An `[in, out]` fd pair; fds outside i32 are refused rather than
/// truncated into some other fd.
fn fd_pair(v: &serde_json::Value, what: &str) -> Result<(i32, i32), SdkError> {
    let pair = v
        .as_array()
        .filter(|a| a.len() == 2)
        .ok_or_else(|| bad(&format!("{what} fds are not a pair")))?;
    let fd = |x: &serde_json::Value| {
        x.as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| bad(&format!("{what} fd is not a number")))
    };
    Ok((fd(&pair[0])?, fd(&pair[1])?))
}

fn parse_text(rest: &str) -> Result<Description, SdkError> {
    let mut users = BTreeMap::new();
    for line in rest.lines().filter(|l| !l.trim().is_empty()) {
        let (key, fds) = line
            .split_once('=')
            .ok_or_else(|| bad("text line without '='"))?;
        let (i, o) = fds
            .split_once(':')
            .ok_or_else(|| bad("text line without ':'"))?;
        let fd = |s: &str| {
            s.trim()
                .parse::<i32>()
                .map_err(|_| bad("fd is not a number"))
        };
        users.insert(key.to_string(), (fd(i)?, fd(o)?));
    }
    Ok(Description {
        users,
        ..Description::default()
    })
}

/// Parses the description the node wrote on stdin, in either format.
pub fn parse_description(text: &str) -> Result<Description, SdkError> {
    if let Some(rest) = text.strip_prefix("HOTPOCKET 0.1") {
        return parse_text(rest);
    }
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let s = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut users = BTreeMap::new();
    if let Some(m) = v.get("user").and_then(|u| u.as_object()) {
        for (k, fds) in m {
            users.insert(k.clone(), fd_pair(fds, "user")?);
        }
    }
    // Absent or null: no NPL. Present but malformed: the node is broken,
    // and guessing fds could make the contract read or write a user's fd.
    let npl = match v.get("npl") {
        None | Some(serde_json::Value::Null) => None,
        Some(p) => Some(fd_pair(p, "npl")?),
    };
    let contract_seed = match v.get("contract_seed") {
        None | Some(serde_json::Value::Null) => None,
        Some(x) => Some(
            x.as_str()
                .ok_or_else(|| bad("contract_seed is not a string"))?
                .to_string(),
        ),
    };
    // A framing this SDK does not know would be read as garbage.
    let framed = match v.get("user_io") {
        None => false,
        Some(x) if x == "raw" => false,
        Some(x) if x == "framed" => true,
        Some(other) => return Err(bad(&format!("unknown user_io {other}"))),
    };
    Ok(Description {
        lcl: s("lcl"),
        seq: v.get("seq").and_then(|x| x.as_u64()).unwrap_or_default(),
        time: s("time").parse().unwrap_or_default(),
        pubkey: s("pubkey"),
        unl: v
            .get("unl")
            .and_then(|u| u.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        rand: v.get("rand").and_then(|x| x.as_str()).map(String::from),
        users,
        npl,
        contract_seed,
        readonly: v.get("readonly").and_then(|x| x.as_bool()).unwrap_or(false),
        framed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats() {
        let d = parse_description(
            r#"{"hotpocket":0.1,"type":"binexec","lcl":"ab","seq":3,"time":"1568193881","pubkey":"cd","unl":["cd"],"npl":[29,28],"user":{"ee":[33,32]}}"#,
        )
        .unwrap();
        assert_eq!((d.seq, d.time, d.users["ee"]), (3, 1_568_193_881, (33, 32)));
        assert_eq!((d.npl, d.contract_seed), (Some((29, 28)), None));
        assert!(!d.readonly);
        let d = parse_description(r#"{"seq":3,"readonly":true,"user":{"ee":[33,32]}}"#).unwrap();
        assert!(d.readonly && !d.framed);
        let d = parse_description(r#"{"seq":3,"user_io":"framed","user":{}}"#).unwrap();
        assert!(d.framed);
        assert!(parse_description(r#"{"seq":3,"user_io":"cbor"}"#).is_err());
        assert!(parse_description(r#"{"seq":3,"user_io":1}"#).is_err());
        let d = parse_description("HOTPOCKET 0.1\nee=30:29\nff=34:33\n").unwrap();
        assert_eq!(d.users.len(), 2);
        assert_eq!(d.users["ff"], (34, 33));
        assert_eq!((d.npl, d.contract_seed), (None, None));
        assert!(parse_description("{nope").is_err());
        assert!(parse_description("HOTPOCKET 0.1\nee=x:1\n").is_err());
    }

    #[test]
    fn npl_and_contract_seed() {
        let seed = "11".repeat(32);
        let d = parse_description(&format!(
            r#"{{"seq":1,"npl":[5,6],"contract_seed":"{seed}","user":{{}}}}"#
        ))
        .unwrap();
        assert_eq!(d.npl, Some((5, 6)));
        assert_eq!(d.contract_seed.as_deref(), Some(seed.as_str()));
        // Older descriptions: neither field, or explicit nulls.
        let d = parse_description(r#"{"seq":1,"npl":null,"contract_seed":null}"#).unwrap();
        assert_eq!((d.npl, d.contract_seed), (None, None));
        for bad in [
            r#"{"npl":[5]}"#,
            r#"{"npl":[5,"6"]}"#,
            r#"{"npl":[5,4294967296]}"#,
            r#"{"npl":"5,6"}"#,
            r#"{"contract_seed":7}"#,
            r#"{"user":{"ee":[1,99999999999]}}"#,
        ] {
            assert!(
                matches!(parse_description(bad), Err(SdkError::Description(_))),
                "{bad}"
            );
        }
    }
}
