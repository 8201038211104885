#!/usr/bin/env bash
# Image import speed: `airlock image import` of a ~200 MB OCI image that
# this script generates (three gzip layers: big incompressible files, many
# small files, text), against plain `tar -xzf` of the same layers into one
# directory. airlock does more (verifies every digest, stores the blobs,
# applies the layers with per-entry checks); the ratio says what that costs.
#
#   bash bench/image.sh            # 3 runs each, prints the medians and the ratio
#   RUNS=5 SIZE_MB=400 bash bench/image.sh
#
# (The time of the first `airlock run --image` of a fresh image against
# later runs comes with --image in `run`.)
set -euo pipefail
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"

RUNS=${RUNS:-3}
SIZE_MB=${SIZE_MB:-200}

if ! has_airlock; then
    log "building airlock (release)"
    AIRLOCK=$(bash "$REPO_DIR/scripts/build-release.sh")
fi

work=$(mktemp -d /var/tmp/airlock-bench-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

log "generating a ${SIZE_MB} MB image in $work"
"$PYTHON" - "$work" "$SIZE_MB" <<'EOF'
import hashlib, io, json, os, random, subprocess, sys, tarfile
work, size_mb = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
layout = os.path.join(work, "layout")
os.makedirs(os.path.join(layout, "blobs", "sha256"))
words = [("w%d" % i).encode() for i in range(5000)]

def layer(n, fill):
    src = os.path.join(work, "src%d" % n)
    os.makedirs(src)
    fill(src)
    tarpath = os.path.join(work, "layer%d.tar" % n)
    subprocess.run(["tar", "-C", src, "-cf", tarpath, "."], check=True)
    subprocess.run(["gzip", "-1", "-k", tarpath], check=True)
    # Kept until the end: ext4 allocates inodes slowly for a while after
    # many deletions, which would slow whichever run comes next.
    return tarpath

def big(src):       # 45%: incompressible files of 1 MiB
    for i in range(size_mb * 45 // 100):
        d = os.path.join(src, "opt/data/%02d" % (i % 50)); os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "blob%d" % i), "wb") as f: f.write(os.urandom(1 << 20))

def small(src):     # 25%: 4 KiB files in a deep-ish tree
    for i in range(size_mb * 25 // 100 * 256):
        d = os.path.join(src, "usr/lib/pkg%03d/mod%02d" % (i % 400, i % 17)); os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "f%d.py" % i), "wb") as f: f.write(os.urandom(4096))

def text(src):      # 30%: compressible text
    for i in range(size_mb * 30 // 100):
        d = os.path.join(src, "usr/share/doc/p%02d" % (i % 30)); os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "doc%d.txt" % i), "wb") as f:
            f.write(b" ".join(rng.choice(words) for _ in range((1 << 20) // 5))[: 1 << 20])

def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""): h.update(b)
    return h.hexdigest()

tars = [layer(1, big), layer(2, small), layer(3, text)]
diff_ids, layers = [], []
for t in tars:
    diff_ids.append("sha256:" + sha(t))
    gz = t + ".gz"
    d = sha(gz)
    os.rename(gz, os.path.join(layout, "blobs", "sha256", d))
    os.symlink(os.path.join(layout, "blobs", "sha256", d), gz)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + d,
                   "size": os.path.getsize(os.path.join(layout, "blobs", "sha256", d))})
    os.remove(t)
def put(obj):
    b = json.dumps(obj).encode()
    d = hashlib.sha256(b).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", d), "wb") as f: f.write(b)
    return {"digest": "sha256:" + d, "size": len(b)}
cfg = put({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
           "rootfs": {"type": "layers", "diff_ids": diff_ids}})
man = put({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": dict(cfg, mediaType="application/vnd.oci.image.config.v1+json"), "layers": layers})
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [dict(man, mediaType="application/vnd.oci.image.manifest.v1+json",
               platform={"architecture": "amd64", "os": "linux"})]}, f)
with open(os.path.join(layout, "oci-layout"), "w") as f: f.write('{"imageLayoutVersion":"1.0.0"}')
EOF
du -sh "$work/layout" >&2

now() { date +%s.%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# Every run extracts into a fresh directory and nothing is deleted until the
# end (see above), so neither side pays for the other's deletions.
t_air=()
t_tar=()
for i in $(seq "$RUNS"); do
    sync
    out="$work/tar-out-$i"
    mkdir "$out"
    s=$(now)
    for l in "$work"/layer*.tar.gz; do tar -xzf "$l" -C "$out"; done
    t_tar+=("$(echo "$(now) - $s" | bc)")

    sync
    s=$(now)
    AIRLOCK_STATE_DIR="$work/state-$i" "$AIRLOCK" image import "$work/layout" --name bench -q >/dev/null
    t_air+=("$(echo "$(now) - $s" | bc)")
    log "run $i: tar ${t_tar[-1]} s, airlock ${t_air[-1]} s"
done

tar_m=$(printf '%s\n' "${t_tar[@]}" | median)
air_m=$(printf '%s\n' "${t_air[@]}" | median)
printf 'image import (%s MB, 3 gzip layers, median of %s)\n' "$SIZE_MB" "$RUNS"
printf '  tar -xzf of the layers   %8.2f s\n' "$tar_m"
printf '  airlock image import     %8.2f s\n' "$air_m"
printf '  ratio airlock/tar        %8.2f\n' "$(echo "$air_m / $tar_m" | bc -l)"
