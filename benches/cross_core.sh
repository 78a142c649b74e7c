#!/usr/bin/env bash
# Cross-core round trips (examples/cross_core): loop to loop and back, on io_uring, with
# the wake-up by eventfd or by MSG_RING, and with the idle poll off or on.
#
#   benches/cross_core.sh          # R=5 rounds of every mode, alternating
#
# One shard sends ROUNDS requests, one at a time, to the other (`--senders 1`), so the
# target is asleep (or idle-polling) when each arrives. Reported per mode: the median
# over the rounds of the round trip's p50 and p99, and of the CPU per round trip (all
# threads, idle polling included); then, with the idle poll on, the CPU the runtime
# uses while idle (no work; a 1 ms timer on each loop). Modes alternate within a round,
# so a slow minute on this shared machine hits all of them.
#
# Environment: R=5 ROUNDS=20000 IDLE_POLL_US=50 BACKEND=uring
set -eu
cd "$(dirname "$0")/.."
R=${R:-5}
ROUNDS=${ROUNDS:-20000}
POLL=${IDLE_POLL_US:-50}
BACKEND=${BACKEND:-uring}
cargo build --release --example cross_core >/dev/null 2>&1
BIN=target/release/examples/cross_core
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

MODES="eventfd msg-ring eventfd+poll msg-ring+poll"
for r in $(seq 1 "$R"); do
  for m in $MODES; do
    wake=${m%+poll}
    poll=0
    [ "$m" != "$wake" ] && poll=$POLL
    "$BIN" --rounds "$ROUNDS" --backend "$BACKEND" --senders 1 --wake "$wake" \
      --idle-poll-us "$poll" >"$OUT/$m.$r" 2>&1
  done
done
"$BIN" --rounds 1000 --backend "$BACKEND" --senders 1 --idle-poll-us "$POLL" \
  --idle-ms 2000 >"$OUT/idle" 2>&1

python3 - "$OUT" "$R" "$MODES" <<'PY'
import re, statistics, sys
out, rounds, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
def us(s):
    m = re.match(r"([\d.]+)(ns|µs|us|ms|s)$", s)
    v, u = float(m.group(1)), m.group(2)
    return v * {"ns": 1e-3, "µs": 1, "us": 1, "ms": 1e3, "s": 1e6}[u]
print(f"{'mode':<16} {'p50 us':>8} {'p99 us':>8} {'CPU us/rt':>10}   (medians of {rounds} rounds)")
for m in modes:
    p50s, p99s, cpus = [], [], []
    for r in range(1, rounds + 1):
        text = open(f"{out}/{m}.{r}").read()
        rt = re.search(r"p50 (\S+)\s+p99 (\S+)", text)
        cpu = re.search(r"CPU per round trip ([\d.]+) us", text)
        if rt and cpu:
            p50s.append(us(rt.group(1))); p99s.append(us(rt.group(2))); cpus.append(float(cpu.group(1)))
    if not p50s:
        print(f"{m:<16} no result"); continue
    print(f"{m:<16} {statistics.median(p50s):8.2f} {statistics.median(p99s):8.2f} {statistics.median(cpus):10.2f}")
idle = open(f"{out}/idle").read()
m = re.search(r"idle for .*", idle)
print(m.group(0) if m else idle)
PY
