/*
 * posix_mq: a process in an IPC namespace of its own (it unshares one at start) with two POSIX
 * message queues. /criu-ts-a (mode 0600, room for 16 messages of 100 bytes: more than the
 * namespace's fs/mqueue/msg_max, lowered to 8 once the queue exists) holds five messages of mixed
 * priorities, one of them 100 bytes long, and stays open twice: O_RDWR|O_NONBLOCK, and O_WRONLY
 * with close-on-exec. /criu-ts-b (mode 0640, owned by uid and gid 1000, 3 messages of 32 bytes)
 * holds two messages and is closed. After SIGTERM: both queues with their attributes, owners
 * and modes, the fds with their flags, every message with its priority in order, and mq_send and
 * mq_receive still work; msg_max is still 8.
 * With "nested", a child in an IPC namespace of its own below (it unshares one) holds /criu-ts-c
 * with three messages: after SIGTERM it checks them and its namespace, and exits 0 if they hold;
 * neither namespace may see the other's queues.
 * With "big", it also holds /criu-ts-big: eight messages of 32 KiB (fs/mqueue/msgsize_max raised
 * for it), each of its own bytes, priorities 0 to 2, checked in order after SIGTERM.
 * With "notify", the process is registered for /criu-ts-a's notification (mq_notify): its dump
 * must be refused by name, the queues untouched. With "refused", it also holds a semaphore-mode
 * eventfd, which the dump refuses after the queues were read: they must be as they were.
 *   bin/posix_mq RESULT_FILE [big|nested|notify|refused]
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define QA "/criu-ts-a"
#define QB "/criu-ts-b"
#define QC "/criu-ts-c"
#define QBIG "/criu-ts-big"
#define BIG_SIZE 32768
#define BIG_COUNT 8
#define OWNER 1000
#define LONG_SIZE 100

struct msg {
	const char *text;
	unsigned prio;
};

/* Sent in this order... */
static const struct msg sent_a[] = { { "a1", 3 }, { "b1", 1 }, { "a2", 3 }, { "c1", 7 }, { NULL, 1 } };
/* ...received in this one (NULL: the long message). */
static const struct msg order_a[] = { { "c1", 7 }, { "a1", 3 }, { "a2", 3 }, { "b1", 1 }, { NULL, 1 } };
static const struct msg order_b[] = { { "y", 5 }, { "x", 0 } };

static char long_msg[LONG_SIZE];

static void write_sysctl(const char *path, const char *value)
{
	FILE *f = fopen(path, "w");
	if (!f || fputs(value, f) < 0 || fclose(f))
		wl_die("writing %s", path);
}

static void send(mqd_t q, const struct msg *m)
{
	const char *text = m->text ? m->text : long_msg;
	size_t len = m->text ? strlen(m->text) : LONG_SIZE;
	if (mq_send(q, text, len, m->prio))
		wl_die("mq_send");
}

static void check_attr(mqd_t q, const char *name, long flags, long maxmsg, long msgsize, long cur)
{
	struct mq_attr a;
	if (mq_getattr(q, &a)) {
		wl_fail("mq_getattr %s", name);
		return;
	}
	WL_CHECK(a.mq_flags == flags && a.mq_maxmsg == maxmsg && a.mq_msgsize == msgsize && a.mq_curmsgs == cur,
		 "%s: flags %ld maxmsg %ld msgsize %ld curmsgs %ld", name, a.mq_flags, a.mq_maxmsg, a.mq_msgsize,
		 a.mq_curmsgs);
}

static void check_owner(mqd_t q, const char *name, unsigned mode, unsigned owner)
{
	struct stat st;
	if (fstat(q, &st)) {
		wl_fail("fstat %s", name);
		return;
	}
	WL_CHECK((st.st_mode & 07777) == mode && st.st_uid == owner && st.st_gid == owner,
		 "%s: mode %o uid %u gid %u", name, st.st_mode & 07777, st.st_uid, st.st_gid);
}

static void check_messages(mqd_t q, const char *name, const struct msg *order, size_t n)
{
	char buf[LONG_SIZE + 1];
	for (size_t i = 0; i < n; i++) {
		unsigned prio = 99;
		memset(buf, 0, sizeof(buf));
		ssize_t len = mq_receive(q, buf, LONG_SIZE, &prio);
		const char *want = order[i].text ? order[i].text : long_msg;
		size_t want_len = order[i].text ? strlen(order[i].text) : LONG_SIZE;
		WL_CHECK(len == (ssize_t)want_len && memcmp(buf, want, want_len) == 0 && prio == order[i].prio,
			 "%s message %zu: %zd bytes \"%.8s\" priority %u", name, i, len, buf, prio);
	}
	errno = 0;
	WL_CHECK(mq_receive(q, buf, LONG_SIZE, NULL) == -1 && errno == EAGAIN, "%s has more messages", name);
}

static const struct msg sent_c[] = { { "low", 0 }, { "high", 9 }, { "mid", 4 } };
static const struct msg order_c[] = { { "high", 9 }, { "mid", 4 }, { "low", 0 } };

/* The nested child: its own namespace and queue; exits 0 when all is still there after SIGTERM. */
static pid_t nested_child(void)
{
	int ready[2];
	if (pipe(ready))
		wl_die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		wl_die("fork");
	if (pid == 0) {
		close(ready[0]);
		struct mq_attr attr = { .mq_maxmsg = 4, .mq_msgsize = 16 };
		if (unshare(CLONE_NEWIPC))
			_exit(2);
		mqd_t q = mq_open(QC, O_CREAT | O_EXCL | O_RDWR | O_NONBLOCK, 0604, &attr);
		if (q == (mqd_t)-1)
			_exit(2);
		for (size_t i = 0; i < 3; i++)
			send(q, &sent_c[i]);
		if (write(ready[1], "r", 1) != 1)
			_exit(2);
		close(ready[1]);
		wl_wait();
		mqd_t other = mq_open(QA, O_RDONLY);
		WL_CHECK(other == (mqd_t)-1 && errno == ENOENT, "the nested namespace sees %s", QA);
		check_attr(q, QC, O_NONBLOCK, 4, 16, 3);
		check_owner(q, QC, 0604, 0);
		check_messages(q, QC, order_c, 3);
		_exit(wl_failures() ? 1 : 0);
	}
	close(ready[1]);
	char c;
	if (read(ready[0], &c, 1) != 1)
		wl_die("the nested child did not start");
	close(ready[0]);
	return pid;
}

static mqd_t big_queue(void)
{
	static char buf[BIG_SIZE];
	struct mq_attr attr = { .mq_maxmsg = BIG_COUNT, .mq_msgsize = BIG_SIZE };
	write_sysctl("/proc/sys/fs/mqueue/msgsize_max", "32768");
	mqd_t q = mq_open(QBIG, O_CREAT | O_EXCL | O_RDWR | O_NONBLOCK, 0600, &attr);
	if (q == (mqd_t)-1)
		wl_die("mq_open %s", QBIG);
	for (int i = 0; i < BIG_COUNT; i++) {
		memset(buf, 'A' + i, sizeof(buf));
		if (mq_send(q, buf, sizeof(buf), i % 3))
			wl_die("mq_send %s", QBIG);
	}
	return q;
}

/* Highest priority first, in the order sent within a priority. */
static void check_big(mqd_t q)
{
	static char buf[BIG_SIZE];
	for (int prio = 2; prio >= 0; prio--) {
		for (int i = prio; i < BIG_COUNT; i += 3) {
			unsigned got = 99;
			ssize_t len = mq_receive(q, buf, sizeof(buf), &got);
			int same = len == BIG_SIZE;
			for (int j = 0; same && j < BIG_SIZE; j++)
				same = buf[j] == 'A' + i;
			WL_CHECK(same && got == (unsigned)prio, "%s: message %d: %zd bytes of '%c' priority %u", QBIG, i,
				 len, len > 0 ? buf[0] : '?', got);
		}
	}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "";
	for (int i = 0; i < LONG_SIZE; i++)
		long_msg[i] = (char)(i * 7 + 1);
	if (unshare(CLONE_NEWIPC))
		wl_die("unshare(CLONE_NEWIPC)");
	write_sysctl("/proc/sys/fs/mqueue/msg_max", "16");
	mode_t old = umask(0);
	struct mq_attr attr_a = { .mq_maxmsg = 16, .mq_msgsize = LONG_SIZE };
	mqd_t qa = mq_open(QA, O_CREAT | O_EXCL | O_RDWR | O_NONBLOCK, 0600, &attr_a);
	struct mq_attr attr_b = { .mq_maxmsg = 3, .mq_msgsize = 32 };
	mqd_t qb = mq_open(QB, O_CREAT | O_EXCL | O_RDWR | O_NONBLOCK, 0640, &attr_b);
	umask(old);
	if (qa == (mqd_t)-1 || qb == (mqd_t)-1)
		wl_die("mq_open");
	write_sysctl("/proc/sys/fs/mqueue/msg_max", "8");
	for (size_t i = 0; i < sizeof(sent_a) / sizeof(sent_a[0]); i++)
		send(qa, &sent_a[i]);
	send(qb, &order_b[1]);
	send(qb, &order_b[0]);
	if (fchown(qb, OWNER, OWNER) || mq_close(qb))
		wl_die("giving /criu-ts-b away");
	/* mq_open always sets close-on-exec: the read-write fd has it cleared. */
	mqd_t qa_w = mq_open(QA, O_WRONLY);
	if (qa_w == (mqd_t)-1 || fcntl(qa, F_SETFD, 0))
		wl_die("mq_open O_WRONLY");
	if (strcmp(mode, "notify") == 0) {
		struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1 };
		signal(SIGUSR1, SIG_IGN);
		if (mq_notify(qa, &ev))
			wl_die("mq_notify");
	}
	if (strcmp(mode, "refused") == 0 && eventfd(0, EFD_SEMAPHORE) < 0)
		wl_die("eventfd");
	pid_t child = strcmp(mode, "nested") == 0 ? nested_child() : 0;
	mqd_t big = strcmp(mode, "big") == 0 ? big_queue() : (mqd_t)-1;
	wl_ready();
	wl_wait();

	char value[32] = "";
	WL_CHECK(wl_read_file("/proc/sys/fs/mqueue/msg_max", value, sizeof(value)) > 0 && strcmp(value, "8\n") == 0,
		 "msg_max is %s", value);
	check_attr(qa, QA, O_NONBLOCK, 16, LONG_SIZE, 5);
	check_attr(qa_w, QA " (write-only fd)", 0, 16, LONG_SIZE, 5);
	WL_CHECK((fcntl(qa, F_GETFL) & O_ACCMODE) == O_RDWR && fcntl(qa, F_GETFD) == 0, "the O_RDWR fd's flags");
	WL_CHECK((fcntl(qa_w, F_GETFL) & O_ACCMODE) == O_WRONLY && fcntl(qa_w, F_GETFD) == FD_CLOEXEC,
		 "the O_WRONLY fd's flags");
	check_owner(qa, QA, 0600, 0);
	check_messages(qa, QA, order_a, 5);

	mqd_t qb2 = mq_open(QB, O_RDONLY | O_NONBLOCK);
	if (qb2 == (mqd_t)-1) {
		wl_fail("%s is gone", QB);
	} else {
		check_attr(qb2, QB, O_NONBLOCK, 3, 32, 2);
		check_owner(qb2, QB, 0640, OWNER);
		check_messages(qb2, QB, order_b, 2);
	}

	/* The queue still works both ways, through both fds. */
	static const struct msg again = { "again", 2 };
	send(qa_w, &again);
	check_messages(qa, QA " (after a send)", &again, 1);
	if (big != (mqd_t)-1)
		check_big(big);
	if (child > 0) {
		int status = 0;
		errno = 0;
		WL_CHECK(mq_open(QC, O_RDONLY) == (mqd_t)-1 && errno == ENOENT, "the root's namespace sees %s", QC);
		kill(child, SIGTERM);
		WL_CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
			 "the nested child's checks failed (status 0x%x)", status);
	}
	wl_finish();
}
