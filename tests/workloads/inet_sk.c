/*
 * inet_sk: IPv4 and IPv6 TCP and UDP sockets that are not connections, with their options.
 *   - a TCP listener on 127.0.0.1 (SO_REUSEADDR, backlog 7, non-blocking), one with SO_REUSEPORT,
 *     an IPv6 listener on ::1 with IPV6_V6ONLY, a dual-stack one on :: without it;
 *   - a TCP socket never bound, one bound to 127.0.0.1 and not listening (SO_KEEPALIVE,
 *     TCP_KEEPIDLE, TCP_NODELAY, SO_LINGER);
 *   - a UDP socket bound to 127.0.0.1 (SO_RCVBUF, SO_PRIORITY, SO_RCVTIMEO, IP_TOS), one connected
 *     to it, and an IPv6 one bound to ::ffff:127.0.0.1 and connected to it (v4-mapped).
 * After the wait every fd must be the same kind of socket with the same names, state and options;
 * each listener must accept a new connection (the dual-stack one from IPv4), and datagrams must
 * flow between the UDP sockets.
 */
#include "lib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { LISTEN4, REUSEPORT4, LISTEN6, DUAL6, UNBOUND, BOUND, UDP, UDP_CONN, UDP6_MAPPED, NSOCK };
static const char *names[NSOCK] = {
	"listener 127.0.0.1", "SO_REUSEPORT listener", "listener [::1] v6only", "dual-stack listener [::]",
	"unbound TCP socket", "bound TCP socket",     "UDP 127.0.0.1",          "connected UDP",
	"v4-mapped UDP",
};
static int fds[NSOCK];
static struct sockaddr_storage bound[NSOCK];

static void name_of(int i, struct sockaddr_storage *ss)
{
	socklen_t len = sizeof(*ss);
	memset(ss, 0, sizeof(*ss));
	if (getsockname(fds[i], (struct sockaddr *)ss, &len))
		wl_die("getsockname(%s)", names[i]);
}

static int opt(int i, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);
	if (getsockopt(fds[i], level, name, &v, &len))
		wl_fail("%s: getsockopt(%d, %d): %s", names[i], level, name, strerror(errno));
	return v;
}

static void set(int i, int level, int name, int v)
{
	if (setsockopt(fds[i], level, name, &v, sizeof(v)))
		wl_die("%s: setsockopt(%d, %d)", names[i], level, name);
}

static struct sockaddr_in v4(const char *ip, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static struct sockaddr_in6 v6(const char *ip, int port)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	inet_pton(AF_INET6, ip, &a.sin6_addr);
	return a;
}

static int port_of(int i)
{
	struct sockaddr_storage *ss = &bound[i];
	return ntohs(ss->ss_family == AF_INET ? ((struct sockaddr_in *)ss)->sin_port : ((struct sockaddr_in6 *)ss)->sin6_port);
}

static void make(int i, int family, int type)
{
	fds[i] = socket(family, type, 0);
	if (fds[i] < 0)
		wl_die("socket(%s)", names[i]);
}

static void bind_to(int i, const void *addr, socklen_t len)
{
	if (bind(fds[i], addr, len))
		wl_die("bind(%s)", names[i]);
}

static void setup(void)
{
	struct sockaddr_in a4 = v4("127.0.0.1", 0);
	struct sockaddr_in6 a6 = v6("::1", 0), any6 = v6("::", 0), mapped = v6("::ffff:127.0.0.1", 0);
	struct linger lg = { 1, 5 };
	struct timeval tv = { 2, 500000 };

	make(LISTEN4, AF_INET, SOCK_STREAM | SOCK_NONBLOCK);
	set(LISTEN4, SOL_SOCKET, SO_REUSEADDR, 1);
	bind_to(LISTEN4, &a4, sizeof(a4));
	if (listen(fds[LISTEN4], 7))
		wl_die("listen");

	make(REUSEPORT4, AF_INET, SOCK_STREAM);
	set(REUSEPORT4, SOL_SOCKET, SO_REUSEPORT, 1);
	bind_to(REUSEPORT4, &a4, sizeof(a4));
	if (listen(fds[REUSEPORT4], 3))
		wl_die("listen");

	make(LISTEN6, AF_INET6, SOCK_STREAM);
	set(LISTEN6, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	bind_to(LISTEN6, &a6, sizeof(a6));
	if (listen(fds[LISTEN6], 5))
		wl_die("listen");

	make(DUAL6, AF_INET6, SOCK_STREAM);
	set(DUAL6, IPPROTO_IPV6, IPV6_V6ONLY, 0);
	bind_to(DUAL6, &any6, sizeof(any6));
	if (listen(fds[DUAL6], 4))
		wl_die("listen");

	make(UNBOUND, AF_INET, SOCK_STREAM);

	make(BOUND, AF_INET, SOCK_STREAM);
	set(BOUND, SOL_SOCKET, SO_KEEPALIVE, 1);
	set(BOUND, IPPROTO_TCP, TCP_KEEPIDLE, 77);
	set(BOUND, IPPROTO_TCP, TCP_NODELAY, 1);
	if (setsockopt(fds[BOUND], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)))
		wl_die("SO_LINGER");
	bind_to(BOUND, &a4, sizeof(a4));

	make(UDP, AF_INET, SOCK_DGRAM);
	set(UDP, SOL_SOCKET, SO_RCVBUF, 100000);
	/* IP_TOS sets the priority too: SO_PRIORITY after it wins. */
	set(UDP, IPPROTO_IP, IP_TOS, 0x10);
	set(UDP, SOL_SOCKET, SO_PRIORITY, 3);
	if (setsockopt(fds[UDP], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)))
		wl_die("SO_RCVTIMEO");
	bind_to(UDP, &a4, sizeof(a4));
	name_of(UDP, &bound[UDP]);

	make(UDP_CONN, AF_INET, SOCK_DGRAM);
	bind_to(UDP_CONN, &a4, sizeof(a4));
	if (connect(fds[UDP_CONN], (struct sockaddr *)&bound[UDP], sizeof(struct sockaddr_in)))
		wl_die("connect(UDP)");

	make(UDP6_MAPPED, AF_INET6, SOCK_DGRAM);
	set(UDP6_MAPPED, IPPROTO_IPV6, IPV6_V6ONLY, 0);
	bind_to(UDP6_MAPPED, &mapped, sizeof(mapped));
	mapped.sin6_port = htons(port_of(UDP));
	if (connect(fds[UDP6_MAPPED], (struct sockaddr *)&mapped, sizeof(mapped)))
		wl_die("connect(v4-mapped UDP)");

	for (int i = 0; i < NSOCK; i++)
		name_of(i, &bound[i]);
}

static void check_names(void)
{
	for (int i = 0; i < NSOCK; i++) {
		struct sockaddr_storage now;
		name_of(i, &now);
		WL_CHECK(memcmp(&now, &bound[i], sizeof(now)) == 0, "%s: bound elsewhere (port %d, was %d)", names[i],
			 ntohs(((struct sockaddr_in *)&now)->sin_port), port_of(i));
	}
	WL_CHECK(port_of(UNBOUND) == 0, "the unbound socket has port %d", port_of(UNBOUND));
}

static void check_options(void)
{
	struct linger lg;
	struct timeval tv;
	socklen_t len;
	struct tcp_info ti;

	for (int i = 0; i < NSOCK; i++) {
		int udp = i >= UDP;
		WL_CHECK(opt(i, SOL_SOCKET, SO_TYPE) == (udp ? SOCK_DGRAM : SOCK_STREAM), "%s: wrong type", names[i]);
		WL_CHECK(opt(i, SOL_SOCKET, SO_ACCEPTCONN) == (i <= DUAL6), "%s: listening is %d", names[i],
			 opt(i, SOL_SOCKET, SO_ACCEPTCONN));
	}
	WL_CHECK(fcntl(fds[LISTEN4], F_GETFL) & O_NONBLOCK, "the listener lost O_NONBLOCK");
	WL_CHECK(!(fcntl(fds[REUSEPORT4], F_GETFL) & O_NONBLOCK), "a listener got O_NONBLOCK");
	WL_CHECK(opt(LISTEN4, SOL_SOCKET, SO_REUSEADDR) == 1, "SO_REUSEADDR lost");
	WL_CHECK(opt(REUSEPORT4, SOL_SOCKET, SO_REUSEADDR) == 0, "SO_REUSEADDR appeared");
	WL_CHECK(opt(REUSEPORT4, SOL_SOCKET, SO_REUSEPORT) == 1, "SO_REUSEPORT lost");
	WL_CHECK(opt(LISTEN6, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "IPV6_V6ONLY lost");
	WL_CHECK(opt(DUAL6, IPPROTO_IPV6, IPV6_V6ONLY) == 0, "IPV6_V6ONLY appeared");
	len = sizeof(ti);
	if (getsockopt(fds[LISTEN4], IPPROTO_TCP, TCP_INFO, &ti, &len) == 0)
		WL_CHECK(ti.tcpi_sacked == 7, "the listener's backlog is %u, not 7", ti.tcpi_sacked);
	else
		wl_fail("TCP_INFO: %s", strerror(errno));
	WL_CHECK(opt(BOUND, SOL_SOCKET, SO_KEEPALIVE) == 1, "SO_KEEPALIVE lost");
	WL_CHECK(opt(BOUND, IPPROTO_TCP, TCP_KEEPIDLE) == 77, "TCP_KEEPIDLE is %d", opt(BOUND, IPPROTO_TCP, TCP_KEEPIDLE));
	WL_CHECK(opt(BOUND, IPPROTO_TCP, TCP_NODELAY) == 1, "TCP_NODELAY lost");
	len = sizeof(lg);
	if (getsockopt(fds[BOUND], SOL_SOCKET, SO_LINGER, &lg, &len) == 0)
		WL_CHECK(lg.l_onoff == 1 && lg.l_linger == 5, "SO_LINGER is %d/%d", lg.l_onoff, lg.l_linger);
	WL_CHECK(opt(UDP, SOL_SOCKET, SO_RCVBUF) == 200000, "SO_RCVBUF is %d", opt(UDP, SOL_SOCKET, SO_RCVBUF));
	WL_CHECK(opt(UDP, SOL_SOCKET, SO_PRIORITY) == 3, "SO_PRIORITY is %d", opt(UDP, SOL_SOCKET, SO_PRIORITY));
	WL_CHECK(opt(UDP, IPPROTO_IP, IP_TOS) == 0x10, "IP_TOS is %d", opt(UDP, IPPROTO_IP, IP_TOS));
	WL_CHECK(opt(UDP_CONN, SOL_SOCKET, SO_PRIORITY) == 0, "SO_PRIORITY appeared");
	len = sizeof(tv);
	if (getsockopt(fds[UDP], SOL_SOCKET, SO_RCVTIMEO, &tv, &len) == 0)
		WL_CHECK(tv.tv_sec == 2 && tv.tv_usec == 500000, "SO_RCVTIMEO is %ld.%06ld", (long)tv.tv_sec,
			 (long)tv.tv_usec);
}

/* Connects a new client to listener i and accepts it. */
static void check_accepts(int i, int family, const char *ip)
{
	int c = socket(family, SOCK_STREAM, 0), a;
	struct sockaddr_in a4 = v4(ip, port_of(i));
	struct sockaddr_in6 a6 = v6(ip, port_of(i));
	struct pollfd p = { .fd = fds[i], .events = POLLIN };

	if (connect(c, family == AF_INET ? (void *)&a4 : (void *)&a6, family == AF_INET ? sizeof(a4) : sizeof(a6))) {
		wl_fail("%s: connect from %s: %s", names[i], ip, strerror(errno));
		close(c);
		return;
	}
	if (poll(&p, 1, 5000) != 1) {
		wl_fail("%s: nothing to accept", names[i]);
	} else if ((a = accept(fds[i], NULL, NULL)) < 0) {
		wl_fail("%s: accept: %s", names[i], strerror(errno));
	} else {
		if (write(c, "x", 1) != 1 || read(a, &(char){ 0 }, 1) != 1)
			wl_fail("%s: the accepted connection does not carry data", names[i]);
		close(a);
	}
	close(c);
}

static void check_datagrams(void)
{
	char buf[32];
	struct sockaddr_storage from;
	socklen_t len = sizeof(from);
	ssize_t n;

	if (send(fds[UDP_CONN], "ping4", 5, 0) != 5)
		wl_fail("send on the connected UDP socket: %s", strerror(errno));
	n = recvfrom(fds[UDP], buf, sizeof(buf), 0, (struct sockaddr *)&from, &len);
	WL_CHECK(n == 5 && memcmp(buf, "ping4", 5) == 0, "UDP: got %zd bytes", n);
	WL_CHECK(len == sizeof(struct sockaddr_in) && memcmp(&from, &bound[UDP_CONN], len) == 0,
		 "UDP: the datagram came from elsewhere");
	if (sendto(fds[UDP], "pong", 4, 0, (struct sockaddr *)&bound[UDP_CONN], sizeof(struct sockaddr_in)) != 4)
		wl_fail("sendto: %s", strerror(errno));
	n = recv(fds[UDP_CONN], buf, sizeof(buf), 0);
	WL_CHECK(n == 4, "connected UDP: got %zd bytes", n);
	if (send(fds[UDP6_MAPPED], "ping6", 5, 0) != 5)
		wl_fail("send on the v4-mapped socket: %s", strerror(errno));
	n = recv(fds[UDP], buf, sizeof(buf), 0);
	WL_CHECK(n == 5 && memcmp(buf, "ping6", 5) == 0, "v4-mapped UDP: got %zd bytes", n);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	setup();
	wl_ready();
	wl_wait();
	check_names();
	check_options();
	check_accepts(LISTEN4, AF_INET, "127.0.0.1");
	check_accepts(REUSEPORT4, AF_INET, "127.0.0.1");
	check_accepts(LISTEN6, AF_INET6, "::1");
	check_accepts(DUAL6, AF_INET, "127.0.0.1");
	check_datagrams();
	wl_finish();
}
