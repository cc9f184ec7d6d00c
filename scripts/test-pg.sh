# Sourced by scripts/test.sh: makes sure the tests have a PostgreSQL server and exports
# ORCH_TEST_PG (its URL, without a database). In order:
#   1. ORCH_TEST_PG as given;
#   2. the local server at 127.0.0.1:5432 when it answers as `postgres` without a
#      password (a developer machine, this CI image);
#   3. a private server started from the PostgreSQL binaries under target/test-pg on
#      127.0.0.1:55432 (left running for the next run; `pg_ctl -D target/test-pg stop`
#      stops it). As root it runs as the `postgres` user, which refuses root.
# .ci/run installs the binaries (Debian's `postgresql`) when the machine lacks them.
ensure_test_pg() {
  if [ -n "${ORCH_TEST_PG:-}" ]; then return 0; fi
  if psql "postgres://postgres@127.0.0.1:5432/postgres" -qAtc 'SELECT 1' >/dev/null 2>&1; then
    export ORCH_TEST_PG="postgres://postgres@127.0.0.1:5432"
    return 0
  fi
  local initdb bindir dir port=55432 as=()
  initdb=$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$initdb" ]; then
    echo "no PostgreSQL: set ORCH_TEST_PG, start one on 127.0.0.1:5432, or install its binaries (apt-get install postgresql)" >&2
    return 1
  fi
  bindir=$(dirname "$initdb")
  dir="$PWD/target/test-pg"
  if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
  if [ ! -f "$dir/PG_VERSION" ]; then
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    "${as[@]}" "$bindir/initdb" -D "$dir" -U postgres -A trust --no-sync >/dev/null
  fi
  if ! psql "postgres://postgres@127.0.0.1:$port/postgres" -qAtc 'SELECT 1' >/dev/null 2>&1; then
    "${as[@]}" "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
  fi
  export ORCH_TEST_PG="postgres://postgres@127.0.0.1:$port"
}
