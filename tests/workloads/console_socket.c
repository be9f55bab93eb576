/*
 * console_socket SOCKET OUT: the other end of runc's --console-socket, for tests/runc_test.ts (a
 * helper, not a workload of the matrix). Listens on the unix stream socket SOCKET, takes the pty
 * master runc sends (SCM_RIGHTS) from the first connection, then relays: what the container's
 * terminal prints is appended to OUT, what comes on our stdin is typed into the terminal. Ends when
 * the terminal hangs up (its container is gone or checkpointed) or on SIGTERM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int listen_on(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || strlen(path) >= sizeof(addr.sun_path))
		return -1;
	strcpy(addr.sun_path, path);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) || listen(fd, 1))
		return -1;
	return fd;
}

/* The fd that came with one message of `conn`, or -1. */
static int receive_fd(int conn)
{
	char data[256];
	union {
		struct cmsghdr hdr;
		char space[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = { .iov_base = data, .iov_len = sizeof(data) };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control.space,
		.msg_controllen = sizeof(control.space),
	};
	struct cmsghdr *c;
	int fd;

	if (recvmsg(conn, &msg, MSG_CMSG_CLOEXEC) < 0)
		return -1;
	c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
		return -1;
	memcpy(&fd, CMSG_DATA(c), sizeof(fd));
	return fd;
}

/* Copies what `from` has to `to`; 0 at end of input. */
static ssize_t pass(int from, int to)
{
	char buf[4096];
	ssize_t n = read(from, buf, sizeof(buf));

	if (n > 0 && write(to, buf, n) != n)
		return -1;
	return n;
}

int main(int argc, char **argv)
{
	int sock, conn, master, out;
	struct pollfd fds[2];

	if (argc != 3) {
		fprintf(stderr, "usage: console_socket SOCKET OUT\n");
		return 2;
	}
	out = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	sock = listen_on(argv[1]);
	if (out < 0 || sock < 0) {
		perror("console_socket: setup");
		return 1;
	}
	conn = accept4(sock, NULL, NULL, SOCK_CLOEXEC);
	master = conn < 0 ? -1 : receive_fd(conn);
	if (master < 0) {
		perror("console_socket: no pty master came");
		return 1;
	}
	close(conn);
	close(sock);
	fds[0] = (struct pollfd){ .fd = master, .events = POLLIN };
	fds[1] = (struct pollfd){ .fd = STDIN_FILENO, .events = POLLIN };
	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (fds[0].revents) {
			/* EIO: no slave is open any more (the container is gone). */
			if (pass(master, out) <= 0)
				return 0;
		}
		if (fds[1].revents && pass(STDIN_FILENO, master) <= 0)
			fds[1].fd = -1; /* our input ended: only relay the output */
	}
}
