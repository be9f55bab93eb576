/*
 * userns_tree: a tree of several tasks in a user namespace of its own whose PID namespace is the
 * host's (as `unshare -U -n -i -u` and a fork leave a rootless-style tree).
 *   bin/userns_tree RESULT_FILE [flat|nested|fs]
 * R (the started process) has a helper in the host's namespace write its maps ("0 0 1" and
 * "1000 101000 1000", the same for gids), then unshares network, IPC, UTS, cgroup and time
 * namespaces, which the new user namespace owns (R enters the time namespace it made for its
 * children), and names its host "userns-tree". Its children:
 *   A  switches to uid and gid 1000 inside (101000 outside) and forks G, which switches to uid 1500
 *      (saved uid 1000);
 *   Z  exits with status 7 at once and stays a zombie until R's check.
 * Each of R, A and G checks, before and after: it is in a user namespace other than the host's, with
 * R's maps; its network, IPC, UTS, cgroup and time namespaces are R's and owned by that user
 * namespace (NS_GET_USERNS); the host name; its own credentials; its pid is the one it had. On SIGTERM R checks
 * itself, passes the signal to A (which passes it to G), and takes A's and Z's exit statuses.
 * With `nested` R forks only N, which unshares a user namespace below R's (R writes its maps,
 * "0 0 1": N's root is R's) and forks K in it; R checks that N and K are in one user namespace
 * whose parent is R's, with those maps; N and K check they are root in it (exit statuses).
 * With `fs` R's only child F shares R's fs_struct (CLONE_FS): a tree criu-ts cannot restore there
 * (F would have to join the user namespace after being created, which the kernel refuses).
 */
#define _GNU_SOURCE
#include "lib.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAP "0 0 1\n1000 101000 1000\n"
#define HOSTNAME "userns-tree"

static char host_user_ns[64];
static pid_t root_pid;
/* The write end of R's report pipe, in A and G. */
static int report = -1;

static void link_name(const char *path, char *buf, size_t size)
{
	ssize_t n = readlink(path, buf, size - 1);
	buf[n < 0 ? 0 : n] = 0;
}

/* A map file with its columns' padding taken out. */
static void read_map(const char *path, char *out, size_t size)
{
	char buf[512];
	unsigned a, b, c;
	size_t at = 0;
	out[0] = 0;
	if (wl_read_file(path, buf, sizeof(buf)) <= 0)
		return;
	for (char *line = strtok(buf, "\n"); line && at < size; line = strtok(NULL, "\n"))
		if (sscanf(line, "%u %u %u", &a, &b, &c) == 3)
			at += snprintf(out + at, size - at, "%u %u %u\n", a, b, c);
}

/* The inode of the user namespace that owns namespace `kind` of this task (0 when unknown). */
static ino_t owner_of(const char *kind)
{
	char path[64];
	struct stat st;
	snprintf(path, sizeof(path), "/proc/self/ns/%s", kind);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	int owner = ioctl(fd, NS_GET_USERNS);
	close(fd);
	if (owner < 0)
		return 0;
	int ok = fstat(owner, &st) == 0;
	close(owner);
	return ok ? st.st_ino : 0;
}

/* This task's user, network, IPC, UTS, cgroup and time namespaces: "user:[I] net:[J] ...". */
static void links(char *out, size_t size)
{
	const char *kinds[] = { "user", "net", "ipc", "uts", "cgroup", "time" };
	size_t at = 0;
	out[0] = 0;
	for (int i = 0; i < 6 && at < size; i++) {
		char path[64], name[64];
		snprintf(path, sizeof(path), "/proc/self/ns/%s", kinds[i]);
		link_name(path, name, sizeof(name));
		at += snprintf(out + at, size - at, "%s%s", i ? " " : "", name);
	}
}

/* `who`'s checks of its namespaces, maps, host name, pid and credentials. */
static void check(const char *who, pid_t pid, uid_t uid, uid_t suid, gid_t gid)
{
	char own[64], map[512];
	link_name("/proc/self/ns/user", own, sizeof(own));
	WL_CHECK(own[0] && strcmp(own, host_user_ns) != 0, "%s: in the host's user namespace %s", who, own);
	read_map("/proc/self/uid_map", map, sizeof(map));
	WL_CHECK(strcmp(map, MAP) == 0, "%s: uid_map is \"%s\"", who, map);
	read_map("/proc/self/gid_map", map, sizeof(map));
	WL_CHECK(strcmp(map, MAP) == 0, "%s: gid_map is \"%s\"", who, map);

	struct stat user;
	WL_CHECK(stat("/proc/self/ns/user", &user) == 0, "%s: stat /proc/self/ns/user", who);
	const char *kinds[] = { "net", "ipc", "uts", "cgroup", "time" };
	for (int i = 0; i < 5; i++) {
		ino_t owner = owner_of(kinds[i]);
		WL_CHECK(owner != 0 && owner == user.st_ino,
			 "%s: its %s namespace is owned by user namespace %lu (0: one above its own), not %lu", who,
			 kinds[i], (unsigned long)owner, (unsigned long)user.st_ino);
	}
	char name[64] = "";
	WL_CHECK(gethostname(name, sizeof(name)) == 0 && strcmp(name, HOSTNAME) == 0, "%s: host name \"%s\"", who,
		 name);
	WL_CHECK(getpid() == pid, "%s: pid %d, was %d", who, getpid(), pid);

	uid_t r, e, s;
	gid_t gr, ge, gs;
	WL_CHECK(getresuid(&r, &e, &s) == 0 && r == uid && e == uid && s == suid,
		 "%s: uids %u %u %u, expected %u %u %u", who, r, e, s, uid, uid, suid);
	WL_CHECK(getresgid(&gr, &ge, &gs) == 0 && gr == gid && ge == gid && gs == gid, "%s: gids %u %u %u, expected %u",
		 who, gr, ge, gs, gid);
}

/*
 * A child's end: its checks, then its namespaces as a line into R's report pipe (R compares them
 * with its own: A and G, non-dumpable after their setresuid, do not let R read their /proc links);
 * exit status 0 when every check passed.
 */
static __attribute__((noreturn)) void end_child(const char *who, pid_t pid, uid_t uid, uid_t suid, gid_t gid)
{
	char line[300], mine[256];
	check(who, pid, uid, suid, gid);
	links(mine, sizeof(mine));
	int n = snprintf(line, sizeof(line), "%s %s\n", who, mine);
	if (write(report, line, n) != n)
		_exit(4);
	_exit(wl_failures() == 0 ? 0 : 1);
}

static int waited_status(pid_t child)
{
	int st = -1;
	return waitpid(child, &st, 0) == child ? st : -1;
}

/* G: uid 1500 inside, saved uid A's 1000 (so that A may signal it); waits for SIGTERM from A. */
static __attribute__((noreturn)) void run_g(void)
{
	pid_t me = getpid();
	if (setresuid(1500, 1500, 1000))
		_exit(3);
	check("G", me, 1500, 1000, 1000);
	while (!wl_stop)
		pause();
	end_child("G", me, 1500, 1000, 1000);
}

/* A: uid and gid 1000 inside; forks G, waits for SIGTERM, passes it on. */
static __attribute__((noreturn)) void run_a(int ready)
{
	pid_t me = getpid();
	gid_t groups[] = { 1000 };
	if (setgroups(1, groups) || setresgid(1000, 1000, 1000))
		_exit(3);
	/* G is forked while A may still change its uid. */
	pid_t g = fork();
	if (g < 0)
		_exit(3);
	if (g == 0) {
		close(ready);
		run_g();
	}
	if (setresuid(1000, 1000, 1000))
		_exit(3);
	check("A", me, 1000, 1000, 1000);
	close(ready);
	while (!wl_stop)
		pause();
	kill(g, SIGTERM);
	int st = waited_status(g);
	WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "A: G's checks failed (status 0x%x)", st);
	end_child("A", me, 1000, 1000, 1000);
}

/* K: N's child, in N's user namespace; checks it is so on SIGTERM from N. */
static __attribute__((noreturn)) void run_k(void)
{
	char own[64], parents[64], path[64];
	while (!wl_stop)
		pause();
	link_name("/proc/self/ns/user", own, sizeof(own));
	snprintf(path, sizeof(path), "/proc/%d/ns/user", getppid());
	link_name(path, parents, sizeof(parents));
	_exit(getuid() == 0 && own[0] && strcmp(own, parents) == 0 ? 0 : 1);
}

/* N: a user namespace below R's, mapped by R; forks K in it. */
static __attribute__((noreturn)) void run_n(int go)
{
	char c;
	if (unshare(CLONE_NEWUSER))
		_exit(3);
	if (write(go, "n", 1) != 1 || read(go, &c, 1) != 1)
		_exit(3);
	pid_t k = fork();
	if (k < 0)
		_exit(3);
	if (k == 0) {
		close(go);
		run_k();
	}
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d", k);
	if (write(go, buf, n) != n)
		_exit(3);
	close(go);
	while (!wl_stop)
		pause();
	kill(k, SIGTERM);
	int st = waited_status(k);
	_exit(getuid() == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1);
}

/* F: shares R's fs_struct; waits to be killed. */
static int run_f(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

/* The inode of a task's user namespace, or of that namespace's parent. */
static ino_t user_ns_of(pid_t pid, int parent)
{
	char path[64];
	struct stat st;
	snprintf(path, sizeof(path), "/proc/%d/ns/user", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	int which = parent ? ioctl(fd, NS_GET_PARENT) : dup(fd);
	close(fd);
	if (which < 0)
		return 0;
	int ok = fstat(which, &st) == 0;
	close(which);
	return ok ? st.st_ino : 0;
}

/* R's view of N and K: one user namespace below R's, N's maps as R wrote them. */
static void check_nested(pid_t n, pid_t k)
{
	char path[64], map[512];
	ino_t mine = user_ns_of(getpid(), 0), ns = user_ns_of(n, 0);
	WL_CHECK(ns != 0 && ns != mine, "N's user namespace %lu, R's %lu", (unsigned long)ns, (unsigned long)mine);
	WL_CHECK(user_ns_of(k, 0) == ns, "K's user namespace %lu, N's %lu", (unsigned long)user_ns_of(k, 0),
		 (unsigned long)ns);
	WL_CHECK(user_ns_of(n, 1) == mine, "the parent of N's user namespace is %lu, not R's %lu",
		 (unsigned long)user_ns_of(n, 1), (unsigned long)mine);
	const char *files[] = { "uid_map", "gid_map" };
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "/proc/%d/%s", n, files[i]);
		read_map(path, map, sizeof(map));
		WL_CHECK(strcmp(map, "0 0 1\n") == 0, "N's %s is \"%s\"", files[i], map);
	}
}

/* R's user namespace, mapped by a helper that stays in the host's. */
static void make_user_ns(void)
{
	wl_unshare_user(MAP);
}

/* Forks N, writes its maps from R and learns K's pid. */
static pid_t start_nested(pid_t *k)
{
	int sk[2];
	char c, path[64];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sk))
		wl_die("socketpair");
	pid_t n = fork();
	if (n < 0)
		wl_die("fork N");
	if (n == 0) {
		close(sk[0]);
		run_n(sk[1]);
	}
	close(sk[1]);
	if (read(sk[0], &c, 1) != 1)
		wl_die("N did not unshare");
	const char *files[] = { "uid_map", "gid_map" };
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "/proc/%d/%s", n, files[i]);
		FILE *f = fopen(path, "w");
		if (!f || fputs("0 0 1\n", f) < 0 || fclose(f) != 0)
			wl_die("write %s", path);
	}
	if (write(sk[0], "r", 1) != 1)
		wl_die("write to N");
	char buf[32] = "";
	if (read(sk[0], buf, sizeof(buf) - 1) <= 0)
		wl_die("N did not fork K");
	*k = atoi(buf);
	close(sk[0]);
	return n;
}

/* A's and G's lines name R's namespaces. */
static void check_reports(int from)
{
	char buf[1024], mine[256], want[300];
	size_t at = 0;
	ssize_t n;
	while (at < sizeof(buf) - 1 && (n = read(from, buf + at, sizeof(buf) - 1 - at)) > 0)
		at += n;
	buf[at] = 0;
	links(mine, sizeof(mine));
	const char *who[] = { "G", "A" };
	for (int i = 0; i < 2; i++) {
		snprintf(want, sizeof(want), "%s %s\n", who[i], mine);
		WL_CHECK(strstr(buf, want) != NULL, "%s is not in R's namespaces (%s): it reported \"%s\"", who[i], mine,
			 buf);
	}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int nested = argc > 2 && strcmp(argv[2], "nested") == 0;
	int shares_fs = argc > 2 && strcmp(argv[2], "fs") == 0;
	root_pid = getpid();
	link_name("/proc/self/ns/user", host_user_ns, sizeof(host_user_ns));
	make_user_ns();
	if (unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_NEWTIME))
		wl_die("unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_NEWTIME)");
	int time_ns = open("/proc/self/ns/time_for_children", O_RDONLY | O_CLOEXEC);
	if (time_ns < 0 || setns(time_ns, CLONE_NEWTIME))
		wl_die("entering the time namespace made for its children");
	close(time_ns);
	if (sethostname(HOSTNAME, strlen(HOSTNAME)))
		wl_die("sethostname");

	if (shares_fs) {
		/* F shares R's fs_struct (CLONE_FS), as a thread-like helper would. */
		static char stack[64 * 1024];
		pid_t f = clone(run_f, stack + sizeof(stack), CLONE_FS | SIGCHLD, NULL);
		if (f < 0)
			wl_die("clone(CLONE_FS)");
		wl_ready();
		wl_wait();
		kill(f, SIGKILL);
		waitpid(f, NULL, 0);
		wl_finish();
	}

	if (nested) {
		pid_t k = 0, n = start_nested(&k);
		check("R", root_pid, 0, 0, 0);
		check_nested(n, k);
		wl_ready();
		wl_wait();
		check("R", root_pid, 0, 0, 0);
		check_nested(n, k);
		kill(n, SIGTERM);
		int st = waited_status(n);
		WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "N's checks failed (status 0x%x)", st);
		wl_finish();
	}

	pid_t z = fork();
	if (z < 0)
		wl_die("fork Z");
	if (z == 0)
		_exit(7);
	int ready[2], reports[2];
	if (pipe(ready) || pipe(reports))
		wl_die("pipe");
	report = reports[1];
	pid_t a = fork();
	if (a < 0)
		wl_die("fork A");
	if (a == 0) {
		close(ready[0]);
		run_a(ready[1]);
	}
	close(ready[1]);
	close(reports[1]);
	char c;
	if (read(ready[0], &c, 1) != 0)
		wl_die("A's setup");
	close(ready[0]);
	/* Z has ended once it is a zombie: waitid without reaping it. */
	siginfo_t info;
	if (waitid(P_PID, z, &info, WEXITED | WNOWAIT))
		wl_die("waitid(Z)");

	check("R", root_pid, 0, 0, 0);
	wl_ready();
	wl_wait();
	check("R", root_pid, 0, 0, 0);
	kill(a, SIGTERM);
	int st = waited_status(a);
	WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "A's checks failed (status 0x%x)", st);
	check_reports(reports[0]);
	st = waited_status(z);
	WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7, "Z's status 0x%x, expected exit 7", st);
	wl_finish();
}
