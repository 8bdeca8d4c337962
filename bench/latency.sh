#!/usr/bin/env bash
# Added latency of lmsvr over a direct call to the fake Ollama, closed loop at concurrency 1
# (wrk), release build, SQLite with full auth, hold, settle and ledger. Alternates direct and
# gateway rounds and prints each round's p50/p99 and the medians. Only 127.0.0.1; bounded.
#
#   bench/latency.sh [rounds=5] [seconds-per-round=5]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECONDS_PER_ROUND=${2:-5}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
swift build -c release --product lmsvr >/dev/null
swift build -c release --product lmsvr-fake-upstream >/dev/null
BIN=.build/release
WORK=$(mktemp -d)
trap 'kill $FAKE_PID $GW_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
UP=$(free_port); GW=$(free_port)
taskset -c 1 $BIN/lmsvr-fake-upstream --port "$UP" >/dev/null & FAKE_PID=$!
export DATABASE_URL="sqlite:///$WORK/lmsvr.db" OLLAMA_BASE_URL="http://127.0.0.1:$UP" HOST=127.0.0.1 PORT=$GW LOG_LEVEL=${LOG_LEVEL:-WARNING}
$BIN/lmsvr create-customer Bench bench@example.com --json >/dev/null
KEY=$($BIN/lmsvr generate-key 1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
taskset -c 0 $BIN/lmsvr serve >/dev/null 2>&1 & GW_PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$GW/health" >/dev/null && break; sleep 0.1; done
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"llama3","stream":false,"messages":[{"role":"user","content":"Why is the sky blue? Answer in one short paragraph please."}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %.1f %.1f\n", summary.requests, latency:percentile(50), latency:percentile(99)))
end
LUA
run() { taskset -c 1 wrk -t1 -c1 -d"${SECONDS_PER_ROUND}s" -s "$WORK/post.lua" "$1" | awk '/^RESULT/ {print $2, $3, $4}'; }
run "http://127.0.0.1:$UP/api/chat" >/dev/null; run "http://127.0.0.1:$GW/api/chat" >/dev/null   # warm-up
declare -a D50 G50 D99 G99
for r in $(seq "$ROUNDS"); do
  read -r dn d50 d99 < <(run "http://127.0.0.1:$UP/api/chat")
  read -r gn g50 g99 < <(run "http://127.0.0.1:$GW/api/chat")
  echo "round $r: direct n=$dn p50=${d50}us p99=${d99}us | lmsvr n=$gn p50=${g50}us p99=${g99}us"
  D50+=("$d50"); G50+=("$g50"); D99+=("$d99"); G99+=("$g99")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median p50: direct $(median "${D50[@]}") us, lmsvr $(median "${G50[@]}") us, added $(python3 -c "print(round($(median "${G50[@]}") - $(median "${D50[@]}"), 1))") us"
echo "median p99: direct $(median "${D99[@]}") us, lmsvr $(median "${G99[@]}") us, added $(python3 -c "print(round($(median "${G99[@]}") - $(median "${D99[@]}"), 1))") us"
echo "ledger rows: $($BIN/lmsvr usage-report 1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_requests"])')"
