/*
 * novdso: a process (with a second thread) that unmapped its [vdso], as some
 * sandboxes and runtimes do. A dump has to find another place to run its
 * syscalls from; a restore must not give the vDSO back. After SIGTERM
 * /proc/self/maps must have no [vdso], and syscalls, a signal handler (its
 * return goes through glibc's restorer, not the vDSO) and the thread must
 * still work. Nothing here may call into the vDSO once it is gone
 * (clock_gettime, gettimeofday, time, getcpu): glibc would jump into nothing.
 *
 *   bin/novdso RESULT_FILE
 */
#include "lib.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

static atomic_int thread_turns, handled;

static void *ticker(void *arg)
{
	(void)arg;
	for (;;) {
		atomic_fetch_add(&thread_turns, 1);
		usleep(5000);
	}
	return NULL;
}

static void on_usr1(int sig)
{
	(void)sig;
	atomic_fetch_add(&handled, 1);
}

/* Start and end of the [vdso] line of /proc/self/maps; 0 when there is none. */
static unsigned long vdso_range(unsigned long *end)
{
	static char maps[65536];
	char *line;

	if (wl_read_file("/proc/self/maps", maps, sizeof(maps)) < 0)
		wl_die("read /proc/self/maps");
	for (line = strtok(maps, "\n"); line; line = strtok(NULL, "\n"))
		if (strstr(line, "[vdso]")) {
			unsigned long start = strtoul(line, &line, 16);

			*end = strtoul(line + 1, NULL, 16);
			return start;
		}
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long start, end = 0;
	pthread_t t;
	int turns;

	wl_init(argc, argv);
	signal(SIGUSR1, on_usr1);
	start = vdso_range(&end);
	if (!start || start != getauxval(AT_SYSINFO_EHDR))
		wl_die("setup: [vdso] at %#lx, AT_SYSINFO_EHDR %#lx", start, getauxval(AT_SYSINFO_EHDR));
	if (munmap((void *)start, end - start))
		wl_die("munmap [vdso]");
	if (vdso_range(&end))
		wl_die("setup: [vdso] still mapped");
	if (pthread_create(&t, NULL, ticker, NULL))
		wl_die("pthread_create");
	wl_ready();
	wl_wait();

	WL_CHECK(vdso_range(&end) == 0, "a [vdso] is mapped again");
	WL_CHECK(getppid() > 0, "getppid failed");
	raise(SIGUSR1);
	WL_CHECK(atomic_load(&handled) == 1, "SIGUSR1 handled %d times", atomic_load(&handled));
	turns = atomic_load(&thread_turns);
	for (int i = 0; i < 2000 && atomic_load(&thread_turns) == turns; i++)
		usleep(5000);
	WL_CHECK(atomic_load(&thread_turns) > turns, "the thread no longer runs");
	wl_finish();
}
