#!/usr/bin/env bash
# Runs fuzz targets for a given time, one after the other (one fuzzing process at a time: the
# machines are shared), and prints libFuzzer's final statistics for docs/security-testing.md.
#
#   fuzz/run.sh TARGET SECONDS      one target
#   fuzz/run.sh all SECONDS         every target, SECONDS each
#
# Stable Rust: no sanitizer (the code is `unsafe`-free; the fuzzer looks for panics, aborts,
# hangs and memory blow-ups). TOOLGATE_FUZZ_ASAN=1 builds with AddressSanitizer instead
# (RUSTC_BOOTSTRAP=1 lets stable rustc take the nightly-only flag).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
all=(token request_body input_schema mcp_envelope decision_record)
if [[ $# -ne 2 ]]; then
    echo "usage: $0 TARGET|all SECONDS (targets: ${all[*]})" >&2
    exit 2
fi
if [[ $1 == all ]]; then targets=("${all[@]}"); else targets=("$1"); fi
seconds=$2

sanitizer=(--sanitizer none)
if [[ ${TOOLGATE_FUZZ_ASAN:-0} == 1 ]]; then
    export RUSTC_BOOTSTRAP=1
    sanitizer=(--sanitizer address)
fi

# Longest input tried per target: past each limit the code refuses before parsing (a token
# over 8 KiB, a body over 64 KiB); these lengths reach the limit checks and keep runs fast.
max_len() {
    case $1 in
        token) echo 9000 ;;
        request_body | mcp_envelope) echo 16384 ;;
        decision_record) echo 32768 ;;
        *) echo 8192 ;;
    esac
}

[[ -d "$here/corpus" ]] || "$here/seed.sh"
mkdir -p "$here/logs"
cd "$here"
for t in "${targets[@]}"; do
    log="$here/logs/$t-$(date -u +%Y%m%dT%H%M%SZ).log"
    echo "== $t: ${seconds}s, log in $log"
    status=0
    cargo fuzz run "${sanitizer[@]}" "$t" -- \
        -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "$(date -u +%F) $t ${seconds}s executions=${runs:-?} exit=$status"
    if [[ $status -ne 0 ]]; then
        grep -E 'panicked|ERROR|Test unit written|SUMMARY' "$log" | head -20 || true
    fi
done
