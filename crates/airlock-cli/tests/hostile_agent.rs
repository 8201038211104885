//! A hostile agent: the host side of the library must survive an agent
//! that untrusted code has taken over. This test binary is its own test
//! double — exec'd as `airlock-agent` (the library is told to use it as the
//! agent binary), it shakes hands properly and then, for the process the
//! host starts, does what that process's name says: sends garbage,
//! oversized or truncated frames, messages nobody asked for, messages in
//! the wrong order or direction, floods without credit, or stalls
//! mid-frame. Each time the host must end that sandbox with an error (or
//! see the agent gone), never panic, hang, or grow without bound.
//!
//! `harness = false`: `main` is either the double or the test runner.

use airlock_core::{CoreError, CreateOptions, Event, ProcessSpec, Sandbox};
use airlock_protocol::v2::{
    self, encode_to_vec, AgentConfig, AgentSession, Channel, Message, OutStream, Transport,
};
use airlock_spec::{Isolation, SandboxSpec};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

const FD_CHANNEL: RawFd = 3;
const FD_CONTROL: RawFd = 4;

fn main() {
    if std::env::args_os()
        .next()
        .is_some_and(|a| a == "airlock-agent")
    {
        double();
    }
    runner();
}

// ---------------------------------------------------------------- double

fn write_all(fd: RawFd, mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: writes from a live buffer.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // The host hung up on us: that is what it should do.
            // SAFETY: leaves at once.
            unsafe { libc::_exit(0) };
        }
        b = &b[n as usize..];
    }
}

/// Sends one packet (seqpacket) or bytes (stream).
fn send_raw(stream: bool, bytes: &[u8]) {
    if stream {
        write_all(FD_CHANNEL, bytes);
    } else {
        // SAFETY: sends from a live buffer.
        let n = unsafe { libc::send(FD_CHANNEL, bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            // SAFETY: leaves at once.
            unsafe { libc::_exit(0) };
        }
    }
}

/// Sends a message, one packet per frame on seqpacket.
fn send_msg(stream: bool, m: &Message) {
    let bytes = encode_to_vec(m).expect("encode");
    if stream {
        write_all(FD_CHANNEL, &bytes);
    } else {
        let mut off = 0;
        while off < bytes.len() {
            let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize + 4;
            send_raw(false, &bytes[off..off + len]);
            off += len;
        }
    }
}

/// A frame header for `kind` with a body of `len` bytes.
fn header(kind: u8, id: u32, len: u32) -> Vec<u8> {
    let mut h = (len + 6).to_le_bytes().to_vec();
    h.push(kind);
    h.push(0);
    h.extend_from_slice(&id.to_le_bytes());
    h
}

fn double() -> ! {
    // The local tier's configuration.
    let mut cfg = [0u8; 16];
    // SAFETY: receives into a local buffer.
    unsafe { libc::recv(FD_CONTROL, cfg.as_mut_ptr().cast(), cfg.len(), 0) };
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a local int.
    unsafe {
        libc::getsockopt(
            FD_CHANNEL,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    let stream = ty == libc::SOCK_STREAM;
    let mut ch = Channel::new(
        FD_CHANNEL,
        if stream {
            Transport::Stream
        } else {
            Transport::Seqpacket
        },
    );
    let mut sess = AgentSession::new(AgentConfig::default());
    let mut mode = String::new();
    let mut id = 0;
    // Play by the rules until the host starts a process.
    while mode.is_empty() {
        let f = match ch.recv() {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            // SAFETY: leaves at once.
            Err(_) => unsafe { libc::_exit(0) },
        };
        let Ok(Some(m)) = sess.on_frame(f) else {
            continue;
        };
        match m {
            Message::Hello { .. } => {
                let reply = sess.hello_reply().expect("reply");
                let _ = sess.send(&reply, ch.outbound());
                let _ = ch.flush();
            }
            Message::Plan { .. } => {
                let _ = sess.send(&Message::Ready, ch.outbound());
                let _ = ch.flush();
            }
            Message::ProcStart { id: i, argv, .. } => {
                id = i;
                mode = String::from_utf8_lossy(&argv[0]).into_owned();
            }
            _ => {}
        }
    }
    let out = |data: Vec<u8>| Message::ProcOutput {
        id,
        stream: OutStream::Stdout,
        data,
    };
    match mode.as_str() {
        "garbage" => {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let junk: Vec<u8> = (0..4096)
                .map(|_| {
                    x ^= x << 7;
                    x ^= x >> 9;
                    x as u8
                })
                .collect();
            send_raw(stream, &junk);
        }
        "oversized" => {
            let mut h = header(21, id, 1 << 30);
            h.extend_from_slice(&[0u8; 64]);
            send_raw(stream, &h);
        }
        "unknown-kind" => {
            let mut h = header(250, id, 4);
            h.extend_from_slice(&[1, 2, 3, 4]);
            send_raw(stream, &h);
        }
        "unsolicited" => send_msg(stream, &{
            Message::ProcOutput {
                id: id + 1000,
                stream: OutStream::Stdout,
                data: b"nobody asked".to_vec(),
            }
        }),
        "exited-twice" => {
            send_msg(stream, &Message::ProcStarted { id, pid: 42 });
            for _ in 0..2 {
                send_msg(
                    stream,
                    &Message::ProcExited {
                        id,
                        status: v2::ExitStatus::Code(0),
                        max_rss_kib: 1,
                    },
                );
            }
        }
        "second-hello-ack" => send_msg(
            stream,
            &Message::HelloAck {
                version: v2::VERSION,
                features: 0,
                window: 1 << 16,
                agent_version: "again".into(),
            },
        ),
        "wrong-direction" => send_msg(
            stream,
            &Message::ProcSignal {
                id,
                signo: libc::SIGKILL as u8,
            },
        ),
        "notices-after-ready" => {
            for i in 0..100 {
                send_msg(
                    stream,
                    &Message::Notice {
                        text: format!("noise {i}"),
                    },
                );
            }
        }
        "flood" => {
            // Far past the host's window, without waiting for credit.
            send_msg(stream, &Message::ProcStarted { id, pid: 42 });
            let chunk = vec![b'x'; v2::MAX_DATA];
            for _ in 0..4096 {
                send_msg(stream, &out(chunk.clone()));
            }
        }
        "stall" => {
            // Half a frame (on a byte stream: a packet is whole or
            // refused), then silence.
            send_msg(stream, &Message::ProcStarted { id, pid: 42 });
            if stream {
                let mut h = header(21, id, 1000);
                h.extend_from_slice(&[0u8; 10]);
                send_raw(stream, &h);
            }
            std::thread::sleep(Duration::from_secs(120));
        }
        _ => {}
    }
    // Linger so that the host, not our exit, ends the sandbox.
    std::thread::sleep(Duration::from_secs(60));
    // SAFETY: leaves at once.
    unsafe { libc::_exit(0) }
}

// ---------------------------------------------------------------- runner

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// How a scenario must end.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// An error for the sandbox (the agent broke the protocol).
    Error,
    /// No error, no hang: the host waits with a deadline and kills it.
    Quiet,
}

fn scenario(mode: &str, stream: bool, expect: Expect) -> Result<(), String> {
    let spec = {
        let mut s = SandboxSpec::new(vec!["true".into()]);
        s.isolation = Isolation::None;
        s
    };
    let t0 = Instant::now();
    let rss0 = rss_kib();
    let mut sb = Sandbox::create(
        &spec,
        CreateOptions {
            stream_channel: stream,
            agent: None,
            window: None,
            one_shot: false,
            accounting: false,
            image: None,
            egress_audit: None,
            ..Default::default()
        },
    )
    .map_err(|e| format!("create: {e}"))?;
    let agent = sb.agent_pid();
    sb.start(&ProcessSpec::new(vec![mode.into()]))
        .map_err(|e| format!("start: {e}"))?;
    let end = Instant::now() + Duration::from_secs(20);
    let outcome = loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break None;
        }
        match sb.wait(Some(left.min(Duration::from_secs(2)))) {
            Err(e) => break Some(Err(e)),
            Ok(Some(Event::AgentGone)) => break Some(Ok(())),
            Ok(Some(_)) => {}
            Ok(None) if expect == Expect::Quiet && t0.elapsed() > Duration::from_secs(2) => {
                break None;
            }
            Ok(None) => {}
        }
    };
    let grown = rss_kib().saturating_sub(rss0);
    match (expect, outcome) {
        (Expect::Error, Some(Err(CoreError::AgentMisbehaved { what }))) => {
            eprintln!("  {mode}: refused: {what}");
        }
        (Expect::Error, other) => {
            return Err(format!("expected a protocol error, got {other:?}"));
        }
        (Expect::Quiet, None) => {}
        (Expect::Quiet, Some(r)) => return Err(format!("expected a quiet wait, got {r:?}")),
    }
    // Whatever happened, the sandbox ends when asked, promptly.
    let t = Instant::now();
    sb.kill();
    sb.close();
    if t.elapsed() > Duration::from_secs(10) {
        return Err(format!("teardown took {:?}", t.elapsed()));
    }
    // The double is gone.
    // SAFETY: signal 0 probes a pid.
    if unsafe { libc::kill(agent, 0) } == 0 {
        let stat = std::fs::read_to_string(format!("/proc/{agent}/stat")).unwrap_or_default();
        if !stat.contains(") Z") && !stat.is_empty() {
            return Err(format!("the agent {agent} is still alive: {stat}"));
        }
    }
    if grown > 64 * 1024 {
        return Err(format!("the host grew by {grown} KiB"));
    }
    Ok(())
}

fn runner() {
    airlock_core::use_agent_binary(&std::env::current_exe().expect("own path"))
        .expect("agent binary");
    let cases = [
        ("garbage", Expect::Error),
        ("oversized", Expect::Error),
        ("unknown-kind", Expect::Error),
        ("unsolicited", Expect::Error),
        ("exited-twice", Expect::Error),
        ("second-hello-ack", Expect::Error),
        ("wrong-direction", Expect::Error),
        ("notices-after-ready", Expect::Error),
        ("flood", Expect::Error),
        ("stall", Expect::Quiet),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed, mut filtered) = (0, 0, 0);
    for stream in [false, true] {
        for (mode, expect) in cases {
            let name = format!(
                "hostile_agent_{}_{}",
                mode.replace('-', "_"),
                if stream { "stream" } else { "seqpacket" }
            );
            if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
                filtered += 1;
                continue;
            }
            match scenario(mode, stream, expect) {
                Ok(()) => {
                    println!("test {name} ... ok");
                    passed += 1;
                }
                Err(e) => {
                    println!("test {name} ... FAILED: {e}");
                    failed += 1;
                }
            }
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; {filtered} filtered out\n",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    std::process::exit(if failed == 0 { 0 } else { 101 });
}
