//! `airlock doctor`: one line per kernel feature, each with what to do;
//! `--json`: the same checks as data.

use airlock_jail::cgroup::{Controller, Layout, Where};
use serde::Serialize;
use std::path::Path;

/// One check: what it is about, whether it passed, what was found and
/// (when it failed) what to do.
#[derive(Serialize)]
struct Line {
    ok: bool,
    #[serde(rename = "check")]
    what: &'static str,
    detail: String,
    #[serde(serialize_with = "fix_or_null")]
    fix: &'static str,
}

fn fix_or_null<S: serde::Serializer>(fix: &&'static str, s: S) -> Result<S::Ok, S::Error> {
    if fix.is_empty() {
        s.serialize_none()
    } else {
        s.serialize_str(fix)
    }
}

/// A tier's readiness, from the checks it needs.
#[derive(Serialize)]
struct Tier {
    tier: &'static str,
    ready: bool,
    /// The checks it needs (by name).
    needs: Vec<&'static str>,
    note: &'static str,
}

#[derive(Serialize)]
struct Report {
    kernel: String,
    checks: Vec<Line>,
    tiers: Vec<Tier>,
}

/// The oldest kernel the container tier is written for (id-mapped mounts,
/// the new mount API, openat2, pidfds, close_range).
pub const MIN_KERNEL: (u32, u32) = (5, 12);

fn kernel_release() -> String {
    read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into())
}

/// `major.minor` of a kernel release string.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn read(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Really tries to create a user namespace (in a throwaway child).
fn userns_works() -> Result<(), i32> {
    // SAFETY: fork; the child only calls unshare and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    if pid == 0 {
        // SAFETY: unshare with flags only; _exit never returns.
        unsafe {
            let r = libc::unshare(
                libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET,
            );
            let e = if r == 0 { 0 } else { *libc::__errno_location() };
            libc::_exit(e);
        }
    }
    let mut st = 0;
    // SAFETY: reaps our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    match libc::WEXITSTATUS(st) {
        0 => Ok(()),
        e => Err(e),
    }
}

fn landlock_abi() -> i64 {
    airlock_jail::landlock::abi()
}

/// The microVM tier's accelerator, by the same probe the tier uses (a
/// guest instruction through /dev/kvm, then QEMU itself on KVM).
fn kvm() -> (bool, String) {
    match airlock_vm::Accel::detect() {
        airlock_vm::Accel::Kvm => (
            true,
            "KVM runs guests here: the microVM tier uses it".into(),
        ),
        airlock_vm::Accel::Tcg { why } => (
            false,
            format!("the microVM tier runs under software emulation (TCG), much slower: {why}"),
        ),
    }
}

fn which(name: &str) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_else(|_| airlock_jail::DEFAULT_PATH.into());
    path.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

fn checks() -> Vec<Line> {
    let mut lines = Vec::new();
    let release = kernel_release();
    let kv = kernel_version(&release);
    lines.push(Line {
        ok: kv.is_some_and(|v| v >= MIN_KERNEL),
        what: "kernel",
        detail: format!(
            "Linux {release} (the container tier needs {}.{}+)",
            MIN_KERNEL.0, MIN_KERNEL.1
        ),
        fix: "boot a newer kernel (Debian 12's 6.1 and Ubuntu 22.04's 5.15 are fine)",
    });
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;

    let max_ns = read("/proc/sys/user/max_user_namespaces").unwrap_or_else(|| "?".into());
    let apparmor = read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    match userns_works() {
        Ok(()) => lines.push(Line {
            ok: true,
            what: "user namespaces",
            detail: format!("can be created {} (max_user_namespaces={max_ns})", if root { "as root" } else { "without privileges" }),
            fix: "",
        }),
        Err(e) => lines.push(Line {
            ok: false,
            what: "user namespaces",
            detail: format!("cannot be created: {}{}", std::io::Error::from_raw_os_error(e),
                if apparmor.as_deref() == Some("1") { " (AppArmor restricts unprivileged user namespaces)" } else { "" }),
            fix: "Ubuntu 23.10+: install contrib/apparmor/airlock as /etc/apparmor.d/airlock and load it (scripts/setup.sh does), or sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0; elsewhere: sudo sysctl user.max_user_namespaces=15000 kernel.unprivileged_userns_clone=1; in Docker: --security-opt seccomp=unconfined; or use --isolation landlock (weaker)",
        }),
    }

    let seccomp = read("/proc/sys/kernel/seccomp/actions_avail");
    lines.push(match &seccomp {
        Some(a) if a.contains("errno") => Line {
            ok: true,
            what: "seccomp",
            detail: format!("filter mode available (actions: {a})"),
            fix: "",
        },
        _ => Line {
            ok: false,
            what: "seccomp",
            detail: "filter mode not available".into(),
            fix: "use a kernel built with CONFIG_SECCOMP_FILTER=y",
        },
    });

    let abi = landlock_abi();
    lines.push(if abi >= 1 {
        Line {
            ok: true,
            what: "landlock",
            detail: format!(
                "ABI {abi}{}",
                if abi < 6 {
                    " (signal and abstract-socket scoping need ABI 6)"
                } else {
                    ""
                }
            ),
            fix: "",
        }
    } else {
        Line {
            ok: false,
            what: "landlock",
            detail:
                "not available: the container tier runs without its filesystem confinement layer"
                    .into(),
            fix: "boot with lsm=landlock,... (Linux 5.13+; 6.7+ for ABI 6)",
        }
    });

    let layout = Layout::detect();
    lines.push(Line {
        ok: layout.v2.is_some(),
        what: "cgroup v2",
        detail: match &layout.v2 {
            Some(p) => format!(
                "{} (controllers offered here: {})",
                p.display(),
                if layout.v2_controllers.is_empty() {
                    "none".to_string()
                } else {
                    layout.v2_controllers.join(" ")
                }
            ),
            None => "not mounted".into(),
        },
        fix: if layout.v2.is_some() {
            ""
        } else {
            "mount cgroup2 at /sys/fs/cgroup (systemd does by default)"
        },
    });
    let v1: Vec<String> = layout
        .v1
        .iter()
        .map(|(c, p)| format!("{} at {}", c.name(), p.parent().unwrap_or(p).display()))
        .collect();
    lines.push(Line {
        ok: true,
        what: "cgroup v1",
        detail: if v1.is_empty() {
            "not used".into()
        } else {
            v1.join(", ")
        },
        fix: "",
    });
    let place: Vec<String> = [Controller::Memory, Controller::Pids, Controller::Cpu]
        .iter()
        .map(|c| {
            format!(
                "{}: {}",
                c.name(),
                match layout.place(*c) {
                    Where::V2 => "cgroup v2",
                    Where::V1 => "cgroup v1",
                    Where::Nowhere => "rlimit fallback",
                }
            )
        })
        .collect();
    let all = [Controller::Memory, Controller::Pids, Controller::Cpu]
        .iter()
        .all(|c| layout.place(*c) != Where::Nowhere);
    lines.push(Line {
        ok: all,
        what: "limits",
        detail: place.join(", "),
        fix: if all { "" } else if root { "enable the memory, pids and cpu controllers (cgroup v2 or v1)" } else { "run as root, or delegate a cgroup v2 subtree to this user (systemd-run --user --scope -p Delegate=yes airlock ...)" },
    });

    let (kvm_ok, kvm_detail) = kvm();
    lines.push(Line {
        ok: kvm_ok,
        what: "kvm",
        detail: kvm_detail,
        fix: if kvm_ok { "" } else { "enable virtualization (VT-x/AMD-V) or nested virtualization, and add yourself to the kvm group" },
    });
    let kernel = airlock_vm::Kernel::find(None);
    lines.push(Line {
        ok: kernel.is_ok(),
        what: "guest kernel",
        detail: match &kernel {
            Ok(k) => format!(
                "{} ({} modules for the initramfs)",
                k.image.display(),
                k.modules.len()
            ),
            Err(e) => e.to_string(),
        },
        fix: "apt-get install linux-image-cloud-amd64 (or pass AIRLOCK_VM_KERNEL=PATH)",
    });
    let qemu = which("qemu-system-x86_64");
    lines.push(Line {
        ok: qemu.is_some(),
        what: "qemu",
        detail: qemu
            .unwrap_or_else(|| "qemu-system-x86_64 not found (needed by the microVM tier)".into()),
        fix: "apt-get install qemu-system-x86",
    });

    let restricted = apparmor.as_deref() == Some("1");
    let profile = Path::new(APPARMOR_PROFILE).exists();
    lines.push(Line {
        ok: !restricted || find(&lines, "user namespaces").ok,
        what: "apparmor userns",
        detail: match (restricted, profile) {
            (false, _) => "unprivileged user namespaces are not restricted by AppArmor".into(),
            (true, true) => format!("restricted (kernel.apparmor_restrict_unprivileged_userns=1); {APPARMOR_PROFILE} is installed"),
            (true, false) => format!("restricted (kernel.apparmor_restrict_unprivileged_userns=1) and {APPARMOR_PROFILE} is not installed"),
        },
        fix: "install contrib/apparmor/airlock as /etc/apparmor.d/airlock and run apparmor_parser -r /etc/apparmor.d/airlock (scripts/setup.sh does), or use --isolation landlock",
    });
    lines
}

/// Where setup installs the AppArmor profile that lets
/// /usr/local/bin/airlock create user namespaces.
const APPARMOR_PROFILE: &str = "/etc/apparmor.d/airlock";

fn find<'a>(lines: &'a [Line], what: &str) -> &'a Line {
    // Every name asked for is pushed by checks().
    lines
        .iter()
        .find(|l| l.what == what)
        .unwrap_or_else(|| unreachable!("no check {what}"))
}

fn tiers(lines: &[Line], root: bool) -> Vec<Tier> {
    let ready = |needs: &[&'static str]| needs.iter().all(|n| find(lines, n).ok);
    let container = ["kernel", "user namespaces", "seccomp"];
    let landlock = ["seccomp", "landlock"];
    let microvm = ["user namespaces", "seccomp", "qemu", "guest kernel"];
    vec![
        Tier {
            tier: "container",
            ready: ready(&container),
            needs: container.to_vec(),
            note: "the default: namespaces, seccomp, Landlock, no capabilities, cgroups",
        },
        Tier {
            tier: "landlock",
            ready: ready(&landlock),
            needs: landlock.to_vec(),
            note: "opt-in (--isolation landlock) where user namespaces are refused: weaker, no pid, mount or IPC isolation",
        },
        Tier {
            tier: "microvm",
            // Run by root only (QEMU's jail takes ids of its own).
            ready: root && ready(&microvm),
            needs: microvm.to_vec(),
            note: if !root {
                "run as root (--isolation microvm is refused rootless)"
            } else if find(lines, "kvm").ok {
                "a kernel boundary under QEMU on KVM"
            } else {
                "a kernel boundary under QEMU's software emulation (TCG, slow: see the kvm line)"
            },
        },
        Tier {
            tier: "none",
            ready: true,
            needs: Vec::new(),
            note: "no isolation: your own code only",
        },
    ]
}

pub fn run(json: bool) -> i32 {
    let lines = checks();
    // SAFETY: geteuid cannot fail.
    let tiers = tiers(&lines, unsafe { libc::geteuid() } == 0);
    let container_ok = tiers.first().is_some_and(|t| t.ready);
    if json {
        let report = Report {
            kernel: kernel_release(),
            checks: lines,
            tiers,
        };
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("airlock: doctor: {e}");
                return 125;
            }
        }
    } else {
        for l in &lines {
            let mark = if l.ok { "ok  " } else { "FAIL" };
            if l.ok || l.fix.is_empty() {
                println!("{mark} {:<16} {}", l.what, l.detail);
            } else {
                println!("{mark} {:<16} {} — fix: {}", l.what, l.detail, l.fix);
            }
        }
        for t in &tiers {
            println!(
                "{} tier: {} ({})",
                t.tier,
                if t.ready { "ready" } else { "NOT ready" },
                t.note
            );
        }
    }
    if container_ok {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(kernel_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("5.4.0").unwrap() < MIN_KERNEL);
    }
}
