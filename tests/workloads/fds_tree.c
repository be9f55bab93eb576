/*
 * fds_tree: fds of the new kinds shared between a parent P and its child C.
 *   fd 5 (P): RESULT.fifo read-write, 1000 bytes written into it; fd 6 (C): the same FIFO opened by C
 *             itself, read-only non-blocking: the bytes must come out of it once.
 *   fd 7 (both): one memfd open file description (forked), offset 3; fd 8 (C): C's own read-only open
 *             of it through /proc/self/fd/7.
 *   fd 9 (P): a pty master; fd 10 (C): its slave, opened by C, which leads a session of its own
 *             whose controlling terminal the slave is (C is its foreground group); fd 16 (C):
 *             /dev/tty.
 *   fd 11 (both): one timerfd (forked), 1000 s left at the start.
 *   fd 13: P's pidfd on C, and C's pidfd on P.
 *   fd 14 (P): an epoll set watching fd 15 (P), a signalfd for SIGUSR1 (blocked), and fd 12 (P), an
 *             inotify fd watching RESULT.fifo: both must wake the set after the restore.
 * On SIGTERM P passes it on; C checks its side and exits 0 or 1 (its failures in the log), having
 * written "hi" into the pty; P then checks its side, reads "hi" from the master and C's status.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define SEC 1000000000LL

static char fifo[256], pts[64];
static int64_t deadline;

static void at_fd(int got, int fd)
{
	if (got < 0 || dup2(got, fd) != fd)
		wl_die("fd %d", fd);
	if (got != fd)
		close(got);
}

static int64_t mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * SEC + ts.tv_nsec;
}

static void check_timer(const char *who)
{
	struct itimerspec its;
	int64_t left, want = deadline - mono();

	if (timerfd_gettime(11, &its)) {
		wl_fail("%s: fd 11: %s", who, strerror(errno));
		return;
	}
	left = its.it_value.tv_sec * SEC + its.it_value.tv_nsec;
	WL_CHECK(left > want - SEC / 2 && left < want + SEC / 2, "%s: fd 11: %lld ms left, expected %lld", who,
		 (long long)(left / 1000000), (long long)(want / 1000000));
}

static long pidfd_pid(int fd)
{
	char path[64], info[1024], *p;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (wl_read_file(path, info, sizeof(info)) < 0 || !(p = strstr(info, "\nPid:")))
		return -2;
	return strtol(p + 5, NULL, 10);
}

static void child_checks(pid_t parent)
{
	char buf[2048], name[64];
	struct stat a, b;
	ssize_t n;

	n = read(6, buf, sizeof(buf));
	WL_CHECK(n == 1000, "C: fd 6 held %zd bytes of the FIFO, not 1000", n);
	WL_CHECK(read(6, buf, sizeof(buf)) < 0 && errno == EAGAIN, "C: the FIFO's bytes came back twice");
	WL_CHECK(lseek(7, 0, SEEK_CUR) == 3, "C: fd 7 is at %lld, not 3", (long long)lseek(7, 0, SEEK_CUR));
	WL_CHECK(fstat(7, &a) == 0 && fstat(8, &b) == 0 && a.st_ino == b.st_ino, "C: fds 7 and 8 are not one memfd");
	WL_CHECK(pread(8, buf, 12, 0) == 12 && memcmp(buf, "shared-memfd", 12) == 0, "C: the memfd lost its contents");
	WL_CHECK((fcntl(8, F_GETFL) & O_ACCMODE) == O_RDONLY, "C: fd 8 is not read-only");
	WL_CHECK(ttyname_r(10, name, sizeof(name)) == 0 && strcmp(name, pts) == 0, "C: fd 10 is %s, not %s", name, pts);
	WL_CHECK(tcgetsid(10) == getpid(), "C: the pty is not our session's terminal (tcgetsid %d)", tcgetsid(10));
	WL_CHECK(tcgetpgrp(10) == getpgrp(), "C: the pty's foreground group is %d, not ours", tcgetpgrp(10));
	{
		/* /dev/tty opens again (ENXIO without a controlling terminal), and fd 16, our /dev/tty from
		 * before, reaches the pty: P reads "tty". */
		int tty = open("/dev/tty", O_RDWR | O_NOCTTY);

		WL_CHECK(tty >= 0, "C: /dev/tty does not open: %s", strerror(errno));
		if (tty >= 0)
			close(tty);
		WL_CHECK(write(16, "tty", 3) == 3, "C: fd 16 (/dev/tty) cannot be written: %s", strerror(errno));
	}
	WL_CHECK(write(10, "hi", 2) == 2, "C: cannot write into the pty");
	check_timer("C");
	WL_CHECK(pidfd_pid(13) == parent, "C: fd 13 names %ld, not P %d", pidfd_pid(13), parent);
}

int main(int argc, char **argv)
{
	struct pollfd p = { .fd = 9, .events = POLLIN };
	struct itimerspec its = { { 0, 0 }, { 1000, 0 } };
	char buf[16];
	pid_t parent = getpid(), c;
	int status, sync[2];

	wl_init(argc, argv);
	wl_path("fifo", fifo, sizeof(fifo));
	unlink(fifo);
	if (mkfifo(fifo, 0600) || pipe(sync))
		wl_die("setup");
	at_fd(open(fifo, O_RDWR), 5);
	memset(buf, 'f', sizeof(buf));
	for (int i = 0; i < 1000; i += 10)
		if (write(5, buf, 10) != 10)
			wl_die("filling the FIFO");
	at_fd(memfd_create("shared", 0), 7);
	if (write(7, "shared-memfd", 12) != 12 || lseek(7, 3, SEEK_SET) != 3)
		wl_die("memfd");
	at_fd(posix_openpt(O_RDWR | O_NOCTTY), 9);
	if (grantpt(9) || unlockpt(9) || ptsname_r(9, pts, sizeof(pts)))
		wl_die("pty");
	at_fd(timerfd_create(CLOCK_MONOTONIC, 0), 11);
	deadline = mono() + 1000 * SEC;
	if (timerfd_settime(11, 0, &its, NULL))
		wl_die("timerfd");

	{
		sigset_t usr1;
		struct epoll_event ev = { .events = EPOLLIN };

		sigemptyset(&usr1);
		sigaddset(&usr1, SIGUSR1);
		if (sigprocmask(SIG_BLOCK, &usr1, NULL))
			wl_die("sigprocmask");
		at_fd(signalfd(-1, &usr1, SFD_NONBLOCK), 15);
		at_fd(inotify_init1(IN_NONBLOCK), 12);
		if (inotify_add_watch(12, fifo, IN_ATTRIB) < 0)
			wl_die("inotify_add_watch");
		at_fd(epoll_create1(0), 14);
		ev.data.fd = 15;
		if (epoll_ctl(14, EPOLL_CTL_ADD, 15, &ev))
			wl_die("epoll_ctl 15");
		ev.data.fd = 12;
		if (epoll_ctl(14, EPOLL_CTL_ADD, 12, &ev))
			wl_die("epoll_ctl 12");
	}
	c = fork();
	if (c < 0)
		wl_die("fork");
	if (c == 0) {
		char path[64];

		close(sync[0]);
		at_fd(open(fifo, O_RDONLY | O_NONBLOCK), 6);
		snprintf(path, sizeof(path), "/proc/self/fd/%d", 7);
		at_fd(open(path, O_RDONLY), 8);
		if (setsid() != getpid())
			wl_die("setsid");
		at_fd(open(pts, O_RDWR), 10); /* without O_NOCTTY: our session's terminal now */
		at_fd(open("/dev/tty", O_RDWR), 16);
		at_fd(syscall(SYS_pidfd_open, parent, 0), 13);
		close(sync[1]); /* ready */
		wl_wait();
		child_checks(parent);
		_exit(wl_failures() ? 1 : 0);
	}
	close(sync[1]);
	if (read(sync[0], buf, 1) != 0)
		wl_die("the child's setup");
	close(sync[0]);
	at_fd(syscall(SYS_pidfd_open, c, 0), 13);
	wl_ready();
	wl_wait();

	kill(c, SIGTERM);
	WL_CHECK(waitpid(c, &status, 0) == c && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		 "C failed (see the log), status %#x", status);
	memset(buf, 0, sizeof(buf));
	for (int got = 0; got < 5 && poll(&p, 1, 5000) == 1;) {
		ssize_t n = read(9, buf + got, 5 - got);
		if (n <= 0)
			break;
		got += n;
	}
	WL_CHECK(memcmp(buf, "ttyhi", 5) == 0, "P: the master gave \"%.5s\", not C's \"ttyhi\"", buf);
	WL_CHECK(lseek(7, 0, SEEK_CUR) == 3, "P: fd 7 is at %lld, not 3", (long long)lseek(7, 0, SEEK_CUR));
	check_timer("P");
	{
		struct epoll_event evs[4];
		int seen = 0, n;

		kill(getpid(), SIGUSR1);
		chmod(fifo, 0640);
		for (int i = 0; i < 10 && seen != 3 && (n = epoll_wait(14, evs, 4, 500)) >= 0; i++)
			for (int j = 0; j < n; j++)
				seen |= evs[j].data.fd == 15 ? 1 : evs[j].data.fd == 12 ? 2 : 0;
		WL_CHECK(seen == 3, "P: the epoll set saw %s%s", seen & 1 ? "" : "no signal on fd 15 ",
			 seen & 2 ? "" : "no inotify event on fd 12");
	}
	WL_CHECK(pidfd_pid(13) == -1, "P: fd 13 still names a live C (%ld)", pidfd_pid(13));
	unlink(fifo);
	wl_finish();
}
