#!/bin/sh
# pipeline: `producer | sed | consumer`, the shape of `sh -c 'a | b | c'`,
# for --shell-job tests (start it on a terminal) and plain dumps alike:
#   sh pipeline.sh RESULT_FILE
# The process the harness starts is this sh; the three stages are its
# children, in its process group and session, joined by two pipes that are
# full most of the time (the producer writes as fast as it can).
#
# The producer prints 1, 2, 3, ...; sed turns each into "line N"; the
# consumer checks that every line is the one after the previous (a line lost
# or repeated across a dump is a FAIL), creates RESULT_FILE.ready once lines
# flow through all three, and on SIGTERM (forwarded by the root sh) writes
# PASS or FAIL into RESULT_FILE, and the number of lines it read into
# RESULT_FILE.count and the log. Then the consumer exits, sed and the
# producer end on the broken pipe, and the root sh reaps all three.
result=$1
[ -n "$result" ] || { echo "usage: $0 RESULT_FILE" >&2; exit 2; }
rm -f "$result" "$result.ready" "$result.count"

produce() {
	i=0
	while i=$((i + 1)); do
		echo "$i" || exit 0
	done
}

consume() {
	stop=
	trap 'stop=1' TERM
	n=0
	fail=
	while [ -z "$stop" ] && IFS= read -r line; do
		n=$((n + 1))
		if [ "$line" != "line $n" ]; then
			fail="line $n is '$line'"
			break
		fi
		[ "$n" = 1 ] && : >"$result.ready"
	done
	# Without SIGTERM the loop ends only on a bad line or EOF: both mean FAIL.
	[ -n "$stop" ] || [ -n "$fail" ] || fail="input ended after $n lines"
	[ "$n" -gt 0 ] || fail="${fail:-no line came}"
	echo "$n" >"$result.count"
	echo "consumer read $n lines"
	if [ -z "$fail" ]; then
		echo PASS >"$result"
	else
		echo "FAIL: $fail" >"$result"
	fi
	echo "$(cat "$result")"
}

stop=
trap 'stop=1' TERM
produce | sed -u 's/^/line /' | consume &
consumer=$!
# `wait` (unlike a foreground pipeline) returns as soon as a trapped signal comes.
while [ -z "$stop" ] && kill -0 "$consumer" 2>/dev/null; do
	wait "$consumer"
done
[ -n "$stop" ] || echo "the consumer ended before SIGTERM"
kill -TERM "$consumer" 2>/dev/null
wait
[ -s "$result" ] || echo "FAIL: the consumer wrote no result" >"$result"
grep -qx PASS "$result"
