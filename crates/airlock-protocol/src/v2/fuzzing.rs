//! The body of the fuzz target (`crates/airlock-protocol/fuzz`), built only
//! for tests and with the `fuzzing` feature (it panics when an invariant
//! breaks, which is its job), so that a stable-Rust test runs it too.
//!
//! It plays a host that completed the handshake and opened one of each
//! kind of object, then feeds the input, as bytes from the agent, through
//! the stream framer (in chunks whose sizes the input chooses), the
//! reassembler and [`HostSession`]. It checks, beyond "no panic":
//! - whatever decodes re-encodes to a message that decodes to itself, and a
//!   single frame re-encodes to exactly its own bytes (the encoding is
//!   canonical);
//! - the session tracks at most the ids the host opened plus the offers it
//!   allows, and buffers at most [`MAX_MESSAGE`] for reassembly;
//! - after a violation it stays failed.

use super::frame::{encode_to_vec, Frame};
use super::framer::StreamFramer;
use super::host::{HostConfig, HostSession};
use super::kind::FEATURES_ALL;
use super::message::{Message, StdinMode, WinSize};
use super::{DEFAULT_WINDOW, MAX_MESSAGE, VERSION};

/// How many ids [`host_with_objects`] opens.
pub const OPENED: usize = 12;

/// A host session past the handshake with ids 1..=12 opened: processes
/// (pipe stdin; pty; null stdin), a listing, file read, write, stat,
/// list, tar out, tar in, and two TCP streams (one of them connected).
pub fn host_with_objects(cfg: HostConfig) -> Option<HostSession> {
    let mut s = HostSession::new(cfg);
    let mut out = Vec::new();
    s.send_hello(&mut out).ok()?;
    let ack = Message::HelloAck {
        version: VERSION,
        features: FEATURES_ALL,
        window: DEFAULT_WINDOW,
        agent_version: "fuzz".into(),
    };
    let bytes = encode_to_vec(&ack).ok()?;
    s.on_frame(Frame::decode(&bytes).ok()?).ok()?;
    let start = |id, pty, stdin| Message::ProcStart {
        id,
        argv: vec![b"sh".to_vec()],
        env: vec![],
        cwd: b"/".to_vec(),
        uid: 0,
        gid: 0,
        pty,
        stdin,
    };
    let p = || b"/f".to_vec();
    let reqs = [
        start(1, None, StdinMode::Pipe),
        start(2, Some(WinSize { rows: 24, cols: 80 }), StdinMode::Pipe),
        start(3, None, StdinMode::Null),
        Message::ProcList { id: 4 },
        Message::FileRead {
            id: 5,
            path: p(),
            offset: 0,
            len: u64::MAX,
        },
        Message::FileWrite {
            id: 6,
            path: p(),
            mode: 0o644,
            flags: Default::default(),
        },
        Message::FileStat {
            id: 7,
            path: p(),
            follow: true,
        },
        Message::FileList { id: 8, path: p() },
        Message::TarOut { id: 9, path: p() },
        Message::TarIn { id: 10, path: p() },
        Message::tcp_connect_loopback(11, 80),
        Message::tcp_connect_loopback(12, 81),
        Message::Plan { data: vec![1] },
        Message::Ping { nonce: 7 },
    ];
    for r in &reqs {
        s.send(r, &mut out).ok()?;
    }
    Some(s)
}

/// Runs one fuzz input. Panics only when an invariant above breaks.
pub fn host_stream(data: &[u8]) {
    let cfg = HostConfig {
        max_pending_offers: 4,
        ..HostConfig::default()
    };
    let max_offers = cfg.max_pending_offers;
    let Some(mut s) = host_with_objects(cfg) else {
        panic!("set-up failed");
    };
    let (&chunk, data) = match data.split_first() {
        Some(x) => x,
        None => return,
    };
    let chunk = usize::from(chunk).max(1) * 7;
    let mut framer = StreamFramer::new();
    let mut failed = false;
    for piece in data.chunks(chunk) {
        framer.push(piece);
        loop {
            let frame = match framer.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return,
            };
            check_canonical(&frame);
            let r = s.on_frame(frame);
            if failed {
                assert!(r.is_err(), "a failed session accepted a frame");
            }
            if r.is_err() {
                failed = true;
            }
            assert!(s.tracked() <= OPENED + max_offers, "tracked ids grew");
            assert!(s.pending_offers() <= max_offers);
            assert!(s.reassembly_buffered() <= MAX_MESSAGE);
        }
    }
}

/// A single-frame message that decodes re-encodes to the same bytes.
fn check_canonical(frame: &Frame<'_>) {
    if frame.flags != 0 {
        return;
    }
    if let Ok(m) = Message::decode(frame.kind, frame.id, frame.body) {
        let again = encode_to_vec(&m).unwrap_or_default();
        let f2 = Frame::decode(&again);
        assert_eq!(
            f2.map(|f| (f.kind, f.id, f.body.to_vec())),
            Ok((frame.kind, frame.id, frame.body.to_vec())),
            "{m:?} is not canonical"
        );
    }
}
