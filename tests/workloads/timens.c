/*
 * timens: a process in a time namespace of its own, whose monotonic clock runs 100 days and boot-time
 * clock 200 days ahead of the host's. It unshares the namespace (made for its children only), writes
 * the offsets, then enters it itself. After restore it must still be outside the host's namespace,
 * its monotonic clock must not have gone back, and both clocks must still be that far ahead
 * (boot time minus monotonic stays 100 days).
 *   bin/timens RESULT_FILE
 */
#include "lib.h"

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DAY_S (24LL * 3600)
#define MONOTONIC_AHEAD_S (100 * DAY_S)
#define BOOTTIME_AHEAD_S (200 * DAY_S)

static int64_t clock_s(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return ts.tv_sec;
}

static void link_name(const char *path, char *buf, size_t size)
{
	ssize_t n = readlink(path, buf, size - 1);
	buf[n < 0 ? 0 : n] = 0;
}

static int64_t last_monotonic;

static void check_clocks(void)
{
	char own[64], host[64];
	link_name("/proc/self/ns/time", own, sizeof(own));
	link_name("/proc/1/ns/time", host, sizeof(host));
	WL_CHECK(own[0] && strcmp(own, host) != 0, "in the host's time namespace %s", host);

	int64_t mono = clock_s(CLOCK_MONOTONIC), boot = clock_s(CLOCK_BOOTTIME);
	WL_CHECK(mono >= MONOTONIC_AHEAD_S, "monotonic clock at %lld s, not %lld s ahead", (long long)mono,
		 MONOTONIC_AHEAD_S);
	WL_CHECK(mono >= last_monotonic, "monotonic clock went back from %lld s to %lld s",
		 (long long)last_monotonic, (long long)mono);
	int64_t gap = boot - mono - (BOOTTIME_AHEAD_S - MONOTONIC_AHEAD_S);
	WL_CHECK(gap > -60 && gap < 60, "boot time is %lld s ahead of monotonic, expected %lld s",
		 (long long)(boot - mono), BOOTTIME_AHEAD_S - MONOTONIC_AHEAD_S);
	last_monotonic = mono;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (unshare(CLONE_NEWTIME))
		wl_die("unshare(CLONE_NEWTIME)");
	int fd = open("/proc/self/timens_offsets", O_WRONLY);
	char offsets[128];
	int len = snprintf(offsets, sizeof(offsets), "monotonic %lld 0\nboottime %lld 0\n", MONOTONIC_AHEAD_S,
			   BOOTTIME_AHEAD_S);
	if (fd < 0 || write(fd, offsets, len) != len)
		wl_die("writing /proc/self/timens_offsets");
	close(fd);
	fd = open("/proc/self/ns/time_for_children", O_RDONLY);
	if (fd < 0 || setns(fd, CLONE_NEWTIME))
		wl_die("entering the new time namespace");
	close(fd);
	check_clocks();
	wl_ready();
	wl_wait();
	check_clocks();
	wl_finish();
}
