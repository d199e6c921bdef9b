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
