//! A sandbox, from the host: its lifecycle, the channel to its agent, and
//! the events the agent's messages become.
//!
//! The handle is sans-loop: the caller polls [`Sandbox::fd`] (readable;
//! writable when [`Sandbox::wants_write`]) and [`Sandbox::pidfd`], calls
//! [`Sandbox::on_readable`] / [`Sandbox::on_writable`], and takes
//! [`Event`]s with [`Sandbox::next_event`] — or calls [`Sandbox::wait`],
//! which does all of that. Every message from the agent goes through
//! `HostSession`, which refuses anything the host did not ask for or grant:
//! a violation is an error for this sandbox, never a panic.

use crate::backend::{self, Backend};
use crate::facts::{self, Facts};
use crate::CoreError;
use airlock_jail::cgroup::{self, Cgroup, Controller, Layout};
use airlock_jail::spawn::Agent;
use airlock_protocol::v2::{
    self, Channel, DirEntry, ExitStatus, FsError, HostConfig, HostSession, Message, OutStream,
    Stage, Stat, StdinMode, StreamKind, Transport, WinSize, WriteFlags, MAX_DATA,
};
use airlock_spec::{Isolation, SandboxSpec, User, ValidSpec};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where a sandbox is in its life. Every transition is in [`Sandbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The agent is applying the plan.
    Creating,
    Running,
    /// Asked to stop; the agent is killing everything.
    Stopping,
    /// The agent is gone.
    Stopped,
    /// Set-up failed, or the agent broke the protocol.
    Failed,
}

/// Something that happened in a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The plan is applied: the sandbox runs.
    Ready,
    /// Something the user should hear about (a fallback taken).
    Notice(String),
    /// The set-up failed; the sandbox is over.
    SetupFailed {
        stage: Stage,
        errno: i32,
        detail: String,
    },
    Started {
        id: u32,
        pid: u32,
    },
    StartFailed {
        id: u32,
        stage: Stage,
        errno: i32,
    },
    Output {
        id: u32,
        stream: OutStream,
        data: Vec<u8>,
    },
    Eof {
        id: u32,
        stream: OutStream,
    },
    Exited {
        id: u32,
        status: ExitStatus,
        max_rss_kib: u64,
    },
    FileData {
        id: u32,
        data: Vec<u8>,
    },
    FileDone {
        id: u32,
        result: Result<u64, FsError>,
    },
    FileStat {
        id: u32,
        stat: Stat,
    },
    FileEntries {
        id: u32,
        entries: Vec<DirEntry>,
    },
    TcpOpened {
        id: u32,
    },
    TcpFailed {
        id: u32,
        errno: i32,
    },
    TcpData {
        id: u32,
        data: Vec<u8>,
    },
    TcpShutdown {
        id: u32,
    },
    TcpClosed {
        id: u32,
        reset: bool,
    },
    Pong {
        nonce: u64,
    },
    /// The agent is gone (it exited, was killed, or closed the channel).
    AgentGone,
}

/// A process to start.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    /// Variables on top of the backend's base environment.
    pub env: Vec<(String, String)>,
    /// `None`: the sandbox's working directory.
    pub cwd: Option<PathBuf>,
    /// `None`: the sandbox's user.
    pub user: Option<User>,
    /// A terminal of this size (rows, cols).
    pub pty: Option<(u16, u16)>,
    /// A stdin stream (else `/dev/null`; with a pty, the terminal's input).
    pub stdin: bool,
}

impl ProcessSpec {
    pub fn new(argv: Vec<String>) -> ProcessSpec {
        ProcessSpec {
            argv,
            env: Vec::new(),
            cwd: None,
            user: None,
            pty: None,
            stdin: false,
        }
    }
}

/// How to create a sandbox.
#[derive(Default)]
pub struct CreateOptions {
    /// Use a byte-stream channel (as a VM has) instead of a seqpacket one.
    pub stream_channel: bool,
    /// An agent started early with [`prespawn`] (its exec then overlaps
    /// with the caller's own work); else one is started now.
    pub agent: Option<PendingAgent>,
    /// The host's receive window per output stream (bytes the agent may
    /// send ahead of what the caller consumed; `None`: 256 KiB). The host
    /// holds at most this much per unread stream; a caller that drains
    /// promptly (`airlock run`) gets more throughput from a larger one.
    pub window: Option<u32>,
    /// One-shot (`airlock run`): the sandbox ends by itself once every
    /// process it was asked to start has exited and been reported (its
    /// teardown then overlaps with the caller's own end).
    pub one_shot: bool,
    /// The root of a spec that names an image, as [`crate::image::prepare`]
    /// found it (or a build step's); `None`: looked up in the default store
    /// by the spec's image name.
    pub image: Option<airlock_jail::ImageRoot>,
    /// Groups for usage figures and pause/resume even without limits (the
    /// service's sandboxes).
    pub accounting: bool,
    /// Where the egress proxy's decisions go (a sandbox whose network is
    /// not `none`); `None`: nowhere.
    pub egress_audit: Option<airlock_egress::Audit>,
    /// Limits on top of the sandbox's own, for every process (an OCI
    /// bundle's `process.rlimits`): they only ever lower.
    pub lower_rlimits: Vec<airlock_confine::rlimit::Lower>,
    /// A seccomp profile installed after airlock's allowlist in every
    /// process (an OCI bundle's `linux.seccomp`): both apply.
    pub seccomp_profile: Option<airlock_confine::seccomp::profile::Profile>,
}

/// What a sandbox uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub cpu_usec: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    /// Bytes used on the sandbox's writable layer (--disk).
    pub disk_bytes: Option<u64>,
    pub disk_limit_bytes: Option<u64>,
}

/// An agent exec'd ahead of its sandbox.
pub struct PendingAgent {
    pending: airlock_jail::spawn::Pending,
    stream: bool,
}

/// Starts an agent now, for a sandbox of tier `isolation` created soon
/// (`stream`: with a byte-stream channel). For a container, its namespaces
/// are created right away too.
pub fn prespawn(isolation: Isolation, stream: bool) -> Result<PendingAgent, CoreError> {
    prespawn_joining(isolation, stream, None)
}

/// [`prespawn`] for a container (run by root) that joins the network
/// namespace `netns` instead of getting one of its own: the caller has
/// checked that it is another sandbox's (the pods of an OCI engine).
pub fn prespawn_joining(
    isolation: Isolation,
    stream: bool,
    netns: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<PendingAgent, CoreError> {
    // Only the id mapping is needed now (the rest of the facts is probed
    // while the agent starts).
    let idmap = match isolation {
        Isolation::Container => Some(facts::idmap()),
        _ => None,
    };
    crate::timing::mark("idmap");
    Ok(PendingAgent {
        pending: airlock_jail::spawn::prespawn_joining(stream, idmap, netns)?,
        stream,
    })
}

/// What is known once a sandbox is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Teardown {
    /// Peak memory of the sandbox (its cgroup), if it had one.
    pub peak_memory_bytes: Option<u64>,
    /// The kernel's OOM killer killed something in it.
    pub oom_killed: bool,
}

/// A sandbox and the channel to its agent.
pub struct Sandbox {
    state: State,
    spec: ValidSpec,
    backend: Box<dyn Backend>,
    agent: Agent,
    reaped: bool,
    ch: Channel,
    sess: HostSession,
    cg: Option<Cgroup>,
    unenforced: Vec<Controller>,
    events: VecDeque<Event>,
    /// Processes started and not yet exited: id → pid (0 until started).
    procs: BTreeMap<u32, u32>,
    notes: Vec<String>,
    /// A microVM's QEMU monitor: pause and resume stop and continue the
    /// whole machine.
    vm_monitor: Option<airlock_vm::Qmp>,
    /// A microVM's console.
    vm_console: Option<std::fs::File>,
    /// The egress proxy and its streams (a network other than `none`).
    egress: Option<crate::egress::Egress>,
    rbuf: Vec<u8>,
}

/// The cgroups a spec's limits need, the limits that fall back to rlimits
/// (with what the user should hear), and clean-up of groups that dead
/// airlock processes left behind.
fn limits_setup(
    spec: &SandboxSpec,
    accounting: bool,
    notes: &mut Vec<String>,
) -> Result<(Option<Cgroup>, Vec<Controller>), CoreError> {
    let l = cgroup::Limits {
        memory: spec.limits.memory,
        pids: spec.limits.pids,
        cpus: spec.limits.cpus,
        always: accounting,
    };
    if l == cgroup::Limits::default() {
        return Ok((None, Vec::new()));
    }
    let layout = Layout::detect();
    cgroup::reap_stale(&layout);
    let setup = Cgroup::create(&layout, &cgroup::group_name(crate::unique()), &l)?;
    for c in &setup.unenforced {
        notes.push(match c {
            Controller::Memory => "no cgroup memory controller is available to this user: --memory is NOT a sandbox-wide limit here; each process is held to it with RLIMIT_DATA, which does not count shared mappings (run as root, or delegate a cgroup v2 subtree to this user, for a real limit)".to_string(),
            Controller::Pids => "no cgroup pids controller is available to this user: --pids is enforced with RLIMIT_NPROC instead".to_string(),
            Controller::Cpu => "no cgroup cpu controller is available to this user: --cpus is NOT enforced (run as root, or delegate a cgroup v2 subtree to this user)".to_string(),
        });
    }
    Ok((setup.cgroup, setup.unenforced))
}

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

impl Sandbox {
    /// Validates `spec`, starts its agent and sends it the plan; returns
    /// once the agent has answered the handshake (the plan is applied in
    /// the background: [`Event::Ready`] or [`Event::SetupFailed`] follows,
    /// and processes may be started at once).
    pub fn create(spec: &SandboxSpec, opts: CreateOptions) -> Result<Sandbox, CoreError> {
        crate::timing::mark("create");
        // The only gate: every backend takes a validated spec.
        let mut spec = spec.clone();
        spec.validate()?;
        // Secrets, inspected hosts or HTTP rules: the proxy terminates TLS
        // with a CA of this sandbox's own, which only its bundle trusts.
        let broker = if spec.network.mode == airlock_spec::NetMode::None {
            None
        } else {
            airlock_egress::broker::Broker::from_network(&spec.network)
                .map_err(|e| CoreError::Io {
                    what: "cannot set up TLS termination for the egress proxy",
                    err: std::io::Error::other(e),
                })?
                .map(std::sync::Arc::new)
        };
        spec.network.trust_bundle = broker
            .as_ref()
            .map(|b| std::sync::Arc::new(b.trust_bundle()));
        let spec: ValidSpec = spec.validated()?;
        let spec = &spec;
        let backend = backend::for_spec(spec)?;
        let want = match backend.isolation() {
            Isolation::Container => Some(facts::idmap()),
            _ => None,
        };
        // A microVM's agent is its guest's /init, over a byte stream.
        let vm = backend.isolation() == Isolation::Microvm;
        let stream_channel = opts.stream_channel || vm;
        let pending = if vm {
            None
        } else {
            Some(match opts.agent {
                Some(p) if p.stream == opts.stream_channel && p.pending.idmap() == want => p,
                _ => prespawn(backend.isolation(), opts.stream_channel)?,
            })
        };
        let facts = Facts::get();
        crate::timing::mark("facts");
        let mut notes = Vec::new();
        if backend.isolation() == Isolation::Landlock {
            notes.push(airlock_spec::LANDLOCK_WARNING.into());
            if facts.landlock_abi < 6 {
                notes.push(format!("Landlock ABI {} on this kernel: the command's signals and abstract unix sockets are not scoped (ABI 6, Linux 6.12+): it can signal your other processes", facts.landlock_abi));
            }
        }
        if backend.isolation() == Isolation::Container {
            if facts.landlock_abi == 0 {
                notes.push("this kernel has no Landlock: the sandbox runs without its filesystem-confinement layer (see airlock doctor)".into());
            } else if facts.landlock_abi < 6 {
                notes.push(format!("Landlock ABI {} on this kernel: the command's signals and abstract unix sockets are not scoped to the sandbox (ABI 6, Linux 6.12+)", facts.landlock_abi));
            }
        }
        let image = match (&spec.image, opts.image) {
            (airlock_spec::Image::Host, None) => None,
            (airlock_spec::Image::Host, Some(_)) => {
                return Err(CoreError::Misuse(
                    "an image root was given for a spec of the host image".into(),
                ))
            }
            (_, Some(root)) => Some(root),
            (_, None) => crate::image::root_for(spec)?,
        };
        // A microVM's limits are its guest's (RAM, vCPUs) and the agent's
        // inside it.
        let (cg, unenforced) = if vm {
            (None, Vec::new())
        } else {
            limits_setup(spec, opts.accounting, &mut notes)?
        };
        crate::timing::mark("limits");
        let mut spawned = match backend.spawn(
            pending.map(|p| p.pending),
            spec,
            facts,
            cg.as_ref(),
            &unenforced,
            image.as_ref(),
        ) {
            Ok(s) => s,
            Err(e) => {
                if let Some(cg) = cg {
                    cg.destroy();
                }
                return Err(e);
            }
        };
        crate::timing::mark("spawned");
        notes.extend(spawned.notes);
        let transport = if stream_channel {
            Transport::Stream
        } else {
            Transport::Seqpacket
        };
        let ch = Channel::new(spawned.agent.channel.as_raw_fd(), transport);
        let egress = if spec.network.mode == airlock_spec::NetMode::None {
            None
        } else {
            // Validated with the spec: it compiles.
            let policy = airlock_spec::net::Policy::compile(&spec.network)
                .map_err(airlock_spec::SpecError::from)?;
            let audit = opts
                .egress_audit
                .unwrap_or_else(|| std::sync::Arc::new(|_| {}));
            Some(crate::egress::Egress::new(
                airlock_egress::Proxy::with_broker(policy, audit, broker),
            ))
        };
        let mut sb = Sandbox {
            state: State::Creating,
            spec: spec.clone(),
            backend,
            agent: spawned.agent,
            reaped: false,
            ch,
            sess: HostSession::new(HostConfig {
                window: opts
                    .window
                    .unwrap_or(v2::DEFAULT_WINDOW)
                    .clamp(v2::MIN_WINDOW, v2::MAX_WINDOW),
                ..HostConfig::default()
            }),
            cg,
            unenforced,
            events: VecDeque::new(),
            procs: BTreeMap::new(),
            notes,
            vm_monitor: spawned.vm_monitor.take(),
            vm_console: spawned.vm_console.take(),
            egress,
            rbuf: Vec::new(),
        };
        spawned.plan.exit_when_idle = opts.one_shot;
        spawned.plan.confinement.lower_rlimits = opts.lower_rlimits;
        spawned.plan.confinement.profile = opts.seccomp_profile;
        if let Err(e) = sb.handshake(&spawned.plan.to_bytes()) {
            sb.kill();
            sb.reap(true);
            return Err(e);
        }
        Ok(sb)
    }

    /// Hello and the Plan at once: the agent answers Hello with HelloAck
    /// and then applies the plan; nothing waits for a round trip. A refused
    /// version or a failed set-up comes back as [`Event::SetupFailed`].
    fn handshake(&mut self, plan: &[u8]) -> Result<(), CoreError> {
        let _ = v2::set_nonblocking(self.ch.fd(), true);
        let hello = self.sess.hello();
        self.send(&hello)?;
        self.send(&Message::Plan {
            data: plan.to_vec(),
        })?;
        Ok(())
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn spec(&self) -> &SandboxSpec {
        &self.spec
    }

    /// The sandbox's isolation tier.
    pub fn isolation(&self) -> Isolation {
        self.backend.isolation()
    }

    /// The agent's pid on the host.
    pub fn agent_pid(&self) -> i32 {
        self.agent.pid
    }

    /// What the user should hear about the set-up so far (taken).
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Limits that no cgroup enforces (rlimit fallbacks).
    pub fn unenforced(&self) -> &[Controller] {
        &self.unenforced
    }

    fn send(&mut self, m: &Message) -> Result<(), CoreError> {
        self.sess
            .send(m, self.ch.outbound())
            .map_err(|e| CoreError::Misuse(e.to_string()))?;
        self.flush()
    }

    fn flush(&mut self) -> Result<(), CoreError> {
        match self.ch.flush() {
            Ok(_) => Ok(()),
            // The agent is gone: its exit (pidfd) ends the sandbox.
            Err(_) => Ok(()),
        }
    }

    fn next_id(&self) -> Result<u32, CoreError> {
        self.sess
            .next_id()
            .ok_or_else(|| CoreError::Misuse("out of request ids".into()))
    }

    /// Starts a process; its events carry the returned id.
    pub fn start(&mut self, p: &ProcessSpec) -> Result<u32, CoreError> {
        let id = self.next_id()?;
        let mut env = self.backend.env(&self.spec);
        for (k, v) in &p.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        let cwd = match &p.cwd {
            Some(c) => c.clone(),
            None => self.backend.cwd(&self.spec)?,
        };
        let user = p.user.unwrap_or_else(|| self.backend.user(&self.spec));
        let m = Message::ProcStart {
            id,
            argv: p.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: env
                .iter()
                .map(|(k, v)| format!("{k}={v}").into_bytes())
                .collect(),
            cwd: bytes(&cwd),
            uid: user.uid,
            gid: user.gid,
            pty: p.pty.map(|(rows, cols)| WinSize { rows, cols }),
            stdin: if p.stdin {
                StdinMode::Pipe
            } else {
                StdinMode::Null
            },
        };
        self.send(&m)?;
        self.procs.insert(id, 0);
        Ok(id)
    }

    /// How many bytes of stdin process `id` takes now (its credit).
    pub fn stdin_credit(&self, id: u32) -> usize {
        self.sess.send_credit(id, StreamKind::Stdin).unwrap_or(0) as usize
    }

    /// Sends what the credit allows of `data` to process `id`'s stdin;
    /// returns how much was taken.
    pub fn write_stdin(&mut self, id: u32, data: &[u8]) -> Result<usize, CoreError> {
        self.send_data(id, StreamKind::Stdin, data)
    }

    fn send_data(&mut self, id: u32, stream: StreamKind, data: &[u8]) -> Result<usize, CoreError> {
        let credit = self.sess.send_credit(id, stream).unwrap_or(0) as usize;
        let n = data.len().min(credit);
        let mut off = 0;
        while off < n {
            let end = (off + MAX_DATA).min(n);
            let chunk = data[off..end].to_vec();
            let m = match stream {
                StreamKind::Stdin => Message::ProcStdin { id, data: chunk },
                StreamKind::File => Message::FileData { id, data: chunk },
                _ => Message::TcpData { id, data: chunk },
            };
            self.sess
                .send(&m, self.ch.outbound())
                .map_err(|e| CoreError::Misuse(e.to_string()))?;
            off = end;
        }
        self.flush()?;
        Ok(n)
    }

    pub fn close_stdin(&mut self, id: u32) -> Result<(), CoreError> {
        // A session that is over (the agent failed its set-up, or ended)
        // has no stdin left to close: nothing to send, and the caller's
        // next events say what happened (not a protocol refusal).
        if self.sess.is_over() {
            return Ok(());
        }
        self.send(&Message::ProcCloseStdin { id })
    }

    pub fn signal(&mut self, id: u32, signo: i32) -> Result<(), CoreError> {
        self.send(&Message::ProcSignal {
            id,
            signo: signo.clamp(1, 64) as u8,
        })
    }

    pub fn resize(&mut self, id: u32, rows: u16, cols: u16) -> Result<(), CoreError> {
        self.send(&Message::ProcResize {
            id,
            size: WinSize { rows, cols },
        })
    }

    /// The host drained `n` bytes of an output stream: the agent may send
    /// that much more.
    pub fn consumed(&mut self, id: u32, stream: StreamKind, n: usize) -> Result<(), CoreError> {
        self.sess
            .consumed(id, stream, n, self.ch.outbound())
            .map_err(|e| CoreError::Misuse(e.to_string()))?;
        self.flush()
    }

    pub fn ping(&mut self, nonce: u64) -> Result<(), CoreError> {
        self.send(&Message::Ping { nonce })
    }

    // ---- files ----

    fn file_request(&mut self, make: impl FnOnce(u32) -> Message) -> Result<u32, CoreError> {
        let id = self.next_id()?;
        self.send(&make(id))?;
        Ok(id)
    }

    pub fn read_file(&mut self, path: &Path, offset: u64, len: u64) -> Result<u32, CoreError> {
        self.file_request(|id| Message::FileRead {
            id,
            path: bytes(path),
            offset,
            len,
        })
    }

    pub fn write_file(
        &mut self,
        path: &Path,
        mode: u32,
        flags: WriteFlags,
    ) -> Result<u32, CoreError> {
        self.file_request(|id| Message::FileWrite {
            id,
            path: bytes(path),
            mode,
            flags,
        })
    }

    /// Sends what the credit allows of an upload's `data`; returns how
    /// much was taken.
    pub fn file_data(&mut self, id: u32, data: &[u8]) -> Result<usize, CoreError> {
        self.send_data(id, StreamKind::File, data)
    }

    /// An upload (write or tar-in) is complete.
    pub fn file_end(&mut self, id: u32) -> Result<(), CoreError> {
        self.send(&Message::FileEnd { id })
    }

    pub fn file_cancel(&mut self, id: u32) -> Result<(), CoreError> {
        self.send(&Message::FileCancel { id })
    }

    /// How many upload bytes the agent takes now for request `id`.
    pub fn file_credit(&self, id: u32) -> usize {
        self.sess.send_credit(id, StreamKind::File).unwrap_or(0) as usize
    }

    pub fn stat(&mut self, path: &Path, follow: bool) -> Result<u32, CoreError> {
        self.file_request(|id| Message::FileStat {
            id,
            path: bytes(path),
            follow,
        })
    }

    pub fn list(&mut self, path: &Path) -> Result<u32, CoreError> {
        self.file_request(|id| Message::FileList {
            id,
            path: bytes(path),
        })
    }

    pub fn mkdir(&mut self, path: &Path, mode: u32, parents: bool) -> Result<u32, CoreError> {
        self.file_request(|id| Message::FileMkdir {
            id,
            path: bytes(path),
            mode,
            parents,
        })
    }

    pub fn remove(&mut self, path: &Path, recursive: bool) -> Result<u32, CoreError> {
        self.file_request(|id| Message::FileRemove {
            id,
            path: bytes(path),
            recursive,
        })
    }

    pub fn rename(&mut self, from: &Path, to: &Path) -> Result<u32, CoreError> {
        self.file_request(|id| Message::FileRename {
            id,
            from: bytes(from),
            to: bytes(to),
        })
    }

    pub fn chmod(&mut self, path: &Path, mode: u32) -> Result<u32, CoreError> {
        self.file_request(|id| Message::FileChmod {
            id,
            path: bytes(path),
            mode,
        })
    }

    /// A tar archive of the directory `path` (as FileData events).
    pub fn tar_out(&mut self, path: &Path) -> Result<u32, CoreError> {
        self.file_request(|id| Message::TarOut {
            id,
            path: bytes(path),
        })
    }

    /// Unpacks a tar archive (sent with [`Sandbox::file_data`], ended with
    /// [`Sandbox::file_end`]) into the directory `path`.
    pub fn tar_in(&mut self, path: &Path) -> Result<u32, CoreError> {
        self.file_request(|id| Message::TarIn {
            id,
            path: bytes(path),
        })
    }

    // ---- TCP ----

    /// Opens a TCP stream to `port` on the sandbox's loopback.
    pub fn tcp_connect(&mut self, addr: IpAddr, port: u16) -> Result<u32, CoreError> {
        self.file_request(|id| Message::TcpConnect { id, addr, port })
    }

    pub fn tcp_send(&mut self, id: u32, data: &[u8]) -> Result<usize, CoreError> {
        self.send_data(id, StreamKind::Tcp, data)
    }

    pub fn tcp_credit(&self, id: u32) -> usize {
        self.sess.send_credit(id, StreamKind::Tcp).unwrap_or(0) as usize
    }

    pub fn tcp_shutdown(&mut self, id: u32) -> Result<(), CoreError> {
        self.send(&Message::TcpShutdownWrite { id })
    }

    pub fn tcp_close(&mut self, id: u32, reset: bool) -> Result<(), CoreError> {
        self.send(&Message::TcpClose { id, reset })
    }

    // ---- pause, resume, usage ----

    /// Freezes every process of the sandbox (its cgroup's freezer).
    pub fn pause(&mut self) -> Result<(), CoreError> {
        self.freeze(true)
    }

    /// Thaws what [`Sandbox::pause`] froze.
    pub fn resume(&mut self) -> Result<(), CoreError> {
        self.freeze(false)
    }

    fn freeze(&mut self, on: bool) -> Result<(), CoreError> {
        if let Some(q) = self.vm_monitor.as_mut() {
            let cmd = if on { "stop" } else { "cont" };
            q.execute(cmd, serde_json::Value::Null, Duration::from_secs(10))?;
            return Ok(());
        }
        let cg = self.cg.as_ref().ok_or_else(|| CoreError::Io {
            what: "pause/resume needs the sandbox's own cgroup (create it with accounting)",
            err: std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        })?;
        cg.freeze(on).map_err(|err| CoreError::Io {
            what: if on {
                "freeze the sandbox"
            } else {
                "thaw the sandbox"
            },
            err,
        })
    }

    /// Changes the sandbox's cgroup limits while it runs (only those that
    /// are `Some`); needs the sandbox's own groups (`accounting`).
    pub fn update_limits(
        &mut self,
        memory: Option<u64>,
        pids: Option<u64>,
        cpus: Option<f64>,
    ) -> Result<(), CoreError> {
        let cg = self.cg.as_ref().ok_or_else(|| CoreError::Io {
            what: "changing limits needs the sandbox's own cgroup (create it with accounting)",
            err: std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        })?;
        cg.update(&cgroup::Limits {
            memory,
            pids,
            cpus,
            always: false,
        })?;
        Ok(())
    }

    /// The host pids of every process in the sandbox (its cgroups', or
    /// else the agent and its descendants).
    pub fn host_pids(&self) -> Vec<i32> {
        if self.reaped {
            return Vec::new();
        }
        let mut pids = self.cg.as_ref().map(|c| c.procs()).unwrap_or_default();
        if pids.is_empty() {
            pids = descendants(self.agent.pid);
        }
        pids
    }

    /// What the sandbox uses now (cgroup figures where it has groups; its
    /// writable layer, seen through its agent's root).
    /// What a microVM's guest kernel said last on its console (at most
    /// `max` bytes: a panic's lines), empty for other tiers.
    pub fn vm_console_tail(&self, max: usize) -> String {
        self.vm_console
            .as_ref()
            .map(|c| airlock_vm::machine::console_tail(c, max))
            .unwrap_or_default()
    }

    pub fn usage(&self) -> Usage {
        let u = self.cg.as_ref().map(|c| c.usage()).unwrap_or_default();
        let mut out = Usage {
            cpu_usec: u.cpu_usec,
            memory_bytes: u.memory_bytes,
            pids: u.pids,
            disk_bytes: None,
            disk_limit_bytes: None,
        };
        if self.backend.isolation() == Isolation::Microvm {
            // QEMU runs in no cgroup of the sandbox's: its own figures —
            // the host memory the machine holds (its RSS: guest RAM
            // touched plus QEMU's own) and the CPU time of all its
            // threads (the vCPUs'). The guest's tasks are not counted
            // from outside.
            let (cpu, mem) = if self.reaped {
                (None, None)
            } else {
                proc_usage(self.agent.pid)
            };
            out.cpu_usec = cpu;
            out.memory_bytes = mem;
            out.pids = None;
        }
        if self.backend.isolation() == Isolation::Container && !self.reaped {
            let root = format!("/proc/{}/root", self.agent.pid);
            if let Ok(c) = std::ffi::CString::new(root) {
                // SAFETY: statvfs is plain data filled by the kernel.
                let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
                // SAFETY: a valid C string and out-pointer.
                if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 {
                    let bs = st.f_frsize;
                    out.disk_limit_bytes = Some(st.f_blocks * bs);
                    out.disk_bytes = Some((st.f_blocks - st.f_bfree) * bs);
                }
            }
        }
        out
    }

    // ---- the loop ----

    /// The channel's fd: poll it for reading (and writing when
    /// [`Sandbox::wants_write`]).
    pub fn fd(&self) -> RawFd {
        self.ch.fd()
    }

    /// Readable once the agent has exited.
    pub fn pidfd(&self) -> RawFd {
        self.agent.pidfd.as_raw_fd()
    }

    pub fn wants_write(&self) -> bool {
        self.ch.wants_write()
    }

    pub fn on_writable(&mut self) -> Result<(), CoreError> {
        self.flush()
    }

    /// Reads every frame there is and turns them into events.
    pub fn on_readable(&mut self) -> Result<(), CoreError> {
        loop {
            if self.state == State::Stopped || self.state == State::Failed {
                return Ok(());
            }
            let frame = match self.ch.recv() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                // Bytes that are no frame: the agent is not to be trusted
                // any more.
                Err(v2::Error::Wire(w)) => {
                    self.state = State::Failed;
                    self.kill();
                    return Err(CoreError::AgentMisbehaved {
                        what: w.to_string(),
                    });
                }
                Err(_) => {
                    self.gone();
                    return Ok(());
                }
            };
            let msg = match self.sess.on_frame(frame) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(v) => {
                    // The agent is not to be trusted any more.
                    self.state = State::Failed;
                    self.kill();
                    return Err(CoreError::AgentMisbehaved {
                        what: v.to_string(),
                    });
                }
            };
            self.event(msg);
        }
    }

    /// The agent exited (its pidfd is readable).
    pub fn on_agent_exit(&mut self) {
        // What it sent before it exited is still in the channel.
        let _ = self.on_readable();
        self.reap(false);
        self.gone();
    }

    fn gone(&mut self) {
        if self.state != State::Stopped && self.state != State::Failed {
            self.state = State::Stopped;
        }
        if self.events.back() != Some(&Event::AgentGone) {
            self.events.push_back(Event::AgentGone);
        }
    }

    fn event(&mut self, m: Message) {
        let e = match m {
            Message::Ready => {
                crate::timing::mark("ready");
                if self.state == State::Creating {
                    self.state = State::Running;
                }
                Event::Ready
            }
            Message::Notice { text } => Event::Notice(text),
            Message::SetupFailed {
                stage,
                errno,
                detail,
            } => {
                self.state = State::Failed;
                Event::SetupFailed {
                    stage,
                    errno,
                    detail,
                }
            }
            Message::ProcStarted { id, pid } => {
                crate::timing::mark("started");
                self.procs.insert(id, pid);
                Event::Started { id, pid }
            }
            Message::ProcStartFailed { id, stage, errno } => {
                self.procs.remove(&id);
                Event::StartFailed { id, stage, errno }
            }
            Message::ProcOutput { id, stream, data } => Event::Output { id, stream, data },
            Message::ProcEof { id, stream } => Event::Eof { id, stream },
            Message::ProcExited {
                id,
                status,
                max_rss_kib,
            } => {
                crate::timing::mark("exited");
                self.procs.remove(&id);
                Event::Exited {
                    id,
                    status,
                    max_rss_kib,
                }
            }
            Message::FileData { id, data } => Event::FileData { id, data },
            Message::FileDone { id, result } => Event::FileDone { id, result },
            Message::FileStatResult { id, stat } => Event::FileStat { id, stat },
            Message::FileEntries { id, entries } => {
                // A listing is taken as it comes: its credit goes back at
                // once (the caller holds what it keeps).
                let m = Message::FileEntries { id, entries };
                let cost = m.credit_cost();
                let _ = self
                    .sess
                    .consumed(id, StreamKind::File, cost, self.ch.outbound());
                let Message::FileEntries { id, entries } = m else {
                    return;
                };
                Event::FileEntries { id, entries }
            }
            Message::TcpData { id, data } if self.is_egress(id) => {
                self.egress_data(id, data);
                return;
            }
            Message::TcpShutdownWrite { id } if self.is_egress(id) => {
                if let Some(s) = self.egress.as_mut().and_then(|e| e.streams.get_mut(&id)) {
                    s.shut_pending = true;
                    s.got_shut = true;
                }
                self.egress_flush(id);
                self.egress_maybe_close(id);
                return;
            }
            Message::TcpClose { id, .. } if self.is_egress(id) => {
                let sent = self
                    .egress
                    .as_mut()
                    .and_then(|e| e.streams.remove(&id))
                    .is_some_and(|s| s.close_sent);
                if !sent {
                    let _ = self.send(&Message::TcpClose { id, reset: false });
                }
                return;
            }
            Message::TcpOpened { id } => Event::TcpOpened { id },
            Message::TcpFailed { id, errno } => Event::TcpFailed { id, errno },
            Message::TcpData { id, data } => Event::TcpData { id, data },
            Message::TcpShutdownWrite { id } => Event::TcpShutdown { id },
            Message::TcpClose { id, reset } => Event::TcpClosed { id, reset },
            Message::Pong { nonce } => Event::Pong { nonce },
            Message::ShutdownDone => {
                self.state = State::Stopped;
                return;
            }
            // An egress connection (the session has validated the offer):
            // only to the proxy's own ports, and only with a network. The
            // proxy decides about the destination.
            Message::TcpOffer { id, dest, port } => {
                let kind = match (&dest, self.egress.as_ref()) {
                    (v2::Destination::Ip(IpAddr::V4(a)), Some(_)) if a.is_loopback() => {
                        crate::egress::Egress::kind_of(port)
                    }
                    _ => None,
                };
                let full = self
                    .egress
                    .as_ref()
                    .is_some_and(|e| e.streams.len() >= crate::egress::MAX_STREAMS);
                let opened = match (kind, self.egress.as_mut()) {
                    (Some(k), Some(e)) if !full => e.open(id, k).is_ok(),
                    _ => false,
                };
                let m = if opened {
                    Message::TcpAccept { id }
                } else {
                    Message::TcpRefuse {
                        id,
                        reason: if full {
                            v2::RefuseReason::Limit
                        } else {
                            v2::RefuseReason::Policy
                        },
                    }
                };
                let _ = self.send(&m);
                return;
            }
            _ => return,
        };
        self.events.push_back(e);
    }

    fn is_egress(&self, id: u32) -> bool {
        self.egress
            .as_ref()
            .is_some_and(|e| e.streams.contains_key(&id))
    }

    /// The sandbox's egress proxy (to change its policy while it runs).
    pub fn egress_proxy(&self) -> Option<&std::sync::Arc<airlock_egress::Proxy>> {
        self.egress.as_ref().map(|e| &e.proxy)
    }

    fn egress_data(&mut self, id: u32, data: Vec<u8>) {
        if let Some(s) = self.egress.as_mut().and_then(|e| e.streams.get_mut(&id)) {
            s.to_sock.extend_from_slice(&data);
        }
        self.egress_flush(id);
    }

    fn egress_flush(&mut self, id: u32) {
        let Some(e) = self.egress.as_mut() else {
            return;
        };
        match e.flush(id) {
            Ok(0) => {}
            Ok(n) => {
                let _ = self
                    .sess
                    .consumed(id, StreamKind::Tcp, n, self.ch.outbound());
                self.flush_quiet();
            }
            Err(()) => self.egress_reset(id),
        }
    }

    fn flush_quiet(&mut self) {
        let _ = self.ch.flush();
    }

    /// The proxy's side failed: reset the agent's stream.
    fn egress_reset(&mut self, id: u32) {
        let Some(s) = self.egress.as_mut().and_then(|e| e.streams.get_mut(&id)) else {
            return;
        };
        let owed = std::mem::take(&mut s.to_sock).len();
        if !s.close_sent {
            s.close_sent = true;
            let _ = self.send(&Message::TcpClose { id, reset: true });
        }
        if owed > 0 {
            let _ = self
                .sess
                .consumed(id, StreamKind::Tcp, owed, self.ch.outbound());
        }
    }

    /// Both halves done: close the stream.
    fn egress_maybe_close(&mut self, id: u32) {
        let Some(s) = self.egress.as_mut().and_then(|e| e.streams.get_mut(&id)) else {
            return;
        };
        if s.read_done && s.got_shut && s.to_sock.is_empty() && !s.close_sent {
            s.close_sent = true;
            let _ = self.send(&Message::TcpClose { id, reset: false });
        }
    }

    /// Extra fds a caller's own poll loop must watch (egress streams), with
    /// the events wanted; each readiness goes to [`Sandbox::on_extra`].
    pub fn extra_fds(&self, add: &mut dyn FnMut(RawFd, libc::c_short)) {
        if let Some(e) = &self.egress {
            let credit = |id| self.sess.send_credit(id, StreamKind::Tcp).unwrap_or(0) as usize;
            e.poll_set(credit, add);
        }
    }

    /// An fd from [`Sandbox::extra_fds`] is ready.
    pub fn on_extra(&mut self, fd: RawFd, revents: libc::c_short) {
        let Some(id) = self.egress.as_ref().and_then(|e| e.id_of(fd)) else {
            return;
        };
        if revents & libc::POLLOUT != 0 {
            self.egress_flush(id);
        }
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
            return;
        }
        if self.rbuf.len() < MAX_DATA {
            self.rbuf.resize(MAX_DATA, 0);
        }
        let mut buf = std::mem::take(&mut self.rbuf);
        // Several frames per wake-up while there is credit and data: one
        // poll round per 64 KiB would cost more than the copying.
        for _ in 0..16 {
            let credit = self.sess.send_credit(id, StreamKind::Tcp).unwrap_or(0) as usize;
            if credit == 0 {
                break;
            }
            let want = credit.min(MAX_DATA);
            let r = match self.egress.as_mut() {
                Some(e) => e.read(id, &mut buf[..want]),
                None => Ok(Some(0)),
            };
            match r {
                Ok(Some(0)) => break,
                Ok(Some(n)) => {
                    let _ = self.send(&Message::TcpData {
                        id,
                        data: buf[..n].to_vec(),
                    });
                }
                Ok(None) => {
                    if let Some(s) = self.egress.as_mut().and_then(|e| e.streams.get_mut(&id)) {
                        s.read_done = true;
                    }
                    let _ = self.send(&Message::TcpShutdownWrite { id });
                    self.egress_maybe_close(id);
                    break;
                }
                Err(()) => {
                    self.egress_reset(id);
                    break;
                }
            }
        }
        self.rbuf = buf;
    }

    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// One round of waiting (at most `timeout`) on the channel and the
    /// agent's exit.
    fn poll_once(&mut self, timeout: Option<Duration>) -> Result<(), CoreError> {
        let pfd = [
            libc::pollfd {
                fd: self.ch.fd(),
                events: libc::POLLIN
                    | if self.ch.wants_write() {
                        libc::POLLOUT
                    } else {
                        0
                    },
                revents: 0,
            },
            libc::pollfd {
                fd: self.agent.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let mut pfd = pfd.to_vec();
        self.extra_fds(&mut |fd, events| {
            pfd.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            })
        });
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        // SAFETY: a valid array of pollfds.
        let n = unsafe { libc::poll(pfd.as_mut_ptr(), pfd.len() as libc::nfds_t, ms) };
        if n <= 0 {
            return Ok(());
        }
        for p in &pfd[2..] {
            if p.revents != 0 {
                self.on_extra(p.fd, p.revents);
            }
        }
        if pfd[0].revents & libc::POLLOUT != 0 {
            self.on_writable()?;
        }
        if pfd[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            self.on_readable()?;
        }
        if pfd[1].revents != 0 {
            self.on_agent_exit();
        }
        Ok(())
    }

    /// The next event, waiting at most `timeout` (`None`: for ever).
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<Event>, CoreError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            if self.state == State::Stopped {
                return Ok(None);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(None);
            }
            self.poll_once(left)?;
        }
    }

    /// Stops everything at once (SIGKILL).
    pub fn kill(&mut self) {
        if self.reaped {
            return;
        }
        let started: Vec<i32> = self
            .procs
            .values()
            .filter(|&&p| p > 0)
            .map(|&p| p as i32)
            .collect();
        if self.backend.isolation().is_plain_child() {
            // The local agent kills what it started, and what those left
            // behind, if it still can: ask it first.
            if self.state == State::Running || self.state == State::Creating {
                let _ = self.send(&Message::Shutdown);
                self.state = State::Stopping;
                let end = Instant::now() + Duration::from_millis(500);
                while self.state != State::Stopped && Instant::now() < end {
                    let left = end.saturating_duration_since(Instant::now());
                    if self.poll_once(Some(left)).is_err() {
                        break;
                    }
                }
            }
        }
        self.backend.kill(&self.agent, &started);
        if let Some(cg) = &self.cg {
            cg.kill_all();
        }
        if self.state != State::Failed {
            self.state = State::Stopping;
        }
    }

    /// Reaps the agent: waiting for it (up to 5 s when `wait`), or only if
    /// it has exited.
    fn reap(&mut self, wait: bool) {
        if self.reaped {
            return;
        }
        if wait {
            let mut p = libc::pollfd {
                fd: self.agent.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, 5000) };
        }
        // SAFETY: reaps our own child if it has exited.
        let r = unsafe { libc::waitpid(self.agent.pid, std::ptr::null_mut(), libc::WNOHANG) };
        if r == self.agent.pid {
            self.reaped = true;
        }
    }

    /// Ends the sandbox: kills everything in it and waits (at most 5 s)
    /// until its agent is gone and reaped — PID 1 of a namespace is
    /// reapable only once everything else in it is. Always waited for: a
    /// child left unreaped would be reparented to init, and not every init
    /// reaps (container inits, some VM agents), so it would stay a zombie.
    pub fn close(mut self) -> Teardown {
        if !self.reaped {
            if self.state != State::Stopped {
                self.kill();
            }
            crate::timing::mark("killed");
            self.reap(true);
            crate::timing::mark("reaped");
        }
        let mut t = Teardown::default();
        if let Some(cg) = self.cg.take() {
            t.peak_memory_bytes = cg.peak_memory();
            t.oom_killed = cg.oom_killed();
            cg.destroy();
        }
        t
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            self.reap(true);
        }
        if let Some(cg) = self.cg.take() {
            cg.destroy();
        }
    }
}

/// `root` and every process below it, from `/proc` (parent links).
fn descendants(root: i32) -> Vec<i32> {
    let mut parent: Vec<(i32, i32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The fields after the command name, which may hold spaces.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(pp) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent.push((pid, pp));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out.sort_unstable();
    out
}

/// CPU time (µs, user + system of every thread) and resident memory
/// (bytes) of process `pid`, from `/proc`.
fn proc_usage(pid: i32) -> (Option<u64>, Option<u64>) {
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            // Fields after the command name (which may hold spaces and
            // parentheses): state is the first, utime the 12th, stime the 13th.
            let rest = &st[st.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            // SAFETY: sysconf with a constant.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            Some(ticks * 1_000_000 / hz)
        });
    let mem = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|st| {
            let kb = st
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()?;
            Some(kb * 1024)
        });
    (cpu, mem)
}
