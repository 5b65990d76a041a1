#!/usr/bin/env bash
# Memory: the broker's resident set (VmRSS and its peak VmHWM, from /proc) idle with the demo
# policies, idle with 10,000 more policies (spread over 1,000 agents), and after /v1/authorize
# traffic from 10,000 distinct live tokens (each one verified and cached).
# Usage: bench/rss.sh [POLICIES=10000] [TOKENS=10000]. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
POLICIES=${1:-10000}
TOKENS=${2:-10000}
PORT=${PORT:-9511}
if ! command -v wrk >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi
PROFILE=${PROFILE:-release}  # memory does not depend on LTO; `production` builds much longer
cargo build --profile "$PROFILE" -q --bin toolgate
BIN=$PWD/target/$PROFILE/toolgate
WORK=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

rss() { grep -E 'VmRSS|VmHWM|RssAnon|RssFile' "/proc/$1/status" | tr -s ' \t' ' ' | paste -sd ' '; }
start() {  # the dev config, in $WORK, on $PORT
  (cd "$WORK" && exec env TOOLGATE__SERVER__LISTEN=127.0.0.1:$PORT RUST_LOG=warn "$BIN" serve --dev --config toolgate.toml >/dev/null 2>&1) &
  pid=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return; sleep 0.2; done
  echo "the broker did not become ready" >&2; exit 1
}

cp -r toolgate.toml policies schemas "$WORK/"
start; sleep 1; echo "demo policies, idle: $(rss $pid)"; kill $pid; wait $pid 2>/dev/null || true

python3 - "$WORK/policies/bench.cedar" "$POLICIES" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        f.write(f'@id("bench-{i}")\npermit (principal == Toolgate::Agent::"agent-{i % 1000}", '
                f'action == Toolgate::Action::"demo___echo", resource)\n'
                f'when {{ context.input.message == "m{i}" }};\n\n')
PY
start; sleep 1; echo "+$POLICIES policies, idle: $(rss $pid)"

seq 0 $((TOKENS - 1)) | xargs -P 2 -I{} sh -c \
  "cd '$WORK' && '$BIN' token mint --config toolgate.toml --sub agent-\$(({} % 1000)) 2>/dev/null" > "$WORK/tokens.txt"
cat > "$WORK/drive.lua" <<LUA
local tokens = {}
for line in io.lines("$WORK/tokens.txt") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "/v1/authorize",
    {["Authorization"] = "Bearer " .. tokens[((i - 1) % #tokens) + 1], ["Content-Type"] = "application/json"},
    '{"tool":"demo___echo","arguments":{"message":"m1"}}')
end
LUA
wrk -t1 -c8 -d20s -s "$WORK/drive.lua" "http://127.0.0.1:$PORT/" | grep -E 'requests in|Non-2xx' || true
echo "+$POLICIES policies, after $(sort -u "$WORK/tokens.txt" | wc -l) distinct tokens: $(rss $pid)"
