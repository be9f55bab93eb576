/*
 * tcp_stream MODE: established TCP connections on loopback carrying numbered bytes both ways,
 * all the time, for --tcp-established.
 *   pair          both ends in this process (with the listener that accepted one of them)
 *   server        listens on 127.0.0.1 (port written to RESULT_FILE.port), is ready once a client
 *                 connected
 *   client PORT   connects to a server
 * Each end writes bytes of a numbered sequence as fast as the other end takes them, and reads the
 * other's sequence in bursts with pauses, so both queues hold data at any moment. Every byte read
 * must be the next of the sequence: a byte lost, repeated or changed, a reset, an error or an early
 * end of stream fails the run. On SIGTERM an end stops writing, shuts its side down and reads the
 * other's sequence to its end (which comes once the other end got SIGTERM too), then checks the
 * listener still accepts.
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
#include <time.h>
#include <unistd.h>

struct end {
	const char *name;
	int fd;
	uint64_t sent, received;
	int eof, shut;
};

static struct end ends[2];
static int nends, listener = -1, listen_port;

/* Byte i of a sequence: a loss or repeat of any length shows at once. */
static unsigned char byte_at(uint64_t i)
{
	return (unsigned char)((i * 2654435761u) >> 24);
}

static void nonblocking(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int do_listen(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 4))
		wl_die("listen");
	getsockname(fd, (struct sockaddr *)&a, &len);
	listen_port = ntohs(a.sin_port);
	return fd;
}

static int do_connect(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)))
		wl_die("connect to port %d", port);
	return fd;
}

static void add_end(const char *name, int fd)
{
	nonblocking(fd);
	ends[nends++] = (struct end){ .name = name, .fd = fd };
}

/* Writes what the socket takes, up to 16 KiB. */
static void write_some(struct end *e)
{
	unsigned char buf[16384];
	ssize_t n;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = byte_at(e->sent + i);
	n = send(e->fd, buf, sizeof(buf), MSG_NOSIGNAL);
	if (n > 0)
		e->sent += n;
	else if (n < 0 && errno != EAGAIN)
		wl_fail("%s: send after %llu bytes: %s", e->name, (unsigned long long)e->sent, strerror(errno));
}

/* Reads what is there, checking every byte; returns -1 on an error. */
static int read_some(struct end *e)
{
	unsigned char buf[16384];
	ssize_t n = recv(e->fd, buf, sizeof(buf), 0);

	if (n == 0) {
		e->eof = 1;
		return 0;
	}
	if (n < 0) {
		if (errno == EAGAIN)
			return 0;
		wl_fail("%s: recv after %llu bytes: %s", e->name, (unsigned long long)e->received, strerror(errno));
		return -1;
	}
	for (ssize_t i = 0; i < n; i++) {
		if (buf[i] != byte_at(e->received + i)) {
			wl_fail("%s: byte %llu is %u, expected %u", e->name, (unsigned long long)(e->received + i),
				buf[i], byte_at(e->received + i));
			return -1;
		}
	}
	e->received += n;
	return 0;
}

static void exchange(void)
{
	struct timespec tick = { 0, 1000000 };
	unsigned turn = 0;

	while (!wl_stop && wl_failures() == 0) {
		/* Reads pause 150 ms in every 400: the queues fill meanwhile. */
		int reading = (turn++ % 400) < 250;
		for (int i = 0; i < nends; i++) {
			write_some(&ends[i]);
			if (reading && read_some(&ends[i]))
				return;
			if (ends[i].eof)
				wl_fail("%s: the other end closed after %llu bytes", ends[i].name,
					(unsigned long long)ends[i].received);
		}
		nanosleep(&tick, NULL);
	}
}

/* Stops writing, then reads the other side's sequence to its end. */
static void drain(void)
{
	int64_t deadline = wl_now_ns() + 20 * 1000000000LL;

	for (int i = 0; i < nends; i++) {
		if (shutdown(ends[i].fd, SHUT_WR))
			wl_fail("%s: shutdown: %s", ends[i].name, strerror(errno));
	}
	for (;;) {
		int open = 0;
		for (int i = 0; i < nends; i++) {
			if (ends[i].eof)
				continue;
			open++;
			struct pollfd p = { .fd = ends[i].fd, .events = POLLIN };
			poll(&p, 1, 10);
			if (read_some(&ends[i]))
				return;
		}
		if (!open)
			break;
		if (wl_now_ns() > deadline) {
			wl_fail("no end of stream within 20 s");
			return;
		}
	}
	for (int i = 0; i < nends; i++)
		wl_log("%s: sent %llu, received %llu", ends[i].name, (unsigned long long)ends[i].sent,
		       (unsigned long long)ends[i].received);
}

static void check_listener(void)
{
	int c, a;

	if (listener < 0)
		return;
	c = do_connect(listen_port);
	a = accept(listener, NULL, NULL);
	WL_CHECK(a >= 0, "the listener does not accept: %s", strerror(errno));
	close(a);
	close(c);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 2 ? argv[2] : "pair";
	char path[4096];

	wl_init(argc, argv);
	if (strcmp(mode, "pair") == 0) {
		listener = do_listen();
		int c = do_connect(listen_port);
		add_end("client", c);
		add_end("server", accept(listener, NULL, NULL));
	} else if (strcmp(mode, "server") == 0) {
		listener = do_listen();
		FILE *f = fopen(wl_path("port", path, sizeof(path)), "w");
		if (!f)
			wl_die("port file");
		fprintf(f, "%d\n", listen_port);
		fclose(f);
		add_end("server", accept(listener, NULL, NULL));
	} else if (strcmp(mode, "client") == 0 && argc > 3) {
		add_end("client", do_connect(atoi(argv[3])));
	} else {
		wl_die("unknown mode %s", mode);
	}
	for (int i = 0; i < nends; i++)
		if (ends[i].fd < 0)
			wl_die("accept");
	wl_ready();
	exchange();
	/* A failure during the exchange still waits for SIGTERM, as the protocol says. */
	while (!wl_stop)
		usleep(10000);
	if (wl_failures() == 0)
		drain();
	check_listener();
	wl_finish();
}
