/*
 * netdev: a process in a network namespace of its own that leads out through a veth pair: the
 * inner end eth0 (MTU 1400, 198.19.77.2/24 and fd00:198:19:77::2/64, subnets other tests are
 * unlikely to use; not fd00::/64, which the host may use), the outer end OUTER in the namespace
 * of its parent (the test gives it 198.19.77.1/24 and fd00:198:19:77::1/64 and brings it up).
 * Inside: a route, an IPv6 route, a rule, an iptables rule and changed sysctls (per device, `all`,
 * `default`, unix). At start it records its own view (addresses, routes, rules, firewall, as `ip`
 * and `iptables -S` print them, without what depends on the outer end's state); after SIGTERM
 * that view must be the same, the sysctls must hold, and a TCP connect to 198.19.77.1 and
 * fd00:198:19:77::1 on a closed port must be refused by the other side (a reset came back
 * through the veth).
 * With `tcp`, it also serves TCP on 198.19.77.2:7000: one connection, echoing what it reads,
 * which must still be open at the end. With `ifb`, the namespace also holds an ifb device extra0
 * (a kind neither CRIU nor criu-ts makes itself). With `tap`, a persistent tap device extra0
 * (owner and group 65534, a virtio-net header, MTU 1234), in the view. With `heldtap`, a tap
 * device held0 (no packet information, virtio-net headers, two queues, up) that only the workload's
 * two open /dev/net/tun files keep, the second one's queue detached: after SIGTERM both files
 * must still be attached to held0 with the same flags (the second still detached), a frame written
 * into the first must arrive on held0 (its received packets in /proc/net/dev), and held0 must go
 * once both files are closed (it was not persistent, and must not be after restore either).
 * With `bridge`, it also holds a bridge br0 with an address of its own (198.19.79.1/24), part of
 * the recorded view. With `pair`, a second veth pair with both ends inside, in0 (198.19.80.1/24)
 * and in1, which is a port of br0 when there is one (the view lists br0's ports).
 * With `macvlan`, a macvlan mv0 (mode bridge, 198.19.81.1/24) whose parent is OUTER: it was made
 * on OUTER in the parent's namespace and moved in.
 * With `policy`, policy routing: table 100 (where the rule leads) holds an IPv4 and an IPv6 route,
 * the local table one route added by hand (198.19.83.0/24 taken as local, as "any IP" setups do),
 * and the view lists every table of both families (the local table's own entries must come back
 * once, not twice; without the link-local and multicast ones, which come and go with the carrier) and where `ip route get` sends a packet from 198.19.77.2.
 * With `sit`, a sit tunnel sit1 (remote 198.18.0.2, local 198.18.0.1, ttl 64, up) with
 * fd00:198:19:84::1/64, its parameters in the view (a kernel without sit refuses the setup).
 *   bin/netdev RESULT_FILE OUTER [tcp] [ifb|tap] [heldtap] [bridge] [pair] [macvlan] [policy] [sit]
 */
#include "lib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SERVE_PORT 7000
#define CLOSED_PORT 9

/* Each setting and the value the workload gives it (none of them the kernel's default). */
static const struct {
	const char *path;
	const char *value;
} settings[] = {
	{ "/proc/sys/net/ipv4/conf/eth0/accept_redirects", "0" },
	{ "/proc/sys/net/ipv6/conf/eth0/hop_limit", "33" },
	{ "/proc/sys/net/ipv4/conf/all/log_martians", "1" },
	{ "/proc/sys/net/ipv6/conf/default/hop_limit", "44" },
	{ "/proc/sys/net/unix/max_dgram_qlen", "77" },
};

static void run(const char *cmd)
{
	int r = system(cmd);
	if (r != 0)
		wl_die("`%s` exited with %d", cmd, r);
}

static void write_setting(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, value, strlen(value)) != (ssize_t)strlen(value))
		wl_die("write %s", path);
	close(fd);
}

static int policy;

/* What the namespace looks like from inside, without what changes with the outer end's state. */
static void record_view(const char *file)
{
	char cmd[1536];
	snprintf(cmd, sizeof(cmd),
		 "{ ip -o addr show | grep -v ' fe80:' | awk '{print $2, $3, $4}' | sed 's/@[^ ]*//';"
		 "  ip -4 route show %s | sed 's/ linkdown//';"
		 "  ip -6 route show %s | grep -v -e '^fe80:' -e 'fe80::.* table local' -e '^multicast ff00::/8' |"
		 "  sed 's/ linkdown//';"
		 "  %s"
		 "  ip rule show; iptables -S;"
		 "  ip -o link show master br0 2>/dev/null | awk '{print \"port\", $2}' | sed 's/@.*//';"
		 "  ip -d -o link show type sit | sed 's/^[0-9]*: \\([^:]*\\):.* mtu \\([0-9]*\\) .*\\(sit .*\\) addrgenmode.*/\\1 \\2 \\3/';"
		 "  ip -d -o link show type tun | sed 's/^\\([0-9]*: [^:]*:\\).* mtu \\([0-9]*\\) .*\\(tun type .*\\) numtxqueues.*/\\1 \\2 \\3/'; }"
		 " > %s 2>&1",
		 policy ? "table all" : "", policy ? "table all" : "",
		 policy ? "ip route get 198.19.82.9 from 198.19.77.2 | sed -n 1p | sed 's/ uid [0-9]*//';" : "", file);
	run(cmd);
}

#define HELD_FLAGS (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE)

/* One queue of the multi-queue tap device `name`, made by the first. */
static int tap_queue(const char *name)
{
	struct ifreq ifr = { .ifr_flags = HELD_FLAGS };
	int fd = open("/dev/net/tun", O_RDWR);
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr))
		wl_die("attach to tap %s", name);
	return fd;
}

/* A tap device that lives as long as its two files (in held[]): not persistent; the second queue detached. */
static void hold_tap(const char *name, int held[2])
{
	char cmd[128];
	struct ifreq ifr = { .ifr_flags = IFF_DETACH_QUEUE };
	held[0] = tap_queue(name);
	held[1] = tap_queue(name);
	if (ioctl(held[1], TUNSETQUEUE, &ifr))
		wl_die("detach the second queue of %s", name);
	snprintf(cmd, sizeof(cmd), "ip link set %s up", name);
	run(cmd);
}

/* The packets device `name` received, from /proc/net/dev (this namespace's view); -1 if absent. */
static long rx_packets(const char *name)
{
	char buf[8192], *line;
	long bytes, packets;
	size_t len = strlen(name);
	if (wl_read_file("/proc/net/dev", buf, sizeof(buf)) <= 0)
		return -1;
	for (line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		while (*line == ' ')
			line++;
		if (strncmp(line, name, len) == 0 && line[len] == ':' &&
		    sscanf(line + len + 1, "%ld %ld", &bytes, &packets) == 2)
			return packets;
	}
	return -1;
}

/* The tap files are attached as before, a frame written into the first arrives, and closing them ends held0. */
static void check_held_tap(int held[2])
{
	struct ifreq ifr[2];
	for (int i = 0; i < 2; i++) {
		memset(&ifr[i], 0, sizeof(ifr[i]));
		WL_CHECK(ioctl(held[i], TUNGETIFF, &ifr[i]) == 0, "TUNGETIFF on tap file %d: %s", i, strerror(errno));
		WL_CHECK(strcmp(ifr[i].ifr_name, "held0") == 0, "tap file %d is attached to \"%s\"", i, ifr[i].ifr_name);
		WL_CHECK((ifr[i].ifr_flags & (IFF_TAP | IFF_VNET_HDR | IFF_MULTI_QUEUE)) ==
				 (IFF_TAP | IFF_VNET_HDR | IFF_MULTI_QUEUE),
			 "tap file %d has flags 0x%x", i, ifr[i].ifr_flags);
	}
	WL_CHECK(!(ifr[0].ifr_flags & IFF_DETACH_QUEUE), "the first queue is detached");
	WL_CHECK(ifr[1].ifr_flags & IFF_DETACH_QUEUE, "the second queue is no longer detached");
	/* A virtio-net header (all zero: no offloads), then an Ethernet frame of a local experimental type. */
	unsigned char frame[10 + 14 + 32] = { 0 };
	memset(frame + 10, 0xff, 6);
	frame[16] = 0x02, frame[21] = 0x01, frame[22] = 0x88, frame[23] = 0xb5;
	long before = rx_packets("held0");
	WL_CHECK(write(held[0], frame, sizeof(frame)) == (ssize_t)sizeof(frame), "write to the tap: %s", strerror(errno));
	long after = rx_packets("held0");
	WL_CHECK(before >= 0 && after == before + 1, "held0 received %ld packets, then %ld", before, after);
	close(held[0]);
	close(held[1]);
	for (int i = 0; i < 100 && if_nametoindex("held0") != 0; i++)
		usleep(20000);
	WL_CHECK(if_nametoindex("held0") == 0, "held0 stays once its files are closed: it became persistent");
}

static int has_arg(int argc, char **argv, const char *word)
{
	for (int i = 3; i < argc; i++)
		if (strcmp(argv[i], word) == 0)
			return 1;
	return 0;
}

static int sit;

static void setup(const char *outer, int ifb, int tap, int bridge, int pair, int macvlan)
{
	char cmd[512];
	int outside = open("/proc/self/ns/net", O_RDONLY);
	if (outside < 0)
		wl_die("open /proc/self/ns/net");
	if (unshare(CLONE_NEWNET))
		wl_die("unshare(CLONE_NEWNET)");
	run("ip link set lo up");
	/* ip opens /proc/self/fd/N, its own copy of our fd of the outer namespace. */
	snprintf(cmd, sizeof(cmd), "ip link add eth0 mtu 1400 type veth peer name %s netns /proc/self/fd/%d", outer,
		 outside);
	run(cmd);
	if (macvlan) {
		snprintf(cmd, sizeof(cmd),
			 "nsenter --net=/proc/self/fd/%d ip link add mv0 link %s netns %d type macvlan mode bridge",
			 outside, outer, (int)getpid());
		run(cmd);
		run("ip addr add 198.19.81.1/24 dev mv0");
		run("ip link set mv0 up");
	}
	close(outside);
	run("ip addr add 198.19.77.2/24 dev eth0");
	run("ip -6 addr add fd00:198:19:77::2/64 dev eth0 nodad");
	run("ip link set eth0 up");
	run("ip route add 198.19.78.0/24 via 198.19.77.1 dev eth0 onlink");
	run("ip -6 route add fd00:198:19:78::/64 via fd00:198:19:77::1 dev eth0 onlink");
	run("ip rule add from 198.19.77.2 lookup 100 pref 100");
	if (policy) {
		run("ip route add 198.19.82.0/24 via 198.19.77.1 dev eth0 onlink table 100");
		run("ip -6 route add fd00:198:19:82::/64 via fd00:198:19:77::1 dev eth0 onlink table 100");
		run("ip route add local 198.19.83.0/24 dev lo table local");
	}
	run("iptables -A INPUT -p tcp --dport 7777 -j DROP");
	if (bridge) {
		run("ip link add br0 mtu 1300 type bridge");
		run("ip addr add 198.19.79.1/24 dev br0");
		run("ip link set br0 up");
	}
	if (pair) {
		run("ip link add in0 type veth peer name in1");
		run("ip addr add 198.19.80.1/24 dev in0");
		run("ip link set in0 up");
		run("ip link set in1 up");
		if (bridge) {
			run("ip link set in1 master br0");
			/* set after a port joined: the bridge keeps it (and the restore must too) */
			run("ip link set br0 mtu 1300");
		}
	}
	if (ifb)
		run("ip link add extra0 type ifb");
	if (sit) {
		run("ip link add name sit1 type sit remote 198.18.0.2 local 198.18.0.1 ttl 64");
		run("ip -6 addr add fd00:198:19:84::1/64 dev sit1 nodad");
		run("ip link set sit1 up");
	}
	if (tap) {
		run("ip tuntap add extra0 mode tap user 65534 group 65534 vnet_hdr");
		run("ip link set extra0 mtu 1234");
	}
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
		write_setting(settings[i].path, settings[i].value);
}

/* The recorded view holds what policy routing put in place: else comparing views proves nothing. */
static void check_policy(const char *view_file)
{
	char view[8192];
	if (wl_read_file(view_file, view, sizeof(view)) <= 0) {
		wl_fail("cannot read %s", view_file);
		return;
	}
	WL_CHECK(strstr(view, "198.19.82.0/24 via 198.19.77.1 dev eth0 table 100") != NULL, "no table 100 route in:\n%s", view);
	WL_CHECK(strstr(view, "fd00:198:19:82::/64 via fd00:198:19:77::1 dev eth0 table 100") != NULL,
		 "no IPv6 table 100 route in:\n%s", view);
	WL_CHECK(strstr(view, "local 198.19.83.0/24 dev lo table local") != NULL, "no local route in:\n%s", view);
	WL_CHECK(strstr(view, "local 198.19.77.2 dev eth0 table local proto kernel") != NULL,
		 "no kernel local route in:\n%s", view);
	WL_CHECK(strstr(view, "198.19.82.9 from 198.19.77.2 via 198.19.77.1 dev eth0 table 100") != NULL,
		 "ip route get does not go through table 100:\n%s", view);
}

static void check_settings(void)
{
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
		char buf[64];
		if (wl_read_file(settings[i].path, buf, sizeof(buf)) < 0) {
			wl_fail("cannot read %s", settings[i].path);
			continue;
		}
		buf[strcspn(buf, "\n")] = 0;
		WL_CHECK(strcmp(buf, settings[i].value) == 0, "%s is %s, expected %s", settings[i].path, buf,
			 settings[i].value);
	}
}

static void check_view(const char *before, const char *after)
{
	char a[8192], b[8192];
	record_view(after);
	if (wl_read_file(before, a, sizeof(a)) <= 0 || wl_read_file(after, b, sizeof(b)) <= 0) {
		wl_fail("cannot read the recorded views");
		return;
	}
	if (strcmp(a, b) != 0)
		wl_fail("the namespace changed:\n--- at start\n%s--- now\n%s", a, b);
}

/* A connect to a closed port of the outer end must come back refused: traffic flows both ways. */
static void check_refused(int family, const char *address)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_port = htons(CLOSED_PORT);
		inet_pton(AF_INET, address, &in->sin_addr);
		len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(CLOSED_PORT);
		inet_pton(AF_INET6, address, &in6->sin6_addr);
		len = sizeof(*in6);
	}
	int sk = socket(family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (sk < 0) {
		wl_fail("socket for %s", address);
		return;
	}
	int r = connect(sk, (struct sockaddr *)&ss, len);
	int err = r == 0 ? 0 : errno;
	if (r < 0 && errno == EINPROGRESS) {
		struct pollfd p = { .fd = sk, .events = POLLOUT };
		socklen_t elen = sizeof(err);
		if (poll(&p, 1, 20000) != 1)
			err = ETIMEDOUT;
		else
			getsockopt(sk, SOL_SOCKET, SO_ERROR, &err, &elen);
	}
	WL_CHECK(err == ECONNREFUSED, "connect to %s port %d: %s, expected a refusal through the veth", address,
		 CLOSED_PORT, strerror(err));
	close(sk);
}

static int listener(void)
{
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(SERVE_PORT) };
	int one = 1;
	inet_pton(AF_INET, "198.19.77.2", &in.sin_addr);
	int sk = socket(AF_INET, SOCK_STREAM, 0);
	if (sk < 0 || setsockopt(sk, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(sk, (struct sockaddr *)&in, sizeof(in)) || listen(sk, 4))
		wl_die("listen on 198.19.77.2:%d", SERVE_PORT);
	return sk;
}

/* Until SIGTERM: takes one connection and echoes what comes on it. Returns the bytes echoed. */
static long serve(int lsk, int *conn)
{
	long echoed = 0;
	while (!wl_stop) {
		struct pollfd p = { .fd = *conn >= 0 ? *conn : lsk, .events = POLLIN };
		if (poll(&p, 1, 50) <= 0)
			continue;
		if (*conn < 0) {
			*conn = accept(lsk, NULL, NULL);
			continue;
		}
		char buf[256];
		ssize_t n = read(*conn, buf, sizeof(buf));
		if (n <= 0) {
			wl_fail("the connection ended (%zd, %s)", n, n < 0 ? strerror(errno) : "EOF");
			close(*conn);
			*conn = -1;
			continue;
		}
		if (write(*conn, buf, n) == n)
			echoed += n;
	}
	return echoed;
}

int main(int argc, char **argv)
{
	char before[4096], after[4096];
	wl_init(argc, argv);
	if (argc < 3)
		wl_die("usage: netdev RESULT_FILE OUTER [tcp] [ifb|tap] [bridge] [pair] [macvlan]");
	int tcp = has_arg(argc, argv, "tcp"), ifb = has_arg(argc, argv, "ifb"), tap = has_arg(argc, argv, "tap");
	int bridge = has_arg(argc, argv, "bridge"), pair = has_arg(argc, argv, "pair");
	policy = has_arg(argc, argv, "policy");
	sit = has_arg(argc, argv, "sit");
	setup(argv[2], ifb, tap, bridge, pair, has_arg(argc, argv, "macvlan"));
	int held[2] = { -1, -1 };
	if (has_arg(argc, argv, "heldtap"))
		hold_tap("held0", held);
	record_view(wl_path("view-before", before, sizeof(before)));
	if (policy)
		check_policy(before);
	check_settings();
	int lsk = tcp ? listener() : -1, conn = -1;
	wl_ready();
	if (tcp) {
		long echoed = serve(lsk, &conn);
		wl_log("echoed %ld bytes", echoed);
		WL_CHECK(conn >= 0, "no connection open at the end");
		WL_CHECK(echoed > 0, "nothing was echoed");
	} else {
		wl_wait();
	}
	check_settings();
	check_view(before, wl_path("view-after", after, sizeof(after)));
	check_refused(AF_INET, "198.19.77.1");
	check_refused(AF_INET6, "fd00:198:19:77::1");
	WL_CHECK(!(ifb || tap) || if_nametoindex("extra0") != 0, "extra0 is gone");
	if (held[0] >= 0)
		check_held_tap(held);
	WL_CHECK(!bridge || if_nametoindex("br0") != 0, "br0 is gone");
	WL_CHECK(!sit || if_nametoindex("sit1") != 0, "sit1 is gone");
	wl_finish();
}
