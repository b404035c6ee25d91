# shellcheck shell=bash
# Sourced by scripts/up.sh and scripts/demo.sh, from the repository root, after they set BIN (the venv's
# bin folder) and SERVE_WAIT_S (how long a server may take to answer).

# wait_for WHO URL WORD PID NAME [LOG]: wait until URL's answer holds WORD (asked with no proxy). Exits 1,
# so that the caller's EXIT trap stops what it started, when NAME (process PID) has exited or SERVE_WAIT_S
# seconds have passed; with LOG (where NAME's output went), prints that log first. WHO starts each message.
wait_for() {
  local who=$1 url=$2 word=$3 pid=$4 name=$5 log=${6:-}
  local deadline=$((SECONDS + SERVE_WAIT_S))
  until "$BIN/python" - "$url" "$word" 2>/dev/null <<'PY'; do
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
sys.exit(sys.argv[2].encode() not in opener.open(sys.argv[1], timeout=2).read())
PY
    if ! kill -0 "$pid" 2>/dev/null; then
      if [ -n "$log" ]; then cat "$log" >&2; fi
      echo "$who: $name exited" >&2
      exit 1
    fi
    if (( SECONDS >= deadline )); then
      if [ -n "$log" ]; then cat "$log" >&2; fi
      echo "$who: $url did not say $word within ${SERVE_WAIT_S} s ($name's log is above; SERVE_WAIT_S=..." \
        "waits longer)" >&2
      exit 1
    fi
    sleep 1
  done
}
