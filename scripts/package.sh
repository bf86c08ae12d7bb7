#!/bin/sh
# Builds the Debian package of gatecache: configures and builds build/ (or
# $GATECACHE_BUILD_DIR) with scripts/build.sh, passing on any arguments,
# then writes gatecache_<version>-1_<arch>.deb there with cpack. Needs
# dpkg-dev (dpkg-shlibdeps) and installs nothing.
set -eu
cd "$(dirname "$0")/.."
build_dir="${GATECACHE_BUILD_DIR:-build}"
./scripts/build.sh "$@"
cd "$build_dir"
cpack -G DEB --config CPackConfig.cmake -B "$(pwd)"
# Staging files that cpack leaves behind.
rm -rf _CPack_Packages
ls -l ./*.deb
