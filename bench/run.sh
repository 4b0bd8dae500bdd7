#!/usr/bin/env bash
# mybuild against buildah and skopeo, side by side in one run (see bench/README.md).
#
#   bench/run.sh [--runs N] [--smoke] [--only A,B,C,D,S,R,L,M,U,X,F,K,G,E] [--release] [--keep]
#
# As root on Debian: installs the peers with apt when missing, builds mybuild, sets up a
# loop-mounted ext4 work area, starts docker-registry on 127.0.0.1, makes a busybox base
# image, generates the contexts, then times mybuild and the peer alternately (A B A B …)
# and prints the table, also written to bench/RESULTS.md (--smoke: bench/RESULTS-smoke.md
# under the work area, tiny sizes, one run each, nothing committed).
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")

RUNS=5
SMOKE=0
ONLY="A,B,C,D,S,R,L,M,U,X,F,K,G,E"
RELEASE=""
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --runs=*) RUNS=${1#--runs=}; shift ;;
    --smoke) SMOKE=1; shift ;;
    --only) ONLY=$2; shift 2 ;;
    --only=*) ONLY=${1#--only=}; shift ;;
    --release) RELEASE=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$RUNS" in ''|*[!0-9]*|0) echo "bench/run.sh: --runs takes a positive number" >&2; exit 2 ;; esac
want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if [ "$SMOKE" = 1 ]; then
  RUNS=1
  A_DIRS=4 A_FILES=50 A_RUN_FILES=20
  D_DIRS=10 D_FILES=2000
  B_BYTES=$((4 * 1024 * 1024))
  C_SECONDS=0.1
  E_BYTES=$((64 * 1024 * 1024))
  K_CHUNKS=4 K_CHUNK_BYTES=$((256 * 1024))
  G_LAYERS=200 G_LAYER_KIB=4
  IMG_SIZE=3G
  ONLY=${ONLY/,M/}  # no criterion in smoke mode: clippy --all-targets already compiles the benches
else
  A_DIRS=40 A_FILES=2000 A_RUN_FILES=200
  D_DIRS=100 D_FILES=100000
  B_BYTES=$((600 * 1024 * 1024))
  C_SECONDS=1.0
  E_BYTES=$((5 * 1024 * 1024 * 1024))
  K_CHUNKS=100 K_CHUNK_BYTES=$((2 * 1024 * 1024))
  G_LAYERS=200 G_LAYER_KIB=64
  # E keeps up to ~5 copies of its 5 GiB layer at once (see there); the image file is
  # sparse, so the host needs only what is written (~30 GiB at the peak)
  IMG_SIZE=40G
fi

log() { printf '\n== %s\n' "$*" >&2; }
die() { echo "bench/run.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (buildah, overlayfs, the loop mount and mybuild's sandbox need it)"

# --- peers -------------------------------------------------------------------------------
APT_PKGS="buildah skopeo docker-registry busybox-static hyperfine pigz zstd openssl time curl e2fsprogs python3"
missing=""
for t in buildah skopeo docker-registry busybox hyperfine pigz zstd openssl curl mkfs.ext4 python3; do
  command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
done
[ -x /usr/bin/time ] || missing="$missing time"
if [ -n "$missing" ]; then
  log "installing peers with apt (missing:$missing)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq $APT_PKGS >/dev/null
fi

# --- mybuild -----------------------------------------------------------------------------
# Full runs time the release build; smoke mode reuses the debug build CI already made.
# cargo puts it under CARGO_TARGET_DIR when that is set.
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$REPO/$TARGET_DIR ;; esac
if [ -n "${MYBUILD_BIN:-}" ]; then
  MB=$MYBUILD_BIN
elif [ "$SMOKE" = 1 ] && [ -z "$RELEASE" ]; then
  log "cargo build -p mybuild (debug, smoke mode)"
  (cd "$REPO" && cargo build --locked -q -p mybuild)
  MB=$TARGET_DIR/debug/mybuild
else
  log "cargo build --release -p mybuild"
  (cd "$REPO" && cargo build --locked -q --release -p mybuild)
  MB=$TARGET_DIR/release/mybuild
fi
[ -x "$MB" ] || die "no mybuild binary at $MB"

# --- work area ---------------------------------------------------------------------------
# A journaled ext4 image file: the root disk here slows down after bursts of deletes, which
# made the same row drift several-fold during a run (see the notes in bench/README.md).
# Mounted with discard, so what a scenario deletes is given back to the host's disk (a
# full run writes far more than the disk holds; without it the sparse file only grows).
W=$(mktemp -d /tmp/mybuild-bench.XXXXXX)
IMG=${BENCH_IMG_DIR:-/var/tmp}/mybuild-bench.$$.img
WORKAREA="plain directory on $(df --output=fstype "$W" | tail -1)"
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  if [ "$KEEP" = 1 ]; then echo "kept $W (mounted from $IMG: umount it and delete the image when done)" >&2; return; fi
  if mountpoint -q "$W" 2>/dev/null; then
    # buildah may leave overlay mounts of its storage behind
    grep -o " $W/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    umount "$W" || umount -l "$W"
  fi
  rm -f "$IMG"
  rm -rf "$W"
}
trap cleanup EXIT
if truncate -s "$IMG_SIZE" "$IMG" 2>/dev/null && mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$IMG" && mount -o loop,discard "$IMG" "$W" 2>/dev/null; then
  WORKAREA="loop-mounted ext4 ($IMG_SIZE image file, journaled)"
else
  rm -f "$IMG"
  echo "bench/run.sh: loop mount failed; timing on a plain directory (figures may drift)" >&2
fi
log "work area $W: $WORKAREA"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START_EPOCH=$(date +%s)
TSV=$W/results.tsv
: > "$TSV"
FAILED=0
PEER_FAILED=0

# --- timing ------------------------------------------------------------------------------
# timed SCENARIO TOOL BYTES CMD...: one run; wall from EPOCHREALTIME (µs); peak RSS and
# CPU (user+sys) from GNU time, i.e. wait4's rusage: RSS of the largest single process of
# the tree, CPU summed over it.
timed() {
  local sc=$1 tool=$2 bytes=$3 t0 t1 rss cpu
  shift 3
  t0=$EPOCHREALTIME
  if /usr/bin/time -f '%M %U %S' -o "$W/rss" "$@" >/dev/null 2>"$W/last.log"; then
    t1=$EPOCHREALTIME
    read -r rss cpu < <(tail -1 "$W/rss" | awk '{ printf "%d %.2f\n", $1, $2 + $3 }')
    printf '%s\t%s\tok\t%s\t%s\t%s\t\t%s\n' "$sc" "$tool" $(( ${t1/./} - ${t0/./} )) "$rss" "$bytes" "$cpu" >> "$TSV"
    printf '  %-28s %-10s %8.3f s  %6d KiB  cpu %5.2f s\n' "$sc" "$tool" "$(( ${t1/./} - ${t0/./} ))e-6" "$rss" "$cpu" >&2
  else
    # A peer's own failure (buildah's runc, say) is marked in the table, but fails the
    # run only when mybuild's rows fail.
    case "$tool" in
      buildah* | skopeo* | podman*) PEER_FAILED=1 ;;
      *) FAILED=1 ;;
    esac
    printf '%s\t%s\tfail\t0\t0\t0\t%s\n' "$sc" "$tool" "$(tail -1 "$W/last.log" | tr '\t' ' ')" >> "$TSV"
    echo "  FAILED: $sc $tool: $*" >&2
    tail -15 "$W/last.log" | sed 's/^/    /' >&2
  fi
}
# na SCENARIO TOOL REASON: a row that cannot be measured in this build.
na() { printf '%s\t%s\tna\t0\t0\t0\t%s\n' "$1" "$2" "$3" >> "$TSV"; echo "  $1 $2: $3" >&2; }
# alternate SCENARIO PEER BYTES: RUNS pairs of (prep_mb; MBCMD) and (prep_peer; PEERCMD),
# mybuild first; MB_NA set means mybuild's row is "not available". WARMUP=1: one untimed
# pair first (short rows, where a cold page cache or first write would dominate).
alternate() {
  local sc=$1 peer=$2 bytes=$3 i
  [ -z "${MB_NA:-}" ] || na "$sc" mybuild "$MB_NA"
  if [ "${WARMUP:-0}" = 1 ]; then
    if [ -z "${MB_NA:-}" ]; then prep_mb; "${MBCMD[@]}" >/dev/null 2>&1 || true; fi
    prep_peer; "${PEERCMD[@]}" >/dev/null 2>&1 || true
  fi
  for ((i = 1; i <= RUNS; i++)); do
    # sync: each run starts with no dirty pages, so a tool that fsyncs does not pay for
    # the writeback the previous run (or prep's deletes) left behind.
    if [ -z "${MB_NA:-}" ]; then prep_mb; sync; timed "$sc" mybuild "$bytes" "${MBCMD[@]}"; fi
    prep_peer; sync; timed "$sc" "$peer" "$bytes" "${PEERCMD[@]}"
  done
}
noop() { :; }

# --- registries --------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# start_registry NAME: a docker-registry on a free loopback port with an empty store;
# sets REG_<NAME>_PORT. Restarting gives an empty registry (peers skip blobs a registry has).
declare -A REG_PID
start_registry() {
  local name=$1 port dir
  stop_registry "$name"
  port=$(free_port)
  dir=$W/registry-$name
  rm -rf "$dir"; mkdir -p "$dir/data"
  cat > "$dir/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  REG_PID[$name]=$!
  PIDS+=("$!")
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && break
    sleep 0.05
  done
  curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" || die "docker-registry did not start (see $dir/log)"
  printf -v "REG_${name}_PORT" '%s' "$port"
}
stop_registry() {
  local pid=${REG_PID[$1]:-}
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; REG_PID[$1]=""; fi
}

# --- peers' storage ----------------------------------------------------------------------
# buildah and skopeo get their own storage inside the work area, so the machine's
# containers-storage is neither read nor changed.
mkdir -p "$W/containers"
STORAGE_DRIVER=overlay
BUILDAH=(buildah --root "$W/containers/root" --runroot "$W/containers/run" --storage-driver "$STORAGE_DRIVER")
BUILDAH_BUILD=(build --layers --isolation chroot --quiet)
CS="containers-storage:[$STORAGE_DRIVER@$W/containers/root+$W/containers/run]"

# --- base image --------------------------------------------------------------------------
log "busybox base image"
"$REPO/testdata/busybox-rootfs.sh" > "$W/busybox.tar"
TMPL=$W/store-template
"$MB" --root "$TMPL" import "$W/busybox.tar" busybox -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' >/dev/null
start_registry base
BASE_REF=127.0.0.1:$REG_base_PORT/library/busybox:latest
skopeo copy -q --dest-tls-verify=false "oci:$TMPL:busybox:latest" "docker://$BASE_REF"
if ! "${BUILDAH[@]}" pull -q --tls-verify=false "docker://$BASE_REF" >/dev/null 2>"$W/buildah-pull.log"; then
  # overlay on this file system refused: fall back to vfs (slower for the peer; said in RESULTS)
  echo "buildah: overlay storage failed ($(tail -1 "$W/buildah-pull.log")); using vfs" >&2
  rm -rf "$W/containers"; mkdir -p "$W/containers"
  STORAGE_DRIVER=vfs
  BUILDAH=(buildah --root "$W/containers/root" --runroot "$W/containers/run" --storage-driver "$STORAGE_DRIVER")
  CS="containers-storage:[$STORAGE_DRIVER@$W/containers/root+$W/containers/run]"
  "${BUILDAH[@]}" pull -q --tls-verify=false "docker://$BASE_REF" >/dev/null
fi
MB_BASE=busybox:latest

# mb_fresh DIR: a store holding only the base image (what a cold build starts from).
mb_fresh() { rm -rf "$1"; cp -a "$TMPL" "$1"; }
# mb_clone SRC DST: a copy of store SRC, as it was, for a run that adds to it (a first
# push remembers its compressed layers in the store, so each timed push starts from a
# copy of the built store). Blobs and snapshots are hard links: the store never changes
# a file in place (new content is written beside and renamed), and what the run adds is
# dropped with the copy.
mb_clone() {
  local e
  rm -rf "$2"
  mkdir -p "$2"
  while IFS= read -r -d '' e; do
    case "${e##*/}" in
      blobs | snapshots-v1) cp -al "$e" "$2/" ;;
      *) cp -a "$e" "$2/" ;;
    esac
  done < <(find "$1" -mindepth 1 -maxdepth 1 -print0)
}
# buildah_clean TAG...: drop these images and every unnamed intermediate layer image.
buildah_clean() {
  "${BUILDAH[@]}" rmi -f "$@" >/dev/null 2>&1 || true
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
}
# buildah_rm_repo REPO: drop every image of REPO (the cache images `--cache-from` tags).
buildah_rm_repo() {
  local imgs
  imgs=$("${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep -F "$1:" || true)
  # shellcheck disable=SC2086
  [ -z "$imgs" ] || "${BUILDAH[@]}" rmi -f $imgs >/dev/null 2>&1 || true
}
# reg_bytes PORT REPO TAG: the compressed size of an image in a loopback registry (its
# layers and config, as its manifest lists them); 0 when it is not there.
reg_bytes() {
  curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
    "http://127.0.0.1:$1/v2/$2/manifests/$3" 2>/dev/null | python3 -c '
import json, sys
try:
    m = json.load(sys.stdin)
    print(sum(l["size"] for l in m["layers"]) + m["config"]["size"])
except Exception:
    print(0)' || echo 0
}
# free_bytes DIR: bytes free for writing under DIR: the work area's file system, and
# when it is a loop-mounted image, the disk holding the image file too.
free_bytes() {
  local a h
  a=$(df -B1 --output=avail "$1" | tail -1 | tr -d ' ')
  if [ -f "$IMG" ]; then
    h=$(df -B1 --output=avail "$(dirname "$IMG")" | tail -1 | tr -d ' ')
    [ "$h" -ge "$a" ] || a=$h
  fi
  echo "$a"
}

# --- what this mybuild can do ------------------------------------------------------------
# Probed, never assumed: rows whose feature is missing say so instead of showing a number.
log "probing mybuild features"
mkdir -p "$W/probe"
printf 'FROM busybox\nRUN head -c 16 /dev/urandom | od -x > /r\n' > "$W/probe/Dockerfile"
mb_fresh "$W/probe-store"
# The RUN writes random bytes, so its layer is the same twice only when the step was cached.
last_layer() {
  "$MB" --root "$W/probe-store" build -q -t probe "$W/probe" >/dev/null 2>&1 || return 0
  "$MB" --root "$W/probe-store" inspect probe 2>/dev/null \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["Manifest"]["layers"][-1]["digest"])' 2>/dev/null || true
}
id1=$(last_layer)
id2=$(last_layer)
if [ -n "$id1" ] && [ "$id1" = "$id2" ]; then
  HAVE_CACHE=""
else
  HAVE_CACHE="mybuild: not available in this build (no step cache: a rebuild reruns every step)"
fi
rm -rf "$W/probe-store"
# (`mybuild help VERB`: plain `mybuild push --help` would be read as a build of context "push")
if "$MB" help push >/dev/null 2>&1; then HAVE_PUSH=""; else HAVE_PUSH="mybuild: not available in this build (no push)"; fi
if "$MB" help pull >/dev/null 2>&1; then HAVE_PULL=""; else HAVE_PULL="mybuild: not available in this build (no pull)"; fi
# How mybuild is told a loopback registry speaks plain HTTP, if it needs telling.
MB_INSECURE_FLAG=""
if [ -z "$HAVE_PUSH" ]; then
  case "$("$MB" help push 2>&1)" in
    *--insecure-registry*) MB_INSECURE_FLAG=--insecure-registry ;;
  esac
fi
# mb_reg PORT: mybuild's registry options for the loopback registry on PORT
mb_reg() { MB_REG=(); [ -z "$MB_INSECURE_FLAG" ] || MB_REG=("$MB_INSECURE_FLAG" "127.0.0.1:$1"); }
echo "  step cache: ${HAVE_CACHE:-yes}; push: ${HAVE_PUSH:-yes}; pull: ${HAVE_PULL:-yes}" >&2

# --- contexts (deterministic) ------------------------------------------------------------
log "generating contexts"
# A: A_FILES small files in A_DIRS folders; sizes and contents depend only on the index.
CA=$W/ctx-a
mkdir -p "$CA/src"
per=$((A_FILES / A_DIRS))
line="abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
for ((d = 0; d < A_DIRS; d++)); do
  dir=$(printf '%s/src/d%02d' "$CA" "$d")
  mkdir -p "$dir"
  for ((f = 0; f < per; f++)); do
    n=$((d * per + f))
    {
      printf 'file %d\n' "$n"
      for ((k = 0; k < (n * 37 % 60) + 2; k++)); do printf '%d %s\n' "$k" "$line"; done
    } > "$(printf '%s/f%04d.txt' "$dir" "$f")"
  done
done
cat > "$CA/Dockerfile" <<EOF
ARG BASE=busybox
FROM \$BASE
ENV APP_HOME=/app MODE=bench
WORKDIR /app
COPY src/ ./src/
RUN mkdir -p gen && i=0 && while [ \$i -lt $A_RUN_FILES ]; do echo "generated \$i" > gen/g\$i.txt; i=\$((i+1)); done
CMD ["/bin/sh"]
EOF
A_BYTES=$(du -sb "$CA/src" | cut -f1)

# B: real binaries from this machine, in sorted path order, up to B_BYTES.
CB=$W/ctx-b
mkdir -p "$CB/data"
# Compilers and helpers first, then shared libraries; a file that would pass the size is
# skipped so smaller ones after it still count.
{
  find /usr/lib/gcc /usr/libexec -type f -size +0 -printf '%s\t%p\n' 2>/dev/null | sort -t "$(printf '\t')" -k2,2
  find /usr/lib/x86_64-linux-gnu -type f -size +0 -printf '%s\t%p\n' 2>/dev/null | sort -t "$(printf '\t')" -k2,2
} | awk -F '\t' -v max="$B_BYTES" 'sum + $1 <= max { sum += $1; print $2 }' > "$W/b-files"
# --hard-dereference: hard-linked names become files of their own, so the context holds
# B_BYTES of data rather than fewer inodes
tar --hard-dereference -cf - -T "$W/b-files" 2>/dev/null | tar -xf - -C "$CB/data"
cat > "$CB/Dockerfile" <<'EOF'
ARG BASE=busybox
FROM $BASE
COPY data/ /data/
RUN cp -a /data /data2
EOF
B_BYTES=$(du -sb "$CB/data" | cut -f1)
B_FILES=$(wc -l < "$W/b-files")
echo "  A: $A_FILES files, $A_BYTES bytes; B: $B_FILES files, $B_BYTES bytes" >&2

# C: two independent CPU-bound stages; the loop count is calibrated to C_SECONDS here.
calib=200000
t0=$EPOCHREALTIME
busybox sh -c "i=0; while [ \$i -lt $calib ]; do i=\$((i+1)); done"
t1=$EPOCHREALTIME
C_LOOPS=$(python3 -c "print(max(1000, int($calib * $C_SECONDS / max(1e-3, (${t1/./} - ${t0/./}) / 1e6))))")
CC=$W/ctx-c
mkdir -p "$CC"
cat > "$CC/Dockerfile" <<EOF
ARG BASE=busybox
FROM \$BASE AS s1
RUN i=0; while [ \$i -lt $C_LOOPS ]; do i=\$((i+1)); done; echo s1 \$i > /s1
FROM \$BASE AS s2
RUN i=0; while [ \$i -lt $C_LOOPS ]; do i=\$((i+1)); done; echo s2 \$i > /s2
FROM \$BASE
COPY --from=s1 /s1 /s1
COPY --from=s2 /s2 /s2
CMD ["cat", "/s1", "/s2"]
EOF

# D: D_FILES tiny files in D_DIRS folders (a monorepo's context).
CD=$W/ctx-d
mkdir -p "$CD/src"
python3 - "$CD/src" "$D_DIRS" "$D_FILES" <<'PY'
import os, sys
root, dirs, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
per = files // dirs
for d in range(dirs):
    os.makedirs(f"{root}/d{d:03d}", exist_ok=True)
    for f in range(per):
        with open(f"{root}/d{d:03d}/f{f:05d}.txt", "w") as fh:
            fh.write(f"{d} {f}\n")
PY
cat > "$CD/Dockerfile" <<'EOF'
ARG BASE=busybox
FROM $BASE
COPY src/ /src/
RUN ls /src | wc -l > /dirs
EOF
D_BYTES=$(du -sb "$CD/src" | cut -f1)

# Builds: mybuild in store $S (set per scenario), buildah from the pulled base.
mb_build() { MBCMD=("$MB" --root "$S" build -q --progress plain "$@"); }
bu_build() { PEERCMD=("${BUILDAH[@]}" "${BUILDAH_BUILD[@]}" --build-arg "BASE=$BASE_REF" "$@"); }
S=$W/store

# --- A: small files ----------------------------------------------------------------------
if want A; then
  WARMUP=1
  log "A: busybox; ENV, WORKDIR, COPY of $A_FILES files, RUN writing $A_RUN_FILES files, CMD"
  MB_NA=""
  mb_build --no-cache -t bench-a "$CA"; bu_build --no-cache -t bench-a "$CA"
  prep_mb() { mb_fresh "$S"; }
  prep_peer() { buildah_clean bench-a; }
  alternate "A cold" buildah 0

  # warm both caches once, untimed
  mb_fresh "$S"
  "$MB" --root "$S" build -q -t bench-a "$CA" >/dev/null
  "${BUILDAH[@]}" "${BUILDAH_BUILD[@]}" --build-arg "BASE=$BASE_REF" -t bench-a "$CA" >/dev/null
  MB_NA=$HAVE_CACHE
  mb_build -t bench-a "$CA"; bu_build -t bench-a "$CA"
  prep_mb() { :; }
  prep_peer() { :; }
  alternate "A no-op rebuild" buildah 0

  # each run sees a file whose content its tool has not built before
  edits=0
  touch_one() { edits=$((edits + 1)); printf 'file 0 edit %d\n' "$edits" > "$CA/src/d00/f0000.txt"; }
  prep_mb() { touch_one; }
  prep_peer() { touch_one; }
  alternate "A one-file change" buildah 0
  MB_NA=""
  WARMUP=0
  buildah_clean bench-a
fi

# --- D: a context of many small files ---------------------------------------------------
if want D; then
  log "D: COPY of a context of $D_FILES files in $D_DIRS folders, one RUN"
  MB_NA=""
  mb_build --no-cache -t bench-d "$CD"; bu_build --no-cache -t bench-d "$CD"
  prep_mb() { mb_fresh "$S"; }
  prep_peer() { buildah_clean bench-d; }
  alternate "D cold" buildah "$D_BYTES"

  mb_fresh "$S"
  "$MB" --root "$S" build -q -t bench-d "$CD" >/dev/null
  "${BUILDAH[@]}" "${BUILDAH_BUILD[@]}" --build-arg "BASE=$BASE_REF" -t bench-d "$CD" >/dev/null
  MB_NA=$HAVE_CACHE
  WARMUP=1
  mb_build -t bench-d "$CD"; bu_build -t bench-d "$CD"
  prep_mb() { :; }
  prep_peer() { :; }
  alternate "D no-op rebuild" buildah "$D_BYTES"
  MB_NA=""
  WARMUP=0
  buildah_clean bench-d
fi

# mybuild's first push of image B to a fresh, empty registry (peers remember where blobs
# were), from a copy of the built store: the push compresses the layers and remembers
# them, which would make a second run a different measurement.
PUSH_STORE=$W/store-push
# mb_first_push STORE IMAGE REPO:TAG: MBCMD pushes IMAGE from a fresh copy of STORE (no
# compressed variant remembered) to an empty registry, as REPO:TAG.
mb_first_push() {
  start_registry target
  mb_reg "$REG_target_PORT"
  mb_clone "$1" "$PUSH_STORE"
  MBCMD=("$MB" --root "$PUSH_STORE" push "${MB_REG[@]}" "$2" "127.0.0.1:$REG_target_PORT/$3")
}
prep_mb_push() { mb_first_push "$BSTORE" bench-b:gzip bench/b:1; }

# --- B: large binaries -------------------------------------------------------------------
BSTORE=$W/store-b  # keeps the last gzip build of B, never pushed, for the registry rows
if want B; then
  for comp in gzip zstd; do
    log "B: COPY of $B_BYTES bytes of binaries, RUN cp -a of it; $comp; cold"
    mb_build --no-cache --compression "$comp" -t "bench-b:$comp" "$CB"
    bu_build --no-cache -t "bench-b:$comp" "$CB"
    prep_mb() { mb_fresh "$S"; }
    prep_peer() { buildah_clean "bench-b:$comp"; }
    alternate "B cold ($comp)" buildah "$B_BYTES"
    if [ "$comp" = gzip ]; then rm -rf "$BSTORE"; mv "$S" "$BSTORE"; fi
  done
  # Both keep built layers uncompressed and compress them when pushing.
  log "B: first push of the gzip image to a fresh registry"
  MB_NA=$HAVE_PUSH
  prep_mb() { prep_mb_push; }
  prep_peer() {
    rm -rf "$PUSH_STORE"
    start_registry target
    PEERCMD=("${BUILDAH[@]}" push --quiet --tls-verify=false --compression-format gzip bench-b:gzip "docker://127.0.0.1:$REG_target_PORT/bench/b:1")
  }
  alternate "B push (gzip)" buildah "$B_BYTES"
  rm -rf "$PUSH_STORE"
  buildah_clean bench-b:gzip bench-b:zstd

  # One command for mybuild (`build --push`: each final layer is compressed while later
  # steps run); buildah's build and then its push, timed together.
  log "B: build and push, gzip, to a fresh registry"
  printf '%q ' "${BUILDAH[@]}" "${BUILDAH_BUILD[@]}" --build-arg "BASE=$BASE_REF" --no-cache -t bench-b:push "$CB" > "$W/bu-build-push.sh"
  printf '>/dev/null && ' >> "$W/bu-build-push.sh"
  printf '%q ' "${BUILDAH[@]}" push --quiet --tls-verify=false --compression-format gzip bench-b:push >> "$W/bu-build-push.sh"
  printf '"docker://$1"\n' >> "$W/bu-build-push.sh"
  prep_mb() {
    mb_fresh "$S"
    start_registry target
    mb_reg "$REG_target_PORT"
    MBCMD=("$MB" --root "$S" build -q --progress plain "${MB_REG[@]}" --no-cache --compression gzip --push
      -t "127.0.0.1:$REG_target_PORT/bench/b:1" "$CB")
  }
  prep_peer() {
    rm -rf "$S"
    buildah_clean bench-b:push
    start_registry target
    PEERCMD=(bash "$W/bu-build-push.sh" "127.0.0.1:$REG_target_PORT/bench/b:1")
  }
  alternate "B build + push (gzip)" buildah "$B_BYTES"
  MB_NA=""
  rm -rf "$S"
  stop_registry target
  buildah_clean bench-b:push
fi

# --- C: parallel stages ------------------------------------------------------------------
if want C; then
  WARMUP=1
  log "C: two stages of ~${C_SECONDS}s of CPU each, feeding a final stage ($C_LOOPS loops)"
  prep_mb() { mb_fresh "$S"; }
  prep_peer() { buildah_clean bench-c; }
  for tgt in s1 s2; do
    mb_build --no-cache --target "$tgt" -t bench-c "$CC"; bu_build --no-cache --target "$tgt" -t bench-c "$CC"
    alternate "C stage $tgt alone" buildah 0
  done
  # buildah runs one stage at a time unless given --jobs
  mb_build --no-cache -t bench-c "$CC"; bu_build --no-cache --jobs 2 -t bench-c "$CC"
  alternate "C cold" buildah 0
  WARMUP=0
  buildah_clean bench-c
fi

# --- U: rootless: A and C built by an ordinary user, against buildah rootless ------------
# The user (BENCH_ROOTLESS_USER, default mbtest, with subordinate ranges: see
# testdata/rootless-users.sh) runs a copy of mybuild (the build tree may be unreadable to
# it) with its own store, and buildah with its own storage, both under the work area.
if want U; then
  RL_USER=${BENCH_ROOTLESS_USER:-mbtest}
  RL_NA=""
  if ! id "$RL_USER" >/dev/null 2>&1; then
    RL_NA="mybuild: not measured (no user $RL_USER: sh testdata/rootless-users.sh makes one)"
  elif ! command -v newuidmap >/dev/null 2>&1 || ! command -v setpriv >/dev/null 2>&1; then
    RL_NA="mybuild: not measured (apt-get install uidmap util-linux)"
  fi
  if [ -n "$RL_NA" ]; then
    for sc in "U A cold (rootless)" "U A no-op rebuild (rootless)" "U C cold (rootless)"; do na "$sc" mybuild "$RL_NA"; done
  else
    log "U: A and C as $RL_USER (rootless), against buildah run rootless by the same user"
    RL=$W/rootless
    mkdir -p "$RL/bin" "$RL/home/run"
    chmod 755 "$W" "$RL" "$RL/bin"
    cp "$MB" "$RL/bin/mybuild"
    chmod 755 "$RL/bin/mybuild"
    "$MB" --root "$TMPL" save -o "$RL/busybox.tar" busybox
    chmod 644 "$RL/busybox.tar"
    chown -R "$RL_USER": "$RL/home"
    chmod 700 "$RL/home/run"
    AS_USER=(setpriv --reuid="$RL_USER" --regid="$RL_USER" --init-groups env -i
      PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$RL/home" XDG_RUNTIME_DIR="$RL/home/run")
    RMB=("${AS_USER[@]}" "$RL/bin/mybuild" --root "$RL/home/store")
    RBUILDAH=("${AS_USER[@]}" buildah --root "$RL/home/containers/root" --runroot "$RL/home/containers/run" --storage-driver "$STORAGE_DRIVER")
    "${RBUILDAH[@]}" pull -q --tls-verify=false "docker://$BASE_REF" >/dev/null
    rl_fresh() { rm -rf "$RL/home/store"; "${RMB[@]}" load -i "$RL/busybox.tar" >/dev/null; }
    rl_clean() { "${RBUILDAH[@]}" rmi -f "$@" >/dev/null 2>&1 || true; "${RBUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true; }
    rl_build() { MBCMD=("${RMB[@]}" build -q --progress plain "$@"); }
    rl_bu_build() { PEERCMD=("${RBUILDAH[@]}" "${BUILDAH_BUILD[@]}" --build-arg "BASE=$BASE_REF" "$@"); }
    WARMUP=1
    prep_mb() { rl_fresh; }
    prep_peer() { rl_clean bench-a; }
    rl_build --no-cache -t bench-a "$CA"; rl_bu_build --no-cache -t bench-a "$CA"
    alternate "U A cold (rootless)" buildah 0
    rl_fresh
    "${RMB[@]}" build -q -t bench-a "$CA" >/dev/null
    "${RBUILDAH[@]}" "${BUILDAH_BUILD[@]}" --build-arg "BASE=$BASE_REF" -t bench-a "$CA" >/dev/null
    prep_mb() { :; }
    prep_peer() { :; }
    MB_NA=$HAVE_CACHE
    rl_build -t bench-a "$CA"; rl_bu_build -t bench-a "$CA"
    alternate "U A no-op rebuild (rootless)" buildah 0
    MB_NA=""
    prep_mb() { rl_fresh; }
    prep_peer() { rl_clean bench-c; }
    rl_build --no-cache -t bench-c "$CC"; rl_bu_build --no-cache --jobs 2 -t bench-c "$CC"
    alternate "U C cold (rootless)" buildah 0
    WARMUP=0
    rl_clean bench-a bench-c
  fi
fi

# --- S: what the RUN sandbox costs per step --------------------------------------------
# 20 RUN steps, --no-cache: confined against unconfined (RUN --security=insecure, both
# without a network), the default network against none, and buildah for scale.
if want S; then
  CS=$W/ctx-s CSI=$W/ctx-s-insecure
  mkdir -p "$CS" "$CSI"
  { echo 'ARG BASE=busybox'; echo 'FROM $BASE'; for i in $(seq 20); do echo "RUN echo $i > /s$i"; done; } > "$CS/Dockerfile"
  { echo 'ARG BASE=busybox'; echo 'FROM $BASE'; for i in $(seq 20); do echo "RUN --security=insecure echo $i > /s$i"; done; } > "$CSI/Dockerfile"
  log "S: 20 RUN steps: confinement and the private network, side by side"
  WARMUP=1
  prep_mb() { mb_fresh "$S"; }
  prep_peer() { mb_fresh "$S"; }
  mb_build --no-cache --network=none -t bench-s "$CS"
  PEERCMD=("$MB" --root "$S" build -q --progress plain --no-cache --network=none --allow security.insecure -t bench-s "$CSI")
  alternate "S 20 RUNs, no network" unconfined 0
  mb_build --no-cache -t bench-s "$CS"
  PEERCMD=("$MB" --root "$S" build -q --progress plain --no-cache --network=none -t bench-s "$CS")
  alternate "S 20 RUNs, default network" network-none 0
  prep_peer() { buildah_clean bench-s; }
  bu_build --no-cache -t bench-s "$CS"
  alternate "S 20 RUNs vs buildah" buildah 0
  WARMUP=0
  buildah_clean bench-s
fi

# --- Registry: mybuild push/pull against skopeo copy (and buildah pull), same image B ---
if want R; then
  if [ ! -d "$BSTORE" ]; then
    log "R: building image B once (untimed)"
    mb_fresh "$BSTORE"
    "$MB" --root "$BSTORE" build -q -t bench-b:gzip "$CB" >/dev/null
  fi
  # The compressed size: what mybuild's push of it sends (skopeo's when mybuild has no push).
  start_registry target
  mb_reg "$REG_target_PORT"
  R_REF=127.0.0.1:$REG_target_PORT/bench/b
  if [ -z "$HAVE_PUSH" ]; then
    mb_clone "$BSTORE" "$PUSH_STORE"
    "$MB" --root "$PUSH_STORE" push "${MB_REG[@]}" bench-b:gzip "$R_REF:1" >/dev/null 2>&1 || true
  fi
  R_BYTES=$(reg_bytes "$REG_target_PORT" bench/b 1)
  if [ "$R_BYTES" = 0 ]; then
    skopeo copy -q --dest-tls-verify=false "oci:$BSTORE:bench-b:gzip" "docker://$R_REF:1"
    R_BYTES=$(reg_bytes "$REG_target_PORT" bench/b 1)
  fi
  log "R: push and pull of image B ($R_BYTES bytes compressed) against skopeo copy and buildah pull"
  MB_NA=$HAVE_PUSH
  prep_mb() { prep_mb_push; }
  prep_peer() {
    rm -rf "$PUSH_STORE"
    start_registry target
    PEERCMD=(skopeo copy -q --dest-tls-verify=false "oci:$BSTORE:bench-b:gzip" "docker://127.0.0.1:$REG_target_PORT/bench/b:1")
  }
  alternate "R push" skopeo "$R_BYTES"

  # A registry that already holds every blob, each tool's own (their gzip streams
  # differ), and a store that remembers its compressed layers.
  start_registry target
  mb_reg "$REG_target_PORT"
  R_REF=127.0.0.1:$REG_target_PORT/bench/b
  mb_clone "$BSTORE" "$PUSH_STORE"
  [ -n "$HAVE_PUSH" ] || "$MB" --root "$PUSH_STORE" push "${MB_REG[@]}" bench-b:gzip "$R_REF:1" >/dev/null 2>&1 || true
  skopeo copy -q --dest-tls-verify=false "oci:$BSTORE:bench-b:gzip" "docker://$R_REF:skopeo"
  [ "$(reg_bytes "$REG_target_PORT" bench/b 1)" != 0 ] ||
    skopeo copy -q --dest-tls-verify=false "oci:$BSTORE:bench-b:gzip" "docker://$R_REF:1"
  MBCMD=("$MB" --root "$PUSH_STORE" push "${MB_REG[@]}" bench-b:gzip "$R_REF:1")
  PEERCMD=(skopeo copy -q --dest-tls-verify=false "oci:$BSTORE:bench-b:gzip" "docker://$R_REF:skopeo")
  prep_mb() { :; }
  prep_peer() { :; }
  WARMUP=1 alternate "R no-op push" skopeo 0
  rm -rf "$PUSH_STORE"

  # Both pull mybuild's push (tag 1).
  MB_NA=$HAVE_PULL
  MBCMD=("$MB" --root "$W/pull-store" pull "${MB_REG[@]}" "$R_REF:1")
  PEERCMD=(skopeo copy -q --src-tls-verify=false "docker://$R_REF:1" "oci:$W/pull-oci:b")
  prep_mb() { rm -rf "$W/pull-store"; }
  prep_peer() { rm -rf "$W/pull-oci"; }
  alternate "R pull" skopeo "$R_BYTES"
  MB_NA=""
  rm -rf "$W/pull-oci"

  # Into the store unpacked, as a build or a container needs it. `mybuild pull` keeps the
  # blobs only, so mybuild's row is a build of `FROM` the image and a LABEL: its base
  # pull unpacks each layer into the store while the layer arrives. buildah pull unpacks
  # into its own storage. Both start holding the busybox base.
  CRU=$W/ctx-r-unpacked
  mkdir -p "$CRU"
  printf 'FROM %s\nLABEL bench.pulled=1\n' "$R_REF:1" > "$CRU/Dockerfile"
  MBCMD=("$MB" --root "$W/pull-store" build -q --progress plain "${MB_REG[@]}" -t bench-r-unpacked "$CRU")
  PEERCMD=("${BUILDAH[@]}" pull -q --tls-verify=false "docker://$R_REF:1")
  prep_mb() { mb_fresh "$W/pull-store"; }
  prep_peer() { rm -rf "$W/pull-store"; buildah_clean "$R_REF:1"; }
  alternate "R pull (unpacked)" buildah "$R_BYTES"
  # said, not assumed: the build leaves a snapshot of each of B's layers (untimed run)
  prep_mb
  if "${MBCMD[@]}" >/dev/null 2>&1; then
    n_snap=$(find "$W/pull-store/snapshots-v1" -mindepth 1 -maxdepth 1 -type d ! -name tmp 2>/dev/null | wc -l)
    echo "  R pull (unpacked): mybuild's store holds $n_snap layer snapshots (B has 3 layers: base, COPY, RUN)" >&2
  fi
  rm -rf "$W/pull-store"
  buildah_clean "$R_REF:1"
  stop_registry target
fi

# --- F: a fresh store rebuilding A from a registry cache ----------------------------------
# The cache is exported once (untimed) by each tool to its own repository of one registry;
# each timed run starts with no record or layer of A: mybuild a store holding only the
# base, buildah its storage without A's images, layers and pulled cache images.
if want F; then
  log "F: A rebuilt on a fresh store with --cache-from type=registry (nothing changed)"
  start_registry cache
  mb_reg "$REG_cache_PORT"
  F_REF=127.0.0.1:$REG_cache_PORT/bench/a-cache
  F_BU_REF=127.0.0.1:$REG_cache_PORT/bench/a-cache-buildah
  F_NA=$HAVE_CACHE
  if [ -z "$F_NA" ]; then
    mb_fresh "$S"
    if ! "$MB" --root "$S" build -q "${MB_REG[@]}" --no-cache --cache-to "type=registry,ref=$F_REF,mode=max" -t bench-a "$CA" >/dev/null 2>"$W/last.log"; then
      F_NA="mybuild: failed to export the cache ($(tail -1 "$W/last.log" | tr '\t' ' '))"
      FAILED=1
    fi
  fi
  buildah_clean bench-a
  "${BUILDAH[@]}" "${BUILDAH_BUILD[@]}" --build-arg "BASE=$BASE_REF" --tls-verify=false --no-cache \
    --cache-to "$F_BU_REF" -t bench-a "$CA" >/dev/null 2>"$W/last.log" ||
    echo "  buildah --cache-to failed: $(tail -1 "$W/last.log")" >&2
  MB_NA=$F_NA
  WARMUP=1
  prep_mb() { mb_fresh "$S"; }
  prep_peer() { buildah_clean bench-a; buildah_rm_repo "$F_BU_REF"; buildah_clean; }
  mb_build "${MB_REG[@]}" --cache-from "type=registry,ref=$F_REF" -t bench-a "$CA"
  bu_build --tls-verify=false --cache-from "$F_BU_REF" -t bench-a "$CA"
  alternate "F rebuild from registry cache" buildah 0
  WARMUP=0
  MB_NA=""
  buildah_clean bench-a
  buildah_rm_repo "$F_BU_REF"
  buildah_clean
  rm -rf "$S"
  stop_registry cache
fi

# --- K: exported cache mounts --------------------------------------------------------------
# A RUN that fills a cache mount with K_CHUNKS files of gzip -9'd base64 of random bytes
# (CPU-bound: ~30 MB/s of input here), skipping the files the mount already holds. The
# cache is exported once (untimed) twice over: with the mount (cache-mounts=true) and
# without. Each timed run rewrites a source file the RUN depends on, on a fresh store:
# the RUN runs again, with the restored mount or an empty one.
if want K; then
  CK=$W/ctx-k
  mkdir -p "$CK/src"
  echo "edit 0" > "$CK/src/version"
  cat > "$CK/Dockerfile" <<DF
ARG BASE=busybox
FROM \$BASE
COPY src/ /src/
RUN --mount=type=cache,target=/cache,sharing=locked i=0; n=0; while [ \$i -lt $K_CHUNKS ]; do if [ -s /cache/c\$i.gz ]; then n=\$((n+1)); else head -c $K_CHUNK_BYTES /dev/urandom | base64 | gzip -9 > /cache/c\$i.gz; fi; i=\$((i+1)); done; echo "\$n of $K_CHUNKS cached" > /kept; cat /src/version > /out
DF
  K_BYTES=$((K_CHUNKS * K_CHUNK_BYTES))
  log "K: a RUN filling a cache mount ($K_CHUNKS files, ~$K_BYTES bytes), rebuilt on a fresh store after a source change"
  start_registry cache
  mb_reg "$REG_cache_PORT"
  K_MOUNTS=127.0.0.1:$REG_cache_PORT/bench/k-cache-mounts
  K_PLAIN=127.0.0.1:$REG_cache_PORT/bench/k-cache
  K_NA=$HAVE_CACHE
  if [ -z "$K_NA" ]; then
    mb_fresh "$S"
    if ! "$MB" --root "$S" build -q "${MB_REG[@]}" --no-cache \
      --cache-to "type=registry,ref=$K_MOUNTS,mode=max,cache-mounts=true" \
      --cache-to "type=registry,ref=$K_PLAIN,mode=max" -t bench-k "$CK" >/dev/null 2>"$W/last.log"; then
      K_NA="mybuild: failed to export the cache ($(tail -1 "$W/last.log" | tr '\t' ' '))"
      FAILED=1
    fi
  fi
  k_edits=0
  k_edit() { k_edits=$((k_edits + 1)); echo "edit $k_edits" > "$CK/src/version"; }
  if [ -n "$K_NA" ]; then
    na "K rebuild, fresh store" mybuild "$K_NA"
    na "K rebuild, fresh store" no-cache-mounts "${K_NA/mybuild: /}"
  fi
  prep_mb() { mb_fresh "$S"; k_edit; }
  prep_peer() { mb_fresh "$S"; k_edit; }
  mb_build "${MB_REG[@]}" --cache-from "type=registry,ref=$K_MOUNTS" -t bench-k "$CK"
  PEERCMD=("$MB" --root "$S" build -q --progress plain "${MB_REG[@]}" --cache-from "type=registry,ref=$K_PLAIN" -t bench-k "$CK")
  if [ -z "$K_NA" ]; then
    alternate "K rebuild, fresh store" no-cache-mounts "$K_BYTES"
    # said, not assumed: with the mount restored the RUN found every file
    prep_mb; "${MBCMD[@]}" >/dev/null 2>&1 || true
    kept=$("$MB" --root "$S" run --rm --network none bench-k cat /kept 2>/dev/null || echo "unknown")
    echo "  K: after a rebuild with the exported mount, the RUN found: $kept" >&2
  fi
  rm -rf "$S"
  stop_registry cache
fi

# --- G: an image of many layers, pushed and pulled -----------------------------------------
# G_LAYERS COPY steps of one file of random bytes each (sizes cycle through 1..8 ×
# G_LAYER_KIB), so the transfers' parallelism is what is measured; no fixed target.
if want G; then
  CG=$W/ctx-g
  mkdir -p "$CG/f"
  python3 - "$CG" "$G_LAYERS" "$G_LAYER_KIB" <<'PY'
import random, sys
root, n, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(17)
with open(f"{root}/Dockerfile", "w") as df:
    df.write("ARG BASE=busybox\nFROM $BASE\n")
    for i in range(n):
        with open(f"{root}/f/l{i:03d}", "wb") as fh:
            fh.write(rnd.randbytes((i % 8 + 1) * kib * 1024))
        df.write(f"COPY f/l{i:03d} /g/\n")
PY
  GSTORE=$W/store-g
  log "G: an image of $G_LAYERS layers (plus the base), built once (untimed), pushed and pulled"
  mb_fresh "$GSTORE"
  G_NA=""
  if ! "$MB" --root "$GSTORE" build -q -t bench-g:1 "$CG" >/dev/null 2>"$W/last.log"; then
    G_NA="mybuild: failed to build the image ($(tail -1 "$W/last.log" | tr '\t' ' '))"
    FAILED=1
  fi
  start_registry target
  mb_reg "$REG_target_PORT"
  G_BYTES=0
  if [ -z "$G_NA$HAVE_PUSH" ]; then
    mb_clone "$GSTORE" "$PUSH_STORE"
    "$MB" --root "$PUSH_STORE" push "${MB_REG[@]}" bench-g:1 "127.0.0.1:$REG_target_PORT/bench/g:1" >/dev/null 2>&1 || true
    G_BYTES=$(reg_bytes "$REG_target_PORT" bench/g 1)
  fi
  MB_NA=${G_NA:-$HAVE_PUSH}
  prep_mb() { mb_first_push "$GSTORE" bench-g:1 bench/g:1; }
  prep_peer() {
    rm -rf "$PUSH_STORE"
    start_registry target
    PEERCMD=(skopeo copy -q --dest-tls-verify=false "oci:$GSTORE:bench-g:1" "docker://127.0.0.1:$REG_target_PORT/bench/g:1")
  }
  if [ -n "$G_NA" ]; then na "G push" mybuild "$G_NA"; na "G push" skopeo "not measured: no image to push"
  else alternate "G push" skopeo "$G_BYTES"; fi
  # the registry holds mybuild's push (skopeo's when mybuild cannot push)
  start_registry target
  mb_reg "$REG_target_PORT"
  G_REF=127.0.0.1:$REG_target_PORT/bench/g:1
  if [ -z "$G_NA$HAVE_PUSH" ]; then
    mb_clone "$GSTORE" "$PUSH_STORE"
    "$MB" --root "$PUSH_STORE" push "${MB_REG[@]}" bench-g:1 "$G_REF" >/dev/null 2>&1 || true
  fi
  [ "$(reg_bytes "$REG_target_PORT" bench/g 1)" != 0 ] || [ -n "$G_NA" ] ||
    skopeo copy -q --dest-tls-verify=false "oci:$GSTORE:bench-g:1" "docker://$G_REF"
  rm -rf "$PUSH_STORE"
  MB_NA=${G_NA:-$HAVE_PULL}
  MBCMD=("$MB" --root "$W/pull-store" pull "${MB_REG[@]}" "$G_REF")
  PEERCMD=(skopeo copy -q --src-tls-verify=false "docker://$G_REF" "oci:$W/pull-oci:g")
  prep_mb() { rm -rf "$W/pull-store"; }
  prep_peer() { rm -rf "$W/pull-oci"; }
  if [ -n "$G_NA" ]; then na "G pull" mybuild "$G_NA"; na "G pull" skopeo "not measured: no image to pull"
  else alternate "G pull" skopeo "$G_BYTES"; fi
  MB_NA=""
  rm -rf "$W/pull-store" "$W/pull-oci" "$GSTORE"
  stop_registry target
fi

# --- Limits: the same data through the tools that bound the layer pipeline ---------------
if want L; then
  tar -C "$CB" -cf "$W/b.tar" data
  L_BYTES=$(stat -c %s "$W/b.tar")
  log "L: $L_BYTES bytes (the B context as one tar) through mybuild import and the limits"
  cat "$W/b.tar" > /dev/null  # into the page cache
  prep_mb() { rm -rf "$W/import-store"; }
  prep_peer() { :; }
  MBCMD=("$MB" --root "$W/import-store" import --compression gzip "$W/b.tar" l:1)
  PEERCMD=(pigz -6 -c "$W/b.tar")
  alternate "L gzip -6" "pigz -6" "$L_BYTES"
  MBCMD=("$MB" --root "$W/import-store" import --compression zstd "$W/b.tar" l:1)
  PEERCMD=(zstd -q -T0 -3 -c "$W/b.tar")
  alternate "L zstd -3" "zstd -T0 -3" "$L_BYTES"
  MBCMD=("$MB" --root "$W/import-store" import --compression uncompressed "$W/b.tar" l:1)
  PEERCMD=(openssl dgst -sha256 "$W/b.tar")
  alternate "L sha256" "openssl" "$L_BYTES"
  for ((i = 1; i <= RUNS; i++)); do
    timed "L sha256" "sha256sum" "$L_BYTES" sha256sum "$W/b.tar"
    timed "L gzip -1" "pigz -1" "$L_BYTES" pigz -1 -c "$W/b.tar"
  done
  rm -rf "$W/import-store" "$W/b.tar"
fi

# --- M: criterion micro-benchmarks -------------------------------------------------------
CRIT_DIR=""
if want M; then
  log "M: cargo bench (criterion): layer pipeline, sha256, context hashing, parse+plan"
  # every bench target of the two crates; -- --noplot is criterion's, so no libtest targets
  benches=()
  for crate in layer-cache builder; do
    for f in "$REPO/$crate"/benches/*.rs; do
      [ -e "$f" ] && benches+=("$crate:$(basename "$f" .rs)")
    done
  done
  mfail=0
  for b in "${benches[@]}"; do
    (cd "$REPO" && TMPDIR=$W cargo bench --locked -q -p "${b%%:*}" --bench "${b#*:}" -- --noplot >&2) || mfail=1
  done
  if [ "$mfail" = 0 ]; then
    CRIT_DIR=$TARGET_DIR/criterion
  else
    FAILED=1
    echo "  FAILED: cargo bench" >&2
  fi
fi

# --- X: containers: mybuild run --rm against podman run --rm (runc), same image ----------
# Timed with hyperfine (no shell, warm-up runs first); each run becomes a row of the table.
# The image reaches podman's own storage (in the work area) through skopeo from our store.
if want X; then
  X_RUNS=$([ "$SMOKE" = 1 ] && echo 3 || echo $((RUNS * 4)))
  if ! command -v podman >/dev/null 2>&1; then
    for sc in "X run --rm busybox true" "X run --rm, --network none"; do na "$sc" podman "not measured (apt-get install podman runc)"; done
  else
    log "X: run --rm busybox true, against podman run --rm (runc), $X_RUNS runs each (hyperfine)"
    XS=$W/store-x
    mb_fresh "$XS"
    PODMAN=(podman --root "$W/podman/root" --runroot "$W/podman/run" --storage-driver "$STORAGE_DRIVER"
      --runtime runc --cgroup-manager cgroupfs --events-backend none)
    skopeo copy -q "oci:$TMPL:busybox:latest" \
      "containers-storage:[$STORAGE_DRIVER@$W/podman/root+$W/podman/run]localhost/busybox:latest"
    # x_row SCENARIO TOOL JSON: hyperfine's runs as rows (no RSS from hyperfine: 0).
    x_row() {
      python3 - "$1" "$2" "$3" >> "$TSV" <<'PY'
import json, sys
sc, tool, path = sys.argv[1:4]
r = json.load(open(path))["results"][0]
cpu = (r["user"] + r["system"])
for t in r["times"]:
    print(f"{sc}\t{tool}\tok\t{int(t * 1e6)}\t0\t0\t\t{cpu:.3f}")
PY
    }
    # podman raises RLIMIT_NOFILE and NPROC to its defaults (1048576), which a machine
    # whose hard limits are lower refuses: ask for the open-files limit it has and a
    # modest process limit (runc's init was refused even the machine's own here).
    PODMAN_RUN=(run --rm --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")
    # Probed: podman refuses to run on some machines (cgroups it may not set).
    X_NA=""
    if ! "${PODMAN[@]}" "${PODMAN_RUN[@]}" --network none localhost/busybox:latest true >"$W/last.log" 2>&1; then
      X_NA="not measured: podman cannot run a container here ($(tail -1 "$W/last.log" | tr '\t' ' '))"
    fi
    for net in default none; do
      if [ "$net" = default ]; then sc="X run --rm busybox true"; pnet=slirp4netns; else sc="X run --rm, --network none"; pnet=none; fi
      [ -z "$X_NA" ] || na "$sc" podman "$X_NA"
      for tool in mybuild podman; do
        [ "$tool" = mybuild ] || [ -z "$X_NA" ] || continue
        if [ "$tool" = mybuild ]; then cmd="$MB --root $XS run --rm --network $net busybox true"
        else cmd="${PODMAN[*]} ${PODMAN_RUN[*]} --network $pnet localhost/busybox:latest true"; fi
        if hyperfine -N -w 2 -r "$X_RUNS" --export-json "$W/x.json" "$cmd" >"$W/last.log" 2>&1; then
          x_row "$sc" "$tool" "$W/x.json"
          grep -E 'Time|Range' "$W/last.log" | sed "s/^/  $tool $net: /" >&2
        else
          if [ "$tool" = mybuild ]; then FAILED=1; else PEER_FAILED=1; fi
          printf '%s\t%s\tfail\t0\t0\t0\t%s\n' "$sc" "$tool" "$(tail -1 "$W/last.log" | tr '\t' ' ')" >> "$TSV"
          echo "  FAILED: $sc $tool" >&2; tail -15 "$W/last.log" | sed 's/^/    /' >&2
        fi
      done
    done
  fi
fi

# --- E: one very large RUN layer: build, push and pull in bounded memory ----------------
# `RUN head -c E_BYTES /dev/urandom > /big`. The target is mybuild's peak RSS; wall
# times and the peers (buildah for build and push, skopeo for pull) are there for scale.
# E_RUNS (default 1: the RSS target needs one run, and each run moves E_BYTES several
# times) runs per row. Disk: at the peak (the push rows) the built store (blob and
# snapshot), buildah's image, mybuild's compressed copy and the registry's: ~5 × E_BYTES;
# every other scenario's stores are dropped first.
if want E; then
  E_RUNS=${BENCH_E_RUNS:-1}
  CE=$W/ctx-e
  mkdir -p "$CE"
  printf 'ARG BASE=busybox\nFROM $BASE\nRUN head -c %s /dev/urandom > /big\n' "$E_BYTES" > "$CE/Dockerfile"
  ESTORE=$W/store-e
  rm -rf "$BSTORE" "$S" "$PUSH_STORE" "$W/pull-store" "$W/pull-oci" "$W/import-store"
  buildah_clean
  E_NEED=$((E_BYTES * 11 / 2 + 512 * 1024 * 1024))
  E_FREE=$(free_bytes "$W")
  if [ "$E_FREE" -lt "$E_NEED" ]; then
    E_NA="not measured: the work area has $((E_FREE >> 20)) MiB free, E needs ~$((E_NEED >> 20)) MiB"
    for sc in "E build" "E push" "E pull"; do na "$sc" mybuild "mybuild: $E_NA"; done
  else
    log "E: RUN head -c $E_BYTES /dev/urandom > /big: build, push, pull ($E_RUNS run(s) each)"
    runs_saved=$RUNS
    RUNS=$E_RUNS
    MBCMD=("$MB" --root "$ESTORE" build -q --progress plain --no-cache -t bench-e:1 "$CE")
    bu_build --no-cache -t bench-e:1 "$CE"
    prep_mb() { rm -rf "$ESTORE"; mb_fresh "$ESTORE"; }
    prep_peer() { buildah_clean bench-e:1; }
    alternate "E build" buildah "$E_BYTES"
    E_BUILT=""
    "$MB" --root "$ESTORE" inspect bench-e:1 >/dev/null 2>&1 || E_BUILT="mybuild: not measured (its build of E failed)"

    MB_NA=${E_BUILT:-$HAVE_PUSH}
    prep_mb() { mb_first_push "$ESTORE" bench-e:1 bench/e:1; }
    prep_peer() {
      rm -rf "$PUSH_STORE"
      start_registry target
      PEERCMD=("${BUILDAH[@]}" push --quiet --tls-verify=false --compression-format gzip bench-e:1 "docker://127.0.0.1:$REG_target_PORT/bench/e:1")
    }
    alternate "E push" buildah "$E_BYTES"
    rm -rf "$PUSH_STORE"
    buildah_clean bench-e:1

    # the registry holds mybuild's push; the built store goes before the pulls
    start_registry target
    mb_reg "$REG_target_PORT"
    E_REF=127.0.0.1:$REG_target_PORT/bench/e:1
    if [ -z "${E_BUILT}${HAVE_PUSH}" ]; then
      "$MB" --root "$ESTORE" push "${MB_REG[@]}" bench-e:1 "$E_REF" >/dev/null 2>&1 || true
    fi
    rm -rf "$ESTORE"
    E_PUSHED=""
    [ "$(reg_bytes "$REG_target_PORT" bench/e 1)" != 0 ] || E_PUSHED="not measured: no image of E to pull (mybuild's push failed)"
    MB_NA=${E_PUSHED:+mybuild: $E_PUSHED}
    MB_NA=${MB_NA:-$HAVE_PULL}
    MBCMD=("$MB" --root "$W/pull-store" pull "${MB_REG[@]}" "$E_REF")
    PEERCMD=(skopeo copy -q --src-tls-verify=false "docker://$E_REF" "oci:$W/pull-oci:e")
    prep_mb() { rm -rf "$W/pull-store" "$W/pull-oci"; }
    prep_peer() { rm -rf "$W/pull-store" "$W/pull-oci"; }
    if [ -n "$E_PUSHED" ]; then na "E pull" mybuild "mybuild: $E_PUSHED"; na "E pull" skopeo "$E_PUSHED"
    else alternate "E pull" skopeo "$E_BYTES"; fi
    MB_NA=""
    RUNS=$runs_saved
    rm -rf "$W/pull-store" "$W/pull-oci"
    stop_registry target
  fi
fi

# --- table -------------------------------------------------------------------------------
versions() {
  printf 'mybuild\t%s\n' "$("$MB" --version 2>&1 | head -1) ($(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  printf 'buildah\t%s\n' "$(buildah --version | head -1)"
  printf 'skopeo\t%s\n' "$(skopeo --version | head -1)"
  printf 'podman\t%s\n' "$(podman --version 2>/dev/null | head -1) ($(runc --version 2>/dev/null | head -1))"
  printf 'docker-registry\t%s\n' "$(docker-registry --version 2>&1 | head -1)"
  printf 'pigz\t%s\n' "$(pigz --version 2>&1 | head -1)"
  printf 'zstd\t%s\n' "$(zstd --version | head -1)"
  printf 'openssl\t%s\n' "$(openssl version)"
  printf 'coreutils\t%s\n' "$(sha256sum --version | head -1)"
}
versions > "$W/versions.tsv"
{
  printf 'cpu\t%s\n' "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  printf 'cores\t%s\n' "$(nproc)"
  printf 'sha_ni\t%s\n' "$(grep -q -w sha_ni /proc/cpuinfo && echo yes || echo no)"
  printf 'memory\t%s\n' "$(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'os\t%s\n' "$(. /etc/os-release && echo "$PRETTY_NAME")"
  printf 'workarea\t%s\n' "$WORKAREA"
  printf 'storage\t%s\n' "$STORAGE_DRIVER"
  printf 'load\t%s at the start, %s at the end (1, 5, 15 min; other work shares the cores)\n' "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf 'runs\t%s\n' "$RUNS"
  printf 'mode\t%s\n' "$([ "$SMOKE" = 1 ] && echo smoke || echo full)"
  printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'a\t%s files in %s folders, %s bytes; RUN writes %s files\n' "$A_FILES" "$A_DIRS" "$A_BYTES" "$A_RUN_FILES"
  printf 'b\t%s files, %s bytes, from /usr/lib/gcc, /usr/libexec, /usr/lib/x86_64-linux-gnu\n' "$B_FILES" "$B_BYTES"
  printf 'd\t%s files in %s folders, %s bytes\n' "$D_FILES" "$D_DIRS" "$D_BYTES"
  printf 'c\t%s loop iterations of busybox sh per stage (~%s s here)\n' "$C_LOOPS" "$C_SECONDS"
  printf 'e\tRUN head -c %s /dev/urandom > /big; %s run(s) per row\n' "$E_BYTES" "${E_RUNS:-1}"
  printf 'g\t%s COPY layers of %s–%s KiB of random bytes\n' "$G_LAYERS" "$G_LAYER_KIB" "$((G_LAYER_KIB * 8))"
  printf 'k\ta cache mount filled with %s files of gzip -9 of base64 of %s random bytes each\n' "$K_CHUNKS" "$K_CHUNK_BYTES"
  yn() { if [ -n "$1" ]; then echo no; else echo yes; fi; }
  printf 'features\tstep cache: %s; push: %s; pull: %s\n' "$(yn "$HAVE_CACHE")" "$(yn "$HAVE_PUSH")" "$(yn "$HAVE_PULL")"
} > "$W/machine.tsv"

if [ "$SMOKE" = 1 ]; then OUT=$W/RESULTS-smoke.md; else OUT=$HERE/RESULTS.md; fi
python3 "$HERE/table.py" --results "$TSV" --machine "$W/machine.tsv" --versions "$W/versions.tsv" \
  ${CRIT_DIR:+--criterion "$CRIT_DIR" --since "$START_EPOCH"} --notes "$HERE/ANALYSIS.md" --out "$OUT"
[ "$SMOKE" = 1 ] || echo "wrote $OUT" >&2
if [ "$PEER_FAILED" = 1 ]; then echo "bench/run.sh: some peer runs failed (marked in the table)" >&2; fi
if [ "$FAILED" = 1 ]; then echo "bench/run.sh: some runs failed (marked in the table)" >&2; exit 1; fi
