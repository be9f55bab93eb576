/*
 * opath: O_PATH fds of every kind of file: fd 5 a regular file, fd 6 a directory, fd 7 a FIFO
 * (nobody has it open otherwise), fd 8 /dev/null, fd 9 a symlink itself (O_NOFOLLOW), fd 10 a
 * unix socket's path (no socket bound there any more), fd 11 /dev/tty (O_PATH opens it without a
 * terminal). After the wait each fd is still O_PATH on the same inode (fstat), the symlink's
 * target reads through it (readlinkat), and openat through the directory fd works.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define COUNT 7

static char paths[COUNT][256];
static struct stat before[COUNT];

static void at_fd(int i, const char *path, int flags)
{
	int got = open(path, O_PATH | flags);

	if (got < 0 || dup2(got, 5 + i) != 5 + i)
		wl_die("O_PATH open of %s", path);
	if (got != 5 + i)
		close(got);
	if (fstat(5 + i, &before[i]))
		wl_die("fstat %s", path);
}

int main(int argc, char **argv)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char link[256];
	struct stat st;
	int i, fd;

	wl_init(argc, argv);
	wl_path("file", paths[0], 256);
	wl_path("dir", paths[1], 256);
	wl_path("fifo", paths[2], 256);
	snprintf(paths[3], 256, "/dev/null");
	wl_path("link", paths[4], 256);
	wl_path("sock", paths[5], 256);
	snprintf(paths[6], 256, "/dev/tty");
	if ((fd = open(paths[0], O_CREAT | O_WRONLY, 0644)) < 0 || write(fd, "data", 4) != 4 || close(fd) ||
	    mkdir(paths[1], 0755) || mkfifo(paths[2], 0600) || symlink("no-such-target", paths[4]))
		wl_die("setup files");
	if (strlen(paths[5]) >= sizeof(sun.sun_path))
		wl_die("socket path too long");
	memcpy(sun.sun_path, paths[5], strlen(paths[5]) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) || close(fd))
		wl_die("socket file");
	for (i = 0; i < COUNT; i++)
		at_fd(i, paths[i], i == 4 ? O_NOFOLLOW : 0);
	wl_ready();
	wl_wait();

	for (i = 0; i < COUNT; i++) {
		int fl = fcntl(5 + i, F_GETFL);

		WL_CHECK(fl >= 0 && (fl & O_PATH), "fd %d (%s) is not O_PATH (flags %o)", 5 + i, paths[i], fl);
		if (fstat(5 + i, &st)) {
			wl_fail("fd %d (%s): fstat: %s", 5 + i, paths[i], strerror(errno));
			continue;
		}
		WL_CHECK(st.st_ino == before[i].st_ino && st.st_dev == before[i].st_dev && st.st_mode == before[i].st_mode,
			 "fd %d is not %s any more", 5 + i, paths[i]);
	}
	memset(link, 0, sizeof(link));
	WL_CHECK(readlinkat(9, "", link, sizeof(link) - 1) > 0 && strcmp(link, "no-such-target") == 0,
		 "fd 9 does not read as the symlink: %s", link);
	fd = openat(6, "inside", O_CREAT | O_WRONLY, 0644);
	WL_CHECK(fd >= 0, "openat through fd 6 failed: %s", strerror(errno));
	if (fd >= 0)
		close(fd);
	for (i = 0; i < COUNT; i++)
		if (i != 3 && i != 6)
			unlink(paths[i]);
	unlinkat(6, "inside", 0);
	rmdir(paths[1]);
	wl_finish();
}
