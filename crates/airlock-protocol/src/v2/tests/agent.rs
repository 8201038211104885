//! AgentSession, and both sessions talking over a real socketpair.

use std::os::fd::AsRawFd;

use super::*;

fn feed(s: &mut AgentSession, m: &Message) -> Result<Option<Message>, Violation> {
    let b = enc(m);
    let mut sf = StreamFramer::new();
    sf.push(&b);
    let mut last = None;
    while let Some(f) = sf.next_frame()? {
        last = s.on_frame(f)?;
    }
    Ok(last)
}

fn hello(min: u16, max: u16) -> Message {
    Message::Hello {
        min_version: min,
        max_version: max,
        features: FEATURE_FILES | FEATURE_PTY | 1 << 40,
        window: 8192,
    }
}

fn open() -> AgentSession {
    let mut s = AgentSession::new(AgentConfig::default());
    feed(&mut s, &hello(1, 5)).unwrap();
    let reply = s.hello_reply().unwrap();
    s.send(&reply, &mut Vec::new()).unwrap();
    s
}

fn start(id: u32, stdin: StdinMode) -> Message {
    Message::ProcStart {
        id,
        argv: vec![b"cat".to_vec()],
        env: vec![],
        cwd: b"/".to_vec(),
        uid: 0,
        gid: 0,
        pty: None,
        stdin,
    }
}

#[test]
fn handshake() {
    let mut s = AgentSession::new(AgentConfig::default());
    assert!(matches!(
        feed(&mut s, &Message::Ping { nonce: 1 }),
        Err(Violation::BeforeHandshake { .. })
    ));
    let mut s = AgentSession::new(AgentConfig::default());
    assert!(matches!(
        s.send(&Message::Ready, &mut Vec::new()),
        Err(Misuse::OutOfTurn { .. })
    ));
    feed(&mut s, &hello(1, 5)).unwrap();
    // The host waits for HelloAck: anything else now is a violation.
    assert!(matches!(
        feed(&mut s.clone(), &Message::Ping { nonce: 1 }),
        Err(Violation::BeforeHandshake { .. })
    ));
    let reply = s.hello_reply().unwrap();
    assert_eq!(
        reply,
        Message::HelloAck {
            version: VERSION,
            features: FEATURE_FILES | FEATURE_PTY,
            window: DEFAULT_WINDOW,
            agent_version: env!("CARGO_PKG_VERSION").into(),
        }
    );
    // A HelloAck claiming a feature the host did not offer is refused.
    let bad = Message::HelloAck {
        version: VERSION,
        features: FEATURE_TCP,
        window: DEFAULT_WINDOW,
        agent_version: String::new(),
    };
    assert!(s.send(&bad, &mut Vec::new()).is_err());
    s.send(&reply, &mut Vec::new()).unwrap();
    assert_eq!(s.agreed().unwrap().host_window, 8192);
    // Versions that do not meet: SetupFailed(Handshake).
    let mut s = AgentSession::new(AgentConfig::default());
    feed(&mut s, &hello(VERSION + 1, VERSION + 3)).unwrap();
    assert!(matches!(
        s.hello_reply(),
        Some(Message::SetupFailed {
            stage: Stage::Handshake,
            ..
        })
    ));
    // The host's session refuses such an agent's HelloAck, and an agent
    // refuses a second Hello.
    let mut s = open();
    assert!(matches!(
        feed(&mut s, &hello(1, 2)),
        Err(Violation::Unsolicited { .. })
    ));
}

#[test]
fn host_ids_and_stale_messages() {
    let mut s = open();
    feed(&mut s, &start(5, StdinMode::Pipe)).unwrap();
    assert!(matches!(
        feed(&mut s.clone(), &start(3, StdinMode::Pipe)),
        Err(Violation::IdOrder { id: 3, last: 5 })
    ));
    let mut out = Vec::new();
    s.send(&Message::ProcStarted { id: 5, pid: 9 }, &mut out)
        .unwrap();
    s.send(
        &Message::ProcExited {
            id: 5,
            status: ExitStatus::Code(0),
            max_rss_kib: 0,
        },
        &mut out,
    )
    .unwrap();
    // Stdin the host sent before it saw the exit: dropped quietly.
    assert_eq!(
        feed(
            &mut s,
            &Message::ProcStdin {
                id: 5,
                data: vec![1]
            }
        ),
        Ok(None)
    );
    // An id the host never opened.
    assert!(matches!(
        feed(
            &mut s,
            &Message::ProcStdin {
                id: 6,
                data: vec![1]
            }
        ),
        Err(Violation::UnknownId { .. })
    ));
}

#[test]
fn agent_side_credit() {
    let mut s = open();
    feed(&mut s, &start(1, StdinMode::Pipe)).unwrap();
    let mut out = Vec::new();
    // Output before ProcStarted is the agent's own mistake.
    assert!(matches!(
        s.send(
            &Message::ProcOutput {
                id: 1,
                stream: OutStream::Stdout,
                data: vec![1]
            },
            &mut out
        ),
        Err(Misuse::WrongObject { .. })
    ));
    s.send(&Message::ProcStarted { id: 1, pid: 2 }, &mut out)
        .unwrap();
    // The host's window is 8192.
    s.send(
        &Message::ProcOutput {
            id: 1,
            stream: OutStream::Stdout,
            data: vec![1; 8192],
        },
        &mut out,
    )
    .unwrap();
    let before = out.len();
    assert!(matches!(
        s.send(
            &Message::ProcOutput {
                id: 1,
                stream: OutStream::Stdout,
                data: vec![1]
            },
            &mut out
        ),
        Err(Misuse::Flow { .. })
    ));
    assert_eq!(out.len(), before, "a refused send leaves no bytes");
    feed(
        &mut s,
        &Message::Credit {
            id: 1,
            stream: StreamKind::Stdout,
            bytes: 4096,
        },
    )
    .unwrap();
    assert_eq!(s.send_credit(1, StreamKind::Stdout), Some(4096));
    // A grant beyond the window is the host's violation.
    assert!(matches!(
        feed(
            &mut s.clone(),
            &Message::Credit {
                id: 1,
                stream: StreamKind::Stdout,
                bytes: 4097
            }
        ),
        Err(Violation::Flow { .. })
    ));
    // Stdin beyond the agent's window.
    let w = DEFAULT_WINDOW as usize;
    let mut n = 0;
    while n < w {
        let c = MAX_DATA.min(w - n);
        feed(
            &mut s,
            &Message::ProcStdin {
                id: 1,
                data: vec![0; c],
            },
        )
        .unwrap();
        n += c;
    }
    assert!(matches!(
        feed(
            &mut s,
            &Message::ProcStdin {
                id: 1,
                data: vec![0]
            }
        ),
        Err(Violation::Flow { .. })
    ));
}

/// Host and agent sessions over a non-blocking seqpacket socketpair in
/// one thread: the agent echoes a process's stdin to its stdout while a
/// second process's output is never read by the host; the echo still
/// completes (4 MiB, checksummed) and nobody exceeds a window.
#[test]
fn echo_over_socketpair_with_a_stalled_neighbour() {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array for the kernel to fill.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0);
    // SAFETY: both fds are fresh and owned here.
    let (a, b) = unsafe {
        use std::os::fd::{FromRawFd, OwnedFd};
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    for fd in [&a, &b] {
        set_nonblocking(fd.as_raw_fd(), true).unwrap();
    }
    let mut hc = Channel::new(a.as_raw_fd(), Transport::Seqpacket);
    let mut ac = Channel::new(b.as_raw_fd(), Transport::Seqpacket);
    let mut host = HostSession::new(HostConfig::default());
    let mut agent = AgentSession::new(AgentConfig {
        window: 64 * 1024,
        ..AgentConfig::default()
    });
    host.send_hello(hc.outbound()).unwrap();
    // Before HelloAck, data is refused (no window yet).
    host.send(
        &Message::ProcStdin {
            id: 1,
            data: vec![0],
        },
        &mut Vec::new(),
    )
    .unwrap_err();
    let total = 4 * 1024 * 1024usize;
    let mut stdin_sent = 0usize;
    let mut echoed = 0usize;
    let mut h_sum = 0u64;
    let mut e_sum = 0u64;
    let mut agent_buf: std::collections::VecDeque<u8> = Default::default();
    let mut started = false;
    let mut stalled_sent = 0usize;
    let mut rounds = 0;
    while echoed < total {
        rounds += 1;
        assert!(rounds < 100_000, "no progress");
        // Host: feed stdin as credit allows.
        if started {
            while let Some(c) = host.send_credit(1, StreamKind::Stdin) {
                let n = (c as usize).min(MAX_DATA).min(total - stdin_sent);
                if n == 0 || !hc.should_read() {
                    break;
                }
                let data: Vec<u8> = (stdin_sent..stdin_sent + n)
                    .map(|i| (i * 7) as u8)
                    .collect();
                h_sum = data
                    .iter()
                    .fold(h_sum, |s, &x| s.wrapping_mul(31).wrapping_add(x as u64));
                host.send(&Message::ProcStdin { id: 1, data }, hc.outbound())
                    .unwrap();
                stdin_sent += n;
            }
        }
        hc.flush().unwrap();
        // Agent: read host frames.
        while let Some(f) = ac.recv().unwrap() {
            match agent.on_frame(f).unwrap() {
                Some(Message::Hello { .. }) => {
                    let reply = agent.hello_reply().unwrap();
                    agent.send(&reply, ac.outbound()).unwrap();
                }
                Some(Message::ProcStart { id, .. }) => {
                    agent
                        .send(&Message::ProcStarted { id, pid: 100 + id }, ac.outbound())
                        .unwrap();
                }
                Some(Message::ProcStdin { id: 1, data }) => agent_buf.extend(data),
                Some(Message::Credit { .. }) | None => {}
                Some(m) => panic!("agent got {m:?}"),
            }
        }
        // Agent: echo what stdout credit allows; consuming stdin as it
        // goes returns stdin credit. The stalled process 2 writes until
        // its credit is gone.
        while let Some(c) = agent.send_credit(1, StreamKind::Stdout) {
            let n = (c as usize).min(MAX_DATA).min(agent_buf.len());
            if n == 0 {
                break;
            }
            let data: Vec<u8> = agent_buf.drain(..n).collect();
            agent
                .send(
                    &Message::ProcOutput {
                        id: 1,
                        stream: OutStream::Stdout,
                        data,
                    },
                    ac.outbound(),
                )
                .unwrap();
            let mut credit = Vec::new();
            agent
                .consumed(1, StreamKind::Stdin, n, &mut credit)
                .unwrap();
            ac.outbound().extend_from_slice(&credit);
        }
        if let Some(c) = agent.send_credit(2, StreamKind::Stdout) {
            let n = (c as usize).min(MAX_DATA);
            if n > 0 {
                agent
                    .send(
                        &Message::ProcOutput {
                            id: 2,
                            stream: OutStream::Stdout,
                            data: vec![b'z'; n],
                        },
                        ac.outbound(),
                    )
                    .unwrap();
                stalled_sent += n;
            }
        }
        ac.flush().unwrap();
        // Host: read agent frames.
        while let Some(f) = hc.recv().unwrap() {
            match host.on_frame(f).unwrap() {
                Some(Message::HelloAck { .. }) => {
                    host.send(&start(1, StdinMode::Pipe), hc.outbound())
                        .unwrap();
                    host.send(&start(2, StdinMode::Null), hc.outbound())
                        .unwrap();
                }
                Some(Message::ProcStarted { id: 1, .. }) => started = true,
                Some(Message::ProcOutput { id: 1, data, .. }) => {
                    e_sum = data
                        .iter()
                        .fold(e_sum, |s, &x| s.wrapping_mul(31).wrapping_add(x as u64));
                    echoed += data.len();
                    host.consumed(1, StreamKind::Stdout, data.len(), hc.outbound())
                        .unwrap();
                }
                // Process 2's output is never consumed: its reader stalls.
                Some(_) | None => {}
            }
        }
        hc.flush().unwrap();
    }
    assert_eq!(e_sum, h_sum);
    assert_eq!(
        stalled_sent, DEFAULT_WINDOW as usize,
        "the stalled stream stopped at its window"
    );
}
