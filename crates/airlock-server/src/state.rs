//! The service's state in SQLite (WAL) under the state dir: every sandbox
//! (spec, labels, state, times, why it ended, its agent's pid) and the
//! audit log. Written as things happen, so a restart after a crash knows
//! what was running and can clean it up.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;

pub struct Db {
    conn: Mutex<Connection>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SandboxRow {
    pub id: String,
    /// creating, running, paused, stopped or failed.
    pub state: String,
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Unix seconds.
    pub created: i64,
    pub ended: Option<i64>,
    /// Why it stopped or failed.
    pub reason: Option<String>,
    /// Unix seconds at which it is stopped unless extended.
    pub expires: Option<i64>,
    pub idle_timeout_secs: Option<i64>,
    /// The agent's pid on the host.
    pub agent_pid: Option<i64>,
    /// Set-up notes (fallbacks taken).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub seq: i64,
    pub sandbox: String,
    /// Unix seconds, fractional.
    pub ts: f64,
    /// create, exec, exec-end, file-write, pause, resume, stop, fail, recover,
    /// net (an egress decision: allowed, via, host, addr, port, bytes_out,
    /// bytes_in, reason; the first 10,000 per sandbox), net-suppressed (how
    /// many decisions beyond those were only counted), net-policy (the
    /// policy replaced).
    pub kind: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Db {
    pub fn open(path: &Path) -> rusqlite::Result<Db> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS sandboxes (
                id TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                spec TEXT NOT NULL,
                labels TEXT NOT NULL,
                created INTEGER NOT NULL,
                ended INTEGER,
                reason TEXT,
                expires INTEGER,
                idle_timeout INTEGER,
                agent_pid INTEGER,
                notes TEXT NOT NULL DEFAULT '[]'
            );
            CREATE TABLE IF NOT EXISTS audit (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                sandbox TEXT NOT NULL,
                ts REAL NOT NULL,
                kind TEXT NOT NULL,
                detail TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS audit_sandbox ON audit(sandbox, seq);",
        )?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&c)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &self,
        id: &str,
        state: &str,
        spec: &serde_json::Value,
        labels: &std::collections::BTreeMap<String, String>,
        expires: Option<i64>,
        idle_timeout: Option<i64>,
    ) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO sandboxes (id, state, spec, labels, created, expires, idle_timeout)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    state,
                    spec.to_string(),
                    serde_json::to_string(labels).unwrap_or_default(),
                    now() as i64,
                    expires,
                    idle_timeout
                ],
            )
            .map(|_| ())
        })
    }

    pub fn set_running(&self, id: &str, agent_pid: i32, notes: &[String]) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET state='running', agent_pid=?2, notes=?3 WHERE id=?1",
                params![
                    id,
                    agent_pid,
                    serde_json::to_string(notes).unwrap_or_default()
                ],
            )
            .map(|_| ())
        })
    }

    pub fn set_state(&self, id: &str, state: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET state=?2 WHERE id=?1",
                params![id, state],
            )
            .map(|_| ())
        })
    }

    pub fn set_expires(&self, id: &str, expires: i64) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET expires=?2 WHERE id=?1",
                params![id, expires],
            )
            .map(|_| ())
        })
    }

    pub fn with_idle(&self, id: &str, idle: Option<i64>) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET idle_timeout=?2 WHERE id=?1",
                params![id, idle],
            )
            .map(|_| ())
        })
    }

    /// Ends a sandbox (unless it already ended).
    pub fn end(&self, id: &str, failed: bool, reason: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET state=?2, ended=?3, reason=?4
                 WHERE id=?1 AND state NOT IN ('stopped','failed')",
                params![
                    id,
                    if failed { "failed" } else { "stopped" },
                    now() as i64,
                    reason
                ],
            )
            .map(|_| ())
        })
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SandboxRow> {
        let spec: String = r.get(2)?;
        let labels: String = r.get(3)?;
        let notes: String = r.get(10)?;
        Ok(SandboxRow {
            id: r.get(0)?,
            state: r.get(1)?,
            spec: serde_json::from_str(&spec).unwrap_or(serde_json::Value::Null),
            labels: serde_json::from_str(&labels).unwrap_or_default(),
            created: r.get(4)?,
            ended: r.get(5)?,
            reason: r.get(6)?,
            expires: r.get(7)?,
            idle_timeout_secs: r.get(8)?,
            agent_pid: r.get(9)?,
            notes: serde_json::from_str(&notes).unwrap_or_default(),
        })
    }

    const COLS: &'static str =
        "id, state, spec, labels, created, ended, reason, expires, idle_timeout, agent_pid, notes";

    pub fn get(&self, id: &str) -> rusqlite::Result<Option<SandboxRow>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {} FROM sandboxes WHERE id=?1", Self::COLS),
                params![id],
                Self::row,
            )
            .optional()
        })
    }

    /// Sandboxes, newest first; `all` includes ended ones.
    pub fn list(&self, all: bool) -> rusqlite::Result<Vec<SandboxRow>> {
        self.with(|c| {
            let sql = format!(
                "SELECT {} FROM sandboxes {} ORDER BY created DESC, rowid DESC LIMIT 10000",
                Self::COLS,
                if all {
                    ""
                } else {
                    "WHERE state NOT IN ('stopped','failed')"
                }
            );
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map([], Self::row)?;
            rows.collect()
        })
    }

    pub fn audit(&self, sandbox: &str, kind: &str, detail: serde_json::Value) {
        let _ = self.with(|c| {
            c.execute(
                "INSERT INTO audit (sandbox, ts, kind, detail) VALUES (?1, ?2, ?3, ?4)",
                params![sandbox, now(), kind, detail.to_string()],
            )
        });
    }

    pub fn audit_log(
        &self,
        sandbox: &str,
        after: i64,
        limit: i64,
    ) -> rusqlite::Result<Vec<AuditRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT seq, sandbox, ts, kind, detail FROM audit
                 WHERE sandbox=?1 AND seq>?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = st.query_map(params![sandbox, after, limit], |r| {
                let d: String = r.get(4)?;
                Ok(AuditRow {
                    seq: r.get(0)?,
                    sandbox: r.get(1)?,
                    ts: r.get(2)?,
                    kind: r.get(3)?,
                    detail: serde_json::from_str(&d).unwrap_or(serde_json::Value::Null),
                })
            })?;
            rows.collect()
        })
    }
}
