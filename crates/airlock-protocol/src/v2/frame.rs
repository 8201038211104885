//! Frames: the fixed header, encoding a message into one or more frames,
//! and reassembling fragmented messages.

use super::error::WireError;
use super::kind::{IdRule, Kind};
use super::message::Message;
use super::{AGENT_ID_BIT, HEADER_LEN, MAX_BODY, MAX_FRAME, MAX_MESSAGE};

/// Header flag: more fragments of this message follow.
pub const FLAG_MORE: u8 = 0x01;
/// Header flag: this frame continues a message begun by an earlier frame.
pub const FLAG_CONT: u8 = 0x02;
const FLAGS_KNOWN: u8 = FLAG_MORE | FLAG_CONT;

/// One frame, borrowed from the bytes it was decoded from. Its header has
/// been fully checked: known kind, known flags (fragment flags only on
/// fragmentable kinds), id valid for the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: Kind,
    pub flags: u8,
    pub id: u32,
    pub body: &'a [u8],
}

/// Reads the length field at the start of `buf` and returns the whole
/// frame's size (header included), or `None` if fewer than 4 bytes are
/// there. A length that no valid frame has is an error at once, before any
/// body byte is buffered.
pub fn frame_size(buf: &[u8]) -> Option<Result<usize, WireError>> {
    let l: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let claimed = u32::from_le_bytes(l) as usize;
    let total = claimed.saturating_add(4);
    Some(if total > MAX_FRAME {
        Err(WireError::FrameTooLarge {
            len: total,
            max: MAX_FRAME,
        })
    } else if total < HEADER_LEN {
        Err(WireError::FrameTooShort { len: total })
    } else {
        Ok(total)
    })
}

impl<'a> Frame<'a> {
    /// Decodes exactly one frame that fills `bytes` (a seqpacket packet, or
    /// a frame the stream framer cut out).
    pub fn decode(bytes: &'a [u8]) -> Result<Frame<'a>, WireError> {
        if bytes.len() > MAX_FRAME {
            return Err(WireError::FrameTooLarge {
                len: bytes.len(),
                max: MAX_FRAME,
            });
        }
        if bytes.len() < HEADER_LEN {
            return Err(WireError::FrameTooShort { len: bytes.len() });
        }
        let claimed = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if claimed != bytes.len() - 4 {
            return Err(WireError::LengthMismatch {
                claimed,
                actual: bytes.len() - 4,
            });
        }
        let kind = match Kind::from_u8(bytes[4]) {
            Some(k) => k,
            // A v1 frame has its version (1) at this offset.
            None if bytes[4] == 1 => return Err(WireError::V1Frame),
            None => return Err(WireError::UnknownKind { kind: bytes[4] }),
        };
        let flags = bytes[5];
        if flags & !FLAGS_KNOWN != 0 {
            return Err(WireError::ReservedFlags { kind, flags });
        }
        if flags != 0 && !kind.fragmentable() {
            return Err(WireError::NotFragmentable { kind, flags });
        }
        let id = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        check_id(kind, id)?;
        Ok(Frame {
            kind,
            flags,
            id,
            body: &bytes[HEADER_LEN..],
        })
    }
}

/// Checks a header id against its kind's rule.
pub fn check_id(kind: Kind, id: u32) -> Result<(), WireError> {
    let (ok, expected) = match kind.id_rule() {
        IdRule::Zero => {
            return if id == 0 {
                Ok(())
            } else {
                Err(WireError::NonZeroId { kind, id })
            }
        }
        IdRule::Host => (id != 0 && id & AGENT_ID_BIT == 0, "host-chosen"),
        IdRule::Agent => (id & AGENT_ID_BIT != 0, "agent-chosen"),
        IdRule::NonZero => (id != 0, "non-zero"),
    };
    if ok {
        Ok(())
    } else {
        Err(WireError::BadId { kind, id, expected })
    }
}

fn push_header(out: &mut Vec<u8>, kind: Kind, flags: u8, id: u32, body_len: usize) {
    // body_len <= MAX_BODY, so this fits a u32.
    let len = (body_len + HEADER_LEN - 4) as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.push(kind as u8);
    out.push(flags);
    out.extend_from_slice(&id.to_le_bytes());
}

/// Encodes `msg` as one frame, or as several if it is larger than one
/// frame's body and of a fragmentable kind, appending the frames back to
/// back to `out` (on a seqpacket channel each is sent as its own packet).
/// Returns the number of frames. On error `out` is left as it was.
pub fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<usize, WireError> {
    let kind = msg.kind();
    let id = msg.id();
    check_id(kind, id)?;
    // The body goes straight after a header-sized gap (one copy of the
    // data, not two); the header is filled in once the length is known.
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    if let Err(e) = msg.encode_body(out) {
        out.truncate(start);
        return Err(e);
    }
    let body_len = out.len() - start - HEADER_LEN;
    let max = if kind.fragmentable() {
        MAX_MESSAGE
    } else {
        MAX_BODY
    };
    if body_len > max {
        out.truncate(start);
        return Err(WireError::MessageTooLarge { kind, max });
    }
    if body_len <= MAX_BODY {
        let mut h = Vec::with_capacity(HEADER_LEN);
        push_header(&mut h, kind, 0, id, body_len);
        out[start..start + HEADER_LEN].copy_from_slice(&h);
        return Ok(1);
    }
    let body = out.split_off(start + HEADER_LEN);
    out.truncate(start);
    let n = body.len().div_ceil(MAX_BODY);
    out.reserve(n * HEADER_LEN + body.len());
    for (i, chunk) in body.chunks(MAX_BODY).enumerate() {
        let mut flags = 0;
        if i > 0 {
            flags |= FLAG_CONT;
        }
        if i + 1 < n {
            flags |= FLAG_MORE;
        }
        push_header(out, kind, flags, id, chunk.len());
        out.extend_from_slice(chunk);
    }
    Ok(n)
}

/// Encodes `msg` into a fresh buffer of back-to-back frames.
pub fn encode_to_vec(msg: &Message) -> Result<Vec<u8>, WireError> {
    let mut v = Vec::new();
    encode(msg, &mut v)?;
    Ok(v)
}

/// Reassembles fragmented messages from one direction of a channel and
/// decodes every message.
///
/// At most one message is reassembled at a time; single-frame messages may
/// arrive between its fragments and are decoded at once. Every fragment but
/// the last is full ([`MAX_BODY`] bytes), and the whole message is at most
/// `max_message` bytes: the buffer grows only with bytes that arrived and
/// never past that cap.
#[derive(Debug, Clone)]
pub struct Reassembler {
    partial: Option<Partial>,
    max_message: usize,
}

#[derive(Debug, Clone)]
struct Partial {
    kind: Kind,
    id: u32,
    body: Vec<u8>,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(MAX_MESSAGE)
    }
}

impl Reassembler {
    /// A reassembler refusing messages above `max_message` bytes (clamped
    /// to [`MAX_BODY`]..=[`MAX_MESSAGE`]).
    pub fn new(max_message: usize) -> Reassembler {
        Reassembler {
            partial: None,
            max_message: max_message.clamp(MAX_BODY, MAX_MESSAGE),
        }
    }

    /// Bytes held for the message being reassembled.
    pub fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.body.len())
    }

    /// Feeds one frame: a whole message when it completes one, `None` when
    /// it was a non-final fragment.
    pub fn push(&mut self, frame: Frame<'_>) -> Result<Option<Message>, WireError> {
        let Frame {
            kind,
            flags,
            id,
            body,
        } = frame;
        let more = flags & FLAG_MORE != 0;
        let cont = flags & FLAG_CONT != 0;
        if more && body.len() != MAX_BODY {
            return Err(WireError::ShortFragment {
                kind,
                len: body.len(),
            });
        }
        if !cont {
            if !more {
                return Message::decode(kind, id, body).map(Some);
            }
            if let Some(p) = &self.partial {
                return Err(WireError::FragmentInterleaved {
                    kind,
                    id,
                    busy_kind: p.kind,
                    busy_id: p.id,
                });
            }
            self.partial = Some(Partial {
                kind,
                id,
                body: body.to_vec(),
            });
            return Ok(None);
        }
        let Some(p) = self.partial.as_mut() else {
            return Err(WireError::UnexpectedContinuation { kind, id });
        };
        if p.kind != kind || p.id != id {
            return Err(WireError::ContinuationMismatch {
                kind,
                id,
                expected_kind: p.kind,
                expected_id: p.id,
            });
        }
        if p.body.len() + body.len() > self.max_message {
            self.partial = None;
            return Err(WireError::MessageTooLarge {
                kind,
                max: self.max_message,
            });
        }
        p.body.extend_from_slice(body);
        if more {
            return Ok(None);
        }
        match self.partial.take() {
            Some(p) => Message::decode(p.kind, p.id, &p.body).map(Some),
            None => Ok(None),
        }
    }
}
