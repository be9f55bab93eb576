/*
 * unix_sk: unix socket cases that unix_sockets.c leaves out (one mode per run, or several).
 *
 *   bin/unix_sk RESULT_FILE MODE... [ext=PATH] [extstream=PATH]
 *
 * Modes:
 *   backlog      a listener (abstract name) with two connections waiting in its backlog, their
 *                clients silent; after the wait both are accepted and talk both ways
 *   backlog-data the same, a client having sent 5 bytes while it waits (CRIU refuses this)
 *   options      a stream pair: SO_SNDBUF, SO_RCVBUF, SO_RCVTIMEO, SO_SNDTIMEO, SO_LINGER,
 *                SO_PRIORITY, SO_KEEPALIVE and O_NONBLOCK on one end, SO_PASSCRED on the other
 *                (its queue empty); every value must be the same after the wait
 *   peek-off     a stream pair with "0123456789" queued and SO_PEEK_OFF 3 on the reader: the peek
 *                offset and the queue as they were, a peek starting at offset 3 (CRIU's images have
 *                no place for the peek offset: criu-ts keeps it in a field of its own)
 *   relative     a datagram socket bound to a relative name (RESULT_FILE.rel, from its directory, which
 *                becomes our working directory) and a client connected to it by that name: the name
 *                is still relative after the wait, the queued datagram is there, the client reaches it
 *   filter       a datagram pair whose receiver has a classic BPF filter dropping datagrams longer
 *                than 4 bytes: the same program after the wait, still dropping long ones
 *   dgram-server a datagram server bound to RESULT_FILE.srv and two clients connect()ed to it,
 *                datagrams queued from both; after the wait they arrive in order, the clients are
 *                still connected to the server (getpeername) and can send more
 *   dgram-senders a datagram server bound to an abstract name with six requests queued from three
 *                senders taking turns: two bound to names of their own (sendto, not connected) and
 *                one unnamed; after the wait each request says who sent it (recvfrom) and a reply
 *                to that address reaches the sender
 *   semi-closed  a stream pair whose other end was closed after sending 3000 bytes: they are read
 *                back, then EOF, and a send fails with EPIPE
 *   scm-mix      two fds in flight in one message of a stream pair: a file also open here at
 *                offset 2 (one open file: moving our offset moves the received one), and one end
 *                of a datagram pair, closed here, with a datagram queued for it; after the wait
 *                both come out of the queue and work
 *   ext-dgram    a datagram socket connected to ext=PATH, a server outside the tree, sends
 *                "before" at setup and "after" after the wait (the test checks the server got both)
 *   ext-reply    ext-dgram with the socket bound to "@criu-ts-PID-ext": the server sends it
 *                "reply" before the dump, which must be read after the wait
 *   ext-stream   a stream socket connected to extstream=PATH, a listener outside the tree (the
 *                dump must be refused)
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

static const char *mode;
static const char *ext_path, *ext_stream_path;

#define FAIL(...) wl_fail("%s: " __VA_ARGS__)

static int wait_in(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int n;

	do
		n = poll(&pfd, 1, TIMEOUT_MS);
	while (n < 0 && errno == EINTR);
	return n;
}

static ssize_t recv_wait(int fd, void *buf, size_t len)
{
	ssize_t n;

	if (wait_in(fd) <= 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	do
		n = recv(fd, buf, len, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	return n;
}

static socklen_t addr_of(struct sockaddr_un *sa, const char *name, int abstract)
{
	size_t len = strlen(name);

	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path + (abstract ? 1 : 0), name, len);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
}

static int talks(int a, int b)
{
	char c = 0;

	return send(a, "x", 1, MSG_NOSIGNAL) == 1 && recv_wait(b, &c, 1) == 1 && c == 'x' &&
	       send(b, "y", 1, MSG_NOSIGNAL) == 1 && recv_wait(a, &c, 1) == 1 && c == 'y';
}

/* ---------------------------------------------------------------- backlog */

static int bl_listener, bl_clients[2], bl_data;

static void setup_backlog(void)
{
	char name[64];
	struct sockaddr_un sa;
	socklen_t len;

	snprintf(name, sizeof(name), "criu-ts-%d-unix-sk-backlog", getpid());
	len = addr_of(&sa, name, 1);
	bl_listener = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bl_listener < 0 || bind(bl_listener, (struct sockaddr *)&sa, len) || listen(bl_listener, 5))
		wl_die("%s: listener", mode);
	for (int i = 0; i < 2; i++) {
		bl_clients[i] = socket(AF_UNIX, SOCK_STREAM, 0);
		if (bl_clients[i] < 0 || connect(bl_clients[i], (struct sockaddr *)&sa, len))
			wl_die("%s: connect", mode);
	}
	if (bl_data && send(bl_clients[0], "hello", 5, 0) != 5)
		wl_die("%s: send", mode);
}

static void setup_backlog_data(void)
{
	bl_data = 1;
	setup_backlog();
}

static void check_backlog(void)
{
	char buf[16];

	for (int i = 0; i < 2; i++) {
		int s;

		if (wait_in(bl_listener) <= 0 || (s = accept(bl_listener, NULL, NULL)) < 0) {
			FAIL("connection %d is not in the backlog any more: %s", mode, i, strerror(errno));
			continue;
		}
		/* The oldest connection comes first, with what its client sent. */
		if (bl_data && i == 0 && (recv_wait(s, buf, sizeof(buf)) != 5 || memcmp(buf, "hello", 5) != 0))
			FAIL("the bytes sent while waiting are lost", mode);
		if (!talks(bl_clients[i], s))
			FAIL("accepted connection %d does not reach client %d: %s", mode, i, i, strerror(errno));
		close(s);
	}
	fcntl(bl_listener, F_SETFL, O_NONBLOCK);
	if (accept(bl_listener, NULL, NULL) >= 0 || errno != EAGAIN)
		FAIL("a third connection waits in the backlog", mode);
}

/* ---------------------------------------------------------------- options */

static int opt_a, opt_b;
struct opt_values {
	int sndbuf, rcvbuf, priority, keepalive, passcred, flags;
	struct timeval rcvtimeo, sndtimeo;
	struct linger linger;
};
static struct opt_values opt_before;

static void read_options(struct opt_values *v)
{
	socklen_t l;

	memset(v, 0, sizeof(*v));
	l = sizeof(int);
	getsockopt(opt_a, SOL_SOCKET, SO_SNDBUF, &v->sndbuf, &l);
	l = sizeof(int);
	getsockopt(opt_a, SOL_SOCKET, SO_RCVBUF, &v->rcvbuf, &l);
	l = sizeof(int);
	getsockopt(opt_a, SOL_SOCKET, SO_PRIORITY, &v->priority, &l);
	l = sizeof(int);
	getsockopt(opt_a, SOL_SOCKET, SO_KEEPALIVE, &v->keepalive, &l);
	l = sizeof(int);
	getsockopt(opt_b, SOL_SOCKET, SO_PASSCRED, &v->passcred, &l);
	l = sizeof(struct timeval);
	getsockopt(opt_a, SOL_SOCKET, SO_RCVTIMEO, &v->rcvtimeo, &l);
	l = sizeof(struct timeval);
	getsockopt(opt_a, SOL_SOCKET, SO_SNDTIMEO, &v->sndtimeo, &l);
	l = sizeof(struct linger);
	getsockopt(opt_a, SOL_SOCKET, SO_LINGER, &v->linger, &l);
	v->flags = fcntl(opt_a, F_GETFL);
}

static void setup_options(void)
{
	int sv[2], snd = 40000, rcv = 60000, prio = 3, on = 1;
	struct timeval rt = { 2, 500000 }, st = { 1, 250000 };
	struct linger lg = { 1, 7 };

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		wl_die("%s: socketpair", mode);
	opt_a = sv[0];
	opt_b = sv[1];
	if (setsockopt(opt_a, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd)) ||
	    setsockopt(opt_a, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv)) ||
	    setsockopt(opt_a, SOL_SOCKET, SO_PRIORITY, &prio, sizeof(prio)) ||
	    setsockopt(opt_a, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) ||
	    setsockopt(opt_a, SOL_SOCKET, SO_RCVTIMEO, &rt, sizeof(rt)) ||
	    setsockopt(opt_a, SOL_SOCKET, SO_SNDTIMEO, &st, sizeof(st)) ||
	    setsockopt(opt_a, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) ||
	    setsockopt(opt_b, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) ||
	    fcntl(opt_a, F_SETFL, O_NONBLOCK))
		wl_die("%s: setsockopt", mode);
	if (send(opt_b, "q", 1, 0) != 1) /* queued for a, which does not pass credentials */
		wl_die("%s: send", mode);
	read_options(&opt_before);
	if (opt_before.sndbuf != 80000 || opt_before.rcvbuf != 120000 || !opt_before.passcred ||
	    !(opt_before.flags & O_NONBLOCK))
		wl_die("%s: unexpected option values", mode);
}

static void check_options(void)
{
	struct opt_values now;
	char c = 0;

	read_options(&now);
#define SAME(field, what)                                                                          \
	if (now.field != opt_before.field)                                                         \
		FAIL("%s is %ld, was %ld", mode, what, (long)now.field, (long)opt_before.field);
	SAME(sndbuf, "SO_SNDBUF");
	SAME(rcvbuf, "SO_RCVBUF");
	SAME(priority, "SO_PRIORITY");
	SAME(keepalive, "SO_KEEPALIVE");
	SAME(passcred, "SO_PASSCRED");
	SAME(rcvtimeo.tv_sec, "SO_RCVTIMEO seconds");
	SAME(rcvtimeo.tv_usec, "SO_RCVTIMEO microseconds");
	SAME(sndtimeo.tv_sec, "SO_SNDTIMEO seconds");
	SAME(sndtimeo.tv_usec, "SO_SNDTIMEO microseconds");
	SAME(linger.l_onoff, "SO_LINGER on");
	SAME(linger.l_linger, "SO_LINGER seconds");
	SAME(flags, "the file status flags");
	if (recv_wait(opt_a, &c, 1) != 1 || c != 'q')
		FAIL("the queued byte is lost", mode);
	if (!talks(opt_a, opt_b))
		FAIL("the pair does not talk: %s", mode, strerror(errno));
}

/* ---------------------------------------------------------------- peek-off */

static int pk_tx, pk_rx;

static void setup_peek_off(void)
{
	int sv[2], off = 3;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || setsockopt(sv[1], SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off)) ||
	    send(sv[0], "0123456789", 10, 0) != 10)
		wl_die("%s: setup", mode);
	pk_tx = sv[0];
	pk_rx = sv[1];
}

static void check_peek_off(void)
{
	int off = -2;
	socklen_t len = sizeof(off);
	char buf[16] = "";

	if (getsockopt(pk_rx, SOL_SOCKET, SO_PEEK_OFF, &off, &len) || off != 3)
		FAIL("SO_PEEK_OFF is %d, was 3", mode, off);
	if (wait_in(pk_rx) <= 0 || recv(pk_rx, buf, 2, MSG_PEEK | MSG_DONTWAIT) != 2 || memcmp(buf, "34", 2) != 0)
		FAIL("a peek did not start at offset 3 (got \"%.2s\")", mode, buf);
	len = sizeof(off);
	if (getsockopt(pk_rx, SOL_SOCKET, SO_PEEK_OFF, &off, &len) || off != 5)
		FAIL("the peek offset did not move to 5 (it is %d)", mode, off);
	if (recv_wait(pk_rx, buf, 10) != 10 || memcmp(buf, "0123456789", 10) != 0)
		FAIL("the queue is not what was sent (\"%.10s\")", mode, buf);
	(void)pk_tx;
}

/* ---------------------------------------------------------------- relative */

static int rel_rx, rel_tx;
static char rel_full[4096], rel_name[256];

static void setup_relative(void)
{
	struct sockaddr_un sa;
	socklen_t len;
	char dir[4096], *slash;

	wl_path("rel", rel_full, sizeof(rel_full));
	snprintf(dir, sizeof(dir), "%s", rel_full);
	slash = strrchr(dir, '/');
	if (!slash)
		wl_die("%s: no directory in %s", mode, rel_full);
	*slash = '\0';
	snprintf(rel_name, sizeof(rel_name), "%s", slash + 1);
	if (chdir(dir))
		wl_die("%s: chdir %s", mode, dir);
	len = addr_of(&sa, rel_name, 0);
	unlink(rel_name);
	rel_rx = socket(AF_UNIX, SOCK_DGRAM, 0);
	rel_tx = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (rel_rx < 0 || rel_tx < 0 || bind(rel_rx, (struct sockaddr *)&sa, len) ||
	    connect(rel_tx, (struct sockaddr *)&sa, len) || send(rel_tx, "r1", 2, 0) != 2)
		wl_die("%s: bind/connect %s", mode, rel_name);
}

static void check_relative(void)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);
	char buf[8];

	if (getsockname(rel_rx, (struct sockaddr *)&sa, &len) || strcmp(sa.sun_path, rel_name) != 0)
		FAIL("the socket's name is not %s any more", mode, rel_name);
	if (recv_wait(rel_rx, buf, sizeof(buf)) != 2 || memcmp(buf, "r1", 2) != 0)
		FAIL("the queued datagram is lost", mode);
	if (send(rel_tx, "r2", 2, 0) != 2 || recv_wait(rel_rx, buf, sizeof(buf)) != 2 || memcmp(buf, "r2", 2) != 0)
		FAIL("the client does not reach the socket: %s", mode, strerror(errno));
	unlink(rel_full);
}

/* ---------------------------------------------------------------- filter */

static int flt_tx, flt_rx;
static struct sock_filter flt_code[] = {
	BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
	BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, 4, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, 0),
	BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
};
#define FLT_LEN (sizeof(flt_code) / sizeof(flt_code[0]))

static void setup_filter(void)
{
	int sv[2];
	struct sock_fprog prog = { .len = FLT_LEN, .filter = flt_code };

	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) ||
	    setsockopt(sv[1], SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)))
		wl_die("%s: socketpair/SO_ATTACH_FILTER", mode);
	flt_tx = sv[0];
	flt_rx = sv[1];
	if (send(flt_tx, "ok", 2, 0) != 2 || send(flt_tx, "toolong", 7, 0) != 7)
		wl_die("%s: send", mode);
}

static void check_filter(void)
{
	struct sock_filter got[16];
	socklen_t len = 16;
	char buf[16];

	if (getsockopt(flt_rx, SOL_SOCKET, SO_GET_FILTER, got, &len) != 0 || len != FLT_LEN ||
	    memcmp(got, flt_code, sizeof(flt_code)) != 0)
		FAIL("the filter is not the one attached (%u instructions)", mode, len);
	if (recv_wait(flt_rx, buf, sizeof(buf)) != 2 || memcmp(buf, "ok", 2) != 0)
		FAIL("the short datagram queued is lost", mode);
	if (send(flt_tx, "toolong", 7, 0) != 7 || send(flt_tx, "hi", 2, 0) != 2)
		FAIL("send: %s", mode, strerror(errno));
	if (recv_wait(flt_rx, buf, sizeof(buf)) != 2 || memcmp(buf, "hi", 2) != 0)
		FAIL("the filter lets a long datagram through, or drops a short one", mode);
	if (recv(flt_rx, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
		FAIL("a datagram more than expected", mode);
}

/* ---------------------------------------------------------------- dgram-server */

static int srv, clients[2];
static char srv_path[4096];

static void setup_dgram_server(void)
{
	struct sockaddr_un sa;
	socklen_t len;

	wl_path("srv", srv_path, sizeof(srv_path));
	len = addr_of(&sa, srv_path, 0);
	unlink(srv_path);
	srv = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (srv < 0 || bind(srv, (struct sockaddr *)&sa, len))
		wl_die("%s: bind", mode);
	for (int i = 0; i < 2; i++) {
		clients[i] = socket(AF_UNIX, SOCK_DGRAM, 0);
		if (clients[i] < 0 || connect(clients[i], (struct sockaddr *)&sa, len))
			wl_die("%s: connect", mode);
	}
	for (int i = 0; i < 4; i++) {
		char msg[32];
		int n = snprintf(msg, sizeof(msg), "message %d from %d", i, i % 2);

		if (send(clients[i % 2], msg, (size_t)n, 0) != n)
			wl_die("%s: send", mode);
	}
}

static void check_dgram_server(void)
{
	for (int i = 0; i < 4; i++) {
		char msg[32], want[32];
		int n = snprintf(want, sizeof(want), "message %d from %d", i, i % 2);
		ssize_t got = recv_wait(srv, msg, sizeof(msg));

		if (got != n || memcmp(msg, want, (size_t)n) != 0)
			FAIL("datagram %d: got %zd bytes, expected \"%s\"", mode, i, got, want);
	}
	for (int i = 0; i < 2; i++) {
		struct sockaddr_un peer;
		socklen_t len = sizeof(peer);
		char c = 0;

		if (getpeername(clients[i], (struct sockaddr *)&peer, &len) || strcmp(peer.sun_path, srv_path) != 0)
			FAIL("client %d is not connected to the server any more", mode, i);
		if (send(clients[i], "n", 1, 0) != 1 || recv_wait(srv, &c, 1) != 1 || c != 'n')
			FAIL("client %d cannot send to the server: %s", mode, i, strerror(errno));
	}
	unlink(srv_path);
}

/* ---------------------------------------------------------------- dgram-senders */

static int ds_srv, ds_senders[3];

/* An abstract address "@criu-ts-PID-TAG"; returns its length. */
static socklen_t abstract_addr(struct sockaddr_un *sa, const char *tag)
{
	char name[64];

	snprintf(name, sizeof(name), "criu-ts-%d-%s", getpid(), tag);
	return addr_of(sa, name, 1);
}

static void setup_dgram_senders(void)
{
	struct sockaddr_un sa, to;
	socklen_t len, to_len = abstract_addr(&to, "ds-srv");

	ds_srv = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (ds_srv < 0 || bind(ds_srv, (struct sockaddr *)&to, to_len))
		wl_die("%s: bind the server", mode);
	/* Two named senders (sendto, not connected) and an unnamed one, taking turns. */
	for (int i = 0; i < 3; i++) {
		char tag[16];

		ds_senders[i] = socket(AF_UNIX, SOCK_DGRAM, 0);
		snprintf(tag, sizeof(tag), "ds-%d", i);
		len = abstract_addr(&sa, tag);
		if (ds_senders[i] < 0 || (i < 2 && bind(ds_senders[i], (struct sockaddr *)&sa, len)))
			wl_die("%s: sender %d", mode, i);
	}
	for (int i = 0; i < 6; i++) {
		char msg[32];
		int n = snprintf(msg, sizeof(msg), "request %d", i);

		if (sendto(ds_senders[i % 3], msg, (size_t)n, 0, (struct sockaddr *)&to, to_len) != n)
			wl_die("%s: send %d", mode, i);
	}
}

/* Each request comes from its own sender, and a reply to that address reaches it. */
static void check_dgram_senders(void)
{
	for (int i = 0; i < 6; i++) {
		struct sockaddr_un from, want;
		socklen_t from_len = sizeof(from), want_len = 0;
		char msg[32], tag[16], want_msg[32], reply[32];
		int n = snprintf(want_msg, sizeof(want_msg), "request %d", i);
		ssize_t got;

		if (wait_in(ds_srv) <= 0) {
			FAIL("request %d did not come", mode, i);
			return;
		}
		got = recvfrom(ds_srv, msg, sizeof(msg), MSG_DONTWAIT, (struct sockaddr *)&from, &from_len);
		if (got != n || memcmp(msg, want_msg, (size_t)n) != 0) {
			FAIL("request %d: got %zd bytes \"%.*s\"", mode, i, got, (int)(got > 0 ? got : 0), msg);
			continue;
		}
		if (i % 3 == 2) {
			if (from_len > sizeof(sa_family_t))
				FAIL("request %d came from a named socket, its sender had no name", mode, i);
			continue;
		}
		snprintf(tag, sizeof(tag), "ds-%d", i % 3);
		want_len = abstract_addr(&want, tag);
		if (from_len != want_len || memcmp(&from, &want, want_len) != 0) {
			FAIL("request %d came from \"%.*s\", not from its sender %s", mode, i,
			     (int)(from_len > 3 ? from_len - 3 : 0), from.sun_path + 1, tag);
			continue;
		}
		/* The reply goes to the address the request came from. */
		snprintf(reply, sizeof(reply), "reply %d", i);
		if (sendto(ds_srv, reply, strlen(reply), 0, (struct sockaddr *)&from, from_len) != (ssize_t)strlen(reply) ||
		    recv_wait(ds_senders[i % 3], msg, sizeof(msg)) != (ssize_t)strlen(reply) ||
		    memcmp(msg, reply, strlen(reply)) != 0)
			FAIL("the reply to request %d did not reach %s", mode, i, tag);
	}
}

/* ---------------------------------------------------------------- semi-closed */

#define SEMI_BYTES 3000
static int semi;

static void setup_semi_closed(void)
{
	int sv[2];
	unsigned char buf[SEMI_BYTES];

	for (int i = 0; i < SEMI_BYTES; i++)
		buf[i] = (unsigned char)(i * 13 + 5);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || send(sv[1], buf, sizeof(buf), 0) != sizeof(buf))
		wl_die("%s: socketpair", mode);
	close(sv[1]);
	semi = sv[0];
}

static void check_semi_closed(void)
{
	unsigned char buf[SEMI_BYTES + 1];
	size_t got = 0;
	ssize_t n;

	while (got < sizeof(buf) && (n = recv_wait(semi, buf + got, sizeof(buf) - got)) > 0)
		got += (size_t)n;
	if (got != SEMI_BYTES)
		FAIL("%zu of %d bytes came back before EOF", mode, got, SEMI_BYTES);
	for (size_t i = 0; i < got && i < SEMI_BYTES; i++)
		if (buf[i] != (unsigned char)(i * 13 + 5)) {
			FAIL("byte %zu differs", mode, i);
			break;
		}
	if (recv(semi, buf, 1, MSG_DONTWAIT) != 0)
		FAIL("no EOF after the data", mode);
	if (send(semi, "x", 1, MSG_NOSIGNAL) >= 0 || errno != EPIPE)
		FAIL("a send does not fail with EPIPE", mode);
}

/* ---------------------------------------------------------------- scm-mix */

static int mix_a, mix_b, mix_file, mix_y;

static void setup_scm_mix(void)
{
	int pair[2], dg[2], fds[2];
	char path[4096], cbuf[CMSG_SPACE(sizeof(fds))];
	struct iovec iov = { .iov_base = "M", .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	wl_path("scmfile", path, sizeof(path));
	mix_file = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (mix_file < 0 || write(mix_file, "abcdef", 6) != 6 || lseek(mix_file, 2, SEEK_SET) != 2)
		wl_die("%s: file", mode);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg))
		wl_die("%s: socketpair", mode);
	mix_a = pair[0];
	mix_b = pair[1];
	mix_y = dg[1];
	if (send(mix_y, "to-x", 4, 0) != 4)
		wl_die("%s: send", mode);
	fds[0] = mix_file;
	fds[1] = dg[0];
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(fds));
	memcpy(CMSG_DATA(cm), fds, sizeof(fds));
	if (sendmsg(mix_a, &msg, 0) != 1)
		wl_die("%s: sendmsg", mode);
	close(dg[0]); /* only in flight now */
}

static void check_scm_mix(void)
{
	char c = 0, buf[8], cbuf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	int fds[2];

	if (wait_in(mix_b) <= 0 || recvmsg(mix_b, &msg, MSG_DONTWAIT) != 1 || c != 'M') {
		FAIL("the message with the fds did not come: %s", mode, strerror(errno));
		return;
	}
	cm = CMSG_FIRSTHDR(&msg);
	if (!cm || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(fds))) {
		FAIL("the message came without its two fds", mode);
		return;
	}
	memcpy(fds, CMSG_DATA(cm), sizeof(fds));
	if (lseek(fds[0], 0, SEEK_CUR) != 2)
		FAIL("the file in flight is not at offset 2", mode);
	lseek(mix_file, 4, SEEK_SET);
	if (lseek(fds[0], 0, SEEK_CUR) != 4)
		FAIL("the file in flight is not the open file we hold", mode);
	if (read(fds[0], buf, 2) != 2 || memcmp(buf, "ef", 2) != 0)
		FAIL("the file in flight reads wrong", mode);
	if (recv_wait(fds[1], buf, sizeof(buf)) != 4 || memcmp(buf, "to-x", 4) != 0)
		FAIL("the datagram queued for the socket in flight is lost", mode);
	if (send(mix_y, "again", 5, 0) != 5 || recv_wait(fds[1], buf, sizeof(buf)) != 5 || memcmp(buf, "again", 5) != 0)
		FAIL("the socket in flight is not connected to its peer any more", mode);
	close(fds[0]);
	close(fds[1]);
}

/* ---------------------------------------------------------------- ext-dgram, ext-stream */

static int ext_sk, ext_stream_sk, ext_reply;

static void setup_ext_dgram(void)
{
	struct sockaddr_un sa;
	socklen_t len;

	if (!ext_path)
		wl_die("%s: needs ext=PATH", mode);
	ext_sk = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (ext_reply) {
		char name[64];

		snprintf(name, sizeof(name), "criu-ts-%d-ext", getpid());
		len = addr_of(&sa, name, 1);
		if (ext_sk < 0 || bind(ext_sk, (struct sockaddr *)&sa, len))
			wl_die("%s: bind", mode);
	}
	len = addr_of(&sa, ext_path, 0);
	if (ext_sk < 0 || connect(ext_sk, (struct sockaddr *)&sa, len) || send(ext_sk, "before", 6, 0) != 6)
		wl_die("%s: connect to %s", mode, ext_path);
}

static void check_ext_dgram(void)
{
	char buf[16];

	if (ext_reply && (recv_wait(ext_sk, buf, sizeof(buf)) != 5 || memcmp(buf, "reply", 5) != 0))
		FAIL("the reply queued from the server outside the tree is lost", mode);
	if (send(ext_sk, "after", 5, 0) != 5)
		FAIL("cannot send to the server outside the tree: %s", mode, strerror(errno));
}

static void setup_ext_reply(void)
{
	ext_reply = 1;
	setup_ext_dgram();
}

static void setup_ext_stream(void)
{
	struct sockaddr_un sa;
	socklen_t len;

	if (!ext_stream_path)
		wl_die("%s: needs extstream=PATH", mode);
	len = addr_of(&sa, ext_stream_path, 0);
	ext_stream_sk = socket(AF_UNIX, SOCK_STREAM, 0);
	if (ext_stream_sk < 0 || connect(ext_stream_sk, (struct sockaddr *)&sa, len))
		wl_die("%s: connect to %s", mode, ext_stream_path);
}

static void check_ext_stream(void)
{
	if (send(ext_stream_sk, "s", 1, MSG_NOSIGNAL) != 1)
		FAIL("cannot send to the listener outside the tree: %s", mode, strerror(errno));
}

struct mode_desc {
	const char *name;
	void (*setup)(void);
	void (*check)(void);
};

static const struct mode_desc modes[] = {
	{ "backlog", setup_backlog, check_backlog },
	{ "backlog-data", setup_backlog_data, check_backlog },
	{ "options", setup_options, check_options },
	{ "peek-off", setup_peek_off, check_peek_off },
	{ "relative", setup_relative, check_relative },
	{ "filter", setup_filter, check_filter },
	{ "dgram-server", setup_dgram_server, check_dgram_server },
	{ "dgram-senders", setup_dgram_senders, check_dgram_senders },
	{ "semi-closed", setup_semi_closed, check_semi_closed },
	{ "scm-mix", setup_scm_mix, check_scm_mix },
	{ "ext-dgram", setup_ext_dgram, check_ext_dgram },
	{ "ext-reply", setup_ext_reply, check_ext_dgram },
	{ "ext-stream", setup_ext_stream, check_ext_stream },
};
#define NMODES (sizeof(modes) / sizeof(modes[0]))

int main(int argc, char **argv)
{
	int chosen[NMODES] = { 0 };

	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	for (int i = 2; i < argc; i++) {
		size_t m = 0;

		if (strncmp(argv[i], "ext=", 4) == 0) {
			ext_path = argv[i] + 4;
			continue;
		}
		if (strncmp(argv[i], "extstream=", 10) == 0) {
			ext_stream_path = argv[i] + 10;
			continue;
		}
		while (m < NMODES && strcmp(modes[m].name, argv[i]) != 0)
			m++;
		if (m == NMODES)
			wl_die("unknown mode %s", argv[i]);
		chosen[m] = 1;
	}
	for (size_t m = 0; m < NMODES; m++) {
		if (!chosen[m])
			continue;
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
