/*
 * unix_sockets: AF_UNIX sockets in every state a dump must keep.
 *
 *   bin/unix_sockets RESULT_FILE [MODE...]     (no MODE: all of them)
 *
 * Modes:
 *   pair-stream, pair-dgram, pair-seqpacket
 *            a socketpair with data queued both ways (messages of 100, 1 and 700 bytes; their
 *            boundaries must stay for dgram and seqpacket), read back byte for byte
 *   path     a stream listener bound to RESULT_FILE.sock with one accepted connection holding
 *            data both ways, and a dgram socket bound to RESULT_FILE.dsock holding datagrams
 *            sent with sendto(path); after the wait the names and both paths still work
 *   abstract the same with abstract names ("\0criu-ts-PID-...")
 *   unbound  an unbound stream socket and an unbound dgram socket: still unnamed, still usable
 *   backlog  a listener with two connections waiting in its backlog, each client having sent
 *            data; they are accepted only after the wait
 *   fork     a stream pair and a seqpacket pair across a fork, data queued both ways
 *   shared   one dgram socket in the fds of parent and child (one open file: O_NONBLOCK set by
 *            the parent is seen by the child); both send through it to its peer
 *   scm-rights  a pipe's read end in flight (SCM_RIGHTS), our copy closed; 777 bytes then EOF
 *   scm-creds   SO_PASSCRED on a receiver; one datagram with explicit SCM_CREDENTIALS and one
 *            without, both must carry our pid, uid and gid
 *   shutdown stream pairs after shutdown(SHUT_WR), (SHUT_RD) and (SHUT_RDWR) on one end: EOF and
 *            EPIPE where they belong, the other direction still open
 *   options  SO_SNDBUF/SO_RCVBUF set, SO_PASSCRED on, SO_PEEK_OFF 3 with data queued
 *   deleted  a dgram socket and a stream listener bound to paths that were then removed: the
 *            names stay, the files stay gone, the connected peers still reach them
 *
 * The result names the mode of each difference.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define TIMEOUT_MS 10000
#define MAX_CHILDREN 4

static const char *mode; /* the mode being set up or checked, for messages */

#define FAIL(...) wl_fail("%s: " __VA_ARGS__)

static unsigned char byte_at(int stream, size_t i)
{
	return (unsigned char)(i * 131 + (i >> 8) * 7 + stream * 53);
}

static void fill(unsigned char *buf, int stream, size_t off, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = byte_at(stream, off + i);
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

/* One recv, waiting up to TIMEOUT_MS for something to come; -1 with errno on failure. */
static ssize_t recv_wait(int fd, void *buf, size_t len, int flags)
{
	ssize_t n;

	if (wait_fd(fd, POLLIN, TIMEOUT_MS) <= 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	do
		n = recv(fd, buf, len, flags | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	return n;
}

/* Reads exactly len bytes of a stream socket (several recvs); returns how many came. */
static size_t recv_all(int fd, unsigned char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = recv_wait(fd, buf + got, len - got, 0);

		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

/* Message sizes queued in each direction by the pair modes. */
static const size_t sizes[] = { 100, 1, 700 };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

/* Sends the messages of `sizes`, stream `stream` continuing from one to the next. */
static int send_msgs(int fd, int stream)
{
	unsigned char buf[1024];
	size_t off = 0;

	for (size_t i = 0; i < NSIZES; i++) {
		fill(buf, stream, off, sizes[i]);
		if (send(fd, buf, sizes[i], MSG_NOSIGNAL) != (ssize_t)sizes[i])
			return -1;
		off += sizes[i];
	}
	return 0;
}

/* Nothing more may be queued on fd. */
static void check_empty(int fd, const char *what)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);

	if (n >= 0 || errno != EAGAIN)
		FAIL("%s: more queued than was sent (recv gave %zd, %s)", mode, what, n,
		     n < 0 ? strerror(errno) : "data");
}

/* Checks the messages of send_msgs arrive: whole (stream) or one per recv with its boundary. */
static void check_msgs(int fd, int stream, int type, const char *what)
{
	unsigned char buf[1024], want[1024];
	size_t off = 0, total = 0;

	for (size_t i = 0; i < NSIZES; i++)
		total += sizes[i];
	if (type == SOCK_STREAM) {
		size_t got = recv_all(fd, buf, total);

		fill(want, stream, 0, total);
		if (got != total)
			FAIL("%s: %zu of %zu queued bytes came back", mode, what, got, total);
		else if (memcmp(buf, want, total) != 0)
			FAIL("%s: queued bytes differ", mode, what);
		check_empty(fd, what);
		return;
	}
	for (size_t i = 0; i < NSIZES; i++) {
		ssize_t n = recv_wait(fd, buf, sizeof(buf), 0);

		fill(want, stream, off, sizes[i]);
		if (n != (ssize_t)sizes[i]) {
			FAIL("%s: message %zu is %zd bytes, expected %zu (%s)", mode, what, i, n, sizes[i],
			     n < 0 ? strerror(errno) : "boundary lost");
			return;
		}
		if (memcmp(buf, want, sizes[i]) != 0)
			FAIL("%s: message %zu differs", mode, what, i);
		off += sizes[i];
	}
	check_empty(fd, what);
}

/* A round trip of one byte each way: the pair is still connected to each other. */
static void check_talks(int a, int b, const char *what)
{
	char c = 0;

	if (send(a, "x", 1, MSG_NOSIGNAL) != 1 || recv_wait(b, &c, 1, 0) != 1 || c != 'x')
		FAIL("%s: a byte sent one way did not arrive (%s)", mode, what, strerror(errno));
	else if (send(b, "y", 1, MSG_NOSIGNAL) != 1 || recv_wait(a, &c, 1, 0) != 1 || c != 'y')
		FAIL("%s: a byte sent the other way did not arrive (%s)", mode, what, strerror(errno));
}

static socklen_t make_addr(struct sockaddr_un *sa, const char *name, int abstract)
{
	size_t len = strlen(name);

	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (len + 2 > sizeof(sa->sun_path))
		wl_die("%s: name too long: %s", mode, name);
	if (abstract) {
		memcpy(sa->sun_path + 1, name, len);
		return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
	}
	memcpy(sa->sun_path, name, len + 1);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
}

static int bound_socket(int type, const char *name, int abstract)
{
	struct sockaddr_un sa;
	socklen_t len = make_addr(&sa, name, abstract);
	int fd = socket(AF_UNIX, type, 0);

	if (!abstract)
		unlink(name);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, len) != 0)
		wl_die("%s: bind %s%s", mode, abstract ? "@" : "", name);
	return fd;
}

static int connected_to(int type, const char *name, int abstract)
{
	struct sockaddr_un sa;
	socklen_t len = make_addr(&sa, name, abstract);
	int fd = socket(AF_UNIX, type, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, len) != 0)
		wl_die("%s: connect to %s%s", mode, abstract ? "@" : "", name);
	return fd;
}

/* The socket's own name is still `name`. */
static void check_name(int fd, const char *name, int abstract)
{
	struct sockaddr_un want, got;
	socklen_t wlen = make_addr(&want, name, abstract), glen = sizeof(got);

	if (getsockname(fd, (struct sockaddr *)&got, &glen) != 0)
		FAIL("getsockname: %s", mode, strerror(errno));
	else if (glen != wlen || memcmp(&got, &want, wlen) != 0)
		FAIL("the socket's name changed (now %u bytes: %s%s)", mode, glen, got.sun_path[0] ? "" : "@",
		     got.sun_path[0] ? got.sun_path : got.sun_path + 1);
}

static int accept_wait(int l)
{
	if (wait_fd(l, POLLIN, TIMEOUT_MS) <= 0)
		return -1;
	return accept4(l, NULL, NULL, SOCK_NONBLOCK);
}

/* ---------------------------------------------------------------- children */

static pid_t children[MAX_CHILDREN];
static int verdicts[MAX_CHILDREN]; /* read ends of the children's verdict pipes */
static int nchildren;

static void kill_children(void)
{
	for (int i = 0; i < nchildren; i++)
		if (children[i] > 0)
			kill(children[i], SIGKILL);
	while (wait(NULL) > 0)
		;
}

/*
 * Forks a child that runs `check(child_fd)` once it has its SIGTERM and reports "ok" or its failures
 * through a pipe. The child keeps only fds 0-2, the pipe and the fds in `keep` (child_fd among them),
 * so the sockets of other modes are not shared with it.
 */
static void fork_checker(void (*check)(int), int child_fd, const int *keep, int nkeep)
{
	int p[2];
	pid_t pid;

	if (nchildren == MAX_CHILDREN || pipe(p) != 0)
		wl_die("%s: pipe for a child", mode);
	pid = fork();
	if (pid < 0)
		wl_die("%s: fork", mode);
	if (pid == 0) {
		const char *verdict;

		for (int fd = 3; fd < 1024; fd++) {
			int kept = fd == p[1];

			for (int i = 0; i < nkeep; i++)
				kept |= fd == keep[i];
			if (!kept)
				close(fd);
		}
		wl_wait();
		check(child_fd);
		verdict = wl_failures() ? "failed (see the log)\n" : "ok\n";
		_exit(write(p[1], verdict, strlen(verdict)) < 0);
	}
	close(p[1]);
	children[nchildren] = pid;
	verdicts[nchildren++] = p[0];
}

static void signal_children(void)
{
	for (int i = 0; i < nchildren; i++)
		kill(children[i], SIGTERM);
}

static void collect_children(void)
{
	for (int i = 0; i < nchildren; i++) {
		char line[64] = "";
		ssize_t n = 0;
		int status;

		if (wait_fd(verdicts[i], POLLIN, TIMEOUT_MS * 2) > 0)
			n = read(verdicts[i], line, sizeof(line) - 1);
		line[n > 0 ? n : 0] = '\0';
		if (strcmp(line, "ok\n") != 0)
			wl_fail("child %d: %s", children[i], line[0] ? line : "no verdict");
		if (waitpid(children[i], &status, 0) == children[i])
			children[i] = 0;
		close(verdicts[i]);
	}
}

/* ---------------------------------------------------------------- modes */

struct pair_state {
	int a, b, type;
};
static struct pair_state pairs[3];

static void setup_pair(int which, int type)
{
	int sv[2];

	if (socketpair(AF_UNIX, type, 0, sv) != 0)
		wl_die("%s: socketpair", mode);
	pairs[which] = (struct pair_state){ sv[0], sv[1], type };
	if (send_msgs(sv[0], 1) != 0 || send_msgs(sv[1], 2) != 0)
		wl_die("%s: queue data", mode);
}

static void check_pair(int which)
{
	struct pair_state *p = &pairs[which];
	int type = 0;
	socklen_t len = sizeof(type);

	if (getsockopt(p->a, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != p->type)
		FAIL("SO_TYPE is %d, expected %d", mode, type, p->type);
	check_msgs(p->b, 1, p->type, "a to b");
	check_msgs(p->a, 2, p->type, "b to a");
	check_talks(p->a, p->b, "pair");
}

static void setup_pair_stream(void) { setup_pair(0, SOCK_STREAM); }
static void setup_pair_dgram(void) { setup_pair(1, SOCK_DGRAM); }
static void setup_pair_seqpacket(void) { setup_pair(2, SOCK_SEQPACKET); }
static void check_pair_stream(void) { check_pair(0); }
static void check_pair_dgram(void) { check_pair(1); }
static void check_pair_seqpacket(void) { check_pair(2); }

/* path and abstract: names[0] the stream listener, names[1] the dgram socket. */
struct named_state {
	char names[2][256];
	int listener, client, server, dgram;
};
static struct named_state named[2]; /* [0] path, [1] abstract */

static void setup_named(int abstract)
{
	struct named_state *s = &named[abstract];
	struct sockaddr_un sa;
	socklen_t len;
	unsigned char buf[512];

	if (abstract) {
		snprintf(s->names[0], sizeof(s->names[0]), "criu-ts-%d-stream", getpid());
		snprintf(s->names[1], sizeof(s->names[1]), "criu-ts-%d-dgram", getpid());
	} else {
		wl_path("sock", s->names[0], sizeof(s->names[0]));
		wl_path("dsock", s->names[1], sizeof(s->names[1]));
	}
	s->listener = bound_socket(SOCK_STREAM, s->names[0], abstract);
	if (listen(s->listener, 4) != 0)
		wl_die("%s: listen", mode);
	s->client = connected_to(SOCK_STREAM, s->names[0], abstract);
	s->server = accept_wait(s->listener);
	if (s->server < 0)
		wl_die("%s: accept", mode);
	if (send_msgs(s->client, 1) != 0 || send_msgs(s->server, 2) != 0)
		wl_die("%s: queue stream data", mode);
	s->dgram = bound_socket(SOCK_DGRAM, s->names[1], abstract);
	len = make_addr(&sa, s->names[1], abstract);
	for (int i = 0; i < 2; i++) {
		int tmp = socket(AF_UNIX, SOCK_DGRAM, 0);

		fill(buf, 3, (size_t)i * 300, 300);
		if (tmp < 0 || sendto(tmp, buf, 300, 0, (struct sockaddr *)&sa, len) != 300)
			wl_die("%s: sendto the dgram socket", mode);
		close(tmp); /* the datagrams stay queued at the receiver */
	}
}

static void check_named(int abstract)
{
	struct named_state *s = &named[abstract];
	struct sockaddr_un sa;
	socklen_t len = make_addr(&sa, s->names[1], abstract);
	unsigned char buf[512], want[512];
	struct stat st;
	int c, srv, tmp;

	check_name(s->listener, s->names[0], abstract);
	check_name(s->dgram, s->names[1], abstract);
	if (!abstract && (stat(s->names[0], &st) != 0 || !S_ISSOCK(st.st_mode)))
		FAIL("%s is not a socket file any more", mode, s->names[0]);
	check_msgs(s->server, 1, SOCK_STREAM, "client to server");
	check_msgs(s->client, 2, SOCK_STREAM, "server to client");
	check_talks(s->client, s->server, "accepted connection");
	for (int i = 0; i < 2; i++) {
		ssize_t n = recv_wait(s->dgram, buf, sizeof(buf), 0);

		fill(want, 3, (size_t)i * 300, 300);
		if (n != 300 || memcmp(buf, want, 300) != 0)
			FAIL("datagram %d sent to the bound name: %zd bytes%s", mode, i, n,
			     n == 300 ? ", contents differ" : "");
	}
	/* The names still reach the sockets. */
	c = connected_to(SOCK_STREAM, s->names[0], abstract);
	srv = accept_wait(s->listener);
	if (srv < 0)
		FAIL("a new connection to the listener was not accepted: %s", mode, strerror(errno));
	else
		check_talks(c, srv, "new connection");
	tmp = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (sendto(tmp, "z", 1, 0, (struct sockaddr *)&sa, len) != 1 || recv_wait(s->dgram, buf, 1, 0) != 1 ||
	    buf[0] != 'z')
		FAIL("a new datagram to the bound name did not arrive: %s", mode, strerror(errno));
	close(c);
	close(srv);
	close(tmp);
	if (!abstract) {
		unlink(s->names[0]);
		unlink(s->names[1]);
	}
}

static void setup_path(void) { setup_named(0); }
static void setup_abstract(void) { setup_named(1); }
static void check_path(void) { check_named(0); }
static void check_abstract(void) { check_named(1); }

static int unbound_stream, unbound_dgram;

static void setup_unbound(void)
{
	unbound_stream = socket(AF_UNIX, SOCK_STREAM, 0);
	unbound_dgram = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (unbound_stream < 0 || unbound_dgram < 0)
		wl_die("%s: socket", mode);
}

static void check_unnamed(int fd, const char *what)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);

	if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0 || len != sizeof(sa_family_t))
		FAIL("the %s socket has a name now (%u bytes)", mode, what, len);
}

static void check_unbound(void)
{
	char name[64];
	struct sockaddr_un sa;
	socklen_t len;
	int l, srv, r;
	char c = 0;

	check_unnamed(unbound_stream, "unbound stream");
	check_unnamed(unbound_dgram, "unbound dgram");
	snprintf(name, sizeof(name), "criu-ts-%d-late", getpid());
	l = bound_socket(SOCK_STREAM, name, 1);
	len = make_addr(&sa, name, 1);
	if (listen(l, 1) != 0 || connect(unbound_stream, (struct sockaddr *)&sa, len) != 0 ||
	    (srv = accept_wait(l)) < 0) {
		FAIL("the unbound stream socket cannot connect: %s", mode, strerror(errno));
	} else {
		check_talks(unbound_stream, srv, "late connection");
		close(srv);
	}
	close(l);
	snprintf(name, sizeof(name), "criu-ts-%d-late-dgram", getpid());
	r = bound_socket(SOCK_DGRAM, name, 1);
	len = make_addr(&sa, name, 1);
	if (sendto(unbound_dgram, "u", 1, 0, (struct sockaddr *)&sa, len) != 1 || recv_wait(r, &c, 1, 0) != 1 ||
	    c != 'u')
		FAIL("the unbound dgram socket cannot send: %s", mode, strerror(errno));
	close(r);
}

#define BACKLOG_CLIENTS 2
static int backlog_listener, backlog_clients[BACKLOG_CLIENTS];

static void setup_backlog(void)
{
	char name[64];
	unsigned char buf[600];

	snprintf(name, sizeof(name), "criu-ts-%d-backlog", getpid());
	backlog_listener = bound_socket(SOCK_STREAM, name, 1);
	if (listen(backlog_listener, 8) != 0)
		wl_die("%s: listen", mode);
	for (int i = 0; i < BACKLOG_CLIENTS; i++) {
		backlog_clients[i] = connected_to(SOCK_STREAM, name, 1);
		buf[0] = (unsigned char)i;
		fill(buf + 1, 10 + i, 0, sizeof(buf) - 1);
		if (send(backlog_clients[i], buf, sizeof(buf), MSG_NOSIGNAL) != sizeof(buf))
			wl_die("%s: send from a waiting client", mode);
	}
}

static void check_backlog(void)
{
	unsigned char buf[600], want[600];
	int seen[BACKLOG_CLIENTS] = { 0 };

	for (int i = 0; i < BACKLOG_CLIENTS; i++) {
		int srv = accept_wait(backlog_listener);
		size_t got;
		int who;

		if (srv < 0) {
			FAIL("connection %d waiting in the backlog was not accepted: %s", mode, i, strerror(errno));
			return;
		}
		got = recv_all(srv, buf, sizeof(buf));
		who = buf[0];
		if (got != sizeof(buf) || who >= BACKLOG_CLIENTS || seen[who]) {
			FAIL("accepted connection %d brought %zu bytes from client %d", mode, i, got, who);
			close(srv);
			continue;
		}
		seen[who] = 1;
		fill(want + 1, 10 + who, 0, sizeof(want) - 1);
		if (memcmp(buf + 1, want + 1, sizeof(buf) - 1) != 0)
			FAIL("the bytes client %d sent while waiting differ", mode, who);
		check_empty(srv, "accepted connection");
		check_talks(backlog_clients[who], srv, "accepted late");
		close(srv);
	}
	if (wait_fd(backlog_listener, POLLIN, 0) != 0)
		FAIL("a third connection was waiting in the backlog", mode);
}

/* fork: [0] stream, [1] seqpacket; the parent keeps a, the child b. */
static struct pair_state fork_pairs[2];

static void fork_child_check(int unused)
{
	(void)unused;
	mode = "fork (child)";
	for (int i = 0; i < 2; i++) {
		check_msgs(fork_pairs[i].b, 1, fork_pairs[i].type, "parent to child");
		if (send(fork_pairs[i].b, "c", 1, MSG_NOSIGNAL) != 1)
			FAIL("send to the parent: %s", mode, strerror(errno));
	}
}

static void setup_fork(void)
{
	int types[2] = { SOCK_STREAM, SOCK_SEQPACKET }, keep[2];

	for (int i = 0; i < 2; i++) {
		int sv[2];

		if (socketpair(AF_UNIX, types[i], 0, sv) != 0)
			wl_die("%s: socketpair", mode);
		fork_pairs[i] = (struct pair_state){ sv[0], sv[1], types[i] };
		keep[i] = sv[1];
	}
	fork_checker(fork_child_check, -1, keep, 2);
	for (int i = 0; i < 2; i++) {
		close(fork_pairs[i].b);
		if (send_msgs(fork_pairs[i].a, 1) != 0)
			wl_die("%s: queue data for the child", mode);
	}
}

static void check_fork(void)
{
	/* The child reads what we sent and answers once it has its SIGTERM (collect_children). */
	for (int i = 0; i < 2; i++) {
		char c = 0;

		if (recv_wait(fork_pairs[i].a, &c, 1, 0) != 1 || c != 'c')
			FAIL("no answer from the child over the %s pair: %s", mode,
			     i ? "seqpacket" : "stream", strerror(errno));
	}
}

static int shared_sock, shared_peer, shared_go[2];

static void shared_child_check(int fd)
{
	char c = 0;
	int flags;

	mode = "shared (child)";
	if (wait_fd(shared_go[0], POLLIN, TIMEOUT_MS) <= 0 || read(shared_go[0], &c, 1) != 1) {
		FAIL("no word from the parent", mode);
		return;
	}
	flags = fcntl(fd, F_GETFL);
	if (!(flags & O_NONBLOCK))
		FAIL("O_NONBLOCK set by the parent is not seen here: not one open file", mode);
	if (send(fd, "C", 1, 0) != 1)
		FAIL("send through the shared socket: %s", mode, strerror(errno));
}

static void setup_shared(void)
{
	int sv[2], keep[2];

	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) != 0 || pipe(shared_go) != 0)
		wl_die("%s: socketpair", mode);
	shared_sock = sv[0];
	shared_peer = sv[1];
	keep[0] = shared_sock;
	keep[1] = shared_go[0];
	fork_checker(shared_child_check, shared_sock, keep, 2);
	close(shared_go[0]);
}

static void check_shared(void)
{
	int got_p = 0, got_c = 0;

	if (fcntl(shared_sock, F_SETFL, fcntl(shared_sock, F_GETFL) | O_NONBLOCK) != 0 ||
	    write(shared_go[1], "g", 1) != 1)
		FAIL("cannot tell the child: %s", mode, strerror(errno));
	if (send(shared_sock, "P", 1, 0) != 1)
		FAIL("send through the shared socket: %s", mode, strerror(errno));
	for (int i = 0; i < 2; i++) {
		char c = 0;

		if (recv_wait(shared_peer, &c, 1, 0) != 1)
			break;
		got_p += c == 'P';
		got_c += c == 'C';
	}
	if (got_p != 1 || got_c != 1)
		FAIL("the peer got %d datagrams from the parent and %d from the child, expected 1 and 1", mode, got_p,
		     got_c);
}

#define SCM_PIPE_BYTES 777
static int scm_rx;

static void setup_scm_rights(void)
{
	int sv[2], p[2];
	unsigned char data[SCM_PIPE_BYTES];
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = "F", .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || pipe(p) != 0)
		wl_die("%s: socketpair/pipe", mode);
	fill(data, 4, 0, sizeof(data));
	if (write(p[1], data, sizeof(data)) != sizeof(data))
		wl_die("%s: fill the pipe", mode);
	close(p[1]);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &p[0], sizeof(int));
	if (sendmsg(sv[0], &msg, 0) != 1)
		wl_die("%s: sendmsg(SCM_RIGHTS)", mode);
	close(p[0]); /* now only in flight */
	scm_rx = sv[1];
	/* sv[0] stays open: its peer's queue must stay readable */
}

static void check_scm_rights(void)
{
	unsigned char data[SCM_PIPE_BYTES + 1], want[SCM_PIPE_BYTES];
	char c = 0, cbuf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	int fd = -1;
	ssize_t n, got = 0;

	if (wait_fd(scm_rx, POLLIN, TIMEOUT_MS) <= 0 || recvmsg(scm_rx, &msg, MSG_DONTWAIT) != 1 || c != 'F') {
		FAIL("the message carrying the fd did not come: %s", mode, strerror(errno));
		return;
	}
	cm = CMSG_FIRSTHDR(&msg);
	if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(int))) {
		FAIL("the message came without exactly one fd", mode);
		return;
	}
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	while (got < (ssize_t)sizeof(data) && (n = read(fd, data + got, sizeof(data) - (size_t)got)) > 0)
		got += n;
	fill(want, 4, 0, sizeof(want));
	if (got != SCM_PIPE_BYTES || memcmp(data, want, SCM_PIPE_BYTES) != 0)
		FAIL("the fd in flight gave %zd bytes, expected %d then EOF%s", mode, got, SCM_PIPE_BYTES,
		     got == SCM_PIPE_BYTES ? " (contents differ)" : "");
	close(fd);
}

static int creds_rx;

static void setup_scm_creds(void)
{
	int sv[2], on = 1;
	struct ucred uc = { .pid = getpid(), .uid = getuid(), .gid = getgid() };
	char cbuf[CMSG_SPACE(sizeof(uc))];
	struct iovec iov = { .iov_base = "E", .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) != 0 ||
	    setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) != 0)
		wl_die("%s: socketpair/SO_PASSCRED", mode);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_CREDENTIALS;
	cm->cmsg_len = CMSG_LEN(sizeof(uc));
	memcpy(CMSG_DATA(cm), &uc, sizeof(uc));
	if (sendmsg(sv[0], &msg, 0) != 1 || send(sv[0], "I", 1, 0) != 1)
		wl_die("%s: send with credentials", mode);
	creds_rx = sv[1];
}

static void check_scm_creds(void)
{
	for (int i = 0; i < 2; i++) {
		char c = 0;
		struct ucred uc;
		char cbuf[CMSG_SPACE(sizeof(uc)) + 64];
		struct iovec iov = { .iov_base = &c, .iov_len = 1 };
		struct msghdr msg = {
			.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)
		};
		struct cmsghdr *cm;

		if (wait_fd(creds_rx, POLLIN, TIMEOUT_MS) <= 0 || recvmsg(creds_rx, &msg, MSG_DONTWAIT) != 1 ||
		    c != (i ? 'I' : 'E')) {
			FAIL("datagram %d did not come: %s", mode, i, strerror(errno));
			return;
		}
		cm = CMSG_FIRSTHDR(&msg);
		if (!cm || cm->cmsg_type != SCM_CREDENTIALS) {
			FAIL("datagram %d came without credentials", mode, i);
			continue;
		}
		memcpy(&uc, CMSG_DATA(cm), sizeof(uc));
		if (uc.pid != getpid() || uc.uid != getuid() || uc.gid != getgid())
			FAIL("datagram %d carries pid %d uid %u gid %u, expected %d %u %u", mode, i, uc.pid, uc.uid,
			     uc.gid, getpid(), getuid(), getgid());
	}
}

static int shut_fds[3][2]; /* [0] SHUT_WR on [0][0], [1] SHUT_RD on [1][0], [2] SHUT_RDWR on [2][0] */

static void setup_shutdown(void)
{
	static const int how[3] = { SHUT_WR, SHUT_RD, SHUT_RDWR };

	for (int i = 0; i < 3; i++)
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, shut_fds[i]) != 0)
			wl_die("%s: socketpair", mode);
	if (send(shut_fds[0][0], "abc", 3, 0) != 3)
		wl_die("%s: send", mode);
	for (int i = 0; i < 3; i++)
		if (shutdown(shut_fds[i][0], how[i]) != 0)
			wl_die("%s: shutdown", mode);
}

static int eof_now(int fd)
{
	char c;

	return wait_fd(fd, POLLIN, TIMEOUT_MS) > 0 && recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

static int epipe_now(int fd)
{
	return send(fd, "q", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EPIPE;
}

static void check_shutdown(void)
{
	char buf[8] = "";
	char c = 0;

	/* SHUT_WR: the peer reads the data then EOF; we cannot send; the other way still works. */
	if (recv_all(shut_fds[0][1], (unsigned char *)buf, 3) != 3 || memcmp(buf, "abc", 3) != 0)
		FAIL("data sent before SHUT_WR is lost", mode);
	if (!eof_now(shut_fds[0][1]))
		FAIL("no EOF after the peer's SHUT_WR", mode);
	if (!epipe_now(shut_fds[0][0]))
		FAIL("send after SHUT_WR does not fail with EPIPE", mode);
	if (send(shut_fds[0][1], "r", 1, MSG_NOSIGNAL) != 1 || recv_wait(shut_fds[0][0], &c, 1, 0) != 1 || c != 'r')
		FAIL("the direction SHUT_WR left open is closed", mode);
	/* SHUT_RD: we read EOF, the peer cannot send, we still can. */
	if (!eof_now(shut_fds[1][0]))
		FAIL("no EOF after SHUT_RD", mode);
	if (!epipe_now(shut_fds[1][1]))
		FAIL("the peer of a SHUT_RD socket can still send", mode);
	if (send(shut_fds[1][0], "w", 1, MSG_NOSIGNAL) != 1 || recv_wait(shut_fds[1][1], &c, 1, 0) != 1 || c != 'w')
		FAIL("the direction SHUT_RD left open is closed", mode);
	/* SHUT_RDWR: both ways closed for both ends. */
	if (!eof_now(shut_fds[2][0]) || !eof_now(shut_fds[2][1]))
		FAIL("no EOF on both ends after SHUT_RDWR", mode);
	if (!epipe_now(shut_fds[2][0]) || !epipe_now(shut_fds[2][1]))
		FAIL("send does not fail on both ends after SHUT_RDWR", mode);
}

static int opt_a, opt_b;
static int opt_values[4]; /* sndbuf, rcvbuf of a; passcred, peek_off of b */

static int get_int(int fd, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, name, &v, &len) != 0)
		return -2;
	return v;
}

static void setup_options(void)
{
	int sv[2], snd = 40000, rcv = 60000, on = 1, off3 = 3;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		wl_die("%s: socketpair", mode);
	opt_a = sv[0];
	opt_b = sv[1];
	if (setsockopt(opt_a, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd)) ||
	    setsockopt(opt_a, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv)) ||
	    setsockopt(opt_b, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) ||
	    setsockopt(opt_b, SOL_SOCKET, SO_PEEK_OFF, &off3, sizeof(off3)))
		wl_die("%s: setsockopt", mode);
	if (send(opt_a, "0123456789", 10, 0) != 10)
		wl_die("%s: send", mode);
	opt_values[0] = get_int(opt_a, SO_SNDBUF);
	opt_values[1] = get_int(opt_a, SO_RCVBUF);
	opt_values[2] = get_int(opt_b, SO_PASSCRED);
	opt_values[3] = get_int(opt_b, SO_PEEK_OFF);
	if (opt_values[0] != 80000 || opt_values[1] != 120000 || opt_values[2] != 1 || opt_values[3] != 3)
		wl_die("%s: unexpected option values %d %d %d %d", mode, opt_values[0], opt_values[1], opt_values[2],
		       opt_values[3]);
}

static void check_options(void)
{
	static const char *const names[4] = { "SO_SNDBUF", "SO_RCVBUF", "SO_PASSCRED", "SO_PEEK_OFF" };
	int now[4] = { get_int(opt_a, SO_SNDBUF), get_int(opt_a, SO_RCVBUF), get_int(opt_b, SO_PASSCRED),
		       get_int(opt_b, SO_PEEK_OFF) };
	char buf[4] = "";

	for (int i = 0; i < 4; i++)
		if (now[i] != opt_values[i])
			FAIL("%s is %d, was %d", mode, names[i], now[i], opt_values[i]);
	/* A peek starts at the peek offset and moves it. */
	if (recv_wait(opt_b, buf, 2, MSG_PEEK) != 2 || memcmp(buf, "34", 2) != 0)
		FAIL("a peek did not start at offset 3 (got \"%.2s\")", mode, buf);
	else if (get_int(opt_b, SO_PEEK_OFF) != 5)
		FAIL("the peek offset did not move to 5", mode);
	if (recv_all(opt_b, (unsigned char *)buf, 4) != 4 || memcmp(buf, "0123", 4) != 0)
		FAIL("a read does not start at the queue's head", mode);
}

static char deleted_names[2][256];
static int del_rx, del_tx, del_listener, del_client, del_server;

static void setup_deleted(void)
{
	wl_path("gone", deleted_names[0], sizeof(deleted_names[0]));
	wl_path("gone-stream", deleted_names[1], sizeof(deleted_names[1]));
	del_rx = bound_socket(SOCK_DGRAM, deleted_names[0], 0);
	del_tx = connected_to(SOCK_DGRAM, deleted_names[0], 0);
	if (send(del_tx, "d1", 2, 0) != 2)
		wl_die("%s: send", mode);
	del_listener = bound_socket(SOCK_STREAM, deleted_names[1], 0);
	if (listen(del_listener, 2) != 0)
		wl_die("%s: listen", mode);
	del_client = connected_to(SOCK_STREAM, deleted_names[1], 0);
	del_server = accept_wait(del_listener);
	if (del_server < 0 || send(del_client, "s1", 2, 0) != 2)
		wl_die("%s: accept/send", mode);
	if (unlink(deleted_names[0]) != 0 || unlink(deleted_names[1]) != 0)
		wl_die("%s: unlink", mode);
}

static void check_deleted(void)
{
	char buf[4] = "";
	struct stat st;

	for (int i = 0; i < 2; i++)
		if (stat(deleted_names[i], &st) == 0 || errno != ENOENT)
			FAIL("%s exists again", mode, deleted_names[i]);
	check_name(del_rx, deleted_names[0], 0);
	check_name(del_listener, deleted_names[1], 0);
	if (recv_wait(del_rx, buf, sizeof(buf), 0) != 2 || memcmp(buf, "d1", 2) != 0)
		FAIL("the datagram queued before the unlink is lost", mode);
	if (send(del_tx, "d2", 2, 0) != 2 || recv_wait(del_rx, buf, sizeof(buf), 0) != 2 || memcmp(buf, "d2", 2) != 0)
		FAIL("the connected sender cannot reach the socket whose file is gone: %s", mode, strerror(errno));
	if (recv_all(del_server, (unsigned char *)buf, 2) != 2 || memcmp(buf, "s1", 2) != 0)
		FAIL("the stream data queued before the unlink is lost", mode);
	check_talks(del_client, del_server, "connection to a listener whose file is gone");
}

struct mode_desc {
	const char *name;
	void (*setup)(void);
	void (*check)(void);
};

static const struct mode_desc modes[] = {
	{ "pair-stream", setup_pair_stream, check_pair_stream },
	{ "pair-dgram", setup_pair_dgram, check_pair_dgram },
	{ "pair-seqpacket", setup_pair_seqpacket, check_pair_seqpacket },
	{ "path", setup_path, check_path },
	{ "abstract", setup_abstract, check_abstract },
	{ "unbound", setup_unbound, check_unbound },
	{ "backlog", setup_backlog, check_backlog },
	{ "fork", setup_fork, check_fork },
	{ "shared", setup_shared, check_shared },
	{ "scm-rights", setup_scm_rights, check_scm_rights },
	{ "scm-creds", setup_scm_creds, check_scm_creds },
	{ "shutdown", setup_shutdown, check_shutdown },
	{ "options", setup_options, check_options },
	{ "deleted", setup_deleted, check_deleted },
};
#define NMODES (sizeof(modes) / sizeof(modes[0]))

int main(int argc, char **argv)
{
	int chosen[NMODES] = { 0 };

	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	atexit(kill_children);
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
	signal_children(); /* they check their side meanwhile */

	for (size_t m = 0; m < NMODES; m++) {
		if (!chosen[m])
			continue;
		mode = modes[m].name;
		modes[m].check();
	}
	mode = "children";
	collect_children();
	wl_finish();
}
