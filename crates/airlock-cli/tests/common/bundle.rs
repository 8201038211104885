//! Bundles and images for the OCI runtime tests: a busybox root (Debian's
//! busybox-static), a config.json as engines write them, and a small
//! static attack program (gcc -static) that tries the escapes the attack
//! suite knows from inside a container.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::Path;

pub const BUSYBOX: &str = "/bin/busybox";

/// A busybox root with the usual applets.
pub fn rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    for a in [
        "sh", "echo", "cat", "sleep", "ls", "id", "hostname", "true", "false", "test", "ps",
        "mount", "grep", "wc", "head", "kill", "stat", "touch", "mkdir", "rm", "dd", "stty", "tty",
        "cp",
    ] {
        let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(a));
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
}

/// A config.json as engines write them (podman's namespaces, the default
/// capability set).
pub fn config(args: &[&str], terminal: bool) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "hostname": "oci-test",
        "process": {
            "terminal": terminal,
            "args": args,
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "noNewPrivileges": true
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"]
        }
    })
}

/// The attack program's source: each mode tries one escape and prints
/// what happened; exit 0 = contained, 1 = the escape worked.
pub const ATTACK_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/if_ether.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *m = argv[1];
    if (!strcmp(m, "exe")) {
        /* CVE-2019-5736: write the runtime's binary through /proc/PID/exe. */
        int bad = 0;
        for (int pid = 1; pid < 64; pid++) {
            char p[64];
            snprintf(p, sizeof p, "/proc/%d/exe", pid);
            int fd = open(p, O_WRONLY);
            if (fd >= 0) { printf("ESCAPE wrote-open %s\n", p); bad = 1; close(fd); }
            fd = open(p, O_RDONLY);
            if (fd >= 0 && pid == 1) { printf("ESCAPE read-open %s\n", p); bad = 1; }
            if (fd >= 0) close(fd);
        }
        int fd = open("/proc/self/exe", O_RDWR);
        if (fd >= 0) { printf("ESCAPE self-exe rw\n"); bad = 1; }
        printf("exe done\n");
        return bad;
    }
    if (!strcmp(m, "mount")) {
        int r = mount("none", "/mnt", "tmpfs", 0, 0);
        int e1 = errno;
        int u = unshare(CLONE_NEWUSER | CLONE_NEWNS);
        int e2 = errno;
        int b = mount("/", "/mnt", NULL, MS_BIND, NULL);
        printf("mount=%d(%d) unshare=%d(%d) bind=%d\n", r, e1, u, e2, b);
        return r == 0 || u == 0 || b == 0;
    }
    if (!strcmp(m, "raw")) {
        int a = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
        int e1 = errno;
        int b = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
        int e2 = errno;
        int c = socket(AF_NETLINK, SOCK_RAW, 0);
        printf("inet-raw=%d(%d) packet=%d(%d) netlink=%d\n", a, e1, b, e2, c);
        return a >= 0 || b >= 0;
    }
    if (!strcmp(m, "ptrace")) {
        long r = ptrace(PTRACE_ATTACH, 1, 0, 0);
        int e = errno;
        printf("ptrace-pid1=%ld(%d)\n", r, e);
        return r == 0;
    }
    if (!strcmp(m, "files")) {
        int bad = 0;
        for (int i = 2; i < argc; i++) {
            int fd = open(argv[i], O_RDONLY);
            char buf[256] = {0};
            if (fd >= 0 && read(fd, buf, sizeof buf - 1) > 0) {
                printf("ESCAPE read %s: %s\n", argv[i], buf);
                bad = 1;
            } else {
                printf("denied %s (%d)\n", argv[i], errno);
            }
            if (fd >= 0) close(fd);
        }
        return bad;
    }
    if (!strcmp(m, "fork")) {
        int n = 0;
        int limit = argc > 2 ? atoi(argv[2]) : 100000;
        for (; n < limit; n++) {
            pid_t c = fork();
            if (c < 0) break;
            if (c == 0) { pause(); _exit(0); }
        }
        printf("forked=%d\n", n);
        fflush(stdout);
        kill(0, SIGKILL);
        return 0;
    }
    return 2;
}
"#;

/// Compiles the attack program (static) to `out`; false if gcc is missing.
pub fn build_attack(out: &Path) -> bool {
    let src = out.with_extension("c");
    std::fs::write(&src, ATTACK_C).unwrap();
    let ok = std::process::Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(out)
        .arg(&src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let _ = std::fs::remove_file(&src);
    ok
}
