//! HostSession against a hostile agent: every misbehaviour is a typed
//! violation, never a panic, and memory stays bounded by what the host
//! opened.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::v2::fuzzing::{host_with_objects, OPENED};

fn ack() -> Message {
    Message::HelloAck {
        version: VERSION,
        features: FEATURES_ALL,
        window: DEFAULT_WINDOW,
        agent_version: "test".into(),
    }
}

/// Feeds every frame of `m` to the session; the last frame's result.
fn feed(s: &mut HostSession, m: &Message) -> Result<Option<Message>, Violation> {
    feed_bytes(s, &enc(m))
}

fn feed_bytes(s: &mut HostSession, b: &[u8]) -> Result<Option<Message>, Violation> {
    let mut sf = StreamFramer::new();
    sf.push(b);
    let mut last = None;
    while let Some(f) = sf.next_frame()? {
        last = s.on_frame(f)?;
    }
    Ok(last)
}

fn send(s: &mut HostSession, m: &Message) -> Result<(), Misuse> {
    s.send(m, &mut Vec::new())
}

fn open() -> HostSession {
    let mut s = HostSession::new(HostConfig::default());
    s.send_hello(&mut Vec::new()).unwrap();
    assert_eq!(feed(&mut s, &ack()).unwrap(), Some(ack()));
    assert!(s.is_open());
    s
}

fn start(id: u32, pty: bool, stdin: StdinMode) -> Message {
    Message::ProcStart {
        id,
        argv: vec![b"sh".to_vec()],
        env: vec![],
        cwd: b"/".to_vec(),
        uid: 1000,
        gid: 1000,
        pty: pty.then_some(WinSize { rows: 24, cols: 80 }),
        stdin,
    }
}

fn out(id: u32, stream: OutStream, n: usize) -> Message {
    Message::ProcOutput {
        id,
        stream,
        data: vec![b'x'; n],
    }
}

fn started(s: &mut HostSession, id: u32, pty: bool, stdin: StdinMode) {
    send(s, &start(id, pty, stdin)).unwrap();
    feed(s, &Message::ProcStarted { id, pid: 10 + id }).unwrap();
}

#[test]
fn handshake_rules() {
    // Nothing may come before HelloAck.
    let mut s = HostSession::new(HostConfig::default());
    assert!(matches!(
        feed(&mut s, &ack()),
        Err(Violation::BeforeHandshake { .. })
    ));
    let mut s = HostSession::new(HostConfig::default());
    s.send_hello(&mut Vec::new()).unwrap();
    assert!(matches!(
        feed(&mut s, &Message::ProcStarted { id: 1, pid: 1 }),
        Err(Violation::BeforeHandshake { .. })
    ));
    assert_eq!(
        feed(&mut s, &ack()),
        Err(Violation::Poisoned),
        "a failed session stays failed"
    );
    // Version outside the offered range.
    let mut s = HostSession::new(HostConfig::default());
    s.send_hello(&mut Vec::new()).unwrap();
    let bad = Message::HelloAck {
        version: VERSION + 1,
        features: 0,
        window: DEFAULT_WINDOW,
        agent_version: String::new(),
    };
    assert!(matches!(
        feed(&mut s, &bad),
        Err(Violation::VersionRefused { .. })
    ));
    // Features not offered.
    let mut s = HostSession::new(HostConfig {
        features: FEATURE_FILES,
        ..HostConfig::default()
    });
    s.send_hello(&mut Vec::new()).unwrap();
    assert_eq!(
        feed(&mut s, &ack()),
        Err(Violation::UnofferedFeatures {
            features: FEATURES_ALL & !FEATURE_FILES
        })
    );
    // A refusal before HelloAck is delivered, then the session is over.
    let mut s = HostSession::new(HostConfig::default());
    s.send_hello(&mut Vec::new()).unwrap();
    let refuse = Message::SetupFailed {
        stage: Stage::Handshake,
        errno: 0,
        detail: "agent speaks 3..=3".into(),
    };
    assert_eq!(feed(&mut s, &refuse), Ok(Some(refuse.clone())));
    assert!(matches!(
        feed(&mut s, &ack()),
        Err(Violation::SessionOver { .. })
    ));
    // A second HelloAck.
    let mut s = open();
    assert!(matches!(
        feed(&mut s, &ack()),
        Err(Violation::Unsolicited { .. })
    ));
    // The host side: Hello first, once.
    let mut s = HostSession::new(HostConfig::default());
    assert!(matches!(
        send(&mut s, &start(1, false, StdinMode::Null)),
        Err(Misuse::OutOfTurn { .. })
    ));
    s.send_hello(&mut Vec::new()).unwrap();
    // Requests without data may follow Hello at once (pipelined); data
    // waits for the agent's window, which HelloAck brings.
    send(&mut s, &Message::Ping { nonce: 1 }).unwrap();
    send(&mut s, &start(1, false, StdinMode::Pipe)).unwrap();
    assert!(matches!(
        send(
            &mut s,
            &Message::ProcStdin {
                id: 1,
                data: vec![1]
            }
        ),
        Err(Misuse::OutOfTurn { .. })
    ));
    assert!(send(
        &mut s,
        &Message::Hello {
            min_version: 2,
            max_version: 2,
            features: 0,
            window: 1 << 16
        }
    )
    .is_err());
}

#[test]
fn wrong_direction_and_garbage() {
    let mut s = open();
    assert!(matches!(
        feed(&mut s, &start(1, false, StdinMode::Null)),
        Err(Violation::WrongDirection { .. })
    ));
    let mut s = open();
    assert!(matches!(
        feed_bytes(&mut s, &[6, 0, 0, 0, 99, 0, 0, 0, 0, 0]),
        Err(Violation::Wire(WireError::UnknownKind { kind: 99 }))
    ));
    // An oversized length field is refused by the framer.
    let mut sf = StreamFramer::new();
    sf.push(&[0xff, 0xff, 0xff, 0x7f]);
    assert!(sf.next_frame().is_err());
    // A garbage body.
    let mut s = open();
    send(&mut s, &start(1, false, StdinMode::Null)).unwrap();
    assert!(matches!(
        feed_bytes(
            &mut s,
            &[7, 0, 0, 0, Kind::ProcStarted as u8, 0, 1, 0, 0, 0, 1]
        ),
        Err(Violation::Wire(WireError::Truncated { .. }))
    ));
}

#[test]
fn unsolicited_responses() {
    for m in [
        Message::Ready,
        Message::Pong { nonce: 5 },
        Message::ShutdownDone,
        Message::ProcStarted { id: 1, pid: 2 },
        Message::ProcExited {
            id: 1,
            status: ExitStatus::Code(0),
            max_rss_kib: 0,
        },
        Message::FileDone {
            id: 7,
            result: Ok(0),
        },
        Message::FileStatResult {
            id: 7,
            stat: Stat {
                kind: FileKind::File,
                mode: 0,
                size: 0,
                mtime_sec: 0,
                mtime_nsec: 0,
                uid: 0,
                gid: 0,
            },
        },
        Message::TcpOpened { id: 3 },
        Message::ProcListResult {
            id: 4,
            procs: vec![],
        },
        Message::Credit {
            id: 1,
            stream: StreamKind::Stdin,
            bytes: 1,
        },
        Message::TcpData {
            id: AGENT_ID_BIT | 1,
            data: vec![1],
        },
    ] {
        let mut s = open();
        let r = feed(&mut s, &m);
        assert!(
            matches!(
                r,
                Err(Violation::Unsolicited { .. } | Violation::UnknownId { .. })
            ),
            "{m:?}: {r:?}"
        );
    }
    // A pong for a ping that was sent is fine, once.
    let mut s = open();
    send(&mut s, &Message::Ping { nonce: 9 }).unwrap();
    assert!(feed(&mut s, &Message::Pong { nonce: 9 }).is_ok());
    assert!(feed(&mut s, &Message::Pong { nonce: 9 }).is_err());
    // Plan → Ready, once.
    let mut s = open();
    send(
        &mut s,
        &Message::Plan {
            data: vec![1; 200_000],
        },
    )
    .unwrap();
    assert!(feed(&mut s, &Message::Ready).is_ok());
    assert!(feed(&mut s, &Message::Ready).is_err());
    // Notices only while the plan is applied, and not without end.
    let notice = || Message::Notice { text: "n".into() };
    let mut s = open();
    assert!(matches!(
        feed(&mut s, &notice()),
        Err(Violation::Unsolicited { .. })
    ));
    let mut s = open();
    send(&mut s, &Message::Plan { data: vec![1] }).unwrap();
    for _ in 0..crate::v2::host::MAX_NOTICES {
        assert!(feed(&mut s, &notice()).is_ok());
    }
    assert!(matches!(
        feed(&mut s, &notice()),
        Err(Violation::Flood { .. })
    ));
    let mut s = open();
    send(&mut s, &Message::Plan { data: vec![1] }).unwrap();
    assert!(feed(&mut s, &notice()).is_ok());
    assert!(feed(&mut s, &Message::Ready).is_ok());
    assert!(feed(&mut s, &notice()).is_err());
}

#[test]
fn process_lifecycle() {
    let mut s = open();
    send(&mut s, &start(1, false, StdinMode::Pipe)).unwrap();
    // Output before ProcStarted.
    let mut s2 = open();
    send(&mut s2, &start(1, false, StdinMode::Pipe)).unwrap();
    assert_eq!(
        feed(&mut s2, &out(1, OutStream::Stdout, 1)),
        Err(Violation::NotStarted {
            kind: Kind::ProcOutput,
            id: 1
        })
    );
    feed(&mut s, &Message::ProcStarted { id: 1, pid: 5 }).unwrap();
    assert!(matches!(
        feed(&mut s.clone(), &Message::ProcStarted { id: 1, pid: 5 }),
        Err(Violation::Duplicate { .. })
    ));
    feed(&mut s, &out(1, OutStream::Stdout, 100)).unwrap();
    feed(&mut s, &out(1, OutStream::Stderr, 100)).unwrap();
    feed(
        &mut s,
        &Message::ProcEof {
            id: 1,
            stream: OutStream::Stdout,
        },
    )
    .unwrap();
    // Output after its stream's end.
    assert!(matches!(
        feed(&mut s.clone(), &out(1, OutStream::Stdout, 1)),
        Err(Violation::AfterEnd { .. })
    ));
    let exit = Message::ProcExited {
        id: 1,
        status: ExitStatus::Code(0),
        max_rss_kib: 1,
    };
    feed(&mut s, &exit).unwrap();
    assert_eq!(s.tracked(), 0);
    // Output for an exited process; a second exit.
    assert_eq!(
        feed(&mut s.clone(), &out(1, OutStream::Stderr, 1)),
        Err(Violation::Finished {
            kind: Kind::ProcOutput,
            id: 1
        })
    );
    assert_eq!(
        feed(&mut s, &exit),
        Err(Violation::Finished {
            kind: Kind::ProcExited,
            id: 1
        })
    );
    // A pty process has no stderr; a null stdin gets no credit.
    let mut s = open();
    started(&mut s, 1, true, StdinMode::Null);
    assert!(matches!(
        feed(&mut s.clone(), &out(1, OutStream::Stderr, 1)),
        Err(Violation::NoSuchStream { .. })
    ));
    assert!(matches!(
        feed(
            &mut s,
            &Message::Credit {
                id: 1,
                stream: StreamKind::Stdin,
                bytes: 1
            }
        ),
        Err(Violation::NoSuchStream { .. })
    ));
    // The agent cannot grant credit for its own output.
    let mut s = open();
    started(&mut s, 1, false, StdinMode::Pipe);
    assert!(matches!(
        feed(
            &mut s,
            &Message::Credit {
                id: 1,
                stream: StreamKind::Stdout,
                bytes: 1
            }
        ),
        Err(Violation::NoSuchStream { .. })
    ));
    // ProcStartFailed after ProcStarted.
    let mut s = open();
    started(&mut s, 1, false, StdinMode::Pipe);
    assert!(matches!(
        feed(
            &mut s,
            &Message::ProcStartFailed {
                id: 1,
                stage: Stage::Exec,
                errno: 2
            }
        ),
        Err(Violation::Inconsistent { .. })
    ));
}

#[test]
fn credit_is_enforced() {
    let mut s = open();
    started(&mut s, 1, false, StdinMode::Pipe);
    started(&mut s, 2, false, StdinMode::Pipe);
    let w = DEFAULT_WINDOW as usize;
    // Fill process 1's stdout window; its reader is slow (consumes nothing).
    let mut sent = 0;
    while sent < w {
        let n = MAX_DATA.min(w - sent);
        feed(&mut s, &out(1, OutStream::Stdout, n)).unwrap();
        sent += n;
    }
    // Process 2 still flows: its consumer drains and grants.
    let mut credit_frames = Vec::new();
    for _ in 0..20 {
        feed(&mut s, &out(2, OutStream::Stdout, MAX_DATA)).unwrap();
        s.consumed(2, StreamKind::Stdout, MAX_DATA, &mut credit_frames)
            .unwrap();
    }
    let credits = dec_all(&credit_frames).unwrap();
    assert!(!credits.is_empty());
    assert!(credits.iter().all(|m| matches!(
        m,
        Message::Credit {
            id: 2,
            stream: StreamKind::Stdout,
            bytes
        } if *bytes >= DEFAULT_WINDOW / 2
    )));
    // One byte more on process 1 is a violation.
    assert_eq!(
        feed(&mut s, &out(1, OutStream::Stdout, 1)),
        Err(Violation::Flow {
            kind: Kind::ProcOutput,
            id: 1,
            stream: StreamKind::Stdout,
            source: FlowError::Exceeded {
                len: 1,
                available: 0
            }
        })
    );
    // Credit that would overflow the host's stdin credit.
    let mut s = open();
    started(&mut s, 1, false, StdinMode::Pipe);
    assert!(matches!(
        feed(
            &mut s,
            &Message::Credit {
                id: 1,
                stream: StreamKind::Stdin,
                bytes: 1
            }
        ),
        Err(Violation::Flow {
            source: FlowError::Overflow { .. },
            ..
        })
    ));
    // The host cannot send beyond the agent's credit either.
    let mut s = open();
    started(&mut s, 1, false, StdinMode::Pipe);
    let mut n = 0;
    while n < w {
        let c = MAX_DATA.min(w - n);
        send(
            &mut s,
            &Message::ProcStdin {
                id: 1,
                data: vec![0; c],
            },
        )
        .unwrap();
        n += c;
    }
    assert_eq!(s.send_credit(1, StreamKind::Stdin), Some(0));
    assert!(matches!(
        send(
            &mut s,
            &Message::ProcStdin {
                id: 1,
                data: vec![0]
            }
        ),
        Err(Misuse::Flow { .. })
    ));
    feed(
        &mut s,
        &Message::Credit {
            id: 1,
            stream: StreamKind::Stdin,
            bytes: 10,
        },
    )
    .unwrap();
    assert_eq!(s.send_credit(1, StreamKind::Stdin), Some(10));
    // Credit arriving after the host closed stdin is dropped, not an error.
    send(&mut s, &Message::ProcCloseStdin { id: 1 }).unwrap();
    assert_eq!(
        feed(
            &mut s,
            &Message::Credit {
                id: 1,
                stream: StreamKind::Stdin,
                bytes: 10
            }
        ),
        Ok(None)
    );
}

#[test]
fn flood_without_credit_is_an_error_and_memory_stays_flat() {
    let mut s = open();
    started(&mut s, 1, false, StdinMode::Null);
    let mut r = Ok(None);
    let mut frames = 0;
    while r.is_ok() {
        r = feed(&mut s, &out(1, OutStream::Stderr, MAX_DATA));
        frames += 1;
        assert_eq!(s.tracked(), 1);
        assert!(frames < 1000);
    }
    assert_eq!(frames, DEFAULT_WINDOW as usize / MAX_DATA + 1);
    assert!(matches!(r, Err(Violation::Flow { .. })));
}

#[test]
fn files() {
    let mut s = open();
    let p = || b"/x".to_vec();
    send(
        &mut s,
        &Message::FileRead {
            id: 1,
            path: p(),
            offset: 0,
            len: u64::MAX,
        },
    )
    .unwrap();
    send(
        &mut s,
        &Message::FileWrite {
            id: 2,
            path: p(),
            mode: 0o644,
            flags: WriteFlags::default(),
        },
    )
    .unwrap();
    send(
        &mut s,
        &Message::FileStat {
            id: 3,
            path: p(),
            follow: false,
        },
    )
    .unwrap();
    send(&mut s, &Message::FileList { id: 4, path: p() }).unwrap();
    // Download data for a read is fine; for a write it is not.
    feed(
        &mut s,
        &Message::FileData {
            id: 1,
            data: vec![1; 10],
        },
    )
    .unwrap();
    assert!(matches!(
        feed(
            &mut s.clone(),
            &Message::FileData {
                id: 2,
                data: vec![1]
            }
        ),
        Err(Violation::WrongObject { .. })
    ));
    // A stat result for a read; a successful FileDone for a stat.
    assert!(matches!(
        feed(
            &mut s.clone(),
            &Message::FileDone {
                id: 3,
                result: Ok(0)
            }
        ),
        Err(Violation::Inconsistent { .. })
    ));
    // The upload: data under credit, end, result.
    send(
        &mut s,
        &Message::FileData {
            id: 2,
            data: vec![1; 100],
        },
    )
    .unwrap();
    feed(
        &mut s,
        &Message::Credit {
            id: 2,
            stream: StreamKind::File,
            bytes: 100,
        },
    )
    .unwrap();
    send(&mut s, &Message::FileEnd { id: 2 }).unwrap();
    assert!(matches!(
        send(
            &mut s,
            &Message::FileData {
                id: 2,
                data: vec![1]
            }
        ),
        Err(Misuse::StreamClosed { .. })
    ));
    feed(
        &mut s,
        &Message::FileDone {
            id: 2,
            result: Ok(100),
        },
    )
    .unwrap();
    // Entries count against the listing's credit.
    let e = DirEntry {
        name: b"f".to_vec(),
        stat: Stat {
            kind: FileKind::File,
            mode: 0o644,
            size: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
        },
    };
    let many = Message::FileEntries {
        id: 4,
        entries: vec![e; 1000],
    };
    let mut r = Ok(None);
    let mut n = 0;
    while r.is_ok() {
        r = feed(&mut s, &many);
        n += 1;
        assert!(n < 100);
    }
    assert!(matches!(r, Err(Violation::Flow { .. })));
}

#[test]
fn tcp_streams_and_offers() {
    let mut s = open();
    send(&mut s, &Message::tcp_connect_loopback(1, 8080)).unwrap();
    // Data before the stream opened.
    assert!(matches!(
        feed(
            &mut s.clone(),
            &Message::TcpData {
                id: 1,
                data: vec![1]
            }
        ),
        Err(Violation::Inconsistent { .. })
    ));
    feed(&mut s, &Message::TcpOpened { id: 1 }).unwrap();
    feed(
        &mut s,
        &Message::TcpData {
            id: 1,
            data: vec![1; 5],
        },
    )
    .unwrap();
    feed(&mut s, &Message::TcpShutdownWrite { id: 1 }).unwrap();
    assert!(matches!(
        feed(
            &mut s.clone(),
            &Message::TcpData {
                id: 1,
                data: vec![1]
            }
        ),
        Err(Violation::AfterEnd { .. })
    ));
    // Host closes; the agent's close completes the handshake.
    send(
        &mut s,
        &Message::TcpClose {
            id: 1,
            reset: false,
        },
    )
    .unwrap();
    assert_eq!(s.tracked(), 1);
    feed(
        &mut s,
        &Message::TcpClose {
            id: 1,
            reset: false,
        },
    )
    .unwrap();
    assert_eq!(s.tracked(), 0);
    assert!(matches!(
        feed(
            &mut s,
            &Message::TcpData {
                id: 1,
                data: vec![1]
            }
        ),
        Err(Violation::Finished { .. })
    ));

    // Data in flight after the host's close is dropped quietly.
    let mut s = open();
    send(&mut s, &Message::tcp_connect_loopback(1, 80)).unwrap();
    feed(&mut s, &Message::TcpOpened { id: 1 }).unwrap();
    send(&mut s, &Message::TcpClose { id: 1, reset: true }).unwrap();
    assert_eq!(
        feed(
            &mut s,
            &Message::TcpData {
                id: 1,
                data: vec![1]
            }
        ),
        Ok(None)
    );

    // Offers: bounded, ids increasing, answered once.
    let mut s = HostSession::new(HostConfig {
        max_pending_offers: 3,
        ..HostConfig::default()
    });
    s.send_hello(&mut Vec::new()).unwrap();
    feed(&mut s, &ack()).unwrap();
    let offer = |id: u32| Message::TcpOffer {
        id: AGENT_ID_BIT | id,
        dest: Destination::Name("example.com".into()),
        port: 443,
    };
    feed(&mut s, &offer(1)).unwrap();
    assert!(matches!(
        feed(&mut s.clone(), &offer(1)),
        Err(Violation::IdOrder { .. })
    ));
    feed(&mut s, &offer(2)).unwrap();
    feed(&mut s, &offer(3)).unwrap();
    assert!(matches!(
        feed(&mut s.clone(), &offer(4)),
        Err(Violation::TooManyOffers { max: 3 })
    ));
    // No data on an offer that was not accepted.
    assert!(matches!(
        feed(
            &mut s.clone(),
            &Message::TcpData {
                id: AGENT_ID_BIT | 1,
                data: vec![1]
            }
        ),
        Err(Violation::Inconsistent { .. })
    ));
    send(
        &mut s,
        &Message::TcpAccept {
            id: AGENT_ID_BIT | 1,
        },
    )
    .unwrap();
    send(
        &mut s,
        &Message::TcpRefuse {
            id: AGENT_ID_BIT | 2,
            reason: RefuseReason::Policy,
        },
    )
    .unwrap();
    assert!(matches!(
        send(
            &mut s,
            &Message::TcpAccept {
                id: AGENT_ID_BIT | 2
            }
        ),
        Err(Misuse::UnknownId { .. })
    ));
    assert_eq!(s.pending_offers(), 1);
    feed(&mut s, &offer(4)).unwrap();
    feed(
        &mut s,
        &Message::TcpData {
            id: AGENT_ID_BIT | 1,
            data: vec![1; 100],
        },
    )
    .unwrap();
    assert!(matches!(
        feed(
            &mut s,
            &Message::TcpData {
                id: AGENT_ID_BIT | 2,
                data: vec![1]
            }
        ),
        Err(Violation::Finished { .. })
    ));

    // Egress offers need the egress feature.
    let mut s = HostSession::new(HostConfig {
        features: FEATURES_ALL & !FEATURE_EGRESS,
        ..HostConfig::default()
    });
    s.send_hello(&mut Vec::new()).unwrap();
    feed(
        &mut s,
        &Message::HelloAck {
            version: VERSION,
            features: FEATURE_TCP,
            window: DEFAULT_WINDOW,
            agent_version: String::new(),
        },
    )
    .unwrap();
    assert!(matches!(
        feed(&mut s, &offer(1)),
        Err(Violation::FeatureNotNegotiated { .. })
    ));
}

#[test]
fn reattach_listing() {
    let mut s = HostSession::new(HostConfig {
        id_floor: 100,
        ..HostConfig::default()
    });
    s.send_hello(&mut Vec::new()).unwrap();
    feed(&mut s, &ack()).unwrap();
    assert_eq!(s.next_id(), Some(101));
    assert!(matches!(
        send(&mut s, &Message::ProcList { id: 100 }),
        Err(Misuse::IdNotIncreasing { .. })
    ));
    send(&mut s, &Message::ProcList { id: 101 }).unwrap();
    let info = |id| ProcInfo {
        id,
        pid: 7,
        pty: false,
        stdin_open: true,
        stdout_open: true,
        stderr_open: false,
    };
    // An id this session never opened, above the floor: refused.
    assert!(matches!(
        feed(
            &mut s.clone(),
            &Message::ProcListResult {
                id: 101,
                procs: vec![info(150)]
            }
        ),
        Err(Violation::BadListing { .. })
    ));
    feed(
        &mut s,
        &Message::ProcListResult {
            id: 101,
            procs: vec![info(5), info(17)],
        },
    )
    .unwrap();
    assert_eq!(s.tracked(), 2);
    // Adopted processes work as if started here.
    feed(&mut s, &out(5, OutStream::Stdout, 10)).unwrap();
    assert!(matches!(
        feed(&mut s.clone(), &out(5, OutStream::Stderr, 10)),
        Err(Violation::AfterEnd { .. })
    ));
    send(
        &mut s,
        &Message::ProcStdin {
            id: 17,
            data: vec![1],
        },
    )
    .unwrap();
    feed(
        &mut s,
        &Message::ProcExited {
            id: 17,
            status: ExitStatus::Code(1),
            max_rss_kib: 0,
        },
    )
    .unwrap();
    assert_eq!(s.tracked(), 1);
}

#[test]
fn agent_fragments_are_refused() {
    // A first fragment (MORE, full body) of a listing: no agent kind may
    // be fragmented, so nothing is buffered, asked for or not.
    let mut b = ((MAX_BODY + 6) as u32).to_le_bytes().to_vec();
    b.extend_from_slice(&[Kind::ProcListResult as u8, FLAG_MORE]);
    b.extend_from_slice(&1u32.to_le_bytes());
    b.resize(MAX_FRAME, 0);
    let mut s = open();
    send(&mut s, &Message::ProcList { id: 1 }).unwrap();
    assert!(matches!(
        feed_bytes(&mut s, &b),
        Err(Violation::Wire(WireError::NotFragmentable { .. }))
    ));
    assert_eq!(s.reassembly_buffered(), 0);
    // The largest listing fits one frame.
    let info = ProcInfo {
        id: 1,
        pid: 1,
        pty: false,
        stdin_open: false,
        stdout_open: false,
        stderr_open: false,
    };
    let m = Message::ProcListResult {
        id: 1,
        procs: vec![info; MAX_LIST_PROCS],
    };
    assert!(enc(&m).len() <= MAX_FRAME);
    for &k in Kind::ALL {
        if k.direction() != Direction::HostToAgent {
            assert!(!k.fragmentable(), "{k}");
        }
    }
}

#[test]
fn shutdown() {
    let mut s = open();
    started(&mut s, 1, false, StdinMode::Null);
    send(&mut s, &Message::Shutdown).unwrap();
    assert!(matches!(
        send(&mut s, &start(2, false, StdinMode::Null)),
        Err(Misuse::OutOfTurn { .. })
    ));
    feed(&mut s, &out(1, OutStream::Stdout, 3)).unwrap();
    feed(&mut s, &Message::ShutdownDone).unwrap();
    assert!(s.is_done());
    assert!(matches!(
        feed(&mut s, &out(1, OutStream::Stdout, 3)),
        Err(Violation::SessionOver { .. })
    ));
}

/// Agent messages that refer to the ids the fixture opened (and a few it
/// did not), with random contents.
fn hostile_message() -> impl Strategy<Value = Message> {
    let from_agent = small_message().prop_filter("sent by the agent", |m| {
        m.kind().direction() != Direction::HostToAgent
    });
    (from_agent, 0u32..16, any::<bool>()).prop_map(|(mut m, id, agent)| {
        let id = if agent { AGENT_ID_BIT | id } else { id.max(1) };
        set_id(&mut m, id);
        m
    })
}

fn set_id(m: &mut Message, new: u32) {
    use Message::*;
    let rule = m.kind().id_rule();
    let new = match rule {
        IdRule::Zero => return,
        IdRule::Host => new & !AGENT_ID_BIT,
        IdRule::Agent => new | AGENT_ID_BIT,
        IdRule::NonZero => new,
    }
    .max(1);
    match m {
        Credit { id, .. }
        | ProcStarted { id, .. }
        | ProcStartFailed { id, .. }
        | ProcOutput { id, .. }
        | ProcEof { id, .. }
        | ProcExited { id, .. }
        | ProcListResult { id, .. }
        | FileData { id, .. }
        | FileDone { id, .. }
        | FileStatResult { id, .. }
        | FileEntries { id, .. }
        | TcpOpened { id }
        | TcpFailed { id, .. }
        | TcpData { id, .. }
        | TcpShutdownWrite { id }
        | TcpClose { id, .. }
        | TcpOffer { id, .. } => *id = new,
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// Random agent message sequences against a host with one of each
    /// object open: typed errors or valid messages, never a panic; after
    /// an error the session stays failed; tracked ids never exceed what
    /// the host opened plus the offers it allows.
    #[test]
    fn hostile_sequences(ms in vec(hostile_message(), 1..40)) {
        let cfg = HostConfig { max_pending_offers: 4, ..HostConfig::default() };
        let mut s = host_with_objects(cfg).unwrap();
        let mut failed = false;
        for m in &ms {
            let r = feed(&mut s, m);
            if failed {
                prop_assert_eq!(r, Err(Violation::Poisoned));
            } else if r.is_err() {
                failed = true;
            }
            prop_assert!(s.tracked() <= OPENED + 4);
            prop_assert!(s.reassembly_buffered() <= MAX_MESSAGE);
        }
    }
}
