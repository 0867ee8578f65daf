#!/usr/bin/env bash
# The cluster tests start real etcd processes; install Debian's etcd when it is missing.
set -euo pipefail
if command -v etcd >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "etcd is not installed: run 'sudo apt-get install -y etcd-server etcd-client' first" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq etcd-server etcd-client >/dev/null
# Debian's package may start a system etcd on 2379; the tests use their own on free ports.
systemctl stop etcd >/dev/null 2>&1 || service etcd stop >/dev/null 2>&1 || true
