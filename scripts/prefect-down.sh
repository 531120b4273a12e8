#!/usr/bin/env bash
# Stop what scripts/prefect-up.sh started: the worker first, then the server.
# A Prefect worker shuts down on its second signal (the first asks it to finish gracefully), so
# it gets SIGINT, a wait, SIGTERM, a wait, then SIGKILL for whatever is left in its process group
# (flow runs it started). The server gets SIGTERM, then SIGKILL if it does not stop.
# Settings: PREFECT_HOME (default <project>/.prefect), ERC_STOP_WAIT seconds per step (default 10).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
WAIT="${ERC_STOP_WAIT:-10}"

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

stop worker "$PREFECT_HOME/erc-worker.pid" INT TERM
stop server "$PREFECT_HOME/erc-server.pid" TERM

if [[ -f "$ROOT/prefect.toml" ]] && grep -q "written by scripts/prefect-up.sh" "$ROOT/prefect.toml"; then
  rm -f "$ROOT/prefect.toml"
  echo "removed prefect.toml"
fi
