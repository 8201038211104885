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

/// A source tree owned by the test user (a developer's checkout: its
/// files are the sandbox user's inside), made under `dir`.
fn user_tree(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("sub/b.txt"), "beta\n").unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho ran-script\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("sub/b.txt", src.join("link")).unwrap();
    if let Some((u, g)) = test_user_ids() {
        for p in ["", "sub", "a.txt", "sub/b.txt", "run.sh", "link"] {
            std::os::unix::fs::lchown(src.join(p), Some(u), Some(g)).unwrap();
        }
    }
    src
}

/// `ro` and `overlay` mounts of a directory and an `ro` mount of a file:
/// the files are there, owned by the sandbox's user, executable where
/// they were; `ro` refuses writes, `overlay` takes them inside only; the
/// host's tree is as it was, and the next sandbox sees none of it.
#[test]
fn ro_and_overlay_mounts() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let dir = scratch(Who::Root);
    let src = user_tree(dir.path());
    let s = src.display().to_string();
    let ro = format!("{s}:/data");
    let ov = format!("{s}:/work:overlay");
    let one = format!("{s}/a.txt:/one.txt");
    let script = "cat /data/a.txt /data/sub/b.txt /data/link /one.txt; /data/run.sh; \
        stat -c '%U %a' /data/a.txt /data/run.sh; \
        echo x > /data/new 2>&1 || echo ro-refused; \
        echo changed > /work/a.txt && echo more > /work/c.txt && cat /work/a.txt /work/c.txt; \
        rm /work/sub/b.txt && ls /work/sub | wc -l";
    let o = vm(&["-v", &ro, "-v", &ov, "-v", &one], script).unwrap();
    o.ok();
    assert_eq!(
        o.lines()[..5],
        ["alpha", "beta", "beta", "alpha", "ran-script"],
        "{o:?}"
    );
    assert!(o.stdout.contains("sandbox 644\nsandbox 755\n"), "{o:?}");
    assert!(o.stdout.contains("ro-refused"), "{o:?}");
    assert!(o.stdout.contains("changed\nmore\n0\n"), "{o:?}");
    // The host's tree is untouched.
    assert_eq!(
        std::fs::read_to_string(src.join("a.txt")).unwrap(),
        "alpha\n"
    );
    assert!(src.join("sub/b.txt").exists());
    assert!(!src.join("c.txt").exists() && !src.join("new").exists());
    // A second sandbox: the first's overlay writes are gone.
    let o = vm(&["-v", &ov], "cat /work/a.txt; ls /work").unwrap();
    o.ok();
    assert_eq!(o.lines()[0], "alpha", "{o:?}");
    assert!(!o.stdout.contains("c.txt"), "{o:?}");
    // Nothing of a per-sandbox disk is left on the host once its airlock
    // process is gone (each is named m<pid>-...).
    let left: Vec<String> = std::fs::read_dir("/var/lib/airlock/vm/mounts")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    let pid = n[1..].split('-').next().unwrap_or("");
                    n.starts_with('m')
                        && !pid.is_empty()
                        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left on the host: {left:?}");
}

/// An `rw` mount is refused in a microVM with a message that says why
/// and what to do instead; no guest starts.
#[test]
fn rw_mounts_are_refused_plainly() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let dir = scratch(Who::Root);
    let m = format!("{}:/out:rw", dir.path().display());
    let o = vm(&["-v", &m], "echo ran").unwrap();
    assert_eq!(o.code, 125, "{o:?}");
    assert!(!o.stdout.contains("ran"), "{o:?}");
    assert!(
        o.stderr.contains("rw mounts") && o.stderr.contains("refused in a microVM"),
        "{o:?}"
    );
    assert!(
        o.stderr.contains("--overlay") || o.stderr.contains("overlay"),
        "{o:?}"
    );
}

/// `airlock task --isolation microvm`: the repository is an overlay in
/// the guest, and the patch of what the command changed (an edit, a new
/// file, a deletion, a mode change) applies to a clean copy.
#[test]
fn task_in_a_microvm_makes_the_patch() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let dir = scratch(Who::Root);
    let repo = user_tree(dir.path());
    let clean = dir.path().join("clean");
    let st = std::process::Command::new("cp")
        .args(["-a", repo.to_str().unwrap(), clean.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let patch = dir.path().join("out.patch");
    let o = run(
        Who::Root,
        &[
            "task",
            "--isolation",
            "microvm",
            "--repo",
            repo.to_str().unwrap(),
            "--patch",
            patch.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "pwd; uname -r; echo gamma >> a.txt; echo new > sub/new.txt; rm run.sh; chmod +x sub/b.txt",
        ],
    )
    .unwrap();
    o.ok();
    assert_eq!(o.lines()[0], "/work", "{o:?}");
    assert!(o.lines()[1].ends_with("-cloud-amd64"), "not a guest: {o:?}");
    let text = std::fs::read_to_string(&patch).unwrap();
    // The repository itself is untouched.
    assert_eq!(
        std::fs::read_to_string(repo.join("a.txt")).unwrap(),
        "alpha\n"
    );
    assert!(repo.join("run.sh").exists());
    let st = std::process::Command::new("git")
        .args(["apply", patch.to_str().unwrap()])
        .current_dir(&clean)
        .status()
        .unwrap();
    assert!(st.success(), "git apply failed: {text}");
    assert_eq!(
        std::fs::read_to_string(clean.join("a.txt")).unwrap(),
        "alpha\ngamma\n",
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(clean.join("sub/new.txt")).unwrap(),
        "new\n"
    );
    assert!(!clean.join("run.sh").exists(), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(clean.join("sub/b.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "{text}");
}

/// `--kernel PATH`: a missing file, a file that is no kernel and a
/// kernel given to another tier are each refused with one clear line,
/// before anything starts; the installed kernel given by path works.
#[test]
fn kernel_flag_checks_its_path() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let dir = scratch(Who::Root);
    let bogus = dir.path().join("vmlinuz-bogus");
    std::fs::write(&bogus, vec![0u8; 4096]).unwrap();
    let missing = dir.path().join("nope");
    for (flags, want) in [
        (
            vec![
                "--isolation",
                "microvm",
                "--kernel",
                missing.to_str().unwrap(),
            ],
            "no such file",
        ),
        (
            vec![
                "--isolation",
                "microvm",
                "--kernel",
                bogus.to_str().unwrap(),
            ],
            "not an x86 Linux kernel image",
        ),
        (
            vec!["--kernel", bogus.to_str().unwrap()],
            "give --isolation microvm",
        ),
    ] {
        let o = sh(Who::Root, &flags, "echo ran").unwrap();
        assert_eq!(o.code, 125, "{o:?}");
        assert!(!o.stdout.contains("ran"), "{o:?}");
        assert!(o.stderr.contains("--kernel"), "{o:?}");
        assert!(o.stderr.contains(want), "{want}: {o:?}");
        assert_eq!(o.stderr.lines().count(), 1, "one line: {o:?}");
    }
    let installed = std::fs::read_dir("/boot")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with("-cloud-amd64")
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("vmlinuz-")
        })
        .max()
        .expect("the Debian cloud kernel (scripts/setup.sh installs it)");
    let o = vm(&["--kernel", installed.to_str().unwrap()], "uname -r").unwrap();
    o.ok();
    assert!(
        installed.to_string_lossy().ends_with(o.stdout.trim()),
        "{o:?}"
    );
}

/// `airlock task --keep --isolation microvm`: the task runs in the
/// service, in a guest; the patch is written, the sandbox stays (named
/// on stderr), the repository is untouched.
#[test]
fn task_keep_in_a_microvm_through_the_service() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let work = scratch(Who::Root);
    let repo = user_tree(work.path());
    let sock = work.path().join("s.sock");
    let serve = bin().with_file_name("airlock-serve");
    let mut daemon = std::process::Command::new(&serve)
        .args(["--socket", sock.to_str().unwrap(), "--state-dir"])
        .arg(work.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while !sock.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sock_env = sock.to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut c = airlock(Who::Root).unwrap();
        c.env("AIRLOCK_SOCKET", &sock_env)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let patch = work.path().join("out.patch");
    let out = run(&[
        "task",
        "--keep",
        "--isolation",
        "microvm",
        "--repo",
        repo.to_str().unwrap(),
        "--patch",
        patch.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "uname -r; echo b > b.txt",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let id = stderr
        .split("kept sandbox ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    let exec = run(&["exec", &id, "--", "cat", "/work/b.txt"]);
    let _ = run(&["rm", &id]);
    // SAFETY: our own child's pid.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.trim().ends_with("-cloud-amd64"),
        "not a guest: {stdout} {stderr}"
    );
    assert!(id.starts_with("sb-"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "b\n", "{exec:?}");
    assert!(std::fs::read_to_string(&patch)
        .unwrap()
        .contains("+++ b/b.txt"));
    assert!(!repo.join("b.txt").exists());
}
