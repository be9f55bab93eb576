/*
 * fanotify: fd 5, a notification group (non-blocking, O_RDONLY|O_LARGEFILE events) with three
 * marks: RESULT.file (FAN_MODIFY|FAN_CLOSE_WRITE), RESULT.quiet (an ignored mask FAN_MODIFY that
 * survives modification), and the mount RESULT lives on (FAN_OPEN).
 * After the wait: fdinfo shows the same group flags and marks, writing RESULT.file gives
 * FAN_MODIFY for it, and opening RESULT.probe gives FAN_OPEN for it from us (the mount mark).
 */
#define _GNU_SOURCE
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/fanotify.h>
#include <unistd.h>

static char file[256], quiet[256], probe[256];

static void touch(const char *path)
{
	int fd = open(path, O_CREAT | O_WRONLY, 0644);

	if (fd < 0)
		wl_die("create %s", path);
	close(fd);
}

/* Waits up to 5 s for an event with `bit` on `path` from us; closes every event's fd. */
static int wait_event(uint64_t bit, const char *path)
{
	char buf[8192] __attribute__((aligned(8)));
	int64_t end = wl_now_ns() + 5000000000LL;

	while (wl_now_ns() < end) {
		struct pollfd p = { .fd = 5, .events = POLLIN };
		struct fanotify_event_metadata *m;
		ssize_t n;
		int found = 0;

		if (poll(&p, 1, 200) != 1)
			continue;
		n = read(5, buf, sizeof(buf));
		for (m = (void *)buf; n > 0 && FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
			char proc[64], link[256];
			ssize_t l;

			if (m->fd < 0)
				continue;
			snprintf(proc, sizeof(proc), "/proc/self/fd/%d", m->fd);
			l = readlink(proc, link, sizeof(link) - 1);
			close(m->fd);
			if (l > 0) {
				link[l] = 0;
				if ((m->mask & bit) && m->pid == getpid() && strcmp(link, path) == 0)
					found = 1;
			}
		}
		if (found)
			return 1;
	}
	return 0;
}

/* Reads (and closes) every event queued so far: opens by the restore, the workload's own. */
static void drain(void)
{
	char buf[8192] __attribute__((aligned(8)));
	struct fanotify_event_metadata *m;
	ssize_t n;

	while ((n = read(5, buf, sizeof(buf))) > 0)
		for (m = (void *)buf; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n))
			if (m->fd >= 0)
				close(m->fd);
}

int main(int argc, char **argv)
{
	char info[4096], want[128];
	int fd;

	wl_init(argc, argv);
	wl_path("file", file, sizeof(file));
	wl_path("quiet", quiet, sizeof(quiet));
	wl_path("probe", probe, sizeof(probe));
	touch(file);
	touch(quiet);
	touch(probe);
	fd = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
	if (fd < 0 || dup2(fd, 5) != 5)
		wl_die("fanotify_init");
	close(fd);
	if (fanotify_mark(5, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, file) ||
	    fanotify_mark(5, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_MODIFY, AT_FDCWD,
			  quiet) ||
	    fanotify_mark(5, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN, AT_FDCWD, probe))
		wl_die("fanotify_mark");
	wl_ready();
	wl_wait();

	if (wl_read_file("/proc/self/fdinfo/5", info, sizeof(info)) < 0) {
		wl_fail("fd 5 is gone");
		wl_finish();
	}
	wl_log("%s", info);
	/* The kernel adds its own O_LARGEFILE (0100000 on x86_64; glibc's is 0 on 64-bit). */
	snprintf(want, sizeof(want), "fanotify flags:%x event-flags:%x\n", FAN_CLASS_NOTIF | FAN_NONBLOCK, 0100000);
	WL_CHECK(strstr(info, want), "group flags differ: %s", info);
	snprintf(want, sizeof(want), "mflags:0 mask:%x ignored_mask:0 fhandle", FAN_MODIFY | FAN_CLOSE_WRITE);
	WL_CHECK(strstr(info, want), "the mark on the file differs: %s", info);
	snprintf(want, sizeof(want), "mflags:%x mask:0 ignored_mask:%x fhandle", FAN_MARK_IGNORED_SURV_MODIFY, FAN_MODIFY);
	WL_CHECK(strstr(info, want), "the ignore mark differs: %s", info);
	snprintf(want, sizeof(want), "mflags:0 mask:%x ignored_mask:0\n", FAN_OPEN);
	WL_CHECK(strstr(info, "fanotify mnt_id:") && strstr(info, want), "the mount mark differs: %s", info);
	WL_CHECK(fcntl(5, F_GETFL) & O_NONBLOCK, "fd 5 lost O_NONBLOCK");

	drain();
	fd = open(file, O_WRONLY);
	WL_CHECK(fd >= 0 && write(fd, "x", 1) == 1, "cannot write %s", file);
	WL_CHECK(wait_event(FAN_MODIFY, file), "no FAN_MODIFY for %s", file);
	if (fd >= 0)
		close(fd);
	fd = open(probe, O_RDONLY);
	if (fd >= 0)
		close(fd);
	WL_CHECK(wait_event(FAN_OPEN, probe), "no FAN_OPEN for %s (the mount mark)", probe);
	unlink(file);
	unlink(quiet);
	unlink(probe);
	wl_finish();
}
