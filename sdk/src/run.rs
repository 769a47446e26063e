//! One run as a contract sees it, and the traits contracts implement.

use crate::{Description, Npl, SdkError, State};
use std::collections::BTreeMap;
use std::future::Future;

/// One run as the contract sees it.
pub struct Run<'a> {
    pub description: Description,
    inputs: BTreeMap<String, Vec<u8>>,
    outputs: BTreeMap<String, Vec<u8>>,
    pub state: &'a mut dyn State,
}

impl<'a> Run<'a> {
    /// A run with these inputs (user pubkey hex -> bytes) over `state`, as
    /// the simulator gives it.
    pub fn in_memory(
        description: Description,
        inputs: BTreeMap<String, Vec<u8>>,
        state: &'a mut dyn State,
    ) -> Run<'a> {
        Run {
            description,
            inputs,
            outputs: BTreeMap::new(),
            state,
        }
    }

    /// Users with inputs in this run, in key order.
    pub fn users(&self) -> Vec<String> {
        self.inputs.keys().cloned().collect()
    }

    /// Everything `user` sent for this ledger.
    pub fn input(&self, user: &str) -> &[u8] {
        self.inputs.get(user).map_or(&[], |v| v.as_slice())
    }

    /// `user`'s inputs one message each: with framed user I/O
    /// ([`Description::framed`]) each input the user sent, in ledger
    /// order; raw, everything it sent as one message (none if nothing).
    pub fn messages(&self, user: &str) -> Result<Vec<&[u8]>, SdkError> {
        let mut rest = self.input(user);
        if !self.description.framed {
            return Ok(if rest.is_empty() { vec![] } else { vec![rest] });
        }
        let mut msgs = Vec::new();
        while !rest.is_empty() {
            let torn = || SdkError::Framing(format!("{user}'s input ends inside a message"));
            let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(torn)?;
            let len = u32::from_be_bytes(*len) as usize;
            if tail.len() < len {
                return Err(torn());
            }
            let (msg, tail) = tail.split_at(len);
            msgs.push(msg);
            rest = tail;
        }
        Ok(msgs)
    }

    /// Sends `user` one message: framed, the user receives it whole and
    /// apart from the others; raw, it is appended to the one output.
    pub fn send(&mut self, user: &str, msg: &[u8]) -> Result<(), SdkError> {
        if self.description.framed {
            let len = u32::try_from(msg.len()).map_err(|_| {
                SdkError::Framing(format!("a message of {} bytes is too long", msg.len()))
            })?;
            self.output(user, &len.to_be_bytes());
        }
        self.output(user, msg);
        Ok(())
    }

    /// Appends to what `user` receives once the run is certified, bytes as
    /// they are ([`Run::send`] frames a message when the I/O is framed).
    pub fn output(&mut self, user: &str, data: &[u8]) {
        self.outputs
            .entry(user.to_string())
            .or_default()
            .extend_from_slice(data);
    }

    pub fn into_outputs(self) -> BTreeMap<String, Vec<u8>> {
        self.outputs
    }
}

pub trait Contract {
    fn run(&mut self, run: &mut Run<'_>) -> Result<(), SdkError>;
}

/// A contract that talks to its copies on the other UNL nodes during the
/// run. Async so the simulator can run it on simulated time; a binary
/// drives it with [`crate::main_npl`]. Implement it with `async fn run`.
pub trait NplContract {
    fn run(
        &mut self,
        run: &mut Run<'_>,
        npl: &mut Npl<'_>,
    ) -> impl Future<Output = Result<(), SdkError>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemState;

    fn run<'a>(framed: bool, input: &[u8], state: &'a mut MemState) -> Run<'a> {
        let description = Description {
            framed,
            ..Description::default()
        };
        let inputs = BTreeMap::from([("ee".to_string(), input.to_vec())]);
        Run::in_memory(description, inputs, state)
    }

    #[test]
    fn framed_messages_in_and_out() {
        let mut state = MemState::default();
        let mut r = run(true, b"\0\0\0\x02hi\0\0\0\0\0\0\0\x01!", &mut state);
        assert_eq!(r.messages("ee").unwrap(), vec![&b"hi"[..], b"", b"!"]);
        assert!(r.messages("nobody").unwrap().is_empty());
        r.send("ee", b"ok").unwrap();
        r.send("ee", b"").unwrap();
        assert_eq!(r.into_outputs()["ee"], b"\0\0\0\x02ok\0\0\0\0");
        let mut state = MemState::default();
        let r = run(true, b"\0\0\0\x05hi", &mut state);
        assert!(matches!(r.messages("ee"), Err(SdkError::Framing(_))));
    }

    #[test]
    fn raw_is_one_message_and_one_output() {
        let mut state = MemState::default();
        let mut r = run(false, b"set a 1\nget a\n", &mut state);
        assert_eq!(r.messages("ee").unwrap(), vec![&b"set a 1\nget a\n"[..]]);
        r.send("ee", b"ok a\n").unwrap();
        r.send("ee", b"1\n").unwrap();
        assert_eq!(r.into_outputs()["ee"], b"ok a\n1\n");
        let mut state = MemState::default();
        let r = run(false, b"", &mut state);
        assert!(r.messages("ee").unwrap().is_empty());
    }
}
