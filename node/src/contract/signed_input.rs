//! An input its user signed (hpcore's `contract_input`): the container text
//! the user signed, as sent, and the signature. Every node checks both, and
//! the container's `max_ledger_seq_no`, when it runs a ledger holding one,
//! so no node can run an input in a user's name it did not get from that
//! user, and an input late for its ledger is skipped the same everywhere.

use crate::crypto::{verify_raw, PubKey, Sig};
use serde::{Deserialize, Serialize};

/// Marks a signed input's encoding apart from a vouched `UserInput`, which
/// starts with its user's key: a key beginning with these 28 bytes cannot
/// be found.
const MAGIC: &[u8] = b"\0hotpocket/signed-input/v1\0\0";

/// The body the UNL agrees on for a signed input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedInput {
    pub user: PubKey,
    /// `{"input": "...", "nonce": N, "max_ledger_seq_no": M}`, the exact
    /// text the user signed.
    pub container: String,
    pub sig: Sig,
}

/// What a signed input's container says.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub input: String,
    /// Orders one user's inputs; hpcore's client sends its clock in ms.
    pub nonce: u64,
    /// The last ledger the input may run in.
    pub max_ledger_seq_no: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignedInputError {
    #[error("the signature does not verify over the input container")]
    BadSig,
    #[error("the input container is not {{input, nonce, max_ledger_seq_no}}: {0}")]
    BadContainer(String),
}

impl SignedInput {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, MAGIC.to_vec()).expect("encoding to memory cannot fail")
    }

    /// `None` for anything that is not exactly one encoded signed input.
    pub fn decode(bytes: &[u8]) -> Option<SignedInput> {
        SignedInput::decode_marked(bytes)?.ok()
    }

    /// `None` for bytes without the signed kind's mark; for marked bytes,
    /// the input, or `Err` when the rest is not exactly one.
    pub fn decode_marked(bytes: &[u8]) -> Option<Result<SignedInput, ()>> {
        let rest = bytes.strip_prefix(MAGIC)?;
        Some(match postcard::take_from_bytes::<SignedInput>(rest) {
            Ok((input, [])) => Ok(input),
            _ => Err(()),
        })
    }

    /// The container, once the user's signature over it holds.
    pub fn open(&self) -> Result<Container, SignedInputError> {
        verify_raw(&self.user, self.container.as_bytes(), &self.sig)
            .map_err(|_| SignedInputError::BadSig)?;
        serde_json::from_str(&self.container)
            .map_err(|e| SignedInputError::BadContainer(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::UserInput;
    use crate::crypto::Keypair;

    fn signed(key: &Keypair, container: &str) -> SignedInput {
        SignedInput {
            user: key.public(),
            container: container.to_string(),
            sig: key.sign_raw(container.as_bytes()),
        }
    }

    #[test]
    fn a_signed_input_round_trips_and_opens_only_with_its_signature() {
        let key = Keypair::from_seed([7; 32]);
        let c = r#"{"input":"hi \"there\"\n","nonce":1796615458760,"max_ledger_seq_no":17}"#;
        let s = signed(&key, c);
        let bytes = s.encode();
        assert_eq!(SignedInput::decode(&bytes), Some(s.clone()));
        assert!(
            UserInput::decode(&bytes).is_none(),
            "never read as a vouched input"
        );
        let opened = s.open().unwrap();
        assert_eq!(opened.input, "hi \"there\"\n");
        assert_eq!(
            (opened.nonce, opened.max_ledger_seq_no),
            (1796615458760, 17)
        );

        let mut other = s.clone();
        other.user = Keypair::from_seed([8; 32]).public();
        assert_eq!(other.open(), Err(SignedInputError::BadSig));
        let mut edited = s.clone();
        edited.container = c.replace("17", "18");
        assert_eq!(edited.open(), Err(SignedInputError::BadSig));
        let mut long = bytes.clone();
        long.push(0);
        assert!(SignedInput::decode(&long).is_none());
    }

    #[test]
    fn a_container_must_have_exactly_its_three_fields() {
        let key = Keypair::from_seed([7; 32]);
        for bad in [
            r#"{"input":"x","nonce":1}"#,
            r#"{"input":"x","nonce":1,"max_ledger_seq_no":2,"more":3}"#,
            r#"{"input":5,"nonce":1,"max_ledger_seq_no":2}"#,
            "not json",
        ] {
            assert!(matches!(
                signed(&key, bad).open(),
                Err(SignedInputError::BadContainer(_))
            ));
        }
    }
}
