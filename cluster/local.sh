#!/usr/bin/env bash
# A real multi-node Ray cluster on this machine, on loopback: a head and N worker nodes with their
# own temp dir, for trying `dotseg train --address ...` / `ray job submit` before a real cluster.
#
#   cluster/local.sh start [WORKERS=1] [CPUS_PER_NODE=2]   # prints the address to use
#   cluster/local.sh stop                                  # stops exactly the processes it started
#
# Token auth is on (RAY_AUTH_MODE=token): start generates a random token into $STATE/token (mode
# 600) unless RAY_AUTH_TOKEN is set, and every node and client uses it; clients need
#   RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$STATE/token
# It never runs `ray stop` (which kills every Ray process on the machine, other people's too):
# stop kills the process groups recorded at start, TERM then KILL.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STATE=${DOTSEG_CLUSTER_DIR:-/tmp/dotseg-local-cluster}
PORT=${DOTSEG_GCS_PORT:-36379}
DASH=${DOTSEG_DASHBOARD_PORT:-38265}

start() {
  local workers=${1:-1} cpus=${2:-2}
  mkdir -p "$STATE"
  if [ -s "$STATE/pids" ]; then echo "already running (state in $STATE); run: $0 stop" >&2; exit 1; fi
  case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac  # absolute, or relative to the project
  export PATH="$VENV/bin:$PATH"
  if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
    (umask 077; python3 -c 'import secrets; print(secrets.token_hex(32))' > "$STATE/token")
    RAY_AUTH_TOKEN=$(cat "$STATE/token")
  else
    (umask 077; printf '%s\n' "$RAY_AUTH_TOKEN" > "$STATE/token")
  fi
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN
  setsid ray start --head --node-ip-address=127.0.0.1 --port="$PORT" --num-cpus="$cpus" \
      --dashboard-host=127.0.0.1 --dashboard-port="$DASH" --temp-dir="$STATE/ray" \
      --disable-usage-stats --block > "$STATE/head.log" 2>&1 &
  echo $! >> "$STATE/pids"
  for _ in $(seq 60); do grep -q "Ray runtime started" "$STATE/head.log" 2>/dev/null && break; sleep 1; done
  for i in $(seq "$workers"); do
    # A temp dir of its own per node: nodes sharing one would unpack a job's working_dir into the
    # same runtime_resources path, each replacing it under the other's running processes (the
    # first multi-node job on a fresh cluster then lost its cwd: ENOENT, or MKL "Cannot load").
    setsid ray start --address="127.0.0.1:$PORT" --node-ip-address=127.0.0.1 --num-cpus="$cpus" \
        --dashboard-agent-listen-port=$((52400 + i)) --temp-dir="$STATE/ray-w$i" --block > "$STATE/worker$i.log" 2>&1 &
    echo $! >> "$STATE/pids"
  done
  sleep 5
  echo "head: 127.0.0.1:$PORT  dashboard/jobs: http://127.0.0.1:$DASH  ($workers worker node(s), $cpus CPUs each)"
  echo "clients: export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$STATE/token"
  echo "  $VENV/bin/dotseg train --config configs/smoke.yaml --workers 2 --address 127.0.0.1:$PORT"
  echo "  $VENV/bin/ray job submit --address http://127.0.0.1:$DASH --working-dir . --runtime-env-json '{\"excludes\": [\".venv\", \"runs\", \".git\"]}' -- python jobs/train.py --config configs/smoke.yaml"
}

stop() {
  [ -f "$STATE/pids" ] || { echo "nothing recorded in $STATE"; return 0; }
  while read -r pid; do kill -TERM -- "-$pid" 2>/dev/null || true; done < "$STATE/pids"
  sleep 5
  while read -r pid; do kill -KILL -- "-$pid" 2>/dev/null || true; done < "$STATE/pids"
  rm -f "$STATE/pids"
  echo "stopped"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  *) echo "usage: $0 start [WORKERS] [CPUS_PER_NODE] | stop" >&2; exit 2 ;;
esac
