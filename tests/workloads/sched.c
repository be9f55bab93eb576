/*
 * sched: a scheduling policy, real-time priority and nice value per thread,
 * which every thread must have again after each restore.
 *
 *   main  SCHED_OTHER, nice 3
 *   T1    SCHED_FIFO, priority 10
 *   T2    SCHED_RR, priority 20
 *   T3    SCHED_BATCH, nice 7
 *   T4    SCHED_IDLE (nice 5 set before)
 *   T5    SCHED_OTHER, nice 0 (made after main took nice 3, so it is set, not inherited)
 *   T6    SCHED_OTHER, nice -4
 *   T7    SCHED_RR | SCHED_RESET_ON_FORK, priority 5 (the flag must stay)
 *
 * The threads only sleep (real-time ones must not hog a CPU). Each one is set
 * from the main thread by its tid; after SIGTERM sched_getscheduler,
 * sched_getparam and getpriority must give back what was set.
 *
 *   bin/sched RESULT_FILE
 */
#include "lib.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NTHREADS 8

struct want {
	const char *name;
	int policy, prio, nice;
};

static const struct want wants[NTHREADS] = {
	{ "main", SCHED_OTHER, 0, 3 },	{ "T1", SCHED_FIFO, 10, 0 }, { "T2", SCHED_RR, 20, 0 },
	{ "T3", SCHED_BATCH, 0, 7 },	{ "T4", SCHED_IDLE, 0, 5 },   { "T5", SCHED_OTHER, 0, 0 },
	{ "T6", SCHED_OTHER, 0, -4 },	{ "T7", SCHED_RR | SCHED_RESET_ON_FORK, 5, 0 },
};
static atomic_int tids[NTHREADS];

static void *sleeper(void *arg)
{
	long i = (long)arg;

	atomic_store(&tids[i], (int)syscall(SYS_gettid));
	for (;;)
		pause();
	return NULL;
}

static void apply(int i)
{
	const struct want *w = &wants[i];
	struct sched_param p = { .sched_priority = w->prio };
	pid_t tid = atomic_load(&tids[i]);

	if (setpriority(PRIO_PROCESS, tid, w->nice))
		wl_die("setpriority %s", w->name);
	if (sched_setscheduler(tid, w->policy, &p))
		wl_die("sched_setscheduler %s", w->name);
}

static void check(int i)
{
	const struct want *w = &wants[i];
	struct sched_param p = { 0 };
	pid_t tid = atomic_load(&tids[i]);
	int policy, nice;

	policy = sched_getscheduler(tid);
	WL_CHECK(policy == w->policy, "%s (%d): policy %d, expected %d", w->name, tid, policy, w->policy);
	if (sched_getparam(tid, &p))
		wl_fail("%s: sched_getparam: %s", w->name, strerror(errno));
	WL_CHECK(p.sched_priority == w->prio, "%s (%d): priority %d, expected %d", w->name, tid, p.sched_priority,
		 w->prio);
	errno = 0;
	nice = getpriority(PRIO_PROCESS, tid);
	WL_CHECK(errno == 0 && nice == w->nice, "%s (%d): nice %d, expected %d", w->name, tid, nice, w->nice);
}

int main(int argc, char **argv)
{
	pthread_t t;

	wl_init(argc, argv);
	atomic_store(&tids[0], getpid());
	apply(0);
	for (long i = 1; i < NTHREADS; i++) {
		if (pthread_create(&t, NULL, sleeper, (void *)i))
			wl_die("pthread_create");
		while (!atomic_load(&tids[i]))
			usleep(1000);
		apply((int)i);
	}
	for (int i = 0; i < NTHREADS; i++)
		check(i);
	if (wl_failures())
		wl_die("setup: the settings do not read back");
	wl_ready();
	wl_wait();
	for (int i = 0; i < NTHREADS; i++)
		check(i);
	wl_finish();
}
