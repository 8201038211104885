//! Exhaustion: each attack is contained, the exit code is right, and airlock
//! and the host stay responsive.

mod common;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The host still answers: a fresh sandbox runs promptly.
#[track_caller]
fn host_responsive(who: Who) {
    let t = Instant::now();
    let o = sh(who, &[], "echo alive").unwrap();
    assert_eq!(o.lines(), ["alive"]);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "host sluggish: {:?}",
        t.elapsed()
    );
}

/// A fork bomb under --pids stops at the limit: a monitor started before
/// it counts the sandbox's tasks and never sees more than the limit, the
/// bomb's forks fail (EAGAIN), the run ends at its timeout with everything
/// killed, and the host stays responsive. Without the limit the count
/// passes 64 within the first second (the default task cap is higher).
#[test]
fn fork_bomb_is_contained() {
    both(|who| {
        let t = Instant::now();
        let Some(o) = py(
            who,
            &["--pids", "64", "--timeout", "4s"],
            concat!(
                "import subprocess,time\n",
                "p=subprocess.Popen(['sh','-c','bomb() { bomb | bomb & }; bomb; sleep 30'])\n",
                "def tasks(d):\n",
                "    try: return len(os.listdir(f'/proc/{d}/task'))\n",
                "    except OSError: return 0\n",
                "most=0\n",
                "end=time.time()+2.5\n",
                "while time.time()<end:\n",
                "    most=max(most,sum(tasks(d) for d in os.listdir('/proc') if d.isdigit()))\n",
                "print('most', most, flush=True)\n",
                "time.sleep(30)\n",
            ),
        ) else {
            return;
        };
        assert_eq!(o.code, 124, "{who:?}: {o:?}");
        let most: u32 = o
            .lines()
            .iter()
            .find_map(|l| l.strip_prefix("most "))
            .unwrap_or_else(|| panic!("{who:?}: no count: {o:?}"))
            .parse()
            .unwrap();
        assert!(most <= 64, "{who:?}: {most} tasks under --pids 64");
        assert!(
            most >= 40,
            "{who:?}: the bomb never got going ({most} tasks)"
        );
        assert!(
            o.stderr.contains("Cannot fork")
                || o.stderr.contains("Resource temporarily unavailable"),
            "{who:?}: no fork failed: {}",
            o.stderr
        );
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{who:?}: took {:?}",
            t.elapsed()
        );
        host_responsive(who);
    });
}

/// The number of tasks really stops at --pids.
#[test]
fn pids_limit_is_exact() {
    both(|who| {
        let Some(o) = py(
            who,
            &["--pids", "20"],
            "kids=[]\nerr='none'\nfor i in range(100):\n  try:\n    pid=os.fork()\n  except OSError as e:\n    err=en(e.errno); break\n  if pid==0:\n    import time; time.sleep(5); os._exit(0)\n  kids.append(pid)\nprint(len(kids), err)",
        ) else {
            return;
        };
        let l = o.lines();
        let parts: Vec<&str> = l[0].split(' ').collect();
        let n: u32 = parts[0].parse().unwrap();
        assert!(
            (15..20).contains(&n),
            "{who:?}: forked {n} under --pids 20: {o:?}"
        );
        assert_eq!(parts[1], "EAGAIN", "{who:?}");
    });
}

/// A memory balloon past --memory is killed (cgroup OOM as root: 137; the
/// rlimit fallback rootless: the allocation fails).
#[test]
fn memory_balloon_is_contained() {
    both(|who| {
        let d = scratch(who);
        let j = d.path().join("r.json");
        let Some(o) = py(
            who,
            &["--memory", "128M", "--json", j.to_str().unwrap()],
            "b=[]\ntry:\n  for i in range(64): b.append(bytearray(16<<20))\n  print('ALLOCATED-1G')\nexcept MemoryError:\n  print('MemoryError'); sys.exit(3)",
        ) else {
            return;
        };
        assert!(!o.stdout.contains("ALLOCATED-1G"), "{who:?}: {o:?}");
        match who {
            Who::Root => {
                assert_eq!(o.code, 137, "{who:?}: {o:?}");
                let json = std::fs::read_to_string(&j).unwrap();
                assert!(json.contains("\"oom_killed\": true"), "{json}");
                assert!(o.stderr.contains("ran out of memory"), "{o:?}");
            }
            Who::User => {
                // Rootless without a delegated cgroup: RLIMIT_DATA.
                assert!(o.code == 3 || o.code == 137, "{who:?}: {o:?}");
                if o.code == 3 {
                    assert!(
                        o.stderr.contains("RLIMIT_DATA"),
                        "the fallback is announced: {o:?}"
                    );
                }
            }
        }
        host_responsive(who);
    });
}

/// Peak memory is reported in --json.
#[test]
fn json_reports_peak_memory_and_status() {
    both(|who| {
        let d = scratch(who);
        let j = d.path().join("r.json");
        let Some(o) = py(
            who,
            &["--memory", "512M", "--json", j.to_str().unwrap()],
            "b=bytearray(64<<20)\nfor i in range(0,len(b),4096): b[i]=1\nsys.exit(5)",
        ) else {
            return;
        };
        assert_eq!(o.code, 5, "{who:?}: {o:?}");
        let text = std::fs::read_to_string(&j).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["exit_code"], 5);
        assert_eq!(v["status"], 5);
        assert_eq!(v["timed_out"], false);
        assert_eq!(v["isolation"], "container");
        let peak = v["peak_memory_bytes"].as_u64().unwrap();
        assert!(peak >= 64 << 20, "{who:?}: peak {peak}");
        assert!(peak < 512 << 20, "{who:?}: peak {peak}");
        assert!(v["duration_ms"].as_u64().unwrap() > 0);
    });
}

/// Filling --disk ends with ENOSPC inside; the host's disk is untouched.
#[test]
fn disk_fill_is_contained() {
    both(|who| {
        let Some(o) = py(
            who,
            &["--disk", "32M"],
            "n=0\nerr='none'\ntry:\n  with open('/tmp/fill','wb') as f:\n    while True:\n      f.write(b'x'*(1<<20)); f.flush(); n+=1\nexcept OSError as e:\n  err=en(e.errno)\nprint(n, err)\n\
             print(try_(lambda: open(os.path.expanduser('~/more'),'wb').write(b'x'*(1<<20))))",
        ) else {
            return;
        };
        let l = o.lines();
        let parts: Vec<&str> = l[0].split(' ').collect();
        let n: u32 = parts[0].parse().unwrap();
        assert!(n <= 32, "{who:?}: wrote {n} MiB into a 32M disk");
        assert_eq!(parts[1], "ENOSPC", "{who:?}: {o:?}");
        // $HOME shares the same cap.
        assert_eq!(l[1], "ENOSPC", "{who:?}: {o:?}");
        host_responsive(who);
    });
}

/// A 1 GiB output flood: airlock drains it, keeps only --output-limit, says
/// so once, and reports the truncation in --json.
#[test]
fn output_flood_is_capped() {
    both(|who| {
        let d = scratch(who);
        let j = d.path().join("r.json");
        let t = Instant::now();
        let Some(mut c) = airlock(who) else { return };
        let o = c
            .args([
                "run",
                "--output-limit",
                "1M",
                "--json",
                j.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                "head -c 1073741824 /dev/zero; echo done >&2",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{who:?}");
        assert_eq!(
            o.stdout.len(),
            1 << 20,
            "{who:?}: kept {} bytes",
            o.stdout.len()
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.matches("output limit").count(), 1, "{who:?}: {err}");
        assert!(
            !err.contains("done"),
            "stderr past the limit is dropped too: {err}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
        assert_eq!(v["stdout_truncated"], true);
        assert_eq!(v["stdout_bytes"], 1u64 << 30);
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{who:?}: {:?}",
            t.elapsed()
        );
        host_responsive(who);
    });
}

/// An endless loop under --timeout is killed with every process, exit 124.
#[test]
fn endless_loop_times_out() {
    both(|who| {
        let marker = format!("sleep 99.{}{}", std::process::id(), who as u8);
        let t = Instant::now();
        let Some(o) = sh(
            who,
            &["--timeout", "1500ms"],
            &format!("{marker} & while :; do :; done"),
        ) else {
            return;
        };
        let el = t.elapsed();
        assert_eq!(o.code, 124, "{who:?}: {o:?}");
        assert!(o.stderr.contains("timed out after 1500ms"), "{o:?}");
        assert!(
            el >= Duration::from_millis(1400) && el < Duration::from_secs(4),
            "{who:?}: {el:?}"
        );
        assert!(
            host_processes_starting(&marker).is_empty(),
            "{who:?}: background process survived"
        );
    });
}

/// Whether this host gives root a cgroup cpu controller (v1, or v2 with
/// `cpu` enabled).
fn cpu_controller() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists()
        || [
            "/sys/fs/cgroup/cgroup.controllers",
            "/sys/fs/cgroup/unified/cgroup.controllers",
        ]
        .iter()
        .any(|p| std::fs::read_to_string(p).is_ok_and(|c| c.split_whitespace().any(|w| w == "cpu")))
}

/// --cpus caps CPU time where a cpu controller exists; where none does the
/// run says so, and its CPU time shows the note is true.
#[test]
fn cpu_limit() {
    both(|who| {
        // CPU time of a 2 s busy loop (wall clock) under 0.2 CPUs.
        let Some(o) = py(
            who,
            &["--cpus", "0.2"],
            "import time\nt=time.time()\nwhile time.time()-t<2.0: pass\nprint(round(time.process_time(),2))",
        ) else {
            return;
        };
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        let cpu: f64 = o.lines()[0].parse().unwrap();
        let noted = o.stderr.contains("--cpus is NOT enforced");
        if who == Who::Root && cpu_controller() {
            assert!(!noted, "{who:?}: {o:?}");
            assert!(
                cpu < 0.8,
                "{who:?}: a 0.2-CPU sandbox used {cpu}s of CPU in 2s"
            );
            assert!(cpu > 0.1, "{who:?}: the loop never ran ({cpu}s)");
        } else if noted {
            // Not enforced, and said so: the loop had the CPU.
            assert!(cpu > 1.0, "{who:?}: noted as unenforced but used {cpu}s");
        } else {
            assert!(
                cpu < 0.8,
                "{who:?}: not limited ({cpu}s) and no note: {o:?}"
            );
        }
    });
}

/// Cgroups made for a run are removed afterwards, and stale ones left by a
/// killed airlock are removed by the next run.
#[test]
fn cgroups_cleaned_up() {
    if !is_root() {
        skip("needs root for cgroups");
        return;
    }
    let parents = [
        "/sys/fs/cgroup/memory/airlock",
        "/sys/fs/cgroup/pids/airlock",
        "/sys/fs/cgroup/airlock",
    ];
    // The first run creates the parents where this host has them.
    sh(Who::Root, &["--memory", "64M", "--pids", "50"], "true")
        .unwrap()
        .ok();
    let parent = parents
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a limited run made no airlock cgroup parent");
    // A stale group, as a SIGKILLed airlock would leave.
    let stale = std::path::Path::new(parent).join("airlock-999999999-00000000deadbeef");
    std::fs::create_dir_all(&stale).unwrap();
    let o = sh(
        Who::Root,
        &["--memory", "64M", "--pids", "50"],
        "cat /proc/self/cgroup",
    )
    .unwrap();
    o.ok();
    assert!(!stale.exists(), "stale cgroup not reaped");
    // The sandbox sees its own cgroup namespace root.
    assert!(o.lines().iter().any(|l| l.ends_with(":/")), "{o:?}");
    for p in parents {
        if let Ok(rd) = std::fs::read_dir(p) {
            let dead: Vec<_> = rd
                .flatten()
                .filter(|e| e.path().is_dir())
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let pid = n.split('-').nth(1).unwrap_or("").to_string();
                    !std::path::Path::new("/proc").join(pid).exists()
                })
                .collect();
            assert!(dead.is_empty(), "leftover groups in {p}: {dead:?}");
        }
    }
}

/// Everything in the sandbox ends with the command (promptly: the bound is
/// generous for a busy 2-core machine).
#[test]
fn background_processes_die_with_the_command() {
    both(|who| {
        let marker = format!("sleep 98.{}{}", std::process::id(), who as u8);
        let Some(o) = sh(who, &[], &format!("{marker} & {marker} & echo started")) else {
            return;
        };
        assert_eq!(o.lines(), ["started"]);
        let t = Instant::now();
        while !host_processes_starting(&marker).is_empty() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{who:?}: survived the command"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

/// Signals sent to airlock reach the command (exit 128+N).
#[test]
fn signals_are_forwarded() {
    both(|who| {
        let Some(mut c) = airlock(who) else { return };
        let mut child = c
            .args([
                "run",
                "--timeout",
                "20s",
                "--",
                "sh",
                "-c",
                "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::{BufRead, BufReader};
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        // SAFETY: signals our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let mut rest = String::new();
        out.read_line(&mut rest).unwrap();
        let st = child.wait().unwrap();
        assert_eq!(rest.trim(), "got-term", "{who:?}");
        assert_eq!(st.code(), Some(42), "{who:?}");
    });
}

/// A signal that arrives while the sandbox is still starting is delivered,
/// not dropped (the command must not outlive it until the timeout).
#[test]
fn early_signals_are_not_dropped() {
    both(|who| {
        for delay_ms in [0u64, 2, 5, 10, 20] {
            let Some(mut c) = airlock(who) else { return };
            let t = Instant::now();
            let mut child = c
                .args(["run", "--timeout", "30s", "--", "sleep", "30"])
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay_ms));
            // SAFETY: signals our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let st = child.wait().unwrap();
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{who:?} +{delay_ms}ms: signal lost"
            );
            // 143 once airlock runs; a signal that lands before the spawned
            // process has become airlock (setpriv, for the rootless case,
            // execs it) kills that process directly. Either way: ended by
            // SIGTERM, promptly.
            use std::os::unix::process::ExitStatusExt;
            assert!(
                st.code() == Some(128 + 15) || st.signal() == Some(libc::SIGTERM),
                "{who:?} +{delay_ms}ms: {st:?}"
            );
        }
    });
}

/// A reader that stops reading airlock's output does not suspend the
/// timeout (nor signal forwarding): output waits, the clock does not.
#[test]
fn timeout_holds_while_our_reader_stalls() {
    both(|who| {
        let Some(mut c) = airlock(who) else { return };
        let t = Instant::now();
        let mut child = c
            .args([
                "run",
                "--timeout",
                "1500ms",
                "--",
                "sh",
                "-c",
                "while :; do head -c 65536 /dev/zero; done",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Never read stdout: its pipe fills up at once.
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{who:?}: the timeout never fired"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(st.code(), Some(124), "{who:?}");
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "{who:?}: {:?}",
            t.elapsed()
        );
    });
}
