#!/usr/bin/env bash
# `make test`: the whole suite, then the failover, fault and crash suites again against
# the real BullMQ service (ORCH_TEST_SERVICE=bullmq) instead of the in-process stand-in.
# cargo-nextest when installed (parallel, a per-test time limit in .config/nextest.toml),
# plain `cargo test` otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  ORCH_TEST_SERVICE=bullmq cargo nextest run --no-fail-fast --test failover --test faults --test crash_resume
else
  cargo test --workspace
  ORCH_TEST_SERVICE=bullmq cargo test --test failover --test faults --test crash_resume
fi
