/*
 * utsns: a process in a UTS namespace of its own (it unshares one at start) with a host name and a
 * domain name of its own. After restore it must still be outside the host's namespace and see both
 * names; the host's names must be untouched.
 *   bin/utsns RESULT_FILE
 */
#include "lib.h"

#include <sched.h>
#include <string.h>
#include <unistd.h>

#define HOSTNAME "criu-ts-uts-host"
#define DOMAINNAME "criu-ts.example"

static void link_name(const char *path, char *buf, size_t size)
{
	ssize_t n = readlink(path, buf, size - 1);
	buf[n < 0 ? 0 : n] = 0;
}

static void check_names(void)
{
	char own[64], host[64], name[256];
	link_name("/proc/self/ns/uts", own, sizeof(own));
	link_name("/proc/1/ns/uts", host, sizeof(host));
	WL_CHECK(own[0] && strcmp(own, host) != 0, "in the host's UTS namespace %s", host);

	WL_CHECK(gethostname(name, sizeof(name)) == 0 && strcmp(name, HOSTNAME) == 0,
		 "host name \"%s\", expected \"%s\"", name, HOSTNAME);
	WL_CHECK(getdomainname(name, sizeof(name)) == 0 && strcmp(name, DOMAINNAME) == 0,
		 "domain name \"%s\", expected \"%s\"", name, DOMAINNAME);
	WL_CHECK(wl_read_file("/proc/sys/kernel/hostname", name, sizeof(name)) > 0 &&
			 strcmp(name, HOSTNAME "\n") == 0,
		 "/proc/sys/kernel/hostname says \"%s\"", name);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (unshare(CLONE_NEWUTS))
		wl_die("unshare(CLONE_NEWUTS)");
	if (sethostname(HOSTNAME, strlen(HOSTNAME)) || setdomainname(DOMAINNAME, strlen(DOMAINNAME)))
		wl_die("sethostname/setdomainname");
	check_names();
	wl_ready();
	wl_wait();
	check_names();
	wl_finish();
}
