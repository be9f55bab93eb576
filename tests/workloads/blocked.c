/*
 * blocked: sits in one blocking system call while it is checkpointed and
 * restored, and checks that the call behaved as if nothing had happened:
 * timed waits never end early, only SIGTERM ends a wait early, and the
 * signal mask in force afterwards is the one from before.
 *
 *   bin/blocked RESULT_FILE MODE [eintr-ok] [ms=N]
 *
 * Modes (the restart path the kernel takes when the call is interrupted):
 *   nanosleep        nanosleep(N ms) in a loop                 restart_block
 *   clock_nanosleep  absolute CLOCK_MONOTONIC deadlines        restart (ERESTARTNOHAND)
 *   poll             poll(NULL, 0, N ms)                       restart_block
 *   ppoll            ppoll with a timeout and a signal mask    restart, updates the timeout
 *   select           select(0, ..., timeout)                   restart, updates the timeout
 *   pause            pause()                                   restart
 *   sigsuspend       sigsuspend with a different mask          restart, saved mask
 *   futex            FUTEX_WAIT with an N ms timeout           restart_block
 *   futex-inf        FUTEX_WAIT without a timeout              restart (ERESTARTSYS)
 *   epoll            epoll_wait on an empty pipe, N ms         EINTR (Linux shows it after stops)
 *   pipe-read        read() on a pipe that SIGALRM fills       restart (ERESTARTSYS, SA_RESTART)
 *
 * Except epoll_wait, the kernel restarts every one of these transparently
 * after a ptrace stop. A restorer cannot rebuild the kernel's restart_block
 * (nanosleep can be re-issued from its `rem`, the others not), so, like CRIU,
 * it may turn those calls into EINTR: pass "eintr-ok" to accept an EINTR that
 * no signal caused in the restart_block modes (the program then sleeps the
 * rest of its time). Any other early return is a failure. N defaults to 3000.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum restart { RESTARTS, RESTART_BLOCK, SHOWS_EINTR };

static int64_t duration_ns = 3000 * 1000000LL;
static int eintr_ok;
static long completed, spurious;
static int64_t worst_late_ns;
static sigset_t normal_mask;

static sigjmp_buf term_jump;
static volatile sig_atomic_t jump_armed;

/* SIGTERM for the calls that never time out: leave them without a race. */
static void on_term_jump(int sig)
{
	(void)sig;
	wl_stop = 1;
	if (jump_armed) {
		jump_armed = 0;
		siglongjmp(term_jump, 1);
	}
}

static void use_jump_handler(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term_jump;
	if (sigaction(SIGTERM, &sa, NULL))
		wl_die("sigaction");
}

/* An EINTR that no signal of ours explains. */
static void unexplained_eintr(const char *call, enum restart how)
{
	spurious++;
	if (how == SHOWS_EINTR || (how == RESTART_BLOCK && eintr_ok))
		wl_log("%s: EINTR without a signal (accepted)", call);
	else
		wl_fail("%s returned EINTR without a signal", call);
}

static void finished_on_time(const char *call, int64_t deadline)
{
	int64_t now = wl_now_ns();

	if (now < deadline) {
		wl_fail("%s returned %.3f ms early", call, (deadline - now) / 1e6);
		return;
	}
	completed++;
	if (now - deadline > worst_late_ns)
		worst_late_ns = now - deadline;
}

static void near_remaining(const char *call, int64_t reported_ns, int64_t deadline)
{
	int64_t left = deadline - wl_now_ns();

	if (left < 0)
		left = 0;
	WL_CHECK(reported_ns <= left + 100000000 && reported_ns + 100000000 >= left,
		 "%s reported %.3f ms left, the deadline is %.3f ms away", call, reported_ns / 1e6, left / 1e6);
}

static struct timespec ts_of(int64_t ns)
{
	return (struct timespec){ ns / 1000000000, ns % 1000000000 };
}

static int64_t ns_of(struct timespec ts)
{
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Milliseconds, rounded up, until the deadline. */
static int ms_left(int64_t deadline)
{
	int64_t left = deadline - wl_now_ns();

	return left <= 0 ? 0 : (int)((left + 999999) / 1000000);
}

/*
 * Runs timed waits of duration_ns until SIGTERM. wait_once(deadline) makes one
 * call and returns 1 when it timed out, 0 on EINTR (errno set), -1 on anything
 * else (it has reported it).
 */
static void timed_waits(const char *call, enum restart how, int (*wait_once)(int64_t deadline))
{
	while (!wl_stop) {
		int64_t deadline = wl_now_ns() + duration_ns;

		for (;;) {
			int r = wait_once(deadline);

			if (r == 1) {
				finished_on_time(call, deadline);
				break;
			}
			if (r < 0)
				return;
			if (wl_stop)
				return;
			unexplained_eintr(call, how);
		}
	}
}

static int wait_nanosleep(int64_t deadline)
{
	int64_t left = deadline - wl_now_ns();
	struct timespec req = ts_of(left > 0 ? left : 0), rem = { -1, -1 };

	if (syscall(SYS_nanosleep, &req, &rem) == 0)
		return 1;
	if (errno != EINTR) {
		wl_fail("nanosleep: %s", strerror(errno));
		return -1;
	}
	WL_CHECK(rem.tv_sec >= 0 && ns_of(rem) <= ns_of(req), "nanosleep: remaining time %ld.%09ld of %ld.%09ld",
		 rem.tv_sec, rem.tv_nsec, req.tv_sec, req.tv_nsec);
	if (wl_stop)
		near_remaining("nanosleep", ns_of(rem), deadline);
	return 0;
}

static int wait_clock_nanosleep(int64_t deadline)
{
	struct timespec at = ts_of(deadline);

	if (syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == 0)
		return 1;
	if (errno == EINTR)
		return 0;
	wl_fail("clock_nanosleep: %s", strerror(errno));
	return -1;
}

static int wait_poll(int64_t deadline)
{
	long r = syscall(SYS_poll, NULL, 0, ms_left(deadline));

	if (r == 0)
		return 1;
	if (r < 0 && errno == EINTR)
		return 0;
	wl_fail("poll returned %ld: %s", r, strerror(errno));
	return -1;
}

static int wait_ppoll(int64_t deadline)
{
	int64_t left = deadline - wl_now_ns() > 0 ? deadline - wl_now_ns() : 0;
	struct timespec ts = ts_of(left);
	sigset_t during;
	long r;

	/* during the call SIGTERM is let through and SIGUSR1 blocked instead */
	sigemptyset(&during);
	sigaddset(&during, SIGUSR1);
	r = syscall(SYS_ppoll, NULL, 0, &ts, &during, 8);
	if (r == 0)
		return 1;
	if (r < 0 && errno == EINTR) {
		/* the kernel moves the deadline by the time spent stopped, so only an upper bound holds */
		WL_CHECK(ns_of(ts) <= left, "ppoll: %.3f ms left of %.3f", ns_of(ts) / 1e6, left / 1e6);
		return 0;
	}
	wl_fail("ppoll returned %ld: %s", r, strerror(errno));
	return -1;
}

static int wait_select(int64_t deadline)
{
	int64_t left = deadline - wl_now_ns();
	struct timeval tv;
	long r;

	if (left < 0)
		left = 0;
	left = (left + 999) / 1000; /* microseconds, rounded up */
	tv.tv_sec = left / 1000000;
	tv.tv_usec = left % 1000000;
	r = syscall(SYS_select, 0, NULL, NULL, NULL, &tv);
	if (r == 0)
		return 1;
	if (r < 0 && errno == EINTR) {
		WL_CHECK(tv.tv_sec * 1000000LL + tv.tv_usec <= left, "select: %lld us left of %lld",
			 (long long)(tv.tv_sec * 1000000LL + tv.tv_usec), (long long)left);
		return 0;
	}
	wl_fail("select returned %ld: %s", r, strerror(errno));
	return -1;
}

static uint32_t futex_word;

static int wait_futex(int64_t deadline)
{
	int64_t left = deadline - wl_now_ns();
	struct timespec rel = ts_of(left > 0 ? left : 0);
	long r = syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, &rel, NULL, 0);

	if (r < 0 && errno == ETIMEDOUT)
		return 1;
	if (r < 0 && errno == EINTR)
		return 0;
	wl_fail("futex wait returned %ld: %s", r, r < 0 ? strerror(errno) : "woken though nobody wakes it");
	return -1;
}

static int epoll_fd = -1, epoll_pipe[2] = { -1, -1 };
#define EPOLL_COOKIE 0x5eed5eed12345678ull

static int wait_epoll(int64_t deadline)
{
	struct epoll_event ev[4];
	long r = syscall(SYS_epoll_wait, epoll_fd, ev, 4, ms_left(deadline));

	if (r == 0)
		return 1;
	if (r < 0 && errno == EINTR)
		return 0;
	wl_fail("epoll_wait returned %ld: %s", r, r < 0 ? strerror(errno) : "an event on an empty pipe");
	return -1;
}

static void setup_epoll(void)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = EPOLL_COOKIE };

	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0 || pipe2(epoll_pipe, O_CLOEXEC) || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, epoll_pipe[0], &ev))
		wl_die("epoll setup");
}

static void check_epoll(void)
{
	struct epoll_event ev[4];
	long n;

	/* the registration survived: a byte in the pipe is reported with its cookie */
	if (write(epoll_pipe[1], "x", 1) != 1)
		wl_fail("write to the epoll pipe: %s", strerror(errno));
	n = syscall(SYS_epoll_wait, epoll_fd, ev, 4, 1000);
	WL_CHECK(n == 1 && ev[0].events == EPOLLIN && ev[0].data.u64 == EPOLL_COOKIE,
		 "epoll: %ld events after a write (events %#x data %#llx)", n, n > 0 ? ev[0].events : 0,
		 n > 0 ? (unsigned long long)ev[0].data.u64 : 0ull);
}

static void run_pause(void)
{
	use_jump_handler();
	if (sigsetjmp(term_jump, 1) == 0) {
		jump_armed = 1;
		for (;;) {
			long r = syscall(SYS_pause);

			wl_fail("pause returned %ld (%s) without SIGTERM", r, strerror(errno));
			wl_wait();
		}
	}
}

static void run_futex_forever(void)
{
	use_jump_handler();
	if (sigsetjmp(term_jump, 1) == 0) {
		jump_armed = 1;
		for (;;) {
			long r = syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);

			if (r < 0 && errno == EINTR)
				unexplained_eintr("futex wait", RESTARTS);
			else
				wl_fail("futex wait returned %ld: %s", r, r < 0 ? strerror(errno) : "woken");
		}
	}
}

static void run_sigsuspend(void)
{
	sigset_t during;

	/* normal_mask has SIGTERM blocked; it is let through only inside the call */
	sigemptyset(&during);
	sigaddset(&during, SIGUSR1);
	sigaddset(&during, SIGRTMIN + 3);
	while (!wl_stop) {
		long r = syscall(SYS_rt_sigsuspend, &during, 8);

		if (r != -1 || errno != EINTR)
			wl_fail("sigsuspend returned %ld: %s", r, strerror(errno));
		else if (!wl_stop)
			unexplained_eintr("sigsuspend", RESTARTS);
	}
}

static int alarm_pipe[2] = { -1, -1 };
static volatile unsigned char written;
static volatile long alarm_write_errors;

static void on_alarm(int sig)
{
	unsigned char b = written;

	(void)sig;
	if (write(alarm_pipe[1], &b, 1) == 1)
		written = b + 1;
	else
		alarm_write_errors++;
}

static void run_pipe_read(void)
{
	struct sigaction sa;
	struct itimerval every = { { 0, 300000 }, { 0, 300000 } }, off = { { 0, 0 }, { 0, 0 } };
	unsigned char next = 0, c;
	long got = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	if (pipe2(alarm_pipe, O_CLOEXEC) || sigaction(SIGALRM, &sa, NULL) || setitimer(ITIMER_REAL, &every, NULL))
		wl_die("pipe-read setup");
	while (!wl_stop || got == 0) { /* at least one byte must come through, even after SIGTERM */
		ssize_t n = read(alarm_pipe[0], &c, 1);

		if (n == 1) {
			if (c != next) {
				wl_fail("read byte %u from the pipe, expected %u", c, next);
				next = c;
			}
			next++;
			got++;
		} else if (n < 0 && errno == EINTR) {
			if (!wl_stop)
				unexplained_eintr("read", RESTARTS);
		} else {
			wl_fail("read returned %zd: %s", n, n < 0 ? strerror(errno) : "end of file");
			break;
		}
	}
	setitimer(ITIMER_REAL, &off, NULL);
	/* what the last alarms wrote is still in the pipe, in order */
	fcntl(alarm_pipe[0], F_SETFL, O_NONBLOCK);
	while (read(alarm_pipe[0], &c, 1) == 1) {
		WL_CHECK(c == next, "byte %u left in the pipe, expected %u", c, next);
		next = c + 1;
		got++;
	}
	WL_CHECK(next == written, "read up to byte %u, the alarm wrote up to %u", next, written);
	WL_CHECK(alarm_write_errors == 0, "%ld writes into the pipe failed", alarm_write_errors);
	WL_CHECK(got > 0, "no byte was ever read");
	wl_log("pipe-read: %ld bytes read", got);
}

int main(int argc, char **argv)
{
	const char *mode;
	sigset_t now;

	wl_init(argc, argv);
	if (argc < 3)
		wl_die("usage: blocked RESULT_FILE MODE [eintr-ok] [ms=N]");
	mode = argv[2];
	for (int i = 3; i < argc; i++) {
		if (strcmp(argv[i], "eintr-ok") == 0)
			eintr_ok = 1;
		else if (strncmp(argv[i], "ms=", 3) == 0 && atol(argv[i] + 3) > 0)
			duration_ns = atol(argv[i] + 3) * 1000000LL;
		else
			wl_die("unknown argument %s", argv[i]);
	}

	/* a mask of our own, which must be in force again after every call */
	sigemptyset(&normal_mask);
	sigaddset(&normal_mask, SIGUSR2);
	sigaddset(&normal_mask, SIGRTMIN + 1);
	if (strcmp(mode, "sigsuspend") == 0 || strcmp(mode, "ppoll") == 0)
		sigaddset(&normal_mask, SIGTERM); /* only the call lets it in: no race */
	if (sigprocmask(SIG_SETMASK, &normal_mask, NULL))
		wl_die("sigprocmask");
	if (strcmp(mode, "epoll") == 0)
		setup_epoll();

	wl_ready();
	if (strcmp(mode, "nanosleep") == 0)
		timed_waits("nanosleep", RESTART_BLOCK, wait_nanosleep);
	else if (strcmp(mode, "clock_nanosleep") == 0)
		timed_waits("clock_nanosleep", RESTARTS, wait_clock_nanosleep);
	else if (strcmp(mode, "poll") == 0)
		timed_waits("poll", RESTART_BLOCK, wait_poll);
	else if (strcmp(mode, "ppoll") == 0)
		timed_waits("ppoll", RESTARTS, wait_ppoll);
	else if (strcmp(mode, "select") == 0)
		timed_waits("select", RESTARTS, wait_select);
	else if (strcmp(mode, "futex") == 0)
		timed_waits("futex wait", RESTART_BLOCK, wait_futex);
	else if (strcmp(mode, "epoll") == 0)
		timed_waits("epoll_wait", SHOWS_EINTR, wait_epoll);
	else if (strcmp(mode, "pause") == 0)
		run_pause();
	else if (strcmp(mode, "sigsuspend") == 0)
		run_sigsuspend();
	else if (strcmp(mode, "futex-inf") == 0)
		run_futex_forever();
	else if (strcmp(mode, "pipe-read") == 0)
		run_pipe_read();
	else
		wl_die("unknown mode %s", mode);
	/* after a failure, still wait for SIGTERM (which some modes keep blocked outside the call) */
	sigprocmask(SIG_BLOCK, NULL, &now);
	sigdelset(&now, SIGTERM);
	while (!wl_stop)
		sigsuspend(&now);

	sigprocmask(SIG_BLOCK, NULL, &now);
	for (int s = 1; s < 65; s++)
		WL_CHECK(sigismember(&now, s) == sigismember(&normal_mask, s), "signal %d %s blocked after the call",
			 s, sigismember(&now, s) ? "is" : "is not");
	if (epoll_fd >= 0)
		check_epoll();
	wl_log("%s: %ld waits completed, %ld unexplained EINTR, latest wake-up %.3f ms after its deadline", mode,
	       completed, spurious, worst_late_ns / 1e6);
	wl_finish();
}
