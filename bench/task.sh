#!/usr/bin/env bash
# Task mode on a generated repository of 10,000 files (git-tracked, 100
# directories): `airlock task --patch` with a command that edits 1% of the
# files, against the unsandboxed way to keep the original clean — `cp -a`
# of the repository, the same command, and `git diff --binary` for the
# patch — in the same run. Also airlock's own figure for computing the
# patch (it reads the sandbox's tree and diffs it against the repository).
#
# Usage: bash bench/task.sh      (as root)
# Env:   FILES (default 10000), RUNS (default 5), AIRLOCK
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_DIR"
[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
if ! has_airlock; then AIRLOCK=$(bash scripts/build-release.sh); fi
FILES=${FILES:-10000}
RUNS=${RUNS:-5}
work=$(mktemp -d /tmp/airlock-bench-task.XXXXXX)
trap 'rm -rf "$work"' EXIT
repo=$work/repo
mkdir "$repo"
log "generating a repository of $FILES files"
$PYTHON - "$repo" "$FILES" <<'EOF'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
random.seed(1)
for i in range(n):
    d = os.path.join(root, f"pkg{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"mod{i}.py"), "w") as f:
        for j in range(random.randint(10, 60)):
            f.write(f"def f{j}(x):\n    return x * {j} + {i}\n")
EOF
(cd "$repo" && git init -q && git add -A && GIT_CONFIG_GLOBAL=/dev/null git -c user.email=b@b -c user.name=b commit -qm base)
du -sh --exclude=.git "$repo" | awk '{ print "repository: " $1 " in files" }' >&2
# The command: append a line to every 100th file, add one, delete one.
cmd='for f in pkg*/mod*00.py; do echo "# touched" >> "$f"; done; echo new > added.py; rm -f pkg01/mod1.py'

ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }
a_times=() c_times=() p_times=() patch_ms=()
for i in $(seq "$RUNS"); do
    # airlock task: sandbox, overlay, command, tree read, patch.
    t0=$(date +%s%N)
    "$AIRLOCK" task --repo "$repo" --patch "$work/a.patch" -- sh -c "$cmd" 2>"$work/a.err"
    t1=$(date +%s%N)
    a_times+=("$(ms "$t0" "$t1")")
    patch_ms+=("$(sed -n 's/.*read and diffed in \([0-9]*\) ms.*/\1/p' "$work/a.err")")
    # The unsandboxed reference: a copy, the command, git's own diff.
    t0=$(date +%s%N)
    cp -a "$repo" "$work/copy"
    (cd "$work/copy" && sh -c "$cmd")
    t1=$(date +%s%N)
    (cd "$work/copy" && git add -A && git diff --cached --binary -M >"$work/c.patch")
    t2=$(date +%s%N)
    rm -rf "$work/copy"
    c_times+=("$(ms "$t0" "$t1")")
    p_times+=("$(ms "$t1" "$t2")")
done
# The two patches describe the same change.
files_a=$(grep -c '^diff --git' "$work/a.patch")
files_c=$(grep -c '^diff --git' "$work/c.patch")
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ma=$(median "${a_times[@]}")
mc=$(median "${c_times[@]}")
mp=$(median "${patch_ms[@]}")
mg=$(median "${p_times[@]}")
echo "task.sh: $FILES files, $RUNS runs, medians"
echo "  airlock task --patch (sandbox + command + patch): $ma ms ($files_a files in the patch)"
echo "    of which reading the tree and diffing:         $mp ms"
echo "  cp -a + command (no sandbox, no patch):           $mc ms"
echo "    then git add -A + git diff --binary:            $mg ms ($files_c files in the patch)"
awk -v a="$ma" -v c="$mc" -v g="$mg" 'BEGIN {
    printf "  ratio airlock task / (cp -a + command): %.2f (lower is better)\n", a / c
    printf "  ratio airlock task / (cp -a + command + git diff): %.2f\n", a / (c + g) }'
