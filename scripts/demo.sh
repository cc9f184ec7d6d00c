#!/usr/bin/env bash
# The sandbox demo (`make demo`): two real redis-server processes, the sandbox service
# and platform, and the orchestrator with playbooks/sandbox.yaml. Kills the primary
# with SIGKILL, runs the incident from detection to Recovered, prints its timeline.
# Cleans up every process it started, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/debug}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/orchestrator-demo.XXXXXX")
PIDS=()
cleanup() {
  # SIGTERM first (serve shuts down cleanly), SIGKILL whatever is left after 5 s.
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
} 2>/dev/null
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then echo "demo: timed out waiting for $what" >&2; exit 1; fi
    sleep 0.1
  done
}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

start_redis() {
  local port=$1 dir="$WORK/redis-$1"
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize no >"$dir/log" 2>&1 &
  PIDS+=($!)
  wait_for 10 "redis on $port" redis-cli -p "$port" ping
}

PRIMARY_PORT=$(free_port); BACKUP_PORT=$(free_port)
say "starting primary Redis :$PRIMARY_PORT and backup Redis :$BACKUP_PORT"
start_redis "$PRIMARY_PORT"; PRIMARY_PID=${PIDS[-1]}
start_redis "$BACKUP_PORT"
# Stale queue data on the backup from an earlier drill: the flush must remove it.
redis-cli -p "$BACKUP_PORT" rpush bull:default:wait stale-1 stale-2 >/dev/null
redis-cli -p "$BACKUP_PORT" set idempotent:old-webhook 1 >/dev/null
redis-cli -p "$BACKUP_PORT" set keep:settings untouched >/dev/null

export SANDBOX_PRIMARY_URL="redis://127.0.0.1:$PRIMARY_PORT"
export SANDBOX_BACKUP_URL="redis://127.0.0.1:$BACKUP_PORT"
export SANDBOX_SERVICE_API_KEY="demo-service-key-$RANDOM$RANDOM"
export SANDBOX_PLATFORM_API_KEY="demo-platform-key-$RANDOM$RANDOM"

say "starting the sandbox service (BullMQ-layout queue on the primary) and platform"
"$BIN/sandbox" --redis-url "$SANDBOX_PRIMARY_URL" --service-addr 127.0.0.1:0 --platform-addr 127.0.0.1:0 \
  >"$WORK/sandbox.out" 2>"$WORK/sandbox.log" &
PIDS+=($!)
wait_for 20 "the sandbox" grep -q platform "$WORK/sandbox.out"
READY=$(head -n1 "$WORK/sandbox.out")
export SANDBOX_SERVICE_URL=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["service"])' "$READY")
export SANDBOX_PLATFORM_URL=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["platform"])' "$READY")
echo "service  $SANDBOX_SERVICE_URL"
echo "platform $SANDBOX_PLATFORM_URL"

for i in 1 2 3; do
  curl -fsS -X POST "$SANDBOX_SERVICE_URL/api/v1/triggers/demo" -H "X-API-Key: $SANDBOX_SERVICE_API_KEY" \
    -H 'Content-Type: application/json' -d "{\"n\": $i}" >/dev/null
done
echo "health: $(curl -sS "$SANDBOX_SERVICE_URL/api/v1/health")"

say "the playbook"
"$BIN/orchestrator" playbook check playbooks/sandbox.yaml

say "orchestrator serve: webhooks, approvals API and the watch loop (runbook alert conditions)"
DB="$WORK/journal.db"
export ORCH_WEBHOOK_TOKEN="demo-webhook-token-$RANDOM$RANDOM"
export ORCH_APPROVER_TOKENS="oncall=demo-approver-token-$RANDOM$RANDOM"
"$BIN/orchestrator" --db "$DB" --log info serve --playbook playbooks/sandbox.yaml --listen 127.0.0.1:0 \
  >"$WORK/serve.out" 2>"$WORK/serve.log" &
PIDS+=($!)
wait_for 20 "serve to listen" grep -q listening "$WORK/serve.out"
ORCH_URL="http://$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["listening"])' "$WORK/serve.out")"
echo "orchestrator $ORCH_URL  ($(curl -sS "$ORCH_URL/healthz"))"

say "SIGKILL the primary Redis (pid $PRIMARY_PID)"
kill -KILL "$PRIMARY_PID"; wait "$PRIMARY_PID" 2>/dev/null || true
KILLED_AT=$(date +%s.%N)

say "the watch loop detects it; the incident runs"
incident_id() { "$BIN/orchestrator" --db "$DB" incidents --json 2>/dev/null | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r[0]["id"] if r else "")'; }
wait_for 30 "the watch loop to open an incident" sh -c "[ -n \"\$(\"$BIN/orchestrator\" --db \"$DB\" incidents --json 2>/dev/null | grep -o '\"id\"')\" ]"
ID=$(incident_id)
echo "incident $ID opened $(python3 -c "import time,sys; print(f'{time.time()-float(sys.argv[1]):.1f}s')" "$KILLED_AT") after the kill"
set +e
"$BIN/orchestrator" --db "$DB" audit "$ID" --follow >"$WORK/audit.txt"
CODE=$?
set -e
echo "kill → incident closed in $(python3 -c "import time,sys; print(f'{time.time()-float(sys.argv[1]):.1f}s')" "$KILLED_AT")"

say "audit timeline of $ID"
cat "$WORK/audit.txt"

say "after the failover"
echo "health: $(curl -sS "$SANDBOX_SERVICE_URL/api/v1/health")"
echo "metrics: $(curl -sS "$ORCH_URL/metrics" | grep -E '^orchestrator_incidents_total' | tr '\n' ' ')"
say "topology: the backup is active now, failover disarmed until the old primary is back and healthy"
"$BIN/orchestrator" --db "$DB" status --playbook playbooks/sandbox.yaml
echo "backup keeps keep:settings = $(redis-cli -p "$BACKUP_PORT" get keep:settings); stale bull:default:wait entries gone: $(redis-cli -p "$BACKUP_PORT" lpos bull:default:wait stale-1 | sed 's/^$/yes/')"
if [ "$CODE" -ne 0 ]; then echo "demo: the incident did not end Recovered (exit $CODE)" >&2; tail -20 "$WORK/serve.log" >&2; exit "$CODE"; fi
echo "demo: Recovered."
