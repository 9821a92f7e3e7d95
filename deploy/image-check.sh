#!/usr/bin/env bash
# The container image built and run here, checked from outside (make image-check).
#
#   deploy/image-check.sh          as root; takes minutes (a release build in the image)
#
# 1. Base images. When docker.io answers, the Dockerfile's own (rust:1-bookworm,
#    debian:bookworm-slim). When it does not (OFFLINE=auto finds out; OFFLINE=1
#    forces it): localhost/debian:bookworm-slim from debootstrap and Debian's
#    mirror (made once, reused), and localhost/nlp-serve-rust:bookworm from
#    deploy/docker/rust-offline.Dockerfile on top of it; the host's Rust toolchain
#    is bind-mounted read-only into the build, with the host's crate cache and a
#    target directory kept in $IMAGE_CHECK_DIR, and torch comes from PyPI.
# 2. podman build of deploy/docker/Dockerfile, timed; the image size.
# 3. The container with the tiny models mounted, run as the Deployment runs it
#    (deploy/kubernetes/base/deployment.yaml: its env, user, read-only root
#    filesystem, no capabilities, memory limit), then from outside: /ready 200
#    within the startup probe's budget, /complete, /qa and /translate answer,
#    the process runs as the non-root user, SIGTERM (podman stop with the
#    Deployment's grace period) lets streams in flight finish with their `done`
#    event and the container exits 0 within the grace period, and every log
#    line is JSON.
# Any failed check stops the script with "image-check FAILED: ..." and exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

IMAGE=${IMAGE:-localhost/nlp-serve:check}
WORK=${IMAGE_CHECK_DIR:-/var/tmp/nlp-serve-image}
OFFLINE=${OFFLINE:-auto}
LOCAL_DEBIAN=localhost/debian:bookworm-slim
LOCAL_RUST=localhost/nlp-serve-rust:bookworm
DEPLOYMENT=deploy/kubernetes/base/deployment.yaml
TINY=$ROOT/models/tiny
NAME=nlp-serve-image-check
# crun (podman's default where installed) fails here on hybrid cgroups and on
# raising limits; runc with cgroupfs works.
PODMAN=(podman --cgroup-manager=cgroupfs --runtime runc)

step() { printf '\n== %s\n' "$*"; }
ok() { printf '  ok: %s\n' "$*"; }
fail() { printf '\nimage-check FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# What makes debian:bookworm-slim slim (debuerreotype's slimify and the apt
# settings of Docker's Debian images), applied to a debootstrapped root.
slim() {
  local root=$1
  [ -n "$root" ] && [ "$root" != / ] && [ -d "$root/etc/apt" ] || fail "slim: '$root' is not a debootstrapped root"
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/lintian/*' 'path-exclude /usr/share/linda/*' \
    'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
    > "$root/etc/dpkg/dpkg.cfg.d/docker"
  local clean='rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true'
  printf '%s\n' "DPkg::Post-Invoke { \"$clean\"; };" "APT::Update::Post-Invoke { \"$clean\"; };" \
    'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' > "$root/etc/apt/apt.conf.d/docker-clean"
  echo 'Acquire::Languages "none";' > "$root/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' > "$root/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' > "$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
  find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  rm -rf "$root"/usr/share/{man,groff,info,lintian,linda}/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
}

cleanup() { "${PODMAN[@]}" rm -f --ignore "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT

[ "$(id -u)" = 0 ] || fail "needs root (podman with runc, debootstrap): run it as root"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  step "installing podman and runc (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc
fi
mkdir -p "$WORK"

step "what the Deployment asks for ($DEPLOYMENT)"
# Read with the standard library only (make puts .venv's python3 first on PATH).
SETTINGS=$(python3 - "$DEPLOYMENT" <<'PY'
import re, shlex, sys
lines = open(sys.argv[1]).read().splitlines()

def block(key, within=None):
    """The lines nested under the first `key:` line (inside `within`, if given)."""
    lines_ = within if within is not None else lines
    for i, line in enumerate(lines_):
        if re.match(rf"\s*(- )?{key}:\s*$", line):
            indent = len(line) - len(line.lstrip(" -"))
            out = []
            for nxt in lines_[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip(" ")) <= indent:
                    break
                out.append(nxt)
            return out
    sys.exit(f"{sys.argv[1]}: no '{key}:' block")

def value(key, within=None):
    for line in within if within is not None else lines:
        m = re.match(rf"\s*(- )?{key}:\s*(.+?)\s*$", line)
        if m:
            return m.group(2).strip("\"'")
    sys.exit(f"{sys.argv[1]}: no '{key}:' value")

probe = block("startupProbe")
container_security = block("securityContext", block("containers"))
env, name = [], None
for line in block("env"):
    m = re.match(r"\s*- name:\s*(\S+)", line)
    if m:
        name = m.group(1)
    m = re.match(r"\s*value:\s*(.+?)\s*$", line)
    if m and name:
        env.append(f"--env={name}={m.group(1).strip(chr(34) + chr(39))}")
out = {
    "GRACE": int(value("terminationGracePeriodSeconds")),
    "BUDGET": int(value("periodSeconds", probe)) * int(value("failureThreshold", probe)),
    "RUN_AS": int(value("runAsUser")),
    "READ_ONLY": value("readOnlyRootFilesystem", container_security),
    "DROP_CAPS": ",".join(c.strip(" \"'") for c in value("drop", container_security).strip("[]").split(",")),
    "MEMORY": value("memory", block("limits")).replace("Gi", "g"),
    "ENV_ARGS": " ".join(shlex.quote(e) for e in env),
}
for key, val in out.items():
    print(f"{key}={shlex.quote(str(val))}")
PY
) || fail "could not read the Deployment's settings from $DEPLOYMENT"
eval "$SETTINGS"
echo "  startup probe budget ${BUDGET}s, grace period ${GRACE}s, runAsUser $RUN_AS, memory limit $MEMORY,"
echo "  readOnlyRootFilesystem $READ_ONLY, capabilities dropped: $DROP_CAPS, env: $ENV_ARGS"

# ---- 1. base images ----
if [ "${IMAGE_CHECK_BUILD:-1}" = 0 ]; then
  step "no build (IMAGE_CHECK_BUILD=0): checking the existing $IMAGE"
  "${PODMAN[@]}" image exists "$IMAGE" || fail "no image $IMAGE to check"
  OFFLINE=none
elif [ "$OFFLINE" = auto ]; then
  if "${PODMAN[@]}" pull -q docker.io/library/debian:bookworm-slim >/dev/null 2>&1; then OFFLINE=0; else OFFLINE=1; fi
fi
BUILD_ARGS=()
if [ "$OFFLINE" = none ]; then
  :
elif [ "$OFFLINE" = 1 ]; then
  step "offline base images (docker.io does not answer)"
  if "${PODMAN[@]}" image exists "$LOCAL_DEBIAN"; then
    ok "$LOCAL_DEBIAN exists, reused"
  else
    mirror=${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
      | grep -v '^[[:space:]]*#' | grep -o -E 'https?://[^[:space:]]+' | grep -E '/debian/?$' | head -1 || true)}
    [ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt/sources.list*: set DEBIAN_MIRROR"
    command -v debootstrap >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap)
    echo "  debootstrap --variant=minbase bookworm from $mirror"
    rm -rf "$WORK/debian-rootfs"
    debootstrap --variant=minbase bookworm "$WORK/debian-rootfs" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
      || fail "debootstrap failed, see $WORK/debootstrap.log"
    slim "$WORK/debian-rootfs"
    tar -C "$WORK/debian-rootfs" -c . | "${PODMAN[@]}" import -q --change 'CMD ["bash"]' - "$LOCAL_DEBIAN" >/dev/null
    rm -rf "$WORK/debian-rootfs"
    ok "$LOCAL_DEBIAN imported"
  fi
  # The CA certificates this host trusts beyond Debian's go into the build base.
  rm -rf "$WORK/rust-base" && mkdir -p "$WORK/rust-base/extra-ca"
  cp -a /usr/local/share/ca-certificates/. "$WORK/rust-base/extra-ca/" 2>/dev/null || true
  "${PODMAN[@]}" build -q --network host --build-arg DEBIAN_IMAGE="$LOCAL_DEBIAN" \
    -f deploy/docker/rust-offline.Dockerfile -t "$LOCAL_RUST" "$WORK/rust-base" > "$WORK/rust-base.log" 2>&1 \
    || { tail -n 20 "$WORK/rust-base.log"; fail "building $LOCAL_RUST from deploy/docker/rust-offline.Dockerfile"; }
  ok "$LOCAL_RUST built (layers cached)"
  command -v rustc >/dev/null || fail "no Rust toolchain on this host to mount into the build"
  SYSROOT=$(rustc --print sysroot)
  REGISTRY=${CARGO_HOME:-$HOME/.cargo}/registry
  mkdir -p "$REGISTRY" "$WORK/target"
  # cargo decides by mtimes, and the files of one context can be older than the
  # last build from another (git archive dates them to the commit): forget the
  # crate's own fingerprints so it is always compiled from the context in hand
  # (only when the context changed, since podman's cache skips the step otherwise).
  rm -rf "$WORK"/target/release/.fingerprint/nlp-serve-*
  echo "  Rust: $(rustc --version) from $SYSROOT (read-only), crates from $REGISTRY"
  BUILD_ARGS=(--build-arg RUST_IMAGE="$LOCAL_RUST" --build-arg DEBIAN_IMAGE="$LOCAL_DEBIAN"
    --build-arg TORCH_INDEX="${TORCH_INDEX:-https://pypi.org/simple}"
    -v "$SYSROOT:/usr/local/rust:ro" -v "$REGISTRY:/usr/local/cargo/registry" -v "$WORK/target:/src/target")
else
  step "public base images (docker.io answers)"
  [ -z "${TORCH_INDEX:-}" ] || BUILD_ARGS=(--build-arg TORCH_INDEX="$TORCH_INDEX")
fi

# ---- 2. the image ----
# The working tree, like `docker build .`; IMAGE_CHECK_REV=HEAD (or any commit)
# builds that commit instead, from `git archive` (same files, same mtimes: cached).
CONTEXT=.
BUILD_S=-
if [ "$OFFLINE" = none ]; then
  :
elif [ -n "${IMAGE_CHECK_REV:-}" ]; then
  CONTEXT=$WORK/context
  rm -rf "$CONTEXT" && mkdir -p "$CONTEXT"
  git archive --format=tar "$IMAGE_CHECK_REV" | tar -x -C "$CONTEXT"
  echo "  context: $IMAGE_CHECK_REV ($(git rev-parse --short "$IMAGE_CHECK_REV")) from git archive"
fi
if [ "$OFFLINE" != none ]; then
step "podman build -f deploy/docker/Dockerfile -t $IMAGE"
t=$(now)
if ! "${PODMAN[@]}" build --network host -f "$CONTEXT/deploy/docker/Dockerfile" -t "$IMAGE" "${BUILD_ARGS[@]}" "$CONTEXT" 2>&1 \
    | tee "$WORK/build.log" | grep --line-buffered -E 'STEP [0-9]+/[0-9]+:|^--> Using cache|^Successfully tagged' | cut -c1-150; then
  tail -n 30 "$WORK/build.log"
  fail "podman build failed (full log: $WORK/build.log)"
fi
BUILD_S=$(since "$t")
fi
SIZE=$("${PODMAN[@]}" image inspect -f '{{.Size}}' "$IMAGE")
SIZE_H=$(numfmt --to=si --round=nearest --format=%.2f --suffix=B "$SIZE")
ok "build ${BUILD_S}s (cached layers are reused); image size $SIZE_H ($SIZE bytes)"
[ "$("${PODMAN[@]}" image inspect -f '{{.Config.User}}' "$IMAGE")" = "$RUN_AS" ] \
  || fail "the image's USER is not the Deployment's runAsUser $RUN_AS"

# ---- 3. the container, as the Deployment runs it ----
[ -f "$TINY/.generated" ] || fail "no tiny models in $TINY: run make tiny-models (make image-check does)"
step "podman run, tiny models mounted at /models/tiny"
cleanup
PORT=$(free_port)
RUN_FLAGS=(--network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
  --cap-drop "$DROP_CAPS" --security-opt no-new-privileges --memory "$MEMORY")
[ "$READ_ONLY" = true ] && RUN_FLAGS+=(--read-only)
# The Deployment's emptyDir for the document store.
RUN_FLAGS+=(--mount "type=tmpfs,destination=/var/lib/nlp-serve,tmpfs-mode=0777")
eval "ENV=($ENV_ARGS)"
t=$(now)
"${PODMAN[@]}" run -d --name "$NAME" "${RUN_FLAGS[@]}" "${ENV[@]}" \
  -v "$TINY:/models/tiny:ro" \
  -e PORT="$PORT" \
  -e NLP_SERVE__COMPLETION__SOURCE=/models/tiny/gpt2 \
  -e NLP_SERVE__QA__SOURCE=/models/tiny/distilbert-qa \
  -e NLP_SERVE__TRANSLATION__SOURCE=/models/tiny/marian-en-de \
  -e NLP_SERVE__TRANSLATION__NUM_BEAMS=1 -e NLP_SERVE__TRANSLATION__MAX_OUTPUT_TOKENS=48 \
  "$IMAGE" >/dev/null || fail "podman run failed"
echo "  flags: ${RUN_FLAGS[*]}; port $PORT"
logs() { "${PODMAN[@]}" logs "$NAME" 2>&1 | tail -n "${1:-40}"; }
URL=http://127.0.0.1:$PORT
while :; do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/ready" || true)
  [ "$code" = 200 ] && break
  [ "$("${PODMAN[@]}" inspect -f '{{.State.Running}}' "$NAME")" = true ] \
    || { logs; fail "the container exited before /ready answered 200"; }
  python3 -c "import sys; sys.exit(float(sys.argv[1]) > $BUDGET)" "$(since "$t")" \
    || { logs; fail "/ready was not 200 within the startup probe's ${BUDGET}s (last: $code)"; }
  sleep 0.2
done
READY_S=$(since "$t")
ok "/ready 200 ${READY_S}s after podman run (startup probe budget ${BUDGET}s)"

step "the endpoints, from outside"
python3 - "$URL" <<'PY' || { logs; fail "an endpoint check failed (above)"; }
import json, sys, urllib.request
url = sys.argv[1]

def call(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()

def check(cond, what, answer):
    if not cond:
        sys.exit(f"  {what}: {answer}")
    print(f"  ok: {what}")

status, body = call("/health")
check(status == 200, "GET /health 200", body)
status, body = call("/ready")
ready = json.loads(body)
check(status == 200 and ready["status"] == "ready" and set(ready["models"].values()) == {"ready"}
      and len(ready["models"]) == 3, "GET /ready: all three models ready", body)
status, body = call("/complete", {"prompt": "Machine learning is", "max_new_tokens": 12,
                                  "temperature": 0.8, "top_p": 0.9, "seed": 42})
a = json.loads(body) if status == 200 else {}
check(status == 200 and a["model"] == "/models/tiny/gpt2" and len(a["completions"]) == 1
      and a["completions"][0]["text"] and a["usage"]["completion_tokens"] >= 1,
      "POST /complete 200, a completion from the mounted model", body)
context = "The Eiffel Tower is in Paris. It was finished in 1889."
status, body = call("/qa", {"question": "Where is the Eiffel Tower?", "context": context})
a = json.loads(body) if status == 200 else {}
check(status == 200 and a["model"] == "/models/tiny/distilbert-qa" and a["answers"]
      and all(context[x["start"]:x["end"]] == x["text"] for x in a["answers"]),
      "POST /qa 200, an answer that is a span of the context", body)
texts = ["The weather is nice today.", "Models learn from data. They need examples."]
status, body = call("/translate", {"text": texts})
a = json.loads(body) if status == 200 else {}
check(status == 200 and a["model"] == "/models/tiny/marian-en-de" and len(a["translations"]) == 2
      and all(isinstance(t, str) and t for t in a["translations"]),
      "POST /translate 200, one translation per text", body)
status, body = call("/complete", {"prompt": "Hi", "temperature": 9})
check(status == 422 and json.loads(body)["type"] == "validation_error", "a bad request is 422 JSON", body)
PY

step "the process, from the host"
PID=$("${PODMAN[@]}" inspect -f '{{.State.Pid}}' "$NAME")
COMM=$(cat "/proc/$PID/comm")
UIDS=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$PID/status")
GIDS=$(awk '/^Gid:/ {print $2, $3, $4, $5}' "/proc/$PID/status")
CAPS=$(awk '/^CapEff:/ {print $2}' "/proc/$PID/status")
[ "$COMM" = nlp-serve ] || fail "the container's first process is '$COMM', not nlp-serve (signals would not reach it)"
[ "$UIDS" = "$RUN_AS $RUN_AS $RUN_AS $RUN_AS" ] || fail "nlp-serve runs with uids $UIDS, not $RUN_AS"
[ "$CAPS" = 0000000000000000 ] || fail "nlp-serve has capabilities $CAPS"
ok "host pid $PID is nlp-serve (the container's PID 1), uid $RUN_AS (real/effective/saved/fs: $UIDS; gids $GIDS), no capabilities"

# ---- SIGTERM with streams in flight ----
step "SIGTERM with streams in flight (podman stop -t $GRACE, as the kubelet stops a pod)"
rm -f "$WORK/drain.txt"
python3 - "$URL" "$GRACE" "$NAME" "$WORK/drain.txt" "${PODMAN[@]}" <<'PY' || { logs; fail "the SIGTERM drain check failed (above)"; }
import calendar, json, re, subprocess, sys, threading, time, urllib.request
url, grace, name, out, podman = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
STREAMS, TOKENS, SEQS = 4, 240, 2

def open_stream(i):
    body = {"prompt": f"Shutdown {i}", "max_new_tokens": TOKENS, "min_new_tokens": TOKENS,
            "temperature": 0.8, "num_return_sequences": SEQS, "stream": True}
    req = urllib.request.Request(url + "/complete", data=json.dumps(body).encode())
    r = urllib.request.urlopen(req, timeout=120)
    head = b""
    while b"event: token" not in head:
        line = r.readline()
        if not line:
            sys.exit(f"  stream {i} ended before its first token: {head!r}")
        head += line
    return r, head

streams = [open_stream(i) for i in range(STREAMS)]
metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
m = re.search(r'^nlp_serve_active_sequences\{task="completion"\} (\S+)', metrics, re.M)
active = float(m.group(1)) if m else 0
if active < 1:
    sys.exit(f"  inconclusive: no generation running at the server before SIGTERM (active_sequences={active})")
print(f"  {STREAMS} streams open, each past its first token; the server reports {active:.0f} sequences generating")

bodies = [None] * STREAMS
ends = [None] * STREAMS
def read_rest(i):
    r, head = streams[i]
    try:
        rest = r.read()
    except Exception as e:  # a reset connection is a failed drain, reported below
        rest = f"\n<read failed: {e}>".encode()
    bodies[i] = (head + rest).decode(errors="replace")
    ends[i] = time.monotonic()
readers = [threading.Thread(target=read_rest, args=(i,)) for i in range(STREAMS)]
for t in readers:
    t.start()
t0, wall0 = time.monotonic(), time.time()
stop = subprocess.run(podman + ["stop", "-t", str(grace), name], capture_output=True, text=True)
stopped = time.monotonic() - t0
for t in readers:
    t.join(timeout=grace)
code, finished = subprocess.run(podman + ["inspect", "-f", "{{.State.ExitCode}} {{.State.FinishedAt}}", name],
                                capture_output=True, text=True).stdout.strip().split(" ", 1)
# FinishedAt reads like "2026-11-25 03:09:56.123456789 +0000 UTC"
m = re.match(r"(\d+-\d+-\d+ \d+:\d+:\d+)(\.\d+)? \+0000", finished)
exited = (calendar.timegm(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + float(m.group(2) or 0) - wall0) if m else float("nan")
failed = []
for i, body in enumerate(bodies):
    done = [b for b in (body or "").split("\n\n") if b.startswith("event: done")]
    if not done:
        failed.append(f"stream {i}: no done event:\n{(body or '')[-400:]}")
        continue
    answer = json.loads(next(l[6:] for l in done[0].splitlines() if l.startswith("data: ")))
    if answer["usage"]["completion_tokens"] != SEQS * TOKENS or len(answer["completions"]) != SEQS:
        failed.append(f"stream {i}: incomplete answer {answer['usage']}")
last_done = max(e - t0 for e in ends if e is not None) if any(ends) else float("nan")
print(f"  after SIGTERM: streams finished in {last_done:.1f}s, nlp-serve exited in {exited:.1f}s with status {code}, podman stop returned in {stopped:.1f}s")
if failed:
    sys.exit("  " + "\n  ".join(failed))
print(f"  ok: all {STREAMS} streams ended with their done event ({SEQS * TOKENS} tokens each)")
if stop.returncode != 0 or code != "0":
    sys.exit(f"  exit status {code} (podman stop: {stop.returncode} {stop.stderr.strip()}); 137 means SIGKILL after the grace period")
if stopped >= grace:
    sys.exit(f"  the container took {stopped:.1f}s, not within the {grace}s grace period")
print(f"  ok: exit status 0 within the {grace}s grace period")
open(out, "w").write(f"{last_done:.1f} {exited:.1f} {stopped:.1f}\n")
PY

read -r DRAIN_S EXIT_S STOP_S < "$WORK/drain.txt"

step "logs: every line is JSON"
"${PODMAN[@]}" logs "$NAME" > "$WORK/container.log" 2>&1
python3 - "$WORK/container.log" <<'PY' || fail "the container's log is not all JSON (above; full log: $WORK/container.log)"
import json, sys
lines = [l for l in open(sys.argv[1]).read().splitlines() if l.strip()]
bad = []
records = []
for l in lines:
    try:
        records.append(json.loads(l))
    except ValueError:
        bad.append(l)
if bad:
    sys.exit("  not JSON:\n    " + "\n    ".join(bad[:10]))
if not records or not all(isinstance(r, dict) and "level" in r and "timestamp" in r for r in records):
    sys.exit(f"  expected JSON records with level and timestamp, got {len(records)} records")
print(f"  ok: {len(records)} lines, all JSON objects with level and timestamp, e.g.\n    {lines[0][:200]}")
PY

cleanup
step "image-check passed"
cat <<EOF
  image          $IMAGE, $SIZE_H ($SIZE bytes)
  build          ${BUILD_S}s (offline path: $OFFLINE)
  /ready         ${READY_S}s after podman run (budget ${BUDGET}s)
  SIGTERM        streams in flight finished ${DRAIN_S}s after it; nlp-serve exited 0 after ${EXIT_S}s, podman stop took ${STOP_S}s (grace ${GRACE}s)
EOF
