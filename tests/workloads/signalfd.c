/*
 * signalfd: fd 5 takes SIGUSR1 and SIGUSR2, non-blocking; fd 6 takes SIGRTMIN+3, blocking with
 * FD_CLOEXEC; all three are blocked, and a SIGUSR1 is pending across the dump. After the wait each
 * fd must be a signalfd with its mask and flags, the pending SIGUSR1 must come out of fd 5 (and
 * nothing else), and signals sent afterwards must come out of the fd that takes them.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define FD_USR 5
#define FD_RT 6

static void make_at(int fd, const sigset_t *set, int flags)
{
	int got = signalfd(-1, set, flags);

	if (got < 0 || dup2(got, fd) != fd)
		wl_die("signalfd at fd %d", fd);
	if (got != fd)
		close(got);
	if ((flags & O_CLOEXEC) && fcntl(fd, F_SETFD, FD_CLOEXEC))
		wl_die("FD_CLOEXEC on fd %d", fd);
}

static void check_mask(int fd, const char *mask)
{
	char path[64], info[1024], want[64];

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	snprintf(want, sizeof(want), "sigmask:\t%s", mask);
	if (wl_read_file(path, info, sizeof(info)) < 0) {
		wl_fail("fd %d is gone", fd);
		return;
	}
	WL_CHECK(strstr(info, want), "fd %d is not the signalfd of %s: %s", fd, mask, info);
}

static void check_reads(int fd, int signo)
{
	struct signalfd_siginfo si;
	ssize_t n = read(fd, &si, sizeof(si));

	WL_CHECK(n == sizeof(si) && (int)si.ssi_signo == signo, "fd %d: read %zd, signal %d, not %d", fd, n,
		 n == sizeof(si) ? (int)si.ssi_signo : -1, signo);
}

int main(int argc, char **argv)
{
	struct signalfd_siginfo si;
	sigset_t usr, rt, all;

	wl_init(argc, argv);
	sigemptyset(&usr);
	sigaddset(&usr, SIGUSR1);
	sigaddset(&usr, SIGUSR2);
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN + 3);
	all = usr;
	sigaddset(&all, SIGRTMIN + 3);
	if (sigprocmask(SIG_BLOCK, &all, NULL))
		wl_die("sigprocmask");
	make_at(FD_USR, &usr, SFD_NONBLOCK);
	make_at(FD_RT, &rt, SFD_CLOEXEC);
	kill(getpid(), SIGUSR1);
	wl_ready();
	wl_wait();

	check_mask(FD_USR, "0000000000000a00");
	check_mask(FD_RT, "0000001000000000"); /* SIGRTMIN is 34 in glibc */
	WL_CHECK(fcntl(FD_USR, F_GETFL) & O_NONBLOCK, "fd %d lost O_NONBLOCK", FD_USR);
	WL_CHECK(!(fcntl(FD_RT, F_GETFL) & O_NONBLOCK), "fd %d became non-blocking", FD_RT);
	WL_CHECK(!(fcntl(FD_USR, F_GETFD) & FD_CLOEXEC), "fd %d got FD_CLOEXEC", FD_USR);
	WL_CHECK(fcntl(FD_RT, F_GETFD) & FD_CLOEXEC, "fd %d lost FD_CLOEXEC", FD_RT);
	check_reads(FD_USR, SIGUSR1);
	WL_CHECK(read(FD_USR, &si, sizeof(si)) < 0 && errno == EAGAIN, "fd %d has a signal nobody sent", FD_USR);
	kill(getpid(), SIGUSR2);
	check_reads(FD_USR, SIGUSR2);
	kill(getpid(), SIGRTMIN + 3);
	check_reads(FD_RT, SIGRTMIN + 3);
	wl_finish();
}
