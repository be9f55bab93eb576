/*
 * zombie: children that ended and wait to be reaped, each with its own way of
 * ending, and a zombie one level down.
 *
 *   root ─┬─ Z1      exit(7)
 *         ├─ Z2      killed by SIGKILL
 *         ├─ Z3      killed by SIGTERM
 *         ├─ Z4      killed by SIGSEGV (no core: RLIMIT_CORE 0)
 *         ├─ Z5      killed by SIGUSR2
 *         └─ P ── Z6 P waits; Z6 exit(42), reaped by P after SIGTERM
 *
 * Each zombie names itself (prctl PR_SET_NAME) before it ends. After SIGTERM
 * the root checks each is still a zombie with its name, that
 * waitid(WEXITED|WNOWAIT) reports how it ended, then reaps it: waitpid must
 * give its exact status. P does the same for Z6 and exits 0 when all is well.
 * Last, waitpid(-1) must answer ECHILD: no child came back that was not there.
 *
 *   bin/zombie RESULT_FILE
 */
#include "lib.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { Z1, Z2, Z3, Z4, Z5, NZ };
static const char *const names[NZ] = { "zomb-exit7", "zomb-kill", "zomb-term", "zomb-segv", "zomb-usr2" };
static const int expected[NZ] = { 7 << 8, SIGKILL, SIGTERM, SIGSEGV, SIGUSR2 };
static pid_t pids[NZ], p_pid;

static void pause_ms(int ms)
{
	struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&t, NULL);
}

/* State and name of a process from /proc/PID/stat. */
static char stat_of(pid_t pid, char *comm, size_t size)
{
	char path[64], buf[512], *open, *close;

	comm[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (wl_read_file(path, buf, sizeof(buf)) < 0)
		return '?';
	open = strchr(buf, '(');
	close = strrchr(buf, ')');
	if (!open || !close || close[1] != ' ')
		return '?';
	snprintf(comm, size, "%.*s", (int)(close - open - 1), open + 1);
	return close[2];
}

static int wait_zombie(pid_t pid)
{
	char comm[64];

	for (int i = 0; i < 1000; i++) {
		if (stat_of(pid, comm, sizeof(comm)) == 'Z')
			return 1;
		pause_ms(10);
	}
	return 0;
}

static void end_as(int z)
{
	struct rlimit none = { 0, 0 };
	sigset_t all;

	signal(SIGTERM, SIG_DFL);
	setrlimit(RLIMIT_CORE, &none);
	/* Named last: the root waits for the name before it sends the signal that ends us. */
	prctl(PR_SET_NAME, names[z], 0, 0, 0);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	switch (z) {
	case Z1:
		_exit(7);
	case Z4:
		signal(SIGSEGV, SIG_DFL);
		*(volatile int *)8 = 1;
		break;
	case Z5:
		raise(SIGUSR2);
		break;
	default:
		for (;;)
			pause(); /* the root kills it */
	}
	_exit(99);
}

/* Checks zombie `pid`, named `name`, ended with wait status `status`; reaps it. Returns 0 if fine. */
static int check_and_reap(pid_t pid, const char *name, int status, void (*fail)(const char *, ...))
{
	char comm[64], state;
	siginfo_t si;
	int got, bad = 0;

	state = stat_of(pid, comm, sizeof(comm));
	if (state != 'Z') {
		fail("%s (%d) is in state %c, not a zombie", name, (int)pid, state);
		bad = 1;
	}
	if (strcmp(comm, name) != 0) {
		fail("zombie %d is named '%s', expected '%s'", (int)pid, comm, name);
		bad = 1;
	}
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT) || si.si_pid != pid) {
		fail("%s: waitid(WNOWAIT) reports nothing (%s)", name, strerror(errno));
		bad = 1;
	} else {
		int code = WIFEXITED(status) ? CLD_EXITED : CLD_KILLED;
		int value = WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status);

		if (si.si_code != code || si.si_status != value) {
			fail("%s: waitid reports code %d status %d, expected %d %d", name, si.si_code, si.si_status,
			     code, value);
			bad = 1;
		}
	}
	if (waitpid(pid, &got, WNOHANG) != pid) {
		fail("%s: waitpid does not reap it: %s", name, strerror(errno));
		return 1;
	}
	if (got != status) {
		fail("%s: wait status %#x, expected %#x", name, got, status);
		bad = 1;
	}
	return bad;
}

static void p_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

static void root_fail(const char *fmt, ...)
{
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	wl_fail("%s", text);
}

/* P: a parent with a zombie of its own, reaped once the root sends SIGTERM. */
static void run_p(void)
{
	pid_t z6 = fork();
	int bad;

	if (z6 < 0)
		_exit(3);
	if (z6 == 0) {
		prctl(PR_SET_NAME, "zomb-deep", 0, 0, 0);
		_exit(42);
	}
	if (!wait_zombie(z6))
		_exit(4);
	/* The root waits for this name: then Z6 is a zombie. */
	prctl(PR_SET_NAME, "zomb-parent", 0, 0, 0);
	while (!wl_stop)
		pause_ms(20);
	bad = check_and_reap(z6, "zomb-deep", 42 << 8, p_fail);
	_exit(bad ? 1 : 0);
}

int main(int argc, char **argv)
{
	int status;

	wl_init(argc, argv);
	for (int z = 0; z < NZ; z++) {
		pids[z] = fork();
		if (pids[z] < 0)
			wl_die("fork");
		if (pids[z] == 0)
			end_as(z);
	}
	for (int z = Z2; z <= Z3; z++) {
		char comm[64];

		for (int i = 0; i < 1000 && (stat_of(pids[z], comm, sizeof(comm)), strcmp(comm, names[z])); i++)
			pause_ms(10);
		kill(pids[z], z == Z2 ? SIGKILL : SIGTERM);
	}
	p_pid = fork();
	if (p_pid < 0)
		wl_die("fork P");
	if (p_pid == 0)
		run_p();
	for (int z = 0; z < NZ; z++)
		if (!wait_zombie(pids[z]))
			wl_die("setup: %s did not end", names[z]);
	{
		char comm[64];

		for (int i = 0; i < 1000 && (stat_of(p_pid, comm, sizeof(comm)), strcmp(comm, "zomb-parent")); i++)
			pause_ms(10);
	}
	wl_log("zombies %d %d %d %d %d, P %d", pids[0], pids[1], pids[2], pids[3], pids[4], p_pid);
	wl_ready();
	wl_wait();

	for (int z = 0; z < NZ; z++)
		check_and_reap(pids[z], names[z], expected[z], root_fail);
	kill(p_pid, SIGTERM);
	if (waitpid(p_pid, &status, 0) != p_pid)
		wl_fail("waitpid P: %s", strerror(errno));
	else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		wl_fail("P ended with status %#x (its checks of its zombie are in the log)", status);
	errno = 0;
	if (waitpid(-1, &status, WNOHANG) != -1 || errno != ECHILD)
		wl_fail("a child is left after all were reaped (%s)", strerror(errno));
	wl_finish();
}
