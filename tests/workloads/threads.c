/*
 * threads: N threads in one process (the leader is thread 0), each with
 * state that belongs to the thread, not the process, so a dump must take it
 * thread by thread:
 *   - a counter kept twice, in TLS and on the thread's stack, plus a TLS
 *     pointer to the thread's own record (catches fs_base mixed up);
 *   - a blocked-signal mask that encodes the thread's index;
 *   - an alternate signal stack of a size of its own (every other thread
 *     with SS_AUTODISARM), checked by querying it and by taking a signal on it;
 *   - signals pending for that thread alone, sent while blocked: a SIGUSR1 by
 *     tgkill (si_code as this kernel sets it, measured first) and two realtime signals queued with
 *     rt_tgsigqueueinfo (SI_QUEUE, values that name the thread, in order);
 *   - a nice value (setpriority on the tid) and a policy (SCHED_OTHER or
 *     SCHED_BATCH), and a name (pthread_setname_np);
 *   - its tid, which must be unchanged; the leader's tid is the pid.
 * The threads keep counting, with 20 ms sleeps, while they may be dumped.
 * After SIGTERM every thread checks its own state; the leader reports which
 * threads differed and how.
 *
 *   bin/threads RESULT_FILE N        N threads in all (1..2000), leader included
 */
#include "lib.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 2000
#define MASK_BITS 11  /* SIGRTMIN+0..+10 blocked by the bits of index+1: a mask per thread */
#define PEND_BASE 12  /* SIGRTMIN+12..+19: the realtime signal queued to the thread */
#define PEND_KINDS 8
#define ALT_BASE (32 * 1024)
#define STACK_SIZE (256 * 1024)
#define TICK_NS (20 * 1000 * 1000L)
#ifndef SS_AUTODISARM
#define SS_AUTODISARM (1U << 31) /* linux/signal.h; glibc does not export it */
#endif
#define REPORT_MAX 10 /* threads named in the result; the log has all */

enum { SETTING_UP, RUNNING, CHECKED };

struct th {
	int idx;
	pid_t tid;
	stack_t alt;
	atomic_int phase;
	uint64_t final_count;
	char why[300]; /* what differed, empty when nothing did */
};

static struct th *ths;
static int tkill_code; /* si_code this kernel gives tgkill (SI_TKILL, or SI_USER on recent ones) */
static int nthreads;
static atomic_int stop_all;

static __thread struct th *tls_self;
static __thread volatile uint64_t tls_count;
static __thread volatile int tls_unexpected;   /* a signal that should have stayed pending arrived */
static __thread volatile uintptr_t tls_probe_sp; /* where the SIGUSR2 handler's frame was */

static void note(struct th *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct th *t, const char *fmt, ...)
{
	size_t len = strlen(t->why);
	va_list ap;

	if (len + 3 >= sizeof(t->why))
		return;
	if (len)
		len += (size_t)snprintf(t->why + len, sizeof(t->why) - len, "; ");
	va_start(ap, fmt);
	vsnprintf(t->why + len, sizeof(t->why) - len, fmt, ap);
	va_end(ap);
}

static void on_unexpected(int sig)
{
	tls_unexpected = sig;
}

static void on_probe(int sig)
{
	volatile char here;

	(void)sig;
	tls_probe_sp = (uintptr_t)&here;
}

static pid_t my_tid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

static int pend_sig(const struct th *t)
{
	return SIGRTMIN + PEND_BASE + t->idx % PEND_KINDS;
}

static int nice_of(const struct th *t)
{
	return 1 + t->idx % 19;
}

static int policy_of(const struct th *t)
{
	return t->idx % 3 == 2 ? SCHED_BATCH : SCHED_OTHER;
}

static void expected_mask(const struct th *t, sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGUSR1);
	sigaddset(set, pend_sig(t));
	if (t->idx != 0) /* SIGTERM must reach the leader */
		sigaddset(set, SIGTERM);
	for (int b = 0; b < MASK_BITS; b++)
		if ((t->idx + 1) >> b & 1)
			sigaddset(set, SIGRTMIN + b);
}

static int queue_to_self(int sig, int value)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	si.si_signo = sig;
	si.si_code = SI_QUEUE;
	si.si_pid = getpid();
	si.si_uid = getuid();
	si.si_value.sival_int = value;
	return (int)syscall(SYS_rt_tgsigqueueinfo, getpid(), my_tid(), sig, &si);
}

/* Gives the calling thread its state; on failure t->why says what. */
static void setup(struct th *t)
{
	char name[16];
	sigset_t mask;
	int sig = pend_sig(t);
	struct sched_param sp = { 0 };

	tls_self = t;
	t->tid = my_tid();
	expected_mask(t, &mask);
	if (pthread_sigmask(SIG_SETMASK, &mask, NULL) != 0)
		note(t, "pthread_sigmask failed");

	t->alt.ss_size = ALT_BASE + 64 * (size_t)t->idx;
	t->alt.ss_sp = malloc(t->alt.ss_size);
	t->alt.ss_flags = t->idx % 2 ? (int)SS_AUTODISARM : 0;
	if (t->alt.ss_sp == NULL || sigaltstack(&t->alt, NULL) != 0)
		note(t, "sigaltstack: %s", strerror(errno));

	if (syscall(SYS_tgkill, getpid(), t->tid, SIGUSR1) != 0 || queue_to_self(sig, t->idx << 8 | 1) != 0 ||
	    queue_to_self(sig, t->idx << 8 | 2) != 0)
		note(t, "sending pending signals: %s", strerror(errno));

	/* nice first: sched_setscheduler keeps it for SCHED_BATCH */
	if (setpriority(PRIO_PROCESS, (id_t)t->tid, nice_of(t)) != 0 ||
	    sched_setscheduler(t->tid, policy_of(t), &sp) != 0)
		note(t, "nice/policy: %s", strerror(errno));

	snprintf(name, sizeof(name), "wl-%d", t->idx);
	if (pthread_setname_np(pthread_self(), name) != 0)
		note(t, "pthread_setname_np failed");
}

static void check_pending(struct th *t)
{
	const struct timespec now = { 0, 0 };
	int sig = pend_sig(t);
	sigset_t pend, want;
	siginfo_t si;

	sigpending(&pend);
	sigemptyset(&want);
	sigaddset(&want, SIGUSR1);
	sigaddset(&want, sig);
	for (int s = 1; s <= SIGRTMAX; s++)
		if (sigismember(&pend, s) != sigismember(&want, s))
			note(t, "signal %d is %spending", s, sigismember(&pend, s) ? "" : "not ");

	sigemptyset(&want);
	sigaddset(&want, sig);
	for (int k = 1; k <= 2; k++) {
		if (sigtimedwait(&want, &si, &now) != sig) {
			note(t, "queued signal %d #%d is gone", sig, k);
			continue;
		}
		if (si.si_code != SI_QUEUE || si.si_value.sival_int != (t->idx << 8 | k) || si.si_pid != getpid())
			note(t, "queued signal %d #%d: code %d value %#x pid %d, expected %d %#x %d", sig, k,
			     si.si_code, si.si_value.sival_int, si.si_pid, SI_QUEUE, t->idx << 8 | k, getpid());
	}
	sigemptyset(&want);
	sigaddset(&want, SIGUSR1);
	if (sigtimedwait(&want, &si, &now) != SIGUSR1)
		note(t, "tgkill'd SIGUSR1 is gone");
	else if (si.si_code != tkill_code || si.si_pid != getpid())
		note(t, "SIGUSR1: code %d pid %d, expected %d %d", si.si_code, si.si_pid, tkill_code, getpid());

	sigpending(&pend);
	for (int s = 1; s <= SIGRTMAX; s++)
		if (sigismember(&pend, s))
			note(t, "signal %d still pending after taking ours", s);
}

/* The calling thread compares its state with what setup() gave it. */
static void verify(struct th *t, uint64_t on_stack)
{
	char name[16], want_name[16];
	sigset_t cur, want;
	stack_t alt;
	int v;

	if (tls_unexpected)
		note(t, "blocked signal %d was delivered", tls_unexpected);
	if (my_tid() != t->tid)
		note(t, "tid is %d, was %d", my_tid(), t->tid);
	if (t->idx == 0 && getpid() != t->tid)
		note(t, "leader tid %d differs from pid %d", t->tid, getpid());
	if (tls_self != t)
		note(t, "TLS points to thread %d's record", tls_self ? tls_self->idx : -1);
	if (tls_count != on_stack || tls_count == 0)
		note(t, "counter in TLS %llu, on stack %llu", (unsigned long long)tls_count,
		     (unsigned long long)on_stack);
	t->final_count = tls_count;

	pthread_sigmask(SIG_SETMASK, NULL, &cur);
	expected_mask(t, &want);
	for (int s = 1; s <= SIGRTMAX; s++)
		if (sigismember(&cur, s) != sigismember(&want, s))
			note(t, "signal %d is %sblocked", s, sigismember(&cur, s) ? "" : "not ");

	if (sigaltstack(NULL, &alt) != 0 || alt.ss_sp != t->alt.ss_sp || alt.ss_size != t->alt.ss_size ||
	    alt.ss_flags != t->alt.ss_flags)
		note(t, "sigaltstack %p+%zu flags %#x, expected %p+%zu flags %#x", alt.ss_sp, alt.ss_size,
		     alt.ss_flags, t->alt.ss_sp, t->alt.ss_size, t->alt.ss_flags);

	errno = 0;
	v = getpriority(PRIO_PROCESS, (id_t)t->tid);
	if (errno || v != nice_of(t))
		note(t, "nice %d, expected %d", v, nice_of(t));
	v = sched_getscheduler(t->tid);
	if (v != policy_of(t))
		note(t, "policy %d, expected %d", v, policy_of(t));

	snprintf(want_name, sizeof(want_name), "wl-%d", t->idx);
	if (pthread_getname_np(pthread_self(), name, sizeof(name)) != 0 || strcmp(name, want_name) != 0)
		note(t, "name '%s', expected '%s'", name, want_name);

	check_pending(t);

	/* A signal taken now must run on the alternate stack. */
	tls_probe_sp = 0;
	syscall(SYS_tgkill, getpid(), t->tid, SIGUSR2);
	if (tls_probe_sp < (uintptr_t)t->alt.ss_sp || tls_probe_sp >= (uintptr_t)t->alt.ss_sp + t->alt.ss_size)
		note(t, "SIGUSR2 handler ran at %#lx, outside the alternate stack", (unsigned long)tls_probe_sp);
}

/* Counts until told to stop; returns the copy of the counter kept on the stack. */
static uint64_t count_until(volatile int *flag, struct th *t)
{
	const struct timespec tick = { 0, TICK_NS };
	volatile uint64_t on_stack = 0;

	/* At least one count, whatever the flags say: on a loaded machine SIGTERM may come before
	 * the first turn, and a counter that never moved proves nothing either way. */
	do {
		if (tls_count != on_stack) {
			note(t, "counters diverged while running: TLS %llu, stack %llu",
			     (unsigned long long)tls_count, (unsigned long long)on_stack);
			break;
		}
		tls_count++;
		on_stack++;
		nanosleep(&tick, NULL);
	} while (!*flag && !atomic_load(&stop_all));
	return on_stack;
}

static void *worker(void *arg)
{
	struct th *t = arg;
	static volatile int never;
	uint64_t on_stack;

	setup(t);
	atomic_store(&t->phase, RUNNING);
	on_stack = count_until(&never, t);
	while (!atomic_load(&stop_all)) /* after a divergence, still wait */
		usleep(20000);
	verify(t, on_stack);
	atomic_store(&t->phase, CHECKED);
	return NULL;
}

/* Waits until every thread reached `phase`; returns how many did not. */
static int wait_phase(int phase, int seconds)
{
	int64_t end = wl_now_ns() + seconds * 1000000000LL;
	int late;

	do {
		late = 0;
		for (int i = 0; i < nthreads; i++)
			late += atomic_load(&ths[i].phase) < phase;
		if (late == 0 || wl_now_ns() > end)
			return late;
		usleep(10000);
	} while (1);
}

/* /proc/self/task must list exactly our tids. */
static void check_task_list(const char *when)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int seen = 0;

	if (d == NULL)
		wl_die("opendir /proc/self/task");
	while ((e = readdir(d)) != NULL) {
		pid_t tid = (pid_t)atoi(e->d_name);
		int known = 0;

		if (tid <= 0)
			continue;
		seen++;
		for (int i = 0; i < nthreads && !known; i++)
			known = ths[i].tid == tid;
		WL_CHECK(known, "%s: /proc/self/task lists unknown tid %d", when, tid);
	}
	closedir(d);
	WL_CHECK(seen == nthreads, "%s: %d threads in /proc/self/task, expected %d", when, seen, nthreads);
}

/* Turns each thread's notes into failures; `final`: every thread should have checked itself. */
static void report(int final)
{
	int bad = 0;

	for (int i = 0; i < nthreads; i++) {
		struct th *t = &ths[i];

		if (final && atomic_load(&t->phase) != CHECKED)
			snprintf(t->why, sizeof(t->why), "did not finish its checks");
		if (t->why[0] == '\0')
			continue;
		if (bad++ < REPORT_MAX)
			wl_fail("thread %d (tid %d): %s", i, t->tid, t->why);
		else
			wl_log("thread %d (tid %d): %s", i, t->tid, t->why);
	}
	if (bad > REPORT_MAX)
		wl_fail("%d more threads differ (see the log)", bad - REPORT_MAX);
}

static int measure_tkill_code(void)
{
	const struct timespec now = { 0, 0 };
	sigset_t set, old;
	siginfo_t si;

	sigemptyset(&set);
	sigaddset(&set, SIGURG);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	syscall(SYS_tgkill, getpid(), my_tid(), SIGURG);
	if (sigtimedwait(&set, &si, &now) != SIGURG)
		wl_die("tgkill'd SIGURG did not arrive");
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return si.si_code;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	pthread_attr_t attr;
	uint64_t on_stack;
	int late;

	wl_init(argc, argv);
	nthreads = argc > 2 ? atoi(argv[2]) : 0;
	if (nthreads < 1 || nthreads > MAX_THREADS)
		wl_die("usage: threads RESULT_FILE N (1..%d)", MAX_THREADS);
	ths = calloc((size_t)nthreads, sizeof(*ths));
	if (ths == NULL)
		wl_die("calloc");

	/* Blocked signals must not be ignored (they would be dropped), nor kill us if unblocked. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_unexpected;
	sigaction(SIGUSR1, &sa, NULL);
	for (int s = SIGRTMIN; s <= SIGRTMIN + PEND_BASE + PEND_KINDS; s++)
		sigaction(s, &sa, NULL);
	sa.sa_handler = on_probe;
	sa.sa_flags = SA_ONSTACK;
	sigaction(SIGUSR2, &sa, NULL);

	tkill_code = measure_tkill_code();
	for (int i = 0; i < nthreads; i++)
		ths[i].idx = i;
	setup(&ths[0]);
	atomic_store(&ths[0].phase, RUNNING);

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, STACK_SIZE);
	for (int i = 1; i < nthreads; i++) {
		pthread_t h;
		int err = pthread_create(&h, &attr, worker, &ths[i]);

		if (err != 0) {
			errno = err;
			wl_die("pthread_create %d", i);
		}
		pthread_detach(h);
	}
	late = wait_phase(RUNNING, 30);
	if (late)
		wl_die("%d threads did not start", late);
	report(0); /* setup failures */
	if (wl_failures())
		wl_finish();
	check_task_list("at ready");

	wl_ready();
	on_stack = count_until(&wl_stop, &ths[0]);
	wl_wait();
	check_task_list("after the wait"); /* before the workers end */
	atomic_store(&stop_all, 1);

	verify(&ths[0], on_stack);
	atomic_store(&ths[0].phase, CHECKED);
	wait_phase(CHECKED, 20);
	wl_log("%d threads; leader counted %llu, thread %d counted %llu", nthreads,
	       (unsigned long long)ths[0].final_count, nthreads - 1,
	       (unsigned long long)ths[nthreads - 1].final_count);
	report(1);
	wl_finish();
}
