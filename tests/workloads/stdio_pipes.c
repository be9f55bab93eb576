/*
 * stdio_pipes: a parent and its child whose stdin and stdout are the test's pipes, the shape of a
 * container's stdio under runc. For each line read on stdin the parent writes "P:LINE" to stdout
 * and hands the line to the child through a pipe of their own; the child writes "C:LINE" to the
 * same stdout. Restored with --inherit-fd, both must use the new pipes the caller gave.
 * wl_ready's "ready" line goes to stdout too (the first line the test reads).
 * On SIGTERM: fds 0 and 1 are still pipes, read-only and write-only, and the child (which checks
 * its own fd 1 the same way) ends with status 0.
 * `tty`: stdin and stdout are one terminal instead (a pty slave opened O_RDWR, not the controlling
 * terminal), as --external tty[RDEV:DEV] hands it over.
 * `pidns`: the tree is the init of a PID namespace of its own (a runc container's shape) leading
 * its own session, with its child; the started process only launches it: it writes the init's
 * pid (ours) to RESULT_FILE.pid and exits 0, and the init makes RESULT_FILE.ready and writes the
 * result.
 *   bin/stdio_pipes RESULT_FILE [tty|pidns]
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int on_tty;

/* fd is a pipe end open with mode, or in tty mode a terminal open read-write. */
static int is_pipe_end(int fd, int mode)
{
	struct stat st;
	int flags = fcntl(fd, F_GETFL);

	if (fstat(fd, &st) != 0 || flags < 0)
		return 0;
	if (on_tty)
		return isatty(fd) && (flags & O_ACCMODE) == O_RDWR;
	return S_ISFIFO(st.st_mode) && (flags & O_ACCMODE) == mode;
}

static void write_line(const char *prefix, const char *line, size_t len)
{
	char out[600];
	int n = snprintf(out, sizeof(out), "%s%.*s\n", prefix, (int)len, line);

	if (n > 0 && write(1, out, (size_t)n) != n)
		wl_fail("writing %s%.*s to stdout: %s", prefix, (int)len, line, strerror(errno));
}

/* Calls each(line, len) for every whole line read from fd until SIGTERM or EOF. */
static void each_line(int fd, void (*each)(const char *, size_t))
{
	char buf[512];
	size_t have = 0;

	while (!wl_stop) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - have);
		char *nl;

		if (n == 0)
			return;
		if (n < 0) {
			if (errno != EINTR)
				wl_fail("read: %s", strerror(errno));
			if (errno != EINTR)
				return;
			continue;
		}
		have += (size_t)n;
		while ((nl = memchr(buf, '\n', have)) != NULL) {
			size_t len = (size_t)(nl - buf);

			each(buf, len);
			memmove(buf, nl + 1, have - len - 1);
			have -= len + 1;
		}
		if (have == sizeof(buf))
			have = 0; /* an overlong line is dropped */
	}
}

static int to_child = -1;

static void child_line(const char *line, size_t len)
{
	write_line("C:", line, len);
}

static void parent_line(const char *line, size_t len)
{
	char copy[520];

	write_line("P:", line, len);
	memcpy(copy, line, len);
	copy[len] = '\n';
	if (write(to_child, copy, len + 1) != (ssize_t)(len + 1))
		wl_fail("writing to the child: %s", strerror(errno));
}

static int run(void);

/* The init of the PID namespace: its own session, its pid (ours) for the harness, then the tree. */
static int init_main(void *arg)
{
	char path[4096], self[32];
	ssize_t n = readlink("/proc/self", self, sizeof(self) - 1);
	FILE *f;

	(void)arg;
	if (setsid() < 0 || n <= 0)
		wl_die("setsid or /proc/self");
	self[n] = 0;
	f = fopen(wl_path("pid", path, sizeof(path)), "w");
	if (!f || fprintf(f, "%s\n", self) < 0 || fclose(f))
		wl_die("writing %s", path);
	return run();
}

int main(int argc, char **argv)
{
	static char stack[256 * 1024];
	pid_t init;

	wl_init(argc, argv);
	on_tty = argc > 2 && strcmp(argv[2], "tty") == 0;
	if (!(argc > 2 && strcmp(argv[2], "pidns") == 0))
		return run();
	init = clone(init_main, stack + sizeof(stack), CLONE_NEWPID | SIGCHLD, NULL);
	if (init < 0)
		wl_die("clone(CLONE_NEWPID)");
	return 0; /* the harness adopts the init; the ends of our pipes close with us */
}

static int run(void)
{
	int p[2], status = 0;
	pid_t child;

	if (!is_pipe_end(0, O_RDONLY) || !is_pipe_end(1, O_WRONLY))
		wl_die("stdin and stdout must be the read end and the write end of pipes");
	if (pipe(p))
		wl_die("pipe");
	child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0) {
		close(p[1]);
		close(0);
		each_line(p[0], child_line);
		_exit(is_pipe_end(1, O_WRONLY) && wl_failures() == 0 ? 0 : 3);
	}
	close(p[0]);
	to_child = p[1];
	wl_ready();
	each_line(0, parent_line);
	wl_wait(); /* stdin may end before SIGTERM */
	WL_CHECK(is_pipe_end(0, O_RDONLY), "fd 0 is no longer the read end of a pipe");
	WL_CHECK(is_pipe_end(1, O_WRONLY), "fd 1 is no longer the write end of a pipe");
	kill(child, SIGTERM);
	if (waitpid(child, &status, 0) != child)
		wl_fail("waitpid(child): %s", strerror(errno));
	else
		WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child ended with status %#x", status);
	wl_finish();
}
