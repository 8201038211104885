//! The local tier (`--isolation none`): a plain child process for your own
//! code. No namespaces and no filesystem isolation; what it does get is a
//! scrubbed environment, a new session, a parent-death signal, closed fds,
//! limits (cgroups when available, else rlimits) and the timeout.

use crate::{limits_setup, stdio, CoreError, Notes, RunResult};
use airlock_jail::{rlimit, sys};
use airlock_spec::SandboxSpec;
use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
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
    let fallback = rlimit::Fallback {
        data: unenforced
            .contains(&airlock_jail::cgroup::Controller::Memory)
            .then_some(spec.limits.memory)
            .flatten(),
        nproc: unenforced
            .contains(&airlock_jail::cgroup::Controller::Pids)
            .then_some(spec.limits.pids)
            .flatten(),
    };
    let (host, sandbox) = stdio::pair(spec.tty)?;
    // Caught from before the fork on (the child resets its mask).
    let signals = stdio::SignalFd::new(spec.tty).map_err(CoreError::io("signalfd"))?;
    let (err_r, err_w) = sys::pipe_cloexec().map_err(CoreError::io("pipe"))?;
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    // SAFETY: the caller is single-threaded; the child only sets itself up
    // and execs.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(CoreError::io("fork")(io::Error::last_os_error()));
    }
    if pid == 0 {
        let e = child(
            me, spec.tty, &sandbox, &fallback, &workdir, &argv, &envp, &path,
        );
        let b = e.to_le_bytes();
        // SAFETY: report errno to the parent and exit without unwinding.
        unsafe {
            libc::write(err_w.as_raw_fd(), b.as_ptr().cast(), 4);
            libc::_exit(127);
        }
    }
    drop(err_w);
    drop(sandbox);
    if let Some(cg) = &cg {
        if let Err(e) = cg.add(pid) {
            // SAFETY: kill and reap our child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(e.into());
        }
    }
    let mut result = RunResult::default();
    let mut b = [0u8; 4];
    // SAFETY: reads up to 4 bytes; EOF means exec worked.
    let n = unsafe { libc::read(err_r.as_raw_fd(), b.as_mut_ptr().cast(), 4) };
    if n == 4 {
        result.exec_errno = Some(i32::from_le_bytes(b));
    }
    let r = supervise(spec, pid, host, &signals, start, &mut result);
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
    mut host: stdio::Streams,
    signals: &stdio::SignalFd,
    start: Instant,
    result: &mut RunResult,
) -> Result<(), CoreError> {
    let deadline = start + spec.limits.timeout;
    let mut status: Option<i32> = None;
    loop {
        if status.is_none() {
            let mut st = 0;
            // SAFETY: rusage is plain data; wait4 fills it.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: non-blocking wait for our child.
            if unsafe { libc::wait4(pid, &mut st, libc::WNOHANG, &mut ru) } == pid {
                status = Some(st);
                result.peak_memory_bytes = Some((ru.ru_maxrss.max(0) as u64) * 1024);
                // Whatever the command left in its process group goes too.
                // SAFETY: signals the process group the child led.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                host.close_stdin();
            }
        }
        if status.is_some() && host.drained() {
            break;
        }
        let now = Instant::now();
        if now >= deadline && !result.timed_out {
            result.timed_out = true;
            // SAFETY: kills the child's process group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
        // Short ticks while the child runs: SIGCHLD is not routed here.
        let timeout = if status.is_none() {
            (deadline.saturating_duration_since(now).as_millis() as i32).clamp(1, 20)
        } else if result.timed_out {
            100
        } else {
            (deadline.saturating_duration_since(now).as_millis() as i32).clamp(1, 100)
        };
        let ready = host.poll(&[(signals.fd(), libc::POLLIN)], timeout, spec.limits.output)?;
        if !ready.is_empty() {
            for sig in signals.read() {
                if sig == libc::SIGWINCH {
                    host.sync_winsize();
                } else if status.is_none() {
                    // SAFETY: forwards the signal to the child's group.
                    unsafe { libc::kill(-pid, sig) };
                }
            }
        }
    }
    if let Some(st) = status {
        if libc::WIFEXITED(st) {
            result.status = Some(libc::WEXITSTATUS(st) as u8);
        } else if libc::WIFSIGNALED(st) {
            result.signal = Some(libc::WTERMSIG(st) as u8);
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
    fallback: &rlimit::Fallback,
    workdir: &std::path::Path,
    argv: &[CString],
    envp: &[CString],
    path: &[PathBuf],
) -> i32 {
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
        return sys::errno_of(&e);
    }
    if let Err(e) = std::env::set_current_dir(workdir) {
        return sys::errno_of(&e);
    }
    if let Err(e) = sys::cloexec_from(3) {
        return sys::errno_of(&e);
    }
    airlock_jail::exec_search(argv, envp, path)
}
