/*
 * bench_tcp: one TCP connection on loopback inside one process, MIB mebibytes queued in each
 * direction (written, never read), for the benchmark (dump and restore with --tcp-established).
 *   bin/bench_tcp RESULT_FILE [MIB]     (default 4)
 * After the wait both ends read everything the other sent and check every byte.
 */
#include "lib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static unsigned char byte_at(size_t i, int side)
{
	return (unsigned char)(i * 31 + (i >> 12) + side * 101);
}

/* Writes `total` bytes of the side's pattern without blocking past what the kernel takes. */
static size_t fill(int fd, size_t total, int side)
{
	unsigned char buf[65536];
	size_t done = 0;

	while (done < total) {
		size_t n = total - done < sizeof(buf) ? total - done : sizeof(buf), i;
		for (i = 0; i < n; i++)
			buf[i] = byte_at(done + i, side);
		ssize_t w = write(fd, buf, n);
		if (w <= 0)
			break;
		done += w;
	}
	return done;
}

static void drain(int fd, size_t total, int side)
{
	unsigned char buf[65536];
	size_t done = 0, i;

	fcntl(fd, F_SETFL, 0);
	while (done < total) {
		ssize_t n = read(fd, buf, total - done < sizeof(buf) ? total - done : sizeof(buf));
		if (n <= 0) {
			wl_fail("side %d: %zu of %zu bytes, then %s", side, done, total, n ? strerror(errno) : "EOF");
			return;
		}
		for (i = 0; i < (size_t)n; i++) {
			if (buf[i] != byte_at(done + i, side)) {
				wl_fail("side %d: byte %zu differs", side, done + i);
				return;
			}
		}
		done += n;
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int lsk, a, b, size;
	size_t total, sent_a, sent_b;

	wl_init(argc, argv);
	total = (size_t)(argc > 2 ? atoi(argv[2]) : 4) << 20;
	size = (int)total;
	lsk = socket(AF_INET, SOCK_STREAM, 0);
	if (lsk < 0 || bind(lsk, (struct sockaddr *)&sa, len) || listen(lsk, 1) ||
	    getsockname(lsk, (struct sockaddr *)&sa, &len))
		wl_die("listener");
	a = socket(AF_INET, SOCK_STREAM, 0);
	/* Room for the whole pattern in each direction: the send buffer of one side and the
	 * receive buffer of the other (the kernel doubles what it is given, and keeps some). */
	setsockopt(a, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	setsockopt(a, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	if (connect(a, (struct sockaddr *)&sa, len))
		wl_die("connect");
	b = accept(lsk, NULL, NULL);
	if (b < 0)
		wl_die("accept");
	close(lsk);
	setsockopt(b, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	setsockopt(b, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	fcntl(a, F_SETFL, O_NONBLOCK);
	fcntl(b, F_SETFL, O_NONBLOCK);
	sent_a = fill(a, total, 0);
	sent_b = fill(b, total, 1);
	wl_log("queued %zu bytes one way and %zu the other", sent_a, sent_b);
	if (sent_a != total || sent_b != total)
		wl_die("the kernel took %zu and %zu of %zu bytes", sent_a, sent_b, total);
	wl_ready();
	wl_wait();
	drain(b, total, 0);
	drain(a, total, 1);
	wl_finish();
}
