//! Exact bytes on the wire, and hostile frames.

use super::*;

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn snap(m: Message, expected: &str) {
    assert_eq!(hex(&enc(&m)), expected, "{m:?}");
    assert_eq!(dec_all(&enc(&m)).unwrap(), vec![m]);
}

/// The wire format is a contract between host and agent builds: a change
/// here must bump VERSION.
#[test]
fn wire_snapshots() {
    snap(
        Message::Hello {
            min_version: 2,
            max_version: 2,
            features: 0x1f,
            window: 256 * 1024,
        },
        "16 00 00 00 02 00 00 00 00 00 \
         02 00 02 00 1f 00 00 00 00 00 00 00 00 00 04 00",
    );
    snap(
        Message::HelloAck {
            version: 2,
            features: 1,
            window: 4096,
            agent_version: "a1".into(),
        },
        "1a 00 00 00 03 00 00 00 00 00 \
         02 00 01 00 00 00 00 00 00 00 00 10 00 00 02 00 00 00 61 31",
    );
    snap(Message::Shutdown, "06 00 00 00 09 00 00 00 00 00");
    snap(
        Message::ProcOutput {
            id: 5,
            stream: OutStream::Stderr,
            data: b"hi".to_vec(),
        },
        "09 00 00 00 15 00 05 00 00 00 02 68 69",
    );
    snap(
        Message::Credit {
            id: 0x8000_0001,
            stream: StreamKind::Tcp,
            bytes: 65536,
        },
        "0b 00 00 00 0b 00 01 00 00 80 05 00 00 01 00",
    );
    snap(
        Message::ProcExited {
            id: 7,
            status: ExitStatus::Signal(9),
            max_rss_kib: 1024,
        },
        "10 00 00 00 19 00 07 00 00 00 01 09 00 04 00 00 00 00 00 00",
    );
    snap(
        Message::TcpOffer {
            id: 0x8000_0002,
            dest: Destination::Name("example.com".into()),
            port: 443,
        },
        "18 00 00 00 36 00 02 00 00 80 bb 01 00 0b 00 00 00 \
         65 78 61 6d 70 6c 65 2e 63 6f 6d",
    );
    snap(
        Message::TcpConnect {
            id: 9,
            addr: "127.0.0.1".parse().unwrap(),
            port: 8080,
        },
        "0d 00 00 00 30 00 09 00 00 00 90 1f 04 7f 00 00 01",
    );
    snap(
        Message::FileDone {
            id: 3,
            result: Err(FsError {
                errno: 2,
                text: "nope".into(),
            }),
        },
        "13 00 00 00 2d 00 03 00 00 00 01 02 00 00 00 04 00 00 00 6e 6f 70 65",
    );
    snap(
        Message::ProcStart {
            id: 1,
            argv: vec![b"sh".to_vec(), b"-c".to_vec()],
            env: vec![b"A=1".to_vec()],
            cwd: b"/".to_vec(),
            uid: 1000,
            gid: 1000,
            pty: Some(WinSize { rows: 24, cols: 80 }),
            stdin: StdinMode::Pipe,
        },
        "34 00 00 00 10 00 01 00 00 00 \
         e8 03 00 00 e8 03 00 00 01 01 18 00 50 00 \
         01 00 00 00 2f \
         02 00 00 00 02 00 00 00 73 68 02 00 00 00 2d 63 \
         01 00 00 00 03 00 00 00 41 3d 31",
    );
    snap(
        Message::FileStatResult {
            id: 4,
            stat: Stat {
                kind: FileKind::Dir,
                mode: 0o755,
                size: 4096,
                mtime_sec: -1,
                mtime_nsec: 5,
                uid: 0,
                gid: 100,
            },
        },
        "27 00 00 00 2e 00 04 00 00 00 \
         02 ed 01 00 00 00 10 00 00 00 00 00 00 ff ff ff ff ff ff ff ff \
         05 00 00 00 00 00 00 00 64 00 00 00",
    );
}

#[test]
fn fragmented_plan_snapshot() {
    let m = Message::Plan {
        data: vec![7; MAX_BODY + 1],
    };
    let b = enc(&m);
    assert_eq!(b.len(), 2 * HEADER_LEN + MAX_BODY + 1);
    // First fragment: full, MORE.
    assert_eq!(hex(&b[..10]), "fc ff 00 00 04 01 00 00 00 00");
    // Last fragment: CONT, one byte.
    let last = &b[HEADER_LEN + MAX_BODY..];
    assert_eq!(hex(last), "07 00 00 00 04 02 00 00 00 00 07");
    assert_eq!(dec_all(&b).unwrap(), vec![m]);
}

fn frame(kind: u8, flags: u8, id: u32, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 6) as u32).to_le_bytes().to_vec();
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(body);
    v
}

fn decode_one(b: &[u8]) -> Result<Message, WireError> {
    let f = Frame::decode(b)?;
    Message::decode(f.kind, f.id, f.body)
}

#[test]
fn hostile_headers() {
    use WireError::*;
    let ok = frame(Kind::Ready as u8, 0, 0, &[]);
    assert_eq!(decode_one(&ok), Ok(Message::Ready));
    // A v1 frame: [len][version 1][kind].
    assert_eq!(
        decode_one(&[2, 0, 0, 0, 1, 1]),
        Err(FrameTooShort { len: 6 })
    );
    assert_eq!(
        decode_one(&frame(1, 0, 0, &[])),
        Err(V1Frame),
        "version byte 1 in the kind position"
    );
    assert_eq!(
        decode_one(&frame(0, 0, 0, &[])),
        Err(UnknownKind { kind: 0 })
    );
    assert_eq!(
        decode_one(&frame(200, 0, 0, &[])),
        Err(UnknownKind { kind: 200 })
    );
    assert!(matches!(
        decode_one(&frame(Kind::Ready as u8, 0x80, 0, &[])),
        Err(ReservedFlags { .. })
    ));
    assert!(matches!(
        decode_one(&frame(Kind::Ready as u8, FLAG_MORE, 0, &[])),
        Err(NotFragmentable { .. })
    ));
    assert!(matches!(
        decode_one(&frame(Kind::Ready as u8, 0, 3, &[])),
        Err(NonZeroId { id: 3, .. })
    ));
    assert!(matches!(
        decode_one(&frame(Kind::ProcEof as u8, 0, 0, &[1])),
        Err(BadId { id: 0, .. })
    ));
    assert!(matches!(
        decode_one(&frame(Kind::ProcEof as u8, 0, AGENT_ID_BIT | 1, &[1])),
        Err(BadId { .. })
    ));
    assert!(matches!(
        decode_one(&frame(Kind::TcpAccept as u8, 0, 5, &[])),
        Err(BadId { .. })
    ));
    let mut lie = ok.clone();
    lie[0] = 7;
    assert_eq!(
        decode_one(&lie),
        Err(LengthMismatch {
            claimed: 7,
            actual: 6
        })
    );
    assert_eq!(decode_one(&ok[..9]), Err(FrameTooShort { len: 9 }));
    let big = frame(Kind::Plan as u8, 0, 0, &vec![0; MAX_BODY + 1]);
    assert!(matches!(decode_one(&big), Err(FrameTooLarge { .. })));
    // A length field too large is refused from its four bytes alone.
    let mut sf = StreamFramer::new();
    sf.push(&u32::MAX.to_le_bytes());
    assert!(matches!(sf.next_frame(), Err(FrameTooLarge { .. })));
    assert!(sf.next_frame().is_err(), "framing errors are sticky");
    let mut sf = StreamFramer::new();
    sf.push(&[3, 0, 0, 0]);
    assert!(matches!(sf.next_frame(), Err(FrameTooShort { .. })));
}

#[test]
fn hostile_bodies() {
    use WireError::*;
    let k = |k: Kind| k as u8;
    let d = |kind: Kind, id: u32, body: &[u8]| decode_one(&frame(kind as u8, 0, id, body));
    // Trailing bytes.
    assert!(matches!(
        d(Kind::Ready, 0, &[0]),
        Err(Trailing { extra: 1, .. })
    ));
    // Truncated fixed field.
    assert!(matches!(
        d(Kind::Ping, 0, &[1, 2, 3]),
        Err(Truncated { .. })
    ));
    // Window out of range.
    let mut hello = vec![2, 0, 2, 0];
    hello.extend_from_slice(&[0; 8]);
    hello.extend_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        d(Kind::Hello, 0, &hello),
        Err(Range {
            field: "window",
            ..
        })
    ));
    // Version range inverted, version 0.
    let mut h2 = vec![3, 0, 2, 0];
    h2.extend_from_slice(&[0; 8]);
    h2.extend_from_slice(&DEFAULT_WINDOW.to_le_bytes());
    assert!(matches!(d(Kind::Hello, 0, &h2), Err(Invalid { .. })));
    // A string length field far beyond the frame: refused, not allocated.
    let mut ack = vec![2, 0];
    ack.extend_from_slice(&[0; 8]);
    ack.extend_from_slice(&DEFAULT_WINDOW.to_le_bytes());
    ack.extend_from_slice(&0xffff_fff0u32.to_le_bytes());
    assert!(matches!(d(Kind::HelloAck, 0, &ack), Err(TooLong { .. })));
    // Bad UTF-8 text.
    let mut ack = vec![2, 0];
    ack.extend_from_slice(&[0; 8]);
    ack.extend_from_slice(&DEFAULT_WINDOW.to_le_bytes());
    ack.extend_from_slice(&[2, 0, 0, 0, 0xff, 0xfe]);
    assert!(matches!(d(Kind::HelloAck, 0, &ack), Err(Utf8 { .. })));
    // A ProcStart whose argv count is huge: refused before any allocation.
    let mut ps = Vec::new();
    ps.extend_from_slice(&[0; 8]); // uid, gid
    ps.extend_from_slice(&[1, 0]); // stdin pipe, no pty
    ps.extend_from_slice(&[1, 0, 0, 0, b'/']);
    ps.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(d(Kind::ProcStart, 1, &ps), Err(TooMany { .. })));
    // A count under the limit but beyond the bytes present.
    let mut ps2 = ps.clone();
    ps2.truncate(ps2.len() - 4);
    ps2.extend_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(d(Kind::ProcStart, 1, &ps2), Err(Truncated { .. })));
    // uid -1.
    let mut ps3 = ps.clone();
    ps3[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        d(Kind::ProcStart, 1, &ps3),
        Err(Range { field: "uid", .. })
    ));
    // NUL in a path.
    let mut fl = vec![3, 0, 0, 0];
    fl.extend_from_slice(b"/a\0");
    assert!(matches!(d(Kind::FileList, 1, &fl), Err(Nul { .. })));
    // Empty path.
    assert!(matches!(
        d(Kind::FileList, 1, &[0, 0, 0, 0]),
        Err(Invalid { .. })
    ));
    // Empty data.
    assert!(matches!(d(Kind::TcpData, 1, &[]), Err(Invalid { .. })));
    assert!(matches!(d(Kind::ProcOutput, 1, &[1]), Err(Invalid { .. })));
    // Bad enum values.
    assert!(matches!(d(Kind::ProcEof, 1, &[3]), Err(Range { .. })));
    assert!(matches!(d(Kind::ProcSignal, 1, &[0]), Err(Range { .. })));
    assert!(matches!(d(Kind::ProcSignal, 1, &[65]), Err(Range { .. })));
    assert!(matches!(d(Kind::TcpClose, 1, &[2]), Err(Range { .. })));
    assert!(matches!(
        d(Kind::ProcStarted, 1, &[0, 0, 0, 0]),
        Err(Range { .. })
    ));
    assert!(matches!(
        d(Kind::TcpFailed, 1, &(-1i32).to_le_bytes()),
        Err(Range { .. })
    ));
    assert!(matches!(
        d(Kind::ProcExited, 1, &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(Range { .. })
    ));
    assert!(matches!(
        d(Kind::Credit, 1, &[1, 0, 0, 0, 0]),
        Err(Range { .. })
    ));
    assert!(matches!(
        d(Kind::Credit, 1, &[9, 1, 0, 0, 0]),
        Err(Range { .. })
    ));
    // Mode beyond 0o7777.
    let mut ch = 0o10000u32.to_le_bytes().to_vec();
    ch.extend_from_slice(&[1, 0, 0, 0, b'/']);
    assert!(matches!(d(Kind::FileChmod, 1, &ch), Err(Range { .. })));
    // Directory entry names `..` and with `/`.
    for name in [&b".."[..], b"a/b"] {
        let mut fe = 1u32.to_le_bytes().to_vec();
        fe.extend_from_slice(&(name.len() as u32).to_le_bytes());
        fe.extend_from_slice(name);
        fe.extend_from_slice(&[1; STAT_LEN]);
        fe[4 + 4 + name.len()] = 1;
        assert!(
            matches!(d(Kind::FileEntries, 1, &fe), Err(Invalid { .. })),
            "{name:?}"
        );
    }
    // Host names with CR/LF or empty labels.
    for name in [&b"a\r\nb"[..], b"a..b", b".a", b""] {
        let mut o = 443u16.to_le_bytes().to_vec();
        o.push(0);
        o.extend_from_slice(&(name.len() as u32).to_le_bytes());
        o.extend_from_slice(name);
        assert!(
            matches!(d(Kind::TcpOffer, AGENT_ID_BIT, &o), Err(Invalid { .. })),
            "{name:?}"
        );
    }
    let _ = k;
}

#[test]
fn hostile_fragments() {
    use WireError::*;
    let full = vec![0u8; MAX_BODY];
    let p = Kind::Plan as u8;
    let mut r = Reassembler::default();
    let push = |r: &mut Reassembler, b: &[u8]| r.push(Frame::decode(b)?);
    // Continuation with nothing in progress.
    assert!(matches!(
        push(&mut r, &frame(p, FLAG_CONT, 0, &[1])),
        Err(UnexpectedContinuation { .. })
    ));
    // A short non-final fragment.
    assert!(matches!(
        push(&mut r, &frame(p, FLAG_MORE, 0, &[1])),
        Err(ShortFragment { .. })
    ));
    // Start one, then start another: refused.
    assert_eq!(push(&mut r, &frame(p, FLAG_MORE, 0, &full)), Ok(None));
    assert!(matches!(
        push(&mut r, &frame(Kind::ProcStart as u8, FLAG_MORE, 1, &full)),
        Err(FragmentInterleaved { .. })
    ));
    // A continuation of another kind.
    assert!(matches!(
        push(&mut r, &frame(Kind::ProcStart as u8, FLAG_CONT, 1, &[1])),
        Err(ContinuationMismatch { .. })
    ));
    // A single-frame message in between is fine.
    assert_eq!(
        push(&mut r, &frame(Kind::Ping as u8, 0, 0, &[0; 8])),
        Ok(Some(Message::Ping { nonce: 0 }))
    );
    // Growing past MAX_MESSAGE fails, with the buffer never beyond it.
    let mut res = Ok(None);
    for _ in 0..(MAX_MESSAGE / MAX_BODY + 2) {
        res = push(&mut r, &frame(p, FLAG_MORE | FLAG_CONT, 0, &full));
        assert!(r.buffered() <= MAX_MESSAGE);
        if res.is_err() {
            break;
        }
    }
    assert!(matches!(res, Err(MessageTooLarge { .. })), "{res:?}");
    assert_eq!(r.buffered(), 0);
}

fn samples() -> Vec<Message> {
    vec![
        Message::Hello {
            min_version: 2,
            max_version: 3,
            features: 5,
            window: DEFAULT_WINDOW,
        },
        Message::SetupFailed {
            stage: Stage::Mounts,
            errno: 13,
            detail: "bind /work: permission denied".into(),
        },
        Message::ProcStart {
            id: 1,
            argv: vec![b"sh".to_vec(), b"-c".to_vec(), b"echo hi".to_vec()],
            env: vec![b"PATH=/bin".to_vec()],
            cwd: b"/tmp".to_vec(),
            uid: 1,
            gid: 2,
            pty: Some(WinSize { rows: 1, cols: 2 }),
            stdin: StdinMode::Null,
        },
        Message::ProcListResult {
            id: 3,
            procs: vec![ProcInfo {
                id: 1,
                pid: 2,
                pty: true,
                stdin_open: true,
                stdout_open: false,
                stderr_open: false,
            }],
        },
        Message::FileEntries {
            id: 4,
            entries: vec![DirEntry {
                name: b"x".to_vec(),
                stat: Stat {
                    kind: FileKind::File,
                    mode: 0o600,
                    size: 1,
                    mtime_sec: 2,
                    mtime_nsec: 3,
                    uid: 4,
                    gid: 5,
                },
            }],
        },
        Message::TcpOffer {
            id: AGENT_ID_BIT | 9,
            dest: Destination::Ip("::1".parse().unwrap()),
            port: 1,
        },
        Message::FileWrite {
            id: 5,
            path: b"/a".to_vec(),
            mode: 0o644,
            flags: WriteFlags {
                create: true,
                truncate: true,
                append: false,
                exclusive: false,
            },
        },
    ]
}

/// Every prefix of a frame, with its length field fixed up, and every
/// single-byte change: an error or another message, never a panic.
#[test]
fn truncations_and_mutations_never_panic() {
    for m in samples() {
        let f = enc(&m);
        for cut in 0..f.len() {
            let mut g = f[..cut].to_vec();
            if g.len() >= 4 {
                let n = (g.len() - 4) as u32;
                g[..4].copy_from_slice(&n.to_le_bytes());
            }
            if let Ok(got) = decode_one(&g) {
                assert_ne!(got, m, "cut at {cut} decoded to the original");
            }
        }
        for i in 4..f.len() {
            for v in [0u8, 1, 2, 0x7f, 0x80, 0xff, f[i] ^ 1] {
                let mut g = f.clone();
                g[i] = v;
                let _ = decode_one(&g);
            }
        }
    }
}

#[test]
fn long_text_is_cut_on_a_char_boundary() {
    let m = Message::SetupFailed {
        stage: Stage::Exec,
        errno: 1,
        detail: "é".repeat(MAX_DETAIL),
    };
    match &dec_all(&enc(&m)).unwrap()[0] {
        Message::SetupFailed { detail, .. } => {
            assert!(detail.len() <= MAX_DETAIL);
            assert!(detail.chars().all(|c| c == 'é'));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn encoding_refuses_what_decoding_would() {
    let bad = [
        Message::ProcStart {
            id: 1,
            argv: vec![],
            env: vec![],
            cwd: b"/".to_vec(),
            uid: 0,
            gid: 0,
            pty: None,
            stdin: StdinMode::Null,
        },
        Message::ProcStart {
            id: 1,
            argv: vec![b"a\0".to_vec()],
            env: vec![],
            cwd: b"/".to_vec(),
            uid: 0,
            gid: 0,
            pty: None,
            stdin: StdinMode::Null,
        },
        Message::ProcStart {
            id: 1,
            argv: vec![b"a".to_vec()],
            env: vec![b"NOEQUALS".to_vec()],
            cwd: b"/".to_vec(),
            uid: 0,
            gid: 0,
            pty: None,
            stdin: StdinMode::Null,
        },
        Message::ProcStdin {
            id: 1,
            data: vec![],
        },
        Message::ProcStdin {
            id: 1,
            data: vec![0; MAX_DATA + 1],
        },
        Message::ProcSignal { id: 1, signo: 0 },
        Message::FileList {
            id: 1,
            path: vec![b'a'; MAX_PATH + 1],
        },
        Message::ProcEof {
            id: 0,
            stream: OutStream::Stdout,
        },
        Message::TcpAccept { id: 1 },
        Message::Plan {
            data: vec![0; MAX_MESSAGE + 1],
        },
        Message::FileEntries {
            id: 1,
            entries: vec![],
        },
    ];
    for m in bad {
        let mut out = vec![9];
        assert!(encode(&m, &mut out).is_err(), "{m:?} encoded");
        assert_eq!(out, [9], "a failed encode left bytes behind");
    }
    // Too many entries for one frame.
    let e = DirEntry {
        name: vec![b'n'; MAX_NAME],
        stat: Stat {
            kind: FileKind::File,
            mode: 0,
            size: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
        },
    };
    let m = Message::FileEntries {
        id: 1,
        entries: vec![e; 300],
    };
    assert!(matches!(
        encode_to_vec(&m),
        Err(WireError::MessageTooLarge { .. })
    ));
}

/// Notice: a text, cut on encode, refused when longer on decode.
#[test]
fn notice_wire() {
    let m = Message::Notice { text: "hi".into() };
    assert_eq!(
        enc(&m),
        [12, 0, 0, 0, 12, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'h', b'i']
    );
    assert_eq!(decode_one(&enc(&m)), Ok(m));
    let long = Message::Notice {
        text: "é".repeat(MAX_DETAIL),
    };
    match decode_one(&enc(&long)) {
        Ok(Message::Notice { text }) => assert!(text.len() <= MAX_DETAIL),
        other => panic!("{other:?}"),
    }
}

#[test]
fn kind_table_is_consistent() {
    for &k in Kind::ALL {
        assert_eq!(Kind::from_u8(k as u8), Some(k));
        assert_ne!(k as u8, 0);
        assert_ne!(k as u8, 1, "1 is kept for recognising v1 peers");
    }
    assert_eq!(Kind::ALL.len(), 48);
}

/// A 1 MiB argv and env: fragmented, reassembled through a stream cut
/// into odd chunks.
#[test]
fn one_mib_proc_start() {
    let m = Message::ProcStart {
        id: 1,
        argv: (0..1024)
            .map(|i| format!("arg{i}-{}", "x".repeat(600)).into_bytes())
            .collect(),
        env: (0..1024)
            .map(|i| format!("K{i}={}", "v".repeat(600)).into_bytes())
            .collect(),
        cwd: b"/".to_vec(),
        uid: 0,
        gid: 0,
        pty: None,
        stdin: StdinMode::Pipe,
    };
    let b = enc(&m);
    assert!(b.len() > 1024 * 1024);
    let mut sf = StreamFramer::new();
    let mut r = Reassembler::default();
    let mut got = Vec::new();
    for piece in b.chunks(4093) {
        sf.push(piece);
        while let Some(f) = sf.next_frame().unwrap() {
            if let Some(m) = r.push(f).unwrap() {
                got.push(m);
            }
        }
        assert!(sf.buffered() < 2 * MAX_FRAME);
    }
    assert_eq!(got, vec![m]);
}

/// The message table in the module docs lists every kind with its number
/// and direction.
#[test]
fn docs_table_matches_kinds() {
    let docs = include_str!("../mod.rs");
    for &k in Kind::ALL {
        let dir = match k.direction() {
            Direction::HostToAgent => "H→A",
            Direction::AgentToHost => "A→H",
            Direction::Both => "both",
        };
        let row = format!("//! | {} | {} | {} |", k as u8, k.name(), dir);
        assert!(docs.contains(&row), "missing or wrong row: {row}");
    }
}
