#!/bin/sh
# Installs every dependency, builds gatecache and runs all unit and
# integration tests. Integration tests start their own registries,
# containerd and gatecache on loopback and need root.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --with-tests
./scripts/build.sh
cd "${GATECACHE_BUILD_DIR:-build}"
ctest --output-on-failure --timeout 1200 "$@"
