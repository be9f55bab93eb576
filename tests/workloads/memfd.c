/*
 * memfd: memfd fds with contents, holes, seals, owners and offsets across the dump.
 *   fd 5: "criu-ts data", sealable, 1 MiB + 123 bytes: pattern pages at 0-3 (the 4th half
 *         written), at 64 KiB, and the last partial page; holes elsewhere must stay holes. Seals
 *         GROW|SHRINK, mode 0640, offset 5000.
 *   fd 6: the same memfd reopened read-only through /proc/self/fd/5 (its own offset, 100).
 *   fd 7: a dup of fd 5 (shares its offset), FD_CLOEXEC.
 *   fd 8: "sealed", holding "hello", sealed WRITE|SEAL: writes must fail with EPERM.
 *   fd 9: "empty", created without MFD_ALLOW_SEALING (its seals read F_SEAL_SEAL), O_APPEND.
 * After the wait: names, sizes, contents, holes, seals, modes, offsets, flags, and that fds 5-7
 * are one inode and a write through 5 shows in 6.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define DATA_SIZE (1024 * 1024 + 123)
#define PAGE 4096

static unsigned char pattern(off_t at)
{
	return (unsigned char)(at * 31 + at / 4093 + 1);
}

static void fill(int fd, off_t from, size_t len)
{
	static unsigned char buf[4 * PAGE];
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = pattern(from + i);
	if (pwrite(fd, buf, len, from) != (ssize_t)len)
		wl_die("pwrite at %lld", (long long)from);
}

static void check_range(int fd, off_t from, size_t len, int data)
{
	static unsigned char buf[4 * PAGE];
	size_t i;

	if (pread(fd, buf, len, from) != (ssize_t)len) {
		wl_fail("cannot read %zu bytes at %lld", len, (long long)from);
		return;
	}
	for (i = 0; i < len; i++) {
		unsigned char want = data ? pattern(from + i) : 0;
		if (buf[i] != want) {
			wl_fail("byte %lld is %u, not %u", (long long)(from + i), buf[i], want);
			return;
		}
	}
}

static void at_fd(int got, int fd)
{
	if (got < 0 || dup2(got, fd) != fd)
		wl_die("fd %d", fd);
	if (got != fd)
		close(got);
}

static void check_name(int fd, const char *name)
{
	char path[64], link[256], want[256];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0) {
		wl_fail("fd %d is gone", fd);
		return;
	}
	link[n] = 0;
	snprintf(want, sizeof(want), "/memfd:%s (deleted)", name);
	WL_CHECK(strcmp(link, want) == 0, "fd %d is %s, not %s", fd, link, want);
}

int main(int argc, char **argv)
{
	struct stat a, b, c;
	char path[64], buf[16];
	off_t hole;

	wl_init(argc, argv);
	at_fd(memfd_create("criu-ts data", MFD_ALLOW_SEALING), 5);
	if (ftruncate(5, DATA_SIZE))
		wl_die("ftruncate");
	fill(5, 0, 3 * PAGE + PAGE / 2);
	fill(5, 64 * 1024, PAGE);
	fill(5, DATA_SIZE - 100, 100);
	if (fcntl(5, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK) || fchmod(5, 0640) || lseek(5, 5000, SEEK_SET) != 5000)
		wl_die("fd 5 setup");
	snprintf(path, sizeof(path), "/proc/self/fd/%d", 5);
	at_fd(open(path, O_RDONLY), 6);
	if (lseek(6, 100, SEEK_SET) != 100)
		wl_die("fd 6 offset");
	if (dup2(5, 7) != 7 || fcntl(7, F_SETFD, FD_CLOEXEC))
		wl_die("fd 7");
	at_fd(memfd_create("sealed", MFD_ALLOW_SEALING), 8);
	if (write(8, "hello", 5) != 5 || fcntl(8, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL))
		wl_die("fd 8 setup");
	at_fd(memfd_create("empty", 0), 9);
	if (fcntl(9, F_SETFL, O_APPEND))
		wl_die("fd 9 setup");
	wl_ready();
	wl_wait();

	check_name(5, "criu-ts data");
	check_name(6, "criu-ts data");
	check_name(8, "sealed");
	check_name(9, "empty");
	if (fstat(5, &a) || fstat(6, &b) || fstat(7, &c)) {
		wl_fail("cannot fstat fds 5-7");
		wl_finish();
	}
	WL_CHECK(a.st_ino == b.st_ino && a.st_ino == c.st_ino, "fds 5, 6, 7 are not one memfd");
	WL_CHECK(a.st_size == DATA_SIZE, "fd 5: size %lld, not %d", (long long)a.st_size, DATA_SIZE);
	WL_CHECK((a.st_mode & 07777) == 0640, "fd 5: mode %o, not 640", a.st_mode & 07777);
	check_range(5, 0, 3 * PAGE + PAGE / 2, 1);
	check_range(5, 3 * PAGE + PAGE / 2, PAGE / 2, 0);
	check_range(5, 64 * 1024, PAGE, 1);
	check_range(5, DATA_SIZE - 100, 100, 1);
	check_range(5, 200 * 1024, 4 * PAGE, 0);
	hole = lseek(5, 128 * 1024, SEEK_DATA);
	WL_CHECK(hole == (DATA_SIZE - 100) / PAGE * PAGE, "fd 5: data after 128 KiB starts at %lld, not %d", (long long)hole,
		 (DATA_SIZE - 100) / PAGE * PAGE);
	WL_CHECK(fcntl(5, F_GET_SEALS) == (F_SEAL_GROW | F_SEAL_SHRINK), "fd 5: seals %#x", fcntl(5, F_GET_SEALS));
	if (lseek(5, 5000, SEEK_SET) != 5000)
		wl_fail("fd 5: cannot seek");
	/* fd 5's offset was restored above only if fd 7 still shares it: look through fd 7. */
	WL_CHECK(lseek(7, 0, SEEK_CUR) == 5000, "fd 7 does not share fd 5's offset");
	WL_CHECK(lseek(6, 0, SEEK_CUR) == 100, "fd 6: offset %lld, not 100", (long long)lseek(6, 0, SEEK_CUR));
	WL_CHECK((fcntl(6, F_GETFL) & O_ACCMODE) == O_RDONLY, "fd 6 is not read-only");
	WL_CHECK((fcntl(5, F_GETFL) & O_ACCMODE) == O_RDWR, "fd 5 is not read-write");
	WL_CHECK(fcntl(7, F_GETFD) & FD_CLOEXEC, "fd 7 lost FD_CLOEXEC");
	WL_CHECK(pwrite(5, "xyz", 3, 10) == 3 && pread(6, buf, 3, 10) == 3 && memcmp(buf, "xyz", 3) == 0,
		 "a write through fd 5 does not show through fd 6");

	WL_CHECK(pread(8, buf, 5, 0) == 5 && memcmp(buf, "hello", 5) == 0, "fd 8 lost its contents");
	WL_CHECK(fcntl(8, F_GET_SEALS) == (F_SEAL_WRITE | F_SEAL_SEAL), "fd 8: seals %#x", fcntl(8, F_GET_SEALS));
	WL_CHECK(pwrite(8, "x", 1, 0) < 0 && errno == EPERM, "fd 8 can be written");
	WL_CHECK(fcntl(9, F_GET_SEALS) == F_SEAL_SEAL, "fd 9: seals %#x, not F_SEAL_SEAL", fcntl(9, F_GET_SEALS));
	WL_CHECK(fcntl(9, F_GETFL) & O_APPEND, "fd 9 lost O_APPEND");
	WL_CHECK(fstat(9, &a) == 0 && a.st_size == 0, "fd 9 is not empty");
	wl_finish();
}
