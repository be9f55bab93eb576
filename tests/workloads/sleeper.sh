#!/bin/bash
# sleeper: bash reading this script while it loops over `sleep 0.1` children.
# Same protocol as the C workloads: bin/sleeper.sh RESULT_FILE. On SIGTERM the
# loop ends and the lines after it (read by bash from the script file only
# then, so the script fd's offset matters) check what the shell kept in memory.
# Run as `sh sleeper.sh ...` too: become bash (same PID) before doing anything.
[ -n "$BASH_VERSION" ] || exec bash "$0" "$@"
result=$1
[ -n "$result" ] || { echo "usage: $0 RESULT_FILE" >&2; exit 2; }

n=0
stop=
trap 'stop=1' TERM
words=(alpha beta gamma delta)
text=$(printf 'x%.0s' {1..4000})
start=$SECONDS

while [ -z "$stop" ]; do
	n=$((n + 1))
	if [ "$n" = 1 ]; then
		: >"$result.ready" # from inside the loop: a SIGTERM right after it still finds n > 0
		echo ready
	fi
	sleep 0.1
done

fail=
elapsed=$((SECONDS - start))
[ "$n" -gt 0 ] || fail="$fail; the loop never ran"
# n sleeps of 0.1 s cannot take less than n/10 seconds
[ "$n" -le $(((elapsed + 1) * 10 + 10)) ] || fail="$fail; counter $n is too high for $elapsed s"
[ "${words[*]}" = "alpha beta gamma delta" ] || fail="$fail; array is '${words[*]}'"
[ "${#text}" -eq 4000 ] || fail="$fail; string has ${#text} characters"
[ "$BASHPID" = "$$" ] || fail="$fail; BASHPID $BASHPID differs from \$\$ $$"
echo "counter $n after $elapsed s"
if [ -z "$fail" ]; then
	echo PASS >"$result"
	echo PASS
	exit 0
fi
echo "FAIL: ${fail#; }" >"$result"
echo "FAIL: ${fail#; }"
exit 1
