#!/usr/bin/env bash
# Installs Debian's redis-server if it is missing (the cluster tests start their own instance on
# a free port, without persistence, and stop it). Idempotent; needs root (CI runs as root).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-redis.sh: redis-server is missing and this is not root: run 'apt-get install -y redis-server'" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends redis-server
command -v redis-server >/dev/null
