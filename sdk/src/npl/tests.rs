use super::*;
use crate::block_on;

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Every whole message the line yields until it times out.
fn drain(npl: &mut Npl<'_>) -> Result<Vec<(String, Vec<u8>)>, SdkError> {
    let mut got = Vec::new();
    while let Some(m) = block_on(npl.recv(10))? {
        got.push(m);
    }
    Ok(got)
}

fn framed(msgs: &[&[u8]]) -> Vec<u8> {
    msgs.iter()
        .flat_map(|m| frame_message(m).unwrap())
        .collect()
}

/// Two authors' framed streams cut into records of odd sizes, interleaved,
/// with an empty record between; and the messages they carry, per author.
fn sample() -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let big = vec![7u8; 300];
    let a = framed(&[b"hello", b"", &big]);
    let b = framed(&[b"world", b"x"]);
    let mut stream = Vec::new();
    let (mut ia, mut ib) = (0, 0);
    for (i, n) in [3usize, 1, 7, 2, 100, 5, 400, 9].iter().cycle().enumerate() {
        if ia == a.len() && ib == b.len() {
            break;
        }
        let (src, at, who) = if i % 2 == 0 {
            (&a, &mut ia, A)
        } else {
            (&b, &mut ib, B)
        };
        let end = (*at + n).min(src.len());
        stream.extend(encode_record(who, &src[*at..end]));
        *at = end;
        if i == 2 {
            stream.extend(encode_record(B, b""));
        }
    }
    let want = vec![
        (A.to_string(), b"hello".to_vec()),
        (A.to_string(), vec![]),
        (A.to_string(), big),
        (B.to_string(), b"world".to_vec()),
        (B.to_string(), b"x".to_vec()),
    ];
    (stream, want)
}

/// Messages grouped by author, order kept within each (the order across
/// authors depends on where the input was cut, which is fine).
fn per_author(mut msgs: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    msgs.sort_by(|x, y| x.0.cmp(&y.0));
    msgs
}

#[test]
fn records_parse_at_every_split_point() {
    let (stream, want) = sample();
    for cut in 0..=stream.len() {
        let mem = MemTransport::new();
        mem.push_input(&stream[..cut]);
        mem.push_input(&stream[cut..]);
        let mut npl = Npl::new(Box::new(mem));
        let got = per_author(drain(&mut npl).unwrap());
        assert_eq!(got, per_author(want.clone()), "cut at {cut}");
    }
    // And a byte at a time.
    let mem = MemTransport::new();
    for b in &stream {
        mem.push_input(std::slice::from_ref(b));
    }
    let mut npl = Npl::new(Box::new(mem));
    assert_eq!(per_author(drain(&mut npl).unwrap()), per_author(want));
}

#[test]
fn interleaved_authors_reassemble_whole_messages_in_order() {
    let (stream, want) = sample();
    let mem = MemTransport::new();
    mem.push_input(&stream);
    let mut npl = Npl::new(Box::new(mem));
    let got = drain(&mut npl).unwrap();
    // Each author's messages come whole and in its order, interleaved.
    let only = |who: &str| -> Vec<_> { got.iter().filter(|m| m.0 == who).cloned().collect() };
    assert_eq!(only(A), want[..3].to_vec());
    assert_eq!(only(B), want[3..].to_vec());
    assert_eq!(got[0], (A.to_string(), b"hello".to_vec()));
    // Upper-case keys in headers come out lower-case, as in the `unl`.
    let mem = MemTransport::new();
    mem.push_input(&encode_record(&A.to_uppercase(), &framed(&[b"hi"])));
    let mut npl = Npl::new(Box::new(mem));
    assert_eq!(
        drain(&mut npl).unwrap(),
        vec![(A.to_string(), b"hi".to_vec())]
    );
}

#[test]
fn malformed_headers_are_rejected() {
    let key = format!("Pubkey: {A}\n");
    let cases: Vec<Vec<u8>> = vec![
        b"Lenght: 3\n".to_vec(),
        b"Length: \n".to_vec(),
        b"Length: -3\n".to_vec(),
        b"Length: 3 \n".to_vec(),
        b"Length: 3\r\n".to_vec(),
        b"Length: 99999999999999999999999\n".to_vec(),
        b"length: 3\n".to_vec(),
        format!("Length: 3\nPubkey: {}\n\nabc", &A[1..]).into_bytes(),
        format!("Length: 3\nPubkey: {}g\n\nabc", &A[1..]).into_bytes(),
        format!("Length: 3\nPubkey: {A}0\n\nabc").into_bytes(),
        format!("Length: 3\n{key}x\nabc").into_bytes(),
        format!("Pubkey: {A}\nLength: 3\n\nabc").into_bytes(),
        vec![b'L'; 200],
        vec![0xff, b'\n'],
    ];
    for case in cases {
        let mem = MemTransport::new();
        mem.push_input(&case);
        mem.push_input(&encode_record(A, &framed(&[b"fine"])));
        let mut npl = Npl::new(Box::new(mem));
        let err = drain(&mut npl).unwrap_err();
        assert!(
            matches!(err, SdkError::Npl(NplError::BadRecord(_))),
            "{:?}: {err}",
            String::from_utf8_lossy(&case)
        );
        // The stream cannot be resynced: later reads fail too.
        assert!(drain(&mut npl).is_err());
    }
}

#[test]
fn oversize_messages_are_rejected() {
    let mut npl = Npl::new(Box::new(MemTransport::new()));
    let err = npl.send(&vec![0; MAX_MESSAGE + 1]).unwrap_err();
    assert!(matches!(
        err,
        SdkError::Npl(NplError::TooLarge { author: None, len }) if len == MAX_MESSAGE as u64 + 1
    ));
    assert!(npl.send(&vec![0; MAX_MESSAGE]).is_ok());

    // A peer announcing too much is cut off; the others go on.
    let mem = MemTransport::new();
    let huge = (MAX_MESSAGE as u32 + 1).to_be_bytes();
    mem.push_input(&encode_record(A, &huge));
    mem.push_input(&encode_record(B, &framed(&[b"ok"])));
    mem.push_input(&encode_record(A, &framed(&[b"later"])));
    let mut npl = Npl::new(Box::new(mem));
    assert_eq!(
        drain(&mut npl).unwrap(),
        vec![(B.to_string(), b"ok".to_vec())]
    );
    let broken = npl.broken_authors();
    assert_eq!(broken.keys().collect::<Vec<_>>(), vec![A]);
    assert!(broken[A].to_string().contains("over the limit"));
}

#[test]
fn send_frames_exactly() {
    let mem = MemTransport::new();
    let mut npl = Npl::new(Box::new(mem.clone()));
    npl.send(b"abc").unwrap();
    npl.send(b"").unwrap();
    assert_eq!(mem.take_output(), b"\0\0\0\x03abc\0\0\0\0".to_vec());
    npl.send(&[9; 258]).unwrap();
    let out = mem.output();
    assert_eq!((&out[..4], out.len()), (&[0, 0, 1, 2][..], 262));
    assert_eq!(
        encode_record(A, b"xy"),
        format!("Length: 2\nPubkey: {A}\n\nxy").into_bytes()
    );
}

#[test]
fn timeouts_follow_the_transport_clock() {
    let mem = MemTransport::new();
    let mut npl = Npl::new(Box::new(mem.clone()));
    // Half a message, then nothing: one deadline for the call.
    mem.push_input(&encode_record(A, &frame_message(b"abcd").unwrap()[..5]));
    assert_eq!(block_on(npl.recv(300)).unwrap(), None);
    assert_eq!(npl.now_ms(), 300);
    // The rest arrives; a timeout of 0 still takes what is there.
    mem.push_input(&encode_record(A, b"bcd"));
    assert_eq!(
        block_on(npl.recv(0)).unwrap(),
        Some((A.to_string(), b"abcd".to_vec()))
    );
    assert_eq!(npl.now_ms(), 300);

    // Without a party line the contract still runs, alone.
    let mut none = Npl::disconnected();
    none.send(b"into the void").unwrap();
    assert_eq!(block_on(none.recv(300)).unwrap(), None);
    assert_eq!(none.now_ms(), 300);
}

#[test]
fn fd_transport_reads_pipes_with_a_timeout() {
    let (in_r, mut in_w) = std::io::pipe().unwrap();
    let (out_r, out_w) = std::io::pipe().unwrap();
    let mut npl = Npl::new(Box::new(FdTransport::new(in_r.into(), out_w.into())));
    npl.send(b"ping").unwrap();
    let record = encode_record(B, &framed(&[b"pong"]));
    std::io::Write::write_all(&mut in_w, &record[..10]).unwrap();
    std::io::Write::write_all(&mut in_w, &record[10..]).unwrap();
    assert_eq!(
        block_on(npl.recv(5_000)).unwrap(),
        Some((B.to_string(), b"pong".to_vec()))
    );
    // Nothing more: the timeout passes on the real clock.
    let before = npl.now_ms();
    assert_eq!(block_on(npl.recv(50)).unwrap(), None);
    assert!(npl.now_ms() >= before + 50);
    // The node closes the line: None at once, every time.
    drop(in_w);
    assert_eq!(block_on(npl.recv(60_000)).unwrap(), None);
    assert_eq!(block_on(npl.recv(60_000)).unwrap(), None);
    drop(npl);
    let mut sent = Vec::new();
    std::io::Read::read_to_end(&mut std::io::BufReader::new(out_r), &mut sent).unwrap();
    assert_eq!(sent, framed(&[b"ping"]));
}

#[test]
fn arbitrary_input_never_panics() {
    // Valid records with bytes flipped, cut at odd points: every outcome
    // is messages, None or a BadRecord, never a panic.
    let (stream, _) = sample();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        let mut s = stream.clone();
        for _ in 0..3 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let at = (x >> 33) as usize % s.len();
            s[at] = (x >> 13) as u8;
        }
        let mem = MemTransport::new();
        let cut = (x >> 40) as usize % s.len();
        mem.push_input(&s[..cut]);
        mem.push_input(&s[cut..]);
        let mut npl = Npl::new(Box::new(mem));
        if let Err(e) = drain(&mut npl) {
            assert!(matches!(e, SdkError::Npl(NplError::BadRecord(_))), "{e}");
        }
    }
}
