//! The agent's side of a session: it validates what the host sends and
//! checks what the agent sends.
//!
//! The agent trusts the host more than the host trusts the agent, but it
//! still refuses frames that break the protocol (a confused or buggy host
//! must not make it buffer without bound). One difference from
//! [`super::HostSession`]: messages the host may have sent before it saw
//! the agent finish an id (stdin for a process that just exited, credit for
//! a finished read) are dropped quietly, since host ids only grow and the
//! agent knows the id existed.

use std::collections::HashMap;

use super::error::{Misuse, Violation};
use super::flow::{RecvWindow, SendCredit};
use super::frame::{self, Frame, Reassembler, FLAG_MORE};
use super::host::Agreed;
use super::kind::{Direction, Kind, FEATURES_ALL, FEATURE_PTY};
use super::message::{Message, OutStream, StdinMode, StreamKind};
use super::{AGENT_ID_BIT, DEFAULT_WINDOW, MAX_MESSAGE, VERSION};

/// What the agent supports.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub min_version: u16,
    pub max_version: u16,
    pub features: u64,
    /// The agent's receive window for every host→agent stream.
    pub window: u32,
    pub agent_version: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            min_version: VERSION,
            max_version: VERSION,
            features: FEATURES_ALL,
            window: DEFAULT_WINDOW,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    Handshaking,
    Open,
    ShuttingDown,
    Over,
}

#[derive(Debug, Clone)]
enum In {
    None,
    Open(RecvWindow),
    Closed,
}

#[derive(Debug, Clone)]
struct Proc {
    started: bool,
    pty: bool,
    stdin: In,
    stdout: Option<SendCredit>,
    stderr: Option<SendCredit>,
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
    upload: In,
    download: Option<SendCredit>,
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

/// The agent's protocol state for one channel.
#[derive(Debug, Clone)]
pub struct AgentSession {
    cfg: AgentConfig,
    phase: Phase,
    hello: Option<(u16, u16, u64, u32)>,
    agreed: Option<Agreed>,
    plan: bool,
    plan_answered: bool,
    pings_owed: u64,
    objects: HashMap<u32, Obj>,
    last_host_id: u32,
    last_agent_id: u32,
    reasm: Reassembler,
    poisoned: bool,
}

impl AgentSession {
    pub fn new(cfg: AgentConfig) -> AgentSession {
        AgentSession {
            cfg,
            phase: Phase::AwaitHello,
            hello: None,
            agreed: None,
            plan: false,
            plan_answered: false,
            pings_owed: 0,
            objects: HashMap::new(),
            last_host_id: 0,
            last_agent_id: AGENT_ID_BIT,
            reasm: Reassembler::new(MAX_MESSAGE),
            poisoned: false,
        }
    }

    pub fn agreed(&self) -> Option<&Agreed> {
        self.agreed.as_ref()
    }

    /// Ids the session tracks.
    pub fn tracked(&self) -> usize {
        self.objects.len()
    }

    /// The id for the next TcpOffer.
    pub fn next_agent_id(&self) -> Option<u32> {
        self.last_agent_id.checked_add(1)
    }

    /// Whether Shutdown arrived (the agent should stop everything and send
    /// ShutdownDone).
    pub fn shutting_down(&self) -> bool {
        self.phase == Phase::ShuttingDown
    }

    /// The answer to the Hello received: HelloAck with the highest common
    /// version and the common features, or SetupFailed (stage Handshake)
    /// when the version ranges do not meet. `None` before Hello.
    pub fn hello_reply(&self) -> Option<Message> {
        let (min, max, features, _) = self.hello?;
        let lo = min.max(self.cfg.min_version);
        let hi = max.min(self.cfg.max_version);
        Some(if lo <= hi {
            Message::HelloAck {
                version: hi,
                features: features & self.cfg.features,
                window: self.cfg.window,
                agent_version: self.cfg.agent_version.clone(),
            }
        } else {
            Message::SetupFailed {
                stage: super::message::Stage::Handshake,
                errno: libc::EPROTONOSUPPORT,
                detail: format!(
                    "host speaks protocol {min}..={max}, agent {}..={}",
                    self.cfg.min_version, self.cfg.max_version
                ),
            }
        })
    }

    /// Credit the agent holds to send on `(id, stream)`.
    pub fn send_credit(&self, id: u32, stream: StreamKind) -> Option<u32> {
        match (self.objects.get(&id)?, stream) {
            (Obj::Proc(p), StreamKind::Stdout) => p.stdout.map(|c| c.available()),
            (Obj::Proc(p), StreamKind::Stderr) => p.stderr.map(|c| c.available()),
            (Obj::File(f), StreamKind::File) => f.download.map(|c| c.available()),
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

    /// Feeds one frame from the host: the message it completes if it is
    /// valid now, `None` for a non-final fragment or a stale message.
    pub fn on_frame(&mut self, frame: Frame<'_>) -> Result<Option<Message>, Violation> {
        if self.poisoned {
            return Err(Violation::Poisoned);
        }
        let r = self.on_frame_inner(frame);
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    fn on_frame_inner(&mut self, frame: Frame<'_>) -> Result<Option<Message>, Violation> {
        let kind = frame.kind;
        if kind.direction() == Direction::AgentToHost {
            return Err(Violation::WrongDirection { kind });
        }
        match (self.phase, kind) {
            (Phase::AwaitHello, Kind::Hello) => {}
            (Phase::AwaitHello | Phase::Handshaking, _) => {
                return Err(Violation::BeforeHandshake { kind })
            }
            (Phase::Open, Kind::Hello) => return Err(Violation::Unsolicited { kind, id: 0 }),
            (Phase::ShuttingDown, Kind::Credit) | (Phase::Open, _) => {}
            (Phase::ShuttingDown | Phase::Over, _) => return Err(Violation::SessionOver { kind }),
        }
        if let Some(a) = &self.agreed {
            let f = kind.feature();
            if f & a.features != f {
                return Err(Violation::FeatureNotNegotiated { kind, feature: f });
            }
        }
        // A fragmented message is buffered only if it can be accepted once
        // whole: one Plan, or a ProcStart with a new id.
        if frame.flags == FLAG_MORE {
            match kind {
                Kind::Plan if self.plan => return Err(Violation::Duplicate { kind, id: 0 }),
                Kind::ProcStart if frame.id <= self.last_host_id => {
                    return Err(Violation::IdOrder {
                        id: frame.id,
                        last: self.last_host_id,
                    })
                }
                _ => {}
            }
        }
        let Some(msg) = self.reasm.push(frame)? else {
            return Ok(None);
        };
        Ok(self.check(&msg)?.then_some(msg))
    }

    /// `Ok(false)`: the id is finished, the message was sent before the
    /// host knew; `Err`: it was never opened.
    fn stale(&self, kind: Kind, id: u32) -> Result<bool, Violation> {
        let seen = if id & AGENT_ID_BIT != 0 {
            id <= self.last_agent_id
        } else {
            id <= self.last_host_id
        };
        if seen {
            Ok(false)
        } else {
            Err(Violation::UnknownId { kind, id })
        }
    }

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
        let wrong = |o: &Obj| Violation::WrongObject {
            kind,
            id,
            what: o.what(),
        };
        let aw = self.cfg.window;
        let hw = self.hello.map_or(DEFAULT_WINDOW, |h| h.3);
        let file = |op: FileOp| {
            Obj::File(File {
                op,
                upload: if matches!(op, FileOp::Write | FileOp::TarIn) {
                    In::Open(RecvWindow::new(aw))
                } else {
                    In::None
                },
                download: matches!(op, FileOp::Read | FileOp::TarOut | FileOp::List)
                    .then(|| SendCredit::new(hw)),
            })
        };
        // Requests that open an id.
        let opened = match msg {
            Message::ProcStart { pty, stdin, .. } => {
                if pty.is_some() {
                    let f = self.agreed.as_ref().map_or(0, |a| a.features);
                    if f & FEATURE_PTY == 0 {
                        return Err(Violation::FeatureNotNegotiated {
                            kind,
                            feature: FEATURE_PTY,
                        });
                    }
                }
                Some(Obj::Proc(Proc {
                    started: false,
                    pty: pty.is_some(),
                    stdin: match stdin {
                        StdinMode::Null => In::None,
                        StdinMode::Pipe => In::Open(RecvWindow::new(aw)),
                    },
                    stdout: Some(SendCredit::new(hw)),
                    stderr: pty.is_none().then(|| SendCredit::new(hw)),
                }))
            }
            Message::ProcList { .. } => Some(Obj::ProcList),
            Message::FileRead { .. } => Some(file(FileOp::Read)),
            Message::FileWrite { .. } => Some(file(FileOp::Write)),
            Message::FileStat { .. } => Some(file(FileOp::Stat)),
            Message::FileList { .. } => Some(file(FileOp::List)),
            Message::FileMkdir { .. }
            | Message::FileRemove { .. }
            | Message::FileRename { .. }
            | Message::FileChmod { .. } => Some(file(FileOp::Other)),
            Message::TarOut { .. } => Some(file(FileOp::TarOut)),
            Message::TarIn { .. } => Some(file(FileOp::TarIn)),
            Message::TcpConnect { .. } => Some(Obj::Tcp(Tcp {
                phase: TcpPhase::Connecting,
                send: SendCredit::new(hw),
                recv: RecvWindow::new(aw),
                sent_shut: false,
                got_shut: false,
                sent_close: false,
                got_close: false,
            })),
            _ => None,
        };
        if let Some(obj) = opened {
            if id <= self.last_host_id {
                return Err(Violation::IdOrder {
                    id,
                    last: self.last_host_id,
                });
            }
            self.last_host_id = id;
            self.objects.insert(id, obj);
            return Ok(true);
        }
        match msg {
            Message::Hello {
                min_version,
                max_version,
                features,
                window,
            } => {
                self.hello = Some((*min_version, *max_version, *features, *window));
                self.phase = Phase::Handshaking;
                return Ok(true);
            }
            Message::Plan { .. } => {
                if self.plan {
                    return Err(Violation::Duplicate { kind, id });
                }
                self.plan = true;
                return Ok(true);
            }
            Message::Ping { .. } => {
                self.pings_owed += 1;
                return Ok(true);
            }
            Message::Shutdown => {
                self.phase = Phase::ShuttingDown;
                return Ok(true);
            }
            _ => {}
        }
        let Some(obj) = self.objects.get_mut(&id) else {
            return self.stale(kind, id);
        };
        match (msg, obj) {
            (Message::Credit { stream, bytes, .. }, obj) => {
                let c = match (obj, stream) {
                    (Obj::Proc(p), StreamKind::Stdout) => p.stdout.as_mut(),
                    (Obj::Proc(p), StreamKind::Stderr) if !p.pty => p.stderr.as_mut(),
                    (Obj::File(f), StreamKind::File) if f.op_downloads() => f.download.as_mut(),
                    (Obj::Tcp(t), StreamKind::Tcp) if t.phase == TcpPhase::Open => {
                        (!t.sent_shut && !t.sent_close).then_some(&mut t.send)
                    }
                    _ => {
                        return Err(Violation::NoSuchStream {
                            kind,
                            id,
                            stream: *stream,
                        })
                    }
                };
                match c {
                    Some(c) => c.grant(*bytes).map_err(flow(*stream))?,
                    None => return Ok(false),
                }
            }
            (Message::ProcStdin { data, .. }, Obj::Proc(p)) => match &mut p.stdin {
                In::None => {
                    return Err(Violation::NoSuchStream {
                        kind,
                        id,
                        stream: StreamKind::Stdin,
                    })
                }
                In::Closed => {
                    return Err(Violation::AfterEnd {
                        kind,
                        id,
                        stream: StreamKind::Stdin,
                    })
                }
                In::Open(w) => w.on_data(data.len()).map_err(flow(StreamKind::Stdin))?,
            },
            (Message::ProcCloseStdin { .. }, Obj::Proc(p)) => match p.stdin {
                In::Open(_) => p.stdin = In::Closed,
                _ => {
                    return Err(Violation::AfterEnd {
                        kind,
                        id,
                        stream: StreamKind::Stdin,
                    })
                }
            },
            (Message::ProcSignal { .. }, Obj::Proc(_)) => {}
            (Message::ProcResize { .. }, Obj::Proc(p)) => {
                if !p.pty {
                    return Err(Violation::WrongObject {
                        kind,
                        id,
                        what: "a process without a pty",
                    });
                }
            }
            (Message::FileData { data, .. }, Obj::File(f)) => match &mut f.upload {
                In::None => {
                    return Err(Violation::WrongObject {
                        kind,
                        id,
                        what: "a request without an upload",
                    })
                }
                In::Closed => {
                    return Err(Violation::AfterEnd {
                        kind,
                        id,
                        stream: StreamKind::File,
                    })
                }
                In::Open(w) => w.on_data(data.len()).map_err(flow(StreamKind::File))?,
            },
            (Message::FileEnd { .. }, Obj::File(f)) => match f.upload {
                In::Open(_) => f.upload = In::Closed,
                _ => return Err(Violation::Duplicate { kind, id }),
            },
            (Message::FileCancel { .. }, Obj::File(f)) => {
                if matches!(f.upload, In::Open(_)) {
                    f.upload = In::Closed;
                }
            }
            (Message::TcpData { data, .. }, Obj::Tcp(t)) => {
                t.check_open(kind, id)?;
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
            (Message::TcpShutdownWrite { .. }, Obj::Tcp(t)) => {
                t.check_open(kind, id)?;
                if t.got_shut {
                    return Err(Violation::Duplicate { kind, id });
                }
                t.got_shut = true;
            }
            (Message::TcpClose { .. }, Obj::Tcp(t)) => {
                t.check_open(kind, id)?;
                t.got_close = true;
                if t.sent_close {
                    self.objects.remove(&id);
                }
            }
            (Message::TcpAccept { .. }, Obj::Tcp(t)) => {
                if t.phase != TcpPhase::Offered {
                    return Err(Violation::Duplicate { kind, id });
                }
                t.phase = TcpPhase::Open;
            }
            (Message::TcpRefuse { .. }, Obj::Tcp(t)) => {
                if t.phase != TcpPhase::Offered {
                    return Err(Violation::Duplicate { kind, id });
                }
                self.objects.remove(&id);
            }
            (_, obj) => return Err(wrong(obj)),
        }
        Ok(true)
    }

    // ------------------------------------------------------------------
    // Sending.

    /// Checks that the agent may send `msg` now, appends its frames to
    /// `out` and records its effect. On error nothing changes.
    pub fn send(&mut self, msg: &Message, out: &mut Vec<u8>) -> Result<(), Misuse> {
        if self.poisoned {
            return Err(Misuse::Poisoned);
        }
        let kind = msg.kind();
        if kind.direction() == Direction::HostToAgent {
            return Err(Misuse::WrongDirection { kind });
        }
        let turn = |reason| Err(Misuse::OutOfTurn { kind, reason });
        match (self.phase, kind) {
            (Phase::AwaitHello, _) => return turn("no Hello yet"),
            (Phase::Handshaking, Kind::HelloAck | Kind::SetupFailed) => {}
            (Phase::Handshaking, _) => return turn("answer Hello first"),
            (Phase::Open | Phase::ShuttingDown, Kind::HelloAck) => {
                return turn("HelloAck was already sent")
            }
            (Phase::Open | Phase::ShuttingDown, _) => {}
            (Phase::Over, _) => return turn("the session is over"),
        }
        if let Some(a) = &self.agreed {
            let f = kind.feature();
            if f & a.features != f {
                return Err(Misuse::FeatureNotNegotiated { kind, feature: f });
            }
        }
        // Encode first (it checks every field), then record the effect;
        // apply_send changes nothing when it refuses.
        let start = out.len();
        frame::encode(msg, out).map_err(|source| Misuse::Encode { kind, source })?;
        if let Err(e) = self.apply_send(msg) {
            out.truncate(start);
            return Err(e);
        }
        Ok(())
    }

    /// The agent's consumer drained `len` bytes of a host→agent stream:
    /// appends a Credit frame to `out` when due.
    pub fn consumed(
        &mut self,
        id: u32,
        stream: StreamKind,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Misuse> {
        let kind = Kind::Credit;
        let w = match (self.objects.get_mut(&id), stream) {
            (Some(Obj::Proc(p)), StreamKind::Stdin) => match &mut p.stdin {
                In::Open(w) => Some(w),
                _ => None,
            },
            (Some(Obj::File(f)), StreamKind::File) => match &mut f.upload {
                In::Open(w) => Some(w),
                _ => None,
            },
            (Some(Obj::Tcp(t)), StreamKind::Tcp) if !t.got_shut && !t.got_close => {
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
            if let Err(source) = frame::encode(&Message::Credit { id, stream, bytes }, out) {
                *w = before;
                return Err(Misuse::Encode { kind, source });
            }
        }
        Ok(())
    }

    fn apply_send(&mut self, msg: &Message) -> Result<(), Misuse> {
        let kind = msg.kind();
        let id = msg.id();
        let flow = |stream| {
            move |source| Misuse::Flow {
                kind,
                id,
                stream,
                source,
            }
        };
        let turn = |reason| Misuse::OutOfTurn { kind, reason };
        let closed = |stream| Misuse::StreamClosed { kind, id, stream };
        match msg {
            Message::HelloAck {
                version,
                features,
                window,
                agent_version,
            } => {
                let (min, max, offered, host_window) = self.hello.ok_or(turn("no Hello"))?;
                if !(min..=max).contains(version)
                    || !(self.cfg.min_version..=self.cfg.max_version).contains(version)
                {
                    return Err(turn("version outside both ranges"));
                }
                if features & !(offered & self.cfg.features) != 0 {
                    return Err(turn("features not offered by both sides"));
                }
                self.agreed = Some(Agreed {
                    version: *version,
                    features: *features,
                    host_window,
                    agent_window: *window,
                    agent_version: agent_version.clone(),
                });
                self.cfg.window = *window;
                self.phase = Phase::Open;
            }
            Message::SetupFailed { .. } => {
                if self.phase == Phase::Handshaking || (self.plan && !self.plan_answered) {
                    self.phase = Phase::Over;
                } else {
                    return Err(turn("nothing is being set up"));
                }
            }
            Message::Ready => {
                if !self.plan || self.plan_answered {
                    return Err(turn("no Plan to answer"));
                }
                self.plan_answered = true;
            }
            Message::Notice { .. } => {
                if !self.plan || self.plan_answered {
                    return Err(turn("notices come while the plan is applied"));
                }
            }
            Message::Pong { .. } => {
                if self.pings_owed == 0 {
                    return Err(turn("no Ping to answer"));
                }
                self.pings_owed -= 1;
            }
            Message::ShutdownDone => {
                if self.phase != Phase::ShuttingDown {
                    return Err(turn("no Shutdown to answer"));
                }
                self.phase = Phase::Over;
            }
            Message::TcpOffer { .. } => {
                if id <= self.last_agent_id {
                    return Err(Misuse::IdNotIncreasing {
                        kind,
                        id,
                        last: self.last_agent_id,
                    });
                }
                let a = self.agreed.as_ref().ok_or(turn("no handshake"))?;
                self.objects.insert(
                    id,
                    Obj::Tcp(Tcp {
                        phase: TcpPhase::Offered,
                        send: SendCredit::new(a.host_window),
                        recv: RecvWindow::new(a.agent_window),
                        sent_shut: false,
                        got_shut: false,
                        sent_close: false,
                        got_close: false,
                    }),
                );
                self.last_agent_id = id;
            }
            Message::ProcListResult { procs, .. } => {
                match self.objects.remove(&id) {
                    Some(Obj::ProcList) => {}
                    Some(o) => {
                        let what = o.what();
                        self.objects.insert(id, o);
                        return Err(Misuse::WrongObject { kind, id, what });
                    }
                    None => return Err(Misuse::UnknownId { kind, id }),
                }
                let (hw, aw) = self
                    .agreed
                    .as_ref()
                    .map_or((0, 0), |a| (a.host_window, a.agent_window));
                for p in procs {
                    self.objects.entry(p.id).or_insert_with(|| {
                        Obj::Proc(Proc {
                            started: true,
                            pty: p.pty,
                            stdin: if p.stdin_open {
                                In::Open(RecvWindow::new(aw))
                            } else {
                                In::Closed
                            },
                            stdout: p.stdout_open.then(|| SendCredit::new(hw)),
                            stderr: (p.stderr_open && !p.pty).then(|| SendCredit::new(hw)),
                        })
                    });
                }
            }
            _ => {
                let obj = self
                    .objects
                    .get_mut(&id)
                    .ok_or(Misuse::UnknownId { kind, id })?;
                let wrong = Misuse::WrongObject {
                    kind,
                    id,
                    what: obj.what(),
                };
                let mut retire = false;
                match (msg, obj) {
                    (Message::Credit { stream, bytes, .. }, obj) => {
                        let w = match (obj, stream) {
                            (Obj::Proc(p), StreamKind::Stdin) => match &mut p.stdin {
                                In::Open(w) => Some(w),
                                _ => None,
                            },
                            (Obj::File(f), StreamKind::File) => match &mut f.upload {
                                In::Open(w) => Some(w),
                                _ => None,
                            },
                            (Obj::Tcp(t), StreamKind::Tcp) if t.phase == TcpPhase::Open => {
                                Some(&mut t.recv)
                            }
                            _ => None,
                        };
                        w.ok_or(closed(*stream))?
                            .grant(*bytes)
                            .map_err(flow(*stream))?;
                    }
                    (Message::ProcStarted { .. }, Obj::Proc(p)) if !p.started => p.started = true,
                    (Message::ProcStartFailed { .. }, Obj::Proc(p)) if !p.started => retire = true,
                    (Message::ProcOutput { stream, data, .. }, Obj::Proc(p)) if p.started => {
                        let c = match stream {
                            OutStream::Stdout => p.stdout.as_mut(),
                            OutStream::Stderr => p.stderr.as_mut(),
                        };
                        c.ok_or(closed(stream.stream()))?
                            .consume(data.len())
                            .map_err(flow(stream.stream()))?;
                    }
                    (Message::ProcEof { stream, .. }, Obj::Proc(p)) if p.started => {
                        let c = match stream {
                            OutStream::Stdout => &mut p.stdout,
                            OutStream::Stderr => &mut p.stderr,
                        };
                        c.take().ok_or(closed(stream.stream()))?;
                    }
                    (Message::ProcExited { .. }, Obj::Proc(p)) if p.started => retire = true,
                    (Message::FileData { data, .. }, Obj::File(f))
                        if matches!(f.op, FileOp::Read | FileOp::TarOut) =>
                    {
                        f.download
                            .as_mut()
                            .ok_or(closed(StreamKind::File))?
                            .consume(data.len())
                            .map_err(flow(StreamKind::File))?;
                    }
                    (Message::FileEntries { .. }, Obj::File(f)) if f.op == FileOp::List => {
                        f.download
                            .as_mut()
                            .ok_or(closed(StreamKind::File))?
                            .consume(msg.credit_cost())
                            .map_err(flow(StreamKind::File))?;
                    }
                    (Message::FileDone { result, .. }, Obj::File(f))
                        if f.op != FileOp::Stat || result.is_err() =>
                    {
                        retire = true
                    }
                    (Message::FileStatResult { .. }, Obj::File(f)) if f.op == FileOp::Stat => {
                        retire = true
                    }
                    (Message::TcpOpened { .. }, Obj::Tcp(t)) if t.phase == TcpPhase::Connecting => {
                        t.phase = TcpPhase::Open
                    }
                    (Message::TcpFailed { .. }, Obj::Tcp(t)) if t.phase == TcpPhase::Connecting => {
                        retire = true
                    }
                    (Message::TcpData { data, .. }, Obj::Tcp(t))
                        if t.phase == TcpPhase::Open
                            && !t.sent_shut
                            && !t.sent_close
                            && !t.got_close =>
                    {
                        t.send.consume(data.len()).map_err(flow(StreamKind::Tcp))?;
                    }
                    (Message::TcpShutdownWrite { .. }, Obj::Tcp(t))
                        if t.phase == TcpPhase::Open && !t.sent_shut && !t.sent_close =>
                    {
                        t.sent_shut = true
                    }
                    (Message::TcpClose { .. }, Obj::Tcp(t))
                        if t.phase == TcpPhase::Open && !t.sent_close =>
                    {
                        t.sent_close = true;
                        retire = t.got_close;
                    }
                    _ => return Err(wrong),
                }
                if retire {
                    self.objects.remove(&id);
                }
            }
        }
        Ok(())
    }
}

impl File {
    fn op_downloads(&self) -> bool {
        matches!(self.op, FileOp::Read | FileOp::TarOut | FileOp::List)
    }
}

impl Tcp {
    fn check_open(&self, kind: Kind, id: u32) -> Result<(), Violation> {
        if self.phase != TcpPhase::Open {
            return Err(Violation::Inconsistent {
                kind,
                id,
                reason: "the stream is not open",
            });
        }
        if self.got_close {
            return Err(Violation::Finished { kind, id });
        }
        Ok(())
    }
}
