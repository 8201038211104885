//! The local tier (`--isolation none`): a plain child process for your own
//! code. No namespaces and no filesystem isolation; what it does get is a
//! scrubbed environment, a new session, a parent-death signal, closed fds,
//! limits (cgroups when available, else rlimits) and the timeout.

use crate::{limits_setup, stdio, CoreError, Notes, RunResult};
use airlock_jail::{rlimit, sys};
use airlock_protocol::Stage;
use airlock_spec::SandboxSpec;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::time::Instant;

fn local_env(spec: &SandboxSpec) -> Vec<(String, String)> {
    let host = |k: &str| std::env::var(k).ok();
    let mut env: Vec<(String, String)> = Vec::new();
    for k in ["PATH", "HOME", "USER", "LANG", "TERM", "TZ"] {
        if let Some(v) = host(k) {
            env.push((k.into(), v));
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), airlock_jail::DEFAULT_PATH.into()));
    }
    for (k, v) in &spec.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

pub fn run(spec: &SandboxSpec, notes: Notes) -> Result<RunResult, CoreError> {
    let start = Instant::now();
    let (cg, unenforced) = limits_setup(spec, notes)?;
    let env = local_env(spec);
    let path: Vec<PathBuf> = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| {
            v.split(':')
                .filter(|d| d.starts_with('/'))
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    let nul = |s: &str| {
        CString::new(s)
            .map_err(|_| CoreError::from(airlock_jail::JailError::Nul { what: s.into() }))
    };
    let argv: Vec<CString> = spec
        .command
        .iter()
        .map(|a| nul(a))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| nul(&format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let workdir = match &spec.workdir {
        Some(w) => w.clone(),
        None => std::env::current_dir().map_err(CoreError::io("current directory"))?,
    };
    let fallback = rlimit::Rlimits {
        data: unenforced
            .contains(&airlock_jail::cgroup::Controller::Memory)
            .then_some(spec.limits.memory)
            .flatten(),
        nproc: unenforced
            .contains(&airlock_jail::cgroup::Controller::Pids)
            .then_some(spec.limits.pids)
            .flatten(),
        ..Default::default()
    };
    let (host, sandbox) = stdio::pair(spec.tty)?;
    // Caught from before the fork on (the child resets its mask).
    let signals = stdio::SignalFd::new(spec.tty).map_err(CoreError::io("signalfd"))?;
    let (err_r, err_w) = sys::pipe_cloexec().map_err(CoreError::io("pipe"))?;
    // The child waits on this until it is in its cgroup: nothing it starts
    // may escape the limits.
    let (go_r, go_w) = sys::pipe_cloexec().map_err(CoreError::io("pipe"))?;
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    // SAFETY: the caller is single-threaded; the child only sets itself up
    // and execs.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(CoreError::io("fork")(io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(go_w);
        let mut b = [0u8; 1];
        // SAFETY: reads one byte; EOF means the parent gave up on us.
        if unsafe { libc::read(go_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) } != 1 {
            // SAFETY: exit without unwinding in the forked child.
            unsafe { libc::_exit(125) };
        }
        let (stage, e) = child(
            me, spec.tty, &sandbox, &fallback, &workdir, &argv, &envp, &path,
        );
        let mut b = [0u8; 5];
        b[0] = stage as u8;
        b[1..].copy_from_slice(&e.to_le_bytes());
        // SAFETY: report the stage and errno to the parent and exit
        // without unwinding.
        unsafe {
            libc::write(err_w.as_raw_fd(), b.as_ptr().cast(), 5);
            libc::_exit(127);
        }
    }
    drop(err_w);
    drop(go_r);
    drop(sandbox);
    let kill_child = || {
        // SAFETY: kill and reap our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    };
    // A pidfd: readable once the child has exited, while it is not yet
    // reaped, so its pid (and process group) cannot be recycled under us.
    // SAFETY: pidfd_open on our own, unreaped child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        let e = io::Error::last_os_error();
        kill_child();
        return Err(CoreError::io("pidfd_open")(e));
    }
    // SAFETY: a new fd that we own.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd as i32) };
    if let Some(cg) = &cg {
        if let Err(e) = cg.add(pid) {
            kill_child();
            return Err(e.into());
        }
    }
    if let Err(e) = sys::write_all_fd(go_w.as_raw_fd(), b"1") {
        kill_child();
        return Err(CoreError::io("releasing the child")(e));
    }
    drop(go_w);
    let mut result = RunResult::default();
    let mut b = [0u8; 5];
    // SAFETY: reads up to 5 bytes; EOF means exec worked.
    let n = unsafe { libc::read(err_r.as_raw_fd(), b.as_mut_ptr().cast(), 5) };
    if n == 5 {
        let errno = i32::from_le_bytes([b[1], b[2], b[3], b[4]]);
        if b[0] == Stage::Exec as u8 {
            result.exec_errno = Some(errno);
        } else {
            // Set-up failed before exec: airlock's own failure (125), not
            // the command's.
            let stage = if b[0] == Stage::Workdir as u8 {
                Stage::Workdir
            } else {
                Stage::Limits
            };
            let what = io::Error::from_raw_os_error(errno);
            let detail = match stage {
                Stage::Workdir => format!("working directory {}: {what}", workdir.display()),
                _ => format!("{what}"),
            };
            // SAFETY: reaps the child, which has exited or is exiting.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            crate::finish_cgroup(cg, &mut result);
            return Err(CoreError::Setup {
                stage,
                errno,
                detail,
            });
        }
    }
    let r = supervise(spec, pid, &pidfd, host, &signals, start, &mut result);
    crate::finish_cgroup(cg, &mut result);
    r?;
    result.isolation = "none";
    result.duration_ms = start.elapsed().as_millis() as u64;
    result.finish();
    Ok(result)
}

fn supervise(
    spec: &SandboxSpec,
    pid: libc::pid_t,
    pidfd: &std::os::fd::OwnedFd,
    mut host: stdio::Streams,
    signals: &stdio::SignalFd,
    start: Instant,
    result: &mut RunResult,
) -> Result<(), CoreError> {
    let deadline = start + spec.limits.timeout;
    // The child called setsid: its process group is `pid`. Signalling it is
    // safe for as long as the child is not reaped.
    let signal_group = |sig: i32| {
        // SAFETY: the child is unreaped, so `pid` still names its group.
        unsafe { libc::kill(-pid, sig) };
    };
    loop {
        let now = Instant::now();
        if now >= deadline && !result.timed_out {
            result.timed_out = true;
            signal_group(libc::SIGKILL);
            // SAFETY: pidfd_send_signal on our own pidfd (the child may
            // have left its group).
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    0usize,
                    0u32,
                )
            };
            host.give_up_output();
        }
        let timeout = crate::poll_timeout(deadline, now, result.timed_out);
        let extra = [
            (signals.fd(), libc::POLLIN),
            (pidfd.as_raw_fd(), libc::POLLIN),
        ];
        let ready = host.poll(&extra, timeout, spec.limits.output)?;
        if ready.iter().any(|(fd, _)| *fd == signals.fd()) {
            for sig in signals.read() {
                if sig == libc::SIGWINCH {
                    host.sync_winsize();
                } else {
                    signal_group(sig);
                }
            }
        }
        if ready.iter().any(|(fd, _)| *fd == pidfd.as_raw_fd()) {
            // It has exited. Whatever it left in its group goes too, while
            // the zombie still pins the group's id; then reap it.
            signal_group(libc::SIGKILL);
            let mut st = 0;
            // SAFETY: rusage is plain data; wait4 reaps our exited child.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            unsafe { libc::wait4(pid, &mut st, 0, &mut ru) };
            result.peak_memory_bytes = Some((ru.ru_maxrss.max(0) as u64) * 1024);
            if libc::WIFEXITED(st) {
                result.status = Some(libc::WEXITSTATUS(st) as u8);
            } else if libc::WIFSIGNALED(st) {
                result.signal = Some(libc::WTERMSIG(st) as u8);
            }
            // Its output is in the pipes; a process that escaped the group
            // (and the cgroup, which goes next) may hold them open, and is
            // not waited for.
            host.close_stdin();
            host.drain_now(spec.limits.output, deadline);
            break;
        }
    }
    host.record(result);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn child(
    parent: libc::pid_t,
    tty: bool,
    stdio: &airlock_jail::Stdio,
    fallback: &rlimit::Rlimits,
    workdir: &std::path::Path,
    argv: &[CString],
    envp: &[CString],
    path: &[PathBuf],
) -> (Stage, i32) {
    // SAFETY: plain process-setup syscalls in the forked child.
    unsafe {
        libc::setsid();
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::dup2(stdio.stdin.as_raw_fd(), 0);
        libc::dup2(stdio.stdout.as_raw_fd(), 1);
        libc::dup2(stdio.stderr.as_raw_fd(), 2);
        if tty {
            libc::ioctl(0, libc::TIOCSCTTY, 0);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // PDEATHSIG is armed only now: if airlock died before, our parent
        // is someone else already.
        if libc::getppid() != parent {
            libc::_exit(125);
        }
    }
    if let Err(e) = rlimit::apply(fallback) {
        return (Stage::Limits, sys::errno_of(&e));
    }
    if let Err(e) = std::env::set_current_dir(workdir) {
        return (Stage::Workdir, sys::errno_of(&e));
    }
    if let Err(e) = sys::cloexec_from(3) {
        return (Stage::Limits, sys::errno_of(&e));
    }
    (Stage::Exec, airlock_jail::exec_search(argv, envp, path))
}
