/*
 * bench_sockets: a process holding COUNT sockets of mixed kinds, for the benchmark.
 *   bin/bench_sockets RESULT_FILE [COUNT]     (default 1000, rounded down to a multiple of 10)
 * Of every ten: three unix stream pairs (six sockets, each pair with 100 bytes queued one way),
 * one unix datagram pair (two), one UDP socket bound to 127.0.0.1 and one TCP listener on
 * 127.0.0.1. After the wait every queued byte must read back and every listener accept.
 */
#include "lib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define QUEUED 100

static int bound_inet(int type)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, type, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
		wl_die("inet socket");
	if (type == SOCK_STREAM && listen(fd, 4))
		wl_die("listen");
	return fd;
}

int main(int argc, char **argv)
{
	struct rlimit nofile;
	int groups, *fds, n = 0, i, j;
	char data[QUEUED], got[QUEUED];

	wl_init(argc, argv);
	groups = (argc > 2 ? atoi(argv[2]) : 1000) / 10;
	getrlimit(RLIMIT_NOFILE, &nofile);
	nofile.rlim_cur = nofile.rlim_max;
	setrlimit(RLIMIT_NOFILE, &nofile);
	fds = calloc(groups * 10, sizeof(int));
	for (i = 0; i < QUEUED; i++)
		data[i] = (char)(i * 7);
	for (i = 0; i < groups; i++) {
		for (j = 0; j < 3; j++) {
			if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds + n))
				wl_die("socketpair");
			if (write(fds[n], data, QUEUED) != QUEUED)
				wl_die("write");
			n += 2;
		}
		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, fds + n))
			wl_die("socketpair");
		n += 2;
		fds[n++] = bound_inet(SOCK_DGRAM);
		fds[n++] = bound_inet(SOCK_STREAM);
	}
	wl_ready();
	wl_wait();
	for (i = 0, n = 0; i < groups; i++, n += 10) {
		for (j = 0; j < 3; j++) {
			if (read(fds[n + 2 * j + 1], got, QUEUED) != QUEUED || memcmp(got, data, QUEUED))
				wl_fail("pair %d.%d lost its queued bytes", i, j);
		}
		struct sockaddr_in sa;
		socklen_t len = sizeof(sa);
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (getsockname(fds[n + 9], (struct sockaddr *)&sa, &len) || connect(c, (struct sockaddr *)&sa, len))
			wl_fail("listener %d does not accept: %s", i, strerror(errno));
		close(c);
	}
	wl_finish();
}
