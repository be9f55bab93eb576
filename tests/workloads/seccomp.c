/*
 * seccomp: a process under a seccomp filter (mode 2) that allows every syscall. criu-ts refuses to
 * dump it (filters are not dumped yet); the process must run on untouched and report PASS.
 *   bin/seccomp RESULT_FILE
 */
#include "lib.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>

int main(int argc, char **argv)
{
	struct sock_filter allow[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
	struct sock_fprog prog = { .len = 1, .filter = allow };

	wl_init(argc, argv);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		wl_die("seccomp filter");
	wl_ready();
	wl_wait();
	WL_CHECK(prctl(PR_GET_SECCOMP) == 2, "seccomp mode changed");
	wl_finish();
}
