//! The host's side of a session: it encodes what the host sends and
//! validates everything the agent sends.
//!
//! The host never trusts the agent. Every frame from it goes through
//! [`HostSession::on_frame`], which returns the message only if it is one
//! the agent may send at this point: a response to a request the host made,
//! output of a process the host started and that has not ended, data within
//! the credit the host granted, and so on. Anything else is a [`Violation`]
//! and poisons the session (the host should then kill the sandbox).
//!
//! Memory: one small entry per id the host opened and has not seen finish,
//! one per TCP offer pending (at most [`HostConfig::max_pending_offers`]) or
//! accepted, and at most [`HostConfig::max_pings`] nonces. No agent→host
//! kind is fragmentable, so nothing is ever reassembled (a fragment flag
//! is a wire error); the reassembler and a refusal of unsolicited first
//! fragments stay as a second line. Nothing the agent sends makes the
//! state grow otherwise.

use std::collections::{HashMap, VecDeque};

use super::error::{Misuse, Violation};
use super::flow::{RecvWindow, SendCredit};
use super::frame::{self, Frame, Reassembler, FLAG_MORE};
use super::kind::{Direction, Kind, FEATURES_ALL, FEATURE_PTY};
use super::message::{Message, OutStream, StdinMode, StreamKind};
use super::{AGENT_ID_BIT, DEFAULT_WINDOW, MAX_MESSAGE, VERSION};

/// What the host offers and how much it tolerates.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Oldest protocol version accepted.
    pub min_version: u16,
    /// Newest protocol version accepted.
    pub max_version: u16,
    /// Feature bits offered.
    pub features: u64,
    /// The host's receive window for every agent→host stream.
    pub window: u32,
    /// Agent TCP offers that may wait for an answer at once.
    pub max_pending_offers: usize,
    /// Pings that may wait for a Pong at once.
    pub max_pings: usize,
    /// Ids up to this belong to earlier sessions (a re-attach lists them);
    /// the ids this session opens are above it.
    pub id_floor: u32,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            min_version: VERSION,
            max_version: VERSION,
            features: FEATURES_ALL,
            window: DEFAULT_WINDOW,
            max_pending_offers: 32,
            max_pings: 8,
            id_floor: 0,
        }
    }
}

/// What the handshake settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    pub version: u16,
    pub features: u64,
    /// The host's receive window (initial credit of agent→host streams).
    pub host_window: u32,
    /// The agent's receive window (initial credit of host→agent streams).
    pub agent_window: u32,
    pub agent_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    HelloSent,
    Open,
    ShutdownSent,
    Done,
    SetupFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlanState {
    NotSent,
    Pending,
    Done,
}

#[derive(Debug, Clone)]
enum Stdin {
    Null,
    Open(SendCredit),
    Closed,
}

#[derive(Debug, Clone)]
struct Proc {
    started: bool,
    pty: bool,
    stdin: Stdin,
    stdout: Option<RecvWindow>,
    stderr: Option<RecvWindow>,
}

impl Proc {
    fn out(&mut self, s: OutStream) -> Result<Option<&mut RecvWindow>, ()> {
        match s {
            OutStream::Stdout => Ok(self.stdout.as_mut()),
            OutStream::Stderr if self.pty => Err(()),
            OutStream::Stderr => Ok(self.stderr.as_mut()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileOp {
    Read,
    Write,
    Stat,
    List,
    Other,
    TarOut,
    TarIn,
}

#[derive(Debug, Clone)]
struct File {
    op: FileOp,
    /// host → agent data (Write, TarIn); `None` once ended or cancelled.
    upload: Option<SendCredit>,
    /// agent → host data (Read, TarOut, List).
    download: Option<RecvWindow>,
    cancelled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpPhase {
    Connecting,
    Offered,
    Open,
}

#[derive(Debug, Clone)]
struct Tcp {
    phase: TcpPhase,
    send: SendCredit,
    recv: RecvWindow,
    sent_shut: bool,
    got_shut: bool,
    sent_close: bool,
    got_close: bool,
}

#[derive(Debug, Clone)]
enum Obj {
    Proc(Proc),
    ProcList,
    File(File),
    Tcp(Tcp),
}

impl Obj {
    fn what(&self) -> &'static str {
        match self {
            Obj::Proc(_) => "a process",
            Obj::ProcList => "a process listing",
            Obj::File(_) => "a file request",
            Obj::Tcp(_) => "a TCP stream",
        }
    }
}

/// The host's protocol state for one channel.
#[derive(Debug, Clone)]
pub struct HostSession {
    cfg: HostConfig,
    phase: Phase,
    plan: PlanState,
    offered: (u16, u16, u64, u32),
    agreed: Option<Agreed>,
    objects: HashMap<u32, Obj>,
    last_host_id: u32,
    last_agent_id: u32,
    pending_offers: usize,
    pings: VecDeque<u64>,
    /// Notices received while the plan is being applied.
    notices: usize,
    reasm: Reassembler,
    poisoned: bool,
}

/// Whether the host may send `k` before HelloAck (requests that carry no
/// data).
fn pipelinable(k: Kind) -> bool {
    matches!(
        k,
        Kind::Plan
            | Kind::Ping
            | Kind::ProcStart
            | Kind::ProcCloseStdin
            | Kind::ProcSignal
            | Kind::ProcResize
            | Kind::ProcList
            | Kind::FileRead
            | Kind::FileWrite
            | Kind::FileStat
            | Kind::FileList
            | Kind::FileMkdir
            | Kind::FileRemove
            | Kind::FileRename
            | Kind::FileChmod
            | Kind::TarOut
            | Kind::TarIn
            | Kind::TcpConnect
    )
}

/// The most Notices an agent may send while it applies the plan.
pub const MAX_NOTICES: usize = 16;

/// What [`HostSession::on_frame`] hands the host.
pub type Received = Option<Message>;

impl HostSession {
    pub fn new(cfg: HostConfig) -> HostSession {
        HostSession {
            offered: (cfg.min_version, cfg.max_version, cfg.features, cfg.window),
            last_host_id: cfg.id_floor,
            cfg,
            phase: Phase::Idle,
            plan: PlanState::NotSent,
            agreed: None,
            objects: HashMap::new(),
            last_agent_id: 0,
            pending_offers: 0,
            pings: VecDeque::new(),
            notices: 0,
            reasm: Reassembler::new(MAX_MESSAGE),
            poisoned: false,
        }
    }

    /// The Hello this configuration sends.
    pub fn hello(&self) -> Message {
        Message::Hello {
            min_version: self.cfg.min_version,
            max_version: self.cfg.max_version,
            features: self.cfg.features,
            window: self.cfg.window,
        }
    }

    /// Sends [`HostSession::hello`]: the first thing on every channel.
    pub fn send_hello(&mut self, out: &mut Vec<u8>) -> Result<(), Misuse> {
        let hello = self.hello();
        self.send(&hello, out)
    }

    /// The handshake's outcome, once HelloAck arrived.
    pub fn agreed(&self) -> Option<&Agreed> {
        self.agreed.as_ref()
    }

    /// Whether the session can carry requests (handshake done, not shut down).
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open && !self.poisoned
    }

    /// Whether the session is over: shut down, or the agent's set-up
    /// failed (nothing more can be sent).
    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::SetupFailed)
    }

    /// Whether the agent has confirmed the shutdown.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The id the next opening request should use.
    pub fn next_id(&self) -> Option<u32> {
        self.last_host_id
            .checked_add(1)
            .filter(|id| id & AGENT_ID_BIT == 0)
    }

    /// Ids the session tracks (open requests, processes, streams, offers).
    pub fn tracked(&self) -> usize {
        self.objects.len()
    }

    /// TCP offers waiting for TcpAccept / TcpRefuse.
    pub fn pending_offers(&self) -> usize {
        self.pending_offers
    }

    /// Bytes held by the reassembly of a fragmented message.
    pub fn reassembly_buffered(&self) -> usize {
        self.reasm.buffered()
    }

    /// Credit the host holds to send on `(id, stream)` (stdin, upload file
    /// data, TCP), if that stream is open for sending.
    pub fn send_credit(&self, id: u32, stream: StreamKind) -> Option<u32> {
        match (self.objects.get(&id)?, stream) {
            (Obj::Proc(p), StreamKind::Stdin) => match &p.stdin {
                Stdin::Open(c) => Some(c.available()),
                _ => None,
            },
            (Obj::File(f), StreamKind::File) => f.upload.map(|c| c.available()),
            (Obj::Tcp(t), StreamKind::Tcp)
                if t.phase == TcpPhase::Open && !t.sent_shut && !t.sent_close && !t.got_close =>
            {
                Some(t.send.available())
            }
            _ => None,
        }
    }

    // ------------------------------------------------------------------
    // Receiving.

    /// Feeds one frame from the agent. Returns the message it completes,
    /// if it is valid now; `None` for a non-final fragment or for a message
    /// the agent sent before it saw the host end that stream (data after
    /// the host's TcpClose, credit for a closed stdin), which is dropped.
    pub fn on_frame(&mut self, frame: Frame<'_>) -> Result<Received, Violation> {
        if self.poisoned {
            return Err(Violation::Poisoned);
        }
        let r = self.on_frame_inner(frame);
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    fn on_frame_inner(&mut self, frame: Frame<'_>) -> Result<Received, Violation> {
        let kind = frame.kind;
        if kind.direction() == Direction::HostToAgent {
            return Err(Violation::WrongDirection { kind });
        }
        match self.phase {
            Phase::Done | Phase::SetupFailed => return Err(Violation::SessionOver { kind }),
            Phase::Idle => return Err(Violation::BeforeHandshake { kind }),
            Phase::HelloSent if !matches!(kind, Kind::HelloAck | Kind::SetupFailed) => {
                return Err(Violation::BeforeHandshake { kind })
            }
            _ => {}
        }
        if let Some(a) = &self.agreed {
            let f = kind.feature();
            if f & a.features != f {
                return Err(Violation::FeatureNotNegotiated { kind, feature: f });
            }
        }
        // A fragmented message is buffered only if it answers a request:
        // the first fragment of a listing nobody asked for is refused
        // before its bytes are kept.
        if frame.flags == FLAG_MORE && !matches!(self.objects.get(&frame.id), Some(Obj::ProcList)) {
            return Err(self.missing(kind, frame.id));
        }
        let Some(msg) = self.reasm.push(frame)? else {
            return Ok(None);
        };
        let deliver = self.check(&msg)?;
        Ok(deliver.then_some(msg))
    }

    fn missing(&self, kind: Kind, id: u32) -> Violation {
        let finished = if id & AGENT_ID_BIT != 0 {
            self.last_agent_id != 0 && id <= self.last_agent_id
        } else {
            id > self.cfg.id_floor && id <= self.last_host_id
        };
        if finished {
            Violation::Finished { kind, id }
        } else {
            Violation::UnknownId { kind, id }
        }
    }

    fn obj(&mut self, kind: Kind, id: u32) -> Result<&mut Obj, Violation> {
        if !self.objects.contains_key(&id) {
            return Err(self.missing(kind, id));
        }
        self.objects
            .get_mut(&id)
            .ok_or(Violation::UnknownId { kind, id })
    }

    fn proc(&mut self, kind: Kind, id: u32) -> Result<&mut Proc, Violation> {
        match self.obj(kind, id)? {
            Obj::Proc(p) => Ok(p),
            o => Err(Violation::WrongObject {
                kind,
                id,
                what: o.what(),
            }),
        }
    }

    fn file(&mut self, kind: Kind, id: u32) -> Result<&mut File, Violation> {
        match self.obj(kind, id)? {
            Obj::File(f) => Ok(f),
            o => Err(Violation::WrongObject {
                kind,
                id,
                what: o.what(),
            }),
        }
    }

    fn tcp(&mut self, kind: Kind, id: u32) -> Result<&mut Tcp, Violation> {
        match self.obj(kind, id)? {
            Obj::Tcp(t) => Ok(t),
            o => Err(Violation::WrongObject {
                kind,
                id,
                what: o.what(),
            }),
        }
    }

    fn retire(&mut self, id: u32) {
        if let Some(Obj::Tcp(t)) = self.objects.remove(&id) {
            if t.phase == TcpPhase::Offered {
                self.pending_offers -= 1;
            }
        }
    }

    /// Validates one whole message from the agent; `Ok(false)` means valid
    /// but stale (dropped).
    fn check(&mut self, msg: &Message) -> Result<bool, Violation> {
        let kind = msg.kind();
        let id = msg.id();
        let flow = |stream: StreamKind| {
            move |source| Violation::Flow {
                kind,
                id,
                stream,
                source,
            }
        };
        match msg {
            Message::HelloAck {
                version,
                features,
                window,
                agent_version,
            } => {
                if self.phase != Phase::HelloSent {
                    return Err(Violation::Unsolicited { kind, id });
                }
                let (min, max, offered, host_window) = self.offered;
                if !(min..=max).contains(version) {
                    return Err(Violation::VersionRefused {
                        version: *version,
                        min,
                        max,
                    });
                }
                if features & !offered != 0 {
                    return Err(Violation::UnofferedFeatures {
                        features: features & !offered,
                    });
                }
                self.agreed = Some(Agreed {
                    version: *version,
                    features: *features,
                    host_window,
                    agent_window: *window,
                    agent_version: agent_version.clone(),
                });
                self.phase = Phase::Open;
                // Requests sent before the agent's window was known start
                // with it now.
                for o in self.objects.values_mut() {
                    match o {
                        Obj::Proc(Proc {
                            stdin: Stdin::Open(c),
                            ..
                        }) if c.window() == 0 => *c = SendCredit::new(*window),
                        Obj::File(File {
                            upload: Some(c), ..
                        }) if c.window() == 0 => *c = SendCredit::new(*window),
                        Obj::Tcp(t) if t.send.window() == 0 => t.send = SendCredit::new(*window),
                        _ => {}
                    }
                }
            }
            Message::SetupFailed { .. } => {
                if self.phase == Phase::HelloSent || self.plan == PlanState::Pending {
                    self.phase = Phase::SetupFailed;
                } else {
                    return Err(Violation::Unsolicited { kind, id });
                }
            }
            Message::Ready => {
                if self.plan != PlanState::Pending {
                    return Err(Violation::Unsolicited { kind, id });
                }
                self.plan = PlanState::Done;
            }
            Message::Notice { .. } => {
                if self.plan != PlanState::Pending {
                    return Err(Violation::Unsolicited { kind, id });
                }
                self.notices += 1;
                if self.notices > MAX_NOTICES {
                    return Err(Violation::Flood {
                        kind,
                        limit: MAX_NOTICES,
                    });
                }
            }
            Message::Pong { nonce } => match self.pings.iter().position(|n| n == nonce) {
                Some(i) => {
                    self.pings.remove(i);
                }
                None => return Err(Violation::Unsolicited { kind, id }),
            },
            Message::ShutdownDone => {
                if self.phase != Phase::ShutdownSent {
                    return Err(Violation::Unsolicited { kind, id });
                }
                self.phase = Phase::Done;
            }
            Message::Credit { stream, bytes, .. } => {
                let stream = *stream;
                let nss = Violation::NoSuchStream { kind, id, stream };
                match (self.obj(kind, id)?, stream) {
                    (Obj::Proc(p), StreamKind::Stdin) => match &mut p.stdin {
                        Stdin::Null => return Err(nss),
                        Stdin::Closed => return Ok(false),
                        Stdin::Open(c) => c.grant(*bytes).map_err(flow(stream))?,
                    },
                    (Obj::File(f), StreamKind::File)
                        if matches!(f.op, FileOp::Write | FileOp::TarIn) =>
                    {
                        match &mut f.upload {
                            None => return Ok(false),
                            Some(c) => c.grant(*bytes).map_err(flow(stream))?,
                        }
                    }
                    (Obj::Tcp(t), StreamKind::Tcp) => {
                        if t.phase != TcpPhase::Open {
                            return Err(Violation::Inconsistent {
                                kind,
                                id,
                                reason: "credit for a TCP stream that is not open",
                            });
                        }
                        if t.sent_shut || t.sent_close {
                            return Ok(false);
                        }
                        t.send.grant(*bytes).map_err(flow(stream))?;
                    }
                    _ => return Err(nss),
                }
            }
            Message::ProcStarted { .. } => {
                let p = self.proc(kind, id)?;
                if p.started {
                    return Err(Violation::Duplicate { kind, id });
                }
                p.started = true;
            }
            Message::ProcStartFailed { .. } => {
                if self.proc(kind, id)?.started {
                    return Err(Violation::Inconsistent {
                        kind,
                        id,
                        reason: "the process was already reported started",
                    });
                }
                self.retire(id);
            }
            Message::ProcOutput { stream, data, .. } => {
                let p = self.proc(kind, id)?;
                if !p.started {
                    return Err(Violation::NotStarted { kind, id });
                }
                let s = stream.stream();
                match p.out(*stream) {
                    Err(()) => {
                        return Err(Violation::NoSuchStream {
                            kind,
                            id,
                            stream: s,
                        })
                    }
                    Ok(None) => {
                        return Err(Violation::AfterEnd {
                            kind,
                            id,
                            stream: s,
                        })
                    }
                    Ok(Some(w)) => w.on_data(data.len()).map_err(flow(s))?,
                }
            }
            Message::ProcEof { stream, .. } => {
                let p = self.proc(kind, id)?;
                if !p.started {
                    return Err(Violation::NotStarted { kind, id });
                }
                let s = stream.stream();
                match p.out(*stream) {
                    Err(()) => {
                        return Err(Violation::NoSuchStream {
                            kind,
                            id,
                            stream: s,
                        })
                    }
                    Ok(None) => {
                        return Err(Violation::AfterEnd {
                            kind,
                            id,
                            stream: s,
                        })
                    }
                    Ok(Some(_)) => {}
                }
                match stream {
                    OutStream::Stdout => p.stdout = None,
                    OutStream::Stderr => p.stderr = None,
                }
            }
            Message::ProcExited { .. } => {
                if !self.proc(kind, id)?.started {
                    return Err(Violation::NotStarted { kind, id });
                }
                self.retire(id);
            }
            Message::ProcListResult { procs, .. } => {
                match self.obj(kind, id)? {
                    Obj::ProcList => {}
                    o => {
                        return Err(Violation::WrongObject {
                            kind,
                            id,
                            what: o.what(),
                        })
                    }
                }
                self.retire(id);
                let agent_window = self.agreed.as_ref().map_or(0, |a| a.agent_window);
                for p in procs {
                    match self.objects.get(&p.id) {
                        Some(Obj::Proc(_)) => continue,
                        Some(_) => {
                            return Err(Violation::BadListing {
                                id: p.id,
                                reason: "the id is open as something else",
                            })
                        }
                        None if p.id > self.cfg.id_floor => {
                            return Err(Violation::BadListing {
                                id: p.id,
                                reason: "not a live process of this session nor of an earlier one",
                            })
                        }
                        None => {}
                    }
                    if p.pty && p.stderr_open {
                        return Err(Violation::BadListing {
                            id: p.id,
                            reason: "a pty process has no separate stderr",
                        });
                    }
                    let w = self.cfg.window;
                    self.objects.insert(
                        p.id,
                        Obj::Proc(Proc {
                            started: true,
                            pty: p.pty,
                            stdin: if p.stdin_open {
                                Stdin::Open(SendCredit::new(agent_window))
                            } else {
                                Stdin::Closed
                            },
                            stdout: p.stdout_open.then(|| RecvWindow::new(w)),
                            stderr: p.stderr_open.then(|| RecvWindow::new(w)),
                        }),
                    );
                }
            }
            Message::FileData { data, .. } => {
                let f = self.file(kind, id)?;
                if !matches!(f.op, FileOp::Read | FileOp::TarOut) {
                    return Err(Violation::WrongObject {
                        kind,
                        id,
                        what: "a request without a download",
                    });
                }
                if let Some(w) = &mut f.download {
                    w.on_data(data.len()).map_err(flow(StreamKind::File))?;
                }
            }
            Message::FileEntries { .. } => {
                let f = self.file(kind, id)?;
                if f.op != FileOp::List {
                    return Err(Violation::WrongObject {
                        kind,
                        id,
                        what: "a request other than FileList",
                    });
                }
                if let Some(w) = &mut f.download {
                    w.on_data(msg.credit_cost())
                        .map_err(flow(StreamKind::File))?;
                }
            }
            Message::FileDone { result, .. } => {
                let f = self.file(kind, id)?;
                if f.op == FileOp::Stat && result.is_ok() {
                    return Err(Violation::Inconsistent {
                        kind,
                        id,
                        reason: "a successful stat answers with FileStatResult",
                    });
                }
                self.retire(id);
            }
            Message::FileStatResult { .. } => {
                if self.file(kind, id)?.op != FileOp::Stat {
                    return Err(Violation::WrongObject {
                        kind,
                        id,
                        what: "a request other than FileStat",
                    });
                }
                self.retire(id);
            }
            Message::TcpOpened { .. } => {
                let t = self.tcp(kind, id)?;
                if t.phase != TcpPhase::Connecting {
                    return Err(Violation::Duplicate { kind, id });
                }
                t.phase = TcpPhase::Open;
            }
            Message::TcpFailed { .. } => {
                if self.tcp(kind, id)?.phase != TcpPhase::Connecting {
                    return Err(Violation::Inconsistent {
                        kind,
                        id,
                        reason: "the stream is not connecting",
                    });
                }
                self.retire(id);
            }
            Message::TcpData { data, .. } => {
                let t = self.tcp_open(kind, id)?;
                if t.got_shut {
                    return Err(Violation::AfterEnd {
                        kind,
                        id,
                        stream: StreamKind::Tcp,
                    });
                }
                t.recv.on_data(data.len()).map_err(flow(StreamKind::Tcp))?;
                if t.sent_close {
                    return Ok(false);
                }
            }
            Message::TcpShutdownWrite { .. } => {
                let t = self.tcp_open(kind, id)?;
                if t.got_shut {
                    return Err(Violation::Duplicate { kind, id });
                }
                t.got_shut = true;
                if t.sent_close {
                    return Ok(false);
                }
            }
            Message::TcpClose { .. } => {
                let t = self.tcp_open(kind, id)?;
                t.got_close = true;
                if t.sent_close {
                    self.retire(id);
                }
            }
            Message::TcpOffer { .. } => {
                if self.phase != Phase::Open {
                    return Err(Violation::Unsolicited { kind, id });
                }
                if id <= self.last_agent_id {
                    return Err(Violation::IdOrder {
                        id,
                        last: self.last_agent_id,
                    });
                }
                if self.pending_offers >= self.cfg.max_pending_offers {
                    return Err(Violation::TooManyOffers {
                        max: self.cfg.max_pending_offers,
                    });
                }
                let (hw, aw) = self
                    .agreed
                    .as_ref()
                    .map_or((0, 0), |a| (a.host_window, a.agent_window));
                self.last_agent_id = id;
                self.pending_offers += 1;
                self.objects.insert(
                    id,
                    Obj::Tcp(Tcp {
                        phase: TcpPhase::Offered,
                        send: SendCredit::new(aw),
                        recv: RecvWindow::new(hw),
                        sent_shut: false,
                        got_shut: false,
                        sent_close: false,
                        got_close: false,
                    }),
                );
            }
            // Every other kind is host → agent, refused before reassembly.
            _ => return Err(Violation::WrongDirection { kind }),
        }
        Ok(true)
    }

    /// A TCP stream that is open and that the agent has not closed.
    fn tcp_open(&mut self, kind: Kind, id: u32) -> Result<&mut Tcp, Violation> {
        let t = self.tcp(kind, id)?;
        if t.phase != TcpPhase::Open {
            return Err(Violation::Inconsistent {
                kind,
                id,
                reason: "the stream is not open",
            });
        }
        if t.got_close {
            return Err(Violation::Finished { kind, id });
        }
        Ok(t)
    }

    // ------------------------------------------------------------------
    // Sending.

    /// Checks that the host may send `msg` now, appends its frames to
    /// `out` and records its effect. On error nothing is appended and the
    /// state is unchanged.
    pub fn send(&mut self, msg: &Message, out: &mut Vec<u8>) -> Result<(), Misuse> {
        if self.poisoned {
            return Err(Misuse::Poisoned);
        }
        let kind = msg.kind();
        if kind.direction() == Direction::AgentToHost {
            return Err(Misuse::WrongDirection { kind });
        }
        let turn = |reason| Err(Misuse::OutOfTurn { kind, reason });
        match (self.phase, kind) {
            (Phase::Idle, Kind::Hello) => {}
            (Phase::Idle, _) => return turn("the session starts with Hello"),
            // Requests that carry no data may follow Hello at once (the
            // agent reads them after its HelloAck); data needs the agent's
            // window, known from HelloAck.
            (Phase::HelloSent, k) if pipelinable(k) => {}
            (Phase::HelloSent, _) => return turn("waiting for HelloAck"),
            (Phase::Open, Kind::Hello) => return turn("Hello was already sent"),
            (Phase::Open, _) => {}
            (Phase::ShutdownSent, Kind::Credit) => {}
            (Phase::ShutdownSent, _) => return turn("Shutdown was sent"),
            (Phase::Done | Phase::SetupFailed, _) => return turn("the session is over"),
        }
        if let Some(a) = &self.agreed {
            let mut f = kind.feature();
            if matches!(msg, Message::ProcStart { pty: Some(_), .. }) {
                f |= FEATURE_PTY;
            }
            if f & a.features != f {
                return Err(Misuse::FeatureNotNegotiated { kind, feature: f });
            }
        }
        self.check_send(msg)?;
        let start = out.len();
        frame::encode(msg, out).map_err(|source| Misuse::Encode { kind, source })?;
        if let Err(e) = self.apply_send(msg) {
            out.truncate(start);
            return Err(e);
        }
        Ok(())
    }

    /// The drained-bytes report of the host's consumer for an agent→host
    /// stream: appends a Credit frame to `out` when half the window has
    /// been drained. Bytes of a stream that has already ended are ignored.
    pub fn consumed(
        &mut self,
        id: u32,
        stream: StreamKind,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Misuse> {
        if self.poisoned {
            return Err(Misuse::Poisoned);
        }
        let kind = Kind::Credit;
        let w = match (self.objects.get_mut(&id), stream) {
            (Some(Obj::Proc(p)), StreamKind::Stdout) => p.stdout.as_mut(),
            (Some(Obj::Proc(p)), StreamKind::Stderr) => p.stderr.as_mut(),
            (Some(Obj::File(f)), StreamKind::File) => f.download.as_mut(),
            (Some(Obj::Tcp(t)), StreamKind::Tcp) if !t.got_close && !t.got_shut => {
                Some(&mut t.recv)
            }
            _ => None,
        };
        let Some(w) = w else { return Ok(()) };
        let before = *w;
        let grant = w.consume(len).map_err(|source| Misuse::Flow {
            kind,
            id,
            stream,
            source,
        })?;
        if let Some(bytes) = grant {
            let m = Message::Credit { id, stream, bytes };
            if let Err(source) = frame::encode(&m, out) {
                *w = before;
                return Err(Misuse::Encode { kind, source });
            }
        }
        Ok(())
    }

    fn new_id(&self, kind: Kind, id: u32) -> Result<(), Misuse> {
        if id <= self.last_host_id {
            return Err(Misuse::IdNotIncreasing {
                kind,
                id,
                last: self.last_host_id,
            });
        }
        Ok(())
    }

    fn sobj(&self, kind: Kind, id: u32) -> Result<&Obj, Misuse> {
        self.objects.get(&id).ok_or(Misuse::UnknownId { kind, id })
    }

    /// Everything [`HostSession::send`] may refuse, without changing state.
    fn check_send(&self, msg: &Message) -> Result<(), Misuse> {
        let kind = msg.kind();
        let id = msg.id();
        let wrong = |o: &Obj| Misuse::WrongObject {
            kind,
            id,
            what: o.what(),
        };
        let closed = |stream| Misuse::StreamClosed { kind, id, stream };
        let flow = |stream| {
            move |source| Misuse::Flow {
                kind,
                id,
                stream,
                source,
            }
        };
        match msg {
            Message::Hello { .. } | Message::Shutdown => {}
            Message::Plan { .. } => {
                if self.plan != PlanState::NotSent {
                    return Err(Misuse::OutOfTurn {
                        kind,
                        reason: "one Plan per session",
                    });
                }
            }
            Message::Ping { .. } => {
                if self.pings.len() >= self.cfg.max_pings {
                    return Err(Misuse::TooManyPings {
                        max: self.cfg.max_pings,
                    });
                }
            }
            Message::Credit { stream, bytes, .. } => {
                let w = match (self.sobj(kind, id)?, stream) {
                    (Obj::Proc(p), StreamKind::Stdout) => p.stdout.as_ref(),
                    (Obj::Proc(p), StreamKind::Stderr) => p.stderr.as_ref(),
                    (Obj::File(f), StreamKind::File) => f.download.as_ref(),
                    (Obj::Tcp(t), StreamKind::Tcp) if t.phase == TcpPhase::Open => Some(&t.recv),
                    _ => None,
                };
                let mut w = *w.ok_or(closed(*stream))?;
                w.grant(*bytes).map_err(flow(*stream))?;
            }
            Message::ProcStart { .. }
            | Message::ProcList { .. }
            | Message::FileRead { .. }
            | Message::FileWrite { .. }
            | Message::FileStat { .. }
            | Message::FileList { .. }
            | Message::FileMkdir { .. }
            | Message::FileRemove { .. }
            | Message::FileRename { .. }
            | Message::FileChmod { .. }
            | Message::TarOut { .. }
            | Message::TarIn { .. }
            | Message::TcpConnect { .. } => self.new_id(kind, id)?,
            Message::ProcStdin { data, .. } => match self.sobj(kind, id)? {
                Obj::Proc(p) => match &p.stdin {
                    Stdin::Open(c) => {
                        let mut c = *c;
                        c.consume(data.len()).map_err(flow(StreamKind::Stdin))?;
                    }
                    _ => return Err(closed(StreamKind::Stdin)),
                },
                o => return Err(wrong(o)),
            },
            Message::ProcCloseStdin { .. } => match self.sobj(kind, id)? {
                Obj::Proc(p) if matches!(p.stdin, Stdin::Open(_)) => {}
                Obj::Proc(_) => return Err(closed(StreamKind::Stdin)),
                o => return Err(wrong(o)),
            },
            Message::ProcSignal { .. } => match self.sobj(kind, id)? {
                Obj::Proc(_) => {}
                o => return Err(wrong(o)),
            },
            Message::ProcResize { .. } => match self.sobj(kind, id)? {
                Obj::Proc(p) if p.pty => {}
                Obj::Proc(_) => {
                    return Err(Misuse::WrongObject {
                        kind,
                        id,
                        what: "a process without a pty",
                    })
                }
                o => return Err(wrong(o)),
            },
            Message::FileData { data, .. } => match self.sobj(kind, id)? {
                Obj::File(f) => match f.upload {
                    Some(mut c) => c.consume(data.len()).map_err(flow(StreamKind::File))?,
                    None => return Err(closed(StreamKind::File)),
                },
                o => return Err(wrong(o)),
            },
            Message::FileEnd { .. } => match self.sobj(kind, id)? {
                Obj::File(f) if f.upload.is_some() => {}
                Obj::File(_) => return Err(closed(StreamKind::File)),
                o => return Err(wrong(o)),
            },
            Message::FileCancel { .. } => match self.sobj(kind, id)? {
                Obj::File(f) if !f.cancelled => {}
                Obj::File(_) => {
                    return Err(Misuse::OutOfTurn {
                        kind,
                        reason: "already cancelled",
                    })
                }
                o => return Err(wrong(o)),
            },
            Message::TcpData { data, .. } => match self.sobj(kind, id)? {
                Obj::Tcp(t)
                    if t.phase == TcpPhase::Open
                        && !t.sent_shut
                        && !t.sent_close
                        && !t.got_close =>
                {
                    let mut c = t.send;
                    c.consume(data.len()).map_err(flow(StreamKind::Tcp))?;
                }
                Obj::Tcp(_) => return Err(closed(StreamKind::Tcp)),
                o => return Err(wrong(o)),
            },
            Message::TcpShutdownWrite { .. } => match self.sobj(kind, id)? {
                Obj::Tcp(t) if t.phase == TcpPhase::Open && !t.sent_shut && !t.sent_close => {}
                Obj::Tcp(_) => return Err(closed(StreamKind::Tcp)),
                o => return Err(wrong(o)),
            },
            Message::TcpClose { .. } => match self.sobj(kind, id)? {
                Obj::Tcp(t) if t.phase == TcpPhase::Open && !t.sent_close => {}
                Obj::Tcp(_) => return Err(closed(StreamKind::Tcp)),
                o => return Err(wrong(o)),
            },
            Message::TcpAccept { .. } | Message::TcpRefuse { .. } => match self.sobj(kind, id)? {
                Obj::Tcp(t) if t.phase == TcpPhase::Offered => {}
                Obj::Tcp(_) => {
                    return Err(Misuse::OutOfTurn {
                        kind,
                        reason: "the offer was already answered",
                    })
                }
                o => return Err(wrong(o)),
            },
            _ => return Err(Misuse::WrongDirection { kind }),
        }
        Ok(())
    }

    /// Records the effect of a message [`HostSession::check_send`] passed.
    fn apply_send(&mut self, msg: &Message) -> Result<(), Misuse> {
        let kind = msg.kind();
        let id = msg.id();
        let (hw, aw) = self
            .agreed
            .as_ref()
            .map_or((self.cfg.window, 0), |a| (a.host_window, a.agent_window));
        let flow = |stream| {
            move |source| Misuse::Flow {
                kind,
                id,
                stream,
                source,
            }
        };
        let new = |obj: Obj, this: &mut HostSession| {
            this.last_host_id = id;
            this.objects.insert(id, obj);
        };
        let file = |op: FileOp| {
            Obj::File(File {
                op,
                upload: matches!(op, FileOp::Write | FileOp::TarIn).then(|| SendCredit::new(aw)),
                download: matches!(op, FileOp::Read | FileOp::TarOut | FileOp::List)
                    .then(|| RecvWindow::new(hw)),
                cancelled: false,
            })
        };
        match msg {
            Message::Hello {
                min_version,
                max_version,
                features,
                window,
            } => {
                self.offered = (*min_version, *max_version, *features, *window);
                self.phase = Phase::HelloSent;
            }
            Message::Plan { .. } => self.plan = PlanState::Pending,
            Message::Ping { nonce } => self.pings.push_back(*nonce),
            Message::Shutdown => self.phase = Phase::ShutdownSent,
            Message::Credit { stream, bytes, .. } => {
                let w = match (self.objects.get_mut(&id), stream) {
                    (Some(Obj::Proc(p)), StreamKind::Stdout) => p.stdout.as_mut(),
                    (Some(Obj::Proc(p)), StreamKind::Stderr) => p.stderr.as_mut(),
                    (Some(Obj::File(f)), StreamKind::File) => f.download.as_mut(),
                    (Some(Obj::Tcp(t)), StreamKind::Tcp) => Some(&mut t.recv),
                    _ => None,
                };
                if let Some(w) = w {
                    w.grant(*bytes).map_err(flow(*stream))?;
                }
            }
            Message::ProcStart { pty, stdin, .. } => new(
                Obj::Proc(Proc {
                    started: false,
                    pty: pty.is_some(),
                    stdin: match stdin {
                        StdinMode::Null => Stdin::Null,
                        StdinMode::Pipe => Stdin::Open(SendCredit::new(aw)),
                    },
                    stdout: Some(RecvWindow::new(hw)),
                    stderr: pty.is_none().then(|| RecvWindow::new(hw)),
                }),
                self,
            ),
            Message::ProcList { .. } => new(Obj::ProcList, self),
            Message::FileRead { .. } => new(file(FileOp::Read), self),
            Message::FileWrite { .. } => new(file(FileOp::Write), self),
            Message::FileStat { .. } => new(file(FileOp::Stat), self),
            Message::FileList { .. } => new(file(FileOp::List), self),
            Message::FileMkdir { .. }
            | Message::FileRemove { .. }
            | Message::FileRename { .. }
            | Message::FileChmod { .. } => new(file(FileOp::Other), self),
            Message::TarOut { .. } => new(file(FileOp::TarOut), self),
            Message::TarIn { .. } => new(file(FileOp::TarIn), self),
            Message::TcpConnect { .. } => new(
                Obj::Tcp(Tcp {
                    phase: TcpPhase::Connecting,
                    send: SendCredit::new(aw),
                    recv: RecvWindow::new(hw),
                    sent_shut: false,
                    got_shut: false,
                    sent_close: false,
                    got_close: false,
                }),
                self,
            ),
            Message::ProcStdin { data, .. } => {
                if let Some(Obj::Proc(Proc {
                    stdin: Stdin::Open(c),
                    ..
                })) = self.objects.get_mut(&id)
                {
                    c.consume(data.len()).map_err(flow(StreamKind::Stdin))?;
                }
            }
            Message::ProcCloseStdin { .. } => {
                if let Some(Obj::Proc(p)) = self.objects.get_mut(&id) {
                    p.stdin = Stdin::Closed;
                }
            }
            Message::FileData { data, .. } => {
                if let Some(Obj::File(File {
                    upload: Some(c), ..
                })) = self.objects.get_mut(&id)
                {
                    c.consume(data.len()).map_err(flow(StreamKind::File))?;
                }
            }
            Message::FileEnd { .. } => {
                if let Some(Obj::File(f)) = self.objects.get_mut(&id) {
                    f.upload = None;
                }
            }
            Message::FileCancel { .. } => {
                if let Some(Obj::File(f)) = self.objects.get_mut(&id) {
                    f.cancelled = true;
                    f.upload = None;
                }
            }
            Message::TcpData { data, .. } => {
                if let Some(Obj::Tcp(t)) = self.objects.get_mut(&id) {
                    t.send.consume(data.len()).map_err(flow(StreamKind::Tcp))?;
                }
            }
            Message::TcpShutdownWrite { .. } => {
                if let Some(Obj::Tcp(t)) = self.objects.get_mut(&id) {
                    t.sent_shut = true;
                }
            }
            Message::TcpClose { .. } => {
                if let Some(Obj::Tcp(t)) = self.objects.get_mut(&id) {
                    t.sent_close = true;
                    if t.got_close {
                        self.retire(id);
                    }
                }
            }
            Message::TcpAccept { .. } => {
                if let Some(Obj::Tcp(t)) = self.objects.get_mut(&id) {
                    t.phase = TcpPhase::Open;
                    self.pending_offers -= 1;
                }
            }
            Message::TcpRefuse { .. } => self.retire(id),
            _ => {}
        }
        Ok(())
    }
}
