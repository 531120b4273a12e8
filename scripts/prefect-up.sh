#!/usr/bin/env bash
# Start a local Prefect stack for this project and deploy its flows:
#   1. a Prefect server on 127.0.0.1:$ERC_PREFECT_PORT (SQLite under $PREFECT_HOME), analytics off
#   2. the process work pool $ERC_POOL (created once; rerunning is harmless)
#   3. `prefect deploy --all` (prefect.yaml: extract-and-train/local, extract/local, ...)
#   4. a worker on that pool, in the background
# Then: uv run prefect deployment run extract-and-train/local   (the demo data, offline)
# Stop everything with scripts/prefect-down.sh (make prefect-down).
#
# Settings (environment):
#   ERC_PREFECT_PORT   server port (default 4200; `make prefect-up PORT=4300` sets it)
#   ERC_POOL           work pool of the worker (default erc-process, as in prefect.yaml)
#   ERC_GPU_POOL       GPU pool created for train/gpu (default erc-gpu; no worker started here)
#   PREFECT_HOME       server database, pid and log files (default <project>/.prefect; the
#                      server's pid file is Prefect's own server.pid there)
#   ERC_PREFECT_TOML   1 (default): write <project>/prefect.toml pointing the prefect CLI at this
#                      server, so plain `prefect ...` commands in the project use it; 0: don't
#   ERC_PREFECT        the prefect command (default <project>/.venv/bin/prefect, else `uv run prefect`)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${ERC_PREFECT_PORT:-4200}"
POOL="${ERC_POOL:-erc-process}"
GPU_POOL="${ERC_GPU_POOL:-erc-gpu}"  # for train/gpu; its worker runs on a GPU machine
export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_CLI_PROMPT=false  # never wait for an answer (prefect deploy asks otherwise)
if [[ -n "${ERC_PREFECT:-}" ]]; then
  PREFECT=($ERC_PREFECT)
elif [[ -x "$ROOT/.venv/bin/prefect" ]]; then
  PREFECT=("$ROOT/.venv/bin/prefect")
elif command -v prefect >/dev/null; then
  PREFECT=(prefect)
else
  PREFECT=(uv run --frozen prefect)
fi
mkdir -p "$PREFECT_HOME"
SERVER_PID="$PREFECT_HOME/server.pid"  # written by `prefect server start --background`
WORKER_PID="$PREFECT_HOME/erc-worker.pid"

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# 1. server: Prefect's own background mode (pid in $SERVER_PID; `prefect server stop` ends it).
# setsid: no controlling terminal, so closing the shell that ran `make prefect-up` leaves it up.
if alive "$SERVER_PID"; then
  echo "server: already running (pid $(cat "$SERVER_PID")) at http://127.0.0.1:$PORT"
else
  rm -f "$SERVER_PID"  # stale: the server died without `prefect server stop`
  setsid "${PREFECT[@]}" server start --background --host 127.0.0.1 --port "$PORT" \
    >"$PREFECT_HOME/server.log" 2>&1 </dev/null || {
    echo "error: prefect server start failed (port $PORT taken? set PORT=...):" >&2
    tail -n 20 "$PREFECT_HOME/server.log" >&2
    exit 1
  }
  echo -n "server: starting (pid $(cat "$SERVER_PID"))"
fi
if ! "${PREFECT[@]}" server status --wait --timeout 120 >"$PREFECT_HOME/server-status.log" 2>&1; then
  echo; echo "error: server not healthy after 120 s:" >&2
  tail -n 20 "$PREFECT_HOME/server-status.log" "$PREFECT_HOME/server.log" >&2
  exit 1
fi
echo " up at http://127.0.0.1:$PORT"

# 2. work pools (inspect first: create fails when one exists)
for pool in "$POOL" "$GPU_POOL"; do
  if "${PREFECT[@]}" work-pool inspect "$pool" >/dev/null 2>&1; then
    echo "pool: $pool exists"
  else
    "${PREFECT[@]}" work-pool create "$pool" --type process >/dev/null
    echo "pool: $pool created (process)"
  fi
done

# 3. deployments
"${PREFECT[@]}" --no-prompt deploy --all >"$PREFECT_HOME/deploy.log" 2>&1 || {
  echo "error: prefect deploy failed; see $PREFECT_HOME/deploy.log" >&2
  tail -n 30 "$PREFECT_HOME/deploy.log" >&2
  exit 1
}
echo "deployments: $("${PREFECT[@]}" deployment ls 2>/dev/null | grep -oE '[a-z-]+/(local|gpu)' | sort -u | tr '\n' ' ')"

# 4. worker
if alive "$WORKER_PID"; then
  echo "worker: already running (pid $(cat "$WORKER_PID"))"
else
  setsid nohup "${PREFECT[@]}" worker start --pool "$POOL" --type process \
    >"$PREFECT_HOME/worker.log" 2>&1 </dev/null &
  echo $! >"$WORKER_PID"
  for _ in $(seq 1 60); do
    grep -q "started" "$PREFECT_HOME/worker.log" 2>/dev/null && break
    alive "$WORKER_PID" || { echo "error: the worker exited; see $PREFECT_HOME/worker.log" >&2; tail -n 20 "$PREFECT_HOME/worker.log" >&2; exit 1; }
    sleep 1
  done
  echo "worker: pid $(cat "$WORKER_PID"), log $PREFECT_HOME/worker.log"
fi

# Point plain `prefect` commands run in the project at this server.
if [[ "${ERC_PREFECT_TOML:-1}" == "1" ]]; then
  if [[ -f "$ROOT/prefect.toml" ]] && ! grep -q "written by scripts/prefect-up.sh" "$ROOT/prefect.toml"; then
    echo "note: $ROOT/prefect.toml exists and is not ours; left as is" >&2
  else
    cat >"$ROOT/prefect.toml" <<TOML
# written by scripts/prefect-up.sh, removed by scripts/prefect-down.sh: points the prefect CLI,
# when run in this folder, at the local server. Not for version control.
[api]
url = "$PREFECT_API_URL"

[server]
analytics_enabled = false
TOML
  fi
fi

cat <<MSG

Prefect UI: http://127.0.0.1:$PORT
Run the demo end to end:    uv run prefect deployment run extract-and-train/local
  (outside this folder:     PREFECT_API_URL=$PREFECT_API_URL uv run prefect deployment run extract-and-train/local)
Predict its videos:         uv run prefect deployment run predict/local
Stop:                       make prefect-down
MSG
