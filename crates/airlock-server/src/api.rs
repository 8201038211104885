//! REST API v1: sandboxes, processes (NDJSON or SSE event streams, stdin,
//! signals, a PTY over WebSocket), files (streamed, tar, watch), ports,
//! audit, usage; plus /healthz, /metrics and /openapi.json.

use crate::actor::{Cmd, FileEvent, Handle, ProcEvent, ProcInfo};
use crate::service::{SandboxInfo, Service};
use crate::state::AuditRow;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// An API error: `{"error":{"code","message"}}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code (not_found, invalid, conflict, ...).
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }
    pub fn invalid(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", what)
    }
    pub fn bad_request(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", what)
    }
    pub fn conflict(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", what)
    }
    /// A failure inside the sandbox (a file that is not there, a process
    /// that is gone): the request was fine, the operation was not.
    pub fn failed(what: impl Into<String>) -> ApiError {
        let m: String = what.into();
        let status = if m.contains("No such file") || m.contains("no process") {
            StatusCode::NOT_FOUND
        } else if m.contains("the sandbox is gone") || m.contains("has exited") {
            // A wrong state, not a wrong request: e.g. a signal to a
            // process that has ended.
            StatusCode::CONFLICT
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        ApiError::new(status, "failed", m)
    }
    pub fn internal(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body that reports its problems as API errors (400 for bad JSON,
/// 422 for the wrong fields, 413 when too large).
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) => {
                use axum::extract::rejection::JsonRejection::*;
                Err(match &e {
                    JsonDataError(_) => ApiError::invalid(e.body_text()),
                    JsonSyntaxError(_) => ApiError::bad_request(e.body_text()),
                    MissingJsonContentType(_) => ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        e.body_text(),
                    ),
                    BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.body_text())
                    }
                    _ => ApiError::bad_request(e.body_text()),
                })
            }
        }
    }
}

// ----------------------------------------------------------------- types

/// Resource limits of a new sandbox. Sizes: `512M`, `1G`, `1048576`;
/// durations: `30s`, `5m`, `1h`.
#[derive(Deserialize, Serialize, ToSchema, Default, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    pub memory: Option<String>,
    pub pids: Option<u64>,
    pub cpus: Option<f64>,
    pub disk: Option<String>,
    /// Maximum lifetime (default 1h).
    pub timeout: Option<String>,
    /// Stop after this long with no exec, file or port activity.
    pub idle_timeout: Option<String>,
}

/// A mount: `{"source": "/abs/host/path", "target": "/work", "mode": "ro"}`.
#[derive(Deserialize, Serialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    pub source: String,
    pub target: String,
    /// ro (default), rw or overlay.
    pub mode: Option<String>,
}

/// A network policy: a mode name, or the rules.
#[derive(Deserialize, Serialize, ToSchema, Clone, Debug)]
#[serde(untagged)]
pub enum NetworkSpec {
    /// `none`, `all` or `allowlist`.
    Mode(String),
    Policy(NetworkRequest),
}

/// The rules of a network policy (each `NAME`, `*.SUFFIX` or `CIDR`, with
/// an optional `:PORT`).
#[derive(Deserialize, Serialize, ToSchema, Default, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequest {
    /// `all` or `allowlist` (default when rules are given; `none` without).
    pub mode: Option<String>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    /// `NAME=IP`: the proxy's resolver answers NAME with IP.
    #[serde(default)]
    pub dns_override: Vec<String>,
    /// Credentials the proxy swaps in (TLS terminated on their hosts);
    /// only at creation. Their values are never returned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRequest>,
    /// Names whose TLS the proxy terminates without a secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inspect: Vec<String>,
    /// `METHODS HOST/PATH-GLOB` rules for terminated hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_http: Vec<String>,
    /// PEM certificates trusted for the upstream servers of terminated
    /// hosts (besides the system's roots).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream_ca: Vec<String>,
}

/// A secret for the sandbox: inside, `name` holds a placeholder; requests
/// to `hosts` carry `value` instead. The value is write-only: it is never
/// serialized (not in responses, not in the state database).
#[derive(Deserialize, Serialize, ToSchema, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct SecretRequest {
    pub name: String,
    pub hosts: Vec<String>,
    #[serde(skip_serializing)]
    #[schema(write_only)]
    pub value: String,
}

impl std::fmt::Debug for SecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRequest")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl NetworkSpec {
    /// The spec's form (not yet validated).
    pub fn to_network(&self) -> Result<airlock_spec::Network, String> {
        use airlock_spec::NetMode;
        let mode = |m: &str| match m {
            "none" => Ok(NetMode::None),
            "all" => Ok(NetMode::All),
            "allowlist" => Ok(NetMode::Allowlist),
            o => Err(format!(
                "network {o:?}: none, all, allowlist or a policy object"
            )),
        };
        Ok(match self {
            NetworkSpec::Mode(m) => airlock_spec::Network {
                mode: mode(m)?,
                ..Default::default()
            },
            NetworkSpec::Policy(p) => airlock_spec::Network {
                mode: match &p.mode {
                    Some(m) => mode(m)?,
                    None if p.allow.is_empty() && p.deny.is_empty() => NetMode::None,
                    None => NetMode::Allowlist,
                },
                allow: p.allow.clone(),
                deny: p.deny.clone(),
                dns_override: p.dns_override.clone(),
                secrets: p
                    .secrets
                    .iter()
                    .map(|x| {
                        Ok(airlock_spec::net::SecretBinding {
                            name: x.name.clone(),
                            hosts: x.hosts.clone(),
                            placeholder: airlock_spec::net::random_placeholder()
                                .map_err(|e| format!("a placeholder for a secret: {e}"))?,
                            value: airlock_spec::net::SecretValue(x.value.clone()),
                        })
                    })
                    .collect::<Result<_, String>>()?,
                inspect: p.inspect.clone(),
                allow_http: p.allow_http.clone(),
                upstream_ca: p.upstream_ca.clone(),
                trust_bundle: None,
            },
        })
    }
}

/// A new sandbox.
#[derive(Deserialize, Serialize, ToSchema, Default, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// `host` (default).
    pub image: Option<String>,
    /// container (default), none, landlock or microvm.
    pub isolation: Option<String>,
    #[serde(default)]
    pub mounts: Vec<MountRequest>,
    /// Variables every process starts with.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub limits: LimitsRequest,
    /// `none` (loopback only, the default), `all`, or a policy object
    /// (`{"allow": ["github.com", "*.pypi.org:443"], "deny": [...],
    /// "dns_override": ["name=ip"]}`); enforced by the egress proxy.
    pub network: Option<NetworkSpec>,
    /// `sandbox` (default), `root`, `UID[:GID]`.
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    /// Labels to find it by (`GET /v1/sandboxes?label=k=v`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// `key=value`: only sandboxes with that label.
    pub label: Option<String>,
    /// Include stopped and failed ones.
    pub all: Option<bool>,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutRequest {
    /// The new lifetime from now (`30m`).
    pub timeout: String,
}

/// A process to start.
#[derive(Deserialize, Serialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    /// A terminal of this size (rows, cols); use `/pty` to talk to it.
    pub tty: Option<TtySize>,
    /// Give it a stdin stream (`/stdin`); else /dev/null.
    #[serde(default)]
    pub stdin: bool,
    /// Return its id at once instead of streaming its events.
    #[serde(default)]
    pub background: bool,
    /// With `background`: hold its output (the process waits) until a
    /// reader attaches with `primary=true`, so nothing is lost.
    #[serde(default)]
    pub hold_output: bool,
}

#[derive(Deserialize, Serialize, ToSchema, Clone, Copy, Debug)]
#[serde(deny_unknown_fields)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Serialize, ToSchema)]
pub struct ExecStarted {
    pub id: u32,
}

#[derive(Deserialize, IntoParams)]
pub struct EventsQuery {
    /// First replay the output kept so far (the last 1 MiB).
    pub replay: Option<bool>,
    /// Become the process's primary reader: its output waits for this
    /// stream (nothing is dropped).
    pub primary: Option<bool>,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// A number (15) or a name (TERM, SIGTERM).
    #[schema(value_type = String)]
    pub signal: serde_json::Value,
}

#[derive(Deserialize, IntoParams)]
pub struct PathQuery {
    /// A path inside the sandbox.
    pub path: String,
    /// Permission bits for a new file (octal text, default 644).
    pub mode: Option<String>,
    /// Remove directories with their contents.
    pub recursive: Option<bool>,
    /// Stat: follow a final symlink.
    pub follow: Option<bool>,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    pub path: String,
    #[serde(default)]
    pub parents: bool,
    /// Octal text (default 755).
    pub mode: Option<String>,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    pub from: String,
    pub to: String,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChmodRequest {
    pub path: String,
    /// Octal text (e.g. 755).
    pub mode: String,
}

#[derive(Serialize, ToSchema)]
pub struct StatResponse {
    /// file, dir, symlink or other.
    pub kind: String,
    pub mode: u32,
    pub size: u64,
    pub mtime: f64,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Serialize, ToSchema)]
pub struct DirEntryResponse {
    pub name: String,
    #[serde(flatten)]
    pub stat: StatResponse,
}

#[derive(Serialize, ToSchema)]
pub struct Done {
    /// Bytes written, entries removed, ...
    pub count: u64,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortRequest {
    /// The port inside the sandbox.
    pub port: u16,
    /// Require a token: a client first sends `AIRLOCK-TOKEN <token>\n`.
    #[serde(default)]
    pub token: bool,
}

#[derive(Serialize, ToSchema, Clone)]
pub struct PortInfo {
    pub port: u16,
    pub host: String,
    pub host_port: u16,
    pub token: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Only entries after this sequence number.
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

// ----------------------------------------------------------------- routes

#[derive(OpenApi)]
#[openapi(
    info(title = "airlock", description = "Airlock's sandbox service, API v1"),
    paths(
        create_sandbox,
        list_sandboxes,
        get_sandbox,
        delete_sandbox,
        extend_timeout,
        set_network,
        pause_sandbox,
        resume_sandbox,
        usage,
        audit,
        logs,
        exec,
        list_processes,
        process_events,
        process_stdin,
        process_stdin_close,
        process_signal,
        process_resize,
        process_pty,
        read_file,
        write_file,
        delete_file,
        stat_file,
        list_dir,
        mkdir,
        rename,
        chmod,
        tar_out,
        tar_in,
        watch,
        open_port,
        list_ports,
        close_port,
        run_task,
        healthz,
        metrics,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        CreateRequest,
        NetworkSpec,
        NetworkRequest,
        SecretRequest,
        LimitsRequest,
        MountRequest,
        SandboxInfo,
        TimeoutRequest,
        ExecRequest,
        TtySize,
        ExecStarted,
        SignalRequest,
        MkdirRequest,
        RenameRequest,
        ChmodRequest,
        StatResponse,
        DirEntryResponse,
        Done,
        PortRequest,
        PortInfo,
        AuditRow,
        ProcInfo,
        UsageResponse,
        crate::runs::TaskRequest,
        crate::runs::TaskResponse,
    ))
)]
pub struct ApiDoc;

pub fn router(svc: Arc<Service>) -> Router {
    let json_limit = DefaultBodyLimit::max(1 << 20);
    let sb = Router::new()
        .route("/", post(create_sandbox).get(list_sandboxes))
        .route("/{id}", get(get_sandbox).delete(delete_sandbox))
        .route("/{id}/timeout", post(extend_timeout))
        .route("/{id}/network", axum::routing::put(set_network))
        .route("/{id}/pause", post(pause_sandbox))
        .route("/{id}/resume", post(resume_sandbox))
        .route("/{id}/usage", get(usage))
        .route("/{id}/audit", get(audit))
        .route("/{id}/logs", get(logs))
        .route("/{id}/processes", post(exec).get(list_processes))
        .route("/{id}/processes/{pid}/events", get(process_events))
        .route(
            "/{id}/processes/{pid}/stdin",
            post(process_stdin).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/{id}/processes/{pid}/stdin/close",
            post(process_stdin_close),
        )
        .route("/{id}/processes/{pid}/signal", post(process_signal))
        .route("/{id}/processes/{pid}/resize", post(process_resize))
        .route("/{id}/processes/{pid}/pty", get(process_pty))
        .route(
            "/{id}/files",
            get(read_file)
                .put(write_file)
                .delete(delete_file)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/{id}/files/stat", get(stat_file))
        .route("/{id}/files/list", get(list_dir))
        .route("/{id}/files/mkdir", post(mkdir))
        .route("/{id}/files/rename", post(rename))
        .route("/{id}/files/chmod", post(chmod))
        .route(
            "/{id}/files/tar",
            get(tar_out).put(tar_in).layer(DefaultBodyLimit::disable()),
        )
        .route("/{id}/files/watch", get(watch))
        .route("/{id}/ports", post(open_port).get(list_ports))
        .route("/{id}/ports/{port}", axum::routing::delete(close_port));
    Router::new()
        .nest("/v1/sandboxes", sb)
        .route("/v1/tasks", post(run_task))
        .nest_service("/mcp", crate::mcp::http_service(svc.clone()))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(json_limit)
        .layer(axum::middleware::from_fn_with_state(
            svc.clone(),
            crate::service::auth,
        ))
        .with_state(svc)
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A live sandbox that is not paused: its agent answers (a paused one's
/// is frozen with everything else in it).
fn active(svc: &Service, id: &str) -> ApiResult<Handle> {
    let h = live(svc, id)?;
    if svc.is_paused(id) {
        return Err(ApiError::conflict(format!(
            "sandbox {id} is paused: resume it first"
        )));
    }
    Ok(h)
}

fn live(svc: &Service, id: &str) -> ApiResult<Handle> {
    svc.handle(id).ok_or_else(|| match svc.db.get(id) {
        Ok(Some(r)) => ApiError::conflict(format!("sandbox {id} is {}", r.state)),
        _ => ApiError::not_found(format!("no sandbox {id}")),
    })
}

#[utoipa::path(post, path = "/v1/sandboxes", request_body = CreateRequest,
    responses((status = 201, body = SandboxInfo), (status = 422, body = ErrorBody)))]
async fn create_sandbox(
    State(svc): State<Arc<Service>>,
    ApiJson(req): ApiJson<CreateRequest>,
) -> ApiResult<(StatusCode, Json<SandboxInfo>)> {
    let info = svc.clone().create(req).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

#[utoipa::path(get, path = "/v1/sandboxes", params(ListQuery),
    responses((status = 200, body = Vec<SandboxInfo>)))]
async fn list_sandboxes(
    State(svc): State<Arc<Service>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<SandboxInfo>>> {
    let label = match &q.label {
        Some(l) => Some(
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| ApiError::invalid("label filter is key=value"))?,
        ),
        None => None,
    };
    let rows = svc
        .db
        .list(q.all.unwrap_or(false))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(
        rows.into_iter()
            .filter(|r| {
                label
                    .as_ref()
                    .is_none_or(|(k, v)| r.labels.get(k) == Some(v))
            })
            .map(SandboxInfo::from)
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = SandboxInfo), (status = 404, body = ErrorBody)))]
async fn get_sandbox(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<SandboxInfo>> {
    match svc.db.get(&id) {
        Ok(Some(r)) => Ok(Json(SandboxInfo::from(r))),
        Ok(None) => Err(ApiError::not_found(format!("no sandbox {id}"))),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_sandbox(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    svc.stop(&id, "deleted through the API").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/timeout", params(("id" = String, Path)),
    request_body = TimeoutRequest, responses((status = 200, body = SandboxInfo)))]
async fn extend_timeout(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    ApiJson(req): ApiJson<TimeoutRequest>,
) -> ApiResult<Json<SandboxInfo>> {
    let d =
        airlock_spec::parse_duration(&req.timeout).map_err(|e| ApiError::invalid(e.to_string()))?;
    live(&svc, &id)?;
    svc.set_deadline(&id, d)?;
    get_sandbox(State(svc), UrlPath(id)).await
}

#[utoipa::path(put, path = "/v1/sandboxes/{id}/network", params(("id" = String, Path)),
    request_body = NetworkSpec,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn set_network(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    ApiJson(req): ApiJson<NetworkSpec>,
) -> ApiResult<StatusCode> {
    let n = req.to_network().map_err(ApiError::invalid)?;
    if !(n.secrets.is_empty()
        && n.inspect.is_empty()
        && n.allow_http.is_empty()
        && n.upstream_ca.is_empty())
    {
        return Err(ApiError::invalid(
            "secrets, inspect, allow_http and upstream_ca are fixed when a sandbox is created; PUT .../network changes the host rules only",
        ));
    }
    if n.mode == airlock_spec::NetMode::None {
        return Err(ApiError::invalid(
            "a running sandbox's network cannot be turned off with `none`: give an empty allowlist ({\"mode\":\"allowlist\"}) to deny everything",
        ));
    }
    let policy =
        airlock_spec::net::Policy::compile(&n).map_err(|e| ApiError::invalid(e.to_string()))?;
    let h = live(&svc, &id)?;
    h.ask(|reply| Cmd::SetNetwork { policy, reply })
        .await
        .map_err(ApiError::conflict)?;
    svc.db.audit(
        &id,
        "net-policy",
        serde_json::to_value(&n).unwrap_or(serde_json::Value::Null),
    );
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/pause", params(("id" = String, Path)),
    responses((status = 204), (status = 409, body = ErrorBody)))]
async fn pause_sandbox(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    let h = live(&svc, &id)?;
    h.ask(|reply| Cmd::Pause { reply })
        .await
        .map_err(ApiError::failed)?;
    svc.paused(&id, true);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", params(("id" = String, Path)),
    responses((status = 204), (status = 409, body = ErrorBody)))]
async fn resume_sandbox(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    let h = live(&svc, &id)?;
    h.ask(|reply| Cmd::Resume { reply })
        .await
        .map_err(ApiError::failed)?;
    svc.paused(&id, false);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/usage", params(("id" = String, Path)),
    responses((status = 200, body = UsageResponse)))]
async fn usage(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<UsageResponse>> {
    let h = live(&svc, &id)?;
    let u = h
        .ask(|reply| Cmd::Usage { reply })
        .await
        .map_err(ApiError::failed)?;
    Ok(Json(UsageResponse {
        cpu_usec: u.cpu_usec,
        memory_bytes: u.memory_bytes,
        pids: u.pids,
        disk_bytes: u.disk_bytes,
        disk_limit_bytes: u.disk_limit_bytes,
    }))
}

/// What a sandbox uses now (absent where this host cannot measure it).
#[derive(Serialize, ToSchema)]
pub struct UsageResponse {
    /// CPU time so far, microseconds.
    pub cpu_usec: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// Tasks now.
    pub pids: Option<u64>,
    /// Used on its writable layer (--disk).
    pub disk_bytes: Option<u64>,
    pub disk_limit_bytes: Option<u64>,
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/audit", params(("id" = String, Path), AuditQuery),
    responses((status = 200, body = Vec<AuditRow>)))]
async fn audit(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditRow>>> {
    if svc.db.get(&id).ok().flatten().is_none() {
        return Err(ApiError::not_found(format!("no sandbox {id}")));
    }
    svc.db
        .audit_log(
            &id,
            q.after.unwrap_or(0),
            q.limit.unwrap_or(1000).clamp(1, 10_000),
        )
        .map(Json)
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[derive(Deserialize, IntoParams)]
pub struct LogsQuery {
    /// Only this process's output.
    pub process: Option<u32>,
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/logs", params(("id" = String, Path), LogsQuery),
    responses((status = 200, description = "NDJSON: {process, type: stdout|stderr, text|b64}, the last 1 MiB of each process's output")))]
async fn logs(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let h = live(&svc, &id)?;
    let v = h
        .ask(|reply| Cmd::Logs {
            id: q.process,
            reply,
        })
        .await
        .map_err(ApiError::failed)?;
    let mut out = String::new();
    for (p, stream, data) in v {
        let mut j = event_json(&ProcEvent::Output { stream, data });
        j["process"] = serde_json::json!(p);
        out.push_str(&j.to_string());
        out.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}

// ---------------------------------------------------------- processes

fn parse_user(s: &str) -> ApiResult<airlock_spec::User> {
    airlock_spec::parse_user(s).map_err(|e| ApiError::invalid(e.to_string()))
}

pub(crate) fn process_spec(req: &ExecRequest) -> ApiResult<airlock_core::ProcessSpec> {
    if req.argv.is_empty() || req.argv[0].is_empty() {
        return Err(ApiError::invalid("argv must name a command"));
    }
    if req.argv.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid("argv holds a NUL byte"));
    }
    let mut p = airlock_core::ProcessSpec::new(req.argv.clone());
    for (k, v) in &req.env {
        airlock_spec::validate_env_key(k).map_err(|e| ApiError::invalid(e.to_string()))?;
        if v.contains('\0') {
            return Err(ApiError::invalid("an env value holds a NUL byte"));
        }
        p.env.push((k.clone(), v.clone()));
    }
    if let Some(c) = &req.cwd {
        if !c.starts_with('/') || c.contains('\0') {
            return Err(ApiError::invalid(
                "cwd is an absolute path inside the sandbox",
            ));
        }
        p.cwd = Some(PathBuf::from(c));
    }
    if let Some(u) = &req.user {
        p.user = Some(parse_user(u)?);
    }
    if let Some(t) = req.tty {
        if t.rows == 0 || t.cols == 0 {
            return Err(ApiError::invalid(
                "a terminal has at least one row and column",
            ));
        }
        p.pty = Some((t.rows, t.cols));
    }
    p.stdin = req.stdin;
    Ok(p)
}

/// One event as a JSON object.
fn event_json(e: &ProcEvent) -> serde_json::Value {
    match e {
        ProcEvent::Started { pid } => serde_json::json!({"type": "started", "pid": pid}),
        ProcEvent::Output { stream, data } => {
            let name = match stream {
                airlock_core::OutStream::Stdout => "stdout",
                airlock_core::OutStream::Stderr => "stderr",
            };
            match std::str::from_utf8(data) {
                Ok(t) => serde_json::json!({"type": name, "text": t}),
                Err(_) => serde_json::json!({"type": name,
                    "b64": base64::engine::general_purpose::STANDARD.encode(data)}),
            }
        }
        ProcEvent::Exited { status } => match status {
            airlock_core::ExitStatus::Code(c) => {
                serde_json::json!({"type": "exit", "code": c})
            }
            airlock_core::ExitStatus::Signal(s) => {
                serde_json::json!({"type": "exit", "code": 128 + *s as i32, "signal": s})
            }
        },
        ProcEvent::StartFailed { stage, errno } => serde_json::json!({
            "type": "error",
            "stage": stage,
            "errno": errno,
            "message": std::io::Error::from_raw_os_error(*errno).to_string(),
            "code": if *errno == libc::ENOENT { 127 } else { 126 },
        }),
        ProcEvent::Skipped { bytes } => serde_json::json!({"type": "skipped", "bytes": bytes}),
    }
}

/// A stream of a process's events, NDJSON or (with `Accept:
/// text/event-stream`) SSE, ending with its exit. Its `started` event
/// carries the process's API id (`id`, the handle for signal, stdin and
/// events) beside its pid inside the sandbox.
fn event_stream(
    headers: &HeaderMap,
    h: Handle,
    id: u32,
    rx: mpsc::Receiver<ProcEvent>,
) -> Response {
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let stream =
        futures_util::stream::unfold((rx, h, false), move |(mut rx, h, done)| async move {
            if done {
                return None;
            }
            let e = rx.recv().await?;
            // Room in the stream: the sandbox may send more.
            h.poke();
            let end = matches!(e, ProcEvent::Exited { .. } | ProcEvent::StartFailed { .. });
            let mut j = event_json(&e);
            if matches!(e, ProcEvent::Started { .. }) {
                j["id"] = serde_json::json!(id);
            }
            let j = j.to_string();
            let line = if sse {
                format!("data: {j}\n\n")
            } else {
                format!("{j}\n")
            };
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(line)),
                (rx, h, end),
            ))
        });
    let ct = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    Response::builder()
        .header(header::CONTENT_TYPE, ct)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes", params(("id" = String, Path)),
    request_body = ExecRequest,
    responses((status = 200, description = "NDJSON (or SSE) events: started (with the process's API id), stdout/stderr (text or b64), exit"),
        (status = 201, body = ExecStarted, description = "background")))]
async fn exec(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ExecRequest>,
) -> ApiResult<Response> {
    let h = active(&svc, &id)?;
    let spec = process_spec(&req)?;
    let (stdin_tx, stdin_rx) = if req.stdin || req.tty.is_some() {
        let (t, r) = mpsc::channel::<Vec<u8>>(8);
        (Some(t), Some(r))
    } else {
        (None, None)
    };
    if req.background {
        // The stdin stream is kept for /stdin and /pty.
        let hold = req.hold_output || req.tty.is_some();
        let out = if hold {
            let (t, r) = mpsc::channel(crate::actor::STREAM_EVENTS);
            Some((t, r))
        } else {
            None
        };
        let (otx, orx) = match out {
            Some((t, r)) => (Some(t), Some(r)),
            None => (None, None),
        };
        let pid = h
            .ask(|reply| Cmd::Exec {
                spec,
                out: otx,
                stdin: stdin_rx,
                reply,
            })
            .await
            .map_err(ApiError::failed)?;
        svc.keep_process_io(&id, pid, stdin_tx, orx);
        return Ok((StatusCode::CREATED, Json(ExecStarted { id: pid })).into_response());
    }
    let (tx, rx) = mpsc::channel(crate::actor::STREAM_EVENTS);
    drop(stdin_tx);
    let pid = h
        .ask(|reply| Cmd::Exec {
            spec,
            out: Some(tx),
            stdin: stdin_rx,
            reply,
        })
        .await
        .map_err(ApiError::failed)?;
    Ok(event_stream(&headers, h, pid, rx))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes", params(("id" = String, Path)),
    responses((status = 200, body = Vec<ProcInfo>)))]
async fn list_processes(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Vec<ProcInfo>>> {
    let h = live(&svc, &id)?;
    Ok(Json(
        h.ask(|reply| Cmd::ListProcs { reply })
            .await
            .map_err(ApiError::failed)?,
    ))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/events",
    params(("id" = String, Path), ("pid" = u32, Path), EventsQuery),
    responses((status = 200, description = "NDJSON (or SSE) events")))]
async fn process_events(
    State(svc): State<Arc<Service>>,
    UrlPath((id, pid)): UrlPath<(String, u32)>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let h = live(&svc, &id)?;
    if q.primary.unwrap_or(false) {
        if let Some(rx) = svc.take_primary(&id, pid) {
            return Ok(event_stream(&headers, h, pid, rx));
        }
        return Err(ApiError::conflict(
            "no held output for this process (start it with background and hold_output)",
        ));
    }
    let (tx, rx) = mpsc::channel(1024);
    h.ask(|reply| Cmd::Attach {
        id: pid,
        out: tx,
        replay: q.replay.unwrap_or(false),
        reply,
    })
    .await
    .map_err(ApiError::failed)?;
    Ok(event_stream(&headers, h, pid, rx))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/stdin",
    params(("id" = String, Path), ("pid" = u32, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Done)))]
async fn process_stdin(
    State(svc): State<Arc<Service>>,
    UrlPath((id, pid)): UrlPath<(String, u32)>,
    body: Body,
) -> ApiResult<Json<Done>> {
    let h = active(&svc, &id)?;
    let tx = svc.stdin_of(&id, pid).ok_or_else(|| {
        ApiError::conflict("this process has no stdin stream (start it with stdin)")
    })?;
    let mut n = 0u64;
    let mut s = body.into_data_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(e.to_string()))?;
        n += chunk.len() as u64;
        if tx.send(chunk.to_vec()).await.is_err() {
            return Err(ApiError::conflict("the process's stdin is closed"));
        }
        h.poke();
    }
    Ok(Json(Done { count: n }))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/stdin/close",
    params(("id" = String, Path), ("pid" = u32, Path)), responses((status = 204)))]
async fn process_stdin_close(
    State(svc): State<Arc<Service>>,
    UrlPath((id, pid)): UrlPath<(String, u32)>,
) -> ApiResult<StatusCode> {
    let h = live(&svc, &id)?;
    svc.drop_stdin(&id, pid);
    h.send(Cmd::CloseStdin { id: pid });
    Ok(StatusCode::NO_CONTENT)
}

pub fn signal_number(v: &serde_json::Value) -> Option<i32> {
    if let Some(n) = v.as_i64() {
        return (1..=64).contains(&n).then_some(n as i32);
    }
    let s = v.as_str()?;
    let s = s.strip_prefix("SIG").unwrap_or(s);
    Some(match s {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        _ => return s.parse().ok().filter(|n| (1..=64).contains(n)),
    })
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/signal",
    params(("id" = String, Path), ("pid" = u32, Path)), request_body = SignalRequest,
    responses((status = 204), (status = 404, body = ErrorBody, description = "no such process"),
        (status = 409, body = ErrorBody, description = "the process has ended")))]
async fn process_signal(
    State(svc): State<Arc<Service>>,
    UrlPath((id, pid)): UrlPath<(String, u32)>,
    ApiJson(req): ApiJson<SignalRequest>,
) -> ApiResult<StatusCode> {
    let h = active(&svc, &id)?;
    let signo = signal_number(&req.signal).ok_or_else(|| ApiError::invalid("unknown signal"))?;
    h.ask(|reply| Cmd::Signal {
        id: pid,
        signo,
        reply,
    })
    .await
    .map_err(ApiError::failed)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/resize",
    params(("id" = String, Path), ("pid" = u32, Path)), request_body = TtySize,
    responses((status = 204)))]
async fn process_resize(
    State(svc): State<Arc<Service>>,
    UrlPath((id, pid)): UrlPath<(String, u32)>,
    ApiJson(req): ApiJson<TtySize>,
) -> ApiResult<StatusCode> {
    let h = active(&svc, &id)?;
    if req.rows == 0 || req.cols == 0 {
        return Err(ApiError::invalid(
            "a terminal has at least one row and column",
        ));
    }
    h.ask(|reply| Cmd::Resize {
        id: pid,
        rows: req.rows,
        cols: req.cols,
        reply,
    })
    .await
    .map_err(ApiError::failed)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/pty",
    params(("id" = String, Path), ("pid" = u32, Path)),
    responses((status = 101, description = "WebSocket: binary frames are the terminal's bytes both ways; text frames from the client are {\"resize\":[rows,cols]} or {\"eof\":true}; the server ends with a text frame {\"exit\":CODE}; a client that closes hangs the terminal up (SIGHUP)")))]
async fn process_pty(
    State(svc): State<Arc<Service>>,
    UrlPath((id, pid)): UrlPath<(String, u32)>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let h = active(&svc, &id)?;
    let rx = svc.take_primary(&id, pid).ok_or_else(|| {
        ApiError::conflict(
            "no terminal waiting for this process (start it in the background with tty)",
        )
    })?;
    let stdin = svc
        .stdin_of(&id, pid)
        .ok_or_else(|| ApiError::conflict("this process has no terminal input"))?;
    Ok(ws.on_upgrade(move |socket| pty_session(socket, h, pid, rx, stdin)))
}

async fn pty_session(
    socket: WebSocket,
    h: Handle,
    pid: u32,
    mut rx: mpsc::Receiver<ProcEvent>,
    stdin: mpsc::Sender<Vec<u8>>,
) {
    let (mut tx_ws, mut rx_ws) = socket.split();
    use futures_util::SinkExt;
    let h2 = h.clone();
    let mut input = tokio::spawn(async move {
        while let Some(Ok(m)) = rx_ws.next().await {
            match m {
                WsMessage::Binary(b) => {
                    if stdin.send(b.to_vec()).await.is_err() {
                        break;
                    }
                    h2.poke();
                }
                WsMessage::Text(t) => {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) {
                        if v.get("eof").and_then(|e| e.as_bool()) == Some(true) {
                            h2.send(Cmd::CloseStdin { id: pid });
                            continue;
                        }
                        if let Some(r) = v.get("resize").and_then(|r| r.as_array()) {
                            let rows = r.first().and_then(|x| x.as_u64()).unwrap_or(24) as u16;
                            let cols = r.get(1).and_then(|x| x.as_u64()).unwrap_or(80) as u16;
                            let _ = h2
                                .ask(|reply| Cmd::Resize {
                                    id: pid,
                                    rows: rows.max(1),
                                    cols: cols.max(1),
                                    reply,
                                })
                                .await;
                        }
                    }
                }
                WsMessage::Close(_) => break,
                _ => {}
            }
        }
        h2.send(Cmd::CloseStdin { id: pid });
    });
    loop {
        let e = tokio::select! {
            e = rx.recv() => match e {
                Some(e) => e,
                None => break,
            },
            _ = &mut input => {
                // The client went away (its Close, or a broken connection):
                // hang the terminal up as a terminal does (SIGHUP to the
                // process), answer its Close and end.
                let _ = h
                    .ask(|reply| Cmd::Signal {
                        id: pid,
                        signo: libc::SIGHUP,
                        reply,
                    })
                    .await;
                let _ = tx_ws.send(WsMessage::Close(None)).await;
                break;
            }
        };
        h.poke();
        match e {
            ProcEvent::Output { data, .. } => {
                let sent = tx_ws.send(WsMessage::Binary(data.into())).await;
                if sent.is_err() {
                    break;
                }
            }
            ProcEvent::Exited { .. } | ProcEvent::StartFailed { .. } => {
                let j = event_json(&e);
                let code = j.get("code").cloned().unwrap_or(serde_json::json!(1));
                let _ = tx_ws
                    .send(WsMessage::Text(
                        serde_json::json!({ "exit": code }).to_string().into(),
                    ))
                    .await;
                let _ = tx_ws.send(WsMessage::Close(None)).await;
                // The closing handshake: wait (briefly) for the client's
                // Close before the connection goes. Dropping it at once
                // makes some clients (Python websockets' sync client) fail
                // to answer and lose the last frames they had received.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut input).await;
                break;
            }
            _ => {}
        }
    }
    input.abort();
}

// ---------------------------------------------------------------- files

fn abs(p: &str) -> ApiResult<PathBuf> {
    if p.is_empty() || p.contains('\0') {
        return Err(ApiError::invalid("a path inside the sandbox"));
    }
    Ok(PathBuf::from(p))
}

fn octal(s: Option<&String>, default: u32) -> ApiResult<u32> {
    match s {
        None => Ok(default),
        Some(t) => u32::from_str_radix(t, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| ApiError::invalid("mode is octal, at most 7777")),
    }
}

/// A download's body: the sandbox's bytes as they come.
fn download(h: Handle, rx: mpsc::Receiver<FileEvent>, ct: &'static str) -> Response {
    let stream = futures_util::stream::unfold((rx, h), |(mut rx, h)| async move {
        let e = rx.recv().await?;
        h.poke();
        match e {
            FileEvent::Data(d) => Some((Ok(Bytes::from(d)), (rx, h))),
            FileEvent::Done(Ok(_)) => None,
            FileEvent::Done(Err(e)) => Some((
                Err(std::io::Error::other(crate::actor::fs_text(&e))),
                (rx, h),
            )),
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, ct)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Starts a download and waits for its first event, so that an error (no
/// such file) is a status code, not a broken body.
async fn start_download(
    h: &Handle,
    path: PathBuf,
    tar: bool,
    ct: &'static str,
) -> ApiResult<Response> {
    let (tx, mut rx) = mpsc::channel(crate::actor::STREAM_EVENTS);
    h.ask(|reply| Cmd::Read {
        path,
        tar,
        out: tx,
        reply,
    })
    .await
    .map_err(ApiError::failed)?;
    let first = rx.recv().await;
    h.poke();
    let (tx2, rx2) = mpsc::channel(crate::actor::STREAM_EVENTS);
    match first {
        Some(FileEvent::Done(Err(e))) => Err(ApiError::failed(crate::actor::fs_text(&e))),
        None => Err(ApiError::failed("the sandbox is gone")),
        Some(ev) => {
            let _ = tx2.send(ev).await;
            // Relay the rest.
            let h2 = h.clone();
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    h2.poke();
                    if tx2.send(e).await.is_err() {
                        break;
                    }
                }
            });
            Ok(download(h.clone(), rx2, ct))
        }
    }
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), PathQuery),
    responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = ErrorBody)))]
async fn read_file(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let h = active(&svc, &id)?;
    start_download(&h, abs(&q.path)?, false, "application/octet-stream").await
}

async fn upload(h: &Handle, path: PathBuf, mode: u32, tar: bool, body: Body) -> ApiResult<u64> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
    let (rtx, rrx) = tokio::sync::oneshot::channel();
    if !h.send(Cmd::Write {
        path,
        mode,
        tar,
        data: rx,
        reply: rtx,
    }) {
        return Err(ApiError::failed("the sandbox is gone"));
    }
    let mut s = body.into_data_stream();
    let mut rrx = rrx;
    loop {
        tokio::select! {
            r = &mut rrx => {
                // Done early: an error (or everything was taken).
                return r.map_err(|_| ApiError::failed("the sandbox is gone"))?.map_err(ApiError::failed);
            }
            chunk = s.next() => match chunk {
                Some(Ok(c)) => {
                    if tx.send(c.to_vec()).await.is_err() {
                        break;
                    }
                    h.poke();
                }
                Some(Err(e)) => return Err(ApiError::bad_request(e.to_string())),
                None => break,
            }
        }
    }
    drop(tx);
    h.poke();
    rrx.await
        .map_err(|_| ApiError::failed("the sandbox is gone"))?
        .map_err(ApiError::failed)
}

#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), PathQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Done)))]
async fn write_file(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<PathQuery>,
    body: Body,
) -> ApiResult<Json<Done>> {
    let h = active(&svc, &id)?;
    let mode = octal(q.mode.as_ref(), 0o644)?;
    let n = upload(&h, abs(&q.path)?, mode, false, body).await?;
    Ok(Json(Done { count: n }))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", params(("id" = String, Path), PathQuery),
    responses((status = 200, body = Done)))]
async fn delete_file(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Json<Done>> {
    let h = active(&svc, &id)?;
    let path = abs(&q.path)?;
    let n = h
        .ask(|reply| Cmd::Remove {
            path,
            recursive: q.recursive.unwrap_or(false),
            reply,
        })
        .await
        .map_err(ApiError::failed)?;
    Ok(Json(Done { count: n }))
}

fn stat_response(s: &airlock_core::Stat) -> StatResponse {
    StatResponse {
        kind: match s.kind {
            airlock_core::FileKind::File => "file",
            airlock_core::FileKind::Dir => "dir",
            airlock_core::FileKind::Symlink => "symlink",
            airlock_core::FileKind::Other => "other",
        }
        .into(),
        mode: s.mode,
        size: s.size,
        mtime: s.mtime_sec as f64 + s.mtime_nsec as f64 / 1e9,
        uid: s.uid,
        gid: s.gid,
    }
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", params(("id" = String, Path), PathQuery),
    responses((status = 200, body = StatResponse)))]
async fn stat_file(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Json<StatResponse>> {
    let h = active(&svc, &id)?;
    let path = abs(&q.path)?;
    let s = h
        .ask(|reply| Cmd::Stat {
            path,
            follow: q.follow.unwrap_or(false),
            reply,
        })
        .await
        .map_err(ApiError::failed)?;
    Ok(Json(stat_response(&s)))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", params(("id" = String, Path), PathQuery),
    responses((status = 200, body = Vec<DirEntryResponse>)))]
async fn list_dir(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Json<Vec<DirEntryResponse>>> {
    let h = active(&svc, &id)?;
    let path = abs(&q.path)?;
    let v = h
        .ask(|reply| Cmd::List { path, reply })
        .await
        .map_err(ApiError::failed)?;
    let mut out: Vec<DirEntryResponse> = v
        .iter()
        .map(|e| DirEntryResponse {
            name: String::from_utf8_lossy(&e.name).into_owned(),
            stat: stat_response(&e.stat),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(out))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", params(("id" = String, Path)),
    request_body = MkdirRequest, responses((status = 204)))]
async fn mkdir(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    ApiJson(req): ApiJson<MkdirRequest>,
) -> ApiResult<StatusCode> {
    let h = active(&svc, &id)?;
    let mode = octal(req.mode.as_ref(), 0o755)?;
    let path = abs(&req.path)?;
    h.ask(|reply| Cmd::Mkdir {
        path,
        mode,
        parents: req.parents,
        reply,
    })
    .await
    .map_err(ApiError::failed)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/rename", params(("id" = String, Path)),
    request_body = RenameRequest, responses((status = 204)))]
async fn rename(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    ApiJson(req): ApiJson<RenameRequest>,
) -> ApiResult<StatusCode> {
    let h = active(&svc, &id)?;
    let (from, to) = (abs(&req.from)?, abs(&req.to)?);
    h.ask(|reply| Cmd::Rename { from, to, reply })
        .await
        .map_err(ApiError::failed)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/chmod", params(("id" = String, Path)),
    request_body = ChmodRequest, responses((status = 204)))]
async fn chmod(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    ApiJson(req): ApiJson<ChmodRequest>,
) -> ApiResult<StatusCode> {
    let h = active(&svc, &id)?;
    let mode = octal(Some(&req.mode), 0)?;
    let path = abs(&req.path)?;
    h.ask(|reply| Cmd::Chmod { path, mode, reply })
        .await
        .map_err(ApiError::failed)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/tar", params(("id" = String, Path), PathQuery),
    responses((status = 200, content_type = "application/x-tar")))]
async fn tar_out(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let h = active(&svc, &id)?;
    start_download(&h, abs(&q.path)?, true, "application/x-tar").await
}

#[utoipa::path(put, path = "/v1/sandboxes/{id}/files/tar", params(("id" = String, Path), PathQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "a tar archive"),
    responses((status = 200, body = Done)))]
async fn tar_in(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<PathQuery>,
    body: Body,
) -> ApiResult<Json<Done>> {
    let h = active(&svc, &id)?;
    let n = upload(&h, abs(&q.path)?, 0o755, true, body).await?;
    Ok(Json(Done { count: n }))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/watch", params(("id" = String, Path), PathQuery),
    responses((status = 200, description = "SSE: {\"type\":\"created|modified|removed\",\"name\":...} as the directory changes (polled every 250 ms)")))]
async fn watch(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let h = active(&svc, &id)?;
    let path = abs(&q.path)?;
    let first = h
        .ask(|reply| Cmd::List {
            path: path.clone(),
            reply,
        })
        .await
        .map_err(ApiError::failed)?;
    type Snap = std::collections::BTreeMap<Vec<u8>, (u64, i64, u32)>;
    let snap = |v: &[airlock_core::DirEntry]| -> Snap {
        v.iter()
            .map(|e| {
                (
                    e.name.clone(),
                    (e.stat.size, e.stat.mtime_sec, e.stat.mtime_nsec),
                )
            })
            .collect()
    };
    let state = (
        snap(&first),
        h,
        path,
        std::collections::VecDeque::<String>::new(),
    );
    let stream = futures_util::stream::unfold(
        state,
        move |(mut prev, h, path, mut queue)| async move {
            loop {
                if let Some(line) = queue.pop_front() {
                    return Some((
                        Ok::<_, std::convert::Infallible>(Bytes::from(line)),
                        (prev, h, path, queue),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                let now = match h
                    .ask(|reply| Cmd::List {
                        path: path.clone(),
                        reply,
                    })
                    .await
                {
                    Ok(v) => snap(&v),
                    Err(_) => return None,
                };
                for (name, st) in &now {
                    let kind = match prev.get(name) {
                        None => Some("created"),
                        Some(old) if old != st => Some("modified"),
                        _ => None,
                    };
                    if let Some(k) = kind {
                        queue.push_back(format!(
                            "data: {}\n\n",
                            serde_json::json!({"type": k, "name": String::from_utf8_lossy(name)})
                        ));
                    }
                }
                for name in prev.keys() {
                    if !now.contains_key(name) {
                        queue.push_back(format!(
                        "data: {}\n\n",
                        serde_json::json!({"type": "removed", "name": String::from_utf8_lossy(name)})
                    ));
                    }
                }
                prev = now;
            }
        },
    );
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

// ---------------------------------------------------------------- ports

#[utoipa::path(post, path = "/v1/sandboxes/{id}/ports", params(("id" = String, Path)),
    request_body = PortRequest, responses((status = 201, body = PortInfo)))]
async fn open_port(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    ApiJson(req): ApiJson<PortRequest>,
) -> ApiResult<(StatusCode, Json<PortInfo>)> {
    let h = active(&svc, &id)?;
    if req.port == 0 {
        return Err(ApiError::invalid("port 1..65535"));
    }
    let info = crate::ports::open(svc.clone(), &id, h, req.port, req.token).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/ports", params(("id" = String, Path)),
    responses((status = 200, body = Vec<PortInfo>)))]
async fn list_ports(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Vec<PortInfo>>> {
    live(&svc, &id)?;
    Ok(Json(crate::ports::list(&svc, &id)))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/ports/{port}",
    params(("id" = String, Path), ("port" = u16, Path)), responses((status = 204)))]
async fn close_port(
    State(svc): State<Arc<Service>>,
    UrlPath((id, port)): UrlPath<(String, u16)>,
) -> ApiResult<StatusCode> {
    if crate::ports::close(&svc, &id, port) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no forward of port {port}")))
    }
}

// ----------------------------------------------------------------- tasks

#[utoipa::path(post, path = "/v1/tasks", request_body = crate::runs::TaskRequest,
    responses((status = 200, body = crate::runs::TaskResponse,
        description = "The command ran (whatever its exit code): its bounded output and the git patch of what it changed under /work"),
        (status = 422, body = ErrorBody)))]
async fn run_task(
    State(svc): State<Arc<Service>>,
    ApiJson(req): ApiJson<crate::runs::TaskRequest>,
) -> ApiResult<Json<crate::runs::TaskResponse>> {
    Ok(Json(crate::runs::run_task(svc, req).await?))
}

// ----------------------------------------------------------------- misc

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "ok")))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
async fn metrics(State(svc): State<Arc<Service>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        svc.metrics_text(),
    )
        .into_response()
}
