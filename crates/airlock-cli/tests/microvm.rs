//! The microVM tier (`--isolation microvm`) end to end, as root: a real
//! QEMU `microvm` guest (TCG where KVM does not run guests, as on CI), the
//! agent as its `/init`, restored from the template snapshot that the
//! first run of a kind of machine makes (cached under
//! `/var/lib/airlock/vm`, so that every test after the first starts in
//! about a second). The attack cases are in `attacks_microvm.rs`.

mod common;
use common::*;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `airlock run --isolation microvm [flags] -- sh -c SCRIPT` as root.
pub fn vm(flags: &[&str], script: &str) -> Option<Out> {
    let mut f = vec!["--isolation", "microvm"];
    f.extend_from_slice(flags);
    sh(Who::Root, &f, script)
}

/// The output, the exit code, stderr, and the accelerator said once.
#[test]
fn runs_a_command_in_a_guest_kernel() {
    let Some(o) = vm(&[], "echo out; echo err >&2; uname -r; id -u; exit 7") else {
        return;
    };
    assert_eq!(o.code, 7, "{o:?}");
    let l = o.lines();
    assert_eq!(l[0], "out", "{o:?}");
    // The guest's own kernel (the Debian cloud kernel), not the host's.
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(l[1].ends_with("-cloud-amd64"), "{o:?}");
    assert_ne!(l[1], host.trim(), "the host's kernel answered: {o:?}");
    assert_eq!(l[2], "1000", "{o:?}");
    assert!(o.stderr.contains("err\n"), "{o:?}");
    let accel: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.contains("microVM accelerator:"))
        .collect();
    assert_eq!(accel.len(), 1, "the accelerator is said once: {o:?}");
    assert!(
        accel[0].contains("KVM") || accel[0].contains("TCG (software emulation"),
        "{o:?}"
    );
}

/// stdin reaches the command through the channel, byte for byte.
#[test]
fn stdin_round_trip() {
    let Some(mut c) = airlock(Who::Root) else {
        return;
    };
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut child = c
        .args([
            "run",
            "--isolation",
            "microvm",
            "--",
            "sh",
            "-c",
            "cat | od -An -tx1 | md5sum",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let d = data.clone();
    let w = std::thread::spawn(move || {
        stdin.write_all(&d).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut local = std::process::Command::new("sh")
        .args(["-c", "od -An -tx1 | md5sum"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    local.stdin.take().unwrap().write_all(&data).unwrap();
    let want = local.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&want.stdout)
    );
}

/// --timeout kills the guest's command: 124, promptly.
#[test]
fn timeout_is_enforced() {
    let t = Instant::now();
    let Some(o) = vm(&["--timeout", "3s"], "sleep 60; echo survived") else {
        return;
    };
    assert_eq!(o.code, 124, "{o:?}");
    assert!(!o.stdout.contains("survived"), "{o:?}");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}

/// --memory is the guest's RAM: the guest sees no more, and a command
/// that wants more fails inside the guest, not on the host.
#[test]
fn memory_is_the_guests_ram() {
    let Some(o) = vm(
        &["--memory", "160M"],
        "awk '/MemTotal/{print $2}' /proc/meminfo; python3 -c 'b = bytearray(600 << 20); print(len(b))'; echo after=$?",
    ) else {
        return;
    };
    o.ok();
    let l = o.lines();
    let kib: u64 = l[0].parse().unwrap();
    assert!(kib <= 160 * 1024 && kib > 64 * 1024, "{o:?}");
    assert!(!o.stdout.contains("629145600"), "600 MiB fit in 160: {o:?}");
    assert!(
        l.iter().any(|x| x.starts_with("after=") && *x != "after=0"),
        "{o:?}"
    );
}

/// Two sandboxes restored from one template read different random bytes
/// (the host reseeds each guest's RNG before anything runs) and share
/// nothing: a file one writes is not in the next.
#[test]
fn restored_sandboxes_are_fresh_and_reseeded() {
    let script = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; python3 -c 'import os; print(os.getrandom(16).hex())'; ls /tmp; echo x > /tmp/left-behind";
    let Some(a) = vm(&[], script) else {
        return;
    };
    let b = vm(&[], script).unwrap();
    a.ok();
    b.ok();
    let (la, lb) = (a.lines(), b.lines());
    assert_eq!(la[0].len(), 64, "{a:?}");
    assert_ne!(la[0], lb[0], "same /dev/urandom bytes in two restores");
    assert_ne!(la[1], lb[1], "same getrandom bytes in two restores");
    assert!(!b.stdout.contains("left-behind"), "{b:?}");
}

/// Three microVMs at once, each with its own output.
#[test]
fn three_at_once() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let hs: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || vm(&[], &format!("sleep 1; echo vm{i}; hostname")).unwrap())
        })
        .collect();
    for (i, h) in hs.into_iter().enumerate() {
        let o = h.join().unwrap();
        o.ok();
        assert_eq!(o.lines()[0], format!("vm{i}"), "{o:?}");
    }
}

/// The pid of the QEMU process that `airlock` (pid `parent`) started.
pub fn qemu_child_of(parent: u32) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let ppid = st
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(|v| v.trim().to_string());
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if ppid.as_deref() == Some(&parent.to_string())
            && exe.to_string_lossy().contains("qemu-system")
        {
            return Some(pid);
        }
    }
    None
}

/// QEMU killed from outside: the run ends at once with airlock's own
/// failure code and a clear message, and nothing is left behind.
#[test]
fn qemu_killed_from_outside_fails_cleanly() {
    let Some(mut c) = airlock(Who::Root) else {
        return;
    };
    let mut child = c
        .args([
            "run",
            "--isolation",
            "microvm",
            "--",
            "sh",
            "-c",
            "echo up; sleep 120",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The command runs: the QEMU under airlock now is the sandbox's (not
    // one making a template).
    let mut stdout = child.stdout.take().unwrap();
    let mut up = [0u8; 3];
    std::io::Read::read_exact(&mut stdout, &mut up).unwrap();
    assert_eq!(&up, b"up\n");
    let qemu = qemu_child_of(pid).expect("no QEMU under airlock");
    let t = Instant::now();
    // SAFETY: kill of a process id we just found.
    unsafe { libc::kill(qemu as i32, libc::SIGKILL) };
    let o = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "airlock's own failure: {err}");
    assert!(
        err.contains("microVM ended before the command did"),
        "no clear error: {err}"
    );
    // Reaped by airlock (a process left unreaped would stay, a zombie of
    // an init that does not reap).
    assert!(
        !std::path::Path::new(&format!("/proc/{qemu}")).exists(),
        "QEMU left behind"
    );
}

/// `--trust untrusted` picks the microVM tier.
#[test]
fn trust_untrusted_is_a_microvm() {
    let Some(o) = sh(Who::Root, &["--trust", "untrusted"], "uname -r") else {
        return;
    };
    o.ok();
    assert!(o.stdout.trim().ends_with("-cloud-amd64"), "{o:?}");
    assert!(o.stderr.contains("microVM accelerator"), "{o:?}");
}

/// Rootless, the tier says plainly that it is not available yet (one
/// line, airlock's own failure code), and starts nothing.
#[test]
fn rootless_is_refused_plainly() {
    let Some(o) = sh(Who::User, &["--isolation", "microvm"], "echo ran") else {
        return;
    };
    assert_eq!(o.code, 125, "{o:?}");
    assert!(!o.stdout.contains("ran"), "{o:?}");
    assert!(
        o.stderr.contains("rootless microVMs are not supported yet"),
        "{o:?}"
    );
}

/// --cpus is the guest's vCPU count (rounded up).
#[test]
fn cpus_are_vcpus() {
    let Some(o) = vm(&["--cpus", "1.5"], "nproc") else {
        return;
    };
    o.ok();
    assert_eq!(o.lines()[0], "2", "{o:?}");
}

/// A store image as the guest's root (its tree as a read-only erofs disk
/// under the sandbox's writable layer): its files are there, the host's
/// are not, writes work and are gone in the next sandbox.
#[test]
fn a_store_image_in_a_microvm() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let Some(busybox) = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
    else {
        skip("no busybox on this host");
        return;
    };
    let dir = scratch(Who::Root);
    std::fs::copy(busybox, dir.path().join("busybox")).unwrap();
    std::fs::write(dir.path().join("hello.txt"), "from-the-image\n").unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY hello.txt /data/hello.txt\nENV PATH=/bin\n",
    )
    .unwrap();
    let name = format!("microvm-test-{}", std::process::id());
    let ctx = dir.path().display().to_string();
    run(Who::Root, &["image", "build", "--name", &name, &ctx])
        .unwrap()
        .ok();
    let script = "/bin/busybox cat /data/hello.txt; /bin/busybox ls /data /usr 2>&1; /bin/busybox uname -r; echo x > /data/new && echo wrote";
    let go = || {
        run(
            Who::Root,
            &[
                "run",
                "--isolation",
                "microvm",
                "--image",
                &name,
                "--",
                "/bin/busybox",
                "sh",
                "-c",
                script,
            ],
        )
        .unwrap()
    };
    let a = go();
    let b = go();
    let _ = run(Who::Root, &["image", "rm", &name]);
    for o in [&a, &b] {
        o.ok();
        let l = o.lines();
        assert_eq!(l[0], "from-the-image", "{o:?}");
        assert!(
            o.stdout.contains("No such file or directory"),
            "the host's /usr is there: {o:?}"
        );
        assert!(o.stdout.contains("-cloud-amd64"), "{o:?}");
        assert!(o.stdout.contains("wrote"), "{o:?}");
    }
    assert!(
        !b.stdout.contains("new"),
        "a write of the first sandbox is in the second: {b:?}"
    );
}
