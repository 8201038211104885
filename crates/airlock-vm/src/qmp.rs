//! A small blocking QMP client on a private socket (one end of a
//! socketpair; QEMU holds the other as `-chardev socket,fd=N`). QEMU runs
//! the guest and could be taken over by it: every line it sends is
//! bounded (64 KiB) and parsed as untrusted JSON.

use crate::{Result, VmError};
use serde_json::Value;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

const MAX_LINE: usize = 64 * 1024;

pub struct Qmp {
    fd: OwnedFd,
    buf: Vec<u8>,
    /// Events that arrived while waiting for something else.
    pub events: Vec<Value>,
}

fn qerr(s: impl Into<String>) -> VmError {
    VmError::Qmp(s.into())
}

impl Qmp {
    /// Reads the greeting and enters command mode.
    pub fn connect(fd: OwnedFd, limit: Duration) -> Result<Qmp> {
        let mut q = Qmp {
            fd,
            buf: Vec::new(),
            events: Vec::new(),
        };
        let end = Instant::now() + limit;
        let greeting = q.line(end)?;
        if greeting.get("QMP").is_none() {
            return Err(qerr("no QMP greeting"));
        }
        q.execute("qmp_capabilities", Value::Null, limit)?;
        Ok(q)
    }

    /// One JSON object, waiting until `end`.
    fn line(&mut self, end: Instant) -> Result<Value> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                let line = std::mem::replace(&mut self.buf, rest);
                let v: Value = serde_json::from_slice(&line)
                    .map_err(|e| qerr(format!("bad JSON from QEMU: {e}")))?;
                if !v.is_object() {
                    return Err(qerr("QMP message is not an object"));
                }
                return Ok(v);
            }
            if self.buf.len() > MAX_LINE {
                return Err(qerr("QMP line too long"));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(qerr("timed out waiting for QEMU"));
            }
            let mut p = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(qerr(format!("poll: {e}")));
            }
            if n == 0 {
                continue;
            }
            let mut b = [0u8; 8192];
            // SAFETY: reads into a buffer of its length.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(qerr(format!("read: {e}")));
            }
            if r == 0 {
                return Err(qerr("QEMU closed its QMP socket (it exited)"));
            }
            self.buf.extend_from_slice(&b[..r as usize]);
        }
    }

    /// Hands QEMU `fd` under `name` (`getfd`, the fd passed with
    /// SCM_RIGHTS).
    pub fn send_fd(&mut self, name: &str, fd: std::os::fd::RawFd, limit: Duration) -> Result<()> {
        let text = format!(
            "{}\n",
            serde_json::json!({ "execute": "getfd", "arguments": { "fdname": name } })
        );
        let mut iov = libc::iovec {
            iov_base: text.as_ptr() as *mut libc::c_void,
            iov_len: text.len(),
        };
        let mut cbuf = [0u64; 8];
        // SAFETY: msghdr is plain data; the control buffer is large enough
        // for one fd (CMSG_SPACE(4) <= 64 bytes) and aligned for cmsghdr.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut i32, fd);
            libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
        };
        if n != text.len() as isize {
            return Err(qerr(format!(
                "send getfd: {}",
                std::io::Error::last_os_error()
            )));
        }
        self.reply("getfd", limit).map(|_| ())
    }

    /// Runs `cmd` and returns its `return` value.
    pub fn execute(&mut self, cmd: &str, args: Value, limit: Duration) -> Result<Value> {
        let mut m = serde_json::json!({ "execute": cmd });
        if !args.is_null() {
            m["arguments"] = args;
        }
        let mut text = m.to_string();
        text.push('\n');
        airlock_sys::write_all_fd(self.fd.as_raw_fd(), text.as_bytes())
            .map_err(|e| qerr(format!("send {cmd}: {e}")))?;
        self.reply(cmd, limit)
    }

    fn reply(&mut self, cmd: &str, limit: Duration) -> Result<Value> {
        let end = Instant::now() + limit;
        loop {
            let v = self.line(end)?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let desc = e
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("(no description)");
                return Err(qerr(format!(
                    "{cmd}: {}",
                    desc.chars().take(500).collect::<String>()
                )));
            }
            if v.get("event").is_some() && self.events.len() < 256 {
                self.events.push(v);
            }
        }
    }

    /// Waits until an event for which `want` is true arrives (or was
    /// queued).
    pub fn wait_event(&mut self, want: impl Fn(&Value) -> bool, limit: Duration) -> Result<Value> {
        if let Some(i) = self.events.iter().position(&want) {
            return Ok(self.events.remove(i));
        }
        let end = Instant::now() + limit;
        loop {
            let v = self.line(end)?;
            if v.get("event").is_some() {
                if want(&v) {
                    return Ok(v);
                }
                if self.events.len() < 256 {
                    self.events.push(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        let mut sp = [0; 2];
        assert_eq!(
            // SAFETY: room for two fds.
            unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                    0,
                    sp.as_mut_ptr(),
                )
            },
            0
        );
        // SAFETY: two new fds.
        unsafe { (OwnedFd::from_raw_fd(sp[0]), OwnedFd::from_raw_fd(sp[1])) }
    }

    /// A hostile QEMU (taken over by its guest) answers with `bytes`:
    /// the client fails with an error, never panics or hangs.
    fn hostile(bytes: &[u8]) -> Result<Qmp> {
        let (ours, theirs) = pair();
        let b = bytes.to_vec();
        let t = std::thread::spawn(move || {
            let _ = airlock_sys::write_all_fd(theirs.as_raw_fd(), &b);
            // Keep the socket open a moment, then go.
            std::thread::sleep(Duration::from_millis(300));
            drop(theirs);
        });
        let r = Qmp::connect(ours, Duration::from_secs(2));
        t.join().unwrap();
        r
    }

    #[test]
    fn hostile_answers_are_errors() {
        let greeting = b"{\"QMP\":{}}\n".to_vec();
        for bad in [
            b"not json\n".to_vec(),
            b"[1,2,3]\n".to_vec(),
            b"{\"no\":\"greeting\"}\n".to_vec(),
            vec![b'{'; MAX_LINE + 10],
            [
                greeting.clone(),
                b"{\"error\":{\"desc\":\"nope\"}}\n".to_vec(),
            ]
            .concat(),
            [greeting.clone(), b"\xff\xfe\n".to_vec()].concat(),
            // Closed before answering.
            greeting.clone(),
            Vec::new(),
        ] {
            let r = hostile(&bad);
            assert!(
                r.is_err(),
                "{:?}",
                String::from_utf8_lossy(&bad[..bad.len().min(40)])
            );
        }
        // Events are kept only up to a bound while waiting for a reply.
        let mut flood = greeting.clone();
        for _ in 0..1000 {
            flood.extend_from_slice(b"{\"event\":\"X\"}\n");
        }
        flood.extend_from_slice(b"{\"return\":{}}\n");
        let q = hostile(&flood).unwrap();
        assert!(q.events.len() <= 256);
    }
}
