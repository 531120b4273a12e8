#!/usr/bin/env bash
# Opt-in end-to-end check of the Docker images (`make docker-e2e`): build them, start the compose
# stack (PostgreSQL, Prefect server, one-shot deploy, CPU worker), run extract-and-train/local on
# tiny parameters (the demo data, offline) through the deploy container, check that the flow run
# is Completed and wrote summary.json to the runs volume, then `docker compose down -v`.
# Figures (build seconds, image sizes, compose wall times) go to $ERC_E2E_DIR/e2e.json.
# Environment: those of scripts/docker-build.sh, plus
#   ERC_E2E_DIR      where logs and figures go (default a new /tmp/erc-docker-e2e.XXXXXX)
#   ERC_LOCAL_BASE   default 1 here: every image on erc-base:bookworm (no image registry needed);
#                    ERC_LOCAL_BASE= (empty) uses the official python and postgres images
#   ERC_E2E_SKIP_BUILD=1   use the images as they are
# Needs root where it has to start dockerd (Debian: apt-get install docker.io debootstrap
# docker-compose). A dockerd started here is stopped at the end; the images are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

WORK=${ERC_E2E_DIR:-$(mktemp -d /tmp/erc-docker-e2e.XXXXXX)}
mkdir -p "$WORK"
export TMPDIR=$WORK # docker-build.sh's logs
export ERC_LOCAL_BASE=${ERC_LOCAL_BASE-1}
export ERC_BUILD_NETWORK=${ERC_BUILD_NETWORK:-host}
[[ -n $ERC_LOCAL_BASE ]] && export ERC_POSTGRES_IMAGE=${ERC_POSTGRES_IMAGE:-erc-postgres:15}
export ERC_BUILD_TIMES=$WORK/build-times.tsv
: >"$ERC_BUILD_TIMES"
log() { echo "docker-e2e: $*"; }

# --- the engine -------------------------------------------------------------------------------
DOCKERD_PID=
if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || {
        log "no Docker engine running and no dockerd (apt-get install docker.io)" >&2
        exit 1
    }
    [[ $(id -u) == 0 ]] || {
        log "dockerd is not running and starting it needs root" >&2
        exit 1
    }
    dockerd >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break || sleep 1; done
    docker info >/dev/null 2>&1 || {
        tail -20 "$WORK/dockerd.log" >&2
        exit 1
    }
    log "started dockerd (pid $DOCKERD_PID)"
fi

if docker compose version >/dev/null 2>&1; then
    COMPOSE_CLI=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE_CLI=(docker-compose)
else
    log "neither 'docker compose' nor docker-compose found (apt-get install docker-compose)" >&2
    exit 1
fi

# A free port on 127.0.0.1 for the server's published port.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export ERC_PREFECT_PORT=$port
mkdir -p "$WORK/data" # an empty /data: the demo data is generated
export ERC_DATA=$WORK/data
PROJECT=erc-e2e-$$
COMPOSE=("${COMPOSE_CLI[@]}" -p "$PROJECT" -f "$ROOT/docker/compose.yaml")

cleanup() {
    local rc=$?
    if [[ -n ${STACK_UP:-} ]]; then
        "${COMPOSE[@]}" logs --no-color >"$WORK/compose.log" 2>&1 || true
        "${COMPOSE[@]}" down -v --remove-orphans >"$WORK/down.log" 2>&1 || true
        log "stack $PROJECT removed (logs: $WORK/compose.log)"
    fi
    if [[ -n $DOCKERD_PID ]]; then
        kill "$DOCKERD_PID" 2>/dev/null && wait "$DOCKERD_PID" 2>/dev/null || true
        log "stopped dockerd"
    fi
    ((rc == 0)) || log "FAILED (rc $rc); logs in $WORK" >&2
    exit "$rc"
}
trap cleanup EXIT

# --- images -----------------------------------------------------------------------------------
t_build=0
if [[ -z ${ERC_E2E_SKIP_BUILD:-} ]]; then
    images=(cpu server)
    [[ ${ERC_POSTGRES_IMAGE:-} == erc-postgres:* ]] && images+=(postgres)
    t0=$(date +%s)
    scripts/docker-build.sh "${images[@]}"
    t_build=$(($(date +%s) - t0))
fi

# --- the stack --------------------------------------------------------------------------------
t0=$(date +%s)
STACK_UP=1
"${COMPOSE[@]}" up -d --no-build >"$WORK/up.log" 2>&1 || {
    cat "$WORK/up.log" >&2
    exit 1
}
t_up=$(($(date +%s) - t0))
log "stack $PROJECT up in ${t_up} s (UI http://127.0.0.1:$port)"

# extract-and-train on tiny parameters (tests/flows/test_prefect_integration.py's PARAMS).
t0=$(date +%s)
"${COMPOSE[@]}" run --rm -T deploy prefect deployment run extract-and-train/local \
    --param preset=tiny --param modalities=ta --param model_preset=tiny \
    --param demo_dialogues=3 --param demo_utterances=4 --param 'overrides={"epochs": 2}' \
    --param out_dir=runs/e2e --watch --watch-timeout 900 >"$WORK/run.log" 2>&1 || {
    cat "$WORK/run.log" >&2
    exit 1
}
t_run=$(($(date +%s) - t0))
flow_run=$(grep -oE 'UUID: [0-9a-f-]{36}' "$WORK/run.log" | head -1 | cut -d' ' -f2)
[[ -n $flow_run ]] || {
    cat "$WORK/run.log" >&2
    log "no flow run id in the output" >&2
    exit 1
}
state=$("${COMPOSE[@]}" run --rm -T deploy prefect flow-run inspect "$flow_run" --output json 2>>"$WORK/run.log" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["state"]["type"])')
[[ $state == COMPLETED ]] || {
    cat "$WORK/run.log" >&2
    log "flow run $flow_run is $state, not COMPLETED" >&2
    exit 1
}
# The worker wrote the outputs into the runs volume (/opt/erc/runs).
"${COMPOSE[@]}" exec -T worker cat /opt/erc/runs/e2e/summary.json >"$WORK/summary.json" || {
    log "no runs/e2e/summary.json in the worker's runs volume" >&2
    exit 1
}
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$WORK/summary.json"
log "flow run $flow_run COMPLETED in ${t_run} s; summary.json in the runs volume"

t0=$(date +%s)
"${COMPOSE[@]}" logs --no-color >"$WORK/compose.log" 2>&1 || true
"${COMPOSE[@]}" down -v --remove-orphans >"$WORK/down.log" 2>&1
STACK_UP=
t_down=$(($(date +%s) - t0))

# --- figures ----------------------------------------------------------------------------------
python3 - "$WORK" "$t_build" "$t_up" "$t_run" "$t_down" "${COMPOSE_CLI[*]}" "$flow_run" <<'EOF'
import json, sys
work, t_build, t_up, t_run, t_down, compose, flow_run = sys.argv[1:]
images = {}
for line in open(f"{work}/build-times.tsv"):
    tag, secs, size = line.split("\t")
    images[tag] = {"build_s": int(secs), "size_bytes": int(size)}
out = {
    "compose": compose, "flow_run": flow_run, "images": images,
    "build_s": int(t_build), "up_s": int(t_up), "run_s": int(t_run), "down_s": int(t_down),
    "compose_wall_s": int(t_up) + int(t_run) + int(t_down),
}
json.dump(out, open(f"{work}/e2e.json", "w"), indent=1)
print(json.dumps(out, indent=1))
EOF
log "OK (figures: $WORK/e2e.json)"
