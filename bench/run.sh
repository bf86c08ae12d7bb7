#!/usr/bin/env bash
# Compare gatecache with nginx proxy_cache and docker-registry in proxy mode,
# all on loopback in front of one TLS docker-registry upstream: cached-blob
# throughput, manifest requests per second, and the cache server's CPU time
# per GB and per 10,000 requests. bench/README.md explains each figure.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
readonly BENCH_DIR REPO_DIR
readonly PYTHON=/usr/bin/python3
readonly HELPER="$BENCH_DIR/benchlib.py"

readonly UPSTREAM_PORT=15000
readonly GATECACHE_PORT=15443
readonly NGINX_PORT=15444
readonly REGISTRY_PORT=15445
readonly REPOSITORY=bench/large
readonly OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
# A request or h2load run that takes longer than this is stuck, not slow:
# docker-registry needs about 500 s for 200,000 manifest requests on a
# loaded 2-CPU machine.
readonly TIMEOUT_S=3600

runs=5
work_dir=/tmp/bench
gatecache_bin="$REPO_DIR/build/gatecache"
blob_size=$((1 << 30))
manifest_requests=200000
servers=()

usage() {
  cat <<EOF
Usage: $0 [options]

Sets up a TLS docker-registry upstream on 127.0.0.1:$UPSTREAM_PORT with one
random blob and one manifest, puts each cache server in front of it, warms
the cache and measures it with h2load. Prints a table of medians.

Options:
  --runs N               runs per measurement; the table shows medians
                         (default $runs)
  --only NAME            measure only gatecache, nginx or registry; repeat
                         or separate with commas for several
  --gatecache-bin PATH   gatecache binary (default $gatecache_bin)
  --work-dir DIR         absolute directory for state, logs and results
                         (default $work_dir)
  --blob-size SIZE       blob size in bytes, or with a K, M or G suffix for
                         KiB, MiB or GiB (default 1G)
  --manifest-requests N  requests per manifest run (default $manifest_requests)
  -h, --help             print this help
EOF
}

die() {
  echo "run.sh: $*" >&2
  exit 1
}

log() {
  echo "[$(date +%H:%M:%S)] $*"
}

parse_size() {
  local value=$1
  case "$value" in
    *[kK]) echo $((${value%?} << 10)) ;;
    *[mM]) echo $((${value%?} << 20)) ;;
    *[gG]) echo $((${value%?} << 30)) ;;
    *) echo $((value)) ;;
  esac
}

parse_args() {
  while (($# > 0)); do
    case "$1" in
      --runs) runs=${2:?--runs needs a number}; shift ;;
      --only)
        local names
        IFS=, read -r -a names <<<"${2:?--only needs a server name}"
        servers+=("${names[@]}")
        shift
        ;;
      --gatecache-bin)
        gatecache_bin=${2:?--gatecache-bin needs a path}
        shift
        ;;
      --work-dir) work_dir=${2:?--work-dir needs a directory}; shift ;;
      --blob-size)
        [[ ${2:-} =~ ^[0-9]+[kKmMgG]?$ ]] ||
          die "invalid --blob-size '${2:-}': expected bytes or e.g. 1G"
        blob_size=$(parse_size "$2")
        shift
        ;;
      --manifest-requests)
        manifest_requests=${2:?--manifest-requests needs a number}
        shift
        ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; die "unknown option '$1'" ;;
    esac
    shift
  done

  [[ $runs =~ ^[1-9][0-9]*$ ]] || die "invalid --runs '$runs': expected N >= 1"
  [[ $manifest_requests =~ ^[1-9][0-9]*$ ]] ||
    die "invalid --manifest-requests '$manifest_requests': expected N >= 1"
  ((blob_size > 0)) || die "--blob-size must be at least one byte"
  [[ $work_dir == /* ]] || die "--work-dir must be absolute, got '$work_dir'"
  local name
  for name in "${servers[@]}"; do
    case "$name" in
      gatecache | nginx | registry) ;;
      *)
        die "unknown server '$name' for --only:" \
          "use gatecache, nginx or registry"
        ;;
    esac
  done
}

check_tools() {
  local tool
  for tool in h2load curl nginx docker-registry openssl sha256sum timeout \
    "$PYTHON"; do
    command -v "$tool" >/dev/null ||
      die "'$tool' not found; install nghttp2-client, curl, nginx," \
        "docker-registry, openssl, coreutils and python3"
  done
}

# Processes started by this script, stopped in reverse order on exit.
started_pids=()

# Start a command in the background with its output in a log file and
# store its PID in `last_pid`.
start_process() {
  local log_file=$1
  shift
  "$@" >"$log_file" 2>&1 &
  last_pid=$!
  started_pids+=("$last_pid")
}

# Send SIGTERM to one process, wait up to 30 s, then send SIGKILL. The
# time covers a measurement subshell that stops its own server first.
stop_process() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "run.sh: process $pid ignored SIGTERM, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  local remaining=()
  local other
  for other in "${started_pids[@]}"; do
    [[ $other == "$pid" ]] || remaining+=("$other")
  done
  started_pids=("${remaining[@]}")
}

cleanup() {
  local i
  for ((i = ${#started_pids[@]} - 1; i >= 0; i--)); do
    stop_process "${started_pids[i]}"
  done
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Wait until a TLS server responds on the port, failing early when the
# process exits. warm_cache verifies the certificates later.
wait_ready() {
  local name=$1 pid=$2 port=$3 log_file=$4 i code
  for ((i = 0; i < 300; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log_file" >&2
      die "$name exited during startup, log: $log_file"
    fi
    code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 \
      "https://127.0.0.1:$port/v2/" || true)
    [[ $code != 000 ]] && return 0
    sleep 0.1
  done
  die "$name did not respond on 127.0.0.1:$port within 30 s, log: $log_file"
}

# Replace the @NAME@ placeholders of a template from bench/conf.
render_config() {
  local template=$1 output=$2 state_dir=$3 port=$4 user_line=${5:-}
  sed -e "s|@STATE_DIR@|$state_dir|g" \
    -e "s|@PORT@|$port|g" \
    -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" \
    -e "s|@CA_FILE@|$work_dir/ca.crt|g" \
    -e "s|@CERT_FILE@|$work_dir/server.crt|g" \
    -e "s|@KEY_FILE@|$work_dir/server.key|g" \
    -e "s|@USER_LINE@|$user_line|g" \
    "$BENCH_DIR/conf/$template" >"$output"
}

# Create a CA and a server certificate for localhost and 127.0.0.1. nginx
# and docker-registry serve with it, and the caches verify the upstream
# with the CA.
make_certificates() {
  local dir=$work_dir
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -nodes -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 30 \
    -subj "/CN=gatecache benchmark CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/server.key" -out "$dir/server.csr" \
    -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" \
    -CAkey "$dir/ca.key" -CAcreateserial -days 30 \
    -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
  chmod 644 "$dir/server.key"
}

# Create the random blob, or keep the one from an earlier run when its
# size matches, since writing and hashing 1 GiB takes a while.
make_blob() {
  local data_dir=$work_dir/data
  mkdir -p "$data_dir"
  if [[ -f $data_dir/blob && -s $data_dir/blob.digest &&
    $(stat -c %s "$data_dir/blob") == "$blob_size" &&
    $data_dir/blob.digest -nt $data_dir/blob ]]; then
    blob_digest=$(cat "$data_dir/blob.digest")
    log "reusing the $blob_size-byte blob $blob_digest"
    return
  fi
  log "writing a $blob_size-byte random blob"
  rm -f "$data_dir/blob.digest"
  head -c "$blob_size" /dev/urandom >"$data_dir/blob.tmp"
  mv "$data_dir/blob.tmp" "$data_dir/blob"
  blob_digest="sha256:$(sha256sum "$data_dir/blob" | cut -d' ' -f1)"
  echo "$blob_digest" >"$data_dir/blob.digest"
}

# Upload a file as a blob in one PUT, as the registry API allows.
push_blob() {
  local file=$1 digest=$2 base="https://127.0.0.1:$UPSTREAM_PORT"
  local location separator
  location=$(curl -sS --fail --max-time 60 --cacert "$work_dir/ca.crt" \
    -X POST -D - -o /dev/null "$base/v2/$REPOSITORY/blobs/uploads/" |
    tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')
  [[ -n $location ]] || die "upstream returned no upload location"
  if [[ $location == /* ]]; then
    location=$base$location
  fi
  separator='?'
  if [[ $location == *\?* ]]; then
    separator='&'
  fi
  curl -sS --fail --max-time "$TIMEOUT_S" --cacert "$work_dir/ca.crt" \
    -o /dev/null -H "Content-Type: application/octet-stream" -T "$file" \
    "$location${separator}digest=$digest" ||
    die "upload of blob $digest to the upstream failed"
}

# Push the blob, an image config and an OCI manifest that references both,
# and set `manifest_digest` and `manifest_size`.
populate_upstream() {
  local data_dir=$work_dir/data base="https://127.0.0.1:$UPSTREAM_PORT"
  log "pushing the blob and a manifest to the upstream"
  push_blob "$data_dir/blob" "$blob_digest"

  printf '%s' '{"architecture":"amd64","os":"linux","rootfs":' \
    "{\"type\":\"layers\",\"diff_ids\":[\"$blob_digest\"]}}" \
    >"$data_dir/config.json"
  local config_digest config_size
  config_digest="sha256:$(sha256sum "$data_dir/config.json" | cut -d' ' -f1)"
  config_size=$(stat -c %s "$data_dir/config.json")
  push_blob "$data_dir/config.json" "$config_digest"

  printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"$OCI_MANIFEST\"," \
    "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\"," \
    "\"digest\":\"$config_digest\",\"size\":$config_size}," \
    "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\"," \
    "\"digest\":\"$blob_digest\",\"size\":$blob_size}]}" \
    >"$data_dir/manifest.json"
  manifest_digest=$(sha256sum "$data_dir/manifest.json" | cut -d' ' -f1)
  manifest_digest=sha256:$manifest_digest
  manifest_size=$(stat -c %s "$data_dir/manifest.json")
  curl -sS --fail --max-time 60 --cacert "$work_dir/ca.crt" -o /dev/null \
    -X PUT -H "Content-Type: $OCI_MANIFEST" \
    --data-binary "@$data_dir/manifest.json" \
    "$base/v2/$REPOSITORY/manifests/latest" ||
    die "upload of the manifest to the upstream failed"
}

start_upstream() {
  local state_dir=$work_dir/upstream
  rm -rf "$state_dir"
  mkdir -p "$state_dir"
  if port_in_use "$UPSTREAM_PORT"; then
    die "127.0.0.1:$UPSTREAM_PORT is already in use"
  fi
  render_config upstream.yml "$state_dir/config.yml" "$state_dir" \
    "$UPSTREAM_PORT"
  start_process "$state_dir/registry.log" \
    docker-registry serve "$state_dir/config.yml"
  upstream_pid=$last_pid
  wait_ready upstream "$upstream_pid" "$UPSTREAM_PORT" "$state_dir/registry.log"
  log "upstream docker-registry is PID $upstream_pid" \
    "on 127.0.0.1:$UPSTREAM_PORT"
}

# Each start_<server> function starts one cache server in front of the
# upstream and sets `server_pid`, `server_port`, `server_ca` (the CA that
# signed its certificate), `server_state` (its state directory) and
# `server_log` (its standard output and error).

start_nginx() {
  server_state=$work_dir/nginx
  server_port=$NGINX_PORT
  server_ca=$work_dir/ca.crt
  rm -rf "$server_state"
  mkdir -p "$server_state/tmp" "$server_state/cache"
  local user_line=""
  # A master process running as root starts workers as nobody, which must
  # be able to write the cache.
  if ((EUID == 0)); then
    user_line="user nobody nogroup;"
    chown -R nobody:nogroup "$server_state/tmp" "$server_state/cache"
  fi
  render_config nginx.conf "$server_state/nginx.conf" "$server_state" \
    "$server_port" "$user_line"
  server_log=$server_state/stderr.log
  start_process "$server_log" nginx -p "$server_state" \
    -c "$server_state/nginx.conf" -g "daemon off;"
  server_pid=$last_pid
}

start_registry() {
  server_state=$work_dir/registry
  server_port=$REGISTRY_PORT
  server_ca=$work_dir/ca.crt
  rm -rf "$server_state"
  mkdir -p "$server_state"
  render_config registry-proxy.yml "$server_state/config.yml" \
    "$server_state" "$server_port"
  server_log=$server_state/registry.log
  start_process "$server_log" env \
    "SSL_CERT_FILE=$work_dir/ca.crt" docker-registry serve \
    "$server_state/config.yml"
  server_pid=$last_pid
}

start_gatecache() {
  server_state=$work_dir/gatecache
  server_port=$GATECACHE_PORT
  server_ca=$server_state/state/tls/ca.crt
  rm -rf "$server_state"
  mkdir -p "$server_state"
  render_config gatecache.yml "$server_state/gatecache.yml" \
    "$server_state" "$server_port"
  server_log=$server_state/gatecache.log
  start_process "$server_log" "$gatecache_bin" serve \
    --config "$server_state/gatecache.yml"
  server_pid=$last_pid
}

# Check that the cache now stores the blob, so the measurements read it
# from the cache and not from the upstream.
check_cached() {
  local server=$1 hex=${blob_digest#sha256:} headers
  case "$server" in
    nginx)
      local url
      for url in "blobs/$blob_digest" "manifests/$manifest_digest"; do
        headers=$(curl -sS --fail --max-time "$TIMEOUT_S" \
          --cacert "$server_ca" -D - -o /dev/null -H "Accept: $OCI_MANIFEST" \
          "https://127.0.0.1:$server_port/v2/$REPOSITORY/$url" | tr -d '\r')
        grep -qi '^x-cache-status: HIT' <<<"$headers" ||
          die "nginx did not serve $url from its cache after warming"
      done
      ;;
    registry)
      # docker-registry 2.8 stores a proxied blob with a second download in
      # the background, so the file appears after the response has ended.
      local blobs=$server_state/storage/docker/registry/v2/blobs
      local data=$blobs/sha256/${hex:0:2}/$hex/data i
      for ((i = 0; i < 1200; i++)); do
        if [[ -f $data && $(stat -c %s "$data") == "$blob_size" ]]; then
          return 0
        fi
        sleep 0.1
      done
      die "docker-registry did not store the blob at $data within 120 s"
      ;;
    gatecache)
      # gatecache's blob store keeps <storage.path>/blobs/sha256/<ab>/<hex>.
      # The loop also covers a commit that ends after the response does.
      local data=$server_state/state/blobs/sha256/${hex:0:2}/$hex i
      for ((i = 0; i < 1200; i++)); do
        if [[ -f $data && $(stat -c %s "$data") == "$blob_size" ]]; then
          return 0
        fi
        sleep 0.1
      done
      die "gatecache did not store the blob at $data within 120 s"
      ;;
  esac
}

# Fetch the blob and the manifest once through the cache, verifying the
# certificate and the content, so that later requests are cache hits.
warm_cache() {
  local server=$1 base="https://127.0.0.1:$server_port/v2/$REPOSITORY"
  local digest
  log "$server: warming the cache"
  digest=$(curl -sS --fail --max-time "$TIMEOUT_S" --cacert "$server_ca" \
    "$base/blobs/$blob_digest" | sha256sum | cut -d' ' -f1) ||
    die "$server: fetching the blob failed"
  [[ sha256:$digest == "$blob_digest" ]] ||
    die "$server returned a blob with digest sha256:$digest," \
      "expected $blob_digest"
  curl -sS --fail --max-time "$TIMEOUT_S" --cacert "$server_ca" \
    -H "Accept: $OCI_MANIFEST" -o "$results_dir/$server-manifest.json" \
    "$base/manifests/$manifest_digest" ||
    die "$server: fetching the manifest failed"
  cmp -s "$results_dir/$server-manifest.json" "$work_dir/data/manifest.json" ||
    die "$server returned a manifest that differs from the one pushed"
  check_cached "$server"
}

# Set the variable named $1 to the CPU seconds (user + system) used by the
# children of this shell that have been waited for, descendants included.
# Call it directly, not in a command substitution, whose subshell starts
# with its counters at zero.
children_cpu_seconds() {
  times >"$work_dir/times.txt"
  printf -v "$1" '%s' "$(awk 'NR == 2 {
    total = 0
    for (i = 1; i <= 2; i++) {
      split($i, part, "m")
      sub("s", "", part[2])
      total += part[1] * 60 + part[2]
    }
    printf "%.3f", total
  }' "$work_dir/times.txt")"
}

# Run one measurement `runs` times and append a line per run to the
# results file: server, key, run, seconds, body bytes, requests, server CPU
# seconds, upstream CPU seconds, h2load CPU seconds.
measure() {
  local server=$1 key=$2 url=$3 requests=$4 body_bytes=$5
  shift 5
  local run output cpu_before cpu_after upstream_before upstream_after
  local parsed seconds data done_requests cpu upstream_cpu
  local client_before client_after client_cpu
  for ((run = 1; run <= runs; run++)); do
    output=$results_dir/$server-$key-$run.txt
    cpu_before=$("$PYTHON" "$HELPER" cpu "$server_pid")
    upstream_before=$("$PYTHON" "$HELPER" cpu "$upstream_pid")
    # h2load runs in the background so that a signal reaches this shell's
    # trap at once, and the trap stops h2load through `started_pids`.
    children_cpu_seconds client_before
    timeout "$TIMEOUT_S" h2load "$@" "$url" >"$output" 2>&1 &
    started_pids+=("$!")
    wait "$!" || true
    started_pids=("${started_pids[@]:0:${#started_pids[@]}-1}")
    children_cpu_seconds client_after
    cpu_after=$("$PYTHON" "$HELPER" cpu "$server_pid")
    upstream_after=$("$PYTHON" "$HELPER" cpu "$upstream_pid")

    if ! parsed=$("$PYTHON" "$HELPER" h2load "$output" "$requests" \
      "$body_bytes" 2>&1); then
      log "$server $key run $run/$runs failed: $parsed"
      echo "$server $key $run failed" >>"$results_file"
      continue
    fi
    read -r seconds data done_requests <<<"$parsed"
    cpu=$(awk -v a="$cpu_before" -v b="$cpu_after" 'BEGIN { print b - a }')
    upstream_cpu=$(awk -v a="$upstream_before" -v b="$upstream_after" \
      'BEGIN { print b - a }')
    client_cpu=$(awk -v a="$client_before" -v b="$client_after" \
      'BEGIN { print b - a }')
    echo "$server $key $run $seconds $data $done_requests $cpu" \
      "$upstream_cpu $client_cpu" >>"$results_file"
    log "$server $key run $run/$runs: $(awk -v s="$seconds" -v d="$data" \
      -v n="$done_requests" -v c="$cpu" -v blob="${key%%_*}" 'BEGIN {
        if (blob == "blob") {
          printf "%.0f MB/s, %.2f CPU s", d / s / 1e6, c
        } else {
          printf "%.0f requests/s, %.2f CPU s", n / s, c
        }
      }')"
    # Cache hits cost the upstream nothing, while serving one GB costs
    # docker-registry about a CPU second (see its own column), so more
    # than a second means requests went past the cache.
    if awk -v u="$upstream_cpu" 'BEGIN { exit !(u > 1.0) }'; then
      log "warning: the upstream used $upstream_cpu CPU s during this run," \
        "so the cache may have forwarded requests"
    fi
  done
}

measure_server() {
  local server=$1
  "start_$server"
  wait_ready "$server" "$server_pid" "$server_port" "$server_log"
  log "$server is PID $server_pid on 127.0.0.1:$server_port"
  if [[ $server == gatecache ]]; then
    local i=0
    while [[ ! -s $server_ca ]] && ((i++ < 100)); do
      sleep 0.1
    done
    [[ -s $server_ca ]] || die "gatecache did not write its CA to $server_ca"
  fi
  warm_cache "$server"

  local base="https://127.0.0.1:$server_port/v2/$REPOSITORY"
  local blob_url=$base/blobs/$blob_digest
  local manifest_url=$base/manifests/$manifest_digest
  local accept="Accept: $OCI_MANIFEST"
  measure "$server" blob_h1_c1 "$blob_url" 1 "$blob_size" --h1 -c1 -n1
  measure "$server" blob_h1_c4 "$blob_url" 4 "$blob_size" --h1 -c4 -n4
  measure "$server" blob_h2_c1 "$blob_url" 1 "$blob_size" -c1 -n1
  measure "$server" blob_h2_m4 "$blob_url" 4 "$blob_size" -c1 -m4 -n4
  measure "$server" blob_h2_c4 "$blob_url" 4 "$blob_size" -c4 -n4
  measure "$server" manifest_h2 "$manifest_url" "$manifest_requests" \
    "$manifest_size" -H "$accept" -c8 -m10 -n "$manifest_requests"
  # Go's HTTP client, which containerd and Docker use, does not pipeline,
  # so the HTTP/1.1 run sends one request at a time per connection.
  measure "$server" manifest_h1 "$manifest_url" "$manifest_requests" \
    "$manifest_size" -H "$accept" --h1 -c8 -m1 -n "$manifest_requests"
  # The same manifest by its tag, which every cache may serve from its
  # store: gatecache inside the tag's freshness window (10 minutes by
  # default), nginx for proxy_cache_valid. The first request is a miss.
  measure "$server" manifest_tag_h2 "$base/manifests/latest" \
    "$manifest_requests" "$manifest_size" -H "$accept" -c8 -m10 \
    -n "$manifest_requests"

  stop_process "$server_pid"
  log "$server stopped"
}

print_machine() {
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- |
    sed 's/^ *//'), $(nproc) CPUs online, kernel $(uname -r)"
  echo "versions: $(nginx -v 2>&1 | cut -d' ' -f3), docker-registry" \
    "$(docker-registry --version | awk '{ print $3 }'), $(h2load --version |
      head -n1), $(openssl version | cut -d' ' -f1-2)"
  echo "load average (1, 5, 15 min): $load_at_start at start," \
    "$(cut -d' ' -f1-3 /proc/loadavg) at end"
  echo "blob: $blob_size bytes; manifest: $manifest_size bytes;" \
    "$manifest_requests requests per manifest run"
}

main() {
  parse_args "$@"
  check_tools
  # Other work on the machine moves every figure, so the table shows the
  # load average next to them.
  load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
  if ((${#servers[@]} == 0)); then
    servers=(gatecache nginx registry)
    if [[ ! -x $gatecache_bin ]]; then
      echo "run.sh: $gatecache_bin not found, skipping gatecache" \
        "(use --gatecache-bin PATH)" >&2
      servers=(nginx registry)
    fi
  elif [[ " ${servers[*]} " == *" gatecache "* && ! -x $gatecache_bin ]]; then
    die "gatecache binary $gatecache_bin not found; use --gatecache-bin PATH"
  fi

  local name port
  for name in "${servers[@]}"; do
    case "$name" in
      gatecache) port=$GATECACHE_PORT ;;
      nginx) port=$NGINX_PORT ;;
      registry) port=$REGISTRY_PORT ;;
    esac
    if port_in_use "$port"; then
      die "127.0.0.1:$port for $name is already in use"
    fi
  done

  trap cleanup EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$work_dir"
  results_dir=$work_dir/results/$(date +%Y%m%d-%H%M%S)
  mkdir -p "$results_dir"
  results_file=$results_dir/results.txt
  echo "# server key run seconds body_bytes requests cpu_s upstream_cpu_s" \
    >"$results_file"

  make_certificates
  make_blob
  start_upstream
  populate_upstream

  # Each server is measured in a subshell with its own cleanup, so a
  # server that crashes or fails to warm stops only its own column.
  local failed_servers=() child
  for name in "${servers[@]}"; do
    # shellcheck disable=SC2030 # The subshell's own list is intended.
    (
      started_pids=()
      trap cleanup EXIT
      trap 'exit 130' INT TERM
      measure_server "$name"
    ) &
    child=$!
    # shellcheck disable=SC2031 # This is the main shell's list.
    started_pids+=("$child")
    if ! wait "$child"; then
      failed_servers+=("$name")
      echo "$name * 0 failed" >>"$results_file"
      log "$name: measurements stopped early; its log is in $work_dir/$name"
    fi
    started_pids=("${started_pids[@]:0:${#started_pids[@]}-1}")
  done

  # The table names docker-registry in full, so the results file does too.
  sed -i 's/^registry /docker-registry /' "$results_file"
  {
    echo
    print_machine
    "$PYTHON" "$HELPER" table "$results_file" "$runs" gatecache nginx \
      docker-registry
  } | tee "$results_dir/table.txt"
  log "h2load output and results are in $results_dir"
}

main "$@"
