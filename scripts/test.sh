#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing, then runs
# every test, and each fuzz target for a short while.
#
#   scripts/test.sh              everything (what CI runs)
#   FUZZ_SECONDS=0 scripts/test.sh   skip the fuzzing
#
# Needs root (or passwordless sudo) when a package is missing, and for the
# network namespace and nftables rules of tests/intercept.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}

. scripts/lib.sh

# Each test starts the real program it needs, on a free loopback port.
need_packages \
  clamd clamav-daemon \
  c-icap-client c-icap \
  squid squid-openssl \
  redis-server redis-server \
  openssl openssl \
  curl curl \
  ip iproute2 \
  nft nftables \
  xz xz-utils \
  bzip2 bzip2 \
  pbzip2 pbzip2

# The independent ext_proc client (tests/extproc_python.rs): Python grpcio
# and envoy-data-plane, in a virtual environment of the project's own.
if ! target/py/bin/python -c 'import grpc, envoy_data_plane, prometheus_client, yaml' >/dev/null 2>&1; then
  log "making target/py (grpcio, envoy-data-plane, prometheus-client, pyyaml)"
  need_packages python3 python3
  if ! python3 -m venv --clear target/py; then
    # Debian's python3 makes virtual environments only with python3-venv.
    install_packages python3-venv
    python3 -m venv --clear target/py
  fi
  target/py/bin/pip install --quiet --disable-pip-version-check \
    'grpcio>=1.60,<2' 'envoy-data-plane==2.2.0' 'prometheus-client>=0.20,<1' 'pyyaml>=6,<7'
fi

# docker-compose 1.29 (Python) checks docker-compose.yml with `config`, as
# `docker compose config` would; no Docker engine is needed. It asks for an
# older PyYAML than the one above, which it works with, so its own
# dependencies are installed without that pin.
if ! target/py/bin/docker-compose version >/dev/null 2>&1; then
  log "installing docker-compose 1.29 into target/py"
  target/py/bin/pip install --quiet --disable-pip-version-check --no-deps 'docker-compose==1.29.2'
  target/py/bin/pip install --quiet --disable-pip-version-check \
    docopt 'jsonschema<4' requests texttable 'websocket-client<1' 'docker>=5,<7' dockerpty 'python-dotenv<1' distro
fi

log "cargo test (workspace)"
cargo test --workspace --locked

if [ "$FUZZ_SECONDS" != 0 ]; then
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
  # cargo fuzz needs nightly features; the stable toolchain has them behind
  # RUSTC_BOOTSTRAP, so no second toolchain is needed.
  export RUSTC_BOOTSTRAP=1
  log "fuzzing each target for ${FUZZ_SECONDS}s"
  (
    cd fuzz
    cargo fuzz build
    for target in head chunked round_trip content; do
      work=$(mktemp -d)
      status=0
      cargo fuzz run "$target" "$work" "corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 >"$work.log" 2>&1 || status=$?
      grep -E '^(stat::number_of_executed_units|==[0-9]+== ERROR|SUMMARY|Done)' "$work.log" || true
      [ "$status" = 0 ] || tail -n 40 "$work.log" >&2
      rm -rf "$work" "$work.log"
      if [ "$status" != 0 ]; then
        echo "fuzz target $target failed (exit $status); the crashing input is under fuzz/artifacts/$target" >&2
        exit 1
      fi
      echo "fuzz target $target: no crash in ${FUZZ_SECONDS}s"
    done
  )
fi

log "all tests passed"
