#!/usr/bin/env bash
# Density: start N sandboxes at once, each running `sleep 30`, and measure
#   - wall time from the first launch until all N sleeps are running;
#   - host memory they use: the drop in MemAvailable, total and per sandbox.
# Done for a plain `sleep 30` (baseline: what the workload alone costs), for
# `airlock run -- sleep 30` and for a minimal `bwrap ... sleep 30`.
#
# Only sleeps that descend from the launchers this script started are
# counted, so other `sleep 30` processes on the host do not mix in. Every
# wait is bounded, and everything started is killed and reaped on exit.
#
# Usage: bash bench/concurrent.sh [N]      (N defaults to 500)
# Env:   AIRLOCK, AIRLOCK_FLAGS (see common.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

N=${1:-500}
SLEEP_SECS=30
WAIT_SECS=$((SLEEP_SECS - 2))   # all N must be up before the first sleep ends
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [N]" >&2; exit 2; }

WORK=$(mktemp -d /tmp/airlock-bench-concurrent.XXXXXX)
LAUNCHERS=()                    # PIDs of the current phase's launchers
declare -A RESTORE=()           # sysctl file -> value to put back on exit

# --- process-tree accounting (one `ps` pass, walked in awk) ---------------------

# tree_stats: prints "RUNNING EXITED ALIVE" for the current launchers:
#   RUNNING  `sleep 30` processes below a launcher (the workloads that are up)
#   EXITED   launchers that are gone or zombies
#   ALIVE    non-zombie processes in the launchers' trees (launchers included)
# With `tree_stats pids` it lists the ALIVE PIDs instead.
tree_stats() {
    printf '%s\n' "${LAUNCHERS[@]}" >"$WORK/launchers"
    ps -e -o pid=,ppid=,stat=,args= | awk -v mode="${1:-stats}" -v want="sleep $SLEEP_SECS" -v self=$$ '
        NR == FNR { launcher[$1] = 1; nl++; next }
        {
            pid = $1; parent[pid] = $2; state[pid] = substr($3, 1, 1)
            $1 = $2 = $3 = ""; sub(/^ +/, ""); args[pid] = $0
        }
        # the launcher a process descends from, or "" (bounded walk). A
        # launcher must still be our child: a PID reused after a launcher
        # exited belongs to someone else.
        function root(p,   i) {
            for (i = 0; i < 64 && p != "" && p > 1; i++) {
                if ((p in launcher) && parent[p] == self) return p
                p = parent[p]
            }
            return ""
        }
        END {
            for (p in launcher)
                if (!(p in state) || state[p] == "Z" || parent[p] != self) exited++
            for (p in state) {
                if (state[p] == "Z" || root(p) == "") continue
                alive++; if (mode == "pids") print p
                if (args[p] == want) running++
            }
            if (mode != "pids") printf "%d %d %d\n", running, exited, alive
        }' "$WORK/launchers" -
}

# kill_all: SIGKILL every process in the launchers' trees, then wait (bounded)
# until they are gone (the launchers are disowned; bash reaps them itself).
kill_all() {
    [ "${#LAUNCHERS[@]}" -gt 0 ] || return 0
    local deadline=$((SECONDS + 60)) pids
    while [ "$SECONDS" -lt "$deadline" ]; do
        pids=$(tree_stats pids)
        [ -n "$pids" ] || break
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.2
    done
    [ -z "$(tree_stats pids)" ] || log "warning: some processes survived SIGKILL for 60s"
    LAUNCHERS=()
}

cleanup() {
    kill_all
    local f
    for f in "${!RESTORE[@]}"; do echo "${RESTORE[$f]}" >"$f" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mem_available_kb() { awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo; }

# settle_mem: wait (max 20s) until MemAvailable moves < 2 MiB over 1s, so
# memory freed late by an earlier phase (e.g. namespaces torn down
# asynchronously) is not credited to the next one.
settle_mem() {
    local a b i
    a=$(mem_available_kb)
    for ((i = 0; i < 20; i++)); do
        sleep 1; b=$(mem_available_kb)
        [ $(( b > a ? b - a : a - b )) -lt 2048 ] && return 0
        a=$b
    done
    echo "note: MemAvailable still moving after 20s (other load on the host?); measuring anyway"
}

# --- limits -------------------------------------------------------------------------
echo "## Limits (N = $N)"
changes=0
# Open files: the host side of each sandbox may hold a few fds.
want_fds=$((N * 8 + 1024))
if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$want_fds" ]; then
    old=$(ulimit -Sn)
    hard=$(ulimit -Hn)
    if [ "$hard" = unlimited ] || [ "$hard" -ge "$want_fds" ]; then ulimit -Sn "$want_fds"; else ulimit -Sn "$hard"; fi
    echo "changed: ulimit -n $old -> $(ulimit -Sn) (this script only)"; changes=1
fi
# raise_sysctl FILE MIN: make sure a /proc/sys value is at least MIN.
raise_sysctl() {
    local f=$1 min=$2 cur
    [ -r "$f" ] || return 0
    cur=$(cat "$f")
    if [ "$cur" -lt "$min" ]; then
        if echo "$min" >"$f" 2>/dev/null; then
            RESTORE[$f]=$cur
            echo "changed: ${f#/proc/sys/} $cur -> $min (restored on exit)"; changes=1
        else
            echo "warning: ${f#/proc/sys/} is $cur < $min and could not be raised"
        fi
    fi
}
# Each sandbox costs a few PIDs (launcher, agent/init, sleep, threads).
procs_now=$(find /proc -maxdepth 1 -name '[0-9]*' | wc -l)
raise_sysctl /proc/sys/kernel/pid_max $((procs_now + N * 8 + 4096))
raise_sysctl /proc/sys/kernel/threads-max $((procs_now + N * 8 + 4096))
for ns in user pid mnt net ipc uts cgroup; do
    raise_sysctl /proc/sys/user/max_${ns}_namespaces $((N * 2 + 256))
done
[ "$changes" -eq 1 ] || echo "no changes needed (ulimit -n $(ulimit -Sn), pid_max $(cat /proc/sys/kernel/pid_max), max_user_namespaces $(cat /proc/sys/user/max_user_namespaces))"
echo

# --- one phase ------------------------------------------------------------------------
declare -A RES_TIME=() RES_MEM=()
NAMES=()

# phase NAME CMD...: launch N copies of CMD (ending in `sleep 30`) and measure.
phase() {
    local name=$1; shift
    NAMES+=("$name")
    echo "## $name: $N x $*"
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "failed: not installed ($1)"; echo; return 0
    fi
    settle_mem
    local before t0 t1 i running=0 exited=0 alive after deadline
    before=$(mem_available_kb)
    : >"$WORK/err-$name"
    t0=$EPOCHREALTIME
    for ((i = 0; i < N; i++)); do
        "$@" </dev/null >/dev/null 2>>"$WORK/err-$name" &
        LAUNCHERS+=("$!")
        disown "$!"   # bash still reaps it, but prints no "Killed" job notice
    done
    t_launch=$EPOCHREALTIME
    # Poll (bounded) until all N workloads run, or no more can come up.
    deadline=$((SECONDS + WAIT_SECS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        read -r running exited alive < <(tree_stats)
        [ "$running" -ge "$N" ] && break
        [ $((running + exited)) -ge "$N" ] && break
        sleep 0.05
    done
    t1=$EPOCHREALTIME
    after=$(mem_available_kb)
    local secs used_kb
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    used_kb=$((before - after))
    printf 'launch loop: %.2f s; processes in the trees: %d\n' \
        "$(awk -v a="$t0" -v b="$t_launch" 'BEGIN { print b - a }')" "$alive"
    if [ "$running" -ge "$N" ]; then
        echo "all $N running after $secs s"
        echo "MemAvailable: -$(kb_to_mib "$used_kb") MiB total, $((used_kb / N)) KiB per sandbox"
        RES_TIME[$name]=$secs; RES_MEM[$name]=$((used_kb / N))
    else
        local why
        why=$(grep -v '^\s*$' "$WORK/err-$name" | sort | uniq -c | sort -rn | head -n3 | cut -c1-200 || true)
        echo "failed: only $running of $N running after $secs s ($exited launchers exited)"
        [ -z "$why" ] || printf 'most common errors:\n%s\n' "$why"
    fi
    kill_all
    echo
}

phase plain sleep "$SLEEP_SECS"
if has_airlock; then
    phase airlock "${AIRLOCK_RUN[@]}" sleep "$SLEEP_SECS"
else
    NAMES+=(airlock); echo "## airlock: $N x ${AIRLOCK_RUN[*]} sleep $SLEEP_SECS"
    echo "failed: not installed ($AIRLOCK)"; echo
fi
phase bwrap "${BWRAP_RUN[@]}" sleep "$SLEEP_SECS"

# --- summary --------------------------------------------------------------------------
echo "## Summary (N = $N)"
printf '%-8s %14s %16s %22s\n' peer "all up (s)" "KiB/sandbox" "KiB/sandbox - plain"
for name in "${NAMES[@]}"; do
    if [ -n "${RES_TIME[$name]:-}" ]; then
        extra="n/a"; [ -n "${RES_MEM[plain]:-}" ] && extra=$((RES_MEM[$name] - RES_MEM[plain]))
        printf '%-8s %14s %16s %22s\n' "$name" "${RES_TIME[$name]}" "${RES_MEM[$name]}" "$extra"
    else
        printf '%-8s %14s\n' "$name" failed
    fi
done
if [ -n "${RES_TIME[airlock]:-}" ] && [ -n "${RES_TIME[bwrap]:-}" ]; then
    awk -v a="${RES_TIME[airlock]}" -v b="${RES_TIME[bwrap]}" \
        -v c="${RES_MEM[airlock]}" -v d="${RES_MEM[bwrap]}" -v p="${RES_MEM[plain]:-0}" 'BEGIN {
        printf "airlock/bwrap: time %.2fx, memory %.2fx", a / b, (d ? c / d : 0)
        if (d - p > 0) printf " (%.2fx net of the workload)", (c - p) / (d - p)
        printf "\n" }'
else
    echo "airlock/bwrap: n/a (one of them did not run)"
fi
