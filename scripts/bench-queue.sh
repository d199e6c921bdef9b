#!/usr/bin/env bash
# The queue benchmark: raw clamd INSTREAM, `virus-scanner all` (in-process)
# and split mode (one producer, two handlers, through Redis; the handlers
# on clamd's TCP socket, then on its unix socket), on the same clamd, in one
# run; then the producer's memory with 1,000 scans queued.
# Prints figures and ratios; asserts nothing about time.
#
#   scripts/bench-queue.sh
#   DURATION=10s ROUNDS=3 CONNECTIONS=8,64 SIZES=4K,1M DISK_SIZES=1M scripts/bench-queue.sh
#
# A breakdown follows: what each of split mode's processes spent per scan,
# and the commands Redis ran per scan (BREAKDOWN, 4K by default; empty
# skips it).
#
# A further section runs split mode with the disk provider (a SCAN_MOUNT
# shared by producer and handlers, clamd on its unix socket) at DISK_SIZES,
# against raw clamd by INSTREAM and by FILDES; DISK_SIZES= skips it.
#
# Needs clamav-daemon and redis-server (installed when missing, as root or
# with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3s}
# Each cell runs ROUNDS times, every target once per round in a rotating
# order; the ratio printed is the median of the rounds' ratios.
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-8,64}
SIZES=${SIZES:-4K,1M}
DISK_SIZES=${DISK_SIZES-1M}
QUEUED=${QUEUED:-1000}

. scripts/lib.sh
need_packages clamd clamav-daemon redis-server redis-server

cargo build --release --locked --bins
bin=target/release

start_scratch
start_clamd "StreamMaxLength 100M"

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
  --dir "$dir" --logfile redis.log & redis=$!; pids+=($redis)
wait_port "$redis_port"

export CLAMD_URL="tcp://127.0.0.1:$clamd_port" REDIS_HOST=127.0.0.1 REDIS_PORT=$redis_port \
  LISTEN_ADDR=127.0.0.1 LOG_LEVEL=warn

all_port=$(free_port)
ICAP_PORT=$all_port PRODUCER_PORT=$(free_port) METRICS_PORT=0 $bin/virus-scanner all & pids+=($!)
wait_port "$all_port"

split_port=$(free_port)
ICAP_PORT=$split_port PRODUCER_PORT=$(free_port) METRICS_PORT=0 $bin/virus-scanner-producer & producer=$!; pids+=($producer)
wait_port "$split_port"
# Two handlers sharing clamd's 10 threads.
handlers=()
for _ in 1 2; do
  METRICS_PORT=0 HANDLER_CONCURRENCY=5 CLAMD_MAX_CONCURRENCY=5 $bin/virus-scanner-handler & handlers+=($!); pids+=($!)
done
# The same again with the handlers on clamd's unix socket, as in a pod
# where clamd runs beside the handler: small bodies then go to clamd by
# descriptor (FILDES) instead of by INSTREAM.
unix_prefix=unix$$
unix_port=$(free_port)
ICAP_PORT=$unix_port PRODUCER_PORT=$(free_port) METRICS_PORT=0 REDIS_PREFIX=$unix_prefix \
  $bin/virus-scanner-producer & pids+=($!)
wait_port "$unix_port"
for _ in 1 2; do
  METRICS_PORT=0 HANDLER_CONCURRENCY=5 CLAMD_MAX_CONCURRENCY=5 REDIS_PREFIX=$unix_prefix \
    CLAMD_URL="unix://$dir/clamd.sock" $bin/virus-scanner-handler & pids+=($!)
done
sleep 1

echo "## Raw clamd, all mode and split mode (unique bodies; ICAP: RESPMOD with preview and Allow: 204)"
echo
echo "clamd over TCP for the first four. clamd-instream opens a connection per scan"
echo "(as clamdscan and c-icap do); clamd-instream-session reuses its connections, as"
echo "the service does by default (CLAMD_SESSIONS). split-unix: a producer and two"
echo "handlers of their own, the handlers on clamd's unix socket (a clamd beside each"
echo "handler), where bodies up to FILDES_MAX go by descriptor; clamd-fildes is raw"
echo "clamd on that transport."
echo
# One table: `compare SIZES --target ... --target ...`. The server-side CPU
# column counts clamd, Redis, all, the producers and the handlers: for each
# target, what every process but the load generator spent.
compare() {
  local sizes=$1; shift
  $bin/virus-scanner bench --duration "$DURATION" --rounds "$ROUNDS" --connections "$CONNECTIONS" --sizes "$sizes" \
    --server-pids "$(IFS=,; echo "${pids[*]}")" "$@"
}
compare "$SIZES" \
  --target "clamd-instream=instream+tcp://127.0.0.1:$clamd_port" \
  --target "clamd-instream-session=instream-session+tcp://127.0.0.1:$clamd_port" \
  --target "all=icap://127.0.0.1:$all_port/avscan" \
  --target "split=icap://127.0.0.1:$split_port/avscan" \
  --target "split-unix=icap://127.0.0.1:$unix_port/avscan" \
  --target "clamd-fildes=fildes+unix://$dir/clamd.sock"
echo

# The queue's own processes (Redis, producer, handlers) take CPU that raw
# clamd's client does not, and on two shared cores that CPU is clamd's. In a
# deployment the handlers and their clamds scale out on machines of their
# own: measured again with clamd alone on CPU 0 and every other process,
# the load generator included, on CPU 1.
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  echo "## The same with clamd alone on CPU 0 (Redis, producers, handlers and the load generator on CPU 1)"
  echo
  every=$(taskset -p $$ | awk '{print $NF}')
  for p in "${pids[@]}"; do
    if [ "$p" = "$clamd" ]; then taskset -a -p -c 0 "$p"; else taskset -a -p -c 1 "$p"; fi >/dev/null
  done
  taskset -c 1 "$bin/virus-scanner" bench --duration "$DURATION" --rounds "$ROUNDS" --connections "$CONNECTIONS" \
    --sizes "$SIZES" --server-pids "$(IFS=,; echo "${pids[*]}")" \
    --target "clamd-instream=instream+tcp://127.0.0.1:$clamd_port" \
    --target "split=icap://127.0.0.1:$split_port/avscan" \
    --target "split-unix=icap://127.0.0.1:$unix_port/avscan" \
    --target "clamd-fildes=fildes+unix://$dir/clamd.sock"
  for p in "${pids[@]}"; do taskset -a -p "$every" "$p" >/dev/null; done
  echo
fi

# Where the CPU goes: split mode's processes one by one, and the commands
# Redis ran per scan (from its INFO commandstats), beside raw clamd by
# INSTREAM in a session. On two shared cores whatever the queue's own
# processes spend is taken from clamd. BREAKDOWN= skips it.
BREAKDOWN=${BREAKDOWN-4K}
if [ -n "$BREAKDOWN" ]; then
  conns=${CONNECTIONS%%,*}
  echo "## Where split mode's CPU goes ($BREAKDOWN bodies, $conns connections, $DURATION)"
  echo
  ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  # per_scan PID... : the CPU those processes spent since `mark`, in us per scan.
  per_scan() {
    local total=0 p
    for p in "$@"; do total=$((total + $(ticks "$p") - ${start[$p]})); done
    awk -v t="$total" -v hz="$(getconf CLK_TCK)" -v n="$scans" 'BEGIN {printf "%.0f", t / hz * 1e6 / n}'
  }
  mark() { declare -gA start; local p; for p in "$clamd" "$redis" "$producer" "${handlers[@]}"; do start[$p]=$(ticks "$p"); done; }
  # run TARGET: one run of the load generator; sets scans and prints its row.
  run() {
    local row
    row=$($bin/virus-scanner bench --duration "$DURATION" --connections "$conns" --sizes "$BREAKDOWN" --target "$1" | grep '^| [0-9]' | tail -1)
    echo "$row"
    scans=$(echo "$row" | awk -F'|' -v d="${DURATION%s}" '{printf "%.0f", $5 * d}')
  }
  echo '```'
  mark
  run "clamd-instream-session=instream-session+tcp://127.0.0.1:$clamd_port"
  echo "raw clamd: clamd $(per_scan "$clamd") us per scan"
  redis-cli -p "$redis_port" config resetstat >/dev/null
  mark
  run "split=icap://127.0.0.1:$split_port/avscan"
  echo "split: clamd $(per_scan "$clamd"), redis-server $(per_scan "$redis"), producer $(per_scan "$producer"), handlers $(per_scan "${handlers[@]}") us per scan"
  echo "Redis commands per scan (calls, and Redis's own us per call):"
  redis-cli -p "$redis_port" info commandstats | awk -F'[:,=]' -v n="$scans" \
    '/^cmdstat_/ && $3 > n / 100 {sub("cmdstat_", "", $1); printf "  %-10s %5.2f  %5.2f us\n", $1, $3 / n, $7}'
  echo '```'
  echo
fi

if [ -n "$DISK_SIZES" ]; then
  echo "## Split mode with the disk provider (unique bodies; same ICAP requests)"
  echo
  echo "split-disk: a producer and two handlers of their own (REDIS_PREFIX), sharing"
  echo "SCAN_MOUNT=$dir/mount ($(df --output=fstype "$dir" | tail -1)); every body goes to a file there"
  echo "(DISK_MIN=0), and the handlers pass it to clamd by descriptor on clamd's unix"
  echo "socket. split: the stream provider through Redis, as above."
  echo
  mkdir "$dir/mount"
  disk_prefix=disk$$
  disk_port=$(free_port)
  ICAP_PORT=$disk_port PRODUCER_PORT=$(free_port) METRICS_PORT=0 REDIS_PREFIX=$disk_prefix \
    SCAN_MOUNT=$dir/mount DISK_MIN=0 $bin/virus-scanner-producer & pids+=($!)
  wait_port "$disk_port"
  for _ in 1 2; do
    METRICS_PORT=0 HANDLER_CONCURRENCY=5 CLAMD_MAX_CONCURRENCY=5 REDIS_PREFIX=$disk_prefix \
      SCAN_MOUNT=$dir/mount CLAMD_URL="unix://$dir/clamd.sock" $bin/virus-scanner-handler & pids+=($!)
  done
  sleep 1
  compare "$DISK_SIZES" \
    --target "clamd-instream=instream+tcp://127.0.0.1:$clamd_port" \
    --target "clamd-fildes=fildes+unix://$dir/clamd.sock" \
    --target "split=icap://127.0.0.1:$split_port/avscan" \
    --target "split-disk=icap://127.0.0.1:$disk_port/avscan"
  echo
fi

echo "## Producer memory with $QUEUED scans queued (a producer of its own, no handler)"
echo
lonely_prefix=bench$$
lonely_port=$(free_port)
ICAP_PORT=$lonely_port PRODUCER_PORT=$(free_port) METRICS_PORT=0 MAX_CONNECTIONS=$((QUEUED + 100)) REDIS_PREFIX=$lonely_prefix \
  $bin/virus-scanner-producer & lonely=$!; pids+=($lonely)
wait_port "$lonely_port"
# Warmed up with a handler of its own, which then goes: without one, the
# warm-up's scans would wait for their deadline.
REDIS_PREFIX=$lonely_prefix METRICS_PORT=0 $bin/virus-scanner-handler >/dev/null 2>&1 & warm=$!
$bin/virus-scanner bench --duration 2s --connections 8 --sizes 4K \
  --target "warm-up=icap://127.0.0.1:$lonely_port/avscan" >/dev/null 2>&1 || true
kill "$warm"; wait "$warm" 2>/dev/null || true
# First the connections alone, then a scan queued on each: what the queue
# itself costs, apart from the ICAP connections a proxy holds open anyway.
python3 scripts/queued_memory.py "$lonely_port" "$lonely" "$QUEUED" \
  env REDIS_PREFIX=$lonely_prefix $bin/virus-scanner queue-status
