#!/usr/bin/env bash
# Install the peer sandboxes that Airlock's benchmarks compare against.
#
# Peers are only ever installed by bench scripts, never by the product.
# Idempotent: anything already present is left alone. A peer that cannot be
# installed is reported and skipped; the script only fails on its own bugs.
#
# Usage: bash bench/install-peers.sh
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()   # peers that could not be installed, with a reason

note() { printf 'install-peers: %s\n' "$*"; }

# --- Debian packages ------------------------------------------------------
# package name -> the command that proves it is installed
declare -A APT_CMD=(
    [hyperfine]=hyperfine
    [bubblewrap]=bwrap
    [firejail]=firejail
    [socat]=socat
    [ripgrep]=rg
    [util-linux]=unshare
)

# gVisor: Debian ships it as the "runsc" package (there is no "gvisor" binary
# package in bookworm). Only try it if apt knows a candidate for it.
apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        $SUDO apt-get update -qq >/dev/null 2>&1 || note "apt-get update failed (continuing with cached lists)"
        apt_updated=1
    fi
}

has_candidate() {
    # true when apt has an installable version of package $1
    local cand
    cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [ -n "$cand" ] && [ "$cand" != "(none)" ]
}

want=()
for pkg in "${!APT_CMD[@]}"; do
    command -v "${APT_CMD[$pkg]}" >/dev/null 2>&1 || want+=("$pkg")
done

if ! command -v runsc >/dev/null 2>&1; then
    apt_update_once
    found_gvisor=0
    for pkg in gvisor runsc; do
        if has_candidate "$pkg"; then
            want+=("$pkg"); found_gvisor=1; break
        fi
    done
    if [ "$found_gvisor" -eq 0 ]; then
        missing+=("runsc (gVisor): no 'gvisor' or 'runsc' package in the configured apt sources")
    fi
fi

if [ "${#want[@]}" -gt 0 ]; then
    apt_update_once
    note "apt-get install ${want[*]}"
    # Try all at once (fast path); on failure, fall back to one at a time so
    # a single unavailable package does not block the others.
    if ! $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null 2>&1; then
        for pkg in "${want[@]}"; do
            $SUDO apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 \
                || missing+=("$pkg: apt-get install failed")
        done
    fi
fi

# --- npm globals ------------------------------------------------------------
# package name -> the command it provides
declare -A NPM_CMD=(
    [@openai/codex]=codex
    [@anthropic-ai/sandbox-runtime]=srt
)
if command -v npm >/dev/null 2>&1; then
    for pkg in "${!NPM_CMD[@]}"; do
        if command -v "${NPM_CMD[$pkg]}" >/dev/null 2>&1; then continue; fi
        note "npm install -g $pkg"
        if ! npm install -g --silent --no-fund --no-audit "$pkg" >/dev/null 2>&1; then
            missing+=("$pkg: npm install -g failed")
        fi
    done
else
    missing+=("@openai/codex, @anthropic-ai/sandbox-runtime: npm not found")
fi

# --- report -------------------------------------------------------------------
report() {
    local name=$1 cmd=$2 ver
    if command -v "$cmd" >/dev/null 2>&1; then
        ver=$("$cmd" --version 2>/dev/null | head -n1 || true)
        # socat has no --version; its -V puts the version on the second line
        [ -n "$ver" ] || ver=$("$cmd" -V 2>/dev/null | grep -m1 -i version || true)
        printf '  %-10s %-28s %s\n' "$name" "$(command -v "$cmd")" "${ver:-?}"
    else
        printf '  %-10s (not installed)\n' "$name"
    fi
}
echo "peers:"
report hyperfine hyperfine
report bwrap     bwrap
report unshare   unshare
report firejail  firejail
report socat     socat
report rg        rg
report codex     codex
report srt       srt
report runsc     runsc
if [ "${#missing[@]}" -gt 0 ]; then
    echo "skipped:"
    for m in "${missing[@]}"; do echo "  - $m"; done
fi
exit 0
