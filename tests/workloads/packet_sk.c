/*
 * packet_sk: AF_PACKET sockets as a capture program holds them.
 *   bin/packet_sk RESULT_FILE [MODE]
 *
 * Default: a raw socket for every protocol (ETH_P_ALL) bound to lo with aux data, the original
 * device, loss mode, a timestamp source and a copy threshold, joined to lo's multicast list with
 * one address; a datagram socket for IPv4 in a fanout group of its own (hash mode, id from the
 * pid), non-blocking; a raw socket never bound (protocol 0) with virtio-net headers, TPACKET_V2, a
 * reserve and a receive ring (set up, not mapped). After
 * the wait each must have its options back (getsockopt, getsockname), and the socket bound to lo
 * must see a UDP datagram this program sends to itself over lo.
 *
 * "spkt" adds an obsolete SOCK_PACKET socket bound to lo by name, which must still be bound there.
 * "mapped" maps the receive ring into memory, which a dump must refuse.
 */
#include "lib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static const unsigned char mc_addr[ETH_ALEN] = { 0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb };

static int lo_index;
static int raw, dgram, unbound, spkt = -1;
static int fanout_id;

static void set_int(int fd, int name, int value, const char *what)
{
	if (setsockopt(fd, SOL_PACKET, name, &value, sizeof(value)))
		wl_die("setsockopt(%s)", what);
}

static int get_int(int fd, int name)
{
	int value = -1;
	socklen_t len = sizeof(value);

	if (getsockopt(fd, SOL_PACKET, name, &value, &len))
		return -1;
	return value;
}

static void setup_raw(void)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };
	struct packet_mreq mreq = { .mr_type = PACKET_MR_MULTICAST, .mr_alen = ETH_ALEN };

	raw = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (raw < 0)
		wl_die("socket(AF_PACKET, SOCK_RAW)");
	sll.sll_ifindex = lo_index;
	if (bind(raw, (struct sockaddr *)&sll, sizeof(sll)))
		wl_die("bind to lo");
	set_int(raw, PACKET_AUXDATA, 1, "PACKET_AUXDATA");
	set_int(raw, PACKET_ORIGDEV, 1, "PACKET_ORIGDEV");
	set_int(raw, PACKET_LOSS, 1, "PACKET_LOSS");
	set_int(raw, PACKET_TIMESTAMP, 0x10, "PACKET_TIMESTAMP"); /* SOF_TIMESTAMPING_SOFTWARE */
	set_int(raw, PACKET_COPY_THRESH, 128, "PACKET_COPY_THRESH");
	mreq.mr_ifindex = lo_index;
	memcpy(mreq.mr_address, mc_addr, ETH_ALEN);
	if (setsockopt(raw, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq, sizeof(mreq)))
		wl_die("PACKET_ADD_MEMBERSHIP");
}

/* A socket never bound (protocol 0) with virtio-net headers and a receive ring. */
static void setup_unbound(int mapped)
{
	struct tpacket_req req = { .tp_block_size = 4096, .tp_block_nr = 2, .tp_frame_size = 2048, .tp_frame_nr = 4 };

	unbound = socket(AF_PACKET, SOCK_RAW, 0);
	if (unbound < 0)
		wl_die("socket(AF_PACKET, SOCK_RAW, 0)");
	set_int(unbound, PACKET_VNET_HDR, 1, "PACKET_VNET_HDR");
	set_int(unbound, PACKET_VERSION, TPACKET_V2, "PACKET_VERSION");
	set_int(unbound, PACKET_RESERVE, 64, "PACKET_RESERVE");
	if (setsockopt(unbound, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)))
		wl_die("PACKET_RX_RING");
	if (mapped && mmap(NULL, req.tp_block_size * req.tp_block_nr, PROT_READ | PROT_WRITE, MAP_SHARED, unbound, 0) == MAP_FAILED)
		wl_die("mmap of the receive ring");
}

static void setup_dgram(void)
{
	dgram = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK, htons(ETH_P_IP));
	if (dgram < 0)
		wl_die("socket(AF_PACKET, SOCK_DGRAM)");
	fanout_id = getpid() & 0xffff;
	set_int(dgram, PACKET_FANOUT, fanout_id | (PACKET_FANOUT_HASH << 16), "PACKET_FANOUT");
}

static void check_raw(void)
{
	struct sockaddr_ll sll;
	socklen_t len = sizeof(sll);

	WL_CHECK(getsockname(raw, (struct sockaddr *)&sll, &len) == 0 && sll.sll_ifindex == lo_index &&
			 sll.sll_protocol == htons(ETH_P_ALL),
		 "the raw socket is not bound to lo for ETH_P_ALL (ifindex %d protocol 0x%x)", sll.sll_ifindex,
		 ntohs(sll.sll_protocol));
	WL_CHECK(get_int(raw, PACKET_AUXDATA) == 1, "PACKET_AUXDATA is off");
	WL_CHECK(get_int(raw, PACKET_ORIGDEV) == 1, "PACKET_ORIGDEV is off");
	WL_CHECK(get_int(raw, PACKET_LOSS) == 1, "PACKET_LOSS is off");
	WL_CHECK(get_int(raw, PACKET_TIMESTAMP) == 0x10, "PACKET_TIMESTAMP is 0x%x", get_int(raw, PACKET_TIMESTAMP));
}

static void check_unbound(void)
{
	struct tpacket_req req = { .tp_block_size = 4096, .tp_block_nr = 2, .tp_frame_size = 2048, .tp_frame_nr = 4 };
	struct sockaddr_ll sll;
	socklen_t len = sizeof(sll);

	WL_CHECK(getsockname(unbound, (struct sockaddr *)&sll, &len) == 0 && sll.sll_protocol == 0 &&
			 sll.sll_ifindex == 0,
		 "the unbound socket has protocol 0x%x ifindex %d", ntohs(sll.sll_protocol), sll.sll_ifindex);
	WL_CHECK(get_int(unbound, PACKET_VNET_HDR) == 1, "PACKET_VNET_HDR is off");
	WL_CHECK(get_int(unbound, PACKET_VERSION) == TPACKET_V2, "PACKET_VERSION is %d",
		 get_int(unbound, PACKET_VERSION));
	WL_CHECK(get_int(unbound, PACKET_RESERVE) == 64, "PACKET_RESERVE is %d", get_int(unbound, PACKET_RESERVE));
	/* A ring that is set cannot be set again: the kernel says EBUSY. */
	WL_CHECK(setsockopt(unbound, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) == -1 && errno == EBUSY,
		 "the receive ring is gone (setting it again gave %s)", strerror(errno));
}

static void check_dgram(void)
{
	struct sockaddr_ll sll;
	socklen_t len = sizeof(sll);
	int type = -1;

	len = sizeof(type);
	WL_CHECK(getsockopt(dgram, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_DGRAM,
		 "the datagram socket is of type %d", type);
	len = sizeof(sll);
	WL_CHECK(getsockname(dgram, (struct sockaddr *)&sll, &len) == 0 && sll.sll_protocol == htons(ETH_P_IP) &&
			 sll.sll_ifindex == 0,
		 "the datagram socket is not for ETH_P_IP on every device (protocol 0x%x ifindex %d)",
		 ntohs(sll.sll_protocol), sll.sll_ifindex);
	WL_CHECK(get_int(dgram, PACKET_FANOUT) == (fanout_id | (PACKET_FANOUT_HASH << 16)),
		 "PACKET_FANOUT is 0x%x, expected 0x%x", get_int(dgram, PACKET_FANOUT), fanout_id);
	WL_CHECK(fcntl(dgram, F_GETFL) & O_NONBLOCK, "the datagram socket lost O_NONBLOCK");
}

/* Sends a UDP datagram over lo and waits until the raw socket sees its payload. */
static void check_capture(void)
{
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in self;
	socklen_t len = sizeof(self);
	char marker[64], buf[4096];
	int udp = socket(AF_INET, SOCK_DGRAM, 0);
	int64_t end = wl_now_ns() + 5000000000LL;
	int seen = 0;

	snprintf(marker, sizeof(marker), "criu-ts packet_sk %d", getpid());
	if (udp < 0 || bind(udp, (struct sockaddr *)&to, sizeof(to)) ||
	    getsockname(udp, (struct sockaddr *)&self, &len)) {
		wl_fail("cannot make a UDP socket on lo: %s", strerror(errno));
		return;
	}
	/* Packets queued before (other programs' traffic on lo) are not what we look for. */
	while (recv(raw, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
	sendto(udp, marker, strlen(marker), 0, (struct sockaddr *)&self, sizeof(self));
	while (!seen && wl_now_ns() < end) {
		struct pollfd pfd = { .fd = raw, .events = POLLIN };
		ssize_t n;

		if (poll(&pfd, 1, 500) != 1)
			continue;
		n = recv(raw, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0 && memmem(buf, n, marker, strlen(marker)))
			seen = 1;
	}
	WL_CHECK(seen, "the raw socket bound to lo did not see a datagram sent over lo");
	close(udp);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 2 ? argv[2] : "";

	wl_init(argc, argv);
	lo_index = if_nametoindex("lo");
	if (!lo_index)
		wl_die("no lo");
	setup_raw();
	setup_dgram();
	setup_unbound(strcmp(mode, "mapped") == 0);
	if (strcmp(mode, "spkt") == 0) {
		struct sockaddr sa = { .sa_family = AF_PACKET, .sa_data = "lo" };

		spkt = socket(AF_PACKET, SOCK_PACKET, htons(ETH_P_ALL));
		if (spkt < 0 || bind(spkt, &sa, sizeof(sa)))
			wl_die("socket(AF_PACKET, SOCK_PACKET) bound to lo");
	}
	wl_ready();
	wl_wait();
	check_raw();
	check_dgram();
	check_unbound();
	check_capture();
	if (spkt >= 0) {
		struct sockaddr sa;
		socklen_t len = sizeof(sa);

		WL_CHECK(getsockname(spkt, &sa, &len) == 0 && sa.sa_family == AF_PACKET && strcmp(sa.sa_data, "lo") == 0,
			 "the SOCK_PACKET socket is not bound to lo (\"%.14s\")", sa.sa_data);
	}
	wl_finish();
}
