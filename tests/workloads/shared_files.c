/*
 * shared_files: files shared between processes in the three ways a restore
 * must keep apart.
 *
 * 1. One open file description in two fd tables: RESULT_FILE.data is opened
 *    before fork and its offset set to 100. After the wait the offset must
 *    still be 100; the forked child C then lseeks and writes, and the parent
 *    must see the offset move (1011) and the bytes.
 * 2. Pipes holding data across the dump: the parent writes 5000 bytes to C
 *    and closes its end (C must read them, then EOF); C writes 7000 bytes to
 *    the parent (read after C has exited: the bytes, then EOF). A third pipe
 *    carries C's "ready" before the dump and its verdict after.
 * 3. One fd table in two processes: F is made by clone(CLONE_FILES). Before
 *    ready F opens fd 50 and the parent fd 51; after the wait F checks both,
 *    opens fd 60 and closes 50, the parent must see that, opens fd 61, and F
 *    must see it. Their messages go through two pipes in that shared table.
 *
 *   bin/shared_files RESULT_FILE
 * Leaves RESULT_FILE.data and RESULT_FILE.{f,p}{before,after} next to it.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TO_C_LEN 5000
#define FROM_C_LEN 7000
#define TIMEOUT_MS 10000

static int data_fd;
static pid_t pid_c, pid_f; /* 0 once reaped */
static int to_c[2], from_c[2], c_ctl[2]; /* pipes with C */
static int f_says[2], p_says[2];         /* pipes between F and the parent, in the shared table */
static char paths[4][4096];              /* fbefore, pbefore, fafter, pafter */
enum { F_BEFORE, P_BEFORE, F_AFTER, P_AFTER };

static unsigned char byte_at(int stream, size_t i)
{
	return (unsigned char)(i * 7 + stream * 101 + (i >> 8));
}

static int write_stream(int fd, int stream, size_t len)
{
	unsigned char buf[FROM_C_LEN];

	for (size_t i = 0; i < len; i++)
		buf[i] = byte_at(stream, i);
	return write(fd, buf, len) == (ssize_t)len ? 0 : -1;
}

/* Reads up to `len` bytes, waiting at most TIMEOUT_MS in all; returns how many came (-1: error). */
static ssize_t read_for(int fd, void *buf, size_t len)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int64_t end = wl_now_ns() + TIMEOUT_MS * 1000000LL;
	size_t got = 0;

	while (got < len) {
		int left = (int)((end - wl_now_ns()) / 1000000);
		ssize_t n;

		if (left <= 0 || poll(&pfd, 1, left) <= 0)
			break;
		n = read(fd, (char *)buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 && got == 0 ? -1 : (ssize_t)got;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* Checks `len` bytes of `stream` then EOF; returns a problem or NULL. */
static const char *check_stream(int fd, int stream, size_t len, char *why, size_t size)
{
	unsigned char buf[FROM_C_LEN + 1];
	ssize_t n = read_for(fd, buf, len + 1); /* one more: must find EOF, not a byte */

	if (n != (ssize_t)len) {
		snprintf(why, size, "read %zd bytes, expected %zu then EOF", n, len);
		return why;
	}
	for (size_t i = 0; i < len; i++)
		if (buf[i] != byte_at(stream, i)) {
			snprintf(why, size, "byte %zu is %#x, expected %#x", i, buf[i], byte_at(stream, i));
			return why;
		}
	return NULL;
}

/* Does `fd` refer to the file at `path`? */
static int same_file(int fd, const char *path)
{
	struct stat a, b;

	return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Opens `path` as fd `at`. */
static int open_at(const char *path, int at)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

	if (fd < 0 || dup2(fd, at) != at)
		return -1;
	close(fd);
	return 0;
}

/* C: the forked child, with a table of its own. */
static __attribute__((noreturn)) void child_c(void)
{
	char why[256] = "", msg[300];
	off_t off;

	close(to_c[1]);
	close(from_c[0]);
	close(c_ctl[0]);
	if (write_stream(from_c[1], 1, FROM_C_LEN) != 0 || write(c_ctl[1], "R", 1) != 1)
		_exit(1);
	wl_wait();

	check_stream(to_c[0], 0, TO_C_LEN, why, sizeof(why));
	off = lseek(data_fd, 0, SEEK_CUR);
	if (!why[0] && off != 100)
		snprintf(why, sizeof(why), "shared offset is %lld, expected 100", (long long)off);
	if (!why[0] && (lseek(data_fd, 1000, SEEK_SET) != 1000 || write(data_fd, "child-wrote", 11) != 11))
		snprintf(why, sizeof(why), "lseek/write: %s", strerror(errno));
	snprintf(msg, sizeof(msg), "%s\n", why[0] ? why : "ok");
	if (write(c_ctl[1], msg, strlen(msg)) < 0)
		_exit(1);
	_exit(0);
}

/* F: shares the parent's fd table; returns its exit code. */
static int child_f(void *arg)
{
	char why[256] = "", msg[300], c;

	(void)arg;
	if (open_at(paths[F_BEFORE], 50) != 0 || write(f_says[1], "R", 1) != 1)
		return 1;
	wl_wait();

	if (!same_file(50, paths[F_BEFORE]) || !same_file(51, paths[P_BEFORE]))
		snprintf(why, sizeof(why), "fds 50/51 opened before ready are not there");
	else if (open_at(paths[F_AFTER], 60) != 0 || close(50) != 0)
		snprintf(why, sizeof(why), "opening 60 / closing 50: %s", strerror(errno));
	if (write(f_says[1], "A", 1) != 1)
		return 1;
	if (!why[0] && (read_for(p_says[0], &c, 1) != 1 || c != 'B'))
		snprintf(why, sizeof(why), "no word from the parent after it opened fd 61");
	else if (!why[0] && !same_file(61, paths[P_AFTER]))
		snprintf(why, sizeof(why), "fd 61 opened by the parent is not in the shared table");
	snprintf(msg, sizeof(msg), "%s\n", why[0] ? why : "ok");
	return write(f_says[1], msg, strlen(msg)) < 0;
}

/* Reads a "\n"-ended message (at most size-1 bytes); "" when none came. */
static const char *read_line(int fd, char *buf, size_t size)
{
	size_t len = 0;

	while (len + 1 < size && read_for(fd, buf + len, 1) == 1 && buf[len] != '\n')
		len++;
	buf[len] = '\0';
	return buf;
}

/* At exit (wl_die during setup included) no child may be left behind. */
static void kill_children(void)
{
	if (pid_c > 0)
		kill(pid_c, SIGKILL);
	if (pid_f > 0)
		kill(pid_f, SIGKILL);
	while (wait(NULL) > 0)
		;
}

static void reap(pid_t *pid, const char *name)
{
	int status;
	pid_t r = waitpid(*pid, &status, 0);

	*pid = 0;
	if (r < 0)
		wl_fail("waitpid(%s): %s", name, strerror(errno));
	else
		WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s ended with status %#x", name, status);
}

int main(int argc, char **argv)
{
	static const char *const suffix[4] = { "fbefore", "pbefore", "fafter", "pafter" };
	static char f_stack[64 * 1024];
	char line[300], buf[16], c;
	off_t off;

	wl_init(argc, argv);
	for (int i = 0; i < 4; i++)
		wl_path(suffix[i], paths[i], sizeof(paths[i]));
	data_fd = open(wl_path("data", line, sizeof(line)), O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (data_fd < 0 || write_stream(data_fd, 2, 4096) != 0 || lseek(data_fd, 100, SEEK_SET) != 100)
		wl_die("data file");
	if (pipe(to_c) || pipe(from_c) || pipe(c_ctl) || pipe(f_says) || pipe(p_says))
		wl_die("pipe");

	pid_c = fork();
	if (pid_c < 0)
		wl_die("fork");
	if (pid_c == 0)
		child_c();
	atexit(kill_children);
	close(to_c[0]);
	close(from_c[1]);
	close(c_ctl[1]);
	if (write_stream(to_c[1], 0, TO_C_LEN) != 0)
		wl_die("write to C");
	close(to_c[1]); /* C finds EOF after the data */
	if (read_for(c_ctl[0], &c, 1) != 1 || c != 'R')
		wl_die("C did not get ready");

	pid_f = clone(child_f, f_stack + sizeof(f_stack), CLONE_FILES | SIGCHLD, NULL);
	if (pid_f < 0)
		wl_die("clone(CLONE_FILES)");
	if (read_for(f_says[0], &c, 1) != 1 || c != 'R')
		wl_die("F did not get ready");
	if (!same_file(50, paths[F_BEFORE]))
		wl_die("fd 50 opened by F is not in the shared table");
	if (open_at(paths[P_BEFORE], 51) != 0)
		wl_die("open fd 51");

	wl_ready();
	wl_wait();

	/* 1. the shared offset, then C moves it */
	off = lseek(data_fd, 0, SEEK_CUR);
	WL_CHECK(off == 100, "data file offset is %lld, expected 100", (long long)off);
	kill(pid_c, SIGTERM);
	read_line(c_ctl[0], line, sizeof(line));
	WL_CHECK(strcmp(line, "ok") == 0, "child C: %s", line[0] ? line : "no verdict");
	off = lseek(data_fd, 0, SEEK_CUR);
	WL_CHECK(off == 1011, "data file offset is %lld after C's write, expected 1011", (long long)off);
	WL_CHECK(pread(data_fd, buf, 11, 1000) == 11 && memcmp(buf, "child-wrote", 11) == 0,
		 "C's write is not in the data file");

	/* 2. what C wrote before the dump, then EOF once C is gone */
	reap(&pid_c, "C");
	WL_CHECK(check_stream(from_c[0], 1, FROM_C_LEN, line, sizeof(line)) == NULL, "pipe from C: %s", line);

	/* 3. the shared fd table */
	kill(pid_f, SIGTERM);
	if (read_for(f_says[0], &c, 1) != 1 || c != 'A') {
		wl_fail("F did not answer after the wait");
	} else {
		WL_CHECK(same_file(60, paths[F_AFTER]), "fd 60 opened by F after the wait is not in our table");
		WL_CHECK(fcntl(50, F_GETFD) < 0 && errno == EBADF, "fd 50 closed by F is still open here");
		WL_CHECK(open_at(paths[P_AFTER], 61) == 0 && write(p_says[1], "B", 1) == 1, "open fd 61: %s",
			 strerror(errno));
		read_line(f_says[0], line, sizeof(line));
		WL_CHECK(strcmp(line, "ok") == 0, "child F: %s", line[0] ? line : "no verdict");
	}
	reap(&pid_f, "F");
	wl_finish();
}
