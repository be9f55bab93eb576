/*
 * taskstate: per-task settings that live in the kernel, not in memory:
 * rlimits, umask, cwd, personality, comm, nice, robust list, tid address,
 * no_new_privs, credentials (groups, real/effective/saved ids, capability
 * sets, bounding set, keepcaps), parent-death signal and dumpable flag.
 * /proc/self/exe must still name this binary.
 *
 * The ids are dropped last-but-two: changing them clears the parent-death
 * signal and the dumpable flag, which are set afterwards. CAP_DAC_OVERRIDE is
 * kept so that the result file can still be written anywhere.
 */
#include "lib.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define UID_R 1000
#define UID_E 1001
#define UID_S 1002
#define GID_R 2000
#define GID_E 2001
#define GID_S 2002
#define NICE 7
#define PERSONA (PER_LINUX | ADDR_NO_RANDOMIZE)
#define COMM "wl-taskstate"
#define UMASK 027
#define PDEATHSIG SIGWINCH /* ignored by default: harmless if the parent goes away */

static const gid_t groups[] = { 3000, 3001, 3002 };
/* soft and hard limits wanted; each is capped by the hard limit found at start (raising needs a capability) */
static struct rlimit lim_nofile = { 200, 4096 }, lim_core = { 1 << 20, 2 << 20 }, lim_stack = { 4 << 20, 64 << 20 };
static const uint64_t caps_kept = (1ull << CAP_DAC_OVERRIDE) | (1ull << CAP_KILL) | (1ull << CAP_NET_BIND_SERVICE);
static const uint64_t caps_inheritable = 1ull << CAP_NET_BIND_SERVICE;
static const int caps_dropped_from_bounding[] = { CAP_SYS_MODULE, CAP_MKNOD };

static struct robust_list_head robust = { .list = { &robust.list }, .futex_offset = -24 };
static char cwd_path[4096], exe_path[4096];
static uint64_t bounding_before;
static unsigned long tid_address;

static void capget_all(uint64_t *eff, uint64_t *prm, uint64_t *inh)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &h, d))
		wl_fail("capget: %s", strerror(errno));
	*eff = d[0].effective | (uint64_t)d[1].effective << 32;
	*prm = d[0].permitted | (uint64_t)d[1].permitted << 32;
	*inh = d[0].inheritable | (uint64_t)d[1].inheritable << 32;
}

static void capset_all(uint64_t eff, uint64_t prm, uint64_t inh)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2] = {
		{ (uint32_t)eff, (uint32_t)prm, (uint32_t)inh },
		{ (uint32_t)(eff >> 32), (uint32_t)(prm >> 32), (uint32_t)(inh >> 32) },
	};

	if (syscall(SYS_capset, &h, d))
		wl_die("capset");
}

static void check_rlimit(const char *name, int which, const struct rlimit *want)
{
	struct rlimit got;

	getrlimit(which, &got);
	WL_CHECK(got.rlim_cur == want->rlim_cur && got.rlim_max == want->rlim_max,
		 "%s: %llu/%llu, expected %llu/%llu", name, (unsigned long long)got.rlim_cur,
		 (unsigned long long)got.rlim_max, (unsigned long long)want->rlim_cur,
		 (unsigned long long)want->rlim_max);
}

/* The text after "Key:\t" in /proc/self/status, up to the end of the line. */
static const char *status_field(const char *key, char *out, size_t size)
{
	char status[8192], pattern[64], *at, *end;

	out[0] = '\0';
	if (wl_read_file("/proc/self/status", status, sizeof(status)) < 0)
		return out;
	snprintf(pattern, sizeof(pattern), "\n%s:\t", key);
	at = strstr(status, pattern);
	if (!at)
		return out;
	at += strlen(pattern);
	end = strchr(at, '\n');
	snprintf(out, size, "%.*s", end ? (int)(end - at) : (int)strlen(at), at);
	return out;
}

static void lower_rlimit(int which, struct rlimit *want)
{
	struct rlimit now;

	getrlimit(which, &now);
	if (want->rlim_max > now.rlim_max)
		want->rlim_max = now.rlim_max;
	if (want->rlim_cur > want->rlim_max)
		want->rlim_cur = want->rlim_max;
	if (setrlimit(which, want))
		wl_die("setrlimit %d", which);
}

static uint64_t bounding_set(void)
{
	uint64_t set = 0;

	for (int cap = 0; cap < 64; cap++)
		if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1)
			set |= 1ull << cap;
	return set;
}

static void setup(void)
{
	char dir[4096];
	ssize_t n;

	n = readlink("/proc/self/exe", exe_path, sizeof(exe_path) - 1);
	if (n <= 0)
		wl_die("readlink /proc/self/exe");
	exe_path[n] = '\0';
	if (prctl(PR_GET_TID_ADDRESS, &tid_address, 0, 0, 0))
		wl_die("PR_GET_TID_ADDRESS");

	lower_rlimit(RLIMIT_NOFILE, &lim_nofile);
	lower_rlimit(RLIMIT_CORE, &lim_core);
	lower_rlimit(RLIMIT_STACK, &lim_stack);
	umask(UMASK);

	wl_path("cwd", dir, sizeof(dir));
	if (mkdir(dir, 0755) && errno != EEXIST)
		wl_die("mkdir %s", dir);
	if (chdir(dir) || getcwd(cwd_path, sizeof(cwd_path)) == NULL)
		wl_die("chdir %s", dir);

	if (personality(PERSONA) < 0)
		wl_die("personality");
	if (prctl(PR_SET_NAME, COMM, 0, 0, 0))
		wl_die("PR_SET_NAME");
	if (setpriority(PRIO_PROCESS, 0, NICE))
		wl_die("setpriority");
	if (syscall(SYS_set_robust_list, &robust, sizeof(robust)))
		wl_die("set_robust_list");

	for (size_t i = 0; i < sizeof(caps_dropped_from_bounding) / sizeof(caps_dropped_from_bounding[0]); i++)
		if (prctl(PR_CAPBSET_DROP, caps_dropped_from_bounding[i], 0, 0, 0))
			wl_die("PR_CAPBSET_DROP");
	bounding_before = bounding_set();
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		wl_die("prctl keepcaps/no_new_privs");

	/* credentials: groups first, then gids, then uids (which ends being root) */
	if (setgroups(sizeof(groups) / sizeof(groups[0]), groups))
		wl_die("setgroups");
	if (setresgid(GID_R, GID_E, GID_S))
		wl_die("setresgid");
	if (setresuid(UID_R, UID_E, UID_S))
		wl_die("setresuid");
	capset_all(caps_kept, caps_kept, caps_inheritable);

	/* cleared by the id change above, so set now */
	if (prctl(PR_SET_PDEATHSIG, PDEATHSIG, 0, 0, 0) || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) ||
	    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))
		wl_die("prctl pdeathsig/dumpable");
}

static void verify(void)
{
	char buf[4096], want[256];
	uid_t r, e, s;
	gid_t gr, ge, gs, got_groups[16];
	uint64_t eff, prm, inh;
	int n, v;
	unsigned long tid_now = 0;
	struct robust_list_head *head = NULL;
	size_t len = 0;

	check_rlimit("RLIMIT_NOFILE", RLIMIT_NOFILE, &lim_nofile);
	check_rlimit("RLIMIT_CORE", RLIMIT_CORE, &lim_core);
	check_rlimit("RLIMIT_STACK", RLIMIT_STACK, &lim_stack);

	status_field("Umask", buf, sizeof(buf));
	snprintf(want, sizeof(want), "%04o", UMASK);
	WL_CHECK(strcmp(buf, want) == 0, "umask %s, expected %s", buf, want);

	WL_CHECK(getcwd(buf, sizeof(buf)) && strcmp(buf, cwd_path) == 0, "cwd is '%s', expected '%s'", buf, cwd_path);

	v = personality(0xffffffff);
	WL_CHECK(v == PERSONA, "personality %#x, expected %#x", v, PERSONA);

	memset(buf, 0, 17);
	prctl(PR_GET_NAME, buf, 0, 0, 0);
	WL_CHECK(strcmp(buf, COMM) == 0, "comm '%s', expected '%s'", buf, COMM);
	wl_read_file("/proc/self/comm", buf, sizeof(buf));
	WL_CHECK(strcmp(buf, COMM "\n") == 0, "/proc/self/comm '%s'", buf);

	errno = 0;
	v = getpriority(PRIO_PROCESS, 0);
	WL_CHECK(v == NICE && errno == 0, "nice %d, expected %d", v, NICE);

	WL_CHECK(syscall(SYS_get_robust_list, 0, &head, &len) == 0 && head == &robust && len == sizeof(robust),
		 "robust list %p (%zu bytes), expected %p", (void *)head, len, (void *)&robust);
	WL_CHECK(robust.list.next == &robust.list && robust.futex_offset == -24, "robust list head changed");
	prctl(PR_GET_TID_ADDRESS, &tid_now, 0, 0, 0);
	WL_CHECK(tid_now == tid_address, "clear_child_tid %#lx, expected %#lx", tid_now, tid_address);

	v = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
	WL_CHECK(v == 1, "no_new_privs %d", v);
	v = prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0);
	WL_CHECK(v == 1, "keepcaps %d", v);
	v = prctl(PR_GET_PDEATHSIG, &n, 0, 0, 0);
	WL_CHECK(v == 0 && n == PDEATHSIG, "parent-death signal %d, expected %d", n, PDEATHSIG);
	v = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	WL_CHECK(v == 1, "dumpable %d, expected 1", v);

	getresuid(&r, &e, &s);
	WL_CHECK(r == UID_R && e == UID_E && s == UID_S, "uids %u/%u/%u, expected %u/%u/%u", r, e, s, UID_R, UID_E,
		 UID_S);
	getresgid(&gr, &ge, &gs);
	WL_CHECK(gr == GID_R && ge == GID_E && gs == GID_S, "gids %u/%u/%u, expected %u/%u/%u", gr, ge, gs, GID_R,
		 GID_E, GID_S);
	snprintf(want, sizeof(want), "%u\t%u\t%u\t%u", UID_R, UID_E, UID_S, UID_E);
	WL_CHECK(strcmp(status_field("Uid", buf, sizeof(buf)), want) == 0, "Uid: %s, expected %s", buf, want);
	snprintf(want, sizeof(want), "%u\t%u\t%u\t%u", GID_R, GID_E, GID_S, GID_E);
	WL_CHECK(strcmp(status_field("Gid", buf, sizeof(buf)), want) == 0, "Gid: %s, expected %s", buf, want);
	n = getgroups(16, got_groups);
	WL_CHECK(n == 3 && got_groups[0] == groups[0] && got_groups[1] == groups[1] && got_groups[2] == groups[2],
		 "%d supplementary groups, first %u", n, n > 0 ? got_groups[0] : 0);

	capget_all(&eff, &prm, &inh);
	WL_CHECK(eff == caps_kept && prm == caps_kept && inh == caps_inheritable,
		 "capabilities eff %#llx prm %#llx inh %#llx, expected %#llx %#llx %#llx", (unsigned long long)eff,
		 (unsigned long long)prm, (unsigned long long)inh, (unsigned long long)caps_kept,
		 (unsigned long long)caps_kept, (unsigned long long)caps_inheritable);
	{
		uint64_t bnd = bounding_set();

		WL_CHECK(bnd == bounding_before, "bounding set %#llx, expected %#llx", (unsigned long long)bnd,
			 (unsigned long long)bounding_before);
		for (size_t i = 0; i < sizeof(caps_dropped_from_bounding) / sizeof(caps_dropped_from_bounding[0]); i++)
			WL_CHECK(!(bnd & 1ull << caps_dropped_from_bounding[i]), "capability %d is back in the bounding set",
				 caps_dropped_from_bounding[i]);
	}

	n = (int)readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	WL_CHECK(strcmp(buf, exe_path) == 0, "/proc/self/exe is '%s', expected '%s'", buf, exe_path);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	setup();
	wl_ready();
	wl_wait();
	verify();
	wl_finish();
}
