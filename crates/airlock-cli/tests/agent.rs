//! The agent as a process on the host: exec'd fresh, so it holds nothing
//! of airlock's memory — no copy of a secret from airlock's environment in
//! its environment block or anywhere in its address space.

mod common;

use common::*;
use std::io::{Read, Seek, SeekFrom};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The children of `pid` (every thread's).
fn children(pid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                v.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    v
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Every readable mapping of `pid`, searched for `needle` through
/// /proc/PID/mem (root on the host may read any process's memory). Returns
/// the bytes scanned and whether it was found.
fn memory_holds(pid: u32, needle: &[u8]) -> (usize, bool) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut scanned = 0;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.contains("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() {
            continue;
        }
        let mut got = 0;
        while got < buf.len() {
            match mem.read(&mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        scanned += got;
        if buf[..got].windows(needle.len()).any(|w| w == needle) {
            return (scanned, true);
        }
    }
    (scanned, false)
}

/// `airlock run` with a secret in its environment; the agent (airlock's
/// child named airlock-agent) has neither an environment nor any copy of
/// the secret in memory, while airlock itself does (the check can fail).
#[test]
fn no_host_secret_in_the_agent() {
    if !is_root() {
        skip("scanning another process's memory needs root");
        return;
    }
    let secret = format!(
        "AIRLOCK-SECRET-{}-{:x}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ 0x5eed_cafe
    );
    for who in [Who::Root, Who::User] {
        for tier in ["container", "none"] {
            let Some(mut c) = airlock_env(who, &[("AIRLOCK_TEST_SECRET", &secret)]) else {
                continue;
            };
            let mut child = c
                .args(["run", "--isolation", tier, "--", "sleep", "30"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // airlock itself, below the setpriv/env wrappers of the test
            // user's command line.
            let end = Instant::now() + Duration::from_secs(20);
            let (airlock, agent) = loop {
                assert!(Instant::now() < end, "{who:?} {tier}: no agent appeared");
                let mut found = None;
                let mut stack = vec![child.id()];
                while let Some(p) = stack.pop() {
                    for k in children(p) {
                        if comm(k) == "airlock-agent" && !children(k).is_empty() {
                            found = Some((p, k));
                        }
                        stack.push(k);
                    }
                }
                if let Some(f) = found {
                    break f;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let environ = std::fs::read(format!("/proc/{agent}/environ")).unwrap();
            assert!(
                !environ
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "{who:?} {tier}: the agent's environment holds the secret"
            );
            assert!(
                environ.is_empty(),
                "{who:?} {tier}: the agent has an environment: {environ:?}"
            );
            let (scanned, found) = memory_holds(agent, secret.as_bytes());
            assert!(
                scanned > 100_000,
                "{who:?} {tier}: scanned only {scanned} bytes"
            );
            assert!(
                !found,
                "{who:?} {tier}: the agent's memory holds the secret"
            );
            // The scan finds it where it is: in airlock's own memory.
            let (_, in_airlock) = memory_holds(airlock, secret.as_bytes());
            assert!(
                in_airlock,
                "{who:?} {tier}: the scan cannot find the secret in airlock"
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
