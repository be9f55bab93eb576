/*
 * pty: ptys whose masters this process holds (not a terminal it runs on).
 *   fd 5: master A; fd 6: its slave (raw-ish: no ICANON/ECHO, VMIN 1, ^B as VINTR, ECHO locked
 *         by the locked termios, window 33x101 with pixel sizes); fd 7: the slave again,
 *         read-only and non-blocking (its own open file description).
 *   fd 8: master B in packet mode; fd 9: its slave, in exclusive mode.
 *   fd 10: master C whose slave stays locked (never unlocked).
 * With the argument "queued", bytes stay unread across the wait both ways: "q" written to A's
 * master (input the slave has to read) and "OUT" written to A's slave (output the master has to
 * read); after the wait each side reads them once, first.
 * With "lost", a child leads a session whose controlling terminal is A's slave but holds no fd of
 * it any more: a dump must refuse it (the child is killed at the end). With "member" the child keeps
 * its fd but has a child of its own, which inherited the terminal: refused too.
 * After the wait: the same /dev/pts numbers, termios, locked termios, window size, packet mode,
 * exclusive and lock states, flags, and bytes flow both ways through A and (packetised) through B.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <sys/wait.h>
#include <unistd.h>

static char name_a[64], name_b[64], name_c[64];
static pid_t lost;

static void at_fd(int got, int fd)
{
	if (got < 0 || dup2(got, fd) != fd)
		wl_die("fd %d", fd);
	if (got != fd)
		close(got);
}

static void master_at(int fd, char *name, int unlock)
{
	at_fd(posix_openpt(O_RDWR | O_NOCTTY), fd);
	if (grantpt(fd) || (unlock && unlockpt(fd)) || ptsname_r(fd, name, 64))
		wl_die("master at fd %d", fd);
}

/* Reads exactly `len` bytes from fd within 5 s; they must be `want`. */
static void expect(int fd, const char *want, size_t len, const char *what)
{
	char buf[64];
	size_t got = 0;
	struct pollfd p = { .fd = fd, .events = POLLIN };

	while (got < len && poll(&p, 1, 5000) == 1) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n <= 0)
			break;
		got += n;
	}
	WL_CHECK(got == len && memcmp(buf, want, len) == 0, "%s: read %zu of %zu bytes", what, got, len);
}

int main(int argc, char **argv)
{
	struct termios t, locked;
	struct winsize ws = { 33, 101, 640, 480 }, ws2;
	char name[64];
	int v;

	wl_init(argc, argv);
	master_at(5, name_a, 1);
	at_fd(open(name_a, O_RDWR | O_NOCTTY), 6);
	at_fd(open(name_a, O_RDONLY | O_NOCTTY | O_NONBLOCK), 7);
	if (tcgetattr(6, &t))
		wl_die("tcgetattr");
	t.c_lflag &= ~(ICANON | ECHO);
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	t.c_cc[VINTR] = 2;
	memset(&locked, 0, sizeof(locked));
	locked.c_lflag = ECHO;
	if (tcsetattr(6, TCSANOW, &t) || ioctl(6, TIOCSLCKTRMIOS, &locked) || ioctl(5, TIOCSWINSZ, &ws))
		wl_die("pty A setup");
	master_at(8, name_b, 1);
	at_fd(open(name_b, O_RDWR | O_NOCTTY), 9);
	v = 1;
	if (ioctl(8, TIOCPKT, &v) || ioctl(9, TIOCEXCL))
		wl_die("pty B setup");
	master_at(10, name_c, 0);
	if (argc > 2 && strcmp(argv[2], "queued") == 0 && (write(5, "q", 1) != 1 || write(6, "OUT", 3) != 3))
		wl_die("queueing bytes");
	if (argc > 2 && (strcmp(argv[2], "lost") == 0 || strcmp(argv[2], "member") == 0)) {
		int sync[2];
		char c;

		if (pipe(sync))
			wl_die("pipe");
		lost = fork();
		if (lost == 0) {
			int fd;

			signal(SIGTERM, SIG_DFL);
			setsid();
			fd = open(name_a, O_RDWR); /* our controlling terminal now */
			if (strcmp(argv[2], "lost") == 0)
				close(fd);
			else if (fork() == 0) { /* member: a child that inherits the terminal */
				close(sync[1]);
				for (;;)
					pause();
			}
			close(sync[1]);
			for (;;)
				pause();
		}
		close(sync[1]);
		if (lost < 0 || read(sync[0], &c, 1) != 0)
			wl_die("the child's session");
		close(sync[0]);
	}
	wl_ready();
	wl_wait();
	if (lost > 0) {
		kill(-lost, SIGKILL); /* its group: the child and, with "member", the grandchild */
		waitpid(lost, NULL, 0);
	}

	if (argc > 2 && strcmp(argv[2], "queued") == 0) {
		expect(6, "q", 1, "A: the queued input byte");
		expect(5, "OUT", 3, "A: the queued output bytes");
	}

	WL_CHECK(ptsname_r(5, name, sizeof(name)) == 0 && strcmp(name, name_a) == 0, "A is %s, not %s", name, name_a);
	WL_CHECK(ptsname_r(8, name, sizeof(name)) == 0 && strcmp(name, name_b) == 0, "B is %s, not %s", name, name_b);
	WL_CHECK(ptsname_r(10, name, sizeof(name)) == 0 && strcmp(name, name_c) == 0, "C is %s, not %s", name, name_c);
	WL_CHECK(ttyname_r(6, name, sizeof(name)) == 0 && strcmp(name, name_a) == 0, "fd 6 is %s, not %s", name, name_a);
	WL_CHECK(ttyname_r(7, name, sizeof(name)) == 0 && strcmp(name, name_a) == 0, "fd 7 is %s, not %s", name, name_a);
	WL_CHECK(ttyname_r(9, name, sizeof(name)) == 0 && strcmp(name, name_b) == 0, "fd 9 is %s, not %s", name, name_b);
	WL_CHECK((fcntl(7, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == (O_RDONLY | O_NONBLOCK), "fd 7 flags %o",
		 fcntl(7, F_GETFL));

	memset(&t, 0, sizeof(t));
	WL_CHECK(tcgetattr(6, &t) == 0 && !(t.c_lflag & (ICANON | ECHO)) && t.c_cc[VMIN] == 1 && t.c_cc[VINTR] == 2,
		 "A's termios: lflag %o VMIN %d VINTR %d", t.c_lflag, t.c_cc[VMIN], t.c_cc[VINTR]);
	memset(&locked, 0, sizeof(locked));
	WL_CHECK(ioctl(6, TIOCGLCKTRMIOS, &locked) == 0 && locked.c_lflag == ECHO, "A's locked termios: lflag %o",
		 locked.c_lflag);
	memset(&ws2, 0, sizeof(ws2));
	WL_CHECK(ioctl(6, TIOCGWINSZ, &ws2) == 0 && !memcmp(&ws, &ws2, sizeof(ws)), "A's window: %dx%d %dx%d", ws2.ws_row,
		 ws2.ws_col, ws2.ws_xpixel, ws2.ws_ypixel);
	WL_CHECK(ioctl(8, TIOCGPKT, &v) == 0 && v == 1, "B lost packet mode");
	WL_CHECK(ioctl(9, TIOCGEXCL, &v) == 0 && v == 1, "B's slave lost exclusive mode");
	WL_CHECK(ioctl(10, TIOCGPTLCK, &v) == 0 && v == 1, "C's slave is not locked");
	WL_CHECK(ioctl(5, TIOCGPTLCK, &v) == 0 && v == 0, "A's slave is locked");

	WL_CHECK(write(5, "ping", 4) == 4, "write to A's master");
	expect(6, "ping", 4, "A: master to slave");
	WL_CHECK(write(6, "pong", 4) == 4, "write to A's slave");
	expect(5, "pong", 4, "A: slave to master");
	WL_CHECK(write(9, "x", 1) == 1, "write to B's slave");
	expect(8, "\0x", 2, "B: a data packet");
	wl_finish();
}
