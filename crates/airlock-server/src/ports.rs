//! Port forwarding: a loopback port on the host whose connections become
//! TCP streams to a port inside the sandbox, through its agent (the
//! sandbox has no network device to reach). Optionally guarded by a token:
//! a client then sends `AIRLOCK-TOKEN <token>\n` first.

use crate::actor::{Cmd, Handle, TcpEvent};
use crate::api::{ApiError, ApiResult, PortInfo};
use crate::service::Service;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub struct Forward {
    pub info: PortInfo,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn token() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom fills our buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub async fn open(
    svc: Arc<Service>,
    id: &str,
    h: Handle,
    port: u16,
    guarded: bool,
) -> ApiResult<PortInfo> {
    if let Some(f) = svc
        .ports
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(id.to_string(), port))
    {
        return Ok(f.info.clone());
    }
    let l = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| ApiError::internal(format!("cannot listen on loopback: {e}")))?;
    let host_port = l
        .local_addr()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .port();
    let tok = guarded.then(token);
    let info = PortInfo {
        port,
        host: "127.0.0.1".into(),
        host_port,
        token: tok.clone(),
    };
    let task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = l.accept().await else {
                continue;
            };
            let h = h.clone();
            let tok = tok.clone();
            tokio::spawn(async move {
                let _ = relay(conn, h, port, tok).await;
            });
        }
    });
    svc.ports.lock().unwrap_or_else(|p| p.into_inner()).insert(
        (id.to_string(), port),
        Forward {
            info: info.clone(),
            task,
        },
    );
    svc.db.audit(
        id,
        "port",
        serde_json::json!({ "port": port, "host_port": host_port, "token": guarded }),
    );
    Ok(info)
}

async fn relay(
    mut conn: tokio::net::TcpStream,
    h: Handle,
    port: u16,
    tok: Option<String>,
) -> std::io::Result<()> {
    let mut pre = Vec::new();
    if let Some(t) = tok {
        // The token line, at most 128 bytes, within 10 s.
        let want = format!("AIRLOCK-TOKEN {t}\n");
        let mut b = [0u8; 1];
        let read = async {
            while pre.len() < 128 {
                if conn.read(&mut b).await? == 0 {
                    break;
                }
                pre.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
        if !crate::service::constant_time_eq(&pre, want.as_bytes()) {
            return Ok(());
        }
        pre.clear();
    }
    let (tx_in, rx_in) = mpsc::channel::<Vec<u8>>(8);
    let (tx_out, mut rx_out) = mpsc::channel::<TcpEvent>(crate::actor::STREAM_EVENTS);
    let opened = h
        .ask(|reply| Cmd::TcpOpen {
            port,
            out: tx_out,
            data: rx_in,
            reply,
        })
        .await;
    if opened.is_err() {
        return Ok(());
    }
    let (mut r, mut w) = conn.into_split();
    let h2 = h.clone();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if tx_in.send(buf[..n].to_vec()).await.is_err() {
                break;
            }
            h2.poke();
        }
        drop(tx_in);
        h2.poke();
    });
    while let Some(e) = rx_out.recv().await {
        h.poke();
        match e {
            TcpEvent::Data(d) => {
                if w.write_all(&d).await.is_err() {
                    break;
                }
            }
            TcpEvent::Shutdown => {
                let _ = w.shutdown().await;
            }
            TcpEvent::Closed | TcpEvent::Failed(_) => break,
            TcpEvent::Opened => {}
        }
    }
    up.abort();
    Ok(())
}

pub fn list(svc: &Service, id: &str) -> Vec<PortInfo> {
    let mut v: Vec<PortInfo> = svc
        .ports
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|((s, _), _)| s == id)
        .map(|(_, f)| f.info.clone())
        .collect();
    v.sort_by_key(|p| p.port);
    v
}

pub fn close(svc: &Service, id: &str, port: u16) -> bool {
    svc.ports
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&(id.to_string(), port))
        .is_some()
}

pub fn close_all(svc: &Service, id: &str) {
    svc.ports
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(s, _), _| s != id);
}
