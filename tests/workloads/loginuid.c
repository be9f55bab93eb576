/*
 * loginuid: the audit login uid (/proc/self/loginuid), which a process can
 * only set for itself. Set to 4242 (it must be unset or changeable: root with
 * CAP_AUDIT_CONTROL) before a thread is made; after the wait the process and
 * its thread must still read 4242.
 *
 *   bin/loginuid RESULT_FILE
 */
#include "lib.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LOGINUID 4242

static pid_t thread_tid;

static void *idle(void *arg)
{
	(void)arg;
	thread_tid = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static long read_number(const char *path)
{
	char buf[64];

	if (wl_read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	return strtol(buf, NULL, 10);
}

int main(int argc, char **argv)
{
	char path[128];
	pthread_t t;
	long got;
	int fd;

	wl_init(argc, argv);
	fd = open("/proc/self/loginuid", O_WRONLY);
	if (fd < 0 || dprintf(fd, "%d", LOGINUID) < 0)
		wl_die("set /proc/self/loginuid");
	close(fd);
	if (read_number("/proc/self/loginuid") != LOGINUID)
		wl_die("setup: loginuid does not read back");
	if (pthread_create(&t, NULL, idle, NULL))
		wl_die("pthread_create");
	while (!__atomic_load_n(&thread_tid, __ATOMIC_SEQ_CST))
		usleep(1000);
	wl_ready();
	wl_wait();

	got = read_number("/proc/self/loginuid");
	WL_CHECK(got == LOGINUID, "loginuid %ld, expected %d", got, LOGINUID);
	snprintf(path, sizeof(path), "/proc/self/task/%d/loginuid", (int)thread_tid);
	got = read_number(path);
	WL_CHECK(got == LOGINUID, "the thread's loginuid %ld, expected %d", got, LOGINUID);
	wl_finish();
}
