/* The workload protocol: ready file, SIGTERM flag, result file. See lib.h. */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>
#include <sys/wait.h>

volatile sig_atomic_t wl_stop;

static const char *result_path;
static char fail_text[2048];
static size_t fail_len;
static int fail_count;

static void on_sigterm(int sig)
{
	(void)sig;
	wl_stop = 1;
}

void wl_init(int argc, char **argv)
{
	struct sigaction sa;

	if (argc < 2 || argv[1][0] == '\0') {
		dprintf(2, "usage: %s RESULT_FILE [args]\n", argc > 0 ? argv[0] : "workload");
		exit(2);
	}
	result_path = argv[1];

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigterm;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTERM, &sa, NULL) != 0)
		wl_die("sigaction(SIGTERM)");
}

const char *wl_path(const char *suffix, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s.%s", result_path, suffix);

	if (n < 0 || (size_t)n >= size)
		wl_die("path too long for %s", suffix);
	return buf;
}

void wl_ready(void)
{
	char path[4096];
	int fd;

	fd = open(wl_path("ready", path, sizeof(path)), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		wl_die("create %s", path);
	close(fd);
	wl_log("ready");
}

void wl_wait(void)
{
	const struct timespec step = { 0, 20 * 1000 * 1000 };

	while (!wl_stop)
		nanosleep(&step, NULL);
}

void wl_log(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(1, line, n) < 0) {
		/* The log is best effort. */
	}
}

static void add_failure(const char *text)
{
	size_t room = sizeof(fail_text) - fail_len;
	int n;

	fail_count++;
	wl_log("FAIL: %s", text);
	if (room <= 1)
		return;
	n = snprintf(fail_text + fail_len, room, "%s%s", fail_len ? "; " : "", text);
	if (n < 0)
		return;
	fail_len += (size_t)n < room ? (size_t)n : room - 1;
}

void wl_fail(const char *fmt, ...)
{
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	add_failure(text);
}

int wl_failures(void)
{
	return fail_count;
}

void wl_die(const char *fmt, ...)
{
	char text[512];
	int saved = errno;
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	n = strlen(text);
	if (saved != 0 && n < sizeof(text))
		snprintf(text + n, sizeof(text) - n, ": %s", strerror(saved));
	add_failure(text);
	wl_finish();
}

void wl_finish(void)
{
	char line[sizeof(fail_text) + 16];
	size_t i, len;
	int fd;

	if (fail_count == 0) {
		len = (size_t)snprintf(line, sizeof(line), "PASS\n");
	} else {
		len = (size_t)snprintf(line, sizeof(line), "FAIL: %s\n", fail_text);
		for (i = 0; i + 1 < len; i++) /* exactly one line */
			if (line[i] == '\n' || line[i] == '\r')
				line[i] = ' ';
	}
	wl_log("%.*s", (int)len - 1, line);

	fd = open(result_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, line, len) != (ssize_t)len) {
		dprintf(2, "cannot write %s: %s\n", result_path, strerror(errno));
		exit(3);
	}
	close(fd);
	exit(fail_count == 0 ? 0 : 1);
}

int64_t wl_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

ssize_t wl_read_file(const char *path, char *buf, size_t size)
{
	size_t len = 0;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	while (len + 1 < size && (n = read(fd, buf + len, size - 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = '\0';
	return (ssize_t)len;
}

void wl_unshare_user(const char *map)
{
	int go[2];
	if (pipe(go))
		wl_die("pipe");
	pid_t helper = fork();
	if (helper < 0)
		wl_die("fork");
	if (helper == 0) {
		char c, path[64];
		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(1);
		const char *files[] = { "uid_map", "gid_map" };
		for (int i = 0; i < 2; i++) {
			snprintf(path, sizeof(path), "/proc/%d/%s", getppid(), files[i]);
			FILE *f = fopen(path, "w");
			if (!f || fputs(map, f) < 0 || fclose(f) != 0)
				_exit(2);
		}
		_exit(0);
	}
	close(go[0]);
	if (unshare(CLONE_NEWUSER))
		wl_die("unshare(CLONE_NEWUSER)");
	if (write(go[1], "x", 1) != 1)
		wl_die("write");
	close(go[1]);
	int st = -1;
	while (waitpid(helper, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		wl_die("the helper could not write the maps (status 0x%x)", st);
}
