/*
 * signals: the signal state of a task. Blocked mask, handlers with flags,
 * sa_mask and restorer, an alternate stack, pending signals (a standard one
 * sent to the process, one sent to the thread, queued realtime signals with
 * values, both process- and thread-directed), the three itimers and two POSIX
 * timers (one armed far in the future, one ticking every 50 ms). After the
 * wait all of it is read back, then the pending signals are unblocked and
 * must arrive with their original siginfo.
 */
#include "lib.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define TICK_NS (50 * 1000 * 1000L)
#define MAX_SEEN 32

/* What rt_sigaction reads back on x86_64. */
struct ksigaction {
	void *handler;
	unsigned long flags;
	void *restorer;
	uint64_t mask;
};

struct handled {
	int sig;
	void *handler;
	int flags;
	int extra_mask; /* one signal in sa_mask, or 0 */
	struct ksigaction installed;
};

struct seen {
	int sig, code, pid, uid, value;
	int on_altstack, self_blocked, extra_blocked;
};

static void on_info(int sig, siginfo_t *si, void *uc);
static void on_plain(int sig);
static void on_unexpected(int sig);
static void on_tick(int sig, siginfo_t *si, void *uc);

static struct handled handled[] = {
	{ SIGUSR1, on_info, SA_SIGINFO | SA_RESTART, SIGURG, { 0 } },
	{ SIGUSR2, on_info, SA_SIGINFO | SA_ONSTACK | SA_NODEFER, 0, { 0 } },
	{ 0 /* SIGRTMIN+2 */, on_info, SA_SIGINFO, SIGTTIN, { 0 } },
	{ 0 /* SIGRTMAX-1 */, on_info, SA_SIGINFO | SA_RESTART, 0, { 0 } },
	{ SIGHUP, on_plain, SA_RESETHAND, 0, { 0 } },
	{ SIGPIPE, SIG_IGN, 0, 0, { 0 } },
	{ SIGCHLD, SIG_IGN, SA_NOCLDSTOP, 0, { 0 } },
	{ SIGALRM, on_unexpected, SA_RESTART, 0, { 0 } },
	{ SIGVTALRM, on_unexpected, SA_RESTART, 0, { 0 } },
	{ SIGPROF, on_unexpected, SA_RESTART, 0, { 0 } },
	{ 0 /* SIGRTMIN+5 */, on_unexpected, SA_RESTART, 0, { 0 } },
	{ 0 /* SIGRTMIN+4 */, on_tick, SA_SIGINFO | SA_RESTART, 0, { 0 } },
};
#define NHANDLED (sizeof(handled) / sizeof(handled[0]))

static struct seen seen[MAX_SEEN];
static volatile int nseen, hup_count, unexpected_sig;
static volatile long ticks, tick_events, tick_bad_info;
static stack_t altstack;
static sigset_t blocked;
static timer_t timer_far, timer_tick;
static int64_t tick_armed_at;
static char timers_before[4096];
static struct itimerval itimers[3] = {
	{ { 2000, 0 }, { 1000, 0 } }, /* ITIMER_REAL: interval, value */
	{ { 1800, 0 }, { 900, 250000 } },
	{ { 1600, 0 }, { 800, 0 } },
};

static void on_info(int sig, siginfo_t *si, void *ucv)
{
	sigset_t now;
	char probe;

	(void)ucv;
	if (nseen >= MAX_SEEN)
		return;
	sigprocmask(SIG_BLOCK, NULL, &now);
	seen[nseen] = (struct seen){
		.sig = sig,
		.code = si->si_code,
		.pid = si->si_pid,
		.uid = (int)si->si_uid,
		.value = si->si_value.sival_int,
		.on_altstack = (char *)&probe >= (char *)altstack.ss_sp &&
			       (char *)&probe < (char *)altstack.ss_sp + altstack.ss_size,
		.self_blocked = sigismember(&now, sig),
		.extra_blocked = sigismember(&now, SIGURG) + 2 * sigismember(&now, SIGTTIN),
	};
	nseen++;
}

static void on_plain(int sig)
{
	(void)sig;
	hup_count++;
}

static void on_unexpected(int sig)
{
	unexpected_sig = sig;
}

static void on_tick(int sig, siginfo_t *si, void *ucv)
{
	(void)sig;
	(void)ucv;
	tick_events++;
	ticks += 1 + si->si_overrun;
	if (si->si_code != SI_TIMER || si->si_value.sival_int != 0x7e57 ||
	    si->si_timerid != (int)(intptr_t)timer_tick)
		tick_bad_info++;
}

static int ksigaction_get(int sig, struct ksigaction *k)
{
	return (int)syscall(SYS_rt_sigaction, sig, NULL, k, 8);
}

static void install_handlers(void)
{
	handled[2].sig = SIGRTMIN + 2;
	handled[3].sig = SIGRTMAX - 1;
	handled[10].sig = SIGRTMIN + 5;
	handled[11].sig = SIGRTMIN + 4;
	for (size_t i = 0; i < NHANDLED; i++) {
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		if (handled[i].flags & SA_SIGINFO)
			sa.sa_sigaction = (void (*)(int, siginfo_t *, void *))handled[i].handler;
		else
			sa.sa_handler = (void (*)(int))handled[i].handler;
		sa.sa_flags = handled[i].flags;
		sigemptyset(&sa.sa_mask);
		if (handled[i].extra_mask)
			sigaddset(&sa.sa_mask, handled[i].extra_mask);
		if (sigaction(handled[i].sig, &sa, NULL) || ksigaction_get(handled[i].sig, &handled[i].installed))
			wl_die("sigaction %d", handled[i].sig);
	}
}

static void check_handlers(void)
{
	for (size_t i = 0; i < NHANDLED; i++) {
		struct handled *h = &handled[i];
		struct ksigaction now;
		uint64_t want_mask = h->extra_mask ? 1ull << (h->extra_mask - 1) : 0;

		if (ksigaction_get(h->sig, &now)) {
			wl_fail("rt_sigaction(%d) read-back failed", h->sig);
			continue;
		}
		WL_CHECK(now.handler == h->handler, "signal %d: handler %p, expected %p", h->sig, now.handler,
			 h->handler);
		WL_CHECK((now.flags & (unsigned int)h->flags) == (unsigned int)h->flags &&
				 now.flags == h->installed.flags,
			 "signal %d: sa_flags %#lx, expected %#lx", h->sig, now.flags, h->installed.flags);
		WL_CHECK(now.restorer == h->installed.restorer, "signal %d: sa_restorer %p, expected %p", h->sig,
			 now.restorer, h->installed.restorer);
		WL_CHECK(now.mask == want_mask, "signal %d: sa_mask %#llx, expected %#llx", h->sig,
			 (unsigned long long)now.mask, (unsigned long long)want_mask);
	}
}

/* The hex mask after "Name:\t" in /proc/self/status. */
static uint64_t status_mask(const char *name)
{
	char status[8192], key[32], *at;

	if (wl_read_file("/proc/self/status", status, sizeof(status)) < 0)
		return ~0ull;
	snprintf(key, sizeof(key), "\n%s:", name);
	at = strstr(status, key);
	return at ? strtoull(at + strlen(key), NULL, 16) : ~0ull;
}

static uint64_t bit(int sig)
{
	return 1ull << (sig - 1);
}

static void send_pending(void)
{
	siginfo_t si;
	union sigval v;

	if (kill(getpid(), SIGUSR1) || syscall(SYS_tgkill, getpid(), gettid(), SIGUSR2))
		wl_die("kill");
	v.sival_int = 0x1234abcd;
	if (sigqueue(getpid(), SIGRTMIN + 2, v))
		wl_die("sigqueue");
	v.sival_int = 0x5678;
	if (sigqueue(getpid(), SIGRTMIN + 2, v))
		wl_die("sigqueue");
	memset(&si, 0, sizeof(si));
	si.si_signo = SIGRTMAX - 1;
	si.si_code = SI_QUEUE;
	si.si_pid = getpid();
	si.si_uid = getuid();
	si.si_value.sival_int = 0x77;
	if (syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), SIGRTMAX - 1, &si))
		wl_die("rt_tgsigqueueinfo");
}

static void check_pending(void)
{
	uint64_t shared = bit(SIGUSR1) | bit(SIGRTMIN + 2), private = bit(SIGUSR2) | bit(SIGRTMAX - 1);
	uint64_t shd = status_mask("ShdPnd"), sig = status_mask("SigPnd");
	sigset_t pend;

	sigpending(&pend);
	for (int s = 1; s < 65; s++)
		WL_CHECK(sigismember(&pend, s) == !!((shared | private) & bit(s)), "signal %d %s pending", s,
			 sigismember(&pend, s) ? "is" : "is not");
	WL_CHECK(shd == shared, "ShdPnd %#llx, expected %#llx", (unsigned long long)shd, (unsigned long long)shared);
	WL_CHECK(sig == private, "SigPnd %#llx, expected %#llx", (unsigned long long)sig,
		 (unsigned long long)private);
}

static struct seen *find_seen(int sig, int nth)
{
	for (int i = 0; i < nseen; i++)
		if (seen[i].sig == sig && nth-- == 0)
			return &seen[i];
	return NULL;
}

static void check_delivery(int sig, int nth, int code, int value, int extra)
{
	struct seen *s = find_seen(sig, nth);

	if (!s) {
		wl_fail("signal %d (#%d) was not delivered", sig, nth + 1);
		return;
	}
	WL_CHECK(s->code == code, "signal %d: si_code %d, expected %d", sig, s->code, code);
	WL_CHECK(s->pid == getpid() && s->uid == (int)getuid(), "signal %d: si_pid %d si_uid %d", sig, s->pid,
		 s->uid);
	if (code == SI_QUEUE)
		WL_CHECK(s->value == value, "signal %d: si_value %#x, expected %#x", sig, s->value, value);
	WL_CHECK(s->on_altstack == (sig == SIGUSR2), "signal %d: handler %s on the alternate stack", sig,
		 s->on_altstack ? "ran" : "did not run");
	WL_CHECK(s->self_blocked == (sig != SIGUSR2), "signal %d: %s blocked in its own handler", sig,
		 s->self_blocked ? "was" : "was not");
	WL_CHECK(s->extra_blocked == extra, "signal %d: sa_mask in the handler gave %d, expected %d", sig,
		 s->extra_blocked, extra);
}

static void check_itimers(int64_t elapsed_ns)
{
	static const char *names[] = { "ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF" };

	for (int w = 0; w < 3; w++) {
		struct itimerval now;
		int64_t want = itimers[w].it_value.tv_sec * 1000000LL + itimers[w].it_value.tv_usec, got;
		/* REAL counts wall time, the others CPU time, which a restore may reset */
		int64_t low = w == 0 ? want - elapsed_ns / 1000 - 1000000 : want - 60000000;

		getitimer(w, &now);
		got = now.it_value.tv_sec * 1000000LL + now.it_value.tv_usec;
		WL_CHECK(now.it_interval.tv_sec == itimers[w].it_interval.tv_sec &&
				 now.it_interval.tv_usec == itimers[w].it_interval.tv_usec,
			 "%s: interval %ld.%06ld, expected %ld.%06ld", names[w], now.it_interval.tv_sec,
			 now.it_interval.tv_usec, itimers[w].it_interval.tv_sec, itimers[w].it_interval.tv_usec);
		WL_CHECK(got > 0 && got >= low && got <= want + 20000, "%s: %lld us left, expected %lld..%lld",
			 names[w], (long long)got, (long long)low, (long long)want);
	}
}

static void setup_timers(void)
{
	struct sigevent ev;
	struct itimerspec far = { { 3000, 0 }, { 2000, 0 } }, tick = { { 0, TICK_NS }, { 0, TICK_NS } };
	timer_t dummy;

	for (int w = 0; w < 3; w++)
		if (setitimer(w, &itimers[w], NULL))
			wl_die("setitimer %d", w);

	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGRTMIN + 5;
	ev.sigev_value.sival_ptr = &timer_far;
	/* a deleted timer first, so that the ids have a gap */
	if (timer_create(CLOCK_REALTIME, &ev, &dummy) || timer_create(CLOCK_MONOTONIC, &ev, &timer_far) ||
	    timer_delete(dummy) || timer_settime(timer_far, 0, &far, NULL))
		wl_die("timer_create (far)");

	ev.sigev_signo = SIGRTMIN + 4;
	ev.sigev_value.sival_ptr = (void *)(intptr_t)0x7e57;
	if (timer_create(CLOCK_BOOTTIME, &ev, &timer_tick))
		wl_die("timer_create (tick)");
	tick_armed_at = wl_now_ns();
	if (timer_settime(timer_tick, 0, &tick, NULL))
		wl_die("timer_settime (tick)");
	while (ticks == 0)
		pause();

	if (wl_read_file("/proc/self/timers", timers_before, sizeof(timers_before)) <= 0)
		wl_die("read /proc/self/timers");
}

static void check_timers(void)
{
	char timers_now[sizeof(timers_before)];
	struct itimerspec now = { { 0, 0 }, { 0, 0 } };
	int64_t since = wl_now_ns() - tick_armed_at, wait_until;
	long seen_ticks = ticks;

	WL_CHECK(timer_gettime(timer_far, &now) == 0, "timer_gettime: %s", strerror(errno));
	WL_CHECK(now.it_interval.tv_sec == 3000 && now.it_interval.tv_nsec == 0, "far timer: interval %ld.%09ld",
		 now.it_interval.tv_sec, now.it_interval.tv_nsec);
	WL_CHECK(now.it_value.tv_sec < 2000 && (now.it_value.tv_sec > 0 || now.it_value.tv_nsec > 0) &&
			 now.it_value.tv_sec >= 2000 - since / 1000000000 - 2,
		 "far timer: %ld.%09ld s left", now.it_value.tv_sec, now.it_value.tv_nsec);

	wl_read_file("/proc/self/timers", timers_now, sizeof(timers_now));
	WL_CHECK(strcmp(timers_now, timers_before) == 0, "/proc/self/timers changed: was [%s] now [%s]",
		 timers_before, timers_now);

	/* the 50 ms timer still ticks, and never faster than its period allows */
	wait_until = wl_now_ns() + 20 * TICK_NS;
	while (ticks == seen_ticks && wl_now_ns() < wait_until)
		usleep(5000);
	WL_CHECK(ticks > seen_ticks, "tick timer: no expiry within %ld ms", 20 * TICK_NS / 1000000);
	since = wl_now_ns() - tick_armed_at;
	WL_CHECK(ticks <= since / TICK_NS + 2, "tick timer: %ld expiries in %lld ms", ticks,
		 (long long)(since / 1000000));
	WL_CHECK(tick_bad_info == 0, "tick timer: %ld signals with a wrong siginfo", tick_bad_info);
	wl_log("tick timer: %ld expiries in %ld signals over %lld ms", ticks, tick_events,
	       (long long)(since / 1000000));
}

int main(int argc, char **argv)
{
	int64_t start;
	sigset_t now, to_release;
	stack_t ss;

	wl_init(argc, argv);
	start = wl_now_ns();

	altstack.ss_size = 64 * 1024;
	altstack.ss_sp = malloc(altstack.ss_size);
	if (altstack.ss_sp == NULL || sigaltstack(&altstack, NULL))
		wl_die("sigaltstack");
	install_handlers();

	sigemptyset(&blocked);
	sigaddset(&blocked, SIGUSR1);
	sigaddset(&blocked, SIGUSR2);
	sigaddset(&blocked, SIGRTMIN + 2);
	sigaddset(&blocked, SIGRTMAX - 1);
	sigaddset(&blocked, SIGWINCH);
	sigaddset(&blocked, SIGQUIT);
	sigaddset(&blocked, SIGRTMIN + 10);
	if (sigprocmask(SIG_SETMASK, &blocked, NULL))
		wl_die("sigprocmask");

	send_pending();
	setup_timers();
	wl_ready();
	wl_wait();

	check_handlers();
	sigprocmask(SIG_BLOCK, NULL, &now);
	for (int s = 1; s < 65; s++)
		WL_CHECK(sigismember(&now, s) == sigismember(&blocked, s), "signal %d %s blocked", s,
			 sigismember(&now, s) ? "is" : "is not");
	WL_CHECK(sigaltstack(NULL, &ss) == 0 && ss.ss_sp == altstack.ss_sp && ss.ss_size == altstack.ss_size &&
			 ss.ss_flags == 0,
		 "sigaltstack: sp %p size %zu flags %d", ss.ss_sp, ss.ss_size, ss.ss_flags);
	check_itimers(wl_now_ns() - start);
	check_timers();
	check_pending();

	/* one at a time, so that no handler runs nested in another */
	{
		const int order[] = { SIGUSR1, SIGUSR2, SIGRTMIN + 2, SIGRTMAX - 1 };

		for (int i = 0; i < 4; i++) {
			sigemptyset(&to_release);
			sigaddset(&to_release, order[i]);
			sigprocmask(SIG_UNBLOCK, &to_release, NULL);
		}
	}
	WL_CHECK(nseen == 5, "%d signals delivered after unblocking, expected 5", nseen);
	check_delivery(SIGUSR1, 0, SI_USER, 0, 1);
	check_delivery(SIGUSR2, 0, SI_TKILL, 0, 0);
	check_delivery(SIGRTMIN + 2, 0, SI_QUEUE, 0x1234abcd, 2);
	check_delivery(SIGRTMIN + 2, 1, SI_QUEUE, 0x5678, 2);
	check_delivery(SIGRTMAX - 1, 0, SI_QUEUE, 0x77, 0);
	{
		/* queue order of the two SIGRTMIN+2 */
		struct seen *a = find_seen(SIGRTMIN + 2, 0);

		WL_CHECK(!a || a->value == 0x1234abcd, "SIGRTMIN+2 values arrived out of order");
	}

	raise(SIGHUP); /* SA_RESETHAND: handled once, then back to SIG_DFL */
	{
		struct ksigaction k;

		ksigaction_get(SIGHUP, &k);
		WL_CHECK(hup_count == 1 && k.handler == SIG_DFL, "SIGHUP with SA_RESETHAND: %d calls, handler %p now",
			 hup_count, k.handler);
	}
	WL_CHECK(unexpected_sig == 0, "signal %d arrived although nothing should send it", unexpected_sig);
	wl_finish();
}
