/*
 * tcp_established: a TCP connection on loopback between two processes of one tree, carrying data
 * both ways the whole time (dump with --tcp-established).
 *
 *   bin/tcp_established RESULT_FILE [v6]
 *
 * The root listens on 127.0.0.1 (::1 with `v6`), forks the client, accepts its connection and
 * keeps the listener open. Each side sends a numbered byte stream (byte i of a direction is a
 * function of i, so a lost, repeated or reordered byte shows at once) and reads the other's,
 * checking every byte. Each side reads more slowly than the other writes, so both send queues and
 * both receive queues are full most of the time, as a dump finds them.
 *
 * On SIGTERM the root passes it to the client; each side stops sending, shuts its write side down
 * and reads the rest until EOF. The client reports what it sent and received through a pipe; the
 * root checks that each side received exactly what the other sent, every byte right, and that
 * data kept flowing until SIGTERM. The log has the counts.
 */
#include "lib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define TIMEOUT_MS 20000
#define WRITE_CHUNK 4096
#define READ_CHUNK 1024 /* slower than the writer: the queues fill */
#define STEP_MS 2

static pid_t client_pid;

struct side {
	const char *name;
	int fd;
	int out_stream, in_stream; /* which numbered stream each direction carries */
	uint64_t sent, received;
	int bad; /* a byte differed: stop checking, report once */
};

static unsigned char byte_at(int stream, uint64_t i)
{
	return (unsigned char)(i * 131 + (i >> 8) * 7 + (i >> 16) * 3 + (uint64_t)stream * 53);
}

/* Sends what the socket takes now, up to one chunk. */
static void pump_out(struct side *s)
{
	unsigned char buf[WRITE_CHUNK];
	ssize_t n;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = byte_at(s->out_stream, s->sent + i);
	n = send(s->fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n > 0)
		s->sent += (uint64_t)n;
	else if (n < 0 && errno != EAGAIN && errno != EINTR && !s->bad)
		wl_fail("%s: send: %s", s->name, strerror(errno)), s->bad = 1;
}

/* Reads up to `max` bytes and checks them; returns 0 at EOF, -1 when nothing was there. */
static ssize_t pump_in(struct side *s, size_t max)
{
	unsigned char buf[WRITE_CHUNK];
	ssize_t n = recv(s->fd, buf, max < sizeof(buf) ? max : sizeof(buf), MSG_DONTWAIT);

	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR && !s->bad)
			wl_fail("%s: recv: %s", s->name, strerror(errno)), s->bad = 1;
		return -1;
	}
	for (ssize_t i = 0; i < n && !s->bad; i++) {
		unsigned char want = byte_at(s->in_stream, s->received + (uint64_t)i);

		if (buf[i] != want) {
			wl_fail("%s: byte %llu received is %#x, expected %#x", s->name,
				(unsigned long long)(s->received + (uint64_t)i), buf[i], want);
			s->bad = 1;
		}
	}
	s->received += (uint64_t)n;
	return n;
}

/* Exchanges data until SIGTERM. */
static void run(struct side *s)
{
	struct pollfd pfd = { .fd = s->fd, .events = POLLIN | POLLOUT };

	while (!wl_stop && !s->bad) {
		if (poll(&pfd, 1, STEP_MS) < 0 && errno != EINTR)
			break;
		if (pfd.revents & POLLOUT)
			pump_out(s);
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			if (pump_in(s, READ_CHUNK) == 0) {
				wl_fail("%s: the peer closed the connection early", s->name);
				return;
			}
		}
		/* Pace: one turn per step, so two busy peers leave the CPUs to others. */
		poll(NULL, 0, STEP_MS);
	}
}

/* After SIGTERM: stop sending, then read everything until EOF. */
static void drain(struct side *s)
{
	struct pollfd pfd = { .fd = s->fd, .events = POLLIN };
	int64_t end = wl_now_ns() + (int64_t)TIMEOUT_MS * 1000000;

	if (shutdown(s->fd, SHUT_WR) != 0)
		wl_fail("%s: shutdown: %s", s->name, strerror(errno));
	for (;;) {
		int left = (int)((end - wl_now_ns()) / 1000000);
		ssize_t n;

		if (left <= 0) {
			wl_fail("%s: no EOF within %d ms (received %llu)", s->name, TIMEOUT_MS,
				(unsigned long long)s->received);
			return;
		}
		if (poll(&pfd, 1, left) < 0 && errno != EINTR)
			return;
		n = pump_in(s, WRITE_CHUNK);
		if (n == 0 || (n < 0 && s->bad))
			return;
	}
}

static int make_socket(int v6, struct sockaddr_storage *addr, socklen_t *len)
{
	int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);

	memset(addr, 0, sizeof(*addr));
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)addr;

		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		*len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)addr;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		*len = sizeof(*a);
	}
	return fd;
}

static void kill_client(void)
{
	if (client_pid > 0) {
		kill(client_pid, SIGKILL);
		waitpid(client_pid, NULL, 0);
	}
}

static __attribute__((noreturn)) void client(const struct sockaddr_storage *addr, socklen_t len, int v6,
					      int report)
{
	struct sockaddr_storage unused;
	socklen_t ulen;
	struct side s = { .name = "client", .out_stream = 2, .in_stream = 1 };
	char line[128];

	s.fd = make_socket(v6, &unused, &ulen);
	if (s.fd < 0 || connect(s.fd, (const struct sockaddr *)addr, len) != 0) {
		wl_fail("client: connect: %s", strerror(errno));
		_exit(1);
	}
	run(&s);
	drain(&s);
	snprintf(line, sizeof(line), "%llu %llu %d\n", (unsigned long long)s.sent, (unsigned long long)s.received,
		 wl_failures());
	_exit(write(report, line, strlen(line)) < 0);
}

int main(int argc, char **argv)
{
	struct side s = { .name = "server", .out_stream = 1, .in_stream = 2 };
	struct sockaddr_storage addr;
	socklen_t len;
	uint64_t at_ready_sent, at_ready_received;
	unsigned long long c_sent = 0, c_received = 0;
	int l, v6, report[2], c_fails = -1, status;
	char line[128] = "";

	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	v6 = argc > 2 && strcmp(argv[2], "v6") == 0;
	if (argc > 2 && !v6)
		wl_die("unknown argument %s (expected v6)", argv[2]);
	l = make_socket(v6, &addr, &len);
	if (l < 0 || bind(l, (struct sockaddr *)&addr, len) != 0 || listen(l, 1) != 0 ||
	    getsockname(l, (struct sockaddr *)&addr, &len) != 0)
		wl_die("listen");
	if (pipe(report) != 0)
		wl_die("pipe");
	client_pid = fork();
	if (client_pid < 0)
		wl_die("fork");
	if (client_pid == 0) {
		close(l);
		close(report[0]);
		client(&addr, len, v6, report[1]);
	}
	atexit(kill_client);
	close(report[1]);
	{
		struct pollfd pfd = { .fd = l, .events = POLLIN };

		if (poll(&pfd, 1, TIMEOUT_MS) <= 0 || (s.fd = accept(l, NULL, NULL)) < 0)
			wl_die("the client did not connect");
	}
	/* Some data both ways before ready, so the first dump already finds queues. */
	{
		int64_t end = wl_now_ns() + (int64_t)TIMEOUT_MS * 1000000;

		while (s.sent < 256 * 1024 && s.received < 64 * 1024 && !s.bad) {
			pump_out(&s);
			if (pump_in(&s, READ_CHUNK) == 0)
				wl_die("the client closed the connection during setup");
			if (wl_now_ns() > end)
				wl_die("no data came from the client within %d ms", TIMEOUT_MS);
			poll(NULL, 0, 1);
		}
	}

	wl_ready();
	at_ready_sent = s.sent;
	at_ready_received = s.received;
	run(&s);
	kill(client_pid, SIGTERM);
	drain(&s);

	{
		struct pollfd pfd = { .fd = report[0], .events = POLLIN };
		ssize_t n = 0;

		if (poll(&pfd, 1, TIMEOUT_MS) > 0)
			n = read(report[0], line, sizeof(line) - 1);
		line[n > 0 ? n : 0] = '\0';
	}
	if (sscanf(line, "%llu %llu %d", &c_sent, &c_received, &c_fails) != 3)
		wl_fail("no report from the client");
	if (waitpid(client_pid, &status, 0) == client_pid)
		client_pid = 0;
	wl_log("server sent %llu received %llu (at ready %llu, %llu); client sent %llu received %llu",
	       (unsigned long long)s.sent, (unsigned long long)s.received, (unsigned long long)at_ready_sent,
	       (unsigned long long)at_ready_received, c_sent, c_received);
	WL_CHECK(c_fails == 0, "the client found %d differences (see the log)", c_fails);
	WL_CHECK(c_received == s.sent, "the client received %llu bytes, the server sent %llu", c_received,
		 (unsigned long long)s.sent);
	WL_CHECK(s.received == c_sent, "the server received %llu bytes, the client sent %llu",
		 (unsigned long long)s.received, c_sent);
	WL_CHECK(s.sent > at_ready_sent || s.received > at_ready_received, "no data moved after ready");
	wl_finish();
}
