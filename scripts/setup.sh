#!/usr/bin/env bash
# Installs what Airlock needs on a Debian 12 machine and builds it.
# Idempotent: safe to run again. Run as root.
#
#   bash scripts/setup.sh            # packages, users, build, install to /usr/local/bin
#   AIRLOCK_SETUP_NO_INSTALL=1 ...   # build only (used by the test script)
#   bash scripts/setup.sh --check-only   # only the prerequisite checks (any user)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

# apt_need PKG...: installs those of PKG that are not installed yet.
apt_need() {
    local need=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        log "installing ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
}

check_only=
if [ "${1:-}" = --check-only ] || [ -n "${AIRLOCK_SETUP_CHECK_ONLY:-}" ]; then
    check_only=1
fi

# --- Prerequisites setup cannot install (issue 13) ---------------------------
# Checked before anything is installed or built. Each failure is one line:
# what was found, what is needed, how to get it. Setup never installs a
# compiler that cannot build the project (Debian's rustc is too old).
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
# $1 >= $2, as dotted versions.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }
if ! command -v cargo >/dev/null 2>&1; then
    for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
        if [ -x "$d/cargo" ]; then export PATH="$d:$PATH"; break; fi
    done
fi
rustup_hint="install Rust with rustup (https://rustup.rs: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal), or run 'rustup update stable' if you have it, then run setup again"
if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
    echo "setup: no Rust toolchain found (cargo and rustc), airlock needs Rust $msrv or newer: $rustup_hint" >&2
    exit 1
fi
found=
for tool in rustc cargo; do
    v=$("$tool" --version 2>/dev/null | sed -n 's/^[a-z]* \([0-9][0-9.]*\).*/\1/p' | head -n 1)
    if [ -z "$v" ] || ! version_ge "$v" "$msrv"; then
        found="$tool ${v:-of unknown version} ($(command -v "$tool"))"
        break
    fi
done
if [ -n "$found" ]; then
    echo "setup: found $found, but airlock needs Rust $msrv or newer (rust-version in Cargo.toml): $rustup_hint" >&2
    exit 1
fi
kernel_min=5.12
kernel=$(cut -d- -f1 /proc/sys/kernel/osrelease 2>/dev/null || echo 0)
if ! version_ge "$kernel" "$kernel_min"; then
    echo "setup: found Linux $kernel, but airlock needs $kernel_min or newer (id-mapped mounts, the new mount API, Landlock): boot a newer kernel (Debian 12's 6.1 or Ubuntu 22.04's 5.15 will do), then run setup again" >&2
    exit 1
fi
# No user namespaces at all: the container tier cannot run, the Landlock
# tier can. Said, not fatal.
if [ ! -e /proc/self/ns/user ]; then
    log "warning: this kernel has no user namespaces (CONFIG_USER_NS), so the container tier cannot run: use a kernel built with CONFIG_USER_NS=y, or run sandboxes with --isolation landlock (weaker: see the README)"
elif [ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 1)" = 0 ]; then
    log "warning: user.max_user_namespaces=0, so the container tier cannot run: sudo sysctl -w user.max_user_namespaces=15000, or run sandboxes with --isolation landlock (weaker)"
fi
if [ -n "$check_only" ]; then
    log "prerequisites ok: $(rustc --version), Linux $kernel"
    exit 0
fi
# --- end of the prerequisite checks ---------------------------------------

if [ "$(id -u)" != 0 ]; then
    echo "setup: run as root (it installs packages and creates the test user)" >&2
    exit 1
fi

# Debian packages: build tools, util-linux (setpriv for the rootless tests),
# iproute2 (network test hosts), and the toolchains the tests run inside
# sandboxes and under the seccomp filter (python3, gcc, git, node).
apt_need build-essential pkg-config util-linux iproute2 python3 git procps ca-certificates

# The image tests: mmdebstrap (Debian images), docker-registry and skopeo
# (a real registry on loopback, filled from archives the tests make),
# openssl (the registry test's token server signs with it), libcap2-bin
# (file capabilities), zstd.
apt_need mmdebstrap docker-registry skopeo openssl libcap2-bin zstd
# The docker-registry package enables a system service on port 5000; the
# tests start their own registries and need none running.

# The service tests: curl, a real WebSocket client (Debian's Python
# websockets, for /usr/bin/python3) and schemathesis (from PyPI, in a venv
# of its own) to fuzz the API from its OpenAPI document.
apt_need curl python3-websockets python3-venv
if [ ! -x /opt/airlock-test-venv/bin/schemathesis ]; then
    log "installing schemathesis (for the API tests) in /opt/airlock-test-venv"
    /usr/bin/python3 -m venv /opt/airlock-test-venv
    /opt/airlock-test-venv/bin/pip install -q schemathesis
fi

# Credential brokering tests (crates/airlock-cli/tests/egress_broker.rs,
# issue 10): git (its http-backend serves clones), pip (installs from a
# local index through the proxy), openssl and curl (the test CA, the client).
apt_need git python3-pip openssl curl

# The Python SDK's tests (sdk/python; crates/airlock-cli/tests/sdk_python.rs):
# httpx, websockets, pytest, pytest-asyncio and mypy from PyPI in a venv of their
# own, and the SDK itself installed from this checkout (pip install
# ./sdk/python; hatchling, its build backend, is in the venv so that the
# reinstall on every run needs no network).
sdk_venv=/opt/airlock-sdk-venv
if ! "$sdk_venv/bin/python" -c 'import httpx, websockets, pytest, pytest_asyncio, hatchling, mypy' 2>/dev/null; then
    log "installing the Python SDK's test dependencies in $sdk_venv"
    /usr/bin/python3 -m venv "$sdk_venv"
    "$sdk_venv/bin/pip" install -q 'httpx>=0.25,<1' 'websockets>=13' 'pytest>=7' \
        'pytest-asyncio>=0.23' hatchling mypy
fi
"$sdk_venv/bin/pip" install -q --no-deps --no-build-isolation --force-reinstall ./sdk/python

# The MCP tests (crates/airlock-cli/tests/mcp.rs): a real MCP client, the
# `mcp` package from PyPI, in a venv of its own.
if [ ! -x /opt/airlock-mcp-venv/bin/python ] ||
    ! /opt/airlock-mcp-venv/bin/python -c 'import mcp' 2>/dev/null; then
    log "installing the mcp package (for the MCP tests) in /opt/airlock-mcp-venv"
    /usr/bin/python3 -m venv /opt/airlock-mcp-venv
    /opt/airlock-mcp-venv/bin/pip install -q mcp
fi

# The microVM tier: QEMU (its microvm machine), the Debian cloud kernel
# (the default guest kernel, with its modules as plain .ko files),
# erofs-utils (the host image's read-only disks) and binutils (objcopy
# takes a debug build's debug information out of the guest's /init).
apt_need qemu-system-x86 linux-image-cloud-amd64 erofs-utils binutils

# Node.js: any package that provides /usr/bin/node will do (Debian's
# nodejs, or NodeSource's if the machine has it).
if [ ! -x /usr/bin/node ]; then
    log "installing nodejs"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs >/dev/null
fi

# The agent recipe tests (crates/airlock-cli/tests/agents.rs): the Codex
# CLI and Claude Code from npm (their configuration, Codex's app server and
# Claude's MCP health check are driven with no model call, in a network
# namespace of their own).
if { ! command -v codex || ! command -v claude; } >/dev/null 2>&1 &&
    ! command -v npm >/dev/null 2>&1; then
    log "installing npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
if ! command -v codex >/dev/null 2>&1; then
    log "installing the Codex CLI (for the agent recipe tests)"
    npm install -g --silent @openai/codex >/dev/null
fi
if ! command -v claude >/dev/null 2>&1; then
    log "installing Claude Code (for the agent recipe tests)"
    npm install -g --silent @anthropic-ai/claude-code >/dev/null
fi

# The Rust toolchain was checked at the top (never Debian's rustc: too old).

# The declared minimum Rust version (rust-version in Cargo.toml), for the
# test script's check that it really builds the code. Only with rustup,
# and only for the tests: a failure here is not fatal.
if [ -n "${AIRLOCK_SETUP_NO_INSTALL:-}" ] && command -v rustup >/dev/null 2>&1 &&
    ! rustup toolchain list | grep -q "^$msrv"; then
    log "installing Rust $msrv (the minimum version the tests check)"
    rustup toolchain install "$msrv" --profile minimal >/dev/null 2>&1 ||
        log "note: could not install Rust $msrv; the minimum-version check will be skipped"
fi

# The unprivileged user the rootless tests run as.
if ! id -u airlock-test >/dev/null 2>&1; then
    log "creating user airlock-test"
    useradd --create-home --shell /bin/bash airlock-test
fi

# The subordinate id range root-run sandboxes map to (as container runtimes'
# user-namespace remapping does): user "airlock" in /etc/subuid and subgid.
if ! id -u airlock >/dev/null 2>&1; then
    log "creating system user airlock"
    useradd --system --no-create-home --shell /usr/sbin/nologin airlock
fi
for f in /etc/subuid /etc/subgid; do
    touch "$f"
    grep -q '^airlock:' "$f" || echo "airlock:1879048192:65536" >>"$f"
done

# The egress tests (crates/airlock-cli/tests/egress.rs): iproute2 (the
# test's own network namespace, its "internet"), openssl (a test CA and a
# server certificate), curl (the client inside sandboxes), python3 (the
# test servers, urllib).
apt_need iproute2 openssl curl python3


# --- AppArmor (issue 13) ------------------------------------------------------
# Debian's apparmor package gives apparmor_parser, with which a test checks
# that contrib/apparmor/airlock compiles. Where AppArmor restricts
# unprivileged user namespaces (Ubuntu 23.10+), the profile is installed
# and loaded: it lets /usr/local/bin/airlock create them, as Ubuntu's own
# profiles do for bwrap.
if ! dpkg-query -W -f='${Status}' apparmor 2>/dev/null | grep -q "install ok installed"; then
    log "installing apparmor (apparmor_parser, for the AppArmor profile's test)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends apparmor >/dev/null
fi

# Unprivileged user namespaces (Debian allows them; Ubuntu's AppArmor may not).
if [ -e /proc/sys/kernel/apparmor_restrict_unprivileged_userns ] &&
    [ "$(cat /proc/sys/kernel/apparmor_restrict_unprivileged_userns)" = 1 ]; then
    log "AppArmor restricts unprivileged user namespaces: installing /etc/apparmor.d/airlock"
    install -m 0644 contrib/apparmor/airlock /etc/apparmor.d/airlock
    apparmor_parser -r /etc/apparmor.d/airlock ||
        log "warning: could not load /etc/apparmor.d/airlock; rootless sandboxes need it (or --isolation landlock)"
fi
# --- end of the AppArmor block ------------------------------------------------

if [ -z "${AIRLOCK_SETUP_NO_INSTALL:-}" ]; then
    log "building airlock (release, static)"
    bin=$(bash scripts/build-release.sh)
    # airlock, and the programs it runs from beside itself: the sandbox's
    # agent and the registry client.
    for p in airlock airlock-agent airlock-pull airlock-serve; do
        install -m 0755 "$(dirname "$bin")/$p" "/usr/local/bin/$p"
    done
    log "installed /usr/local/bin/airlock (with airlock-agent, airlock-pull and airlock-serve)"
fi

# The OCI runtime (airlock oci / airlock-runc): busybox-static (the test
# bundles' and images' root), podman with conmon, and runc and crun (the
# differential test's references and the benchmark's peers), containerd
# (ctr, and its CRI with CNI's loopback plugin), runsc (gVisor, a peer in
# bench/oci.sh). airlock-runc, the name engines call by path, is a symlink to
# airlock (it dispatches on argv[0]). The tests start their own engines
# with their own roots; no service needs to run.
apt_need busybox-static podman conmon runc crun containerd containernetworking-plugins uidmap runsc
if [ -z "${AIRLOCK_SETUP_NO_INSTALL:-}" ]; then
    ln -sf airlock /usr/local/bin/airlock-runc
    log "installed /usr/local/bin/airlock-runc (a symlink to airlock)"
fi
# The Kubernetes manifests' schema check (contrib/k8s/, scripts/validate-k8s.py):
# kubernetes-validate from PyPI, which ships the Kubernetes OpenAPI schemas,
# in the test venv.
if [ -x /opt/airlock-test-venv/bin/python ] &&
    ! /opt/airlock-test-venv/bin/python -c 'import kubernetes_validate' 2>/dev/null; then
    log "installing kubernetes-validate (for the manifest checks) in /opt/airlock-test-venv"
    /opt/airlock-test-venv/bin/pip install -q kubernetes-validate
fi
# The CRI test's gRPC client (tests/cri/): grpcio and grpcio-tools in the
# test venv.
if [ -x /opt/airlock-test-venv/bin/python ] &&
    ! /opt/airlock-test-venv/bin/python -c 'import grpc, grpc_tools' 2>/dev/null; then
    log "installing grpcio and grpcio-tools (for the CRI test) in /opt/airlock-test-venv"
    /opt/airlock-test-venv/bin/pip install -q grpcio grpcio-tools
fi

# --- Transparent egress tests (issue 10, crates/airlock-cli/tests/egress.rs) ---
# dig (bind9-dnsutils): the DNS exfiltration test asks the sandbox's DNS stub
# and the outside resolver directly with it (A, AAAA, TXT, long labels).
apt_need bind9-dnsutils
