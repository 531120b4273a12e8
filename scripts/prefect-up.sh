#!/usr/bin/env bash
# Start a local Prefect stack for this project and deploy its flows:
#   1. a Prefect server on 127.0.0.1:$ERC_PREFECT_PORT (SQLite under $PREFECT_HOME, or the
#      database at $ERC_PREFECT_DB_URL), analytics off
#   2. the process work pool $ERC_POOL (created once; rerunning is harmless)
#   3. `prefect deploy --all` (prefect.yaml: extract-and-train/local, extract/local, ...)
#   4. $ERC_WORKERS workers on that pool (default 1), in the background
# Then: uv run prefect deployment run extract-and-train/local   (the demo data, offline)
# Stop everything with scripts/prefect-down.sh (make prefect-down).
#
# Settings (environment):
#   ERC_PREFECT_PORT   server port (default 4200; `make prefect-up PORT=4300` sets it)
#   ERC_POOL           work pool of the workers (default erc-process, as in prefect.yaml)
#   ERC_WORKERS        how many process workers to start on that pool (default 1); worker i is
#                      named erc-<host>-<i>, pid file erc-worker.pid (i = 1) / erc-worker-<i>.pid,
#                      log worker.log / worker-<i>.log under $PREFECT_HOME
#   ERC_WORKER_LIMIT   flow runs one worker runs at once (default: no limit). With a limit, runs
#                      beyond it wait for another worker: a grid (flows/grid.py) spreads out.
#   ERC_PREFECT_DB_URL the server's database (default: SQLite under $PREFECT_HOME), e.g.
#                      postgresql+asyncpg://user:password@127.0.0.1:5432/prefect
#                      (scripts/postgres.sh start prints one); passed to the server as
#                      PREFECT_SERVER_DATABASE_CONNECTION_URL (Prefect 3 also reads the older
#                      PREFECT_API_DATABASE_CONNECTION_URL)
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
WORKERS="${ERC_WORKERS:-1}"
[[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || { echo "error: ERC_WORKERS=$WORKERS: expected a whole number >= 1" >&2; exit 1; }
LIMIT=()
if [[ -n "${ERC_WORKER_LIMIT:-}" ]]; then
  [[ "$ERC_WORKER_LIMIT" =~ ^[1-9][0-9]*$ ]] || { echo "error: ERC_WORKER_LIMIT=$ERC_WORKER_LIMIT: expected a whole number >= 1" >&2; exit 1; }
  LIMIT=(--limit "$ERC_WORKER_LIMIT")
fi
if [[ -n "${ERC_PREFECT_DB_URL:-}" ]]; then
  export PREFECT_SERVER_DATABASE_CONNECTION_URL="$ERC_PREFECT_DB_URL"
fi
DB="${ERC_PREFECT_DB_URL:+$(sed -E 's#//([^:@/]*):[^@/]*@#//\1@#' <<<"$ERC_PREFECT_DB_URL")}"  # no password
DB="${DB:-SQLite in $PREFECT_HOME}"

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
echo " up at http://127.0.0.1:$PORT (database: $DB)"

# 2. work pools: one CLI call each (a prefect command takes seconds to start); an existing pool
# is left as it is, never overwritten.
for pool in "$POOL" "$GPU_POOL"; do
  if out="$("${PREFECT[@]}" work-pool create "$pool" --type process 2>&1)"; then
    echo "pool: $pool created (process)"
  elif grep -q "already exists" <<<"$out"; then
    echo "pool: $pool exists"
  else
    echo "error: creating work pool $pool failed: $out" >&2
    exit 1
  fi
done

# 3. deployments
"${PREFECT[@]}" --no-prompt deploy --all >"$PREFECT_HOME/deploy.log" 2>&1 || {
  echo "error: prefect deploy failed; see $PREFECT_HOME/deploy.log" >&2
  tail -n 30 "$PREFECT_HOME/deploy.log" >&2
  exit 1
}
echo "deployments: $("${PREFECT[@]}" deployment ls 2>/dev/null | grep -oE '[a-z-]+/(local|gpu)' | sort -u | tr '\n' ' ')"

# 4. workers, started together, then waited for: worker 1 keeps the single-worker file names
# (erc-worker.pid, worker.log), worker i > 1 has erc-worker-<i>.pid and worker-<i>.log.
worker_files() { local suffix=""; [[ "$1" == 1 ]] || suffix="-$1"; echo "$PREFECT_HOME/erc-worker$suffix.pid $PREFECT_HOME/worker$suffix.log"; }
started=()
for i in $(seq 1 "$WORKERS"); do
  read -r pidfile log <<<"$(worker_files "$i")"
  if alive "$pidfile"; then
    echo "worker $i: already running (pid $(cat "$pidfile"))"
    continue
  fi
  setsid nohup "${PREFECT[@]}" worker start --pool "$POOL" --type process \
    --name "erc-$(hostname)-$i" "${LIMIT[@]}" >"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  started+=("$i")
done
for i in "${started[@]}"; do
  read -r pidfile log <<<"$(worker_files "$i")"
  for _ in $(seq 1 90); do
    grep -q "started" "$log" 2>/dev/null && break
    alive "$pidfile" || { echo "error: worker $i exited; see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
    sleep 1
  done
  echo "worker $i: erc-$(hostname)-$i${ERC_WORKER_LIMIT:+ (at most $ERC_WORKER_LIMIT runs at once)}, pid $(cat "$pidfile"), log $log"
done

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
