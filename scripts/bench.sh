#!/usr/bin/env bash
# `make bench`: builds the workspace in release and runs every benchmark once, in one
# run, writing the numbers and the machine they ran on to BENCHMARKS.md.
#
#   1. failover time (SIGKILL the primary; the orchestrator's `serve` vs Redis Sentinel)
#   2. flush of 500,000 of 1,000,000 keys (SCAN+UNLINK vs the runbook's Lua script)
#   3. alert storm (100 / 1,000 / 10,000 duplicate webhooks against `serve`)
#   4. journal (one fsynced transition; 1,000 incidents; `incidents` and `audit` on them)
#   5. footprint (start-up, idle RSS, binary size)
#   6. failover on the real BullMQ service (`bullmq-service/`, Node): the orchestrator
#      vs the same service on ioredis's own Sentinel support, at D = 1 s and D = 3 s
#      (kill → first job completed again, kill → health up, jobs lost; the
#      orchestrator's time per step and its own overhead)
#   7. a fleet: 1,000 targets probed every second by one `serve` (CPU, RSS, watch-round
#      lateness, kill → incident opened), and 200 beside it (`--fleet-targets`)
#   8. the web console: an incident's timeline with 10,001 alerts in headless Chromium
#      (scripts/bench-console.sh, its own section of BENCHMARKS.md)
#   9. several instances on one PostgreSQL journal: SIGKILL the leader → a follower
#      leads (short lease and the defaults), kill → Recovered with the leader SIGKILLed
#      at its deploy intent vs not, a journaled transition on PostgreSQL beside SQLite
#      (needs PostgreSQL at 127.0.0.1:5432, or ORCH_BENCH_PG; `--only leader`)
#
# Benchmarks print numbers; they never fail on speed. Extra arguments go to the
# harness, e.g. `./scripts/bench.sh --only flush,storm --reps 3` (see `--help`); a
# partial run replaces only its own sections of BENCHMARKS.md and keeps the others.
# Everything runs on loopback, on free ports (never 6379), and every process the
# harness starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

# redis-server runs the Redis servers and, with --sentinel, the three sentinels.
if ! command -v redis-server >/dev/null; then
  say "installing redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server
fi

# Node 20 runs the BullMQ service of benchmark 6, with its packages exactly as locked.
if ! command -v node >/dev/null; then
  say "installing node"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm
fi
if [ ! -f bullmq-service/node_modules/.package-lock.json ] || [ bullmq-service/package-lock.json -nt bullmq-service/node_modules/.package-lock.json ]; then
  say "installing the BullMQ service's packages (npm ci --prefix bullmq-service)"
  npm ci --prefix bullmq-service --no-audit --no-fund
fi

say "building the workspace in release (cargo build --release --workspace)"
cargo build --release --workspace

say "running the benchmarks (about 6-8 minutes)"
# Temporary journals and Redis files go to TMPDIR (default /tmp): keep it on a real disk
# so fsync costs what it costs in production.
target/release/bench --root "$PWD" --out BENCHMARKS.md "$@"

say "the web console's timeline with 10,001 alerts (scripts/bench-console.sh)"
./scripts/bench-console.sh >/dev/null

say "wrote BENCHMARKS.md"
