/*
 * timerfd: five timerfds, each checked against its clock after the wait.
 *   fd 5: CLOCK_MONOTONIC, relative, one shot in 1000 s;
 *   fd 6: CLOCK_REALTIME, absolute (TFD_TIMER_ABSTIME), 2000 s from the start, non-blocking;
 *   fd 7: CLOCK_MONOTONIC, first in 50 ms then every 100 ms, non-blocking: the expirations read
 *         over the run must be those the time since arming makes (missed ones count);
 *   fd 8: CLOCK_BOOTTIME, non-blocking, fired once before the dump and not read: one tick pending, disarmed;
 *   fd 9: never armed, FD_CLOEXEC, non-blocking: nothing to read.
 * The time left must be the original deadline minus now, within TOLERANCE either way (a restore
 * must neither push the deadline back nor bring it forward), and the clocks and flags the same.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define TOLERANCE_NS 500000000LL
#define PERIOD_NS 100000000LL
#define FIRST_NS 50000000LL
#define SEC 1000000000LL

static int64_t now(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return ts.tv_sec * SEC + ts.tv_nsec;
}

static struct timespec ts_of(int64_t ns)
{
	struct timespec ts = { ns / SEC, ns % SEC };

	return ts;
}

static void make_at(int fd, clockid_t clock, int flags, int settime, int64_t value, int64_t interval)
{
	struct itimerspec its = { ts_of(interval), ts_of(value) };
	int got = timerfd_create(clock, flags);

	if (got < 0 || dup2(got, fd) != fd)
		wl_die("timerfd at fd %d", fd);
	if (got != fd)
		close(got);
	if ((flags & O_CLOEXEC) && fcntl(fd, F_SETFD, FD_CLOEXEC))
		wl_die("FD_CLOEXEC on fd %d", fd);
	if ((value || interval) && timerfd_settime(fd, settime, &its, NULL))
		wl_die("timerfd_settime fd %d", fd);
}

static void check_info(int fd, int clock, int settime)
{
	char path[64], info[1024], want[64];

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (wl_read_file(path, info, sizeof(info)) < 0) {
		wl_fail("fd %d is gone", fd);
		return;
	}
	snprintf(want, sizeof(want), "clockid: %d\n", clock);
	WL_CHECK(strstr(info, want), "fd %d: not on clock %d: %s", fd, clock, info);
	snprintf(want, sizeof(want), "settime flags: 0%o\n", settime);
	WL_CHECK(strstr(info, want), "fd %d: settime flags not 0%o: %s", fd, settime, info);
}

/* The time left must be `deadline` (on `clock`) minus now, within the tolerance. */
static void check_left(int fd, clockid_t clock, int64_t deadline)
{
	struct itimerspec its;
	int64_t left, want;

	if (timerfd_gettime(fd, &its)) {
		wl_fail("fd %d: timerfd_gettime: %s", fd, strerror(errno));
		return;
	}
	want = deadline - now(clock);
	left = its.it_value.tv_sec * SEC + its.it_value.tv_nsec;
	wl_log("fd %d: %lld ns left, %lld expected", fd, (long long)left, (long long)want);
	WL_CHECK(left > want - TOLERANCE_NS && left < want + TOLERANCE_NS,
		 "fd %d: %lld ms left, expected %lld ms", fd, (long long)(left / 1000000), (long long)(want / 1000000));
	WL_CHECK(its.it_interval.tv_sec == 0 && its.it_interval.tv_nsec == 0, "fd %d got an interval", fd);
}

static uint64_t ticks(int fd)
{
	uint64_t n = 0;

	if (read(fd, &n, sizeof(n)) != sizeof(n))
		return 0;
	return n;
}

int main(int argc, char **argv)
{
	int64_t mono0, real_deadline, periodic0, expected;
	struct itimerspec its;
	uint64_t seen;

	wl_init(argc, argv);
	mono0 = now(CLOCK_MONOTONIC);
	real_deadline = now(CLOCK_REALTIME) + 2000 * SEC;
	make_at(5, CLOCK_MONOTONIC, 0, 0, 1000 * SEC, 0);
	make_at(6, CLOCK_REALTIME, TFD_NONBLOCK, TFD_TIMER_ABSTIME, real_deadline, 0);
	periodic0 = now(CLOCK_MONOTONIC);
	make_at(7, CLOCK_MONOTONIC, TFD_NONBLOCK, 0, FIRST_NS, PERIOD_NS);
	make_at(8, CLOCK_BOOTTIME, TFD_NONBLOCK, 0, 1000000, 0);
	make_at(9, CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC, 0, 0, 0);
	usleep(20000);
	seen = 0;
	wl_ready();
	while (!wl_stop) {
		seen += ticks(7);
		usleep(50000);
	}

	check_info(5, CLOCK_MONOTONIC, 0);
	check_info(6, CLOCK_REALTIME, TFD_TIMER_ABSTIME);
	check_info(7, CLOCK_MONOTONIC, 0);
	check_info(8, CLOCK_BOOTTIME, 0);
	check_info(9, CLOCK_MONOTONIC, 0);
	check_left(5, CLOCK_MONOTONIC, mono0 + 1000 * SEC);
	check_left(6, CLOCK_REALTIME, real_deadline);

	seen += ticks(7);
	expected = (now(CLOCK_MONOTONIC) - periodic0 - FIRST_NS) / PERIOD_NS + 1;
	wl_log("fd 7: %llu expirations, %lld expected", (unsigned long long)seen, (long long)expected);
	WL_CHECK((int64_t)seen > expected - 6 && (int64_t)seen <= expected + 1,
		 "fd 7: %llu expirations, expected %lld", (unsigned long long)seen, (long long)expected);
	WL_CHECK(!timerfd_gettime(7, &its) && its.it_interval.tv_nsec == PERIOD_NS && its.it_interval.tv_sec == 0,
		 "fd 7 lost its interval");

	WL_CHECK(ticks(8) == 1, "fd 8: its pending expiration is gone");
	WL_CHECK(!timerfd_gettime(8, &its) && !its.it_value.tv_sec && !its.it_value.tv_nsec, "fd 8 is armed");
	WL_CHECK(fcntl(6, F_GETFL) & O_NONBLOCK, "fd 6 lost O_NONBLOCK");
	WL_CHECK(!(fcntl(5, F_GETFL) & O_NONBLOCK), "fd 5 became non-blocking");
	WL_CHECK(fcntl(9, F_GETFD) & FD_CLOEXEC, "fd 9 lost FD_CLOEXEC");
	WL_CHECK(read(9, &seen, sizeof(seen)) < 0 && errno == EAGAIN, "fd 9 has expirations");
	WL_CHECK(!timerfd_gettime(9, &its) && !its.it_value.tv_sec && !its.it_value.tv_nsec, "fd 9 is armed");
	wl_finish();
}
