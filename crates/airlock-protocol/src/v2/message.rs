//! Messages: typed values, their bodies on the wire, and the field checks
//! that both encoding and decoding apply (so whatever encodes, decodes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::WireError;
use super::kind::Kind;
use super::{
    AGENT_ID_BIT, MAX_AGENT_VERSION, MAX_ARGS, MAX_DATA, MAX_DETAIL, MAX_ENV, MAX_ERROR_TEXT,
    MAX_HOSTNAME, MAX_LIST_PROCS, MAX_MESSAGE, MAX_NAME, MAX_PATH, MAX_WINDOW, MIN_WINDOW, PID_MAX,
};

/// Where something failed: the agent's set-up, or the start of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Stage {
    Handshake = 1,
    Plan = 2,
    UserNamespace = 3,
    Mounts = 4,
    Network = 5,
    Hostname = 6,
    Credentials = 7,
    Landlock = 8,
    Seccomp = 9,
    Limits = 10,
    Workdir = 11,
    Stdio = 12,
    Pty = 13,
    Fork = 14,
    Exec = 15,
    Agent = 16,
}

impl Stage {
    /// How a user reads it ("sandbox setup failed at mounts").
    pub fn name(self) -> &'static str {
        match self {
            Stage::Handshake => "handshake",
            Stage::Plan => "plan",
            Stage::UserNamespace => "user namespace",
            Stage::Mounts => "mounts",
            Stage::Network => "network",
            Stage::Hostname => "hostname",
            Stage::Credentials => "credentials",
            Stage::Landlock => "landlock",
            Stage::Seccomp => "seccomp",
            Stage::Limits => "limits",
            Stage::Workdir => "working directory",
            Stage::Stdio => "stdio",
            Stage::Pty => "pty",
            Stage::Fork => "fork",
            Stage::Exec => "exec",
            Stage::Agent => "agent",
        }
    }

    /// Every stage, in wire order.
    pub const ALL: &'static [Stage] = &[
        Stage::Handshake,
        Stage::Plan,
        Stage::UserNamespace,
        Stage::Mounts,
        Stage::Network,
        Stage::Hostname,
        Stage::Credentials,
        Stage::Landlock,
        Stage::Seccomp,
        Stage::Limits,
        Stage::Workdir,
        Stage::Stdio,
        Stage::Pty,
        Stage::Fork,
        Stage::Exec,
        Stage::Agent,
    ];

    /// The stage with this wire number.
    pub fn from_u8(v: u8) -> Option<Stage> {
        Stage::ALL.get(usize::from(v).wrapping_sub(1)).copied()
    }
}

/// Which output stream of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OutStream {
    Stdout = 1,
    Stderr = 2,
}

impl OutStream {
    /// The flow-controlled stream it is.
    pub fn stream(self) -> StreamKind {
        match self {
            OutStream::Stdout => StreamKind::Stdout,
            OutStream::Stderr => StreamKind::Stderr,
        }
    }
}

/// One flow-controlled data stream of an id. Which side receives it
/// follows from the kind: the agent receives `Stdin`, upload `File` data
/// and its half of `Tcp`; the host receives the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StreamKind {
    /// A process's stdin (host → agent).
    Stdin = 1,
    /// A process's stdout, or its terminal with a pty (agent → host).
    Stdout = 2,
    /// A process's stderr (agent → host).
    Stderr = 3,
    /// A file request's data (either way, by operation).
    File = 4,
    /// A TCP stream's bytes (each way).
    Tcp = 5,
}

impl StreamKind {
    fn from_u8(v: u8) -> Option<StreamKind> {
        Some(match v {
            1 => StreamKind::Stdin,
            2 => StreamKind::Stdout,
            3 => StreamKind::Stderr,
            4 => StreamKind::File,
            5 => StreamKind::Tcp,
            _ => return None,
        })
    }
}

/// What a process's stdin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StdinMode {
    /// `/dev/null`: no stdin stream.
    Null = 0,
    /// A pipe fed by ProcStdin (or the pty, with one).
    Pipe = 1,
}

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(u8),
    /// A signal (1..=64) killed it.
    Signal(u8),
}

/// One process in a ProcListResult.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcInfo {
    /// The host-chosen id it was started with.
    pub id: u32,
    pub pid: u32,
    pub pty: bool,
    pub stdin_open: bool,
    pub stdout_open: bool,
    pub stderr_open: bool,
}

/// A failed file operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FsError {
    /// 1..=4095.
    pub errno: i32,
    /// A short explanation (at most [`MAX_ERROR_TEXT`] bytes; cut on encode).
    pub text: String,
}

/// The type of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FileKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    Other = 4,
}

impl FileKind {
    fn from_u8(v: u8) -> Option<FileKind> {
        Some(match v {
            1 => FileKind::File,
            2 => FileKind::Dir,
            3 => FileKind::Symlink,
            4 => FileKind::Other,
            _ => return None,
        })
    }
}

/// What stat tells about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stat {
    pub kind: FileKind,
    /// Permission bits, at most 0o7777.
    pub mode: u32,
    pub size: u64,
    pub mtime_sec: i64,
    /// Below 1_000_000_000.
    pub mtime_nsec: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The encoded size of a [`Stat`].
pub const STAT_LEN: usize = 1 + 4 + 8 + 8 + 4 + 4 + 4;

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirEntry {
    /// 1..=255 bytes, no `/`, no NUL, not `.` or `..`.
    pub name: Vec<u8>,
    pub stat: Stat,
}

/// How FileWrite opens its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WriteFlags {
    pub create: bool,
    pub truncate: bool,
    pub append: bool,
    pub exclusive: bool,
}

impl WriteFlags {
    fn bits(self) -> u8 {
        u8::from(self.create)
            | u8::from(self.truncate) << 1
            | u8::from(self.append) << 2
            | u8::from(self.exclusive) << 3
    }
}

/// Where an agent-initiated TCP stream wants to go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Ip(IpAddr),
    /// A host name: 1..=253 bytes of letters, digits, `-`, `_` and `.`.
    Name(String),
}

/// Why the host refused a TCP offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RefuseReason {
    /// The network policy does not allow the destination.
    Policy = 1,
    /// The name did not resolve.
    Unresolvable = 2,
    /// The destination could not be reached.
    Unreachable = 3,
    /// Too many streams.
    Limit = 4,
}

impl RefuseReason {
    fn from_u8(v: u8) -> Option<RefuseReason> {
        Some(match v {
            1 => RefuseReason::Policy,
            2 => RefuseReason::Unresolvable,
            3 => RefuseReason::Unreachable,
            4 => RefuseReason::Limit,
            _ => return None,
        })
    }
}

/// Every message of protocol v2. The `id` of a variant travels in the frame
/// header; session-level messages have none (id 0 on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    Hello {
        min_version: u16,
        max_version: u16,
        features: u64,
        /// The host's receive window: initial credit of every agent→host stream.
        window: u32,
    },
    HelloAck {
        version: u16,
        features: u64,
        /// The agent's receive window: initial credit of every host→agent stream.
        window: u32,
        /// At most [`MAX_AGENT_VERSION`] bytes (cut on encode).
        agent_version: String,
    },
    Plan {
        data: Vec<u8>,
    },
    Ready,
    /// At most [`MAX_DETAIL`] bytes (cut on encode).
    Notice {
        text: String,
    },
    SetupFailed {
        stage: Stage,
        /// 0 (none) or 1..=4095.
        errno: i32,
        /// At most [`MAX_DETAIL`] bytes (cut on encode).
        detail: String,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Shutdown,
    ShutdownDone,
    Credit {
        id: u32,
        stream: StreamKind,
        /// 1..=[`MAX_WINDOW`].
        bytes: u32,
    },

    ProcStart {
        id: u32,
        /// 1..=[`MAX_ARGS`] entries, no NUL, the first non-empty.
        argv: Vec<Vec<u8>>,
        /// At most [`MAX_ENV`] `KEY=VALUE` entries, no NUL, non-empty key.
        env: Vec<Vec<u8>>,
        cwd: Vec<u8>,
        uid: u32,
        gid: u32,
        pty: Option<WinSize>,
        stdin: StdinMode,
    },
    ProcStarted {
        id: u32,
        pid: u32,
    },
    ProcStartFailed {
        id: u32,
        stage: Stage,
        errno: i32,
    },
    ProcStdin {
        id: u32,
        data: Vec<u8>,
    },
    ProcCloseStdin {
        id: u32,
    },
    ProcOutput {
        id: u32,
        stream: OutStream,
        data: Vec<u8>,
    },
    ProcEof {
        id: u32,
        stream: OutStream,
    },
    ProcSignal {
        id: u32,
        signo: u8,
    },
    ProcResize {
        id: u32,
        size: WinSize,
    },
    ProcExited {
        id: u32,
        status: ExitStatus,
        max_rss_kib: u64,
    },
    ProcList {
        id: u32,
    },
    ProcListResult {
        id: u32,
        procs: Vec<ProcInfo>,
    },

    FileRead {
        id: u32,
        path: Vec<u8>,
        /// At most `i64::MAX`.
        offset: u64,
        /// `u64::MAX`: to the end.
        len: u64,
    },
    FileWrite {
        id: u32,
        path: Vec<u8>,
        mode: u32,
        flags: WriteFlags,
    },
    FileStat {
        id: u32,
        path: Vec<u8>,
        follow: bool,
    },
    FileList {
        id: u32,
        path: Vec<u8>,
    },
    FileMkdir {
        id: u32,
        path: Vec<u8>,
        mode: u32,
        parents: bool,
    },
    FileRemove {
        id: u32,
        path: Vec<u8>,
        recursive: bool,
    },
    FileRename {
        id: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    FileChmod {
        id: u32,
        path: Vec<u8>,
        mode: u32,
    },
    TarOut {
        id: u32,
        path: Vec<u8>,
    },
    TarIn {
        id: u32,
        path: Vec<u8>,
    },
    FileData {
        id: u32,
        data: Vec<u8>,
    },
    FileEnd {
        id: u32,
    },
    FileCancel {
        id: u32,
    },
    FileDone {
        id: u32,
        /// Ok: bytes moved, or entries listed, or 0.
        result: Result<u64, FsError>,
    },
    FileStatResult {
        id: u32,
        stat: Stat,
    },
    FileEntries {
        id: u32,
        /// At least one; the encoded body must fit one frame.
        entries: Vec<DirEntry>,
    },

    TcpConnect {
        id: u32,
        addr: IpAddr,
        port: u16,
    },
    TcpOpened {
        id: u32,
    },
    TcpFailed {
        id: u32,
        errno: i32,
    },
    TcpData {
        id: u32,
        data: Vec<u8>,
    },
    TcpShutdownWrite {
        id: u32,
    },
    TcpClose {
        id: u32,
        reset: bool,
    },
    TcpOffer {
        id: u32,
        dest: Destination,
        port: u16,
    },
    TcpAccept {
        id: u32,
    },
    TcpRefuse {
        id: u32,
        reason: RefuseReason,
    },
}

impl Message {
    /// A TcpConnect to the sandbox's loopback address.
    pub fn tcp_connect_loopback(id: u32, port: u16) -> Message {
        Message::TcpConnect {
            id,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        use Message::*;
        match self {
            Hello { .. } => Kind::Hello,
            HelloAck { .. } => Kind::HelloAck,
            Plan { .. } => Kind::Plan,
            Ready => Kind::Ready,
            Notice { .. } => Kind::Notice,
            SetupFailed { .. } => Kind::SetupFailed,
            Ping { .. } => Kind::Ping,
            Pong { .. } => Kind::Pong,
            Shutdown => Kind::Shutdown,
            ShutdownDone => Kind::ShutdownDone,
            Credit { .. } => Kind::Credit,
            ProcStart { .. } => Kind::ProcStart,
            ProcStarted { .. } => Kind::ProcStarted,
            ProcStartFailed { .. } => Kind::ProcStartFailed,
            ProcStdin { .. } => Kind::ProcStdin,
            ProcCloseStdin { .. } => Kind::ProcCloseStdin,
            ProcOutput { .. } => Kind::ProcOutput,
            ProcEof { .. } => Kind::ProcEof,
            ProcSignal { .. } => Kind::ProcSignal,
            ProcResize { .. } => Kind::ProcResize,
            ProcExited { .. } => Kind::ProcExited,
            ProcList { .. } => Kind::ProcList,
            ProcListResult { .. } => Kind::ProcListResult,
            FileRead { .. } => Kind::FileRead,
            FileWrite { .. } => Kind::FileWrite,
            FileStat { .. } => Kind::FileStat,
            FileList { .. } => Kind::FileList,
            FileMkdir { .. } => Kind::FileMkdir,
            FileRemove { .. } => Kind::FileRemove,
            FileRename { .. } => Kind::FileRename,
            FileChmod { .. } => Kind::FileChmod,
            TarOut { .. } => Kind::TarOut,
            TarIn { .. } => Kind::TarIn,
            FileData { .. } => Kind::FileData,
            FileEnd { .. } => Kind::FileEnd,
            FileCancel { .. } => Kind::FileCancel,
            FileDone { .. } => Kind::FileDone,
            FileStatResult { .. } => Kind::FileStatResult,
            FileEntries { .. } => Kind::FileEntries,
            TcpConnect { .. } => Kind::TcpConnect,
            TcpOpened { .. } => Kind::TcpOpened,
            TcpFailed { .. } => Kind::TcpFailed,
            TcpData { .. } => Kind::TcpData,
            TcpShutdownWrite { .. } => Kind::TcpShutdownWrite,
            TcpClose { .. } => Kind::TcpClose,
            TcpOffer { .. } => Kind::TcpOffer,
            TcpAccept { .. } => Kind::TcpAccept,
            TcpRefuse { .. } => Kind::TcpRefuse,
        }
    }

    /// The id it carries in its frame header (0 for session messages).
    pub fn id(&self) -> u32 {
        use Message::*;
        match self {
            Hello { .. }
            | HelloAck { .. }
            | Plan { .. }
            | Ready
            | Notice { .. }
            | SetupFailed { .. }
            | Ping { .. }
            | Pong { .. }
            | Shutdown
            | ShutdownDone => 0,
            Credit { id, .. }
            | ProcStart { id, .. }
            | ProcStarted { id, .. }
            | ProcStartFailed { id, .. }
            | ProcStdin { id, .. }
            | ProcCloseStdin { id }
            | ProcOutput { id, .. }
            | ProcEof { id, .. }
            | ProcSignal { id, .. }
            | ProcResize { id, .. }
            | ProcExited { id, .. }
            | ProcList { id }
            | ProcListResult { id, .. }
            | FileRead { id, .. }
            | FileWrite { id, .. }
            | FileStat { id, .. }
            | FileList { id, .. }
            | FileMkdir { id, .. }
            | FileRemove { id, .. }
            | FileRename { id, .. }
            | FileChmod { id, .. }
            | TarOut { id, .. }
            | TarIn { id, .. }
            | FileData { id, .. }
            | FileEnd { id }
            | FileCancel { id }
            | FileDone { id, .. }
            | FileStatResult { id, .. }
            | FileEntries { id, .. }
            | TcpConnect { id, .. }
            | TcpOpened { id }
            | TcpFailed { id, .. }
            | TcpData { id, .. }
            | TcpShutdownWrite { id }
            | TcpClose { id, .. }
            | TcpOffer { id, .. }
            | TcpAccept { id }
            | TcpRefuse { id, .. } => *id,
        }
    }

    /// The bytes this message counts against its stream's credit: the data
    /// of data messages, the encoded body of FileEntries, 0 otherwise.
    pub fn credit_cost(&self) -> usize {
        match self {
            Message::ProcStdin { data, .. }
            | Message::ProcOutput { data, .. }
            | Message::FileData { data, .. }
            | Message::TcpData { data, .. } => data.len(),
            Message::FileEntries { entries, .. } => entries_body_len(entries),
            _ => 0,
        }
    }

    /// Appends the body (everything after the frame header) to `out`,
    /// checking every field as [`Message::decode`] does. Free text longer
    /// than its maximum is cut on a character boundary; any other field out
    /// of range is an error and leaves `out` as it was.
    pub fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let start = out.len();
        let r = self.encode_body_inner(out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn encode_body_inner(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        use Message::*;
        let k = self.kind();
        match self {
            Hello {
                min_version,
                max_version,
                features,
                window,
            } => {
                check_versions(k, *min_version, *max_version)?;
                check_window(k, *window)?;
                put_u16(out, *min_version);
                put_u16(out, *max_version);
                put_u64(out, *features);
                put_u32(out, *window);
            }
            HelloAck {
                version,
                features,
                window,
                agent_version,
            } => {
                check_versions(k, *version, *version)?;
                check_window(k, *window)?;
                put_u16(out, *version);
                put_u64(out, *features);
                put_u32(out, *window);
                put_bytes(out, cut_text(agent_version, MAX_AGENT_VERSION));
            }
            Plan { data } => {
                if data.len() > MAX_MESSAGE {
                    return Err(WireError::TooLong {
                        kind: k,
                        field: "data",
                        len: data.len(),
                        max: MAX_MESSAGE,
                    });
                }
                out.extend_from_slice(data);
            }
            Ready | Shutdown | ShutdownDone => {}
            Notice { text } => put_bytes(out, cut_text(text, MAX_DETAIL)),
            SetupFailed {
                stage,
                errno,
                detail,
            } => {
                check_errno(k, *errno, true)?;
                out.push(*stage as u8);
                put_i32(out, *errno);
                put_bytes(out, cut_text(detail, MAX_DETAIL));
            }
            Ping { nonce } | Pong { nonce } => put_u64(out, *nonce),
            Credit { stream, bytes, .. } => {
                check_credit(k, *bytes)?;
                out.push(*stream as u8);
                put_u32(out, *bytes);
            }
            ProcStart {
                argv,
                env,
                cwd,
                uid,
                gid,
                pty,
                stdin,
                ..
            } => {
                check_id_value(k, "uid", *uid)?;
                check_id_value(k, "gid", *gid)?;
                if let Some(ws) = pty {
                    check_winsize(k, *ws)?;
                }
                check_path(k, "cwd", cwd)?;
                check_argv(k, argv.len(), argv.iter().map(Vec::as_slice))?;
                check_env(k, env.len(), env.iter().map(Vec::as_slice))?;
                put_u32(out, *uid);
                put_u32(out, *gid);
                out.push(*stdin as u8);
                match pty {
                    None => out.push(0),
                    Some(ws) => {
                        out.push(1);
                        put_u16(out, ws.rows);
                        put_u16(out, ws.cols);
                    }
                }
                put_bytes(out, cwd);
                put_count(out, argv.len());
                for a in argv {
                    put_bytes(out, a);
                }
                put_count(out, env.len());
                for e in env {
                    put_bytes(out, e);
                }
            }
            ProcStarted { pid, .. } => {
                check_pid(k, *pid)?;
                put_u32(out, *pid);
            }
            ProcStartFailed { stage, errno, .. } => {
                check_errno(k, *errno, true)?;
                out.push(*stage as u8);
                put_i32(out, *errno);
            }
            ProcStdin { data, .. } | FileData { data, .. } | TcpData { data, .. } => {
                check_data(k, data)?;
                out.extend_from_slice(data);
            }
            ProcOutput { stream, data, .. } => {
                check_data(k, data)?;
                out.push(*stream as u8);
                out.extend_from_slice(data);
            }
            ProcEof { stream, .. } => out.push(*stream as u8),
            ProcSignal { signo, .. } => {
                check_signal(k, *signo)?;
                out.push(*signo);
            }
            ProcResize { size, .. } => {
                check_winsize(k, *size)?;
                put_u16(out, size.rows);
                put_u16(out, size.cols);
            }
            ProcExited {
                status,
                max_rss_kib,
                ..
            } => {
                match status {
                    ExitStatus::Code(c) => {
                        out.push(0);
                        out.push(*c);
                    }
                    ExitStatus::Signal(s) => {
                        check_signal(k, *s)?;
                        out.push(1);
                        out.push(*s);
                    }
                }
                put_u64(out, *max_rss_kib);
            }
            ProcCloseStdin { .. }
            | ProcList { .. }
            | FileEnd { .. }
            | FileCancel { .. }
            | TcpOpened { .. }
            | TcpShutdownWrite { .. }
            | TcpAccept { .. } => {}
            ProcListResult { procs, .. } => {
                if procs.len() > MAX_LIST_PROCS {
                    return Err(WireError::TooMany {
                        kind: k,
                        field: "procs",
                        count: procs.len() as u64,
                        max: MAX_LIST_PROCS as u64,
                    });
                }
                for p in procs {
                    check_host_id(k, "procs.id", p.id)?;
                    check_pid(k, p.pid)?;
                }
                put_count(out, procs.len());
                for p in procs {
                    put_u32(out, p.id);
                    put_u32(out, p.pid);
                    out.push(
                        u8::from(p.pty)
                            | u8::from(p.stdin_open) << 1
                            | u8::from(p.stdout_open) << 2
                            | u8::from(p.stderr_open) << 3,
                    );
                }
            }
            FileRead {
                path, offset, len, ..
            } => {
                check_path(k, "path", path)?;
                check_offset(k, *offset)?;
                put_u64(out, *offset);
                put_u64(out, *len);
                put_bytes(out, path);
            }
            FileWrite {
                path, mode, flags, ..
            } => {
                check_path(k, "path", path)?;
                check_mode(k, *mode)?;
                put_u32(out, *mode);
                out.push(flags.bits());
                put_bytes(out, path);
            }
            FileStat { path, follow, .. } => {
                check_path(k, "path", path)?;
                out.push(u8::from(*follow));
                put_bytes(out, path);
            }
            FileList { path, .. } | TarOut { path, .. } | TarIn { path, .. } => {
                check_path(k, "path", path)?;
                put_bytes(out, path);
            }
            FileMkdir {
                path,
                mode,
                parents,
                ..
            } => {
                check_path(k, "path", path)?;
                check_mode(k, *mode)?;
                put_u32(out, *mode);
                out.push(u8::from(*parents));
                put_bytes(out, path);
            }
            FileRemove {
                path, recursive, ..
            } => {
                check_path(k, "path", path)?;
                out.push(u8::from(*recursive));
                put_bytes(out, path);
            }
            FileRename { from, to, .. } => {
                check_path(k, "from", from)?;
                check_path(k, "to", to)?;
                put_bytes(out, from);
                put_bytes(out, to);
            }
            FileChmod { path, mode, .. } => {
                check_path(k, "path", path)?;
                check_mode(k, *mode)?;
                put_u32(out, *mode);
                put_bytes(out, path);
            }
            FileDone { result, .. } => match result {
                Ok(v) => {
                    out.push(0);
                    put_u64(out, *v);
                }
                Err(e) => {
                    check_errno(k, e.errno, false)?;
                    out.push(1);
                    put_i32(out, e.errno);
                    put_bytes(out, cut_text(&e.text, MAX_ERROR_TEXT));
                }
            },
            FileStatResult { stat, .. } => {
                check_stat(k, stat)?;
                put_stat(out, stat);
            }
            FileEntries { entries, .. } => {
                if entries.is_empty() {
                    return Err(WireError::Invalid {
                        kind: k,
                        field: "entries",
                        reason: "empty",
                    });
                }
                for e in entries {
                    check_name(k, &e.name)?;
                    check_stat(k, &e.stat)?;
                }
                put_count(out, entries.len());
                for e in entries {
                    put_bytes(out, &e.name);
                    put_stat(out, &e.stat);
                }
            }
            TcpConnect { addr, port, .. } => {
                check_port(k, *port)?;
                put_u16(out, *port);
                put_ip(out, addr);
            }
            TcpFailed { errno, .. } => {
                check_errno(k, *errno, false)?;
                put_i32(out, *errno);
            }
            TcpClose { reset, .. } => out.push(u8::from(*reset)),
            TcpOffer { dest, port, .. } => {
                check_port(k, *port)?;
                put_u16(out, *port);
                match dest {
                    Destination::Ip(ip) => put_ip(out, ip),
                    Destination::Name(n) => {
                        check_hostname(k, n.as_bytes())?;
                        out.push(0);
                        put_bytes(out, n.as_bytes());
                    }
                }
            }
            TcpRefuse { reason, .. } => out.push(*reason as u8),
        }
        Ok(())
    }

    /// Decodes a whole body of kind `kind` carried with header id `id`
    /// (which the frame layer has already checked against the kind's id
    /// rule). Total: every input is a message or an error.
    pub fn decode(kind: Kind, id: u32, body: &[u8]) -> Result<Message, WireError> {
        let mut r = R { b: body, kind };
        let k = kind;
        let m = match kind {
            Kind::Hello => {
                let min_version = r.u16("min_version")?;
                let max_version = r.u16("max_version")?;
                check_versions(k, min_version, max_version)?;
                let features = r.u64("features")?;
                let window = r.u32("window")?;
                check_window(k, window)?;
                Message::Hello {
                    min_version,
                    max_version,
                    features,
                    window,
                }
            }
            Kind::HelloAck => {
                let version = r.u16("version")?;
                check_versions(k, version, version)?;
                let features = r.u64("features")?;
                let window = r.u32("window")?;
                check_window(k, window)?;
                let agent_version = r.text("agent_version", MAX_AGENT_VERSION)?;
                Message::HelloAck {
                    version,
                    features,
                    window,
                    agent_version,
                }
            }
            Kind::Plan => {
                let data = r.rest();
                if data.len() > MAX_MESSAGE {
                    return Err(WireError::TooLong {
                        kind: k,
                        field: "data",
                        len: data.len(),
                        max: MAX_MESSAGE,
                    });
                }
                Message::Plan {
                    data: data.to_vec(),
                }
            }
            Kind::Ready => Message::Ready,
            Kind::Notice => Message::Notice {
                text: r.text("text", MAX_DETAIL)?,
            },
            Kind::SetupFailed => {
                let stage = r.stage()?;
                let errno = r.i32("errno")?;
                check_errno(k, errno, true)?;
                let detail = r.text("detail", MAX_DETAIL)?;
                Message::SetupFailed {
                    stage,
                    errno,
                    detail,
                }
            }
            Kind::Ping => Message::Ping {
                nonce: r.u64("nonce")?,
            },
            Kind::Pong => Message::Pong {
                nonce: r.u64("nonce")?,
            },
            Kind::Shutdown => Message::Shutdown,
            Kind::ShutdownDone => Message::ShutdownDone,
            Kind::Credit => {
                let s = r.u8("stream")?;
                let stream = StreamKind::from_u8(s).ok_or(WireError::Range {
                    kind: k,
                    field: "stream",
                    value: s.into(),
                })?;
                let bytes = r.u32("bytes")?;
                check_credit(k, bytes)?;
                Message::Credit { id, stream, bytes }
            }
            Kind::ProcStart => {
                let uid = r.u32("uid")?;
                check_id_value(k, "uid", uid)?;
                let gid = r.u32("gid")?;
                check_id_value(k, "gid", gid)?;
                let stdin = match r.u8("stdin")? {
                    0 => StdinMode::Null,
                    1 => StdinMode::Pipe,
                    v => {
                        return Err(WireError::Range {
                            kind: k,
                            field: "stdin",
                            value: v.into(),
                        })
                    }
                };
                let pty = if r.flag("pty")? {
                    let ws = WinSize {
                        rows: r.u16("pty.rows")?,
                        cols: r.u16("pty.cols")?,
                    };
                    check_winsize(k, ws)?;
                    Some(ws)
                } else {
                    None
                };
                let cwd = r.bytes("cwd", MAX_PATH)?;
                check_path(k, "cwd", cwd)?;
                let argv = r.list("argv", MAX_ARGS)?;
                check_argv(k, argv.len(), argv.iter().copied())?;
                let env = r.list("env", MAX_ENV)?;
                check_env(k, env.len(), env.iter().copied())?;
                Message::ProcStart {
                    id,
                    argv: argv.into_iter().map(<[u8]>::to_vec).collect(),
                    env: env.into_iter().map(<[u8]>::to_vec).collect(),
                    cwd: cwd.to_vec(),
                    uid,
                    gid,
                    pty,
                    stdin,
                }
            }
            Kind::ProcStarted => {
                let pid = r.u32("pid")?;
                check_pid(k, pid)?;
                Message::ProcStarted { id, pid }
            }
            Kind::ProcStartFailed => {
                let stage = r.stage()?;
                let errno = r.i32("errno")?;
                check_errno(k, errno, true)?;
                Message::ProcStartFailed { id, stage, errno }
            }
            Kind::ProcStdin => Message::ProcStdin {
                id,
                data: r.data()?,
            },
            Kind::ProcCloseStdin => Message::ProcCloseStdin { id },
            Kind::ProcOutput => {
                let stream = r.out_stream()?;
                Message::ProcOutput {
                    id,
                    stream,
                    data: r.data()?,
                }
            }
            Kind::ProcEof => Message::ProcEof {
                id,
                stream: r.out_stream()?,
            },
            Kind::ProcSignal => {
                let signo = r.u8("signo")?;
                check_signal(k, signo)?;
                Message::ProcSignal { id, signo }
            }
            Kind::ProcResize => {
                let size = WinSize {
                    rows: r.u16("rows")?,
                    cols: r.u16("cols")?,
                };
                check_winsize(k, size)?;
                Message::ProcResize { id, size }
            }
            Kind::ProcExited => {
                let status = match r.u8("status")? {
                    0 => ExitStatus::Code(r.u8("code")?),
                    1 => {
                        let s = r.u8("signal")?;
                        check_signal(k, s)?;
                        ExitStatus::Signal(s)
                    }
                    v => {
                        return Err(WireError::Range {
                            kind: k,
                            field: "status",
                            value: v.into(),
                        })
                    }
                };
                Message::ProcExited {
                    id,
                    status,
                    max_rss_kib: r.u64("max_rss_kib")?,
                }
            }
            Kind::ProcList => Message::ProcList { id },
            Kind::ProcListResult => {
                let n = r.count("procs", MAX_LIST_PROCS, 9)?;
                let mut procs = Vec::with_capacity(n);
                for _ in 0..n {
                    let pid_id = r.u32("procs.id")?;
                    check_host_id(k, "procs.id", pid_id)?;
                    let pid = r.u32("procs.pid")?;
                    check_pid(k, pid)?;
                    let f = r.u8("procs.flags")?;
                    if f & !0x0f != 0 {
                        return Err(WireError::Range {
                            kind: k,
                            field: "procs.flags",
                            value: f.into(),
                        });
                    }
                    procs.push(ProcInfo {
                        id: pid_id,
                        pid,
                        pty: f & 1 != 0,
                        stdin_open: f & 2 != 0,
                        stdout_open: f & 4 != 0,
                        stderr_open: f & 8 != 0,
                    });
                }
                Message::ProcListResult { id, procs }
            }
            Kind::FileRead => {
                let offset = r.u64("offset")?;
                check_offset(k, offset)?;
                let len = r.u64("len")?;
                let path = r.path("path")?;
                Message::FileRead {
                    id,
                    path,
                    offset,
                    len,
                }
            }
            Kind::FileWrite => {
                let mode = r.u32("mode")?;
                check_mode(k, mode)?;
                let f = r.u8("flags")?;
                if f & !0x0f != 0 {
                    return Err(WireError::Range {
                        kind: k,
                        field: "flags",
                        value: f.into(),
                    });
                }
                let flags = WriteFlags {
                    create: f & 1 != 0,
                    truncate: f & 2 != 0,
                    append: f & 4 != 0,
                    exclusive: f & 8 != 0,
                };
                let path = r.path("path")?;
                Message::FileWrite {
                    id,
                    path,
                    mode,
                    flags,
                }
            }
            Kind::FileStat => {
                let follow = r.flag("follow")?;
                Message::FileStat {
                    id,
                    path: r.path("path")?,
                    follow,
                }
            }
            Kind::FileList => Message::FileList {
                id,
                path: r.path("path")?,
            },
            Kind::FileMkdir => {
                let mode = r.u32("mode")?;
                check_mode(k, mode)?;
                let parents = r.flag("parents")?;
                Message::FileMkdir {
                    id,
                    path: r.path("path")?,
                    mode,
                    parents,
                }
            }
            Kind::FileRemove => {
                let recursive = r.flag("recursive")?;
                Message::FileRemove {
                    id,
                    path: r.path("path")?,
                    recursive,
                }
            }
            Kind::FileRename => {
                let from = r.path("from")?;
                let to = r.path("to")?;
                Message::FileRename { id, from, to }
            }
            Kind::FileChmod => {
                let mode = r.u32("mode")?;
                check_mode(k, mode)?;
                Message::FileChmod {
                    id,
                    path: r.path("path")?,
                    mode,
                }
            }
            Kind::TarOut => Message::TarOut {
                id,
                path: r.path("path")?,
            },
            Kind::TarIn => Message::TarIn {
                id,
                path: r.path("path")?,
            },
            Kind::FileData => Message::FileData {
                id,
                data: r.data()?,
            },
            Kind::FileEnd => Message::FileEnd { id },
            Kind::FileCancel => Message::FileCancel { id },
            Kind::FileDone => {
                let result = match r.u8("result")? {
                    0 => Ok(r.u64("value")?),
                    1 => {
                        let errno = r.i32("errno")?;
                        check_errno(k, errno, false)?;
                        let text = r.text("text", MAX_ERROR_TEXT)?;
                        Err(FsError { errno, text })
                    }
                    v => {
                        return Err(WireError::Range {
                            kind: k,
                            field: "result",
                            value: v.into(),
                        })
                    }
                };
                Message::FileDone { id, result }
            }
            Kind::FileStatResult => Message::FileStatResult {
                id,
                stat: r.stat()?,
            },
            Kind::FileEntries => {
                let n = r.count("entries", usize::MAX, 4 + 1 + STAT_LEN)?;
                if n == 0 {
                    return Err(WireError::Invalid {
                        kind: k,
                        field: "entries",
                        reason: "empty",
                    });
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.bytes("entries.name", MAX_NAME)?;
                    check_name(k, name)?;
                    let stat = r.stat()?;
                    entries.push(DirEntry {
                        name: name.to_vec(),
                        stat,
                    });
                }
                Message::FileEntries { id, entries }
            }
            Kind::TcpConnect => {
                let port = r.u16("port")?;
                check_port(k, port)?;
                let tag = r.u8("addr")?;
                let addr = r.ip(tag)?;
                Message::TcpConnect { id, addr, port }
            }
            Kind::TcpOpened => Message::TcpOpened { id },
            Kind::TcpFailed => {
                let errno = r.i32("errno")?;
                check_errno(k, errno, false)?;
                Message::TcpFailed { id, errno }
            }
            Kind::TcpData => Message::TcpData {
                id,
                data: r.data()?,
            },
            Kind::TcpShutdownWrite => Message::TcpShutdownWrite { id },
            Kind::TcpClose => Message::TcpClose {
                id,
                reset: r.flag("reset")?,
            },
            Kind::TcpOffer => {
                let port = r.u16("port")?;
                check_port(k, port)?;
                let dest = match r.u8("dest")? {
                    0 => {
                        let name = r.bytes("dest.name", MAX_HOSTNAME)?;
                        check_hostname(k, name)?;
                        // check_hostname admits ASCII only.
                        Destination::Name(String::from_utf8_lossy(name).into_owned())
                    }
                    tag => Destination::Ip(r.ip(tag)?),
                };
                Message::TcpOffer { id, dest, port }
            }
            Kind::TcpAccept => Message::TcpAccept { id },
            Kind::TcpRefuse => {
                let v = r.u8("reason")?;
                let reason = RefuseReason::from_u8(v).ok_or(WireError::Range {
                    kind: k,
                    field: "reason",
                    value: v.into(),
                })?;
                Message::TcpRefuse { id, reason }
            }
        };
        if !r.b.is_empty() {
            return Err(WireError::Trailing {
                kind,
                extra: r.b.len(),
            });
        }
        Ok(m)
    }
}

/// The encoded body length of a FileEntries with these entries.
pub fn entries_body_len(entries: &[DirEntry]) -> usize {
    4 + entries
        .iter()
        .map(|e| 4 + e.name.len() + STAT_LEN)
        .sum::<usize>()
}

// ---- field checks, shared by encoding and decoding ----

fn check_versions(kind: Kind, min: u16, max: u16) -> Result<(), WireError> {
    if min == 0 {
        return Err(WireError::Range {
            kind,
            field: "version",
            value: 0,
        });
    }
    if min > max {
        return Err(WireError::Invalid {
            kind,
            field: "version",
            reason: "minimum above maximum",
        });
    }
    Ok(())
}

fn check_window(kind: Kind, w: u32) -> Result<(), WireError> {
    if !(MIN_WINDOW..=MAX_WINDOW).contains(&w) {
        return Err(WireError::Range {
            kind,
            field: "window",
            value: w.into(),
        });
    }
    Ok(())
}

fn check_credit(kind: Kind, b: u32) -> Result<(), WireError> {
    if !(1..=MAX_WINDOW).contains(&b) {
        return Err(WireError::Range {
            kind,
            field: "bytes",
            value: b.into(),
        });
    }
    Ok(())
}

fn check_errno(kind: Kind, e: i32, zero_ok: bool) -> Result<(), WireError> {
    let lo = if zero_ok { 0 } else { 1 };
    if !(lo..=4095).contains(&e) {
        return Err(WireError::Range {
            kind,
            field: "errno",
            value: e as u32 as u64,
        });
    }
    Ok(())
}

fn check_signal(kind: Kind, s: u8) -> Result<(), WireError> {
    if !(1..=64).contains(&s) {
        return Err(WireError::Range {
            kind,
            field: "signal",
            value: s.into(),
        });
    }
    Ok(())
}

fn check_pid(kind: Kind, pid: u32) -> Result<(), WireError> {
    if !(1..=PID_MAX).contains(&pid) {
        return Err(WireError::Range {
            kind,
            field: "pid",
            value: pid.into(),
        });
    }
    Ok(())
}

fn check_id_value(kind: Kind, field: &'static str, v: u32) -> Result<(), WireError> {
    // (uid_t)-1 means "unchanged" to setresuid: never a real id.
    if v == u32::MAX {
        return Err(WireError::Range {
            kind,
            field,
            value: v.into(),
        });
    }
    Ok(())
}

fn check_host_id(kind: Kind, field: &'static str, v: u32) -> Result<(), WireError> {
    if v == 0 || v & AGENT_ID_BIT != 0 {
        return Err(WireError::Range {
            kind,
            field,
            value: v.into(),
        });
    }
    Ok(())
}

fn check_winsize(kind: Kind, ws: WinSize) -> Result<(), WireError> {
    if ws.rows == 0 || ws.cols == 0 {
        return Err(WireError::Invalid {
            kind,
            field: "window size",
            reason: "zero rows or columns",
        });
    }
    Ok(())
}

fn check_mode(kind: Kind, mode: u32) -> Result<(), WireError> {
    if mode > 0o7777 {
        return Err(WireError::Range {
            kind,
            field: "mode",
            value: mode.into(),
        });
    }
    Ok(())
}

fn check_offset(kind: Kind, off: u64) -> Result<(), WireError> {
    if off > i64::MAX as u64 {
        return Err(WireError::Range {
            kind,
            field: "offset",
            value: off,
        });
    }
    Ok(())
}

fn check_port(kind: Kind, port: u16) -> Result<(), WireError> {
    if port == 0 {
        return Err(WireError::Range {
            kind,
            field: "port",
            value: 0,
        });
    }
    Ok(())
}

fn check_data(kind: Kind, data: &[u8]) -> Result<(), WireError> {
    if data.is_empty() {
        return Err(WireError::Invalid {
            kind,
            field: "data",
            reason: "empty",
        });
    }
    if data.len() > MAX_DATA {
        return Err(WireError::TooLong {
            kind,
            field: "data",
            len: data.len(),
            max: MAX_DATA,
        });
    }
    Ok(())
}

fn check_path(kind: Kind, field: &'static str, p: &[u8]) -> Result<(), WireError> {
    if p.is_empty() {
        return Err(WireError::Invalid {
            kind,
            field,
            reason: "empty",
        });
    }
    if p.len() > MAX_PATH {
        return Err(WireError::TooLong {
            kind,
            field,
            len: p.len(),
            max: MAX_PATH,
        });
    }
    if p.contains(&0) {
        return Err(WireError::Nul { kind, field });
    }
    Ok(())
}

fn check_name(kind: Kind, n: &[u8]) -> Result<(), WireError> {
    let field = "entries.name";
    if n.is_empty() || n == b"." || n == b".." || n.contains(&b'/') {
        return Err(WireError::Invalid {
            kind,
            field,
            reason: "empty, `.`, `..` or containing `/`",
        });
    }
    if n.len() > MAX_NAME {
        return Err(WireError::TooLong {
            kind,
            field,
            len: n.len(),
            max: MAX_NAME,
        });
    }
    if n.contains(&0) {
        return Err(WireError::Nul { kind, field });
    }
    Ok(())
}

fn check_hostname(kind: Kind, n: &[u8]) -> Result<(), WireError> {
    let field = "dest.name";
    if n.len() > MAX_HOSTNAME {
        return Err(WireError::TooLong {
            kind,
            field,
            len: n.len(),
            max: MAX_HOSTNAME,
        });
    }
    let ok_char = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    if n.is_empty()
        || !n.iter().all(ok_char)
        || n.starts_with(b".")
        || n.windows(2).any(|w| w == b"..")
    {
        return Err(WireError::Invalid {
            kind,
            field,
            reason: "not a host name (letters, digits, `-`, `_`, non-empty labels)",
        });
    }
    Ok(())
}

fn check_argv<'a>(
    kind: Kind,
    n: usize,
    mut it: impl Iterator<Item = &'a [u8]>,
) -> Result<(), WireError> {
    if n > MAX_ARGS {
        return Err(WireError::TooMany {
            kind,
            field: "argv",
            count: n as u64,
            max: MAX_ARGS as u64,
        });
    }
    match it.next() {
        Some(a) if !a.is_empty() && !a.contains(&0) => {}
        Some(a) if a.contains(&0) => {
            return Err(WireError::Nul {
                kind,
                field: "argv",
            })
        }
        _ => {
            return Err(WireError::Invalid {
                kind,
                field: "argv",
                reason: "no program (argv[0] missing or empty)",
            })
        }
    }
    if it.any(|a| a.contains(&0)) {
        return Err(WireError::Nul {
            kind,
            field: "argv",
        });
    }
    Ok(())
}

fn check_env<'a>(
    kind: Kind,
    n: usize,
    mut it: impl Iterator<Item = &'a [u8]>,
) -> Result<(), WireError> {
    if n > MAX_ENV {
        return Err(WireError::TooMany {
            kind,
            field: "env",
            count: n as u64,
            max: MAX_ENV as u64,
        });
    }
    it.try_for_each(|e| {
        if e.contains(&0) {
            return Err(WireError::Nul { kind, field: "env" });
        }
        match e.iter().position(|&c| c == b'=') {
            Some(p) if p > 0 => Ok(()),
            _ => Err(WireError::Invalid {
                kind,
                field: "env",
                reason: "not KEY=VALUE with a non-empty key",
            }),
        }
    })
}

fn check_stat(kind: Kind, s: &Stat) -> Result<(), WireError> {
    check_mode(kind, s.mode)?;
    if s.mtime_nsec >= 1_000_000_000 {
        return Err(WireError::Range {
            kind,
            field: "mtime_nsec",
            value: s.mtime_nsec.into(),
        });
    }
    Ok(())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn cut_text(s: &str, max: usize) -> &[u8] {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

// ---- writing ----

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
/// Counts are checked against limits far below `u32::MAX` before this.
fn put_count(out: &mut Vec<u8>, n: usize) {
    put_u32(out, u32::try_from(n).unwrap_or(u32::MAX));
}
/// Byte strings are checked against limits far below `u32::MAX` before this.
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_count(out, b.len());
    out.extend_from_slice(b);
}
fn put_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
}
fn put_stat(out: &mut Vec<u8>, s: &Stat) {
    out.push(s.kind as u8);
    put_u32(out, s.mode);
    put_u64(out, s.size);
    out.extend_from_slice(&s.mtime_sec.to_le_bytes());
    put_u32(out, s.mtime_nsec);
    put_u32(out, s.uid);
    put_u32(out, s.gid);
}

// ---- reading ----

/// A cursor over a body: every read is bounds-checked against the bytes
/// that are there, so no length field can make it allocate or slice past
/// the input.
struct R<'a> {
    b: &'a [u8],
    kind: Kind,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return Err(WireError::Truncated {
                kind: self.kind,
                field,
            });
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn arr<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.arr::<1>(field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.arr(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.arr(field)?))
    }
    fn i32(&mut self, field: &'static str) -> Result<i32, WireError> {
        Ok(i32::from_le_bytes(self.arr(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.arr(field)?))
    }
    fn i64(&mut self, field: &'static str) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.arr(field)?))
    }
    fn flag(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError::Range {
                kind: self.kind,
                field,
                value: v.into(),
            }),
        }
    }
    /// A u32-length-prefixed byte string of at most `max` bytes.
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let n = self.u32(field)? as usize;
        if n > max {
            return Err(WireError::TooLong {
                kind: self.kind,
                field,
                len: n,
                max,
            });
        }
        self.take(n, field)
    }
    fn text(&mut self, field: &'static str, max: usize) -> Result<String, WireError> {
        let b = self.bytes(field, max)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(WireError::Utf8 {
                kind: self.kind,
                field,
            }),
        }
    }
    fn path(&mut self, field: &'static str) -> Result<Vec<u8>, WireError> {
        let p = self.bytes(field, MAX_PATH)?;
        check_path(self.kind, field, p)?;
        Ok(p.to_vec())
    }
    /// A u32 count of entries, each at least `min_entry` bytes long: the
    /// count is checked against `max` and against the bytes left, so it can
    /// size an allocation.
    fn count(
        &mut self,
        field: &'static str,
        max: usize,
        min_entry: usize,
    ) -> Result<usize, WireError> {
        let n = self.u32(field)? as usize;
        if n > max {
            return Err(WireError::TooMany {
                kind: self.kind,
                field,
                count: n as u64,
                max: max as u64,
            });
        }
        if n > self.b.len() / min_entry.max(1) {
            return Err(WireError::Truncated {
                kind: self.kind,
                field,
            });
        }
        Ok(n)
    }
    /// A counted list of byte strings, borrowed from the input.
    fn list(&mut self, field: &'static str, max: usize) -> Result<Vec<&'a [u8]>, WireError> {
        let n = self.count(field, max, 4)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.bytes(field, MAX_MESSAGE)?);
        }
        Ok(v)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
    fn data(&mut self) -> Result<Vec<u8>, WireError> {
        let d = self.rest();
        check_data(self.kind, d)?;
        Ok(d.to_vec())
    }
    fn stage(&mut self) -> Result<Stage, WireError> {
        let v = self.u8("stage")?;
        Stage::from_u8(v).ok_or(WireError::Range {
            kind: self.kind,
            field: "stage",
            value: v.into(),
        })
    }
    fn out_stream(&mut self) -> Result<OutStream, WireError> {
        match self.u8("stream")? {
            1 => Ok(OutStream::Stdout),
            2 => Ok(OutStream::Stderr),
            v => Err(WireError::Range {
                kind: self.kind,
                field: "stream",
                value: v.into(),
            }),
        }
    }
    fn ip(&mut self, tag: u8) -> Result<IpAddr, WireError> {
        match tag {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.arr::<4>("addr")?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.arr::<16>("addr")?))),
            v => Err(WireError::Range {
                kind: self.kind,
                field: "addr",
                value: v.into(),
            }),
        }
    }
    fn stat(&mut self) -> Result<Stat, WireError> {
        let k = self.u8("stat.kind")?;
        let kind = FileKind::from_u8(k).ok_or(WireError::Range {
            kind: self.kind,
            field: "stat.kind",
            value: k.into(),
        })?;
        let s = Stat {
            kind,
            mode: self.u32("stat.mode")?,
            size: self.u64("stat.size")?,
            mtime_sec: self.i64("stat.mtime_sec")?,
            mtime_nsec: self.u32("stat.mtime_nsec")?,
            uid: self.u32("stat.uid")?,
            gid: self.u32("stat.gid")?,
        };
        check_stat(self.kind, &s)?;
        Ok(s)
    }
}
