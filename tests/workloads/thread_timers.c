/*
 * thread_timers: POSIX timers that notify a thread, which must keep doing so
 * with the same ids, clocks, intervals and targets after every restore.
 *
 *   T1  SIGEV_THREAD_ID to worker thread W, SIGRTMIN+1, every 20 ms
 *   T2  SIGEV_THREAD (glibc: a helper thread it makes, SIGEV_THREAD_ID with
 *       its own signal): the callback counts, every 20 ms
 *   T3  SIGEV_THREAD_ID to the main thread, SIGRTMIN+2, one shot in 1 hour,
 *       CLOCK_MONOTONIC
 *
 * Every thread takes SIGRTMIN+1 and SIGRTMIN+2 (the handler notes which thread
 * it ran in), so only the timer's own target tells where a signal goes. After
 * SIGTERM: each timer still exists with its interval (timer_gettime), T3 has
 * not fired and has at most an hour left; for 300 ms T1 must tick only in W and
 * T2's callback must run.
 *
 *   bin/thread_timers RESULT_FILE
 */
#include "lib.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PERIOD_NS (20 * 1000 * 1000)

static atomic_int w_tid, t1_in_w, t1_elsewhere, t2_calls, t3_fired;
static timer_t t1, t2, t3;

static void on_signal(int sig)
{
	int tid = (int)syscall(SYS_gettid);

	if (sig == SIGRTMIN + 1) {
		if (tid == atomic_load(&w_tid))
			atomic_fetch_add(&t1_in_w, 1);
		else
			atomic_fetch_add(&t1_elsewhere, 1);
	} else if (sig == SIGRTMIN + 2) {
		atomic_fetch_add(&t3_fired, 1);
	}
}

static void on_t2(union sigval v)
{
	(void)v;
	atomic_fetch_add(&t2_calls, 1);
}

static void *worker(void *arg)
{
	(void)arg;
	atomic_store(&w_tid, (int)syscall(SYS_gettid));
	for (;;)
		pause();
	return NULL;
}

static void make_timer(timer_t *t, clockid_t clock, struct sigevent *ev, long first_ns, long period_ns,
		       const char *what)
{
	struct itimerspec its = { { period_ns / 1000000000, period_ns % 1000000000 },
				  { first_ns / 1000000000, first_ns % 1000000000 } };

	if (timer_create(clock, ev, t))
		wl_die("timer_create %s", what);
	if (timer_settime(*t, 0, &its, NULL))
		wl_die("timer_settime %s", what);
}

static void check_interval(timer_t t, long period_ns, const char *what)
{
	struct itimerspec its;

	if (timer_gettime(t, &its)) {
		wl_fail("%s: timer_gettime: %s", what, strerror(errno));
		return;
	}
	WL_CHECK(its.it_interval.tv_sec * 1000000000L + its.it_interval.tv_nsec == period_ns,
		 "%s: interval %ld.%09ld, expected %ld ns", what, (long)its.it_interval.tv_sec,
		 its.it_interval.tv_nsec, period_ns);
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	struct sigevent ev;
	struct itimerspec its;
	pthread_t w;
	int in_w, calls;

	wl_init(argc, argv);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGRTMIN + 1, &sa, NULL) || sigaction(SIGRTMIN + 2, &sa, NULL))
		wl_die("sigaction");
	if (pthread_create(&w, NULL, worker, NULL))
		wl_die("pthread_create");
	while (!atomic_load(&w_tid))
		usleep(1000);

	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_THREAD_ID;
	ev.sigev_signo = SIGRTMIN + 1;
	ev._sigev_un._tid = atomic_load(&w_tid);
	make_timer(&t1, CLOCK_MONOTONIC, &ev, PERIOD_NS, PERIOD_NS, "T1");

	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_THREAD;
	ev.sigev_notify_function = on_t2;
	make_timer(&t2, CLOCK_MONOTONIC, &ev, PERIOD_NS, PERIOD_NS, "T2");

	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_THREAD_ID;
	ev.sigev_signo = SIGRTMIN + 2;
	ev._sigev_un._tid = getpid();
	make_timer(&t3, CLOCK_MONOTONIC, &ev, 3600L * 1000000000L, 0, "T3");

	/* The first ticks, however loaded the machine is. */
	for (int64_t end = wl_now_ns() + 10LL * 1000 * 1000 * 1000;
	     wl_now_ns() < end && !(atomic_load(&t1_in_w) && atomic_load(&t2_calls));)
		usleep(10 * 1000);
	if (!atomic_load(&t1_in_w) || !atomic_load(&t2_calls))
		wl_die("setup: timers do not tick (T1 %d, T2 %d)", atomic_load(&t1_in_w), atomic_load(&t2_calls));
	wl_ready();
	wl_wait();

	check_interval(t1, PERIOD_NS, "T1");
	check_interval(t2, PERIOD_NS, "T2");
	check_interval(t3, 0, "T3");
	if (timer_gettime(t3, &its) == 0)
		WL_CHECK(its.it_value.tv_sec > 0 && its.it_value.tv_sec <= 3600, "T3: %ld s left, expected up to 3600",
			 (long)its.it_value.tv_sec);
	in_w = atomic_load(&t1_in_w);
	calls = atomic_load(&t2_calls);
	atomic_store(&t1_elsewhere, 0);
	/* At least 300 ms, and until both have ticked (up to 10 s on a loaded machine). */
	for (int64_t start = wl_now_ns(), now = start;
	     now < start + 300LL * 1000 * 1000 ||
	     (now < start + 10LL * 1000 * 1000 * 1000 && !(atomic_load(&t1_in_w) > in_w && atomic_load(&t2_calls) > calls));
	     now = wl_now_ns())
		usleep(10 * 1000); /* cut short by the timers' signals: the clock says when */
	WL_CHECK(atomic_load(&t1_in_w) > in_w, "T1 no longer ticks in thread %d", atomic_load(&w_tid));
	WL_CHECK(atomic_load(&t1_elsewhere) == 0, "T1 ticked %d times in another thread", atomic_load(&t1_elsewhere));
	WL_CHECK(atomic_load(&t2_calls) > calls, "T2's callback no longer runs");
	WL_CHECK(atomic_load(&t3_fired) == 0, "T3 fired %d times", atomic_load(&t3_fired));
	wl_finish();
}
