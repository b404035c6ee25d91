# shellcheck shell=bash
# HTTP for scripts/up.sh and scripts/demo.sh with the venv's Python, so that no curl is needed. Sourced
# from the repository root after BIN (the venv's bin folder) and SERVE_WAIT_S (how long a server may take
# to answer) are set. Servers are asked directly, never through a proxy.

# http URL [BODY]: GET URL, or POST BODY (JSON) to it; prints the answer. Fails with the server's answer
# on an HTTP error, or the reason when there was no answer.
http() {
  "$BIN/python" - "$@" <<'PY'
import sys, urllib.error, urllib.request
url, body = sys.argv[1], (sys.argv[2].encode() if len(sys.argv) > 2 else None)
request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(request, timeout=30) as answer:
        print(answer.read().decode())
except urllib.error.HTTPError as err:
    sys.exit(f"{url}: HTTP {err.code}: {err.read().decode(errors='replace')}")
except OSError as err:
    sys.exit(f"{url}: no answer ({err})")
PY
}

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

# Sourcing checks SERVE_WAIT_S at once, before the script starts anything: bash arithmetic would take "2m"
# for an error deep in a wait, and "two" for a variable, 0.
if ! [[ $SERVE_WAIT_S =~ ^[0-9]+$ ]]; then
  echo "${0##*/}: SERVE_WAIT_S must be a whole number of seconds, not '$SERVE_WAIT_S'" >&2
  exit 2
fi
# Read as decimal even with leading zeros (arithmetic takes 010 for octal 8, and fails on 08), and small
# enough that SECONDS + SERVE_WAIT_S cannot overflow (twenty digits would wrap around).
if ! [[ $SERVE_WAIT_S =~ ^0*([0-9]{1,9})$ ]]; then
  echo "${0##*/}: SERVE_WAIT_S must be at most 999999999 seconds, not '$SERVE_WAIT_S'" >&2
  exit 2
fi
SERVE_WAIT_S=$((10#${BASH_REMATCH[1]}))
