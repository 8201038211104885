//! Protocol v2 (docs filled in below).

pub mod agent;
pub mod error;
pub mod fd;
pub mod flow;
pub mod frame;
pub mod framer;
pub mod fuzzing;
pub mod host;
pub mod kind;
pub mod message;

pub use agent::{AgentConfig, AgentSession};
pub use error::{Error, Misuse, Violation, WireError};
pub use fd::{set_nonblocking, Channel, Transport, OUT_HIGH_WATER};
pub use flow::{FlowError, RecvWindow, SendCredit, SendQueue};
pub use frame::{encode, encode_to_vec, Frame, Reassembler, FLAG_CONT, FLAG_MORE};
pub use framer::{SeqpacketFramer, StreamFramer};
pub use host::{Agreed, HostConfig, HostSession};
pub use kind::{
    Direction, IdRule, Kind, FEATURES_ALL, FEATURE_EGRESS, FEATURE_FILES, FEATURE_PTY, FEATURE_TAR,
    FEATURE_TCP,
};
pub use message::{
    Destination, DirEntry, ExitStatus, FileKind, FsError, Message, OutStream, ProcInfo,
    RefuseReason, Stage, Stat, StdinMode, StreamKind, WinSize, WriteFlags, STAT_LEN,
};

/// This build's protocol version.
pub const VERSION: u16 = 2;
/// The largest frame, header included.
pub const MAX_FRAME: usize = 64 * 1024;
/// The frame header: length u32, kind u8, flags u8, id u32.
pub const HEADER_LEN: usize = 10;
/// The largest body one frame carries.
pub const MAX_BODY: usize = MAX_FRAME - HEADER_LEN;
/// The most data bytes one data message carries.
pub const MAX_DATA: usize = MAX_FRAME - 16;
/// The largest (reassembled) message body, per direction.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// The receive window both sides use unless the handshake says otherwise.
pub const DEFAULT_WINDOW: u32 = 256 * 1024;
/// The smallest window a side may announce.
pub const MIN_WINDOW: u32 = 4 * 1024;
/// The largest window a side may announce (and the largest grant).
pub const MAX_WINDOW: u32 = 16 * 1024 * 1024;
/// Ids with this bit set are chosen by the agent; without it, by the host.
pub const AGENT_ID_BIT: u32 = 1 << 31;
/// The longest path (bytes, like Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// The longest directory entry name.
pub const MAX_NAME: usize = 255;
/// The most argv entries of ProcStart.
pub const MAX_ARGS: usize = 65536;
/// The most environment entries of ProcStart.
pub const MAX_ENV: usize = 65536;
/// The most processes in one ProcListResult.
pub const MAX_LIST_PROCS: usize = 4096;
/// The longest SetupFailed detail.
pub const MAX_DETAIL: usize = 4096;
/// The longest file error text.
pub const MAX_ERROR_TEXT: usize = 512;
/// The longest agent version string.
pub const MAX_AGENT_VERSION: usize = 64;
/// The longest host name in a TcpOffer.
pub const MAX_HOSTNAME: usize = 253;
/// The largest pid Linux hands out (`PID_MAX_LIMIT`).
pub const PID_MAX: u32 = 4 * 1024 * 1024;

#[cfg(test)]
mod tests;
