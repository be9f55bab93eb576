/*
 * mntns: the process lives in a mount namespace of its own, rooted at a bind mount of the host's
 * root filesystem (pivot_root), holding under BASE (RESULT_FILE.mnt):
 *   t       a tmpfs with files (a.txt, d/b.txt), our cwd (t/d) and an open fd (t/a.txt, offset 2),
 *           and a directory h (mode 0750, holding hidden.txt) covered by another tmpfs (mode 1777):
 *           after restore, unmounting t/h must show t's own h and hidden.txt again
 *   bfile   a bind mount of the file t/a.txt
 *   bdir    a bind mount of the directory src
 *   ro      a read-only bind mount of src
 *   sh, sl  a shared tmpfs and its slave (a bind made MS_SLAVE), with a tmpfs mounted at sh/inner
 *           that propagated to sl/inner
 *   over    src bound there, then src2 bound over it
 * and /proc. Its view (mountinfo with ids replaced by mountpoints, sorted) is recorded at start
 * and must be the same after restore, with the files' contents; propagation must still work (a
 * mount made under sh appears under sl, not the other way), ro must refuse writes.
 * With `exec`, once in its new root the program execs itself again (`exec-inside`) with its log
 * reopened there, as a container's init is: then its program, libraries and fds all live on
 * mounts of the namespace (CRIU refuses a mapping or fd on a mount outside it).
 *
 * With `ext HOSTDIR HOSTFILE` it also binds, before leaving the host's view, the host directory
 * HOSTDIR at edir and the host file HOSTFILE at efile (both outside its view: external mounts),
 * keeps efile open, and at the end writes edir/out.txt and, through the open fd, efile: the test
 * reads both from the host, so the mounts must be binds of the host's own directory and file.
 * `ext-slave` does the same after making the host's mounts slaves (not private) in its namespace:
 * edir and efile are then slaves of HOSTDIR's peer group on the host, outside the tree. At the end
 * the test has mounted a tmpfs with p.txt at HOSTDIR/sub, which must have reached edir/sub (the
 * workload then unmounts its copy before it compares its view).
 *
 * `ext-shared` keeps the host's peer groups in its namespace instead (unshare copies them as
 * peers), and leaves the host's view as runc does (the old root made a recursive slave before it
 * is detached): edir and efile are in HOSTDIR's peer group on the host. Then, besides edir/sub, it
 * mounts a tmpfs with b.txt at edir/back at the end, which the test looks for at HOSTDIR/back.
 *
 * `overlay` adds an overlayfs at ovl (layers lower, upper, work, given as paths of its view): l.txt
 * from the lower layer, u.txt written through it before the checkpoint (and kept open); after it
 * writes after.txt, which must land in the same upper directory.
 *
 * `disk DEVICE` mounts the ext4 filesystem on the block device DEVICE at disk (before leaving the
 * host's view, where the device node is), writes disk/d.txt and disk/sub/s.txt, binds disk/sub at
 * dbind and keeps disk/d.txt open; after it reads them back through both mounts and the fd, and
 * writes disk/after.txt: the disk must be mounted again (the same filesystem, seen at dbind too).
 *
 *   mntns RESULT_FILE [ext|ext-slave|ext-shared HOSTDIR HOSTFILE | overlay | disk DEVICE | exec]
 */
#include "lib.h"
#include "mntns_view.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char base[512];

static const char *at(const char *rel)
{
	static char bufs[8][1024];
	static int next;
	char *b = bufs[next++ % 8];
	snprintf(b, sizeof(bufs[0]), "%s/%s", base, rel);
	return b;
}

static void put(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		wl_die("write %s", path);
	close(fd);
}

static void mnt(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
	if (mount(src, dst, type, flags, data))
		wl_die("mount %s on %s", src ? src : "-", dst);
}

static void expect_file(const char *rel, const char *text)
{
	char buf[256];
	ssize_t n = wl_read_file(at(rel), buf, sizeof(buf));
	WL_CHECK(n >= 0 && !strcmp(buf, text), "%s holds \"%s\", expected \"%s\"", rel, n >= 0 ? buf : "(unreadable)",
		 text);
}

/* The permission bits of path (with setuid, setgid and sticky), or -1 when it cannot be read. */
static int mode_of(const char *path)
{
	struct stat st;
	if (stat(path, &st))
		return -1;
	return st.st_mode & 07777;
}

static dev_t dev_of(const char *path)
{
	struct stat st;
	if (stat(path, &st))
		return (dev_t)-1;
	return st.st_dev;
}

/* The new root is a bind of the host's /: a host path names the same file there. */
static void exec_inside(char **argv, const char *exe, const char *log)
{
	int fd = open(log, O_WRONLY | O_APPEND);
	if (fd < 0 || dup2(fd, 1) != 1 || dup2(fd, 2) != 2 || close(fd))
		wl_die("reopen the log %s", log);
	execl(exe, argv[0], argv[1], "exec-inside", (char *)NULL);
	wl_die("exec %s", exe);
}

int main(int argc, char **argv)
{
	static char before[VIEW], after[VIEW];
	static char exe[1024], log[1024];
	int inside = argc > 2 && !strcmp(argv[2], "exec-inside");
	wl_init(argc, argv);
	closefrom(3); /* fds inherited from a shell would be outside the view */
	wl_path("mnt", base, sizeof(base));
	int slave = argc == 5 && !strcmp(argv[2], "ext-slave");
	int shared = argc == 5 && !strcmp(argv[2], "ext-shared");
	int ext = slave || shared || (argc == 5 && !strcmp(argv[2], "ext"));
	int overlay = argc == 3 && !strcmp(argv[2], "overlay");
	int disk = argc == 4 && !strcmp(argv[2], "disk");
	int early = -1; /* a file opened before the unshare (not in the exec-inside run) */
	if (inside)
		goto in_new_root;
	if (readlink("/proc/self/exe", exe, sizeof(exe) - 1) < 0 || readlink("/proc/self/fd/1", log, sizeof(log) - 1) < 0)
		wl_die("readlink exe, log");
	const char *dirs[] = { "", "newroot", "t", "src", "src2", "bdir", "ro", "sh", "sl", "over" };
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (mkdir(at(dirs[i]), 0755) && errno != EEXIST)
			wl_die("mkdir %s", dirs[i]);
	put(at("src/f.txt"), "from src");
	put(at("src2/g.txt"), "from src2");
	put(at("bfile"), "");
	if (disk && ((mkdir(at("disk"), 0755) && errno != EEXIST) || (mkdir(at("dbind"), 0755) && errno != EEXIST)))
		wl_die("mkdir disk, dbind");
	if (overlay) {
		const char *layers[] = { "lower", "upper", "work", "ovl" };
		for (size_t i = 0; i < sizeof(layers) / sizeof(layers[0]); i++)
			if (mkdir(at(layers[i]), 0755) && errno != EEXIST)
				wl_die("mkdir %s", layers[i]);
		put(at("lower/l.txt"), "from the lower layer");
	}
	if (ext) {
		if (mkdir(at("edir"), 0755) && errno != EEXIST)
			wl_die("mkdir edir");
		put(at("efile"), "");
	}
	/* opened in criu's mount namespace: its mount is none of the tree's, its name is the same file inside */
	early = open(at("src/f.txt"), O_RDONLY);
	if (early < 0)
		wl_die("open src/f.txt before unshare");

	if (unshare(CLONE_NEWNS))
		wl_die("unshare(CLONE_NEWNS)");
	if (!shared)
		mnt(NULL, "/", NULL, MS_REC | (slave ? MS_SLAVE : MS_PRIVATE), NULL);
	mnt("/", at("newroot"), NULL, MS_BIND, NULL);
	if (ext) {
		char edir[1024], efile[1024];
		snprintf(edir, sizeof(edir), "%s%s", at("newroot"), at("edir"));
		snprintf(efile, sizeof(efile), "%s%s", at("newroot"), at("efile"));
		mnt(argv[3], edir, NULL, MS_BIND, NULL);
		mnt(argv[4], efile, NULL, MS_BIND, NULL);
	}
	if (disk) {
		char where[1024];
		snprintf(where, sizeof(where), "%s%s", at("newroot"), at("disk"));
		mnt(argv[3], where, "ext4", MS_NOSUID | MS_NODEV, NULL);
	}
	int oldroot = open("/", O_DIRECTORY | O_RDONLY);
	if (oldroot < 0 || chdir(at("newroot")) || syscall(SYS_pivot_root, ".", "."))
		wl_die("pivot_root");
	/* the old root's mounts must not take the detach to their host peers: made slaves first */
	if (shared && (fchdir(oldroot) || mount(NULL, ".", NULL, MS_REC | MS_SLAVE, NULL)))
		wl_die("make the old root a slave");
	if (umount2(".", MNT_DETACH) || chdir("/") || close(oldroot))
		wl_die("detach the old root");
	if (argc > 2 && !strcmp(argv[2], "exec"))
		exec_inside(argv, exe, log);
in_new_root:;
	/* stdin (the host's /dev/null) is outside this view: a file of the view takes its place */
	int in = open(at("src/f.txt"), O_RDONLY);
	if (in < 0 || dup2(in, 0) != 0 || close(in))
		wl_die("reopen stdin");
	mnt("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mnt("tmpfs", at("t"), "tmpfs", MS_NOSUID, "size=1m,mode=755");
	put(at("t/a.txt"), "hello tmpfs");
	if (mkdir(at("t/d"), 0700))
		wl_die("mkdir t/d");
	put(at("t/d/b.txt"), "inner file");
	if (mkdir(at("t/h"), 0750) || chmod(at("t/h"), 0750))
		wl_die("mkdir t/h");
	put(at("t/h/hidden.txt"), "under the child");
	mnt("child", at("t/h"), "tmpfs", 0, "size=64k,mode=1777");
	put(at("t/h/top.txt"), "in the child");
	mnt(at("t/a.txt"), at("bfile"), NULL, MS_BIND, NULL);
	mnt(at("src"), at("bdir"), NULL, MS_BIND, NULL);
	mnt(at("src"), at("ro"), NULL, MS_BIND, NULL);
	mnt(NULL, at("ro"), NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL);
	mnt("shm", at("sh"), "tmpfs", 0, "size=1m");
	mnt(NULL, at("sh"), NULL, MS_SHARED, NULL);
	mnt(at("sh"), at("sl"), NULL, MS_BIND, NULL);
	mnt(NULL, at("sl"), NULL, MS_SLAVE, NULL);
	if (mkdir(at("sh/inner"), 0755) || mkdir(at("sh/later"), 0755))
		wl_die("mkdir sh/inner");
	mnt("inner", at("sh/inner"), "tmpfs", 0, "size=64k");
	put(at("sh/inner/i.txt"), "propagated");
	mnt(at("src"), at("over"), NULL, MS_BIND, NULL);
	mnt(at("src2"), at("over"), NULL, MS_BIND, NULL);

	int ufd = -1;
	if (overlay) {
		char opts[2048];
		snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s", at("lower"), at("upper"), at("work"));
		mnt("overlay", at("ovl"), "overlay", MS_NOSUID, opts);
		put(at("ovl/u.txt"), "written through the overlay");
		ufd = open(at("ovl/u.txt"), O_RDONLY);
		if (ufd < 0)
			wl_die("open ovl/u.txt");
	}

	int dfd = -1;
	if (disk) {
		if (mkdir(at("disk/sub"), 0755) && errno != EEXIST)
			wl_die("mkdir disk/sub");
		put(at("disk/d.txt"), "on the disk");
		put(at("disk/sub/s.txt"), "under the disk's sub");
		unlink(at("disk/after.txt"));
		mnt(at("disk/sub"), at("dbind"), NULL, MS_BIND, NULL);
		dfd = open(at("disk/d.txt"), O_RDONLY);
		if (dfd < 0)
			wl_die("open disk/d.txt");
	}

	int fd = open(at("t/a.txt"), O_RDONLY);
	char two[3] = "";
	if (fd < 0 || read(fd, two, 2) != 2 || chdir(at("t/d")))
		wl_die("open t/a.txt, chdir t/d");
	int efd = ext ? open(at("efile"), O_RDWR) : -1;
	if (ext && efd < 0)
		wl_die("open efile");
	view(before, sizeof(before));
	wl_log("view:\n%s", before);
	wl_ready();
	wl_wait();

	if (slave || shared) {
		expect_file("edir/sub/p.txt", "from the host");
		WL_CHECK(dev_of(at("edir/sub")) != dev_of(at("edir")), "the host's mount did not reach edir/sub");
		umount2(at("edir/sub"), MNT_DETACH);
	}
	view(after, sizeof(after));
	WL_CHECK(!strcmp(before, after), "the mount view changed:\n--- before\n%s--- after\n%s", before, after);
	if (shared) {
		if (mkdir(at("edir/back"), 0755) && errno != EEXIST)
			wl_fail("mkdir edir/back");
		else if (mount("back", at("edir/back"), "tmpfs", 0, "size=64k"))
			wl_fail("mount edir/back: %s", strerror(errno));
		else
			put(at("edir/back/b.txt"), "from the workload");
	}
	if (overlay) {
		char buf[64] = "";
		expect_file("ovl/l.txt", "from the lower layer");
		expect_file("ovl/u.txt", "written through the overlay");
		expect_file("upper/u.txt", "written through the overlay");
		WL_CHECK(pread(ufd, buf, 7, 0) == 7 && !strcmp(buf, "written"), "the kept ovl/u.txt fd read \"%s\"", buf);
		put(at("ovl/after.txt"), "after the restore");
		expect_file("upper/after.txt", "after the restore");
		WL_CHECK(access(at("lower/after.txt"), F_OK) != 0, "a write reached the lower layer");
	}
	if (disk) {
		char buf[32] = "";
		expect_file("disk/d.txt", "on the disk");
		expect_file("disk/sub/s.txt", "under the disk's sub");
		expect_file("dbind/s.txt", "under the disk's sub");
		WL_CHECK(dev_of(at("dbind")) == dev_of(at("disk")), "dbind is not on the disk");
		WL_CHECK(dev_of(at("disk")) != dev_of("/"), "disk is not a mount of its own");
		WL_CHECK(pread(dfd, buf, 7, 3) == 7 && !strcmp(buf, "the dis"), "the kept disk/d.txt fd read \"%s\"", buf);
		struct stat fst;
		WL_CHECK(fstat(dfd, &fst) == 0 && fst.st_dev == dev_of(at("disk")), "the kept fd is not on the disk");
		put(at("disk/after.txt"), "after the restore");
	}
	expect_file("t/a.txt", "hello tmpfs");
	expect_file("t/d/b.txt", "inner file");
	expect_file("bfile", "hello tmpfs");
	expect_file("bdir/f.txt", "from src");
	expect_file("ro/f.txt", "from src");
	expect_file("over/g.txt", "from src2");
	expect_file("sh/inner/i.txt", "propagated");
	expect_file("sl/inner/i.txt", "propagated");
	WL_CHECK(dev_of(at("bfile")) == dev_of(at("t")), "bfile is not on the tmpfs t");
	WL_CHECK(dev_of(at("sl/inner")) == dev_of(at("sh/inner")), "sl/inner is not the mount sh/inner");
	WL_CHECK(open(at("ro/new"), O_WRONLY | O_CREAT, 0644) < 0 && errno == EROFS, "ro is writable");

	char first[16] = "";
	struct stat est, nst;
	WL_CHECK(inside || (pread(early, first, 8, 0) == 8 && !strcmp(first, "from src")), "the early fd read \"%s\"", first);
	WL_CHECK(inside || (fstat(early, &est) == 0 && stat(at("src/f.txt"), &nst) == 0 && est.st_ino == nst.st_ino &&
			 est.st_dev == nst.st_dev),
		 "the early fd is not src/f.txt");

	char rest[16] = "";
	struct stat st;
	WL_CHECK(read(fd, rest, sizeof(rest) - 1) == 9 && !strcmp(rest, "llo tmpfs"), "the fd read \"%s\"", rest);
	WL_CHECK(fstat(fd, &st) == 0 && st.st_dev == dev_of(at("t")), "the fd is not on the tmpfs t");
	char cwd[1024] = "";
	WL_CHECK(getcwd(cwd, sizeof(cwd)) && !strcmp(cwd, at("t/d")), "cwd is %s", cwd);
	WL_CHECK(dev_of(".") == dev_of(at("t")), "cwd is not on the tmpfs t");

	if (ext) {
		expect_file("edir/in.txt", "host dir");
		expect_file("efile", "host file");
		put(at("edir/out.txt"), "written into the host dir");
		const char *msg = "written through the fd";
		WL_CHECK(pwrite(efd, msg, strlen(msg), 0) == (ssize_t)strlen(msg) && ftruncate(efd, strlen(msg)) == 0,
			 "cannot write efile through its fd");
	}

	/* t/h: the child tmpfs first, then what it covers, the directory and file of t's own */
	expect_file("t/h/top.txt", "in the child");
	WL_CHECK(mode_of(at("t/h")) == 01777, "t/h has mode %o, expected the child's 1777", mode_of(at("t/h")));
	WL_CHECK(umount2(at("t/h"), 0) == 0, "cannot unmount t/h: %s", strerror(errno));
	WL_CHECK(dev_of(at("t/h")) == dev_of(at("t")), "t/h is still another mount");
	WL_CHECK(mode_of(at("t/h")) == 0750, "t/h under the child has mode %o, expected 750", mode_of(at("t/h")));
	expect_file("t/h/hidden.txt", "under the child");
	WL_CHECK(access(at("t/h/top.txt"), F_OK) != 0, "the child's top.txt is also under it");

	/* propagation still works: sh → sl, never back */
	mnt("later", at("sh/later"), "tmpfs", 0, "size=64k");
	WL_CHECK(dev_of(at("sl/later")) == dev_of(at("sh/later")), "a mount under sh did not reach sl");
	umount2(at("sh/later"), MNT_DETACH);
	mnt("back", at("sl/later"), "tmpfs", 0, "size=64k");
	WL_CHECK(dev_of(at("sh/later")) != dev_of(at("sl/later")), "a mount under sl reached sh");
	wl_finish();
}
