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
    with open(out, "w") as f:
        f.write(str(n))
    time.sleep(0.1)
PY
setsid /usr/bin/python3 "$work/counter.py" "$work/count" </dev/null >/dev/null 2>&1 &
disown
for _ in $(seq 100); do [ -s "$work/count.pid" ] && break; sleep 0.05; done
pid=$(cat "$work/count.pid")
sleep 1
echo "counter $pid is at $(cat "$work/count")"

mkdir "$work/images"
"$criu" dump -t "$pid" -D "$work/images" -o dump.log -v4
before=$(cat "$work/count")
sleep 0.3
if kill -0 "$pid" 2>/dev/null; then echo "dump left the process running" >&2; exit 1; fi
echo "dumped and killed at $before; images: $(ls "$work/images" | tr '\n' ' ')"

"$criu" restore -D "$work/images" -d -o restore.log -v4 --pidfile "$work/restored.pid"
restored=$(cat "$work/restored.pid")
sleep 1
after=$(cat "$work/count")
echo "restored as $restored, now at $after"
if [ "$restored" != "$pid" ] || [ "$after" -le "$before" ]; then
  echo "DEMO FAILED: expected pid $pid counting on past $before" >&2
  exit 1
fi
kill "$pid"
pid=""
echo "DEMO PASSED: checkpoint and restore of a live process, same PID, state kept"
