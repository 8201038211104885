//! scripts/setup.sh says what it needs: a Rust toolchain older than the
//! workspace's `rust-version` stops it with one line, before it installs or
//! builds anything; and the AppArmor profile in contrib/ compiles.
//!
//! The setup runs under a PATH of our own: the fake toolchain, the few
//! text tools the checks use, and nothing else (no apt-get, dpkg, useradd,
//! install, rustup or cargo but the fake), with HOME, CARGO_HOME and
//! RUSTUP_HOME in an empty directory. Whatever setup did wrong, it could not
//! touch the machine.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn msrv() -> String {
    let toml = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    toml.lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|r| r.strip_suffix('"'))
        .expect("rust-version in Cargo.toml")
        .to_string()
}

/// A directory with a fake `rustc` and `cargo` reporting `version` (each
/// logging its arguments to `calls`), links to the text tools the checks
/// need, and a HOME.
struct FakeHost {
    dir: tempdir::Dir,
}

impl FakeHost {
    fn new(version: &str) -> FakeHost {
        let dir = tempdir::Dir::new();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let calls = dir.path().join("calls");
        for tool in ["rustc", "cargo"] {
            let p = bin.join(tool);
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\necho \"{tool} $*\" >> {}\necho \"{tool} {version} (Debian {version}+dfsg1-2)\"\n",
                    calls.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for tool in ["dirname", "id", "sed", "grep", "sort", "head", "cat", "cut"] {
            let real = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("{tool} not found"));
            std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
        }
        FakeHost { dir }
    }

    fn setup(&self, args: &[&str]) -> Out {
        let home = self.dir.path().join("home");
        let o = Command::new("/bin/bash")
            .arg(repo().join("scripts/setup.sh"))
            .args(args)
            .env_clear()
            .env("PATH", self.dir.path().join("bin"))
            .env("HOME", &home)
            .env("CARGO_HOME", &home)
            .env("RUSTUP_HOME", &home)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out {
            code: o.status.code().unwrap_or(128),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// What the fake toolchain was asked.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

fn target_mtime() -> Option<std::time::SystemTime> {
    std::fs::metadata(repo().join("target"))
        .and_then(|m| m.modified())
        .ok()
}

#[test]
fn old_rustc_stops_setup_with_one_line() {
    let msrv = msrv();
    let fake = FakeHost::new("1.63.0");
    let before = target_mtime();
    // Both the full setup (it must stop before installing anything) and
    // its check-only mode.
    for args in [&[][..], &["--check-only"][..]] {
        let o = fake.setup(args);
        assert_ne!(o.code, 0, "{args:?}: {o:?}");
        let lines: Vec<&str> = o.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {o:?}");
        let line = lines[0];
        assert!(line.contains("1.63.0"), "names the version found: {line}");
        assert!(line.contains(&msrv), "names the version needed: {line}");
        assert!(line.contains("rustup"), "says how to get it: {line}");
        assert!(o.stdout.is_empty(), "{o:?}");
        // Only asked its version: nothing built, nothing installed (the
        // tools that would install are not on its PATH at all, and it did
        // not get as far as looking for them).
        for c in fake.calls() {
            assert!(c.ends_with("--version"), "{args:?}: setup ran {c:?}");
        }
        assert!(!fake.calls().is_empty(), "the version was checked");
    }
    assert_eq!(target_mtime(), before, "target/ untouched");
    assert!(!fake.dir.path().join("home/.cargo").exists());
}

#[test]
fn missing_toolchain_stops_setup_with_one_line() {
    let fake = FakeHost::new("1.63.0");
    for t in ["rustc", "cargo"] {
        std::fs::remove_file(fake.dir.path().join("bin").join(t)).unwrap();
    }
    let o = fake.setup(&["--check-only"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(o.stderr.lines().count(), 1, "{o:?}");
    assert!(o.stderr.contains("no Rust toolchain found"), "{o:?}");
    assert!(
        o.stderr.contains(&msrv()) && o.stderr.contains("rustup"),
        "{o:?}"
    );
}

/// The control: a toolchain of the needed version passes the checks.
#[test]
fn new_enough_rustc_passes_the_checks() {
    let fake = FakeHost::new(&msrv());
    let o = fake.setup(&["--check-only"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("prerequisites ok"), "{o:?}");
    // One minor version below is refused.
    let m = msrv();
    let parts: Vec<u32> = m.split('.').map(|p| p.parse().unwrap()).collect();
    let older = format!("{}.{}.0", parts[0], parts[1] - 1);
    let o = FakeHost::new(&older).setup(&["--check-only"]);
    assert_eq!(o.code, 1, "{older}: {o:?}");
}

/// contrib/apparmor/airlock compiles with apparmor_parser (Debian's
/// apparmor package, installed by setup). Debian 12's parser (AppArmor
/// 3.0) predates the `userns` rule and the 4.0 ABI that Ubuntu 23.10+
/// needs: with it, the profile is compiled with exactly those two lines in
/// their 3.0 form, and everything else as shipped. A parser of 4.0 or
/// newer compiles the file as it is.
#[test]
fn apparmor_profile_compiles() {
    let parser = ["/usr/sbin/apparmor_parser", "/sbin/apparmor_parser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(parser) = parser else {
        skip("apparmor_parser is missing (scripts/setup.sh installs Debian's apparmor)");
        return;
    };
    let profile_path = repo().join("contrib/apparmor/airlock");
    let profile = std::fs::read_to_string(&profile_path).unwrap();
    assert!(profile.contains("profile airlock /usr/local/bin/airlock"));
    assert!(profile.lines().any(|l| l.trim() == "userns,"));
    let version = Command::new(parser).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let major: u32 = version
        .split_whitespace()
        .find_map(|w| w.split('.').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no version in {version:?}"));
    let dir = tempdir::Dir::new();
    let compile = |text: &str| {
        let p = dir.path().join("airlock");
        std::fs::write(&p, text).unwrap();
        Command::new(parser)
            .args(["-Q", "-K"])
            .arg(&p)
            .output()
            .unwrap()
    };
    let text = if major >= 4 {
        profile.clone()
    } else {
        let mut changed = 0;
        let t: String = profile
            .lines()
            .filter_map(|l| match l.trim() {
                "abi <abi/4.0>," => {
                    changed += 1;
                    Some("abi <abi/3.0>,")
                }
                "userns," => {
                    changed += 1;
                    None
                }
                _ => Some(l),
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(changed, 2, "{profile}");
        t
    };
    let o = compile(&text);
    assert!(
        o.status.success(),
        "apparmor_parser {major}.x: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The control: a broken profile is refused.
    let o = compile(&text.replace("/usr/local/bin/airlock", "/usr/local/bin/airlock{"));
    assert!(!o.status.success(), "the parser accepted a broken profile");
}
