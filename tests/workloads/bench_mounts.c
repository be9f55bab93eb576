/*
 * bench_mounts: a container with COUNT mounts (benchmark). In mount, IPC, UTS and network
 * namespaces of its own, rooted (pivot_root) at a bind mount of the host's root filesystem, with
 * proc, sysfs and a /dev tmpfs as a container has them, and a tmpfs on /mnt that holds the rest,
 * in turns:
 *   /mnt/N  a tmpfs (size 1m) with three small files
 *   /mnt/N  a bind mount of the tmpfs made just before
 *   /mnt/N  proc (nosuid, nodev, noexec)
 *   /mnt/N  a read-only bind mount of /mnt/files (a directory of the /mnt tmpfs)
 * until the view holds COUNT mounts. After restore the sorted list of mountpoints with their
 * filesystem types and options must be the same, and each tmpfs and bind must show its files.
 *
 *   bench_mounts RESULT_FILE COUNT     (it runs itself again as: bench_mounts RESULT_FILE COUNT inside)
 */
#define _GNU_SOURCE
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define FIXED 5 /* /, /proc, /sys, /dev, /mnt */
#define MAXMOUNTS 4096

static char root[512];

static void mnt(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
	if (mount(src, dst, type, flags, data))
		wl_die("mount %s on %s", src ? src : "-", dst);
}

static void put(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		wl_die("write %s", path);
	close(fd);
}

static int by_text(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The mounts as "mountpoint fstype options", sorted; ids and peer groups left out. */
static int view(char *out, size_t size)
{
	static char buf[1 << 20];
	static char *lines[MAXMOUNTS];
	int n = 0;
	if (wl_read_file("/proc/self/mountinfo", buf, sizeof(buf)) <= 0)
		wl_die("read mountinfo");
	for (char *s = strtok(buf, "\n"); s && n < MAXMOUNTS; s = strtok(NULL, "\n")) {
		char mp[512], opts[256], fs[64];
		char *dash = strstr(s, " - ");
		if (!dash || sscanf(s, "%*d %*d %*s %*s %511s %255s", mp, opts) != 2 || sscanf(dash + 3, "%63s", fs) != 1)
			wl_die("parse %s", s);
		char *line = malloc(900);
		snprintf(line, 900, "%s %s %s", mp, fs, opts);
		lines[n++] = line;
	}
	qsort(lines, n, sizeof(lines[0]), by_text);
	out[0] = 0;
	size_t used = 0;
	for (int i = 0; i < n; i++) {
		used += snprintf(out + used, size - used, "%s\n", lines[i]);
		free(lines[i]);
		if (used >= size)
			wl_die("the view does not fit");
	}
	return n;
}

static void expect_file(const char *path, const char *text)
{
	char buf[128];
	ssize_t n = wl_read_file(path, buf, sizeof(buf));
	WL_CHECK(n >= 0 && !strcmp(buf, text), "%s holds \"%s\", expected \"%s\"", path, n >= 0 ? buf : "(unreadable)",
		 text);
}

/* The files a tmpfs N holds (and a bind of it shows). */
static void tmpfs_files(int n, const char *dir, int check)
{
	for (int f = 0; f < 3; f++) {
		char path[600], text[64];
		snprintf(path, sizeof(path), "%s/file%d", dir, f);
		snprintf(text, sizeof(text), "tmpfs %d file %d", n, f);
		if (check)
			expect_file(path, text);
		else
			put(path, text);
	}
}

/*
 * The mounts, made before the program runs again inside them (as a runtime execs the container's
 * process): its mapped files and fds must be opened through the tree's own mounts, or CRIU cannot
 * name their mounts.
 */
static void setup(int count, char **argv)
{
	char exe[512], log[512];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	ssize_t m = readlink("/proc/self/fd/1", log, sizeof(log) - 1);
	if (n <= 0 || m <= 0)
		wl_die("readlink");
	exe[n] = log[m] = 0;
	wl_path("root", root, sizeof(root));
	if (mkdir(root, 0755) && errno != EEXIST)
		wl_die("mkdir %s", root);

	if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET))
		wl_die("unshare");
	mnt(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
	mnt("/", root, NULL, MS_BIND, NULL);
	if (chdir(root) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) || chdir("/"))
		wl_die("pivot_root");
	mnt("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mnt("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL);
	mnt("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k");
	put("/dev/kept.txt", "kept in the /dev tmpfs");
	/* stdin (the host's /dev/null) is outside this view: the container's own node takes its place */
	if (mknod("/dev/null", S_IFCHR | 0666, makedev(1, 3)))
		wl_die("mknod /dev/null");
	int in = open("/dev/null", O_RDONLY);
	if (in < 0 || dup2(in, 0) != 0 || close(in))
		wl_die("reopen stdin");
	mnt("tmpfs", "/mnt", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=4m");
	if (mkdir("/mnt/files", 0755))
		wl_die("mkdir /mnt/files");
	put("/mnt/files/shared.txt", "under every read-only bind");

	int last_tmpfs = -1;
	for (int i = 0; i < count - FIXED; i++) {
		char dir[64], from[64];
		snprintf(dir, sizeof(dir), "/mnt/%d", i);
		if (mkdir(dir, 0755))
			wl_die("mkdir %s", dir);
		switch (i % 4) {
		case 0:
			mnt("tmpfs", dir, "tmpfs", MS_NOSUID, "size=1m");
			tmpfs_files(i, dir, 0);
			last_tmpfs = i;
			break;
		case 1:
			snprintf(from, sizeof(from), "/mnt/%d", last_tmpfs);
			mnt(from, dir, NULL, MS_BIND, NULL);
			break;
		case 2:
			mnt("proc", dir, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
			break;
		default:
			mnt("/mnt/files", dir, NULL, MS_BIND, NULL);
			mnt(NULL, dir, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL);
		}
	}
	int out = open(log, O_WRONLY | O_APPEND);
	if (out < 0 || dup2(out, 1) != 1 || dup2(out, 2) != 2 || close(out))
		wl_die("reopen the log %s", log);
	char *args[] = { argv[0], argv[1], argv[2], "inside", NULL };
	execv(exe, args);
	wl_die("exec %s", exe);
}

int main(int argc, char **argv)
{
	static char before[1 << 18], after[1 << 18];
	wl_init(argc, argv);
	closefrom(3);
	int count = argc > 2 ? atoi(argv[2]) : 200;
	if (count <= FIXED || count > MAXMOUNTS)
		wl_die("COUNT must be above %d and at most %d", FIXED, MAXMOUNTS);
	if (argc < 4 || strcmp(argv[3], "inside"))
		setup(count, argv);

	int n = view(before, sizeof(before));
	if (n != count)
		wl_die("the view holds %d mounts, expected %d", n, count);
	wl_ready();
	wl_wait();

	n = view(after, sizeof(after));
	WL_CHECK(n == count, "the view holds %d mounts after restore, expected %d", n, count);
	WL_CHECK(!strcmp(before, after), "the mount view changed:\n--- before\n%s--- after\n%s", before, after);
	expect_file("/dev/kept.txt", "kept in the /dev tmpfs");
	for (int i = 0; i < count - FIXED; i++) {
		char dir[64];
		snprintf(dir, sizeof(dir), "/mnt/%d", i);
		struct stat st;
		switch (i % 4) {
		case 0:
			tmpfs_files(i, dir, 1);
			break;
		case 1:
			tmpfs_files(i - 1, dir, 1);
			break;
		case 2:
			snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "/self/status");
			WL_CHECK(stat(dir, &st) == 0, "%s: not a proc mount", dir);
			break;
		default:
			snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "/shared.txt");
			expect_file(dir, "under every read-only bind");
			WL_CHECK(open(dir, O_WRONLY) < 0 && errno == EROFS, "%s is writable", dir);
		}
	}
	wl_finish();
}
