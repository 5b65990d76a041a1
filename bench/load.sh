#!/usr/bin/env bash
# Load test: toolgate's /v1/authorize and /v1/tools/{tool}/invoke beside a bare axum endpoint,
# at fixed concurrency for a fixed time, with wrk on the same machine. Prints requests/s,
# latency percentiles, server CPU per request (from /proc) and the ratio toolgate / baseline.
# Usage: bench/load.sh [DURATION_S=10] [CONNECTIONS=32]. Traffic stays on 127.0.0.1.
# Environment:
#   TOOLGATE_B=PATH  also runs a second broker binary (e.g. one built from another commit)
#                    in the same run, for an A/B comparison against the same baseline;
#   TOOLGATE_A=PATH  runs this broker binary as `a` instead of building the checkout's (to
#                    compare two saved builds, e.g. of one experiment, without rebuilding);
#   RATE=N           paces the broker runs to about N requests/s in total: before each
#                    request a connection waits a random think time (exponential, mean
#                    CONNECTIONS/N s, wrk's `delay`), so latency is measured below saturation
#                    (a closed loop with think time, not an open constant-rate load). The
#                    baseline also runs paced, and the script prints what the broker adds
#                    (its p50 and p99 minus the paced baseline's);
#   ENDPOINTS="authorize invoke"  which broker endpoints to run;
#   ROUNDS=N         repeats the baseline and broker runs N times, interleaved (baseline, a,
#                    b, baseline, a, b, ...), each broker run compared with the baseline run
#                    just before it, and prints the median of each ratio (and of the added
#                    latency when paced): drift on a shared machine then touches a and b alike.
#                    With TOOLGATE_B each round also prints a/b, the two brokers' requests/s
#                    run straight after each other (b first in every other round), and
#                    its median;
#   PROFILE=production  the cargo profile to build and run (`production`: fat LTO, what
#                    operators deploy; `release` builds much faster);
#   STATE_ON_TMPFS=1 puts the brokers' state directories, the decision log included, on
#                    /dev/shm, to measure what the disk costs (`a` puts only broker a's
#                    there, so that a/b compares the same binary on tmpfs and on disk). A
#                    measurement only: tmpfs does not survive a reboot.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=${2:-32}
BASE_PORT=${BASE_PORT:-9400}
BROKER_PORT=${BROKER_PORT:-9401}
BROKER_B_PORT=${BROKER_B_PORT:-9402}
ENDPOINTS=${ENDPOINTS:-authorize invoke}
PROFILE=${PROFILE:-production}
BIN_DIR=target/$PROFILE

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi
command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }

BROKER_A=${TOOLGATE_A:-$BIN_DIR/toolgate}
build_broker=(--bin toolgate)
[ -n "${TOOLGATE_A:-}" ] && build_broker=()
cargo build --profile "$PROFILE" -q "${build_broker[@]}" --features examples --example bare_baseline --example bench_setup
WORK=$(mktemp -d)
pids=()
SHM=
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK" ${SHM:+"$SHM"}; }
trap cleanup EXIT

openssl genrsa -traditional 2048 2>/dev/null | openssl rsa -traditional -outform DER -out "$WORK/rsa.der" 2>/dev/null
"$BIN_DIR/examples/bench_setup" "$WORK" "http://127.0.0.1:$BASE_PORT/echo" "127.0.0.1:$BROKER_PORT" >/dev/null
if [ -n "${STATE_ON_TMPFS:-}" ]; then
  SHM=$(mktemp -d /dev/shm/toolgate-bench.XXXXXX)
  mkdir "$SHM/state"
  ln -s "$SHM/state" "$WORK/state"
  if [ "$STATE_ON_TMPFS" != a ]; then
    mkdir "$SHM/state-b"
    ln -s "$SHM/state-b" "$WORK/state-b"
  fi
fi

"$BIN_DIR/examples/bare_baseline" "127.0.0.1:$BASE_PORT" & pids+=($!); BASE_PID=$!
RUST_LOG=warn "$BROKER_A" serve --config "$WORK/toolgate.toml" 2>"$WORK/broker.log" & pids+=($!); BROKER_PID=$!
wait_ready() {
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && break; sleep 0.2; done
  curl -sf "http://127.0.0.1:$1/readyz" >/dev/null || { cat "$2"; exit 1; }
}
wait_ready "$BROKER_PORT" "$WORK/broker.log"
if [ -n "${TOOLGATE_B:-}" ]; then
  sed -e "s/127.0.0.1:$BROKER_PORT/127.0.0.1:$BROKER_B_PORT/" -e 's/^state_dir = "state"/state_dir = "state-b"/' \
    "$WORK/toolgate.toml" >"$WORK/toolgate-b.toml"
  RUST_LOG=warn "$TOOLGATE_B" serve --config "$WORK/toolgate-b.toml" 2>"$WORK/broker-b.log" & pids+=($!); BROKER_B_PID=$!
  wait_ready "$BROKER_B_PORT" "$WORK/broker-b.log"
fi

TOKEN=$(cat "$WORK/token")
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.body = io.open(os.getenv("BODY")):read("*a")
local pause = tonumber(os.getenv("PAUSE_MS") or "0")
if pause > 0 then
  -- Exponential think times (mean PAUSE_MS): each connection is an independent caller, so
  -- requests arrive spread out rather than in bursts of every connection at once.
  math.randomseed(os.time())
  delay = function() return -math.log(1 - math.random()) * pause end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d p999_us=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), summary.errors.status + summary.errors.connect + summary.errors.timeout))
end
LUA

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

# run NAME PID URL BODY [PAUSE_MS]
run() {
  local name=$1 pid=$2 url=$3 body=$4 pause=${5:-0} before after out rps reqs
  before=$(cpu_ticks "$pid")
  out=$(BODY="$body" PAUSE_MS="$pause" wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$WORK/post.lua" "$url" | grep RESULT)
  after=$(cpu_ticks "$pid")
  LAST=$out
  rps=$(field rps)
  reqs=$((rps * DURATION))
  local cpu_us=$(( (after - before) * 1000000 / TCK / (reqs > 0 ? reqs : 1) ))
  echo "$name $out cpu_us_per_req=$cpu_us"
  eval "RPS_$name=$rps"
}
# field NAME: the value of NAME (rps, p50_us, ...) in the last run's RESULT line
field() { sed -E "s/.* $1=([0-9]+).*/\1/" <<<" $LAST"; }

echo "machine: $(nproc) cores; ${DURATION}s per run, $CONNS connections, wrk -t1 on the same machine"
PAUSE=0
if [ -n "${RATE:-}" ]; then
  PAUSE=$((CONNS * 1000 / RATE))
  echo "broker runs paced: each connection waits ${PAUSE} ms before each request (about $RATE requests/s in total)"
fi
ROUNDS=${ROUNDS:-1}
brokers="a:$BROKER_PID:$BROKER_PORT"
[ -n "${TOOLGATE_B:-}" ] && brokers="$brokers b:$BROKER_B_PID:$BROKER_B_PORT"
# One "NAME VALUE" line per ratio and added latency of every round, for the medians.
SUMMARY="$WORK/summary"
: >"$SUMMARY"
# ratio NAME X Y: prints and records "ratio NAME=X/Y"
ratio() { awk -v n="$1" -v x="$2" -v y="$3" 'BEGIN { printf "ratio %s=%.3f\n", n, x / y }' | tee -a "$SUMMARY"; }
for round in $(seq "$ROUNDS"); do
  [ "$ROUNDS" -gt 1 ] && echo "round $round of $ROUNDS"
  run baseline "$BASE_PID" "http://127.0.0.1:$BASE_PORT/baseline" "$WORK/authorize.json"
  if [ "$PAUSE" -gt 0 ]; then
    # The same paced load on the baseline: what a broker run adds is its latency minus this.
    run baseline_paced "$BASE_PID" "http://127.0.0.1:$BASE_PORT/baseline" "$WORK/authorize.json" "$PAUSE"
    BASE_P50=$(field p50_us)
    BASE_P99=$(field p99_us)
  fi
  for endpoint in $ENDPOINTS; do
    order=$brokers
    # Every other round runs b first, so that neither broker always follows the baseline.
    [ $((round % 2)) -eq 0 ] && order=$(tr ' ' '\n' <<<"$brokers" | tac | tr '\n' ' ')
    for broker in $order; do
      IFS=: read -r tag pid port <<<"$broker"
      case $endpoint in
        authorize) run "authorize_$tag" "$pid" "http://127.0.0.1:$port/v1/authorize" "$WORK/authorize.json" "$PAUSE" ;;
        invoke) run "invoke_$tag" "$pid" "http://127.0.0.1:$port/v1/tools/bench___echo/invoke" "$WORK/invoke.json" "$PAUSE" ;;
      esac
      rps_var="RPS_${endpoint}_$tag"
      ratio "${endpoint}_$tag/baseline" "${!rps_var}" "$RPS_baseline"
      if [ "$PAUSE" -gt 0 ]; then
        echo "added ${endpoint}_$tag: p50_us=$(($(field p50_us) - BASE_P50)) p99_us=$(($(field p99_us) - BASE_P99)) (broker minus the paced baseline)" | tee -a "$SUMMARY"
      fi
    done
    if [ -n "${TOOLGATE_B:-}" ]; then
      # The two brokers of one round, side by side: drift between rounds cancels out.
      a_var="RPS_${endpoint}_a" b_var="RPS_${endpoint}_b"
      ratio "${endpoint}_a/${endpoint}_b" "${!a_var}" "${!b_var}"
    fi
  done
done
if [ "$ROUNDS" -gt 1 ]; then
  echo "medians of $ROUNDS rounds:"
  # "ratio NAME=X" and "added NAME: p50_us=X p99_us=Y ..." lines, one median per measure.
  sed -E -e 's/^ratio ([^=]+)=([0-9.]+)$/ratio_\1 \2/' \
    -e 's/^added ([^:]+): p50_us=(-?[0-9]+) p99_us=(-?[0-9]+).*/added_p50_\1 \2\nadded_p99_\1 \3/' "$SUMMARY" |
    sort -k1,1 -k2,2g | awk '
      { values[$1] = values[$1] " " $2; count[$1]++ }
      END { for (k in values) { n = split(substr(values[k], 2), v, " "); m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2; printf "  %s median=%s (of %d: %s)\n", k, m, n, substr(values[k], 2) } }' | sort
fi
echo "decision records: $(sqlite3 "$WORK/state/decisions.db" 'select count(*) from decisions' 2>/dev/null || echo '?')"
