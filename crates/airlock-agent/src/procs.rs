//! Processes: start (confined), stdio as flow-controlled streams, a pty,
//! signals, resize, exit.

use crate::plan::{AgentPlan, Role};
use crate::serve::{Out, Token};
use airlock_confine::{self as confine, Prepared};
use airlock_protocol::v2::{
    ExitStatus, Message, OutStream, ProcInfo, Stage, StdinMode, StreamKind, WinSize, MAX_DATA,
};
use airlock_sys as sys;
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One process the host started.
struct Proc {
    pid: i32,
    pty: bool,
    /// stdout (or the pty's master), stderr: read ends while open.
    out: [Option<OwnedFd>; 2],
    /// The write end of stdin (with a pty, a second fd of the master).
    stdin: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    close_stdin: bool,
    /// Reaped: its status and peak RSS; its streams drain what they hold.
    exited: Option<(ExitStatus, u64)>,
    /// Once exited: bytes each stream still holds (read no more).
    drain: [usize; 2],
}

pub(crate) struct Procs {
    map: BTreeMap<u32, Proc>,
    by_pid: HashMap<i32, u32>,
    /// File-transfer helpers (pid → file request id).
    helpers: HashMap<i32, u32>,
    /// The confinement, prepared at the first launch (after set-up).
    prepared: Option<Prepared>,
    /// The stack the children that exec commands run on.
    stack: Vec<u8>,
    /// A process was ever started.
    started_any: bool,
    /// A container run by root: ptys are given to the process's user.
    chown_pty: bool,
    buf: Vec<u8>,
}

fn stream_of(which: u8) -> OutStream {
    if which == 0 {
        OutStream::Stdout
    } else {
        OutStream::Stderr
    }
}

fn stage_of(s: confine::Stage) -> Stage {
    match s {
        confine::Stage::Credentials => Stage::Credentials,
        confine::Stage::Landlock => Stage::Landlock,
        confine::Stage::Seccomp => Stage::Seccomp,
        confine::Stage::Limits => Stage::Limits,
        confine::Stage::Workdir => Stage::Workdir,
        confine::Stage::Stdio => Stage::Stdio,
        confine::Stage::Exec => Stage::Exec,
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn set_nonblock(fd: RawFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), (Stage, i32)> {
    sys::pipe_cloexec().map_err(|e| (Stage::Stdio, sys::errno_of(&e)))
}

/// Bytes waiting to be read.
fn queued(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return 0;
    }
    n.max(0) as usize
}

/// A new pty: (master, slave), the slave opened through the master
/// (`TIOCGPTPEER`: no path lookup to race).
fn open_pty(ws: WinSize) -> Result<(OwnedFd, OwnedFd), (Stage, i32)> {
    let e = |_| (Stage::Pty, errno());
    // SAFETY: a constant C string; the kernel returns a new fd or -1.
    let m = sys::cvt(unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })
    .map_err(e)?;
    // SAFETY: a new fd that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int.
    sys::cvt(unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &unlock) }).map_err(e)?;
    const TIOCGPTPEER: libc::c_ulong = 0x5441;
    // SAFETY: TIOCGPTPEER returns a new fd for the slave.
    let s = sys::cvt(unsafe {
        libc::ioctl(
            m,
            TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })
    .map_err(e)?;
    // SAFETY: a new fd that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    let w = libc::winsize {
        ws_row: ws.rows,
        ws_col: ws.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize.
    unsafe { libc::ioctl(m, libc::TIOCSWINSZ, &w) };
    Ok((master, slave))
}

/// The stack of the children that exec commands (one at a time).
const CHILD_STACK: usize = 256 * 1024;

/// What a command's child needs, prepared by the agent before the clone.
struct ChildCtx<'a> {
    stdio: [RawFd; 3],
    confinement: &'a confine::Confinement,
    prep: &'a Prepared,
    uid: u32,
    gid: u32,
    cwd: &'a std::ffi::CStr,
    tty: bool,
    exec: &'a confine::ExecPlan,
    /// Where the child leaves its failure (the agent is suspended until it
    /// execs or exits, then reads it).
    fail: std::cell::Cell<Option<(Stage, i32)>>,
    /// A forked child (own address space) writes it here instead: stage
    /// byte and errno (LE). -1: none.
    fail_pipe: RawFd,
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildCtx of the agent, suspended in clone.
    let ctx = unsafe { &*(arg as *const ChildCtx<'_>) };
    // SAFETY: plain fd and process syscalls on our own fd table.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        for (i, fd) in ctx.stdio.iter().enumerate() {
            libc::dup2(*fd, i as i32);
        }
    }
    let fail = match confine::confine(
        ctx.confinement,
        ctx.prep,
        ctx.uid,
        ctx.gid,
        ctx.cwd,
        ctx.tty,
    ) {
        Ok(()) => (Stage::Exec, ctx.exec.exec()),
        Err((stage, e)) => (stage_of(stage), e),
    };
    ctx.fail.set(Some(fail));
    if ctx.fail_pipe >= 0 {
        let mut msg = [0u8; 5];
        msg[0] = fail.0 as u8;
        msg[1..].copy_from_slice(&fail.1.to_le_bytes());
        // SAFETY: writes 5 bytes from a local buffer.
        unsafe { libc::write(ctx.fail_pipe, msg.as_ptr().cast(), msg.len()) };
    }
    // SAFETY: leaves without running anything of the agent's.
    unsafe { libc::_exit(127) }
}

impl Procs {
    pub fn new(plan: &AgentPlan) -> Procs {
        let chown_pty = match &plan.role {
            Role::Container(c) => !c.rootless,
            Role::Local | Role::Landlock => false,
            Role::Guest(_) => true,
        };
        Procs {
            map: BTreeMap::new(),
            by_pid: HashMap::new(),
            helpers: HashMap::new(),
            prepared: None,
            stack: Vec::new(),
            started_any: false,
            chown_pty,
            buf: vec![0u8; MAX_DATA],
        }
    }

    /// Processes were started and every one has exited and been reported.
    pub fn finished_all(&self) -> bool {
        self.started_any && self.map.is_empty()
    }

    pub fn adopt_helper(&mut self, (pid, file_id): (i32, u32)) {
        self.helpers.insert(pid, file_id);
    }

    pub fn helper_exited(&mut self, pid: i32) -> Option<u32> {
        self.helpers.remove(&pid)
    }

    pub fn poll_set(
        &self,
        sess: &airlock_protocol::v2::AgentSession,
        room: bool,
        add: &mut impl FnMut(RawFd, libc::c_short, Token),
    ) {
        for (&id, p) in &self.map {
            for which in 0..2u8 {
                if let Some(fd) = &p.out[which as usize] {
                    let credit = sess.send_credit(id, stream_of(which).stream()).unwrap_or(0);
                    if room && credit > 0 {
                        add(fd.as_raw_fd(), libc::POLLIN, Token::Proc(id, which));
                    }
                }
            }
            if let Some(fd) = &p.stdin {
                if !p.stdin_buf.is_empty() {
                    add(fd.as_raw_fd(), libc::POLLOUT, Token::Proc(id, 2));
                }
            }
        }
    }

    pub fn handle(&mut self, m: Message, plan: &AgentPlan, out: &mut Out<'_>) {
        match m {
            Message::ProcStart {
                id,
                argv,
                env,
                cwd,
                uid,
                gid,
                pty,
                stdin,
            } => {
                self.started_any = true;
                match self.spawn(&argv, &env, cwd, uid, gid, pty, stdin, plan) {
                    Ok(p) => {
                        let pid = p.pid;
                        self.by_pid.insert(pid, id);
                        self.map.insert(id, p);
                        out.send(Message::ProcStarted {
                            id,
                            pid: pid as u32,
                        });
                    }
                    Err((stage, errno)) => out.send(Message::ProcStartFailed {
                        id,
                        stage,
                        errno: errno.clamp(1, 4095),
                    }),
                }
            }
            Message::ProcStdin { id, data } => {
                let n = data.len();
                match self.map.get_mut(&id) {
                    Some(p) if p.stdin.is_some() && p.exited.is_none() => {
                        p.stdin_buf.extend_from_slice(&data);
                        self.write_stdin(id, out);
                    }
                    // Nobody reads it any more: drop it, and give the
                    // credit back so the host never stalls on it.
                    _ => out.consumed(id, StreamKind::Stdin, n),
                }
            }
            Message::ProcCloseStdin { id } => {
                if let Some(p) = self.map.get_mut(&id) {
                    p.close_stdin = true;
                    if p.stdin_buf.is_empty() {
                        p.stdin = None;
                    }
                }
            }
            Message::ProcSignal { id, signo } => {
                if let Some(p) = self.map.get(&id) {
                    if p.exited.is_none() {
                        // SAFETY: the process is not reaped, so its pid
                        // (and process group, it called setsid) is ours.
                        unsafe {
                            if libc::kill(-p.pid, signo as i32) < 0 {
                                libc::kill(p.pid, signo as i32);
                            }
                        }
                    }
                }
            }
            Message::ProcResize { id, size } => {
                if let Some(p) = self.map.get(&id) {
                    if let (true, Some(m)) = (p.pty, &p.out[0]) {
                        let w = libc::winsize {
                            ws_row: size.rows,
                            ws_col: size.cols,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        // SAFETY: TIOCSWINSZ reads a winsize.
                        unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &w) };
                    }
                }
            }
            Message::ProcList { id } => {
                let procs = self
                    .map
                    .iter()
                    .filter(|(_, p)| p.exited.is_none())
                    .take(airlock_protocol::v2::MAX_LIST_PROCS)
                    .map(|(&pid_id, p)| ProcInfo {
                        id: pid_id,
                        pid: p.pid as u32,
                        pty: p.pty,
                        stdin_open: p.stdin.is_some(),
                        stdout_open: p.out[0].is_some(),
                        stderr_open: p.out[1].is_some(),
                    })
                    .collect();
                out.send(Message::ProcListResult { id, procs });
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &mut self,
        argv: &[Vec<u8>],
        env: &[Vec<u8>],
        cwd: Vec<u8>,
        uid: u32,
        gid: u32,
        pty: Option<WinSize>,
        stdin: StdinMode,
        plan: &AgentPlan,
    ) -> Result<Proc, (Stage, i32)> {
        let cs = |v: &[Vec<u8>]| -> Result<Vec<CString>, (Stage, i32)> {
            v.iter()
                .map(|a| CString::new(a.clone()).map_err(|_| (Stage::Exec, libc::EINVAL)))
                .collect()
        };
        let exec = confine::ExecPlan::new(cs(argv)?, cs(env)?);
        let cwd = CString::new(cwd).map_err(|_| (Stage::Workdir, libc::EINVAL))?;
        sys::timing::mark("proc start");
        if self.prepared.is_none() {
            self.prepared =
                Some(confine::prepare(&plan.confinement).map_err(|(st, e)| (stage_of(st), e))?);
        }
        // The child's stdio, and our ends.
        let (child, ours_out, ours_err, ours_in) = match pty {
            Some(ws) => {
                let (master, slave) = open_pty(ws)?;
                if self.chown_pty {
                    // SAFETY: fchown on the slave we just opened.
                    unsafe { libc::fchown(slave.as_raw_fd(), uid, gid) };
                }
                let input = master.try_clone().map_err(|_| (Stage::Pty, errno()))?;
                let s2 = slave.try_clone().map_err(|_| (Stage::Pty, errno()))?;
                let s3 = slave.try_clone().map_err(|_| (Stage::Pty, errno()))?;
                let input = (stdin == StdinMode::Pipe).then_some(input);
                ([slave, s2, s3], Some(master), None, input)
            }
            None => {
                let (out_r, out_w) = pipe()?;
                let (err_r, err_w) = pipe()?;
                let (in_r, in_w) = match stdin {
                    StdinMode::Pipe => {
                        let (r, w) = pipe()?;
                        (r, Some(w))
                    }
                    StdinMode::Null => {
                        // SAFETY: a constant C string.
                        let fd = sys::cvt(unsafe {
                            libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC)
                        })
                        .map_err(|_| (Stage::Stdio, errno()))?;
                        // SAFETY: a new fd that nothing else owns.
                        (unsafe { OwnedFd::from_raw_fd(fd) }, None)
                    }
                };
                ([in_r, out_w, err_w], Some(out_r), Some(err_r), in_w)
            }
        };
        let Some(prep) = self.prepared.as_ref() else {
            return Err((Stage::Exec, libc::EINVAL));
        };
        // A child that must change its address space's state (see
        // needs_own_mm) gets one of its own: a plain fork, whose failure
        // comes back through a pipe.
        let own_mm = confine::needs_own_mm(&plan.confinement, uid);
        let (err_r, err_w) = if own_mm {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        let ctx = ChildCtx {
            stdio: [
                child[0].as_raw_fd(),
                child[1].as_raw_fd(),
                child[2].as_raw_fd(),
            ],
            confinement: &plan.confinement,
            prep,
            uid,
            gid,
            cwd: &cwd,
            tty: pty.is_some(),
            exec: &exec,
            fail: std::cell::Cell::new(None),
            fail_pipe: err_w.as_ref().map_or(-1, |w| w.as_raw_fd()),
        };
        if self.stack.is_empty() {
            self.stack = vec![0u8; CHILD_STACK];
        }
        // vfork semantics: the child runs on its own stack in our memory
        // (no page tables copied, no copy-on-write faults after) while we
        // wait; it allocates nothing, confines itself and execs, or leaves
        // its failure in `ctx.fail` and exits.
        // SAFETY: fork: the agent is single-threaded, and the child only
        // confines itself and execs (or reports and exits). clone: the stack
        // is ours and unused while we are suspended; the child only reads
        // `ctx` and sets `ctx.fail`, both alive until clone returns (after
        // the child's exec or exit).
        let pid = unsafe {
            if own_mm {
                let pid = libc::fork();
                if pid == 0 {
                    if let Some(r) = &err_r {
                        libc::close(r.as_raw_fd());
                    }
                    child_main((&ctx as *const ChildCtx<'_>).cast_mut().cast());
                }
                pid
            } else {
                let top = self.stack.as_mut_ptr().add(CHILD_STACK - 64);
                let top = top.sub(top as usize % 16);
                libc::clone(
                    child_main,
                    top.cast(),
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    (&ctx as *const ChildCtx<'_>).cast_mut().cast(),
                )
            }
        };
        drop(err_w);
        if let (Some(r), true) = (&err_r, pid > 0) {
            let mut msg = [0u8; 5];
            let mut got = 0;
            while got < msg.len() {
                // SAFETY: reads into the unfilled part of `msg`.
                let n = unsafe {
                    libc::read(
                        r.as_raw_fd(),
                        msg[got..].as_mut_ptr().cast(),
                        msg.len() - got,
                    )
                };
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                if n <= 0 {
                    break;
                }
                got += n as usize;
            }
            if got == msg.len() {
                let stage = Stage::from_u8(msg[0]).unwrap_or(Stage::Exec);
                ctx.fail.set(Some((
                    stage,
                    i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]),
                )));
            }
        }
        if pid < 0 {
            return Err((Stage::Fork, errno()));
        }
        drop(child);
        if let Some(fail) = ctx.fail.get() {
            // SAFETY: reaps the child that failed before exec.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            return Err(fail);
        }
        for fd in [&ours_out, &ours_err, &ours_in].into_iter().flatten() {
            set_nonblock(fd.as_raw_fd());
        }
        Ok(Proc {
            pid,
            pty: pty.is_some(),
            out: [ours_out, ours_err],
            stdin: ours_in,
            stdin_buf: Vec::new(),
            close_stdin: false,
            exited: None,
            drain: [0, 0],
        })
    }

    fn write_stdin(&mut self, id: u32, out: &mut Out<'_>) {
        let Some(p) = self.map.get_mut(&id) else {
            return;
        };
        let Some(fd) = &p.stdin else {
            let n = std::mem::take(&mut p.stdin_buf).len();
            out.consumed(id, StreamKind::Stdin, n);
            return;
        };
        let mut written = 0;
        while written < p.stdin_buf.len() {
            let rest = &p.stdin_buf[written..];
            // SAFETY: writes from our buffer.
            let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                match errno() {
                    libc::EINTR => continue,
                    libc::EAGAIN => break,
                    _ => {
                        // The process closed its stdin: nothing more goes.
                        written = p.stdin_buf.len();
                        p.stdin = None;
                        break;
                    }
                }
            }
            written += n as usize;
        }
        p.stdin_buf.drain(..written);
        if p.stdin_buf.is_empty() && p.close_stdin {
            p.stdin = None;
        }
        if written > 0 {
            out.consumed(id, StreamKind::Stdin, written);
        }
    }

    pub fn on_ready(&mut self, id: u32, which: u8, revents: libc::c_short, out: &mut Out<'_>) {
        if which == 2 {
            if revents & (libc::POLLERR | libc::POLLHUP) != 0 && revents & libc::POLLOUT == 0 {
                if let Some(p) = self.map.get_mut(&id) {
                    p.stdin = None;
                }
            }
            self.write_stdin(id, out);
            return;
        }
        self.pump(id, which, out);
    }

    /// Moves one chunk of a process's output to the host, within its credit.
    fn pump(&mut self, id: u32, which: u8, out: &mut Out<'_>) {
        let stream = stream_of(which);
        let credit = out.credit(id, stream.stream());
        let Some(p) = self.map.get_mut(&id) else {
            return;
        };
        let w = which as usize;
        let Some(fd) = &p.out[w] else {
            return;
        };
        let mut want = credit.min(self.buf.len());
        if p.exited.is_some() {
            want = want.min(p.drain[w]);
        }
        let mut eof = false;
        if want > 0 {
            // Read straight into the message's own buffer (no copy).
            let mut data: Vec<u8> = Vec::with_capacity(want);
            // SAFETY: reads at most `want` bytes into the vector's spare
            // capacity, which has room for them.
            let n = unsafe { libc::read(fd.as_raw_fd(), data.as_mut_ptr().cast(), want) };
            if n > 0 {
                let n = n as usize;
                // SAFETY: the kernel initialised the first `n` bytes.
                unsafe { data.set_len(n) };
                out.send(Message::ProcOutput { id, stream, data });
                if p.exited.is_some() {
                    p.drain[w] -= n;
                    eof = p.drain[w] == 0;
                }
            } else if n == 0 || !matches!(errno(), libc::EAGAIN | libc::EINTR) {
                // EOF, or EIO from a pty master whose last slave closed.
                eof = true;
            }
        } else if p.exited.is_some() && p.drain[w] == 0 {
            eof = true;
        }
        if eof {
            p.out[w] = None;
            out.send(Message::ProcEof { id, stream });
            self.finish_if_done(id, out);
        }
    }

    /// A child was reaped.
    pub fn exited(&mut self, pid: i32, st: i32, max_rss_kib: u64, out: &mut Out<'_>) {
        let Some(id) = self.by_pid.remove(&pid) else {
            return;
        };
        let Some(p) = self.map.get_mut(&id) else {
            return;
        };
        let status = if libc::WIFEXITED(st) {
            ExitStatus::Code(libc::WEXITSTATUS(st) as u8)
        } else {
            ExitStatus::Signal(libc::WTERMSIG(st).clamp(1, 64) as u8)
        };
        p.exited = Some((status, max_rss_kib));
        p.stdin = None;
        p.stdin_buf.clear();
        // What it wrote is in the pipes now: that much is sent, no more
        // (a process it left behind, or was given its stdout, cannot keep
        // the stream open).
        for w in 0..2 {
            if let Some(fd) = &p.out[w] {
                p.drain[w] = queued(fd.as_raw_fd());
            }
        }
        for which in 0..2u8 {
            self.pump(id, which, out);
        }
        self.finish_if_done(id, out);
    }

    fn finish_if_done(&mut self, id: u32, out: &mut Out<'_>) {
        let done = self
            .map
            .get(&id)
            .is_some_and(|p| p.exited.is_some() && p.out.iter().all(Option::is_none));
        if !done {
            return;
        }
        if let Some(p) = self.map.remove(&id) {
            if let Some((status, max_rss_kib)) = p.exited {
                out.send(Message::ProcExited {
                    id,
                    status,
                    max_rss_kib,
                });
            }
        }
    }

    /// The local tier: kills what it started, their process groups, and
    /// every descendant it inherited as their subreaper.
    pub fn kill_groups(&mut self) {
        for p in self.map.values() {
            if p.exited.is_none() {
                // SAFETY: unreaped: the pid and its group are ours.
                unsafe { libc::kill(-p.pid, libc::SIGKILL) };
            }
        }
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() };
        // Orphans of what is killed become ours (we are their subreaper),
        // and a process may have forked while the tree was walked: walk
        // again until nothing is left (each round kills everything found).
        for _ in 0..1000 {
            if kill_descendants(me, 0) == 0 {
                break;
            }
        }
    }
}

/// SIGKILLs every descendant of `pid` (from /proc/PID/task/*/children)
/// that is still alive; returns how many it signalled.
fn kill_descendants(pid: i32, depth: u32) -> usize {
    let mut n = 0;
    if depth > 64 {
        return n;
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return n;
    };
    for t in tasks.flatten() {
        let Ok(kids) = std::fs::read_to_string(t.path().join("children")) else {
            continue;
        };
        for k in kids
            .split_whitespace()
            .filter_map(|k| k.parse::<i32>().ok())
        {
            n += kill_descendants(k, depth + 1);
            // A zombie (killed already, not yet reaped) needs nothing more.
            let state = std::fs::read_to_string(format!("/proc/{k}/stat")).unwrap_or_default();
            let zombie = state
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'));
            if !zombie {
                n += 1;
            }
            // SAFETY: a descendant of ours that is not reaped (it is
            // listed), so the pid is not recycled.
            unsafe { libc::kill(k, libc::SIGKILL) };
        }
    }
    n
}
