#!/usr/bin/env bash
# Time whole image pulls by skopeo and ctr, direct from a TLS docker-registry
# upstream and through gatecache (cold, warm, and warm with the upstream
# stopped), all on loopback. bench/pulls.py does the work, and
# bench/README.md explains each row.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
readonly BENCH_DIR REPO_DIR
readonly PYTHON=/usr/bin/python3
readonly DRIVER="$BENCH_DIR/pulls.py"

# Apart from bench/run.sh's 15000-15445, so both can run at once.
readonly UPSTREAM_PORT=16000
readonly GATECACHE_PORT=16443
# Seconds the driver gets to stop its daemons after a signal: containerd,
# gatecache and docker-registry get up to 20 s each before SIGKILL.
readonly DRIVER_STOP_TIMEOUT_S=90

runs=3
work_dir=/tmp/bench-pulls
gatecache_bin="$REPO_DIR/build/gatecache"
freshness=0s
keep=false

usage() {
  cat <<EOF
Usage: $0 [options]

Starts a TLS docker-registry upstream on 127.0.0.1:$UPSTREAM_PORT, gatecache
on 127.0.0.1:$GATECACHE_PORT and a private containerd, pushes three images
built from files on this machine, and times each pull by skopeo and ctr:
direct from the upstream, and through gatecache cold, warm, and warm with
the upstream stopped. Prints a Markdown table of medians and writes it to
WORK-DIR/pulls/DATE-TIME/table.md. Needs root for containerd.

Options:
  --runs N               pulls per cell; the table shows the median, the
                         minimum and the maximum (default $runs)
  --work-dir DIR         absolute directory for state, logs, results and
                         the built images (default $work_dir)
  --gatecache-bin PATH   gatecache binary (default $gatecache_bin)
  --freshness DURATION   gatecache's default_freshness for the upstream's
                         tags, such as 0s, 30s or 10m (default $freshness,
                         so every pull by tag asks the upstream for the
                         digest)
  --keep                 keep the upstream's and gatecache's storage and
                         the images skopeo copied in WORK-DIR/state
  -h, --help             print this help
EOF
}

die() {
  echo "pulls.sh: $*" >&2
  exit 1
}

parse_args() {
  while (($# > 0)); do
    case "$1" in
      --runs) runs=${2:?--runs needs a number}; shift ;;
      --work-dir) work_dir=${2:?--work-dir needs a directory}; shift ;;
      --gatecache-bin)
        gatecache_bin=${2:?--gatecache-bin needs a path}
        shift
        ;;
      --freshness) freshness=${2:?--freshness needs a duration}; shift ;;
      --keep) keep=true ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; die "unknown option '$1'" ;;
    esac
    shift
  done

  [[ $runs =~ ^[1-9][0-9]*$ ]] || die "invalid --runs '$runs': expected N >= 1"
  [[ $work_dir == /* ]] || die "--work-dir must be absolute, got '$work_dir'"
  [[ $freshness =~ ^[0-9]+(ms|s|m|h)$ ]] ||
    die "invalid --freshness '$freshness': expected a number and ms, s, m" \
      "or h, such as 10m"
  [[ -x $gatecache_bin ]] ||
    die "gatecache binary $gatecache_bin not found or not executable." \
      "Build it or pass --gatecache-bin PATH"
  gatecache_bin=$(realpath "$gatecache_bin")
}

check_tools() {
  local tool
  for tool in skopeo umoci ctr containerd containerd-shim-runc-v2 runc \
    docker-registry openssl git "$PYTHON"; do
    command -v "$tool" >/dev/null ||
      die "'$tool' not found. Install skopeo, umoci, containerd, runc," \
        "docker-registry, openssl, git and python3"
  done
  # containerd mounts overlayfs to unpack the pulled layers.
  ((EUID == 0)) || die "containerd needs root, so run this script as root"
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

driver_pid=""

# Stop the driver, which stops its daemons by PID in its own cleanup. A
# driver that does not exit in time gets SIGKILL, which leaves its daemons
# running, so the message names their state directory.
cleanup() {
  [[ -n $driver_pid ]] || return 0
  kill -TERM "$driver_pid" 2>/dev/null || return 0
  local i
  for ((i = 0; i < DRIVER_STOP_TIMEOUT_S * 10; i++)); do
    kill -0 "$driver_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$driver_pid" 2>/dev/null; then
    echo "pulls.sh: driver $driver_pid did not stop within" \
      "$DRIVER_STOP_TIMEOUT_S s, sending SIGKILL; check for daemons it" \
      "started under $work_dir/state" >&2
    kill -KILL "$driver_pid" 2>/dev/null || true
  fi
  wait "$driver_pid" 2>/dev/null || true
  driver_pid=""
}

main() {
  local command_line
  command_line="bench/pulls.sh${*:+ $*}"
  parse_args "$@"
  check_tools
  local port
  for port in "$UPSTREAM_PORT" "$GATECACHE_PORT"; do
    if port_in_use "$port"; then
      die "127.0.0.1:$port is already in use. Stop what listens there" \
        "(ss -ltnp 'sport = :$port' shows it)"
    fi
  done

  local results_dir
  results_dir=$work_dir/pulls/$(date +%Y%m%d-%H%M%S)
  mkdir -p "$results_dir"

  trap cleanup EXIT
  trap 'exit 130' INT TERM HUP
  local driver_args=(--runs "$runs" --work-dir "$work_dir"
    --results-dir "$results_dir" --gatecache-bin "$gatecache_bin"
    --upstream-port "$UPSTREAM_PORT" --gatecache-port "$GATECACHE_PORT"
    --freshness "$freshness" --command "$command_line")
  if [[ $keep == true ]]; then
    driver_args+=(--keep)
  fi
  # The driver runs in the background so that a signal reaches this
  # shell's trap at once, and the trap lets the driver stop its daemons.
  "$PYTHON" "$DRIVER" "${driver_args[@]}" &
  driver_pid=$!
  local status=0
  wait "$driver_pid" || status=$?
  driver_pid=""
  return "$status"
}

main "$@"
