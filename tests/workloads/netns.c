/*
 * netns: a process in a network namespace of its own (it unshares one at start), holding only the
 * loopback device, brought up with a non-default MTU. After restore it must still be outside the
 * host's namespace, see lo alone, up, with that MTU, and move a datagram over 127.0.0.1.
 * With `nested`, it also forks a child that unshares a network namespace of its own (nested in
 * the tree's) and waits; the child is killed at the end.
 *   bin/netns RESULT_FILE [nested]
 */
#include "lib.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define LO_MTU 61440

static int lo_request(unsigned long req, struct ifreq *ifr)
{
	int sk = socket(AF_INET, SOCK_DGRAM, 0);
	if (sk < 0)
		return -1;
	memset(ifr->ifr_name, 0, sizeof(ifr->ifr_name));
	strcpy(ifr->ifr_name, "lo");
	int r = ioctl(sk, req, ifr);
	close(sk);
	return r;
}

static void link_name(const char *path, char *buf, size_t size)
{
	ssize_t n = readlink(path, buf, size - 1);
	buf[n < 0 ? 0 : n] = 0;
}

static void check_namespace(void)
{
	char own[64], host[64];
	link_name("/proc/self/ns/net", own, sizeof(own));
	link_name("/proc/1/ns/net", host, sizeof(host));
	WL_CHECK(strcmp(own, host) != 0, "back in the host's network namespace %s", host);

	struct if_nameindex *ifs = if_nameindex();
	int count = 0;
	for (struct if_nameindex *i = ifs; i && i->if_index; i++, count++)
		WL_CHECK(strcmp(i->if_name, "lo") == 0, "unexpected device %s", i->if_name);
	WL_CHECK(count == 1, "%d devices, expected lo alone", count);
	if_freenameindex(ifs);

	struct ifreq ifr;
	WL_CHECK(lo_request(SIOCGIFFLAGS, &ifr) == 0 && (ifr.ifr_flags & IFF_UP), "lo is not up");
	WL_CHECK(lo_request(SIOCGIFMTU, &ifr) == 0 && ifr.ifr_mtu == LO_MTU, "lo MTU %d, expected %d",
		 ifr.ifr_mtu, LO_MTU);
}

/* One datagram to ourselves over 127.0.0.1: the namespace's loopback works. */
static void check_loopback_traffic(void)
{
	int sk = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(addr);
	char buf[8] = { 0 };
	if (sk < 0 || bind(sk, (struct sockaddr *)&addr, sizeof(addr)) ||
	    getsockname(sk, (struct sockaddr *)&addr, &len) ||
	    sendto(sk, "ping", 5, 0, (struct sockaddr *)&addr, sizeof(addr)) != 5 ||
	    recv(sk, buf, sizeof(buf), MSG_DONTWAIT) != 5 || strcmp(buf, "ping") != 0)
		wl_fail("no datagram over 127.0.0.1");
	if (sk >= 0)
		close(sk);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (unshare(CLONE_NEWNET))
		wl_die("unshare(CLONE_NEWNET)");
	struct ifreq ifr;
	if (lo_request(SIOCGIFFLAGS, &ifr))
		wl_die("SIOCGIFFLAGS");
	ifr.ifr_flags |= IFF_UP;
	if (lo_request(SIOCSIFFLAGS, &ifr))
		wl_die("SIOCSIFFLAGS");
	ifr.ifr_mtu = LO_MTU;
	if (lo_request(SIOCSIFMTU, &ifr))
		wl_die("SIOCSIFMTU");
	check_namespace();
	check_loopback_traffic();
	pid_t nested = 0;
	if (argc > 2 && strcmp(argv[2], "nested") == 0) {
		int ready[2];
		char c;
		if (pipe(ready) || (nested = fork()) < 0)
			wl_die("pipe/fork");
		if (nested == 0) {
			if (unshare(CLONE_NEWNET) || write(ready[1], "x", 1) != 1)
				_exit(1);
			for (;;)
				pause();
		}
		close(ready[1]);
		if (read(ready[0], &c, 1) != 1)
			wl_die("the nested namespace was not made");
		close(ready[0]);
	}
	wl_ready();
	wl_wait();
	check_namespace();
	check_loopback_traffic();
	if (nested > 0) {
		kill(nested, SIGKILL);
		waitpid(nested, NULL, 0);
	}
	wl_finish();
}
