/*
 * mntns_container: the mount tree of a runc container (its default spec, as runc 1.1 builds it
 * when device nodes are bind mounts of the host's), in mount, IPC and network namespaces of its
 * own, rooted at a bind mount of the host's root filesystem (pivot_root):
 *   /proc            proc (nosuid, nodev, noexec)
 *   /dev             tmpfs (nosuid, strictatime, mode=755) holding the nodes zero and full
 *                    (mknod), the symlinks fd, stdin, stdout, stderr, ptmx, and a file
 *   /dev/null        bind mount of the host's /dev/null   \ made before leaving the host's view:
 *   /dev/urandom     bind mount of the host's /dev/urandom / external mounts
 *   /dev/pts         devpts (newinstance, ptmxmode=0666, mode=620, gid=5)
 *   /dev/shm         tmpfs (mode=1777) with a file
 *   /dev/mqueue      mqueue
 *   /sys             sysfs, read-only
 *   /sys/fs/cgroup   cgroup2, read-only
 *   masked paths     /proc/keys and /proc/timer_list: binds of /dev/null; /proc/acpi and
 *                    /sys/firmware: read-only tmpfs
 *   read-only paths  /proc/bus, /proc/fs, /proc/irq, /proc/sys: read-only binds of themselves
 * It keeps fds open on /dev/null, /dev/shm/data and /dev/zero. Its view (see mntns_view.h) is
 * recorded at start and must be the same after restore; then each mount must behave as its kind:
 * the nodes read and write, ptmx gives a pty of this devpts, the read-only ones refuse writes,
 * masked files read empty, the files of the tmpfs mounts are there.
 *
 *   mntns_container RESULT_FILE
 */
#define _GNU_SOURCE
#include "lib.h"
#include "mntns_view.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static char root[512];

static const char *in_root(const char *path)
{
	static char bufs[4][1024];
	static int next;
	char *b = bufs[next++ % 4];
	snprintf(b, sizeof(bufs[0]), "%s%s", root, path);
	return b;
}

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

static void read_only_bind(const char *path)
{
	mnt(path, path, NULL, MS_BIND | MS_REC, NULL);
	mnt(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

/* The container's /dev: a tmpfs with a few nodes and links, binds of the host's devices. */
static void make_dev(void)
{
	mnt("tmpfs", in_root("/dev"), "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k");
	const char *dirs[] = { "/dev/pts", "/dev/shm", "/dev/mqueue" };
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (mkdir(in_root(dirs[i]), 0755))
			wl_die("mkdir %s", dirs[i]);
	if (mknod(in_root("/dev/zero"), S_IFCHR | 0666, makedev(1, 5)) ||
	    mknod(in_root("/dev/full"), S_IFCHR | 0666, makedev(1, 7)))
		wl_die("mknod");
	const char *links[][2] = { { "/proc/self/fd", "/dev/fd" },
				   { "/proc/self/fd/0", "/dev/stdin" },
				   { "/proc/self/fd/1", "/dev/stdout" },
				   { "/proc/self/fd/2", "/dev/stderr" },
				   { "pts/ptmx", "/dev/ptmx" } };
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (symlink(links[i][0], in_root(links[i][1])))
			wl_die("symlink %s", links[i][1]);
	put(in_root("/dev/null"), "");
	put(in_root("/dev/urandom"), "");
	put(in_root("/dev/kept.txt"), "kept in the /dev tmpfs");
	mnt("/dev/null", in_root("/dev/null"), NULL, MS_BIND, NULL);
	mnt("/dev/urandom", in_root("/dev/urandom"), NULL, MS_BIND, NULL);
}

static void expect_file(const char *path, const char *text)
{
	char buf[256];
	ssize_t n = wl_read_file(path, buf, sizeof(buf));
	WL_CHECK(n >= 0 && !strcmp(buf, text), "%s holds \"%s\", expected \"%s\"", path, n >= 0 ? buf : "(unreadable)",
		 text);
}

static void expect_rofs(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT, 0644);
	WL_CHECK(fd < 0 && errno == EROFS, "%s is writable (fd %d, errno %d)", path, fd, errno);
	if (fd >= 0)
		close(fd);
}

static void check_devices(int null_fd, int zero_fd)
{
	char buf[16] = "x";
	WL_CHECK(write(null_fd, "gone", 4) == 4, "the kept /dev/null fd does not write");
	WL_CHECK(read(null_fd, buf, sizeof(buf)) == 0, "the kept /dev/null fd reads data");
	WL_CHECK(read(zero_fd, buf, sizeof(buf)) == sizeof(buf) && buf[0] == 0 && buf[15] == 0,
		 "the kept /dev/zero fd does not read zeros");
	int fd = open("/dev/urandom", O_RDONLY);
	WL_CHECK(fd >= 0 && read(fd, buf, sizeof(buf)) == sizeof(buf), "/dev/urandom does not read");
	if (fd >= 0)
		close(fd);
	fd = open("/dev/full", O_WRONLY);
	WL_CHECK(fd >= 0 && write(fd, "x", 1) < 0 && errno == ENOSPC, "/dev/full does not refuse writes");
	if (fd >= 0)
		close(fd);
	struct stat st;
	WL_CHECK(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3),
		 "/dev/null is not the null device");
}

static void check_pts(void)
{
	int master = open("/dev/ptmx", O_RDWR | O_NOCTTY);
	int n = -1;
	WL_CHECK(master >= 0 && ioctl(master, TIOCGPTN, &n) == 0, "/dev/ptmx gives no pty (errno %d)", errno);
	if (master < 0)
		return;
	char path[64];
	struct stat st;
	snprintf(path, sizeof(path), "/dev/pts/%d", n);
	int unlock = 0;
	ioctl(master, TIOCSPTLCK, &unlock);
	WL_CHECK(stat(path, &st) == 0 && st.st_gid == 5 && (st.st_mode & 0777) == 0620,
		 "%s has gid %d mode %o, expected gid 5 mode 620", path, (int)st.st_gid, st.st_mode & 0777);
	close(master);
}

int main(int argc, char **argv)
{
	static char before[VIEW], after[VIEW];
	wl_init(argc, argv);
	closefrom(3);
	wl_path("root", root, sizeof(root));
	if (mkdir(root, 0755) && errno != EEXIST)
		wl_die("mkdir %s", root);

	if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET))
		wl_die("unshare");
	mnt(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
	mnt("/", root, NULL, MS_BIND, NULL);
	mnt("proc", in_root("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	make_dev();
	mnt("devpts", in_root("/dev/pts"), "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5");
	mnt("shm", in_root("/dev/shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
	mnt("mqueue", in_root("/dev/mqueue"), "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mnt("sysfs", in_root("/sys"), "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL);
	mnt("cgroup", in_root("/sys/fs/cgroup"), "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME | MS_RDONLY,
	    NULL);

	if (chdir(root) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) || chdir("/"))
		wl_die("pivot_root");
	/* stdin (the host's /dev/null) is outside this view: the container's takes its place */
	int in = open("/dev/null", O_RDONLY);
	if (in < 0 || dup2(in, 0) != 0 || close(in))
		wl_die("reopen stdin");

	/* runc's masked and read-only paths, made after pivot_root as runc does */
	mnt("/dev/null", "/proc/keys", NULL, MS_BIND, NULL);
	mnt("/dev/null", "/proc/timer_list", NULL, MS_BIND, NULL);
	mnt("tmpfs", "/proc/acpi", "tmpfs", MS_RDONLY, NULL);
	mnt("tmpfs", "/sys/firmware", "tmpfs", MS_RDONLY, NULL);
	const char *ro[] = { "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys" };
	for (size_t i = 0; i < sizeof(ro) / sizeof(ro[0]); i++)
		read_only_bind(ro[i]);

	put("/dev/shm/data", "shared memory file");
	int shm_fd = open("/dev/shm/data", O_RDONLY);
	int null_fd = open("/dev/null", O_RDWR);
	int zero_fd = open("/dev/zero", O_RDONLY);
	if (shm_fd < 0 || null_fd < 0 || zero_fd < 0)
		wl_die("open the kept fds");
	view(before, sizeof(before));
	wl_log("view:\n%s", before);
	wl_ready();
	wl_wait();

	view(after, sizeof(after));
	WL_CHECK(!strcmp(before, after), "the mount view changed:\n--- before\n%s--- after\n%s", before, after);
	check_devices(null_fd, zero_fd);
	check_pts();
	expect_file("/dev/kept.txt", "kept in the /dev tmpfs");
	expect_file("/dev/shm/data", "shared memory file");
	expect_file("/proc/keys", "");
	expect_file("/proc/timer_list", "");
	char buf[32] = "";
	WL_CHECK(pread(shm_fd, buf, 6, 7) == 6 && !strcmp(buf, "memory"), "the kept /dev/shm fd read \"%s\"", buf);
	char link[64] = "";
	WL_CHECK(readlink("/dev/ptmx", link, sizeof(link) - 1) > 0 && !strcmp(link, "pts/ptmx"), "/dev/ptmx links to %s",
		 link);
	WL_CHECK(open("/proc/sys/kernel/hostname", O_WRONLY) < 0 && errno == EROFS, "/proc/sys is writable");
	expect_rofs("/sys/criu-ts-test");
	expect_rofs("/sys/fs/cgroup/criu-ts-test");
	expect_rofs("/proc/acpi/criu-ts-test");
	expect_rofs("/sys/firmware/criu-ts-test");
	struct stat st;
	WL_CHECK(stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0, "/sys/fs/cgroup is not a cgroup2 mount");
	WL_CHECK(stat("/proc/self/status", &st) == 0, "/proc is not mounted");
	wl_finish();
}
