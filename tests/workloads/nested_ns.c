/*
 * nested_ns: a tree whose tasks sit in network, UTS and IPC namespaces nested in the root's, as a
 * container's processes do after unshare(1) or ip-netns-exec:
 *   - the root unshares a network namespace of its own (loopback up);
 *   - `net`: child N unshares another network namespace: loopback up with a non-default MTU, a
 *     veth pair with both ends inside (198.18.5.1/24 and 198.18.5.2/24, up), a TCP listener on
 *     127.0.0.1 and an established connection to it; its child NB makes a listener of its own
 *     there and a packet socket bound to nv0, then goes back to the root's network namespace with
 *     setns(2), keeping both (sockets of another namespace than their holder's);
 *   - `uts-ipc`: child U unshares UTS and IPC namespaces: its own host name, and a SysV shared
 *     memory segment with contents, kept attached; its child UB goes back to the root's UTS
 *     namespace (criu's own) with setns(2).
 * On SIGTERM the root passes it on; each task checks its own view (which namespace it is in, the
 * devices, addresses, the connection and the listener, the host name, the segment) and exits 1
 * if anything differs; the root reports each child that failed. Default: both parts.
 * `veth-between` (with `net`) also joins N's namespace and the root's with a veth pair (nx0 in N's
 * with 198.18.6.1/24, nx1 in the root's with 198.18.6.2/24, both up, the root listening on
 * 198.18.6.2): N must still reach the root's listener through it. `host-root`: the
 * root stays in the host's network namespace (criu's), where NB then goes back.
 * `userns` (not with `host-root`): the root first unshares a user namespace (a helper in the host's
 * maps "0 0 1" for uids and gids) and UTS and IPC namespaces, so that the whole tree is in a user namespace
 * of its own whose PID namespace is the host's (rootless-style); every task also checks that its
 * network, UTS and IPC namespaces are owned by that user namespace (NS_GET_USERNS), as those made
 * by unshare inside it are.
 *   bin/nested_ns RESULT_FILE [net] [uts-ipc] [veth-between] [host-root] [userns]
 */
#include "lib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/if_packet.h>
#include <linux/nsfs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define LO_MTU 61440
#define NESTED_HOST "nested-uts"
#define SHM_SIZE 20000
#define PORT 47311
#ifndef SIOCGSKNS
#define SIOCGSKNS 0x894C
#endif

static pid_t root_pid;
static int veth_between, in_userns;
static char root_hostname[65];

static void link_name(pid_t pid, const char *ns, char *buf, size_t size)
{
	char path[64];
	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", pid, ns);
	else
		snprintf(path, sizeof(path), "/proc/self/ns/%s", ns);
	ssize_t n = readlink(path, buf, size - 1);
	buf[n < 0 ? 0 : n] = 0;
}

static int same_ns(pid_t a, pid_t b, const char *ns)
{
	char x[64], y[64];
	link_name(a, ns, x, sizeof(x));
	link_name(b, ns, y, sizeof(y));
	return x[0] && strcmp(x, y) == 0;
}

static void run(const char *cmd)
{
	int r = system(cmd);
	if (r != 0)
		wl_die("%s: status %d", cmd, r);
}

static int lo_request(unsigned long req, struct ifreq *ifr)
{
	int sk = socket(AF_INET, SOCK_DGRAM, 0);
	if (sk < 0)
		return -1;
	memset(ifr->ifr_name, 0, sizeof(ifr->ifr_name));
	strcpy(ifr->ifr_name, "lo");
	int r = ioctl(sk, req, ifr);
	close(sk);
	return r;
}

static void lo_up(int mtu)
{
	struct ifreq ifr;
	if (lo_request(SIOCGIFFLAGS, &ifr))
		wl_die("SIOCGIFFLAGS");
	ifr.ifr_flags |= IFF_UP;
	if (lo_request(SIOCSIFFLAGS, &ifr))
		wl_die("SIOCSIFFLAGS");
	if (mtu) {
		ifr.ifr_mtu = mtu;
		if (lo_request(SIOCSIFMTU, &ifr))
			wl_die("SIOCSIFMTU");
	}
}

/* The inode of this task's user namespace (kind "user") or of the owner of its `kind` one. */
static ino_t user_ns_ino(const char *kind)
{
	char path[64];
	struct stat st;
	snprintf(path, sizeof(path), "/proc/self/ns/%s", kind);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	int ns = strcmp(kind, "user") == 0 ? dup(fd) : ioctl(fd, NS_GET_USERNS);
	close(fd);
	if (ns < 0)
		return 0;
	int ok = fstat(ns, &st) == 0;
	close(ns);
	return ok ? st.st_ino : 0;
}

/* With `userns`: its network, UTS and IPC namespaces are owned by its user namespace. */
static void check_owners(void)
{
	const char *kinds[] = { "net", "uts", "ipc" };
	ino_t user = user_ns_ino("user");
	for (int i = 0; in_userns && i < 3; i++) {
		ino_t owner = user_ns_ino(kinds[i]);
		WL_CHECK(user && owner == user,
			 "process %d: its %s namespace is owned by user namespace %lu (0: one above its own), not %lu",
			 getpid(), kinds[i], (unsigned long)owner, (unsigned long)user);
	}
}

/* Waits for SIGTERM (inherited handler), as the root does; then the namespaces' owners. */
static void wait_for_term(void)
{
	wl_wait();
	check_owners();
}

/* The root's user namespace, mapped "0 0 1" by a helper that stays in the host's. */
static void make_user_ns(void)
{
	wl_unshare_user("0 0 1\n");
	if (unshare(CLONE_NEWUTS | CLONE_NEWIPC))
		wl_die("unshare(CLONE_NEWUTS | CLONE_NEWIPC)");
}

/* A child that failed its setup says so on its pipe and ends. */
static void tell(int fd, char c)
{
	if (write(fd, &c, 1) != 1)
		_exit(3);
	close(fd);
}

static void expect_ready(int fd, const char *who)
{
	char c = 0;
	if (read(fd, &c, 1) != 1 || c != 'y')
		wl_die("%s did not set up", who);
	close(fd);
}

/* Forks a child that runs `body` (which reports on `ready`, then waits and checks). */
static pid_t spawn(void (*body)(int ready), const char *who)
{
	int p[2];
	if (pipe(p))
		wl_die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		wl_die("fork");
	if (pid == 0) {
		close(p[0]);
		body(p[1]);
		_exit(wl_failures() ? 1 : 0);
	}
	close(p[1]);
	expect_ready(p[0], who);
	return pid;
}

static void end_child(pid_t pid, const char *who)
{
	int status = 0;
	kill(pid, SIGTERM);
	if (waitpid(pid, &status, 0) != pid)
		wl_fail("%s %d: cannot wait for it", who, pid);
	else
		WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s %d failed its checks (status 0x%x)",
			 who, pid, status);
}

/* ---- the network part ---- */

static int listener = -1, client = -1, server = -1;

static void open_connection(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(PORT) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1;
	listener = socket(AF_INET, SOCK_STREAM, 0);
	client = socket(AF_INET, SOCK_STREAM, 0);
	if (listener < 0 || client < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(listener, (struct sockaddr *)&a, sizeof(a)) || listen(listener, 8) ||
	    connect(client, (struct sockaddr *)&a, sizeof(a)))
		wl_die("TCP on 127.0.0.1:%d", PORT);
	server = accept(listener, NULL, NULL);
	if (server < 0)
		wl_die("accept");
	if (write(client, "hello", 5) != 5)
		wl_die("write");
}

static int read_exactly(int fd, char *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += r;
	}
	return 0;
}

static void check_connection(void)
{
	char buf[16] = { 0 };
	/* A check that fails must not wait for good. */
	struct timeval limit = { .tv_sec = 10 };
	setsockopt(server, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
	setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
	WL_CHECK(read_exactly(server, buf, 5) == 0 && memcmp(buf, "hello", 5) == 0, "the queued bytes are gone");
	WL_CHECK(write(server, "world", 5) == 5, "cannot answer on the connection");
	memset(buf, 0, sizeof(buf));
	WL_CHECK(read_exactly(client, buf, 5) == 0 && memcmp(buf, "world", 5) == 0,
		 "the answer did not come back");
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(PORT) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	int connected = c >= 0 && connect(c, (struct sockaddr *)&a, sizeof(a)) == 0;
	WL_CHECK(connected, "the listener does not take a new connection");
	/* Only then: accept would wait for good on a listener of another namespace. */
	int s = connected ? accept(listener, NULL, NULL) : -1;
	WL_CHECK(!connected || s >= 0, "accept after restore: %s", strerror(errno));
	if (c >= 0)
		close(c);
	if (s >= 0)
		close(s);
}

static int has_address(const char *dev, const char *addr)
{
	struct ifaddrs *all, *i;
	int found = 0;
	if (getifaddrs(&all))
		return 0;
	for (i = all; i; i = i->ifa_next) {
		char text[INET_ADDRSTRLEN];
		if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || strcmp(i->ifa_name, dev))
			continue;
		inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, text, sizeof(text));
		if (strcmp(text, addr) == 0 && (i->ifa_flags & IFF_UP))
			found = 1;
	}
	freeifaddrs(all);
	return found;
}

static void check_devices(void)
{
	struct if_nameindex *ifs = if_nameindex();
	int count = 0;
	for (struct if_nameindex *i = ifs; i && i->if_index; i++, count++)
		WL_CHECK(!strcmp(i->if_name, "lo") || !strcmp(i->if_name, "nv0") || !strcmp(i->if_name, "nv1") ||
				 (veth_between && !strcmp(i->if_name, "nx0")),
			 "unexpected device %s", i->if_name);
	WL_CHECK(count == 3 + veth_between, "%d devices, expected lo, nv0 and nv1", count);
	if (ifs)
		if_freenameindex(ifs);
	struct ifreq ifr;
	WL_CHECK(lo_request(SIOCGIFMTU, &ifr) == 0 && ifr.ifr_mtu == LO_MTU, "lo MTU %d, expected %d", ifr.ifr_mtu,
		 LO_MTU);
	WL_CHECK(has_address("nv0", "198.18.5.1"), "nv0 is not up with 198.18.5.1");
	WL_CHECK(has_address("nv1", "198.18.5.2"), "nv1 is not up with 198.18.5.2");
	if (veth_between) {
		WL_CHECK(has_address("nx0", "198.18.6.1"), "nx0 is not up with 198.18.6.1");
		/* Through the pair into the root's namespace, where the root listens. */
		struct sockaddr_in r = { .sin_family = AF_INET, .sin_port = htons(PORT + 3) };
		inet_pton(AF_INET, "198.18.6.2", &r.sin_addr);
		struct timeval limit = { .tv_sec = 10 };
		int c = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
		WL_CHECK(c >= 0 && connect(c, (struct sockaddr *)&r, sizeof(r)) == 0,
			 "no connection through nx0 to the root's 198.18.6.2: %s", strerror(errno));
		if (c >= 0)
			close(c);
	}
	/* A datagram between the two addresses: both are ours. */
	int sk = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	inet_pton(AF_INET, "198.18.5.1", &a.sin_addr);
	struct sockaddr_in b = a;
	inet_pton(AF_INET, "198.18.5.2", &b.sin_addr);
	b.sin_port = htons(PORT + 1);
	int r = sk >= 0 ? socket(AF_INET, SOCK_DGRAM, 0) : -1;
	char buf[8] = { 0 };
	WL_CHECK(r >= 0 && bind(r, (struct sockaddr *)&b, sizeof(b)) == 0 && bind(sk, (struct sockaddr *)&a, sizeof(a)) == 0 &&
			 sendto(sk, "ping", 5, 0, (struct sockaddr *)&b, sizeof(b)) == 5 &&
			 recv(r, buf, sizeof(buf), 0) == 5 && strcmp(buf, "ping") == 0,
		 "no datagram from 198.18.5.1 to 198.18.5.2");
	if (sk >= 0)
		close(sk);
	if (r >= 0)
		close(r);
}

/* Whether socket `sk` belongs to the network namespace of `pid`. */
static int socket_in_ns_of(int sk, pid_t pid)
{
	char ns[64], link[64], theirs[64];
	int fd = ioctl(sk, SIOCGSKNS);
	if (fd < 0)
		return 0;
	snprintf(ns, sizeof(ns), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(ns, link, sizeof(link) - 1);
	link[n < 0 ? 0 : n] = 0;
	close(fd);
	link_name(pid, "net", theirs, sizeof(theirs));
	return link[0] && strcmp(link, theirs) == 0;
}

/* NB: back in the root's network namespace, with a listener of N's namespace. */
static void net_back(int ready)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(PORT + 2) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int own = socket(AF_INET, SOCK_STREAM, 0);
	if (own < 0 || bind(own, (struct sockaddr *)&a, sizeof(a)) || listen(own, 1))
		_exit(2);
	struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_ifindex = (int)if_nametoindex("nv0") };
	int packet = socket(AF_PACKET, SOCK_DGRAM, 0);
	if (packet < 0 || !ll.sll_ifindex || bind(packet, (struct sockaddr *)&ll, sizeof(ll)))
		_exit(2);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/net", root_pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET))
		_exit(2);
	close(fd);
	tell(ready, 'y');
	wait_for_term();
	WL_CHECK(same_ns(0, root_pid, "net"), "not in the root's network namespace");
	WL_CHECK(!same_ns(0, getppid(), "net"), "in its parent's network namespace");
	int listening = 0;
	socklen_t len = sizeof(listening);
	WL_CHECK(socket_in_ns_of(own, getppid()), "its listener is not in its parent's network namespace");
	WL_CHECK(getsockopt(own, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening,
		 "its listener does not listen");
	WL_CHECK(socket_in_ns_of(packet, getppid()), "its packet socket is not in its parent's network namespace");
	struct sockaddr_ll bound = { 0 };
	len = sizeof(bound);
	WL_CHECK(getsockname(packet, (struct sockaddr *)&bound, &len) == 0 && bound.sll_ifindex == ll.sll_ifindex,
		 "its packet socket is bound to interface %d, expected nv0's %d", bound.sll_ifindex, ll.sll_ifindex);
}

/* N: a network namespace of its own below the root's. */
static void net_child(int ready)
{
	if (unshare(CLONE_NEWNET))
		_exit(2);
	lo_up(LO_MTU);
	run("ip link add nv0 type veth peer name nv1");
	run("ip addr add 198.18.5.1/24 dev nv0");
	run("ip addr add 198.18.5.2/24 dev nv1");
	run("ip link set nv0 up");
	run("ip link set nv1 up");
	if (veth_between) {
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "ip link add nx0 type veth peer name nx1 netns %d", root_pid);
		run(cmd);
		run("ip addr add 198.18.6.1/24 dev nx0");
		run("ip link set nx0 up");
	}
	open_connection();
	pid_t back = spawn(net_back, "the task back in the root's network namespace");
	tell(ready, 'y');
	wait_for_term();
	WL_CHECK(!same_ns(0, root_pid, "net"), "in the root's network namespace");
	WL_CHECK(!same_ns(0, 1, "net"), "in the host's network namespace");
	check_devices();
	check_connection();
	end_child(back, "the task back in the root's network namespace");
}

/* ---- the UTS and IPC part ---- */

static int shm_id = -1;
static unsigned char *shm_at;

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 7 + 3);
}

/* UB: back in the root's UTS namespace (criu's own); still in U's IPC namespace. */
static void uts_back(int ready)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/uts", root_pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWUTS))
		_exit(2);
	close(fd);
	tell(ready, 'y');
	wait_for_term();
	char name[65] = { 0 };
	gethostname(name, sizeof(name) - 1);
	WL_CHECK(strcmp(name, root_hostname) == 0, "host name %s, expected the root's %s", name, root_hostname);
	WL_CHECK(same_ns(0, root_pid, "uts"), "not in the root's UTS namespace");
	WL_CHECK(same_ns(0, getppid(), "ipc"), "not in its parent's IPC namespace");
	WL_CHECK(shmat(shm_id, NULL, SHM_RDONLY) != (void *)-1, "segment %d is not in its IPC namespace", shm_id);
}

static void uts_ipc_child(int ready)
{
	if (unshare(CLONE_NEWUTS | CLONE_NEWIPC) || sethostname(NESTED_HOST, strlen(NESTED_HOST)))
		_exit(2);
	shm_id = shmget(IPC_PRIVATE, SHM_SIZE, IPC_CREAT | 0600);
	shm_at = shm_id < 0 ? (void *)-1 : shmat(shm_id, NULL, 0);
	if (shm_at == (void *)-1)
		_exit(2);
	for (size_t i = 0; i < SHM_SIZE; i++)
		shm_at[i] = pattern(i);
	pid_t back = spawn(uts_back, "the task back in the root's UTS namespace");
	tell(ready, 'y');
	wait_for_term();
	char name[65] = { 0 };
	gethostname(name, sizeof(name) - 1);
	WL_CHECK(strcmp(name, NESTED_HOST) == 0, "host name %s, expected %s", name, NESTED_HOST);
	WL_CHECK(!same_ns(0, root_pid, "uts") && !same_ns(0, root_pid, "ipc"),
		 "in the root's UTS or IPC namespace");
	size_t bad = 0;
	for (size_t i = 0; i < SHM_SIZE; i++)
		bad += shm_at[i] != pattern(i);
	WL_CHECK(bad == 0, "%zu bytes of the attached segment differ", bad);
	struct shmid_ds ds;
	/* Attached here and in UB, which inherited it. */
	WL_CHECK(shmctl(shm_id, IPC_STAT, &ds) == 0 && ds.shm_segsz == SHM_SIZE && ds.shm_nattch == 2,
		 "segment %d: not found, or not %d bytes attached twice", shm_id, SHM_SIZE);
	end_child(back, "the task back in the root's UTS namespace");
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int net = argc <= 2, uts = argc <= 2, host_root = 0;
	for (int i = 2; i < argc; i++) {
		net |= strcmp(argv[i], "net") == 0;
		host_root |= strcmp(argv[i], "host-root") == 0;
		uts |= strcmp(argv[i], "uts-ipc") == 0;
		veth_between |= strcmp(argv[i], "veth-between") == 0;
		in_userns |= strcmp(argv[i], "userns") == 0;
	}
	if (in_userns && host_root)
		wl_die("userns and host-root do not go together");
	root_pid = getpid();
	if (in_userns)
		make_user_ns();
	gethostname(root_hostname, sizeof(root_hostname) - 1);
	/* The namespace it was started in: the test's, which is criu's at every dump and restore. */
	char start_net[64], now_net[64];
	link_name(0, "net", start_net, sizeof(start_net));
	if (!host_root && unshare(CLONE_NEWNET))
		wl_die("unshare(CLONE_NEWNET)");
	if (!host_root)
		lo_up(0);
	pid_t n = net ? spawn(net_child, "the task in a network namespace of its own") : 0;
	int outer = -1;
	if (veth_between && n) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(PORT + 3) };
		run("ip addr add 198.18.6.2/24 dev nx1");
		run("ip link set nx1 up");
		inet_pton(AF_INET, "198.18.6.2", &a.sin_addr);
		outer = socket(AF_INET, SOCK_STREAM, 0);
		if (outer < 0 || bind(outer, (struct sockaddr *)&a, sizeof(a)) || listen(outer, 4))
			wl_die("listen on 198.18.6.2:%d", PORT + 3);
	}
	pid_t u = uts ? spawn(uts_ipc_child, "the task in UTS and IPC namespaces of its own") : 0;
	wl_ready();
	wait_for_term();
	char name[65] = { 0 };
	gethostname(name, sizeof(name) - 1);
	WL_CHECK(strcmp(name, root_hostname) == 0, "host name %s, expected %s", name, root_hostname);
	link_name(0, "net", now_net, sizeof(now_net));
	WL_CHECK((strcmp(now_net, start_net) == 0) == host_root, "the root is %sin criu's network namespace",
		 host_root ? "not " : "");
	if (outer >= 0)
		WL_CHECK(has_address("nx1", "198.18.6.2"), "nx1 is not up with 198.18.6.2");
	if (n)
		end_child(n, "the task in a network namespace of its own");
	if (u)
		end_child(u, "the task in UTS and IPC namespaces of its own");
	wl_finish();
}
