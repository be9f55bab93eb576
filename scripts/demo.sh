#!/usr/bin/env bash
# The main job (npm start): checkpoint a running Python counter, kill it, restore it with the same
# PID and show that it counts on from where it was.
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
bash "$root/scripts/setup.sh"
criu="$root/scripts/criu"
work=$(mktemp -d /tmp/criu-ts-demo.XXXXXX)
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/counter.py" <<'PY'
import os, sys, time
os.closerange(3, 65536)  # hold only stdin/stdout/stderr
out = sys.argv[1]
with open(out + ".pid", "w") as f:
    f.write(str(os.getpid()))
n = 0
while True:
    n += 1
    # Written beside and renamed over: a reader sees the old count or the new, never an empty file.
    with open(out + ".tmp", "w") as f:
        f.write(str(n))
    os.rename(out + ".tmp", out)
    time.sleep(0.1)
PY
setsid /usr/bin/python3 "$work/counter.py" "$work/count" </dev/null >/dev/null 2>&1 &
disown
for _ in $(seq 100); do [ -s "$work/count.pid" ] && break; sleep 0.05; done
pid=$(cat "$work/count.pid")
sleep 1

# The count as a number; anything else (a missing or unreadable file) fails the demo.
count() {
  local n
  n=$(cat "$work/count" 2>/dev/null) || true
  if ! [[ "$n" =~ ^[0-9]+$ ]]; then
    echo "DEMO FAILED: the counter's file holds \"$n\", not a count" >&2
    exit 1
  fi
  echo "$n"
}
start=$(count)
echo "counter $pid is at $start"

mkdir "$work/images"
"$criu" dump -t "$pid" -D "$work/images" -o dump.log -v4
before=$(count)
sleep 0.3
if kill -0 "$pid" 2>/dev/null; then echo "dump left the process running" >&2; exit 1; fi
echo "dumped and killed at $before; images: $(ls "$work/images" | tr '\n' ' ')"

"$criu" restore -D "$work/images" -d -o restore.log -v4 --pidfile "$work/restored.pid"
restored=$(cat "$work/restored.pid")
sleep 1
after=$(count)
echo "restored as $restored, now at $after"
if [ "$restored" != "$pid" ] || ! [ "$after" -gt "$before" ]; then
  echo "DEMO FAILED: expected pid $pid counting on past $before" >&2
  exit 1
fi
kill "$pid"
pid=""
echo "DEMO PASSED: checkpoint and restore of a live process, same PID, state kept"
