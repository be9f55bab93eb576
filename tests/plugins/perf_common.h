/*
 * What the test plugins share: a perf event fd (a kind of fd neither criu-ts nor CRIU takes)
 * saved in the images directory as one small file per id; a unix stream socket connected outside
 * the tree, saved as the path of its peer and connected there again; and a trace of every call.
 *
 * Environment: CRIU_TS_PLUGIN_TRACE (a file each call appends a line to) and
 * CRIU_TS_PLUGIN_MODE ("fail-init", "fail-dump" or "fail-restore" makes that step fail).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static inline void trace(const char *fmt, ...)
{
	const char *path = getenv("CRIU_TS_PLUGIN_TRACE");
	FILE *f;
	va_list ap;

	if (!path || !(f = fopen(path, "a")))
		return;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fclose(f);
}

static inline int mode_is(const char *mode)
{
	const char *m = getenv("CRIU_TS_PLUGIN_MODE");
	return m && strcmp(m, mode) == 0;
}

/*
 * The flags of a perf event fd, from /proc/self/fdinfo; -ENOTSUP for another file. The kernel
 * shows nothing of a perf event's attr, so the plugins keep the flags and re-create the event the
 * tests use (PERF_TEST_ATTR).
 */
static inline int read_perf_event(int fd, int *flags)
{
	char path[64], line[256];
	ssize_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, line, sizeof(line) - 1);
	if (n < 0)
		return -errno;
	line[n] = 0;
	if (strcmp(line, "anon_inode:[perf_event]") != 0)
		return -ENOTSUP;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (!(f = fopen(path, "r")))
		return -errno;
	while (fgets(line, sizeof(line), f))
		sscanf(line, "flags: %o", flags);
	fclose(f);
	return 0;
}

static inline int save_perf_event(int dir, int id, int flags)
{
	char name[64], text[64];
	int fd, n;

	snprintf(name, sizeof(name), "perf-plugin-%d.txt", id);
	fd = openat(dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	n = snprintf(text, sizeof(text), "%o\n", flags);
	if (write(fd, text, n) != n) {
		close(fd);
		return -EIO;
	}
	close(fd);
	return 0;
}

/* A new perf event (the tests' attr) with the saved flags, or -ENOTSUP when the images hold none for the id. */
static inline int load_perf_event(int dir, int id)
{
	struct perf_event_attr attr;
	char name[64], text[64];
	int fd, flags, n;

	snprintf(name, sizeof(name), "perf-plugin-%d.txt", id);
	fd = openat(dir, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOTSUP : -errno;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	text[n] = 0;
	if (sscanf(text, "%o", &flags) != 1)
		return -EIO;
	memset(&attr, 0, sizeof(attr));
	attr.size = sizeof(attr);
	attr.type = PERF_TYPE_SOFTWARE;
	attr.config = PERF_COUNT_SW_DUMMY;
	attr.read_format = PERF_FORMAT_ID;
	attr.disabled = 1;
	fd = syscall(SYS_perf_event_open, &attr, 0, -1, -1, (flags & O_CLOEXEC) ? PERF_FLAG_FD_CLOEXEC : 0);
	if (fd < 0)
		return -errno;
	if (fcntl(fd, F_SETFL, flags & O_NONBLOCK)) {
		n = -errno;
		close(fd);
		return n;
	}
	return fd;
}

/* The path of a unix socket's peer, saved by the socket's inode; -ENOTSUP for another socket. */
static inline int save_unix_peer(int dir, int fd, int id)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);
	char name[64];
	int out, n;

	if (getpeername(fd, (struct sockaddr *)&sa, &len) || sa.sun_family != AF_UNIX || len <= sizeof(sa.sun_family) ||
	    sa.sun_path[0] == 0)
		return -ENOTSUP;
	snprintf(name, sizeof(name), "unix-peer-%d.txt", id);
	out = openat(dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0)
		return -errno;
	n = strlen(sa.sun_path);
	if (write(out, sa.sun_path, n) != n) {
		close(out);
		return -EIO;
	}
	close(out);
	return 0;
}

/* A new stream socket connected to the saved peer path, or -ENOTSUP when none is saved for it. */
static inline int connect_unix_peer(int dir, int id)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char name[64];
	int in, n, sk;

	snprintf(name, sizeof(name), "unix-peer-%d.txt", id);
	in = openat(dir, name, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return errno == ENOENT ? -ENOTSUP : -errno;
	n = read(in, sa.sun_path, sizeof(sa.sun_path) - 1);
	close(in);
	if (n <= 0)
		return -EIO;
	sk = socket(AF_UNIX, SOCK_STREAM, 0);
	if (sk < 0)
		return -errno;
	if (connect(sk, (struct sockaddr *)&sa, sizeof(sa))) {
		n = -errno;
		close(sk);
		return n;
	}
	return sk;
}
