//! Isolation facts of the container tier, as root and rootless.

mod common;
use common::*;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Stdio;

fn status_field(stdout: &str, field: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in {stdout}"))
}

/// PID 1 is the agent (airlock itself, the command's parent); the command is
/// PID 2; host processes are invisible.
#[test]
fn pid_namespace_agent_is_pid_1() {
    both(|who| {
        let Some(o) = sh(
            who,
            &[],
            "echo $$; awk '/^PPid/{print $2}' /proc/$$/status; ls /proc | grep -c '^[0-9]'",
        ) else {
            return;
        };
        o.ok();
        let l = o.lines();
        assert_eq!(l[0], "2", "{who:?}: the command is PID 2: {o:?}");
        // The shell's parent is the agent, PID 1.
        assert_eq!(l[1], "1", "{who:?}: {o:?}");
        // Only the agent, the shell and its two children (ls, grep).
        let n: u32 = l[2].parse().unwrap();
        assert!(n <= 5, "{who:?}: host processes visible: {n}");
        // And the agent is airlock, not something we exec'd.
        let host_pid = std::process::id();
        let o = sh(
            who,
            &[],
            &format!("test -e /proc/{host_pid}/status && echo visible || echo hidden"),
        )
        .unwrap();
        if host_pid > 5 {
            assert_eq!(o.lines(), ["hidden"], "{who:?}");
        }
    });
}

/// The agent reaps orphaned zombies: a grandchild whose parent exits must
/// not stay a zombie.
#[test]
fn agent_reaps_zombies() {
    both(|who| {
        let Some(o) = sh(
            who,
            &[],
            "sh -c 'sleep 0.2 & exit 0'; sleep 0.6; grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l",
        ) else {
            return;
        };
        o.ok();
        assert_eq!(o.lines(), ["0"], "{who:?}: zombies left: {o:?}");
    });
}

/// NoNewPrivs 1, Seccomp 2 (filter), every capability set empty.
#[test]
fn no_new_privs_seccomp_and_no_capabilities() {
    both(|who| {
        for user in ["sandbox", "root"] {
            let Some(o) = sh(who, &["--user", user], "cat /proc/self/status") else {
                return;
            };
            o.ok();
            assert_eq!(status_field(&o.stdout, "NoNewPrivs"), "1", "{who:?} {user}");
            assert_eq!(status_field(&o.stdout, "Seccomp"), "2", "{who:?} {user}");
            for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                assert_eq!(
                    status_field(&o.stdout, cap),
                    "0000000000000000",
                    "{who:?} {user} {cap}"
                );
            }
        }
    });
}

/// The command runs as the unprivileged `sandbox` user by default; run by
/// root the sandbox is a subordinate host uid, never host root; rootless it
/// is the caller.
#[test]
fn users_inside_and_on_the_host() {
    both(|who| {
        let Some(o) = sh(
            who,
            &[],
            "id -u; id -un; echo $HOME $USER; cat /proc/self/uid_map",
        ) else {
            return;
        };
        o.ok();
        let l = o.lines();
        assert_eq!(l[0], "1000");
        assert_eq!(l[1], "sandbox");
        assert_eq!(l[2], "/home/sandbox sandbox");
    });
    // Seen from the host: the sleeping command's real uid.
    for who in [Who::Root, Who::User] {
        let Some(mut c) = airlock(who) else { continue };
        let marker = format!("sleep 5.{}{}", std::process::id(), who as u8);
        let mut child = c
            .args(["run", "--", "sh", "-c", &format!("exec {marker}")])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut host_uid = None;
        for _ in 0..200 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            if let Some(line) = host_processes_starting(&marker).into_iter().next() {
                let pid = line.split(':').next().unwrap();
                let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                host_uid = st
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| {
                        v.split_whitespace()
                            .next()
                            .map(|u| u.parse::<u32>().unwrap())
                    });
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let host_uid = host_uid.expect("sandboxed sleep not found on the host");
        match who {
            Who::Root => {
                // Inside the range /etc/subuid gives user "airlock".
                let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
                let (start, count) = subuid
                    .lines()
                    .find_map(|l| {
                        let mut f = l.split(':');
                        (f.next() == Some("airlock")).then(|| {
                            (
                                f.next().unwrap().parse::<u32>().unwrap(),
                                f.next().unwrap().parse::<u32>().unwrap(),
                            )
                        })
                    })
                    .expect("no airlock range in /etc/subuid");
                assert_ne!(host_uid, 0, "a root-run sandbox must not be host root");
                assert!(
                    (start..start + count).contains(&host_uid),
                    "expected a uid in airlock's subordinate range {start}+{count}, got {host_uid}"
                );
            }
            Who::User => {
                // The caller itself: the test user when we switched to it.
                let me = if is_root() {
                    test_user_ids().unwrap().0
                } else {
                    // SAFETY: getuid cannot fail.
                    unsafe { libc::getuid() }
                };
                assert_eq!(host_uid, me, "a rootless sandbox runs as its caller");
            }
        }
    }
}

/// Only `lo`, and it is up.
#[test]
fn network_is_loopback_only() {
    both(|who| {
        let Some(o) = sh(
            who,
            &[],
            "ls /sys/class/net 2>/dev/null; cat /proc/net/dev | tail -n +3 | cut -d: -f1",
        ) else {
            return;
        };
        o.ok();
        assert_eq!(o.lines(), ["lo"], "{who:?}: {o:?}");
        let o = py(
            who,
            &[],
            "s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); c=socket.create_connection(s.getsockname()); print('lo-ok')",
        )
        .unwrap();
        assert_eq!(o.lines(), ["lo-ok"], "{who:?}: {o:?}");
    });
}

/// `/`, `/usr` and `/etc` are read-only; `/tmp` and `$HOME` are writable.
#[test]
fn filesystem_read_only_except_scratch() {
    both(|who| {
        let Some(o) = py(
            who,
            &[],
            "for p in ['/usr/x', '/x', '/etc/x', '/bin/x']: print(p, try_(open, p, 'w'))\n\
             for p in ['/tmp/x', '/home/sandbox/x', '/dev/shm/x']: print(p, try_(open, p, 'w'))",
        ) else {
            return;
        };
        o.ok();
        let l = o.lines();
        assert_eq!(l[0], "/usr/x EROFS", "{who:?} {o:?}");
        assert_eq!(l[1], "/x EROFS");
        assert_eq!(l[2], "/etc/x EROFS");
        assert_eq!(l[3], "/bin/x EROFS");
        assert_eq!(
            &l[4..],
            ["/tmp/x OK", "/home/sandbox/x OK", "/dev/shm/x OK"]
        );
    });
}

/// The `host` image shows /usr and friends, a generated /etc, and none of
/// the host's users, homes, runtime dirs or keys.
#[test]
fn host_image_hides_the_host() {
    both(|who| {
        let Some(o) = sh(
            who,
            &[],
            "ls /; echo ---; cat /etc/passwd; echo ---; \
             for p in /root /home/airlock-test /var/lib /run /etc/shadow /etc/ssh /etc/sudoers /etc/subuid /sys; do \
               test -e $p && echo \"present $p\"; done; echo ---; ls /home",
        ) else {
            return;
        };
        o.ok();
        let parts: Vec<&str> = o.stdout.split("---\n").collect();
        let top: Vec<&str> = parts[0].lines().collect();
        for must in ["usr", "bin", "etc", "tmp", "proc", "dev", "home"] {
            assert!(top.contains(&must), "{who:?}: / lacks {must}: {top:?}");
        }
        for never in ["root", "run", "srv", "opt", "mnt", "boot", "work", "sys"] {
            assert!(!top.contains(&never), "{who:?}: / shows host's {never}");
        }
        let users: Vec<&str> = parts[1]
            .lines()
            .map(|l| l.split(':').next().unwrap())
            .collect();
        assert_eq!(users, ["root", "sandbox", "nobody"], "{who:?}");
        assert_eq!(
            parts[2].trim(),
            "",
            "{who:?}: host paths visible: {}",
            parts[2]
        );
        assert_eq!(parts[3].trim(), "sandbox");
    });
}

/// A secret in airlock's own environment is absent inside; only the base
/// variables and what --env names are there.
#[test]
fn environment_is_scrubbed() {
    both(|who| {
        let Some(mut c) = airlock_env(
            who,
            &[
                ("AWS_SECRET_ACCESS_KEY", "canary-secret-1"),
                ("GITHUB_TOKEN", "canary-secret-2"),
                ("PASSED", "yes"),
            ],
        ) else {
            return;
        };
        let o = c
            .args(["run", "--env", "PASSED", "--env", "EXTRA=1", "--", "env"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success());
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            !out.contains("canary-secret"),
            "{who:?}: secret leaked: {out}"
        );
        let mut keys: Vec<&str> = out.lines().map(|l| l.split('=').next().unwrap()).collect();
        keys.sort();
        let want = vec!["EXTRA", "HOME", "LANG", "PASSED", "PATH", "TERM", "USER"];
        assert_eq!(keys, want, "{who:?}: {out}");
    });
}

/// An fd open (without CLOEXEC) in airlock's process is closed inside.
#[test]
fn inherited_fds_are_closed() {
    both(|who| {
        let Some(mut c) = airlock(who) else { return };
        let f = std::fs::File::open("/etc/hostname").unwrap();
        let raw = f.as_raw_fd();
        // SAFETY: in the child between fork and exec: dup2 onto fd 9,
        // without CLOEXEC, so airlock inherits it.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(raw, 9) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let o = c
            .args([
                "run",
                "--",
                "sh",
                "-c",
                "ls /proc/self/fd; cat <&9 && echo READ-FD-9",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        drop(f);
        let out = String::from_utf8_lossy(&o.stdout);
        let fds: Vec<&str> = out.lines().filter(|l| l.parse::<u32>().is_ok()).collect();
        // 0, 1, 2 and the directory ls itself has open.
        assert!(fds.len() <= 4, "{who:?}: fds inside: {fds:?}");
        assert!(!fds.contains(&"9"), "{who:?}: fd 9 leaked");
        assert!(!out.contains("READ-FD-9"), "{who:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Bad file descriptor"),
            "{who:?}: {o:?}"
        );
    });
}

/// Overlay writes vanish; ro mounts refuse writes; rw writes reach the host.
#[test]
fn mount_modes() {
    both(|who| {
        // A project directory owned by an ordinary user (root-owned rw
        // mounts are deliberately not id-mapped; see root_owned_rw_mount).
        let Some((u, g)) = test_user_ids() else {
            skip("needs the test user");
            return;
        };
        let d = scratch(who);
        std::os::unix::fs::chown(d.path(), Some(u), Some(g)).unwrap();
        std::fs::write(d.path().join("f"), "orig\n").unwrap();
        std::os::unix::fs::chown(d.path().join("f"), Some(u), Some(g)).unwrap();
        let src = d.path().to_str().unwrap();
        // Overlay: changes visible inside, gone afterwards.
        let Some(o) = sh(
            who,
            &["--mount", &format!("{src}:/work:overlay")],
            "echo changed > /work/f && echo new > /work/n && mkdir /work/d && cat /work/f",
        ) else {
            return;
        };
        o.ok();
        assert_eq!(o.lines(), ["changed"]);
        assert_eq!(
            std::fs::read_to_string(d.path().join("f")).unwrap(),
            "orig\n"
        );
        assert!(!d.path().join("n").exists() && !d.path().join("d").exists());
        // ro (the default).
        let o = py(who, &["--mount", &format!("{src}:/work")], "print(try_(open, '/work/f', 'w'), try_(open, '/work/n', 'w'), open('/work/f').read().strip())")
            .unwrap();
        assert_eq!(o.lines(), ["EROFS EROFS orig"], "{who:?}: {o:?}");
        // rw: writes reach the host, owned by the directory's owner.
        let o = sh(
            who,
            &["--mount", &format!("{src}:/work:rw")],
            "echo out > /work/result && id -un",
        )
        .unwrap();
        o.ok();
        assert_eq!(
            std::fs::read_to_string(d.path().join("result")).unwrap(),
            "out\n"
        );
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(d.path().join("result")).unwrap();
        let dir_meta = std::fs::metadata(d.path()).unwrap();
        assert_eq!(meta.uid(), dir_meta.uid(), "{who:?}: created file owner");
    });
}

/// Run by root, a root-owned directory is not id-mapped: the sandbox user
/// cannot write there (so cannot leave a setuid-root file), nor read what
/// only root may.
#[test]
fn root_owned_rw_mount() {
    let d = tempdir::Dir::new();
    let src = d.path().to_str().unwrap();
    let Some(o) = py(
        Who::Root,
        &["--mount", &format!("{src}:/work:rw")],
        "print(try_(open, '/work/x', 'w'))",
    ) else {
        return;
    };
    assert_eq!(o.lines(), ["EACCES"], "{o:?}");
    assert!(
        o.stderr
            .contains("is owned by root, so it is not id-mapped"),
        "{o:?}"
    );
    std::fs::write(d.path().join("secret"), "s").unwrap();
    std::fs::set_permissions(
        d.path().join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    for mode in ["ro", "overlay", "rw"] {
        let o = py(
            Who::Root,
            &["--mount", &format!("{src}:/work:{mode}")],
            "print(try_(open, '/work/secret'))",
        )
        .unwrap();
        assert_eq!(o.lines(), ["EACCES"], "{mode}: {o:?}");
    }
    // A world-writable one is writable, and what is written is not root's.
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let o = py(
        Who::Root,
        &["--mount", &format!("{src}:/work:rw")],
        "open('/work/x','w').write('x'); os.chmod('/work/x', 0o4755); print('ok')",
    )
    .unwrap();
    assert_eq!(o.lines(), ["ok"], "{o:?}");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(d.path().join("x")).unwrap();
    assert_ne!(
        m.uid(),
        0,
        "a file the sandbox created is owned by host root"
    );
}

/// Nothing written outside rw mounts reaches the host: the sandbox's /tmp
/// is its own.
#[test]
fn writes_do_not_reach_the_host() {
    both(|who| {
        let name = format!("airlock-leak-probe-{}-{who:?}", std::process::id());
        let Some(o) = sh(
            who,
            &[],
            &format!("echo x > /tmp/{name} && echo x > $HOME/{name} && echo ok"),
        ) else {
            return;
        };
        o.ok();
        assert!(!std::path::Path::new("/tmp").join(&name).exists());
        assert!(!std::path::Path::new("/home/sandbox").exists());
        // And the next sandbox starts clean.
        let o = sh(
            who,
            &[],
            &format!("test -e /tmp/{name} && echo leaked || echo clean"),
        )
        .unwrap();
        assert_eq!(o.lines(), ["clean"]);
    });
}

/// Hostname, workdir and user flags.
#[test]
fn hostname_workdir_user() {
    both(|who| {
        let Some(o) = sh(
            who,
            &[
                "--hostname",
                "box-1",
                "--workdir",
                "/work/sub",
                "--user",
                "4242:4343",
            ],
            "hostname; pwd; id -u; id -g; touch x && echo writable",
        ) else {
            return;
        };
        o.ok();
        assert_eq!(
            o.lines(),
            ["box-1", "/work/sub", "4242", "4343", "writable"],
            "{who:?}: {o:?}"
        );
        let o = sh(who, &["--user", "root"], "id -u; echo $HOME").unwrap();
        assert_eq!(o.lines(), ["0", "/root"]);
    });
}

/// The agent dies with airlock, and so does everything in the sandbox.
#[test]
fn sigkill_of_airlock_kills_the_sandbox() {
    both(|who| {
        let Some(mut c) = airlock(who) else { return };
        let marker = format!("sleep 60.{}{}", std::process::id(), who as u8);
        let mut child = c
            .args([
                "run",
                "--timeout",
                "20s",
                "--",
                "sh",
                "-c",
                &format!("{marker} & exec {marker}"),
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut seen = false;
        for _ in 0..300 {
            if host_processes_starting(&marker).len() >= 2 {
                seen = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(seen, "{who:?}: sandbox never started");
        // SIGKILL airlock itself (for the rootless case, setpriv exec'd it,
        // so the child pid is airlock).
        let _ = child.kill();
        let _ = child.wait();
        let t = std::time::Instant::now();
        while !host_processes_starting(&marker).is_empty() {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(5),
                "{who:?}: sandbox processes survived airlock's SIGKILL for 5s: {:?}",
                host_processes_starting(&marker)
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
}

/// stdin is forwarded; stdout and stderr stay separate.
#[test]
fn stdio_forwarding() {
    both(|who| {
        let Some(mut c) = airlock(who) else { return };
        use std::io::Write;
        let mut child = c
            .args(["run", "--", "sh", "-c", "tr a-z A-Z; echo to-err >&2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"hello stdin\n")
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "HELLO STDIN\n",
            "{who:?}"
        );
        assert_eq!(String::from_utf8_lossy(&o.stderr), "to-err\n", "{who:?}");
    });
}

/// Real toolchains run: python with threads and subprocesses, a C compiler.
#[test]
fn toolchains_run() {
    both(|who| {
        let Some(o) = py(
            who,
            &[],
            "import threading, subprocess, tempfile\n\
             t=threading.Thread(target=lambda: None); t.start(); t.join()\n\
             print(subprocess.run(['echo','sub'],capture_output=True,text=True).stdout.strip())\n\
             open('/tmp/t.c','w').write('int main(){return 7;}')\n\
             subprocess.run(['cc','-o','/tmp/t','/tmp/t.c'],check=True)\n\
             print(subprocess.run(['/tmp/t']).returncode)",
        ) else {
            return;
        };
        assert_eq!(o.lines(), ["sub", "7"], "{who:?}: {o:?}");
    });
}

/// With -t the command has a terminal.
#[test]
fn tty_flag_gives_a_terminal() {
    both(|who| {
        let Some(o) = sh(
            who,
            &["-t"],
            "test -t 0 && test -t 1 && echo tty; stty size >/dev/null && echo sized",
        ) else {
            return;
        };
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        assert!(o.stdout.contains("tty"), "{who:?}: {o:?}");
        let o = sh(who, &[], "test -t 1 && echo tty || echo notty").unwrap();
        assert_eq!(o.lines(), ["notty"]);
    });
}

/// PID 1's command line shows the agent, not airlock's host command line
/// (which carries --env values and host paths).
#[test]
fn agent_cmdline_hides_the_host_command_line() {
    both(|who| {
        let Some(o) = sh(
            who,
            &["--env", "TOKEN=canary-in-argv", "--hostname", "canary-host"],
            "tr '\\0' '\\n' < /proc/1/cmdline | grep -v '^$'",
        ) else {
            return;
        };
        o.ok();
        assert_eq!(o.lines(), ["airlock-agent"], "{who:?}: {o:?}");
    });
}

/// Landlock is in force, not just the read-only mounts: raising one's own
/// oom_score_adj is allowed to any unprivileged process (the local tier
/// shows it), so only Landlock's read-only rule on /proc refuses it.
#[test]
fn landlock_is_enforced() {
    both(|who| {
        let code = "print(try_(lambda: open('/proc/self/oom_score_adj','w').write('500')))";
        let Some(o) = py(who, &["--isolation", "none"], code) else {
            return;
        };
        assert_eq!(
            o.lines(),
            ["OK"],
            "{who:?}: the control must succeed: {o:?}"
        );
        let o = py(who, &[], code).unwrap();
        assert_eq!(o.lines(), ["EACCES"], "{who:?}: {o:?}");
    });
}

/// A working directory inside /tmp or $HOME is created, owned by the user.
#[test]
fn workdir_is_created_in_writable_places() {
    both(|who| {
        for wd in ["/tmp/build/x", "/home/sandbox/proj"] {
            let Some(o) = sh(who, &["--workdir", wd], "pwd; touch f && stat -c %U . ..") else {
                return;
            };
            o.ok();
            assert_eq!(o.lines()[0], wd, "{who:?}");
            assert_eq!(o.lines()[1], "sandbox", "{who:?} {wd}: {o:?}");
        }
    });
}

/// A stopped agent still dies with airlock: only the parent-death signal can
/// reach it (it cannot read its channel's hang-up while stopped). Run by
/// root, the credential change during set-up used to clear that signal.
#[test]
fn stopped_agent_dies_with_airlock() {
    both(|who| {
        let Some(mut c) = airlock(who) else { return };
        let marker = format!("sleep 61.{}{}", std::process::id(), who as u8);
        let mut child = c
            .args([
                "run",
                "--timeout",
                "20s",
                "--",
                "sh",
                "-c",
                &format!("exec {marker}"),
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // setpriv (rootless) execs airlock: the child's pid is airlock's.
        let airlock_pid = child.id().to_string();
        let mut agent = None;
        for _ in 0..300 {
            if !host_processes_starting(&marker).is_empty() {
                agent = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
                    let st = std::fs::read_to_string(e.path().join("status")).ok()?;
                    let ppid = st
                        .lines()
                        .find_map(|l| l.strip_prefix("PPid:"))?
                        .trim()
                        .to_string();
                    (ppid == airlock_pid)
                        .then(|| e.file_name().to_string_lossy().parse::<i32>().ok())?
                });
                if agent.is_some() {
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let agent = agent.expect("agent not found");
        // SAFETY: signals processes this test started.
        unsafe { libc::kill(agent, libc::SIGSTOP) };
        let _ = child.kill();
        let _ = child.wait();
        let t = std::time::Instant::now();
        loop {
            let state = std::fs::read_to_string(format!("/proc/{agent}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("State:"))
                        .map(String::from)
                });
            let dead = state.as_deref().is_none_or(|s| s.contains("Z"));
            if dead && host_processes_starting(&marker).is_empty() {
                break;
            }
            if t.elapsed() > std::time::Duration::from_secs(5) {
                // SAFETY: clean up what this test started before failing.
                unsafe { libc::kill(agent, libc::SIGKILL) };
                panic!("{who:?}: stopped agent survived airlock's SIGKILL: {state:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
}

/// Run by root, a mounted directory's group is never lent to the sandbox:
/// a directory owned by a normal user but group root neither shows its
/// root-group files nor takes files (which would be group root, setgid
/// included); a directory of the owner's own group takes them, as the
/// owner's group.
#[test]
fn mount_group_is_the_owners_own_never_root() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let Some((u, g)) = test_user_ids() else {
        skip("needs the test user");
        return;
    };
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = tempdir::Dir::new();
    std::os::unix::fs::chown(d.path(), Some(u), Some(0)).unwrap();
    std::fs::write(d.path().join("secret"), "root-group secret\n").unwrap();
    std::fs::set_permissions(
        d.path().join("secret"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let src = d.path().to_str().unwrap();
    let o = py(
        Who::Root,
        &["--mount", &format!("{src}:/w:rw")],
        "print(try_(open, '/w/secret'), try_(open, '/w/new', 'w'))",
    )
    .unwrap();
    assert_eq!(o.lines(), ["EACCES EACCES"], "{o:?}");
    assert!(!d.path().join("new").exists());
    std::os::unix::fs::chown(d.path(), Some(u), Some(g)).unwrap();
    let o = py(
        Who::Root,
        &["--mount", &format!("{src}:/w:rw")],
        "open('/w/new','w').write('x'); os.chmod('/w/new', 0o2755); print(try_(open, '/w/secret'))",
    )
    .unwrap();
    assert_eq!(o.lines(), ["EACCES"], "{o:?}");
    let m = std::fs::metadata(d.path().join("new")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (u, g),
        "created file's owner on the host"
    );
    assert_ne!(m.gid(), 0);
}
