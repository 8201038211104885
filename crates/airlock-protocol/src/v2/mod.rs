//! Protocol v2: one long-lived agent serving many processes, file
//! operations, terminals and TCP streams over one channel.
//!
//! The agent is PID 1 of a container sandbox or `/init` of a microVM guest;
//! the channel is a `SOCK_SEQPACKET` socketpair (one frame per packet) or a
//! byte stream (pipe, virtio-serial, vsock). Everything here is sans-IO:
//! state machines fed with bytes or frames that produce bytes, usable from a
//! single-threaded poll loop in a static agent and from a host event loop.
//! [`fd::Channel`] is a thin blocking/non-blocking adapter over a raw fd.
//!
//! | layer | type |
//! |---|---|
//! | frame header, fragmentation | [`frame`]: [`encode`], [`Frame::decode`], [`Reassembler`] |
//! | transports | [`SeqpacketFramer`], [`StreamFramer`], [`Channel`] |
//! | messages | [`Message`], [`Kind`] |
//! | flow control | [`SendCredit`], [`RecvWindow`], [`SendQueue`] |
//! | sessions | [`HostSession`] (validates the untrusted agent), [`AgentSession`] |
//!
//! # Frames
//!
//! ```text
//! offset 0   4    5     6    10
//!        len kind flags id   body…
//!        u32 u8   u8    u32  (len − 6 bytes)
//! ```
//!
//! All integers are little-endian. `len` counts everything after itself, so
//! a frame is `len + 4` bytes, 10 ..= [`MAX_FRAME`] (64 KiB, which a
//! seqpacket socket buffer holds). The length comes first so that a stream
//! reader can delimit a frame (and refuse an oversized one) from four bytes
//! without parsing anything else; the id sits in the header, not the body,
//! so that routing, credit accounting and continuation matching never
//! decode a body. Kind 1 is never used: a v1 peer's frame has its version
//! byte (1) at offset 4, and is reported as [`WireError::V1Frame`].
//!
//! `flags`: bit 0 `MORE` (more fragments follow), bit 1 `CONT` (this frame
//! continues a message). Other bits are reserved and refused. Only the
//! fragmentable kinds, Plan and ProcStart, may carry them: no agent→host
//! kind is fragmentable (the largest, a ProcListResult of
//! [`MAX_LIST_PROCS`] processes, fits one frame), so the host never
//! reassembles anything the agent sends.
//! A message whose body exceeds [`MAX_BODY`] goes out as a first frame
//! (`MORE`), middle frames (`MORE|CONT`) and a last frame (`CONT`), all
//! with the same kind and id; every frame but the last is full. Per
//! direction at most one message is reassembled at a time, up to
//! [`MAX_MESSAGE`] (4 MiB); single-frame messages may come between its
//! fragments and are delivered at once, the fragmented one when its last
//! fragment arrives.
//!
//! Ids: 0 for session messages; host-chosen ids (processes, file requests,
//! host-initiated TCP streams, listings) are 1 ..= 2³¹−1 and strictly
//! increase over a session (and across sessions of one sandbox, see
//! [`HostConfig::id_floor`]), so a finished id is never reused and a late
//! frame for it is recognisable; agent-chosen ids (TCP offers) have the
//! high bit ([`AGENT_ID_BIT`]) set and increase too. The two ranges never
//! collide.
//!
//! # Encoding
//!
//! Bodies are hand-written fixed layouts, not serde/postcard: each field is
//! a fixed-width little-endian integer, a 0/1 byte for a bool, a one-byte
//! tag for an enum, `u32 length + bytes` for a byte string, `u32 count +
//! entries` for a list, and data messages end with their raw bytes (the
//! frame length delimits them). This keeps the crate free of serde, makes
//! the wire format reviewable byte by byte (the snapshot tests pin it), and
//! makes decoding total and bounded by construction: every read is checked
//! against the bytes present, a length or count is compared with its limit
//! *and* with the bytes left before anything is sized from it, and every
//! field is range-checked (UTF-8 for text, no NUL in paths and argv, enum
//! tags, errno 1..=4095, signals 1..=64, modes ≤ 0o7777, windows, pids).
//! Encoding applies the same checks, so whatever encodes decodes, and the
//! encoding is canonical (a decoded frame re-encodes to the same bytes).
//! Free text (error details, the agent version) is cut on a character
//! boundary at its limit when encoded.
//!
//! Common layouts: `str`/`bytes`/`path` = `u32 len` + bytes (paths: 1..=4096
//! bytes, no NUL); `stat` = `kind u8, mode u32, size u64, mtime_sec i64,
//! mtime_nsec u32, uid u32, gid u32` (33 bytes); `ip` = `4` + 4 bytes or
//! `6` + 16 bytes; `data` = the rest of the body, 1..=[`MAX_DATA`] bytes.
//!
//! # Messages
//!
//! H→A: host to agent; A→H: agent to host. "id" says what the header id is.
//!
//! | kind | name | dir | id | body |
//! |---:|---|---|---|---|
//! | 2 | Hello | H→A | 0 | `min_version u16, max_version u16, features u64, window u32` |
//! | 3 | HelloAck | A→H | 0 | `version u16, features u64, window u32, agent_version str(≤64)` |
//! | 4 | Plan | H→A | 0 | raw bytes (fragmentable, ≤ 4 MiB) |
//! | 5 | Ready | A→H | 0 | — |
//! | 6 | SetupFailed | A→H | 0 | `stage u8, errno i32 (0..=4095), detail str(≤4096)` |
//! | 7 | Ping | H→A | 0 | `nonce u64` |
//! | 8 | Pong | A→H | 0 | `nonce u64` |
//! | 9 | Shutdown | H→A | 0 | — |
//! | 10 | ShutdownDone | A→H | 0 | — |
//! | 11 | Credit | both | stream id | `stream u8 (1 stdin, 2 stdout, 3 stderr, 4 file, 5 tcp), bytes u32 (1..=16 MiB)` |
//! | 12 | Notice | A→H | 0 | `text str(≤4096)`: between Plan and Ready only, at most 16 |
//! | 16 | ProcStart | H→A | host | `uid u32, gid u32, stdin u8 (0 null, 1 pipe), pty u8 [rows u16, cols u16], cwd path, argc u32, argv bytes…, envc u32, env bytes…` (fragmentable) |
//! | 17 | ProcStarted | A→H | host | `pid u32` |
//! | 18 | ProcStartFailed | A→H | host | `stage u8, errno i32` |
//! | 19 | ProcStdin | H→A | host | data |
//! | 20 | ProcCloseStdin | H→A | host | — |
//! | 21 | ProcOutput | A→H | host | `stream u8 (1 stdout, 2 stderr)`, data |
//! | 22 | ProcEof | A→H | host | `stream u8` |
//! | 23 | ProcSignal | H→A | host | `signo u8` |
//! | 24 | ProcResize | H→A | host | `rows u16, cols u16` |
//! | 25 | ProcExited | A→H | host | `0, code u8` or `1, signal u8`; `max_rss_kib u64` |
//! | 26 | ProcList | H→A | host (request) | — |
//! | 27 | ProcListResult | A→H | request | `count u32, (id u32, pid u32, flags u8: pty, stdin, stdout, stderr open)…` (≤ 4096) |
//! | 32 | FileRead | H→A | host | `offset u64, len u64 (u64::MAX: to end), path` |
//! | 33 | FileWrite | H→A | host | `mode u32, flags u8 (create, truncate, append, exclusive), path` |
//! | 34 | FileStat | H→A | host | `follow u8, path` |
//! | 35 | FileList | H→A | host | `path` |
//! | 36 | FileMkdir | H→A | host | `mode u32, parents u8, path` |
//! | 37 | FileRemove | H→A | host | `recursive u8, path` |
//! | 38 | FileRename | H→A | host | `from path, to path` |
//! | 39 | FileChmod | H→A | host | `mode u32, path` |
//! | 40 | TarOut | H→A | host | `path` (agent streams a tar archive as FileData) |
//! | 41 | TarIn | H→A | host | `path` (host streams a tar archive as FileData) |
//! | 42 | FileData | both | host | data (A→H for read and tar-out, H→A for write and tar-in) |
//! | 43 | FileEnd | H→A | host | — (upload complete) |
//! | 44 | FileCancel | H→A | host | — |
//! | 45 | FileDone | A→H | host | `0, value u64` or `1, errno i32 (1..=4095), text str(≤512)` |
//! | 46 | FileStatResult | A→H | host | `stat` |
//! | 47 | FileEntries | A→H | host | `count u32 (≥1), (name bytes(1..=255, no / or NUL, not . ..), stat)…` (one frame each) |
//! | 48 | TcpConnect | H→A | host | `port u16 (≥1), ip` |
//! | 49 | TcpOpened | A→H | host | — |
//! | 50 | TcpFailed | A→H | host | `errno i32` |
//! | 51 | TcpData | both | any | data |
//! | 52 | TcpShutdownWrite | both | any | — (half close) |
//! | 53 | TcpClose | both | any | `reset u8` |
//! | 54 | TcpOffer | A→H | agent | `port u16, 0 + hostname str(≤253, [A-Za-z0-9._-]) or ip` |
//! | 55 | TcpAccept | H→A | agent | — |
//! | 56 | TcpRefuse | H→A | agent | `reason u8 (1 policy, 2 unresolvable, 3 unreachable, 4 limit)` |
//!
//! Feature bits ([`FEATURE_PTY`], [`FEATURE_FILES`], [`FEATURE_TAR`],
//! [`FEATURE_TCP`], [`FEATURE_EGRESS`]) gate the kinds that need them; the
//! agent acknowledges a subset of what the host offered.
//!
//! # Conversations
//!
//! - Handshake: the host's first frame is Hello; the agent's first is
//!   HelloAck (a version within the host's range, features within its
//!   offer) or SetupFailed(Handshake) when the ranges do not meet. Then
//!   optionally one Plan, answered by Ready or SetupFailed (after which
//!   the agent sends nothing); Notices (something the user should hear,
//!   such as a fallback taken) may come before that answer.
//! - Process: ProcStart → ProcStarted | ProcStartFailed; then ProcOutput /
//!   ProcEof per stream (stdout only with a pty) and ProcStdin /
//!   ProcCloseStdin / ProcSignal / ProcResize; ProcExited is the last
//!   message about the process (output after it is a violation; a missing
//!   ProcEof means the stream ended with it). ProcList → ProcListResult
//!   re-attaches processes of an earlier session (ids at or below
//!   [`HostConfig::id_floor`]) with fresh windows.
//! - File: every request ends with one FileDone (or FileStatResult for a
//!   successful stat). Read/tar-out: FileData A→H, then FileDone. Write/
//!   tar-in: FileData H→A under the agent's credit, FileEnd, FileDone
//!   (which may come early, on failure). List: FileEntries (counted against
//!   the request's credit by body size), FileDone. FileCancel asks for an
//!   early FileDone.
//! - TCP: TcpConnect → TcpOpened | TcpFailed, or TcpOffer → TcpAccept |
//!   TcpRefuse. Then TcpData both ways, TcpShutdownWrite per direction,
//!   and TcpClose from each side (a side receiving the peer's TcpClose
//!   first answers with its own); the id is finished when both sent it.
//!   Data arriving after one's own TcpClose is dropped.
//! - Ping → Pong; Shutdown → (the agent kills everything) ShutdownDone,
//!   the last frame of the session.
//!
//! # Flow control
//!
//! Every data stream direction (stdin, stdout, stderr, a file request's
//! data, each direction of a TCP stream) has a window: the receiver's
//! `window` from the handshake ([`DEFAULT_WINDOW`] = 256 KiB, between
//! [`MIN_WINDOW`] and [`MAX_WINDOW`]). A stream starts with the full window
//! as credit, so data may follow its opening message at once. The sender
//! spends one byte of credit per data byte and **never sends beyond its
//! credit**; the receiver **treats data beyond what it granted as a
//! violation**, and a Credit that would raise the sender's credit above the
//! window is one too. The receiver grants back what its consumer drained,
//! once at least half the window has been drained ([`RecvWindow::consume`]).
//! So each side buffers at most one window per stream, and a slow reader of
//! one stream stops only that stream. Control messages are not
//! credit-counted; they are bounded by the requests that caused them, and
//! a side stops reading while its own outbound queue is above
//! [`OUT_HIGH_WATER`], so a peer that never reads cannot make it queue
//! answers without bound.
//!
//! # Trust
//!
//! [`HostSession`] validates every agent frame against what the host asked
//! for and granted, and keeps state only for ids the host opened (plus at
//! most [`HostConfig::max_pending_offers`] offers and [`HostConfig::max_pings`]
//! pings). The first violation poisons it.

pub mod agent;
pub mod error;
pub mod fd;
pub mod flow;
pub mod frame;
pub mod framer;
#[cfg(any(test, feature = "fuzzing"))]
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
