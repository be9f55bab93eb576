/*
 * fifo: two FIFOs next to the result file, with data queued across the dump.
 *   RESULT.fifo1: fd 5 read-write (it wrote 3000 bytes into the FIFO), fd 6 read-only non-blocking,
 *                 fd 7 write-only; the 3000 bytes must come out once, though three fds hold it.
 *   RESULT.fifo2: fd 8 read-only non-blocking, fd 9 write-only non-blocking (FD_CLOEXEC), a capacity
 *                 of 128 KiB holding 70000 bytes (more than the default capacity takes).
 * After the wait: same flags, same FIFO inodes as the paths, the data in order and nothing more,
 * and bytes written into each FIFO after the restore come out of its reader.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RW1 5
#define RD1 6
#define WR1 7
#define RD2 8
#define WR2 9
#define LEN1 3000
#define LEN2 70000
#define CAP2 (128 * 1024)

static unsigned char pattern(int fifo, size_t i)
{
	return (unsigned char)(i * 7 + fifo * 13 + i / 251);
}

static void open_at(const char *path, int flags, int fd)
{
	int got = open(path, flags);

	if (got < 0 || dup2(got, fd) != fd)
		wl_die("open %s at fd %d", path, fd);
	if (got != fd)
		close(got);
}

static void put(int fd, int fifo, size_t len)
{
	static unsigned char buf[LEN2];
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = pattern(fifo, i);
	if (write(fd, buf, len) != (ssize_t)len)
		wl_die("write %zu bytes into fifo%d", len, fifo);
}

/* Reads everything queued from a non-blocking fd; checks it is `len` bytes of the pattern. */
static void check_queued(int fd, int fifo, size_t len)
{
	static unsigned char buf[LEN2 + 4096];
	size_t got = 0, i;
	ssize_t n;

	while ((n = read(fd, buf + got, sizeof(buf) - got)) > 0)
		got += n;
	WL_CHECK(n < 0 && errno == EAGAIN, "fifo%d: the last read gave %zd (errno %d), not EAGAIN", fifo, n, errno);
	WL_CHECK(got == len, "fifo%d held %zu bytes, not %zu", fifo, got, len);
	for (i = 0; i < got && i < len; i++) {
		if (buf[i] != pattern(fifo, i)) {
			wl_fail("fifo%d: byte %zu is %u, not %u", fifo, i, buf[i], pattern(fifo, i));
			break;
		}
	}
}

static void check_fd(int fd, const char *path, int accmode, int nonblock, int cloexec)
{
	struct stat a, b;
	int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);

	if (fl < 0) {
		wl_fail("fd %d is gone", fd);
		return;
	}
	WL_CHECK((fl & O_ACCMODE) == accmode, "fd %d: access mode %d, not %d", fd, fl & O_ACCMODE, accmode);
	WL_CHECK(!!(fl & O_NONBLOCK) == nonblock, "fd %d: O_NONBLOCK %d, not %d", fd, !!(fl & O_NONBLOCK), nonblock);
	WL_CHECK(!!(fdfl & FD_CLOEXEC) == cloexec, "fd %d: FD_CLOEXEC %d, not %d", fd, !!(fdfl & FD_CLOEXEC), cloexec);
	if (fstat(fd, &a) || stat(path, &b)) {
		wl_fail("fd %d: cannot stat it or %s", fd, path);
		return;
	}
	WL_CHECK(S_ISFIFO(a.st_mode), "fd %d is not a FIFO", fd);
	WL_CHECK(a.st_ino == b.st_ino && a.st_dev == b.st_dev, "fd %d is not %s", fd, path);
}

/* One more message through the FIFO: in at `wr`, out at `rd`. */
static void check_flows(int wr, int rd, int fifo)
{
	char buf[32];
	ssize_t n;

	WL_CHECK(write(wr, "after", 5) == 5, "fifo%d: cannot write after restore", fifo);
	n = read(rd, buf, sizeof(buf));
	WL_CHECK(n == 5 && memcmp(buf, "after", 5) == 0, "fifo%d: read %zd bytes after the new write", fifo, n);
}

int main(int argc, char **argv)
{
	char p1[256], p2[256];

	wl_init(argc, argv);
	wl_path("fifo1", p1, sizeof(p1));
	wl_path("fifo2", p2, sizeof(p2));
	unlink(p1);
	unlink(p2);
	if (mkfifo(p1, 0600) || mkfifo(p2, 0600))
		wl_die("mkfifo");

	open_at(p1, O_RDWR, RW1);
	open_at(p1, O_RDONLY | O_NONBLOCK, RD1);
	open_at(p1, O_WRONLY, WR1);
	put(RW1, 1, LEN1);

	open_at(p2, O_RDONLY | O_NONBLOCK, RD2);
	open_at(p2, O_WRONLY | O_NONBLOCK, WR2);
	if (fcntl(WR2, F_SETFD, FD_CLOEXEC) || fcntl(WR2, F_SETPIPE_SZ, CAP2) < CAP2)
		wl_die("fifo2 setup");
	put(WR2, 2, LEN2);

	wl_ready();
	wl_wait();

	check_fd(RW1, p1, O_RDWR, 0, 0);
	check_fd(RD1, p1, O_RDONLY, 1, 0);
	check_fd(WR1, p1, O_WRONLY, 0, 0);
	check_fd(RD2, p2, O_RDONLY, 1, 0);
	check_fd(WR2, p2, O_WRONLY, 1, 1);
	WL_CHECK(fcntl(RD2, F_GETPIPE_SZ) == CAP2, "fifo2 capacity %d, not %d", fcntl(RD2, F_GETPIPE_SZ), CAP2);
	check_queued(RD1, 1, LEN1);
	check_queued(RD2, 2, LEN2);
	check_flows(WR1, RD1, 1);
	check_flows(RW1, RD1, 1);
	check_flows(WR2, RD2, 2);
	unlink(p1);
	unlink(p2);
	wl_finish();
}
