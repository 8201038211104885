//! Core: runs one sandbox from a spec, in any tier, and reports the result.
//!
//! The host side of a run is one single-threaded poll loop: it streams the
//! command's stdout and stderr live (separately, or merged through a pty with
//! `-t`), forwards stdin, enforces the output limit and the timeout, forwards
//! the caller's signals, and takes the command's status from the agent —
//! validated like everything that comes from inside.

mod local;
mod stdio;

use airlock_jail::cgroup::{self, Cgroup, Controller, Layout};
use airlock_jail::{seccomp, IdMap, JailError, Plan};
use airlock_protocol::{Message, ProtocolError, Stage};
use airlock_spec::{Isolation, SandboxSpec, SpecError};
use serde::Serialize;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub use stdio::{block_forwarded_signals, Streams};

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Jail(#[from] JailError),
    #[error("sandbox setup failed at {stage}: {detail}", stage = stage.name())]
    Setup {
        stage: Stage,
        errno: i32,
        detail: String,
    },
    #[error("the sandbox's agent sent an invalid message")]
    Protocol(#[from] ProtocolError),
    #[error("the sandbox's agent broke protocol: {what}")]
    AgentMisbehaved { what: &'static str },
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        err: io::Error,
    },
    #[error("the microVM tier (--isolation microvm, --trust untrusted) is not available in this build yet; use --isolation container (the default) or none")]
    MicrovmUnavailable,
}

impl CoreError {
    fn io(what: &'static str) -> impl FnOnce(io::Error) -> CoreError {
        move |err| CoreError::Io { what, err }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunResult {
    /// The exit code airlock itself exits with (see [`RunResult::code`]).
    pub exit_code: i32,
    /// The command's own exit status, if it exited.
    pub status: Option<u8>,
    /// The signal that killed the command, if one did.
    pub signal: Option<u8>,
    pub timed_out: bool,
    /// The kernel's OOM killer killed something in the sandbox.
    pub oom_killed: bool,
    /// errno of a failed exec (127: not found, 126: not executable).
    pub exec_errno: Option<i32>,
    pub duration_ms: u64,
    /// Peak memory of the sandbox (cgroup), or of its largest process.
    pub peak_memory_bytes: Option<u64>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub isolation: &'static str,
}

impl RunResult {
    /// Exit codes as DESIGN.md fixes them: the command's own, 128+N for a
    /// signal, 124 on timeout, 126/127 when it cannot be run / is not found.
    fn finish(&mut self) {
        self.exit_code = if self.timed_out {
            124
        } else if let Some(e) = self.exec_errno {
            if e == libc::ENOENT || e == libc::ENOTDIR {
                127
            } else {
                126
            }
        } else if let Some(s) = self.signal {
            128 + s as i32
        } else {
            self.status.unwrap_or(125) as i32
        };
    }
}

/// Something the user should know that is not an error.
pub type Notes<'a> = &'a mut dyn FnMut(&str);

/// How a run ends for the caller.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Return only once the kernel has torn the sandbox down and its agent
    /// is reaped. A long-lived caller wants this; a CLI that exits right
    /// after does not have to wait (every process of the sandbox is already
    /// being killed by its PID 1's exit, and the agent is reaped by init).
    /// With cgroups, the run always waits, to remove its groups.
    pub wait_for_teardown: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            wait_for_teardown: true,
        }
    }
}

/// Runs `spec` to completion.
pub fn run(spec: &SandboxSpec, notes: Notes) -> Result<RunResult, CoreError> {
    run_with(spec, notes, RunOptions::default())
}

/// Runs `spec` to completion, with options.
pub fn run_with(
    spec: &SandboxSpec,
    notes: Notes,
    opts: RunOptions,
) -> Result<RunResult, CoreError> {
    spec.validate()?;
    match spec.isolation {
        Isolation::Microvm => Err(CoreError::MicrovmUnavailable),
        Isolation::Container => run_container(spec, notes, opts),
        Isolation::None => local::run(spec, notes),
    }
}

fn unique() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (std::process::id() as u64).rotate_left(40)
}

/// Creates the cgroups a spec's limits need, says which limits fall back to
/// rlimits, and clears groups that dead airlock processes left behind.
pub(crate) fn limits_setup(
    spec: &SandboxSpec,
    notes: Notes,
) -> Result<(Option<Cgroup>, Vec<Controller>), CoreError> {
    let l = cgroup::Limits {
        memory: spec.limits.memory,
        pids: spec.limits.pids,
        cpus: spec.limits.cpus,
    };
    if l == cgroup::Limits::default() {
        return Ok((None, Vec::new()));
    }
    let layout = Layout::detect();
    cgroup::reap_stale(&layout);
    let setup = Cgroup::create(&layout, &cgroup::group_name(unique()), &l)?;
    for c in &setup.unenforced {
        notes(&match c {
            Controller::Memory => "no cgroup memory controller is available to this user: --memory is NOT a sandbox-wide limit here; each process is held to it with RLIMIT_DATA, which does not count shared mappings (run as root, or delegate a cgroup v2 subtree to this user, for a real limit)".to_string(),
            Controller::Pids => "no cgroup pids controller is available to this user: --pids is enforced with RLIMIT_NPROC instead".to_string(),
            Controller::Cpu => "no cgroup cpu controller is available to this user: --cpus is NOT enforced (run as root, or delegate a cgroup v2 subtree to this user)".to_string(),
        });
    }
    Ok((setup.cgroup, setup.unenforced))
}

/// Takes the sandbox-wide peak memory and OOM kills from the cgroup (when
/// there is one), then removes it.
pub(crate) fn finish_cgroup(cg: Option<Cgroup>, result: &mut RunResult) {
    if let Some(cg) = cg {
        if let Some(p) = cg.peak_memory() {
            result.peak_memory_bytes = Some(p);
        }
        result.oom_killed = cg.oom_killed();
        cg.destroy();
    }
}

fn run_container(
    spec: &SandboxSpec,
    notes: Notes,
    opts: RunOptions,
) -> Result<RunResult, CoreError> {
    let start = Instant::now();
    let filter = seccomp::compile().map_err(JailError::from)?;
    let (cg, unenforced) = limits_setup(spec, notes)?;
    let facts = airlock_jail::HostFacts::probe();
    let env = airlock_jail::base_env(spec, |k| std::env::var(k).ok());
    let landlock_abi = airlock_jail::landlock::abi();
    if landlock_abi == 0 {
        notes("this kernel has no Landlock: the sandbox runs without its filesystem-confinement layer (see airlock doctor)");
    } else if landlock_abi < 6 {
        notes(&format!("Landlock ABI {landlock_abi} on this kernel: the command's signals and abstract unix sockets are not scoped to the sandbox (ABI 6, Linux 6.12+)"));
    }
    let kernel = airlock_jail::rlimit::KernelLimits::probe();
    let plan = Plan::compile(
        spec,
        &facts,
        &kernel,
        IdMap::for_current_process(),
        env,
        &unenforced,
        landlock_abi,
    )?;
    let (host, sandbox) = stdio::pair(spec.tty)?;
    // Caught from now on, so a signal during start-up is forwarded, not
    // fatal to airlock alone (the sandbox resets its mask before exec).
    let signals = stdio::SignalFd::new(spec.tty).map_err(CoreError::io("signalfd"))?;
    let sb = match airlock_jail::spawn(&plan, sandbox, cg.as_ref(), &filter) {
        Ok(sb) => sb,
        Err(e) => {
            if let Some(cg) = cg {
                cg.destroy();
            }
            return Err(e.into());
        }
    };
    for n in &sb.notes {
        notes(n);
    }
    let out = supervise(spec, &sb.channel, sb.pid, host, &signals, start, notes);
    let mut result = match out {
        Ok(r) => r,
        Err(e) => {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(sb.pid, libc::SIGKILL);
                libc::waitpid(sb.pid, std::ptr::null_mut(), 0);
            }
            if let Some(cg) = cg {
                cg.destroy();
            }
            return Err(e);
        }
    };
    // The agent has exited (or was killed), and with it every process of
    // the namespace is being killed; reaping it waits for the kernel's
    // teardown of the namespaces.
    // A run that timed out (or whose agent was killed) says every process
    // was killed: it waits for that — PID 1 of a namespace becomes
    // reapable only once every other process in it is gone — though not
    // for ever (a task stuck in the kernel cannot hold airlock).
    if opts.wait_for_teardown || cg.is_some() {
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(sb.pid, std::ptr::null_mut(), 0) };
    } else if result.timed_out || result.status.is_none() {
        reap_within(sb.pid, Duration::from_secs(5));
    } else {
        // SAFETY: reaps our own child if it is done; init reaps it else.
        unsafe { libc::waitpid(sb.pid, std::ptr::null_mut(), libc::WNOHANG) };
    }
    finish_cgroup(cg, &mut result);
    result.isolation = "container";
    result.duration_ms = start.elapsed().as_millis() as u64;
    result.finish();
    Ok(result)
}

/// Reaps `pid` (our child) once it has exited, waiting at most `limit`.
fn reap_within(pid: libc::pid_t, limit: Duration) {
    // SAFETY: pidfd_open on our own unreaped child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 {
        let mut p = libc::pollfd {
            fd: fd as i32,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = limit.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd; then closing the fd we opened.
        unsafe {
            libc::poll(&mut p, 1, ms);
            libc::close(fd as i32);
        }
    }
    // SAFETY: reaps our own child if it is done.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
}

/// The host loop of a container run.
fn supervise(
    spec: &SandboxSpec,
    channel: &OwnedFd,
    agent: libc::pid_t,
    mut host: Streams,
    signals: &stdio::SignalFd,
    start: Instant,
    notes: Notes,
) -> Result<RunResult, CoreError> {
    let deadline = start + spec.limits.timeout;
    let mut result = RunResult::default();
    let mut buf = vec![0u8; airlock_protocol::MAX_FRAME];
    let mut started = false;
    let mut exited = false;
    let mut channel_open = true;
    loop {
        if exited && host.drained() {
            break;
        }
        if !channel_open && host.drained() {
            break;
        }
        let now = Instant::now();
        if now >= deadline && !result.timed_out {
            result.timed_out = true;
            // SAFETY: kills the agent, PID 1 of the sandbox: the kernel kills
            // every process in its namespace.
            unsafe { libc::kill(agent, libc::SIGKILL) };
            host.give_up_output();
        }
        let timeout = poll_timeout(deadline, now, result.timed_out);
        let mut extra = Vec::new();
        if channel_open {
            extra.push((channel.as_raw_fd(), libc::POLLIN));
        }
        extra.push((signals.fd(), libc::POLLIN));
        let ready = host.poll(&extra, timeout, spec.limits.output)?;
        for (fd, revents) in ready {
            if fd == signals.fd() {
                for sig in signals.read() {
                    if sig == libc::SIGWINCH {
                        host.sync_winsize();
                    } else if !exited {
                        // Even before `Started` has arrived: the command
                        // may already run (and have printed), and the agent
                        // reads the channel as soon as it has forked it. A
                        // signal is never dropped.
                        send(channel, &Message::Signal { signo: sig as u8 });
                    }
                }
            } else if fd == channel.as_raw_fd() && revents != 0 {
                // SAFETY: receives into `buf`, which has MAX_FRAME bytes.
                let n = unsafe {
                    libc::recv(
                        channel.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n == 0 || (n < 0 && !would_block()) {
                    channel_open = false;
                    if !exited && !result.timed_out {
                        // The agent died without a word: killed from
                        // outside, or by the OOM killer.
                        result.signal = Some(libc::SIGKILL as u8);
                    }
                    // The sandbox is gone (timed out, or killed): what it
                    // wrote is in the pipes. Take that and finish, never
                    // waiting for an end-of-file that a process it passed
                    // its stdout to (through a unix socket) could withhold.
                    host.close_stdin();
                    host.drain_now(spec.limits.output, deadline);
                    continue;
                }
                if n < 0 {
                    continue;
                }
                match Message::decode(&buf[..n as usize])? {
                    Message::Started { .. } if !started => started = true,
                    // Set-up notes come from the agent before it runs the
                    // command; what a taken-over agent could send later is
                    // refused below. Control characters are escaped.
                    Message::Note { text } if !started && !exited => {
                        notes(&text.escape_debug().to_string())
                    }
                    Message::Exited {
                        code,
                        signal,
                        max_rss_kib,
                    } if started && !exited => {
                        exited = true;
                        result.status = code;
                        result.signal = signal;
                        result.peak_memory_bytes = Some(max_rss_kib.saturating_mul(1024));
                        host.close_stdin();
                        // All the command wrote is in the pipes now.
                        host.drain_now(spec.limits.output, deadline);
                    }
                    Message::ExecFailed { errno } if !started => {
                        exited = true;
                        result.exec_errno = Some(errno);
                    }
                    Message::SetupFailed {
                        stage,
                        errno,
                        detail,
                    } if !started => {
                        let detail = if detail.is_empty() {
                            format!("{}", io::Error::from_raw_os_error(errno))
                        } else {
                            detail
                        };
                        let detail = match stage {
                            Stage::Workdir => format!(
                                "working directory {}: {detail}",
                                spec.effective_workdir().display()
                            ),
                            Stage::Mounts if errno == libc::ENOSPC => format!(
                                "--disk {} is too small for the sandbox's own files ({detail}); give it at least a few MiB (the default is 1G)",
                                human_size(spec.limits.disk)
                            ),
                            _ => detail,
                        };
                        return Err(CoreError::Setup {
                            stage,
                            errno,
                            detail,
                        });
                    }
                    _ => {
                        return Err(CoreError::AgentMisbehaved {
                            what: "a message out of order",
                        })
                    }
                }
            }
        }
    }
    host.record(&mut result);
    Ok(result)
}

/// How long the host loop may sleep: until the deadline (just past it, so
/// the wake-up finds it passed), or for good once the run has timed out and
/// only the sandbox's end is awaited.
pub(crate) fn poll_timeout(deadline: Instant, now: Instant, timed_out: bool) -> i32 {
    if timed_out {
        -1
    } else {
        deadline
            .saturating_duration_since(now)
            .as_millis()
            .min(i32::MAX as u128 - 1) as i32
            + 1
    }
}

fn would_block() -> bool {
    matches!(
        io::Error::last_os_error().raw_os_error(),
        Some(libc::EAGAIN) | Some(libc::EINTR)
    )
}

fn send(channel: &OwnedFd, m: &Message) {
    let b = m.encode();
    // SAFETY: `b` is valid for its length.
    unsafe {
        libc::send(
            channel.as_raw_fd(),
            b.as_ptr().cast(),
            b.len(),
            libc::MSG_NOSIGNAL,
        )
    };
}

/// Formats a size the way users type it (`64K`, `1M`, `1.5G`).
pub fn human_size(n: u64) -> String {
    for (unit, shift) in [("G", 30), ("M", 20), ("K", 10)] {
        let u = 1u64 << shift;
        if n >= u {
            return if n.is_multiple_of(u) {
                format!("{}{unit}", n / u)
            } else {
                format!("{:.1}{unit}", n as f64 / u as f64)
            };
        }
    }
    n.to_string()
}

/// Formats a duration the way users typed it.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 && s < 60 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(3600) && s > 0 {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let mut r = RunResult {
            status: Some(3),
            ..Default::default()
        };
        r.finish();
        assert_eq!(r.exit_code, 3);
        r.signal = Some(9);
        r.status = None;
        r.finish();
        assert_eq!(r.exit_code, 137);
        r.timed_out = true;
        r.finish();
        assert_eq!(r.exit_code, 124);
        let mut r = RunResult {
            exec_errno: Some(libc::ENOENT),
            ..Default::default()
        };
        r.finish();
        assert_eq!(r.exit_code, 127);
        r.exec_errno = Some(libc::EACCES);
        r.finish();
        assert_eq!(r.exit_code, 126);
    }

    #[test]
    fn durations_print_as_typed() {
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
    }
}
