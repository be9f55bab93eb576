/*
 * gone_special: a FIFO and a symlink whose names were removed while still open ("ghosts").
 * The FIFO RESULT_FILE.fifo is held read-write (fd 20), read-only non-blocking (fd 21) and
 * write-only (fd 22) with 6 bytes queued, then unlinked. The symlink RESULT_FILE.lnk (to
 * "target-text") is held by an O_PATH|O_NOFOLLOW fd (fd 23), then unlinked.
 * After the wait: every fd still has its flags; the three FIFO fds are one inode with no name
 * (st_nlink 0, "(deleted)" in /proc/self/fd); the queued bytes come out once and new ones go
 * through; fd 23 is a symlink with no name pointing at "target-text". Nothing is left next to the
 * result file (the test checks).
 * `socket`: also an O_PATH fd (24) of a unix socket's path that was removed, which CRIU cannot
 * carry either: a dump must refuse it.
 *   bin/gone_special RESULT_FILE [socket]
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Moves a new fd to number `want`. */
static void place(int fd, int want, const char *what)
{
	if (fd < 0 || dup2(fd, want) != want)
		wl_die("open %s at fd %d", what, want);
	if (fd != want)
		close(fd);
}

static int ends_with(const char *s, const char *tail)
{
	size_t a = strlen(s), b = strlen(tail);

	return a >= b && !strcmp(s + a - b, tail);
}

static void check_deleted_link(int fd, const char *name)
{
	char path[64], link[4096], want[4200];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	link[n < 0 ? 0 : n] = 0;
	snprintf(want, sizeof(want), "%s (deleted)", name);
	WL_CHECK(n > 0 && ends_with(link, want), "fd %d leads to \"%s\", expected \"%s\"", fd, link, want);
}

static void check_flags(int fd, int want)
{
	int flags = fcntl(fd, F_GETFL);

	WL_CHECK(flags >= 0 && (flags & (O_ACCMODE | O_NONBLOCK | O_PATH)) == want, "fd %d flags %#x, expected %#x",
		 fd, flags, want);
}

int main(int argc, char **argv)
{
	char fifo[4096], lnk[4096], buf[32];
	struct stat st[3];
	ssize_t n;
	int i;

	wl_init(argc, argv);
	wl_path("fifo", fifo, sizeof(fifo));
	wl_path("lnk", lnk, sizeof(lnk));
	if (mkfifo(fifo, 0640) || symlink("target-text", lnk))
		wl_die("mkfifo/symlink");
	place(open(fifo, O_RDWR), 20, fifo);
	place(open(fifo, O_RDONLY | O_NONBLOCK), 21, fifo);
	place(open(fifo, O_WRONLY), 22, fifo);
	place(open(lnk, O_PATH | O_NOFOLLOW), 23, lnk);
	if (write(22, "queued", 6) != 6)
		wl_die("write");
	if (unlink(fifo) || unlink(lnk))
		wl_die("unlink");
	if (argc > 2 && !strcmp(argv[2], "socket")) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		int sk = socket(AF_UNIX, SOCK_STREAM, 0);

		wl_path("sock", a.sun_path, sizeof(a.sun_path));
		if (sk < 0 || bind(sk, (struct sockaddr *)&a, sizeof(a)))
			wl_die("socket path");
		place(open(a.sun_path, O_PATH), 24, a.sun_path);
		if (unlink(a.sun_path))
			wl_die("unlink %s", a.sun_path);
		close(sk);
	}
	wl_ready();
	wl_wait();

	check_flags(20, O_RDWR);
	check_flags(21, O_RDONLY | O_NONBLOCK);
	check_flags(22, O_WRONLY);
	check_flags(23, O_PATH);
	for (i = 0; i < 3; i++) {
		WL_CHECK(fstat(20 + i, &st[i]) == 0 && S_ISFIFO(st[i].st_mode) && st[i].st_nlink == 0,
			 "fd %d is not a FIFO without a name", 20 + i);
		check_deleted_link(20 + i, fifo);
	}
	WL_CHECK(st[0].st_ino == st[1].st_ino && st[1].st_ino == st[2].st_ino, "the FIFO fds are not one inode");
	WL_CHECK((st[0].st_mode & 07777) == 0640, "the FIFO's mode is %o", st[0].st_mode & 07777);
	n = read(21, buf, sizeof(buf));
	WL_CHECK(n == 6 && !memcmp(buf, "queued", 6), "read %zd queued bytes", n);
	n = read(21, buf, sizeof(buf));
	WL_CHECK(n < 0 && errno == EAGAIN, "the queued bytes came out twice (%zd)", n);
	WL_CHECK(write(22, "more", 4) == 4 && read(20, buf, 4) == 4 && !memcmp(buf, "more", 4),
		 "new bytes do not go through the FIFO");
	WL_CHECK(fstatat(23, "", &st[0], AT_EMPTY_PATH) == 0 && S_ISLNK(st[0].st_mode) && st[0].st_nlink == 0,
		 "fd 23 is not a symlink without a name");
	n = readlinkat(23, "", buf, sizeof(buf) - 1);
	buf[n < 0 ? 0 : n] = 0;
	WL_CHECK(!strcmp(buf, "target-text"), "fd 23 points at \"%s\"", buf);
	check_deleted_link(23, lnk);
	wl_finish();
}
