/*
 * userns_owner: namespaces made by tasks below the root of a rootless-style tree (a user namespace
 * of its own, the host's PID namespace), each of which must come back owned by the user namespace
 * that owned it (NS_GET_USERNS).
 *   bin/userns_owner RESULT_FILE mnt|nested|net-first
 * The root R first (as the host's root) enters a mount namespace of its own rooted at a bind of the
 * host's / (pivot_root) and execs itself there (`inside`), mounts /proc, then unshares a user
 * namespace (a helper in the host's writes the maps "0 0 1") and a mount and a network namespace,
 * which that user namespace owns; as `unshare -U -m -n` and a fork leave a rootless tree.
 *   mnt     R's child C unshares a mount namespace (owned by R's user namespace, C's own) and
 *           mounts a tmpfs at priv with c.txt;
 *   nested  R's child N unshares a user namespace below R's (R writes its maps, "0 0 1"), then
 *           mount, network, UTS and IPC namespaces, which that one owns; it names its host
 *           "owned-by-n", mounts a tmpfs at priv with c.txt and forks K, which stays in them all;
 *   net-first  as nested, but N unshares its network namespace before its user namespace, so
 *           that R's owns it (a dump must refuse it by name: the restore would make it in N's).
 * Each child checks, before the checkpoint and on the root's go after it: every namespace it is in
 * (mount, network, UTS, IPC) is owned by its own user namespace; c.txt is on priv, a mount of its
 * view. R checks its own mount and network namespaces are owned by its user namespace, that it does
 * not see priv/c.txt, and that the child's namespaces are not its own; with `nested`, that N's user
 * namespace is below R's with N's maps, and K is in N's namespaces. Verdicts go through a
 * MAP_SHARED area made before the forks.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NESTED_HOST "owned-by-n"

enum { CHILD, GRANDCHILD, NSLOT };

struct shared {
	atomic_int ready[NSLOT];
	atomic_int go;
	atomic_int done[NSLOT];
	char verdict[NSLOT][1024];
};

static char base[512];
static struct shared *sh;
static int nested, net_first;

static const char *at(const char *rel)
{
	static char bufs[4][1024];
	static int next;
	char *b = bufs[next++ % 4];
	snprintf(b, sizeof(bufs[0]), "%s/%s", base, rel);
	return b;
}

/* The inode of namespace `kind` of task `pid` (0: this one), or of the user namespace that owns it
 * (`how` NS_GET_USERNS) or is its parent (NS_GET_PARENT); 0 when unknown. */
static ino_t ns_ino(pid_t pid, const char *kind, unsigned long how)
{
	char path[64];
	struct stat st;
	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", pid, kind);
	else
		snprintf(path, sizeof(path), "/proc/self/ns/%s", kind);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	int ns = how ? ioctl(fd, how) : dup(fd);
	close(fd);
	if (ns < 0)
		return 0;
	int ok = fstat(ns, &st) == 0;
	close(ns);
	return ok ? st.st_ino : 0;
}

static const char *const KINDS[] = { "mnt", "net", "uts", "ipc" };

static dev_t dev_of(const char *path)
{
	struct stat st;
	return stat(path, &st) ? (dev_t)-1 : st.st_dev;
}

static int file_is(const char *path, const char *text)
{
	char buf[256];
	ssize_t n = wl_read_file(path, buf, sizeof(buf));
	return n >= 0 && !strcmp(buf, text);
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

/* `who`'s own view: each of its namespaces owned by its user namespace, its priv/c.txt. */
static void child_checks(const char *who, const char *when)
{
	ino_t user = ns_ino(0, "user", 0);
	for (size_t i = 0; i < sizeof(KINDS) / sizeof(KINDS[0]); i++) {
		if (!nested && strcmp(KINDS[i], "mnt"))
			continue;
		ino_t owner = ns_ino(0, KINDS[i], NS_GET_USERNS);
		if (net_first && !strcmp(KINDS[i], "net"))
			owner = owner == ns_ino(0, "user", NS_GET_PARENT) ? user : owner;
		CHILD_CHECK(user && owner == user, "%s %s: its %s namespace is owned by user namespace %lu, not its own %lu",
			    who, when, KINDS[i], (unsigned long)owner, (unsigned long)user);
	}
	CHILD_CHECK(file_is(at("priv/c.txt"), "the child's tmpfs"), "%s %s: priv/c.txt is not there", who, when);
	CHILD_CHECK(dev_of(at("priv")) != dev_of(base), "%s %s: priv is not a mount", who, when);
	if (nested) {
		char name[65] = "";
		CHILD_CHECK(gethostname(name, sizeof(name)) == 0 && !strcmp(name, NESTED_HOST), "%s %s: host name \"%s\"",
			    who, when, name);
	}
}

/* Waits for the root's go; a child whose parent is gone (killed) ends with it. */
static void wait_go(void)
{
	pid_t parent = getppid();
	while (!atomic_load(&sh->go)) {
		if (getppid() != parent)
			_exit(5);
		usleep(10000);
	}
}

static void child_end(int slot, const char *who)
{
	wait_go();
	verdict = sh->verdict[slot];
	child_checks(who, "after");
	atomic_store(&sh->done[slot], 1);
}

/* K: N's child, in every namespace of N's. */
static void grandchild(void)
{
	verdict = sh->verdict[GRANDCHILD];
	child_checks("K", "before");
	atomic_store(&sh->ready[GRANDCHILD], 1);
	child_end(GRANDCHILD, "K");
	_exit(0);
}

/* C (mnt) or N (nested): its namespaces, its tmpfs; N also forks K. `go`: N's pipe to R. */
static void child(int go)
{
	const char *who = nested ? "N" : "C";
	pid_t k = -1;
	if (nested) {
		char c;
		if (net_first && unshare(CLONE_NEWNET))
			_exit(2);
		if (unshare(CLONE_NEWUSER) || write(go, "n", 1) != 1 || read(go, &c, 1) != 1)
			_exit(2);
		if (unshare(CLONE_NEWNS | (net_first ? 0 : CLONE_NEWNET) | CLONE_NEWUTS | CLONE_NEWIPC) ||
		    sethostname(NESTED_HOST, strlen(NESTED_HOST)))
			_exit(3);
	} else if (unshare(CLONE_NEWNS)) {
		_exit(3);
	}
	close(go);
	int fd = -1;
	if (mount("priv", at("priv"), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k") ||
	    (fd = open(at("priv/c.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0 || write(fd, "the child's tmpfs", 17) != 17)
		_exit(4);
	close(fd);
	if (nested) {
		k = fork();
		if (k < 0)
			_exit(6);
		if (k == 0)
			grandchild();
	}
	verdict = sh->verdict[CHILD];
	child_checks(who, "before");
	atomic_store(&sh->ready[CHILD], 1);
	child_end(CHILD, who);
	if (k > 0) {
		int status = 0;
		CHILD_CHECK(waitpid(k, &status, 0) == k && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
				    atomic_load(&sh->done[GRANDCHILD]),
			    "N: K ended with status %#x before its checks", status);
	}
	_exit(0);
}

static void enter_own_root(void)
{
	if (mkdir(base, 0755) && errno != EEXIST)
		wl_die("mkdir %s", base);
	if (mkdir(at("newroot"), 0755) || mkdir(at("priv"), 0755))
		wl_die("mkdir newroot, priv");
	if (unshare(CLONE_NEWNS))
		wl_die("unshare(CLONE_NEWNS)");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) || mount("/", at("newroot"), NULL, MS_BIND, NULL))
		wl_die("bind / at newroot");
	if (chdir(at("newroot")) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) || chdir("/"))
		wl_die("pivot_root");
}

/* Exec'd again in its new root (a bind of the host's /), its program and libraries are mapped
 * from mounts of its view, as a container's init is. */
static void exec_inside(char **argv, const char *exe, const char *log)
{
	int fd = open(log, O_WRONLY | O_APPEND);
	if (fd < 0 || dup2(fd, 1) != 1 || dup2(fd, 2) != 2 || close(fd))
		wl_die("reopen the log %s", log);
	execl(exe, argv[0], argv[1], argv[2], "inside", (char *)NULL);
	wl_die("exec %s", exe);
}

/* Writes N's uid and gid maps (N's root is R's). */
static void map_child(pid_t n)
{
	char path[64];
	const char *files[] = { "uid_map", "gid_map" };
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "/proc/%d/%s", n, files[i]);
		int fd = open(path, O_WRONLY);
		if (fd < 0 || write(fd, "0 0 1\n", 6) != 6 || close(fd))
			wl_die("write %s", path);
	}
}

/* R's view of itself and of its child (and K). */
static void root_checks(pid_t kid, pid_t k, const char *when)
{
	ino_t user = ns_ino(0, "user", 0);
	const char *own[] = { "mnt", "net" };
	for (int i = 0; i < 2; i++)
		WL_CHECK(ns_ino(0, own[i], NS_GET_USERNS) == user, "R %s: its %s namespace is not owned by its user namespace",
			 when, own[i]);
	WL_CHECK(access(at("priv/c.txt"), F_OK) != 0, "R %s: sees the child's priv/c.txt", when);
	for (size_t i = 0; i < sizeof(KINDS) / sizeof(KINDS[0]); i++) {
		if (!nested && strcmp(KINDS[i], "mnt"))
			continue;
		ino_t theirs = ns_ino(kid, KINDS[i], 0);
		WL_CHECK(theirs && theirs != ns_ino(0, KINDS[i], 0), "R %s: the child is in R's %s namespace", when, KINDS[i]);
		WL_CHECK(!nested || ns_ino(k, KINDS[i], 0) == theirs, "R %s: K is not in N's %s namespace", when, KINDS[i]);
	}
	if (!nested) {
		WL_CHECK(ns_ino(kid, "user", 0) == user, "R %s: C is not in R's user namespace", when);
		return;
	}
	ino_t ns = ns_ino(kid, "user", 0);
	WL_CHECK(ns && ns != user && ns_ino(kid, "user", NS_GET_PARENT) == user,
		 "R %s: N's user namespace %lu is not below R's %lu", when, (unsigned long)ns, (unsigned long)user);
	WL_CHECK(ns_ino(k, "user", 0) == ns, "R %s: K is not in N's user namespace", when);
	const char *files[] = { "uid_map", "gid_map" };
	for (int i = 0; i < 2; i++) {
		char path[64], map[128];
		snprintf(path, sizeof(path), "/proc/%d/%s", kid, files[i]);
		unsigned a = 9, b = 9, c = 9;
		WL_CHECK(wl_read_file(path, map, sizeof(map)) > 0 && sscanf(map, "%u %u %u", &a, &b, &c) == 3 && a == 0 &&
				 b == 0 && c == 1 && !strchr(map, '\n')[1],
			 "R %s: N's %s is \"%s\"", when, files[i], map);
	}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (argc < 3 || (strcmp(argv[2], "mnt") && strcmp(argv[2], "nested") && strcmp(argv[2], "net-first")))
		wl_die("usage: userns_owner RESULT_FILE mnt|nested|net-first");
	net_first = !strcmp(argv[2], "net-first");
	nested = net_first || !strcmp(argv[2], "nested");
	closefrom(3);
	wl_path("mnt", base, sizeof(base));
	if (argc < 4 || strcmp(argv[3], "inside")) {
		char exe[1024] = "", log[1024] = "";
		if (readlink("/proc/self/exe", exe, sizeof(exe) - 1) < 0 || readlink("/proc/self/fd/1", log, sizeof(log) - 1) < 0)
			wl_die("readlink exe, log");
		enter_own_root();
		exec_inside(argv, exe, log);
	}
	/* stdin (the host's /dev/null) is outside this view: a directory of the view takes its place */
	int in = open(base, O_RDONLY | O_DIRECTORY);
	if (in < 0 || dup2(in, 0) != 0 || close(in))
		wl_die("reopen stdin");
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
		wl_die("mount /proc");
	wl_unshare_user("0 0 1\n");
	if (unshare(CLONE_NEWNS | CLONE_NEWNET))
		wl_die("unshare(CLONE_NEWNS | CLONE_NEWNET)");
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		wl_die("mmap");
	int go[2] = { -1, -1 };
	if (nested && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, go))
		wl_die("socketpair");
	pid_t kid = fork();
	if (kid < 0)
		wl_die("fork");
	if (kid == 0) {
		close(go[0]);
		child(go[1]);
	}
	if (nested) {
		char c;
		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			wl_die("N did not unshare its user namespace");
		map_child(kid);
		if (write(go[0], "r", 1) != 1)
			wl_die("write to N");
		close(go[0]);
	}
	int64_t limit = wl_now_ns() + 30000000000LL;
	for (int i = 0; i < (nested ? NSLOT : 1); i++)
		while (!atomic_load(&sh->ready[i]))
			if (wl_now_ns() > limit || waitpid(kid, NULL, WNOHANG) > 0)
				wl_die("child %d did not set up", i);
			else
				usleep(10000);
	pid_t k = -1;
	if (nested) {
		char path[64], buf[64] = "";
		snprintf(path, sizeof(path), "/proc/%d/task/%d/children", kid, kid);
		if (wl_read_file(path, buf, sizeof(buf)) <= 0 || (k = atoi(buf)) <= 0)
			wl_die("K's pid");
	}
	root_checks(kid, k, "before");
	wl_ready();
	wl_wait();
	root_checks(kid, k, "after");
	atomic_store(&sh->go, 1);
	int status = 0;
	if (waitpid(kid, &status, 0) != kid)
		wl_fail("waitpid child: %s", strerror(errno));
	else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !atomic_load(&sh->done[CHILD]))
		wl_fail("the child ended with status %#x before its checks", status);
	for (int i = 0; i < NSLOT; i++)
		if (sh->verdict[i][0])
			wl_fail("%s", sh->verdict[i]);
	wl_finish();
}
