//! The service: live sandboxes, their lifecycle (lifetime and idle
//! timeouts, pause), the warm pool, the audit log, metrics and auth.

use crate::actor::{self, Cmd, Ended, Handle, Observer, ProcEvent};
use crate::api::{ApiError, ApiResult, CreateRequest};
use crate::state::{Db, SandboxRow};
use airlock_core::ExitStatus;
use airlock_spec::{Isolation, Mount, MountMode, SandboxSpec};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use utoipa::ToSchema;

/// A sandbox as the API shows it.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct SandboxInfo {
    pub id: String,
    /// creating, running, paused, stopped or failed.
    pub state: String,
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    pub created: i64,
    pub ended: Option<i64>,
    pub reason: Option<String>,
    /// Unix seconds at which it is stopped unless extended.
    pub expires: Option<i64>,
    pub idle_timeout_secs: Option<i64>,
    pub notes: Vec<String>,
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
}

impl From<SandboxRow> for SandboxInfo {
    fn from(r: SandboxRow) -> SandboxInfo {
        SandboxInfo {
            id: r.id,
            state: r.state,
            labels: r.labels,
            created: r.created,
            ended: r.ended,
            reason: r.reason,
            expires: r.expires,
            idle_timeout_secs: r.idle_timeout_secs,
            notes: r.notes,
            spec: r.spec,
        }
    }
}

struct Live {
    handle: Handle,
    deadline: Instant,
    idle: Option<Duration>,
    last_activity: Instant,
    running_execs: u64,
    paused: bool,
    /// Background processes' stdin streams and held output (for /stdin,
    /// /pty and `primary` readers).
    stdin: HashMap<u32, mpsc::Sender<Vec<u8>>>,
    primary: HashMap<u32, mpsc::Receiver<ProcEvent>>,
    /// Egress decisions written to the audit log, and those only counted
    /// since the cap was reached.
    net_rows: u64,
    net_suppressed: u64,
}

/// Egress decisions written one by one per sandbox; beyond, they are only
/// counted, and a `net-suppressed` row says how many every
/// [`NET_SUPPRESSED_EVERY`] and when the sandbox ends. A sandbox that makes
/// connections (or refused requests) in a loop cannot grow the state
/// database without bound.
pub const NET_AUDIT_ROWS: u64 = 10_000;
pub const NET_SUPPRESSED_EVERY: u64 = 100_000;

#[derive(Default)]
pub struct Metrics {
    pub created: AtomicU64,
    pub create_failed: AtomicU64,
    pub execs: AtomicU64,
    pub exec_errors: AtomicU64,
    pub stopped: AtomicU64,
    pub failed: AtomicU64,
    pub pool_hits: AtomicU64,
    /// Create latency, microseconds: sum and count.
    pub create_us_sum: AtomicU64,
    pub create_us_count: AtomicU64,
}

pub struct Service {
    pub db: Db,
    live: Mutex<HashMap<String, Live>>,
    pub metrics: Metrics,
    pub token: Option<String>,
    pub shutting_down: AtomicBool,
    /// Sandboxes of the default spec, created ahead.
    pool: Mutex<Vec<(String, Handle, Vec<String>)>>,
    pub pool_size: usize,
    pub ports: Mutex<HashMap<(String, u16), crate::ports::Forward>>,
    me: Mutex<Option<std::sync::Weak<Service>>>,
}

/// A random sandbox id: `sb-` and 16 hex digits.
fn new_id() -> String {
    let mut b = [0u8; 8];
    // SAFETY: getrandom fills our buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    let mut s = String::from("sb-");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

impl Service {
    pub fn new(db: Db, token: Option<String>, pool_size: usize) -> Arc<Service> {
        let s = Arc::new(Service {
            db,
            live: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            token,
            shutting_down: AtomicBool::new(false),
            pool: Mutex::new(Vec::new()),
            pool_size,
            ports: Mutex::new(HashMap::new()),
            me: Mutex::new(None),
        });
        *s.me.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::downgrade(&s));
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn observer(&self) -> Arc<dyn Observer> {
        let weak = self
            .me
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        Arc::new(WeakObserver(weak))
    }

    pub fn handle(&self, id: &str) -> Option<Handle> {
        self.lock().get(id).map(|l| l.handle.clone())
    }

    pub fn is_paused(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|l| l.paused)
    }

    pub fn paused(&self, id: &str, on: bool) {
        if let Some(l) = self.lock().get_mut(id) {
            l.paused = on;
            l.last_activity = Instant::now();
        }
        let _ = self.db.set_state(id, if on { "paused" } else { "running" });
        self.db.audit(
            id,
            if on { "pause" } else { "resume" },
            serde_json::json!({}),
        );
    }

    pub fn keep_process_io(
        &self,
        id: &str,
        pid: u32,
        stdin: Option<mpsc::Sender<Vec<u8>>>,
        primary: Option<mpsc::Receiver<ProcEvent>>,
    ) {
        if let Some(l) = self.lock().get_mut(id) {
            if let Some(s) = stdin {
                l.stdin.insert(pid, s);
            }
            if let Some(p) = primary {
                l.primary.insert(pid, p);
            }
        }
    }

    pub fn take_primary(&self, id: &str, pid: u32) -> Option<mpsc::Receiver<ProcEvent>> {
        self.lock().get_mut(id)?.primary.remove(&pid)
    }

    pub fn stdin_of(&self, id: &str, pid: u32) -> Option<mpsc::Sender<Vec<u8>>> {
        self.lock().get(id)?.stdin.get(&pid).cloned()
    }

    pub fn drop_stdin(&self, id: &str, pid: u32) {
        if let Some(l) = self.lock().get_mut(id) {
            l.stdin.remove(&pid);
        }
    }

    pub fn set_deadline(&self, id: &str, d: Duration) -> ApiResult<()> {
        let mut g = self.lock();
        let l = g
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found(format!("no sandbox {id}")))?;
        l.deadline = Instant::now() + d;
        drop(g);
        let _ = self
            .db
            .set_expires(id, (crate::state::now() + d.as_secs_f64()) as i64);
        Ok(())
    }

    /// The spec a create request asks for (every check of the spec holds).
    pub fn spec_of(req: &CreateRequest) -> ApiResult<(SandboxSpec, Duration, Option<Duration>)> {
        let bad = |e: airlock_spec::SpecError| ApiError::invalid(e.to_string());
        let mut s = SandboxSpec::new(vec!["true".into()]);
        match req.image.as_deref() {
            None | Some("host") => {}
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "image {other:?}: only `host` is served so far"
                )))
            }
        }
        s.isolation = match req.isolation.as_deref() {
            None | Some("container") => Isolation::Container,
            Some("none") => Isolation::None,
            Some("microvm") => Isolation::Microvm,
            Some("landlock") => Isolation::Landlock,
            Some(o) => {
                return Err(ApiError::invalid(format!(
                    "isolation {o:?}: container, none, landlock or microvm"
                )))
            }
        };
        if let Some(n) = &req.network {
            s.network = n.to_network().map_err(ApiError::invalid)?;
        }
        for m in &req.mounts {
            let mode = match m.mode.as_deref() {
                None | Some("ro") => MountMode::Ro,
                Some("rw") => MountMode::Rw,
                Some("overlay") => MountMode::Overlay,
                Some(o) => {
                    return Err(ApiError::invalid(format!(
                        "mount mode {o:?}: ro, rw or overlay"
                    )))
                }
            };
            s.mounts.push(Mount {
                source: PathBuf::from(&m.source),
                target: PathBuf::from(&m.target),
                mode,
                // Never for API clients: root-only files of a root-owned
                // tree stay unreadable to their sandboxes.
                as_owner: false,
            });
        }
        for (k, v) in &req.env {
            s.env.push((k.clone(), v.clone()));
        }
        if let Some(u) = &req.user {
            s.user = airlock_spec::parse_user(u).map_err(bad)?;
        }
        if let Some(w) = &req.workdir {
            s.workdir = Some(PathBuf::from(w));
        }
        if let Some(h) = &req.hostname {
            s.hostname = h.clone();
        }
        let l = &req.limits;
        if let Some(m) = &l.memory {
            s.limits.memory = Some(airlock_spec::parse_size(m).map_err(bad)?);
        }
        if let Some(d) = &l.disk {
            s.limits.disk = airlock_spec::parse_size(d).map_err(bad)?;
        }
        s.limits.pids = l.pids;
        s.limits.cpus = l.cpus;
        let timeout = match &l.timeout {
            Some(t) => airlock_spec::parse_duration(t).map_err(bad)?,
            None => DEFAULT_TIMEOUT,
        };
        s.limits.timeout = timeout;
        let idle = match &l.idle_timeout {
            Some(t) => Some(airlock_spec::parse_duration(t).map_err(bad)?),
            None => None,
        };
        s.validate().map_err(bad)?;
        airlock_egress::broker::check_upstream_ca(&s.network.upstream_ca)
            .map_err(ApiError::invalid)?;
        Ok((s, timeout, idle))
    }

    pub async fn create(self: Arc<Service>, req: CreateRequest) -> ApiResult<SandboxInfo> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the service is shutting down",
            ));
        }
        let (spec, timeout, idle) = Service::spec_of(&req)?;
        let t0 = Instant::now();
        let spec_json = serde_json::to_value(&req).unwrap_or(serde_json::Value::Null);
        // From the pool when the spec is the default one.
        let pooled = if req_is_default(&req) {
            self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop()
        } else {
            None
        };
        let (id, handle, notes) = match pooled {
            Some(p) => {
                self.metrics.pool_hits.fetch_add(1, Ordering::Relaxed);
                let svc = self.clone();
                tokio::spawn(async move { svc.refill().await });
                p
            }
            None => {
                let id = new_id();
                self.db
                    .insert(&id, "creating", &spec_json, &req.labels, None, None)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let obs = self.observer();
                let id2 = id.clone();
                let r = tokio::task::spawn_blocking(move || actor::spawn(id2, spec, obs))
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                match r {
                    Ok((h, n)) => (id, h, n),
                    Err(e) => {
                        self.metrics.create_failed.fetch_add(1, Ordering::Relaxed);
                        let _ = self.db.end(&id, true, &e);
                        self.db
                            .audit(&id, "fail", serde_json::json!({ "reason": e }));
                        return Err(ApiError::invalid(e));
                    }
                }
            }
        };
        self.attach_live(&id, handle, &notes, timeout, idle, &spec_json, &req.labels);
        let us = t0.elapsed().as_micros() as u64;
        self.metrics.created.fetch_add(1, Ordering::Relaxed);
        self.metrics.create_us_sum.fetch_add(us, Ordering::Relaxed);
        self.metrics.create_us_count.fetch_add(1, Ordering::Relaxed);
        match self.db.get(&id) {
            Ok(Some(r)) => Ok(r.into()),
            _ => Err(ApiError::internal("lost the sandbox's record")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attach_live(
        &self,
        id: &str,
        handle: Handle,
        notes: &[String],
        timeout: Duration,
        idle: Option<Duration>,
        spec_json: &serde_json::Value,
        labels: &BTreeMap<String, String>,
    ) {
        let expires = (crate::state::now() + timeout.as_secs_f64()) as i64;
        if self.db.get(id).ok().flatten().is_none() {
            let _ = self
                .db
                .insert(id, "creating", spec_json, labels, None, None);
        }
        let _ = self.db.set_running(id, handle.agent_pid, notes);
        let _ = self.db.set_expires(id, expires);
        let _ = self.db.with_idle(id, idle.map(|d| d.as_secs() as i64));
        self.db.audit(
            id,
            "create",
            serde_json::json!({ "spec": spec_json, "agent_pid": handle.agent_pid }),
        );
        self.lock().insert(
            id.to_string(),
            Live {
                handle,
                deadline: Instant::now() + timeout,
                idle,
                last_activity: Instant::now(),
                running_execs: 0,
                paused: false,
                stdin: HashMap::new(),
                primary: HashMap::new(),
                net_rows: 0,
                net_suppressed: 0,
            },
        );
    }

    /// Keeps the warm pool full.
    pub async fn refill(self: Arc<Service>) {
        loop {
            if self.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            let have = self.pool.lock().unwrap_or_else(|p| p.into_inner()).len();
            if have >= self.pool_size {
                return;
            }
            let (spec, _, _) = match Service::spec_of(&CreateRequest::default()) {
                Ok(s) => s,
                Err(_) => return,
            };
            let id = new_id();
            let obs = self.observer();
            let id2 = id.clone();
            let r = tokio::task::spawn_blocking(move || actor::spawn(id2, spec, obs)).await;
            match r {
                Ok(Ok((h, notes))) => {
                    self.pool
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((id, h, notes));
                }
                _ => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    pub async fn stop(&self, id: &str, reason: &str) -> ApiResult<()> {
        let h = match self.handle(id) {
            Some(h) => h,
            None => {
                return match self.db.get(id) {
                    Ok(Some(_)) => Ok(()),
                    _ => Err(ApiError::not_found(format!("no sandbox {id}"))),
                }
            }
        };
        let reason = reason.to_string();
        let _ = h
            .ask(|reply| Cmd::Stop {
                reply: Some(reply),
                reason,
            })
            .await;
        // The thread reports the end (Observer::ended); wait for it briefly
        // so that a get right after shows it stopped.
        for _ in 0..500 {
            if self.handle(id).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Stops every live sandbox and every pooled one (graceful shutdown).
    pub async fn stop_all(&self, reason: &str) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        for id in ids {
            let _ = self.stop(&id, reason).await;
        }
        let pooled: Vec<_> = self
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for (_, h, _) in pooled {
            let _ = h
                .ask(|reply| Cmd::Stop {
                    reply: Some(reply),
                    reason: "service stopped".into(),
                })
                .await;
        }
    }

    /// Stops sandboxes past their lifetime or idle for too long.
    pub async fn reaper(self: Arc<Service>) {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = Instant::now();
            let due: Vec<(String, &'static str)> = self
                .lock()
                .iter()
                .filter_map(|(id, l)| {
                    if now >= l.deadline {
                        Some((id.clone(), "its lifetime (timeout) ran out"))
                    } else if l.idle.is_some_and(|d| {
                        !l.paused
                            && l.running_execs == 0
                            && now.duration_since(l.last_activity) >= d
                    }) {
                        Some((id.clone(), "idle timeout"))
                    } else {
                        None
                    }
                })
                .collect();
            for (id, why) in due {
                let _ = self.stop(&id, why).await;
            }
        }
    }

    pub fn metrics_text(&self) -> String {
        let mut states: BTreeMap<String, u64> = BTreeMap::new();
        for s in ["creating", "running", "paused", "stopped", "failed"] {
            states.insert(s.into(), 0);
        }
        if let Ok(rows) = self.db.list(true) {
            for r in rows {
                *states.entry(r.state).or_default() += 1;
            }
        }
        let m = &self.metrics;
        let mut t = String::new();
        t += "# HELP airlock_sandboxes Sandboxes by state.\n# TYPE airlock_sandboxes gauge\n";
        for (s, n) in &states {
            t += &format!("airlock_sandboxes{{state=\"{s}\"}} {n}\n");
        }
        let counter = |t: &mut String, name: &str, help: &str, v: &AtomicU64| {
            *t += &format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            &mut t,
            "airlock_sandboxes_created_total",
            "Sandboxes created.",
            &m.created,
        );
        counter(
            &mut t,
            "airlock_sandbox_create_errors_total",
            "Creates that failed.",
            &m.create_failed,
        );
        counter(
            &mut t,
            "airlock_execs_total",
            "Processes started.",
            &m.execs,
        );
        counter(
            &mut t,
            "airlock_exec_errors_total",
            "Processes that could not start.",
            &m.exec_errors,
        );
        counter(
            &mut t,
            "airlock_pool_hits_total",
            "Creates served from the warm pool.",
            &m.pool_hits,
        );
        t += &format!(
            "# HELP airlock_create_seconds Create latency.\n# TYPE airlock_create_seconds summary\nairlock_create_seconds_sum {}\nairlock_create_seconds_count {}\n",
            m.create_us_sum.load(Ordering::Relaxed) as f64 / 1e6,
            m.create_us_count.load(Ordering::Relaxed)
        );
        t += &format!(
            "# HELP airlock_pool_ready Warm sandboxes waiting.\n# TYPE airlock_pool_ready gauge\nairlock_pool_ready {}\n",
            self.pool.lock().unwrap_or_else(|p| p.into_inner()).len()
        );
        t
    }

    fn on_exec_started(&self, sandbox: &str, id: u32, argv: &[String], user: Option<u32>) {
        self.metrics.execs.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = self.lock().get_mut(sandbox) {
            l.running_execs += 1;
            l.last_activity = Instant::now();
        }
        self.db.audit(
            sandbox,
            "exec",
            serde_json::json!({ "id": id, "argv": argv, "uid": user }),
        );
    }

    fn on_exec_ended(&self, sandbox: &str, id: u32, status: Option<ExitStatus>, secs: f64) {
        if status.is_none() {
            self.metrics.exec_errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(l) = self.lock().get_mut(sandbox) {
            l.running_execs = l.running_execs.saturating_sub(1);
            l.last_activity = Instant::now();
        }
        let code = status.map(|s| match s {
            ExitStatus::Code(c) => c as i32,
            ExitStatus::Signal(n) => 128 + n as i32,
        });
        self.db.audit(
            sandbox,
            "exec-end",
            serde_json::json!({ "id": id, "exit_code": code, "duration_secs": secs }),
        );
    }

    fn on_egress(&self, sandbox: &str, d: airlock_egress::Decision) {
        enum Do {
            Row,
            Summary(u64),
            Nothing,
        }
        let what = match self.lock().get_mut(sandbox) {
            Some(l) if l.net_rows < NET_AUDIT_ROWS => {
                l.net_rows += 1;
                Do::Row
            }
            Some(l) => {
                l.net_suppressed += 1;
                if l.net_suppressed % NET_SUPPRESSED_EVERY == 0 {
                    Do::Summary(l.net_suppressed)
                } else {
                    Do::Nothing
                }
            }
            // Ended (a connection's last decision comes after): one row.
            None => Do::Row,
        };
        match what {
            Do::Row => self.db.audit(
                sandbox,
                "net",
                serde_json::to_value(&d).unwrap_or(serde_json::Value::Null),
            ),
            Do::Summary(n) => self.db.audit(
                sandbox,
                "net-suppressed",
                serde_json::json!({ "suppressed": n, "after": NET_AUDIT_ROWS }),
            ),
            Do::Nothing => {}
        }
    }

    fn on_ended(&self, sandbox: &str, e: Ended) {
        let live = self.lock().remove(sandbox);
        if let Some(n) = live.map(|l| l.net_suppressed).filter(|&n| n > 0) {
            self.db.audit(
                sandbox,
                "net-suppressed",
                serde_json::json!({ "suppressed": n, "after": NET_AUDIT_ROWS }),
            );
        }
        crate::ports::close_all(self, sandbox);
        if e.failed {
            self.metrics.failed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.metrics.stopped.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.db.end(sandbox, e.failed, &e.reason);
        self.db.audit(
            sandbox,
            if e.failed { "fail" } else { "stop" },
            serde_json::json!({ "reason": e.reason }),
        );
    }
}

/// Whether a create request asks for exactly the default sandbox (served
/// from the pool): the same spec, lifetime and idle timeout, no labels.
fn req_is_default(r: &CreateRequest) -> bool {
    if !r.labels.is_empty() {
        return false;
    }
    match (
        Service::spec_of(r),
        Service::spec_of(&CreateRequest::default()),
    ) {
        (Ok(a), Ok(b)) => a.0 == b.0 && a.1 == b.1 && a.2 == b.2,
        _ => false,
    }
}

struct WeakObserver(std::sync::Weak<Service>);

impl Observer for WeakObserver {
    fn exec_started(&self, sandbox: &str, id: u32, argv: &[String], user: Option<u32>) {
        if let Some(s) = self.0.upgrade() {
            s.on_exec_started(sandbox, id, argv, user);
        }
    }
    fn exec_ended(&self, sandbox: &str, id: u32, status: Option<ExitStatus>, secs: f64) {
        if let Some(s) = self.0.upgrade() {
            s.on_exec_ended(sandbox, id, status, secs);
        }
    }
    fn file_written(&self, sandbox: &str, path: &str, bytes: u64) {
        if let Some(s) = self.0.upgrade() {
            s.db.audit(
                sandbox,
                "file-write",
                serde_json::json!({ "path": path, "bytes": bytes }),
            );
        }
    }
    fn activity(&self, sandbox: &str) {
        if let Some(s) = self.0.upgrade() {
            if let Some(l) = s.lock().get_mut(sandbox) {
                l.last_activity = Instant::now();
            }
        }
    }
    fn ended(&self, sandbox: &str, e: Ended) {
        if let Some(s) = self.0.upgrade() {
            s.on_ended(sandbox, e);
        }
    }
    fn egress(&self, sandbox: &str, d: airlock_egress::Decision) {
        if let Some(s) = self.0.upgrade() {
            s.on_egress(sandbox, d);
        }
    }
}

/// Bearer-token check for TCP listeners (the unix socket is guarded by
/// its mode; requests on it carry no token and need none).
pub async fn auth(State(svc): State<Arc<Service>>, req: Request, next: Next) -> Response {
    let tcp = req.extensions().get::<crate::Tcp>().is_some();
    if tcp {
        let Some(want) = &svc.token else {
            return crate::api::ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "no token configured",
            )
            .into_response();
        };
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(got.as_bytes(), want.as_bytes()) {
            return crate::api::ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Compares without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}
