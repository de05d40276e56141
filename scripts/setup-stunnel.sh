#!/usr/bin/env bash
# Installs stunnel (Debian's stunnel4 package), which the TLS interop tests
# (crates/veltix/tests/stunnel.rs) put between the real Python Veltix and veltix-rs: an
# OpenSSL TLS implementation that is not ours.
#
# Idempotent: does nothing when a stunnel binary is already on PATH. Otherwise runs
# `apt-get update` and `apt-get install -y stunnel4` (needs root, as CI has). Fails loudly
# when it cannot install: the tests need stunnel and never skip without it.
set -euo pipefail

if command -v stunnel >/dev/null 2>&1 || command -v stunnel4 >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-stunnel.sh: stunnel is missing and apt-get is not available; install stunnel4" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "setup-stunnel.sh: stunnel is missing and we are not root; install stunnel4" >&2
    exit 1
  fi
fi
echo "setup-stunnel.sh: installing stunnel4" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq stunnel4 >/dev/null
if ! command -v stunnel >/dev/null 2>&1 && ! command -v stunnel4 >/dev/null 2>&1; then
  echo "setup-stunnel.sh: stunnel4 installed but no stunnel binary on PATH" >&2
  exit 1
fi
