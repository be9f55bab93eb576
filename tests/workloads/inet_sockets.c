/*
 * inet_sockets: TCP and UDP sockets that are not established connections (those are
 * tcp_established's), in the states a dump must keep.
 *
 *   bin/inet_sockets RESULT_FILE [MODE...]     (no MODE: all of them)
 *
 * Modes:
 *   listener   two TCP listeners on one 127.0.0.1 port (SO_REUSEADDR and SO_REUSEPORT on both),
 *              backlogs 5 and 3: same port, options and backlog after the wait, and each accepts
 *   bound      a TCP socket bound to 127.0.0.1:PORT and never listening, and a UDP socket bound
 *              to 127.0.0.1:PORT: same names after; the TCP one can listen, the UDP one receives
 *   unbound    an unbound TCP socket and an unbound UDP socket: still unnamed, still usable
 *   udp        two UDP sockets on loopback connected to each other: same peers after, datagrams
 *              pass both ways (no datagram is left queued across the wait: CRIU keeps none)
 *   ipv6       a TCP listener on ::1 with IPV6_V6ONLY, a dual-stack TCP listener on :: without it
 *              (an IPv4 client's address reads ::ffff:127.0.0.1), a UDP socket on ::1 with V6ONLY
 *   v4mapped   a UDP socket of AF_INET6 without V6ONLY bound to ::ffff:127.0.0.1 and connected to
 *              an AF_INET UDP socket: names and datagrams both ways
 *
 * The result names the mode of each difference.
 */
#include "lib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

static const char *mode;

#define FAIL(...) wl_fail("%s: " __VA_ARGS__)

typedef union {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	struct sockaddr_storage ss;
} addr_t;

static socklen_t addr_len(const addr_t *a)
{
	return a->sa.sa_family == AF_INET ? sizeof(a->in) : sizeof(a->in6);
}

/* "ADDR" with a port; family from the text. */
static addr_t make_addr(const char *text, int port)
{
	addr_t a;

	memset(&a, 0, sizeof(a));
	if (inet_pton(AF_INET, text, &a.in.sin_addr) == 1) {
		a.in.sin_family = AF_INET;
		a.in.sin_port = htons((uint16_t)port);
	} else if (inet_pton(AF_INET6, text, &a.in6.sin6_addr) == 1) {
		a.in6.sin6_family = AF_INET6;
		a.in6.sin6_port = htons((uint16_t)port);
	} else {
		wl_die("bad address %s", text);
	}
	return a;
}

static const char *addr_text(const addr_t *a, char *buf, size_t size)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (a->sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->in.sin_addr, ip, sizeof(ip));
		snprintf(buf, size, "%s:%d", ip, ntohs(a->in.sin_port));
	} else if (a->sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &a->in6.sin6_addr, ip, sizeof(ip));
		snprintf(buf, size, "[%s]:%d", ip, ntohs(a->in6.sin6_port));
	} else {
		snprintf(buf, size, "family %d", a->sa.sa_family);
	}
	return buf;
}

static int same_addr(const addr_t *a, const addr_t *b)
{
	if (a->sa.sa_family != b->sa.sa_family)
		return 0;
	if (a->sa.sa_family == AF_INET)
		return a->in.sin_port == b->in.sin_port && a->in.sin_addr.s_addr == b->in.sin_addr.s_addr;
	return a->in6.sin6_port == b->in6.sin6_port &&
	       memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(a->in6.sin6_addr)) == 0;
}

static addr_t name_of(int fd, int peer)
{
	addr_t a;
	socklen_t len = sizeof(a);

	memset(&a, 0, sizeof(a));
	if ((peer ? getpeername(fd, &a.sa, &len) : getsockname(fd, &a.sa, &len)) != 0)
		a.sa.sa_family = AF_UNSPEC;
	return a;
}

static int port_of(const addr_t *a)
{
	return ntohs(a->sa.sa_family == AF_INET ? a->in.sin_port : a->in6.sin6_port);
}

static void check_addr(int fd, int peer, const addr_t *want, const char *what)
{
	addr_t got = name_of(fd, peer);
	char a[80], b[80];

	if (!same_addr(&got, want))
		FAIL("%s is %s, expected %s", mode, what, addr_text(&got, a, sizeof(a)), addr_text(want, b, sizeof(b)));
}

static int get_opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);

	return getsockopt(fd, level, name, &v, &len) == 0 ? v : -2;
}

static void set_opt(int fd, int level, int name, int v)
{
	if (setsockopt(fd, level, name, &v, sizeof(v)) != 0)
		wl_die("%s: setsockopt(%d, %d)", mode, level, name);
}

static int new_socket(int family, int type)
{
	int fd = socket(family, type, 0);

	if (fd < 0)
		wl_die("%s: socket", mode);
	return fd;
}

static void bind_to(int fd, const addr_t *a)
{
	char t[80];

	if (bind(fd, &a->sa, addr_len(a)) != 0)
		wl_die("%s: bind %s", mode, addr_text(a, t, sizeof(t)));
}

static int wait_fd(int fd, short events, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int n;

	do
		n = poll(&pfd, 1, ms);
	while (n < 0 && errno == EINTR);
	return n;
}

/* Connects a fresh TCP socket of `family` to `to`, accepts it on `l`, and exchanges a byte each way. */
static void check_accepts(int l, const addr_t *to, const char *what, addr_t *client_seen)
{
	int c = socket(to->sa.sa_family, SOCK_STREAM, 0), s = -1;
	char ch = 0;

	if (c < 0 || connect(c, &to->sa, addr_len(to)) != 0) {
		FAIL("%s: connect: %s", mode, what, strerror(errno));
		goto out;
	}
	if (wait_fd(l, POLLIN, TIMEOUT_MS) <= 0 || (s = accept(l, NULL, NULL)) < 0) {
		FAIL("%s: no connection to accept", mode, what);
		goto out;
	}
	if (client_seen)
		*client_seen = name_of(s, 1);
	if (send(c, "a", 1, MSG_NOSIGNAL) != 1 || wait_fd(s, POLLIN, TIMEOUT_MS) <= 0 || recv(s, &ch, 1, 0) != 1 ||
	    ch != 'a' || send(s, "b", 1, MSG_NOSIGNAL) != 1 || wait_fd(c, POLLIN, TIMEOUT_MS) <= 0 ||
	    recv(c, &ch, 1, 0) != 1 || ch != 'b')
		FAIL("%s: the accepted connection does not carry data", mode, what);
out:
	if (c >= 0)
		close(c);
	if (s >= 0)
		close(s);
}

/* A datagram from `from` reaches `to` (connected sockets: send; else sendto `dest`). */
static void check_datagram(int from, int to, const addr_t *dest, const char *what)
{
	char buf[16] = "";
	ssize_t n = dest ? sendto(from, "dgram", 5, 0, &dest->sa, addr_len(dest)) : send(from, "dgram", 5, 0);

	if (n != 5 || wait_fd(to, POLLIN, TIMEOUT_MS) <= 0 || recv(to, buf, sizeof(buf), 0) != 5 ||
	    memcmp(buf, "dgram", 5) != 0)
		FAIL("%s: a datagram did not arrive: %s", mode, what, strerror(errno));
}

/* listener */
static int listeners[2];
static addr_t listen_addr;

static int tcp_backlog(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	/* For a listener, tcpi_sacked is the backlog limit and tcpi_unacked the connections waiting. */
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
		return -1;
	return (int)ti.tcpi_sacked;
}

static void setup_listener(void)
{
	static const int backlogs[2] = { 5, 3 };

	listen_addr = make_addr("127.0.0.1", 0);
	for (int i = 0; i < 2; i++) {
		listeners[i] = new_socket(AF_INET, SOCK_STREAM);
		set_opt(listeners[i], SOL_SOCKET, SO_REUSEADDR, 1);
		set_opt(listeners[i], SOL_SOCKET, SO_REUSEPORT, 1);
		bind_to(listeners[i], &listen_addr);
		if (listen(listeners[i], backlogs[i]) != 0)
			wl_die("%s: listen", mode);
		listen_addr = name_of(listeners[0], 0); /* the second one takes the first one's port */
	}
}

static void check_listener(void)
{
	static const int backlogs[2] = { 5, 3 };
	struct pollfd pfd[2] = { { .fd = listeners[0], .events = POLLIN }, { .fd = listeners[1], .events = POLLIN } };
	int accepted[2] = { 0, 0 };

	for (int i = 0; i < 2; i++) {
		check_addr(listeners[i], 0, &listen_addr, "the listener's address");
		if (get_opt(listeners[i], SOL_SOCKET, SO_REUSEADDR) != 1 ||
		    get_opt(listeners[i], SOL_SOCKET, SO_REUSEPORT) != 1)
			FAIL("listener %d lost SO_REUSEADDR or SO_REUSEPORT", mode, i);
		if (get_opt(listeners[i], SOL_SOCKET, SO_ACCEPTCONN) != 1)
			FAIL("listener %d does not listen", mode, i);
		if (tcp_backlog(listeners[i]) != backlogs[i])
			FAIL("listener %d has backlog %d, expected %d", mode, i, tcp_backlog(listeners[i]), backlogs[i]);
	}
	/* SO_REUSEPORT spreads connections by hash: connect until each listener has had one. */
	for (int tries = 0; tries < 64 && !(accepted[0] && accepted[1]); tries++) {
		int c = new_socket(AF_INET, SOCK_STREAM);

		if (connect(c, &listen_addr.sa, sizeof(listen_addr.in)) != 0) {
			FAIL("connect to the listeners' port: %s", mode, strerror(errno));
			close(c);
			return;
		}
		if (poll(pfd, 2, TIMEOUT_MS) <= 0) {
			FAIL("no listener got the connection", mode);
			close(c);
			return;
		}
		for (int i = 0; i < 2; i++) {
			if (pfd[i].revents & POLLIN) {
				int s = accept(listeners[i], NULL, NULL);

				accepted[i] += s >= 0;
				if (s >= 0)
					close(s);
			}
		}
		close(c);
	}
	if (!accepted[0] || !accepted[1])
		FAIL("connections reached listener 0 %d times and listener 1 %d times", mode, accepted[0], accepted[1]);
}

/* bound */
static int bound_tcp, bound_udp;
static addr_t bound_tcp_addr, bound_udp_addr;

static void setup_bound(void)
{
	addr_t any = make_addr("127.0.0.1", 0);

	bound_tcp = new_socket(AF_INET, SOCK_STREAM);
	bind_to(bound_tcp, &any);
	bound_tcp_addr = name_of(bound_tcp, 0);
	bound_udp = new_socket(AF_INET, SOCK_DGRAM);
	bind_to(bound_udp, &any);
	bound_udp_addr = name_of(bound_udp, 0);
}

static void check_bound(void)
{
	int tx;

	check_addr(bound_tcp, 0, &bound_tcp_addr, "the bound TCP socket's address");
	check_addr(bound_udp, 0, &bound_udp_addr, "the bound UDP socket's address");
	if (get_opt(bound_tcp, SOL_SOCKET, SO_ACCEPTCONN) != 0)
		FAIL("the bound TCP socket listens", mode);
	if (listen(bound_tcp, 2) != 0)
		FAIL("the bound TCP socket cannot listen: %s", mode, strerror(errno));
	else
		check_accepts(bound_tcp, &bound_tcp_addr, "bound then listening", NULL);
	tx = new_socket(AF_INET, SOCK_DGRAM);
	check_datagram(tx, bound_udp, &bound_udp_addr, "to the bound UDP socket");
	close(tx);
}

/* unbound */
static int unbound_tcp, unbound_udp;

static void setup_unbound(void)
{
	unbound_tcp = new_socket(AF_INET, SOCK_STREAM);
	unbound_udp = new_socket(AF_INET, SOCK_DGRAM);
}

static void check_unbound(void)
{
	addr_t zero = make_addr("0.0.0.0", 0), where;
	int l, rx, s;
	char c = 0;

	check_addr(unbound_tcp, 0, &zero, "the unbound TCP socket's address");
	check_addr(unbound_udp, 0, &zero, "the unbound UDP socket's address");
	l = new_socket(AF_INET, SOCK_STREAM);
	where = make_addr("127.0.0.1", 0);
	bind_to(l, &where);
	where = name_of(l, 0);
	if (listen(l, 1) != 0 || connect(unbound_tcp, &where.sa, sizeof(where.in)) != 0 ||
	    wait_fd(l, POLLIN, TIMEOUT_MS) <= 0 || (s = accept(l, NULL, NULL)) < 0) {
		FAIL("the unbound TCP socket cannot connect: %s", mode, strerror(errno));
	} else {
		if (send(unbound_tcp, "t", 1, MSG_NOSIGNAL) != 1 || wait_fd(s, POLLIN, TIMEOUT_MS) <= 0 ||
		    recv(s, &c, 1, 0) != 1 || c != 't')
			FAIL("the unbound TCP socket's connection carries no data", mode);
		close(s);
	}
	close(l);
	rx = new_socket(AF_INET, SOCK_DGRAM);
	where = make_addr("127.0.0.1", 0);
	bind_to(rx, &where);
	where = name_of(rx, 0);
	check_datagram(unbound_udp, rx, &where, "from the unbound UDP socket");
	close(rx);
}

/* udp */
static int udp_a, udp_b;
static addr_t udp_a_addr, udp_b_addr;

static void setup_udp(void)
{
	addr_t lo = make_addr("127.0.0.1", 0);

	udp_a = new_socket(AF_INET, SOCK_DGRAM);
	udp_b = new_socket(AF_INET, SOCK_DGRAM);
	bind_to(udp_a, &lo);
	bind_to(udp_b, &lo);
	udp_a_addr = name_of(udp_a, 0);
	udp_b_addr = name_of(udp_b, 0);
	if (connect(udp_a, &udp_b_addr.sa, sizeof(udp_b_addr.in)) != 0 ||
	    connect(udp_b, &udp_a_addr.sa, sizeof(udp_a_addr.in)) != 0)
		wl_die("%s: connect", mode);
}

static void check_udp(void)
{
	check_addr(udp_a, 0, &udp_a_addr, "a's address");
	check_addr(udp_a, 1, &udp_b_addr, "a's peer");
	check_addr(udp_b, 1, &udp_a_addr, "b's peer");
	check_datagram(udp_a, udp_b, NULL, "a to b");
	check_datagram(udp_b, udp_a, NULL, "b to a");
}

/* ipv6 */
static int v6_only_l, v6_dual_l, v6_udp;
static addr_t v6_only_addr, v6_dual_addr, v6_udp_addr;

static void setup_ipv6(void)
{
	addr_t a;

	v6_only_l = new_socket(AF_INET6, SOCK_STREAM);
	set_opt(v6_only_l, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	a = make_addr("::1", 0);
	bind_to(v6_only_l, &a);
	v6_dual_l = new_socket(AF_INET6, SOCK_STREAM);
	set_opt(v6_dual_l, IPPROTO_IPV6, IPV6_V6ONLY, 0);
	a = make_addr("::", 0);
	bind_to(v6_dual_l, &a);
	if (listen(v6_only_l, 2) != 0 || listen(v6_dual_l, 2) != 0)
		wl_die("%s: listen", mode);
	v6_only_addr = name_of(v6_only_l, 0);
	v6_dual_addr = name_of(v6_dual_l, 0);
	v6_udp = new_socket(AF_INET6, SOCK_DGRAM);
	set_opt(v6_udp, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	a = make_addr("::1", 0);
	bind_to(v6_udp, &a);
	v6_udp_addr = name_of(v6_udp, 0);
}

static void check_ipv6(void)
{
	addr_t to, seen, mapped = make_addr("::ffff:127.0.0.1", 0);
	char t[80];
	int tx;

	check_addr(v6_only_l, 0, &v6_only_addr, "the v6-only listener's address");
	check_addr(v6_dual_l, 0, &v6_dual_addr, "the dual-stack listener's address");
	if (get_opt(v6_only_l, IPPROTO_IPV6, IPV6_V6ONLY) != 1 || get_opt(v6_udp, IPPROTO_IPV6, IPV6_V6ONLY) != 1)
		FAIL("IPV6_V6ONLY was lost", mode);
	if (get_opt(v6_dual_l, IPPROTO_IPV6, IPV6_V6ONLY) != 0)
		FAIL("the dual-stack listener became v6-only", mode);
	check_accepts(v6_only_l, &v6_only_addr, "v6-only listener", NULL);
	to = make_addr("127.0.0.1", port_of(&v6_dual_addr));
	memset(&seen, 0, sizeof(seen));
	check_accepts(v6_dual_l, &to, "dual-stack listener, IPv4 client", &seen);
	if (seen.sa.sa_family != AF_INET6 || memcmp(&seen.in6.sin6_addr, &mapped.in6.sin6_addr, 16) != 0)
		FAIL("an IPv4 client of the dual-stack listener shows as %s, expected ::ffff:127.0.0.1", mode,
		     addr_text(&seen, t, sizeof(t)));
	check_addr(v6_udp, 0, &v6_udp_addr, "the v6-only UDP socket's address");
	tx = new_socket(AF_INET6, SOCK_DGRAM);
	check_datagram(tx, v6_udp, &v6_udp_addr, "to the v6-only UDP socket");
	close(tx);
}

/* v4mapped */
static int mapped6, plain4;
static addr_t mapped6_addr, plain4_addr;

static void setup_v4mapped(void)
{
	addr_t a = make_addr("::ffff:127.0.0.1", 0), peer;

	mapped6 = new_socket(AF_INET6, SOCK_DGRAM);
	set_opt(mapped6, IPPROTO_IPV6, IPV6_V6ONLY, 0);
	bind_to(mapped6, &a);
	mapped6_addr = name_of(mapped6, 0);
	plain4 = new_socket(AF_INET, SOCK_DGRAM);
	a = make_addr("127.0.0.1", 0);
	bind_to(plain4, &a);
	plain4_addr = name_of(plain4, 0);
	peer = make_addr("::ffff:127.0.0.1", port_of(&plain4_addr));
	if (connect(mapped6, &peer.sa, sizeof(peer.in6)) != 0)
		wl_die("%s: connect to a v4-mapped address", mode);
	peer = make_addr("127.0.0.1", port_of(&mapped6_addr));
	if (connect(plain4, &peer.sa, sizeof(peer.in)) != 0)
		wl_die("%s: connect to the AF_INET6 socket", mode);
}

static void check_v4mapped(void)
{
	addr_t peer = make_addr("::ffff:127.0.0.1", port_of(&plain4_addr));

	check_addr(mapped6, 0, &mapped6_addr, "the v4-mapped socket's address");
	check_addr(mapped6, 1, &peer, "the v4-mapped socket's peer");
	if (get_opt(mapped6, IPPROTO_IPV6, IPV6_V6ONLY) != 0)
		FAIL("the v4-mapped socket became v6-only", mode);
	check_datagram(mapped6, plain4, NULL, "v4-mapped to AF_INET");
	check_datagram(plain4, mapped6, NULL, "AF_INET to v4-mapped");
}

struct mode_desc {
	const char *name;
	void (*setup)(void);
	void (*check)(void);
};

static const struct mode_desc modes[] = {
	{ "listener", setup_listener, check_listener }, { "bound", setup_bound, check_bound },
	{ "unbound", setup_unbound, check_unbound },    { "udp", setup_udp, check_udp },
	{ "ipv6", setup_ipv6, check_ipv6 },             { "v4mapped", setup_v4mapped, check_v4mapped },
};
#define NMODES (sizeof(modes) / sizeof(modes[0]))

int main(int argc, char **argv)
{
	int chosen[NMODES] = { 0 };

	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	for (int i = 2; i < argc; i++) {
		size_t m = 0;

		while (m < NMODES && strcmp(modes[m].name, argv[i]) != 0)
			m++;
		if (m == NMODES)
			wl_die("unknown mode %s", argv[i]);
		chosen[m] = 1;
	}
	for (size_t m = 0; m < NMODES; m++) {
		if (argc > 2 && !chosen[m])
			continue;
		chosen[m] = 1;
		mode = modes[m].name;
		modes[m].setup();
		wl_log("set up %s", mode);
	}

	wl_ready();
	wl_wait();

	for (size_t m = 0; m < NMODES; m++) {
		if (!chosen[m])
			continue;
		mode = modes[m].name;
		modes[m].check();
	}
	wl_finish();
}
