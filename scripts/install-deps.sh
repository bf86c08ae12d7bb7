#!/bin/sh
# Installs the Debian 12 packages gatecache needs to build, run and test.
# Idempotent; run as root.
set -eu

BUILD_PACKAGES="build-essential cmake ninja-build pkg-config git
  libnghttp2-dev libev-dev libc-ares-dev liblmdb-dev libyaml-cpp-dev
  libssl-dev libhttp-parser-dev nlohmann-json3-dev libspdlog-dev
  libcli11-dev libsystemd-dev libexpected-dev catch2 openssl ca-certificates"
TEST_PACKAGES="python3 python3-pytest docker-registry skopeo containerd runc
  umoci busybox-static nghttp2-client curl iproute2 util-linux
  ansible-core ansible-lint python3-tomlkit systemd dpkg-dev"

# The benchmarks in bench/ also compare with nginx as a caching proxy.
BENCH_PACKAGES="nginx"

packages="$BUILD_PACKAGES"
case "${1:-}" in
--with-tests) packages="$packages $TEST_PACKAGES" ;;
--with-bench) packages="$packages $TEST_PACKAGES $BENCH_PACKAGES" ;;
"") ;;
*)
  echo "usage: $0 [--with-tests | --with-bench]" >&2
  exit 2
  ;;
esac

missing=""
for package in $packages; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null |
      grep -q "install ok installed"; then
    missing="$missing $package"
  fi
done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  # shellcheck disable=SC2086
  apt-get install -y --no-install-recommends $missing
fi
