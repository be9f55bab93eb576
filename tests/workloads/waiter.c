/*
 * waiter: a parent that spends the whole wait blocked in waitpid() on its
 * first child (so a dump finds it inside wait4 and a restore must restart
 * the call), with three children that end at different times after it.
 *
 * SIGTERM interrupts that waitpid (its handler jumps out of it: a flag
 * checked before the call would leave a window where the signal is taken
 * just before blocking for good); the parent then sends SIGTERM to the
 * children. Each checks its parent is unchanged, sleeps
 * 100, 200 or 300 ms and ends: c0 exits 11, c1 is killed by SIGUSR1, c2
 * exits 33. So that the order holds even on a loaded machine, c1 also waits
 * for c0 to be dead and c2 for c1. The parent then waits for c0 (blocking),
 * for c2 (blocking), for c1 (WNOHANG: it must already be a zombie), and
 * checks each status, that each took at least its sleep, and that no child
 * is left (ECHILD).
 *
 *   bin/waiter RESULT_FILE
 */
#include "lib.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NKIDS 3

static const int delay_ms[NKIDS] = { 100, 200, 300 };
static pid_t kids[NKIDS];
static sigjmp_buf wake;
static volatile sig_atomic_t waiting;

static void on_term(int sig)
{
	(void)sig;
	wl_stop = 1;
	if (waiting) {
		waiting = 0;
		siglongjmp(wake, 1);
	}
}

/* A setup step failed: no child may outlive us. */
static __attribute__((noreturn)) void give_up(const char *what, int status)
{
	for (int k = 0; k < NKIDS; k++)
		if (kids[k] > 0)
			kill(kids[k], SIGKILL);
	while (wait(NULL) > 0)
		;
	wl_die("%s (status %#x)", what, status);
}

static void nap_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static char proc_state(pid_t pid)
{
	char path[64], stat[512], *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (wl_read_file(path, stat, sizeof(stat)) < 0 || (p = strrchr(stat, ')')) == NULL)
		return 0; /* gone: reaped already */
	return p[2];
}

/* Waits (at most 10 s) until `pid` has ended: a zombie or already reaped. */
static void await_death(pid_t pid)
{
	for (int i = 0; i < 1000; i++) {
		char st = proc_state(pid);

		if (st == 0 || st == 'Z')
			return;
		nap_ms(10);
	}
}

/* A child: exit code 1 means its own check failed. */
static __attribute__((noreturn)) void child(int k, pid_t parent)
{
	wl_wait();
	if (getppid() != parent) {
		wl_log("c%d: ppid %d, was %d", k, getppid(), parent);
		_exit(1);
	}
	nap_ms(delay_ms[k]);
	if (k > 0)
		await_death(kids[k - 1]);
	if (k == 1) {
		signal(SIGUSR1, SIG_DFL);
		raise(SIGUSR1);
	}
	_exit(k == 0 ? 11 : 33);
}

/* Waits for kid k with `flags`; checks how it ended and that it took its delay after `t0`. */
static void expect(int k, int flags, int64_t t0)
{
	int status = 0;
	pid_t r = waitpid(kids[k], &status, flags);
	int64_t ms = (wl_now_ns() - t0) / 1000000;

	if (r != kids[k]) {
		wl_fail("waitpid(c%d, %s) returned %d (%s)", k, flags ? "WNOHANG" : "0", r,
			r < 0 ? strerror(errno) : "not ended yet");
		return;
	}
	wl_log("c%d reaped after %lld ms, status %#x", k, (long long)ms, status);
	if (k == 1)
		WL_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGUSR1, "c1: status %#x, expected SIGUSR1",
			 status);
	else
		WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == (k == 0 ? 11 : 33),
			 "c%d: status %#x, expected exit %d", k, status, k == 0 ? 11 : 33);
	WL_CHECK(ms >= delay_ms[k], "c%d ended %lld ms after SIGTERM, before its %d ms sleep", k, (long long)ms,
		 delay_ms[k]);
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	pid_t parent;
	int status;
	int64_t t0;

	wl_init(argc, argv);
	parent = getpid();
	for (int k = 0; k < NKIDS; k++) {
		kids[k] = fork();
		if (kids[k] < 0)
			give_up("fork failed", errno);
		if (kids[k] == 0)
			child(k, parent);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term; /* no SA_RESTART; the children keep the library's handler */
	sigaction(SIGTERM, &sa, NULL);
	wl_ready();

	if (sigsetjmp(wake, 1) == 0) {
		waiting = 1;
		while (!wl_stop) { /* the handler never returns here; any return is a failure */
			pid_t r = waitpid(kids[0], &status, 0);

			if (r == kids[0])
				give_up("c0 ended before SIGTERM", status);
			if (r < 0 && errno != EINTR)
				give_up("waitpid(c0) failed", errno);
		}
	}
	waiting = 0;

	t0 = wl_now_ns();
	for (int k = 0; k < NKIDS; k++)
		kill(kids[k], SIGTERM);
	expect(0, 0, t0);
	expect(2, 0, t0);
	expect(1, WNOHANG, t0);
	WL_CHECK(waitpid(-1, &status, WNOHANG) < 0 && errno == ECHILD, "children left after reaping all three");
	wl_finish();
}
