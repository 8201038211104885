//! Whole runs on top of the service, for the clients that want a result
//! rather than a stream: a command run to its end with its output bounded
//! (the MCP tools), and task mode (`POST /v1/tasks`: a repository mounted
//! copy-on-write at /work, a command, and the git patch of what it
//! changed).
//!
//! Output is bounded while it streams: the first and the last bytes of
//! each stream are kept and the middle is counted and dropped, so a
//! command that prints a gigabyte costs the service a few kilobytes.

use crate::actor::{Cmd, FileEvent, Handle, ProcEvent};
use crate::api::{ApiError, ApiResult, CreateRequest, LimitsRequest, MountRequest};
use crate::service::Service;
use airlock_core::{ExitStatus, OutStream, ProcessSpec};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use utoipa::ToSchema;

/// The first `head` and the last `tail` bytes of a stream, and how many
/// there were in all.
#[derive(Debug, Default)]
pub struct Bounded {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    head_max: usize,
    tail_max: usize,
    total: u64,
}

impl Bounded {
    /// Keeps at most `limit` bytes: half from the start, half from the end.
    pub fn new(limit: usize) -> Bounded {
        let head_max = limit - limit / 2;
        Bounded {
            head_max,
            tail_max: limit / 2,
            ..Default::default()
        }
    }

    pub fn push(&mut self, mut d: &[u8]) {
        self.total += d.len() as u64;
        if self.head.len() < self.head_max {
            let n = (self.head_max - self.head.len()).min(d.len());
            self.head.extend_from_slice(&d[..n]);
            d = &d[n..];
        }
        if self.tail_max == 0 || d.is_empty() {
            return;
        }
        if d.len() >= self.tail_max {
            self.tail.clear();
            self.tail.extend(&d[d.len() - self.tail_max..]);
            return;
        }
        let over = (self.tail.len() + d.len()).saturating_sub(self.tail_max);
        self.tail.drain(..over);
        self.tail.extend(d);
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn truncated(&self) -> bool {
        self.total > (self.head.len() + self.tail.len()) as u64
    }

    /// The kept bytes as text (invalid UTF-8 replaced), with a note where
    /// the middle was dropped.
    pub fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        let kept = (self.head.len() + self.tail.len()) as u64;
        if self.total > kept {
            s.push_str(&format!(
                "\n[... airlock: {} bytes omitted; {} bytes in all, the first {} and the last {} shown ...]\n",
                self.total - kept,
                self.total,
                self.head.len(),
                self.tail.len()
            ));
        }
        let (a, b) = self.tail.as_slices();
        let mut t = Vec::with_capacity(a.len() + b.len());
        t.extend_from_slice(a);
        t.extend_from_slice(b);
        s.push_str(&String::from_utf8_lossy(&t));
        s
    }
}

/// How a command run to its end went.
#[derive(Debug)]
pub struct Outcome {
    /// The command's own; 128+N when killed by signal N; 124 on timeout;
    /// 126 / 127 when it could not be started / was not found.
    pub exit_code: i32,
    pub timed_out: bool,
    /// Why it could not start (exit codes 126 and 127).
    pub start_error: Option<String>,
    pub stdout: Bounded,
    pub stderr: Bounded,
    pub seconds: f64,
}

/// Runs a process in a live sandbox to its end (or `timeout`, after which
/// it is killed), keeping `limit` bytes of each output stream.
pub async fn exec_collect(
    h: &Handle,
    spec: ProcessSpec,
    timeout: Duration,
    limit: usize,
) -> Result<Outcome, String> {
    let t0 = std::time::Instant::now();
    let (tx, mut rx) = mpsc::channel(crate::actor::STREAM_EVENTS);
    let id = h
        .ask(|reply| Cmd::Exec {
            spec,
            out: Some(tx),
            stdin: None,
            reply,
        })
        .await?;
    let mut out = Outcome {
        exit_code: 0,
        timed_out: false,
        start_error: None,
        stdout: Bounded::new(limit),
        stderr: Bounded::new(limit),
        seconds: 0.0,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut killed = false;
    loop {
        let ev = if killed {
            // Killed: its exit follows; do not wait for ever on a sandbox
            // that cannot say so.
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(e) => e,
                Err(_) => break,
            }
        } else {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(e) => e,
                Err(_) => {
                    out.timed_out = true;
                    killed = true;
                    let _ = h
                        .ask(|reply| Cmd::Signal {
                            id,
                            signo: libc::SIGKILL,
                            reply,
                        })
                        .await;
                    continue;
                }
            }
        };
        let Some(ev) = ev else {
            if out.start_error.is_none() && !out.timed_out {
                return Err("the sandbox ended while the command ran".into());
            }
            break;
        };
        // Room in the stream: the sandbox may send more.
        h.poke();
        match ev {
            ProcEvent::Output { stream, data } => match stream {
                OutStream::Stdout => out.stdout.push(&data),
                OutStream::Stderr => out.stderr.push(&data),
            },
            ProcEvent::Exited { status } => {
                out.exit_code = match status {
                    ExitStatus::Code(c) => c as i32,
                    ExitStatus::Signal(n) => 128 + n as i32,
                };
                break;
            }
            ProcEvent::StartFailed { stage, errno } => {
                out.exit_code = if errno == libc::ENOENT { 127 } else { 126 };
                out.start_error = Some(format!(
                    "cannot start the command ({stage}): {}",
                    std::io::Error::from_raw_os_error(errno)
                ));
                break;
            }
            ProcEvent::Skipped { bytes } => {
                let note = format!("\n[... airlock: {bytes} bytes skipped ...]\n");
                out.stdout.push(note.as_bytes());
            }
            ProcEvent::Started { .. } => {}
        }
    }
    if out.timed_out {
        out.exit_code = 124;
    }
    out.seconds = t0.elapsed().as_secs_f64();
    Ok(out)
}

/// A `Read` over a sandbox's download, for blocking consumers (the patch
/// is computed on a blocking thread while the tree streams in).
struct DownloadReader {
    rx: mpsc::Receiver<FileEvent>,
    h: Handle,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl std::io::Read for DownloadReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            let ev = self.rx.blocking_recv();
            self.h.poke();
            match ev {
                Some(FileEvent::Data(d)) => {
                    self.buf = d;
                    self.pos = 0;
                }
                Some(FileEvent::Done(Ok(_))) => self.done = true,
                Some(FileEvent::Done(Err(e))) => {
                    return Err(std::io::Error::other(format!(
                        "cannot read the sandbox's tree: {}",
                        crate::actor::fs_text(&e)
                    )))
                }
                None => {
                    return Err(std::io::Error::other(
                        "the sandbox ended before its tree was read",
                    ))
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// This thread's file-system identity switched to a repository's owner
/// for as long as it lives. The base tree of a patch is read on the host;
/// a daemon run by root would otherwise read — and put into the patch, as
/// the old side of a file the task deleted or rewrote — files the owner
/// (whom the sandbox acts as) cannot read. Only this thread changes:
/// `setfsuid`, `setfsgid` and `setgroups` by raw syscall (glibc's
/// `setgroups` would change every thread of the daemon).
struct AsOwner {
    groups: Option<Vec<libc::gid_t>>,
}

impl AsOwner {
    fn of(repo: &std::path::Path) -> AsOwner {
        use std::os::unix::fs::MetadataExt;
        let none = AsOwner { groups: None };
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return none;
        }
        let Ok(md) = std::fs::metadata(repo) else {
            return none;
        };
        // A root-owned repository is not id-mapped: the sandbox sees its
        // files as nobody's, and so is it read here (never as root: a file
        // the sandbox could not read would otherwise come back as the old
        // side of a "deleted" file).
        let (uid, gid) = if md.uid() == 0 {
            (65534, 65534)
        } else {
            (md.uid(), md.gid())
        };
        // SAFETY: getgroups with a zero size only counts.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let mut groups = vec![0 as libc::gid_t; n.max(0) as usize];
        // SAFETY: the buffer holds n entries.
        let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
        groups.truncate(n.max(0) as usize);
        // SAFETY: raw syscalls that change only this thread's credentials.
        unsafe {
            libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>());
            libc::syscall(libc::SYS_setfsgid, gid as libc::c_long);
            libc::syscall(libc::SYS_setfsuid, uid as libc::c_long);
        }
        AsOwner {
            groups: Some(groups),
        }
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        if let Some(g) = self.groups.take() {
            // SAFETY: restores this thread's credentials as they were.
            unsafe {
                libc::syscall(libc::SYS_setfsuid, 0 as libc::c_long);
                libc::syscall(libc::SYS_setfsgid, 0 as libc::c_long);
                libc::syscall(libc::SYS_setgroups, g.len(), g.as_ptr());
            }
        }
    }
}

/// The git patch of what changed under /work against `repo` (streamed:
/// the sandbox's tree is never held whole).
pub async fn patch_of(h: &Handle, repo: std::path::PathBuf) -> Result<String, String> {
    let (tx, rx) = mpsc::channel(crate::actor::STREAM_EVENTS);
    h.ask(|reply| Cmd::Read {
        path: "/work".into(),
        tar: true,
        out: tx,
        reply,
    })
    .await?;
    let reader = DownloadReader {
        rx,
        h: h.clone(),
        buf: Vec::new(),
        pos: 0,
        done: false,
    };
    tokio::task::spawn_blocking(move || {
        let _owner = AsOwner::of(&repo);
        airlock_core::task::patch(&repo, reader, PATCH_CAPS)
            .map_err(|e| format!("cannot make the patch: {e}"))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The tier a trust level asks for, checked against an explicit
/// isolation.
pub fn tier(isolation: Option<&str>, trust: Option<&str>) -> ApiResult<Option<String>> {
    // The tier of a trust level is the policy's (airlock_core::config:
    // by default untrusted = microvm, experimental = container, own =
    // none; /etc/airlock/config.toml and the user's file may change it).
    let from_trust = match trust {
        None => None,
        Some(t) => {
            use airlock_core::config::{Trust, TrustPolicy};
            let t = Trust::parse(t).map_err(|_| {
                ApiError::invalid(format!(
                    "trust {t:?}: untrusted (microvm), experimental (container) or own (none)"
                ))
            })?;
            let policy = TrustPolicy::load()
                .map_err(|e| ApiError::invalid(format!("the trust policy: {e}")))?;
            Some(policy.tier(t).name())
        }
    };
    match (isolation, from_trust) {
        (Some(i), Some(t)) if i != t => Err(ApiError::invalid(format!(
            "isolation {i:?} and trust {:?} ask for different tiers (trust {:?} means {t}); give one",
            trust.unwrap_or_default(),
            trust.unwrap_or_default()
        ))),
        (Some(i), _) => Ok(Some(i.to_string())),
        (None, t) => Ok(t.map(str::to_string)),
    }
}

/// A repository directory on the host (an absolute path), for a
/// copy-on-write mount. Not `/` nor anything under the kernel's pseudo
/// filesystems: a task reads the whole tree to diff it.
pub fn repo_dir(repo: &str) -> ApiResult<std::path::PathBuf> {
    if !repo.starts_with('/') || repo.contains('\0') {
        return Err(ApiError::invalid(format!(
            "repo {repo:?}: an absolute path of a directory on the host"
        )));
    }
    let p =
        std::fs::canonicalize(repo).map_err(|e| ApiError::invalid(format!("repo {repo}: {e}")))?;
    if !p.is_dir() {
        return Err(ApiError::invalid(format!(
            "repo {}: not a directory",
            p.display()
        )));
    }
    let top = p.components().nth(1).map(|c| c.as_os_str().to_owned());
    if p == std::path::Path::new("/")
        || top.is_some_and(|t| t == "proc" || t == "sys" || t == "dev")
    {
        return Err(ApiError::invalid(format!(
            "repo {}: not a repository (the root or a kernel filesystem)",
            p.display()
        )));
    }
    Ok(p)
}

/// What the service diffs at most: a larger tree is an error, not a
/// daemon reading gigabytes.
pub const PATCH_CAPS: airlock_core::task::Caps = airlock_core::task::Caps {
    max_files: 200_000,
    max_bytes: 2 << 30,
};

/// A task: the repository at /work (copy-on-write), the command, and the
/// patch of what it changed.
#[derive(Deserialize, Serialize, ToSchema, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// The repository on the host (absolute path). It appears at /work,
    /// where the command starts; it is never written.
    pub repo: String,
    /// The command (`["sh", "-c", "make test"]`).
    pub argv: Vec<String>,
    /// container (default), none or microvm.
    pub isolation: Option<String>,
    /// untrusted (microvm), experimental (container) or own (none):
    /// the tier by how far the code is trusted.
    pub trust: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `timeout` is the command's (default 10m); the sandbox lives that
    /// long plus 10 minutes (at least 1h with `keep`).
    #[serde(default)]
    pub limits: LimitsRequest,
    /// `sandbox` (default), `root`, `UID[:GID]`.
    pub user: Option<String>,
    /// Bytes of stdout and of stderr returned, half from the start and
    /// half from the end (default 1 MiB each, at most 16 MiB).
    pub output_limit: Option<u64>,
    /// Leave the sandbox running (its id is in the result).
    #[serde(default)]
    pub keep: bool,
}

/// What a task did.
#[derive(Serialize, ToSchema, Debug)]
pub struct TaskResponse {
    /// The command's own; 128+N when killed by signal N; 124 on timeout;
    /// 126 / 127 when it could not be started / was not found.
    pub exit_code: i32,
    pub timed_out: bool,
    /// Its output (invalid UTF-8 replaced), bounded by `output_limit`.
    pub stdout: String,
    pub stderr: String,
    /// Bytes it wrote in all.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Whether stdout or stderr lost its middle.
    pub truncated: bool,
    /// A unified diff in git's format of everything under /work that the
    /// command changed (empty when nothing did): `git apply` reproduces it.
    pub patch: String,
    pub files_changed: usize,
    /// The sandbox's id, with `keep`.
    pub sandbox: Option<String>,
    pub notes: Vec<String>,
    pub seconds: f64,
}

pub const TASK_TIMEOUT: Duration = Duration::from_secs(600);

/// Creates a sandbox for a run: the repository (if any) copy-on-write at
/// /work, which is then the working directory.
#[allow(clippy::too_many_arguments)]
pub async fn create_for_run(
    svc: &Arc<Service>,
    isolation: Option<String>,
    repo: Option<&std::path::Path>,
    env: BTreeMap<String, String>,
    mut limits: LimitsRequest,
    user: Option<String>,
    lifetime: Duration,
    labels: BTreeMap<String, String>,
) -> ApiResult<(String, Handle, Vec<String>)> {
    limits.timeout = Some(format!("{}s", lifetime.as_secs().max(1)));
    let mut req = CreateRequest {
        isolation,
        env,
        limits,
        user,
        labels,
        ..Default::default()
    };
    if let Some(r) = repo {
        req.mounts.push(MountRequest {
            source: r.display().to_string(),
            target: "/work".into(),
            mode: Some("overlay".into()),
        });
        req.workdir = Some("/work".into());
    }
    let info = svc.clone().create(req).await?;
    let h = svc
        .handle(&info.id)
        .ok_or_else(|| ApiError::failed("the sandbox ended as soon as it started"))?;
    Ok((info.id, h, info.notes))
}

pub async fn run_task(svc: Arc<Service>, req: TaskRequest) -> ApiResult<TaskResponse> {
    let t0 = std::time::Instant::now();
    let repo = repo_dir(&req.repo)?;
    let isolation = tier(req.isolation.as_deref(), req.trust.as_deref())?;
    let timeout = match &req.limits.timeout {
        Some(t) => airlock_spec::parse_duration(t).map_err(|e| ApiError::invalid(e.to_string()))?,
        None => TASK_TIMEOUT,
    };
    let limit = req.output_limit.unwrap_or(1 << 20);
    if limit > 16 << 20 {
        return Err(ApiError::invalid("output_limit is at most 16 MiB"));
    }
    let exec = crate::api::ExecRequest {
        argv: req.argv.clone(),
        env: BTreeMap::new(),
        cwd: None,
        user: None,
        tty: None,
        stdin: false,
        background: false,
        hold_output: false,
    };
    let spec = crate::api::process_spec(&exec)?;
    let mut lifetime = timeout + Duration::from_secs(600);
    if req.keep {
        lifetime = lifetime.max(crate::service::DEFAULT_TIMEOUT);
    }
    let mut labels = BTreeMap::new();
    labels.insert("airlock.task".to_string(), repo.display().to_string());
    let (id, h, notes) = create_for_run(
        &svc,
        isolation,
        Some(&repo),
        req.env.clone(),
        req.limits.clone(),
        req.user.clone(),
        lifetime,
        labels,
    )
    .await?;
    let result = async {
        let out = exec_collect(&h, spec, timeout, limit as usize)
            .await
            .map_err(ApiError::failed)?;
        let patch = patch_of(&h, repo.clone()).await.map_err(ApiError::failed)?;
        Ok::<_, ApiError>((out, patch))
    }
    .await;
    if !req.keep || result.is_err() {
        let _ = svc.stop(&id, "the task ended").await;
    }
    let (out, patch) = result?;
    let mut notes = notes;
    if let Some(e) = &out.start_error {
        notes.push(e.clone());
    }
    Ok(TaskResponse {
        exit_code: out.exit_code,
        timed_out: out.timed_out,
        stdout: out.stdout.text(),
        stderr: out.stderr.text(),
        stdout_bytes: out.stdout.total(),
        stderr_bytes: out.stderr.total(),
        truncated: out.stdout.truncated() || out.stderr.truncated(),
        files_changed: patch
            .lines()
            .filter(|l| l.starts_with("diff --git "))
            .count(),
        patch,
        sandbox: req.keep.then_some(id),
        notes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::Bounded;

    #[test]
    fn bounded_keeps_head_and_tail() {
        let mut b = Bounded::new(8);
        for chunk in [&b"abc"[..], b"defgh", b"ijklmnop", b"qr"] {
            b.push(chunk);
        }
        assert_eq!(b.total(), 18);
        assert!(b.truncated());
        let t = b.text();
        assert!(t.starts_with("abcd\n[... airlock: 10 bytes omitted"), "{t}");
        assert!(t.ends_with("...]\nopqr"), "{t}");
    }

    #[test]
    fn bounded_small_output_is_whole() {
        let mut b = Bounded::new(100);
        b.push(b"hello ");
        b.push(b"world");
        assert!(!b.truncated());
        assert_eq!(b.text(), "hello world");
    }

    #[test]
    fn bounded_big_chunk_keeps_its_end() {
        let mut b = Bounded::new(4);
        b.push(&[b'x'; 1000]);
        b.push(b"yz");
        let t = b.text();
        assert!(t.starts_with("xx\n"), "{t}");
        assert!(t.ends_with("\nyz"), "{t}");
        assert_eq!(b.total(), 1002);
    }
}
