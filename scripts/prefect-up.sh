#!/usr/bin/env bash
# Start a local Prefect stack for this project and deploy its flows:
#   1. a Prefect server on 127.0.0.1:$ERC_PREFECT_PORT (SQLite under $PREFECT_HOME, or the
#      database at $ERC_PREFECT_DB_URL), analytics off
#   2. the process work pool $ERC_POOL (created once; rerunning is harmless)
#   3. an automation that marks flow runs Crashed when their heartbeats stop
#      (scripts/zombie-automation.yaml), and `prefect deploy --all` (prefect.yaml)
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
#   PREFECT_HOME       server database, pid and log files (default <project>/.prefect;
#                      erc-server.pid, server.log, erc-worker*.pid, worker*.log)
#   ERC_SERVER_WAIT    seconds to wait for the server to answer (default 300: a loaded machine)
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
SERVER_PID="$PREFECT_HOME/erc-server.pid"
SERVER_WAIT="${ERC_SERVER_WAIT:-300}"  # seconds a slow, loaded machine may take to start the server
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

server_log="$PREFECT_HOME/server.log"
server_died() {
  echo >&2
  echo "error: the Prefect server (pid $(cat "$SERVER_PID" 2>/dev/null)) $1; the end of $server_log:" >&2
  tail -n 30 "$server_log" >&2
  exit 1
}
healthy() {  # the API answers /health with true (system python: no prefect import, ~50 ms)
  python3 -c 'import sys, urllib.request as u; sys.exit(u.urlopen(sys.argv[1], timeout=3).read().strip() != b"true")' \
    "http://127.0.0.1:$PORT/api/health" 2>/dev/null
}

# 1. server, in the foreground of its own session (setsid: closing the shell that ran
# `make prefect-up` leaves it up), its output appended to server.log. Not Prefect's --background
# mode: that leaves the server writing to pipes whose reader (the `prefect` command) has exited,
# and such a server died 30-60 s into a run with nothing in its log.
if alive "$SERVER_PID"; then
  echo -n "server: already running (pid $(cat "$SERVER_PID"))"
else
  rm -f "$SERVER_PID"  # stale: the server had died
  echo "--- $(date -u +%FT%TZ) prefect-up.sh starts the server" >>"$server_log"
  setsid nohup "${PREFECT[@]}" server start --host 127.0.0.1 --port "$PORT" \
    >>"$server_log" 2>&1 </dev/null &
  echo $! >"$SERVER_PID"
  echo -n "server: starting (pid $(cat "$SERVER_PID"))"
fi
# Poll for readiness with a generous bound; a server that exits is reported at once.
for _ in $(seq 1 $((SERVER_WAIT * 2))); do
  healthy && break
  alive "$SERVER_PID" || server_died "exited during start-up (port $PORT taken? set PORT=...)"
  sleep 0.5
done
healthy || server_died "did not answer at http://127.0.0.1:$PORT/api/health within $SERVER_WAIT s"
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

# Flow runs whose process, worker or machine dies stop sending heartbeats; this automation marks
# them Crashed (scripts/zombie-automation.yaml) instead of leaving them Running for good.
ZOMBIE="erc: crash zombie flow runs"
if "${PREFECT[@]}" automation inspect "$ZOMBIE" >/dev/null 2>&1; then
  echo "automation: $ZOMBIE (exists)"
elif out="$("${PREFECT[@]}" automation create --from-file "$ROOT/scripts/zombie-automation.yaml" 2>&1)"; then
  echo "automation: $ZOMBIE (created)"
else
  echo "error: creating the automation failed: $out" >&2
  exit 1
fi

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
# Heartbeats every 30 s (Prefect's default: 180): a dead run is Crashed within 90 s.
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY="${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-30}"
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

alive "$SERVER_PID" || server_died "exited while the stack was being set up"

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
Predict new demo videos:    uv run prefect deployment run predict/local
Stop:                       make prefect-down
MSG
