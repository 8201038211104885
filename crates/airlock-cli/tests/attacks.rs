//! Attack suite: each test plays a hostile command inside `airlock run` and
//! asserts the specific defense (errno, signal, invisibility) — never just
//! "it failed". Every case runs rootful (`Who::Root`) and rootless
//! (`Who::User`) through [`both`] unless a comment says why it is one-sided.
//!
//! Attack code is mostly Python (with the harness's [`PY_PRELUDE`] and the
//! [`ATT`] helpers below) printing `name=RESULT` lines, which [`expect`]
//! checks against the expected errno names (`A|B` accepts either, where two
//! layers of the sandbox may legitimately answer first).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Python helpers appended to [`PY_PRELUDE`]: `cs(s)` makes a C string and
/// returns its address, `zeros(n)` a zeroed buffer's address, `out(k, v)`
/// prints one result line.
const ATT: &str = r#"
KEEP = []
def cs(s):
    if isinstance(s, str):
        s = s.encode()
    b = ctypes.create_string_buffer(s)
    KEEP.append(b)
    return ctypes.addressof(b)
def zeros(n):
    b = ctypes.create_string_buffer(n)
    KEEP.append(b)
    return ctypes.addressof(b)
def out(k, v):
    print(f"{k}={v}", flush=True)
AT_FDCWD = -100
"#;

/// Runs attack code (Python) in a sandbox as `who`.
fn attack(who: Who, flags: &[&str], code: &str) -> Option<Out> {
    py(who, flags, &format!("{ATT}\n{code}"))
}

/// The `key=value` lines the attack code printed.
fn kv(o: &Out) -> BTreeMap<String, String> {
    o.stdout
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (k, v) = l.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Asserts the run exited with `code` and every `(key, expected)` result;
/// `expected` may list alternatives as `A|B`.
#[track_caller]
fn expect_code(who: Who, o: &Out, code: i32, want: &[(&str, &str)]) {
    assert_eq!(o.code, code, "{who:?}: unexpected exit code: {o:#?}");
    let got = kv(o);
    for (k, v) in want {
        let g = got.get(*k).map(String::as_str).unwrap_or("<missing>");
        assert!(
            v.split('|').any(|alt| alt == g),
            "{who:?}: attack {k:?}: expected {v}, got {g}\n{o:#?}"
        );
    }
}

/// [`expect_code`] with exit code 0 (the attack code ran to its end).
#[track_caller]
fn expect(who: Who, o: &Out, want: &[(&str, &str)]) {
    expect_code(who, o, 0, want)
}

/// A per-process unique name for host-side canaries.
fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "airlock-attack-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Removes a host path (file or directory) on drop.
struct RmOnDrop(PathBuf);

impl Drop for RmOnDrop {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn write(p: &Path, data: &str, mode: u32) {
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn out_of(o: Output) -> Out {
    use std::os::unix::process::ExitStatusExt;
    Out {
        code: o
            .status
            .code()
            .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The host's hostname.
fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A Python list literal of strings.
fn pylist(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

// ---------------------------------------------------------------------------
// 1-3: escaping the filesystem through mounts
// ---------------------------------------------------------------------------

/// Attack: `..` out of a read-only mount to reach the host's tree. Defense:
/// `..` stops at the sandbox root (no host /etc/shadow, no host names).
#[test]
fn dotdot_out_of_a_mount_stays_in_the_sandbox_root() {
    both(|who| {
        let d = scratch(who);
        write(&d.path().join("file"), "inside\n", 0o644);
        let scratch_name = d.path().file_name().unwrap().to_string_lossy().into_owned();
        // Names at the host's / that the sandbox's / never has.
        let sandbox_top = [
            "bin", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "mnt", "proc", "sbin",
            "tmp", "usr", "var", ".airlock",
        ];
        let host_only: Vec<String> = std::fs::read_dir("/")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !sandbox_top.contains(&n.as_str()))
            .collect();
        assert!(
            !host_only.is_empty(),
            "the host / has nothing the sandbox lacks?"
        );
        let code = r#"
out("shadow", try_(open, "/mnt/a/work/../../../etc/shadow"))
out("shadow_deep", try_(open, "/mnt/a/work/" + "../" * 40 + "etc/shadow"))
out("parent", ",".join(sorted(os.listdir("/mnt/a/work/.."))))
top = os.listdir("/mnt/a/work/../../..")
out("same_as_root", sorted(top) == sorted(os.listdir("/")))
out("host_only_seen", ",".join(n for n in HOST_ONLY if n in top) or "none")
deep = os.listdir("/mnt/a/work/" + "../" * 40)
out("deep_host_only_seen", ",".join(n for n in HOST_ONLY if n in deep) or "none")
out("scratch_in_tmp", SCRATCH in os.listdir("/tmp"))
out("file", open("/mnt/a/work/file").read().strip())
"#
        .replace("HOST_ONLY", &pylist(&host_only))
        .replace("SCRATCH", &format!("{scratch_name:?}"));
        let m = format!("{}:/mnt/a/work:ro", d.path().display());
        let Some(o) = attack(who, &["--mount", &m], &code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("shadow", "ENOENT"),
                ("shadow_deep", "ENOENT"),
                ("parent", "work"),
                ("same_as_root", "True"),
                ("host_only_seen", "none"),
                ("deep_host_only_seen", "none"),
                ("scratch_in_tmp", "False"),
                ("file", "inside"),
            ],
        );
    });
}

/// Attack: host-made symlinks in a mounted dir pointing at host secrets.
/// Defense: they resolve inside the sandbox (ENOENT), never on the host.
#[test]
fn host_symlinks_in_a_mount_resolve_inside_the_sandbox() {
    both(|who| {
        let d = scratch(who);
        let other = scratch(who);
        write(&other.path().join("canary"), "host-canary\n", 0o644);
        let p = d.path();
        std::os::unix::fs::symlink("/etc/shadow", p.join("shadow")).unwrap();
        std::os::unix::fs::symlink("/root", p.join("root")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../../etc/shadow", p.join("rel")).unwrap();
        std::os::unix::fs::symlink(other.path(), p.join("hostdir")).unwrap();
        std::os::unix::fs::symlink("/home", p.join("home")).unwrap();
        let code = r#"
out("shadow", try_(open, "/work/shadow"))
out("rel", try_(open, "/work/rel"))
out("hostdir", try_(open, "/work/hostdir/canary"))
if os.getuid() == 0:
    # --user root: /root is the sandbox's own (empty) home.
    out("root", ",".join(os.listdir("/work/root")) or "empty")
else:
    out("root", try_(os.listdir, "/work/root"))
out("home", ",".join(os.listdir("/work/home")))
"#;
        let m = format!("{}:/work:ro", p.display());
        let Some(o) = attack(who, &["--mount", &m], code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("shadow", "ENOENT"),
                ("rel", "ENOENT"),
                ("hostdir", "ENOENT"),
                ("root", "ENOENT"),
                ("home", "sandbox"),
            ],
        );
        let Some(o) = attack(who, &["--mount", &m, "--user", "root"], code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("shadow", "ENOENT"),
                ("hostdir", "ENOENT"),
                ("root", "empty"),
            ],
        );
    });
}

/// Attack: hardlink a file from another filesystem (image, ro mount, an fd)
/// into a writable mount, so the host sees it. Defense: EXDEV / EROFS
/// (linkat AT_EMPTY_PATH: ENOENT without CAP_DAC_READ_SEARCH, or EXDEV).
#[test]
fn hardlinks_across_mounts_are_refused() {
    both(|who| {
        let ro = scratch(who);
        let rw = scratch(who);
        chmod(rw.path(), 0o777);
        write(&ro.path().join("f"), "ro-file\n", 0o644);
        let code = r#"
out("etc_to_rw", try_(os.link, "/etc/passwd", "/rw/x"))
out("usr_to_rw", try_(os.link, "/usr/bin/env", "/rw/env"))
out("ro_to_rw", try_(os.link, "/ro/f", "/rw/y"))
out("usr_to_tmp", try_(os.link, "/usr/bin/env", "/tmp/env"))
out("within_ro", try_(os.link, "/ro/f", "/ro/g"))
fd = os.open("/etc/passwd", os.O_RDONLY)
out("empty_path", sc(265, fd, cs(""), AT_FDCWD, cs("/tmp/p2"), 0x1000))
out("proc_fd", try_(os.link, f"/proc/self/fd/{fd}", "/rw/z", follow_symlinks=True))
"#;
        let m1 = format!("{}:/ro:ro", ro.path().display());
        let m2 = format!("{}:/rw:rw", rw.path().display());
        let Some(o) = attack(who, &["--mount", &m1, "--mount", &m2], code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("etc_to_rw", "EXDEV"),
                ("usr_to_rw", "EXDEV"),
                ("ro_to_rw", "EXDEV"),
                ("usr_to_tmp", "EXDEV"),
                ("within_ro", "EROFS"),
                ("empty_path", "ENOENT|EXDEV"),
                ("proc_fd", "EXDEV"),
            ],
        );
        let left: Vec<_> = std::fs::read_dir(rw.path()).unwrap().flatten().collect();
        assert!(
            left.is_empty(),
            "{who:?}: hardlinks reached the host: {left:?}"
        );
    });
}

/// Attack: a host symlink inside an rw mount makes a later mount target
/// resolve to a host path (`/work/link -> /tmp`). Defense: targets resolve
/// inside the new root; the host's /tmp gets nothing.
#[test]
fn mount_target_through_a_symlink_stays_inside() {
    both(|who| {
        let a = scratch(who);
        let b = scratch(who);
        chmod(a.path(), 0o777);
        write(&b.path().join("bf"), "b\n", 0o644);
        let name = unique("pwned");
        let victim = RmOnDrop(PathBuf::from("/tmp").join(&name));
        std::os::unix::fs::symlink("/tmp", a.path().join("link")).unwrap();
        let m1 = format!("{}:/work:rw", a.path().display());
        let m2 = format!("{}:/work/link/{name}", b.path().display());
        let code = format!("out('inside', open('/tmp/{name}/bf').read().strip())");
        let Some(o) = attack(who, &["--mount", &m1, "--mount", &m2], &code) else {
            return;
        };
        assert!(
            !victim.0.exists(),
            "{who:?}: a mount target was created on the HOST at {:?}: {o:#?}",
            victim.0
        );
        // Either refused at setup or resolved inside the sandbox's root.
        if o.code == 125 {
            assert!(o.stderr.contains("mount target"), "{who:?}: {o:#?}");
        } else {
            expect(who, &o, &[("inside", "b")]);
        }
    });
}

/// Attack (confused deputy): the unprivileged user asks airlock to mount
/// what it cannot read itself. Defense: still EACCES inside. One-sided:
/// root may read anything on the host by definition.
#[test]
fn rootless_cannot_mount_what_the_user_cannot_read() {
    let Some(_) = test_user_ids() else {
        skip("needs the unprivileged user airlock-test");
        return;
    };
    if !is_root() {
        skip("needs root to create the root-only files");
        return;
    }
    let d = tempdir::Dir::new();
    write(&d.path().join("secret"), "root-only\n", 0o600);
    let sub = d.path().join("private");
    std::fs::create_dir(&sub).unwrap();
    chmod(&sub, 0o700);
    write(&sub.join("s2"), "root-only\n", 0o644);
    let code = r#"
out("file", try_(open, "/w/secret"))
out("dir", try_(os.listdir, "/w/private"))
out("shadow", try_(open, "/s"))
out("root", try_(os.listdir, "/r"))
"#;
    let m = format!("{}:/w:ro", d.path().display());
    for extra in [&[][..], &["--user", "root"][..]] {
        let mut flags = vec![
            "--mount",
            m.as_str(),
            "--mount",
            "/etc/shadow:/s:ro",
            "--mount",
            "/root:/r:ro",
        ];
        flags.extend_from_slice(extra);
        let Some(o) = attack(Who::User, &flags, code) else {
            return;
        };
        assert!(!o.stdout.contains("root-only"), "{o:#?}");
        if o.code == 125 {
            // Refusing the mount source outright is as good.
            assert!(o.stderr.contains("Permission denied"), "{o:#?}");
            continue;
        }
        expect(
            Who::User,
            &o,
            &[
                ("file", "EACCES"),
                ("dir", "EACCES"),
                ("shadow", "EACCES"),
                ("root", "EACCES"),
            ],
        );
    }
}

// ---------------------------------------------------------------------------
// 4-6, 38: reaching the agent (PID 1) through /proc, ptrace and friends
// ---------------------------------------------------------------------------

/// Attack: walk into the agent's view via /proc/1/{root,cwd,fd,ns,maps}.
/// Defense: EACCES (the agent is non-dumpable).
#[test]
fn agent_proc_links_are_eacces() {
    both(|who| {
        let code = r#"
out("root_readlink", try_(os.readlink, "/proc/1/root"))
out("root_list", try_(os.listdir, "/proc/1/root"))
out("root_open", try_(open, "/proc/1/root/etc/passwd"))
out("cwd", try_(os.readlink, "/proc/1/cwd"))
out("fd_list", try_(os.listdir, "/proc/1/fd"))
out("fd3", try_(os.open, "/proc/1/fd/3", os.O_RDWR))
out("ns_user", try_(os.readlink, "/proc/1/ns/user"))
out("ns_open", try_(os.open, "/proc/1/ns/mnt", os.O_RDONLY))
out("maps", try_(open, "/proc/1/maps"))
"#;
        for extra in [&[][..], &["--user", "root"][..]] {
            let Some(o) = attack(who, extra, code) else {
                return;
            };
            expect(
                who,
                &o,
                &[
                    ("root_readlink", "EACCES"),
                    ("root_list", "EACCES"),
                    ("root_open", "EACCES"),
                    ("cwd", "EACCES"),
                    ("fd_list", "EACCES"),
                    ("fd3", "EACCES"),
                    ("ns_user", "EACCES"),
                    ("ns_open", "EACCES"),
                    ("maps", "EACCES"),
                ],
            );
        }
    });
}

/// Attack: read or write the agent's memory and environment (/proc/1/mem,
/// /proc/1/environ, process_vm_readv/writev). Defense: EACCES / EPERM.
#[test]
fn agent_memory_and_environ_are_unreachable() {
    both(|who| {
        let code = r#"
out("mem_r", try_(open, "/proc/1/mem", "rb"))
out("mem_w", try_(open, "/proc/1/mem", "r+b", buffering=0))
out("environ", try_(open, "/proc/1/environ", "rb"))
out("auxv", try_(open, "/proc/1/auxv", "rb"))
buf = zeros(64)
iov = (ctypes.c_ulong * 2)(buf, 64)
riov = (ctypes.c_ulong * 2)(0x400000, 64)
out("vm_readv", sc(310, 1, ctypes.addressof(iov), 1, ctypes.addressof(riov), 1, 0))
out("vm_writev", sc(311, 1, ctypes.addressof(iov), 1, ctypes.addressof(riov), 1, 0))
"#;
        for extra in [&[][..], &["--user", "root"][..]] {
            let Some(o) = attack(who, extra, code) else {
                return;
            };
            expect(
                who,
                &o,
                &[
                    ("mem_r", "EACCES"),
                    ("mem_w", "EACCES"),
                    ("environ", "EACCES"),
                    ("auxv", "EACCES"),
                    ("vm_readv", "EPERM"),
                    ("vm_writev", "EPERM"),
                ],
            );
        }
    });
}

/// Attack: ptrace the agent, a child of ours, or ourselves (TRACEME).
/// Defense: seccomp EPERM for every form.
#[test]
fn ptrace_is_eperm() {
    both(|who| {
        let code = r#"
import signal, time
out("attach1", sc(101, 16, 1, 0, 0))
out("seize1", sc(101, 0x4206, 1, 0, 0))
out("traceme", sc(101, 0, 0, 0, 0))
pid = os.fork()
if pid == 0:
    time.sleep(10)
    os._exit(0)
out("attach_child", sc(101, 16, pid, 0, 0))
out("seize_child", sc(101, 0x4206, pid, 0, 0))
os.kill(pid, signal.SIGKILL)
os.waitpid(pid, 0)
pf = libc.syscall(ctypes.c_long(434), ctypes.c_long(1), ctypes.c_long(0))
out("pidfd_getfd", sc(438, pf, 0, 0) if pf >= 0 else "nopidfd")
out("kcmp", sc(312, 1, os.getpid(), 0, 0, 0))
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("attach1", "EPERM"),
                ("seize1", "EPERM"),
                ("traceme", "EPERM"),
                ("attach_child", "EPERM"),
                ("seize_child", "EPERM"),
                ("pidfd_getfd", "EPERM"),
                ("kcmp", "EPERM"),
            ],
        );
    });
}

// ---------------------------------------------------------------------------
// 7: terminal injection
// ---------------------------------------------------------------------------

const TIOCSTI_CODE: &str = r#"
ch = zeros(2)
for fd in (0, 1, 2):
    out(f"sti{fd}", sc(16, fd, 0x5412, ch))
    out(f"sti_hi{fd}", sc(16, fd, 0x100005412, ch))
    out(f"sti_hi2_{fd}", sc(16, fd, 0xffffffff00005412, ch))
    out(f"linux{fd}", sc(16, fd, 0x541c, ch))
    out(f"linux_hi{fd}", sc(16, fd, 0x10000541c, ch))
m, s = os.openpty()
out("pty_sti", sc(16, s, 0x5412, ch))
out("pty_sti_hi", sc(16, s, 0x700005412, ch))
out("ptmx_sti", sc(16, m, 0x5412, ch))
out("devtty", try_(open, "/dev/tty", "r+b", buffering=0))
"#;

fn tiocsti_want() -> Vec<(String, &'static str)> {
    let mut w = Vec::new();
    for fd in 0..3 {
        for k in ["sti", "sti_hi", "sti_hi2_", "linux", "linux_hi"] {
            w.push((format!("{k}{fd}"), "EPERM"));
        }
    }
    for k in ["pty_sti", "pty_sti_hi", "ptmx_sti"] {
        w.push((k.to_string(), "EPERM"));
    }
    w
}

/// Attack: TIOCSTI/TIOCLINUX input injection on stdio, a fresh pty, and
/// with high bits set in the command (CVE-2019-10063). Defense: EPERM, and
/// no controlling terminal (/dev/tty → ENXIO).
#[test]
fn tiocsti_and_tioclinux_are_eperm() {
    both(|who| {
        let Some(o) = attack(who, &[], TIOCSTI_CODE) else {
            return;
        };
        let w = tiocsti_want();
        let mut want: Vec<(&str, &str)> = w.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        want.push(("devtty", "ENXIO"));
        expect(who, &o, &want);
        // With -t the sandbox's own pty is the controlling terminal: still
        // no injection.
        let Some(o) = attack(who, &["-t"], TIOCSTI_CODE) else {
            return;
        };
        let want: Vec<(&str, &str)> = w.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        expect(who, &o, &want);
    });
}

/// Attack: airlock started from a host terminal; the command tries to get
/// at that terminal. Defense: stdio are relayed pipes, the host tty is not
/// reachable.
#[test]
fn host_terminal_is_not_reachable() {
    both(|who| {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty fills two fds; no name/termios/winsize wanted.
        let r = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "openpty");
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: both fds were just opened and are owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let Some(mut c) = airlock(who) else { return };
        let full = format!(
            "{PY_PRELUDE}\n{ATT}\n{}",
            r#"
for fd in (0, 1, 2):
    out(f"tty{fd}", os.isatty(fd))
out("fd0", os.readlink("/proc/self/fd/0").split(":")[0])
out("sti0", sc(16, 0, 0x5412, zeros(2)))
"#
        );
        c.args(["run", "--", "python3", "-c", &full])
            .stdin(Stdio::from(slave.try_clone().unwrap()));
        let o = out_of(c.output().unwrap());
        drop(slave);
        drop(master);
        expect(
            who,
            &o,
            &[
                ("tty0", "False"),
                ("tty1", "False"),
                ("tty2", "False"),
                ("fd0", "pipe"),
                ("sti0", "EPERM"),
            ],
        );
    });
}

// ---------------------------------------------------------------------------
// 8-10, 28: kernel attack surface and namespace / mount manipulation
// ---------------------------------------------------------------------------

/// Attack: io_uring (setup/enter/register), a large kernel attack surface.
/// Defense: EPERM.
#[test]
fn io_uring_is_eperm() {
    both(|who| {
        let code = r#"
out("setup", sc(425, 8, zeros(120)))
out("enter", sc(426, 0, 1, 0, 0, 0, 0))
out("register", sc(427, 0, 0, 0, 0))
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("setup", "EPERM"),
                ("enter", "EPERM"),
                ("register", "EPERM"),
            ],
        );
    });
}

/// Attack: new namespaces (a user namespace would hand back capabilities).
/// Defense: unshare/clone with CLONE_NEW* → EPERM, clone3 → ENOSYS, setns → EPERM.
#[test]
fn new_namespaces_are_refused() {
    both(|who| {
        let code = r#"
flags = {"user": 0x10000000, "mnt": 0x20000, "net": 0x40000000, "pid": 0x20000000,
         "uts": 0x04000000, "ipc": 0x08000000, "cgroup": 0x02000000, "time": 0x80}
for name, f in flags.items():
    out(f"unshare_{name}", sc(272, f))
def raw_clone(fl):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(56), ctypes.c_long(fl), ctypes.c_long(0), ctypes.c_long(0),
                     ctypes.c_long(0), ctypes.c_long(0))
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
        return "OK"
    return en(ctypes.get_errno())
out("clone_user", raw_clone(0x10000000 | 17))
out("clone_user_hi", raw_clone((1 << 40) | 0x10000000 | 17))
out("clone_net", raw_clone(0x40000000 | 17))
args = (ctypes.c_uint64 * 11)()
args[4] = 17  # exit_signal = SIGCHLD
ctypes.set_errno(0)
r = libc.syscall(ctypes.c_long(435), ctypes.c_long(ctypes.addressof(args)), ctypes.c_long(88))
if r == 0:
    os._exit(0)
out("clone3", "OK" if r > 0 else en(ctypes.get_errno()))
args[0] = 0x10000000
r = libc.syscall(ctypes.c_long(435), ctypes.c_long(ctypes.addressof(args)), ctypes.c_long(88))
if r == 0:
    os._exit(0)
out("clone3_user", "OK" if r > 0 else en(ctypes.get_errno()))
fd = os.open("/proc/self/ns/net", os.O_RDONLY)
out("setns", sc(308, fd, 0))
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        let mut want: Vec<(&str, &str)> = [
            "unshare_user",
            "unshare_mnt",
            "unshare_net",
            "unshare_pid",
            "unshare_uts",
            "unshare_ipc",
            "unshare_cgroup",
            "unshare_time",
        ]
        .iter()
        .map(|k| (*k, "EPERM"))
        .collect();
        want.extend([
            ("clone_user", "EPERM"),
            ("clone_user_hi", "EPERM"),
            ("clone_net", "EPERM"),
            ("clone3", "ENOSYS"),
            ("clone3_user", "ENOSYS"),
            ("setns", "EPERM"),
        ]);
        expect(who, &o, &want);
    });
}

/// Attack: mount/unmount/pivot_root/chroot and the new mount API
/// (open_tree, fsopen, fspick, move_mount, mount_setattr), also as
/// `--user root`. Defense: EPERM; `mount -o remount,rw` refused.
#[test]
fn mount_family_is_eperm() {
    both(|who| {
        let code = r#"
out("mount", sc(165, cs("none"), cs("/tmp"), cs("tmpfs"), 0, 0))
out("bind", sc(165, cs("/usr"), cs("/tmp"), 0, 0x1000, 0))
out("remount", sc(165, 0, cs("/usr"), 0, 0x20 | 0x1000, 0))
out("umount2", sc(166, cs("/proc"), 2))
out("pivot_root", sc(155, cs("/tmp"), cs("/tmp")))
out("chroot", try_(os.chroot, "/tmp"))
out("open_tree", sc(428, AT_FDCWD, cs("/usr"), 1))
out("move_mount", sc(429, AT_FDCWD, cs("/usr"), AT_FDCWD, cs("/tmp"), 0))
out("fsopen", sc(430, cs("tmpfs"), 0))
out("fspick", sc(433, AT_FDCWD, cs("/"), 0))
attr = (ctypes.c_uint64 * 4)(0, 1, 0, 0)  # attr_clr = MOUNT_ATTR_RDONLY
out("mount_setattr", sc(442, AT_FDCWD, cs("/usr"), 0, ctypes.addressof(attr), 32))
"#;
        for extra in [&[][..], &["--user", "root"][..]] {
            let Some(o) = attack(who, extra, code) else {
                return;
            };
            let want: Vec<(&str, &str)> = [
                "mount",
                "bind",
                "remount",
                "umount2",
                "pivot_root",
                "chroot",
                "open_tree",
                "move_mount",
                "fsopen",
                "fspick",
                "mount_setattr",
            ]
            .iter()
            .map(|k| (*k, "EPERM"))
            .collect();
            expect(who, &o, &want);
        }
        let Some(o) = sh(
            who,
            &["--user", "root"],
            "mount -o remount,rw /usr; echo rc=$?; touch /usr/x; echo rc2=$?",
        ) else {
            return;
        };
        assert!(o.stdout.contains("rc=32"), "{who:?}: {o:#?}");
        assert!(
            o.stderr.contains("Read-only file system"),
            "{who:?}: {o:#?}"
        );
    });
}

/// Attack: reach cgroupfs (release_agent style escapes). Defense: /sys is
/// not mounted (ENOENT) and cgroup filesystems cannot be mounted (EPERM).
#[test]
fn cgroupfs_is_absent_and_unmountable() {
    both(|who| {
        let code = r#"
out("sys", try_(os.stat, "/sys"))
out("cgroup", try_(os.stat, "/sys/fs/cgroup"))
os.makedirs("/tmp/cg", exist_ok=True)
out("mount_cg2", sc(165, cs("none"), cs("/tmp/cg"), cs("cgroup2"), 0, 0))
out("mount_cg1", sc(165, cs("none"), cs("/tmp/cg"), cs("cgroup"), 0, cs("memory")))
out("mount_sysfs", sc(165, cs("none"), cs("/tmp/cg"), cs("sysfs"), 0, 0))
out("fsopen_cg2", sc(430, cs("cgroup2"), 0))
"#;
        for extra in [&[][..], &["--user", "root"][..]] {
            let Some(o) = attack(who, extra, code) else {
                return;
            };
            expect(
                who,
                &o,
                &[
                    ("sys", "ENOENT"),
                    ("cgroup", "ENOENT"),
                    ("mount_cg2", "EPERM"),
                    ("mount_cg1", "EPERM"),
                    ("mount_sysfs", "EPERM"),
                    ("fsopen_cg2", "EPERM"),
                ],
            );
        }
    });
}

// ---------------------------------------------------------------------------
// 11, 29, 30, 33: privilege escalation
// ---------------------------------------------------------------------------

/// Attack: the host's setuid-root binaries (su, passwd, newgrp, mount) and
/// setuid(0). Defense: /usr is nosuid and no_new_privs is set: they run as
/// uid 1000 and fail; setuid(0) → EPERM (rootless: EINVAL, uid 0 is not
/// even mapped in the command's namespace).
#[test]
fn setuid_binaries_grant_nothing() {
    both(|who| {
        let script = r#"
# su sleeps ~1 s after failing: run it alongside the rest.
(su root -c 'id; id -u' </dev/null >/tmp/su.out 2>&1; echo "su=$?" >>/tmp/su.out) &
passwd root </dev/null; echo "passwd=$?"
if command -v sudo >/dev/null; then sudo -n id </dev/null; echo "sudo=$?"; fi
newgrp root </dev/null; echo "newgrp=$?"
mount -t tmpfs none /tmp; echo "mount=$?"
grep -E '^NoNewPrivs' /proc/self/status | tr -d '\t' | sed 's/:/=/'
awk '$5 == "/usr" { print "usr_opts=" $6 }' /proc/self/mountinfo
id -u | sed 's/^/uid=/'
wait
cat /tmp/su.out
"#;
        let Some(o) = sh(who, &[], script) else {
            return;
        };
        assert!(!o.stdout.contains("uid=0"), "{who:?}: got root: {o:#?}");
        assert!(
            !o.stdout.lines().any(|l| l.trim() == "0"),
            "{who:?}: got root: {o:#?}"
        );
        let got = kv(&o);
        assert!(got.contains_key("su"), "{who:?}: {o:#?}");
        for k in ["su", "passwd", "newgrp", "sudo"] {
            assert_ne!(
                got.get(k).map(String::as_str),
                Some("0"),
                "{who:?}: {k}: {o:#?}"
            );
        }
        assert!(
            o.stderr
                .contains("You may not view or modify password information for root"),
            "{who:?}: passwd ran with privilege? {o:#?}"
        );
        assert!(o.stderr.contains("must be superuser"), "{who:?}: {o:#?}");
        expect(
            who,
            &o,
            &[("mount", "32"), ("NoNewPrivs", "1"), ("uid", "1000")],
        );
        let opts = got.get("usr_opts").cloned().unwrap_or_default();
        assert!(
            opts.split(',').any(|f| f == "nosuid"),
            "{who:?}: /usr not nosuid: {o:#?}"
        );
        let Some(o) = attack(who, &[], "out('setuid', try_(os.setuid, 0)); out('seteuid', try_(os.seteuid, 0)); out('uid', os.getresuid())") else {
            return;
        };
        let e = if who == Who::Root { "EPERM" } else { "EINVAL" };
        expect(
            who,
            &o,
            &[("setuid", e), ("seteuid", e), ("uid", "(1000, 1000, 1000)")],
        );
    });
}

/// Attack: regain root with setgroups/setresuid/setresgid/setfsuid.
/// Defense: EPERM (no CAP_SETUID/SETGID; rootless: EINVAL, 0 is unmapped);
/// the credentials stay 1000.
#[test]
fn setgroups_and_setresuid_to_root_fail() {
    both(|who| {
        let code = r#"
out("setgroups", try_(os.setgroups, [0]))
out("setgroups_empty", try_(os.setgroups, []))
out("setresuid", try_(os.setresuid, 0, 0, 0))
out("setresgid", try_(os.setresgid, 0, 0, 0))
out("setreuid", try_(os.setreuid, 0, 0))
libc.setfsuid(0)
out("fsuid", libc.setfsuid(-1))
out("resuid", os.getresuid())
out("resgid", os.getresgid())
out("groups_have_0", 0 in os.getgroups())
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        let e = if who == Who::Root { "EPERM" } else { "EINVAL" };
        expect(
            who,
            &o,
            &[
                ("setgroups", "EPERM"),
                ("setgroups_empty", "EPERM"),
                ("setresuid", e),
                ("setresgid", e),
                ("setreuid", e),
                ("fsuid", "1000"),
                ("resuid", "(1000, 1000, 1000)"),
                ("resgid", "(1000, 1000, 1000)"),
                ("groups_have_0", "False"),
            ],
        );
    });
}

/// Attack: look for capabilities, even as `--user root`. Defense: every
/// capability set is empty, no_new_privs and seccomp filter mode are on;
/// chown (CAP_CHOWN) → EPERM.
#[test]
fn no_capabilities_even_as_root() {
    both(|who| {
        let code = r#"
st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
    out(k, st[k].strip())
open("/tmp/mine", "w").close()
other = 1000 if os.getuid() == 0 else 0
out("chown", try_(os.chown, "/tmp/mine", other, other))
out("chown_tmp", try_(os.chown, "/tmp", 4242, 4242))
"#;
        for extra in [&[][..], &["--user", "root"][..]] {
            let Some(o) = attack(who, extra, code) else {
                return;
            };
            // Rootless, the uid the command chowns to may be unmapped (EINVAL).
            let chown = if who == Who::Root {
                "EPERM"
            } else {
                "EPERM|EINVAL"
            };
            expect(
                who,
                &o,
                &[
                    ("CapInh", "0000000000000000"),
                    ("CapPrm", "0000000000000000"),
                    ("CapEff", "0000000000000000"),
                    ("CapBnd", "0000000000000000"),
                    ("CapAmb", "0000000000000000"),
                    ("NoNewPrivs", "1"),
                    ("Seccomp", "2"),
                    ("chown", chown),
                    ("chown_tmp", chown),
                ],
            );
        }
    });
}

/// Probes a root-owned 0600 file and 0700 directory in a mount of a
/// directory owned by `owner`, as the sandbox user and as `--user root`,
/// through `ro` and `overlay` mounts.
fn host_root_files_stay_unreadable(who: Who, owner: Who) {
    let d = scratch(owner);
    write(&d.path().join("secret"), "host-root-secret\n", 0o600);
    let private = d.path().join("private");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    write(&private.join("inner"), "host-root-secret\n", 0o644);
    let code = r#"
out("read", try_(open, "/work/secret"))
out("list", try_(os.listdir, "/work/private"))
out("inner", try_(open, "/work/private/inner"))
out("chmod", try_(os.chmod, "/work/secret", 0o644))
"#;
    for mode in ["ro", "overlay"] {
        let m = format!("{}:/work:{mode}", d.path().display());
        for extra in [&[][..], &["--user", "root"][..]] {
            let mut flags = vec!["--mount", m.as_str()];
            flags.extend_from_slice(extra);
            let Some(o) = attack(who, &flags, code) else {
                return;
            };
            assert!(
                !o.stdout.contains("host-root-secret"),
                "{who:?} (dir owned by {owner:?}, {mode}, {extra:?}): read a host-root file: {o:#?}"
            );
            // overlay: copy-up of a file whose owner is unmapped → EOVERFLOW.
            let chmod = if mode == "ro" {
                "EROFS|EPERM"
            } else {
                "EPERM|EOVERFLOW"
            };
            expect(
                who,
                &o,
                &[
                    ("read", "EACCES"),
                    ("list", "EACCES"),
                    ("inner", "EACCES"),
                    ("chmod", chmod),
                ],
            );
        }
    }
}

/// Attack: read host-root-only files (0600 file, 0700 dir) that sit in a
/// mounted directory, also as `--user root`. Defense: EACCES — sandbox root
/// is not host root and has no CAP_DAC_OVERRIDE. Here the mounted directory
/// belongs to an unprivileged user (rootful: only that owner is id-mapped)
/// or, rootless, to root (nothing of root's is mapped).
#[test]
fn host_root_files_in_mounts_stay_unreadable() {
    if !is_root() || test_user_ids().is_none() {
        skip("needs root (to create root-owned files) and the user airlock-test");
        return;
    }
    both(|who| {
        host_root_files_stay_unreadable(who, Who::User);
        if who == Who::User {
            host_root_files_stay_unreadable(who, Who::Root);
        }
    });
}

/// Attack: the same, rootful, with a ROOT-OWNED mounted directory (e.g.
/// `--mount /etc:/x:ro` then read /x/shadow). Expected defense: EACCES.
/// One-sided: the rootless half is covered above.
#[test]
fn host_root_files_in_a_root_owned_mount_stay_unreadable() {
    if !is_root() {
        skip("needs root");
        return;
    }
    host_root_files_stay_unreadable(Who::Root, Who::Root);
}

/// Attack: leave files owned by host root (a setuid-root program, say) in
/// an rw mount, as `--user root`. Defense: what the sandbox creates there
/// belongs to the directory's owner (id-mapped) or, for a root-owned
/// directory (not mapped) and rootless, to an unprivileged uid — never 0.
#[test]
fn rw_mount_files_never_belong_to_host_root() {
    use std::os::unix::fs::MetadataExt;
    let Some((test_uid, _)) = test_user_ids() else {
        skip("needs the user airlock-test");
        return;
    };
    both(|who| {
        for owner in [Who::User, Who::Root] {
            let d = scratch(owner);
            chmod(d.path(), 0o777);
            let m = format!("{}:/w:rw", d.path().display());
            let Some(o) = sh(
                who,
                &["--user", "root", "--mount", &m],
                "cp /usr/bin/id /w/id && chmod 4755 /w/id && touch /w/plain && mkdir /w/dir && mkfifo /w/fifo",
            ) else {
                return;
            };
            assert_eq!(o.code, 0, "{who:?} (dir of {owner:?}): {o:#?}");
            for name in ["id", "plain", "dir", "fifo"] {
                let meta = std::fs::symlink_metadata(d.path().join(name)).unwrap();
                assert!(
                    meta.uid() != 0 && meta.gid() != 0,
                    "{who:?} (dir of {owner:?}): /w/{name} belongs to host root: uid {} gid {} mode {:o}",
                    meta.uid(),
                    meta.gid(),
                    meta.mode()
                );
                // Rootless, or a directory of the test user: its owner.
                if who == Who::User || owner == Who::User {
                    assert_eq!(
                        meta.uid(),
                        test_uid,
                        "{who:?} (dir of {owner:?}): /w/{name}"
                    );
                }
            }
        }
    });
}

/// Attack: make a setuid copy of a binary (in /tmp, $HOME, /dev/shm, and a
/// sandbox-root-owned one on an rw mount) and exec it. Defense: nosuid
/// mounts + no_new_privs: `id -u` still prints 1000.
#[test]
fn setuid_copies_grant_nothing() {
    both(|who| {
        let script = r#"
for d in /tmp /home/sandbox /dev/shm; do
  cp /usr/bin/id $d/id && chmod 4755 $d/id && echo "mode_${d##*/}=$(stat -c %a $d/id)" && echo "euid_${d##*/}=$($d/id -u)"
done
"#;
        let Some(o) = sh(who, &[], script) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("mode_tmp", "4755"),
                ("euid_tmp", "1000"),
                ("mode_sandbox", "4755"),
                ("euid_sandbox", "1000"),
                ("mode_shm", "4755"),
                ("euid_shm", "1000"),
            ],
        );
        // Sandbox root leaves a setuid-root binary on an rw mount; the
        // sandbox user runs it through a ro mount of the same directory.
        let d = scratch(who);
        chmod(d.path(), 0o777);
        let rw = format!("{}:/w:rw", d.path().display());
        let Some(o) = sh(
            who,
            &["--user", "root", "--mount", &rw],
            "cp /usr/bin/id /w/id && chmod 4755 /w/id && stat -c 'owner=%u mode=%a' /w/id",
        ) else {
            return;
        };
        assert_eq!(o.code, 0, "{who:?}: {o:#?}");
        assert!(o.stdout.contains("owner=0 mode=4755"), "{who:?}: {o:#?}");
        let ro = format!("{}:/w:ro", d.path().display());
        let Some(o) = sh(
            who,
            &["--mount", &ro],
            "echo euid=$(/w/id -u); echo ruid=$(/w/id -ru)",
        ) else {
            return;
        };
        expect(who, &o, &[("euid", "1000"), ("ruid", "1000")]);
    });
}

// ---------------------------------------------------------------------------
// 12-14, 36, 37: network and IPC reach
// ---------------------------------------------------------------------------

/// Attack: raw, packet, netlink and exotic socket families (and high bits in
/// the arguments). Defense: EPERM; `ip link` cannot open netlink.
#[test]
fn raw_packet_netlink_and_exotic_sockets_are_eperm() {
    both(|who| {
        let code = r#"
cases = {
    "inet_raw_icmp": (2, 3, 1),
    "inet_raw_tcp": (2, 3, 6),
    "inet6_raw_icmp": (10, 3, 58),
    "inet_raw_cloexec": (2, 3 | 0o2000000, 1),
    "inet_packet": (2, 10, 0),
    "packet_raw": (17, 3, 0x0300),
    "packet_dgram": (17, 2, 0x0300),
    "netlink_route": (16, 3, 0),
    "netlink_dgram": (16, 2, 0),
    "netlink_audit": (16, 3, 9),
    "alg": (38, 5, 0),
    "vsock": (40, 1, 0),
    "key": (15, 3, 2),
    "xdp": (44, 3, 0),
    "tipc": (30, 5, 0),
    "rds": (21, 5, 0),
    "bluetooth": (31, 3, 0),
    "can": (29, 3, 1),
    "inet_raw_domain_hi": (2 | (1 << 32), 3, 1),
    "inet_raw_type_hi": (2, 3 | (1 << 32), 1),
    "netlink_domain_hi": (16 | (1 << 32), 3, 0),
}
for name, (d, t, p) in cases.items():
    out(name, sc(41, d, t, p))
out("tcp_ok", sc(41, 2, 1, 0))
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        let mut want: Vec<(&str, &str)> = [
            "inet_raw_icmp",
            "inet_raw_tcp",
            "inet6_raw_icmp",
            "inet_raw_cloexec",
            "inet_packet",
            "packet_raw",
            "packet_dgram",
            "netlink_route",
            "netlink_dgram",
            "netlink_audit",
            "alg",
            "vsock",
            "key",
            "xdp",
            "tipc",
            "rds",
            "bluetooth",
            "can",
            "inet_raw_domain_hi",
            "inet_raw_type_hi",
            "netlink_domain_hi",
        ]
        .iter()
        .map(|k| (*k, "EPERM"))
        .collect();
        want.push(("tcp_ok", "OK"));
        expect(who, &o, &want);
        let Some(o) = sh(who, &[], "ip link; echo rc=$?") else {
            return;
        };
        assert!(o.stdout.contains("rc=1"), "{who:?}: {o:#?}");
        assert!(
            o.stderr
                .contains("Cannot open netlink socket: Operation not permitted"),
            "{who:?}: {o:#?}"
        );
    });
}

/// Attack: bash's /dev/tcp to a listener on the HOST's loopback. Defense:
/// the sandbox's `lo` is its own: connection refused, and the host listener
/// never sees a connection.
#[test]
fn dev_tcp_to_host_loopback_is_refused() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    both(|who| {
        let script = format!("echo attack > /dev/tcp/127.0.0.1/{port}; echo rc=$?");
        let Some(o) = run(who, &["run", "--", "bash", "-c", &script]) else {
            return;
        };
        expect(who, &o, &[("rc", "1")]);
        assert!(o.stderr.contains("Connection refused"), "{who:?}: {o:#?}");
    });
    l.set_nonblocking(true).unwrap();
    match l.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the HOST listener got a connection from the sandbox: {other:?}"),
    }
}

/// Attack: connect to the host's loopback listener (v4 and v6) and to the
/// outside world. Defense: ECONNREFUSED on loopback, ENETUNREACH elsewhere
/// (no route; nothing is sent); only `lo` exists.
#[test]
fn network_reaches_neither_host_loopback_nor_outside() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let l6 = std::net::TcpListener::bind("[::1]:0").ok();
    let port6 = l6.as_ref().map_or(port, |l| l.local_addr().unwrap().port());
    both(|who| {
        let code = r#"
def tcp(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(1)
    return try_(s.connect, addr)
out("lo4", tcp(socket.AF_INET, ("127.0.0.1", PORT)))
out("lo6", tcp(socket.AF_INET6, ("::1", PORT6)))
out("private", tcp(socket.AF_INET, ("10.0.0.1", 80)))
out("public", tcp(socket.AF_INET, ("1.1.1.1", 53)))
out("public6", tcp(socket.AF_INET6, ("2606:4700:4700::1111", 53)))
out("udp", try_(socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto, b"x", ("1.1.1.1", 53)))
ifs = [l.split(":")[0].strip() for l in open("/proc/self/net/dev").read().splitlines()[2:]]
out("ifaces", ",".join(ifs))
"#
        .replace("PORT6", &port6.to_string())
        .replace("PORT", &port.to_string());
        let Some(o) = attack(who, &[], &code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("lo4", "ECONNREFUSED"),
                ("lo6", "ECONNREFUSED"),
                ("private", "ENETUNREACH"),
                ("public", "ENETUNREACH"),
                ("public6", "ENETUNREACH"),
                ("udp", "ENETUNREACH"),
                ("ifaces", "lo"),
            ],
        );
    });
    for l in std::iter::once(&l).chain(l6.as_ref()) {
        l.set_nonblocking(true).unwrap();
        match l.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("the HOST listener got a connection from the sandbox: {other:?}"),
        }
    }
}

/// Attack: connect to a host abstract unix socket (they are per network
/// namespace, not on a filesystem). Defense: ECONNREFUSED; the host
/// listener never sees a connection.
#[test]
fn host_abstract_unix_socket_is_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    let name = unique("abstract");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    both(|who| {
        let code = r#"
for t in ("stream", "seqpacket"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM if t == "stream" else socket.SOCK_SEQPACKET)
    out(t, try_(s.connect, "\0" + NAME))
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
out("dgram", try_(d.sendto, b"x", "\0" + NAME))
"#
        .replace("NAME", &format!("{name:?}"));
        let Some(o) = attack(who, &[], &code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("stream", "ECONNREFUSED"),
                ("seqpacket", "ECONNREFUSED"),
                ("dgram", "ECONNREFUSED"),
            ],
        );
    });
    l.set_nonblocking(true).unwrap();
    match l.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the HOST abstract socket got a connection: {other:?}"),
    }
}

/// Attack: talk to host daemons through their unix sockets (dbus, docker,
/// systemd, X11). Defense: /run and /var/run do not exist (ENOENT); /var
/// holds only the tmp link.
#[test]
fn host_daemon_sockets_are_absent() {
    both(|who| {
        let code = r#"
paths = {
    "run": "/run",
    "var_run": "/var/run",
    "dbus": "/run/dbus/system_bus_socket",
    "var_dbus": "/var/run/dbus/system_bus_socket",
    "docker": "/var/run/docker.sock",
    "journal": "/run/systemd/journal/socket",
    "x11": "/tmp/.X11-unix",
    "user_run": "/run/user/0",
}
for k, p in paths.items():
    out(k, try_(os.stat, p))
s = socket.socket(socket.AF_UNIX)
out("connect_dbus", try_(s.connect, "/run/dbus/system_bus_socket"))
out("var", ",".join(sorted(os.listdir("/var"))))
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("run", "ENOENT"),
                ("var_run", "ENOENT"),
                ("dbus", "ENOENT"),
                ("var_dbus", "ENOENT"),
                ("docker", "ENOENT"),
                ("journal", "ENOENT"),
                ("x11", "ENOENT"),
                ("user_run", "ENOENT"),
                ("connect_dbus", "ENOENT"),
                ("var", "tmp"),
            ],
        );
    });
}

/// Attack: attach to a host System V shared memory segment / message queue.
/// Defense: the IPC namespace is private: ENOENT, and /proc/sysvipc lists
/// nothing of the host's.
#[test]
fn host_sysv_ipc_is_invisible() {
    // A key unique enough for parallel test binaries.
    let key = 0x41_000000 | (std::process::id() as i32 & 0xffffff);
    // SAFETY: plain SysV IPC calls with integer arguments.
    let (shm, msq) = unsafe {
        (
            libc::shmget(key, 4096, libc::IPC_CREAT | 0o666),
            libc::msgget(key, libc::IPC_CREAT | 0o666),
        )
    };
    assert!(shm >= 0 && msq >= 0, "host shmget/msgget failed");
    struct Rm(i32, i32);
    impl Drop for Rm {
        fn drop(&mut self) {
            // SAFETY: removes the ids created above.
            unsafe {
                libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut());
                libc::msgctl(self.1, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
    }
    let _rm = Rm(shm, msq);
    both(|who| {
        let code = r#"
ctypes.set_errno(0)
r = libc.shmget(KEY, 0, 0)
out("shmget", "OK" if r >= 0 else en(ctypes.get_errno()))
ctypes.set_errno(0)
r = libc.msgget(KEY, 0)
out("msgget", "OK" if r >= 0 else en(ctypes.get_errno()))
out("shm_listed", len(open("/proc/sysvipc/shm").read().splitlines()) - 1)
out("msg_listed", len(open("/proc/sysvipc/msg").read().splitlines()) - 1)
"#
        .replace("KEY", &key.to_string());
        let Some(o) = attack(who, &[], &code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("shmget", "ENOENT"),
                ("msgget", "ENOENT"),
                ("shm_listed", "0"),
                ("msg_listed", "0"),
            ],
        );
    });
}

// ---------------------------------------------------------------------------
// 15-17: host files and devices
// ---------------------------------------------------------------------------

/// Attack: read host secrets: /etc/shadow, /root (with a canary the test
/// plants), /home/*, a /dev/shm canary, other users in /etc/passwd.
/// Defense: none of it exists in the sandbox (ENOENT / absent).
#[test]
fn host_secrets_and_homes_are_invisible() {
    let root_canary = if is_root() {
        let p = PathBuf::from("/root").join(format!(".{}", unique("root-canary")));
        write(&p, "root-canary\n", 0o644);
        Some(RmOnDrop(p))
    } else {
        skip("needs root to plant a canary in /root (the rest runs)");
        None
    };
    let shm_canary = PathBuf::from("/dev/shm").join(unique("shm-canary"));
    write(&shm_canary, "shm-canary\n", 0o666);
    let _shm = RmOnDrop(shm_canary.clone());
    let rc = root_canary
        .as_ref()
        .map(|c| c.0.display().to_string())
        .unwrap_or_else(|| "/root/.none".into());
    both(|who| {
        let code = r#"
for k, p in {"shadow": "/etc/shadow", "gshadow": "/etc/gshadow", "sudoers": "/etc/sudoers",
             "ssh": "/etc/ssh", "subuid": "/etc/subuid", "root_canary": ROOT_CANARY,
             "root_ssh": "/root/.ssh", "shm_canary": SHM_CANARY}.items():
    out(k, try_(os.stat, p))
out("root_dir", try_(os.listdir, "/root") if os.getuid() != 0 else ",".join(os.listdir("/root")) or "empty")
out("home", ",".join(sorted(os.listdir("/home"))))
out("shm", ",".join(os.listdir("/dev/shm")) or "empty")
out("users", ",".join(l.split(":")[0] for l in open("/etc/passwd")))
out("tmp", ",".join(os.listdir("/tmp")) or "empty")
"#
        .replace("ROOT_CANARY", &format!("{rc:?}"))
        .replace("SHM_CANARY", &format!("{:?}", shm_canary.display().to_string()));
        let Some(o) = attack(who, &[], &code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("shadow", "ENOENT"),
                ("gshadow", "ENOENT"),
                ("sudoers", "ENOENT"),
                ("ssh", "ENOENT"),
                ("subuid", "ENOENT"),
                ("root_canary", "ENOENT"),
                ("root_ssh", "ENOENT"),
                ("shm_canary", "ENOENT"),
                ("root_dir", "ENOENT"),
                ("home", "sandbox"),
                ("shm", "empty"),
                ("users", "root,sandbox,nobody"),
                ("tmp", "empty"),
            ],
        );
        // As sandbox root, /root is its own empty home.
        let Some(o) = attack(who, &["--user", "root"], &code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("shadow", "ENOENT"),
                ("root_canary", "ENOENT"),
                ("root_ssh", "ENOENT"),
                ("root_dir", "empty"),
            ],
        );
    });
}

/// Attack: write the image (/usr, /etc, /) and a ro-mounted host file,
/// also as `--user root`. Defense: EROFS (EACCES where Landlock answers first); host file unchanged.
#[test]
fn read_only_files_cannot_be_written() {
    both(|who| {
        let d = scratch(who);
        let f = d.path().join("f");
        write(&f, "original\n", 0o666);
        let m = format!("{}:/ro:ro", d.path().display());
        let code = r#"
out("usr_trunc", try_(os.open, "/usr/bin/env", os.O_WRONLY | os.O_TRUNC))
out("usr_chmod", try_(os.chmod, "/usr/bin/env", 0o777))
out("usr_unlink", try_(os.unlink, "/usr/bin/env"))
out("usr_new", try_(open, "/usr/bin/evil", "w"))
out("passwd_w", try_(open, "/etc/passwd", "w"))
out("passwd_a", try_(open, "/etc/passwd", "a"))
out("passwd_truncate", try_(os.truncate, "/etc/passwd", 0))
out("passwd_rename", try_(os.rename, "/etc/passwd", "/etc/passwd.bak"))
out("ld_preload", try_(open, "/etc/ld.so.preload", "w"))
out("etc_ssl", try_(open, "/etc/ssl/evil", "w"))
out("root_mkdir", try_(os.mkdir, "/evil"))
out("utime", try_(os.utime, "/etc/passwd", (0, 0)))
out("ro_trunc", try_(os.open, "/ro/f", os.O_WRONLY | os.O_TRUNC))
out("ro_rdwr", try_(os.open, "/ro/f", os.O_RDWR))
out("ro_new", try_(open, "/ro/new", "w"))
out("ro_unlink", try_(os.unlink, "/ro/f"))
out("ro_chmod", try_(os.chmod, "/ro/f", 0o4777))
out("ro_xattr", try_(os.setxattr, "/ro/f", "user.x", b"1"))
"#;
        for extra in [&[][..], &["--user", "root"][..]] {
            let mut flags = vec!["--mount", m.as_str()];
            flags.extend_from_slice(extra);
            let Some(o) = attack(who, &flags, code) else {
                return;
            };
            let want: Vec<(&str, &str)> = [
                "usr_trunc",
                "usr_chmod",
                "usr_unlink",
                "usr_new",
                "passwd_w",
                "passwd_a",
                "passwd_truncate",
                "passwd_rename",
                "ld_preload",
                "etc_ssl",
                "root_mkdir",
                "utime",
                "ro_trunc",
                "ro_rdwr",
                "ro_new",
                "ro_unlink",
                "ro_chmod",
                "ro_xattr",
            ]
            .iter()
            .map(|k| (*k, "EROFS|EACCES"))
            .collect();
            expect(who, &o, &want);
        }
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "original\n",
            "{who:?}"
        );
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["f"], "{who:?}");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o666, "{who:?}");
    });
}

/// Attack: reopen a read-only fd for writing through /proc/self/fd (magic
/// link upgrade) on the image and on a ro mount. Defense: EROFS or EACCES (Landlock); host file
/// unchanged.
#[test]
fn procfs_reopen_cannot_upgrade_to_write() {
    both(|who| {
        let d = scratch(who);
        let f = d.path().join("f");
        write(&f, "original\n", 0o666);
        let m = format!("{}:/ro:ro", d.path().display());
        let code = r#"
for k, p in {"ro": "/ro/f", "etc": "/etc/passwd", "usr": "/usr/bin/env"}.items():
    fd = os.open(p, os.O_RDONLY)
    out(k, try_(os.open, f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_TRUNC))
    pfd = os.open(p, os.O_PATH)
    out(k + "_path", try_(os.open, f"/proc/self/fd/{pfd}", os.O_RDWR))
"#;
        let Some(o) = attack(who, &["--mount", &m], code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("ro", "EROFS|EACCES"),
                ("ro_path", "EROFS|EACCES"),
                ("etc", "EROFS|EACCES"),
                ("etc_path", "EROFS|EACCES"),
                ("usr", "EROFS|EACCES"),
                ("usr_path", "EROFS|EACCES"),
            ],
        );
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "original\n",
            "{who:?}"
        );
    });
}

/// Attack: create device nodes (a copy of /dev/null, a disk, a whiteout),
/// also as `--user root`. Defense: EPERM (FIFOs stay allowed).
#[test]
fn device_nodes_cannot_be_created() {
    both(|who| {
        let code = r#"
import stat
out("chr", try_(os.mknod, "/tmp/null2", stat.S_IFCHR | 0o666, os.makedev(1, 3)))
out("blk", try_(os.mknod, "/tmp/sda", stat.S_IFBLK | 0o666, os.makedev(8, 0)))
out("mem", try_(os.mknod, "/tmp/mem", stat.S_IFCHR | 0o666, os.makedev(1, 1)))
out("whiteout", try_(os.mknod, "/tmp/wh", stat.S_IFCHR, 0))
out("mknodat", sc(259, AT_FDCWD, cs("/tmp/c2"), stat.S_IFCHR | 0o666, os.makedev(1, 3)))
out("chr_hi", sc(133, cs("/tmp/c3"), (1 << 32) | stat.S_IFCHR | 0o666, os.makedev(1, 3)))
out("fifo", try_(os.mkfifo, "/tmp/fifo"))
out("exists", ",".join(sorted(n for n in os.listdir("/tmp"))))
"#;
        for extra in [&[][..], &["--user", "root"][..]] {
            let Some(o) = attack(who, extra, code) else {
                return;
            };
            expect(
                who,
                &o,
                &[
                    ("chr", "EPERM"),
                    ("blk", "EPERM"),
                    ("mem", "EPERM"),
                    ("whiteout", "EPERM"),
                    ("mknodat", "EPERM"),
                    ("chr_hi", "EPERM"),
                    ("fifo", "OK"),
                    ("exists", "fifo"),
                ],
            );
        }
    });
}

/// Attack: read kernel memory and logs (/proc/kmsg, /dev/kmsg, /dev/mem,
/// /proc/kcore, syslog(2)), learn kernel addresses. Defense: EACCES/ENOENT/
/// EPERM; /proc/kallsyms addresses are zeroed.
#[test]
fn kernel_memory_and_logs_are_unreadable() {
    let exists = |p: &str| Path::new(p).exists();
    let kcore = if exists("/proc/kcore") {
        "EACCES"
    } else {
        "ENOENT"
    };
    both(|who| {
        let code = r#"
out("kmsg", try_(open, "/proc/kmsg", "rb"))
out("dev_kmsg", try_(open, "/dev/kmsg", "rb"))
out("dev_mem", try_(open, "/dev/mem", "rb"))
out("dev_port", try_(open, "/dev/port", "rb"))
out("kcore", try_(open, "/proc/kcore", "rb"))
out("syslog", sc(103, 3, zeros(4096), 4096))
addrs = set()
try:
    with open("/proc/kallsyms") as f:
        for i, l in enumerate(f):
            addrs.add(l.split()[0])
            if i > 2000:
                break
except OSError as e:
    addrs.add(en(e.errno))
out("kallsyms", ",".join(sorted(addrs)))
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        let kallsyms = kv(&o).get("kallsyms").cloned().unwrap_or_default();
        assert!(
            kallsyms == "0000000000000000" || kallsyms == "EACCES" || kallsyms == "ENOENT",
            "{who:?}: kernel addresses leak through /proc/kallsyms: {kallsyms}"
        );
        expect(
            who,
            &o,
            &[
                ("kmsg", "EACCES"),
                ("dev_kmsg", "ENOENT"),
                ("dev_mem", "ENOENT"),
                ("dev_port", "ENOENT"),
                ("kcore", kcore),
                ("syslog", "EPERM"),
            ],
        );
    });
}

// ---------------------------------------------------------------------------
// 18-23, 39: forbidden syscalls
// ---------------------------------------------------------------------------

/// Attack: the kernel keyring (keyctl, add_key, request_key). Defense: EPERM.
#[test]
fn kernel_keyring_is_eperm() {
    both(|who| {
        let code = r#"
out("keyctl", sc(250, 0, -3, 1))
out("keyctl_join", sc(250, 1, 0))
out("add_key", sc(248, cs("user"), cs("airlock"), cs("payload"), 7, -3))
out("request_key", sc(249, cs("user"), cs("airlock"), 0, -3))
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("keyctl", "EPERM"),
                ("keyctl_join", "EPERM"),
                ("add_key", "EPERM"),
                ("request_key", "EPERM"),
            ],
        );
    });
}

/// Attack: load or unload kernel modules. Defense: EPERM.
#[test]
fn kernel_modules_cannot_be_loaded() {
    both(|who| {
        let code = r#"
out("init_module", sc(175, zeros(64), 64, cs("")))
fd = os.open("/dev/null", os.O_RDONLY)
out("finit_module", sc(313, fd, cs(""), 0))
out("delete_module", sc(176, cs("ext4"), 0o4000))
"#;
        for extra in [&[][..], &["--user", "root"][..]] {
            let Some(o) = attack(who, extra, code) else {
                return;
            };
            expect(
                who,
                &o,
                &[
                    ("init_module", "EPERM"),
                    ("finit_module", "EPERM"),
                    ("delete_module", "EPERM"),
                ],
            );
        }
    });
}

/// Attack: bpf, perf_event_open, userfaultfd, kexec, process_vm_readv,
/// setns — classic privilege-escalation and info-leak interfaces.
/// Defense: EPERM (and no /dev/userfaultfd).
#[test]
fn dangerous_kernel_interfaces_are_eperm() {
    both(|who| {
        let code = r#"
out("bpf", sc(321, 0, zeros(128), 128))
out("bpf_prog", sc(321, 5, zeros(128), 128))
out("perf_event_open", sc(298, zeros(128), 0, -1, -1, 0))
out("userfaultfd", sc(323, 0))
out("dev_userfaultfd", try_(open, "/dev/userfaultfd", "rb"))
out("kexec_load", sc(246, 0, 0, 0, 0))
out("kexec_file_load", sc(320, -1, -1, 0, 0, 0))
out("process_vm_readv", sc(310, os.getpid(), 0, 0, 0, 0, 0))
fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
out("setns", sc(308, fd, 0))
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("bpf", "EPERM"),
                ("bpf_prog", "EPERM"),
                ("perf_event_open", "EPERM"),
                ("userfaultfd", "EPERM"),
                ("dev_userfaultfd", "ENOENT"),
                ("kexec_load", "EPERM"),
                ("kexec_file_load", "EPERM"),
                ("process_vm_readv", "EPERM"),
                ("setns", "EPERM"),
            ],
        );
    });
}

/// Attack: privileged odds and ends: fanotify, vhangup, iopl/ioperm,
/// reboot, swapon, acct, clock setting, quotactl, modify_ldt, uselib,
/// lookup_dcookie. Defense: EPERM.
#[test]
fn misc_privileged_syscalls_are_eperm() {
    both(|who| {
        let code = r#"
calls = {
    "fanotify_init": (300, 0, 0),
    "vhangup": (153,),
    "iopl": (172, 3),
    "ioperm": (173, 0x80, 1, 1),
    "reboot": (169, 0xfee1dead, 672274793, 0x4321fedc, 0),
    "swapon": (167, cs("/tmp/swap"), 0),
    "swapoff": (168, cs("/tmp/swap")),
    "acct": (163, cs("/tmp/acct")),
    "settimeofday": (164, zeros(16), 0),
    "clock_settime": (227, 0, zeros(16)),
    "clock_adjtime": (305, 0, zeros(256)),
    "adjtimex": (159, zeros(256)),
    "quotactl": (179, 0, cs("/"), 0, 0),
    "modify_ldt": (154, 1, zeros(16), 16),
    "uselib": (134, cs("/usr/lib/x86_64-linux-gnu/libc.so.6")),
    "lookup_dcookie": (212, 0, zeros(64), 64),
    "nfsservctl": (180, 0, 0, 0),
    "open_tree_attr": (467, AT_FDCWD, cs("/usr"), 1, 0, 0),
}
for k, a in calls.items():
    out(k, sc(*a))
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        let want: Vec<(&str, &str)> = [
            "fanotify_init",
            "vhangup",
            "iopl",
            "ioperm",
            "reboot",
            "swapon",
            "swapoff",
            "acct",
            "settimeofday",
            "clock_settime",
            "clock_adjtime",
            "adjtimex",
            "quotactl",
            "modify_ldt",
            "uselib",
            "lookup_dcookie",
            "nfsservctl",
            "open_tree_attr",
        ]
        .iter()
        .map(|k| (*k, "EPERM"))
        .collect();
        expect(who, &o, &want);
    });
}

/// Attack: the rest of Docker's default deny list and obsolete calls, with
/// invalid arguments (so an allowed call would fail with EBADF/EFAULT/
/// EINVAL/ENOSYS, never EPERM) — also probes the filter's range lookup
/// between allowed neighbours. Defense: EPERM for every one.
#[test]
fn docker_denied_and_obsolete_syscalls_are_eperm() {
    let calls: &[(&str, i64)] = &[
        ("uselib", 134),
        ("ustat", 136),
        ("sysfs", 139),
        ("_sysctl", 156),
        ("create_module", 174),
        ("get_kernel_syms", 177),
        ("query_module", 178),
        ("nfsservctl", 180),
        ("getpmsg", 181),
        ("putpmsg", 182),
        ("afs_syscall", 183),
        ("tuxcall", 184),
        ("security", 185),
        ("vserver", 236),
        ("migrate_pages", 256),
        ("move_pages", 279),
        ("fsconfig", 431),
        ("fsmount", 432),
        ("quotactl_fd", 443),
        ("lsm_set_self_attr", 460),
        ("epoll_ctl_old", 214),
        ("epoll_wait_old", 215),
    ];
    let mut code = String::new();
    for (k, nr) in calls {
        code += &format!("out({k:?}, sc({nr}, -1, -1, -1, -1, -1, -1))\n");
    }
    both(|who| {
        let Some(o) = attack(who, &[], &code) else {
            return;
        };
        let want: Vec<(&str, &str)> = calls.iter().map(|(k, _)| (*k, "EPERM")).collect();
        expect(who, &o, &want);
    });
}

/// Attack: file handles (open_by_handle_at is the "shocker" escape;
/// name_to_handle_at feeds it), also as `--user root`. Defense: EPERM.
#[test]
fn file_handle_syscalls_are_eperm() {
    both(|who| {
        let code = r#"
h = zeros(136)
ctypes.c_uint.from_address(h).value = 128
mnt = zeros(8)
out("name_to_handle_at", sc(303, AT_FDCWD, cs("/etc/passwd"), h, mnt, 0))
fd = os.open("/", os.O_RDONLY)
out("open_by_handle_at", sc(304, fd, h, 0))
"#;
        for extra in [&[][..], &["--user", "root"][..]] {
            let Some(o) = attack(who, extra, code) else {
                return;
            };
            expect(
                who,
                &o,
                &[
                    ("name_to_handle_at", "EPERM"),
                    ("open_by_handle_at", "EPERM"),
                ],
            );
        }
    });
}

/// Attack: x32 ABI syscall numbers (nr | 0x40000000) that a naive filter on
/// native numbers would miss. Defense: EPERM (native getpid still works).
#[test]
fn x32_syscalls_are_eperm() {
    both(|who| {
        let code = r#"
X = 0x40000000
out("getpid_x32", sc(39 | X))
out("open_x32", sc(2 | X, cs("/etc/passwd"), 0))
out("rt_sigaction_x32", sc(512 | X, 0, 0, 0, 8))
out("ptrace_x32", sc(521 | X, 0, 0, 0, 0))
out("execve_x32", sc(520 | X, cs("/bin/true"), 0, 0))
out("getpid_native", sc(39))
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("getpid_x32", "EPERM"),
                ("open_x32", "EPERM"),
                ("rt_sigaction_x32", "EPERM"),
                ("ptrace_x32", "EPERM"),
                ("execve_x32", "EPERM"),
                ("getpid_native", "OK"),
            ],
        );
    });
}

/// Attack: ia32 syscalls via `int 0x80` (different numbers, a filter for
/// x86_64 would misread them), from JIT code and from a compiled binary.
/// Defense: the process is killed by SIGSYS (exit 128+31 = 159).
#[test]
fn int80_is_killed_by_sigsys() {
    both(|who| {
        // mov eax, 20 (ia32 getpid); int 0x80; ret
        let code = r#"
import mmap
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(b"\xb8\x14\x00\x00\x00\xcd\x80\xc3")
f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
out("before", "yes")
out("result", f())
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        expect_code(who, &o, 159, &[("before", "yes")]);
        assert!(
            !o.stdout.contains("result="),
            "{who:?}: int 0x80 returned: {o:#?}"
        );
    });
    if !Path::new("/usr/bin/gcc").exists() {
        skip("gcc is not installed: the compiled int 0x80 variant does not run");
        return;
    }
    let d = tempdir::Dir::new();
    let src = d.path().join("int80.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
int main(void) {
    long r;
    printf("before=yes\n");
    fflush(stdout);
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
    printf("result=%ld\n", r);
    return 0;
}
"#,
    )
    .unwrap();
    let st = Command::new("gcc")
        .args(["-O0", "-o"])
        .arg(d.path().join("int80"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "gcc failed");
    let m = format!("{}:/work:ro", d.path().display());
    both(|who| {
        let Some(o) = run(who, &["run", "--mount", &m, "--", "/work/int80"]) else {
            return;
        };
        expect_code(who, &o, 159, &[("before", "yes")]);
        assert!(
            !o.stdout.contains("result="),
            "{who:?}: int 0x80 returned: {o:#?}"
        );
    });
}

/// Attack: personality flags that weaken the process (ADDR_NO_RANDOMIZE,
/// READ_IMPLIES_EXEC, ...), also hidden in high bits. Defense: EPERM; the
/// plain query still works.
#[test]
fn personality_flags_are_eperm() {
    both(|who| {
        let code = r#"
out("no_randomize", sc(135, 0x0040000))
out("read_implies_exec", sc(135, 0x0400000))
out("linux32_no_randomize", sc(135, 0x0008 | 0x0040000))
out("mmap_page_zero", sc(135, 0x0100000))
out("short_inode", sc(135, 0x1000000))
out("hi_bits", sc(135, (1 << 32) | 0x0040000))
out("query", sc(135, 0xffffffff))
with open("/proc/sys/kernel/randomize_va_space") as f:
    out("aslr", f.read().strip())
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("no_randomize", "EPERM"),
                ("read_implies_exec", "EPERM"),
                ("linux32_no_randomize", "EPERM"),
                ("mmap_page_zero", "EPERM"),
                ("short_inode", "EPERM"),
                ("hi_bits", "EPERM"),
                ("query", "OK"),
            ],
        );
        // setarch -R is the usual tool for the same attack.
        let Some(o) = sh(who, &[], "setarch x86_64 -R true; echo rc=$?") else {
            return;
        };
        assert!(
            !o.stdout.contains("rc=0"),
            "{who:?}: setarch -R worked: {o:#?}"
        );
        assert!(
            o.stderr.contains("Operation not permitted"),
            "{who:?}: {o:#?}"
        );
    });
}

// ---------------------------------------------------------------------------
// 24-27: the agent, other processes, host identity
// ---------------------------------------------------------------------------

/// Attack: kill or stop the agent (PID 1) by signal, pidfd or sigqueue.
/// Defense: EPERM (Landlock signal scoping); the run still ends with the
/// command's own exit code.
#[test]
fn agent_cannot_be_signalled() {
    both(|who| {
        let code = r#"
import signal
for name, s in (("kill", 9), ("term", 15), ("stop", 19), ("zero", 0), ("hup", 1)):
    out(name, try_(os.kill, 1, s))
pf = libc.syscall(ctypes.c_long(434), ctypes.c_long(1), ctypes.c_long(0))
out("pidfd_kill", sc(424, pf, 9, 0, 0) if pf >= 0 else "nopidfd")
out("sigqueue", sc(129, 1, 9, zeros(128)))
out("tgkill", sc(234, 1, 1, 9))
out("all", try_(os.kill, -1, 9))
out("pgrp", try_(os.killpg, 1, 9))
sys.stdout.flush()
os._exit(42)
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        expect_code(
            who,
            &o,
            42,
            &[
                ("kill", "EPERM"),
                ("term", "EPERM"),
                ("stop", "EPERM"),
                ("zero", "EPERM"),
                ("hup", "EPERM"),
                ("pidfd_kill", "EPERM"),
                ("sigqueue", "EPERM"),
                ("tgkill", "EPERM"),
                ("all", "ESRCH"),
                ("pgrp", "ESRCH|EPERM"),
            ],
        );
    });
}

/// Attack: see or signal host processes. Defense: /proc shows only the
/// sandbox's pids (1 = agent, 2 = us); the test's own host pid is not
/// visible (ESRCH).
#[test]
fn host_processes_are_invisible() {
    let me = std::process::id();
    both(|who| {
        let code = r#"
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
out("pids", ",".join(map(str, pids)))
out("me", os.getpid())
out("host_pid_proc", try_(os.stat, f"/proc/{HOST}"))
out("host_pid_kill", try_(os.kill, HOST, 0))
out("ppid", os.getppid())
"#
        .replace("HOST", &me.to_string());
        let Some(o) = attack(who, &[], &code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("pids", "1,2"),
                ("me", "2"),
                ("host_pid_proc", "ENOENT"),
                ("host_pid_kill", "ESRCH"),
                ("ppid", "1"),
            ],
        );
    });
}

/// Attack: change the (host's) hostname/domainname via syscall or
/// /proc/sys. Defense: EPERM / EACCES, and the sandbox has its own UTS name.
#[test]
fn hostname_cannot_be_changed() {
    let host = host_hostname();
    both(|who| {
        let code = r#"
out("sethostname", sc(170, cs("evil"), 4))
out("setdomainname", sc(171, cs("evil"), 4))
out("proc_hostname", try_(open, "/proc/sys/kernel/hostname", "w"))
out("proc_domainname", try_(open, "/proc/sys/kernel/domainname", "w"))
out("nodename", os.uname().nodename)
"#;
        for extra in [&[][..], &["--user", "root"][..]] {
            let Some(o) = attack(who, extra, code) else {
                return;
            };
            expect(
                who,
                &o,
                &[
                    ("sethostname", "EPERM"),
                    ("setdomainname", "EPERM"),
                    ("proc_hostname", "EACCES"),
                    ("proc_domainname", "EACCES"),
                ],
            );
            assert_ne!(
                kv(&o).get("nodename"),
                Some(&host),
                "{who:?}: sees the host's name"
            );
        }
    });
    assert_eq!(host_hostname(), host, "the HOST's hostname changed");
}

/// Attack: kernel knobs: core_pattern (classic container escape),
/// sysrq-trigger, drop_caches, ns_last_pid, binfmt_misc, also as `--user
/// root`. Defense: EACCES (ENOENT where this kernel lacks the file).
#[test]
fn proc_sys_and_sysrq_are_read_only() {
    let paths = [
        ("core_pattern", "/proc/sys/kernel/core_pattern"),
        ("modprobe", "/proc/sys/kernel/modprobe"),
        ("sysrq", "/proc/sysrq-trigger"),
        ("drop_caches", "/proc/sys/vm/drop_caches"),
        ("ns_last_pid", "/proc/sys/kernel/ns_last_pid"),
        ("binfmt", "/proc/sys/fs/binfmt_misc/register"),
        ("ip_forward", "/proc/sys/net/ipv4/ip_forward"),
        ("panic", "/proc/sys/kernel/panic"),
        ("oom_adj", "/proc/1/oom_score_adj"),
    ];
    let core_before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").ok();
    let want: Vec<(&str, &str)> = paths
        .iter()
        .map(|(k, p)| {
            (
                *k,
                if Path::new(p).exists() {
                    "EACCES"
                } else {
                    "ENOENT"
                },
            )
        })
        .collect();
    let mut code = String::new();
    for (k, p) in paths {
        code += &format!("out({k:?}, try_(open, {p:?}, 'w'))\n");
    }
    both(|who| {
        for extra in [&[][..], &["--user", "root"][..]] {
            let Some(o) = attack(who, extra, &code) else {
                return;
            };
            expect(who, &o, &want);
        }
    });
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").ok(),
        core_before,
        "the HOST's core_pattern changed"
    );
}

// ---------------------------------------------------------------------------
// 31, 32, 35: leaks from the host process into the sandbox
// ---------------------------------------------------------------------------

/// Attack: use fds the host leaked into airlock (opened without CLOEXEC on
/// 5, 7, 9, 63). Defense: the command has only 0-2; reading fd 7 → EBADF.
#[test]
fn leaked_host_fds_are_closed() {
    both(|who| {
        let d = scratch(who);
        let secret = d.path().join("secret");
        write(&secret, "fd-secret\n", 0o600);
        let f = std::fs::File::open(&secret).unwrap();
        let raw = f.as_raw_fd();
        let Some(mut c) = airlock(who) else { return };
        let full = format!(
            "{PY_PRELUDE}\n{ATT}\n{}",
            r#"
out("fds", ",".join(sorted(os.listdir("/proc/self/fd"), key=int)))
for fd in (3, 5, 7, 9, 63):
    out(f"read{fd}", try_(os.read, fd, 100))
for p in os.listdir("/proc"):
    if p.isdigit():
        out(f"proc{p}", ",".join(sorted(os.listdir(f"/proc/{p}/fd"), key=int)) if p != "1" else try_(os.listdir, "/proc/1/fd"))
"#
        );
        c.args(["run", "--", "python3", "-c", &full])
            .stdin(Stdio::null());
        // SAFETY: only dup2 (async-signal-safe) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                for to in [5, 7, 9, 63] {
                    if libc::dup2(raw, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let o = out_of(c.output().unwrap());
        drop(f);
        assert!(!o.stdout.contains("fd-secret"), "{who:?}: leaked: {o:#?}");
        // 3 is the directory fd listdir itself uses.
        expect(
            who,
            &o,
            &[
                ("fds", "0,1,2,3"),
                ("read3", "EBADF"),
                ("read5", "EBADF"),
                ("read7", "EBADF"),
                ("read9", "EBADF"),
                ("read63", "EBADF"),
                ("proc1", "EACCES"),
            ],
        );
    });
}

/// Attack (CVE-2019-5736 style): overwrite the runtime binary through
/// /proc/1/exe or /proc/self/exe. Defense: EACCES/ETXTBSY/EROFS; the
/// airlock binary on the host is byte-for-byte unchanged.
#[test]
fn proc_exe_overwrite_is_refused() {
    let before = std::fs::read(bin()).unwrap();
    both(|who| {
        let code = r#"
out("agent_exe_w", try_(os.open, "/proc/1/exe", os.O_WRONLY))
out("agent_exe_r", try_(os.open, "/proc/1/exe", os.O_RDONLY))
out("agent_exe_path", try_(os.open, "/proc/1/exe", os.O_PATH))
out("self_exe_w", try_(os.open, "/proc/self/exe", os.O_WRONLY))
out("self_exe_trunc", try_(os.open, "/proc/self/exe", os.O_RDWR | os.O_TRUNC))
pfd = os.open("/proc/self/exe", os.O_PATH)
out("self_exe_reopen", try_(os.open, f"/proc/self/fd/{pfd}", os.O_WRONLY))
"#;
        for extra in [&[][..], &["--user", "root"][..]] {
            let Some(o) = attack(who, extra, code) else {
                return;
            };
            expect(
                who,
                &o,
                &[
                    ("agent_exe_w", "EACCES"),
                    ("agent_exe_r", "EACCES"),
                    ("agent_exe_path", "EACCES"),
                    ("self_exe_w", "EACCES|ETXTBSY|EROFS"),
                    ("self_exe_trunc", "EACCES|ETXTBSY|EROFS"),
                    ("self_exe_reopen", "EACCES|ETXTBSY|EROFS"),
                ],
            );
        }
    });
    assert!(
        std::fs::read(bin()).unwrap() == before,
        "the airlock binary changed on the host"
    );
}

/// Attack: read a secret from airlock's own environment. Defense: the
/// sandbox starts from a clean environment; /proc/1/environ is EACCES; no
/// readable process file holds the canary.
#[test]
fn host_environment_secrets_do_not_leak() {
    let canary = unique("env-canary");
    both(|who| {
        let Some(mut c) = airlock_env(who, &[("AWS_SECRET_ACCESS_KEY", &canary)]) else {
            return;
        };
        let full = format!(
            "{PY_PRELUDE}\n{ATT}\n{}",
            r#"
out("env_has_key", "AWS_SECRET_ACCESS_KEY" in os.environ)
out("agent_environ", try_(open, "/proc/1/environ", "rb"))
blob = b""
for p in os.listdir("/proc"):
    if p.isdigit() or p == "self":
        for f in ("environ", "cmdline"):
            try:
                blob += open(f"/proc/{p}/{f}", "rb").read()
            except OSError:
                pass
# Built at run time: our own cmdline holds only the reversed text.
out("canary_seen", REVERSED[::-1].encode() in blob)
"#
            .replace(
                "REVERSED",
                &format!("{:?}", canary.chars().rev().collect::<String>())
            )
        );
        c.args(["run", "--", "python3", "-c", &full])
            .stdin(Stdio::null());
        let o = out_of(c.output().unwrap());
        expect(
            who,
            &o,
            &[
                ("env_has_key", "False"),
                ("agent_environ", "EACCES"),
                ("canary_seen", "False"),
            ],
        );
        // And the plain `env` a user would run.
        let Some(mut c) = airlock_env(who, &[("AWS_SECRET_ACCESS_KEY", &canary)]) else {
            return;
        };
        c.args(["run", "--", "env"]).stdin(Stdio::null());
        let o = out_of(c.output().unwrap());
        assert_eq!(o.code, 0, "{who:?}: {o:#?}");
        assert!(
            !o.stdout.contains(&canary),
            "{who:?}: secret leaked: {o:#?}"
        );
        assert!(
            !o.stdout.contains("AWS_SECRET_ACCESS_KEY"),
            "{who:?}: {o:#?}"
        );
    });
}

// ---------------------------------------------------------------------------
// 34: overlay mounts
// ---------------------------------------------------------------------------

/// Attack: write through an overlay mount (modify, create, delete, rename,
/// chmod) and reach its upper/lower layers via /.airlock. Defense: the host
/// directory is untouched and the layers are hidden (EACCES).
#[test]
fn overlay_writes_never_reach_the_host() {
    both(|who| {
        use std::os::unix::fs::MetadataExt;
        // A project owned by an ordinary user, whom the sandbox user is
        // mapped to (root-owned sources are never mapped, and an overlay
        // cannot copy up files of unmapped owners).
        let d = scratch(Who::User);
        let dm = std::fs::metadata(d.path()).unwrap();
        if dm.uid() == 0 {
            skip("needs the test user to own a project directory");
            return;
        }
        let own = |p: &Path| std::os::unix::fs::chown(p, Some(dm.uid()), Some(dm.gid())).unwrap();
        write(&d.path().join("f"), "original\n", 0o644);
        write(&d.path().join("g"), "keep\n", 0o644);
        std::fs::create_dir(d.path().join("sub")).unwrap();
        write(&d.path().join("sub/s"), "s\n", 0o644);
        for p in ["f", "g", "sub", "sub/s"] {
            own(&d.path().join(p));
        }
        let snapshot = || -> Vec<(String, String, u32)> {
            let mut v = Vec::new();
            for p in ["f", "g", "sub", "sub/s"] {
                let path = d.path().join(p);
                let m = std::fs::metadata(&path).unwrap();
                let content = if m.is_file() {
                    std::fs::read_to_string(&path).unwrap()
                } else {
                    String::new()
                };
                v.push((p.to_string(), content, m.permissions().mode()));
            }
            v
        };
        let before = snapshot();
        let ov = format!("{}:/w:overlay", d.path().display());
        let code = r#"
def w(p, s):
    with open(p, "w") as f:
        f.write(s)
out("modify", try_(w, "/w/f", "changed\n"))
out("create", try_(w, "/w/new", "new\n"))
out("delete", try_(os.unlink, "/w/g"))
out("rename", try_(os.rename, "/w/sub/s", "/w/sub/t"))
out("mkdir", try_(os.mkdir, "/w/dir"))
out("chmod", try_(os.chmod, "/w/f", 0o4777))
out("symlink", try_(os.symlink, "/etc/passwd", "/w/sub/link"))
out("rmdir", try_(os.rmdir, "/w/dir"))
out("view", open("/w/f").read().strip() + ":" + ",".join(sorted(os.listdir("/w"))))
out("layers", try_(os.listdir, "/.airlock"))
out("upper", try_(os.listdir, "/.airlock/u0"))
out("lower", try_(os.stat, "/.airlock/l0/f"))
"#;
        let Some(o) = attack(who, &["--mount", &ov], code) else {
            return;
        };
        {
            expect(
                who,
                &o,
                &[
                    ("modify", "OK"),
                    ("create", "OK"),
                    ("delete", "OK"),
                    ("rename", "OK"),
                    ("mkdir", "OK"),
                    ("chmod", "OK"),
                    ("symlink", "OK"),
                    ("rmdir", "OK"),
                    ("view", "changed:f,new,sub"),
                    ("layers", "EACCES"),
                    ("upper", "EACCES"),
                    ("lower", "EACCES"),
                ],
            );
        }
        assert_eq!(
            snapshot(),
            before,
            "{who:?}: overlay writes reached the host"
        );
        let mut names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["f", "g", "sub"],
            "{who:?}: overlay writes reached the host"
        );
        let sub: Vec<_> = std::fs::read_dir(d.path().join("sub"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(sub, ["s"], "{who:?}");
    });
}

// ---------------------------------------------------------------------------
// Resource exhaustion and leftovers
// ---------------------------------------------------------------------------

/// Attack: leave processes behind (setsid + nohup daemons) so they outlive
/// the run, and outlast --timeout. Defense: every process in the sandbox
/// dies with it (no host process with the marker survives); timeout → 124.
#[test]
fn processes_left_behind_are_killed() {
    both(|who| {
        let marker =
            9_000_000 + (std::process::id() % 900_000) * 10 + if who == Who::Root { 1 } else { 2 };
        let script = format!(
            "setsid sh -c 'trap \"\" HUP TERM; exec sleep {marker}' </dev/null >/dev/null 2>&1 & \
             nohup sleep {m2} </dev/null >/dev/null 2>&1 & echo started; exit 3",
            m2 = marker + 100
        );
        let Some(o) = sh(who, &[], &script) else {
            return;
        };
        assert_eq!(o.code, 3, "{who:?}: {o:#?}");
        let t0 = std::time::Instant::now();
        loop {
            let left: Vec<_> = [marker, marker + 100]
                .iter()
                .flat_map(|m| host_processes_matching(&format!("sleep {m}")))
                .collect();
            if left.is_empty() {
                break;
            }
            assert!(
                t0.elapsed().as_millis() < 1000,
                "{who:?}: processes outlived the sandbox: {left:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let m3 = marker + 200;
        let script = format!(
            "setsid sleep {m3} & trap '' TERM INT HUP; sleep {m4}",
            m4 = marker + 300
        );
        let Some(o) = sh(who, &["--timeout", "300ms"], &script) else {
            return;
        };
        assert_eq!(o.code, 124, "{who:?}: {o:#?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let left: Vec<_> = [m3, marker + 300]
            .iter()
            .flat_map(|m| host_processes_matching(&format!("sleep {m}")))
            .collect();
        assert!(
            left.is_empty(),
            "{who:?}: processes outlived the timeout: {left:?}"
        );
    });
}

/// Attack: fill the disk through /tmp. Defense: --disk caps the writable
/// layer: ENOSPC near the limit.
#[test]
fn disk_limit_stops_filling() {
    both(|who| {
        let code = r#"
n = 0
try:
    with open("/tmp/big", "wb") as f:
        for i in range(64):
            f.write(b"x" * (1 << 20))
            f.flush()
            n += 1
    r = "OK"
except OSError as e:
    r = en(e.errno)
out("write", r)
out("under_limit", os.path.getsize("/tmp/big") <= 4 << 20)
out("shm", try_(lambda: open("/dev/shm/more", "wb").write(b"x" * (8 << 20))))
"#;
        let Some(o) = attack(who, &["--disk", "4M"], code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("write", "ENOSPC"),
                ("under_limit", "True"),
                ("shm", "ENOSPC"),
            ],
        );
    });
}

/// Attack: fork bomb. Defense: --pids stops it with EAGAIN well under the
/// limit.
#[test]
fn pids_limit_stops_a_fork_bomb() {
    both(|who| {
        let code = r#"
import time
n, r = 0, "OK"
while n < 500:
    try:
        p = os.fork()
    except OSError as e:
        r = en(e.errno)
        break
    if p == 0:
        time.sleep(3)
        os._exit(0)
    n += 1
out("fork", r)
out("within", n < 16)
"#;
        let Some(o) = attack(who, &["--pids", "16"], code) else {
            return;
        };
        expect(who, &o, &[("fork", "EAGAIN"), ("within", "True")]);
    });
}

/// Attack: allocate far past --memory. Defense: OOM kill (137, cgroup) or
/// MemoryError before the limit (RLIMIT_DATA fallback).
#[test]
fn memory_limit_stops_allocation() {
    both(|who| {
        let code = r#"
b = []
try:
    for i in range(64):
        b.append(bytearray(8 << 20))
    out("alloc", "all")
except MemoryError:
    out("alloc", "MemoryError")
out("mib", 8 * len(b))
"#;
        let Some(o) = attack(who, &["--memory", "64M"], code) else {
            return;
        };
        if o.code == 137 {
            assert!(o.stderr.contains("memory"), "{who:?}: {o:#?}");
            return;
        }
        expect(who, &o, &[("alloc", "MemoryError")]);
        let mib: u64 = kv(&o)["mib"].parse().unwrap();
        assert!(mib <= 64, "{who:?}: allocated {mib} MiB under --memory 64M");
    });
}

const SHARED_MEMORY_BOMB: &str = r#"
import mmap
ms = []
try:
    for i in range(32):
        m = mmap.mmap(-1, 8 << 20, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        m.write(b"x" * (8 << 20))
        ms.append(m)
    out("alloc", "all")
except (MemoryError, OSError) as e:
    out("alloc", type(e).__name__)
out("mib", 8 * len(ms))
"#;

fn shared_memory_bomb(who: Who) {
    let Some(o) = attack(who, &["--memory", "64M"], SHARED_MEMORY_BOMB) else {
        return;
    };
    if o.code == 137 {
        return;
    }
    let mib: u64 = kv(&o).get("mib").and_then(|m| m.parse().ok()).unwrap_or(0);
    assert!(
        mib <= 64,
        "{who:?}: --memory 64M bypassed with MAP_SHARED|MAP_ANONYMOUS: {mib} MiB touched: {o:#?}"
    );
}

/// Attack: get around --memory with shared anonymous mappings (shmem,
/// which RLIMIT_DATA does not count). Defense (rootful, cgroup): OOM kill.
#[test]
fn memory_limit_holds_against_shared_mappings() {
    // One-sided: the rootless half is the HOLE test below.
    shared_memory_bomb(Who::Root);
}

/// Attack: the same shared-mapping bomb, rootless (no cgroup here, so
/// --memory falls back to RLIMIT_DATA). Expected defense: still capped.
#[test]
#[ignore = "known limit, documented and announced at run time: rootless without a delegated cgroup, --memory falls back to per-process RLIMIT_DATA, which does not count MAP_SHARED memory"]
fn memory_limit_holds_against_shared_mappings_rootless() {
    shared_memory_bomb(Who::User);
}

/// Attack: flood stdout/stderr to exhaust the host side. Defense:
/// --output-limit keeps at most that many bytes.
#[test]
fn output_flood_is_capped() {
    both(|who| {
        let Some(o) = sh(
            who,
            &["--output-limit", "4K"],
            "head -c 20000000 /dev/zero | tr '\\0' x; head -c 20000000 /dev/zero | tr '\\0' y >&2",
        ) else {
            return;
        };
        assert!(
            o.stdout.len() + o.stderr.len() <= 4096 + 512,
            "{who:?}: {} + {} bytes kept",
            o.stdout.len(),
            o.stderr.len()
        );
        assert!(o.stderr.contains("output limit"), "{who:?}: {:?}", o.stderr);
    });
}

// ---------------------------------------------------------------------------
// Holes an outside attack found (each test failed on the code before its fix)
// ---------------------------------------------------------------------------

/// The uid and gid that host files of `who` belong to.
fn owner_ids(who: Who) -> (u32, u32) {
    match who {
        Who::Root => (0, 0),
        Who::User => test_user_ids().unwrap_or((0, 0)),
    }
}

fn chown(p: &Path, (u, g): (u32, u32)) {
    std::os::unix::fs::lchown(p, Some(u), Some(g)).unwrap();
}

/// A sandbox running attack code that talks with the test: it prints
/// `key=value` lines, and waits on its stdin where the code says so.
struct Live {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Live {
    fn start(who: Who, flags: &[&str], code: &str) -> Option<Live> {
        let mut c = airlock(who)?;
        let full = format!("{PY_PRELUDE}\n{ATT}\n{code}");
        c.arg("run")
            .args(flags)
            .args(["--", "python3", "-c", &full])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Some(Live {
            child,
            lines: rx,
            seen: Vec::new(),
        })
    }

    /// Waits (at most 60 s) for the line `want`, keeping what came before.
    #[track_caller]
    fn wait_for(&mut self, want: &str) {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.trim() == want => return,
                Ok(l) => self.seen.push(l),
                Err(_) => {
                    let _ = self.child.kill();
                    let o = self.child.wait_with_output_ref();
                    panic!("never saw {want:?}; before it: {:?}; {o}", self.seen);
                }
            }
        }
    }

    /// Tells the sandbox to go on (a line on its stdin).
    fn go(&mut self) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the end (at most 60 s) and returns what it printed.
    fn finish(mut self) -> Out {
        drop(self.child.stdin.take());
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if std::time::Instant::now() > end {
                let _ = self.child.kill();
                panic!("the sandbox did not end: {:?}", self.seen);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut stdout = self.seen.join("\n");
        while let Ok(l) = self.lines.recv_timeout(std::time::Duration::from_secs(5)) {
            stdout.push('\n');
            stdout.push_str(&l);
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        use std::os::unix::process::ExitStatusExt;
        Out {
            code: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stdout,
            stderr,
        }
    }
}

trait ChildExt {
    fn wait_with_output_ref(&mut self) -> String;
}

impl ChildExt for std::process::Child {
    fn wait_with_output_ref(&mut self) -> String {
        let _ = self.wait();
        let mut stderr = String::new();
        if let Some(mut e) = self.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        format!("stderr: {stderr}")
    }
}

/// A host unix socket listener (stream) and a datagram socket at `dir`,
/// owned by `owner` with `mode`.
fn host_sockets(
    dir: &Path,
    owner: (u32, u32),
    mode: u32,
) -> (
    std::os::unix::net::UnixListener,
    std::os::unix::net::UnixDatagram,
) {
    let l = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
    let d = std::os::unix::net::UnixDatagram::bind(dir.join("d")).unwrap();
    for n in ["s", "d"] {
        chown(&dir.join(n), owner);
        chmod(&dir.join(n), mode);
    }
    l.set_nonblocking(true).unwrap();
    d.set_nonblocking(true).unwrap();
    (l, d)
}

#[track_caller]
fn assert_untouched(
    who: Who,
    what: &str,
    l: &std::os::unix::net::UnixListener,
    d: &std::os::unix::net::UnixDatagram,
) {
    match l.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("{who:?}: the HOST socket {what}/s got a connection: {other:?}"),
    }
    let mut b = [0u8; 16];
    match d.recv(&mut b) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("{who:?}: the HOST socket {what}/d got a datagram: {other:?}"),
    }
}

const CONNECT_ALL: &str = r#"
def attempt(tag, base):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    out(tag + "_stream", try_(s.connect, base + "/s"))
    d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    out(tag + "_dgram", try_(d.sendto, b"x", base + "/d"))
"#;

/// Attack (a full escape rootless): a host unix socket under a read-only
/// mount — a tmux server, ssh-agent, the docker or dbus socket — takes
/// connections from the sandbox, because a read-only bind and Landlock
/// (ABI <= 7) do not govern `connect()`. Here: sockets owned by the mount's
/// owner (rootless: the caller itself, mode 0600) or world-connectable
/// (root-run: 0777, as X11's), at the top of the mount, in a subdirectory,
/// and one created after the sandbox started; in `ro` and `overlay`
/// mounts. Defense: `ro` mounts are read-only overlays, whose inodes have
/// no bound socket: ECONNREFUSED, and the host listeners never see a
/// connection or a datagram.
#[test]
fn host_unix_sockets_in_ro_mounts_are_unreachable() {
    both(|who| {
        for mode in ["ro", "overlay"] {
            let d = scratch(who);
            let owner = owner_ids(who);
            let perm = if who == Who::Root { 0o777 } else { 0o600 };
            let sub = d.path().join("sub");
            let late = d.path().join("late");
            for p in [&sub, &late] {
                std::fs::create_dir(p).unwrap();
                chown(p, owner);
                chmod(p, 0o755);
            }
            let (l1, d1) = host_sockets(d.path(), owner, perm);
            let (l2, d2) = host_sockets(&sub, owner, perm);
            let code = format!(
                "{CONNECT_ALL}\nattempt('top', '/m')\nattempt('sub', '/m/sub')\nprint('ready', flush=True)\nsys.stdin.readline()\nattempt('late', '/m/late')\n"
            );
            let m = format!("{}:/m:{mode}", d.path().display());
            let Some(mut live) = Live::start(who, &["--mount", &m], &code) else {
                return;
            };
            live.wait_for("ready");
            let (l3, d3) = host_sockets(&late, owner, perm);
            live.go();
            let o = live.finish();
            let mut want = Vec::new();
            for t in ["top", "sub", "late"] {
                for k in ["stream", "dgram"] {
                    want.push((format!("{t}_{k}"), "ECONNREFUSED"));
                }
            }
            let want: Vec<(&str, &str)> = want.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            expect(who, &o, &want);
            assert_untouched(who, mode, &l1, &d1);
            assert_untouched(who, mode, &l2, &d2);
            assert_untouched(who, mode, &l3, &d3);
        }
    });
}

/// Attack: a world-connectable host socket inside the directories the
/// `host` image binds (/usr, /etc/ssl). Defense: the image's host parts are
/// read-only overlays too: ECONNREFUSED.
#[test]
fn host_unix_sockets_in_the_image_are_unreachable() {
    let usr = PathBuf::from("/usr/local").join(unique("sock"));
    let ssl = PathBuf::from("/etc/ssl").join(unique("sock"));
    if !is_root() {
        skip("needs root to plant sockets under /usr and /etc");
        return;
    }
    let _cleanup = (RmOnDrop(usr.clone()), RmOnDrop(ssl.clone()));
    let mut keep = Vec::new();
    for p in [&usr, &ssl] {
        std::fs::create_dir(p).unwrap();
        chmod(p, 0o755);
        keep.push(host_sockets(p, (0, 0), 0o777));
    }
    both(|who| {
        let code = format!(
            "{CONNECT_ALL}\nattempt('usr', {:?})\nattempt('ssl', {:?})\n",
            usr.display().to_string(),
            ssl.display().to_string()
        );
        let Some(o) = attack(who, &[], &code) else {
            return;
        };
        expect(
            who,
            &o,
            &[
                ("usr_stream", "ECONNREFUSED"),
                ("usr_dgram", "ECONNREFUSED"),
                ("ssl_stream", "ECONNREFUSED"),
                ("ssl_dgram", "ECONNREFUSED"),
            ],
        );
        for (l, d) in &keep {
            assert_untouched(who, "image", l, d);
        }
    });
}

/// Attack: a read-only mount of a socket itself (`--mount
/// /run/x.sock:/s:ro`) would hand the sandbox the socket. Defense: refused
/// with a clear error (exit 125); `rw` is the way to give one on purpose.
#[test]
fn read_only_mount_of_a_socket_is_refused() {
    both(|who| {
        let d = scratch(who);
        let (l, dg) = host_sockets(d.path(), owner_ids(who), 0o777);
        for mode in ["ro", "overlay"] {
            let m = format!("{}:/s:{mode}", d.path().join("s").display());
            let Some(o) = run(who, &["run", "--mount", &m, "--", "true"]) else {
                return;
            };
            assert_eq!(o.code, 125, "{who:?} {mode}: {o:?}");
            assert!(o.stderr.contains("socket"), "{who:?} {mode}: {o:?}");
        }
        assert_untouched(who, "socket-mount", &l, &dg);
    });
}

/// Attack: plant `D/data -> /dir/of/another/user` through an earlier `rw`
/// run; a later root-run `--mount D/data:/d` would id-map the mount to the
/// owner of what the link points at and read that user's 0600 files as
/// their owner. Defense: a mount source reached through a symlink that is
/// not root's is refused (both modes), and root-run mapping follows the
/// owner of the object actually mounted only when the whole path down to it
/// belongs to root or that owner.
#[test]
fn symlinked_mount_source_is_not_followed() {
    let victim_uid = 4242;
    both(|who| {
        let owner = owner_ids(who);
        let d = scratch(who);
        std::os::unix::fs::chown(d.path(), Some(test_user_ids().map_or(0, |i| i.0)), None).unwrap();
        // Another user's private directory (root-run), or the caller's own
        // private directory (rootless).
        let victim = scratch(who);
        let vdir = victim.path().join("private");
        std::fs::create_dir(&vdir).unwrap();
        let vfile = vdir.join("secret");
        write(&vfile, "victim-secret\n", 0o600);
        let vowner = if who == Who::Root {
            (victim_uid, victim_uid)
        } else {
            owner
        };
        chown(&vdir, vowner);
        chown(&vfile, vowner);
        chmod(&vdir, 0o700);
        // What an earlier sandbox left in the rw-mounted D.
        let link = d.path().join("data");
        std::os::unix::fs::symlink(&vdir, &link).unwrap();
        chown(&link, test_user_ids().unwrap_or(owner));
        for mode in ["ro", "rw", "overlay"] {
            let m = format!("{}:/d:{mode}", link.display());
            let Some(o) = sh(
                who,
                &["--mount", &m],
                "cat /d/secret; echo planted > /d/new",
            ) else {
                return;
            };
            assert!(!o.stdout.contains("victim-secret"), "{who:?} {mode}: {o:?}");
            assert!(
                !vdir.join("new").exists(),
                "{who:?} {mode}: wrote into the victim"
            );
            assert_eq!(o.code, 125, "{who:?} {mode}: {o:?}");
            assert!(o.stderr.contains("symlink"), "{who:?} {mode}: {o:?}");
        }
        // A symlink in the middle of the path, too.
        let m = format!("{}/data/.:/d:ro", d.path().display());
        let o = sh(who, &["--mount", &m], "cat /d/secret").unwrap();
        assert!(!o.stdout.contains("victim-secret"), "{who:?}: {o:?}");
        assert_eq!(o.code, 125, "{who:?}: {o:?}");
        // A root-owned symlink (only root can have made it) is followed.
        if who == Who::Root {
            let rl = victim.path().join("root-link");
            std::os::unix::fs::symlink(d.path(), &rl).unwrap();
            let m = format!("{}:/d:ro", rl.display());
            sh(who, &["--mount", &m], "test -d /d").unwrap().ok();
        }
    });
}

/// Attack (root-run): a directory of another user inside a directory of
/// the caller's choosing — `--mount /home/alice/x/bobdir` — was id-mapped
/// to bob and read as bob. Defense: the mapping follows the owner only when
/// every directory from the last root-owned one down belongs to that
/// owner; otherwise the mount is not mapped and bob's 0600 files stay
/// unreadable (EACCES).
#[test]
fn foreign_directory_inside_a_mount_path_is_not_mapped_to_its_owner() {
    let Some((tu, tg)) = test_user_ids() else {
        skip("needs the test user");
        return;
    };
    if !is_root() {
        skip("id-mapped mounts are root-run only");
        return;
    }
    let d = scratch(Who::User);
    chown(d.path(), (tu, tg));
    let other = d.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let f = other.join("secret");
    write(&f, "foreign-secret\n", 0o600);
    chown(&other, (4243, 4243));
    chown(&f, (4243, 4243));
    let m = format!("{}:/d:ro", other.display());
    let code = "out('read', try_(lambda: open('/d/secret').read()))";
    let Some(o) = attack(Who::Root, &["--mount", &m], code) else {
        return;
    };
    expect(Who::Root, &o, &[("read", "EACCES")]);
    assert!(!o.stdout.contains("foreign-secret"));
}

/// Attack: exhaust the kernel quotas that are counted per host user —
/// inotify instances and watches, queued signals — from inside; run by
/// root, that user was host root (its `inotify_init` then failed with
/// EMFILE). Defense: the sandbox's user namespace is created by the
/// subordinate uid (root-run) and has bounded limits of its own; rootless,
/// the caller keeps most of their quota. The sandbox hits its own limit
/// first, and the owner on the host can still get what it asks for.
#[test]
fn kernel_quotas_of_the_host_user_are_not_exhausted() {
    let host_watches: u64 = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    both(|who| {
        let code = r#"
import signal
libc.inotify_init1.restype = ctypes.c_int
fds = []
while len(fds) < 100000:
    fd = libc.inotify_init1(0)
    if fd < 0:
        out("inotify_err", en(ctypes.get_errno()))
        break
    fds.append(fd)
out("instances", len(fds))
os.makedirs("/tmp/w", exist_ok=True)
n = 0
while n < 400000:
    p = "/tmp/w/%d" % n
    open(p, "w").close()
    if libc.inotify_add_watch(fds[0], p.encode(), 2) < 0:
        out("watch_err", en(ctypes.get_errno()))
        break
    n += 1
out("watches", n)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
q = 0
while q < 200000:
    if libc.sigqueue(os.getpid(), int(signal.SIGRTMIN), ctypes.c_void_p(0)) != 0:
        out("sigqueue_err", en(ctypes.get_errno()))
        break
    q += 1
out("queued", q)
print("ready", flush=True)
sys.stdin.readline()
"#;
        let Some(mut live) = Live::start(who, &["--timeout", "120s"], code) else {
            return;
        };
        live.wait_for("ready");
        // The owner on the host, while the sandbox holds everything it got.
        let probe = r#"
import ctypes, os, signal, errno
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
print("host_inotify=%s" % ("OK" if fd >= 0 else errno.errorcode[ctypes.get_errno()]))
w = libc.inotify_add_watch(fd, b"/", 2) if fd >= 0 else -1
print("host_watch=%s" % ("OK" if w >= 0 else errno.errorcode[ctypes.get_errno()]))
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
r = libc.sigqueue(os.getpid(), int(signal.SIGRTMIN), ctypes.c_void_p(0))
print("host_sigqueue=%s" % ("OK" if r == 0 else errno.errorcode[ctypes.get_errno()]))
"#;
        let mut p = if who == Who::Root {
            Command::new("/usr/bin/python3")
        } else {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                TEST_USER,
                "--regid",
                TEST_USER,
                "--init-groups",
                "/usr/bin/python3",
            ]);
            c
        };
        let host = out_of(p.args(["-c", probe]).output().unwrap());
        live.go();
        let o = live.finish();
        assert_eq!(o.code, 0, "{who:?}: {o:#?}");
        expect(
            who,
            &host,
            &[
                ("host_inotify", "OK"),
                ("host_watch", "OK"),
                ("host_sigqueue", "OK"),
            ],
        );
        let got = kv(&o);
        let num = |k: &str| -> u64 { got[k].parse().unwrap() };
        assert!(num("instances") <= 64, "{who:?}: {o:#?}");
        assert!(num("watches") <= host_watches / 2, "{who:?}: {o:#?}");
        assert!(num("queued") <= 4096, "{who:?}: {o:#?}");
        assert_eq!(got["inotify_err"], "EMFILE", "{who:?}");
        assert_eq!(got["watch_err"], "ENOSPC", "{who:?}");
        assert_eq!(got["sigqueue_err"], "EAGAIN", "{who:?}");
    });
}

/// Attack: lock a host file through a read-only mount — `flock(LOCK_EX)` on
/// an O_RDONLY fd held the host's `flock -n` off, and a read lease
/// (`F_SETLEASE`) stalled a host writer's `open()` for up to 45 s.
/// Defense: locks taken on a read-only mount stay on its overlay inode and
/// never reach the host file; leases are refused (EPERM) everywhere.
#[test]
fn host_file_locks_and_leases_through_ro_mounts() {
    both(|who| {
        let d = scratch(who);
        let f = d.path().join("f");
        write(&f, "data\n", 0o644);
        chown(&f, owner_ids(who));
        let code = r#"
import fcntl
fd = os.open("/m/f", os.O_RDONLY)
out("flock", try_(fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB))
out("posix", try_(fcntl.lockf, fd, fcntl.LOCK_SH | fcntl.LOCK_NB))
F_SETLEASE = 1024
out("lease_mount", try_(fcntl.fcntl, fd, F_SETLEASE, fcntl.F_RDLCK))
open("/tmp/own", "w").close()
fd2 = os.open("/tmp/own", os.O_RDONLY)
out("lease_own", try_(fcntl.fcntl, fd2, F_SETLEASE, fcntl.F_RDLCK))
print("ready", flush=True)
sys.stdin.readline()
"#;
        let m = format!("{}:/m:ro", d.path().display());
        let Some(mut live) = Live::start(who, &["--mount", &m], code) else {
            return;
        };
        live.wait_for("ready");
        // The host, while the sandbox holds its locks.
        let h = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&f);
        let flock = h.as_ref().map(|h| {
            // SAFETY: flock on an fd we own.
            unsafe { libc::flock(h.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }
        });
        live.go();
        let o = live.finish();
        assert!(
            h.is_ok(),
            "{who:?}: host open(O_WRONLY) blocked by a lease: {h:?}"
        );
        assert_eq!(flock.ok(), Some(0), "{who:?}: host flock -n was held off");
        expect(
            who,
            &o,
            &[
                ("flock", "OK"),
                ("posix", "OK"),
                ("lease_mount", "EPERM"),
                ("lease_own", "EPERM"),
            ],
        );
    });
}

/// Attack: take every pty of the host — one sandbox opened 3071 (its devpts
/// had no `max=`), after which others got ENOSPC. Defense: each sandbox's
/// devpts has a small `max`; the host can still open a pty meanwhile.
#[test]
fn ptys_are_capped_per_sandbox() {
    both(|who| {
        let code = r#"
ptys = []
while len(ptys) < 5000:
    try:
        ptys.append(os.openpty())
    except OSError as e:
        out("err", en(e.errno))
        break
out("n", len(ptys))
print("ready", flush=True)
sys.stdin.readline()
"#;
        let Some(mut live) = Live::start(who, &[], code) else {
            return;
        };
        live.wait_for("ready");
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty writes two fds; null name/termios/winsize.
        let r = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if r == 0 {
            // SAFETY: closing the fds openpty gave us.
            unsafe {
                libc::close(m);
                libc::close(s);
            }
        }
        live.go();
        let o = live.finish();
        assert_eq!(r, 0, "{who:?}: the host could not open a pty");
        let got = kv(&o);
        assert_eq!(got.get("err").map(String::as_str), Some("ENOSPC"), "{o:#?}");
        let n: u64 = got["n"].parse().unwrap();
        assert!(n <= 64, "{who:?}: {n} ptys");
    });
}

/// Attack: with `--disk 1M`, create empty files until the kernel runs out
/// of memory for inodes (300 k files were admitted). Defense: the tmpfs
/// inode count is derived from --disk.
#[test]
fn disk_limit_caps_inodes() {
    both(|who| {
        let code = r#"
n = 0
while n < 400000:
    try:
        open("/tmp/f%d" % n, "w").close()
    except OSError as e:
        out("err", en(e.errno))
        break
    n += 1
out("n", n)
"#;
        let Some(o) = attack(who, &["--disk", "1M"], code) else {
            return;
        };
        let got = kv(&o);
        assert_eq!(got.get("err").map(String::as_str), Some("ENOSPC"), "{o:#?}");
        let n: u64 = got["n"].parse().unwrap();
        assert!(n <= 1024, "{who:?}: {n} inodes under --disk 1M");
    });
}

/// What a sandbox may have by default, derived from the host as the README
/// says: open files per process, and a task cap that respects `pid_max` and
/// `file-max` so that one sandbox cannot take every pid or every file.
fn default_caps() -> (u64, u64) {
    let read = |p: &str| -> u64 {
        std::fs::read_to_string(p)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let nofile = 1024;
    let tasks = 8192
        .min(read("/proc/sys/kernel/pid_max") / 8)
        .min(read("/proc/sys/kernel/threads-max") / 8)
        .min(read("/proc/sys/fs/file-max") / (4 * nofile))
        .max(256);
    (nofile, tasks)
}

/// Attack: open files without end (2.46 M: every non-root host process
/// then got ENFILE), or take every pid (8192 tasks per sandbox with
/// pid_max 32768). Defense: RLIMIT_NOFILE per process and a task cap per
/// sandbox whose product stays a fraction of file-max, and a task cap below
/// pid_max/8; neither can be raised from inside.
#[test]
fn files_and_tasks_are_capped_by_default() {
    let (nofile, tasks) = default_caps();
    both(|who| {
        let code = r#"
import resource, time
s, h = resource.getrlimit(resource.RLIMIT_NOFILE)
out("nofile", h)
class RL(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_ulong), ("max", ctypes.c_ulong)]
r = RL(h + 1, h + 1)
out("raise_nofile", "OK" if libc.setrlimit(7, ctypes.byref(r)) == 0 else en(ctypes.get_errno()))
s, h = resource.getrlimit(resource.RLIMIT_NPROC)
out("nproc", h)
fs = []
while len(fs) < 100000:
    try:
        fs.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as e:
        out("open_err", en(e.errno))
        break
out("opened", len(fs))
for f in fs:
    os.close(f)
n = 0
while n < 20000:
    try:
        p = os.fork()
    except OSError as e:
        out("fork_err", en(e.errno))
        break
    if p == 0:
        time.sleep(20)
        os._exit(0)
    n += 1
out("forked", n)
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        let got = kv(&o);
        let num = |k: &str| -> u64 { got[k].parse().unwrap() };
        assert_eq!(num("nofile"), nofile, "{who:?}: {o:#?}");
        assert_eq!(num("nproc"), tasks, "{who:?}: {o:#?}");
        assert_eq!(got["raise_nofile"], "EPERM", "{who:?}");
        assert_eq!(got["open_err"], "EMFILE", "{who:?}");
        assert!(num("opened") < nofile, "{who:?}");
        assert_eq!(got["fork_err"], "EAGAIN", "{who:?}");
        assert!(num("forked") < tasks, "{who:?}: {o:#?}");
    });
}

/// Attack: hold the timeout from outside — pass the sandbox's own stdout
/// and stderr (SCM_RIGHTS) to a host listener's backlog, which never
/// accepts, or to another sandbox through a shared rw directory; airlock
/// then waited for an EOF that never came (a `--timeout 2s` run returned
/// after 14-20 s). And after the command exits, a holder that keeps writing
/// into the pipe kept airlock draining. Defense: once the command has ended
/// or timed out, airlock drains what is there without waiting and
/// finishes.
#[test]
fn timeout_cannot_be_held_from_outside() {
    both(|who| {
        let d = scratch(who);
        chmod(d.path(), 0o777);
        let sock = d.path().join("hold");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        chmod(&sock, 0o777);
        chown(&sock, owner_ids(who));
        let pass = r#"
import array, time
s = socket.socket(socket.AF_UNIX)
s.connect(PATH)
s.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [1, 2]))])
print("sent", flush=True)
MODE
"#;
        let m = format!("{}:/h:rw", d.path().display());
        // 1. The host listener never accepts; the command sleeps on.
        let code = pass
            .replace("PATH", "'/h/hold'")
            .replace("MODE", "time.sleep(60)");
        let Some((o, took)) = attack_bounded(
            who,
            &["--mount", &m, "--timeout", "2s"],
            &code,
            Duration::from_secs(30),
        ) else {
            return;
        };
        assert_eq!(o.code, 124, "{who:?}: {o:#?}");
        assert!(took < Duration::from_secs(8), "{who:?}: took {took:?}");
        // 2. The host accepts and keeps writing into the passed stdout
        // after the command has exited (for 20 s at most).
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            use std::os::fd::FromRawFd;
            let end = Instant::now() + Duration::from_secs(20);
            // The first connection in the backlog is the first run's.
            while let Ok((c, _)) = l.accept() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let mut fds = [-1i32; 2];
                if recv_fds(c.as_raw_fd(), &mut fds) < 1 {
                    continue;
                }
                // SAFETY: fds we just received and own.
                let mut w = unsafe { std::fs::File::from_raw_fd(fds[0]) };
                if fds[1] >= 0 {
                    // SAFETY: as above.
                    drop(unsafe { std::fs::File::from_raw_fd(fds[1]) });
                }
                let chunk = vec![b'z'; 4096];
                while !stop2.load(Ordering::SeqCst) && Instant::now() < end {
                    if w.write_all(&chunk).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        let code = pass
            .replace("PATH", "'/h/hold'")
            .replace("MODE", "os._exit(0)");
        let (o, took) = attack_bounded(
            who,
            &["--mount", &m, "--timeout", "30s"],
            &code,
            Duration::from_secs(40),
        )
        .unwrap();
        stop.store(true, Ordering::SeqCst);
        // Wakes accept() up if the writer waits there.
        let _ = std::os::unix::net::UnixStream::connect(&sock);
        let _ = writer.join();
        assert_eq!(o.code, 0, "{who:?}: {}", &o.stderr);
        assert!(took < Duration::from_secs(8), "{who:?}: took {took:?}");
    });
}

/// [`attack`], killing airlock if it has not ended after `limit`; returns
/// what it printed and how long it took.
fn attack_bounded(
    who: Who,
    flags: &[&str],
    code: &str,
    limit: Duration,
) -> Option<(Out, Duration)> {
    let mut c = airlock(who)?;
    let full = format!("{PY_PRELUDE}\n{ATT}\n{code}");
    c.arg("run")
        .args(flags)
        .args(["--", "python3", "-c", &full])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = c.spawn().unwrap();
    let read = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let so = read(child.stdout.take().map(|s| Box::new(s) as _));
    let se = read(child.stderr.take().map(|s| Box::new(s) as _));
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t.elapsed();
    use std::os::unix::process::ExitStatusExt;
    let out = Out {
        code: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        stdout: so.join().unwrap_or_default(),
        stderr: se.join().unwrap_or_default(),
    };
    Some((out, took))
}

/// Receives up to two fds (SCM_RIGHTS) from a unix stream socket.
fn recv_fds(sock: i32, fds: &mut [i32; 2]) -> usize {
    let mut data = [0u8; 16];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; 16];
    // SAFETY: msghdr is plain data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: a valid msghdr over local buffers.
    if unsafe { libc::recvmsg(sock, &mut msg, 0) } <= 0 {
        return 0;
    }
    // SAFETY: walks the control messages the kernel wrote into `cbuf`.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return 0;
        }
        let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
        let p = libc::CMSG_DATA(c) as *const i32;
        for (i, slot) in fds.iter_mut().enumerate().take(n.min(2)) {
            *slot = *p.add(i);
        }
        n.min(2)
    }
}

/// Attack: a covert channel through the host's device inodes —
/// `utime("/dev/null")` inside changed the host's /dev/null timestamps —
/// and host facts through /proc/self/cgroup (the host's cgroup path when
/// the sandbox had no limits). Defense: device nodes are bound read-only
/// (EROFS; they still work for reading and writing), and the sandbox
/// always has its own cgroup namespace (every path is "/").
#[test]
fn host_device_inodes_and_cgroup_paths_are_not_exposed() {
    let devs = ["null", "zero", "full", "random", "urandom", "tty"];
    let mtime = |d: &str| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(Path::new("/dev").join(d)).unwrap();
        (m.mtime(), m.mtime_nsec(), m.atime(), m.atime_nsec())
    };
    both(|who| {
        let before: Vec<_> = devs.iter().map(|d| mtime(d)).collect();
        let code = r#"
for d in ("null", "zero", "full", "random", "urandom", "tty"):
    out("utime_" + d, try_(os.utime, "/dev/" + d))
    out("utime0_" + d, try_(os.utime, "/dev/" + d, (0, 0)))
with open("/dev/null", "w") as f:
    f.write("x")
out("null_trunc", try_(lambda: open("/dev/null", "w").write("y")))
out("zero", len(open("/dev/zero", "rb").read(10)))
out("cgroup", ";".join(l.split(":", 2)[2] for l in open("/proc/self/cgroup").read().split()))
"#;
        let Some(o) = attack(who, &[], code) else {
            return;
        };
        let after: Vec<_> = devs.iter().map(|d| mtime(d)).collect();
        let mut want: Vec<(String, &str)> = Vec::new();
        for d in devs {
            want.push((format!("utime_{d}"), "EROFS"));
            want.push((format!("utime0_{d}"), "EROFS"));
        }
        want.push(("null_trunc".into(), "OK"));
        want.push(("zero".into(), "10"));
        let want: Vec<(&str, &str)> = want.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        expect(who, &o, &want);
        let cg = kv(&o)["cgroup"].clone();
        assert!(
            cg.split(';').all(|p| p == "/"),
            "{who:?}: host cgroup paths visible: {cg}"
        );
        assert_eq!(before, after, "{who:?}: host device timestamps changed");
    });
}
