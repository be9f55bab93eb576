/*
 * tree: a process tree with every relation a restore has to rebuild.
 *
 *   root ─┬─ A ── A1          three levels
 *         ├─ B                leader of group B
 *         ├─ C                member of group B (a sibling's group)
 *         ├─ Z                zombie: exited with 42, reaped only at the end
 *         ├─ S                stopped by SIGSTOP
 *         ├─ P ── P1          P: own session; P1: in it, leader of its own group
 *         ├─ (L)              leader of group L: killed and reaped before ready
 *         └─ M                member of group L, whose leader is gone
 *
 * The dead group leader is what zdtm's session01 covers (a restore has to
 * make a helper with L's pid to recreate the group). Memory: a MAP_SHARED
 * anonymous area made before the forks carries every report to the root
 * (so the root sees children's writes only if it is still shared) and a
 * token from the root to them; a private anonymous area filled before the
 * forks has one page per process, which that process marks before ready and
 * again after the wait: every process must see only its own marks.
 *
 * After SIGTERM the root checks Z is a zombie, S is stopped ('T'), L is
 * gone and its own children are the expected ones, then sends SIGTERM to
 * every live process (and SIGCONT to S). Each one checks getppid(),
 * getpgrp(), getsid(0) against what it had at setup, does the memory checks
 * and writes its verdict into its slot; the root reaps everything (Z must
 * give 42) and writes one result.
 *
 *   bin/tree RESULT_FILE
 */
#include "lib.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { ROOT, A, A1, B, C, Z, S, P, P1, L, M, NPROC };
static const char *const names[NPROC] = { "root", "A", "A1", "B", "C", "Z", "S", "P", "P1", "L", "M" };
/* The processes alive after ready, which take part in the checks. */
static const int live[] = { ROOT, A, A1, B, C, S, P, P1, M };
#define NLIVE (int)(sizeof(live) / sizeof(live[0]))

#define PAGE 4096
#define PRIV_WORDS (NPROC * PAGE / 4)
#define FILL(i) (0xa5a50000u + (uint32_t)(i))
#define SETUP_MARK(p) (0x11110000u + (uint32_t)(p))
#define AFTER_MARK(p) (0x22220000u + (uint32_t)(p))
#define TOKEN 0x70c3e11u

struct slot {
	pid_t pid, ppid, pgrp, sid; /* as seen at setup */
	atomic_int ready, done;
	int token_seen;
	int child_status; /* A and P: how A1 / P1 ended */
	char why[200];    /* what differed, empty when nothing did */
};

struct shared {
	atomic_uint token;
	atomic_int marked;
	struct slot s[NPROC];
};

static struct shared *sh;
static uint32_t *priv; /* PRIV_WORDS words, page p belongs to process p */

static void note(int p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(int p, const char *fmt, ...)
{
	char *why = sh->s[p].why;
	size_t len = strlen(why);
	va_list ap;

	if (len + 3 >= sizeof(sh->s[p].why))
		return;
	if (len)
		len += (size_t)snprintf(why + len, sizeof(sh->s[p].why) - len, "; ");
	va_start(ap, fmt);
	vsnprintf(why + len, sizeof(sh->s[p].why) - len, fmt, ap);
	va_end(ap);
}

static void nap_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Polls until *flag is nonzero; 0 when it did not happen within `ms`. */
static int await_flag(atomic_int *flag, int ms)
{
	int64_t end = wl_now_ns() + (int64_t)ms * 1000000;

	while (!atomic_load(flag))
		if (wl_now_ns() > end)
			return 0;
		else
			nap_ms(5);
	return 1;
}

static char proc_state(pid_t pid)
{
	char path[64], stat[512], *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (wl_read_file(path, stat, sizeof(stat)) < 0 || (p = strrchr(stat, ')')) == NULL)
		return '?';
	return p[2];
}

static int await_state(pid_t pid, char state, int ms)
{
	int64_t end = wl_now_ns() + (int64_t)ms * 1000000;

	while (proc_state(pid) != state)
		if (wl_now_ns() > end)
			return 0;
		else
			nap_ms(5);
	return 1;
}

static void record_ids(int p)
{
	struct slot *s = &sh->s[p];

	s->pid = getpid();
	s->ppid = getppid();
	s->pgrp = getpgrp();
	s->sid = getsid(0);
}

/* Every page holds the fill, except ours: our setup mark, and our after-wait mark once `after`. */
static void check_private(int p, int after)
{
	size_t bad = 0, first = 0;

	for (size_t i = 0; i < PRIV_WORDS; i++) {
		uint32_t want = FILL(i);

		if (i == (size_t)p * PAGE / 4)
			want = SETUP_MARK(p);
		else if (after && i == (size_t)p * PAGE / 4 + 2)
			want = AFTER_MARK(p);
		if (priv[i] != want && bad++ == 0)
			first = i;
	}
	if (bad)
		note(p, "private area: %zu words differ, first in page %zu: %#x", bad, first * 4 / PAGE,
		     priv[first]);
}

/* The checks every live process makes after the wait. */
static void check_self(int p)
{
	struct slot *s = &sh->s[p];

	if (getpid() != s->pid)
		note(p, "pid %d, was %d", getpid(), s->pid);
	if (p != ROOT && getppid() != s->ppid) /* the root's parent may be a subreaper now */
		note(p, "ppid %d, was %d", getppid(), s->ppid);
	if (getpgrp() != s->pgrp)
		note(p, "pgrp %d, was %d", getpgrp(), s->pgrp);
	if (getsid(0) != s->sid)
		note(p, "sid %d, was %d", getsid(0), s->sid);
	s->token_seen = (int)atomic_load(&sh->token);

	/* Everyone writes its second mark, then waits for all, so a write leaking into
	 * another process's area would be there before anyone looks. */
	priv[p * PAGE / 4 + 2] = AFTER_MARK(p);
	atomic_fetch_add(&sh->marked, 1);
	for (int64_t end = wl_now_ns() + 10000000000LL; atomic_load(&sh->marked) < NLIVE;) {
		if (wl_now_ns() > end) {
			note(p, "only %d of %d processes marked the shared area", atomic_load(&sh->marked), NLIVE);
			break;
		}
		nap_ms(5);
	}
	check_private(p, 1);
}

/* Body of every child that lives until the end; `kid` is its own child or -1. */
static __attribute__((noreturn)) void member(int p, int kid)
{
	int status = -1;

	priv[p * PAGE / 4] = SETUP_MARK(p); /* after forking `kid`, which must not see it */
	record_ids(p);
	atomic_store(&sh->s[p].ready, 1);
	wl_wait();
	check_self(p);
	if (kid >= 0) {
		if (waitpid(sh->s[kid].pid, &status, 0) != sh->s[kid].pid)
			note(p, "waitpid(%s): %s", names[kid], strerror(errno));
		sh->s[p].child_status = status;
	}
	atomic_store(&sh->s[p].done, 1);
	_exit(sh->s[p].why[0] ? 1 : 0);
}

/* A setup step failed: no process of the tree may outlive the root. */
static void kill_tree(void)
{
	for (int i = 1; i < NPROC; i++)
		if (sh->s[i].pid > 0)
			kill(sh->s[i].pid, SIGKILL);
	while (wait(NULL) > 0)
		;
}
#define SETUP_DIE(...)                                                                             \
	do {                                                                                       \
		kill_tree();                                                                       \
		wl_die(__VA_ARGS__);                                                               \
	} while (0)

static pid_t spawn(int p, void (*body)(int))
{
	pid_t pid = fork();

	if (pid < 0 && getpid() == sh->s[ROOT].pid)
		SETUP_DIE("fork %s", names[p]);
	if (pid < 0) { /* only the root may write the result */
		note(p, "fork failed: %s", strerror(errno));
		_exit(1);
	}
	if (pid == 0) {
		body(p);
		_exit(0);
	}
	sh->s[p].pid = pid;
	return pid;
}

static void plain(int p)
{
	member(p, -1);
}

static void session_kid(int p)
{
	if (setpgid(0, 0) != 0)
		note(p, "setpgid: %s", strerror(errno));
	member(p, -1);
}

static void with_child(int p)
{
	int kid = p + 1; /* A1 follows A, P1 follows P */

	if (p == P && setsid() < 0)
		note(p, "setsid: %s", strerror(errno));
	spawn(kid, p == P ? session_kid : plain);
	member(p, kid);
}

static void join_group(int p)
{
	/* B and L lead their groups; C and M were forked after them, so their pids are known */
	pid_t leader = p == C ? sh->s[B].pid : p == M ? sh->s[L].pid : 0;

	if (setpgid(0, leader) != 0)
		note(p, "setpgid(%d): %s", leader, strerror(errno));
	if (p == L) { /* only there to give its group a pid; killed before ready */
		for (;;)
			pause();
	}
	member(p, -1);
}

static void zombie(int p)
{
	(void)p;
	_exit(42);
}

/* The layout drawn at the top must hold before ready. */
static void check_layout(void)
{
	const struct slot *s = sh->s;
	const struct {
		int p, parent, pgrp, sid; /* indexes; -1: the root's */
	} want[] = {
		{ A, ROOT, -1, -1 }, { A1, A, -1, -1 }, { B, ROOT, B, -1 },  { C, ROOT, B, -1 },
		{ S, ROOT, -1, -1 }, { P, ROOT, P, P }, { P1, P, P1, P },    { M, ROOT, L, -1 },
	};

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		const struct slot *x = &s[want[i].p];
		pid_t pgrp = want[i].pgrp < 0 ? s[ROOT].pgrp : s[want[i].pgrp].pid;
		pid_t sid = want[i].sid < 0 ? s[ROOT].sid : s[want[i].sid].pid;

		if (x->ppid != s[want[i].parent].pid || x->pgrp != pgrp || x->sid != sid)
			SETUP_DIE("setup: %s has ppid %d pgrp %d sid %d, wanted %d %d %d", names[want[i].p], x->ppid,
			       x->pgrp, x->sid, s[want[i].parent].pid, pgrp, sid);
		if (x->why[0])
			SETUP_DIE("setup: %s: %s", names[want[i].p], x->why);
	}
}

/* The root's children must be exactly A, B, C, Z, S, P and M. */
static void check_children(void)
{
	static const int kids[] = { A, B, C, Z, S, P, M };
	char path[64], text[1024], *tok, *save;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", getpid(), getpid());
	if (wl_read_file(path, text, sizeof(text)) < 0) {
		wl_log("no %s, children not listed", path);
		return;
	}
	for (tok = strtok_r(text, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save), n++) {
		pid_t pid = (pid_t)atoi(tok);
		int known = 0;

		for (size_t i = 0; i < sizeof(kids) / sizeof(kids[0]); i++)
			known |= sh->s[kids[i]].pid == pid;
		WL_CHECK(known, "root has an unexpected child %d", pid);
	}
	WL_CHECK(n == 7, "root has %d children, expected 7", n);
}

static void kill_all_live(int sig)
{
	for (int i = 1; i < NLIVE; i++)
		kill(sh->s[live[i]].pid, sig);
}

int main(int argc, char **argv)
{
	siginfo_t si;
	int status;

	wl_init(argc, argv);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	priv = mmap(NULL, PRIV_WORDS * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED || priv == MAP_FAILED)
		wl_die("mmap");
	sh->s[ROOT].pid = getpid();
	for (size_t i = 0; i < PRIV_WORDS; i++)
		priv[i] = FILL(i);

	/* A leader's group must exist before its member tries to join: the parent makes it
	 * at once (the leader does too, whichever runs first). */
	spawn(A, with_child);
	setpgid(spawn(B, join_group), 0);
	spawn(C, join_group);
	spawn(Z, zombie);
	spawn(S, plain);
	spawn(P, with_child);
	setpgid(spawn(L, join_group), 0);
	spawn(M, join_group);
	priv[0] = SETUP_MARK(ROOT);
	record_ids(ROOT);

	for (int i = 1; i < NLIVE; i++)
		if (!await_flag(&sh->s[live[i]].ready, 10000))
			SETUP_DIE("setup: %s did not get ready", names[live[i]]);
	if (waitid(P_PID, (id_t)sh->s[Z].pid, &si, WEXITED | WNOWAIT) != 0)
		SETUP_DIE("waitid(Z)");
	kill(sh->s[L].pid, SIGKILL);
	if (waitpid(sh->s[L].pid, &status, 0) != sh->s[L].pid)
		SETUP_DIE("waitpid(L)");
	kill(sh->s[S].pid, SIGSTOP);
	if (!await_state(sh->s[S].pid, 'T', 10000))
		SETUP_DIE("setup: S did not stop");
	check_layout();
	check_private(ROOT, 0);
	if (sh->s[ROOT].why[0])
		SETUP_DIE("setup: root: %s", sh->s[ROOT].why);

	wl_ready();
	wl_wait();

	WL_CHECK(proc_state(sh->s[Z].pid) == 'Z', "Z is in state %c, not a zombie", proc_state(sh->s[Z].pid));
	WL_CHECK(proc_state(sh->s[S].pid) == 'T', "S is in state %c, not stopped", proc_state(sh->s[S].pid));
	WL_CHECK(kill(sh->s[L].pid, 0) != 0 && errno == ESRCH, "pid %d of the dead group leader L exists",
		 sh->s[L].pid);
	check_children();

	atomic_store(&sh->token, TOKEN);
	kill_all_live(SIGTERM);
	kill(sh->s[S].pid, SIGCONT);
	check_self(ROOT);
	for (int i = 1; i < NLIVE; i++) {
		struct slot *s = &sh->s[live[i]];

		if (!await_flag(&s->done, 15000)) {
			wl_fail("%s (pid %d) did not report through the shared area", names[live[i]], s->pid);
			kill(s->pid, SIGKILL);
		}
	}

	for (int i = 0; i < NPROC; i++) {
		struct slot *s = &sh->s[i];

		if (s->why[0])
			wl_fail("%s (pid %d): %s", names[i], s->pid, s->why);
		if (i != ROOT && i != Z && i != L && atomic_load(&s->done) && s->token_seen != (int)TOKEN)
			wl_fail("%s saw token %#x, not the root's %#x", names[i], s->token_seen, TOKEN);
		if (i == ROOT || i == A1 || i == P1 || i == L)
			continue; /* not the root's to reap: A and P report theirs */
		if (waitpid(s->pid, &status, 0) != s->pid) {
			wl_fail("waitpid(%s %d): %s", names[i], s->pid, strerror(errno));
			continue;
		}
		if (i == Z)
			WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 42, "zombie's status is %#x, expected exit 42",
				 status);
		else
			WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s ended with status %#x", names[i],
				 status);
		if (i == A || i == P)
			WL_CHECK(WIFEXITED(s->child_status) && WEXITSTATUS(s->child_status) == 0,
				 "%s's child ended with status %#x", names[i], s->child_status);
	}
	WL_CHECK(waitpid(-1, &status, WNOHANG) < 0 && errno == ECHILD, "the root has children left");
	wl_finish();
}
