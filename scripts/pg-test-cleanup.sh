#!/usr/bin/env bash
# Drops every test database (orch_test_*) on the tests' PostgreSQL (ORCH_TEST_PG, default
# postgres://postgres@127.0.0.1:5432). Tests drop their own through a guard, and a later
# run drops those of dead processes on a loopback server; this is for the rest (a shared
# CI server, or `fresh_database()` URLs). Run it when no tests run: it ends live ones'
# connections.
set -euo pipefail
base="${ORCH_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
# scheme://user@host:port, without a database or query string.
admin="$(printf '%s' "$base" | sed -E 's#^(postgres(ql)?://[^/?]*).*#\1#')"
psql -X -q -At "$admin/postgres" -c "SELECT datname FROM pg_database WHERE datname LIKE 'orch\_test\_%'" |
  while read -r db; do
    echo "dropping $db"
    psql -X -q "$admin/postgres" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
  done
