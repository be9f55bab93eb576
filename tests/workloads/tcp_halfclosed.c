/*
 * tcp_halfclosed: half-closed TCP connections on loopback, IPv4 (127.0.0.1) and IPv6 (::1).
 * In each, the client sends "hello" and shuts down writing; the server sends "world" and reads
 * nothing. So the client waits in FIN_WAIT2 with "world" queued, the server in CLOSE_WAIT with
 * "hello" and the client's FIN queued (the only half-closed states that last on loopback: the
 * others end as soon as the peer answers).
 *
 * After the wait, each connection must be in the same states; the server reads "hello" then end of
 * stream; the client reads "world"; the client's writes fail with EPIPE; the server's writes still
 * reach the client ("after"), and when the server shuts down too the client sees end of stream.
 *
 * With the argument `closing`, one IPv4 connection whose FINs cross while the test drops what the
 * client sends: the workload writes the server's port to RESULT_FILE.port and waits for
 * RESULT_FILE.go (the test's drop rule is in place), then both ends shut down writing. The client
 * ends in CLOSING (its FIN unacknowledged, the server's received), the server in FIN_WAIT1 (its FIN
 * unacknowledged). With `last-ack`, the server's packets are dropped instead (the client's port in
 * RESULT_FILE.port): the client's FIN arrives, its ACK does not, then the server shuts down; client
 * in FIN_WAIT1, server in LAST_ACK. The test removes the rule before the check: then the
 * retransmissions must close both ends (end of stream on each, writes failing, both in CLOSE).
 */
#include "lib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

struct conn {
	const char *name;
	int client;
	int server;
};

static int tcp_state(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len))
		return -1;
	return ti.tcpi_state;
}

/* A connected pair through a listener on the loopback address of `family`. */
static struct conn make_pair(const char *name, int family)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	struct conn c = { .name = name };
	int l = socket(family, SOCK_STREAM, 0);

	ss.ss_family = family;
	if (family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else
		((struct sockaddr_in6 *)&ss)->sin6_addr = in6addr_loopback;
	if (l < 0 || bind(l, (struct sockaddr *)&ss, len) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&ss, &len))
		wl_die("%s: listener", name);
	c.client = socket(family, SOCK_STREAM, 0);
	if (c.client < 0 || connect(c.client, (struct sockaddr *)&ss, len))
		wl_die("%s: connect", name);
	c.server = accept(l, NULL, NULL);
	if (c.server < 0)
		wl_die("%s: accept", name);
	close(l);
	return c;
}

/* Waits until the kernel has moved `fd` to `state` (the FIN and its ACK cross the loopback). */
static int reaches(int fd, int state)
{
	for (int i = 0; i < TIMEOUT_MS / 10; i++) {
		if (tcp_state(fd) == state)
			return 1;
		usleep(10000);
	}
	return 0;
}

static void half_close(struct conn *c)
{
	if (send(c->client, "hello", 5, 0) != 5 || shutdown(c->client, SHUT_WR) || send(c->server, "world", 5, 0) != 5)
		wl_die("%s: send/shutdown", c->name);
	if (!reaches(c->client, TCP_FIN_WAIT2) || !reaches(c->server, TCP_CLOSE_WAIT))
		wl_die("%s: the states are %d and %d, not FIN_WAIT2 and CLOSE_WAIT", c->name, tcp_state(c->client),
		       tcp_state(c->server));
}

/* Reads exactly `want` (NULL: end of stream) from `fd` within the timeout. */
static void expect(const struct conn *c, const char *who, int fd, const char *want)
{
	char buf[64];
	size_t n = want ? strlen(want) : 0, got = 0;

	while (got < n || !want) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, TIMEOUT_MS) != 1) {
			wl_fail("%s: %s: nothing to read (waiting for %s)", c->name, who, want ? want : "end of stream");
			return;
		}
		r = recv(fd, buf + got, want ? n - got : sizeof(buf), MSG_DONTWAIT);
		if (r < 0) {
			wl_fail("%s: %s: recv: %s", c->name, who, strerror(errno));
			return;
		}
		if (!want) {
			WL_CHECK(r == 0, "%s: %s: %zd bytes more where the stream should end", c->name, who, r);
			return;
		}
		if (r == 0) {
			wl_fail("%s: %s: end of stream before \"%s\"", c->name, who, want);
			return;
		}
		got += r;
	}
	WL_CHECK(memcmp(buf, want, n) == 0, "%s: %s read \"%.*s\", not \"%s\"", c->name, who, (int)n, buf, want);
}

static void check(struct conn *c)
{
	WL_CHECK(tcp_state(c->client) == TCP_FIN_WAIT2, "%s: the client is in state %d, not FIN_WAIT2", c->name,
		 tcp_state(c->client));
	WL_CHECK(tcp_state(c->server) == TCP_CLOSE_WAIT, "%s: the server is in state %d, not CLOSE_WAIT", c->name,
		 tcp_state(c->server));
	expect(c, "the server", c->server, "hello");
	expect(c, "the server", c->server, NULL);
	expect(c, "the client", c->client, "world");
	errno = 0;
	WL_CHECK(send(c->client, "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE,
		 "%s: the client can still write (errno %d)", c->name, errno);
	WL_CHECK(send(c->server, "after", 5, MSG_NOSIGNAL) == 5, "%s: the server cannot write: %s", c->name,
		 strerror(errno));
	expect(c, "the client", c->client, "after");
	WL_CHECK(shutdown(c->server, SHUT_WR) == 0, "%s: the server cannot shut down: %s", c->name, strerror(errno));
	expect(c, "the client", c->client, NULL);
}

static int port_of(int fd)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);

	if (getsockname(fd, (struct sockaddr *)&sa, &len))
		wl_die("getsockname");
	return ntohs(sa.sin_port);
}

/* Waits for the test's RESULT_FILE.go, after publishing the port its drop rule names. */
static void wait_for_go(int port)
{
	char path[4096], go[4096];
	struct stat st;
	FILE *f = fopen(wl_path("port", path, sizeof(path)), "w");

	if (!f)
		wl_die("port file");
	fprintf(f, "%d\n", port);
	fclose(f);
	wl_path("go", go, sizeof(go));
	for (int i = 0; stat(go, &st) != 0; i++) {
		if (i > TIMEOUT_MS / 10)
			wl_die("no %s", go);
		usleep(10000);
	}
}

/*
 * `closing`: the client's packets are dropped, the FINs cross: client CLOSING, server FIN_WAIT1.
 * `last-ack`: the server's packets are dropped; the client's FIN arrives, then the server shuts
 * down: client FIN_WAIT1, server LAST_ACK.
 */
static void closing(int last_ack)
{
	struct conn c = make_pair(last_ack ? "IPv4 last-ack" : "IPv4 closing", AF_INET);
	int want_client = last_ack ? TCP_FIN_WAIT1 : TCP_CLOSING;
	int want_server = last_ack ? TCP_LAST_ACK : TCP_FIN_WAIT1;

	wait_for_go(port_of(last_ack ? c.client : c.server));
	if (shutdown(c.client, SHUT_WR))
		wl_die("shutdown");
	if (last_ack && !reaches(c.server, TCP_CLOSE_WAIT))
		wl_die("the server is in state %d, not CLOSE_WAIT", tcp_state(c.server));
	if (shutdown(c.server, SHUT_WR))
		wl_die("shutdown");
	if (!reaches(c.client, want_client) || !reaches(c.server, want_server))
		wl_die("the states are %d and %d, not %d and %d", tcp_state(c.client), tcp_state(c.server), want_client,
		       want_server);
	wl_ready();
	wl_wait();
	expect(&c, "the server", c.server, NULL);
	expect(&c, "the client", c.client, NULL);
	WL_CHECK(reaches(c.client, TCP_CLOSE) && reaches(c.server, TCP_CLOSE),
		 "the connection does not close: the client is in state %d, the server in %d", tcp_state(c.client),
		 tcp_state(c.server));
	WL_CHECK(send(c.client, "x", 1, MSG_NOSIGNAL) < 0 && send(c.server, "x", 1, MSG_NOSIGNAL) < 0,
		 "an end can still write");
	wl_finish();
}

int main(int argc, char **argv)
{
	struct conn conns[2];

	wl_init(argc, argv);
	if (argc > 2 && (strcmp(argv[2], "closing") == 0 || strcmp(argv[2], "last-ack") == 0))
		closing(strcmp(argv[2], "last-ack") == 0);
	signal(SIGPIPE, SIG_IGN);
	conns[0] = make_pair("IPv4", AF_INET);
	conns[1] = make_pair("IPv6", AF_INET6);
	for (int i = 0; i < 2; i++)
		half_close(&conns[i]);
	wl_ready();
	wl_wait();
	for (int i = 0; i < 2; i++)
		check(&conns[i]);
	wl_finish();
}
