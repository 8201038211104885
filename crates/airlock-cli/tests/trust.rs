//! The trust policy: `--trust own|experimental|untrusted` picks a tier —
//! by default none, container, microvm — which the system file and the
//! user's `~/.config/airlock/config.toml` may change (the user's wins).
//! The system file is read from `AIRLOCK_CONFIG_DIR` here (never the
//! machine's own /etc/airlock), the user's from a scratch `HOME`.

mod common;
use common::*;
use std::path::Path;

/// `airlock run --trust T -- id -u` as root with the policy files of
/// `dir` (`etc/config.toml`, `home/.config/airlock/config.toml`).
fn id_with(dir: &Path, trust: &str) -> Option<Out> {
    let etc = dir.join("etc").display().to_string();
    let home = dir.join("home").display().to_string();
    let mut c = airlock_env(
        Who::Root,
        &[
            ("AIRLOCK_CONFIG_DIR", etc.as_str()),
            ("HOME", home.as_str()),
        ],
    )?;
    let o = c
        .args(["run", "--trust", trust, "--", "id", "-u"])
        .output()
        .unwrap();
    Some(out_of(o))
}

fn out_of(o: std::process::Output) -> Out {
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn files(dir: &Path, system: Option<&str>, user: Option<&str>) {
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::create_dir_all(dir.join("home/.config/airlock")).unwrap();
    let sys = dir.join("etc/config.toml");
    let usr = dir.join("home/.config/airlock/config.toml");
    for (p, t) in [(sys, system), (usr, user)] {
        match t {
            Some(t) => std::fs::write(p, t).unwrap(),
            None => {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Run by root, the local tier (none) runs `id` as root itself; the
/// container tier as the sandbox's user (1000).
#[test]
fn defaults_and_overrides() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let d = scratch(Who::Root);
    let dir = d.path();
    // No files: own = none, experimental = container.
    files(dir, None, None);
    let o = id_with(dir, "own").unwrap();
    assert_eq!(o.stdout.trim(), "0", "{o:?}");
    let o = id_with(dir, "experimental").unwrap();
    assert_eq!(o.stdout.trim(), "1000", "{o:?}");
    // The system file moves own up to the container tier.
    files(
        dir,
        Some("# site policy\n[trust]\nown = \"container\"\n"),
        None,
    );
    let o = id_with(dir, "own").unwrap();
    assert_eq!(o.stdout.trim(), "1000", "{o:?}");
    // The user's file wins over the system's, key by key.
    files(
        dir,
        Some("[trust]\nown = \"container\"\nexperimental = \"none\"\n"),
        Some("[trust]\nexperimental = \"container\"\n"),
    );
    let o = id_with(dir, "experimental").unwrap();
    assert_eq!(o.stdout.trim(), "1000", "{o:?}");
    let o = id_with(dir, "own").unwrap();
    assert_eq!(o.stdout.trim(), "1000", "{o:?}");
    // --isolation still says exactly what it says.
    let etc = dir.join("etc").display().to_string();
    let o = out_of(
        airlock_env(Who::Root, &[("AIRLOCK_CONFIG_DIR", etc.as_str())])
            .unwrap()
            .args(["run", "--isolation", "none", "--", "id", "-u"])
            .output()
            .unwrap(),
    );
    assert_eq!(o.stdout.trim(), "0", "{o:?}");
}

/// A bad file is an error that names the file and the line; nothing runs.
#[test]
fn a_bad_file_names_file_and_line() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let d = scratch(Who::Root);
    let dir = d.path();
    for (system, user, line) in [
        (
            Some("[trust]\nown = \"none\"\nuntrusted = \"vm\"\n"),
            None,
            3,
        ),
        (None, Some("[trust]\n\nparanoid = \"microvm\"\n"), 3),
        (Some("[trust\n"), None, 1),
    ] {
        files(dir, system, user);
        let o = id_with(dir, "own").unwrap();
        assert_eq!(o.code, 125, "{o:?}");
        assert!(o.stdout.is_empty(), "{o:?}");
        let file = if system.is_some() {
            dir.join("etc/config.toml")
        } else {
            dir.join("home/.config/airlock/config.toml")
        };
        assert!(
            o.stderr
                .contains(&format!("{}: line {line}:", file.display())),
            "{o:?}"
        );
    }
}
