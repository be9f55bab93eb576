/*
 * nested_mntns: a tree whose tasks sit in two mount namespaces, as a systemd service with
 * PrivateTmp= inside a system container:
 *
 *   root ─┬─ A ── A1   A: a mount namespace of its own, a copy of the root's made slave of it;
 *         │           A1: one of its own again, a copy of A's made slave of it, a tmpfs at priv/deep
 *         ├─ B    B: the root's mount namespace
 *         └─ C    C: a mount namespace of its own, propagation unchanged (its sh a peer of the root's)
 *
 * The root lives in a mount namespace of its own, rooted at a bind mount of the host's root
 * filesystem (pivot_root), with /proc, a tmpfs t (t/root.txt) and a shared tmpfs sh. A unshares
 * CLONE_NEWNS, makes every mount a slave (mount --make-rslave /, as systemd does), mounts a tmpfs
 * of its own at priv (priv/a.txt), keeps priv/a.txt open (read 2 bytes) and its cwd in priv, and
 * priv/map.bin mapped shared (a file no other namespace has); then,
 * as PrivateTmp= and ProtectSystem= do, binds t/svc (a directory of the root's tmpfs) over t, and
 * ro (a directory of the root filesystem) on itself read-only; and, as systemd ends, makes every
 * mount shared (its sh then shared and a slave of the root's).
 *
 * After SIGTERM the root checks its view: t/root.txt is there (its t not covered), ro is
 * writable, priv is no mount and holds no a.txt, A is in another mount namespace and B in its own; it mounts a tmpfs at sh/later with
 * l.txt and lets A and B check. A checks priv/a.txt, its fd (the rest of the file, on priv), its
 * mapping (its contents, and a write through it reaching the file), its cwd, t/svc.txt (t/svc bound over its copy of t), that ro refuses writes (EROFS), and that
 * sh/later/l.txt reached it (its sh is a slave of the
 * root's: the relation must have come back); then it mounts a tmpfs at sh/back, which the root must
 * not see (a slave does not propagate back). B checks it sees t and not priv. C checks sh/later
 * reached it too and mounts a tmpfs at sh/fromc, which the root must see (peers propagate both ways).
 * A1 checks its deep.txt, its copy of A's priv/a.txt and sh/later (its sh a slave of the root's,
 * through A's); A checks it does not see deep.txt and that A1 passed. Reports go through a
 * MAP_SHARED area made before the forks.
 *
 * The root enters its namespace, then execs itself there (`inside`), as a container's init is.
 * With `host` the root stays in the mount namespace it was started in (criu's) and mounts nothing;
 * A still makes its own (a dump must refuse that tree by name, as CRIU cannot restore it): only A's
 * own mounts and the namespaces are checked then.
 *
 *   nested_mntns RESULT_FILE [host]
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
#include <sys/wait.h>
#include <unistd.h>

/* The root's children, then A's child A1 (a slot of its own in the shared area). */
enum { A, B, C, NCHILD, A1 = NCHILD, NSLOT };

struct shared {
	atomic_int ready[NSLOT];
	atomic_int go; /* the root has made its checks and sh/later */
	atomic_int done[NSLOT];
	atomic_int back_mounted; /* A has mounted sh/back */
	atomic_int fromc_mounted; /* C has mounted sh/fromc */
	char verdict[NSLOT][1024];
};

static char base[512];
static struct shared *sh;
static int host; /* the root stays in the mount namespace it was started in */

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

static dev_t dev_of(const char *path)
{
	struct stat st;
	if (stat(path, &st))
		return (dev_t)-1;
	return st.st_dev;
}

static ino_t mntns_of(const char *pid)
{
	char path[64];
	struct stat st;
	snprintf(path, sizeof(path), "/proc/%s/ns/mnt", pid);
	return stat(path, &st) ? 0 : st.st_ino;
}

/* A child's checks go into its verdict ("" when they passed). */
static char *verdict;
static size_t verdict_len;
#define CHILD_CHECK(cond, ...)                                                                     \
	do {                                                                                       \
		if (!(cond) && verdict_len < sizeof(sh->verdict[0]) - 1) {                         \
			verdict_len += snprintf(verdict + verdict_len, sizeof(sh->verdict[0]) - verdict_len, \
						__VA_ARGS__);                                      \
			verdict_len += snprintf(verdict + verdict_len, sizeof(sh->verdict[0]) - verdict_len, "; "); \
		}                                                                                  \
	} while (0)

static int file_is(const char *path, const char *text)
{
	char buf[256];
	ssize_t n = wl_read_file(path, buf, sizeof(buf));
	return n >= 0 && !strcmp(buf, text);
}

/* Waits for the root's go; a child whose root is gone (killed) ends with it. */
static void wait_go(void)
{
	pid_t root = getppid();
	while (!atomic_load(&sh->go)) {
		if (getppid() != root)
			_exit(5);
		usleep(10000);
	}
}

/* A1 unshares again inside A's namespace, makes every mount a slave, mounts a tmpfs at priv/deep. */
static void child_a1(void)
{
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) ||
	    mount("deep", at("priv/deep"), "tmpfs", 0, "size=64k"))
		_exit(2);
	put(at("priv/deep/deep.txt"), "two levels down");
	atomic_store(&sh->ready[A1], 1);
	wait_go();
	verdict = sh->verdict[A1];
	CHILD_CHECK(file_is(at("priv/deep/deep.txt"), "two levels down"), "A1: priv/deep/deep.txt is not there");
	CHILD_CHECK(file_is(at("priv/a.txt"), "private tmp"), "A1: its copy of A's priv has no a.txt");
	CHILD_CHECK(file_is(at("sh/later/l.txt"), "after the restore"),
		    "A1: the root's mount at sh/later did not reach A1 (its sh is no slave of the root's)");
	atomic_store(&sh->done[A1], 1);
	_exit(0);
}

static void child_a(void)
{
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL))
		_exit(2);
	if (mount("priv", at("priv"), "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=700"))
		_exit(3);
	int fd = open(at("priv/a.txt"), O_RDWR | O_CREAT | O_TRUNC, 0600);
	char two[3] = "";
	if (fd < 0 || write(fd, "private tmp", 11) != 11 || pread(fd, two, 2, 0) != 2 || lseek(fd, 2, SEEK_SET) != 2 ||
	    chdir(at("priv")))
		_exit(4);
	if (!host && (mount(at("t/svc"), at("t"), NULL, MS_BIND, NULL) || mount(at("ro"), at("ro"), NULL, MS_BIND, NULL) ||
	    mount(NULL, at("ro"), NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL)))
		_exit(6);
	/* systemd ends a service's namespace setup so: every mount shared (and still a slave) */
	if (!host && mount(NULL, "/", NULL, MS_SHARED | MS_REC, NULL))
		_exit(9);
	pid_t a1 = -1;
	if (!host) {
		if (mkdir(at("priv/deep"), 0755))
			_exit(7);
		a1 = fork();
		if (a1 < 0)
			_exit(8);
		if (a1 == 0)
			child_a1();
	}
	/* a file only A's namespace has, mapped shared (after A1's fork: A's alone) */
	int mfd = open(at("priv/map.bin"), O_RDWR | O_CREAT | O_TRUNC, 0600);
	char *map = MAP_FAILED;
	if (mfd >= 0 && ftruncate(mfd, 4096) == 0)
		map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (map == MAP_FAILED)
		_exit(10);
	strcpy(map, "mapped in A");
	close(mfd);
	atomic_store(&sh->ready[A], 1);
	wait_go();
	verdict = sh->verdict[A];
	CHILD_CHECK(!strcmp(map, "mapped in A"), "A: its mapping of priv/map.bin holds \"%.20s\"", map);
	map[0] = 'M';
	CHILD_CHECK(file_is(at("priv/map.bin"), "Mapped in A"), "A: its mapping is not priv/map.bin's (shared) pages");
	char rest[32] = "";
	struct stat st;
	CHILD_CHECK(file_is(at("priv/a.txt"), "private tmp"), "A: priv/a.txt is not there");
	CHILD_CHECK(read(fd, rest, sizeof(rest) - 1) == 9 && !strcmp(rest, "ivate tmp"), "A: the fd read \"%s\"", rest);
	CHILD_CHECK(fstat(fd, &st) == 0 && st.st_dev == dev_of(at("priv")), "A: the fd is not on priv");
	CHILD_CHECK(dev_of(at("priv")) != dev_of(base), "A: priv is not a mount");
	CHILD_CHECK(dev_of(".") == dev_of(at("priv")), "A: cwd is not on priv");
	if (host)
		goto done;
	CHILD_CHECK(file_is(at("t/svc.txt"), "the service's tmp"), "A: t/svc is not bound over t");
	CHILD_CHECK(open(at("ro/a-write"), O_WRONLY | O_CREAT, 0644) < 0 && errno == EROFS, "A: ro is writable");
	CHILD_CHECK(file_is(at("sh/later/l.txt"), "after the restore"),
		    "A: the root's mount at sh/later did not reach A (its sh is no slave of the root's)");
	if (mount("back", at("sh/back"), "tmpfs", 0, "size=64k") == 0)
		atomic_store(&sh->back_mounted, 1);
	else
		CHILD_CHECK(0, "A: cannot mount sh/back: %s", strerror(errno));
	int status = 0;
	CHILD_CHECK(waitpid(a1, &status, 0) == a1 && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
			    atomic_load(&sh->done[A1]),
		    "A: A1 ended with status %#x before its checks", status);
	CHILD_CHECK(access(at("priv/deep/deep.txt"), F_OK) != 0, "A: sees A1's priv/deep/deep.txt");
done:
	atomic_store(&sh->done[A], 1);
	_exit(0);
}

static void child_b(void)
{
	atomic_store(&sh->ready[B], 1);
	wait_go();
	verdict = sh->verdict[B];
	CHILD_CHECK(host || file_is(at("t/root.txt"), "the root's tmpfs"), "B: t/root.txt is not there");
	CHILD_CHECK(access(at("priv/a.txt"), F_OK) != 0, "B: sees A's priv/a.txt");
	CHILD_CHECK(dev_of(at("priv")) == dev_of(base), "B: priv is a mount");
	atomic_store(&sh->done[B], 1);
	_exit(0);
}

static void make_dirs(void)
{
	const char *dirs[] = { "", "newroot", "t", "sh", "priv", "ro" };
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (mkdir(at(dirs[i]), 0755) && errno != EEXIST)
			wl_die("mkdir %s", dirs[i]);
}

/* C unshares and changes no propagation: its sh is a peer of the root's (and A's master). */
static void child_c(void)
{
	if (unshare(CLONE_NEWNS))
		_exit(2);
	atomic_store(&sh->ready[C], 1);
	wait_go();
	verdict = sh->verdict[C];
	if (!host) {
		CHILD_CHECK(file_is(at("sh/later/l.txt"), "after the restore"),
			    "C: the root's mount at sh/later did not reach C (its sh is no peer of the root's)");
		if (mount("fromc", at("sh/fromc"), "tmpfs", 0, "size=64k") == 0) {
			put(at("sh/fromc/c.txt"), "from C");
			atomic_store(&sh->fromc_mounted, 1);
		} else {
			CHILD_CHECK(0, "C: cannot mount sh/fromc: %s", strerror(errno));
		}
	}
	atomic_store(&sh->done[C], 1);
	_exit(0);
}

static void enter_own_root(void)
{
	if (unshare(CLONE_NEWNS))
		wl_die("unshare(CLONE_NEWNS)");
	mnt(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
	mnt("/", at("newroot"), NULL, MS_BIND, NULL);
	if (chdir(at("newroot")) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) || chdir("/"))
		wl_die("pivot_root");
}

/* The new root is a bind of the host's /: the program and its log keep their paths there. Exec'd
 * again inside, its program and libraries are mapped from mounts of the namespace (CRIU refuses a
 * mapping from a mount outside it), as a container's init is. */
static void exec_inside(char **argv, const char *exe, const char *log)
{
	int fd = open(log, O_WRONLY | O_APPEND);
	if (fd < 0 || dup2(fd, 1) != 1 || dup2(fd, 2) != 2 || close(fd))
		wl_die("reopen the log %s", log);
	execl(exe, argv[0], argv[1], "inside", (char *)NULL);
	wl_die("exec %s", exe);
}

static void fill_own_root(void)
{
	/* stdin (the host's /dev/null) is outside this view: a file of the view takes its place */
	int in = open(base, O_RDONLY | O_DIRECTORY);
	if (in < 0 || dup2(in, 0) != 0 || close(in))
		wl_die("reopen stdin");
	mnt("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mnt("tmpfs", at("t"), "tmpfs", MS_NOSUID, "size=1m,mode=755");
	put(at("t/root.txt"), "the root's tmpfs");
	if (mkdir(at("t/svc"), 0755))
		wl_die("mkdir t/svc");
	put(at("t/svc/svc.txt"), "the service's tmp");
	mnt("shm", at("sh"), "tmpfs", 0, "size=1m");
	mnt(NULL, at("sh"), NULL, MS_SHARED, NULL);
	if (mkdir(at("sh/later"), 0755) || mkdir(at("sh/back"), 0755) || mkdir(at("sh/fromc"), 0755))
		wl_die("mkdir sh/later, sh/back");
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	closefrom(3);
	wl_path("mnt", base, sizeof(base));
	host = argc > 2 && !strcmp(argv[2], "host");
	if (!host && (argc < 3 || strcmp(argv[2], "inside"))) {
		char exe[1024] = "", log[1024] = "";
		if (readlink("/proc/self/exe", exe, sizeof(exe) - 1) < 0 || readlink("/proc/self/fd/1", log, sizeof(log) - 1) < 0)
			wl_die("readlink exe, log");
		make_dirs();
		enter_own_root();
		exec_inside(argv, exe, log);
	}
	if (host)
		make_dirs();
	else
		fill_own_root();
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		wl_die("mmap");
	pid_t kids[NCHILD];
	for (int i = 0; i < NCHILD; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			wl_die("fork");
		if (kids[i] == 0) {
			if (i == A)
				child_a();
			if (i == C)
				child_c();
			child_b();
		}
	}
	int64_t limit = wl_now_ns() + 30000000000LL;
	for (int i = 0; i < NSLOT; i++)
		while (!(host && i == A1) && !atomic_load(&sh->ready[i]))
			if (wl_now_ns() > limit || waitpid(kids[i == A1 ? A : i], NULL, WNOHANG) > 0)
				wl_die("child %d did not set up", i);
			else
				usleep(10000);
	wl_ready();
	wl_wait();

	char pid_a[16], pid_b[16], pid_c[16];
	snprintf(pid_a, sizeof(pid_a), "%d", kids[A]);
	snprintf(pid_b, sizeof(pid_b), "%d", kids[B]);
	snprintf(pid_c, sizeof(pid_c), "%d", kids[C]);
	ino_t ours = mntns_of("self");
	WL_CHECK(ours != 0 && mntns_of(pid_a) != 0 && mntns_of(pid_a) != ours, "A is not in a mount namespace of its own");
	WL_CHECK(mntns_of(pid_c) != 0 && mntns_of(pid_c) != ours && mntns_of(pid_c) != mntns_of(pid_a),
		 "C is not in a mount namespace of its own");
	WL_CHECK(mntns_of(pid_b) == ours, "B is not in the root's mount namespace");
	if (host) {
		atomic_store(&sh->go, 1);
		goto reap;
	}
	WL_CHECK(file_is(at("t/root.txt"), "the root's tmpfs"), "t/root.txt is not there");
	int w = open(at("ro/root-write"), O_WRONLY | O_CREAT, 0644);
	WL_CHECK(w >= 0, "ro is not writable for the root: %s", strerror(errno));
	if (w >= 0)
		close(w), unlink(at("ro/root-write"));
	WL_CHECK(access(at("priv/a.txt"), F_OK) != 0, "the root sees A's priv/a.txt");
	WL_CHECK(dev_of(at("priv")) == dev_of(base), "priv is a mount in the root's namespace");
	mnt("later", at("sh/later"), "tmpfs", 0, "size=64k");
	put(at("sh/later/l.txt"), "after the restore");
	atomic_store(&sh->go, 1);
reap:
	for (int i = 0; i < NCHILD; i++) {
		int status = 0;
		if (waitpid(kids[i], &status, 0) != kids[i])
			wl_fail("waitpid child %d: %s", i, strerror(errno));
		else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !atomic_load(&sh->done[i]))
			wl_fail("child %d ended with status %#x before its checks", i, status);
		if (sh->verdict[i][0])
			wl_fail("%s", sh->verdict[i]);
	}
	if (sh->verdict[A1][0])
		wl_fail("%s", sh->verdict[A1]);
	if (host)
		wl_finish();
	WL_CHECK(atomic_load(&sh->back_mounted) && dev_of(at("sh/back")) == dev_of(at("sh")),
		 "A's mount at sh/back reached the root (or A could not make it)");
	WL_CHECK(atomic_load(&sh->fromc_mounted) && file_is(at("sh/fromc/c.txt"), "from C"),
		 "C's mount at sh/fromc did not reach the root (its sh is no peer of the root's)");
	umount2(at("sh/later"), MNT_DETACH);
	umount2(at("sh/fromc"), MNT_DETACH);
	wl_finish();
}
