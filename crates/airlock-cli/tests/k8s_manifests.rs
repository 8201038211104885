//! contrib/k8s/ checked offline, as CI can: every manifest against the
//! Kubernetes 1.30 schemas (kubernetes-validate from PyPI, in the test
//! venv that scripts/setup.sh makes), strictly; agent-sandbox's
//! SandboxTemplate by its fields with its podTemplate as a Pod; the
//! containerd drop-in through containerd's own parser (`containerd config
//! dump`). And the check can fail: broken copies are rejected.

mod common;

use common::{skip, tempdir};
use std::path::{Path, PathBuf};
use std::process::Command;

const VENV_PY: &str = "/opt/airlock-test-venv/bin/python";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn validator_ready() -> bool {
    let ok = Command::new(VENV_PY)
        .args(["-c", "import kubernetes_validate, yaml"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        skip("needs kubernetes-validate in /opt/airlock-test-venv (scripts/setup.sh)");
    }
    ok
}

fn validate(files: &[PathBuf]) -> (bool, String) {
    let o = Command::new(VENV_PY)
        .arg(repo().join("scripts/validate-k8s.py"))
        .args(["--k8s-version", "1.30.0"])
        .args(files)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("contrib/k8s"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn contrib_k8s_manifests_are_valid() {
    if !validator_ready() {
        return;
    }
    let files = manifests();
    assert!(files.len() >= 5, "{files:?}");
    let (ok, out) = validate(&files);
    assert!(ok, "{out}");
    for kind in [
        "RuntimeClass/airlock",
        "DaemonSet/airlock-installer",
        "SandboxTemplate/python-airlock",
    ] {
        assert!(
            out.contains(&format!("{kind}: ok")),
            "{kind} not checked: {out}"
        );
    }
}

#[test]
fn broken_manifests_are_rejected() {
    if !validator_ready() {
        return;
    }
    let d = tempdir::Dir::new();
    let src = |n: &str| std::fs::read_to_string(repo().join("contrib/k8s").join(n)).unwrap();
    let cases = [
        (
            "rc.yaml",
            src("runtimeclass.yaml").replace("handler: airlock", "handlr: airlock"),
        ),
        (
            "st.yaml",
            src("sandboxtemplate.yaml")
                .replace("runtimeClassName: airlock", "runtimeClassName: runc"),
        ),
        (
            "st2.yaml",
            src("sandboxtemplate.yaml").replace("containers:", "containerz:"),
        ),
        (
            "ds.yaml",
            src("daemonset.yaml").replace("hostPID: true", "hostPID: \"yes\""),
        ),
        (
            "c.toml",
            src("containerd-airlock.toml").replace("SystemdCgroup = false", "SystemdCgroup = true"),
        ),
    ];
    for (name, text) in cases {
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        let (ok, out) = validate(std::slice::from_ref(&p));
        assert!(!ok, "{name} passed: {out}");
    }
}

#[test]
fn containerd_reads_the_drop_in() {
    if !Path::new("/usr/bin/containerd").exists() {
        skip("needs containerd (scripts/setup.sh)");
        return;
    }
    let o = Command::new("containerd")
        .arg("--config")
        .arg(repo().join("contrib/k8s/containerd-airlock.toml"))
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let dump = String::from_utf8_lossy(&o.stdout);
    let at = dump
        .find("runtimes.airlock.options]")
        .unwrap_or_else(|| panic!("no airlock runtime in:\n{dump}"));
    let opts: String = dump[at..].lines().take(40).collect::<Vec<_>>().join("\n");
    assert!(
        opts.contains("BinaryName = \"/usr/local/bin/airlock-runc\""),
        "{opts}"
    );
    assert!(opts.contains("SystemdCgroup = false"), "{opts}");
    let rt = &dump[..at];
    let rt = &rt[rt.rfind("runtimes.airlock]").unwrap()..];
    assert!(
        rt.contains("runtime_type = \"io.containerd.runc.v2\""),
        "{rt}"
    );
}
