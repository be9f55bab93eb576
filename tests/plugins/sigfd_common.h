/*
 * What the test plugins share: a signalfd (a kind of fd criu-ts does not take itself) saved in
 * the images directory as one small file per id; a unix stream socket connected outside the tree,
 * saved as the path of its peer and connected there again; and a trace of every call for the tests.
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
#include <sys/signalfd.h>
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

/* The signal mask and flags of a signalfd, from /proc/self/fdinfo; -ENOTSUP for another file. */
static inline int read_signalfd(int fd, unsigned long long *mask, int *flags)
{
	char path[64], line[256];
	int found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (!(f = fopen(path, "r")))
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "sigmask: %llx", mask) == 1)
			found = 1;
		sscanf(line, "flags: %o", flags);
	}
	fclose(f);
	return found ? 0 : -ENOTSUP;
}

static inline int save_signalfd(int dir, int id, unsigned long long mask, int flags)
{
	char name[64], text[64];
	int fd, n;

	snprintf(name, sizeof(name), "sigfd-plugin-%d.txt", id);
	fd = openat(dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	n = snprintf(text, sizeof(text), "%llx %o\n", mask, flags);
	if (write(fd, text, n) != n) {
		close(fd);
		return -EIO;
	}
	close(fd);
	return 0;
}

/* A new signalfd for the saved id, or -ENOTSUP when the images hold none for it. */
static inline int load_signalfd(int dir, int id)
{
	unsigned long long mask;
	char name[64], text[64];
	sigset_t set;
	int fd, flags, n, sig;

	snprintf(name, sizeof(name), "sigfd-plugin-%d.txt", id);
	fd = openat(dir, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOTSUP : -errno;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	text[n] = 0;
	if (sscanf(text, "%llx %o", &mask, &flags) != 2)
		return -EIO;
	sigemptyset(&set);
	for (sig = 1; sig <= 64; sig++)
		if (mask & (1ULL << (sig - 1)))
			sigaddset(&set, sig);
	fd = signalfd(-1, &set, flags & (O_NONBLOCK | O_CLOEXEC));
	return fd < 0 ? -errno : fd;
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
