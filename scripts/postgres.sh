#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the Prefect server (tests, trying the stack out):
#
#   eval "$(scripts/postgres.sh start)"     # -> ERC_PG_DIR, ERC_PG_PORT, ERC_PREFECT_DB_URL
#   ERC_WORKERS=2 scripts/prefect-up.sh     # the Prefect server then uses this PostgreSQL
#   ...
#   scripts/prefect-down.sh
#   scripts/postgres.sh stop "$ERC_PG_DIR"  # stops the cluster and deletes its folder
#
# start [DIR]: initdb into DIR/data (DIR default: a new /tmp/erc-pg.XXXXXX), start the server on
#   127.0.0.1 only, on $ERC_PG_PORT (default: a free port), TCP only (no Unix socket), password
#   login (scram-sha-256, a random password: the port is visible to every user of the machine),
#   create the database "prefect"; print the settings as shell assignments (also in DIR/env,
#   mode 600). The cluster's log is DIR/postgres.log.
# stop DIR: pg_ctl stop (fast, then immediate), then remove DIR unless ERC_PG_KEEP=1.
#
# PostgreSQL refuses to run as root: as root, the cluster belongs to and runs as $ERC_PG_USER
# (default postgres, the user Debian's postgresql package creates), through runuser. Binaries:
# initdb/pg_ctl on PATH, else the newest /usr/lib/postgresql/<version>/bin (Debian keeps them
# there). $ERC_PG_BIN names the folder explicitly.
set -euo pipefail

die() { echo "error: $*" >&2; exit 1; }

pg_bin() {
  if [[ -n "${ERC_PG_BIN:-}" ]]; then
    echo "$ERC_PG_BIN"
  elif command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(readlink -f "$(command -v initdb)")"  # the real folder: createdb is there too
  else
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$d" && -x "$d/initdb" ]] || die "no PostgreSQL binaries (initdb, pg_ctl): install Debian's postgresql package or set ERC_PG_BIN"
    echo "$d"
  fi
}
BIN="$(pg_bin)"

# as_owner CMD...: run a PostgreSQL binary as the cluster's owner (runuser when we are root).
if [[ "$(id -u)" == 0 ]]; then
  OWNER="${ERC_PG_USER:-postgres}"
  id "$OWNER" >/dev/null 2>&1 || die "running as root and there is no user $OWNER to own the cluster (set ERC_PG_USER)"
  as_owner() { runuser -u "$OWNER" -- "$@"; }
else
  OWNER="$(id -un)"
  as_owner() { "$@"; }
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local dir="${1:-}"
  if [[ -z "$dir" ]]; then
    dir="$(mktemp -d /tmp/erc-pg.XXXXXX)"  # /tmp, not a private temp folder: $OWNER must reach it
  fi
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  [[ ! -e "$dir/data" ]] || die "$dir/data exists: stop that cluster first (scripts/postgres.sh stop $dir)"
  local port="${ERC_PG_PORT:-$(free_port)}" user=erc db=prefect password
  password="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  (umask 077 && printf '%s\n' "$password" >"$dir/pwfile")
  [[ "$OWNER" == "$(id -un)" ]] || chown "$OWNER" "$dir" "$dir/pwfile"
  chmod 700 "$dir"

  as_owner "$BIN/initdb" -D "$dir/data" -U "$user" --pwfile="$dir/pwfile" --auth=scram-sha-256 \
    -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed in $dir"; }
  rm -f "$dir/pwfile"
  # -w: wait until it accepts connections. fsync off: a throwaway cluster, speed over durability.
  as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='' -c fsync=off -c max_connections=200" \
    start >/dev/null || { tail -n 20 "$dir/postgres.log" >&2; die "PostgreSQL did not start on 127.0.0.1:$port (port taken? set ERC_PG_PORT)"; }
  PGPASSWORD="$password" "$BIN/createdb" -h 127.0.0.1 -p "$port" -U "$user" "$db" ||
    die "createdb $db failed; see $dir/postgres.log"

  local url="postgresql+asyncpg://$user:$password@127.0.0.1:$port/$db"
  (umask 077 && cat >"$dir/env" <<ENV
ERC_PG_DIR=$dir
ERC_PG_PORT=$port
ERC_PG_PASSWORD=$password
ERC_PREFECT_DB_URL=$url
ENV
)
  sed 's/^/export /' "$dir/env"
  echo "postgres: 127.0.0.1:$port, database $db, user $user (owner $OWNER), folder $dir" >&2
}

stop() {
  local dir="${1:-}"
  [[ -n "$dir" ]] || die "usage: scripts/postgres.sh stop DIR"
  if [[ -f "$dir/data/postmaster.pid" ]]; then
    local pid
    pid="$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)"
    as_owner "$BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      as_owner "$BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
      echo "warning: pg_ctl stop failed for $dir/data" >&2
    # pg_ctl returns once postmaster.pid is gone, a moment before the process itself has exited:
    # "stopped" here means no process is left (tests/flows/test_prefect_postgres.py checks it).
    for _ in $(seq 100); do
      [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    echo "postgres: stopped ($dir)" >&2
  else
    echo "postgres: not running ($dir)" >&2
  fi
  if [[ "${ERC_PG_KEEP:-0}" != "1" && -d "$dir" ]]; then
    rm -rf "$dir"
  fi
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) die "usage: scripts/postgres.sh start [DIR] | stop DIR" ;;
esac
