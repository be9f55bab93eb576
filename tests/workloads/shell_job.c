/*
 * shell_job: a program started from an interactive shell, to be run on a
 * terminal (inside `script` or on a pty the test opens), and restored with
 * --shell-job. Its fds 0, 1 and 2 must be that terminal before and after,
 * the terminal must be its controlling terminal, and its process group must
 * be the terminal's foreground group. The terminal itself may be another one
 * after a restore, so only these relations are checked, not names or ids.
 * The log goes to the terminal.
 */
#include "lib.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

/* Field 7 (tty_nr) of /proc/self/stat. */
static long controlling_tty(void)
{
	char stat[1024], *p;
	long tty = -1;

	if (wl_read_file("/proc/self/stat", stat, sizeof(stat)) < 0)
		return -1;
	p = strrchr(stat, ')'); /* comm may contain spaces */
	if (p && sscanf(p + 1, " %*c %*d %*d %*d %ld", &tty) != 1)
		tty = -1;
	return tty;
}

static int check_terminal(const char *when)
{
	struct stat st[3];
	pid_t fg, sid;
	long ctty;
	int bad = wl_failures();

	for (int fd = 0; fd < 3; fd++) {
		WL_CHECK(isatty(fd), "%s: fd %d is not a terminal", when, fd);
		WL_CHECK(fstat(fd, &st[fd]) == 0, "%s: fd %d: %s", when, fd, strerror(errno));
	}
	if (wl_failures() > bad)
		return 0;
	WL_CHECK(st[0].st_rdev == st[1].st_rdev && st[0].st_rdev == st[2].st_rdev,
		 "%s: fds 0, 1, 2 are different terminals", when);
	ctty = controlling_tty();
	WL_CHECK(ctty == (long)st[0].st_rdev, "%s: controlling terminal %#lx, fd 0 is %#lx", when, ctty,
		 (long)st[0].st_rdev);
	fg = tcgetpgrp(0);
	WL_CHECK(fg == getpgrp(), "%s: foreground group of the terminal is %d, ours is %d", when, fg, getpgrp());
	sid = tcgetsid(0);
	WL_CHECK(sid == getsid(0), "%s: the terminal's session is %d, ours is %d", when, sid, getsid(0));
	wl_log("%s: on %s, pgrp %d, sid %d", when, ttyname(0) ? ttyname(0) : "?", getpgrp(), getsid(0));
	return wl_failures() == bad;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (!check_terminal("at start"))
		wl_finish();
	wl_ready();
	wl_wait();
	check_terminal("after the wait");
	wl_finish();
}
