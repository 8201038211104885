//! `airlock task`: a command runs on a copy-on-write copy of a repository;
//! its changes come back as a git patch that reproduces them exactly, and
//! the repository itself is never written. Root-run (a root-owned
//! repository) and rootless (the user's own).

mod common;

use common::{airlock, both, scratch, test_user_ids, Who};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

/// Every entry below `root` (without `.git`): type, the executable bit of
/// files, content or link target.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == ".git" {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let v = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(root, &p, out);
                "dir".to_string()
            } else {
                let data = std::fs::read(&p).unwrap();
                format!(
                    "file x={} {:?}",
                    m.permissions().mode() & 0o100 != 0,
                    String::from_utf8_lossy(&data)
                )
            };
            out.insert(rel, v);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Everything about every entry that a write of any kind would change.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                format!("{:?}", std::fs::read(&p).unwrap())
            } else if m.file_type().is_symlink() {
                std::fs::read_link(&p).unwrap().display().to_string()
            } else {
                stack.push(p.clone());
                String::new()
            };
            out.insert(
                p.display().to_string(),
                format!(
                    "ino={} mode={:o} uid={} gid={} size={} mtime={}.{} ctime={}.{} {content}",
                    m.ino(),
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.size(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec()
                ),
            );
        }
    }
    out
}

/// A fresh one-file repository (`a.txt` = "a") in `work`, with `patch`
/// applied by `git apply`, which must succeed.
fn apply_to_fresh(work: &Path, patch: &Path, text: &str) -> std::path::PathBuf {
    let fresh = work.join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::write(fresh.join("a.txt"), "a\n").unwrap();
    let st = Command::new("git")
        .args(["apply", patch.to_str().unwrap()])
        .current_dir(&fresh)
        .status()
        .unwrap();
    assert!(st.success(), "git apply failed: {text}");
    fresh
}

fn sh_host(dir: &Path, script: &str) {
    let st = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
}

/// A small repository with text, binary, executable, symlinked and
/// oddly named files, owned by `who`.
fn make_repo(who: Who, dir: &Path) {
    sh_host(
        dir,
        r#"set -e
git init -q .
printf 'one\ntwo\nthree\n' > edit.txt
printf 'gone soon\n' > delete-me.txt
printf 'a file that moves\nwith some lines\nto keep it similar\n' > rename-me.txt
printf '#!/bin/sh\necho hi\n' > script.sh
printf '\000\001\002\003binary\377\376' > blob.bin
printf 'mode goes\n' > was-exec.sh && chmod 755 was-exec.sh
mkdir -p sub/dir && printf 'nested\n' > sub/dir/keep.txt
printf 'quoted\n' > 'name with "quotes" and spaces.txt'
ln -s edit.txt link-old
ln -s sub link-dir
ln -s edit.txt link-to-file
printf 'becomes a link\n' > file-to-link
git add -A
git -c user.email=t@t -c user.name=t commit -qm base
"#,
    );
    if who == Who::User {
        let (u, g) = test_user_ids().unwrap();
        let st = Command::new("chown")
            .args(["-R", &format!("{u}:{g}"), dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

/// Every entry below `.` (without `.git`), one line each: its kind, and
/// for a file its executable bit and md5 — run in the sandbox and on the
/// patched copy alike.
const LISTING: &str = "find . -path ./.git -prune -o -print | sort | \
    while read f; do if [ -L \"$f\" ]; then echo \"L $f\"; \
    elif [ -f \"$f\" ]; then echo \"F $f $(test -x \"$f\" && echo x) \
    $(md5sum < \"$f\" | cut -c1-32)\"; else echo \"D $f\"; fi; done";

/// What the command does: every kind of change git can describe, and
/// writes outside the repository that must not reach the host.
const CHANGES: &str = r#"set -e
printf 'four\n' >> edit.txt
printf 'brand new\n' > created.txt
mkdir -p new/deeper && printf 'deep\n' > new/deeper/n.txt
rm delete-me.txt
mv rename-me.txt renamed.txt
chmod +x script.sh
chmod -x was-exec.sh
printf '\377\000new binary\001' > new.bin
printf '\000more' >> blob.bin
rm link-old && ln -s created.txt link-old
ln -s sub/dir/keep.txt link-new
rm link-to-file && printf 'now a file\n' > link-to-file
rm file-to-link && ln -s edit.txt file-to-link
printf 'no newline at end' > no-eol.txt
printf 'changed\n' > 'name with "quotes" and spaces.txt'
printf 'empty follows\n' > /dev/null && : > empty.txt
echo outside > /tmp/task-outside-$MARK
echo outside > "$HOME/task-outside-$MARK" 2>/dev/null || true
"#;

#[test]
fn patch_reproduces_every_change_and_the_repo_is_untouched() {
    both(|who| {
        let Some(mut cmd) = airlock(who) else { return };
        let work = scratch(who);
        let repo = work.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        make_repo(who, &repo);
        let before = snapshot(&repo);
        let patch = work.path().join("out.patch");
        let marker = format!("{}-{who:?}", std::process::id());
        let out = cmd
            .args(["task", "--repo", repo.to_str().unwrap(), "--patch"])
            .arg(&patch)
            .args(["--env", &format!("MARK={marker}"), "--"])
            .args(["sh", "-c", &format!("{CHANGES}\ncd /work && {LISTING}")])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{who:?}: {stderr}");
        assert!(
            stderr.contains("file(s) changed; patch written"),
            "{stderr}"
        );
        // The repository: every entry as it was, to the inode and ctime.
        assert_eq!(before, snapshot(&repo), "{who:?}: the repository changed");
        // Nothing written outside reached the host.
        assert!(!Path::new(&format!("/tmp/task-outside-{marker}")).exists());
        assert!(!Path::new(&format!("/root/task-outside-{marker}")).exists());

        // The patch on a fresh copy gives what the command left, exactly.
        let text = std::fs::read_to_string(&patch).unwrap();
        for needle in [
            "GIT binary patch",
            "rename from rename-me.txt",
            "rename to renamed.txt",
            "deleted file mode 100644",
            "new file mode 100644",
            "old mode 100644\nnew mode 100755",
            "old mode 100755\nnew mode 100644",
            "new file mode 120000",
            "\\ No newline at end of file",
        ] {
            assert!(text.contains(needle), "{who:?}: no {needle:?} in\n{text}");
        }
        let fresh = work.path().join("fresh");
        sh_host(
            work.path(),
            &format!(
                "cp -a {r} {f} && cd {f} && git apply --whitespace=nowarn {p}",
                r = repo.display(),
                f = fresh.display(),
                p = patch.display()
            ),
        );
        // What the sandbox saw at the end, as the command listed it ...
        let inside: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        // ... and the same listing of the patched copy.
        let listing = Command::new("sh")
            .args(["-c", LISTING])
            .current_dir(&fresh)
            .output()
            .unwrap();
        let host: Vec<String> = String::from_utf8_lossy(&listing.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(inside, host, "{who:?}: the patched copy differs");
        // Link targets too (the listing only names links).
        let t = tree(&fresh);
        assert_eq!(t["link-old"], "link created.txt");
        assert_eq!(t["link-new"], "link sub/dir/keep.txt");
        assert!(t["script.sh"].starts_with("file x=true"));
        assert!(t["was-exec.sh"].starts_with("file x=false"));
        assert!(!t.contains_key("delete-me.txt") && !t.contains_key("rename-me.txt"));
    });
}

/// A command that tries to destroy the repository changes nothing on the
/// host; its exit status is the task's; the patch says what it did.
#[test]
fn a_hostile_command_cannot_touch_the_repo() {
    both(|who| {
        let Some(mut cmd) = airlock(who) else { return };
        let work = scratch(who);
        let repo = work.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        make_repo(who, &repo);
        let before = snapshot(&repo);
        let patch = work.path().join("out.patch");
        let out = cmd
            .args(["task", "--repo", repo.to_str().unwrap(), "--patch"])
            .arg(&patch)
            .args([
                "--",
                "sh",
                "-c",
                "chmod -R 777 /work; rm -rf /work/* /work/.git; \
                 touch /work/.git 2>/dev/null; ln -sf /etc/shadow /work/edit.txt; \
                 mount -t tmpfs none /work 2>/dev/null; \
                 grep -c . /proc/self/mountinfo >/dev/null; exit 7",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "{who:?}: {stderr}");
        assert_eq!(before, snapshot(&repo), "{who:?}: the repository changed");
        let text = std::fs::read_to_string(&patch).unwrap();
        assert!(text.contains("deleted file mode"), "{text}");
        // The symlink to the host's shadow is only a link in the patch:
        // nothing of what it points at was read.
        assert!(text.contains("+/etc/shadow") || text.contains("new file mode 120000"));
        let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
        if let Some(line) = shadow.lines().find(|l| l.starts_with("root:")) {
            assert!(!text.contains(line), "the host's shadow is in the patch");
        }
    });
}

/// Errors are clear and nothing runs: no repository, no command.
#[test]
fn bad_input_is_refused_clearly() {
    let Some(mut cmd) = airlock(Who::Root) else {
        return;
    };
    let out = cmd
        .args(["task", "--repo", "/nonexistent-airlock-repo", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--repo /nonexistent-airlock-repo"), "{e}");
    let Some(mut cmd) = airlock(Who::Root) else {
        return;
    };
    let out = cmd
        .args(["task", "--repo", "/tmp", "--"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no command"));
}

/// A file the sandbox cannot read (another user's, mode 0600) makes the
/// task fail with its name: never a patch that calls it deleted, never
/// its content.
#[test]
fn an_unreadable_file_fails_the_task_by_name() {
    both(|who| {
        let Some(mut cmd) = airlock(who) else { return };
        let work = scratch(who);
        let repo = work.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        make_repo(who, &repo);
        let secret = repo.join("other-users-secret.txt");
        std::fs::write(&secret, "TOP-SECRET-CONTENT\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&secret, Some(4242), Some(4242)).unwrap();
        let patch = work.path().join("out.patch");
        let out = cmd
            .args([
                "task",
                "--quiet",
                "--repo",
                repo.to_str().unwrap(),
                "--patch",
            ])
            .arg(&patch)
            .args(["--", "sh", "-c", "echo more >> edit.txt"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{who:?}: {stderr}");
        assert!(
            stderr.contains("airlock: error:") && stderr.contains("other-users-secret.txt"),
            "{who:?}: {stderr}"
        );
        let text = std::fs::read_to_string(&patch).unwrap_or_default();
        assert!(!text.contains("deleted file"), "{text}");
        assert!(!text.contains("TOP-SECRET"), "{text}");
    });
}

/// What would exhaust the host while the patch is computed fails the task
/// instead: a sparse file far larger than the patch allows (a header and
/// a few blocks in the sandbox) is refused from its size.
#[test]
fn a_huge_sparse_file_fails_the_task_quickly() {
    let Some(mut cmd) = airlock(Who::Root) else {
        return;
    };
    let work = scratch(Who::Root);
    let repo = work.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("a.txt"), "a\n").unwrap();
    let patch = work.path().join("out.patch");
    let t = std::time::Instant::now();
    let out = cmd
        .args(["task", "--repo", repo.to_str().unwrap(), "--patch"])
        .arg(&patch)
        .args(["--", "truncate", "-s", "3G", "big"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("larger than the patch allows"), "{stderr}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        t.elapsed()
    );
}

/// A lone CR, and a directory with a file system mounted on it in the
/// repository: the patch still applies, and the mounted files (which the
/// sandbox's copy does not show) are not reported deleted.
#[test]
fn carriage_returns_and_submounts() {
    let Some(mut cmd) = airlock(Who::Root) else {
        return;
    };
    let work = scratch(Who::Root);
    let repo = work.path().join("repo");
    std::fs::create_dir_all(repo.join("m")).unwrap();
    std::fs::write(repo.join("a.txt"), "a\n").unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "airlock-task-test"])
        .arg(repo.join("m"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(repo.join("m/inner.txt"), "inner-secret\n").unwrap();
    let patch = work.path().join("out.patch");
    let out = cmd
        .args(["task", "--repo", repo.to_str().unwrap(), "--patch"])
        .arg(&patch)
        .args(["--", "sh", "-c", "printf 'a\\rb\\nc\\n' > cr.txt; ls m"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new("umount").arg(repo.join("m")).status();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let text = std::fs::read_to_string(&patch).unwrap();
    assert!(!text.contains("inner"), "{text}");
    let fresh = apply_to_fresh(work.path(), &patch, &text);
    assert_eq!(std::fs::read(fresh.join("cr.txt")).unwrap(), b"a\rb\nc\n");
}

/// A process that keeps writing while the tree is read cannot corrupt the
/// archive (each file goes as exactly the size it had when its header was
/// written): the task ends with a patch that applies.
#[test]
fn a_file_still_growing_while_the_tree_is_read() {
    let Some(mut cmd) = airlock(Who::Root) else {
        return;
    };
    let work = scratch(Who::Root);
    let repo = work.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("a.txt"), "a\n").unwrap();
    let patch = work.path().join("out.patch");
    let out = cmd
        .args(["task", "--repo", repo.to_str().unwrap(), "--patch"])
        .arg(&patch)
        .args([
            "--",
            "sh",
            "-c",
            "setsid sh -c 'while :; do echo growing >> grow.txt; done' </dev/null >/dev/null 2>&1 & \
             sleep 0.3; echo b > b.txt",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let fresh = apply_to_fresh(work.path(), &patch, "");
    assert_eq!(std::fs::read(fresh.join("b.txt")).unwrap(), b"b\n");
    let grown = std::fs::read_to_string(fresh.join("grow.txt")).unwrap();
    assert!(
        grown.lines().all(|l| l == "growing" || l.is_empty()),
        "{grown:.200}"
    );
}

/// `--keep`: the task runs in the service, the patch is written and the
/// sandbox stays, named on stderr; stdout is the command's alone.
#[test]
fn keep_leaves_the_sandbox_in_the_service() {
    if !common::is_root() {
        common::skip("needs root");
        return;
    }
    let work = scratch(Who::Root);
    let repo = work.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("a.txt"), "a\n").unwrap();
    let sock = work.path().join("s.sock");
    let serve = common::bin().with_file_name("airlock-serve");
    let mut daemon = Command::new(&serve)
        .args(["--socket", sock.to_str().unwrap(), "--state-dir"])
        .arg(work.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !sock.exists() && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(50));
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
        "--repo",
        repo.to_str().unwrap(),
        "--patch",
        patch.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo from-the-command; echo b > b.txt; exit 3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let id = stderr
        .split("kept sandbox ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    let ls = run(&["ls"]);
    let _ = run(&["rm", &id]);
    // A graceful stop (it stops what it still runs).
    // SAFETY: our own child's pid.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stdout, "from-the-command\n");
    assert!(id.starts_with("sb-"), "{stderr}");
    assert!(String::from_utf8_lossy(&ls.stdout).contains(&id), "{ls:?}");
    assert!(std::fs::read_to_string(&patch)
        .unwrap()
        .contains("+++ b/b.txt"));
    assert!(!repo.join("b.txt").exists());
}
