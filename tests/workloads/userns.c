/*
 * userns: a process in a user namespace of its own with uid and gid maps written by a helper in
 * the host's namespace ("0 0 1" and "1000 101000 1000", the same for gids), which then switches to
 * gid 1000 with supplementary groups 1000 and 1001 inside it (101000 and 101001 outside). After
 * restore it must be in a user namespace other than the host's, with the same maps, and see the
 * same credentials from inside.
 *   bin/userns RESULT_FILE [child|init]
 * With `child` it also forks a child that waits inside the namespace (a tree criu-ts refuses).
 * With `init` the started process R is only a launcher: once the namespace has its maps and R
 * its gids, R unshares a PID namespace and forks its init I, which execs this program again
 * (`init-exec FD`, as a container's init is exec'd inside its namespaces), writes I's host pid
 * into RESULT_FILE.pid and exits. I forks K (pid 2), which switches to uid 1000 inside; I is the
 * root to dump. On SIGTERM I checks itself, then has K check its own credentials (K's exit status).
 * With `init-setuid` I itself switches to uid 1000 inside (without exec, so the kernel makes it
 * non-dumpable) before it forks K, and K keeps a pipe it shares with I: after restore K writes a
 * byte into it that I must read (K takes its copy of the pipe from I at restore).
 */
#define _GNU_SOURCE
#include "lib.h"

#include <grp.h>
#include <stdlib.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAP "0 0 1\n1000 101000 1000\n"

static char host_ns[64];
static uid_t own_uid; /* I's uid inside: 1000 with init-setuid */
static int shared_pipe[2] = { -1, -1 };

static void link_name(const char *path, char *buf, size_t size)
{
	ssize_t n = readlink(path, buf, size - 1);
	buf[n < 0 ? 0 : n] = 0;
}

/* A map file with its columns' padding taken out: "0 0 1\n1000 101000 1000\n". */
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

static void check(void)
{
	char own[64], map[512], status[4096];
	link_name("/proc/self/ns/user", own, sizeof(own));
	WL_CHECK(own[0] && strcmp(own, host_ns) != 0, "in the host's user namespace %s", host_ns);
	read_map("/proc/self/uid_map", map, sizeof(map));
	WL_CHECK(strcmp(map, MAP) == 0, "uid_map is \"%s\"", map);
	read_map("/proc/self/gid_map", map, sizeof(map));
	WL_CHECK(strcmp(map, MAP) == 0, "gid_map is \"%s\"", map);

	uid_t r, e, s;
	gid_t gr, ge, gs;
	WL_CHECK(getresuid(&r, &e, &s) == 0 && r == own_uid && e == own_uid && s == own_uid,
		 "uids %u %u %u, expected %u", r, e, s, own_uid);
	WL_CHECK(getresgid(&gr, &ge, &gs) == 0 && gr == 1000 && ge == 1000 && gs == 1000,
		 "gids %u %u %u, expected 1000", gr, ge, gs);
	gid_t groups[8];
	int n = getgroups(8, groups);
	WL_CHECK(n == 2 && groups[0] == 1000 && groups[1] == 1001, "%d groups, first %u", n, n > 0 ? groups[0] : 0);
	WL_CHECK(wl_read_file("/proc/self/status", status, sizeof(status)) > 0 &&
			 strstr(status, "\nGid:\t1000\t1000\t1000\t1000\n") != NULL,
		 "/proc/self/status does not show gid 1000 inside");
}

/* K: uid 1000 inside (101000 outside); on SIGTERM it checks that this is still so. */
static void run_k(void)
{
	if (own_uid == 0 && setresuid(1000, 1000, 1000))
		_exit(3);
	while (!wl_stop)
		pause();
	if (shared_pipe[1] >= 0 && write(shared_pipe[1], "k", 1) != 1)
		_exit(4);
	uid_t r, e, s;
	_exit(getresuid(&r, &e, &s) == 0 && r == 1000 && e == 1000 && s == 1000 && getpid() == 2 ? 0 : 1);
}

/* R forks I in a new PID namespace, I execs itself; R writes I's pid and leaves. Never returns. */
static void run_launcher(char **argv, const char *mode)
{
	int down[2];
	if (pipe(down) || unshare(CLONE_NEWPID))
		wl_die("pipe/unshare(CLONE_NEWPID)");
	pid_t init = fork();
	if (init < 0)
		wl_die("fork");
	if (init == 0) {
		char fd[16];
		close(down[1]);
		snprintf(fd, sizeof(fd), "%d", down[0]);
		execl("/proc/self/exe", argv[0], argv[1], "init-exec", fd, mode, (char *)NULL);
		wl_die("exec");
	}
	char path[512], pid[32];
	close(down[0]);
	snprintf(pid, sizeof(pid), "%d\n", init);
	FILE *f = fopen(wl_path("pid", path, sizeof(path)), "w");
	if (!f || fputs(pid, f) < 0 || fclose(f) != 0)
		wl_die("write %s", path);
	close(down[1]);
	_exit(0);
}

/* I, exec'd: waits until R wrote its pid, forks K, waits, checks. Never returns. */
static void run_init(int down)
{
	char c;
	if (read(down, &c, 1) != 0 || setsid() < 0)
		wl_die("wait for the launcher / setsid");
	close(down);
	if (own_uid != 0 && (pipe(shared_pipe) || setresuid(own_uid, own_uid, own_uid)))
		wl_die("pipe/setresuid in I");
	pid_t k = fork();
	if (k < 0)
		wl_die("fork K");
	if (k == 0)
		run_k();
	if (shared_pipe[1] >= 0)
		close(shared_pipe[1]);
	check();
	WL_CHECK(getpid() == 1 && k == 2, "init is %d and K %d, expected 1 and 2", getpid(), k);
	wl_ready();
	wl_wait();
	check();
	kill(k, SIGTERM);
	if (shared_pipe[0] >= 0) {
		char c = 0;
		WL_CHECK(read(shared_pipe[0], &c, 1) == 1 && c == 'k', "K's byte did not come through the shared pipe");
	}
	int st = -1;
	WL_CHECK(waitpid(k, &st, 0) == k && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		 "K's credentials inside are not uid 1000 (status 0x%x)", st);
	wl_finish();
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (argc > 3 && strcmp(argv[2], "init-exec") == 0) {
		/* I, in the namespaces R made: they are the host's for it no longer. */
		snprintf(host_ns, sizeof(host_ns), "%s", getenv("USERNS_HOST") ? getenv("USERNS_HOST") : "");
		if (argc > 4 && strcmp(argv[4], "init-setuid") == 0)
			own_uid = 1000;
		run_init(atoi(argv[3]));
	}
	link_name("/proc/self/ns/user", host_ns, sizeof(host_ns));
	setenv("USERNS_HOST", host_ns, 1);

	wl_unshare_user(MAP);

	gid_t groups[] = { 1000, 1001 };
	if (setgroups(2, groups) || setresgid(1000, 1000, 1000))
		wl_die("setgroups/setresgid inside");
	if (argc > 2 && strncmp(argv[2], "init", 4) == 0)
		run_launcher(argv, argv[2]);
	check();
	pid_t child = 0;
	if (argc > 2 && strcmp(argv[2], "child") == 0) {
		child = fork();
		if (child < 0)
			wl_die("fork");
		if (child == 0)
			for (;;)
				pause();
	}
	wl_ready();
	wl_wait();
	check();
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	wl_finish();
}
