#!/usr/bin/env bash
# Installs the system packages zerodown's tests and benchmarks use (Debian), if missing.
# Real components in tests: HAProxy, nginx (a fast upstream), wrk (load), PostgreSQL.
set -euo pipefail
need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v hey >/dev/null || need+=(hey)
command -v git >/dev/null || need+=(git)
command -v chromium >/dev/null || need+=(chromium)   # dashboard tests drive it with Playwright
# PostgreSQL server binaries for the history store's PostgreSQL tests (Debian keeps them off PATH)
command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "zerodown: missing system packages: ${need[*]} (run as root or install them: apt-get install ${need[*]})" >&2
    exit 2
  fi
  echo "zerodown: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
