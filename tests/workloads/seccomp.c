/*
 * seccomp: a process under two stacked seccomp filters: the first makes getppid() and getpgrp()
 * fail with ENOMSG, the second kills the process on acct() and makes getpgrp() fail with EXFULL
 * (of two errno answers the newest filter's wins: the order of the filters shows). Checked before
 * the wait and after it, in every thread: getppid gives -1/ENOMSG, getpgrp -1/EXFULL,
 * /proc/self/task/TID/status says Seccomp 2 with the same
 * Seccomp_filters count as before, and a child forked after the wait is killed by SIGSYS when it
 * calls acct().
 *   bin/seccomp RESULT_FILE [threads|mixed] [strict]
 * `threads`: three more threads exist first, and both filters are installed with
 * SECCOMP_FILTER_FLAG_TSYNC, so all share them. `mixed`: the first filter with TSYNC, the second
 * on the main thread alone (one filter in the other threads, two in the main one).
 * `strict`: also a child in strict mode (SECCOMP_MODE_STRICT) blocked in read() on a pipe; after
 * the wait it must still say Seccomp 1 and answer a byte with a byte, then end by exit().
 * `nocaps`: as a container's init under runc (Podman's default profile): the filters are installed
 * with CAP_SYS_ADMIN instead of no_new_privs, then CAP_SYS_ADMIN is dropped (effective, permitted);
 * a restore must install them before it sets the credentials. After the wait no_new_privs must
 * still be off and CAP_SYS_ADMIN still gone.
 */
#include "lib.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NTHREADS 3

/* A filter answering syscall nr1 with action1 and nr2 with action2, allowing the rest. */
static int install(int nr1, unsigned int action1, int nr2, unsigned int action2, unsigned int flags)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned int)nr1, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, action1),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned int)nr2, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, action2),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(code) / sizeof(code[0]), .filter = code };

	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

/* "Seccomp:" and "Seccomp_filters:" of one thread. */
static void seccomp_status(pid_t tid, int *mode, int *filters)
{
	char path[64], buf[4096];
	const char *at;

	*mode = *filters = -1;
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	if (wl_read_file(path, buf, sizeof(buf)) < 0)
		return;
	at = strstr(buf, "\nSeccomp:");
	if (at)
		*mode = atoi(at + strlen("\nSeccomp:"));
	at = strstr(buf, "\nSeccomp_filters:");
	if (at)
		*filters = atoi(at + strlen("\nSeccomp_filters:"));
}

struct thread_view {
	pid_t tid;
	int want_getpgrp_errno; /* EXFULL under both filters, ENOMSG under the first alone */
	int filters_before;
	int mode, filters, getppid_errno, getpgrp_errno;
	long getppid_ret, getpgrp_ret;
};

static struct thread_view views[NTHREADS + 1];
static volatile int threads_up;

/* What a thread sees of its seccomp now. */
static void look(struct thread_view *v)
{
	errno = 0;
	v->getppid_ret = syscall(SYS_getppid);
	v->getppid_errno = errno;
	errno = 0;
	v->getpgrp_ret = syscall(SYS_getpgrp);
	v->getpgrp_errno = errno;
	seccomp_status(v->tid, &v->mode, &v->filters);
}

static void *thread_main(void *arg)
{
	struct thread_view *v = arg;

	v->tid = (pid_t)syscall(SYS_gettid);
	__atomic_add_fetch(&threads_up, 1, __ATOMIC_SEQ_CST);
	while (!wl_stop)
		usleep(20000);
	look(v);
	return NULL;
}

static void check_view(const char *who, const struct thread_view *v)
{
	WL_CHECK(v->getppid_ret == -1 && v->getppid_errno == ENOMSG,
		 "%s (tid %d): getppid gave %ld errno %d, expected -1 ENOMSG", who, v->tid, v->getppid_ret,
		 v->getppid_errno);
	WL_CHECK(v->getpgrp_ret == -1 && v->getpgrp_errno == v->want_getpgrp_errno,
		 "%s (tid %d): getpgrp gave %ld errno %d, expected -1 errno %d (the newest filter's)", who, v->tid,
		 v->getpgrp_ret, v->getpgrp_errno, v->want_getpgrp_errno);
	WL_CHECK(v->mode == 2, "%s (tid %d): Seccomp %d, expected 2", who, v->tid, v->mode);
	WL_CHECK(v->filters == v->filters_before, "%s (tid %d): Seccomp_filters %d, expected %d", who, v->tid,
		 v->filters, v->filters_before);
}

/* A child in strict mode: answers each byte read on `in` with the same byte on `out`, 'q' ends it. */
static pid_t strict_child(int *to, int *from)
{
	int a[2], b[2];
	pid_t pid;

	if (pipe(a) || pipe(b))
		wl_die("pipe");
	pid = fork();
	if (pid < 0)
		wl_die("fork");
	if (pid == 0) {
		char c;

		close(a[1]);
		close(b[0]);
		if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT))
			syscall(SYS_exit, 2);
		for (;;) {
			if (syscall(SYS_read, a[0], &c, 1) != 1)
				syscall(SYS_exit, 3);
			if (syscall(SYS_write, b[1], &c, 1) != 1)
				syscall(SYS_exit, 4);
			if (c == 'q')
				syscall(SYS_exit, 0);
		}
	}
	close(a[0]);
	close(b[1]);
	*to = a[1];
	*from = b[0];
	return pid;
}

static void check_strict(pid_t child, int to, int from)
{
	char path[64], buf[4096], c = 0;
	const char *at;
	int status;

	snprintf(path, sizeof(path), "/proc/%d/status", child);
	WL_CHECK(wl_read_file(path, buf, sizeof(buf)) > 0 && (at = strstr(buf, "\nSeccomp:")) != NULL &&
			 atoi(at + strlen("\nSeccomp:")) == 1,
		 "the strict child is not in strict mode");
	WL_CHECK(write(to, "x", 1) == 1 && read(from, &c, 1) == 1 && c == 'x', "the strict child did not echo x");
	WL_CHECK(write(to, "q", 1) == 1 && read(from, &c, 1) == 1 && c == 'q', "the strict child did not echo q");
	WL_CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		 "the strict child ended with status %#x", status);
}

/* A child forked now must be killed by SIGSYS on acct(). */
static void check_kill(void)
{
	int status = 0;
	pid_t pid = fork();

	if (pid == 0) {
		syscall(SYS_acct, NULL);
		_exit(5); /* survived: the filter is gone */
	}
	WL_CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS,
		 "a child calling acct() ended with status %#x, expected death by SIGSYS", status);
}

/* Whether CAP_SYS_ADMIN is in the effective or permitted set, by capget. */
static int has_sys_admin(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];

	if (syscall(SYS_capget, &hdr, data))
		wl_die("capget");
	return ((data[0].effective | data[0].permitted) >> CAP_SYS_ADMIN) & 1;
}

/* Drops CAP_SYS_ADMIN from the effective and permitted sets, by capset. */
static void drop_sys_admin(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];

	if (syscall(SYS_capget, &hdr, data))
		wl_die("capget");
	data[0].effective &= ~(1u << CAP_SYS_ADMIN);
	data[0].permitted &= ~(1u << CAP_SYS_ADMIN);
	if (syscall(SYS_capset, &hdr, data))
		wl_die("capset");
}

int main(int argc, char **argv)
{
	int threads = 0, mixed = 0, strict = 0, nocaps = 0, to = -1, from = -1, i, n;
	pthread_t th[NTHREADS];
	pid_t strict_pid = -1;

	wl_init(argc, argv);
	for (i = 2; i < argc; i++) {
		threads |= !strcmp(argv[i], "threads") || !strcmp(argv[i], "mixed");
		mixed |= !strcmp(argv[i], "mixed");
		strict |= !strcmp(argv[i], "strict");
		nocaps |= !strcmp(argv[i], "nocaps");
	}
	n = threads ? NTHREADS : 0;
	if (strict)
		strict_pid = strict_child(&to, &from);
	for (i = 0; i < n; i++)
		if (pthread_create(&th[i], NULL, thread_main, &views[i + 1]))
			wl_die("pthread_create");
	while (threads_up < n)
		usleep(1000);
	if (!nocaps && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		wl_die("PR_SET_NO_NEW_PRIVS");
	if (install(SYS_getppid, SECCOMP_RET_ERRNO | ENOMSG, SYS_getpgrp, SECCOMP_RET_ERRNO | ENOMSG,
		    threads ? SECCOMP_FILTER_FLAG_TSYNC : 0))
		wl_die("seccomp(getppid)");
	if (install(SYS_acct, SECCOMP_RET_KILL_PROCESS, SYS_getpgrp, SECCOMP_RET_ERRNO | EXFULL,
		    threads && !mixed ? SECCOMP_FILTER_FLAG_TSYNC : 0))
		wl_die("seccomp(acct)");
	if (nocaps) {
		drop_sys_admin();
		if (has_sys_admin())
			wl_die("CAP_SYS_ADMIN is still there");
	}
	views[0].tid = getpid();
	for (i = 0; i <= n; i++) {
		views[i].want_getpgrp_errno = mixed && i > 0 ? ENOMSG : EXFULL;
		int mode;

		seccomp_status(views[i].tid, &mode, &views[i].filters_before);
		if (mode != 2 || views[i].filters_before < 1)
			wl_die("thread %d: Seccomp %d, Seccomp_filters %d", views[i].tid, mode, views[i].filters_before);
	}
	look(&views[0]);
	check_view("main before the wait", &views[0]);
	if (wl_failures())
		wl_die("the filters do not work before the wait");
	wl_ready();
	wl_wait();
	look(&views[0]);
	for (i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	for (i = 0; i <= n; i++)
		check_view(i ? "a thread" : "main", &views[i]);
	check_kill();
	if (nocaps) {
		WL_CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 0, "no_new_privs is on after the wait");
		WL_CHECK(!has_sys_admin(), "CAP_SYS_ADMIN is back after the wait");
	}
	if (strict)
		check_strict(strict_pid, to, from);
	wl_finish();
}
