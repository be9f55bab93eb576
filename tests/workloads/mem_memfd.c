/*
 * mem_memfd: memory mappings of memfds. "wl-map" (3 pages + 100 bytes, sealed against shrinking)
 * is held at fd 7 (offset 123) and mapped twice: shared (all of it) and private (2 pages from
 * page 1, its first page written privately). "wl-only" (2 pages, sealed against growing and
 * shrinking) is only mapped, shared; its fd is closed. A child forked before the wait maps
 * nothing of its own: it shares wl-map's shared area with us and checks it too.
 * After the wait: the bytes; the shared area and fd 7 see each other's writes both ways; the
 * private area keeps its own page and shows the memfd where it wrote nothing (also a write made
 * through fd 7 now); both areas of wl-map are fd 7's inode; names in /proc/self/maps; seals; the
 * fd's offset; a write by the child in the shared area reaches us.
 *   bin/mem_memfd RESULT_FILE
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define MAP_SIZE (3 * PAGE + 100)
#define ONLY_SIZE (2 * PAGE)

static unsigned char pattern(size_t i, int seed)
{
	return (unsigned char)((i * 7 + (size_t)seed) & 0xff);
}

static int make_memfd(const char *name, size_t size, int seed, unsigned int seals)
{
	int fd = memfd_create(name, MFD_ALLOW_SEALING);
	unsigned char buf[PAGE];
	size_t at;

	if (fd < 0 || ftruncate(fd, (off_t)size))
		wl_die("memfd_create(%s)", name);
	for (at = 0; at < size; at += PAGE) {
		size_t n = size - at < PAGE ? size - at : PAGE, i;

		for (i = 0; i < n; i++)
			buf[i] = pattern(at + i, seed);
		if (pwrite(fd, buf, n, (off_t)at) != (ssize_t)n)
			wl_die("pwrite(%s)", name);
	}
	if (seals && fcntl(fd, F_ADD_SEALS, seals))
		wl_die("F_ADD_SEALS(%s)", name);
	return fd;
}

/* The inode and name /proc/self/maps gives the area starting at addr. */
static int area_of(void *addr, unsigned long *ino, char *name, size_t size)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");
	int found = 0;

	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned long start, inode;
		int at = 0;

		if (sscanf(line, "%lx-%*x %*s %*x %*x:%*x %lu %n", &start, &inode, &at) < 2 ||
		    start != (unsigned long)addr)
			continue;
		*ino = inode;
		snprintf(name, size, "%s", line + at);
		name[strcspn(name, "\n")] = 0;
		found = 1;
	}
	fclose(f);
	return found;
}

static int seals_of_area(void *start, size_t len)
{
	char path[128];
	int fd, seals;

	snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", (unsigned long)start,
		 (unsigned long)start + len);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	seals = fcntl(fd, F_GET_SEALS);
	close(fd);
	return seals;
}

static int check_bytes(const unsigned char *p, size_t len, size_t off, int seed, const char *what)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (p[i] != pattern(off + i, seed)) {
			wl_fail("%s: byte %zu is %#x, expected %#x", what, off + i, p[i], pattern(off + i, seed));
			return 0;
		}
	}
	return 1;
}

int main(int argc, char **argv)
{
	unsigned char *shared, *priv, *only, buf[16];
	unsigned long ino, ino2;
	char name[256];
	struct stat st;
	int fd, only_fd, status;
	pid_t child;

	wl_init(argc, argv);
	fd = make_memfd("wl-map", MAP_SIZE, 3, F_SEAL_SHRINK);
	if (dup2(fd, 7) != 7)
		wl_die("dup2");
	close(fd);
	only_fd = make_memfd("wl-only", ONLY_SIZE, 11, 0);
	shared = mmap(NULL, MAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, 7, 0);
	priv = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, 7, PAGE);
	only = mmap(NULL, ONLY_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, only_fd, 0);
	if (shared == MAP_FAILED || priv == MAP_FAILED || only == MAP_FAILED)
		wl_die("mmap");
	if (fcntl(only_fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK))
		wl_die("F_ADD_SEALS(wl-only)");
	close(only_fd);
	memcpy(shared + 10, "SHARED", 6);
	memcpy(priv, "PRIVATE", 7);
	if (lseek(7, 123, SEEK_SET) != 123)
		wl_die("lseek");
	child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0) {
		wl_wait();
		/* The child only writes: the parent checks that it reaches the shared memfd. */
		memcpy(shared + 60, "CHILD", 5);
		_exit(memcmp(shared + 10, "SHARED", 6) ? 3 : 0);
	}
	wl_ready();
	wl_wait();

	kill(child, SIGTERM);
	WL_CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		 "the child ended with status %#x", status);
	WL_CHECK(!memcmp(shared + 60, "CHILD", 5), "the child's write is not in the shared area");
	WL_CHECK(pread(7, buf, 5, 60) == 5 && !memcmp(buf, "CHILD", 5),
		 "the child's write is not in the memfd");
	WL_CHECK(!memcmp(shared + 10, "SHARED", 6), "the shared area lost its write");
	check_bytes(shared, 10, 0, 3, "shared area");
	check_bytes(shared + 16, 44, 16, 3, "shared area");
	check_bytes(shared + 65, 2 * PAGE, 65, 3, "shared area");
	WL_CHECK(pread(7, buf, 6, 10) == 6 && !memcmp(buf, "SHARED", 6), "fd 7 does not read the shared write");
	WL_CHECK(!memcmp(priv, "PRIVATE", 7), "the private area lost its own write");
	WL_CHECK(pread(7, buf, 7, PAGE) == 7 && memcmp(buf, "PRIVATE", 7), "the private write reached the memfd");
	check_bytes(priv + PAGE, PAGE, 2 * PAGE, 3, "private area's second page");
	/* Both ways, now. */
	memcpy(shared + 3000, "LIVE1", 5);
	WL_CHECK(pread(7, buf, 5, 3000) == 5 && !memcmp(buf, "LIVE1", 5), "fd 7 does not see a new shared write");
	WL_CHECK(pwrite(7, "LIVE2", 5, 5000) == 5 && !memcmp(shared + 5000, "LIVE2", 5),
		 "the shared area does not see a write through fd 7");
	WL_CHECK(pwrite(7, "LIVE3", 5, 2 * PAGE + 5) == 5 && !memcmp(priv + PAGE + 5, "LIVE3", 5),
		 "the private area's unwritten page does not show a write through fd 7");
	check_bytes(only, ONLY_SIZE, 0, 11, "wl-only");
	memcpy(only, "ONLY", 4);
	/* Identity, names, seals, offset. */
	WL_CHECK(fstat(7, &st) == 0, "fstat(7)");
	WL_CHECK(area_of(shared, &ino, name, sizeof(name)) && ino == st.st_ino &&
			 !strcmp(name, "/memfd:wl-map (deleted)"),
		 "the shared area is %lu %s, expected fd 7's inode %lu /memfd:wl-map (deleted)", ino, name,
		 (unsigned long)st.st_ino);
	WL_CHECK(area_of(priv, &ino, name, sizeof(name)) && ino == st.st_ino, "the private area is inode %lu, not %lu",
		 ino, (unsigned long)st.st_ino);
	WL_CHECK(area_of(only, &ino2, name, sizeof(name)) && ino2 != st.st_ino &&
			 !strcmp(name, "/memfd:wl-only (deleted)"),
		 "wl-only's area is %lu %s", ino2, name);
	WL_CHECK(fcntl(7, F_GET_SEALS) == F_SEAL_SHRINK, "fd 7 seals %#x", fcntl(7, F_GET_SEALS));
	WL_CHECK(seals_of_area(only, ONLY_SIZE) == (F_SEAL_GROW | F_SEAL_SHRINK), "wl-only seals %#x",
		 seals_of_area(only, ONLY_SIZE));
	WL_CHECK(lseek(7, 0, SEEK_CUR) == 123, "fd 7 is at %ld", (long)lseek(7, 0, SEEK_CUR));
	wl_finish();
}
