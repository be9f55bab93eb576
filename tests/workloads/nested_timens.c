/*
 * nested_timens: a tree whose tasks sit in time namespaces nested in the root's, each with clocks
 * of its own:
 *   - the root R unshares a time namespace (monotonic 100 days ahead of the host's, boot time 200
 *     days), writes the offsets and enters it itself (setns on its time_for_children);
 *   - D, forked first, later enters B's time_for_children (setns): a task in a namespace that a
 *     process forked after it made;
 *   - B unshares a namespace (10 and 30 days ahead) and forks B1 in it: B stays in R's, its
 *     time_for_children is B1's;
 *   - C unshares a namespace (1000 and 1001 days ahead) and enters it itself;
 *   - E unshares a namespace (50 and 50 days ahead) and forks nothing: its next child must land
 *     there (after the wait E forks one and compares their clocks: 50 days behind E's);
 *   - F, forked before the root unshares, stays in the host's time namespace (criu's).
 * `unreadable`: C unshares once more after entering its namespace, which no task then makes its
 * children in (criu must read its offsets from inside it).
 * `left`: B goes back to its own namespace (setns) once B1 is forked, so that B1's namespace is
 * no longer B's time_for_children (D enters B1's namespace instead).
 * `threads`: thread X of the root unshares a namespace (300 and 300 days ahead) and forks G in
 * it; thread Y unshares one (400 days) and forks nothing (after the wait it forks a child, whose
 * clock must run 300 days ahead of its own); E starts a thread before it unshares (a leader whose
 * time_for_children differs from its threads'), B one after it (which shares B's). Each thread's
 * namespace links are compared too.
 * `thread-shared`: as `threads`, but X starts a thread after its unshare, which then shares X's
 * namespace for children: the dump must refuse it (criu-ts clones every thread from its leader).
 * `host-root`: the root stays in the host's time namespace (criu's), where E's namespace is then
 * 50 days ahead of E's own.
 * Each task reads its clocks and namespace links when ready and again on SIGTERM (which each
 * parent passes on): its monotonic and boot-time clocks must not have gone back nor gone on by
 * more than the wall time elapsed (plus a margin), and which tasks share a namespace (and the
 * host's) must be as before. The root reports every task that failed.
 *   bin/nested_timens RESULT_FILE [host-root|unreadable|left|threads|thread-shared]
 */
#include "lib.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DAY_S (24LL * 3600)
/* How much more than the wall time a clock may go on by (the machine may be loaded). */
#define MARGIN_S 30
#define LINK_SIZE 64

/* X and Y are threads of R (`threads`), with readings of their own: /proc/thread-self. */
enum { R, D, B, B1, C, E, F, G, X, Y, TASKS };
static const char *const names[TASKS] = { "R", "D", "B", "B1", "C", "E", "F", "G", "X", "Y" };

struct reading {
	int64_t monotonic, boottime, realtime; /* ns */
	char own[LINK_SIZE], for_children[LINK_SIZE];
};

/* In a MAP_SHARED area: what each task read when ready and after the wait, and its verdict. */
struct slot {
	struct reading before, after;
	int checked, failures;
	pid_t pid;
};
static struct slot *slots;
/* How far ahead of the host's the root's monotonic clock runs (days). */
static int64_t root_monotonic_days = 100;
static const char *mode = "";

static int64_t clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void link_name(const char *path, char *buf)
{
	ssize_t n = readlink(path, buf, LINK_SIZE - 1);
	buf[n < 0 ? 0 : n] = 0;
}

static void take_reading(struct reading *r)
{
	r->monotonic = clock_ns(CLOCK_MONOTONIC);
	r->boottime = clock_ns(CLOCK_BOOTTIME);
	r->realtime = clock_ns(CLOCK_REALTIME);
	/* The calling thread's own (a process's leader: the process's). */
	link_name("/proc/thread-self/ns/time", r->own);
	link_name("/proc/thread-self/ns/time_for_children", r->for_children);
}

/*
 * Makes a namespace for the calling thread's children whose clocks run that many days ahead of
 * the host's (/proc/TID/timens_offsets is that thread's, /proc/self/ its process leader's).
 */
static void make_for_children(int64_t monotonic_days, int64_t boottime_days)
{
	if (unshare(CLONE_NEWTIME))
		wl_die("unshare(CLONE_NEWTIME)");
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/timens_offsets", gettid());
	int fd = open(path, O_WRONLY);
	char text[128];
	int len = snprintf(text, sizeof(text), "monotonic %lld 0\nboottime %lld 0\n",
			   (long long)(monotonic_days * DAY_S), (long long)(boottime_days * DAY_S));
	if (fd < 0 || write(fd, text, len) != len)
		wl_die("writing /proc/self/timens_offsets");
	close(fd);
}

static void enter(const char *path)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0 || setns(fd, CLONE_NEWTIME))
		wl_die("entering the time namespace %s", path);
	close(fd);
}

/* A clock must have gone on by 0 .. wall time elapsed + margin. */
static void check_clock(const char *who, const char *clock, int64_t before, int64_t after, int64_t wall)
{
	WL_CHECK(after >= before, "%s: %s clock went back by %lld ms", who, clock,
		 (long long)((before - after) / 1000000));
	WL_CHECK(after - before <= wall + MARGIN_S * 1000000000LL,
		 "%s: %s clock went on by %lld s in %lld s of wall time", who, clock,
		 (long long)((after - before) / 1000000000), (long long)(wall / 1000000000));
}

/* Waits up to 20 s for a child (a lost one must end in FAIL, not a hang), then kills it. */
static void reap_child(pid_t pid, const char *who)
{
	for (int i = 0; i < 2000; i++) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return;
		usleep(10000);
	}
	wl_fail("%s (%d) did not end within 20 s of SIGTERM", who, pid);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/*
 * E (or thread Y), after the wait: its next child must be born in the namespace `who` made
 * (`days` ahead of the host's).
 */
static void check_child_clock(const char *who, int64_t days)
{
	int p[2];
	if (pipe(p)) {
		wl_fail("%s: pipe: %s", who, strerror(errno));
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		struct reading r;
		take_reading(&r);
		ssize_t n = write(p[1], &r, sizeof(r));
		_exit(n == sizeof(r) ? 0 : 1);
	}
	close(p[1]);
	struct reading child;
	ssize_t n = pid < 0 ? -1 : read(p[0], &child, sizeof(child));
	close(p[0]);
	if (pid > 0)
		reap_child(pid, "a child");
	if (n != sizeof(child)) {
		wl_fail("%s: its child did not report its clocks", who);
		return;
	}
	int64_t mine = clock_ns(CLOCK_MONOTONIC);
	int64_t behind = mine - child.monotonic, expected = (root_monotonic_days - days) * DAY_S * 1000000000LL;
	WL_CHECK(behind > expected - MARGIN_S * 1000000000LL && behind < expected + MARGIN_S * 1000000000LL,
		 "%s: its child's monotonic clock is %lld s behind its own, expected %lld s", who,
		 (long long)(behind / 1000000000), (long long)(expected / 1000000000));
	char own[LINK_SIZE], for_children[LINK_SIZE];
	link_name("/proc/thread-self/ns/time", own);
	link_name("/proc/thread-self/ns/time_for_children", for_children);
	WL_CHECK(strcmp(child.own, for_children) == 0 && strcmp(child.own, own) != 0,
		 "%s: its child is in %s, not in its time_for_children %s", who, child.own, for_children);
}

static void *idle_thread(void *unused);
/* `threads`: B's thread, started after its unshare. */
static pid_t b_thread;

static void read_b_thread(char links[2][LINK_SIZE])
{
	char path[96];
	snprintf(path, sizeof(path), "/proc/self/task/%d/ns/time", b_thread);
	link_name(path, links[0]);
	snprintf(path, sizeof(path), "/proc/self/task/%d/ns/time_for_children", b_thread);
	link_name(path, links[1]);
}

/* B after the wait: its thread must still be in its namespace and share its time_for_children. */
static void check_b_thread(void)
{
	char now[2][LINK_SIZE];
	read_b_thread(now);
	struct reading *b = &slots[B].after;
	WL_CHECK(strcmp(now[0], b->own) == 0 && strcmp(now[1], b->for_children) == 0,
		 "B's thread is in %s making its children in %s, B in %s and %s", now[0], now[1], b->own,
		 b->for_children);
}

static pid_t children[TASKS];
/* The time namespace the workload started in (the host's, criu's), which outlives the tree. */
static char host[LINK_SIZE];
/* The root tells D B's pid on it. */
static int to_d[2];

/* After SIGTERM: pass it on, check our own clocks, wait for our children. */
static void finish_task(int me)
{
	for (int i = 0; i < TASKS; i++)
		if (children[i] > 0)
			kill(children[i], SIGTERM);
	struct slot *s = &slots[me];
	take_reading(&s->after);
	int64_t wall = s->after.realtime - s->before.realtime;
	check_clock(names[me], "monotonic", s->before.monotonic, s->after.monotonic, wall);
	check_clock(names[me], "boot-time", s->before.boottime, s->after.boottime, wall);
	if (me == E)
		check_child_clock("E", 50);
	if (me == B && b_thread)
		check_b_thread();
	for (int i = 0; i < TASKS; i++)
		if (children[i] > 0)
			reap_child(children[i], names[i]);
	s->failures = wl_failures();
	s->checked = 1;
}

/* Forks a child that sets up, says so on the pipe whose read end goes to `*ready`, waits and checks. */
static pid_t start(int me, void (*setup)(void), int *ready)
{
	int p[2];
	if (pipe(p))
		wl_die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		wl_die("fork");
	if (pid == 0) {
		close(p[0]);
		slots[me].pid = getpid();
		memset(children, 0, sizeof(children));
		if (me == B)
			close(to_d[1]); /* D's pipe, which B is forked between the ends of */
		setup();
		take_reading(&slots[me].before);
		if (write(p[1], "y", 1) != 1)
			_exit(3);
		close(p[1]);
		wl_wait();
		finish_task(me);
		_exit(0);
	}
	close(p[1]);
	*ready = p[0];
	return pid;
}

static void await_ready(int me, int ready)
{
	char c = 0;
	if (read(ready, &c, 1) != 1 || c != 'y')
		wl_die("%s did not set up", names[me]);
	close(ready);
}

static pid_t spawn(int me, void (*setup)(void))
{
	int ready;
	pid_t pid = start(me, setup, &ready);
	await_ready(me, ready);
	return pid;
}

static void setup_b1(void)
{
}

static void setup_b(void)
{
	make_for_children(10, 30);
	if (strcmp(mode, "threads") == 0) {
		pthread_t thread;
		static volatile pid_t tid;
		if (pthread_create(&thread, NULL, idle_thread, (void *)&tid))
			wl_die("pthread_create");
		for (int i = 0; i < 500 && !tid; i++)
			usleep(10000);
		if (!tid)
			wl_die("B's thread did not start");
		b_thread = tid;
		char links[2][LINK_SIZE], mine[LINK_SIZE];
		read_b_thread(links);
		link_name("/proc/self/ns/time_for_children", mine);
		if (strcmp(links[1], mine) != 0 || strcmp(links[0], links[1]) == 0)
			wl_die("B's thread does not share B's time namespace for children");
	}
	children[B1] = spawn(B1, setup_b1);
	if (strcmp(mode, "left") == 0)
		enter("/proc/self/ns/time"); /* back: B1's namespace is no task's time_for_children */
}

/* `unreadable`: C then unshares again, so that no task makes its children in C's namespace. */
static int c_unshares_again;

static void setup_c(void)
{
	make_for_children(1000, 1001);
	enter("/proc/self/ns/time_for_children");
	if (c_unshares_again)
		make_for_children(2000, 2000);
}

/* Says its tid in `*tid` (when given), then waits for ever. */
static void *idle_thread(void *tid)
{
	if (tid)
		*(volatile pid_t *)tid = gettid();
	for (;;)
		pause();
	return NULL;
}

static void setup_e(void)
{
	pthread_t thread;
	if (strcmp(mode, "threads") == 0 && pthread_create(&thread, NULL, idle_thread, NULL))
		wl_die("pthread_create");
	make_for_children(50, 50);
}

static void setup_f(void)
{
}

static void setup_g(void)
{
}

/* `threads`: set by the root after the wait; each thread then takes its reading and checks. */
static volatile int threads_check;

/* Thread X (me == X) or Y of the root: a namespace for its own children, G forked by X in it. */
static void *unsharing_thread(void *arg)
{
	int me = (int)(intptr_t)arg;
	make_for_children(me == X ? 300 : 400, me == X ? 300 : 400);
	pthread_t thread;
	if (me == X && strcmp(mode, "thread-shared") == 0 && pthread_create(&thread, NULL, idle_thread, NULL))
		wl_die("pthread_create");
	if (me == X)
		children[G] = spawn(G, setup_g);
	take_reading(&slots[me].before);
	__atomic_store_n(&slots[me].pid, gettid(), __ATOMIC_SEQ_CST);
	while (!threads_check)
		usleep(10000);
	take_reading(&slots[me].after);
	if (me == Y)
		check_child_clock("Y", 400);
	slots[me].failures = wl_failures();
	__atomic_store_n(&slots[me].checked, 1, __ATOMIC_SEQ_CST);
	for (;;)
		pause();
	return NULL;
}

static void start_unsharing_thread(int me)
{
	pthread_t thread;
	if (pthread_create(&thread, NULL, unsharing_thread, (void *)(intptr_t)me))
		wl_die("pthread_create");
	for (int i = 0; i < 500 && !__atomic_load_n(&slots[me].pid, __ATOMIC_SEQ_CST); i++)
		usleep(10000);
	if (!slots[me].pid)
		wl_die("thread %s did not set up", names[me]);
}

/* The root, after the wait: lets its threads check, then waits for them (20 s at most). */
static void check_threads(void)
{
	threads_check = 1;
	for (int i = 0; i < 2000 && !(slots[X].checked && slots[Y].checked); i++)
		usleep(10000);
}

/* D waits (on a pipe from the root) for B's pid, then enters B's time_for_children. */

static void setup_d(void)
{
	close(to_d[1]);
	pid_t b = 0;
	if (read(to_d[0], &b, sizeof(b)) != sizeof(b))
		wl_die("D: no pid of B");
	close(to_d[0]);
	char path[64];
	/* `left`: B went back to its own namespace; B1's is the one it made. */
	if (strcmp(mode, "left") == 0)
		snprintf(path, sizeof(path), "/proc/%d/ns/time", slots[B1].pid);
	else
		snprintf(path, sizeof(path), "/proc/%d/ns/time_for_children", b);
	enter(path);
}

/* Which links were equal before must be equal after, and no others (the host's included). */
static void compare_links(void)
{
	const char *list_before[TASKS * 2 + 1], *list_after[TASKS * 2 + 1];
	char what[TASKS * 2 + 1][32];
	int n = 0;
	for (int i = 0; i < TASKS; i++) {
		list_before[n] = slots[i].before.own;
		list_after[n] = slots[i].after.own;
		snprintf(what[n++], sizeof(what[0]), "%s's time", names[i]);
		list_before[n] = slots[i].before.for_children;
		list_after[n] = slots[i].after.for_children;
		snprintf(what[n++], sizeof(what[0]), "%s's time_for_children", names[i]);
	}
	list_before[n] = host;
	list_after[n] = host;
	snprintf(what[n++], sizeof(what[0]), "the host's");
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++) {
			int was = strcmp(list_before[i], list_before[j]) == 0;
			int is = strcmp(list_after[i], list_after[j]) == 0;
			WL_CHECK(was == is, "%s and %s namespaces: %s before, %s now (%s, %s)", what[i], what[j],
				 was ? "the same" : "different", is ? "the same" : "different", list_after[i],
				 list_after[j]);
		}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	slots = mmap(NULL, sizeof(struct slot) * TASKS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (slots == MAP_FAILED)
		wl_die("mmap");
	link_name("/proc/self/ns/time", host);
	if (argc > 2)
		mode = argv[2];
	children[F] = spawn(F, setup_f);
	c_unshares_again = strcmp(mode, "unreadable") == 0;
	if (strcmp(mode, "host-root") == 0) {
		root_monotonic_days = 0;
	} else {
		make_for_children(100, 200);
		enter("/proc/self/ns/time_for_children");
	}
	if (pipe(to_d))
		wl_die("pipe");
	/* D first: its pid is below B's, and it enters B's namespace once B made it. */
	int d_ready;
	children[D] = start(D, setup_d, &d_ready);
	close(to_d[0]);
	children[B] = spawn(B, setup_b);
	if (write(to_d[1], &children[B], sizeof(pid_t)) != sizeof(pid_t))
		wl_die("telling D B's pid");
	close(to_d[1]);
	await_ready(D, d_ready);
	children[C] = spawn(C, setup_c);
	children[E] = spawn(E, setup_e);
	int threads = strcmp(mode, "threads") == 0 || strcmp(mode, "thread-shared") == 0;
	if (threads) {
		start_unsharing_thread(X);
		start_unsharing_thread(Y);
	}
	take_reading(&slots[R].before);
	wl_ready();
	wl_wait();
	if (threads)
		check_threads();
	finish_task(R);
	for (int i = 0; i < TASKS; i++) {
		if (i == R || (!threads && (i == G || i == X || i == Y)))
			continue;
		WL_CHECK(slots[i].checked == 1, "%s did not check itself", names[i]);
		WL_CHECK(slots[i].failures == 0, "%s failed %d check(s)", names[i], slots[i].failures);
	}
	compare_links();
	WL_CHECK((strcmp(slots[R].after.own, host) == 0) == (root_monotonic_days == 0),
		 "R is in time namespace %s, the host's is %s", slots[R].after.own, host);
	WL_CHECK(strcmp(slots[F].after.own, host) == 0, "F is in %s, not in the host's time namespace %s",
		 slots[F].after.own, host);
	wl_finish();
}
