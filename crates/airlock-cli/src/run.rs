//! `airlock run`: one command in a new sandbox, its stdio streamed live.
//!
//! A thin client of the core: it creates a [`Sandbox`], starts the command
//! as one process, and runs one `poll` loop over the sandbox's channel, the
//! agent's exit, our stdin, stdout and stderr, and a signalfd: output goes
//! out as it comes (stdout and stderr apart, or one terminal with `-t`),
//! with backpressure — a stream whose output our own reader has not taken
//! gets no more credit, so the sandbox's writer waits, not our memory —
//! stdin goes in within its credit, the caller's signals are forwarded, the
//! output limit and the timeout are enforced here.

use crate::stdio::{self, HostOut, RawMode, SignalFd};
use airlock_core::{
    human_duration, human_size, CoreError, Event, ExitStatus, OutStream, ProcessSpec, Sandbox,
    Stage, StreamKind,
};
use airlock_spec::SandboxSpec;
use serde::Serialize;
use std::io;
use std::time::Instant;

/// How a run ended.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunResult {
    /// The exit code airlock itself exits with (see [`RunResult::finish`]).
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
    /// What went wrong after the command (task mode's patch), if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_failed: Option<String>,
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
            self.status.map_or(125, i32::from)
        };
    }
}

/// The output limit across stdout and stderr.
struct Limit {
    limit: Option<u64>,
    kept: u64,
    noted: bool,
}

impl Limit {
    /// How much of `n` new bytes is kept.
    fn take(&mut self, n: usize) -> usize {
        let keep = match self.limit {
            Some(l) => l.saturating_sub(self.kept).min(n as u64) as usize,
            None => n,
        };
        self.kept += keep as u64;
        if keep < n && !self.noted {
            self.noted = true;
            let msg = format!(
                "\nairlock: output limit of {} bytes reached (--output-limit); the rest of stdout and stderr is dropped\n",
                self.limit.unwrap_or(0)
            );
            let _ = airlock_sys::write_all_fd(2, msg.as_bytes());
        }
        keep
    }
}

fn stream_index(s: OutStream) -> usize {
    match s {
        OutStream::Stdout => 0,
        OutStream::Stderr => 1,
    }
}

fn kind_of(i: usize) -> StreamKind {
    if i == 0 {
        StreamKind::Stdout
    } else {
        StreamKind::Stderr
    }
}

/// Runs `spec` to completion; `note` hears what the user should know.
/// `agent`: one started early (see `airlock_core::prespawn`).
pub fn run(
    spec: &SandboxSpec,
    agent: Option<airlock_core::PendingAgent>,
    image: Option<airlock_jail::ImageRoot>,
    egress_audit: Option<airlock_egress::Audit>,
    note: &mut dyn FnMut(&str),
) -> Result<RunResult, CoreError> {
    run_then(spec, agent, image, egress_audit, note, None)
}

/// `--verbose`: what the egress proxy decided, tallied per destination.
/// Bounded whatever the sandbox does: at most [`TALLY_KEYS`] destinations
/// are kept apart, the rest are counted together.
#[derive(Default)]
pub struct EgressTally {
    allowed: u64,
    denied: u64,
    by: std::collections::BTreeMap<TallyKey, Tally>,
    /// Denials printed as they came (`--verbose`), up to [`LOUD_DENIALS`].
    pub printed: u64,
}

/// (allowed, host, port).
type TallyKey = (bool, String, u16);
/// Connections, bytes out, bytes in, the last reason.
type Tally = (u64, u64, u64, String);

/// Destinations the tally keeps apart.
pub const TALLY_KEYS: usize = 256;
/// Denials `--verbose` prints one by one; the rest only in the summary.
pub const LOUD_DENIALS: u64 = 100;

impl EgressTally {
    pub fn add(&mut self, x: &airlock_egress::Decision) {
        if x.allowed {
            self.allowed += 1;
        } else {
            self.denied += 1;
        }
        let mut key = (x.allowed, x.host.clone(), x.port);
        if !self.by.contains_key(&key) && self.by.len() >= TALLY_KEYS {
            key = (x.allowed, "(other destinations)".into(), 0);
        }
        let e = self.by.entry(key).or_insert((0, 0, 0, String::new()));
        e.0 += 1;
        e.1 += x.bytes_out;
        e.2 += x.bytes_in;
        if !x.allowed {
            e.3 = x.reason.clone();
        }
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "airlock: egress: {} connection(s) allowed, {} denied",
            self.allowed, self.denied
        );
        for ((ok, host, port), (n, o, i, why)) in &self.by {
            if *ok {
                s.push_str(&format!(
                    "\n  allowed {host}:{port} x{n} ({o} bytes out, {i} bytes in)"
                ));
            } else {
                s.push_str(&format!("\n  denied  {host}:{port} x{n}: {why}"));
            }
        }
        s
    }
}

/// What to do in the sandbox once the command is over, before it goes.
pub type Then<'a> = &'a mut dyn FnMut(&mut Sandbox) -> Result<(), String>;

/// [`run`], then `then` (the sandbox stays until it is done).
pub fn run_then(
    spec: &SandboxSpec,
    agent: Option<airlock_core::PendingAgent>,
    image: Option<airlock_jail::ImageRoot>,
    egress_audit: Option<airlock_egress::Audit>,
    note: &mut dyn FnMut(&str),
    mut then: Option<Then<'_>>,
) -> Result<RunResult, CoreError> {
    let start = Instant::now();
    // Caught from now on, so a signal during start-up is forwarded, not
    // fatal to airlock alone.
    let signals = SignalFd::new(spec.tty).map_err(|err| CoreError::Io {
        what: "signalfd",
        err,
    })?;
    let mut sb = Sandbox::create(
        spec,
        airlock_core::CreateOptions {
            stream_channel: false,
            // One process, drained as fast as our stdout takes it.
            window: Some(2 << 20),
            one_shot: then.is_none(),
            accounting: false,
            agent,
            image,
            egress_audit,
            ..Default::default()
        },
    )?;
    // The timeout runs from the sandbox's creation: a microVM's first
    // start builds caches and a template first, which the command's time
    // does not include.
    let deadline = Instant::now() + spec.limits.timeout;
    for n in sb.take_notes() {
        note(&n);
    }
    let pty = spec.tty.then(|| stdio::winsize().unwrap_or((24, 80)));
    let _raw = if spec.tty { RawMode::enter() } else { None };
    let mut p = ProcessSpec::new(spec.command.clone());
    p.pty = pty;
    p.stdin = true;
    let id = sb.start(&p)?;

    let mut result = RunResult {
        isolation: sb.isolation().name(),
        ..RunResult::default()
    };
    let mut out = [HostOut::new(1), HostOut::new(2)];
    // Bytes handed to `out[i]` and not yet reported as consumed.
    let mut owed = [0usize; 2];
    let mut limit = Limit {
        limit: spec.limits.output,
        kept: 0,
        noted: false,
    };
    let mut eof = [false; 2];
    if pty.is_some() {
        // With a terminal there is no stderr stream.
        eof[1] = true;
    }
    let mut exited = false;
    let mut gone = false;
    let mut stdin_open = true;
    let mut stdin_buf: Vec<u8> = Vec::new();
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut agent_marks = Vec::new();

    loop {
        // Events first: they may end the run.
        while let Some(e) = sb.next_event() {
            match e {
                Event::Ready | Event::Started { .. } | Event::Pong { .. } => {}
                Event::Notice(t) => match airlock_core::timing::parse_notice(&t) {
                    Some(marks) => agent_marks.extend(marks),
                    None => note(&t.escape_debug().to_string()),
                },
                Event::SetupFailed {
                    stage,
                    errno,
                    detail,
                } => return Err(setup_error(spec, stage, errno, detail)),
                Event::StartFailed { stage, errno, .. } => {
                    if stage == Stage::Exec {
                        result.exec_errno = Some(errno);
                        exited = true;
                        eof = [true, true];
                    } else {
                        return Err(setup_error(
                            spec,
                            stage,
                            errno,
                            io::Error::from_raw_os_error(errno).to_string(),
                        ));
                    }
                }
                Event::Output { stream, data, .. } => {
                    let i = stream_index(stream);
                    if i == 0 {
                        result.stdout_bytes += data.len() as u64;
                    } else {
                        result.stderr_bytes += data.len() as u64;
                    }
                    let keep = limit.take(data.len());
                    if keep < data.len() {
                        if i == 0 {
                            result.stdout_truncated = true;
                        } else {
                            result.stderr_truncated = true;
                        }
                    }
                    let done = if result.timed_out {
                        keep
                    } else {
                        out[i].push(&data[..keep])
                    };
                    // `done` may include bytes queued earlier: everything
                    // queued is owed until it is written (or given up).
                    owed[i] += keep;
                    let done = done.min(owed[i]);
                    owed[i] -= done;
                    // Dropped bytes and bytes written are consumed.
                    sb.consumed(id, kind_of(i), data.len() - keep + done)?;
                }
                Event::Eof { stream, .. } => eof[stream_index(stream)] = true,
                Event::Exited {
                    status,
                    max_rss_kib,
                    ..
                } => {
                    exited = true;
                    eof = [true, true];
                    match status {
                        ExitStatus::Code(c) => result.status = Some(c),
                        ExitStatus::Signal(s) => result.signal = Some(s),
                    }
                    result.peak_memory_bytes = Some(max_rss_kib.saturating_mul(1024));
                }
                Event::AgentGone => {
                    gone = true;
                    if !exited
                        && !result.timed_out
                        && sb.isolation() == airlock_spec::Isolation::Microvm
                    {
                        // QEMU is the agent's process on the host: the
                        // whole machine is gone.
                        let said = sb.vm_console_tail(16 << 10);
                        let _ = sb.close();
                        return Err(CoreError::MicrovmGone(said));
                    }
                    if !exited && !result.timed_out {
                        // The agent died without a word: killed from
                        // outside, or by the OOM killer.
                        result.signal = Some(libc::SIGKILL as u8);
                    }
                }
                _ => {}
            }
        }
        let flushed = !out.iter().any(HostOut::blocked);
        if (exited && flushed) || gone || (result.timed_out && exited) {
            break;
        }
        let now = Instant::now();
        if now >= deadline && !result.timed_out {
            result.timed_out = true;
            // Every process of the sandbox dies with its agent.
            sb.kill();
            for o in &mut out {
                o.give_up();
            }
            break;
        }
        let timeout_ms = deadline
            .saturating_duration_since(now)
            .as_millis()
            .min(i32::MAX as u128 - 1) as i32
            + 1;

        // One poll over everything.
        let want_stdin = stdin_open && stdin_buf.is_empty() && sb.stdin_credit(id) > 0;
        let mut fds = vec![
            libc::pollfd {
                fd: sb.fd(),
                events: libc::POLLIN | if sb.wants_write() { libc::POLLOUT } else { 0 },
                revents: 0,
            },
            libc::pollfd {
                fd: sb.pidfd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if want_stdin { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if out[0].blocked() { 1 } else { -1 },
                events: libc::POLLOUT,
                revents: 0,
            },
            libc::pollfd {
                fd: if out[1].blocked() { 2 } else { -1 },
                events: libc::POLLOUT,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        sb.extra_fds(&mut |fd, events| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            })
        });
        // SAFETY: a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(CoreError::Io {
                what: "poll",
                err: e,
            });
        }
        for p in &fds[6..] {
            if p.revents != 0 {
                sb.on_extra(p.fd, p.revents);
            }
        }
        if fds[0].revents & libc::POLLOUT != 0 {
            sb.on_writable()?;
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            sb.on_readable()?;
        }
        if fds[1].revents != 0 {
            sb.on_agent_exit();
        }
        if fds[2].revents != 0 {
            let want = rbuf.len().min(sb.stdin_credit(id));
            // SAFETY: reads into our buffer.
            let r = unsafe { libc::read(0, rbuf.as_mut_ptr().cast(), want) };
            if r > 0 {
                stdin_buf.extend_from_slice(&rbuf[..r as usize]);
            } else if r == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // EOF (or no usable stdin): the command sees EOF too —
                // except with a terminal, whose line discipline has no EOF
                // to give.
                stdin_open = false;
                if pty.is_none() && !exited {
                    sb.close_stdin(id)?;
                }
            }
        }
        if !stdin_buf.is_empty() && !exited {
            let taken = sb.write_stdin(id, &stdin_buf)?;
            stdin_buf.drain(..taken);
        }
        for i in 0..2 {
            if fds[3 + i].revents != 0 {
                let done = out[i].flush(None);
                let report = done.min(owed[i]);
                owed[i] -= report;
                if report > 0 {
                    sb.consumed(id, kind_of(i), report)?;
                }
            }
        }
        if fds[5].revents != 0 {
            for sig in signals.read() {
                if sig == libc::SIGWINCH {
                    if let Some((rows, cols)) = stdio::winsize() {
                        sb.resize(id, rows, cols)?;
                    }
                } else if !exited {
                    // Even before Started: the agent starts the process
                    // before it reads this. A signal is never dropped.
                    sb.signal(id, sig)?;
                }
            }
        }
    }
    // What the command wrote is written out now, waiting for our own reader
    // until the deadline at most.
    if !result.timed_out {
        for o in &mut out {
            o.flush(Some(deadline));
        }
    }
    if let Some(f) = then.as_mut() {
        if !result.timed_out && !gone {
            if let Err(why) = f(&mut sb) {
                result.after_failed = Some(why);
            }
        }
    }
    // The sandbox is gone (and its agent reaped) before we are: with
    // one_shot it is ending already, its teardown overlapping ours.
    let proxy = sb.egress_proxy().cloned();
    let t = sb.close();
    if let Some(p) = proxy {
        // The sandbox's side of every stream is gone: its connections end
        // now, and their decisions are reported.
        p.wait_idle(std::time::Duration::from_secs(2));
    }
    airlock_core::timing::mark("closed");
    airlock_core::timing::print(&agent_marks);
    if t.peak_memory_bytes.is_some() {
        result.peak_memory_bytes = t.peak_memory_bytes;
    }
    result.oom_killed = t.oom_killed;
    result.duration_ms = start.elapsed().as_millis() as u64;
    result.finish();
    Ok(result)
}

fn setup_error(spec: &SandboxSpec, stage: Stage, errno: i32, detail: String) -> CoreError {
    let detail = if detail.is_empty() {
        io::Error::from_raw_os_error(errno).to_string()
    } else {
        detail
    };
    let detail = match stage {
        Stage::Workdir => format!(
            "working directory {}: {}",
            spec.effective_workdir().display(),
            io::Error::from_raw_os_error(errno)
        ),
        Stage::Mounts if errno == libc::ENOSPC => format!(
            "--disk {} is too small for the sandbox's own files ({detail}); give it at least a few MiB (the default is 1G)",
            human_size(spec.limits.disk)
        ),
        _ => detail,
    };
    CoreError::Setup {
        stage,
        errno,
        detail,
    }
}

/// What to print about how a run ended (nothing for a normal exit).
pub fn epilogue(spec: &SandboxSpec, r: &RunResult) -> Option<String> {
    if r.timed_out {
        Some(format!(
            "timed out after {} (--timeout); every process in the sandbox was killed",
            human_duration(spec.limits.timeout)
        ))
    } else if let Some(e) = r.exec_errno {
        Some(format!(
            "cannot run {:?} in the sandbox: {}",
            spec.command[0],
            io::Error::from_raw_os_error(e)
        ))
    } else if r.oom_killed {
        Some(
            "the sandbox ran out of memory (--memory) and the kernel killed a process in it".into(),
        )
    } else {
        None
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
    fn output_limit_counts_both_streams() {
        let mut l = Limit {
            limit: Some(10),
            kept: 0,
            noted: true,
        };
        assert_eq!(l.take(6), 6);
        assert_eq!(l.take(6), 4);
        assert_eq!(l.take(6), 0);
    }
}
