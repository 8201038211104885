//! One sandbox, owned by one OS thread: the thread creates the sandbox (its
//! agent's parent-death signal is tied to this thread, which lives exactly
//! as long as the sandbox), runs its event loop (the channel, the agent's
//! pidfd, and a wake-up eventfd for commands) and moves data between the
//! agent and the API's streams under flow control: output goes into
//! bounded channels and the agent gets credit back only for what entered
//! them, so a slow HTTP reader holds the process back instead of the
//! daemon's memory growing; uploads come from bounded channels and are
//! sent as the agent's credit allows.

use airlock_core::{
    CoreError, CreateOptions, Event, ExitStatus, FsError, OutStream, ProcessSpec, Sandbox,
    StreamKind, Usage, WriteFlags,
};
use airlock_protocol::v2::{DirEntry, Stat};
use airlock_spec::SandboxSpec;
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Bytes of each process's output kept for re-attach and logs.
pub const RING_BYTES: usize = 1 << 20;
/// Events buffered toward one API stream before the agent is held back.
pub const STREAM_EVENTS: usize = 32;

/// A process's event, as the API streams it.
#[derive(Debug, Clone)]
pub enum ProcEvent {
    Started {
        pid: u32,
    },
    Output {
        stream: OutStream,
        data: Vec<u8>,
    },
    Exited {
        status: ExitStatus,
    },
    StartFailed {
        stage: String,
        errno: i32,
    },
    /// A re-attached reader fell behind; this much output was skipped.
    Skipped {
        bytes: u64,
    },
}

/// A file download's pieces.
#[derive(Debug)]
pub enum FileEvent {
    Data(Vec<u8>),
    Done(Result<u64, FsError>),
}

/// A TCP stream's events (port forwarding).
#[derive(Debug)]
pub enum TcpEvent {
    Opened,
    Failed(i32),
    Data(Vec<u8>),
    /// The sandbox side will send no more.
    Shutdown,
    Closed,
}

/// What a stopped sandbox ended as.
#[derive(Debug, Clone)]
pub struct Ended {
    pub reason: String,
    pub failed: bool,
}

pub type Reply<T> = oneshot::Sender<Result<T, String>>;

/// A process's summary.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ProcInfo {
    /// The process's id in this sandbox (the API's handle).
    pub id: u32,
    /// Its pid inside the sandbox, once started.
    pub pid: Option<u32>,
    pub argv: Vec<String>,
    pub tty: bool,
    pub running: bool,
    /// Exit code, or 128+signal.
    pub exit_code: Option<i32>,
    /// Seconds since it started.
    pub age_secs: u64,
}

pub enum Cmd {
    Exec {
        spec: ProcessSpec,
        /// The primary stream (held-back output): `None` for background.
        out: Option<mpsc::Sender<ProcEvent>>,
        stdin: Option<mpsc::Receiver<Vec<u8>>>,
        reply: Reply<u32>,
    },
    Attach {
        id: u32,
        out: mpsc::Sender<ProcEvent>,
        /// Replay what the ring buffer holds first.
        replay: bool,
        reply: Reply<()>,
    },
    CloseStdin {
        id: u32,
    },
    Signal {
        id: u32,
        signo: i32,
        reply: Reply<()>,
    },
    Resize {
        id: u32,
        rows: u16,
        cols: u16,
        reply: Reply<()>,
    },
    ListProcs {
        reply: Reply<Vec<ProcInfo>>,
    },
    Logs {
        id: Option<u32>,
        reply: Reply<Vec<(u32, OutStream, Vec<u8>)>>,
    },
    Read {
        path: PathBuf,
        tar: bool,
        out: mpsc::Sender<FileEvent>,
        reply: Reply<()>,
    },
    Write {
        path: PathBuf,
        mode: u32,
        tar: bool,
        data: mpsc::Receiver<Vec<u8>>,
        reply: Reply<u64>,
    },
    Stat {
        path: PathBuf,
        follow: bool,
        reply: Reply<Stat>,
    },
    List {
        path: PathBuf,
        reply: Reply<Vec<DirEntry>>,
    },
    Mkdir {
        path: PathBuf,
        mode: u32,
        parents: bool,
        reply: Reply<()>,
    },
    Remove {
        path: PathBuf,
        recursive: bool,
        reply: Reply<u64>,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
        reply: Reply<()>,
    },
    Chmod {
        path: PathBuf,
        mode: u32,
        reply: Reply<()>,
    },
    TcpOpen {
        port: u16,
        out: mpsc::Sender<TcpEvent>,
        data: mpsc::Receiver<Vec<u8>>,
        reply: Reply<u32>,
    },
    Pause {
        reply: Reply<()>,
    },
    Resume {
        reply: Reply<()>,
    },
    Usage {
        reply: Reply<Usage>,
    },
    /// Replace the egress policy (the sandbox must have a network).
    SetNetwork {
        policy: airlock_spec::net::Policy,
        reply: Reply<()>,
    },
    Stop {
        reply: Option<Reply<()>>,
        reason: String,
    },
}

/// How the API reaches a sandbox's thread.
#[derive(Clone)]
pub struct Handle {
    tx: std::sync::mpsc::Sender<Cmd>,
    wake: Arc<OwnedFd>,
    /// The agent's pid on the host (for audit and crash recovery).
    pub agent_pid: i32,
}

impl Handle {
    /// Queues a command; false if the sandbox is gone.
    pub fn send(&self, c: Cmd) -> bool {
        let ok = self.tx.send(c).is_ok();
        self.poke();
        ok
    }

    /// Wakes the thread (a stream made room, an upload has data).
    pub fn poke(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Sends a command built around a reply channel and waits for it.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        if !self.send(make(tx)) {
            return Err("the sandbox is gone".into());
        }
        rx.await.map_err(|_| "the sandbox is gone".to_string())?
    }
}

/// Tells the service what happened (on the thread's side).
pub trait Observer: Send + Sync + 'static {
    fn exec_started(&self, sandbox: &str, id: u32, argv: &[String], user: Option<u32>);
    fn exec_ended(&self, sandbox: &str, id: u32, status: Option<ExitStatus>, secs: f64);
    fn file_written(&self, sandbox: &str, path: &str, bytes: u64);
    /// The last process ended or other activity happened (idle timer).
    fn activity(&self, sandbox: &str);
    fn ended(&self, sandbox: &str, ended: Ended);
    /// The egress proxy decided about a connection (from its thread).
    fn egress(&self, sandbox: &str, d: airlock_egress::Decision);
}

/// Creates a sandbox on a thread of its own; returns once it is Ready (or
/// failed), with the handle and the set-up notes.
pub fn spawn(
    id: String,
    spec: SandboxSpec,
    observer: Arc<dyn Observer>,
) -> Result<(Handle, Vec<String>), String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (tx, rx) = std::sync::mpsc::channel::<Cmd>();
    // SAFETY: eventfd returns a new fd or -1.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a new fd that nothing else owns.
    let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(efd) });
    let wake2 = wake.clone();
    std::thread::Builder::new()
        .name(format!("sb-{}", &id[..id.len().min(12)]))
        .stack_size(256 * 1024)
        .spawn(move || {
            let audit: airlock_egress::Audit = {
                let observer = observer.clone();
                let id = id.clone();
                Arc::new(move |d| observer.egress(&id, d))
            };
            let sb = Sandbox::create(
                &spec,
                CreateOptions {
                    accounting: true,
                    window: Some(1 << 20),
                    egress_audit: Some(audit),
                    ..Default::default()
                },
            );
            let mut sb = match sb {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(error_text(&e)));
                    return;
                }
            };
            // Wait for Ready (or the set-up's failure).
            let mut notes = sb.take_notes();
            let end = Instant::now() + Duration::from_secs(60);
            loop {
                let left = end.saturating_duration_since(Instant::now());
                match sb.wait(Some(left)) {
                    Ok(Some(Event::Ready)) => break,
                    Ok(Some(Event::Notice(n))) => notes.push(n),
                    Ok(Some(Event::SetupFailed { stage, detail, .. })) => {
                        let _ = ready_tx.send(Err(format!(
                            "sandbox setup failed at {}: {detail}",
                            stage.name()
                        )));
                        return;
                    }
                    Ok(Some(Event::AgentGone)) | Ok(None) => {
                        let _ = ready_tx.send(Err("the sandbox's agent did not start".into()));
                        return;
                    }
                    Ok(Some(_)) => {}
                    Err(e) => {
                        let _ = ready_tx.send(Err(error_text(&e)));
                        return;
                    }
                }
            }
            notes.extend(sb.take_notes());
            let handle = Handle {
                tx: tx.clone(),
                wake: wake2.clone(),
                agent_pid: sb.agent_pid(),
            };
            let _ = ready_tx.send(Ok((handle, notes)));
            drop(tx);
            let mut a = Actor {
                id,
                sb,
                rx,
                wake: wake2,
                observer,
                procs: BTreeMap::new(),
                files: BTreeMap::new(),
                tcps: BTreeMap::new(),
                pending_replies: BTreeMap::new(),
            };
            let ended = a.run();
            let id = a.id.clone();
            let observer = a.observer.clone();
            let t = a.sb.close();
            let _ = t;
            observer.ended(&id, ended);
        })
        .map_err(|e| format!("cannot start the sandbox's thread: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| "the sandbox's thread ended early".to_string())?
}

pub fn error_text(e: &CoreError) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

struct Proc {
    argv: Vec<String>,
    tty: bool,
    started: Instant,
    pid: Option<u32>,
    exit: Option<ExitStatus>,
    /// Output kept for re-attach and logs: (stream, bytes).
    ring: VecDeque<(OutStream, Vec<u8>)>,
    ring_bytes: usize,
    /// The primary stream: output waits for room in it.
    primary: Option<mpsc::Sender<ProcEvent>>,
    /// Events that did not fit the primary stream yet (their credit not
    /// yet returned).
    held: VecDeque<ProcEvent>,
    /// Re-attached readers (best effort: one that falls behind skips).
    watchers: Vec<mpsc::Sender<ProcEvent>>,
    stdin: Option<mpsc::Receiver<Vec<u8>>>,
    stdin_buf: Vec<u8>,
    stdin_closing: bool,
    uid: Option<u32>,
}

enum FileOp {
    Download {
        out: mpsc::Sender<FileEvent>,
        held: VecDeque<FileEvent>,
    },
    Upload {
        data: mpsc::Receiver<Vec<u8>>,
        buf: Vec<u8>,
        ended: bool,
        reply: Option<Reply<u64>>,
        path: PathBuf,
        sent: u64,
    },
}

struct Tcp {
    out: mpsc::Sender<TcpEvent>,
    held: VecDeque<TcpEvent>,
    data: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    ended: bool,
    shut: bool,
    reply: Option<Reply<u32>>,
}

/// Replies waiting for the agent's answer to a one-shot request.
enum Pending {
    Stat(Reply<Stat>),
    List(Reply<Vec<DirEntry>>, Vec<DirEntry>),
    Unit(Reply<()>),
    Count(Reply<u64>),
}

struct Actor {
    id: String,
    sb: Sandbox,
    rx: std::sync::mpsc::Receiver<Cmd>,
    wake: Arc<OwnedFd>,
    observer: Arc<dyn Observer>,
    procs: BTreeMap<u32, Proc>,
    files: BTreeMap<u32, FileOp>,
    tcps: BTreeMap<u32, Tcp>,
    pending_replies: BTreeMap<u32, Pending>,
}

fn status_code(s: &ExitStatus) -> i32 {
    match s {
        ExitStatus::Code(c) => *c as i32,
        ExitStatus::Signal(n) => 128 + *n as i32,
    }
}

impl Actor {
    fn run(&mut self) -> Ended {
        loop {
            // Commands first.
            loop {
                match self.rx.try_recv() {
                    Ok(c) => {
                        if let Some(end) = self.command(c) {
                            return end;
                        }
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        // Every handle is gone: nobody can reach it.
                        return Ended {
                            reason: "the service dropped it".into(),
                            failed: false,
                        };
                    }
                }
            }
            // Move what can move.
            self.pump();
            if let Err(e) = self.sb.on_writable() {
                return self.failed(&e);
            }
            // Events from the agent.
            while let Some(e) = self.sb.next_event() {
                if let Some(end) = self.event(e) {
                    return end;
                }
            }
            self.pump();
            let mut fds = vec![
                libc::pollfd {
                    fd: self.sb.fd(),
                    events: libc::POLLIN
                        | if self.sb.wants_write() {
                            libc::POLLOUT
                        } else {
                            0
                        },
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.sb.pidfd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // Held output is retried when a stream makes room (its reader
            // pokes us); a timer covers readers that went away.
            let timeout = if self.anything_held() { 20 } else { 1000 };
            self.sb.extra_fds(&mut |fd, events| {
                fds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                })
            });
            // SAFETY: a valid array of pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                continue;
            }
            for p in &fds[3..] {
                if p.revents != 0 {
                    self.sb.on_extra(p.fd, p.revents);
                }
            }
            if fds[2].revents != 0 {
                drain_eventfd(self.wake.as_raw_fd());
            }
            if fds[0].revents & libc::POLLOUT != 0 {
                if let Err(e) = self.sb.on_writable() {
                    return self.failed(&e);
                }
            }
            if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                if let Err(e) = self.sb.on_readable() {
                    return self.failed(&e);
                }
            }
            if fds[1].revents != 0 {
                self.sb.on_agent_exit();
            }
        }
    }

    fn failed(&mut self, e: &CoreError) -> Ended {
        Ended {
            reason: error_text(e),
            failed: true,
        }
    }

    fn anything_held(&self) -> bool {
        self.procs.values().any(|p| !p.held.is_empty())
            || self.files.values().any(|f| match f {
                FileOp::Download { held, .. } => !held.is_empty(),
                FileOp::Upload { .. } => false,
            })
            || self.tcps.values().any(|t| !t.held.is_empty())
    }

    fn command(&mut self, c: Cmd) -> Option<Ended> {
        self.observer.activity(&self.id);
        match c {
            Cmd::SetNetwork { policy, reply } => {
                let r = match self.sb.egress_proxy() {
                    Some(p) => {
                        p.set_policy(policy);
                        Ok(())
                    }
                    None => Err("the sandbox was created without a network (network \"none\"): its policy cannot be changed; create it with a network".to_string()),
                };
                let _ = reply.send(r);
            }
            Cmd::Exec {
                spec,
                out,
                stdin,
                reply,
            } => {
                let mut spec = spec;
                spec.stdin = stdin.is_some() || spec.pty.is_some();
                match self.sb.start(&spec) {
                    Ok(id) => {
                        self.observer.exec_started(
                            &self.id,
                            id,
                            &spec.argv,
                            spec.user.map(|u| u.uid),
                        );
                        self.procs.insert(
                            id,
                            Proc {
                                argv: spec.argv.clone(),
                                tty: spec.pty.is_some(),
                                started: Instant::now(),
                                pid: None,
                                exit: None,
                                ring: VecDeque::new(),
                                ring_bytes: 0,
                                primary: out,
                                held: VecDeque::new(),
                                watchers: Vec::new(),
                                stdin,
                                stdin_buf: Vec::new(),
                                stdin_closing: false,
                                uid: spec.user.map(|u| u.uid),
                            },
                        );
                        let _ = reply.send(Ok(id));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(error_text(&e)));
                    }
                }
            }
            Cmd::Attach {
                id,
                out,
                replay,
                reply,
            } => match self.procs.get_mut(&id) {
                Some(p) => {
                    if replay {
                        for (stream, data) in &p.ring {
                            let _ = out.try_send(ProcEvent::Output {
                                stream: *stream,
                                data: data.clone(),
                            });
                        }
                    }
                    if let Some(st) = &p.exit {
                        let _ = out.try_send(ProcEvent::Exited { status: *st });
                    } else {
                        p.watchers.push(out);
                    }
                    let _ = reply.send(Ok(()));
                }
                None => {
                    let _ = reply.send(Err(format!("no process {id}")));
                }
            },
            Cmd::CloseStdin { id } => {
                if let Some(p) = self.procs.get_mut(&id) {
                    p.stdin_closing = true;
                }
            }
            Cmd::Signal { id, signo, reply } => {
                let r = match self.procs.get(&id) {
                    Some(p) if p.exit.is_none() => {
                        self.sb.signal(id, signo).map_err(|e| error_text(&e))
                    }
                    Some(_) => Err(format!("process {id} has exited")),
                    None => Err(format!("no process {id}")),
                };
                let _ = reply.send(r);
            }
            Cmd::Resize {
                id,
                rows,
                cols,
                reply,
            } => {
                let r = match self.procs.get(&id) {
                    Some(p) if p.tty && p.exit.is_none() => {
                        self.sb.resize(id, rows, cols).map_err(|e| error_text(&e))
                    }
                    Some(_) => Err(format!("process {id} has no running terminal")),
                    None => Err(format!("no process {id}")),
                };
                let _ = reply.send(r);
            }
            Cmd::ListProcs { reply } => {
                let v = self
                    .procs
                    .iter()
                    .map(|(&id, p)| ProcInfo {
                        id,
                        pid: p.pid,
                        argv: p.argv.clone(),
                        tty: p.tty,
                        running: p.exit.is_none(),
                        exit_code: p.exit.as_ref().map(status_code),
                        age_secs: p.started.elapsed().as_secs(),
                    })
                    .collect();
                let _ = reply.send(Ok(v));
            }
            Cmd::Logs { id, reply } => {
                let mut v = Vec::new();
                for (&pid, p) in &self.procs {
                    if id.is_some_and(|i| i != pid) {
                        continue;
                    }
                    for (s, d) in &p.ring {
                        v.push((pid, *s, d.clone()));
                    }
                }
                let _ = reply.send(Ok(v));
            }
            Cmd::Read {
                path,
                tar,
                out,
                reply,
            } => {
                let r = if tar {
                    self.sb.tar_out(&path)
                } else {
                    self.sb.read_file(&path, 0, u64::MAX)
                };
                match r {
                    Ok(id) => {
                        self.files.insert(
                            id,
                            FileOp::Download {
                                out,
                                held: VecDeque::new(),
                            },
                        );
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(error_text(&e)));
                    }
                }
            }
            Cmd::Write {
                path,
                mode,
                tar,
                data,
                reply,
            } => {
                let r = if tar {
                    self.sb.tar_in(&path)
                } else {
                    self.sb.write_file(
                        &path,
                        mode,
                        WriteFlags {
                            create: true,
                            truncate: true,
                            ..Default::default()
                        },
                    )
                };
                match r {
                    Ok(id) => {
                        self.files.insert(
                            id,
                            FileOp::Upload {
                                data,
                                buf: Vec::new(),
                                ended: false,
                                reply: Some(reply),
                                path,
                                sent: 0,
                            },
                        );
                    }
                    Err(e) => {
                        let _ = reply.send(Err(error_text(&e)));
                    }
                }
            }
            Cmd::Stat {
                path,
                follow,
                reply,
            } => match self.sb.stat(&path, follow) {
                Ok(id) => {
                    self.pending_replies.insert(id, Pending::Stat(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(error_text(&e)));
                }
            },
            Cmd::List { path, reply } => match self.sb.list(&path) {
                Ok(id) => {
                    self.pending_replies
                        .insert(id, Pending::List(reply, Vec::new()));
                }
                Err(e) => {
                    let _ = reply.send(Err(error_text(&e)));
                }
            },
            Cmd::Mkdir {
                path,
                mode,
                parents,
                reply,
            } => {
                let r = self
                    .sb
                    .mkdir(&path, mode, parents)
                    .map_err(|e| error_text(&e));
                self.unit(r, reply)
            }
            Cmd::Remove {
                path,
                recursive,
                reply,
            } => match self.sb.remove(&path, recursive) {
                Ok(id) => {
                    self.pending_replies.insert(id, Pending::Count(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(error_text(&e)));
                }
            },
            Cmd::Rename { from, to, reply } => {
                let r = self.sb.rename(&from, &to).map_err(|e| error_text(&e));
                self.unit(r, reply)
            }
            Cmd::Chmod { path, mode, reply } => {
                let r = self.sb.chmod(&path, mode).map_err(|e| error_text(&e));
                self.unit(r, reply)
            }
            Cmd::TcpOpen {
                port,
                out,
                data,
                reply,
            } => match self
                .sb
                .tcp_connect(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port)
            {
                Ok(id) => {
                    self.tcps.insert(
                        id,
                        Tcp {
                            out,
                            held: VecDeque::new(),
                            data,
                            buf: Vec::new(),
                            ended: false,
                            shut: false,
                            reply: Some(reply),
                        },
                    );
                }
                Err(e) => {
                    let _ = reply.send(Err(error_text(&e)));
                }
            },
            Cmd::Pause { reply } => {
                let _ = reply.send(self.sb.pause().map_err(|e| error_text(&e)));
            }
            Cmd::Resume { reply } => {
                let _ = reply.send(self.sb.resume().map_err(|e| error_text(&e)));
            }
            Cmd::Usage { reply } => {
                let _ = reply.send(Ok(self.sb.usage()));
            }
            Cmd::Stop { reply, reason } => {
                // A frozen sandbox cannot die: thaw it first.
                let _ = self.sb.resume();
                self.sb.kill();
                if let Some(r) = reply {
                    let _ = r.send(Ok(()));
                }
                return Some(Ended {
                    reason,
                    failed: false,
                });
            }
        }
        None
    }

    fn unit(&mut self, r: Result<u32, String>, reply: Reply<()>) {
        match r {
            Ok(id) => {
                self.pending_replies.insert(id, Pending::Unit(reply));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Moves held output into streams that have room, and uploads into
    /// the agent as its credit allows.
    fn pump(&mut self) {
        // Output waiting for room.
        for (&id, p) in self.procs.iter_mut() {
            while let Some(ev) = p.held.pop_front() {
                let n = match &ev {
                    ProcEvent::Output { data, .. } => data.len(),
                    _ => 0,
                };
                let stream = match &ev {
                    ProcEvent::Output { stream, .. } => Some(*stream),
                    _ => None,
                };
                let sent = match &p.primary {
                    Some(tx) => match tx.try_send(ev) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Full(ev)) => {
                            p.held.push_front(ev);
                            false
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            // The reader left: output is kept in the ring
                            // only, and flows freely from now on.
                            p.primary = None;
                            true
                        }
                    },
                    None => true,
                };
                if !sent {
                    break;
                }
                if let (Some(s), true) = (stream, n > 0) {
                    let _ = self.sb.consumed(id, kind_of(s), n);
                }
            }
            // Stdin: what the credit allows.
            if let Some(rx) = &mut p.stdin {
                loop {
                    if p.stdin_buf.is_empty() {
                        match rx.try_recv() {
                            Ok(d) => p.stdin_buf = d,
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => {
                                p.stdin_closing = true;
                                break;
                            }
                        }
                    }
                    if p.exit.is_some() {
                        p.stdin_buf.clear();
                        continue;
                    }
                    let taken = self.sb.write_stdin(id, &p.stdin_buf).unwrap_or(0);
                    p.stdin_buf.drain(..taken);
                    if !p.stdin_buf.is_empty() {
                        break;
                    }
                }
            }
            if p.stdin_closing && p.stdin_buf.is_empty() && (p.stdin.is_some() || p.tty) {
                p.stdin = None;
                if p.exit.is_none() {
                    let _ = self.sb.close_stdin(id);
                }
                p.stdin_closing = false;
            }
        }
        // Downloads waiting for room.
        for (&id, f) in self.files.iter_mut() {
            if let FileOp::Download { out, held } = f {
                while let Some(ev) = held.pop_front() {
                    let n = match &ev {
                        FileEvent::Data(d) => d.len(),
                        FileEvent::Done(_) => 0,
                    };
                    match out.try_send(ev) {
                        Ok(()) => {
                            if n > 0 {
                                let _ = self.sb.consumed(id, StreamKind::File, n);
                            }
                        }
                        Err(mpsc::error::TrySendError::Full(ev)) => {
                            held.push_front(ev);
                            break;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            // The reader left: cancel.
                            let _ = self.sb.file_cancel(id);
                            held.clear();
                            break;
                        }
                    }
                }
            }
        }
        // Uploads.
        for (&id, f) in self.files.iter_mut() {
            if let FileOp::Upload {
                data,
                buf,
                ended,
                sent,
                ..
            } = f
            {
                if *ended {
                    continue;
                }
                loop {
                    if buf.is_empty() {
                        match data.try_recv() {
                            Ok(d) => *buf = d,
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => {
                                let _ = self.sb.file_end(id);
                                *ended = true;
                                break;
                            }
                        }
                    }
                    let taken = self.sb.file_data(id, buf).unwrap_or(0);
                    *sent += taken as u64;
                    buf.drain(..taken);
                    if !buf.is_empty() {
                        break;
                    }
                }
            }
        }
        // TCP: both ways.
        for (&id, t) in self.tcps.iter_mut() {
            while let Some(ev) = t.held.pop_front() {
                let n = match &ev {
                    TcpEvent::Data(d) => d.len(),
                    _ => 0,
                };
                match t.out.try_send(ev) {
                    Ok(()) => {
                        if n > 0 {
                            let _ = self.sb.consumed(id, StreamKind::Tcp, n);
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(ev)) => {
                        t.held.push_front(ev);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        let _ = self.sb.tcp_close(id, true);
                        t.held.clear();
                        t.ended = true;
                        break;
                    }
                }
            }
            if t.reply.is_some() || t.shut {
                continue;
            }
            loop {
                if t.buf.is_empty() {
                    match t.data.try_recv() {
                        Ok(d) => t.buf = d,
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            let _ = self.sb.tcp_shutdown(id);
                            t.shut = true;
                            break;
                        }
                    }
                }
                let taken = self.sb.tcp_send(id, &t.buf).unwrap_or(0);
                t.buf.drain(..taken);
                if !t.buf.is_empty() {
                    break;
                }
            }
        }
    }

    fn event(&mut self, e: Event) -> Option<Ended> {
        match e {
            Event::Started { id, pid } => {
                if let Some(p) = self.procs.get_mut(&id) {
                    p.pid = Some(pid);
                    p.held.push_back(ProcEvent::Started { pid });
                    p.watchers
                        .retain(|w| w.try_send(ProcEvent::Started { pid }).is_ok());
                }
            }
            Event::StartFailed { id, stage, errno } => {
                if let Some(p) = self.procs.get_mut(&id) {
                    let ev = ProcEvent::StartFailed {
                        stage: stage.name().to_string(),
                        errno,
                    };
                    p.exit = Some(ExitStatus::Code(
                        if stage == airlock_core::Stage::Exec && errno == libc::ENOENT {
                            127
                        } else {
                            126
                        },
                    ));
                    p.held.push_back(ev);
                    let argv = p.argv.clone();
                    let _ = argv;
                    self.observer.exec_ended(&self.id, id, None, 0.0);
                }
            }
            Event::Output { id, stream, data } => {
                if let Some(p) = self.procs.get_mut(&id) {
                    // The ring keeps the latest output.
                    p.ring_bytes += data.len();
                    p.ring.push_back((stream, data.clone()));
                    while p.ring_bytes > RING_BYTES {
                        match p.ring.pop_front() {
                            Some((_, d)) => p.ring_bytes -= d.len(),
                            None => break,
                        }
                    }
                    let mut skipped = Vec::new();
                    for (i, w) in p.watchers.iter().enumerate() {
                        match w.try_send(ProcEvent::Output {
                            stream,
                            data: data.clone(),
                        }) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                let _ = w.try_send(ProcEvent::Skipped {
                                    bytes: data.len() as u64,
                                });
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => skipped.push(i),
                        }
                    }
                    for i in skipped.into_iter().rev() {
                        p.watchers.remove(i);
                    }
                    if p.primary.is_some() {
                        p.held.push_back(ProcEvent::Output { stream, data });
                    } else {
                        let _ = self.sb.consumed(id, kind_of(stream), data.len());
                    }
                } else {
                    let _ = self.sb.consumed(id, kind_of(stream), data.len());
                }
            }
            Event::Eof { .. } => {}
            Event::Exited { id, status, .. } => {
                if let Some(p) = self.procs.get_mut(&id) {
                    p.exit = Some(status);
                    p.held.push_back(ProcEvent::Exited { status });
                    p.watchers
                        .retain(|w| w.try_send(ProcEvent::Exited { status }).is_ok());
                    p.watchers.clear();
                    p.stdin = None;
                    let secs = p.started.elapsed().as_secs_f64();
                    let _ = p.uid;
                    self.observer.exec_ended(&self.id, id, Some(status), secs);
                }
                // Old finished processes go once too many are kept.
                let finished: Vec<u32> = self
                    .procs
                    .iter()
                    .filter(|(_, p)| p.exit.is_some() && p.held.is_empty())
                    .map(|(&i, _)| i)
                    .collect();
                if finished.len() > 256 {
                    for i in &finished[..finished.len() - 256] {
                        self.procs.remove(i);
                    }
                }
            }
            Event::FileData { id, data } => match self.files.get_mut(&id) {
                Some(FileOp::Download { held, .. }) => held.push_back(FileEvent::Data(data)),
                _ => {
                    let _ = self.sb.consumed(id, StreamKind::File, data.len());
                }
            },
            Event::FileDone { id, result } => {
                if let Some(op) = self.files.get_mut(&id) {
                    match op {
                        FileOp::Download { held, .. } => {
                            held.push_back(FileEvent::Done(result));
                        }
                        FileOp::Upload {
                            reply, path, sent, ..
                        } => {
                            if let Ok(n) = &result {
                                self.observer.file_written(
                                    &self.id,
                                    &path.display().to_string(),
                                    *n.max(sent),
                                );
                            }
                            if let Some(r) = reply.take() {
                                let _ = r.send(result.map_err(|e| fs_text(&e)));
                            }
                            self.files.remove(&id);
                        }
                    }
                } else if let Some(p) = self.pending_replies.remove(&id) {
                    match p {
                        Pending::Stat(r) => {
                            let _ = r.send(Err(result
                                .err()
                                .map(|e| fs_text(&e))
                                .unwrap_or_else(|| "no status".into())));
                        }
                        Pending::List(r, entries) => {
                            let _ = r.send(result.map(|_| entries).map_err(|e| fs_text(&e)));
                        }
                        Pending::Unit(r) => {
                            let _ = r.send(result.map(|_| ()).map_err(|e| fs_text(&e)));
                        }
                        Pending::Count(r) => {
                            let _ = r.send(result.map_err(|e| fs_text(&e)));
                        }
                    }
                }
            }
            Event::FileStat { id, stat } => {
                if let Some(Pending::Stat(r)) = self.pending_replies.remove(&id) {
                    let _ = r.send(Ok(stat));
                }
            }
            Event::FileEntries { id, entries } => {
                if let Some(Pending::List(_, v)) = self.pending_replies.get_mut(&id) {
                    if v.len() < 100_000 {
                        v.extend(entries);
                    }
                }
            }
            Event::TcpOpened { id } => {
                if let Some(t) = self.tcps.get_mut(&id) {
                    if let Some(r) = t.reply.take() {
                        let _ = r.send(Ok(id));
                    }
                    t.held.push_back(TcpEvent::Opened);
                }
            }
            Event::TcpFailed { id, errno } => {
                if let Some(mut t) = self.tcps.remove(&id) {
                    if let Some(r) = t.reply.take() {
                        let _ = r.send(Err(std::io::Error::from_raw_os_error(errno).to_string()));
                    }
                    let _ = t.out.try_send(TcpEvent::Failed(errno));
                }
            }
            Event::TcpData { id, data } => match self.tcps.get_mut(&id) {
                Some(t) => t.held.push_back(TcpEvent::Data(data)),
                None => {
                    let _ = self.sb.consumed(id, StreamKind::Tcp, data.len());
                }
            },
            Event::TcpShutdown { id } => {
                if let Some(t) = self.tcps.get_mut(&id) {
                    t.held.push_back(TcpEvent::Shutdown);
                }
            }
            Event::TcpClosed { id, .. } => {
                if let Some(mut t) = self.tcps.remove(&id) {
                    t.held.push_back(TcpEvent::Closed);
                    // Deliver what is held, best effort, then forget it.
                    while let Some(ev) = t.held.pop_front() {
                        if t.out.try_send(ev).is_err() {
                            break;
                        }
                    }
                }
            }
            Event::AgentGone => {
                return Some(Ended {
                    reason: "the sandbox's agent exited (killed from outside, or out of memory)"
                        .into(),
                    failed: true,
                });
            }
            Event::SetupFailed { stage, detail, .. } => {
                return Some(Ended {
                    reason: format!("set-up failed at {}: {detail}", stage.name()),
                    failed: true,
                });
            }
            Event::Ready | Event::Notice(_) | Event::Pong { .. } => {}
        }
        None
    }
}

fn kind_of(s: OutStream) -> StreamKind {
    match s {
        OutStream::Stdout => StreamKind::Stdout,
        OutStream::Stderr => StreamKind::Stderr,
    }
}

pub fn fs_text(e: &FsError) -> String {
    let errno = std::io::Error::from_raw_os_error(e.errno).to_string();
    if e.text.contains(&errno) {
        e.text.clone()
    } else {
        format!("{}: {errno}", e.text)
    }
}

fn drain_eventfd(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes from our eventfd into a local.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}
