#!/usr/bin/env bash
# The run command: starts a local clamd and the ICAP server in front of it.
#
#   scripts/run.sh                 ICAP on port 1344, scanning in-process
#   ICAP_PORT=11344 scripts/run.sh any setting of the README, as variable or flag
#   scripts/run.sh --fail-mode open
#
# clamd uses the system's signature database (/var/lib/clamav, filled by
# freshclam) when there is one, and the project's test signature (EICAR only)
# otherwise; it says which. With CLAMD_URL set, no clamd is started and that
# one is used. Installs clamav-daemon when clamd is missing (as root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

dir= clamd_pid= server=
cleanup() {
  set +e
  [ -z "$server" ] || { kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; }
  [ -z "$clamd_pid" ] || { kill "$clamd_pid" 2>/dev/null; wait "$clamd_pid" 2>/dev/null || true; }
  [ -z "$dir" ] || rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 143' INT TERM

. scripts/lib.sh

if [ -z "${CLAMD_URL:-}" ]; then
  need_packages clamd clamav-daemon
  dir=$(mktemp -d)
  chmod 755 "$dir"
  if compgen -G "/var/lib/clamav/*.c[lv]d" >/dev/null; then
    db=/var/lib/clamav
    echo "run: clamd uses the system signature database in $db"
  else
    db=$PWD/clamav/db
    echo "run: no signature database in /var/lib/clamav (freshclam fills it);"
    echo "run: clamd uses the project's test signature in $db, which detects only EICAR"
  fi
  cat >"$dir/clamd.conf" <<CONF
Foreground yes
LocalSocket $dir/clamd.sock
DatabaseDirectory $db
LogFile $dir/clamd.log
LogTime yes
MaxThreads 10
StreamMaxLength 30M
# A file in an archive past these limits is reported, not passed as OK.
MaxFileSize 100M
MaxScanSize 100M
AlertExceedsMax yes
CONF
  clamd -c "$dir/clamd.conf" >/dev/null 2>&1 &
  clamd_pid=$!
  echo "run: waiting for clamd to load its signatures (log: $dir/clamd.log)"
  for _ in $(seq 1 600); do
    [ -S "$dir/clamd.sock" ] && break
    kill -0 $clamd_pid 2>/dev/null || { cat "$dir/clamd.log" >&2; exit 1; }
    sleep 0.5
  done
  export CLAMD_URL="unix://$dir/clamd.sock"
fi

cargo build --release --locked --bin virus-scanner
echo "run: ICAP on port ${ICAP_PORT:-1344}, clamd at $CLAMD_URL"
target/release/virus-scanner all "$@" &
server=$!
wait $server
