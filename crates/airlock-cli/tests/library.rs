//! The core as a library, driving one long-lived container sandbox's agent
//! over protocol v2, on both transports (a `SOCK_SEQPACKET` socketpair and
//! a byte stream, as a microVM has): many processes at once, bulk stdin and
//! stdout under credit, a stalled reader beside a fast one, terminals and
//! their resize, files, tar streams, and paths that try to leave the
//! sandbox. Run by root (the library is used by airlock's own binary).

mod common;

use airlock_core::{
    CreateOptions, Event, ExitStatus, OutStream, ProcessSpec, Sandbox, StreamKind, WriteFlags,
};
use airlock_spec::SandboxSpec;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant};

static AGENT: Once = Once::new();

/// A running container sandbox, or `None` (skipped) when not root.
fn sandbox(stream: bool) -> Option<Sandbox> {
    if !is_root() {
        skip("the library tests drive root-run sandboxes");
        return None;
    }
    AGENT.call_once(|| {
        airlock_core::use_agent_binary(Path::new(env!("CARGO_BIN_EXE_airlock")))
            .expect("agent binary");
    });
    let mut spec = SandboxSpec::new(vec!["true".into()]);
    spec.limits.timeout = Duration::from_secs(300);
    let mut sb = Sandbox::create(
        &spec,
        CreateOptions {
            stream_channel: stream,
            agent: None,
            window: None,
            one_shot: false,
            accounting: false,
            image: None,
            egress_audit: None,
            ..Default::default()
        },
    )
    .expect("create");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match sb.wait(Some(end.saturating_duration_since(Instant::now()))) {
            Ok(Some(Event::Ready)) => return Some(sb),
            Ok(Some(Event::Notice(_))) => {}
            other => panic!("stream={stream}: waiting for Ready: {other:?}"),
        }
    }
}

/// Both transports.
fn transports(f: impl Fn(bool)) {
    for stream in [false, true] {
        f(stream);
    }
}

/// Collects what the sandbox sends, returning credit for what it keeps
/// (except for processes whose output is deliberately left unread).
#[derive(Default)]
struct Seen {
    out: BTreeMap<u32, Vec<u8>>,
    err: BTreeMap<u32, Vec<u8>>,
    exited: BTreeMap<u32, ExitStatus>,
    started: BTreeSet<u32>,
    files: BTreeMap<u32, Vec<u8>>,
    done: BTreeMap<u32, Result<u64, airlock_core::FsError>>,
    stalled: BTreeSet<u32>,
    /// Output of stalled processes, held back (not yet consumed).
    owed: BTreeMap<u32, usize>,
}

impl Seen {
    fn take(&mut self, sb: &mut Sandbox, e: Event) {
        match e {
            Event::Output { id, stream, data } => {
                let n = data.len();
                let kind = match stream {
                    OutStream::Stdout => {
                        self.out.entry(id).or_default().extend_from_slice(&data);
                        StreamKind::Stdout
                    }
                    OutStream::Stderr => {
                        self.err.entry(id).or_default().extend_from_slice(&data);
                        StreamKind::Stderr
                    }
                };
                if self.stalled.contains(&id) {
                    *self.owed.entry(id).or_default() += n;
                } else {
                    sb.consumed(id, kind, n).unwrap();
                }
            }
            Event::Started { id, .. } => {
                self.started.insert(id);
            }
            Event::Exited { id, status, .. } => {
                self.exited.insert(id, status);
            }
            Event::StartFailed { id, stage, errno } => {
                panic!("process {id} failed to start at {stage:?}: errno {errno}")
            }
            Event::FileData { id, data } => {
                let n = data.len();
                self.files.entry(id).or_default().extend_from_slice(&data);
                sb.consumed(id, StreamKind::File, n).unwrap();
            }
            Event::FileDone { id, result } => {
                self.done.insert(id, result);
            }
            Event::AgentGone => panic!("the agent is gone"),
            Event::SetupFailed { .. } => panic!("{e:?}"),
            _ => {}
        }
    }

    /// Handles events until `until` holds, for at most `limit`.
    fn pump(
        &mut self,
        sb: &mut Sandbox,
        limit: Duration,
        what: &str,
        until: impl Fn(&Seen) -> bool,
    ) {
        let end = Instant::now() + limit;
        while !until(self) {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}");
            if let Some(e) = sb.wait(Some(left)).unwrap() {
                self.take(sb, e);
            }
        }
    }
}

fn sh(cmd: &str) -> ProcessSpec {
    ProcessSpec::new(vec!["sh".into(), "-c".into(), cmd.into()])
}

/// A reproducible pseudo-random byte stream (xorshift).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// FNV-1a, a checksum that needs no dependency.
fn checksum(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[test]
fn a_hundred_processes_at_once() {
    transports(|stream| {
        let Some(mut sb) = sandbox(stream) else {
            return;
        };
        let mut ids = BTreeMap::new();
        for i in 0..100 {
            // Each waits a little, so that all are alive together.
            let id = sb
                .start(&sh(&format!("sleep 0.5; echo proc-{i}; echo err-{i} >&2")))
                .unwrap();
            ids.insert(id, i);
        }
        let mut seen = Seen::default();
        seen.pump(&mut sb, Duration::from_secs(120), "100 exits", |s| {
            s.exited.len() == 100
        });
        for (id, i) in &ids {
            assert_eq!(seen.exited[id], ExitStatus::Code(0), "stream={stream}");
            assert_eq!(
                seen.out.get(id).map(|o| o.as_slice()),
                Some(format!("proc-{i}\n").as_bytes()),
                "stream={stream}: stdout of {i}"
            );
            assert_eq!(
                seen.err.get(id).map(|o| o.as_slice()),
                Some(format!("err-{i}\n").as_bytes()),
                "stream={stream}: stderr of {i}"
            );
        }
        sb.close();
    });
}

#[test]
fn sixty_four_mib_through_cat() {
    transports(|stream| {
        let Some(mut sb) = sandbox(stream) else {
            return;
        };
        let data = random_bytes(64 << 20, 0x5eed + stream as u64);
        let mut p = ProcessSpec::new(vec!["cat".into()]);
        p.stdin = true;
        let id = sb.start(&p).unwrap();
        let mut seen = Seen::default();
        let mut sent = 0;
        let end = Instant::now() + Duration::from_secs(240);
        while !seen.exited.contains_key(&id) {
            assert!(Instant::now() < end, "stream={stream}: timed out at {sent}");
            if sent < data.len() {
                let n = sb.write_stdin(id, &data[sent..]).unwrap();
                sent += n;
                if sent == data.len() {
                    sb.close_stdin(id).unwrap();
                }
            }
            if let Some(e) = sb.wait(Some(Duration::from_millis(50))).unwrap() {
                seen.take(&mut sb, e);
            }
        }
        assert_eq!(seen.exited[&id], ExitStatus::Code(0));
        let out = seen.out.remove(&id).unwrap_or_default();
        assert_eq!(out.len(), data.len(), "stream={stream}");
        assert_eq!(checksum(&out), checksum(&data), "stream={stream}");
        sb.close();
    });
}

#[test]
fn a_stalled_reader_does_not_stall_another_stream() {
    transports(|stream| {
        let Some(mut sb) = sandbox(stream) else {
            return;
        };
        let mut seen = Seen::default();
        // A process whose output nobody reads: it fills its window and
        // then blocks in write.
        let slow = sb.start(&sh("head -c 100000000 /dev/zero")).unwrap();
        seen.stalled.insert(slow);
        let fast = sb.start(&sh("head -c 33554432 /dev/zero")).unwrap();
        seen.pump(&mut sb, Duration::from_secs(120), "the fast stream", |s| {
            s.exited.contains_key(&fast)
        });
        assert_eq!(seen.out[&fast].len(), 32 << 20, "stream={stream}");
        // The stalled one is held to its window: it has not finished and
        // what arrived is bounded.
        assert!(!seen.exited.contains_key(&slow), "stream={stream}");
        let held = seen.out.get(&slow).map_or(0, |o| o.len());
        assert!(held <= 4 << 20, "stream={stream}: {held} bytes unread");
        // Reading it again lets it finish.
        seen.stalled.remove(&slow);
        let owed = seen.owed.remove(&slow).unwrap_or(0);
        if owed > 0 {
            sb.consumed(slow, StreamKind::Stdout, owed).unwrap();
        }
        seen.pump(&mut sb, Duration::from_secs(120), "the stalled one", |s| {
            s.exited.contains_key(&slow)
        });
        assert_eq!(seen.out[&slow].len(), 100_000_000, "stream={stream}");
        sb.close();
    });
}

#[test]
fn a_terminal_sees_its_size_and_its_resize() {
    transports(|stream| {
        let Some(mut sb) = sandbox(stream) else {
            return;
        };
        let mut p = ProcessSpec::new(vec![
            "python3".into(),
            "-c".into(),
            "import os,signal,sys,time\n\
             def show(*a):\n    c,r=os.get_terminal_size(0); os.write(1, f'size {r}x{c} tty={os.isatty(1)}\\n'.encode())\n\
             signal.signal(signal.SIGWINCH, lambda *a: (show(), os._exit(0)))\n\
             show()\n\
             time.sleep(60)\n"
                .into(),
        ]);
        p.pty = Some((24, 80));
        p.stdin = true;
        let id = sb.start(&p).unwrap();
        let mut seen = Seen::default();
        seen.pump(&mut sb, Duration::from_secs(30), "the first size", |s| {
            s.out
                .get(&id)
                .is_some_and(|o| String::from_utf8_lossy(o).contains("size 24x80 tty=True"))
        });
        sb.resize(id, 40, 132).unwrap();
        seen.pump(&mut sb, Duration::from_secs(30), "the resize", |s| {
            s.exited.contains_key(&id)
        });
        let text = String::from_utf8_lossy(&seen.out[&id]).to_string();
        assert!(
            text.contains("size 40x132 tty=True"),
            "stream={stream}: {text}"
        );
        sb.close();
    });
}

/// Uploads `data` to `path` and waits for the result.
fn upload(sb: &mut Sandbox, seen: &mut Seen, path: &str, data: &[u8]) -> u64 {
    let id = sb
        .write_file(
            Path::new(path),
            0o644,
            WriteFlags {
                create: true,
                truncate: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mut sent = 0;
    let end = Instant::now() + Duration::from_secs(120);
    while sent < data.len() {
        assert!(Instant::now() < end, "upload timed out at {sent}");
        let n = sb.file_data(id, &data[sent..]).unwrap();
        sent += n;
        if n == 0 {
            if let Some(e) = sb.wait(Some(Duration::from_millis(50))).unwrap() {
                seen.take(sb, e);
            }
        }
    }
    sb.file_end(id).unwrap();
    seen.pump(sb, Duration::from_secs(60), "the upload's end", |s| {
        s.done.contains_key(&id)
    });
    seen.done.remove(&id).unwrap().expect("upload")
}

/// Downloads `path` (all of it): its bytes, or the error.
fn download(sb: &mut Sandbox, seen: &mut Seen, path: &str) -> Result<Vec<u8>, i32> {
    let id = sb.read_file(Path::new(path), 0, u64::MAX).unwrap();
    seen.pump(sb, Duration::from_secs(120), "the download's end", |s| {
        s.done.contains_key(&id)
    });
    match seen.done.remove(&id).unwrap() {
        Ok(_) => Ok(seen.files.remove(&id).unwrap_or_default()),
        Err(e) => Err(e.errno),
    }
}

/// Runs `cmd` and returns its stdout (it must succeed).
fn run(sb: &mut Sandbox, seen: &mut Seen, cmd: &str) -> String {
    let id = sb.start(&sh(cmd)).unwrap();
    seen.pump(sb, Duration::from_secs(60), cmd, |s| {
        s.exited.contains_key(&id)
    });
    let out = String::from_utf8_lossy(&seen.out.remove(&id).unwrap_or_default()).to_string();
    assert_eq!(
        seen.exited[&id],
        ExitStatus::Code(0),
        "{cmd}: {out} {}",
        String::from_utf8_lossy(seen.err.get(&id).map_or(&[][..], |e| e))
    );
    out
}

#[test]
fn twenty_mib_file_round_trip() {
    transports(|stream| {
        let Some(mut sb) = sandbox(stream) else {
            return;
        };
        let mut seen = Seen::default();
        let data = random_bytes(20 << 20, 77 + stream as u64);
        let n = upload(&mut sb, &mut seen, "/tmp/blob", &data);
        assert_eq!(n, data.len() as u64);
        // The command sees the same bytes (cksum of what it read).
        let inside = run(&mut sb, &mut seen, "wc -c < /tmp/blob");
        assert_eq!(inside.trim(), data.len().to_string());
        let back = download(&mut sb, &mut seen, "/tmp/blob").unwrap();
        assert_eq!(back.len(), data.len(), "stream={stream}");
        assert_eq!(checksum(&back), checksum(&data), "stream={stream}");
        sb.close();
    });
}

/// Reads a tar stream's entries: (path, type, link target, content).
fn tar_entries(tar: &[u8]) -> Vec<(String, char, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 512 <= tar.len() {
        let h = &tar[off..off + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let field = |a: usize, b: usize| {
            let f = &h[a..b];
            let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).to_string()
        };
        let prefix = field(345, 500);
        let name = field(0, 100);
        let name = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let size = u64::from_str_radix(field(124, 136).trim(), 8).unwrap_or(0) as usize;
        let kind = h[156] as char;
        let link = field(157, 257);
        let data = tar[off + 512..off + 512 + size].to_vec();
        out.push((name, kind, link, data));
        off += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// A tar header block plus its content.
fn tar_entry(name: &str, kind: u8, link: &str, data: &[u8], mode: u32) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |v: u64, width: usize| format!("{v:0w$o}\0", w = width - 1);
    h[100..108].copy_from_slice(octal(mode as u64, 8).as_bytes());
    h[108..116].copy_from_slice(octal(0, 8).as_bytes());
    h[116..124].copy_from_slice(octal(0, 8).as_bytes());
    h[124..136].copy_from_slice(octal(data.len() as u64, 12).as_bytes());
    h[136..148].copy_from_slice(octal(0, 12).as_bytes());
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut v = h.to_vec();
    v.extend_from_slice(data);
    v.resize(512 + data.len().div_ceil(512) * 512, 0);
    v
}

/// Sends a tar archive into directory `dir`; the result.
fn untar(sb: &mut Sandbox, seen: &mut Seen, dir: &str, tar: &[u8]) -> Result<u64, i32> {
    let id = sb.tar_in(Path::new(dir)).unwrap();
    let mut sent = 0;
    let end = Instant::now() + Duration::from_secs(60);
    while sent < tar.len() && !seen.done.contains_key(&id) {
        assert!(Instant::now() < end);
        let n = sb.file_data(id, &tar[sent..]).unwrap();
        sent += n;
        if n == 0 {
            if let Some(e) = sb.wait(Some(Duration::from_millis(50))).unwrap() {
                seen.take(sb, e);
            }
        }
    }
    if !seen.done.contains_key(&id) {
        sb.file_end(id).unwrap();
    }
    seen.pump(sb, Duration::from_secs(60), "the untar", |s| {
        s.done.contains_key(&id)
    });
    seen.done.remove(&id).unwrap().map_err(|e| e.errno)
}

#[test]
fn tar_of_a_tree_with_symlinks_both_ways() {
    transports(|stream| {
        let Some(mut sb) = sandbox(stream) else {
            return;
        };
        let mut seen = Seen::default();
        run(
            &mut sb,
            &mut seen,
            "mkdir -p /tmp/t/a/b && printf one > /tmp/t/a/one && printf two > /tmp/t/a/b/two \
             && ln -s b/two /tmp/t/a/rel && ln -s /etc/hostname /tmp/t/abs && chmod 0750 /tmp/t/a/b",
        );
        let id = sb.tar_out(Path::new("/tmp/t")).unwrap();
        seen.pump(&mut sb, Duration::from_secs(60), "tar out", |s| {
            s.done.contains_key(&id)
        });
        seen.done.remove(&id).unwrap().expect("tar out");
        let tar = seen.files.remove(&id).unwrap_or_default();
        let entries = tar_entries(&tar);
        let find = |p: &str| {
            entries
                .iter()
                .find(|e| e.0.trim_end_matches('/') == p)
                .unwrap_or_else(|| panic!("stream={stream}: no {p} in {entries:?}"))
        };
        assert_eq!(find("a/one").3, b"one");
        assert_eq!(find("a/b/two").3, b"two");
        assert_eq!((find("a/rel").1, find("a/rel").2.as_str()), ('2', "b/two"));
        assert_eq!(
            (find("abs").1, find("abs").2.as_str()),
            ('2', "/etc/hostname")
        );
        assert_eq!(find("a/b").1, '5');
        // The same archive back into another directory: the links stay
        // links, the files the same.
        untar(&mut sb, &mut seen, "/tmp/u", &tar).expect("tar in");
        let out = run(
            &mut sb,
            &mut seen,
            "cat /tmp/u/a/one /tmp/u/a/rel; echo; readlink /tmp/u/a/rel /tmp/u/abs; stat -c %a /tmp/u/a/b",
        );
        assert_eq!(
            out, "onetwo\nb/two\n/etc/hostname\n750\n",
            "stream={stream}"
        );
        sb.close();
    });
}

/// A file on the host that no path from inside may read or change.
struct Canary {
    dir: tempfile::TempDir,
}

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::Builder::new()
            .prefix("airlock-canary-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::write(dir.path().join("secret"), b"CANARY-HOST-SECRET").unwrap();
        Canary { dir }
    }
    fn path(&self) -> String {
        self.dir.path().join("secret").display().to_string()
    }
    fn untouched(&self) {
        assert_eq!(
            std::fs::read(self.dir.path().join("secret")).unwrap(),
            b"CANARY-HOST-SECRET"
        );
        let names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
    }
}

#[test]
fn hostile_paths_never_reach_a_host_file() {
    transports(|stream| {
        let Some(mut sb) = sandbox(stream) else {
            return;
        };
        let canary = Canary::new();
        let host_shadow = std::fs::read("/etc/shadow").unwrap_or_default();
        let mut seen = Seen::default();
        run(
            &mut sb,
            &mut seen,
            "ln -s / /tmp/root && ln -s /proc/1/root /tmp/pid1root && ln -s .. /tmp/up",
        );
        let canary_dir = canary.dir.path().display().to_string();
        // The calls work (so that a refusal below means something): the
        // sandbox's own files read and write as usual.
        upload(&mut sb, &mut seen, "/tmp/ok", b"fine");
        assert_eq!(download(&mut sb, &mut seen, "/tmp/ok").unwrap(), b"fine");
        assert_eq!(
            download(&mut sb, &mut seen, "/tmp/root/tmp/ok").unwrap(),
            b"fine"
        );
        let reads = [
            "../../etc/shadow".to_string(),
            "/../../../etc/shadow".to_string(),
            "/tmp/root/etc/shadow".to_string(),
            "/proc/1/root/etc/shadow".to_string(),
            "/proc/self/root/etc/shadow".to_string(),
            "/tmp/pid1root/../../etc/shadow".to_string(),
            canary.path(),
            format!("/proc/1/root{}", canary.path()),
            format!("/tmp/root{}", canary.path()),
            format!("/tmp/up/up/up{}", canary.path()),
            "/proc/1/cwd/etc/shadow".to_string(),
        ];
        for p in &reads {
            if let Ok(b) = download(&mut sb, &mut seen, p) {
                assert!(
                    !b.windows(18).any(|w| w == b"CANARY-HOST-SECRET"),
                    "stream={stream}: {p} read the host's file"
                );
                assert!(
                    host_shadow.is_empty() || b != host_shadow,
                    "stream={stream}: {p} read the host's /etc/shadow"
                );
            }
        }
        // Writes through the same tricks land inside the sandbox, if
        // anywhere.
        for p in [
            format!("/tmp/root{canary_dir}/planted"),
            format!("/proc/1/root{canary_dir}/planted"),
            format!("../../..{canary_dir}/planted"),
            format!("{canary_dir}/secret"),
        ] {
            let id = sb
                .write_file(
                    Path::new(&p),
                    0o644,
                    WriteFlags {
                        create: true,
                        truncate: true,
                        ..Default::default()
                    },
                )
                .unwrap();
            let _ = sb.file_data(id, b"planted");
            let _ = sb.file_end(id);
            seen.pump(&mut sb, Duration::from_secs(30), "a hostile write", |s| {
                s.done.contains_key(&id)
            });
            seen.done.remove(&id);
        }
        let id = sb.tar_in(Path::new("/tmp/x")).unwrap();
        let mut evil = tar_entry("link", b'2', "/", b"", 0o777);
        evil.extend(tar_entry(
            &format!("link{canary_dir}/planted2"),
            b'0',
            "",
            b"evil",
            0o644,
        ));
        evil.extend(tar_entry(
            &format!("../../../..{canary_dir}/planted3"),
            b'0',
            "",
            b"evil",
            0o644,
        ));
        evil.extend([0u8; 1024]);
        let _ = sb.file_data(id, &evil);
        let _ = sb.file_end(id);
        seen.pump(&mut sb, Duration::from_secs(30), "a hostile tar", |s| {
            s.done.contains_key(&id)
        });
        canary.untouched();
        sb.close();
    });
}

/// The library drives a microVM sandbox exactly as a container one (what
/// `airlock serve` does with `"isolation": "microvm"`): the agent is the
/// guest's /init, over the virtio-serial byte stream; many processes at
/// once, a file up and down, a listing, a hostile path.
#[test]
fn a_microvm_sandbox_through_the_library() {
    if !is_root() {
        skip("the library tests drive root-run sandboxes");
        return;
    }
    AGENT.call_once(|| {
        airlock_core::use_agent_binary(Path::new(env!("CARGO_BIN_EXE_airlock")))
            .expect("agent binary");
    });
    let mut spec = SandboxSpec::new(vec!["true".into()]);
    spec.isolation = airlock_spec::Isolation::Microvm;
    spec.limits.timeout = Duration::from_secs(600);
    let mut sb = Sandbox::create(
        &spec,
        CreateOptions {
            stream_channel: false,
            agent: None,
            window: None,
            one_shot: false,
            accounting: false,
            image: None,
            egress_audit: None,
            ..Default::default()
        },
    )
    .expect("create");
    assert_eq!(sb.isolation(), airlock_spec::Isolation::Microvm);
    let notes = sb.take_notes();
    assert!(
        notes.iter().any(|n| n.contains("microVM accelerator")),
        "{notes:?}"
    );
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        match sb.wait(Some(end.saturating_duration_since(Instant::now()))) {
            Ok(Some(Event::Ready)) => break,
            Ok(Some(Event::Notice(_))) => {}
            other => panic!("waiting for Ready: {other:?}"),
        }
    }
    let mut seen = Seen::default();
    let ids: Vec<u32> = (0..20)
        .map(|i| sb.start(&sh(&format!("echo p{i}; uname -r"))).unwrap())
        .collect();
    seen.pump(&mut sb, Duration::from_secs(120), "20 processes", |s| {
        ids.iter().all(|id| s.exited.contains_key(id))
    });
    for (i, id) in ids.iter().enumerate() {
        let out = String::from_utf8_lossy(&seen.out[id]).to_string();
        assert!(out.starts_with(&format!("p{i}\n")), "{out}");
        assert!(out.trim_end().ends_with("-cloud-amd64"), "{out}");
        assert_eq!(seen.exited[id], ExitStatus::Code(0));
    }
    let data = random_bytes(3 << 20, 11);
    assert_eq!(
        upload(&mut sb, &mut seen, "/tmp/blob", &data),
        data.len() as u64
    );
    let sum = run(&mut sb, &mut seen, "cksum < /tmp/blob | cut -d' ' -f2");
    assert_eq!(sum.trim(), data.len().to_string());
    let back = download(&mut sb, &mut seen, "/tmp/blob").unwrap();
    assert_eq!(checksum(&back), checksum(&data));
    // A path that tries to leave the guest's sandbox root reads inside it.
    let shadow = download(&mut sb, &mut seen, "/../../etc/shadow");
    let host_shadow = std::fs::read("/etc/shadow").unwrap_or_default();
    assert!(shadow.map_or(true, |b| b != host_shadow || host_shadow.is_empty()));
    // Pause stops the whole machine (QMP stop): a process started then
    // does not run until resume.
    sb.pause().unwrap();
    let id = sb.start(&sh("echo resumed")).unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if let Some(e) = sb.wait(Some(Duration::from_millis(200))).unwrap() {
            assert!(
                !matches!(
                    e,
                    Event::Started { .. } | Event::Output { .. } | Event::Exited { .. }
                ),
                "ran while paused: {e:?}"
            );
            seen.take(&mut sb, e);
        }
    }
    sb.resume().unwrap();
    seen.pump(&mut sb, Duration::from_secs(60), "after resume", |s| {
        s.exited.contains_key(&id)
    });
    assert_eq!(String::from_utf8_lossy(&seen.out[&id]), "resumed\n");
    sb.close();
}
