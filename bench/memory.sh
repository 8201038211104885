#!/usr/bin/env bash
# Memory footprint of a sandbox runtime's OWN processes while a workload runs.
#
# Starts `RUNTIME ... sleep 30` in the background, waits until the sleep is
# running, then walks the process tree under the PID it started: every process
# in that tree is the runtime's own (the host-side process, Airlock's PID-1
# agent, bwrap's inner init, ...) except the `sleep` and anything below it.
# Sums VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) over them.
#
# Goal for Airlock: <= 4 MiB RSS in total. bwrap is measured for comparison.
#
# Usage: bash bench/memory.sh
# Env:   AIRLOCK, AIRLOCK_FLAGS (see common.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

GOAL_KB=$((4 * 1024))
WAIT_SECS=15            # max wait for the sleep to appear
STARTED=""              # the PID we started and have not reaped yet

# stop_started: kill the tree we started and reap it (once: a reaped PID may
# be reused by someone else's process).
stop_started() {
    [ -n "$STARTED" ] || return 0
    kill_tree "$STARTED"
    wait "$STARTED" 2>/dev/null || true
    STARTED=""
}
WORK=$(mktemp -d /tmp/airlock-bench-mem.XXXXXX)
cleanup() { stop_started; rm -rf "$WORK"; }
trap cleanup EXIT

# find_workload ROOT: print the PID of the `sleep 30` below ROOT, if any.
find_workload() {
    local p
    for p in $(descendants_of "$1"); do
        if [ "$(cat /proc/"$p"/comm 2>/dev/null)" = sleep ] &&
           [ "$(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null)" = "sleep 30 " ]; then
            echo "$p"; return 0
        fi
    done
    return 1
}

# kb FIELD FILE: value in kB of "FIELD: N kB" in FILE (0 if absent/unreadable)
kb() { awk -v f="$1:" '$1 == f { print $2; found = 1 } END { if (!found) print 0 }' "$2" 2>/dev/null || echo 0; }

# measure NAME CMD...: run CMD (which must end in `sleep 30`) and report.
measure() {
    local name=$1; shift
    echo "## $name: $*"
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "failed: not installed ($1)"; echo; return 0
    fi

    local err root sleeper="" deadline
    err=$WORK/$name.err
    "$@" </dev/null >/dev/null 2>"$err" &
    root=$!
    STARTED=$root

    # Wait (bounded) until the workload is running.
    deadline=$((SECONDS + WAIT_SECS))
    while [ "$SECONDS" -lt "$deadline" ] && kill -0 "$root" 2>/dev/null; do
        if sleeper=$(find_workload "$root"); then break; fi
        sleep 0.05
    done
    if [ -z "$sleeper" ]; then
        local why what
        what="sleep did not start within ${WAIT_SECS}s"
        if ! kill -0 "$root" 2>/dev/null; then
            local rc=0; wait "$root" 2>/dev/null || rc=$?; STARTED=""
            what="exited with status $rc before the sleep started"
        fi
        why=$(grep -v '^\s*$' "$err" | tail -n1 | cut -c1-160 || true)
        echo "failed: $what${why:+: $why}"
        stop_started; echo; return 0
    fi
    sleep 0.5   # let the runtime finish any post-exec bookkeeping

    # The runtime's own processes: root + descendants, minus the sleep subtree.
    local excluded own=() p
    excluded=" $sleeper $(descendants_of "$sleeper" | tr '\n' ' ') "
    for p in "$root" $(descendants_of "$root"); do
        [[ $excluded == *" $p "* ]] || own+=("$p")
    done

    # RSS splits into anonymous memory (heap, stacks: private to the
    # process) and file-backed pages (the binary, libc: shared with others).
    local rss pss anon file tot_rss=0 tot_pss=0 ppid comm
    printf '  %-8s %-8s %-16s %10s %10s %10s %10s\n' PID PPID COMM "RSS(KiB)" "PSS(KiB)" "anon" "file"
    for p in "${own[@]}"; do
        rss=$(kb VmRSS /proc/"$p"/status)
        pss=$(kb Pss /proc/"$p"/smaps_rollup)
        anon=$(kb RssAnon /proc/"$p"/status)
        file=$(kb RssFile /proc/"$p"/status)
        ppid=$(awk '$1 == "PPid:" { print $2 }' /proc/"$p"/status 2>/dev/null || echo '?')
        comm=$(cat /proc/"$p"/comm 2>/dev/null || echo '?')
        printf '  %-8s %-8s %-16s %10s %10s %10s %10s\n' "$p" "$ppid" "$comm" "$rss" "$pss" "$anon" "$file"
        tot_rss=$((tot_rss + rss)); tot_pss=$((tot_pss + pss))
    done
    printf '  (workload: sleep pid %s, RSS %s KiB, not counted)\n' \
        "$sleeper" "$(kb VmRSS /proc/"$sleeper"/status)"
    echo "total ($name's ${#own[@]} processes): RSS $(kb_to_mib "$tot_rss") MiB, PSS $(kb_to_mib "$tot_pss") MiB"
    RES_RSS[$name]=$tot_rss; RES_PSS[$name]=$tot_pss

    stop_started
    echo
}

declare -A RES_RSS=() RES_PSS=()   # name -> total KiB
if has_airlock; then
    measure airlock "${AIRLOCK_RUN[@]}" sleep 30
else
    echo "## airlock: ${AIRLOCK_RUN[*]} sleep 30"
    echo "failed: not installed ($AIRLOCK)"; echo
fi
measure bwrap "${BWRAP_RUN[@]}" sleep 30

echo "## Summary"
if [ -n "${RES_RSS[airlock]:-}" ]; then
    verdict="DOES NOT MEET"; [ "${RES_RSS[airlock]:-}" -le "$GOAL_KB" ] && verdict="MEETS"
    echo "airlock: RSS $(kb_to_mib "${RES_RSS[airlock]:-}") MiB, PSS $(kb_to_mib "${RES_PSS[airlock]:-}") MiB -> $verdict the goal (<= 4 MiB RSS in total)"
else
    echo "airlock: n/a (did not run)"
fi
if [ -n "${RES_RSS[bwrap]:-}" ]; then
    echo "bwrap:   RSS $(kb_to_mib "${RES_RSS[bwrap]:-}") MiB, PSS $(kb_to_mib "${RES_PSS[bwrap]:-}") MiB"
fi
if [ -n "${RES_RSS[airlock]:-}" ] && [ -n "${RES_RSS[bwrap]:-}" ]; then
    awk -v a="${RES_RSS[airlock]:-}" -v b="${RES_RSS[bwrap]:-}" -v c="${RES_PSS[airlock]:-}" -v d="${RES_PSS[bwrap]:-}" \
        'BEGIN { printf "airlock/bwrap: RSS %.2fx, PSS %.2fx\n", a / b, (d ? c / d : 0) }'
fi
