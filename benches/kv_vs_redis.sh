#!/usr/bin/env bash
# The kv example against Redis, on loopback: operations/s and server CPU per operation.
#
#   benches/kv_vs_redis.sh            # R=3 rounds
#   R=5 N=1000000 benches/kv_vs_redis.sh
#
# Part 1: redis-server (--save '' --appendonly no) and the kv example (--cores 1), each
# pinned to CPU 0 in turn, under `redis-benchmark -t set,get -n N -r 100000 -c 50`
# pinned to CPU 1, with -P 1 and -P 16. Rounds alternate which server goes first.
# CPU per operation is the server's utime+stime (/proc/PID/stat) over the benchmark,
# divided by the operations (2N: N SETs and N GETs). ops/s is over both tests (2N
# divided by the sum of their times).
#
# Part 2: the kv example on 2 cores with every key on the receiving core
# (--shard-override local) or on the other one (remote, every command forwarded with
# call_on): the CPU per operation of a forwarded command against a local one.
# Both server cores and the benchmark share the machine's 2 CPUs here, so compare the
# CPU per operation, not the ops/s.
#
# Every run is bounded (timeout), servers are stopped on exit, only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."

R=${R:-3}
N=${N:-1000000}
N2=${N2:-300000}
KEYSPACE=100000
CLIENTS=50
REDIS_PORT=${REDIS_PORT:-6399}
KV_PORT=${KV_PORT:-6398}
KV_HTTP_PORT=${KV_HTTP_PORT:-8398}
RUN_LIMIT=300 # seconds, per redis-benchmark run

need_install=()
command -v redis-server >/dev/null || need_install+=(redis-server)
command -v redis-benchmark >/dev/null || need_install+=(redis-tools)
if ((${#need_install[@]})); then
  echo "installing ${need_install[*]} (apt-get)" >&2
  apt-get update -qq && apt-get install -y -qq "${need_install[@]}" >/dev/null
fi

cargo build --release --example kv >&2
KV=target/release/examples/kv
TCK=$(getconf CLK_TCK)
OUT=$(mktemp -d)
SERVER_PID=""

stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap 'stop_server; rm -rf "$OUT"' EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_ready() { # port
  for _ in $(seq 100); do
    if redis-cli -h 127.0.0.1 -p "$1" PING 2>/dev/null | grep -q PONG; then return 0; fi
    sleep 0.05
  done
  echo "server on port $1 did not start" >&2
  return 1
}

# start_server NAME -> SERVER_PID, PORT
start_server() {
  case "$1" in
    redis)
      taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize no --logfile "$OUT/redis.log" &
      SERVER_PID=$!
      PORT=$REDIS_PORT
      ;;
    kv)
      taskset -c 0 "$KV" --cores 1 --port "$KV_PORT" --http-port "$KV_HTTP_PORT" \
        >"$OUT/kv.log" 2>&1 &
      SERVER_PID=$!
      PORT=$KV_PORT
      ;;
    kv2-local | kv2-remote)
      "$KV" --cores 2 --port "$KV_PORT" --http-port "$KV_HTTP_PORT" \
        --shard-override "${1#kv2-}" >"$OUT/kv.log" 2>&1 &
      SERVER_PID=$!
      PORT=$KV_PORT
      ;;
  esac
  wait_ready "$PORT"
}

# bench NAME PIPELINE REQUESTS CPUSET -> appends "name P ops_per_s cpu_us_per_op" to results
bench() {
  local name=$1 p=$2 n=$3 cpus=$4
  start_server "$name"
  local t0 t1 csv
  t0=$(ticks "$SERVER_PID")
  csv=$(timeout "$RUN_LIMIT" taskset -c "$cpus" redis-benchmark -h 127.0.0.1 -p "$PORT" \
    -t set,get -n "$n" -r "$KEYSPACE" -c "$CLIENTS" -P "$p" --csv)
  t1=$(ticks "$SERVER_PID")
  stop_server
  # --csv: "test","rps",... ; ops/s over both tests = 2n / (n/rps_set + n/rps_get)
  echo "$csv" | awk -F'"' -v name="$name" -v p="$p" -v n="$n" -v dt="$((t1 - t0))" -v tck="$TCK" '
    $2 == "SET" { set = $4 } $2 == "GET" { get = $4 }
    END {
      if (set <= 0 || get <= 0) { print "no result for " name > "/dev/stderr"; exit 1 }
      ops = 2 * n / (n / set + n / get)
      printf "%s %d %.0f %.3f\n", name, p, ops, dt / tck * 1e6 / (2 * n)
    }' | tee -a "$OUT/results" >&2
}

echo "== part 1: kv --cores 1 vs redis-server, each on CPU 0; redis-benchmark on CPU 1 (R=$R, N=$N)" >&2
for r in $(seq "$R"); do
  if ((r % 2)); then order="redis kv"; else order="kv redis"; fi
  for p in 1 16; do
    for s in $order; do bench "$s" "$p" "$N" 1; done
  done
done

echo "== part 2: kv --cores 2, every key local vs every key on the other core (R=$R, N=$N2)" >&2
for r in $(seq "$R"); do
  if ((r % 2)); then order="kv2-local kv2-remote"; else order="kv2-remote kv2-local"; fi
  for p in 1 16; do
    for s in $order; do bench "$s" "$p" "$N2" 0-1; done
  done
done

# Medians and ratios.
awk '
  { key = $1 " " $2; n[key]++; ops[key, n[key]] = $3; cpu[key, n[key]] = $4
    rounds[key] = rounds[key] sprintf(" %s/%s", $3, $4) }
  function median(arr, key, k,   i, j, t, v) {
    for (i = 1; i <= k; i++) v[i] = arr[key, i]
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
  }
  END {
    printf "\n%-11s %3s %12s %10s %9s %9s   %s\n", "server", "-P", "ops/s", "CPU us/op", "ops x", "CPU x", "rounds (ops/s / CPU us per op)"
    split("redis kv kv2-local kv2-remote", names, " ")
    for (pi = 1; pi <= 2; pi++) {
      p = (pi == 1) ? 1 : 16
      for (ni = 1; ni <= 4; ni++) {
        key = names[ni] " " p
        if (!(key in n)) continue
        mo[key] = median(ops, key, n[key]); mc[key] = median(cpu, key, n[key])
        base = (names[ni] ~ /^kv2/) ? "kv2-local " p : "redis " p
        rx = (base in mo) ? sprintf("%.2f", mo[key] / mo[base]) : "-"
        rc = (base in mc) ? sprintf("%.2f", mc[key] / mc[base]) : "-"
        printf "%-11s %3d %12.0f %10.3f %9s %9s  %s\n", names[ni], p, mo[key], mc[key], rx, rc, rounds[key]
      }
    }
    print "\nratios: kv against redis-server; kv2-remote against kv2-local (medians)"
  }' "$OUT/results"
