/*
 * nested_pidns: a tree with a PID namespace nested below the root's.
 *
 *   O (the root, in the host namespace)
 *   ├── A   a plain child, forked first, in O's namespace
 *   └── I   forked after O's unshare(CLONE_NEWPID): the init (pid 1) of namespace N
 *       ├── Z  N's pid 2, exited with status 7, left a zombie (I reaps it only at the end)
 *       └── R  N's pid 3, running, with a second thread (N's tid 4)
 *
 *   bin/nested_pidns RESULT_FILE [clone|pending|thread|thread-ns|left|deadns|group|outer-pidfd]
 *     `clone` makes I with clone(CLONE_NEWPID) instead of unshare + fork, so that O's
 *     pid_for_children stays its own namespace. `pending`: O unshares and forks nothing more (no
 *     I): after the wait its next child must be pid 1 of a new namespace. `thread`: O also has a
 *     thread T1, started before the unshare, which starts a thread T2 once I exists (O itself no
 *     longer can: the kernel refuses CLONE_THREAD to a thread whose pid_for_children is not its
 *     own namespace); after the wait both keep their tids and a child each forks is born in O's
 *     own namespace, not in N. `thread-ns` (with I made as by `clone`): O's thread T unshares and
 *     forks K (N2's init, O's child), its thread U unshares and forks nothing; after the wait a
 *     child T forks lands in N2 (not its init), one U forks is pid 1 of a namespace of its own,
 *     and K still sees itself as pid 1. `left`: once I and R are up, O forks M into N (a member,
 *     its pid there kept), then goes back to its own namespace with setns and forks B there;
 *     after the wait O's children are born in its own namespace, M is still in N with its pid and
 *     parent 0 there, B in O's namespace. `deadns`: O's first child after the unshare exits and is reaped, so O's
 *     pid_for_children is a namespace without processes (a dump must refuse it); no I.
 *     `group`: A also leads a process group of its own and, after an unshare, forks J, the init
 *     of a second nested namespace, which must still be in A's group after the wait (a group J
 *     does not see; the restore's parent puts it there). `outer-pidfd`: O opens a pidfd of itself
 *     before I is made, which I and R inherit (one open file: their namespace cannot see O, yet
 *     their copies must still refer to it after restore, its outermost NSpid O's pid).
 *
 * Checks after SIGTERM (each process checks its own ids, as it sees them):
 *   A: getpid() and getppid() unchanged (O);
 *   I: getpid() 1, getppid() 0; a SIGRTMIN it queued to itself (blocked) is still pending, with
 *      its value and sender pid 1; Z still a zombie of I with status 7 (waitid WNOWAIT then
 *      waitpid), R answers and exits 0 when told (SIGTERM), then no child is left;
 *   R: getpid() 3, getppid() 1, its thread's gettid() still 4;
 *   O: I still has its outer pid (kill 0, /proc NSpid "<outer> 1"), I's namespace is not O's; with
 *      unshare, O's pid_for_children is still I's namespace: a child O forks now lands in N (NSpid
 *      has two levels, its inner pid above 4, R's thread's) and O reaps it before I ends; without
 *      it (clone) O's pid_for_children is O's own namespace. Then O collects A's and I's verdicts
 *      (exit status 0) with waitpid by their outer pids.
 * pidfds: I holds one of R (a task of its own namespace), R one of I (its init, pid 1 inside), and
 * O one of I (a task of a nested namespace, which O sees by its outer pid). After the wait each
 * must still refer to that process: pidfd_send_signal(0) works, and the fd's NSpid, read at the
 * holder's own level, is the pid by which the holder sees it.
 * Verdicts travel by exit status; details go to the log.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int use_clone;

/* The NSpid line of file `path` (status or a pidfd's fdinfo; outermost first), into out[]. */
static int nspids_in(const char *path, int *out, int max)
{
	char buf[4096], *p;
	int n = 0;

	if (wl_read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	p = strstr(buf, "NSpid:");
	if (!p)
		return -1;
	p += 6;
	while (n < max && *p && *p != '\n') {
		char *end;
		long v = strtol(p, &end, 10);

		if (end == p)
			break;
		out[n++] = (int)v;
		p = end;
	}
	return n;
}

/* The NSpid line of /proc/PID/status (the host's /proc: outermost first), into out[]. */
static int nspids(pid_t pid, int *out, int max)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	return nspids_in(path, out, max);
}

/*
 * Whether pidfd `fd` of this process refers to a live process that it sees as `expected`: a null
 * signal reaches it, and its NSpid at our own level (the host's /proc lists every level) is it.
 */
static int pidfd_is(int fd, pid_t expected, const char *who)
{
	char path[64];
	int own[8], theirs[8], n_own, n_theirs;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	n_own = nspids_in("/proc/self/status", own, 8);
	n_theirs = nspids_in(path, theirs, 8);
	if (syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0) != 0) {
		wl_log("%s: pidfd %d: pidfd_send_signal: %s", who, fd, strerror(errno));
		return 0;
	}
	if (n_own < 1 || n_theirs < n_own || theirs[n_own - 1] != expected) {
		wl_log("%s: pidfd %d refers to %d (level %d of %d), expected %d", who, fd,
		       n_own >= 1 && n_theirs >= n_own ? theirs[n_own - 1] : -1, n_own, n_theirs, expected);
		return 0;
	}
	return 1;
}

static int open_pidfd(pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);

	if (fd < 0) {
		wl_log("pidfd_open(%d): %s", pid, strerror(errno));
		_exit(2);
	}
	return fd;
}

/* `outer-pidfd`: O's pidfd of itself (inherited by I and R), and O's pid. */
static int own_fd = -1;
static pid_t outer_o;

/* Whether this task's copy of O's pidfd still refers to O: its outermost NSpid (host's /proc). */
static int inherited_pidfd_ok(const char *who)
{
	char path[64];
	int theirs[8], n;

	if (own_fd < 0)
		return 1;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", own_fd);
	n = nspids_in(path, theirs, 8);
	if (n < 1 || theirs[0] != outer_o) {
		wl_log("%s: O's pidfd refers to %d, expected %d", who, n >= 1 ? theirs[0] : -1, outer_o);
		return 0;
	}
	return 1;
}

static int same_link(const char *a, const char *b)
{
	char la[128], lb[128];
	ssize_t na = readlink(a, la, sizeof(la) - 1), nb = readlink(b, lb, sizeof(lb) - 1);

	if (na < 0 || nb < 0)
		return -1;
	la[na] = lb[nb] = '\0';
	return strcmp(la, lb) == 0;
}

/* Sleeps until SIGTERM (wl_wait), then exits 0 when its ids are still `pid` and `ppid`. */
static __attribute__((noreturn)) void plain_body(const char *who, pid_t pid, pid_t ppid)
{
	wl_wait();
	if (getpid() != pid || getppid() != ppid) {
		wl_log("%s: pid %d ppid %d, expected %d %d", who, getpid(), getppid(), pid, ppid);
		_exit(1);
	}
	_exit(0);
}

static volatile pid_t thread_tid;
static volatile int thread_ok = -1;

/* R's second thread: its tid inside, then again after the wait. */
static void *thread_body(void *arg)
{
	pid_t tid = (pid_t)syscall(SYS_gettid);

	(void)arg;
	thread_tid = tid;
	wl_wait();
	thread_ok = (pid_t)syscall(SYS_gettid) == tid;
	return NULL;
}

/* R: running in N with a second thread; exits 0 when its ids and its thread's hold. */
static __attribute__((noreturn)) void running_body(int ready_fd)
{
	pthread_t th;
	int init_fd = open_pidfd(1);

	if (pthread_create(&th, NULL, thread_body, NULL) != 0)
		_exit(2);
	while (thread_tid == 0)
		usleep(1000);
	if (write(ready_fd, "R", 1) != 1)
		_exit(2);
	close(ready_fd);
	wl_wait();
	pthread_join(th, NULL);
	if (getpid() != 3 || getppid() != 1 || thread_tid != 4 || thread_ok != 1) {
		wl_log("R: pid %d ppid %d, thread tid %d (ok %d); expected 3 1 4", getpid(), getppid(), thread_tid,
		       thread_ok);
		_exit(1);
	}
	_exit(pidfd_is(init_fd, 1, "R") && inherited_pidfd_ok("R") ? 0 : 1);
}

/* I's pidfd of R. */
static int r_fd = -1;

/* I's checks after the wait; 0 when all hold. */
static int init_checks(pid_t z, pid_t r)
{
	siginfo_t si;
	sigset_t rt;
	struct timespec none = { 0, 0 };
	int status = -1, bad = 0;

	if (getpid() != 1 || getppid() != 0) {
		wl_log("I: pid %d ppid %d, expected 1 0", getpid(), getppid());
		bad = 1;
	}
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN);
	memset(&si, 0, sizeof(si));
	if (sigtimedwait(&rt, &si, &none) != SIGRTMIN || si.si_value.sival_int != 42 || si.si_pid != 1) {
		wl_log("I: queued SIGRTMIN: value %d pid %d (%s)", si.si_value.sival_int, si.si_pid, strerror(errno));
		bad = 1;
	}
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)z, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid != z ||
	    si.si_code != CLD_EXITED || si.si_status != 7) {
		wl_log("I: Z (%d) is not a zombie with status 7: pid %d code %d status %d (%s)", z, si.si_pid,
		       si.si_code, si.si_status, strerror(errno));
		bad = 1;
	}
	if (!pidfd_is(r_fd, r, "I") || !inherited_pidfd_ok("I"))
		bad = 1;
	if (kill(r, SIGTERM) != 0 || waitpid(r, &status, 0) != r || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		wl_log("I: R (%d) did not pass: status %#x", r, status);
		bad = 1;
	}
	if (waitpid(z, &status, 0) != z || !WIFEXITED(status) || WEXITSTATUS(status) != 7) {
		wl_log("I: waitpid(Z) gave status %#x", status);
		bad = 1;
	}
	if (waitpid(-1, &status, WNOHANG) != -1 || errno != ECHILD) {
		wl_log("I: a child is left");
		bad = 1;
	}
	return bad;
}

/* I: the namespace's init; I and R each tell O through the pipe once set up (Z a zombie, R's thread up). */
static __attribute__((noreturn)) void init_body(int ready_fd)
{
	pid_t z, r;
	siginfo_t si;

	if (getpid() != 1 || getppid() != 0) {
		wl_log("I: born as pid %d ppid %d", getpid(), getppid());
		_exit(1);
	}
	z = fork();
	if (z == 0)
		_exit(7);
	r = fork();
	if (r == 0)
		running_body(ready_fd);
	if (z != 2 || r != 3) {
		wl_log("I: children got pids %d %d, expected 2 3", z, r);
		_exit(1);
	}
	r_fd = open_pidfd(r);
	{
		sigset_t rt;
		union sigval v = { .sival_int = 42 };

		sigemptyset(&rt);
		sigaddset(&rt, SIGRTMIN);
		if (sigprocmask(SIG_BLOCK, &rt, NULL) != 0 || sigqueue(1, SIGRTMIN, v) != 0) {
			wl_log("I: sigqueue: %s", strerror(errno));
			_exit(1);
		}
	}
	/* Z must be a zombie before O says ready */
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)z, &si, WEXITED | WNOWAIT) != 0) {
		wl_log("I: waitid(Z): %s", strerror(errno));
		_exit(1);
	}
	if (write(ready_fd, "I", 1) != 1)
		_exit(1);
	close(ready_fd);
	wl_wait();
	_exit(init_checks(z, r));
}

static int clone_init(void)
{
	/* fork with CLONE_NEWPID: the raw syscall without a new stack returns in the child like fork */
	return (int)syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, NULL, NULL, NULL, NULL);
}

/* Whether O's pid_for_children must be its own namespace after the wait (not I's). */
static int children_at_home;

static void check_born_at_home(const char *who);

static void check_outside(pid_t i)
{
	int ids[8], n;

	if (kill(i, 0) != 0)
		wl_fail("I (outer pid %d) is gone: %s", i, strerror(errno));
	n = nspids(i, ids, 8);
	if (n != 2 || ids[0] != i || ids[1] != 1)
		wl_fail("I's NSpid: %d levels, %d %d; expected %d 1", n, n > 0 ? ids[0] : -1, n > 1 ? ids[1] : -1, i);
	{
		char path[64];

		snprintf(path, sizeof(path), "/proc/%d/ns/pid", i);
		if (same_link(path, "/proc/self/ns/pid") != 0)
			wl_fail("I is in O's PID namespace");
		if (children_at_home) {
			if (same_link("/proc/self/ns/pid_for_children", "/proc/self/ns/pid") != 1)
				wl_fail("O's pid_for_children is not its own namespace");
		} else if (same_link("/proc/self/ns/pid_for_children", path) != 1) {
			wl_fail("O's pid_for_children is not I's namespace");
		}
	}
	if (children_at_home) {
		check_born_at_home("O");
	} else {
		/* A new child of O is born in N, neither its init nor one of I's */
		int status = -1;
		pid_t c = fork();

		if (c == 0)
			_exit(getppid() == 0 ? 0 : 1);
		if (c < 0) {
			wl_fail("fork into N: %s", strerror(errno));
			return;
		}
		n = nspids(c, ids, 8);
		if (n != 2 || ids[1] <= 4)
			wl_fail("O's new child: %d levels, inner pid %d", n, n > 1 ? ids[1] : -1);
		if (waitpid(c, &status, 0) != c || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			wl_fail("O's new child in N: status %#x", status);
	}
}

/* The pgrp field of /proc/PID/stat (the host's /proc), or -1. */
static pid_t stat_pgrp(pid_t pid)
{
	char path[64], buf[1024], *p;
	int ppid, pgrp;
	char state;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (wl_read_file(path, buf, sizeof(buf)) < 0 || !(p = strrchr(buf, ')')))
		return -1;
	if (sscanf(p + 1, " %c %d %d", &state, &ppid, &pgrp) != 3)
		return -1;
	return pgrp;
}

/*
 * A in `group` mode: leads a group of its own, then unshares and forks J, the init of a second
 * nested namespace, which inherits A's group (0 inside: not seen there). After the wait J must
 * still be in A's group, seen from the host's /proc.
 */
static __attribute__((noreturn)) void group_body(pid_t o, int ready_fd)
{
	pid_t me = getpid(), j, pgrp;
	int status = -1, bad = 0;

	if (setpgid(0, 0) != 0 || unshare(CLONE_NEWPID) != 0)
		_exit(2);
	j = fork();
	if (j == 0) {
		wl_wait();
		_exit(getpid() == 1 && getppid() == 0 && getpgrp() == 0 ? 0 : 1);
	}
	if (j < 0 || write(ready_fd, "A", 1) != 1)
		_exit(2);
	close(ready_fd);
	wl_wait();
	pgrp = stat_pgrp(j);
	if (pgrp != me || getpid() != me || getppid() != o || getpgrp() != me) {
		wl_log("A: J's group %d, A's pid %d ppid %d pgrp %d; expected %d %d %d", pgrp, getpid(), getppid(),
		       getpgrp(), me, o, me);
		bad = 1;
	}
	if (kill(j, SIGTERM) != 0 || waitpid(j, &status, 0) != j || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		wl_log("A: J did not pass: status %#x", status);
		bad = 1;
	}
	_exit(bad);
}

/*
 * A child forked by the calling thread, alive until its NSpid (outermost first, into ids[]) and
 * PID namespace link (into ns[]) are read; then it exits 0 if it sees itself as pid 1 with parent
 * 0, else 1. Answers the number of NSpid levels, *init whether it was its namespace's init, or -1.
 */
static int probe_child(int *ids, int max, char *ns, size_t size, int *init)
{
	int gate[2], status = -1, n;
	char path[64], c;
	ssize_t len;
	pid_t pid;

	if (pipe(gate) != 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		close(gate[1]);
		if (read(gate[0], &c, 1) < 0)
			_exit(2);
		_exit(getpid() == 1 && getppid() == 0 ? 0 : 1);
	}
	close(gate[0]);
	if (pid < 0) {
		close(gate[1]);
		return -1;
	}
	n = nspids(pid, ids, max);
	snprintf(path, sizeof(path), "/proc/%d/ns/pid", pid);
	len = readlink(path, ns, size - 1);
	ns[len < 0 ? 0 : len] = '\0';
	/*
	 * A byte, not the pipe's end: a child another thread forks meanwhile holds a copy of this
	 * write end too, and would keep this child waiting for an end of file while it waits for its own.
	 */
	if (write(gate[1], "x", 1) != 1)
		wl_log("probe_child: write to the gate failed");
	close(gate[1]);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) > 1)
		return -1;
	*init = WEXITSTATUS(status) == 0;
	return n;
}

/* The link of a PID namespace file into buf ("" if unreadable). */
static void read_link(const char *path, char *buf, size_t size)
{
	ssize_t len = readlink(path, buf, size - 1);

	buf[len < 0 ? 0 : len] = '\0';
}

/* Whether a child the calling thread forks now is born in its process's own PID namespace. */
static int born_at_home(const char *who)
{
	char ns[128], own[128];
	int ids[8], init = -1, n = probe_child(ids, 8, ns, sizeof(ns), &init);

	read_link("/proc/self/ns/pid", own, sizeof(own));
	if (n < 1 || init != 0 || strcmp(ns, own) != 0) {
		wl_log("%s: a child it forks: %d levels, init %d, in %s; expected its own namespace %s", who, n, init,
		       ns, own);
		return 0;
	}
	return 1;
}

static void check_born_at_home(const char *who)
{
	if (!born_at_home(who))
		wl_fail("%s's new child is not born in its own PID namespace (log)", who);
}

/* `thread`: T1 (started before O's unshare) starts T2 once told; each checks itself after the wait. */
static volatile int start_t2 = 0;
static volatile pid_t t1_tid, t2_tid;
static volatile int t1_ok = -1, t2_ok = -1;

/* A thread's checks after the wait: its tid, and its children still born in O's own namespace. */
static int thread_checks(const char *who, pid_t tid)
{
	if ((pid_t)syscall(SYS_gettid) != tid) {
		wl_log("%s: tid %d, expected %d", who, (int)syscall(SYS_gettid), tid);
		return 0;
	}
	return born_at_home(who);
}

static void *t2_body(void *arg)
{
	(void)arg;
	t2_tid = (pid_t)syscall(SYS_gettid);
	wl_wait();
	t2_ok = thread_checks("T2", t2_tid);
	return NULL;
}

static void *t1_body(void *arg)
{
	pthread_t t2;

	(void)arg;
	t1_tid = (pid_t)syscall(SYS_gettid);
	while (!start_t2)
		usleep(1000);
	if (pthread_create(&t2, NULL, t2_body, NULL) != 0) {
		wl_log("T1: pthread_create(T2) failed");
		t1_ok = 0;
		t2_tid = -1;
		return NULL;
	}
	wl_wait();
	t1_ok = thread_checks("T1", t1_tid);
	pthread_join(t2, NULL);
	return NULL;
}

/* `thread-ns`: T unshares and forks K, U unshares only. */
static volatile pid_t k_pid;
static volatile int t_ready, u_ready, t_ok = -1, u_ok = -1;

/* K, N2's init: exits 0 when it is still pid 1 with parent 0 there. */
static __attribute__((noreturn)) void k_body(void)
{
	wl_wait();
	_exit(getpid() == 1 && getppid() == 0 ? 0 : 1);
}

static void *t_body(void *arg)
{
	char ns[128], k_ns[128], path[64];
	int ids[8], init = -1, n;
	pid_t k;

	(void)arg;
	if (unshare(CLONE_NEWPID) != 0) {
		wl_log("T: unshare: %s", strerror(errno));
		t_ready = -1;
		return NULL;
	}
	k = fork();
	if (k == 0)
		k_body();
	k_pid = k;
	t_ready = k > 0 ? 1 : -1;
	wl_wait();
	/* T's next child is born in K's namespace, not its init */
	n = probe_child(ids, 8, ns, sizeof(ns), &init);
	snprintf(path, sizeof(path), "/proc/%d/ns/pid", k);
	read_link(path, k_ns, sizeof(k_ns));
	t_ok = n == 2 && init == 0 && ids[1] > 1 && strcmp(ns, k_ns) == 0;
	if (!t_ok)
		wl_log("T: a child it forks: %d levels, init %d, inner pid %d, in %s; expected K's %s", n, init,
		       n > 1 ? ids[1] : -1, ns, k_ns);
	return NULL;
}

static void *u_body(void *arg)
{
	char ns[128], own[128];
	int ids[8], init = -1, n;

	(void)arg;
	if (unshare(CLONE_NEWPID) != 0) {
		wl_log("U: unshare: %s", strerror(errno));
		u_ready = -1;
		return NULL;
	}
	u_ready = 1;
	wl_wait();
	/* U's next child is the init of a namespace of its own */
	n = probe_child(ids, 8, ns, sizeof(ns), &init);
	read_link("/proc/self/ns/pid", own, sizeof(own));
	u_ok = n == 2 && init == 1 && ids[1] == 1 && strcmp(ns, own) != 0;
	if (!u_ok)
		wl_log("U: a child it forks: %d levels, init %d, inner pid %d, in %s (O's: %s)", n, init,
		       n > 1 ? ids[1] : -1, ns, own);
	return NULL;
}

/* `left`: M, a member of N O forked, and B, forked after O went back to its own namespace. */
static __attribute__((noreturn)) void member_body(void)
{
	pid_t born = getpid();

	wl_wait();
	if (getpid() != born || getppid() != 0) {
		wl_log("M: pid %d ppid %d, expected %d 0", getpid(), getppid(), born);
		_exit(1);
	}
	_exit(0);
}

/* Forks M into N, goes back to O's own namespace (setns) and forks B there. */
static void leave_namespace(pid_t o, pid_t *m, pid_t *b)
{
	int fd;

	*m = fork();
	if (*m == 0)
		member_body();
	if (*m < 0)
		wl_die("fork M");
	fd = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWPID) != 0)
		wl_die("setns back to O's PID namespace");
	close(fd);
	*b = fork();
	if (*b == 0)
		plain_body("B", getpid(), o);
	if (*b < 0)
		wl_die("fork B");
}

/* O's checks of M (still in I's namespace, at a pid above R's thread's) after the wait; then reaps M and B. */
static void check_left(pid_t i, pid_t m, pid_t b)
{
	char path[64], i_path[64];
	int ids[8], n = nspids(m, ids, 8), status = -1;

	snprintf(path, sizeof(path), "/proc/%d/ns/pid", m);
	snprintf(i_path, sizeof(i_path), "/proc/%d/ns/pid", i);
	if (n != 2 || ids[0] != m || ids[1] <= 4 || same_link(path, i_path) != 1)
		wl_fail("M: %d levels, inner pid %d, or not in I's namespace", n, n > 1 ? ids[1] : -1);
	kill(m, SIGTERM);
	if (waitpid(m, &status, 0) != m || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		wl_fail("M: status %#x", status);
	kill(b, SIGTERM);
	if (waitpid(b, &status, 0) != b || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		wl_fail("B: status %#x", status);
}

/*
 * `pending`: O unshared but has forked nothing since: its next child, forked after the wait, must
 * be the init of a new namespace (NSpid "<outer> 1"), reaped with its status.
 */
static void check_pending(void)
{
	int ids[8], n, status = -1;
	pid_t c = fork();

	if (c == 0)
		_exit(getpid() == 1 && getppid() == 0 ? 0 : 1);
	if (c < 0) {
		wl_fail("fork after unshare: %s", strerror(errno));
		return;
	}
	n = nspids(c, ids, 8);
	if (n != 2 || ids[0] != c || ids[1] != 1)
		wl_fail("O's first child after unshare: %d levels, inner pid %d; expected 1", n, n > 1 ? ids[1] : -1);
	if (waitpid(c, &status, 0) != c || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		wl_fail("O's first child after unshare: status %#x", status);
}

int main(int argc, char **argv)
{
	int pipefd[2], status;
	pid_t o = getpid(), a, i = 0;
	const char *mode = argc > 2 ? argv[2] : "";
	int pending = strcmp(mode, "pending") == 0, dead_ns = strcmp(mode, "deadns") == 0;
	int group = strcmp(mode, "group") == 0, threads = strcmp(mode, "thread") == 0;
	int thread_ns = strcmp(mode, "thread-ns") == 0, left = strcmp(mode, "left") == 0;
	pthread_t t1, t, u;
	pid_t m = 0, b = 0;
	char c;

	wl_init(argc, argv);
	use_clone = strcmp(mode, "clone") == 0 || thread_ns;
	children_at_home = use_clone || left;
	/* T1 before the unshare: O cannot start a thread after it */
	if (threads && pthread_create(&t1, NULL, t1_body, NULL) != 0)
		wl_die("pthread_create(T1)");
	if (thread_ns) {
		if (pthread_create(&t, NULL, t_body, NULL) != 0 || pthread_create(&u, NULL, u_body, NULL) != 0)
			wl_die("pthread_create(T, U)");
		while (t_ready == 0 || u_ready == 0)
			usleep(1000);
		if (t_ready < 0 || u_ready < 0)
			wl_die("T or U did not get ready (log)");
	}
	if (pipe(pipefd) != 0)
		wl_die("pipe");
	a = fork();
	if (a < 0)
		wl_die("fork A");
	if (a == 0) {
		close(pipefd[0]);
		if (group)
			group_body(o, pipefd[1]);
		close(pipefd[1]);
		plain_body("A", getpid(), o);
	}
	/* `outer-pidfd`: I and R inherit O's pidfd of itself, a process their namespace cannot see */
	outer_o = o;
	own_fd = strcmp(mode, "outer-pidfd") == 0 ? open_pidfd(o) : -1;
	if (!use_clone && unshare(CLONE_NEWPID) != 0)
		wl_die("unshare(CLONE_NEWPID)");
	if (dead_ns) {
		/* the namespace's init ends and is reaped: O's pid_for_children is a dead namespace */
		i = fork();
		if (i == 0)
			_exit(0);
		if (i < 0 || waitpid(i, &status, 0) != i)
			wl_die("the short-lived init");
	}
	if (pending || dead_ns) {
		close(pipefd[0]);
		close(pipefd[1]);
		wl_ready();
		wl_wait();
		if (pending)
			check_pending();
		goto end;
	}
	i = use_clone ? clone_init() : fork();
	if (i < 0)
		wl_die("make I");
	if (i == 0) {
		close(pipefd[0]);
		init_body(pipefd[1]);
	}
	close(pipefd[1]);
	int i_fd = open_pidfd(i);
	for (int k = group ? 3 : 2; k > 0; k--) {
		if (read(pipefd[0], &c, 1) != 1)
			wl_die("I, R or A did not get ready");
	}
	close(pipefd[0]);
	if (threads) {
		start_t2 = 1;
		while (t2_tid == 0)
			usleep(1000);
		if (t2_tid < 0)
			wl_die("T1 could not start T2 (log)");
	}
	if (left)
		leave_namespace(o, &m, &b);
	wl_ready();
	wl_wait();

	check_outside(i);
	if (threads) {
		pthread_join(t1, NULL);
		WL_CHECK(t1_ok == 1 && t2_ok == 1, "T1 or T2 did not pass: %d %d (log)", t1_ok, t2_ok);
	}
	if (thread_ns) {
		pthread_join(t, NULL);
		pthread_join(u, NULL);
		WL_CHECK(t_ok == 1 && u_ok == 1, "T or U did not pass: %d %d (log)", t_ok, u_ok);
		kill(k_pid, SIGTERM);
		if (waitpid(k_pid, &status, 0) != k_pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			wl_fail("K: status %#x", status);
	}
	if (left)
		check_left(i, m, b);
	if (!pidfd_is(i_fd, i, "O"))
		wl_fail("O's pidfd of I does not refer to it (log)");
	if (own_fd >= 0 && !pidfd_is(own_fd, o, "O"))
		wl_fail("O's pidfd of itself does not refer to it (log)");
	kill(i, SIGTERM);
	if (waitpid(i, &status, 0) != i || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		wl_fail("I: status %#x", status);
end:
	kill(a, SIGTERM);
	if (waitpid(a, &status, 0) != a || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		wl_fail("A: status %#x", status);
	wl_finish();
}
