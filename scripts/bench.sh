#!/usr/bin/env bash
# The benchmark: this server, c-icap with its virus_scan service, and clamd
# itself, on the same clamd, in one run; the no-scan path; the memory check
# with a 1 GiB body; Envoy ext_proc (BUFFERED) beside ICAP on this server.
# Prints figures and ratios; asserts nothing about time.
#
#   scripts/bench.sh                         defaults below
#   DURATION=10s ROUNDS=3 CONNECTIONS=8,64 SIZES=1K,64K,1M scripts/bench.sh
#   SECTIONS=extproc scripts/bench.sh        only some: scan,noscan,memory,extproc
#   TARGETS=clamd-fildes SECTIONS=scan scripts/bench.sh   this server against some references
#
# Needs clamav-daemon, c-icap and libc-icap-mod-virus-scan (installed when
# missing, as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3s}
# Each cell runs ROUNDS times, every target once per round in a rotating
# order; the ratio printed is the median of the rounds' ratios.
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-8,64}
SIZES=${SIZES:-1K,64K,1M}
ONCE=${ONCE:-1G}
SECTIONS=${SECTIONS:-scan,noscan,memory,extproc}
# The scanning section's references, by name (all of them when empty):
# TARGETS=c-icap,clamd-fildes,clamd-fildes-session, say.
TARGETS=${TARGETS:-}
want() { [[ ",$SECTIONS," == *",$1,"* ]]; }

. scripts/lib.sh
need_packages clamd clamav-daemon c-icap c-icap
[ -e /usr/lib/x86_64-linux-gnu/c_icap/virus_scan.so ] || install_packages libc-icap-mod-virus-scan

cargo build --release --locked --bin virus-scanner
if want extproc; then cargo bench --locked --bench extproc --no-run --quiet; fi
bin=target/release/virus-scanner

start_scratch
chmod 777 "$dir"

# pinned "PID ..." COMMAND...: runs COMMAND with those processes (all their
# threads) on CPU 0, then gives them every CPU back.
can_pin() { [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; }
pinned() {
  local procs=($1) all p
  shift
  all=$(taskset -p $$ | awk '{print $NF}')
  for p in "${procs[@]}"; do taskset -a -p -c 0 "$p" >/dev/null; done
  "$@"
  for p in "${procs[@]}"; do taskset -a -p "$all" "$p" >/dev/null; done
}

start_clamd "StreamMaxLength 2000M" "MaxFileSize 2000M" "MaxScanSize 4000M"

cicap_port=$(free_port)
cat >"$dir/c-icap.conf" <<CONF
PidFile $dir/c-icap.pid
CommandsSocket $dir/c-icap.ctl
Port 127.0.0.1:$cicap_port
StartServers 2
MaxServers 2
ThreadsPerChild 40
MinSpareThreads 10
MaxSpareThreads 80
MaxKeepAliveRequests 0
TmpDir $dir
ModulesDir /usr/lib/x86_64-linux-gnu/c_icap
ServicesDir /usr/lib/x86_64-linux-gnu/c_icap
TemplateDir /usr/share/c_icap/templates/
LoadMagicFile /etc/c-icap/c-icap.magic
ServerLog $dir/c-icap-server.log
AccessLog $dir/c-icap-access.log
Module common clamd_mod.so
clamd_mod.ClamdSocket $dir/clamd.sock
Service virus_scan virus_scan.so
virus_scan.DefaultEngine clamd
virus_scan.ScanFileTypes TEXT DATA EXECUTABLE ARCHIVE GIF JPEG MSOFFICE
virus_scan.MaxObjectSize 2000M
virus_scan.Allow204Responces on
Service echo srv_echo.so
CONF
c-icap -N -f "$dir/c-icap.conf" >/dev/null 2>&1 & cicap=$!; pids+=($cicap)
wait_port "$cicap_port"

# start_ours [PREFIX...]: starts this server (through PREFIX, such as
# taskset) and sets ours, ours_port, grpc_port and servers: every
# server-side process (clamd, c-icap with its children, this server), for
# the CPU-per-request column; only the target measured is busy.
start_ours() {
  ours_port=$(free_port)
  grpc_port=$(free_port)
  CLAMD_URL="unix://$dir/clamd.sock" ICAP_PORT=$ours_port PRODUCER_PORT=$grpc_port METRICS_PORT=0 LISTEN_ADDR=127.0.0.1 \
    MAX_SCAN_SIZE=2000M TRUSTED_HOSTS=trusted.test LOG_LEVEL=warn "$@" $bin all & ours=$!; pids+=($ours)
  wait_port "$ours_port"
  wait_port "$grpc_port"
  servers="$clamd,$cicap,$(pgrep -P "$cicap" | paste -sd,),$ours"
}
# pinned_ours COMMAND...: runs COMMAND against a second instance of this
# server started on CPU 0. Started there, it runs one worker thread, as it
# would in a container limited to one CPU; pinned after its start, it would
# keep two threads taking turns on that CPU.
pinned_ours() {
  local shared=("$ours" "$ours_port" "$grpc_port" "$servers")
  start_ours taskset -c 0
  "$@"
  kill "$ours"; wait "$ours" 2>/dev/null || true
  ours=${shared[0]} ours_port=${shared[1]} grpc_port=${shared[2]} servers=${shared[3]}
}
start_ours

if want scan; then
echo "## Scanning path (unique bodies, RESPMOD with preview and Allow: 204)"
echo
targets=()
for t in "c-icap=icap://127.0.0.1:$cicap_port/virus_scan" \
  "clamd-instream-tcp=instream+tcp://127.0.0.1:$clamd_port" \
  "clamd-instream-unix=instream+unix://$dir/clamd.sock" \
  "clamd-fildes=fildes+unix://$dir/clamd.sock" \
  "clamd-fildes-session=fildes-session+unix://$dir/clamd.sock" \
  "clamd-instream-session=instream-session+unix://$dir/clamd.sock"; do
  if [ -z "$TARGETS" ] || [[ ",$TARGETS," == *",${t%%=*},"* ]]; then targets+=(--target "$t"); fi
done
$bin bench --duration "$DURATION" --rounds "$ROUNDS" --connections "$CONNECTIONS" --sizes "$SIZES" \
  --server-pids "$servers" \
  --target "virus-scanner=icap://127.0.0.1:$ours_port/avscan" "${targets[@]}"
echo
fi
if want noscan; then
echo "## No-scan path (a trusted host answered from the preview; c-icap's echo service)"
echo
noscan() {
  "$@" $bin bench --duration "$DURATION" --rounds "$ROUNDS" --connections "$CONNECTIONS" --sizes "$SIZES" \
    --server-pids "$servers" \
    --target "virus-scanner=icap://127.0.0.1:$ours_port/avscan?http://trusted.test/file.bin" \
    --target "c-icap-echo=icap://127.0.0.1:$cicap_port/echo"
}
echo "All processes on all cores:"
echo
noscan
echo
# Here a server's own cost per request is small next to the load
# generator's, which on shared cores takes CPU time from whichever server it
# measures: measured again with the servers on CPU 0 and the load generator
# alone on CPU 1.
if can_pin; then
  echo "Servers on CPU 0 (c-icap with its children; virus-scanner started there, so with one worker thread), load generator alone on CPU 1:"
  echo
  pinned_ours pinned "$cicap $(pgrep -P "$cicap" | paste -sd' ')" noscan taskset -c 1
  echo
fi
fi
if want memory; then
echo "## Memory: one $ONCE body scanned and sent back (no Allow: 204)"
echo
rss() { awk '/^VmHWM/ {print $2 " kB peak"} /^VmRSS/ {print $2 " kB now"}' /proc/"$1"/status | paste -sd' '; }
# Before the ext_proc section: its 64 BUFFERED streams of 1 MiB bodies are
# held whole, and the allocator keeps that memory until its threads are
# busy again. The peak so far is reset (Linux clear_refs), so that the one
# printed is this pass's.
echo 5 >/proc/"$ours"/clear_refs 2>/dev/null || echo "(could not reset the peak: it includes the sections before)"
echo "virus-scanner RSS before: $(rss $ours)"
$bin bench --once "$ONCE" --target "virus-scanner=icap://127.0.0.1:$ours_port/avscan"
echo "virus-scanner RSS after:  $(rss $ours)"
fi
if want extproc; then
echo "## Envoy ext_proc BUFFERED beside ICAP, same server and clamd (unique bodies)"
echo
extproc() {
  ICAP=127.0.0.1:$ours_port EXTPROC=127.0.0.1:$grpc_port ROUNDS=$ROUNDS SERVER_PIDS=$ours,$clamd \
    SIZES=$SIZES CONNECTIONS=$CONNECTIONS DURATION=$DURATION "$@" \
    cargo bench --locked --bench extproc --quiet
}
echo "All processes on all cores:"
echo
extproc
echo
# The gRPC client costs far more CPU than the ICAP one; Envoy runs on
# resources of its own, so measured again with this server and clamd on
# CPU 0 and the load generator alone on CPU 1.
if can_pin; then
  echo "This server (started there, so with one worker thread) and clamd on CPU 0, load generator alone on CPU 1:"
  echo
  pinned_ours pinned "$clamd" extproc taskset -c 1
  echo
fi
fi
