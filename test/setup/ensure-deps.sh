#!/usr/bin/env bash
# The integration tests start real etcd processes, make throwaway certificates with openssl and call
# the Push port from Python's grpcio (gRPC C-core, an independent stack) run by Debian's
# /usr/bin/python3; install Debian's packages when they are missing.
set -euo pipefail
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server etcd-client)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
/usr/bin/python3 -c 'import grpc, grpc_tools.protoc' >/dev/null 2>&1 || missing+=(python3-grpcio python3-grpc-tools)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing ${missing[*]}: run 'sudo apt-get install -y ${missing[*]}' first" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
# Debian's package may start a system etcd on 2379; the tests use their own on free ports.
systemctl stop etcd >/dev/null 2>&1 || service etcd stop >/dev/null 2>&1 || true
