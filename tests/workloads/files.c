/*
 * files: file descriptors at chosen numbers, with their access modes, status
 * flags, close-on-exec flags and offsets. After the wait each one must still
 * name the same file with the same flags, reads must go on from the offset,
 * writes must land where the offset (or O_APPEND) says, and a dup must still
 * share its offset with the original. No other fd may have appeared.
 */
#include "lib.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RO_SIZE (64 * 1024)
#define RW_SIZE 5000

struct fdinfo {
	int fd;
	const char *what;
	off_t offset; /* expected; -2: as found at start; -3: not checked (the log moves it) */
	int flags, fdflags;
	struct stat st;
};

static struct fdinfo fds[] = {
	{ 0, "stdin", -2, 0, 0, { 0 } },
	{ 1, "stdout", -3, 0, 0, { 0 } },
	{ 2, "stderr", -3, 0, 0, { 0 } },
	{ 7, "read-only file", 1234, 0, 0, { 0 } },
	{ 8, "/dev/null", -2, 0, 0, { 0 } },
	{ 9, "/dev/zero", -2, 0, 0, { 0 } },
	{ 10, "/dev/urandom", -2, 0, 0, { 0 } },
	{ 42, "read-write file", 3000, 0, 0, { 0 } },
	{ 43, "dup of fd 42", 3000, 0, 0, { 0 } },
	{ 50, "directory", -2, 0, 0, { 0 } },
	{ 100, "append file", 12, 0, 0, { 0 } },
	{ 101, "second open of the read-write file", 10, 0, 0, { 0 } },
};
#define NFDS (sizeof(fds) / sizeof(fds[0]))

static char ro_path[4096], rw_path[4096], append_path[4096], dir_path[4096];

static char byte_at(size_t off)
{
	return (char)('a' + (off * 7 + off / 26) % 26);
}

static void make_file(const char *path, size_t size)
{
	char *buf = malloc(size);
	int fd;

	if (buf == NULL)
		wl_die("malloc");
	for (size_t i = 0; i < size; i++)
		buf[i] = byte_at(i);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, buf, size) != (ssize_t)size)
		wl_die("create %s", path);
	close(fd);
	free(buf);
}

/* Opens path and moves the descriptor to number `at`. */
static void open_at(int at, const char *path, int flags)
{
	int fd = open(path, flags, 0644);

	if (fd < 0)
		wl_die("open %s", path);
	if (fd != at) {
		if (dup3(fd, at, flags & O_CLOEXEC) != at)
			wl_die("dup3 to %d", at);
		close(fd);
	}
}

static void setup(void)
{
	char buf[RO_SIZE];
	int fd;

	wl_path("f-ro", ro_path, sizeof(ro_path));
	wl_path("f-rw", rw_path, sizeof(rw_path));
	wl_path("f-append", append_path, sizeof(append_path));
	wl_path("f-dir", dir_path, sizeof(dir_path));
	make_file(ro_path, RO_SIZE);
	make_file(rw_path, RW_SIZE);
	if (mkdir(dir_path, 0755) && errno != EEXIST)
		wl_die("mkdir %s", dir_path);

	open_at(7, ro_path, O_RDONLY | O_NOATIME);
	if (read(7, buf, 1234) != 1234)
		wl_die("read fd 7");
	open_at(8, "/dev/null", O_WRONLY);
	open_at(9, "/dev/zero", O_RDONLY | O_CLOEXEC);
	open_at(10, "/dev/urandom", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	open_at(42, rw_path, O_RDWR | O_CLOEXEC);
	if (lseek(42, 3000, SEEK_SET) != 3000 || dup2(42, 43) != 43) /* 43 shares the offset, not FD_CLOEXEC */
		wl_die("lseek/dup2 fd 42");
	open_at(50, dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	fd = openat(50, "inside", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		wl_die("create inside %s", dir_path);
	close(fd);
	open_at(100, append_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC);
	if (write(100, "line1\n", 6) != 6 || lseek(100, 0, SEEK_SET) != 0 || write(100, "line2\n", 6) != 6)
		wl_die("write fd 100");
	open_at(101, rw_path, O_WRONLY | O_DSYNC);
	if (lseek(101, 10, SEEK_SET) != 10)
		wl_die("lseek fd 101");

	for (size_t i = 0; i < NFDS; i++) {
		struct fdinfo *f = &fds[i];

		f->flags = fcntl(f->fd, F_GETFL);
		f->fdflags = fcntl(f->fd, F_GETFD);
		if (f->flags < 0 || f->fdflags < 0 || fstat(f->fd, &f->st))
			wl_die("fd %d (%s) is not open", f->fd, f->what);
		if (f->offset == -2)
			f->offset = lseek(f->fd, 0, SEEK_CUR);
	}
}

static void check_fd(const struct fdinfo *f)
{
	struct stat st;
	int flags = fcntl(f->fd, F_GETFL), fdflags = fcntl(f->fd, F_GETFD);
	off_t off;

	if (flags < 0 || fstat(f->fd, &st)) {
		wl_fail("fd %d (%s) is closed", f->fd, f->what);
		return;
	}
	WL_CHECK(st.st_dev == f->st.st_dev && st.st_ino == f->st.st_ino && st.st_rdev == f->st.st_rdev &&
			 (st.st_mode & S_IFMT) == (f->st.st_mode & S_IFMT),
		 "fd %d (%s) now names another file (dev %lx ino %lu rdev %lx)", f->fd, f->what, (long)st.st_dev,
		 (unsigned long)st.st_ino, (long)st.st_rdev);
	WL_CHECK(flags == f->flags, "fd %d (%s): flags %#o, expected %#o", f->fd, f->what, flags, f->flags);
	WL_CHECK(fdflags == f->fdflags, "fd %d (%s): FD_CLOEXEC %d, expected %d", f->fd, f->what, fdflags,
		 f->fdflags);
	off = lseek(f->fd, 0, SEEK_CUR);
	WL_CHECK(off == f->offset || f->offset == -3, "fd %d (%s): offset %lld, expected %lld", f->fd, f->what, (long long)off,
		 (long long)f->offset);
}

static void check_no_other_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	if (!d) {
		wl_fail("opendir /proc/self/fd: %s", strerror(errno));
		return;
	}
	while ((e = readdir(d)) != NULL) {
		int fd, known = 0;

		if (e->d_name[0] == '.')
			continue;
		fd = atoi(e->d_name);
		for (size_t i = 0; i < NFDS; i++)
			known |= fds[i].fd == fd;
		WL_CHECK(known || fd == dirfd(d), "fd %d is open but was never opened by the program", fd);
	}
	closedir(d);
}

/* The whole file, for checking what the writes did. */
static ssize_t slurp(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, size);

	if (fd >= 0)
		close(fd);
	return n;
}

static void check_io(void)
{
	char buf[RW_SIZE + 16];
	ssize_t n;
	struct stat st;

	/* fd 7 reads on from offset 1234 */
	n = read(7, buf, 100);
	WL_CHECK(n == 100, "fd 7: read returned %zd", n);
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] != byte_at(1234 + i)) {
			wl_fail("fd 7: byte %zd of the read is '%c', expected '%c'", i, buf[i], byte_at(1234 + i));
			break;
		}

	/* fd 43 writes at 3000 and moves the offset of fd 42 as well */
	WL_CHECK(write(43, "HELLO", 5) == 5, "fd 43: write failed: %s", strerror(errno));
	WL_CHECK(lseek(42, 0, SEEK_CUR) == 3005, "fd 42: offset %lld after a write through fd 43, expected 3005",
		 (long long)lseek(42, 0, SEEK_CUR));
	/* fd 101 has an offset of its own */
	WL_CHECK(write(101, "XY", 2) == 2, "fd 101: write failed: %s", strerror(errno));
	n = slurp(rw_path, buf, sizeof(buf));
	WL_CHECK(n == RW_SIZE, "read-write file has %zd bytes, expected %d", n, RW_SIZE);
	WL_CHECK(n == RW_SIZE && memcmp(buf + 3000, "HELLO", 5) == 0, "the write through fd 43 is not at 3000");
	WL_CHECK(n == RW_SIZE && memcmp(buf + 10, "XY", 2) == 0, "the write through fd 101 is not at 10");
	WL_CHECK(n == RW_SIZE && buf[9] == byte_at(9) && buf[12] == byte_at(12) && buf[2999] == byte_at(2999) &&
			 buf[3005] == byte_at(3005),
		 "the read-write file changed around the writes");

	/* fd 100 appends, whatever its offset */
	lseek(100, 0, SEEK_SET);
	WL_CHECK(write(100, "tail\n", 5) == 5, "fd 100: write failed: %s", strerror(errno));
	n = slurp(append_path, buf, sizeof(buf));
	WL_CHECK(n == 17 && memcmp(buf, "line1\nline2\ntail\n", 17) == 0, "append file holds '%.*s'",
		 (int)(n > 0 ? n : 0), buf);

	WL_CHECK(write(8, "gone", 4) == 4, "/dev/null: write failed: %s", strerror(errno));
	n = read(9, buf, 64);
	WL_CHECK(n == 64 && buf[0] == 0 && memcmp(buf, buf + 1, 63) == 0, "/dev/zero: read %zd bytes, not all zero",
		 n);
	n = read(10, buf, 64);
	WL_CHECK(n == 64, "/dev/urandom: read returned %zd: %s", n, strerror(errno));
	WL_CHECK(fstatat(50, "inside", &st, 0) == 0, "the directory at fd 50 has no file 'inside': %s",
		 strerror(errno));
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	setup();
	wl_ready();
	wl_wait();
	for (size_t i = 0; i < NFDS; i++)
		check_fd(&fds[i]);
	check_no_other_fds();
	check_io();
	wl_finish();
}
