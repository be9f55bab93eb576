/*
 * pidns: a PID namespace with its init (I) and one more process (K) in it.
 * Inside, I must stay pid 1 with parent 0 (its parent is outside), K must
 * keep its pid (2) with parent 1, a new fork inside must get a pid of the
 * namespace, and I must still be able to reap K by its inner pid.
 *
 *   bin/pidns RESULT_FILE
 *     Nested: the started process R stays in the host namespace, is the root
 *     of the tree and makes I with clone(CLONE_NEWPID). On SIGTERM R also
 *     checks from outside, through /proc, that I and K kept their host pids
 *     and their inner ones (NSpid), that both share one pid namespace that is
 *     not R's, and who is whose child; then it forwards SIGTERM to I, reads
 *     I's verdict from a pipe (which crosses the namespace) and reaps I.
 *     Upstream CRIU refuses this tree ("Can't dump nested pid namespace"):
 *     it dumps a pid namespace only when the dump root is its init.
 *
 *   bin/pidns RESULT_FILE init [session]
 *     The shape CRIU supports (zdtm's "ns" flavour): the dump root is I.
 *     Plain `init`: I stays in R's session and group, which are outside the
 *     tree, so dump and restore need --shell-job. With `session`, I starts a
 *     session of its own (as zdtm's ns init and container inits do): no
 *     --shell-job needed, and with it CRIU changes nothing (the root leads
 *     its session). Either way I checks its sid/pgrp inside are unchanged.
 *     R is only a launcher: it makes I, writes I's host pid into
 *     RESULT_FILE.pid, and exits 0 before ready (I is then adopted by the
 *     harness, a subreaper). RESULT_FILE.ready appears after RESULT_FILE.pid.
 *     The harness must use the pid in RESULT_FILE.pid as the tree root, to
 *     dump and to send SIGTERM to; I writes RESULT_FILE itself. A restore
 *     makes a new namespace, so I's host pid may differ afterwards (take it
 *     from criu restore --pidfile); the pids inside are what is checked.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int up[2];   /* I -> R: "ready", then (nested) the verdict */
static int down[2]; /* R -> I: (init mode) "the pid file is written" */
static int init_mode, own_session;

static ssize_t read_for(int fd, char *buf, size_t size, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	size_t len = 0;
	ssize_t n;

	/* a line: up to '\n' */
	while (len + 1 < size && poll(&pfd, 1, ms) > 0 && (n = read(fd, buf + len, 1)) == 1 && buf[len] != '\n')
		len++;
	buf[len] = '\0';
	return (ssize_t)len;
}

/* K: inside the namespace, not its init. Exit code 0 when its checks hold. */
static __attribute__((noreturn)) void body_k(void)
{
	pid_t pid = getpid(), ppid = getppid();

	close(up[1]);
	close(down[0]);
	wl_wait();
	if (getpid() != pid || getppid() != ppid || ppid != 1) {
		wl_log("K: pid %d ppid %d, was %d %d", getpid(), getppid(), pid, ppid);
		_exit(1);
	}
	_exit(0);
}

/* I's checks after the wait; returns "" or what differed. */
static void check_inside(pid_t k, pid_t sid, pid_t pgrp, char *why, size_t size)
{
	int status = -1;
	pid_t r, probe;

	why[0] = '\0';
	if (getpid() != 1 || getppid() != 0) {
		snprintf(why, size, "init has pid %d ppid %d, expected 1 0", getpid(), getppid());
		return;
	}
	/* R's session and group are outside, so both read 0 here; with `session`, I's own: 1 */
	if (getsid(0) != sid || getpgrp() != pgrp) {
		snprintf(why, size, "init has sid %d pgrp %d, was %d %d", getsid(0), getpgrp(), sid, pgrp);
		return;
	}
	if (kill(k, SIGTERM) != 0) {
		snprintf(why, size, "K (pid %d inside) is gone: %s", k, strerror(errno));
		return;
	}
	r = waitpid(k, &status, 0);
	if (r != k || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(why, size, "waitpid(K %d) gave %d, status %#x", k, r, status);
		return;
	}
	/* A new child gets a pid of this namespace: it reports its own pid's low byte. */
	probe = fork();
	if (probe == 0)
		_exit(getppid() == 1 ? getpid() & 0xff : 0);
	if (probe <= 1 || waitpid(probe, &status, 0) != probe || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != (probe & 0xff))
		snprintf(why, size, "new child: pid %d, status %#x", probe, status);
}

/* I: the namespace's init. */
static int body_i(void *arg)
{
	char why[256], msg[300], c;
	pid_t k, sid, pgrp;

	(void)arg;
	close(up[0]);
	close(down[1]);
	if (own_session && setsid() < 0)
		return 1;
	sid = getsid(0);
	pgrp = getpgrp();
	k = fork();
	if (k < 0)
		return 1;
	if (k == 0)
		body_k();
	if (write(up[1], "R\n", 2) != 2)
		return 1;
	if (init_mode) {
		/* R writes the pid file, then closes its end; no pipe stays open across the wait */
		if (read(down[0], &c, 1) < 0)
			return 1;
		close(up[1]);
		wl_ready();
	}
	close(down[0]);
	wl_wait();

	check_inside(k, sid, pgrp, why, sizeof(why));
	if (init_mode) {
		if (why[0])
			wl_fail("%s", why);
		wl_finish();
	}
	snprintf(msg, sizeof(msg), "%s\n", why[0] ? why : "ok");
	return write(up[1], msg, strlen(msg)) < 0;
}

/* "NSpid:" of /proc/PID/status, e.g. "1234 1"; "" when unreadable. */
static const char *nspid(pid_t pid, char *out, size_t size)
{
	char path[64], text[4096], *p;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	out[0] = '\0';
	if (wl_read_file(path, text, sizeof(text)) < 0 || (p = strstr(text, "\nNSpid:")) == NULL)
		return out;
	p += 7;
	p += strspn(p, " \t");
	snprintf(out, size, "%.*s", (int)strcspn(p, "\n"), p);
	for (char *q = out; *q; q++)
		if (*q == '\t')
			*q = ' ';
	return out;
}

static ino_t pidns_of(pid_t pid)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof(path), "/proc/%d/ns/pid", pid);
	return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* The one child of `pid`, from /proc; 0 when not exactly one. */
static pid_t only_child(pid_t pid)
{
	char path[64], text[256];
	int n, a = 0, b = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", pid, pid);
	if (wl_read_file(path, text, sizeof(text)) < 0)
		return 0;
	n = sscanf(text, "%d %d", &a, &b);
	return n == 1 ? a : 0;
}

/* R's view from the host: the relations, and that pids did not change. */
static void check_outside(pid_t i, pid_t k_host, const char *when)
{
	char got[64], want[64];

	WL_CHECK(only_child(getpid()) == i, "%s: R's children are not just I (%d)", when, i);
	WL_CHECK(only_child(i) == k_host, "%s: I's children are not just K (%d)", when, k_host);
	snprintf(want, sizeof(want), "%d 1", i);
	WL_CHECK(strcmp(nspid(i, got, sizeof(got)), want) == 0, "%s: I's NSpid is '%s', expected '%s'", when, got,
		 want);
	snprintf(want, sizeof(want), "%d 2", k_host);
	WL_CHECK(strcmp(nspid(k_host, got, sizeof(got)), want) == 0, "%s: K's NSpid is '%s', expected '%s'", when,
		 got, want);
	WL_CHECK(pidns_of(i) != 0 && pidns_of(i) == pidns_of(k_host) && pidns_of(i) != pidns_of(getpid()),
		 "%s: I and K are not together in a pid namespace of their own", when);
}

int main(int argc, char **argv)
{
	static char stack[256 * 1024];
	char line[300], path[4096];
	pid_t i, k_host;
	int status, fd;

	wl_init(argc, argv);
	init_mode = argc > 2 && strcmp(argv[2], "init") == 0;
	own_session = init_mode && argc > 3 && strcmp(argv[3], "session") == 0;
	if (argc > 2 + init_mode + own_session)
		wl_die("usage: pidns RESULT_FILE [init [session]]");
	if (pipe(up) || pipe(down))
		wl_die("pipe");
	i = clone(body_i, stack + sizeof(stack), CLONE_NEWPID | SIGCHLD, NULL);
	if (i < 0)
		wl_die("clone(CLONE_NEWPID) (needs CAP_SYS_ADMIN)");
	close(up[1]);
	close(down[0]);
	if (read_for(up[0], line, sizeof(line), 10000) < 1 || strcmp(line, "R") != 0) {
		kill(i, SIGKILL);
		wl_die("I did not get ready");
	}

	if (init_mode) {
		/* Hand over: the pid file, then let I go on alone. Only I writes the result. */
		snprintf(line, sizeof(line), "%d\n", i);
		fd = open(wl_path("pid", path, sizeof(path)), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line)) {
			kill(i, SIGKILL);
			wl_die("write %s", path);
		}
		close(fd);
		close(down[1]);
		_exit(0);
	}

	close(down[1]);
	for (int tries = 0; (k_host = only_child(i)) == 0 && tries < 1000; tries++)
		usleep(10000);
	if (k_host == 0) {
		kill(i, SIGKILL);
		wl_die("cannot find K's host pid in /proc/%d/task/%d/children", i, i);
	}
	check_outside(i, k_host, "setup");
	if (wl_failures()) {
		kill(i, SIGKILL);
		waitpid(i, NULL, 0);
		wl_finish();
	}

	wl_ready();
	wl_wait();

	check_outside(i, k_host, "after the wait");
	kill(i, SIGTERM);
	read_for(up[0], line, sizeof(line), 10000);
	WL_CHECK(strcmp(line, "ok") == 0, "inside: %s", line[0] ? line : "no verdict from I");
	if (waitpid(i, &status, 0) != i)
		wl_fail("waitpid(I %d): %s", i, strerror(errno));
	else
		WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "I ended with status %#x", status);
	wl_finish();
}
