#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL cluster: STORYLOOP_TEST_PG_URL points at it.
# Usage: scripts/with-postgres.sh CMD [ARGS...]
# Without Debian's PostgreSQL server the command runs alone (its PostgreSQL tests then skip,
# or fail when CI=true). initdb refuses to run as root, so as root the cluster runs as `postgres`.
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "with-postgres: no PostgreSQL server found (apt-get install postgresql); running without it" >&2
  exec "$@"
fi

dir=$(mktemp -d /tmp/storyloop-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$dir"
  as_pg=(runuser -u postgres --)
fi

stop() {
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT

"${as_pg[@]}" "$bindir/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
"${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null \
  || { cat "$dir/server.log" >&2; exit 1; }

export STORYLOOP_TEST_PG_URL="postgresql://postgres@127.0.0.1:$port/postgres"
echo "with-postgres: PostgreSQL $($bindir/postgres --version | awk '{print $3}') on port $port" >&2
set +e
"$@"
rc=$?
exit $rc
