//! The command line: bad input gets one clear line and exit 125 and creates
//! nothing; exit codes follow DESIGN.md; doctor and the local tier work.

mod common;
use common::*;

/// Everything airlock might leave behind on the host: its cgroups (v1
/// controllers and the v2 hierarchies), and orphaned agents (an agent whose
/// airlock is gone has been reparented to init).
fn host_traces() -> Vec<String> {
    let mut v = Vec::new();
    let mut parents = vec![
        "/sys/fs/cgroup/airlock".to_string(),
        "/sys/fs/cgroup/unified/airlock".to_string(),
    ];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            parents.push(e.path().join("airlock").display().to_string());
        }
    }
    for p in parents {
        if let Ok(rd) = std::fs::read_dir(&p) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    v.push(e.path().display().to_string());
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // "PID (comm) STATE PPID ..."
            if let Some((_, rest)) = stat.split_once("(airlock-agent) ") {
                if rest.split_whitespace().nth(1) == Some("1") {
                    v.push(format!(
                        "orphaned agent {}",
                        e.file_name().to_string_lossy()
                    ));
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

#[track_caller]
fn bad(args: &[&str], expect: &str) {
    let before = host_traces();
    let Some(o) = run(Who::Root, args).or_else(|| run(Who::User, args)) else {
        return;
    };
    assert_eq!(o.code, 125, "{args:?}: {o:?}");
    assert_eq!(o.stdout, "", "{args:?}");
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {}", o.stderr);
    assert!(lines[0].starts_with("airlock: "), "{args:?}: {}", lines[0]);
    assert!(
        lines[0].to_lowercase().contains(&expect.to_lowercase()),
        "{args:?}: expected {expect:?} in {}",
        lines[0]
    );
    // Nothing was left behind. (Agents of other tests' sandboxes may be
    // seen in their last milliseconds, reparented while they tear down: a
    // trace must last to count.)
    let end = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let after = host_traces();
        let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
        if new.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < end, "{args:?} left {new:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn bad_input_is_one_line_and_exit_125() {
    bad(&["run", "--frobnicate", "--", "true"], "--frobnicate");
    bad(&["frobnicate"], "frobnicate");
    bad(&["run", "--memory", "12X", "--", "true"], "invalid size");
    bad(&["run", "--memory", "-1G", "--", "true"], "-1");
    bad(&["run", "--disk", "0", "--", "true"], "size");
    bad(&["run", "--output-limit", "lots", "--", "true"], "size");
    bad(&["run", "--timeout", "5 minutes", "--", "true"], "duration");
    bad(&["run", "--timeout", "0s", "--", "true"], "duration");
    bad(&["run", "--timeout", "-5s", "--", "true"], "-5");
    bad(&["run", "--pids", "0", "--", "true"], "pids");
    bad(&["run", "--pids", "many", "--", "true"], "pids");
    bad(&["run", "--cpus", "0", "--", "true"], "cpus");
    bad(&["run", "--cpus", "NaN", "--", "true"], "cpus");
    bad(&["run"], "no command");
    bad(&["run", "--"], "no command");
    bad(
        &[
            "run",
            "--mount",
            "/nonexistent-airlock-src:/work",
            "--",
            "true",
        ],
        "does not exist",
    );
    bad(&["run", "--mount", "/tmp:/proc/x", "--", "true"], "/proc");
    bad(
        &["run", "--mount", "/tmp:/work/../etc", "--", "true"],
        "'..'",
    );
    bad(&["run", "--mount", "/tmp:work", "--", "true"], "absolute");
    bad(&["run", "--mount", "/tmp:/work:rwx", "--", "true"], "mode");
    bad(&["run", "--mount", "/tmp", "--", "true"], "SRC:DST");
    bad(
        &[
            "run", "--mount", "/tmp:/w", "--mount", "/usr:/w", "--", "true",
        ],
        "same target",
    );
    bad(&["run", "--env", "1BAD=x", "--", "true"], "--env");
    bad(&["run", "--env", "=x", "--", "true"], "--env");
    bad(&["run", "--user", "bob", "--", "true"], "--user");
    bad(&["run", "--user", "99999", "--", "true"], "65536");
    bad(&["run", "--hostname", "bad host", "--", "true"], "hostname");
    bad(&["run", "--workdir", "relative", "--", "true"], "workdir");
    bad(&["run", "--isolation", "vm", "--", "true"], "vm");
    // The microVM tier refuses rw mounts, with a message.
    bad(
        &[
            "run",
            "--isolation",
            "microvm",
            "-v",
            "/tmp:/w:rw",
            "--",
            "true",
        ],
        "microVM",
    );
    bad(
        &[
            "run",
            "--isolation",
            "none",
            "--mount",
            "/tmp:/w",
            "--",
            "true",
        ],
        "--mount",
    );
    bad(
        &["run", "--json", "/nonexistent-dir/r.json", "--", "true"],
        "does not exist",
    );
    bad(
        &["run", "--isolation", "none", "--user", "root", "--", "true"],
        "--user",
    );
    bad(
        &[
            "run",
            "--isolation",
            "none",
            "--hostname",
            "h",
            "--",
            "true",
        ],
        "--hostname",
    );
}

#[test]
fn exit_codes() {
    both(|who| {
        let Some(o) = sh(who, &[], "exit 7") else {
            return;
        };
        assert_eq!(o.code, 7);
        let o = sh(who, &[], "kill -TERM $$").unwrap();
        assert_eq!(o.code, 128 + 15);
        let o = run(who, &["run", "--", "no-such-command-xyz"]).unwrap();
        assert_eq!(o.code, 127, "{o:?}");
        assert!(o.stderr.contains("no-such-command-xyz"), "{o:?}");
        let o = run(who, &["run", "--", "/etc/hostname"]).unwrap();
        assert_eq!(o.code, 126, "{o:?}");
        let o = run(who, &["run", "--timeout", "300ms", "--", "sleep", "5"]).unwrap();
        assert_eq!(o.code, 124);
        // A missing working directory under a read-only image path fails
        // cleanly as airlock's own error.
        let o = run(who, &["run", "--workdir", "/usr/no-such-dir", "--", "true"]).unwrap();
        assert_eq!(o.code, 125, "{o:?}");
        assert!(o.stderr.contains("/usr/no-such-dir"), "{o:?}");
    });
}

/// --json cannot be turned against the host: a symlink the sandbox plants
/// where the result goes is not followed.
#[test]
fn json_does_not_follow_planted_symlinks() {
    both(|who| {
        let Some((u, g)) = test_user_ids() else {
            skip("needs the test user");
            return;
        };
        let d = scratch(who);
        std::os::unix::fs::chown(d.path(), Some(u), Some(g)).unwrap();
        let victim = scratch(who);
        let v = victim.path().join("victim");
        std::fs::write(&v, "precious\n").unwrap();
        if who == Who::User {
            std::os::unix::fs::chown(&v, Some(u), Some(g)).unwrap();
        }
        let src = d.path().to_str().unwrap();
        let j = d.path().join("result.json");
        // The sandbox replaces the result file with a symlink to the victim.
        let script = format!("rm -f /w/result.json; ln -s {} /w/result.json", v.display());
        let Some(o) = sh(
            who,
            &[
                "--mount",
                &format!("{src}:/w:rw"),
                "--json",
                j.to_str().unwrap(),
            ],
            &script,
        ) else {
            return;
        };
        assert_eq!(
            std::fs::read_to_string(&v).unwrap(),
            "precious\n",
            "{who:?}: {o:?}"
        );
        // A symlink already there when airlock starts (left by an earlier
        // run) is refused outright.
        let _ = std::fs::remove_file(&j);
        std::os::unix::fs::symlink(&v, &j).unwrap();
        let o = run(who, &["run", "--json", j.to_str().unwrap(), "--", "true"]).unwrap();
        assert_eq!(o.code, 125, "{o:?}");
        assert!(o.stderr.contains("symlink"), "{o:?}");
        assert_eq!(std::fs::read_to_string(&v).unwrap(), "precious\n");
    });
}

/// --json records airlock's own failures too.
#[test]
fn json_on_airlock_failure() {
    both(|who| {
        let d = scratch(who);
        let j = d.path().join("r.json");
        let Some(o) = run(
            who,
            &[
                "run",
                "--json",
                j.to_str().unwrap(),
                "--workdir",
                "/usr/nope",
                "--",
                "true",
            ],
        ) else {
            return;
        };
        assert_eq!(o.code, 125);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
        assert_eq!(v["exit_code"], 125);
        assert!(v["error"].as_str().unwrap().contains("/usr/nope"), "{v}");
    });
}

#[test]
fn help_and_version_exit_0() {
    let Some(o) = run(Who::Root, &["--help"]).or_else(|| run(Who::User, &["--help"])) else {
        return;
    };
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("run"));
    let o = run(Who::Root, &["run", "--help"])
        .or_else(|| run(Who::User, &["run", "--help"]))
        .unwrap();
    for flag in [
        "--isolation",
        "--image",
        "--mount",
        "--workdir",
        "--env",
        "--timeout",
        "--memory",
        "--pids",
        "--cpus",
        "--disk",
        "--output-limit",
        "--hostname",
        "--user",
        "--json",
        "--tty",
    ] {
        assert!(o.stdout.contains(flag), "help lacks {flag}");
    }
    let o = run(Who::Root, &["--version"])
        .or_else(|| run(Who::User, &["--version"]))
        .unwrap();
    assert!(o.stdout.starts_with("airlock "));
}

#[test]
fn doctor_reports_each_feature() {
    both(|who| {
        let Some(o) = run(who, &["doctor"]) else {
            return;
        };
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        for what in [
            "user namespaces",
            "seccomp",
            "landlock",
            "cgroup v2",
            "cgroup v1",
            "limits",
            "kvm",
            "qemu",
        ] {
            assert!(
                o.stdout.lines().any(|l| l[5..].starts_with(what)),
                "{who:?}: no {what} line: {}",
                o.stdout
            );
        }
        assert!(o.stdout.contains("ABI"), "{}", o.stdout);
        assert!(o.stdout.contains("container tier: ready"));
        // Every failing line says how to fix it.
        for l in o.stdout.lines().filter(|l| l.starts_with("FAIL")) {
            assert!(l.contains("fix:"), "{l}");
        }
    });
}

/// The local tier: scrubbed environment, the host's filesystem, limits and
/// timeout.
#[test]
fn local_tier() {
    both(|who| {
        let Some(mut c) = airlock(who) else { return };
        let o = c
            .env("SECRET_TOKEN", "canary")
            .args([
                "run",
                "--isolation",
                "none",
                "--env",
                "A=1",
                "--",
                "sh",
                "-c",
                "env; test -e /etc/shadow && echo host-fs",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{who:?}: {o:?}");
        assert!(!out.contains("canary"), "{who:?}");
        assert!(out.contains("A=1"));
        assert!(out.contains("host-fs"), "the local tier sees the host");
        let o = run(
            who,
            &[
                "run",
                "--isolation",
                "none",
                "--timeout",
                "300ms",
                "--",
                "sh",
                "-c",
                "sleep 5 & sleep 5",
            ],
        )
        .unwrap();
        assert_eq!(o.code, 124);
        let o = run(who, &["run", "--trust", "own", "--", "sh", "-c", "exit 9"]).unwrap();
        assert_eq!(o.code, 9);
        let o = run(
            who,
            &["run", "--isolation", "none", "--", "no-such-command-xyz"],
        )
        .unwrap();
        assert_eq!(o.code, 127);
        // A grandchild that escaped the process group does not hold the run
        // open (nor is the command reported as timed out).
        let marker = format!("sleep 7.{}{}", std::process::id(), who as u8);
        let t = std::time::Instant::now();
        let o = sh(
            who,
            &["--isolation", "none", "--timeout", "5s"],
            &format!("setsid {marker} & echo started"),
        )
        .unwrap();
        assert_eq!((o.code, o.lines()), (0, vec!["started"]), "{who:?}: {o:?}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(3),
            "{who:?}: {:?}",
            t.elapsed()
        );
        for line in host_processes_starting(&marker) {
            let pid: i32 = line.split(':').next().unwrap().parse().unwrap();
            // SAFETY: kills the stray test process we just started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
}

/// The local tier's command is in its cgroups before it runs a single
/// instruction: nothing it starts early escapes the limits.
#[test]
fn local_tier_joins_cgroups_before_exec() {
    let Some(o) = sh(
        Who::Root,
        &["--isolation", "none", "--pids", "100", "--memory", "100M"],
        "cat /proc/self/cgroup",
    ) else {
        return;
    };
    o.ok();
    for ctl in ["pids", "memory"] {
        assert!(
            o.lines()
                .iter()
                .any(|l| l.contains(&format!(":{ctl}:/airlock/")) || l.starts_with("0::/airlock/")),
            "{ctl}: {o:?}"
        );
    }
    let o = py(
        Who::Root,
        &["--isolation", "none", "--memory", "50M"],
        "b=bytearray(400<<20)\nprint('allocated')",
    )
    .unwrap();
    assert!(!o.stdout.contains("allocated"), "{o:?}");
    assert_eq!(o.code, 137, "{o:?}");
}

/// Limits below what a sandbox needs, and a missing working directory in
/// the local tier, are airlock's own errors: one line, exit 125.
#[test]
fn too_small_limits_and_missing_local_workdir_are_airlock_errors() {
    bad(&["run", "--pids", "1", "--", "true"], "at least");
    bad(&["run", "--memory", "1", "--", "true"], "at least");
    bad(&["run", "--memory", "1M", "--", "true"], "at least");
    bad(&["run", "--disk", "64k", "--", "true"], "at least");
    bad(
        &[
            "run",
            "--isolation",
            "none",
            "--workdir",
            "/nonexistent-airlock-wd",
            "--",
            "true",
        ],
        "/nonexistent-airlock-wd",
    );
}

/// --json resolves its whole path safely: a directory an earlier sandbox
/// replaced by a symlink (through an rw mount) is refused, and a FIFO
/// planted where the result goes cannot hang airlock before the sandbox
/// exists (it is refused as not a regular file).
#[test]
fn json_refuses_symlinked_directories_and_fifos() {
    both(|who| {
        let Some((u, g)) = test_user_ids() else {
            skip("needs the test user");
            return;
        };
        let d = scratch(who);
        std::os::unix::fs::chown(d.path(), Some(u), Some(g)).unwrap();
        let victim = scratch(who);
        let v = victim.path().join("result.json");
        std::fs::write(&v, "precious\n").unwrap();
        let link = d.path().join("out");
        std::os::unix::fs::symlink(victim.path(), &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(u), Some(g)).unwrap();
        let j = link.join("result.json");
        let limit = std::time::Duration::from_secs(20);
        let Some((o, _)) = run_bounded(
            who,
            &["run", "--json", j.to_str().unwrap(), "--", "true"],
            limit,
        ) else {
            return;
        };
        assert_eq!(o.code, 125, "{who:?}: {o:?}");
        assert!(o.stderr.contains("symlink"), "{who:?}: {o:?}");
        assert_eq!(std::fs::read_to_string(&v).unwrap(), "precious\n");
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        // As a sandbox would have left it: the caller's, writable.
        std::os::unix::fs::chown(&fifo, Some(u), Some(g)).unwrap();
        std::fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let (o, took) = run_bounded(
            who,
            &["run", "--json", fifo.to_str().unwrap(), "--", "true"],
            limit,
        )
        .unwrap();
        assert!(
            took < std::time::Duration::from_secs(10),
            "{who:?}: hung {took:?}"
        );
        assert_eq!(o.code, 125, "{who:?}: {o:?}");
        assert!(o.stderr.contains("regular file"), "{who:?}: {o:?}");
    });
}

/// Root-run rw mounts are id-mapped for the owner and the owner's own
/// group only; files of another group cannot be written there (the kernel
/// says EOVERFLOW, "Value too large for defined data type"). airlock says
/// what happens and how to fix it before the command runs.
#[test]
fn rw_mount_with_foreign_group_files_is_explained() {
    let Some((u, g)) = test_user_ids() else {
        skip("needs the test user");
        return;
    };
    let d = scratch(Who::User);
    let f = d.path().join("f");
    std::fs::write(&f, "x\n").unwrap();
    std::os::unix::fs::chown(&f, Some(u), Some(0)).unwrap();
    let _ = g;
    let m = format!("{}:/w:rw", d.path().display());
    let Some(o) = sh(Who::Root, &["--mount", &m], "echo y >> /w/f") else {
        return;
    };
    assert!(o.stderr.contains("chgrp"), "{o:?}");
    assert!(o.stderr.contains("Value too large"), "{o:?}");
}
