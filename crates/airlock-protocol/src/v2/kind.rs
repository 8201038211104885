//! Message kinds: the byte in every frame header that says what the body is.

use std::fmt;

/// Who may send a message kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Only the host sends it.
    HostToAgent,
    /// Only the agent sends it.
    AgentToHost,
    /// Either side sends it.
    Both,
}

/// What the header's id must be for a message kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRule {
    /// Session-level message: id 0.
    Zero,
    /// A host-chosen id: non-zero, high bit clear.
    Host,
    /// An agent-chosen id: high bit set.
    Agent,
    /// Any non-zero id (TCP streams and credit, which both sides open).
    NonZero,
}

macro_rules! kinds {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, $dir:ident, $ids:ident, $frag:literal, $feat:expr; )*) => {
        /// Every message kind of protocol v2, with its number on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Kind {
            $( $(#[$doc])* $name = $num, )*
        }

        impl Kind {
            /// Every kind, in wire-number order.
            pub const ALL: &'static [Kind] = &[$(Kind::$name,)*];

            /// The kind with this wire number, if any.
            pub fn from_u8(v: u8) -> Option<Kind> {
                match v {
                    $( $num => Some(Kind::$name), )*
                    _ => None,
                }
            }

            /// Its name, as in the message table.
            pub fn name(self) -> &'static str {
                match self {
                    $( Kind::$name => stringify!($name), )*
                }
            }

            /// Who may send it.
            pub fn direction(self) -> Direction {
                match self {
                    $( Kind::$name => Direction::$dir, )*
                }
            }

            /// What its header id must be.
            pub fn id_rule(self) -> IdRule {
                match self {
                    $( Kind::$name => IdRule::$ids, )*
                }
            }

            /// Whether a message of this kind may span several frames.
            pub fn fragmentable(self) -> bool {
                match self {
                    $( Kind::$name => $frag, )*
                }
            }

            /// The feature bit both sides must have agreed on for this kind
            /// to be used (0: always allowed).
            pub fn feature(self) -> u64 {
                match self {
                    $( Kind::$name => $feat, )*
                }
            }
        }
    };
}

/// Feature bit: processes with a pseudo-terminal.
pub const FEATURE_PTY: u64 = 1 << 0;
/// Feature bit: file operations (read, write, stat, list, mkdir, remove,
/// rename, chmod).
pub const FEATURE_FILES: u64 = 1 << 1;
/// Feature bit: tar archives of directories, out and in.
pub const FEATURE_TAR: u64 = 1 << 2;
/// Feature bit: host-initiated TCP streams (port forwarding into the sandbox).
pub const FEATURE_TCP: u64 = 1 << 3;
/// Feature bit: agent-initiated TCP offers (egress, decided by the host).
pub const FEATURE_EGRESS: u64 = 1 << 4;
/// Every feature bit this build knows.
pub const FEATURES_ALL: u64 =
    FEATURE_PTY | FEATURE_FILES | FEATURE_TAR | FEATURE_TCP | FEATURE_EGRESS;

kinds! {
    /// host→agent: supported version range, features, host receive window.
    Hello = 2, HostToAgent, Zero, false, 0;
    /// agent→host: chosen version, features, agent receive window, agent version.
    HelloAck = 3, AgentToHost, Zero, false, 0;
    /// host→agent: opaque configuration.
    Plan = 4, HostToAgent, Zero, true, 0;
    /// agent→host: the plan is applied.
    Ready = 5, AgentToHost, Zero, false, 0;
    /// agent→host: the handshake or the plan failed; the agent is done.
    SetupFailed = 6, AgentToHost, Zero, false, 0;
    /// host→agent: liveness probe.
    Ping = 7, HostToAgent, Zero, false, 0;
    /// agent→host: answer to a Ping.
    Pong = 8, AgentToHost, Zero, false, 0;
    /// host→agent: kill everything and stop.
    Shutdown = 9, HostToAgent, Zero, false, 0;
    /// agent→host: everything is stopped; nothing follows.
    ShutdownDone = 10, AgentToHost, Zero, false, 0;
    /// both: the receiver of a data stream grants bytes to its sender.
    Credit = 11, Both, NonZero, false, 0;
    /// agent→host: something the user should hear about the set-up (a
    /// fallback taken), between Plan and Ready only.
    Notice = 12, AgentToHost, Zero, false, 0;

    /// host→agent: start a process.
    ProcStart = 16, HostToAgent, Host, true, 0;
    /// agent→host: the process runs, with this pid.
    ProcStarted = 17, AgentToHost, Host, false, 0;
    /// agent→host: the process could not be started.
    ProcStartFailed = 18, AgentToHost, Host, false, 0;
    /// host→agent: bytes for the process's stdin.
    ProcStdin = 19, HostToAgent, Host, false, 0;
    /// host→agent: close the process's stdin.
    ProcCloseStdin = 20, HostToAgent, Host, false, 0;
    /// agent→host: bytes the process wrote to stdout or stderr.
    ProcOutput = 21, AgentToHost, Host, false, 0;
    /// agent→host: stdout or stderr reached its end.
    ProcEof = 22, AgentToHost, Host, false, 0;
    /// host→agent: deliver a signal to the process group.
    ProcSignal = 23, HostToAgent, Host, false, 0;
    /// host→agent: new terminal size.
    ProcResize = 24, HostToAgent, Host, false, FEATURE_PTY;
    /// agent→host: the process ended; the last message about it.
    ProcExited = 25, AgentToHost, Host, false, 0;
    /// host→agent: list the processes the agent serves (re-attach).
    ProcList = 26, HostToAgent, Host, false, 0;
    /// agent→host: the answer to ProcList.
    ProcListResult = 27, AgentToHost, Host, false, 0;

    /// host→agent: stream a file's bytes out.
    FileRead = 32, HostToAgent, Host, false, FEATURE_FILES;
    /// host→agent: write a file from the FileData that follows.
    FileWrite = 33, HostToAgent, Host, false, FEATURE_FILES;
    /// host→agent: stat a path.
    FileStat = 34, HostToAgent, Host, false, FEATURE_FILES;
    /// host→agent: list a directory.
    FileList = 35, HostToAgent, Host, false, FEATURE_FILES;
    /// host→agent: make a directory.
    FileMkdir = 36, HostToAgent, Host, false, FEATURE_FILES;
    /// host→agent: remove a path.
    FileRemove = 37, HostToAgent, Host, false, FEATURE_FILES;
    /// host→agent: rename a path.
    FileRename = 38, HostToAgent, Host, false, FEATURE_FILES;
    /// host→agent: change a path's mode.
    FileChmod = 39, HostToAgent, Host, false, FEATURE_FILES;
    /// host→agent: stream a tar archive of a directory out.
    TarOut = 40, HostToAgent, Host, false, FEATURE_TAR;
    /// host→agent: extract the tar archive that follows into a directory.
    TarIn = 41, HostToAgent, Host, false, FEATURE_TAR;
    /// both: bytes of a file request's data stream.
    FileData = 42, Both, Host, false, 0;
    /// host→agent: the upload's data is complete.
    FileEnd = 43, HostToAgent, Host, false, 0;
    /// host→agent: abandon a file request.
    FileCancel = 44, HostToAgent, Host, false, 0;
    /// agent→host: a file request's result; the last message about it.
    FileDone = 45, AgentToHost, Host, false, 0;
    /// agent→host: a successful stat's result; the last message about it.
    FileStatResult = 46, AgentToHost, Host, false, 0;
    /// agent→host: directory entries (counted against the request's credit).
    FileEntries = 47, AgentToHost, Host, false, 0;

    /// host→agent: connect to a TCP port inside the sandbox.
    TcpConnect = 48, HostToAgent, Host, false, FEATURE_TCP;
    /// agent→host: the connection is open.
    TcpOpened = 49, AgentToHost, Host, false, FEATURE_TCP;
    /// agent→host: the connection failed.
    TcpFailed = 50, AgentToHost, Host, false, FEATURE_TCP;
    /// both: bytes of a TCP stream.
    TcpData = 51, Both, NonZero, false, 0;
    /// both: the sender will send no more data (half close).
    TcpShutdownWrite = 52, Both, NonZero, false, 0;
    /// both: the sender is done with the stream (reset: abortively).
    TcpClose = 53, Both, NonZero, false, 0;
    /// agent→host: a process inside wants to reach this destination.
    TcpOffer = 54, AgentToHost, Agent, false, FEATURE_EGRESS;
    /// host→agent: the offer is accepted; the stream is open.
    TcpAccept = 55, HostToAgent, Agent, false, FEATURE_EGRESS;
    /// host→agent: the offer is refused.
    TcpRefuse = 56, HostToAgent, Agent, false, FEATURE_EGRESS;
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
