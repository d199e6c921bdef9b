# Shared by the scripts: sourced, not run.

log() { printf '\n== %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs Debian packages without starting their daemons (clamd, freshclam,
# squid, c-icap, redis): the scripts and tests start their own, on ports of
# their own.
install_packages() {
  log "installing $*"
  as_root apt-get update -qq
  local policy=/usr/sbin/policy-rc.d added=
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee $policy >/dev/null
    as_root chmod +x $policy
    added=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@"
  [ -z "$added" ] || as_root rm -f $policy
}

# need_packages COMMAND PACKAGE [COMMAND PACKAGE ...]: installs each package
# whose command is missing.
need_packages() {
  local missing=()
  while [ $# -gt 0 ]; do
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
    shift 2
  done
  if [ ${#missing[@]} -gt 0 ]; then install_packages "${missing[@]}"; fi
}

# For the benchmarks, which start servers of their own: `dir`, a temporary
# directory, and `pids`, the servers started; at exit the servers are
# stopped, the last started first (handlers before the Redis they read),
# and the directory removed.
start_scratch() {
  dir=$(mktemp -d)
  pids=()
  trap stop_scratch EXIT
}
stop_scratch() {
  set +e
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null
    wait "${pids[i]}" 2>/dev/null
  done
  wait 2>/dev/null
  rm -rf "$dir"
}

# free_port: a port nothing listens on, from below the kernel's ephemeral
# range (as tests/support does), where no outgoing connection can take it
# between this check and the server's bind.
free_port() {
  python3 -c '
import random, socket
low = 10000
high = max(int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0]), low + 1000)
start = random.randrange(low, high)
for i in range(high - low):
    port = low + (start - low + i) % (high - low)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    print(port)
    break
else:
    raise SystemExit("no free port below the ephemeral range")
'
}

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 never opened" >&2
  return 1
}

# start_clamd [CONFIG LINE...]: a clamd with the project's signatures on
# `clamd_port` (TCP) and `$dir/clamd.sock`, its pid in `clamd` and `pids`.
start_clamd() {
  clamd_port=$(free_port)
  {
    printf '%s\n' "Foreground yes" "TCPSocket $clamd_port" "TCPAddr 127.0.0.1" \
      "LocalSocket $dir/clamd.sock" "DatabaseDirectory $PWD/clamav/db" \
      "LogFile $dir/clamd.log" "MaxThreads 10"
    printf '%s\n' "$@"
  } >"$dir/clamd.conf"
  clamd -c "$dir/clamd.conf" >/dev/null 2>&1 &
  clamd=$!
  pids+=($clamd)
  wait_port "$clamd_port"
}
