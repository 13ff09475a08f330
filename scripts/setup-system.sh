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
command -v npm >/dev/null || need+=(npm)   # the scan stage's built-in `npm audit` (tests run it)
# PostgreSQL server binaries for the history store's PostgreSQL tests (Debian keeps them off PATH)
command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
# Containers: podman's Docker-compatible API service (runc: crun fails here), a local registry,
# debootstrap for base images built locally (no public image registry is reachable), skopeo.
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v skopeo >/dev/null || need+=(skopeo)
# The ssh runtime's tests: one sshd per loopback "host" (127.0.0.2-4), started by the tests.
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
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
# podman: runc as the OCI runtime, and container rlimits the machine's hard limits allow (runc is
# refused rlimits above them: "error setting rlimit type 7: operation not permitted").
if [ "$(id -u)" = 0 ] && [ ! -e /etc/containers/containers.conf ]; then
  nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
  mkdir -p /etc/containers
  cat > /etc/containers/containers.conf <<CONF
# written by zerodown's scripts/setup-system.sh
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
fi
