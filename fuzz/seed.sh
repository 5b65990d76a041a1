#!/usr/bin/env bash
# Builds the starting corpora in fuzz/corpus/TARGET from the committed seeds (fuzz/seeds/, the
# tests' inputs) and from inputs the repository already holds: the demo tools' schemas, the
# decision-log fixture, and the GitHub MCP tool corpus beside the checkout when present.
# The generated corpus is not committed (fuzz/.gitignore). Needs python3 for the splitting.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
targets=(token request_body input_schema mcp_envelope decision_record)

for t in "${targets[@]}"; do
    mkdir -p "$here/corpus/$t"
    cp -n "$here/seeds/$t/"* "$here/corpus/$t/" 2>/dev/null || true
done

# Each demo tool's input schema, alone (the target then converts `{}`).
for f in "$repo"/schemas/tools/*.json; do
    cp -n "$f" "$here/corpus/input_schema/tool-$(basename "$f")"
done

# The decision-log fixture, whole and line by line.
for f in "$repo"/tests/fixtures/*.jsonl; do
    name=$(basename "$f" .jsonl)
    cp -n "$f" "$here/corpus/decision_record/$name"
    split -l 1 -d "$f" "$here/corpus/decision_record/$name-line-"
done

# The 117 tool schemas of GitHub's MCP server (tests/it/corpus.rs reads the same file), beside
# the checkout or, for a worktree under wt/, beside the main checkout.
for github in "$repo/../shared/corpora/github-mcp-tools.json" \
    "$repo/../../shared/corpora/github-mcp-tools.json"; do
    [[ -f "$github" ]] && break
done
if [[ -f "$github" ]]; then
    python3 - "$github" "$here/corpus/input_schema" <<'PY'
import json, sys
tools = json.load(open(sys.argv[1]))["tools"]
for tool in tools:
    with open(f"{sys.argv[2]}/github-{tool['name']}", "w") as out:
        json.dump([tool["inputSchema"], {}], out)
PY
fi

for t in "${targets[@]}"; do
    echo "$t: $(ls "$here/corpus/$t" | wc -l) inputs"
done
