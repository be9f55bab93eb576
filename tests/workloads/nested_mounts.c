/*
 * nested_mounts: a root in a mount namespace of its own (a bind of the host's root filesystem,
 * pivot_root, exec'd again inside, with /proc) and its child A in a nested one (unshare
 * CLONE_NEWNS), where A holds a mount its parent's namespace has no copy of, one kind per MODE:
 *
 *   ext HOSTDIR1 HOSTDIR2  before leaving the host's view the root binds HOSTDIR1 at ext and
 *                          HOSTDIR2 at gone (directories of two host tmpfs: external mounts);
 *                          A makes its mounts slaves, binds ext/sub (a directory of the root's
 *                          external mount) at esub; then the root unmounts its gone, which only A
 *                          has from then on. After: A reads gone/in.txt and esub/s.txt and writes
 *                          gone/out.txt and esub/out.txt (they must reach the host's directories),
 *                          the root checks gone is no mount of its own.
 *   ext-slave HOSTDIR1 HOSTDIR2  as ext, the root's namespace made a slave of the host's (not private)
 *                          at first: A's gone is a slave of the host tmpfs's peer group (shared),
 *                          which only A's external mount carries. After: A must see the host's
 *                          mount at HOSTDIR2/sub (the test makes it before SIGTERM) as gone/sub/p.txt.
 *   ext-shared HOSTDIR1 HOSTDIR2  as ext, but the root's namespace keeps the host's peer groups (its
 *                          binds are peers of the host tmpfs's groups; the old root is made a
 *                          slave before it is detached) and A does not make its mounts slaves: A's
 *                          gone is in the host tmpfs's peer group, which only A's external mount
 *                          carries (--external mnt[]:s). After: A must see the host's mount at
 *                          HOSTDIR2/sub as gone/sub/p.txt, and mounts a tmpfs with b.txt at
 *                          gone/back, which the test must find at HOSTDIR2/back (a peer, not a
 *                          slave).
 *   overlay                A mounts an overlayfs at ovl, its layers lower, upper and work
 *                          (directories of the root filesystem, given as paths of the view), writes
 *                          ovl/u.txt and keeps it open. After: the lower and upper files are seen
 *                          through ovl, the fd is on ovl, a new write lands in upper; the root does
 *                          not see the overlay.
 *   overlay-gone           as overlay, but lower is a directory of a tmpfs at lowtmp that A
 *                          unmounts (lazily) once the overlay is made: a layer no longer in the
 *                          view (a dump must refuse it).
 *   disk DEVICE            the root makes a node of the block device DEVICE at loopdev (a path of
 *                          both views); A mounts its ext4 at disk, writes disk/d.txt, keeps it open.
 *                          After: A reads it back through the mount and the fd, writes disk/after.txt.
 *   slave-root             the root makes its root mount shared, A unshares (its root mount a peer),
 *                          then the root makes its own a slave: the root's root mount is a slave of a
 *                          peer group only A's namespace holds. After: a tmpfs A mounts at pr/froma
 *                          must reach the root, and one the root mounts at pr/fromroot must not reach A.
 *   slave-shared-root      as slave-root, then the root makes its root mount shared again: a peer
 *                          group of its own under a master only A holds (the same checks).
 *   slave-sibling          the root makes its root mount shared, A and then its sibling B unshare
 *                          (their root mounts peers of it), the root makes its own private and A its
 *                          own a slave: A's root mount is a slave of a group only B, a namespace made
 *                          after A's, holds. After: a tmpfs B mounts at pr/fromb must reach A, one A
 *                          mounts at pr/froma must not reach B, and the root sees neither.
 *   slave-wide             the root mounts a shared tmpfs at pt (directories in, in/x, in/z), A
 *                          unshares and makes its mounts slaves (its pt a slave of pt's group, root
 *                          /), then the root binds pt at pw and pt/in at pin (both peers), makes pw
 *                          a slave and pt private: the group's only member left is pin (root /in),
 *                          whose root holds neither A's pt nor the root's pw (both root /), yet
 *                          both are its slaves. After: a tmpfs the root mounts at pin/x must reach
 *                          A's pt/in/x and the root's pw/in/x, one A mounts at pt/in/z must not
 *                          reach pin, and the root's pt (private) sees neither.
 *   slave-wide-late        the other way round: the root mounts a shared tmpfs at pt, A unshares
 *                          (its pt a peer), binds its pt/in at pin and makes its pt private, then
 *                          the root makes its pt a slave: a slave (root /) of a group whose only
 *                          member is pin (root /in) in A's namespace, made after the root's. After:
 *                          a tmpfs A mounts at pin/x must reach the root's pt/in/x, one the root
 *                          mounts at pt/in/z must not reach A's pin.
 *
 * Reports go through a MAP_SHARED area made before the fork.
 *
 *   nested_mounts RESULT_FILE MODE [ARGS]
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

struct shared {
	atomic_int ready; /* A has set up */
	atomic_int a_unshared; /* slave-sibling: A is in its namespace, propagation unchanged */
	atomic_int b_ready; /* slave-sibling: B is in its namespace */
	atomic_int root_done; /* slave-sibling: the root made its root mount private */
	atomic_int fromb; /* slave-sibling: B has tried to mount pr/fromb */
	atomic_int b_done;
	char b_verdict[1024];
	atomic_int go; /* the root checked its view (and, slave-root, mounted pr/fromroot) */
	atomic_int froma; /* slave-root: A has mounted pr/froma */
	atomic_int done;
	char verdict[1024];
};

static char base[512];
static struct shared *sh;
static const char *mode;

static const char *at(const char *rel)
{
	static char bufs[8][1024];
	static int next;
	char *b = bufs[next++ % 8];
	snprintf(b, sizeof(bufs[0]), "%s/%s", base, rel);
	return b;
}

static int is(const char *m)
{
	return !strcmp(mode, m);
}

static int ext_mode(void)
{
	return is("ext") || is("ext-slave") || is("ext-shared");
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

static dev_t dev_of(const char *path)
{
	struct stat st;
	if (stat(path, &st))
		return (dev_t)-1;
	return st.st_dev;
}

static int file_is(const char *path, const char *text)
{
	char buf[256];
	ssize_t n = wl_read_file(path, buf, sizeof(buf));
	return n >= 0 && !strcmp(buf, text);
}

/* A child's checks go into its verdict ("" when they passed): A's sh->verdict, B's sh->b_verdict. */
static char *verdict;
static size_t verdict_len;
#define CHILD_CHECK(cond, ...)                                                                      \
	do {                                                                                        \
		if (!(cond) && verdict_len < sizeof(sh->verdict) - 1) {                             \
			verdict_len += snprintf(verdict + verdict_len, sizeof(sh->verdict) - verdict_len, \
						__VA_ARGS__);                                       \
			verdict_len += snprintf(verdict + verdict_len, sizeof(sh->verdict) - verdict_len, "; "); \
		}                                                                                   \
	} while (0)

static void wait_for(atomic_int *flag)
{
	pid_t root = getppid();
	while (!atomic_load(flag)) {
		if (getppid() != root)
			_exit(5);
		usleep(10000);
	}
}

/* A's mounts, before it reports ready; returns an fd it keeps (or -1). */
static int setup_a(void)
{
	if (unshare(CLONE_NEWNS))
		_exit(2);
	if (is("slave-sibling")) {
		atomic_store(&sh->a_unshared, 1);
		wait_for(&sh->root_done);
		if (mount(NULL, "/", NULL, MS_SLAVE, NULL))
			_exit(3);
		return -1;
	}
	if (!is("slave-root") && !is("slave-shared-root") && !is("ext-shared") && !is("slave-wide-late") &&
	    mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL))
		_exit(3);
	if (is("slave-wide-late") &&
	    (mount(at("pt/in"), at("pin"), NULL, MS_BIND, NULL) || mount(NULL, at("pt"), NULL, MS_PRIVATE, NULL)))
		_exit(4);
	int fd = -1;
	char opts[2048];
	if (ext_mode()) {
		if (mount(at("ext/sub"), at("esub"), NULL, MS_BIND, NULL))
			_exit(4);
	} else if (is("overlay") || is("overlay-gone")) {
		const char *lower = is("overlay") ? at("lower") : at("lowtmp/lower");
		if (is("overlay-gone") && (mount("lowtmp", at("lowtmp"), "tmpfs", 0, "size=64k") || mkdir(lower, 0755)))
			_exit(4);
		put(at(is("overlay") ? "lower/l.txt" : "lowtmp/lower/l.txt"), "from the lower layer");
		snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s", lower, at("upper"), at("work"));
		if (mount("overlay", at("ovl"), "overlay", MS_NOSUID, opts))
			_exit(6);
		put(at("ovl/u.txt"), "written through the overlay");
		fd = open(at("ovl/u.txt"), O_RDONLY);
		if (fd < 0 || (is("overlay-gone") && umount2(at("lowtmp"), MNT_DETACH)))
			_exit(7);
	} else if (is("disk")) {
		if (mount(at("loopdev"), at("disk"), "ext4", MS_NOSUID | MS_NODEV, NULL))
			_exit(4);
		put(at("disk/d.txt"), "on the disk");
		unlink(at("disk/after.txt"));
		fd = open(at("disk/d.txt"), O_RDONLY);
		if (fd < 0)
			_exit(6);
	}
	return fd;
}

static void child_a(void)
{
	int fd = setup_a();
	atomic_store(&sh->ready, 1);
	wait_for(&sh->go);
	verdict = sh->verdict;
	char buf[64] = "";
	struct stat st;
	if (ext_mode()) {
		CHILD_CHECK(file_is(at("gone/in.txt"), "host dir 2"), "A: gone/in.txt is not the host's");
		CHILD_CHECK(file_is(at("esub/s.txt"), "host sub"), "A: esub/s.txt is not the host's");
		CHILD_CHECK(file_is(at("ext/in.txt"), "host dir 1"), "A: ext/in.txt is not the host's");
		CHILD_CHECK(dev_of(at("gone")) != dev_of(base) && dev_of(at("gone")) != dev_of(at("ext")),
			    "A: gone is not a mount of its own filesystem");
		CHILD_CHECK(is("ext") || file_is(at("gone/sub/p.txt"), "from the host"),
			    "A: the host's mount at its sub did not reach gone/sub (gone is no slave of the host's group)");
		if (is("ext-shared")) {
			/* a peer of the host's mount: this one must reach HOSTDIR2/back, where the test looks */
			if (mount("back", at("gone/back"), "tmpfs", 0, "size=64k") == 0)
				put(at("gone/back/b.txt"), "from A");
			else
				CHILD_CHECK(0, "A: cannot mount gone/back: %s", strerror(errno));
		}
		put(at("gone/out.txt"), "written into gone");
		put(at("esub/out.txt"), "written into esub");
	} else if (is("overlay") || is("overlay-gone")) {
		CHILD_CHECK(file_is(at("ovl/l.txt"), "from the lower layer"), "A: ovl/l.txt is not the lower's");
		CHILD_CHECK(file_is(at("ovl/u.txt"), "written through the overlay"), "A: ovl/u.txt is not there");
		CHILD_CHECK(file_is(at("upper/u.txt"), "written through the overlay"), "A: upper/u.txt is not there");
		/* (layers on two filesystems: a file's st_dev is then its layer's) */
		CHILD_CHECK(is("overlay-gone") || (fstat(fd, &st) == 0 && st.st_dev == dev_of(at("ovl"))),
			    "A: the kept fd is not on ovl");
		CHILD_CHECK(pread(fd, buf, 7, 0) == 7 && !strcmp(buf, "written"), "A: the kept fd read \"%s\"", buf);
		put(at("ovl/after.txt"), "after the restore");
		CHILD_CHECK(file_is(at("upper/after.txt"), "after the restore"), "A: a write through ovl is not in upper");
		unlink(at("ovl/after.txt"));
	} else if (is("disk")) {
		CHILD_CHECK(file_is(at("disk/d.txt"), "on the disk"), "A: disk/d.txt is not there");
		CHILD_CHECK(dev_of(at("disk")) != dev_of(base), "A: disk is not a mount");
		CHILD_CHECK(fstat(fd, &st) == 0 && st.st_dev == dev_of(at("disk")), "A: the kept fd is not on disk");
		CHILD_CHECK(pread(fd, buf, 7, 3) == 7 && !strcmp(buf, "the dis"), "A: the kept fd read \"%s\"", buf);
		put(at("disk/after.txt"), "after the restore");
	} else if (is("slave-root") || is("slave-shared-root")) {
		CHILD_CHECK(access(at("pr/fromroot/r.txt"), F_OK) != 0,
			    "A: the root's mount at pr/fromroot reached A (a slave propagated to its master)");
		if (mount("froma", at("pr/froma"), "tmpfs", 0, "size=64k") == 0) {
			put(at("pr/froma/a.txt"), "from A");
			atomic_store(&sh->froma, 1);
		} else {
			CHILD_CHECK(0, "A: cannot mount pr/froma: %s", strerror(errno));
		}
	} else if (is("slave-wide")) {
		CHILD_CHECK(file_is(at("pt/in/x/f.txt"), "from pin"),
			    "A: the root's mount at pin/x did not reach pt/in/x (A's pt is no slave of pin's group)");
		if (mount("froma", at("pt/in/z"), "tmpfs", 0, "size=64k") == 0)
			put(at("pt/in/z/a.txt"), "from A");
		else
			CHILD_CHECK(0, "A: cannot mount pt/in/z: %s", strerror(errno));
		/* left mounted: it goes with A's namespace, and had it reached pin, the root sees it there */
	} else if (is("slave-wide-late")) {
		CHILD_CHECK(access(at("pin/z/r.txt"), F_OK) != 0,
			    "A: the root's mount at pt/in/z reached pin (the root's pt is a peer of pin, not its slave)");
		if (mount("froma", at("pin/x"), "tmpfs", 0, "size=64k") == 0)
			put(at("pin/x/f.txt"), "from pin");
		else
			CHILD_CHECK(0, "A: cannot mount pin/x: %s", strerror(errno));
	} else if (is("slave-sibling")) {
		wait_for(&sh->fromb);
		CHILD_CHECK(file_is(at("pr/fromb/b.txt"), "from B"),
			    "A: B's mount at pr/fromb did not reach A (its root mount is no slave of B's)");
		if (mount("froma", at("pr/froma"), "tmpfs", 0, "size=64k") == 0) {
			put(at("pr/froma/a.txt"), "from A");
		} else {
			CHILD_CHECK(0, "A: cannot mount pr/froma: %s", strerror(errno));
		}
		atomic_store(&sh->froma, 1);
	}
	atomic_store(&sh->done, 1);
	_exit(0);
}

/* slave-sibling's B: in a namespace of its own made after A's, its root mount the master of A's. */
static void child_b(void)
{
	if (unshare(CLONE_NEWNS))
		_exit(2);
	atomic_store(&sh->b_ready, 1);
	wait_for(&sh->go);
	verdict = sh->b_verdict;
	if (mount("fromb", at("pr/fromb"), "tmpfs", 0, "size=64k") == 0)
		put(at("pr/fromb/b.txt"), "from B");
	else
		CHILD_CHECK(0, "B: cannot mount pr/fromb: %s", strerror(errno));
	atomic_store(&sh->fromb, 1);
	wait_for(&sh->froma);
	CHILD_CHECK(access(at("pr/froma/a.txt"), F_OK) != 0,
		    "B: A's mount at pr/froma reached B (a slave propagated to its master)");
	atomic_store(&sh->b_done, 1);
	_exit(0);
}

static void make_dirs(void)
{
	const char *dirs[] = { "", "newroot", "ext", "gone", "esub", "lower", "lowtmp", "upper", "work", "ovl", "disk", "pr", "pr/froma",
			       "pr/fromroot", "pr/fromb", "pt", "pw", "pin" };
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (mkdir(at(dirs[i]), 0755) && errno != EEXIST)
			wl_die("mkdir %s", dirs[i]);
}

/* Enters a mount namespace of its own rooted at a bind of /, with the external binds of ext mode. */
static void enter_own_root(char **argv)
{
	if (unshare(CLONE_NEWNS))
		wl_die("unshare(CLONE_NEWNS)");
	if (!is("ext-shared"))
		mnt(NULL, "/", NULL, MS_REC | (is("ext-slave") ? MS_SLAVE : MS_PRIVATE), NULL);
	mnt("/", at("newroot"), NULL, MS_BIND, NULL);
	if (ext_mode()) {
		char where[1024];
		snprintf(where, sizeof(where), "%s%s", at("newroot"), at("ext"));
		mnt(argv[3], where, NULL, MS_BIND, NULL);
		snprintf(where, sizeof(where), "%s%s", at("newroot"), at("gone"));
		mnt(argv[4], where, NULL, MS_BIND, NULL);
	}
	int oldroot = open("/", O_DIRECTORY | O_RDONLY);
	if (oldroot < 0 || chdir(at("newroot")) || syscall(SYS_pivot_root, ".", "."))
		wl_die("pivot_root");
	/* ext-shared: the old root's mounts must not take the detach to their host peers */
	if (is("ext-shared") && (fchdir(oldroot) || mount(NULL, ".", NULL, MS_REC | MS_SLAVE, NULL)))
		wl_die("make the old root a slave");
	if (umount2(".", MNT_DETACH) || chdir("/") || close(oldroot))
		wl_die("detach the old root");
}

/* Runs itself again inside (its program and libraries then mapped from mounts of the namespace). */
static void exec_inside(int argc, char **argv, const char *exe, const char *log)
{
	int fd = open(log, O_WRONLY | O_APPEND);
	if (fd < 0 || dup2(fd, 1) != 1 || dup2(fd, 2) != 2 || close(fd))
		wl_die("reopen the log %s", log);
	char *args[8] = { argv[0], argv[1], "inside" };
	for (int i = 2; i < argc && i < 7; i++)
		args[i + 1] = argv[i];
	execv(exe, args);
	wl_die("exec %s", exe);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	closefrom(3);
	wl_path("mnt", base, sizeof(base));
	int inside = argc > 3 && !strcmp(argv[2], "inside");
	if (inside) {
		argv[2] = argv[1];
		argv++;
		argc--;
	}
	if (argc < 3)
		wl_die("usage: nested_mounts RESULT_FILE MODE [ARGS]");
	mode = argv[2];
	if (!(ext_mode() && argc == 5) && !is("overlay") && !is("overlay-gone") && !(is("disk") && argc == 4) &&
	    !is("slave-root") && !is("slave-shared-root") && !is("slave-sibling") && !is("slave-wide") &&
	    !is("slave-wide-late"))
		wl_die("unknown mode %s", mode);
	if (!inside) {
		char exe[1024] = "", log[1024] = "";
		if (readlink("/proc/self/exe", exe, sizeof(exe) - 1) < 0 || readlink("/proc/self/fd/1", log, sizeof(log) - 1) < 0)
			wl_die("readlink exe, log");
		make_dirs();
		if (is("disk")) {
			struct stat st;
			if (stat(argv[3], &st) || !S_ISBLK(st.st_mode) || mknod(at("loopdev"), S_IFBLK | 0600, st.st_rdev))
				wl_die("mknod loopdev for %s", argv[3]);
		}
		enter_own_root(argv);
		exec_inside(argc, argv, exe, log);
	}
	/* stdin (the host's /dev/null) is outside this view: a directory of the view takes its place */
	int in = open(base, O_RDONLY | O_DIRECTORY);
	if (in < 0 || dup2(in, 0) != 0 || close(in))
		wl_die("reopen stdin");
	mnt("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	if (is("slave-root") || is("slave-shared-root") || is("slave-sibling"))
		mnt(NULL, "/", NULL, MS_SHARED, NULL);
	if (is("slave-wide") || is("slave-wide-late")) {
		mnt("wide", at("pt"), "tmpfs", 0, "size=64k");
		mnt(NULL, at("pt"), NULL, MS_SHARED, NULL);
		if (mkdir(at("pt/in"), 0755) || mkdir(at("pt/in/x"), 0755) || mkdir(at("pt/in/z"), 0755))
			wl_die("mkdir pt/in");
	}
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		wl_die("mmap");
	pid_t a = fork();
	if (a < 0)
		wl_die("fork");
	if (a == 0)
		child_a();
	int64_t limit = wl_now_ns() + 30000000000LL;
	pid_t b = -1;
	if (is("slave-sibling")) {
		while (!atomic_load(&sh->a_unshared))
			if (wl_now_ns() > limit || waitpid(a, NULL, WNOHANG) > 0)
				wl_die("A did not unshare");
			else
				usleep(10000);
		b = fork();
		if (b < 0)
			wl_die("fork");
		if (b == 0)
			child_b();
		while (!atomic_load(&sh->b_ready))
			if (wl_now_ns() > limit || waitpid(b, NULL, WNOHANG) > 0)
				wl_die("B did not unshare");
			else
				usleep(10000);
		mnt(NULL, "/", NULL, MS_PRIVATE, NULL);
		atomic_store(&sh->root_done, 1);
	}
	while (!atomic_load(&sh->ready))
		if (wl_now_ns() > limit || waitpid(a, NULL, WNOHANG) > 0)
			wl_die("A did not set up");
		else
			usleep(10000);
	if (ext_mode() && umount2(at("gone"), 0))
		wl_die("umount gone");
	if (is("slave-root") || is("slave-shared-root"))
		mnt(NULL, "/", NULL, MS_SLAVE, NULL);
	if (is("slave-shared-root"))
		mnt(NULL, "/", NULL, MS_SHARED, NULL);
	if (is("slave-wide")) {
		mnt(at("pt"), at("pw"), NULL, MS_BIND, NULL);
		mnt(at("pt/in"), at("pin"), NULL, MS_BIND, NULL);
		mnt(NULL, at("pw"), NULL, MS_SLAVE, NULL);
		mnt(NULL, at("pt"), NULL, MS_PRIVATE, NULL);
	}
	if (is("slave-wide-late"))
		mnt(NULL, at("pt"), NULL, MS_SLAVE, NULL);
	wl_ready();
	wl_wait();

	WL_CHECK(dev_of(at("gone")) == dev_of(base), "gone is a mount in the root's namespace");
	WL_CHECK(dev_of(at("ovl")) == dev_of(base), "ovl is a mount in the root's namespace");
	WL_CHECK(dev_of(at("disk")) == dev_of(base), "disk is a mount in the root's namespace");
	if (is("slave-root") || is("slave-shared-root")) {
		mnt("fromroot", at("pr/fromroot"), "tmpfs", 0, "size=64k");
		put(at("pr/fromroot/r.txt"), "from the root");
	}
	if (is("slave-wide")) {
		mnt("x", at("pin/x"), "tmpfs", 0, "size=64k");
		put(at("pin/x/f.txt"), "from pin");
	}
	if (is("slave-wide-late")) {
		mnt("z", at("pt/in/z"), "tmpfs", 0, "size=64k");
		put(at("pt/in/z/r.txt"), "from the root");
	}
	atomic_store(&sh->go, 1);
	int status = 0;
	if (waitpid(a, &status, 0) != a)
		wl_fail("waitpid A: %s", strerror(errno));
	else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !atomic_load(&sh->done))
		wl_fail("A ended with status %#x before its checks", status);
	if (sh->verdict[0])
		wl_fail("%s", sh->verdict);
	if (is("slave-sibling")) {
		if (waitpid(b, &status, 0) != b)
			wl_fail("waitpid B: %s", strerror(errno));
		else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !atomic_load(&sh->b_done))
			wl_fail("B ended with status %#x before its checks", status);
		if (sh->b_verdict[0])
			wl_fail("%s", sh->b_verdict);
		WL_CHECK(access(at("pr/fromb/b.txt"), F_OK) != 0 && access(at("pr/froma/a.txt"), F_OK) != 0,
			 "the root sees B's or A's mount under pr (its root mount is private)");
	}
	if (is("slave-root") || is("slave-shared-root")) {
		WL_CHECK(atomic_load(&sh->froma) && file_is(at("pr/froma/a.txt"), "from A"),
			 "A's mount at pr/froma did not reach the root (its root mount is no slave of A's)");
		umount2(at("pr/froma"), MNT_DETACH);
		umount2(at("pr/fromroot"), MNT_DETACH);
	}
	if (is("slave-wide")) {
		WL_CHECK(file_is(at("pw/in/x/f.txt"), "from pin"),
			 "the mount at pin/x did not reach pw/in/x (pw is no slave of pin's group)");
		WL_CHECK(access(at("pt/in/x/f.txt"), F_OK) != 0, "the mount at pin/x reached pt (pt is not private)");
		WL_CHECK(access(at("pin/z/a.txt"), F_OK) != 0,
			 "A's mount at pt/in/z reached pin (A's pt is a peer of pin, not its slave)");
		umount2(at("pin/z"), MNT_DETACH);
		umount2(at("pin/x"), MNT_DETACH);
		umount2(at("pw/in/x"), MNT_DETACH);
	}
	if (is("slave-wide-late")) {
		WL_CHECK(file_is(at("pt/in/x/f.txt"), "from pin"),
			 "A's mount at pin/x did not reach the root's pt/in/x (pt is no slave of pin's group)");
		umount2(at("pt/in/x"), MNT_DETACH);
		umount2(at("pt/in/z"), MNT_DETACH);
	}
	wl_finish();
}
