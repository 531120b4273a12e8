#!/usr/bin/env bash
# Stop what scripts/prefect-up.sh started: the workers first, then the server.
# A Prefect worker shuts down on its second signal (the first asks it to finish gracefully), so
# it gets SIGINT, a wait, SIGTERM, a wait, then SIGKILL for whatever is left in its process group
# (flow runs it started). The server is stopped by `prefect server stop` (it was started with
# `prefect server start --background`), then SIGKILLed if it has not exited after the wait.
# Settings: PREFECT_HOME (default <project>/.prefect), ERC_STOP_WAIT seconds per step (default 10).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
WAIT="${ERC_STOP_WAIT:-10}"
export PREFECT_HOME
if [[ -n "${ERC_PREFECT:-}" ]]; then
  PREFECT=($ERC_PREFECT)
elif [[ -x "$ROOT/.venv/bin/prefect" ]]; then
  PREFECT=("$ROOT/.venv/bin/prefect")
elif command -v prefect >/dev/null; then
  PREFECT=(prefect)
else
  PREFECT=(uv run --frozen prefect)
fi

# wait_gone PID SECONDS: true once PID has exited
wait_gone() {
  local pid=$1 n=$(($2 * 5))
  for _ in $(seq 1 "$n"); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  ! kill -0 "$pid" 2>/dev/null
}

# stop NAME PIDFILE SIGNAL...: send each signal in turn to the process, waiting for an exit between
# them; then SIGKILL its process group (prefect-up.sh started it with setsid), leftovers included.
stop() {
  local name=$1 pidfile=$2
  shift 2
  if [[ ! -f "$pidfile" ]]; then
    echo "$name: not running (no $pidfile)"
    return 0
  fi
  local pid
  pid="$(cat "$pidfile")"
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "$name: not running (stale pid $pid)"
    rm -f "$pidfile"
    return 0
  fi
  for sig in "$@"; do
    kill -s "$sig" "$pid" 2>/dev/null
    if wait_gone "$pid" "$WAIT"; then
      break
    fi
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name: still running after $* -> SIGKILL"
    kill -s KILL -- "-$pid" 2>/dev/null || kill -s KILL "$pid" 2>/dev/null
    wait_gone "$pid" 5
  fi
  # Leftovers of the group (a flow run the worker started) go too.
  kill -s KILL -- "-$pid" 2>/dev/null
  rm -f "$pidfile"
  echo "$name: stopped (pid $pid)"
}

# Every worker prefect-up.sh started (ERC_WORKERS): erc-worker.pid, erc-worker-2.pid, ...
for pidfile in "$PREFECT_HOME"/erc-worker.pid "$PREFECT_HOME"/erc-worker-*.pid; do
  [[ -e "$pidfile" || "$pidfile" == "$PREFECT_HOME/erc-worker.pid" ]] || continue  # no match
  n="$(basename "$pidfile" .pid)"
  n="${n#erc-worker}"
  stop "worker${n:+ ${n#-}}" "$pidfile" INT TERM &  # in parallel: each waits up to 2 x ERC_STOP_WAIT
done
wait

SERVER_PID="$PREFECT_HOME/server.pid"
if [[ -f "$SERVER_PID" ]]; then
  pid="$(cat "$SERVER_PID")"
  "${PREFECT[@]}" server stop >/dev/null 2>&1 || true  # SIGTERM, removes the pid file
  if ! wait_gone "$pid" "$WAIT"; then
    echo "server: still running after SIGTERM -> SIGKILL"
    kill -s KILL "$pid" 2>/dev/null
    wait_gone "$pid" 5
  fi
  rm -f "$SERVER_PID"
  echo "server: stopped (pid $pid)"
else
  echo "server: not running (no $SERVER_PID)"
fi

if [[ -f "$ROOT/prefect.toml" ]] && grep -q "written by scripts/prefect-up.sh" "$ROOT/prefect.toml"; then
  rm -f "$ROOT/prefect.toml"
  echo "removed prefect.toml"
fi
