//! The Landlock tier (`--isolation landlock`): a plain child of airlock,
//! confined by Landlock, seccomp without network sockets, no capabilities,
//! limits and the timeout. Attack tests, run on the host (as root and
//! rootless) and from inside a container sandbox, where user namespaces
//! are refused (which is how this machine reproduces such a host).

mod common;
use common::*;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const PY: &str = "/usr/bin/python3";

/// `airlock run --isolation landlock [flags] -- /usr/bin/python3 -c CODE`
/// (with the attack prelude), as `who` with `env` in airlock's own
/// environment.
fn ll_py(who: Who, env: &[(&str, &str)], flags: &[&str], code: &str) -> Option<Out> {
    let full = format!("{PY_PRELUDE}\n{code}");
    let mut c = airlock_env(who, env)?;
    c.args(["run", "--isolation", "landlock"])
        .args(flags)
        .args(["--", PY, "-c", &full])
        .stdin(Stdio::null());
    let o = c.output().unwrap();
    Some(out_of(o))
}

fn out_of(o: std::process::Output) -> Out {
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

/// `key=value` lines of a run's stdout.
fn kv(o: &Out) -> std::collections::BTreeMap<String, String> {
    o.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn landlock_abi() -> i64 {
    // SAFETY: with a null attr and size 0 this only returns the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    v.max(0)
}

/// Skips (loudly) where the kernel has no Landlock.
fn have_landlock() -> bool {
    if landlock_abi() < 1 {
        skip("this kernel has no Landlock");
        return false;
    }
    true
}

/// A command runs; the warning is printed on every run, --quiet too; the
/// tier is never chosen by itself (a default run says nothing of it).
#[test]
fn runs_and_always_warns() {
    if !have_landlock() {
        return;
    }
    both(|who| {
        for flags in [&[][..], &["--quiet"][..]] {
            let mut a = vec!["run", "--isolation", "landlock"];
            a.extend_from_slice(flags);
            a.extend_from_slice(&["--", "sh", "-c", "echo hello; exit 3"]);
            let Some(o) = run(who, &a) else { return };
            assert_eq!(o.code, 3, "{who:?}: {o:?}");
            assert_eq!(o.stdout, "hello\n", "{who:?}: {o:?}");
            let warnings: Vec<&str> = o
                .stderr
                .lines()
                .filter(|l| l.contains("--isolation landlock is weaker"))
                .collect();
            assert_eq!(warnings.len(), 1, "{who:?} {flags:?}: {o:?}");
        }
        let o = sh(who, &[], "true").unwrap();
        o.ok();
        assert!(!o.stderr.contains("landlock"), "{who:?}: {o:?}");
    });
}

/// Paths outside the allowed ones are unreadable (EACCES from Landlock,
/// though the files' modes allow reading), writes outside fail, the
/// private home works and goes with the sandbox, mounts grant what their
/// mode says.
#[test]
fn filesystem_confined_to_the_rules() {
    if !have_landlock() {
        return;
    }
    both(|who| {
        let secret_dir = tempdir::Dir::new();
        std::fs::write(secret_dir.path().join("secret"), "top secret").unwrap();
        std::fs::set_permissions(
            secret_dir.path().join("secret"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let open_dir = tempdir::Dir::new();
        std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let rw = tempdir::Dir::new();
        std::fs::set_permissions(rw.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let ro = tempdir::Dir::new();
        std::fs::write(ro.path().join("f"), "ro data").unwrap();
        let (s, od, rwp, rop) = (
            secret_dir.path().display().to_string(),
            open_dir.path().display().to_string(),
            rw.path().display().to_string(),
            ro.path().display().to_string(),
        );
        let code = format!(
            r#"
print("read_secret=" + try_(lambda: open("{s}/secret").read()))
print("list_secret=" + try_(lambda: os.listdir("{s}")))
print("write_open=" + try_(lambda: open("{od}/planted", "w").write("x")))
print("write_tmp=" + try_(lambda: open("/tmp/airlock-ll-planted-{pid}", "w").write("x")))
print("write_etc=" + try_(lambda: open("/etc/airlock-ll-planted", "w").write("x")))
print("read_usr=" + try_(lambda: open("/usr/bin/env", "rb").read(4)))
print("read_passwd=" + try_(lambda: open("/etc/passwd").read()))
print("read_home_root=" + try_(lambda: os.listdir("/root")))
print("read_disk=" + try_(lambda: open("/dev/vda", "rb").read(1)))
print("dev_null=" + try_(lambda: open("/dev/null", "w").write("x")))
print("home=" + os.environ["HOME"])
print("tmpdir=" + os.environ.get("TMPDIR", ""))
print("cwd=" + os.getcwd())
print("write_home=" + try_(lambda: open(os.environ["HOME"] + "/f", "w").write("x")))
print("write_rw=" + try_(lambda: open("{rwp}/made", "w").write("from inside")))
print("read_ro=" + try_(lambda: open("{rop}/f").read()))
print("write_ro=" + try_(lambda: open("{rop}/g", "w").write("x")))
"#,
            pid = std::process::id()
        );
        let rw_mount = format!("{rwp}:{rwp}:rw");
        let ro_mount = format!("{rop}:{rop}:ro");
        let Some(o) = ll_py(who, &[], &["-v", &rw_mount, "-v", &ro_mount], &code) else {
            return;
        };
        o.ok();
        let r = kv(&o);
        let want = [
            ("read_secret", "EACCES"),
            ("list_secret", "EACCES"),
            ("write_open", "EACCES"),
            ("write_tmp", "EACCES"),
            ("read_usr", "OK"),
            ("read_passwd", "OK"),
            ("dev_null", "OK"),
            ("write_home", "OK"),
            ("write_rw", "OK"),
            ("read_ro", "OK"),
            ("write_ro", "EACCES"),
        ];
        for (k, v) in want {
            assert_eq!(r.get(k).map(String::as_str), Some(v), "{who:?} {k}: {o:?}");
        }
        // Outside every rule: refused whatever DAC would have said.
        for k in ["write_etc", "read_home_root", "read_disk"] {
            assert_ne!(
                r.get(k).map(String::as_str),
                Some("OK"),
                "{who:?} {k}: {o:?}"
            );
        }
        assert!(!open_dir.path().join("planted").exists(), "{who:?}");
        assert!(
            !std::path::Path::new(&format!("/tmp/airlock-ll-planted-{}", std::process::id()))
                .exists()
        );
        assert!(!std::path::Path::new("/etc/airlock-ll-planted").exists());
        assert!(!ro.path().join("g").exists());
        assert_eq!(
            std::fs::read_to_string(rw.path().join("made")).unwrap(),
            "from inside"
        );
        // The private home is the temporary directory and the working
        // directory, and it is gone with the sandbox.
        let home = &r["home"];
        assert!(home.contains("airlock-landlock-"), "{who:?}: {o:?}");
        assert_eq!(&r["tmpdir"], home);
        assert_eq!(&r["cwd"], home);
        assert!(
            !std::path::Path::new(home).exists(),
            "{who:?}: {home} left behind"
        );
    });
}

/// No network: socket(AF_INET) fails, a listener on the host's loopback
/// hears nothing, a unix socket on the host cannot be connected to, and
/// the rest of the attack list (io_uring, ptrace, namespaces) is refused.
#[test]
fn no_network_and_no_kernel_surfaces() {
    if !have_landlock() {
        return;
    }
    both(|who| {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        tcp.set_nonblocking(true).unwrap();
        let port = tcp.local_addr().unwrap().port();
        let dir = tempdir::Dir::new();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let sock = dir.path().join("host.sock");
        let unix = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
        unix.set_nonblocking(true).unwrap();
        let code = format!(
            r#"
print("inet=" + try_(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)))
print("inet6=" + try_(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)))
print("netlink=" + try_(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)))
print("packet=" + try_(lambda: socket.socket(17, socket.SOCK_RAW, 0)))
print("tcp=" + try_(lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2)))
def unix_connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("{sock}")
print("unix_connect=" + try_(unix_connect))
print("unix_dgram=" + try_(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)))
print("socketpair=" + try_(lambda: socket.socketpair()))
print("io_uring=" + sc(425, 1, 0))
print("ptrace_parent=" + sc(101, 16, os.getppid(), 0, 0))
print("unshare=" + sc(272, 0x10000000))
print("caps=" + [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0])
print("nnp=" + [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0])
print("seccomp=" + [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0])
print("uid=" + str(os.getuid()))
print("session_leader=" + str(os.getsid(0) == os.getpid()))
import resource
print("nofile=" + str(resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
"#,
            sock = sock.display()
        );
        let Some(o) = ll_py(who, &[], &[], &code) else {
            return;
        };
        o.ok();
        let r = kv(&o);
        for (k, v) in [
            ("inet", "EPERM"),
            ("inet6", "EPERM"),
            ("netlink", "EPERM"),
            ("packet", "EPERM"),
            ("tcp", "EPERM"),
            ("unix_connect", "EPERM"),
            ("unix_dgram", "EPERM"),
            ("socketpair", "OK"),
            ("io_uring", "EPERM"),
            ("ptrace_parent", "EPERM"),
            ("unshare", "EPERM"),
            ("caps", "0000000000000000"),
            ("nnp", "1"),
            ("seccomp", "2"),
            ("session_leader", "True"),
            ("nofile", "1024"),
        ] {
            assert_eq!(r.get(k).map(String::as_str), Some(v), "{who:?} {k}: {o:?}");
        }
        // Run by root, never root.
        assert_ne!(r["uid"], "0", "{who:?}: {o:?}");
        assert!(
            tcp.accept().is_err(),
            "{who:?}: the host listener was reached"
        );
        assert!(
            unix.accept().is_err(),
            "{who:?}: the host socket was reached"
        );
    });
}

/// The host's environment does not leak in (only PATH, HOME, USER, LANG,
/// TERM, TZ, TMPDIR and what --env names).
#[test]
fn environment_is_scrubbed() {
    if !have_landlock() {
        return;
    }
    both(|who| {
        let env = [
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-123"),
            ("GITHUB_TOKEN", "ghp_secret456"),
            ("LANG", "C.UTF-8"),
        ];
        let code = "print('\\n'.join(sorted(k + '=' + v for k, v in os.environ.items())))";
        let Some(o) = ll_py(who, &env, &["-e", "GIVEN=yes"], code) else {
            return;
        };
        o.ok();
        assert!(!o.stdout.contains("secret"), "{who:?}: {o:?}");
        let keys: Vec<&str> = o
            .stdout
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        for k in &keys {
            assert!(
                ["PATH", "HOME", "USER", "LANG", "TERM", "TZ", "TMPDIR", "GIVEN", "LC_CTYPE"]
                    .contains(k),
                "{who:?}: unexpected variable {k}: {o:?}"
            );
        }
        assert!(o.stdout.contains("GIVEN=yes"), "{who:?}: {o:?}");
    });
}

/// Host processes of the same user cannot be signalled or traced, and
/// their /proc secrets cannot be read; nor can the agent be signalled.
#[test]
fn host_processes_out_of_reach() {
    if !have_landlock() {
        return;
    }
    both(|who| {
        // A host process of the same user as the caller.
        let mut victim = match who {
            Who::Root => Command::new("sleep"),
            Who::User => {
                if !is_root() || test_user_ids().is_none() {
                    skip("needs root and the test user");
                    return;
                }
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid",
                    TEST_USER,
                    "--regid",
                    TEST_USER,
                    "--init-groups",
                    "--",
                    "sleep",
                ]);
                c
            }
        };
        let mut victim = victim
            .arg("600")
            .env("VICTIM_SECRET", "victim-secret-789")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let vpid = victim.id();
        let code = format!(
            r#"
import signal
print("kill0=" + try_(os.kill, {vpid}, 0))
print("kill=" + try_(os.kill, {vpid}, signal.SIGKILL))
print("kill_agent=" + try_(os.kill, os.getppid(), signal.SIGKILL))
print("ptrace=" + sc(101, 16, {vpid}, 0, 0))
print("environ=" + try_(lambda: open("/proc/{vpid}/environ", "rb").read()))
print("mem=" + try_(lambda: open("/proc/{vpid}/mem", "rb")))
print("agent_environ=" + try_(lambda: open("/proc/%d/environ" % os.getppid(), "rb").read()))
"#
        );
        let o = ll_py(who, &[], &[], &code);
        let alive = victim.try_wait().unwrap().is_none();
        let _ = victim.kill();
        let _ = victim.wait();
        let Some(o) = o else { return };
        o.ok();
        let r = kv(&o);
        for k in [
            "kill0",
            "kill",
            "kill_agent",
            "ptrace",
            "environ",
            "mem",
            "agent_environ",
        ] {
            assert_ne!(
                r.get(k).map(String::as_str),
                Some("OK"),
                "{who:?} {k}: {o:?}"
            );
            assert!(r.contains_key(k), "{who:?} {k}: {o:?}");
        }
        assert!(!o.stdout.contains("victim-secret"), "{who:?}: {o:?}");
        assert!(alive, "{who:?}: the host process was killed");
    });
}

/// The timeout kills the whole tree: children that started sessions of
/// their own, and orphans.
#[test]
fn timeout_kills_the_whole_tree() {
    if !have_landlock() {
        return;
    }
    both(|who| {
        let tag = 7000 + (std::process::id() % 1000) * 2 + (who == Who::User) as u32;
        let script =
            format!("setsid sleep {tag}1 & (sleep {tag}2 &); sh -c 'sleep {tag}3 &'; sleep {tag}4");
        let t = std::time::Instant::now();
        let Some(o) = run(
            who,
            &[
                "run",
                "--isolation",
                "landlock",
                "--timeout",
                "2s",
                "--",
                "sh",
                "-c",
                &script,
            ],
        ) else {
            return;
        };
        assert_eq!(o.code, 124, "{who:?}: {o:?}");
        assert!(t.elapsed() < Duration::from_secs(20), "{who:?}");
        std::thread::sleep(Duration::from_millis(300));
        let left: Vec<String> = (1..=4)
            .flat_map(|i| host_processes_matching(&format!("sleep {tag}{i}")))
            .collect();
        assert!(left.is_empty(), "{who:?}: left running: {left:?}");
    });
}

/// From inside a container sandbox, where user namespaces are refused:
/// the container tier's error names the Landlock tier and the microVM
/// tier; doctor says so; the Landlock tier runs and holds (secrets outside
/// the rules, writes, network, a listener, the environment, the timeout).
#[test]
fn inside_a_sandbox_without_user_namespaces() {
    if !have_landlock() {
        return;
    }
    both(|who| {
        let bin_dir = bin().parent().unwrap().display().to_string();
        let secret = scratch(who);
        std::fs::write(secret.path().join("secret"), "nested secret").unwrap();
        std::fs::set_permissions(
            secret.path().join("secret"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let outw = scratch(who);
        std::fs::set_permissions(outw.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let inner_py = format!(
            r#"{PY_PRELUDE}
print("secret=" + try_(lambda: open("/secret/secret").read()))
print("write_outw=" + try_(lambda: open("/outw/planted", "w").write("x")))
print("write_tmp=" + try_(lambda: open("/tmp/planted", "w").write("x")))
print("inet=" + try_(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)))
print("tcp=" + try_(lambda: socket.create_connection(("127.0.0.1", 41234), timeout=2)))
print("env_token=" + os.environ.get("OUTER_TOKEN", "absent"))
print("io_uring=" + sc(425, 1, 0))
"#
        );
        let timeout_tree = "setsid sleep 9191 & (sleep 9192 &); sleep 9193";
        let script = format!(
            r#"
A=/opt/al/airlock
$A run -- true 2>/tmp/container.err; echo "container_code=$?"
echo "container_err=$(head -n 1 /tmp/container.err)"
$A doctor --json >/tmp/doctor.json; echo "doctor_code=$?"
{PY} -c 'import json; d = json.load(open("/tmp/doctor.json")); t = {{x["tier"]: x["ready"] for x in d["tiers"]}}; print("doctor_container=%s" % t["container"]); print("doctor_landlock=%s" % t["landlock"])'
{PY} -c 'import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 41234)); s.listen(); s.settimeout(8)
try:
    s.accept(); print("listener=REACHED")
except OSError:
    print("listener=quiet")' > /tmp/listener.out &
LPID=$!
sleep 0.3
OUTER_TOKEN=outer-secret $A run --isolation landlock -q -- {PY} -c '{inner}'; echo "landlock_code=$?"
$A run --isolation landlock -q --timeout 1s -- sh -c '{timeout_tree}'; echo "timeout_code=$?"
sleep 0.3
{PY} -c 'import os
def cmd(p):
    try:
        return open("/proc/%s/cmdline" % p, "rb").read()
    except OSError:
        return b""
print("left=%d" % sum(1 for p in os.listdir("/proc") if p.isdigit() and cmd(p).startswith(b"sleep\x00919")))'
wait $LPID
cat /tmp/listener.out
"#,
            inner = inner_py.replace('\'', "'\"'\"'"),
        );
        let ro = format!("{bin_dir}:/opt/al:ro");
        let sec = format!("{}:/secret:ro", secret.path().display());
        let ow = format!("{}:/outw:rw", outw.path().display());
        let Some(o) = sh(
            who,
            &["--timeout", "60s", "-v", &ro, "-v", &sec, "-v", &ow],
            &script,
        ) else {
            return;
        };
        o.ok();
        let r = kv(&o);
        assert_ne!(r["container_code"], "0", "{who:?}: {o:?}");
        let err = &r["container_err"];
        assert!(
            err.contains("--isolation landlock") && err.contains("--isolation microvm"),
            "{who:?}: the container tier's error names the alternatives: {o:?}"
        );
        assert_eq!(r["doctor_code"], "1", "{who:?}: {o:?}");
        assert_eq!(r["doctor_container"], "False", "{who:?}: {o:?}");
        assert_eq!(r["doctor_landlock"], "True", "{who:?}: {o:?}");
        for (k, v) in [
            ("landlock_code", "0"),
            ("secret", "EACCES"),
            ("write_outw", "EACCES"),
            ("write_tmp", "EACCES"),
            ("inet", "EPERM"),
            ("tcp", "EPERM"),
            ("env_token", "absent"),
            ("io_uring", "EPERM"),
            ("timeout_code", "124"),
            ("left", "0"),
            ("listener", "quiet"),
        ] {
            assert_eq!(r.get(k).map(String::as_str), Some(v), "{who:?} {k}: {o:?}");
        }
        assert!(!outw.path().join("planted").exists(), "{who:?}");
        let mut s = String::new();
        std::fs::File::open(secret.path().join("secret"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "nested secret");
    });
}

/// What the tier cannot do is refused with a reason, never done weaker.
#[test]
fn unsupported_options_are_refused() {
    both(|who| {
        for (flags, what) in [
            (&["-v", "/usr:/x:ro"][..], "target differs"),
            (&["-v", "/usr:/usr:overlay"][..], "overlay"),
            (&["--user", "root"][..], "--user"),
            (&["--hostname", "h"][..], "--hostname"),
        ] {
            let mut a = vec!["run", "--isolation", "landlock"];
            a.extend_from_slice(flags);
            a.extend_from_slice(&["--", "true"]);
            let Some(o) = run(who, &a) else { return };
            assert_eq!(o.code, 125, "{who:?} {flags:?}: {o:?}");
            assert!(o.stderr.contains(what), "{who:?} {flags:?}: {o:?}");
            assert!(o.stderr.contains("landlock"), "{who:?} {flags:?}: {o:?}");
        }
    });
}

/// More of the attack suite's cases that apply to a plain child: the
/// caller's own secrets in its home (readable by its uid: Landlock alone
/// refuses them), a host abstract unix socket, leaked fds, the agent's
/// binary through /proc, the hostname, the disk and kernel memory.
#[test]
fn the_callers_secrets_and_the_agent_stay_out_of_reach() {
    if !have_landlock() {
        return;
    }
    both(|who| {
        let (home, owner) = match who {
            Who::Root => ("/root".to_string(), None),
            Who::User => {
                let Some(ids) = test_user_ids() else {
                    skip("needs the test user");
                    return;
                };
                (format!("/home/{TEST_USER}"), Some(ids))
            }
        };
        if !std::path::Path::new(&home).is_dir() {
            skip("the caller has no home directory");
            return;
        }
        let secret = format!("{home}/.airlock-ll-secret-{}", std::process::id());
        std::fs::write(&secret, "caller's own secret").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some((u, g)) = owner {
            std::os::unix::fs::chown(&secret, Some(u), Some(g)).unwrap();
        }
        use std::os::linux::net::SocketAddrExt;
        let name = format!("airlock-ll-abstract-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abs = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        abs.set_nonblocking(true).unwrap();
        let airlock = bin().display().to_string();
        let code = format!(
            r#"
print("home_secret=" + try_(lambda: open("{secret}").read()))
def abstract():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0{name}")
print("abstract=" + try_(abstract))
def link(f):
    try:
        return os.readlink("/proc/self/fd/%s" % f)
    except OSError:
        return None
fds = [f for f in os.listdir("/proc/self/fd") if int(f) > 2 and link(f) is not None]
print("fds=" + ",".join(fds))
print("agent_exe=" + try_(lambda: open("/proc/%d/exe" % os.getppid(), "rb")))
print("airlock_write=" + try_(lambda: open("{airlock}", "r+b")))
print("hostname=" + try_(socket.sethostname, "pwned"))
print("kmsg=" + try_(lambda: open("/dev/kmsg").read(1)))
print("mem=" + try_(lambda: open("/dev/mem", "rb")))
print("sysrq=" + try_(lambda: open("/proc/sysrq-trigger", "w").write("h")))
"#
        );
        let o = ll_py(who, &[], &[], &code);
        let _ = std::fs::remove_file(&secret);
        let Some(o) = o else { return };
        o.ok();
        let r = kv(&o);
        assert_eq!(r["home_secret"], "EACCES", "{who:?}: {o:?}");
        assert_eq!(r["abstract"], "EPERM", "{who:?}: {o:?}");
        assert_eq!(r["fds"], "", "{who:?}: leaked fds: {o:?}");
        for k in [
            "agent_exe",
            "airlock_write",
            "hostname",
            "kmsg",
            "mem",
            "sysrq",
        ] {
            assert!(r.contains_key(k), "{who:?} {k}: {o:?}");
            assert_ne!(r[k], "OK", "{who:?} {k}: {o:?}");
        }
        assert!(
            abs.accept().is_err(),
            "{who:?}: the abstract socket was reached"
        );
        assert!(!o.stdout.contains("caller's own secret"));
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_ne!(host_name.trim(), "pwned");
    });
}
