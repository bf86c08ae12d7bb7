#!/bin/sh
# Installs the build dependencies, builds gatecache and runs it in the
# foreground on the example configuration (listens on 127.0.0.1:5443 and
# [::1]:5443, state in /var/lib/gatecache). Stop it with Ctrl-C.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
exec "${GATECACHE_BUILD_DIR:-build}/gatecache" serve \
  --config appliance/config/gatecache.example.yaml
