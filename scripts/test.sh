#!/usr/bin/env bash
# `make test`: the whole suite; then the failover, fault and crash suites again against
# the real BullMQ service (ORCH_TEST_SERVICE=bullmq) instead of the in-process stand-in;
# then the world-based suites again with their journals on PostgreSQL
# (ORCH_TEST_DB=postgres; tests/journal_contract.rs and tests/leader.rs use PostgreSQL
# in the first pass already). scripts/test-pg.sh finds or starts the PostgreSQL server.
# cargo-nextest when installed (parallel, a per-test time limit in .config/nextest.toml),
# plain `cargo test` otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/test-pg.sh
ensure_test_pg
echo "PostgreSQL for the tests: $ORCH_TEST_PG" >&2
PG_SUITES=(--test crash_resume --test faults --test failover --test fleet)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  ORCH_TEST_SERVICE=bullmq cargo nextest run --no-fail-fast --test failover --test faults --test crash_resume
  ORCH_TEST_DB=postgres cargo nextest run --no-fail-fast "${PG_SUITES[@]}"
else
  cargo test --workspace
  ORCH_TEST_SERVICE=bullmq cargo test --test failover --test faults --test crash_resume
  ORCH_TEST_DB=postgres cargo test "${PG_SUITES[@]}"
fi
