/*
 * stopped: tasks in a group stop, which must stay stopped through every
 * dump and restore, with the signal that stopped them, and go on when
 * SIGCONT comes.
 *
 *   root ─┬─ A        stopped itself with SIGSTOP
 *         ├─ B        3 threads, own process group, stopped itself with SIGTSTP
 *         ├─ C        stopped with SIGSTOP, then sent two more SIGSTOPs (queued)
 *         ├─ D ── E   D: own group, stopped itself with SIGTSTP after it
 *         │           stopped its child E with SIGSTOP
 *         └─ F        stopped by the root with SIGSTOP while blocked in read()
 *                     on a pipe: the read must go on after SIGCONT and get
 *                     the byte the root writes just before it
 *
 * B and D lead groups whose parent (root) is in another group of the same
 * session, so SIGTSTP stops them (an orphaned group would ignore it).
 * Every thread counts in a shared area once it runs again: the counts must
 * stay 0 until the root sends SIGCONT, so a restore that lets a stopped task
 * run for a moment is caught. The root looks at each stop with
 * waitid(WSTOPPED|WNOWAIT), so the report stays pending for the next look:
 * after a restore the task stops again and its parent gets a new report,
 * which must name the same signal.
 *
 * After SIGTERM the root checks each child is in state T (every thread of
 * B), that its stop report names its signal and that no CLD_CONTINUED is
 * pending; then sends SIGCONT, waits for the CLD_CONTINUED report and for
 * every thread's count to move. D, once running, does the same checks on E
 * (stopped by SIGSTOP) and reaps it. Each child exits 0 when all is well;
 * the root reaps them all.
 *
 *   bin/stopped RESULT_FILE
 */
#include "lib.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { A, B, C, D, E, F, NPROC };
static const char *const names[NPROC] = { "A", "B", "C", "D", "E", "F" };
static const int stop_signal[NPROC] = { SIGSTOP, SIGTSTP, SIGSTOP, SIGTSTP, SIGSTOP, SIGSTOP };
#define B_THREADS 3
#define DEADLINE_NS (20LL * 1000 * 1000 * 1000)

struct shared {
	pid_t pid[NPROC];
	atomic_long count[NPROC][B_THREADS]; /* per thread, once running again */
	atomic_int finish; /* set by the root: children leave their loops */
	atomic_int b_armed; /* set by the root once B is stopped: B's threads count from then on */
	atomic_int e_checked; /* D's verdict on E: 1 good, -1 bad */
	char e_failure[512];
};
static struct shared *sh;
static int f_pipe[2];

static void pause_ms(int ms)
{
	struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&t, NULL);
}

static char state_of(pid_t pid, pid_t tid)
{
	char path[64], buf[512], *p;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid, (int)tid);
	if (wl_read_file(path, buf, sizeof(buf)) < 0)
		return '?';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : '?';
}

/* Waits until every thread of pid is in state T; false after the deadline. */
static int wait_stopped(pid_t pid)
{
	int64_t end = wl_now_ns() + DEADLINE_NS;
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	while (wl_now_ns() < end) {
		DIR *dir = opendir(path);
		struct dirent *d;
		int all = 1, seen = 0;

		if (!dir)
			return 0;
		while ((d = readdir(dir)))
			if (d->d_name[0] != '.') {
				seen++;
				if (state_of(pid, atoi(d->d_name)) != 'T')
					all = 0;
			}
		closedir(dir);
		if (all && seen)
			return 1;
		pause_ms(10);
	}
	return 0;
}

static void *counting_thread(void *arg)
{
	long i = (long)arg;

	while (!atomic_load(&sh->b_armed) && !atomic_load(&sh->finish))
		pause_ms(1);
	while (!atomic_load(&sh->finish)) {
		atomic_fetch_add(&sh->count[B][i], 1);
		pause_ms(1);
	}
	return NULL;
}

/* What a child does once it runs again: count until the root says finish. */
static void count_until_finish(int p)
{
	while (!atomic_load(&sh->finish)) {
		atomic_fetch_add(&sh->count[p][0], 1);
		pause_ms(1);
	}
}

/*
 * The checks of a stopped child `who` (of the caller) before and after SIGCONT.
 * `threads` counts are to move once it runs. Failures are written with `fail`.
 */
static void check_stopped_child(int who, int threads, void (*fail)(const char *, ...))
{
	pid_t pid = sh->pid[who];
	siginfo_t si;
	int64_t end;

	if (!wait_stopped(pid))
		fail("%s is not stopped (state %c)", names[who], state_of(pid, pid));
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, pid, &si, WSTOPPED | WNOHANG | WNOWAIT))
		fail("waitid(%s, WSTOPPED): %s", names[who], strerror(errno));
	else if (si.si_pid != pid || si.si_code != CLD_STOPPED || si.si_status != stop_signal[who])
		fail("%s: stop report pid %d code %d status %d, expected stopped by %d", names[who], (int)si.si_pid,
		     si.si_code, si.si_status, stop_signal[who]);
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, pid, &si, WCONTINUED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
		fail("%s: a CLD_CONTINUED report (code %d) before any SIGCONT", names[who], si.si_code);
	for (int t = 0; t < threads; t++)
		if (atomic_load(&sh->count[who][t]))
			fail("%s thread %d ran while stopped (%ld turns)", names[who], t, atomic_load(&sh->count[who][t]));

	kill(pid, SIGCONT);
	end = wl_now_ns() + DEADLINE_NS;
	memset(&si, 0, sizeof(si));
	while (wl_now_ns() < end) {
		if (waitid(P_PID, pid, &si, WCONTINUED | WNOHANG) == 0 && si.si_pid == pid)
			break;
		pause_ms(5);
	}
	if (si.si_pid != pid || si.si_code != CLD_CONTINUED)
		fail("%s: no CLD_CONTINUED report after SIGCONT (code %d)", names[who], si.si_code);
	for (int t = 0; t < threads; t++) {
		while (!atomic_load(&sh->count[who][t]) && wl_now_ns() < end)
			pause_ms(5);
		if (!atomic_load(&sh->count[who][t]))
			fail("%s thread %d does not run after SIGCONT", names[who], t);
	}
}

static void e_fail(const char *fmt, ...)
{
	va_list ap;
	size_t len = strlen(sh->e_failure);

	va_start(ap, fmt);
	vsnprintf(sh->e_failure + len, sizeof(sh->e_failure) - len, fmt, ap);
	va_end(ap);
	atomic_store(&sh->e_checked, -1);
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

static void child_a_or_c(int p)
{
	kill(getpid(), SIGSTOP);
	count_until_finish(p);
	_exit(0);
}

static void child_b(void)
{
	pthread_t t[B_THREADS];

	setpgid(0, 0);
	for (long i = 1; i < B_THREADS; i++)
		if (pthread_create(&t[i], NULL, counting_thread, (void *)i))
			_exit(3);
	kill(getpid(), SIGTSTP);
	counting_thread((void *)0L);
	for (long i = 1; i < B_THREADS; i++)
		pthread_join(t[i], NULL);
	_exit(0);
}

static void child_d(void)
{
	pid_t e;
	int status;

	setpgid(0, 0);
	e = fork();
	if (e < 0)
		_exit(3);
	if (e == 0) {
		kill(getpid(), SIGSTOP);
		count_until_finish(E);
		_exit(0);
	}
	sh->pid[E] = e;
	if (!wait_stopped(e))
		_exit(4);
	kill(getpid(), SIGTSTP);
	/* Running again: look at E as the root looked at us. */
	check_stopped_child(E, 1, e_fail);
	if (atomic_load(&sh->e_checked) == 0)
		atomic_store(&sh->e_checked, 1);
	count_until_finish(D);
	if (waitpid(e, &status, 0) != e || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		_exit(5);
	_exit(0);
}

static void child_f(void)
{
	char c = 0;

	close(f_pipe[1]);
	if (read(f_pipe[0], &c, 1) != 1 || c != 'x')
		_exit(6);
	count_until_finish(F);
	_exit(0);
}

static pid_t spawn(int p, void (*body)(void))
{
	pid_t pid = fork();

	if (pid < 0)
		wl_die("fork %s", names[p]);
	if (pid == 0) {
		body();
		_exit(0);
	}
	sh->pid[p] = pid;
	return pid;
}

static void body_a(void) { child_a_or_c(A); }
static void body_c(void) { child_a_or_c(C); }

static void end_children(void)
{
	atomic_store(&sh->finish, 1);
	for (int p = A; p < NPROC; p++)
		if (sh->pid[p])
			kill(sh->pid[p], SIGCONT);
}

int main(int argc, char **argv)
{
	int status;

	wl_init(argc, argv);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		wl_die("mmap");
	memset(sh, 0, sizeof(*sh));

	if (pipe(f_pipe))
		wl_die("pipe");
	spawn(F, child_f);
	close(f_pipe[0]);
	pause_ms(50); /* F blocks in read() */
	kill(sh->pid[F], SIGSTOP);
	spawn(A, body_a);
	spawn(B, child_b);
	spawn(C, body_c);
	spawn(D, child_d);
	for (int p = A; p < NPROC; p++)
		if (p != E && !wait_stopped(sh->pid[p])) {
			end_children();
			wl_die("setup: %s did not stop", names[p]);
		}
	atomic_store(&sh->b_armed, 1);
	/* C is stopped already: these stay queued until SIGCONT discards them. */
	kill(sh->pid[C], SIGSTOP);
	kill(sh->pid[C], SIGSTOP);
	wl_log("A %d, B %d, C %d, D %d, E %d, F %d", sh->pid[A], sh->pid[B], sh->pid[C], sh->pid[D], sh->pid[E],
	       sh->pid[F]);
	wl_ready();
	wl_wait();

	check_stopped_child(A, 1, root_fail);
	check_stopped_child(B, B_THREADS, root_fail);
	check_stopped_child(C, 1, root_fail);
	check_stopped_child(D, 1, root_fail);
	if (write(f_pipe[1], "x", 1) != 1)
		wl_fail("write to F's pipe: %s", strerror(errno));
	check_stopped_child(F, 1, root_fail);
	{
		int64_t end = wl_now_ns() + DEADLINE_NS;

		while (atomic_load(&sh->e_checked) == 0 && wl_now_ns() < end)
			pause_ms(5);
		if (atomic_load(&sh->e_checked) != 1)
			wl_fail("D about E: %s", sh->e_failure[0] ? sh->e_failure : "no verdict");
	}
	end_children();
	for (int p = A; p < NPROC; p++) {
		if (p == E)
			continue;
		if (waitpid(sh->pid[p], &status, 0) != sh->pid[p])
			wl_fail("waitpid %s: %s", names[p], strerror(errno));
		else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			wl_fail("%s ended with status %#x", names[p], status);
	}
	wl_finish();
}
