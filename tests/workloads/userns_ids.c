/*
 * userns_ids: a process in a user namespace of its own with the maps of an id-mapped container
 * (uids and gids "0 100000 65536", written by a helper in the host's namespace), and IPC and network
 * namespaces that user namespace owns. Before it leaves the host's namespace it sets its loginuid
 * to 101000 when /proc/self/loginuid lets it (1000 inside), and gives its result file's directory
 * to the namespace's root (host 100000), as a runtime gives a container its files. Inside, as root
 * there, it makes and gives to uid 1000 and gid 1001 as it sees them (101000 and 101001 on the host):
 *   a file it keeps open, removed (a ghost), holding "ghost data";
 *   a memfd holding "memfd data" (fchown);
 *   a SysV shared memory segment with a pattern, a semaphore set with values and a message queue
 *   with one message (IPC_SET; their creators stay root inside);
 *   a POSIX message queue holding one message (fchown of its descriptor);
 *   a datagram unix socket bound at RESULT_FILE.sock, whose file it chowns;
 *   a pty pair (/dev/ptmx and its slave, which it chowns);
 *   net.ipv4.ping_group_range "1000 1001" in its network namespace.
 * On SIGTERM it checks every owner as it sees them (fstat, IPC_STAT, /proc/self/loginuid, the
 * sysctl's file) and that each object still works (contents read back, a datagram to the socket's
 * path, bytes through the pty both ways).
 *   bin/userns_ids RESULT_FILE [no-mq] [no-pty] [no-ghost] [no-sysv] [no-unix] [no-memfd]
 *                                 [no-loginuid] [no-sysctl] [container]
 * Each no-X leaves that part out (for a tool that cannot dump or restore it, or to try one part
 * alone).
 * With `container` it is the init of a container whose runtime made all its namespaces (runc with
 * the same maps and its loginuid already 1000 inside): it makes no namespace and touches no
 * directory or loginuid; its log goes to RESULT_FILE.log and its stdin is /dev/null (a runtime's
 * pipes would be gone); the ghost file and the socket are /tmp/owners.ghost and /tmp/owners.sock,
 * on the container's root (its /tmp, root's inside), not beside the result on a bind mount.
 */
#define _GNU_SOURCE
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <mqueue.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#define MAP "0 100000 65536\n"
#define HOST_ROOT 100000
#define OWNER 1000
#define GROUP 1001
#define HOST_LOGINUID 101000
#define SHM_SIZE 8192
#define NSEMS 2
#define MQ_NAME "/criu-ts-owners"
#define PING_RANGE "1000\t1001\n"

static int ghost_fd = -1, memfd = -1, shm_id = -1, sem_id = -1, msg_id = -1, sock_fd = -1;
static int master_fd = -1, slave_fd = -1;
static mqd_t mq = (mqd_t)-1;
static int loginuid_set;
static char sock_path[108];

static int has(int argc, char **argv, const char *mode)
{
	for (int i = 2; i < argc; i++)
		if (strcmp(argv[i], mode) == 0)
			return 1;
	return 0;
}

static void owned(const char *what, uid_t uid, gid_t gid)
{
	WL_CHECK(uid == OWNER && gid == GROUP, "%s is owned by %u:%u inside, expected %d:%d", what, uid, gid,
		 OWNER, GROUP);
}

static void fd_owned(const char *what, int fd)
{
	struct stat st;
	if (fstat(fd, &st)) {
		wl_fail("fstat of the %s: %s", what, strerror(errno));
		return;
	}
	owned(what, st.st_uid, st.st_gid);
}

static void read_back(const char *what, int fd, const char *want)
{
	char buf[64] = { 0 };
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	WL_CHECK(n == (ssize_t)strlen(want) && memcmp(buf, want, n) == 0, "the %s holds \"%s\", expected \"%s\"",
		 what, buf, want);
}

/* As host root: the loginuid (if the kernel lets it be set), the result's directory for root inside. */
static void before_unshare(const char *result, int set_loginuid)
{
	int fd = set_loginuid ? open("/proc/self/loginuid", O_WRONLY) : -1;
	if (fd >= 0) {
		loginuid_set = dprintf(fd, "%d", HOST_LOGINUID) > 0;
		close(fd);
	}
	wl_log("loginuid %s", loginuid_set ? "set to 101000" : "left as it is (not writable)");
	char dir[512];
	snprintf(dir, sizeof(dir), "%s", result);
	if (chown(dirname(dir), HOST_ROOT, HOST_ROOT))
		wl_die("chown of the result's directory");
}

/* In the user namespace: becomes its root (host 100000), dumpable, then unshares IPC and network. */
static void enter(void)
{
	wl_unshare_user(MAP);
	if (setgroups(0, NULL) || setresgid(0, 0, 0) || setresuid(0, 0, 0))
		wl_die("setgroups/setresgid/setresuid to root inside");
	if (prctl(PR_SET_DUMPABLE, 1))
		wl_die("prctl(PR_SET_DUMPABLE)");
	if (unshare(CLONE_NEWIPC | CLONE_NEWNET))
		wl_die("unshare(CLONE_NEWIPC | CLONE_NEWNET)");
}

static void make_ghost(const char *base)
{
	char path[512];
	snprintf(path, sizeof(path), "%s.ghost", base);
	ghost_fd = open(path, O_CREAT | O_EXCL | O_RDWR, 0640);
	if (ghost_fd < 0 || write(ghost_fd, "ghost data", 10) != 10 || fchown(ghost_fd, OWNER, GROUP) ||
	    unlink(path))
		wl_die("the ghost file");
}

static void make_memfd(void)
{
	memfd = memfd_create("owners", 0);
	if (memfd < 0 || write(memfd, "memfd data", 10) != 10 || fchown(memfd, OWNER, GROUP))
		wl_die("the memfd");
}

static void make_sysv(void)
{
	shm_id = shmget(IPC_PRIVATE, SHM_SIZE, IPC_CREAT | 0640);
	sem_id = semget(IPC_PRIVATE, NSEMS, IPC_CREAT | 0640);
	msg_id = msgget(IPC_PRIVATE, IPC_CREAT | 0640);
	if (shm_id < 0 || sem_id < 0 || msg_id < 0)
		wl_die("shmget/semget/msgget");
	unsigned char *p = shmat(shm_id, NULL, 0);
	if (p == (void *)-1)
		wl_die("shmat");
	for (size_t i = 0; i < SHM_SIZE; i++)
		p[i] = (unsigned char)(i * 13 + 5);
	shmdt(p);
	unsigned short values[NSEMS] = { 7, 11 };
	if (semctl(sem_id, 0, SETALL, values))
		wl_die("semctl(SETALL)");
	struct {
		long type;
		char text[16];
	} m = { 3, "sysv message" };
	if (msgsnd(msg_id, &m, strlen(m.text), 0))
		wl_die("msgsnd");

	struct shmid_ds shm;
	struct semid_ds sem;
	struct msqid_ds msg;
	if (shmctl(shm_id, IPC_STAT, &shm) || semctl(sem_id, 0, IPC_STAT, &sem) || msgctl(msg_id, IPC_STAT, &msg))
		wl_die("IPC_STAT");
	shm.shm_perm.uid = sem.sem_perm.uid = msg.msg_perm.uid = OWNER;
	shm.shm_perm.gid = sem.sem_perm.gid = msg.msg_perm.gid = GROUP;
	if (shmctl(shm_id, IPC_SET, &shm) || semctl(sem_id, 0, IPC_SET, &sem) || msgctl(msg_id, IPC_SET, &msg))
		wl_die("IPC_SET");
}

static void make_mq(void)
{
	struct mq_attr attr = { .mq_maxmsg = 4, .mq_msgsize = 32 };
	mq = mq_open(MQ_NAME, O_CREAT | O_EXCL | O_RDWR | O_NONBLOCK, 0640, &attr);
	if (mq == (mqd_t)-1 || mq_send(mq, "posix message", 13, 2) || fchown(mq, OWNER, GROUP))
		wl_die("the POSIX message queue");
}

static void make_unix(const char *base)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	snprintf(sock_path, sizeof(sock_path), "%s.sock", base);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", sock_path);
	sock_fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	/* Writable by all: a container's root may lack CAP_DAC_OVERRIDE, and sends to it after restore. */
	if (sock_fd < 0 || bind(sock_fd, (struct sockaddr *)&addr, sizeof(addr)) || chmod(sock_path, 0777) ||
	    chown(sock_path, OWNER, GROUP))
		wl_die("the unix socket at %s", sock_path);
}

static void make_pty(void)
{
	char name[64];
	master_fd = posix_openpt(O_RDWR | O_NOCTTY);
	if (master_fd < 0 || grantpt(master_fd) || unlockpt(master_fd) || ptsname_r(master_fd, name, sizeof(name)))
		wl_die("the pty's master");
	slave_fd = open(name, O_RDWR | O_NOCTTY);
	struct termios t;
	if (slave_fd < 0 || tcgetattr(slave_fd, &t))
		wl_die("the pty's slave %s", name);
	cfmakeraw(&t);
	if (tcsetattr(slave_fd, TCSANOW, &t) || fchown(slave_fd, OWNER, GROUP))
		wl_die("the pty's slave %s", name);
}

static void make_sysctl(void)
{
	FILE *f = fopen("/proc/sys/net/ipv4/ping_group_range", "w");
	if (!f || fputs("1000 1001", f) < 0 || fclose(f))
		wl_die("writing net.ipv4.ping_group_range");
}

static void check_sysv(void)
{
	struct shmid_ds shm;
	struct semid_ds sem;
	struct msqid_ds msg;
	if (shmctl(shm_id, IPC_STAT, &shm) == 0) {
		owned("SysV segment", shm.shm_perm.uid, shm.shm_perm.gid);
		WL_CHECK(shm.shm_perm.cuid == 0 && shm.shm_perm.cgid == 0, "the segment's creator is %u:%u inside",
			 shm.shm_perm.cuid, shm.shm_perm.cgid);
	} else {
		wl_fail("segment %d is gone", shm_id);
	}
	if (semctl(sem_id, 0, IPC_STAT, &sem) == 0) {
		owned("SysV semaphore set", sem.sem_perm.uid, sem.sem_perm.gid);
		WL_CHECK(sem.sem_perm.cuid == 0 && sem.sem_perm.cgid == 0, "the semaphores' creator is %u:%u inside",
			 sem.sem_perm.cuid, sem.sem_perm.cgid);
	} else {
		wl_fail("semaphore set %d is gone", sem_id);
	}
	if (msgctl(msg_id, IPC_STAT, &msg) == 0) {
		owned("SysV message queue", msg.msg_perm.uid, msg.msg_perm.gid);
		WL_CHECK(msg.msg_perm.cuid == 0 && msg.msg_perm.cgid == 0, "the queue's creator is %u:%u inside",
			 msg.msg_perm.cuid, msg.msg_perm.cgid);
	} else {
		wl_fail("message queue %d is gone", msg_id);
	}

	unsigned char *p = shmat(shm_id, NULL, SHM_RDONLY);
	if (p != (void *)-1) {
		size_t bad = 0;
		for (size_t i = 0; i < SHM_SIZE; i++)
			bad += p[i] != (unsigned char)(i * 13 + 5);
		WL_CHECK(bad == 0, "%zu bytes of the segment differ", bad);
		shmdt(p);
	} else {
		wl_fail("cannot attach segment %d", shm_id);
	}
	unsigned short values[NSEMS] = { 0 };
	WL_CHECK(semctl(sem_id, 0, GETALL, values) == 0 && values[0] == 7 && values[1] == 11,
		 "semaphores %u %u, expected 7 11", values[0], values[1]);
	struct {
		long type;
		char text[16];
	} m = { 0 };
	ssize_t n = msgrcv(msg_id, &m, sizeof(m.text), 0, IPC_NOWAIT);
	WL_CHECK(n == 12 && m.type == 3 && memcmp(m.text, "sysv message", 12) == 0, "the SysV message: %zd bytes",
		 n);
}

static void check_mq(void)
{
	fd_owned("POSIX message queue", mq);
	char buf[32] = { 0 };
	unsigned prio = 0;
	ssize_t n = mq_receive(mq, buf, sizeof(buf), &prio);
	WL_CHECK(n == 13 && prio == 2 && memcmp(buf, "posix message", 13) == 0,
		 "the POSIX message: %zd bytes \"%s\", priority %u", n, buf, prio);
	WL_CHECK(mq_send(mq, "again", 5, 0) == 0 && mq_receive(mq, buf, sizeof(buf), &prio) == 5,
		 "the POSIX queue does not pass a message any more");
}

static void check_unix(void)
{
	struct stat st;
	if (stat(sock_path, &st) == 0) {
		owned("unix socket's file", st.st_uid, st.st_gid);
		WL_CHECK((st.st_mode & 07777) == 0777, "the socket's file has mode %o, not 777", st.st_mode & 07777);
	}
	else
		wl_fail("the socket's file %s: %s", sock_path, strerror(errno));
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", sock_path);
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);
	char buf[16] = { 0 };
	WL_CHECK(s >= 0 && sendto(s, "dgram", 5, 0, (struct sockaddr *)&addr, sizeof(addr)) == 5 &&
			 recv(sock_fd, buf, sizeof(buf), MSG_DONTWAIT) == 5 && memcmp(buf, "dgram", 5) == 0,
		 "a datagram sent to %s did not reach the socket", sock_path);
	if (s >= 0)
		close(s);
}

/* Reads exactly `len` bytes from fd within 5 s; they must be `want`. */
static void expect(int fd, const char *want, size_t len, const char *what)
{
	char buf[16];
	size_t got = 0;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	while (got < len && poll(&p, 1, 5000) == 1) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n <= 0)
			break;
		got += n;
	}
	WL_CHECK(got == len && memcmp(buf, want, len) == 0, "%s: read %zu of %zu bytes", what, got, len);
}

static void check_pty(void)
{
	fd_owned("pty's slave", slave_fd);
	WL_CHECK(write(master_fd, "in", 2) == 2, "write to the pty's master");
	expect(slave_fd, "in", 2, "master to slave");
	WL_CHECK(write(slave_fd, "out", 3) == 3, "write to the pty's slave");
	expect(master_fd, "out", 3, "slave to master");
}

static void check_loginuid(void)
{
	char buf[32] = { 0 };
	WL_CHECK(wl_read_file("/proc/self/loginuid", buf, sizeof(buf)) > 0 && strcmp(buf, "1000") == 0,
		 "loginuid \"%s\" inside, expected 1000", buf);
}

static void check_sysctl(void)
{
	char buf[32] = { 0 };
	WL_CHECK(wl_read_file("/proc/sys/net/ipv4/ping_group_range", buf, sizeof(buf)) > 0 &&
			 strcmp(buf, PING_RANGE) == 0,
		 "net.ipv4.ping_group_range is \"%s\"", buf);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int mq_on = !has(argc, argv, "no-mq"), pty_on = !has(argc, argv, "no-pty");
	int ghost_on = !has(argc, argv, "no-ghost"), sysv_on = !has(argc, argv, "no-sysv");
	int unix_on = !has(argc, argv, "no-unix"), memfd_on = !has(argc, argv, "no-memfd");
	int sysctl_on = !has(argc, argv, "no-sysctl");

	const char *base = argv[1];
	if (has(argc, argv, "container")) {
		base = "/tmp/owners";
		char path[512], buf[32];
		int log = open(wl_path("log", path, sizeof(path)), O_WRONLY | O_CREAT | O_APPEND, 0644);
		int null = open("/dev/null", O_RDONLY);
		if (log < 0 || null < 0 || dup2(null, 0) != 0 || dup2(log, 1) != 1 || dup2(log, 2) != 2)
			wl_die("stdio in the container");
		close(log);
		close(null);
		loginuid_set = !has(argc, argv, "no-loginuid") &&
			       wl_read_file("/proc/self/loginuid", buf, sizeof(buf)) > 0 && strcmp(buf, "1000") == 0;
	} else {
		before_unshare(argv[1], !has(argc, argv, "no-loginuid"));
		enter();
	}
	if (ghost_on)
		make_ghost(base);
	if (memfd_on)
		make_memfd();
	if (sysv_on)
		make_sysv();
	if (mq_on)
		make_mq();
	if (unix_on)
		make_unix(base);
	if (pty_on)
		make_pty();
	if (sysctl_on)
		make_sysctl();
	if (loginuid_set)
		check_loginuid();
	if (sysctl_on)
		check_sysctl();
	wl_ready();
	wl_wait();

	if (ghost_on) {
		fd_owned("ghost file", ghost_fd);
		read_back("ghost file", ghost_fd, "ghost data");
	}
	if (memfd_on) {
		fd_owned("memfd", memfd);
		read_back("memfd", memfd, "memfd data");
	}
	if (sysv_on)
		check_sysv();
	if (mq_on)
		check_mq();
	if (unix_on)
		check_unix();
	if (pty_on)
		check_pty();
	if (loginuid_set)
		check_loginuid();
	if (sysctl_on)
		check_sysctl();
	wl_finish();
}
