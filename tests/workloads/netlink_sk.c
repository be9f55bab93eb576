/*
 * netlink_sk: netlink sockets as programs hold them: a route socket bound (the kernel's port id)
 * and joined to the link group, non-blocking; a generic socket never bound. After the wait both
 * must still be netlink sockets of their protocols, the route socket bound to its groups with a
 * port id, and a link dump asked on each must be answered.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int open_netlink(int protocol, int groups)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = groups };
	int fd = socket(AF_NETLINK, SOCK_RAW, protocol);

	if (fd < 0)
		wl_die("socket(AF_NETLINK, %d)", protocol);
	if (groups && bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
		wl_die("bind");
	return fd;
}

/* Asks for a link dump and waits for the first answer; 0 when it came. */
static int ask_links(int fd)
{
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = { .h = { .nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1 },
		  .i = { .ifi_family = AF_UNSPEC } };
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char buf[16384];

	if (send(fd, &req, sizeof(req), 0) != sizeof(req))
		return -1;
	if (poll(&pfd, 1, 5000) != 1)
		return -1;
	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		; /* drain the whole dump: nothing may stay queued */
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_nl sa;
	socklen_t len = sizeof(sa);
	int route, generic, protocol;

	wl_init(argc, argv);
	route = open_netlink(NETLINK_ROUTE, RTMGRP_LINK);
	fcntl(route, F_SETFL, O_NONBLOCK);
	generic = open_netlink(NETLINK_GENERIC, 0);
	wl_ready();
	wl_wait();

	len = sizeof(protocol);
	WL_CHECK(getsockopt(route, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 && protocol == NETLINK_ROUTE,
		 "the route socket is not NETLINK_ROUTE");
	len = sizeof(protocol);
	WL_CHECK(getsockopt(generic, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 && protocol == NETLINK_GENERIC,
		 "the generic socket is not NETLINK_GENERIC");
	len = sizeof(sa);
	WL_CHECK(getsockname(route, (struct sockaddr *)&sa, &len) == 0 && sa.nl_pid != 0 && sa.nl_groups == RTMGRP_LINK,
		 "the route socket lost its port id or groups (port %u groups 0x%x)", sa.nl_pid, sa.nl_groups);
	WL_CHECK(fcntl(route, F_GETFL) & O_NONBLOCK, "the route socket lost O_NONBLOCK");
	WL_CHECK(ask_links(route) == 0, "no answer to a link dump on the route socket");
	wl_finish();
}
