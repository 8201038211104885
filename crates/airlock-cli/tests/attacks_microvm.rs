//! Attacks on the microVM tier, as root on the host: what the guest tries
//! and what must not happen on the host. Each runs a real guest (restored
//! from the cached template; see `microvm.rs`).

mod common;
use common::*;
use std::io::Read;
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn vm(flags: &[&str], script: &str) -> Option<Out> {
    let mut f = vec!["--isolation", "microvm"];
    f.extend_from_slice(flags);
    sh(Who::Root, &f, script)
}

fn vm_py(flags: &[&str], code: &str) -> Option<Out> {
    let mut f = vec!["--isolation", "microvm"];
    f.extend_from_slice(flags);
    py(Who::Root, &f, code)
}

/// The host's addresses other than loopback (from `ip`), IPv4.
fn host_addresses() -> Vec<String> {
    let o = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "inet")?;
            let a = w.get(i + 1)?.split('/').next()?.to_string();
            (!a.starts_with("127.")).then_some(a)
        })
        .collect()
}

/// The guest has no network device: a server on the host's loopback and
/// on the host's own addresses is out of reach (the guest's 127.0.0.1 is
/// its own), and the server never sees a connection.
#[test]
fn guest_cannot_reach_the_hosts_network() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let mut targets = vec!["127.0.0.1".to_string()];
    targets.extend(host_addresses());
    let code = format!(
        r#"
print("ifaces", sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]))
for a in {targets:?}:
    s = socket.socket()
    s.settimeout(5)
    print(a, try_(s.connect, (a, {port})))
print("udp", try_(socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto, b"x", ("{first}", 53)))
"#,
        first = targets.last().unwrap()
    );
    let o = vm_py(&[], &code).unwrap();
    o.ok();
    assert_eq!(o.lines()[0], "ifaces ['lo']", "{o:?}");
    assert!(o.stdout.contains("127.0.0.1 ECONNREFUSED"), "{o:?}");
    for a in &targets[1..] {
        assert!(
            o.stdout.contains(&format!("{a} ENETUNREACH")),
            "{a} reachable? {o:?}"
        );
    }
    assert!(o.stdout.contains("udp ENETUNREACH"), "{o:?}");
    match l.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host's server got a connection: {other:?}"),
    }
}

/// Host files outside what the guest is given are not there: a canary in
/// a host directory, the host's users and shadow file, the host's home
/// directories and /var.
#[test]
fn guest_cannot_read_host_files() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let dir = scratch(Who::Root);
    let secret = format!("canary-{}-{}", std::process::id(), line!());
    let canary = dir.path().join("canary");
    std::fs::write(&canary, &secret).unwrap();
    let o = vm(
        &[],
        &format!(
            "cat {c} 2>&1; ls /root /home /var 2>&1; cat /etc/shadow 2>&1 | head -3; grep -c . /etc/passwd; grep -rl {s} /etc /tmp /var /home 2>/dev/null | head -3; echo end",
            c = canary.display(),
            s = secret
        ),
    )
    .unwrap();
    assert!(o.stdout.contains("No such file or directory"), "{o:?}");
    assert!(!o.stdout.contains(&secret), "{o:?}");
    let host_shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    for line in host_shadow.lines().take(3) {
        assert!(!o.stdout.contains(line), "host shadow line visible: {o:?}");
    }
    // The host has the test user; the guest's passwd is airlock's own.
    assert!(!o.stdout.contains("airlock-test"), "{o:?}");
    assert!(o.stdout.contains("end"), "{o:?}");
}

/// A fork bomb and a memory hog stay inside the guest: the host sees no
/// new processes (the guest's are not host processes), the run ends, and
/// no QEMU is left.
#[test]
fn fork_bomb_and_memory_hog_stay_inside() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let count = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|s| s.parse::<u32>().is_ok())
            })
            .count()
    };
    let before = count();
    let mut c = airlock(Who::Root).unwrap();
    let mut child = c
        .args([
            "run",
            "--isolation",
            "microvm",
            "--timeout",
            "25s",
            "--memory",
            "128M",
            "--",
            "sh",
            "-c",
            "python3 -c 'b=[]\nwhile True: b.append(bytearray(1<<20))' & f() { f | f & }; f",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = before;
    let end = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        peak = peak.max(count());
        assert!(Instant::now() < end, "the run did not end");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    // Other tests run beside this one: a generous margin, far below a
    // fork bomb's thousands.
    assert!(
        peak < before + 60,
        "host processes grew from {before} to {peak}: {err}"
    );
    assert!(status.code().is_some(), "{status:?} {err}");
    // QEMU was reaped by airlock, not orphaned to init.
    assert!(orphaned_qemus().is_empty(), "{:?}", orphaned_qemus());
}

/// The QEMU process on the host: no capabilities at all, no_new_privs,
/// a seccomp filter, an unprivileged uid, its own network namespace (no
/// interface), and a root that is not the host's.
#[test]
fn qemu_runs_confined_on_the_host() {
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
            "echo up; sleep 30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let end = Instant::now() + Duration::from_secs(900);
    let q = loop {
        if let Some(q) = qemu_child_of(pid) {
            break q;
        }
        assert!(Instant::now() < end, "no QEMU");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Once the guest runs the command, QEMU is fully set up (its seccomp
    // filter comes after its start).
    let mut up = [0u8; 3];
    child.stdout.take().unwrap().read_exact(&mut up).unwrap();
    assert_eq!(&up, b"up\n");
    let st = std::fs::read_to_string(format!("/proc/{q}/status")).unwrap();
    let field = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .unwrap()
            .trim()
            .to_string()
    };
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(k), "0000000000000000", "{k}: {st}");
    }
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2");
    let uid = field("Uid");
    assert!(uid.split_whitespace().all(|u| u != "0"), "{uid}");
    let ns = |p: &str| std::fs::read_link(p).unwrap();
    assert_ne!(ns(&format!("/proc/{q}/ns/net")), ns("/proc/self/ns/net"));
    assert_ne!(ns(&format!("/proc/{q}/ns/mnt")), ns("/proc/self/ns/mnt"));
    assert_ne!(ns(&format!("/proc/{q}/ns/pid")), ns("/proc/self/ns/pid"));
    let dev = std::fs::read_to_string(format!("/proc/{q}/net/dev")).unwrap();
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{dev}");
    // Its root holds QEMU's files only: no /etc, /home, /root, /var.
    let root: Vec<String> = std::fs::read_dir(format!("/proc/{q}/root"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for absent in ["etc", "home", "root", "var", "tmp", "proc"] {
        assert!(!root.iter().any(|n| n == absent), "{absent} in {root:?}");
    }
    // SAFETY: kill of our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = child.wait();
}

/// Inside the guest, module loading is off for good and the kernel's
/// knobs are not the sandbox's to turn.
#[test]
fn guest_cannot_load_modules() {
    let Some(o) = vm_py(
        &[],
        r#"
print("disabled", open("/proc/sys/kernel/modules_disabled").read().strip())
print("init_module", sc(175, 0, 0, 0))
print("finit_module", sc(313, 0, 0, 0))
print("sysrq", try_(lambda: open("/proc/sysrq-trigger", "w").write("c")))
"#,
    ) else {
        return;
    };
    o.ok();
    assert!(o.stdout.contains("disabled 1"), "{o:?}");
    assert!(o.stdout.contains("init_module EPERM"), "{o:?}");
    assert!(o.stdout.contains("finit_module EPERM"), "{o:?}");
    assert!(!o.stdout.contains("sysrq OK"), "{o:?}");
}

/// The pid of the QEMU process that `airlock` (pid `parent`) started.
fn qemu_child_of(parent: u32) -> Option<u32> {
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

/// QEMU processes whose parent is init: what a sandbox that did not reap
/// its VMM would leave.
fn orphaned_qemus() -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if st.lines().any(|l| l == "PPid:\t1") && exe.to_string_lossy().contains("qemu-system") {
            out.push(pid);
        }
    }
    out
}

/// A tree owned by the test user, mounted into the guest, with symbolic
/// links that point at host files: at /etc/shadow, at a secret beside the
/// tree (absolute and relative), and a directory link out of it. The
/// guest follows them in its own tree: the host's files never appear.
#[test]
fn mounted_symlinks_do_not_reach_host_files() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let dir = scratch(Who::Root);
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let marker = format!("host-secret-{}", std::process::id());
    std::fs::write(outside.join("secret.txt"), format!("{marker}\n")).unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let links = [
        ("shadow", "/etc/shadow".to_string()),
        ("abs", outside.join("secret.txt").display().to_string()),
        ("rel", "../outside/secret.txt".to_string()),
        ("updir", "../outside".to_string()),
        ("root", "/".to_string()),
    ];
    for (name, target) in &links {
        std::os::unix::fs::symlink(target, src.join(name)).unwrap();
    }
    if let Some((u, g)) = test_user_ids() {
        std::os::unix::fs::chown(&src, Some(u), Some(g)).unwrap();
        for (name, _) in &links {
            std::os::unix::fs::lchown(src.join(name), Some(u), Some(g)).unwrap();
        }
    }
    let host_shadow = std::fs::read_to_string("/etc/shadow").unwrap();
    let root_line = host_shadow
        .lines()
        .find(|l| l.starts_with("root:"))
        .unwrap()
        .to_string();
    let m = format!("{}:/data", src.display());
    let ov = format!("{}:/work:overlay", src.display());
    let script = format!(
        "for f in /data/shadow /data/abs /data/rel /data/updir/secret.txt /data/root{o}/secret.txt \
         /work/shadow /work/abs /work/rel; do cat $f 2>&1; done; readlink /data/abs; \
         grep -r {marker} /data/ /work/ /tmp /etc 2>/dev/null | head -3; echo done",
        o = outside.display()
    );
    for user in ["sandbox", "root"] {
        let o = vm(&["-v", &m, "-v", &ov, "--user", user], &script).unwrap();
        assert!(o.stdout.contains("done"), "{o:?}");
        // The link itself is copied as it is (its text names the host path)…
        assert!(
            o.stdout
                .contains(&outside.join("secret.txt").display().to_string()),
            "{o:?}"
        );
        // …but nothing the host's files hold is there.
        let without_readlink: String = o
            .stdout
            .lines()
            .filter(|l| !l.starts_with('/') || !l.ends_with("secret.txt"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            !without_readlink.contains(&marker),
            "a host file reached the guest ({user}): {o:?}"
        );
        assert!(
            !o.stdout.contains(&root_line) && !o.stdout.contains("root:$"),
            "the host's /etc/shadow reached the guest ({user}): {o:?}"
        );
    }
}

/// A file only root may read on the host, inside a tree the test user
/// owns: the guest's copy is empty (its contents never leave the host),
/// even for root inside the guest; the tree's files the user may read
/// are there.
#[test]
fn unreadable_files_are_not_copied_into_the_guest() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let Some((u, g)) = test_user_ids() else {
        skip("no test user");
        return;
    };
    let dir = scratch(Who::Root);
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let marker = format!("root-only-{}", std::process::id());
    std::fs::write(src.join("secret"), format!("{marker}\n")).unwrap();
    std::fs::write(src.join("open.txt"), "readable\n").unwrap();
    std::fs::create_dir(src.join("private")).unwrap();
    std::fs::write(src.join("private/inner"), format!("{marker}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(src.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    for p in ["", "open.txt"] {
        std::os::unix::fs::chown(src.join(p), Some(u), Some(g)).unwrap();
    }
    // Mode 0644, but a POSIX ACL refuses the sandbox user (red team: the
    // copy went by the mode bits).
    let acl = src.join("acl.txt");
    std::fs::write(&acl, format!("{marker}\n")).unwrap();
    std::fs::set_permissions(&acl, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut x = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 0, u),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        x.extend_from_slice(&tag.to_le_bytes());
        x.extend_from_slice(&perm.to_le_bytes());
        x.extend_from_slice(&id.to_le_bytes());
    }
    let cpath = std::ffi::CString::new(acl.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string and buffer.
    let r = unsafe {
        libc::setxattr(
            cpath.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            x.as_ptr().cast(),
            x.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
    let m = format!("{}:/data", src.display());
    let ov = format!("{}:/work:overlay", src.display());
    let script = format!(
        "cat /data/open.txt; stat -c '%n %s' /data/secret /work/secret; ls -A /data/private | wc -l; \
         cat /data/secret /work/secret /data/private/inner /data/acl.txt /work/acl.txt 2>&1; chmod 644 /work/secret 2>&1; cat /work/secret; \
         grep -r {marker} /data /work 2>/dev/null; echo done"
    );
    for user in ["sandbox", "root"] {
        let o = vm(&["-v", &m, "-v", &ov, "--user", user], &script).unwrap();
        assert!(o.stdout.contains("done"), "{o:?}");
        assert_eq!(o.lines()[0], "readable", "{o:?}");
        assert!(
            o.stdout.contains("/data/secret 0\n/work/secret 0\n0\n"),
            "{user}: {o:?}"
        );
        assert!(!o.stdout.contains(&marker), "{user} read it: {o:?}");
    }
}

/// What the guest does to its mounts never reaches the host: writes to a
/// `ro` mount (as the sandbox user and as root in the guest, a remount
/// read-write included) fail, writes to an `overlay` stay inside, and the
/// host's tree — files, modes, names — is byte for byte as it was.
#[test]
fn mounts_are_never_written_back() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let dir = scratch(Who::Root);
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("f.txt"), "original\n").unwrap();
    std::fs::write(src.join("d/g.txt"), "inner\n").unwrap();
    if let Some((u, g)) = test_user_ids() {
        for p in ["", "d", "f.txt", "d/g.txt"] {
            std::os::unix::fs::chown(src.join(p), Some(u), Some(g)).unwrap();
        }
    }
    let snapshot = |p: &std::path::Path| {
        let o = std::process::Command::new("sh")
            .args([
                "-c",
                "find . -printf '%p %m %U %s %T@\\n' | sort; cat f.txt d/g.txt",
            ])
            .current_dir(p)
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let before = snapshot(&src);
    let m = format!("{}:/data", src.display());
    let ov = format!("{}:/work:overlay", src.display());
    let script = "echo evil > /data/f.txt 2>&1; rm -f /data/d/g.txt 2>&1; touch /data/new 2>&1; \
        mount -o remount,rw /data 2>&1; echo evil > /data/f.txt 2>&1; \
        echo evil > /work/f.txt; rm -rf /work/d; touch /work/new; chmod 777 /work; \
        sync; cat /work/f.txt; echo done";
    for user in ["sandbox", "root"] {
        let o = vm(&["-v", &m, "-v", &ov, "--user", user], script).unwrap();
        assert!(o.stdout.contains("evil\ndone"), "{user}: {o:?}");
        assert!(o.stdout.contains("Read-only file system"), "{user}: {o:?}");
        assert_eq!(snapshot(&src), before, "{user}: the host's tree changed");
    }
}

/// Root inside the guest cannot panic the guest's kernel (sysrq is not
/// the sandbox's to write), and an OOM inside — a process growing past
/// the guest's RAM — is the guest's: its OOM killer ends that process
/// (SIGKILL, 137), the sandbox's other commands go on, the host's memory
/// is untouched and QEMU is reaped when the run ends.
#[test]
fn guest_panic_refused_and_oom_stays_inside() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let Some(o) = vm(
        &["--user", "root", "--memory", "128M", "--timeout", "5m"],
        "echo c > /proc/sysrq-trigger 2>&1; echo sysrq=$?; \
         python3 -c 'b=[]\nwhile True: b.append(bytearray(1<<20))'; echo oom=$?; \
         dmesg 2>/dev/null | grep -c -i 'out of memory' || true; echo still-here",
    ) else {
        return;
    };
    o.ok();
    assert!(o.stdout.contains("sysrq=2"), "{o:?}");
    assert!(o.stdout.contains("oom=137"), "{o:?}");
    assert!(o.stdout.contains("still-here"), "{o:?}");
    assert!(orphaned_qemus().is_empty(), "{:?}", orphaned_qemus());
}

/// A real guest kernel panic stays inside: a guest booted with
/// `vm.panic_on_oom=1` (through `AIRLOCK_VM_APPEND`, cold: no template)
/// panics when a process eats its RAM. QEMU ends (`panic=-1`,
/// `-no-reboot`), the run fails with airlock's code and the panic's own
/// line, and QEMU is reaped. (Under TCG on a loaded host the guest may
/// instead thrash before its OOM killer runs; then `--timeout` ends it —
/// still inside, and said.)
#[test]
fn a_guest_kernel_panic_stays_inside() {
    let Some(mut c) = airlock_env(
        Who::Root,
        &[
            ("AIRLOCK_VM_COLD", "1"),
            ("AIRLOCK_VM_APPEND", "sysctl.vm.panic_on_oom=1"),
        ],
    ) else {
        return;
    };
    let o = c
        .args([
            "run",
            "--isolation",
            "microvm",
            "--memory",
            "128M",
            "--timeout",
            "90s",
            "--",
            "sh",
            "-c",
            "cat /proc/sys/vm/panic_on_oom; python3 -c 'b=[]\nwhile True: b.append(bytearray(1<<20))'; echo after=$?",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stdout.lines().next(), Some("1"), "{stdout} {stderr}");
    assert!(
        !stdout.contains("after="),
        "the guest went on: {stdout} {stderr}"
    );
    match o.status.code() {
        Some(125) => assert!(
            stderr.contains("the microVM ended before the command did")
                && stderr.contains("Kernel panic - not syncing: Out of memory"),
            "{stderr}"
        ),
        Some(124) => {
            assert!(stderr.contains("timed out"), "{stderr}");
            eprintln!("the guest thrashed until --timeout instead of panicking: {stderr}");
        }
        other => panic!("{other:?}: {stdout} {stderr}"),
    }
    assert!(orphaned_qemus().is_empty(), "{:?}", orphaned_qemus());
    // The host goes on: the next microVM runs.
    let o = vm(&[], "echo next").unwrap();
    o.ok();
    assert_eq!(o.lines()[0], "next", "{o:?}");
}
