/*
 * cgroup: a process and its child in cgroups of their own, with properties set, optionally in a
 * cgroup namespace of their own. NAME is a name unique to the test, which removes the cgroups.
 *   bin/cgroup RESULT_FILE NAME [ns] [nested] [userns] [child-userns]
 * Made: unified (v2) NAME with cgroup.max.descendants 7 (the process), NAME/inner with
 * cgroup.max.depth 2 and NAME/other with cgroup.max.depth 3 (the child); v1 pids NAME (pids.max 64)
 * and cpu NAME (cpu.shares 512), both processes in them. With `ns` the process unshares a cgroup
 * namespace at NAME, then enters NAME/inner, so that it sees itself in /inner (v2) and / (v1).
 * With `nested` the child enters NAME/other, unshares a cgroup namespace of its own there and goes
 * on into NAME/other/deep: it sees itself in /deep (v2) and / (v1), in a cgroup namespace other
 * than its parent's, and checks so itself on SIGTERM (its exit status).
 * With `userns` the process, once in its cgroups, unshares a user namespace (a helper in the
 * host's maps "0 0 1" for uids and gids) before anything else: the child is forked in it, and every
 * cgroup namespace is made inside it, so that it owns them (NS_GET_USERNS), which each task checks
 * of its own (the process of its child's too), as it checks that it is not in the host's user
 * namespace. As `unshare -U` and a fork leave a rootless-style tree: several tasks in a user
 * namespace of their own, in the host's PID namespace. With `child-userns` (and `nested`) the child
 * first unshares a user namespace below the process's (which maps it "0 0 1"): its cgroup namespace
 * is then owned by that one.
 * Checked, as the process sees it: its /proc/self/cgroup, its child's cgroup, every property, and
 * whether it is in a cgroup namespace other than the host's.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define V2 "/sys/fs/cgroup/unified"
#define PIDS "/sys/fs/cgroup/pids"
#define CPU "/sys/fs/cgroup/cpu"

static const char *name;
static int in_ns, nested, in_userns, child_userns;
static pid_t child;
/* The cgroup namespace the workload started in (criu's, the host's). */
static char host_ns[64];
/* The host's user namespace (criu's). */
static char host_user_ns[64];

static void put(const char *dir, const char *sub, const char *file, const char *value)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s%s/%s", dir, name, sub, file);
	FILE *f = fopen(path, "w");
	if (!f || fputs(value, f) < 0 || fclose(f) != 0)
		wl_die("write %s to %s", value, path);
}

static void make(const char *dir, const char *sub)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s%s", dir, name, sub);
	if (mkdir(path, 0755) && errno != EEXIST)
		wl_die("mkdir %s", path);
}

static void enter(const char *dir, const char *sub)
{
	char pid[32];
	snprintf(pid, sizeof(pid), "%d", getpid());
	put(dir, sub, "cgroup.procs", pid);
}

/* The path of hierarchy `hier` ("pids", "cpu", "" for v2) in a /proc/PID/cgroup file. */
static int path_in(const char *file, const char *hier, char *out, size_t size)
{
	char buf[4096], want[64];
	if (wl_read_file(file, buf, sizeof(buf)) <= 0)
		return -1;
	snprintf(want, sizeof(want), ":%s:", hier);
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		char *at = strstr(line, want);
		if (at && at == strchr(line, ':')) {
			snprintf(out, size, "%s", at + strlen(want));
			return 0;
		}
	}
	return -1;
}

static void check_path(const char *file, const char *hier, const char *expected)
{
	char path[512] = "";
	WL_CHECK(path_in(file, hier, path, sizeof(path)) == 0 && strcmp(path, expected) == 0,
		 "%s: %s cgroup \"%s\", expected \"%s\"", file, hier[0] ? hier : "v2", path, expected);
}

static void check_prop(const char *dir, const char *sub, const char *file, const char *expected)
{
	char path[512], value[256] = "";
	snprintf(path, sizeof(path), "%s/%s%s/%s", dir, name, sub, file);
	WL_CHECK(wl_read_file(path, value, sizeof(value)) > 0 && strcmp(value, expected) == 0,
		 "%s is \"%s\", expected \"%s\"", path, value, expected);
}

/* The inode of a user namespace: of task `pid`'s own (kind "user") or the owner of its `kind` one. */
static ino_t user_ns_ino(pid_t pid, const char *kind)
{
	char path[64];
	struct stat st;
	snprintf(path, sizeof(path), "/proc/%d/ns/%s", pid, kind);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	int ns = strcmp(kind, "user") == 0 ? dup(fd) : ioctl(fd, NS_GET_USERNS);
	close(fd);
	if (ns < 0)
		return 0;
	int ok = fstat(ns, &st) == 0;
	close(ns);
	return ok ? st.st_ino : 0;
}

/*
 * With `userns` or `child-userns`: task `pid`'s own user namespace owns its cgroup namespace, and it
 * is not the host's when `own_userns` says so.
 */
static void check_owner(const char *who, pid_t pid, int own_userns)
{
	char path[64], own[64] = "";
	if (!in_userns && !child_userns)
		return;
	snprintf(path, sizeof(path), "/proc/%d/ns/user", pid);
	ssize_t n = readlink(path, own, sizeof(own) - 1);
	own[n > 0 ? n : 0] = 0;
	WL_CHECK(own[0] && (strcmp(own, host_user_ns) != 0) == own_userns, "%s: in user namespace %s, the host's %s",
		 who, own, host_user_ns);
	ino_t user = user_ns_ino(pid, "user"), owner = user_ns_ino(pid, "cgroup");
	WL_CHECK(user != 0 && owner == user,
		 "%s: its cgroup namespace is owned by user namespace %lu (0: one above its own), not its own %lu", who,
		 (unsigned long)owner, (unsigned long)user);
}

static void check(void)
{
	char top[256], own_v2[256], other[256], file[64];
	if (in_ns) {
		snprintf(top, sizeof(top), "/");
		snprintf(own_v2, sizeof(own_v2), "/inner");
		snprintf(other, sizeof(other), "/other");
	} else {
		snprintf(top, sizeof(top), "/%s", name);
		snprintf(own_v2, sizeof(own_v2), "/%s", name);
		snprintf(other, sizeof(other), "/%s/other", name);
	}
	check_path("/proc/self/cgroup", "pids", top);
	check_path("/proc/self/cgroup", "cpu", top);
	check_path("/proc/self/cgroup", "", own_v2);
	snprintf(file, sizeof(file), "/proc/%d/cgroup", child);
	if (nested) {
		char deep[300];
		snprintf(deep, sizeof(deep), "%s/deep", other);
		check_path(file, "", deep);
	} else {
		check_path(file, "", other);
	}
	check_path(file, "pids", top);

	/* The saved properties are those of the tasks' cgroups and what lies below them. */
	if (in_ns)
		check_prop(V2, "/inner", "cgroup.max.depth", "2\n");
	else
		check_prop(V2, "", "cgroup.max.descendants", "7\n");
	check_prop(V2, "/other", "cgroup.max.depth", "3\n");
	check_prop(PIDS, "", "pids.max", "64\n");
	check_prop(CPU, "", "cpu.shares", "512\n");

	char own[64] = "";
	ssize_t n = readlink("/proc/self/ns/cgroup", own, sizeof(own) - 1);
	if (n > 0)
		own[n] = 0;
	WL_CHECK(own[0] && host_ns[0] && (strcmp(own, host_ns) != 0) == in_ns, "cgroup namespace %s, the host's %s%s",
		 own, host_ns, in_ns ? " (expected one of its own)" : " (expected the host's)");
	if (nested) {
		char childs[64] = "";
		snprintf(file, sizeof(file), "/proc/%d/ns/cgroup", child);
		n = readlink(file, childs, sizeof(childs) - 1);
		childs[n > 0 ? n : 0] = 0;
		WL_CHECK(childs[0] && strcmp(childs, own) != 0, "the child's cgroup namespace %s is the process's", childs);
	}
	check_owner("process", getpid(), in_userns);
	check_owner("child", child, in_userns || child_userns);
}

/* The child with `nested`: its view from inside its own cgroup namespace; exit status 0 when right. */
static __attribute__((noreturn)) void check_nested_child(void)
{
	char own[64] = "", parents[64] = "", path[64];
	check_path("/proc/self/cgroup", "", "/deep");
	check_path("/proc/self/cgroup", "pids", "/");
	check_path("/proc/self/cgroup", "cpu", "/");
	ssize_t n = readlink("/proc/self/ns/cgroup", own, sizeof(own) - 1);
	own[n > 0 ? n : 0] = 0;
	snprintf(path, sizeof(path), "/proc/%d/ns/cgroup", getppid());
	n = readlink(path, parents, sizeof(parents) - 1);
	parents[n > 0 ? n : 0] = 0;
	/* Below a user namespace of its own it may not read its parent's links: the parent compares. */
	if (!child_userns)
		WL_CHECK(own[0] && parents[0] && strcmp(own, parents) != 0, "child: cgroup namespace %s, its parent's %s",
			 own, parents);
	check_owner("child (its own check)", getpid(), in_userns || child_userns);
	_exit(wl_failures() == 0 ? 0 : 1);
}

/* A user namespace of the process's own, mapped "0 0 1" by a helper that stays in the host's. */
static void make_user_ns(void)
{
	wl_unshare_user("0 0 1\n");
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (argc < 3)
		wl_die("usage: cgroup RESULT_FILE NAME [ns] [nested] [userns] [child-userns]");
	name = argv[2];
	for (int i = 3; i < argc; i++) {
		in_ns |= strcmp(argv[i], "ns") == 0;
		nested |= strcmp(argv[i], "nested") == 0;
		in_userns |= strcmp(argv[i], "userns") == 0;
		child_userns |= strcmp(argv[i], "child-userns") == 0;
	}
	if (child_userns && !nested)
		wl_die("child-userns goes with nested");
	ssize_t len = readlink("/proc/self/ns/user", host_user_ns, sizeof(host_user_ns) - 1);
	host_user_ns[len > 0 ? len : 0] = 0;
	len = readlink("/proc/self/ns/cgroup", host_ns, sizeof(host_ns) - 1);
	if (len <= 0)
		wl_die("readlink /proc/self/ns/cgroup");
	host_ns[len] = 0;

	make(V2, "");
	make(V2, "/inner");
	make(V2, "/other");
	if (nested)
		make(V2, "/other/deep");
	make(PIDS, "");
	make(CPU, "");
	put(V2, "", "cgroup.max.descendants", "7");
	put(V2, "/inner", "cgroup.max.depth", "2");
	put(V2, "/other", "cgroup.max.depth", "3");
	put(PIDS, "", "pids.max", "64");
	put(CPU, "", "cpu.shares", "512");
	enter(PIDS, "");
	enter(CPU, "");
	enter(V2, "");
	if (in_userns)
		make_user_ns();
	if (in_ns) {
		if (unshare(CLONE_NEWCGROUP))
			wl_die("unshare(CLONE_NEWCGROUP)");
		enter(V2, "/inner");
	}

	int ready[2], maps[2], mapped[2];
	if (pipe(ready) || pipe(maps) || pipe(mapped))
		wl_die("pipe");
	child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0) {
		close(ready[0]);
		if (child_userns) {
			/* A user namespace of its own below its parent's, which maps it. */
			char c = 'u';
			if (unshare(CLONE_NEWUSER) || write(maps[1], &c, 1) != 1 || read(mapped[0], &c, 1) != 1)
				_exit(2);
		}
		enter(V2, "/other");
		if (nested) {
			if (unshare(CLONE_NEWCGROUP))
				_exit(2);
			/* Seen from its own namespace now: NAME/other is its root. */
			char pid[32], path[512];
			snprintf(pid, sizeof(pid), "%d", getpid());
			snprintf(path, sizeof(path), "%s/%s/other/deep/cgroup.procs", V2, name);
			FILE *f = fopen(path, "w");
			if (!f || fputs(pid, f) < 0 || fclose(f) != 0)
				_exit(2);
		}
		close(ready[1]);
		while (!wl_stop || !nested)
			pause();
		check_nested_child();
	}
	close(ready[1]);
	char c;
	if (child_userns) {
		char path[64];
		if (read(maps[0], &c, 1) != 1)
			wl_die("the child did not unshare its user namespace");
		const char *files[] = { "uid_map", "gid_map" };
		for (int i = 0; i < 2; i++) {
			snprintf(path, sizeof(path), "/proc/%d/%s", child, files[i]);
			FILE *f = fopen(path, "w");
			if (!f || fputs("0 0 1\n", f) < 0 || fclose(f) != 0)
				wl_die("write %s", path);
		}
		if (write(mapped[1], "m", 1) != 1)
			wl_die("write to the child");
	}
	close(maps[0]);
	close(maps[1]);
	close(mapped[0]);
	close(mapped[1]);
	if (read(ready[0], &c, 1) != 0)
		wl_die("child setup");
	close(ready[0]);

	check();
	wl_ready();
	wl_wait();
	check();
	kill(child, nested ? SIGTERM : SIGKILL);
	int st = -1;
	waitpid(child, &st, 0);
	if (nested)
		WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's checks failed (status 0x%x)", st);
	wl_finish();
}
