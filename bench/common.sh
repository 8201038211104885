# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source it
# Shared settings and helpers for the bench/*.sh scripts. Source it; do not run it.
#
# Environment overrides understood by every script:
#   AIRLOCK        path to the airlock binary (default: the static release
#                  build of scripts/build-release.sh)
#   AIRLOCK_FLAGS  extra flags put between `airlock run` and `--` (default: none)

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")

AIRLOCK=${AIRLOCK:-$REPO_DIR/target/$(uname -m)-unknown-linux-gnu/release/airlock}
# shellcheck disable=SC2206  # word splitting of the flags is intended
AIRLOCK_RUN=("$AIRLOCK" run ${AIRLOCK_FLAGS:-} --)

# The system interpreter. `python3` on PATH may be a pyenv shim (a bash
# script), which would time bash instead of Python and may not exist inside a
# sandbox that only sees /usr.
PYTHON=/usr/bin/python3

# A minimal bubblewrap sandbox: every namespace unshared, /usr read-only, and
# /bin, /lib, /lib64, /sbin recreated as the symlinks into /usr they are on
# this (merged-/usr) host. This is the reference every ratio is taken against.
BWRAP_RUN=(
    bwrap --unshare-all --die-with-parent
    --ro-bind /usr /usr
    --symlink usr/bin /bin --symlink usr/sbin /sbin
    --symlink usr/lib /lib --symlink usr/lib64 /lib64
    --proc /proc --dev /dev --tmpfs /tmp
)

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# has_airlock: true when the airlock binary exists and is executable.
has_airlock() { [ -x "$AIRLOCK" ]; }

# kb_to_mib KB -> "x.xx"
kb_to_mib() { awk -v k="$1" 'BEGIN { printf "%.2f", k / 1024 }'; }

# children_of PID: direct children of PID (all its threads' children), from
# /proc/PID/task/*/children, or from ps where the kernel lacks that file.
# Prints nothing for a PID that no longer exists.
children_of() {
    local pid=$1 f out=""
    [ -d "/proc/$pid" ] || return 0
    if [ -e "/proc/$pid/task/$pid/children" ]; then
        for f in /proc/"$pid"/task/*/children; do
            out+=" $(cat "$f" 2>/dev/null || true)"
        done
    else
        out=$(ps -e -o pid=,ppid= | awk -v p="$pid" '$2 == p { print $1 }')
    fi
    # shellcheck disable=SC2086  # split the PID list into lines
    [ -z "${out// /}" ] || printf '%s\n' $out
}

# descendants_of PID: PID's whole subtree (PID excluded), parents before children.
descendants_of() {
    local queue=("$1") p c
    while [ "${#queue[@]}" -gt 0 ]; do
        p=${queue[0]}; queue=("${queue[@]:1}")
        for c in $(children_of "$p"); do
            echo "$c"
            queue+=("$c")
        done
    done
}

# kill_tree PID: SIGKILL PID and everything below it (children first are
# collected before anything is killed, so reparenting cannot hide any).
kill_tree() {
    local pids
    pids=$(descendants_of "$1"; echo "$1")
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
}
