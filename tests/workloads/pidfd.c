/*
 * pidfd: pidfds on processes of the tree and on processes that are gone.
 *   fd 5: child A (running until the end), fd 6: A again, PIDFD_NONBLOCK;
 *   fd 7 and fd 8: child B, which exited and was reaped before the dump (a dead process);
 *   fd 9: ourselves; fd 10: child C, a zombie (exit status 7) until the end.
 * With the argument "outside", fd 11 is a pidfd on our parent, which is not in the tree: a dump
 * must refuse it and leave us running.
 * After the wait: each fd names its process (fdinfo Pid, -1 for B), A takes a signal through fd 5
 * and its death shows on fd 6 (non-blocking: polled first), B's fds are readable and refuse signals (ESRCH), and waitid on fd
 * 10 reaps C with status 7.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif

static int pidfd_open(pid_t pid, unsigned int flags)
{
	return syscall(SYS_pidfd_open, pid, flags);
}

static int send_signal(int fd, int sig)
{
	return syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
}

static void at_fd(int got, int fd)
{
	if (got < 0 || dup2(got, fd) != fd)
		wl_die("pidfd at fd %d", fd);
	if (got != fd)
		close(got);
}

/* fdinfo's Pid of fd: the pid, -1 for a process that is gone, -2 if unreadable. */
static long pid_of(int fd)
{
	char path[64], info[1024], *p;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (wl_read_file(path, info, sizeof(info)) < 0 || !(p = strstr(info, "\nPid:")))
		return -2;
	return strtol(p + 5, NULL, 10);
}

static pid_t child(int status)
{
	pid_t pid = fork();

	if (pid < 0)
		wl_die("fork");
	if (pid == 0) {
		signal(SIGTERM, SIG_DFL);
		if (status >= 0)
			_exit(status);
		for (;;)
			pause();
	}
	return pid;
}

int main(int argc, char **argv)
{
	struct pollfd p[2];
	siginfo_t si;
	pid_t a, b, c;

	wl_init(argc, argv);
	a = child(-1);
	at_fd(pidfd_open(a, 0), 5);
	at_fd(pidfd_open(a, PIDFD_NONBLOCK), 6);
	b = child(-1);
	at_fd(pidfd_open(b, 0), 7);
	at_fd(pidfd_open(b, 0), 8);
	kill(b, SIGKILL);
	if (waitpid(b, NULL, 0) != b)
		wl_die("waitpid B");
	at_fd(pidfd_open(getpid(), 0), 9);
	c = child(7);
	at_fd(pidfd_open(c, 0), 10);
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, c, &si, WEXITED | WNOWAIT) || si.si_pid != c)
		wl_die("waiting for C to end");
	if (argc > 2 && strcmp(argv[2], "outside") == 0)
		at_fd(pidfd_open(getppid(), 0), 11);
	wl_ready();
	wl_wait();

	WL_CHECK(pid_of(5) == a && pid_of(6) == a, "fds 5, 6: Pid %ld, %ld, not A %d", pid_of(5), pid_of(6), a);
	WL_CHECK(pid_of(7) == -1 && pid_of(8) == -1, "fds 7, 8: Pid %ld, %ld, not -1 (B is gone)", pid_of(7), pid_of(8));
	WL_CHECK(pid_of(9) == getpid(), "fd 9: Pid %ld, not ours %d", pid_of(9), getpid());
	WL_CHECK(pid_of(10) == c, "fd 10: Pid %ld, not C %d", pid_of(10), c);
	WL_CHECK(fcntl(6, F_GETFL) & O_NONBLOCK, "fd 6 lost PIDFD_NONBLOCK");
	WL_CHECK(!(fcntl(5, F_GETFL) & O_NONBLOCK), "fd 5 became non-blocking");

	WL_CHECK(send_signal(7, 0) < 0 && errno == ESRCH, "fd 7: B takes signals");
	p[0] = (struct pollfd){ .fd = 7, .events = POLLIN };
	p[1] = (struct pollfd){ .fd = 8, .events = POLLIN };
	WL_CHECK(poll(p, 2, 0) == 2, "fds 7, 8 do not show B as ended");

	memset(&si, 0, sizeof(si));
	WL_CHECK(waitid(P_PIDFD, 10, &si, WEXITED) == 0 && si.si_pid == c && si.si_status == 7,
		 "fd 10: waitid gave pid %d status %d, not C %d with 7", si.si_pid, si.si_status, c);

	WL_CHECK(send_signal(5, 0) == 0, "fd 5: A does not take signals: %s", strerror(errno));
	send_signal(5, SIGKILL);
	p[0] = (struct pollfd){ .fd = 6, .events = POLLIN };
	WL_CHECK(poll(p, 1, 5000) == 1, "fd 6 does not show A's end");
	memset(&si, 0, sizeof(si));
	WL_CHECK(waitid(P_PIDFD, 6, &si, WEXITED) == 0 && si.si_pid == a && si.si_status == SIGKILL,
		 "fd 6: waitid gave pid %d status %d, not A %d killed", si.si_pid, si.si_status, a);
	kill(a, SIGKILL);
	waitpid(a, NULL, WNOHANG);
	wl_finish();
}
