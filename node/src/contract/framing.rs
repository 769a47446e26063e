//! How a user's inputs and outputs cross the contract's fds: as one raw
//! byte stream (the prototype's, the default), or as messages, each a
//! 4-byte big-endian length then its bytes, so a message's boundaries
//! survive the fd (hpcore's contracts write outputs so).

/// Most messages one user may get from one framed run: past it the run
/// is over its output limit (the same on every node, as the bytes are).
/// A bound in messages as well as bytes, as each message costs a
/// websocket frame, a string in the output tree and a queue slot: 16 MiB
/// of empty frames would be four million of them.
pub const MAX_MESSAGES: usize = 512;

/// What a user's fds carry. A network setting: a run's outputs are read
/// by it, so two nodes set otherwise disagree on the run's output hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserIo {
    /// One stream each way: the inputs laid end to end, the output
    /// whatever the contract wrote, handed to the user as one message.
    #[default]
    Raw,
    /// Length-prefixed messages each way.
    Framed,
}

impl UserIo {
    /// What goes before a message of `len` bytes on a user's input fd.
    pub fn header(self, len: usize) -> Option<[u8; 4]> {
        // An input is bounded far below 4 GiB (`pubmaxsize`, 2 MiB at
        // most), so its length always fits.
        (self == UserIo::Framed).then(|| u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes())
    }

    /// `msg` as it goes on a user's input fd.
    pub fn put(self, msg: &[u8], out: &mut Vec<u8>) {
        if let Some(h) = self.header(msg.len()) {
            out.extend_from_slice(&h);
        }
        out.extend_from_slice(msg);
    }

    /// The messages in what a contract wrote to one user's output fd. Raw,
    /// all of it is one message (none when it wrote nothing); framed, the
    /// whole frames in it, in order, and a frame cut short at the end is
    /// dropped: every node reads the same bytes the same way.
    pub fn messages(self, bytes: &[u8]) -> Vec<&[u8]> {
        match self {
            UserIo::Raw if bytes.is_empty() => vec![],
            UserIo::Raw => vec![bytes],
            UserIo::Framed => {
                let mut msgs = Vec::new();
                let mut rest = bytes;
                while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                    let len = u32::from_be_bytes(*len) as usize;
                    if tail.len() < len {
                        break;
                    }
                    let (msg, tail) = tail.split_at(len);
                    msgs.push(msg);
                    rest = tail;
                }
                msgs
            }
        }
    }

    /// Whether `bytes` holds more messages than one user may get.
    pub fn too_many(self, bytes: &[u8]) -> bool {
        self == UserIo::Framed && self.messages(bytes).len() > MAX_MESSAGES
    }

    /// Bytes at the end of `bytes` that are not part of a whole frame.
    pub fn torn_tail(self, bytes: &[u8]) -> usize {
        let whole: usize = (self.messages(bytes).iter())
            .map(|m| m.len() + if self == UserIo::Framed { 4 } else { 0 })
            .sum();
        bytes.len() - whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_messages_keep_their_boundaries_both_ways() {
        let mut fd = Vec::new();
        for m in [&b"set a 1"[..], b"", b"get a"] {
            UserIo::Framed.put(m, &mut fd);
        }
        assert_eq!(&fd[..4], &[0, 0, 0, 7]);
        let msgs = UserIo::Framed.messages(&fd);
        assert_eq!(msgs, vec![&b"set a 1"[..], b"", b"get a"]);
        assert_eq!(UserIo::Framed.torn_tail(&fd), 0);
    }

    #[test]
    fn a_torn_last_frame_is_dropped_and_counted() {
        let mut fd = Vec::new();
        UserIo::Framed.put(b"whole", &mut fd);
        fd.extend_from_slice(&[0, 0, 0, 9, b'c', b'u', b't']);
        assert_eq!(UserIo::Framed.messages(&fd), vec![&b"whole"[..]]);
        assert_eq!(UserIo::Framed.torn_tail(&fd), 7);
        // Not even a whole length.
        assert_eq!(UserIo::Framed.messages(&[0, 0]), Vec::<&[u8]>::new());
        assert_eq!(UserIo::Framed.torn_tail(&[0, 0]), 2);
        // A length far past the end reads nothing beyond it.
        assert!(UserIo::Framed.messages(&[255, 255, 255, 255, 1]).is_empty());
    }

    #[test]
    fn more_messages_than_a_user_may_get_are_too_many() {
        let mut fd = Vec::new();
        for _ in 0..MAX_MESSAGES {
            UserIo::Framed.put(b"", &mut fd);
        }
        assert!(!UserIo::Framed.too_many(&fd));
        UserIo::Framed.put(b"", &mut fd);
        assert!(UserIo::Framed.too_many(&fd));
        assert!(!UserIo::Raw.too_many(&fd), "raw is one message");
    }

    #[test]
    fn raw_is_one_stream() {
        let mut fd = Vec::new();
        UserIo::Raw.put(b"ab", &mut fd);
        UserIo::Raw.put(b"c", &mut fd);
        assert_eq!(fd, b"abc");
        assert_eq!(UserIo::Raw.messages(&fd), vec![&b"abc"[..]]);
        assert!(UserIo::Raw.messages(b"").is_empty());
        assert_eq!(UserIo::Raw.torn_tail(&fd), 0);
    }
}
