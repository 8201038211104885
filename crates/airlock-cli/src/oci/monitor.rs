//! The monitor: one per container, forked by `create`. It holds the
//! sandbox, relays its processes' stdio, serves the control socket, and
//! exits with the init process's exit code.

use super::config::{self, Mapped};
use super::ipc::{self, Lines};
use super::{Log, Saved};
use crate::stdio::HostOut;
use airlock_core::{
    CreateOptions, Event, ExitStatus, OutStream, ProcessSpec, Sandbox, Stage, StreamKind,
};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct Args {
    pub dir: PathBuf,
    pub saved: Saved,
    pub mapped: Mapped,
    pub console_socket: Option<PathBuf>,
    pub log: Log,
    /// "ok" or "err MESSAGE" goes here once the container is created.
    pub ready: OwnedFd,
    /// Another sandbox's network namespace to join (a pod's).
    pub join_net: Option<OwnedFd>,
}

/// Exit code of a process that ended with `st`.
fn code_of(st: ExitStatus) -> i32 {
    match st {
        ExitStatus::Code(c) => c as i32,
        ExitStatus::Signal(s) => 128 + s as i32,
    }
}

fn exec_fail_code(errno: i32) -> i32 {
    if errno == libc::ENOENT || errno == libc::ENOTDIR {
        127
    } else {
        126
    }
}

/// One process of the container and its stdio on the host.
struct Proc {
    sid: u32,
    init: bool,
    out: [HostOut; 2],
    owed: [usize; 2],
    stdin: Option<RawFd>,
    stdin_open: bool,
    stdin_buf: Vec<u8>,
    tty: bool,
    /// Descriptors received for it (closed with it).
    _keep: Vec<OwnedFd>,
    /// The `exec` waiter's connection.
    client: Option<Client>,
    exited: bool,
}

struct Client {
    lines: Lines,
    /// Descriptors that came with its request.
    fds: Vec<OwnedFd>,
    /// Waiting for the init's start to answer.
    wants_start: bool,
}

impl Client {
    fn reply(&mut self, v: serde_json::Value) {
        let _ = self.lines.send(&v);
    }
}

/// Runs a hook: `path` with `args` (argv[0] included) and `env`, the
/// state on stdin, killed after `timeout` seconds (default 30).
/// The state a hook reads on its stdin. Its `pid` is the sandbox's first
/// process as the host sees it (in the container's namespaces, as the
/// runtime spec has it), not the monitor's: hooks that enter the
/// container by pid (`nsenter -t`, `/proc/PID/ns/net`, `/proc/PID/root`)
/// must land in the container, never in the host's namespaces. When that
/// process is gone, 0 — never the monitor's pid (its namespaces are the
/// host's).
pub fn hook_state(s: &Saved) -> serde_json::Value {
    let mut v = s.state_json();
    let live = s.sandbox_pid > 0
        && ipc::proc_start(s.sandbox_pid).map(|p| p.0) == Some(s.sandbox_pid_start);
    v["pid"] = if live { s.sandbox_pid } else { 0 }.into();
    v
}

pub fn run_hook(hook: &serde_json::Value, state: &serde_json::Value) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let path = hook["path"].as_str().ok_or("a hook without path")?;
    let args: Vec<String> = hook["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut cmd = std::process::Command::new(path);
    if let Some((a0, rest)) = args.split_first() {
        cmd.arg0(a0).args(rest);
    }
    cmd.env_clear();
    for kv in hook["env"].as_array().into_iter().flatten() {
        if let Some((k, v)) = kv.as_str().and_then(|s| s.split_once('=')) {
            cmd.env(k, v);
        }
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{path}: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(state.to_string().as_bytes());
    }
    let timeout = hook["timeout"].as_u64().unwrap_or(30);
    let end = Instant::now() + Duration::from_secs(timeout);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                if st.success() {
                    return Ok(());
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("{path} failed ({st}): {}", err.trim()));
            }
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{path} timed out after {timeout}s"));
            }
        }
    }
}

fn hooks_of<'a>(saved: &'a Saved, kind: &str) -> Vec<&'a serde_json::Value> {
    saved
        .hooks
        .as_ref()
        .and_then(|h| h.get(kind))
        .and_then(|v| v.as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// The monitor's whole life; its exit code.
pub fn run(a: Args) -> i32 {
    let Args {
        dir,
        mut saved,
        mapped,
        console_socket,
        log,
        ready,
        join_net,
    } = a;
    let mut ready = Some(std::fs::File::from(ready));
    let fail = |ready: &mut Option<std::fs::File>, msg: String| -> i32 {
        if let Some(mut r) = ready.take() {
            let _ = r.write_all(format!("err {msg}").as_bytes());
        } else {
            log.error(&msg);
        }
        1
    };
    // SAFETY: our own pid; start time of our own process.
    saved.pid = unsafe { libc::getpid() };
    saved.pid_start = ipc::proc_start(saved.pid).map(|s| s.0).unwrap_or(0);
    let signals = match crate::stdio::SignalFd::new(true) {
        Ok(s) => s,
        Err(e) => return fail(&mut ready, format!("signalfd: {e}")),
    };
    // The console: a pty whose master goes to the engine; its slave is
    // the init's stdio here, and our controlling terminal (resizes).
    let console: Option<OwnedFd> = match (&console_socket, mapped.process.terminal) {
        (Some(sock), true) => {
            let (m, s) = match ipc::openpty() {
                Ok(p) => p,
                Err(e) => return fail(&mut ready, format!("openpty: {e}")),
            };
            ipc::make_raw(s.as_raw_fd());
            if let Some((r, c)) = mapped.process.console_size {
                let ws = libc::winsize {
                    ws_row: r,
                    ws_col: c,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: sets the size of our own pty.
                unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
            }
            // SAFETY: we lead a new session; the slave becomes its
            // controlling terminal.
            unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCSCTTY, 0) };
            if let Err(e) = ipc::send_console(sock, m.as_raw_fd()) {
                return fail(
                    &mut ready,
                    format!("send the pty to {}: {e}", sock.display()),
                );
            }
            Some(s)
        }
        _ => None,
    };
    let listener = match UnixListener::bind(dir.join("ctl.sock")) {
        Ok(l) => l,
        Err(e) => return fail(&mut ready, format!("control socket: {e}")),
    };
    let _ = std::fs::set_permissions(dir.join("ctl.sock"), std::fs::Permissions::from_mode(0o600));
    let _ = listener.set_nonblocking(true);

    // An overlay rootfs (the engines' default storage) is rebuilt from its
    // id-mapped layers; any other directory is id-mapped by the jail.
    let premapped = match super::rootfs::premap(&mapped.rootfs, &dir.join("rootfs")) {
        Ok(p) => p,
        Err(e) => {
            return fail(
                &mut ready,
                format!("the rootfs {}: {e}", mapped.rootfs.display()),
            )
        }
    };
    let image = airlock_jail::ImageRoot {
        tree: premapped
            .as_ref()
            .map(|p| p.at.clone())
            .unwrap_or_else(|| mapped.rootfs.clone()),
        home: PathBuf::from("/"),
        capture: None,
        premapped: premapped.is_some(),
    };
    let agent = match &join_net {
        Some(fd) => {
            use std::os::fd::AsFd;
            match airlock_core::prespawn_joining(
                airlock_spec::Isolation::Container,
                false,
                Some(fd.as_fd()),
            ) {
                Ok(a) => Some(a),
                Err(e) => {
                    return fail(
                        &mut ready,
                        format!("start the sandbox in the pod's network namespace: {e}"),
                    )
                }
            }
        }
        None => None,
    };
    drop(join_net);
    let created = Sandbox::create(
        &mapped.spec,
        CreateOptions {
            agent,
            window: Some(1 << 20),
            accounting: true,
            image: Some(image),
            lower_rlimits: mapped.rlimits.clone(),
            seccomp_profile: mapped.seccomp.clone(),
            ..CreateOptions::default()
        },
    );
    // The sandbox holds its own clone of the rootfs now.
    if let Some(p) = premapped {
        p.detach();
    }
    let mut sb = match created {
        Ok(sb) => sb,
        Err(e) => return fail(&mut ready, format!("create the sandbox: {e}")),
    };
    for n in sb.take_notes() {
        log.info(&format!("{}: {n}", saved.id));
    }
    saved.sandbox_pid = sb.agent_pid();
    saved.sandbox_pid_start = ipc::proc_start(saved.sandbox_pid).map(|s| s.0).unwrap_or(0);
    // Until the plan is applied.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match sb.wait(Some(left)) {
            Ok(Some(Event::Ready)) => break,
            Ok(Some(Event::Notice(t))) => log.warn(&format!("{}: {t}", saved.id)),
            Ok(Some(Event::SetupFailed { stage, detail, .. })) => {
                return fail(
                    &mut ready,
                    format!("sandbox set-up failed at {}: {detail}", stage.name()),
                )
            }
            Ok(Some(Event::AgentGone)) => {
                return fail(&mut ready, "the sandbox's agent died during set-up".into())
            }
            Ok(Some(_)) => {}
            Ok(None) => return fail(&mut ready, "the sandbox did not come up in 60 s".into()),
            Err(e) => return fail(&mut ready, format!("create the sandbox: {e}")),
        }
    }
    saved.status = "created".into();
    let state_now = hook_state;
    for kind in ["createRuntime", "prestart"] {
        for h in hooks_of(&saved, kind) {
            if let Err(e) = run_hook(h, &state_now(&saved)) {
                return fail(&mut ready, format!("{kind} hook: {e}"));
            }
        }
    }
    if let Err(e) = saved.save(&dir) {
        return fail(&mut ready, format!("write the state: {e}"));
    }
    if let Some(mut r) = ready.take() {
        let _ = r.write_all(b"ok");
    }

    let mut m = Monitor {
        sb,
        saved,
        dir,
        log,
        mapped,
        console,
        procs: Vec::new(),
        clients: Vec::new(),
        init_code: None,
        init_started: false,
    };
    let code = m.run_loop(&listener, &signals);
    drop(listener);
    let _ = std::fs::remove_file(m.dir.join("ctl.sock"));
    let Monitor {
        sb, mut saved, dir, ..
    } = m;
    let _ = sb.close();
    saved.status = "stopped".into();
    saved.exit_code = Some(code);
    let _ = saved.save(&dir);
    code
}

struct Monitor {
    sb: Sandbox,
    saved: Saved,
    dir: PathBuf,
    log: Log,
    mapped: Mapped,
    console: Option<OwnedFd>,
    procs: Vec<Proc>,
    clients: Vec<Client>,
    init_code: Option<i32>,
    init_started: bool,
}

impl Monitor {
    fn set_status(&mut self, s: &str) {
        self.saved.status = s.into();
        if let Err(e) = self.saved.save(&self.dir) {
            self.log
                .error(&format!("{}: write the state: {e}", self.saved.id));
        }
    }

    fn proc_spec(p: &config::ProcessPlan) -> ProcessSpec {
        let mut s = ProcessSpec::new(p.args.clone());
        s.env = p.env.clone();
        s.cwd = Some(p.cwd.clone());
        s.user = Some(p.user);
        s.pty = p.terminal.then(|| p.console_size.unwrap_or((24, 80)));
        s.stdin = true;
        s
    }

    fn start_init(&mut self) -> Result<(), String> {
        let mut spec = Self::proc_spec(&self.mapped.process);
        let (inp, outs) = match &self.console {
            Some(c) => {
                let fd = c.as_raw_fd();
                if let Some(ws) = ipc::winsize_of(fd) {
                    spec.pty = Some(ws);
                }
                (fd, [fd, fd])
            }
            None => (0, [1, 2]),
        };
        let sid = self.sb.start(&spec).map_err(|e| e.to_string())?;
        self.procs.push(Proc {
            sid,
            init: true,
            out: [HostOut::new(outs[0]), HostOut::new(outs[1])],
            owed: [0, 0],
            stdin: Some(inp),
            stdin_open: true,
            stdin_buf: Vec::new(),
            tty: spec.pty.is_some(),
            _keep: Vec::new(),
            client: None,
            exited: false,
        });
        Ok(())
    }

    fn start_exec(&mut self, mut c: Client, process: &serde_json::Value) {
        let p: oci_spec::runtime::Process = match serde_json::from_value(process.clone()) {
            Ok(p) => p,
            Err(e) => {
                c.reply(serde_json::json!({"error": format!("the process JSON: {e}")}));
                return;
            }
        };
        let mut notes = Vec::new();
        let plan = match config::process(&p, &mut notes) {
            Ok(p) => p,
            Err(why) => {
                self.log
                    .error(&format!("{}: exec refused: {why}", self.saved.id));
                c.reply(serde_json::json!({"error": format!("refused: {why}")}));
                return;
            }
        };
        if p.rlimits().as_ref().is_some_and(|r| !r.is_empty()) {
            notes.push("the process's rlimits are the container's (its init's, lowering airlock's own), not its own".into());
        }
        for n in notes {
            self.log.info(&format!("{}: exec: {n}", self.saved.id));
        }
        let fds = std::mem::take(&mut c.fds);
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let (inp, outs) = match raw.len() {
            1 => (raw[0], [raw[0], raw[0]]),
            3 => (raw[0], [raw[1], raw[2]]),
            _ => {
                c.reply(
                    serde_json::json!({"error": "exec needs 1 (pty) or 3 (stdio) descriptors"}),
                );
                return;
            }
        };
        let mut spec = Self::proc_spec(&plan);
        if plan.terminal {
            if raw.len() != 1 {
                c.reply(serde_json::json!({"error": "a terminal exec passes its pty"}));
                return;
            }
            if let Some(ws) = ipc::winsize_of(raw[0]) {
                spec.pty = Some(ws);
            }
        }
        let sid = match self.sb.start(&spec) {
            Ok(s) => s,
            Err(e) => {
                c.reply(serde_json::json!({"error": e.to_string()}));
                return;
            }
        };
        let _ = c.lines.sock.set_nonblocking(true);
        self.procs.push(Proc {
            sid,
            init: false,
            out: [HostOut::new(outs[0]), HostOut::new(outs[1])],
            owed: [0, 0],
            stdin: Some(inp),
            stdin_open: true,
            stdin_buf: Vec::new(),
            tty: spec.pty.is_some(),
            _keep: fds,
            client: Some(c),
            exited: false,
        });
    }

    /// One request from a control client.
    fn handle(&mut self, mut c: Client, req: serde_json::Value) {
        let op = req["op"].as_str().unwrap_or("");
        let ok = serde_json::json!({"ok": true});
        match op {
            "start" => {
                if self.init_started {
                    c.reply(serde_json::json!({"error": "the container was started already"}));
                    return;
                }
                if let Err(e) = self.start_init() {
                    c.reply(serde_json::json!({"error": e}));
                    return;
                }
                self.init_started = true;
                c.wants_start = true;
                let _ = c.lines.sock.set_nonblocking(true);
                self.clients.push(c);
            }
            "exec" => {
                if !self.init_started || self.init_code.is_some() {
                    c.reply(serde_json::json!({"error": "the container is not running"}));
                    return;
                }
                self.start_exec(c, &req["process"]);
            }
            "kill" => {
                let sig = req["signal"].as_i64().unwrap_or(15) as i32;
                let all = req["all"].as_bool().unwrap_or(false);
                let r = self.kill(sig, all);
                c.reply(match r {
                    Ok(()) => ok,
                    Err(e) => serde_json::json!({"error": e}),
                });
            }
            "pause" | "resume" => {
                let r = if op == "pause" {
                    self.sb.pause()
                } else {
                    self.sb.resume()
                };
                match r {
                    Ok(()) => {
                        let st = if op == "pause" {
                            "paused"
                        } else if self.init_started {
                            "running"
                        } else {
                            "created"
                        };
                        self.set_status(st);
                        c.reply(ok);
                    }
                    Err(e) => c.reply(serde_json::json!({"error": e.to_string()})),
                }
            }
            "update" => {
                let r = self.sb.update_limits(
                    req["memory"].as_u64(),
                    req["pids"].as_u64(),
                    req["cpus"].as_f64(),
                );
                c.reply(match r {
                    Ok(()) => ok,
                    Err(e) => serde_json::json!({"error": e.to_string()}),
                });
            }
            "stats" => {
                let u = self.sb.usage();
                c.reply(serde_json::json!({
                    "ok": true,
                    "cpu_usec": u.cpu_usec,
                    "memory_bytes": u.memory_bytes,
                    "pids": u.pids,
                    "memory_limit": self.mapped.spec.limits.memory,
                    "pids_limit": self.mapped.spec.limits.pids,
                }));
            }
            "ps" => {
                let pids = self.sb.host_pids();
                c.reply(serde_json::json!({"ok": true, "pids": pids}));
            }
            _ => c.reply(serde_json::json!({"error": format!("unknown request {op:?}")})),
        }
    }

    fn kill(&mut self, sig: i32, all: bool) -> Result<(), String> {
        if !self.init_started || self.init_code.is_some() {
            // The parked init (or a finished one): the signal ends the
            // container, as it ends runc's waiting init — unless it is one
            // that does nothing by default.
            if [libc::SIGCHLD, libc::SIGURG, libc::SIGWINCH, libc::SIGCONT].contains(&sig) {
                return Ok(());
            }
            if self.init_code.is_none() {
                self.init_code = Some(128 + sig);
            }
            self.sb.kill();
            return Ok(());
        }
        if all {
            if sig == libc::SIGKILL {
                self.sb.kill();
                return Ok(());
            }
            let agent = self.sb.agent_pid();
            for p in self.sb.host_pids() {
                if p != agent {
                    // SAFETY: a process of the sandbox's cgroup.
                    unsafe { libc::kill(p, sig) };
                }
            }
            return Ok(());
        }
        let Some(init) = self.procs.iter().find(|p| p.init) else {
            return Err("no init process".into());
        };
        let sid = init.sid;
        self.sb.signal(sid, sig).map_err(|e| e.to_string())
    }

    fn events(&mut self) {
        while let Some(e) = self.sb.next_event() {
            match e {
                Event::Notice(t) => self.log.info(&format!("{}: {t}", self.saved.id)),
                Event::Started { id, .. } => {
                    let Some(i) = self.procs.iter().position(|p| p.sid == id) else {
                        continue;
                    };
                    if self.procs[i].init {
                        self.set_status("running");
                        for c in self.clients.iter_mut().filter(|c| c.wants_start) {
                            c.reply(serde_json::json!({"ok": true}));
                            c.wants_start = false;
                        }
                        let st = hook_state(&self.saved);
                        for h in hooks_of(&self.saved, "poststart") {
                            if let Err(e) = run_hook(h, &st) {
                                self.log
                                    .warn(&format!("{}: poststart hook: {e}", self.saved.id));
                            }
                        }
                    } else if let Some(c) = self.procs[i].client.as_mut() {
                        // SAFETY: getpid cannot fail.
                        c.reply(serde_json::json!({"started": unsafe { libc::getpid() }}));
                    }
                }
                Event::StartFailed { id, stage, errno } => {
                    let Some(i) = self.procs.iter().position(|p| p.sid == id) else {
                        continue;
                    };
                    let what = if stage == Stage::Exec {
                        format!(
                            "cannot run {:?}: {}",
                            self.mapped
                                .process
                                .args
                                .first()
                                .cloned()
                                .unwrap_or_default(),
                            io::Error::from_raw_os_error(errno)
                        )
                    } else {
                        format!(
                            "the process failed at {}: {}",
                            stage.name(),
                            io::Error::from_raw_os_error(errno)
                        )
                    };
                    let code = if stage == Stage::Exec {
                        exec_fail_code(errno)
                    } else {
                        126
                    };
                    if self.procs[i].init {
                        self.log.error(&format!("{}: {what}", self.saved.id));
                        for c in self.clients.iter_mut().filter(|c| c.wants_start) {
                            c.reply(serde_json::json!({"error": what.clone()}));
                            c.wants_start = false;
                        }
                        self.init_code = Some(code);
                    } else if let Some(c) = self.procs[i].client.as_mut() {
                        c.reply(serde_json::json!({"error": what}));
                    }
                    self.procs[i].exited = true;
                }
                Event::Output { id, stream, data } => {
                    let Some(p) = self.procs.iter_mut().find(|p| p.sid == id) else {
                        continue;
                    };
                    let i = if stream == OutStream::Stdout { 0 } else { 1 };
                    let done = p.out[i].push(&data);
                    p.owed[i] += data.len();
                    let done = done.min(p.owed[i]);
                    p.owed[i] -= done;
                    let kind = if i == 0 {
                        StreamKind::Stdout
                    } else {
                        StreamKind::Stderr
                    };
                    let _ = self.sb.consumed(id, kind, done);
                }
                Event::Exited { id, status, .. } => {
                    let Some(p) = self.procs.iter_mut().find(|p| p.sid == id) else {
                        continue;
                    };
                    p.exited = true;
                    let code = code_of(status);
                    if p.init {
                        self.init_code = Some(code);
                    } else if let Some(c) = p.client.as_mut() {
                        // Flush what it wrote first.
                        for o in &mut p.out {
                            o.flush(Some(Instant::now() + Duration::from_secs(2)));
                        }
                        c.reply(serde_json::json!({"exited": code}));
                    }
                }
                Event::AgentGone => {
                    if self.init_code.is_none() {
                        self.init_code = Some(128 + libc::SIGKILL);
                    }
                    for p in &mut self.procs {
                        if !p.exited {
                            p.exited = true;
                            if let Some(c) = p.client.as_mut() {
                                c.reply(serde_json::json!({"exited": 128 + libc::SIGKILL}));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        // Finished exec processes go (their descriptors with them).
        self.procs.retain(|p| p.init || !p.exited);
    }

    fn run_loop(&mut self, listener: &UnixListener, signals: &crate::stdio::SignalFd) -> i32 {
        let mut rbuf = vec![0u8; 64 * 1024];
        loop {
            self.events();
            if let Some(code) = self.init_code {
                // What the init wrote goes out (2 s at most), then the end.
                if let Some(p) = self.procs.iter_mut().find(|p| p.init) {
                    for o in &mut p.out {
                        o.flush(Some(Instant::now() + Duration::from_secs(2)));
                    }
                }
                for c in &mut self.clients {
                    if c.wants_start {
                        c.reply(serde_json::json!({"error": "the container ended"}));
                    }
                }
                // A pty's master side (the engine) may not have read the
                // last output yet; once its slave closes, what is unread is
                // lost. Wait (2 s at most) until the queue is empty.
                if let Some(c) = &self.console {
                    ipc::drain_tty(c.as_raw_fd(), Duration::from_secs(2));
                }
                return code;
            }
            // Poll set: 0 channel, 1 agent, 2 listener, 3 signals, then
            // clients, then per process stdin and blocked outputs.
            let mut fds: Vec<libc::pollfd> = vec![
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
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: signals.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let nc = self.clients.len();
            for c in &self.clients {
                fds.push(libc::pollfd {
                    fd: c.lines.sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let mut slots: Vec<(usize, u8)> = Vec::new();
            for (i, p) in self.procs.iter().enumerate() {
                let want_in = p.stdin_open
                    && p.stdin_buf.is_empty()
                    && !p.exited
                    && self.sb.stdin_credit(p.sid) > 0;
                if let (true, Some(fd)) = (want_in, p.stdin) {
                    fds.push(libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    slots.push((i, 0));
                }
                for k in 0..2 {
                    if p.out[k].blocked() {
                        fds.push(libc::pollfd {
                            fd: p.out[k].fd,
                            events: libc::POLLOUT,
                            revents: 0,
                        });
                        slots.push((i, 1 + k as u8));
                    }
                }
                if let Some(c) = &p.client {
                    fds.push(libc::pollfd {
                        fd: c.lines.sock.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    slots.push((i, 3));
                }
            }
            // SAFETY: a valid pollfd array.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
            if n < 0 {
                continue;
            }
            if fds[0].revents & libc::POLLOUT != 0 {
                let _ = self.sb.on_writable();
            }
            if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                && self.sb.on_readable().is_err()
            {
                self.sb.kill();
            }
            if fds[1].revents != 0 {
                self.sb.on_agent_exit();
            }
            if fds[3].revents != 0 {
                for s in signals.read() {
                    self.on_signal(s);
                }
            }
            if fds[2].revents != 0 {
                for s in accept_all(listener) {
                    let _ = s.set_nonblocking(true);
                    self.clients.push(Client {
                        lines: Lines::new(s),
                        fds: Vec::new(),
                        wants_start: false,
                    });
                }
            }
            // Clients: requests (one per connection, except exec's).
            let mut keep = Vec::new();
            let clients = std::mem::take(&mut self.clients);
            let mut todo = Vec::new();
            for (k, mut c) in clients.into_iter().enumerate() {
                if k < nc && fds[4 + k].revents != 0 {
                    match ipc::recv_with_fds(c.lines.sock.as_raw_fd(), &mut rbuf) {
                        Ok((0, _)) => continue,
                        Ok((n, f)) => {
                            c.fds.extend(f);
                            c.lines.feed(&rbuf[..n]);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => continue,
                    }
                }
                match c.lines.take() {
                    Ok(Some(req)) if !c.wants_start => todo.push((c, req)),
                    Ok(_) => keep.push(c),
                    Err(_) => {}
                }
            }
            self.clients = keep;
            for (c, req) in todo {
                self.handle(c, req);
            }
            // Processes: stdin, blocked outputs, waiter requests.
            for (j, (i, what)) in slots.iter().enumerate() {
                let rev = fds[4 + nc + j].revents;
                if rev == 0 {
                    continue;
                }
                let Some(p) = self.procs.get_mut(*i) else {
                    continue;
                };
                match what {
                    0 => {
                        let fd = p.stdin.unwrap_or(-1);
                        let want = rbuf.len().min(self.sb.stdin_credit(p.sid));
                        // SAFETY: reads into our buffer.
                        let r = unsafe { libc::read(fd, rbuf.as_mut_ptr().cast(), want) };
                        if r > 0 {
                            p.stdin_buf.extend_from_slice(&rbuf[..r as usize]);
                        } else if r == 0
                            || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted
                        {
                            p.stdin_open = false;
                            if !p.tty {
                                let _ = self.sb.close_stdin(p.sid);
                            }
                        }
                    }
                    1 | 2 => {
                        let k = (*what - 1) as usize;
                        let done = p.out[k].flush(None).min(p.owed[k]);
                        p.owed[k] -= done;
                        let kind = if k == 0 {
                            StreamKind::Stdout
                        } else {
                            StreamKind::Stderr
                        };
                        if done > 0 {
                            let _ = self.sb.consumed(p.sid, kind, done);
                        }
                    }
                    _ => {
                        let Some(c) = p.client.as_mut() else { continue };
                        let mut b = [0u8; 4096];
                        match c.lines.sock.read(&mut b) {
                            Ok(0) => {
                                // The waiter is gone; the process stays.
                                p.client = None;
                                continue;
                            }
                            Ok(n) => c.lines.feed(&b[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(_) => {
                                p.client = None;
                                continue;
                            }
                        }
                        let sid = p.sid;
                        let mut reqs = Vec::new();
                        while let Ok(Some(r)) = c.lines.take() {
                            reqs.push(r);
                        }
                        for r in reqs {
                            match r["op"].as_str() {
                                Some("signal") => {
                                    let s = r["signal"].as_i64().unwrap_or(15) as i32;
                                    let _ = self.sb.signal(sid, s);
                                }
                                Some("resize") => {
                                    let rows = r["rows"].as_u64().unwrap_or(24) as u16;
                                    let cols = r["cols"].as_u64().unwrap_or(80) as u16;
                                    let _ = self.sb.resize(sid, rows, cols);
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            for p in &mut self.procs {
                if !p.stdin_buf.is_empty() && !p.exited {
                    if let Ok(n) = self.sb.write_stdin(p.sid, &p.stdin_buf) {
                        p.stdin_buf.drain(..n);
                    }
                }
            }
        }
    }

    fn on_signal(&mut self, s: i32) {
        if s == libc::SIGWINCH {
            if let Some(ws) = self
                .console
                .as_ref()
                .and_then(|c| ipc::winsize_of(c.as_raw_fd()))
            {
                if let Some(p) = self.procs.iter().find(|p| p.init) {
                    let sid = p.sid;
                    let _ = self.sb.resize(sid, ws.0, ws.1);
                }
            }
            return;
        }
        // A signal to the monitor is a signal to the container's init.
        let _ = self.kill(s, false);
    }
}

/// Accepts pending connections on the control socket.
pub fn accept_all(listener: &UnixListener) -> Vec<UnixStream> {
    let mut out = Vec::new();
    while let Ok((s, _)) = listener.accept() {
        out.push(s);
    }
    out
}
