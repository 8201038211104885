//! The errors of protocol v2: one enum per layer, each variant with its
//! context, gathered in [`Error`].

use super::flow::FlowError;
use super::kind::Kind;
use super::message::StreamKind;

/// A byte string that is not a valid frame or message. Decoding is total:
/// every input yields a value or one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge { len: usize, max: usize },
    #[error("frame of {len} bytes is shorter than the 10-byte header")]
    FrameTooShort { len: usize },
    #[error("frame length field says {claimed} bytes follow it, but {actual} do")]
    LengthMismatch { claimed: usize, actual: usize },
    #[error("unknown message kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("peer speaks protocol v1 (its version byte 1 sits where v2 has the kind)")]
    V1Frame,
    #[error("{kind} frame has reserved flag bits set ({flags:#04x})")]
    ReservedFlags { kind: Kind, flags: u8 },
    #[error("{kind} messages are never fragmented, but the frame has fragment flags {flags:#04x}")]
    NotFragmentable { kind: Kind, flags: u8 },
    #[error("{kind} must carry id 0, not {id}")]
    NonZeroId { kind: Kind, id: u32 },
    #[error("{kind} carries id {id}, which is not a valid {expected} id")]
    BadId {
        kind: Kind,
        id: u32,
        expected: &'static str,
    },
    #[error("continuation of {kind} id {id} with no fragmented message in progress")]
    UnexpectedContinuation { kind: Kind, id: u32 },
    #[error("continuation of {kind} id {id} while {expected_kind} id {expected_id} is being reassembled")]
    ContinuationMismatch {
        kind: Kind,
        id: u32,
        expected_kind: Kind,
        expected_id: u32,
    },
    #[error("{kind} id {id} starts a fragmented message while {busy_kind} id {busy_id} is still being reassembled")]
    FragmentInterleaved {
        kind: Kind,
        id: u32,
        busy_kind: Kind,
        busy_id: u32,
    },
    #[error(
        "non-final fragment of {kind} carries {len} bytes; every fragment but the last is full"
    )]
    ShortFragment { kind: Kind, len: usize },
    #[error("{kind} message would exceed {max} bytes")]
    MessageTooLarge { kind: Kind, max: usize },
    #[error("{kind}: field {field} is truncated")]
    Truncated { kind: Kind, field: &'static str },
    #[error("{kind} has {extra} trailing bytes")]
    Trailing { kind: Kind, extra: usize },
    #[error("{kind}: field {field} is out of range ({value})")]
    Range {
        kind: Kind,
        field: &'static str,
        value: u64,
    },
    #[error("{kind}: field {field} is not UTF-8")]
    Utf8 { kind: Kind, field: &'static str },
    #[error("{kind}: field {field} contains a NUL byte")]
    Nul { kind: Kind, field: &'static str },
    #[error("{kind}: field {field} is {len} bytes, more than {max}")]
    TooLong {
        kind: Kind,
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind}: field {field} has {count} entries, more than {max}")]
    TooMany {
        kind: Kind,
        field: &'static str,
        count: u64,
        max: u64,
    },
    #[error("{kind}: field {field} is invalid: {reason}")]
    Invalid {
        kind: Kind,
        field: &'static str,
        reason: &'static str,
    },
}

/// Something the agent sent that the host must not accept. Untrusted code
/// may have taken the agent over, so every one of these ends the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("malformed frame from the peer: {0}")]
    Wire(#[from] WireError),
    #[error("the session already failed on an earlier violation")]
    Poisoned,
    #[error("{kind} arrived before the handshake completed")]
    BeforeHandshake { kind: Kind },
    #[error("{kind} may not be sent in this direction")]
    WrongDirection { kind: Kind },
    #[error("{kind} needs feature bits {feature:#x}, which were not agreed")]
    FeatureNotNegotiated { kind: Kind, feature: u64 },
    #[error("peer chose protocol version {version}, outside the offered {min}..={max}")]
    VersionRefused { version: u16, min: u16, max: u16 },
    #[error("peer enabled feature bits {features:#x} that were not offered")]
    UnofferedFeatures { features: u64 },
    #[error("{kind} for id {id} answers nothing that was asked")]
    Unsolicited { kind: Kind, id: u32 },
    #[error("{kind} for id {id}, which was never opened")]
    UnknownId { kind: Kind, id: u32 },
    #[error("{kind} for id {id}, which has already finished")]
    Finished { kind: Kind, id: u32 },
    #[error("{kind} does not apply to id {id} ({what})")]
    WrongObject {
        kind: Kind,
        id: u32,
        what: &'static str,
    },
    #[error("second {kind} for id {id}")]
    Duplicate { kind: Kind, id: u32 },
    #[error("{kind} for process {id} before ProcStarted")]
    NotStarted { kind: Kind, id: u32 },
    #[error("{kind} for id {id} names stream {stream:?}, which it does not have")]
    NoSuchStream {
        kind: Kind,
        id: u32,
        stream: StreamKind,
    },
    #[error("{kind} for id {id} after the end of stream {stream:?}")]
    AfterEnd {
        kind: Kind,
        id: u32,
        stream: StreamKind,
    },
    #[error("{kind} for id {id}, stream {stream:?}: {source}")]
    Flow {
        kind: Kind,
        id: u32,
        stream: StreamKind,
        source: FlowError,
    },
    #[error("more than {max} TCP offers pending at once")]
    TooManyOffers { max: usize },
    #[error("more than {limit} {kind} messages")]
    Flood { kind: Kind, limit: usize },
    #[error("peer-chosen id {id} does not increase past {last} in the peer's id range")]
    IdOrder { id: u32, last: u32 },
    #[error("{kind} after the session ended")]
    SessionOver { kind: Kind },
    #[error("ProcListResult lists process {id}: {reason}")]
    BadListing { id: u32, reason: &'static str },
    #[error("{kind} for id {id}: {reason}")]
    Inconsistent {
        kind: Kind,
        id: u32,
        reason: &'static str,
    },
}

/// A local caller used a session out of turn (a bug on this side, not the
/// peer's): nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misuse {
    #[error("cannot encode {kind}: {source}")]
    Encode { kind: Kind, source: WireError },
    #[error("this side may not send {kind}")]
    WrongDirection { kind: Kind },
    #[error("{kind} cannot be sent now: {reason}")]
    OutOfTurn { kind: Kind, reason: &'static str },
    #[error("{kind} needs feature bits {feature:#x}, which were not agreed")]
    FeatureNotNegotiated { kind: Kind, feature: u64 },
    #[error("{kind} opens id {id}, but ids must increase past {last}")]
    IdNotIncreasing { kind: Kind, id: u32, last: u32 },
    #[error("{kind} for id {id}, which is not open")]
    UnknownId { kind: Kind, id: u32 },
    #[error("{kind} does not apply to id {id} ({what})")]
    WrongObject {
        kind: Kind,
        id: u32,
        what: &'static str,
    },
    #[error("{kind} for id {id}: stream {stream:?} is not open for this")]
    StreamClosed {
        kind: Kind,
        id: u32,
        stream: StreamKind,
    },
    #[error("{kind} for id {id}, stream {stream:?}: {source}")]
    Flow {
        kind: Kind,
        id: u32,
        stream: StreamKind,
        source: FlowError,
    },
    #[error("already {max} pings outstanding")]
    TooManyPings { max: usize },
    #[error("the session failed earlier; nothing more may be sent")]
    Poisoned,
}

/// Any failure of protocol v2, including the fd adapter's I/O.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("protocol violation by the peer: {0}")]
    Violation(#[from] Violation),
    #[error(transparent)]
    Misuse(#[from] Misuse),
    #[error("{op} on fd {fd}: {source}")]
    Io {
        op: &'static str,
        fd: i32,
        source: std::io::Error,
    },
    #[error("the peer closed the channel{}", if *.mid_frame { " in the middle of a frame" } else { "" })]
    Closed { mid_frame: bool },
}
