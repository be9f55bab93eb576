/*
 * signalfd_held: a signalfd for SIGUSR1 and SIGUSR2 (both blocked) at fd 5, non-blocking. criu-ts
 * does not take signalfds itself: the plugin tests dump and restore this through a plugin. After
 * the wait the fd must still be a signalfd with the same mask and flags, and a SIGUSR2 the
 * process sends itself must come out of it.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define SFD 5

int main(int argc, char **argv)
{
	struct signalfd_siginfo si;
	char path[64], info[1024];
	sigset_t set;
	int fd;

	wl_init(argc, argv);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		wl_die("sigprocmask");
	fd = signalfd(-1, &set, SFD_NONBLOCK);
	if (fd < 0 || dup2(fd, SFD) != SFD)
		wl_die("signalfd");
	close(fd);
	wl_ready();
	wl_wait();

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", SFD);
	if (wl_read_file(path, info, sizeof(info)) < 0) {
		wl_fail("fd %d is gone", SFD);
		wl_finish();
	}
	WL_CHECK(strstr(info, "sigmask:\t0000000000000a00"), "fd %d is not the signalfd of USR1+USR2: %s", SFD, info);
	WL_CHECK(fcntl(SFD, F_GETFL) & O_NONBLOCK, "fd %d lost O_NONBLOCK", SFD);
	WL_CHECK(read(SFD, &si, sizeof(si)) < 0 && errno == EAGAIN, "fd %d has a signal nobody sent", SFD);
	kill(getpid(), SIGUSR2);
	WL_CHECK(read(SFD, &si, sizeof(si)) == sizeof(si) && si.ssi_signo == SIGUSR2,
		 "SIGUSR2 did not come out of the signalfd");
	wl_finish();
}
