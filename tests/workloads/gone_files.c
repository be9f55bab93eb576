/*
 * gone_files PART...: open files whose names are gone, and file locks (CRIU's seed cases).
 *
 *   ghost   fd 20: a sparse 900 KiB file (data at 0 and at 600 KiB, holes between and after),
 *           O_RDWR at offset 70000, unlinked; fd 21: a 100-byte file, O_WRONLY|O_APPEND, unlinked;
 *           fd 22: a directory, removed; fd 25: a file in a directory, both removed. Same bytes, holes still holes, same offsets and flags,
 *           still unlinked, and nothing left in the directory (no "*.cr.*.ghost").
 *   cwd     the working directory is a directory that was removed; it stays removed and ours.
 *   link    fd 23: a file opened by a name that was removed while a second hard link remains
 *           (RESULT.link2); same inode as RESULT.link2, one link (plus a link_remap.N a dump -R kept),
 *           offset and flags kept, a write through the fd is seen through RESULT.link2.
 *   device  fd 24: /dev/zero's device opened through a node (RESULT.dev) that was removed; still
 *           that character device, reads zeros.
 *   map     a removed 64 KiB file mapped shared (read-write) and private (one page written): same
 *           bytes; the shared mapping still writes through to the file, the private one does not.
 *   locks   fd 30: flock LOCK_EX; fd 31: POSIX write lock [100,200) and read lock [300,400);
 *           fd 32: OFD write lock [0,10); fd 33: a read lease; a child holding its own POSIX
 *           lock [500,EOF) on the file of fd 31 and sharing fd 30. Another process must find
 *           each lock held, by the right owner.
 */
#include "lib.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#define BIG_SIZE (900 * 1024)
#define HOLE_AT 5000
#define DATA2_AT (600 * 1024)
#define DATA2_LEN 8000
#define BIG_POS 70000
#define SMALL_SIZE 100

static char dir_of_result[4096];
static pid_t holder;

static char byte_at(size_t off)
{
	return (char)('A' + (off * 13 + off / 251) % 26);
}

static int in_data(size_t off)
{
	return off < HOLE_AT || (off >= DATA2_AT && off < DATA2_AT + DATA2_LEN);
}

static void write_pattern(int fd, size_t from, size_t len)
{
	char *buf = malloc(len);

	if (buf == NULL)
		wl_die("malloc");
	for (size_t i = 0; i < len; i++)
		buf[i] = byte_at(from + i);
	if (pwrite(fd, buf, len, from) != (ssize_t)len)
		wl_die("pwrite");
	free(buf);
}

/* Puts `fd` at number `at` and closes the original. */
static void move_fd(int fd, int at)
{
	if (fd < 0 || dup2(fd, at) != at)
		wl_die("fd %d", at);
	close(fd);
}

static int open_gone(const char *suffix, int flags, int at)
{
	char path[4096];
	int fd = open(wl_path(suffix, path, sizeof(path)), flags | O_CREAT | O_TRUNC, 0640);

	if (fd < 0)
		wl_die("open %s", path);
	if (dup2(fd, at) != at)
		wl_die("dup2");
	close(fd);
	return at;
}

static void check_flags(int fd, int want, const char *what)
{
	int got = fcntl(fd, F_GETFL);

	WL_CHECK(got >= 0 && (got & (O_ACCMODE | O_APPEND)) == want, "%s: flags 0%o, expected 0%o", what,
		 got & (O_ACCMODE | O_APPEND), want);
}

/* fd is the removed file RESULT.suffix, by that same name (a restore opens it by its own name). */
static void check_deleted(int fd, const char *suffix, const char *what)
{
	char link[64], target[4096], want[4200];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	target[n > 0 ? n : 0] = 0;
	wl_path(suffix, want, sizeof(want) - 16);
	strcat(want, " (deleted)");
	WL_CHECK(strcmp(target, want) == 0, "%s: fd %d is %s, not %s", what, fd, target, want);
}

/* fd 25: RESULT.gone-dir/inner, 10 bytes, then both removed. */
static void setup_nested(void)
{
	char dir[4096], path[4200];

	if (mkdir(wl_path("gone-dir", dir, sizeof(dir)), 0700) < 0)
		wl_die("mkdir");
	snprintf(path, sizeof(path), "%s/inner", dir);
	move_fd(open(path, O_RDWR | O_CREAT | O_TRUNC, 0600), 25);
	if (write(25, "0123456789", 10) != 10 || unlink(path) < 0 || rmdir(dir) < 0)
		wl_die("nested ghost");
}

static void check_nested(void)
{
	char buf[10];
	struct stat st;

	WL_CHECK(fstat(25, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 0 && st.st_size == 10,
		 "nested ghost: not a removed 10-byte file");
	WL_CHECK(pread(25, buf, 10, 0) == 10 && memcmp(buf, "0123456789", 10) == 0 && lseek(25, 0, SEEK_CUR) == 10,
		 "nested ghost: contents or offset differ");
}

static void setup_ghost(void)
{
	char path[4096];

	open_gone("ghost-big", O_RDWR, 20);
	write_pattern(20, 0, HOLE_AT);
	write_pattern(20, DATA2_AT, DATA2_LEN);
	if (ftruncate(20, BIG_SIZE) < 0)
		wl_die("ftruncate");
	if (lseek(20, BIG_POS, SEEK_SET) != BIG_POS)
		wl_die("lseek");
	open_gone("ghost-small", O_RDWR, 21);
	write_pattern(21, 0, SMALL_SIZE);
	close(21);
	move_fd(open(wl_path("ghost-small", path, sizeof(path)), O_WRONLY | O_APPEND), 21);
	unlink(wl_path("ghost-big", path, sizeof(path)));
	unlink(wl_path("ghost-small", path, sizeof(path)));
	if (mkdir(wl_path("ghost-dir", path, sizeof(path)), 0750) < 0)
		wl_die("mkdir");
	move_fd(open(path, O_RDONLY | O_DIRECTORY), 22);
	if (rmdir(path) < 0)
		wl_die("rmdir");
	setup_nested();
}

/* fd 21 is write-only: its bytes are read through a second open of the same file. */
static void check_small_contents(void)
{
	char buf[SMALL_SIZE];
	int fd = open("/proc/self/fd/21", O_RDONLY), bad = 0;

	WL_CHECK(fd >= 0 && pread(fd, buf, SMALL_SIZE, 0) == SMALL_SIZE, "small ghost: cannot read it back");
	for (int i = 0; i < SMALL_SIZE; i++)
		bad += buf[i] != byte_at(i);
	WL_CHECK(bad == 0, "small ghost: %d bytes differ", bad);
	close(fd);
}

static void check_ghost(void)
{
	struct stat st;
	char *buf = malloc(BIG_SIZE);
	size_t bad = 0;
	off_t data;

	if (buf == NULL)
		wl_die("malloc");
	WL_CHECK(fstat(20, &st) == 0 && st.st_nlink == 0 && st.st_size == BIG_SIZE,
		 "big ghost: nlink %lu size %ld", (unsigned long)st.st_nlink, (long)st.st_size);
	WL_CHECK(lseek(20, 0, SEEK_CUR) == BIG_POS, "big ghost: offset %ld", (long)lseek(20, 0, SEEK_CUR));
	check_flags(20, O_RDWR, "big ghost");
	check_deleted(20, "ghost-big", "big ghost");
	WL_CHECK(pread(20, buf, BIG_SIZE, 0) == BIG_SIZE, "big ghost: short read");
	for (size_t i = 0; i < BIG_SIZE; i++)
		if (buf[i] != (in_data(i) ? byte_at(i) : 0))
			bad++;
	WL_CHECK(bad == 0, "big ghost: %zu bytes differ", bad);
	data = lseek(20, 8192, SEEK_DATA); /* the block after the first data */
	WL_CHECK(data >= DATA2_AT - 4096, "big ghost: the hole from 8192 holds data from %ld", (long)data);
	WL_CHECK(st.st_blocks * 512 < 200 * 1024, "big ghost: %ld bytes on disk, holes filled",
		 (long)st.st_blocks * 512);
	WL_CHECK(fstat(21, &st) == 0 && st.st_nlink == 0 && st.st_size == SMALL_SIZE && (st.st_mode & 0777) == 0640,
		 "small ghost: nlink %lu size %ld mode %o", (unsigned long)st.st_nlink, (long)st.st_size,
		 st.st_mode & 0777);
	check_flags(21, O_WRONLY | O_APPEND, "small ghost");
	check_deleted(21, "ghost-small", "small ghost");
	check_small_contents();
	WL_CHECK(write(21, "xyz", 3) == 3 && fstat(21, &st) == 0 && st.st_size == SMALL_SIZE + 3,
		 "small ghost: an append did not land at the end");
	WL_CHECK(fstat(22, &st) == 0 && S_ISDIR(st.st_mode) && st.st_nlink == 0, "ghost dir: not a removed directory");
	check_deleted(22, "ghost-dir", "ghost dir");
	check_nested();
	free(buf);
}

static void setup_cwd(void)
{
	char path[4096];

	if (mkdir(wl_path("gone-cwd", path, sizeof(path)), 0700) < 0 || chdir(path) < 0 || rmdir(path) < 0)
		wl_die("removed cwd");
}

static void check_cwd(void)
{
	char target[4096];
	ssize_t n = readlink("/proc/self/cwd", target, sizeof(target) - 1);
	struct stat st;

	target[n > 0 ? n : 0] = 0;
	WL_CHECK(n > 10 && strstr(target, ".gone-cwd (deleted)") != NULL, "cwd is %s, not the removed directory",
		 target);
	WL_CHECK(stat(".", &st) == 0 && S_ISDIR(st.st_mode) && st.st_nlink == 0, "cwd is not a removed directory");
}

static void setup_link(void)
{
	char path[4096], second[4096];

	open_gone("linked", O_RDWR, 23);
	write_pattern(23, 0, 300);
	if (link(wl_path("linked", path, sizeof(path)), wl_path("link2", second, sizeof(second))) < 0)
		wl_die("link");
	if (unlink(path) < 0)
		wl_die("unlink");
	if (lseek(23, 17, SEEK_SET) != 17)
		wl_die("lseek");
}

/* link_remap.N names of inode `ino` next to the result: a dump -R keeps its link (CRIU does). */
static int kept_links(ino_t ino)
{
	DIR *d = opendir(dir_of_result);
	struct dirent *e;
	int n = 0;

	while (d != NULL && (e = readdir(d)) != NULL)
		n += strncmp(e->d_name, "link_remap.", 11) == 0 && e->d_ino == ino;
	if (d != NULL)
		closedir(d);
	return n;
}

static void check_link(void)
{
	char second[4096], c = 0;
	struct stat st, st2;
	int fd;

	WL_CHECK(fstat(23, &st) == 0 && stat(wl_path("link2", second, sizeof(second)), &st2) == 0 &&
			 st.st_ino == st2.st_ino && st.st_dev == st2.st_dev,
		 "linked file: fd 23 is not the file of %s", second);
	WL_CHECK(st.st_nlink == 1 + kept_links(st.st_ino), "linked file: %lu links, expected 1 + %d kept",
		 (unsigned long)st.st_nlink, kept_links(st.st_ino));
	WL_CHECK(lseek(23, 0, SEEK_CUR) == 17, "linked file: offset %ld", (long)lseek(23, 0, SEEK_CUR));
	check_flags(23, O_RDWR, "linked file");
	check_deleted(23, "linked", "linked file");
	WL_CHECK(write(23, "#", 1) == 1, "linked file: write");
	fd = open(second, O_RDONLY);
	WL_CHECK(fd >= 0 && pread(fd, &c, 1, 17) == 1 && c == '#', "linked file: the write is not seen by name");
	close(fd);
}

static void setup_device(void)
{
	char path[4096];

	if (mknod(wl_path("dev", path, sizeof(path)), S_IFCHR | 0600, makedev(1, 5)) < 0)
		wl_die("mknod");
	move_fd(open(path, O_RDONLY), 24);
	unlink(path);
}

static void check_device(void)
{
	struct stat st;
	char buf[16] = "not zeroes";

	WL_CHECK(fstat(24, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 5),
		 "device: fd 24 is not device 1:5");
	WL_CHECK(read(24, buf, sizeof(buf)) == sizeof(buf) && buf[0] == 0 && buf[9] == 0, "device: no zeroes read");
	check_flags(24, O_RDONLY, "device");
}

#define MAP_LEN (64 * 1024)
static char *shared_map, *private_map;

static void setup_map(void)
{
	char path[4096];
	int fd = open(wl_path("mapped", path, sizeof(path)), O_RDWR | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || ftruncate(fd, MAP_LEN) < 0)
		wl_die("mapped file");
	shared_map = mmap(NULL, MAP_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	private_map = mmap(NULL, MAP_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (shared_map == MAP_FAILED || private_map == MAP_FAILED)
		wl_die("mmap");
	for (size_t i = 0; i < MAP_LEN; i++)
		shared_map[i] = byte_at(i);
	memset(private_map + 4096, '#', 4096);
	close(fd);
	unlink(path);
}

static void check_map(void)
{
	char link[128], c = 0;
	size_t bad = 0;
	int fd;

	for (size_t i = 0; i < MAP_LEN; i++) {
		bad += shared_map[i] != byte_at(i);
		bad += private_map[i] != (i >= 4096 && i < 8192 ? '#' : byte_at(i));
	}
	WL_CHECK(bad == 0, "mapped ghost: %zu bytes differ", bad);
	shared_map[100] = '!';
	private_map[200] = '?';
	snprintf(link, sizeof(link), "/proc/self/map_files/%lx-%lx", (unsigned long)shared_map,
		 (unsigned long)shared_map + MAP_LEN);
	fd = open(link, O_RDONLY);
	WL_CHECK(fd >= 0 && pread(fd, &c, 1, 100) == 1 && c == '!', "mapped ghost: the shared mapping is not the file");
	WL_CHECK(fd >= 0 && pread(fd, &c, 1, 200) == 1 && c == byte_at(200), "mapped ghost: a private write reached the file");
	if (fd >= 0)
		close(fd);
}

static void lock_range(int fd, int cmd, short type, off_t start, off_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };

	if (fcntl(fd, cmd, &fl) < 0)
		wl_die("lock %d [%ld,+%ld)", fd, (long)start, (long)len);
}

static void setup_locks(void)
{
	int ready[2];
	char c;

	open_gone("flock", O_RDWR, 30);
	open_gone("posix", O_RDWR, 31);
	open_gone("ofd", O_RDWR, 32);
	open_gone("lease", O_RDONLY, 33);
	if (flock(30, LOCK_EX | LOCK_NB) < 0)
		wl_die("flock");
	lock_range(31, F_SETLK, F_WRLCK, 100, 100);
	lock_range(31, F_SETLK, F_RDLCK, 300, 100);
	lock_range(32, F_OFD_SETLK, F_WRLCK, 0, 10);
	if (fcntl(33, F_SETLEASE, F_RDLCK) < 0)
		wl_die("lease");
	if (pipe(ready) < 0)
		wl_die("pipe");
	holder = fork();
	if (holder < 0)
		wl_die("fork");
	if (holder == 0) {
		close(ready[0]);
		close(32);
		close(33);
		lock_range(31, F_SETLK, F_WRLCK, 500, 0);
		if (write(ready[1], "x", 1) != 1)
			_exit(2);
		close(ready[1]);
		while (!wl_stop)
			usleep(20000);
		_exit(0);
	}
	close(ready[1]);
	if (read(ready[0], &c, 1) != 1)
		wl_die("lock holder did not start");
	close(ready[0]);
}

/* From a process of its own: which process's lock covers [start,+len) of `suffix` for `type`. */
static pid_t owner_of(const char *suffix, int cmd, short type, off_t start, off_t len)
{
	char path[4096];
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	int fd = open(wl_path(suffix, path, sizeof(path)), O_RDWR);

	if (fd < 0 || fcntl(fd, cmd, &fl) < 0)
		return -2;
	close(fd);
	return fl.l_type == F_UNLCK ? 0 : (cmd == F_OFD_GETLK ? -1 : fl.l_pid);
}

/* The checks another process makes: exit status = number of failures (0..). */
static int check_locks_from_outside(pid_t owner)
{
	char path[4096];
	int fails = 0, fd = open(wl_path("flock", path, sizeof(path)), O_RDWR);

	if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) {
		wl_log("flock: another process could take it");
		fails++;
	}
	if (owner_of("posix", F_GETLK, F_RDLCK, 150, 1) != owner) {
		wl_log("posix [100,200): owner %d", owner_of("posix", F_GETLK, F_RDLCK, 150, 1));
		fails++;
	}
	if (owner_of("posix", F_GETLK, F_WRLCK, 350, 1) != owner) {
		wl_log("posix read lock [300,400) not held");
		fails++;
	}
	if (owner_of("posix", F_GETLK, F_RDLCK, 350, 1) != 0 || owner_of("posix", F_GETLK, F_WRLCK, 250, 1) != 0) {
		wl_log("posix: a range outside the locks is locked");
		fails++;
	}
	if (owner_of("posix", F_GETLK, F_RDLCK, 5000, 1) != holder) {
		wl_log("posix [500,EOF): owner %d, expected the holder %d", owner_of("posix", F_GETLK, F_RDLCK, 5000, 1),
		       holder);
		fails++;
	}
	if (owner_of("ofd", F_OFD_GETLK, F_RDLCK, 5, 1) != -1) {
		wl_log("ofd [0,10): not held");
		fails++;
	}
	return fails;
}

static void check_locks(void)
{
	pid_t checker = fork();
	int status = 0;

	if (checker == 0)
		_exit(check_locks_from_outside(getppid()));
	WL_CHECK(checker > 0 && waitpid(checker, &status, 0) == checker && WIFEXITED(status) &&
			 WEXITSTATUS(status) == 0,
		 "locks: %d check(s) from another process failed (see the log)", WEXITSTATUS(status));
	WL_CHECK(fcntl(33, F_GETLEASE) == F_RDLCK, "lease: %d, expected a read lease", fcntl(33, F_GETLEASE));
	kill(holder, SIGTERM);
	WL_CHECK(waitpid(holder, &status, 0) == holder && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		 "lock holder ended with status 0x%x", status);
}

/*
 * No ghost a restore made may be left next to the result. link_remap.N names are counted by the
 * link check instead: a dump -R keeps its link for a restore of those images (CRIU does); the
 * test checks that none is left after a restore.
 */
static void check_directory(void)
{
	DIR *d = opendir(dir_of_result);
	struct dirent *e;

	if (d == NULL) {
		wl_fail("cannot list %s", dir_of_result);
		return;
	}
	while ((e = readdir(d)) != NULL)
		WL_CHECK(strstr(e->d_name, ".cr.") == NULL, "%s is left in the directory", e->d_name);
	closedir(d);
}

static int has(int argc, char **argv, const char *part)
{
	for (int i = 2; i < argc; i++)
		if (strcmp(argv[i], part) == 0)
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	char *slash;

	wl_init(argc, argv);
	snprintf(dir_of_result, sizeof(dir_of_result), "%s", argv[1]);
	slash = strrchr(dir_of_result, '/');
	if (slash == NULL)
		wl_die("the result path must be absolute");
	*slash = 0;
	if (has(argc, argv, "ghost"))
		setup_ghost();
	if (has(argc, argv, "link"))
		setup_link();
	if (has(argc, argv, "device"))
		setup_device();
	if (has(argc, argv, "map"))
		setup_map();
	if (has(argc, argv, "locks"))
		setup_locks();
	if (has(argc, argv, "cwd"))
		setup_cwd();
	wl_ready();
	wl_wait();
	if (has(argc, argv, "ghost"))
		check_ghost();
	if (has(argc, argv, "link"))
		check_link();
	if (has(argc, argv, "device"))
		check_device();
	if (has(argc, argv, "map"))
		check_map();
	if (has(argc, argv, "locks"))
		check_locks();
	if (has(argc, argv, "cwd"))
		check_cwd();
	check_directory();
	wl_finish();
}
