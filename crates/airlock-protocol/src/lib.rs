//! Host ↔ agent frames.
//!
//! A frame is `[len: u32 LE][version: u8][kind: u8][body]`, where `len`
//! counts everything after itself. Frames never exceed [`MAX_FRAME`] bytes.
//! On a `SOCK_SEQPACKET` socketpair one frame is one packet; the same
//! encoding works on a byte stream (virtio-serial) with [`FrameReader`].
//!
//! The host never trusts the agent: untrusted code may have taken it over.
//! Decoding is total (every byte string gives a message or an error, never a
//! panic) and bounded, and every field has a checked range.
//!
//! This module root is protocol v1, which the current agent and host still
//! speak; [`v2`] is its successor (one long-lived agent, many streams).

pub mod v2;

/// The protocol generation. A peer speaking another one is refused.
pub const VERSION: u8 = 1;
/// The largest frame either side sends or accepts, header included.
pub const MAX_FRAME: usize = 64 * 1024;
/// The largest text carried in an error message.
pub const MAX_TEXT: usize = 4096;

const HEADER: usize = 6;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("frame of {len} bytes is larger than the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame of {len} bytes is shorter than its {need}-byte header or body")]
    Truncated { len: usize, need: usize },
    #[error("frame length field says {claimed} bytes but {actual} arrived")]
    LengthMismatch { claimed: usize, actual: usize },
    #[error("peer speaks protocol version {got}, this side speaks {VERSION}")]
    Version { got: u8 },
    #[error("unknown message kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("message kind {kind} has {extra} trailing bytes")]
    Trailing { kind: u8, extra: usize },
    #[error("field {field} is out of range: {value}")]
    Range { field: &'static str, value: u64 },
    #[error("text field is not UTF-8")]
    Utf8,
}

/// Where in the sandbox's start-up something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    UserNamespace = 1,
    Mounts = 2,
    Network = 3,
    Hostname = 4,
    Credentials = 5,
    Landlock = 6,
    Seccomp = 7,
    Workdir = 8,
    Stdio = 9,
    Exec = 10,
    Limits = 11,
    Agent = 12,
}

impl Stage {
    fn from_u8(v: u8) -> Option<Stage> {
        use Stage::*;
        Some(match v {
            1 => UserNamespace,
            2 => Mounts,
            3 => Network,
            4 => Hostname,
            5 => Credentials,
            6 => Landlock,
            7 => Seccomp,
            8 => Workdir,
            9 => Stdio,
            10 => Exec,
            11 => Limits,
            12 => Agent,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use Stage::*;
        match self {
            UserNamespace => "user namespace",
            Mounts => "mounts",
            Network => "network",
            Hostname => "hostname",
            Credentials => "credentials",
            Landlock => "landlock",
            Seccomp => "seccomp",
            Workdir => "working directory",
            Stdio => "stdio",
            Exec => "exec",
            Limits => "limits",
            Agent => "agent",
        }
    }
}

/// Every message, in both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    // ---- agent → host ----
    /// The command was started; `pid` is its pid inside the sandbox.
    Started { pid: u32 },
    /// Setting the sandbox up failed before the command ran.
    SetupFailed {
        stage: Stage,
        errno: i32,
        detail: String,
    },
    /// The command could not be executed (`errno` from execve).
    ExecFailed { errno: i32 },
    /// The command ended. Exactly one of `code` / `signal` is meaningful.
    Exited {
        code: Option<u8>,
        signal: Option<u8>,
        /// Peak resident set size of the largest process, in KiB.
        max_rss_kib: u64,
    },
    /// Something the user should hear about the set-up (a fallback taken),
    /// sent before the command starts. Printed by the host with control
    /// characters escaped.
    Note { text: String },
    // ---- host → agent ----
    /// Deliver a signal to the command's process group.
    Signal { signo: u8 },
    /// Kill everything and exit.
    Shutdown,
}

const K_STARTED: u8 = 1;
const K_SETUP_FAILED: u8 = 2;
const K_EXEC_FAILED: u8 = 3;
const K_EXITED: u8 = 4;
const K_NOTE: u8 = 5;
const K_SIGNAL: u8 = 32;
const K_SHUTDOWN: u8 = 33;

impl Message {
    /// Encodes into `out` (cleared first). Text longer than [`MAX_TEXT`] is
    /// cut at a character boundary.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&[0, 0, 0, 0, VERSION]);
        match self {
            Message::Started { pid } => {
                out.push(K_STARTED);
                out.extend_from_slice(&pid.to_le_bytes());
            }
            Message::SetupFailed {
                stage,
                errno,
                detail,
            } => {
                out.push(K_SETUP_FAILED);
                out.push(*stage as u8);
                out.extend_from_slice(&errno.to_le_bytes());
                let mut end = detail.len().min(MAX_TEXT);
                while !detail.is_char_boundary(end) {
                    end -= 1;
                }
                out.extend_from_slice(&detail.as_bytes()[..end]);
            }
            Message::Note { text } => {
                out.push(K_NOTE);
                let mut end = text.len().min(MAX_TEXT);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                out.extend_from_slice(&text.as_bytes()[..end]);
            }
            Message::ExecFailed { errno } => {
                out.push(K_EXEC_FAILED);
                out.extend_from_slice(&errno.to_le_bytes());
            }
            Message::Exited {
                code,
                signal,
                max_rss_kib,
            } => {
                out.push(K_EXITED);
                out.push(code.is_some() as u8);
                out.push(code.unwrap_or(0));
                out.push(signal.is_some() as u8);
                out.push(signal.unwrap_or(0));
                out.extend_from_slice(&max_rss_kib.to_le_bytes());
            }
            Message::Signal { signo } => {
                out.push(K_SIGNAL);
                out.push(*signo);
            }
            Message::Shutdown => out.push(K_SHUTDOWN),
        }
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_le_bytes());
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        self.encode_into(&mut v);
        v
    }

    /// Decodes exactly one whole frame.
    pub fn decode(frame: &[u8]) -> Result<Message, ProtocolError> {
        if frame.len() > MAX_FRAME {
            return Err(ProtocolError::TooLarge {
                len: frame.len(),
                max: MAX_FRAME,
            });
        }
        if frame.len() < HEADER {
            return Err(ProtocolError::Truncated {
                len: frame.len(),
                need: HEADER,
            });
        }
        let claimed = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        if claimed != frame.len() - 4 {
            return Err(ProtocolError::LengthMismatch {
                claimed,
                actual: frame.len() - 4,
            });
        }
        if frame[4] != VERSION {
            return Err(ProtocolError::Version { got: frame[4] });
        }
        let kind = frame[5];
        let mut body = Body {
            b: &frame[HEADER..],
            len: frame.len(),
        };
        let msg = match kind {
            K_STARTED => Message::Started { pid: body.u32()? },
            K_SETUP_FAILED => {
                let s = body.u8()?;
                let stage = Stage::from_u8(s).ok_or(ProtocolError::Range {
                    field: "stage",
                    value: s as u64,
                })?;
                let errno = body.errno()?;
                let rest = body.rest();
                if rest.len() > MAX_TEXT {
                    return Err(ProtocolError::TooLarge {
                        len: rest.len(),
                        max: MAX_TEXT,
                    });
                }
                let detail = std::str::from_utf8(rest)
                    .map_err(|_| ProtocolError::Utf8)?
                    .to_string();
                Message::SetupFailed {
                    stage,
                    errno,
                    detail,
                }
            }
            K_NOTE => {
                let rest = body.rest();
                if rest.len() > MAX_TEXT {
                    return Err(ProtocolError::TooLarge {
                        len: rest.len(),
                        max: MAX_TEXT,
                    });
                }
                Message::Note {
                    text: std::str::from_utf8(rest)
                        .map_err(|_| ProtocolError::Utf8)?
                        .to_string(),
                }
            }
            K_EXEC_FAILED => Message::ExecFailed {
                errno: body.errno()?,
            },
            K_EXITED => {
                let has_code = body.flag()?;
                let code = body.u8()?;
                let has_sig = body.flag()?;
                let sig = body.u8()?;
                if has_code == has_sig {
                    return Err(ProtocolError::Range {
                        field: "exit status (exactly one of code and signal)",
                        value: has_code as u64,
                    });
                }
                if has_sig && !(1..=64).contains(&sig) {
                    return Err(ProtocolError::Range {
                        field: "signal",
                        value: sig as u64,
                    });
                }
                Message::Exited {
                    code: has_code.then_some(code),
                    signal: has_sig.then_some(sig),
                    max_rss_kib: body.u64()?,
                }
            }
            K_SIGNAL => {
                let signo = body.u8()?;
                if !(1..=64).contains(&signo) {
                    return Err(ProtocolError::Range {
                        field: "signal",
                        value: signo as u64,
                    });
                }
                Message::Signal { signo }
            }
            K_SHUTDOWN => Message::Shutdown,
            k => return Err(ProtocolError::UnknownKind { kind: k }),
        };
        if !body.b.is_empty() {
            return Err(ProtocolError::Trailing {
                kind,
                extra: body.b.len(),
            });
        }
        Ok(msg)
    }
}

struct Body<'a> {
    b: &'a [u8],
    len: usize,
}

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.b.len() < n {
            return Err(ProtocolError::Truncated {
                len: self.len,
                need: self.len - self.b.len() + n,
            });
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }
    fn flag(&mut self) -> Result<bool, ProtocolError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(ProtocolError::Range {
                field: "flag",
                value: v as u64,
            }),
        }
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let t = self.take(4)?;
        Ok(u32::from_le_bytes([t[0], t[1], t[2], t[3]]))
    }
    fn errno(&mut self) -> Result<i32, ProtocolError> {
        let v = self.u32()? as i32;
        if !(1..=4095).contains(&v) {
            return Err(ProtocolError::Range {
                field: "errno",
                value: v as u32 as u64,
            });
        }
        Ok(v)
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        let t = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(t);
        Ok(u64::from_le_bytes(a))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
}

/// Splits a byte stream into frames, refusing oversized ones before
/// buffering them.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len + 4 > MAX_FRAME {
            return Err(ProtocolError::TooLarge {
                len: len + 4,
                max: MAX_FRAME,
            });
        }
        if self.buf.len() < len + 4 {
            return Ok(None);
        }
        let frame: Vec<u8> = self.buf.drain(..len + 4).collect();
        Message::decode(&frame).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Message> {
        vec![
            Message::Started { pid: 2 },
            Message::SetupFailed {
                stage: Stage::Mounts,
                errno: 13,
                detail: "bind /work: permission denied".into(),
            },
            Message::ExecFailed { errno: 2 },
            Message::Note {
                text: "overlayfs refused /usr".into(),
            },
            Message::Exited {
                code: Some(3),
                signal: None,
                max_rss_kib: 1234,
            },
            Message::Exited {
                code: None,
                signal: Some(9),
                max_rss_kib: 0,
            },
            Message::Signal { signo: 15 },
            Message::Shutdown,
        ]
    }

    #[test]
    fn round_trip() {
        for m in all() {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    /// The wire format is a contract with agents of the same generation:
    /// a change here must bump VERSION.
    #[test]
    fn wire_snapshot() {
        assert_eq!(
            Message::Started { pid: 7 }.encode(),
            [6, 0, 0, 0, 1, 1, 7, 0, 0, 0]
        );
        assert_eq!(
            Message::Exited {
                code: Some(1),
                signal: None,
                max_rss_kib: 2
            }
            .encode(),
            [14, 0, 0, 0, 1, 4, 1, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(Message::Shutdown.encode(), [2, 0, 0, 0, 1, 33]);
        assert_eq!(
            Message::Note { text: "hi".into() }.encode(),
            [4, 0, 0, 0, 1, 5, b'h', b'i']
        );
    }

    #[test]
    fn hostile_frames_rejected() {
        let good = Message::Started { pid: 1 }.encode();
        // Wrong version.
        let mut f = good.clone();
        f[4] = 9;
        assert_eq!(Message::decode(&f), Err(ProtocolError::Version { got: 9 }));
        // Length lies.
        let mut f = good.clone();
        f[0] = 100;
        assert!(matches!(
            Message::decode(&f),
            Err(ProtocolError::LengthMismatch { .. })
        ));
        // Trailing bytes.
        let mut f = good.clone();
        f.push(0);
        f[0] += 1;
        assert!(matches!(
            Message::decode(&f),
            Err(ProtocolError::Trailing { .. })
        ));
        // Unknown kind.
        let f = [2, 0, 0, 0, 1, 200];
        assert_eq!(
            Message::decode(&f),
            Err(ProtocolError::UnknownKind { kind: 200 })
        );
        // Both a code and a signal.
        let f = [14, 0, 0, 0, 1, 4, 1, 1, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            Message::decode(&f),
            Err(ProtocolError::Range { .. })
        ));
        // Signal out of range.
        let f = [3, 0, 0, 0, 1, 32, 0];
        assert!(matches!(
            Message::decode(&f),
            Err(ProtocolError::Range { .. })
        ));
        // errno 0 or negative.
        let f = [6, 0, 0, 0, 1, 3, 0, 0, 0, 0];
        assert!(matches!(
            Message::decode(&f),
            Err(ProtocolError::Range { .. })
        ));
        // Oversized.
        let big = vec![0u8; MAX_FRAME + 1];
        assert!(matches!(
            Message::decode(&big),
            Err(ProtocolError::TooLarge { .. })
        ));
        // Bad UTF-8.
        let mut f = vec![0, 0, 0, 0, 1, 2, 2, 13, 0, 0, 0, 0xff, 0xfe];
        let n = (f.len() - 4) as u32;
        f[..4].copy_from_slice(&n.to_le_bytes());
        assert_eq!(Message::decode(&f), Err(ProtocolError::Utf8));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for m in all() {
            let f = m.encode();
            for cut in 0..f.len() {
                let mut g = f[..cut].to_vec();
                if g.len() >= 4 {
                    let n = (g.len() - 4) as u32;
                    g[..4].copy_from_slice(&n.to_le_bytes());
                }
                // Shutdown has an empty body, so only cuts into the header fail.
                if let Ok(got) = Message::decode(&g) {
                    assert_ne!(got, m, "cut at {cut} decoded to the original");
                }
            }
        }
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        let m = Message::SetupFailed {
            stage: Stage::Exec,
            errno: 1,
            detail: "é".repeat(MAX_TEXT),
        };
        match Message::decode(&m.encode()).unwrap() {
            Message::SetupFailed { detail, .. } => {
                assert!(detail.len() <= MAX_TEXT);
                assert!(detail.chars().all(|c| c == 'é'));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stream_reader_splits_and_bounds() {
        let mut r = FrameReader::default();
        let a = Message::Started { pid: 5 }.encode();
        let b = Message::Shutdown.encode();
        let mut stream = a.clone();
        stream.extend_from_slice(&b);
        r.push(&stream[..3]);
        assert_eq!(r.next_message().unwrap(), None);
        r.push(&stream[3..]);
        assert_eq!(r.next_message().unwrap(), Some(Message::Started { pid: 5 }));
        assert_eq!(r.next_message().unwrap(), Some(Message::Shutdown));
        assert_eq!(r.next_message().unwrap(), None);
        let mut r = FrameReader::default();
        r.push(&u32::MAX.to_le_bytes());
        assert!(matches!(
            r.next_message(),
            Err(ProtocolError::TooLarge { .. })
        ));
    }
}
