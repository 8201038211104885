//! The agent's event loop: one `poll` over the channel, a signalfd for
//! SIGCHLD, and every process, file transfer and TCP stream it serves.

use crate::files::Files;
use crate::plan::{AgentPlan, Role, FD_CHANNEL};
use crate::procs::Procs;
use crate::setup;
use crate::tcp::Tcps;
use airlock_protocol::v2::{
    self, AgentConfig, AgentSession, Channel, Message, Stage, Transport, FEATURES_ALL,
};
use airlock_sys as sys;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Why serving ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    /// The host asked (Shutdown).
    Shutdown,
    /// The host went away (the channel closed or failed).
    HostGone,
    /// The set-up failed (reported to the host).
    SetupFailed,
}

/// What one `poll` entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    Channel,
    Signals,
    Proc(u32, u8),
    File(u32),
    Tcp(u32),
    Listen(usize),
    Dns(u32),
}

/// The sending half every part of the agent uses.
pub(crate) struct Out<'a> {
    pub sess: &'a mut AgentSession,
    pub ch: &'a mut Channel,
}

impl Out<'_> {
    /// Queues a message. A refusal is the agent's own bug; the message is
    /// dropped rather than breaking the session.
    pub fn send(&mut self, m: Message) {
        let _ = self.sess.send(&m, self.ch.outbound());
    }

    pub fn credit(&self, id: u32, stream: v2::StreamKind) -> usize {
        self.sess.send_credit(id, stream).unwrap_or(0) as usize
    }

    /// The agent drained `n` bytes the host sent on `(id, stream)`.
    pub fn consumed(&mut self, id: u32, stream: v2::StreamKind, n: usize) {
        let _ = self.sess.consumed(id, stream, n, self.ch.outbound());
    }

    /// Whether more output may be queued now.
    pub fn room(&self) -> bool {
        self.ch.should_read()
    }
}

fn transport_of(fd: RawFd) -> Transport {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one int.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 && ty == libc::SOCK_SEQPACKET {
        Transport::Seqpacket
    } else {
        Transport::Stream
    }
}

/// The agent process: waits for the spawner's go, then serves the channel
/// on [`FD_CHANNEL`].
pub(crate) fn run() -> Result<(), Served> {
    sys::timing::mark("exec'd");
    // Signals the host's airlock ignored stay so across exec.
    reset_signals();
    // Our name in ps and /proc/PID/comm (exec'd from an fd, it is a number).
    // SAFETY: prctl with a valid C string.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"airlock-agent".as_ptr(), 0, 0, 0) };
    // A container's PID 1 comes back from here in its namespaces; the
    // process airlock exec'd exits in it.
    let boot = airlock_jail::spawn::agent_bootstrap();
    let transport = transport_of(FD_CHANNEL);
    match serve_with(FD_CHANNEL, transport, boot.net_ready) {
        Served::Shutdown => Ok(()),
        other => Err(other),
    }
}

pub(crate) fn reset_signals() {
    // SAFETY: sigset manipulation on locals, then resetting dispositions.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        // Every disposition but SIGPIPE's is what each command starts
        // with (our own handlers, we have none, would be reset by exec).
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // A write to a channel or pipe whose reader is gone is an error,
        // not our death.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Serves one channel until Shutdown or until the host goes away.
pub fn serve(channel: RawFd, transport: Transport) -> Served {
    serve_with(channel, transport, false)
}

fn serve_with(channel: RawFd, transport: Transport, net_ready: bool) -> Served {
    let mut ch = Channel::new(channel, transport);
    let mut sess = AgentSession::new(AgentConfig {
        features: FEATURES_ALL,
        // What the host may send ahead per stream (stdin, file writes,
        // egress downloads): 1 MiB keeps a download through the proxy
        // from stalling on credit; the agent holds at most this per
        // stream it cannot drain.
        window: 1 << 20,
        agent_version: format!("airlock-agent {}", env!("CARGO_PKG_VERSION")),
        ..AgentConfig::default()
    });
    // Blocking until the handshake and the plan are done.
    let plan = match handshake(&mut ch, &mut sess, net_ready) {
        Ok(p) => p,
        Err(s) => return s,
    };
    let _ = v2::set_nonblocking(channel, true);
    let sigfd = match signalfd() {
        Ok(f) => f,
        Err(_) => return Served::HostGone,
    };
    let mut tcps = Tcps::default();
    for &port in &plan.egress_ports {
        if let Err(e) = tcps.listen(port) {
            let _ = sess.send(
                &Message::Notice {
                    text: format!(
                        "the egress proxy's port {port} could not be opened inside the sandbox: {e}"
                    ),
                },
                ch.outbound(),
            );
        }
    }
    // Transparent egress: off the start-up path of a sandbox without a
    // network (no plan for it).
    let stub = plan
        .transparent
        .as_ref()
        .and_then(|t| match crate::transparent::Stub::start(t) {
            Ok(s) => Some(s),
            Err(e) => {
                let _ = sess.send(
                    &Message::Notice {
                        text: format!("transparent egress is off: {e}"),
                    },
                    ch.outbound(),
                );
                None
            }
        });
    let mut a = Agent {
        stub,
        procs: Procs::new(&plan),
        files: Files::new(&plan),
        tcps,
        plan,
        ch,
        sess,
        sigfd,
    };
    a.run()
}

/// Hello → HelloAck, then Plan → (set-up) → Ready. Blocking.
fn handshake(
    ch: &mut Channel,
    sess: &mut AgentSession,
    net_ready: bool,
) -> Result<AgentPlan, Served> {
    let _ = v2::set_nonblocking(ch.fd(), false);
    loop {
        let frame = match ch.recv() {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(_) => return Err(Served::HostGone),
        };
        let msg = match sess.on_frame(frame) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(_) => return Err(Served::HostGone),
        };
        match msg {
            Message::Hello { .. } => {
                let Some(reply) = sess.hello_reply() else {
                    return Err(Served::HostGone);
                };
                let failed = matches!(reply, Message::SetupFailed { .. });
                let _ = sess.send(&reply, ch.outbound());
                let _ = ch.flush();
                if failed {
                    return Err(Served::SetupFailed);
                }
            }
            Message::Plan { data } => {
                sys::timing::mark("plan");
                let plan = apply_plan(ch, sess, &data, net_ready)?;
                if plan.trace_timing {
                    let text = sys::timing::marks()
                        .iter()
                        .map(|(l, t)| format!("{}={t}", l.replace(' ', "_")))
                        .collect::<Vec<_>>()
                        .join(" ");
                    let _ = sess.send(
                        &Message::Notice {
                            text: format!("timing: {text}"),
                        },
                        ch.outbound(),
                    );
                }
                let _ = sess.send(&Message::Ready, ch.outbound());
                let _ = ch.flush();
                return Ok(plan);
            }
            _ => {
                // Anything before the plan: the host skipped it; serve
                // without isolation set-up is not something we do.
                let fail = Message::SetupFailed {
                    stage: Stage::Plan,
                    errno: libc::EPROTO,
                    detail: "the host sent requests before a plan".into(),
                };
                let _ = sess.send(&fail, ch.outbound());
                let _ = ch.flush();
                return Err(Served::SetupFailed);
            }
        }
    }
}

fn apply_plan(
    ch: &mut Channel,
    sess: &mut AgentSession,
    data: &[u8],
    net_ready: bool,
) -> Result<AgentPlan, Served> {
    let fail = |ch: &mut Channel, sess: &mut AgentSession, stage, errno, detail: String| {
        let _ = sess.send(
            &Message::SetupFailed {
                stage,
                errno,
                detail,
            },
            ch.outbound(),
        );
        let _ = ch.flush();
        Served::SetupFailed
    };
    let mut plan = match AgentPlan::from_bytes(data) {
        Ok(p) => p,
        Err(e) => {
            return Err(fail(
                ch,
                sess,
                Stage::Plan,
                libc::EINVAL,
                format!("bad plan: {e}"),
            ))
        }
    };
    let notes = match &plan.role {
        Role::Container(c) => setup::container(c, ch.fd(), net_ready),
        Role::Local => setup::local().map(|()| Vec::new()),
        Role::Guest(g) => crate::guest::setup(g, &mut plan.confinement),
        Role::Landlock => setup::landlocked(&plan.confinement).map(|()| Vec::new()),
    };
    match notes {
        Ok(notes) => {
            for text in notes {
                let _ = sess.send(&Message::Notice { text }, ch.outbound());
            }
            Ok(plan)
        }
        Err(e) => Err(fail(ch, sess, e.stage, e.errno, e.detail)),
    }
}

fn signalfd() -> std::io::Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local; signalfd returns a new fd.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = sys::cvt(libc::signalfd(
            -1,
            &set,
            libc::SFD_CLOEXEC | libc::SFD_NONBLOCK,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

pub(crate) struct Agent {
    pub plan: AgentPlan,
    pub ch: Channel,
    pub sess: AgentSession,
    pub sigfd: OwnedFd,
    pub procs: Procs,
    pub files: Files,
    pub tcps: Tcps,
    pub stub: Option<crate::transparent::Stub>,
}

impl Agent {
    fn run(&mut self) -> Served {
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(64);
        let mut tokens: Vec<Token> = Vec::with_capacity(64);
        loop {
            pfds.clear();
            tokens.clear();
            let mut add = |fd: RawFd, events: libc::c_short, t: Token| {
                pfds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
                tokens.push(t);
            };
            let mut ev = 0;
            if self.ch.should_read() {
                ev |= libc::POLLIN;
            }
            if self.ch.wants_write() {
                ev |= libc::POLLOUT;
            }
            add(self.ch.fd(), ev, Token::Channel);
            add(self.sigfd.as_raw_fd(), libc::POLLIN, Token::Signals);
            let room = self.ch.should_read();
            self.procs.poll_set(&self.sess, room, &mut add);
            self.files.poll_set(&self.sess, room, &mut add);
            self.tcps.poll_set(&self.sess, room, &mut add);
            if let Some(st) = &self.stub {
                st.poll_set(&mut |fd, ev, w| add(fd, ev, Token::Dns(w)));
            }
            let busy = room && self.files.has_ready_work(&self.sess);
            let timeout = if busy { 0 } else { -1 };
            // SAFETY: `pfds` is a valid array of pollfd.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                continue;
            }
            for i in 0..pfds.len() {
                let re = pfds[i].revents;
                if re == 0 {
                    continue;
                }
                let r: Result<(), ()> = match tokens[i] {
                    Token::Channel => {
                        if re & libc::POLLOUT != 0 && self.ch.flush().is_err() {
                            return self.stop(Served::HostGone);
                        }
                        if re & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                            if let Some(end) = self.read_channel() {
                                return end;
                            }
                        }
                        Ok(())
                    }
                    Token::Signals => {
                        self.drain_signals();
                        Ok(())
                    }
                    Token::Proc(id, which) => {
                        let mut out = Out {
                            sess: &mut self.sess,
                            ch: &mut self.ch,
                        };
                        self.procs.on_ready(id, which, re, &mut out);
                        Ok(())
                    }
                    Token::File(id) => {
                        let mut out = Out {
                            sess: &mut self.sess,
                            ch: &mut self.ch,
                        };
                        self.files.on_ready(id, re, &mut out);
                        Ok(())
                    }
                    Token::Tcp(id) => {
                        let mut out = Out {
                            sess: &mut self.sess,
                            ch: &mut self.ch,
                        };
                        self.tcps.on_ready(id, re, &mut out);
                        Ok(())
                    }
                    Token::Dns(w) => {
                        if let Some(st) = self.stub.as_mut() {
                            st.on_ready(w, &mut self.tcps);
                        }
                        Ok(())
                    }
                    Token::Listen(i) => {
                        let mut out = Out {
                            sess: &mut self.sess,
                            ch: &mut self.ch,
                        };
                        self.tcps.on_accept(i, &mut out);
                        Ok(())
                    }
                };
                if r.is_err() {
                    return self.stop(Served::HostGone);
                }
            }
            if busy {
                let mut out = Out {
                    sess: &mut self.sess,
                    ch: &mut self.ch,
                };
                self.files.do_ready_work(&mut out);
            }
            if self.ch.wants_write() && self.ch.flush().is_err() {
                return self.stop(Served::HostGone);
            }
            // A one-shot sandbox ends with its last process, once the host
            // has everything: its teardown then overlaps with the host's.
            if self.plan.exit_when_idle && self.procs.finished_all() && !self.ch.wants_write() {
                return self.stop(Served::Shutdown);
            }
        }
    }

    /// Reads every frame there is; `Some` when serving ends.
    fn read_channel(&mut self) -> Option<Served> {
        loop {
            if !self.ch.should_read() {
                return None;
            }
            let frame = match self.ch.recv() {
                Ok(Some(f)) => f,
                Ok(None) => return None,
                Err(_) => return Some(self.stop(Served::HostGone)),
            };
            let msg = match self.sess.on_frame(frame) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                // A host that breaks the protocol gets nothing more.
                Err(_) => return Some(self.stop(Served::HostGone)),
            };
            if let Some(end) = self.dispatch(msg) {
                return Some(end);
            }
        }
    }

    fn dispatch(&mut self, m: Message) -> Option<Served> {
        let Agent {
            plan,
            ch,
            sess,
            procs,
            files,
            tcps,
            ..
        } = self;
        let mut out = Out { sess, ch };
        match m {
            Message::ProcStart { .. }
            | Message::ProcStdin { .. }
            | Message::ProcCloseStdin { .. }
            | Message::ProcSignal { .. }
            | Message::ProcResize { .. }
            | Message::ProcList { .. } => procs.handle(m, plan, &mut out),
            Message::FileRead { .. }
            | Message::FileWrite { .. }
            | Message::FileStat { .. }
            | Message::FileList { .. }
            | Message::FileMkdir { .. }
            | Message::FileRemove { .. }
            | Message::FileRename { .. }
            | Message::FileChmod { .. }
            | Message::TarOut { .. }
            | Message::TarIn { .. }
            | Message::FileData { .. }
            | Message::FileEnd { .. }
            | Message::FileCancel { .. } => {
                if let Some(pid) = files.handle(m, &mut out) {
                    procs.adopt_helper(pid);
                }
            }
            Message::TcpConnect { .. }
            | Message::TcpData { .. }
            | Message::TcpShutdownWrite { .. }
            | Message::TcpClose { .. }
            | Message::TcpAccept { .. }
            | Message::TcpRefuse { .. } => tcps.handle(m, &mut out),
            Message::Ping { nonce } => out.send(Message::Pong { nonce }),
            Message::Shutdown => {
                self.kill_all();
                let _ = self.sess.send(&Message::ShutdownDone, self.ch.outbound());
                let _ = v2::set_nonblocking(self.ch.fd(), false);
                let _ = self.ch.flush();
                return Some(Served::Shutdown);
            }
            // Credit is applied by the session; Hello and Plan only come
            // once, before this loop.
            _ => {}
        }
        None
    }

    fn drain_signals(&mut self) {
        let mut info = [0u8; 128];
        // SAFETY: reads whole signalfd_siginfo records into a local buffer.
        while unsafe { libc::read(self.sigfd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) }
            > 0
        {}
        loop {
            let mut st = 0;
            // SAFETY: rusage is plain data, filled by wait4.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 writes into `st` and `ru`.
            let pid = unsafe { libc::wait4(-1, &mut st, libc::WNOHANG, &mut ru) };
            if pid <= 0 {
                return;
            }
            let mut out = Out {
                sess: &mut self.sess,
                ch: &mut self.ch,
            };
            if let Some(file_id) = self.procs.helper_exited(pid) {
                self.files.helper_exited(file_id, st, &mut out);
                continue;
            }
            self.procs
                .exited(pid, st, ru.ru_maxrss.max(0) as u64, &mut out);
        }
    }

    /// Kills everything the agent started. As PID 1 of a container, every
    /// process of the namespace; in the local tier, each process group it
    /// started and every orphan it inherited as their subreaper.
    fn kill_all(&mut self) {
        match self.plan.role {
            Role::Container(_) | Role::Guest(_) => {
                // SAFETY: kill(-1) from PID 1 of a PID namespace (or of a
                // guest) signals every other process in it, and nothing
                // outside.
                unsafe { libc::kill(-1, libc::SIGKILL) };
            }
            Role::Local | Role::Landlock => self.procs.kill_groups(),
        }
    }

    fn stop(&mut self, why: Served) -> Served {
        self.kill_all();
        why
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Helpers for file transfers hold pipes; their processes die with
        // the namespace (or as our children with PDEATHSIG).
        self.files.abort_all();
    }
}
