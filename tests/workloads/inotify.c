/*
 * inotify: fd 5, non-blocking, watches RESULT.dir (IN_CREATE|IN_DELETE) as wd 1, RESULT.file
 * (IN_MODIFY|IN_CLOSE_WRITE) as wd 2, and RESULT.other (IN_ATTRIB|IN_ONESHOT) as wd 4: wd 3 was
 * added and removed, so the wds have a gap. fd 6: an inotify fd without watches, blocking, FD_CLOEXEC.
 * After the wait: fdinfo lists exactly these wds and masks, each watch fires for its own file with
 * its own wd, a new watch gets wd 5, and fd 6 has nothing to read.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256], file[256], other[256], gap[256], late[256];

static int add(int fd, const char *path, uint32_t mask)
{
	int wd = inotify_add_watch(fd, path, mask);

	if (wd < 0)
		wl_die("inotify_add_watch %s", path);
	return wd;
}

static char events[4096] __attribute__((aligned(8)));
static ssize_t events_len, events_at;

/* The next event of fd 5, waiting up to 5 s for more; NULL if none comes. */
static struct inotify_event *next_event(void)
{
	struct pollfd p = { .fd = 5, .events = POLLIN };
	struct inotify_event *ev;

	if (events_at >= events_len) {
		events_at = events_len = 0;
		if (poll(&p, 1, 5000) != 1)
			return NULL;
		events_len = read(5, events, sizeof(events));
		if (events_len < (ssize_t)sizeof(*ev)) {
			wl_fail("reading events gave %zd (errno %d)", events_len, errno);
			events_len = 0;
			return NULL;
		}
	}
	ev = (struct inotify_event *)(events + events_at);
	events_at += sizeof(*ev) + ev->len;
	return ev;
}

/* The next event must be for `wd`, with `bit` in its mask, naming `name` (or nothing). */
static void expect(int wd, uint32_t bit, const char *name)
{
	struct inotify_event *ev = next_event();

	if (!ev) {
		wl_fail("no event for wd %d (mask %#x)", wd, bit);
		return;
	}
	WL_CHECK(ev->wd == wd && (ev->mask & bit), "event wd %d mask %#x, expected wd %d mask %#x", ev->wd, ev->mask, wd,
		 bit);
	WL_CHECK(!name || (ev->len && strcmp(ev->name, name) == 0), "event for wd %d names %s, not %s", wd,
		 ev->len ? ev->name : "nothing", name ? name : "nothing");
}

static void drain(void)
{
	char buf[4096];

	while (read(5, buf, sizeof(buf)) > 0)
		;
}

int main(int argc, char **argv)
{
	char info[4096], want[128], path[300];
	int fd, wd;

	wl_init(argc, argv);
	wl_path("dir", dir, sizeof(dir));
	wl_path("file", file, sizeof(file));
	wl_path("other", other, sizeof(other));
	wl_path("gap", gap, sizeof(gap));
	wl_path("late", late, sizeof(late));
	if (mkdir(dir, 0755) || (fd = open(file, O_CREAT | O_WRONLY, 0644)) < 0)
		wl_die("setup files");
	close(fd);
	if ((fd = open(other, O_CREAT | O_WRONLY, 0644)) < 0 || close(fd) || (fd = open(gap, O_CREAT | O_WRONLY, 0644)) < 0 ||
	    close(fd) || (fd = open(late, O_CREAT | O_WRONLY, 0644)) < 0 || close(fd))
		wl_die("setup files");

	fd = inotify_init1(IN_NONBLOCK);
	if (fd < 0 || dup2(fd, 5) != 5)
		wl_die("inotify_init1");
	close(fd);
	WL_CHECK(add(5, dir, IN_CREATE | IN_DELETE) == 1, "setup: dir is not wd 1");
	WL_CHECK(add(5, file, IN_MODIFY | IN_CLOSE_WRITE) == 2, "setup: file is not wd 2");
	wd = add(5, gap, IN_OPEN);
	if (inotify_rm_watch(5, wd))
		wl_die("inotify_rm_watch");
	WL_CHECK(add(5, other, IN_ATTRIB | IN_ONESHOT) == 4, "setup: other is not wd 4");
	fd = inotify_init1(IN_CLOEXEC);
	if (fd < 0 || dup2(fd, 6) != 6 || fcntl(6, F_SETFD, FD_CLOEXEC))
		wl_die("second inotify_init1");
	close(fd);
	drain();
	if (wl_failures())
		wl_finish();
	wl_ready();
	wl_wait();

	if (wl_read_file("/proc/self/fdinfo/5", info, sizeof(info)) < 0) {
		wl_fail("fd 5 is gone");
		wl_finish();
	}
	wl_log("%s", info);
	snprintf(want, sizeof(want), "inotify wd:1 ");
	WL_CHECK(strstr(info, want), "no wd 1 in %s", info);
	snprintf(want, sizeof(want), "mask:%x ", IN_CREATE | IN_DELETE);
	WL_CHECK(strstr(info, want), "wd 1 lost its mask: %s", info);
	WL_CHECK(strstr(info, "inotify wd:2 ") && strstr(info, "inotify wd:4 "), "wd 2 or 4 is missing: %s", info);
	WL_CHECK(!strstr(info, "inotify wd:3 "), "wd 3 came back: %s", info);
	WL_CHECK(fcntl(5, F_GETFL) & O_NONBLOCK, "fd 5 lost O_NONBLOCK");
	WL_CHECK(fcntl(6, F_GETFD) & FD_CLOEXEC, "fd 6 lost FD_CLOEXEC");
	WL_CHECK(!(fcntl(6, F_GETFL) & O_NONBLOCK), "fd 6 became non-blocking");
	drain();

	snprintf(path, sizeof(path), "%s/new", dir);
	if ((fd = open(path, O_CREAT | O_WRONLY, 0644)) >= 0)
		close(fd);
	expect(1, IN_CREATE, "new");
	unlink(path);
	expect(1, IN_DELETE, "new");
	if ((fd = open(file, O_WRONLY)) < 0 || write(fd, "x", 1) != 1)
		wl_fail("cannot write %s", file);
	expect(2, IN_MODIFY, NULL);
	close(fd);
	expect(2, IN_CLOSE_WRITE, NULL);
	chmod(other, 0600);
	expect(4, IN_ATTRIB, NULL);
	expect(4, IN_IGNORED, NULL); /* IN_ONESHOT: the watch is gone after one event */
	WL_CHECK(inotify_add_watch(5, late, IN_OPEN) == 5, "a new watch did not get wd 5");
	{
		struct pollfd p = { .fd = 6, .events = POLLIN };
		WL_CHECK(poll(&p, 1, 0) == 0, "fd 6 has events");
	}
	unlink(file);
	unlink(other);
	unlink(gap);
	unlink(late);
	rmdir(dir);
	wl_finish();
}
