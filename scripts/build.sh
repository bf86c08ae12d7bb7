#!/bin/sh
# Configures and builds gatecache into build/ (or $GATECACHE_BUILD_DIR).
set -eu
cd "$(dirname "$0")/.."
build_dir="${GATECACHE_BUILD_DIR:-build}"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
cmake --build "$build_dir" -j "$(nproc)"
