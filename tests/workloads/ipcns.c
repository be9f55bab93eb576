/*
 * ipcns: a process in an IPC namespace of its own (it unshares one at start) holding SysV objects:
 * two shared memory segments (one with a key, one private, with a pattern written in each, neither
 * left attached), a semaphore set with values, a message queue with three messages and a byte
 * limit of its own, objects owned by another user, and changed sysctls. After restore every object
 * must be back under its id with its contents, owner and mode, and the sysctls with their values.
 * With "attached", the keyed segment stays attached read-write and the private one read-only and
 * removed (IPC_RMID): after restore both must be attached at the same addresses, to the segments
 * themselves (a write through one attachment shows through another), and the removed one still
 * marked removed. With "attached-child", a child forked after the attaching holds both too
 * (each segment then has two attachments).
 *   bin/ipcns RESULT_FILE [attached|attached-child]
 */
#include "lib.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#define SHM_KEY 0x5e6d0001
#define SEM_KEY 0x5e6d0002
#define MSG_KEY 0x5e6d0003
#define SHM_SIZE 10000
#define PRIVATE_SIZE 70000
#define NSEMS 3
#define QBYTES 4000
#define OWNER 1234
#define MSGMNB "9000"
#define SHMMNI "1000"

static int shm_keyed, shm_private, sem_id, msg_id;
static unsigned char *keyed_at, *private_at;
static pid_t child;
static unsigned long attachments = 1;

static const char *messages[] = { "first", "the second message", "3" };

static void link_name(const char *path, char *buf, size_t size)
{
	ssize_t n = readlink(path, buf, size - 1);
	buf[n < 0 ? 0 : n] = 0;
}

static void write_sysctl(const char *path, const char *value)
{
	FILE *f = fopen(path, "w");
	if (!f || fputs(value, f) < 0 || fclose(f))
		wl_die("writing %s", path);
}

static void check_sysctl(const char *path, const char *value)
{
	char buf[64];
	WL_CHECK(wl_read_file(path, buf, sizeof(buf)) > 0 && strncmp(buf, value, strlen(value)) == 0 &&
			 buf[strlen(value)] == '\n',
		 "%s is \"%s\", expected %s", path, buf, value);
}

static unsigned char pattern(int seed, size_t i)
{
	return (unsigned char)(i * 7 + seed);
}

static int make_segment(key_t key, size_t size, int seed)
{
	int id = shmget(key, size, IPC_CREAT | IPC_EXCL | 0640);
	if (id < 0)
		wl_die("shmget");
	unsigned char *p = shmat(id, NULL, 0);
	if (p == (void *)-1)
		wl_die("shmat");
	for (size_t i = 0; i < size; i++)
		p[i] = pattern(seed, i);
	shmdt(p);
	return id;
}

static void check_segment(key_t key, int id, size_t size, int seed, int uid)
{
	if (key != IPC_PRIVATE)
		WL_CHECK(shmget(key, 0, 0) == id, "segment with key %#x is not %d", key, id);
	struct shmid_ds ds;
	if (shmctl(id, IPC_STAT, &ds)) {
		wl_fail("segment %d is gone", id);
		return;
	}
	WL_CHECK(ds.shm_segsz == size, "segment %d has %zu bytes, expected %zu", id, ds.shm_segsz, size);
	WL_CHECK((ds.shm_perm.mode & 0777) == 0640, "segment %d mode %o", id, ds.shm_perm.mode & 0777);
	WL_CHECK((int)ds.shm_perm.uid == uid, "segment %d owned by %d, expected %d", id, ds.shm_perm.uid, uid);
	unsigned char *p = shmat(id, NULL, SHM_RDONLY);
	if (p == (void *)-1) {
		wl_fail("cannot attach segment %d", id);
		return;
	}
	size_t bad = 0;
	for (size_t i = 0; i < size; i++)
		bad += p[i] != pattern(seed, i);
	WL_CHECK(bad == 0, "segment %d: %zu bytes differ", id, bad);
	shmdt(p);
}

static void check_semaphores(void)
{
	WL_CHECK(semget(SEM_KEY, 0, 0) == sem_id, "semaphore set with key %#x is not %d", SEM_KEY, sem_id);
	unsigned short values[NSEMS] = { 0 };
	WL_CHECK(semctl(sem_id, 0, GETALL, values) == 0, "semaphore set %d is gone", sem_id);
	for (int i = 0; i < NSEMS; i++)
		WL_CHECK(values[i] == 10 * (i + 1), "semaphore %d is %d, expected %d", i, values[i], 10 * (i + 1));
}

/* Copies (MSG_COPY) leave the queue as it is, so the check can run before the dump too. */
static void check_queue(void)
{
	WL_CHECK(msgget(MSG_KEY, 0) == msg_id, "message queue with key %#x is not %d", MSG_KEY, msg_id);
	struct msqid_ds ds;
	if (msgctl(msg_id, IPC_STAT, &ds)) {
		wl_fail("message queue %d is gone", msg_id);
		return;
	}
	WL_CHECK(ds.msg_qnum == 3, "%lu messages queued, expected 3", ds.msg_qnum);
	WL_CHECK(ds.msg_qbytes == QBYTES, "queue limit %lu bytes, expected %d", ds.msg_qbytes, QBYTES);
	WL_CHECK((int)ds.msg_perm.gid == OWNER, "queue group %d, expected %d", ds.msg_perm.gid, OWNER);
	for (int i = 0; i < 3; i++) {
		struct {
			long type;
			char text[64];
		} m = { 0 };
		ssize_t n = msgrcv(msg_id, &m, sizeof(m.text), i, IPC_NOWAIT | 040000 /* MSG_COPY */);
		WL_CHECK(n == (ssize_t)strlen(messages[i]) && m.type == i + 1 &&
				 memcmp(m.text, messages[i], n) == 0,
			 "message %d: type %ld, %zd bytes \"%.*s\"", i, m.type, n, (int)(n < 0 ? 0 : n), m.text);
	}
}

static void check_attached(void)
{
	struct shmid_ds ds;
	WL_CHECK(shmctl(shm_keyed, IPC_STAT, &ds) == 0 && ds.shm_nattch == attachments,
		 "segment %d attached %lu times, expected %lu", shm_keyed, ds.shm_nattch, attachments);
	WL_CHECK(shmctl(shm_private, IPC_STAT, &ds) == 0 && ds.shm_nattch == attachments &&
			 (ds.shm_perm.mode & SHM_DEST),
		 "removed segment %d: attached %lu times, mode %o", shm_private, ds.shm_nattch, ds.shm_perm.mode);
	size_t bad = 0;
	for (size_t i = 0; i < SHM_SIZE; i++)
		bad += keyed_at[i] != pattern(1, i);
	for (size_t i = 0; i < PRIVATE_SIZE; i++)
		bad += private_at[i] != pattern(2, i);
	WL_CHECK(bad == 0, "%zu bytes differ in the attached segments", bad);
	/* The attachment is the segment: what is written through it shows through another one. */
	unsigned char *other = shmat(shm_keyed, NULL, SHM_RDONLY);
	if (other == (void *)-1) {
		wl_fail("cannot attach segment %d again", shm_keyed);
		return;
	}
	keyed_at[0] ^= 0xff;
	WL_CHECK(other[0] == keyed_at[0], "a write to segment %d does not show through another attachment",
		 shm_keyed);
	keyed_at[0] ^= 0xff;
	shmdt(other);
	WL_CHECK(shmdt(keyed_at) == 0, "segment %d cannot be detached: %m", shm_keyed);
	keyed_at = shmat(shm_keyed, keyed_at, 0);
}

static void check_all(void)
{
	char own[64], host[64];
	link_name("/proc/self/ns/ipc", own, sizeof(own));
	link_name("/proc/1/ns/ipc", host, sizeof(host));
	WL_CHECK(own[0] && strcmp(own, host) != 0, "in the host's IPC namespace %s", host);
	check_sysctl("/proc/sys/kernel/msgmnb", MSGMNB);
	check_sysctl("/proc/sys/kernel/shmmni", SHMMNI);
	check_segment(SHM_KEY, shm_keyed, SHM_SIZE, 1, 0);
	if (private_at)
		check_attached();
	else
		check_segment(IPC_PRIVATE, shm_private, PRIVATE_SIZE, 2, OWNER);
	check_semaphores();
	check_queue();
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (unshare(CLONE_NEWIPC))
		wl_die("unshare(CLONE_NEWIPC)");
	write_sysctl("/proc/sys/kernel/msgmnb", MSGMNB);
	write_sysctl("/proc/sys/kernel/shmmni", SHMMNI);

	/* A segment made and removed first, so the ids kept are not the first ones. */
	shmctl(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600), IPC_RMID, NULL);
	shm_keyed = make_segment(SHM_KEY, SHM_SIZE, 1);
	shm_private = make_segment(IPC_PRIVATE, PRIVATE_SIZE, 2);
	struct shmid_ds ds;
	if (shmctl(shm_private, IPC_STAT, &ds))
		wl_die("shmctl(IPC_STAT)");
	ds.shm_perm.uid = OWNER;
	if (shmctl(shm_private, IPC_SET, &ds))
		wl_die("shmctl(IPC_SET)");

	if (argc > 2 && strncmp(argv[2], "attached", 8) == 0) {
		keyed_at = shmat(shm_keyed, NULL, 0);
		private_at = shmat(shm_private, NULL, SHM_RDONLY);
		if (keyed_at == (void *)-1 || private_at == (void *)-1 || shmctl(shm_private, IPC_RMID, NULL))
			wl_die("attaching the segments");
		if (strcmp(argv[2], "attached-child") == 0) {
			child = fork();
			if (child < 0)
				wl_die("fork");
			if (child == 0)
				for (;;)
					pause();
			attachments = 2;
		}
	}

	sem_id = semget(SEM_KEY, NSEMS, IPC_CREAT | IPC_EXCL | 0600);
	unsigned short values[NSEMS] = { 10, 20, 30 };
	if (sem_id < 0 || semctl(sem_id, 0, SETALL, values))
		wl_die("semaphores");

	msg_id = msgget(MSG_KEY, IPC_CREAT | IPC_EXCL | 0600);
	struct msqid_ds qs;
	if (msg_id < 0 || msgctl(msg_id, IPC_STAT, &qs))
		wl_die("msgget");
	qs.msg_qbytes = QBYTES;
	qs.msg_perm.gid = OWNER;
	if (msgctl(msg_id, IPC_SET, &qs))
		wl_die("msgctl(IPC_SET)");
	for (int i = 0; i < 3; i++) {
		struct {
			long type;
			char text[64];
		} m = { .type = i + 1 };
		memcpy(m.text, messages[i], strlen(messages[i]));
		if (msgsnd(msg_id, &m, strlen(messages[i]), 0))
			wl_die("msgsnd");
	}
	check_all();
	wl_ready();
	wl_wait();
	check_all();
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	wl_finish();
}
