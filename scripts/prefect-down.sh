#!/usr/bin/env bash
# Stop what scripts/prefect-up.sh started and say what it found: the workers first, then the
# flow-run processes they started, then the server.
# A Prefect worker shuts down on its second signal (the first asks it to finish gracefully), so
# it gets SIGINT, a wait, SIGTERM, a wait, then SIGKILL for whatever is left in its process group.
# Flow-run processes (`python -m prefect.engine`) run in sessions of their own, so the group kill
# misses them: every process of this stack (PREFECT_HOME in its environment) that is still alive
# then gets SIGTERM, a wait, and SIGKILL. The server gets SIGTERM, a wait, then SIGKILL; a server
# that had died is reported with the end of its log.
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
    echo "$name: was not running: pid $pid had exited"
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

# stack_pids: processes (other than this script) with this PREFECT_HOME in their environment and
# prefect in their command line: flow runs, workers, the server.
stack_pids() {
  local env pid
  for env in /proc/[0-9]*/environ; do
    pid="${env#/proc/}"
    pid="${pid%/environ}"
    [[ "$pid" == "$$" ]] && continue
    tr '\0' '\n' <"$env" 2>/dev/null | grep -qxF "PREFECT_HOME=$PREFECT_HOME" || continue
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q prefect || continue
    echo "$pid"
  done
}

SERVER_PID="$PREFECT_HOME/erc-server.pid"
server=""
[[ -f "$SERVER_PID" ]] && server="$(cat "$SERVER_PID")"
# Flow runs left behind by the workers (still running, or orphaned by a dead worker).
mapfile -t runs < <(stack_pids | grep -vxF "${server:-none}")
if ((${#runs[@]})); then
  kill -s TERM "${runs[@]}" 2>/dev/null
  for pid in "${runs[@]}"; do wait_gone "$pid" "$WAIT" || kill -s KILL "$pid" 2>/dev/null; done
  echo "flow runs: stopped ${#runs[@]} left behind (pids ${runs[*]})"
fi

if [[ -z "$server" ]]; then
  echo "server: not running (no $SERVER_PID)"
elif ! kill -0 "$server" 2>/dev/null; then
  echo "server: was not running: pid $server had exited; the end of $PREFECT_HOME/server.log:"
  tail -n 5 "$PREFECT_HOME/server.log" 2>/dev/null | sed 's/^/  /'
  rm -f "$SERVER_PID"
else
  kill -s TERM -- "-$server" 2>/dev/null || kill -s TERM "$server" 2>/dev/null
  if ! wait_gone "$server" "$WAIT"; then
    echo "server: still running after SIGTERM -> SIGKILL"
    kill -s KILL -- "-$server" 2>/dev/null || kill -s KILL "$server" 2>/dev/null
    wait_gone "$server" 5
  fi
  kill -s KILL -- "-$server" 2>/dev/null  # its children (uvicorn) go too
  rm -f "$SERVER_PID"
  echo "server: stopped (pid $server)"
fi

if [[ -f "$ROOT/prefect.toml" ]] && grep -q "written by scripts/prefect-up.sh" "$ROOT/prefect.toml"; then
  rm -f "$ROOT/prefect.toml"
  echo "removed prefect.toml"
fi
