/*
 * Shared protocol of the test workloads (see README.md).
 *
 *   bin/NAME RESULT_FILE [args]
 *
 * A workload sets up its state, calls wl_ready() (which creates
 * RESULT_FILE.ready), waits until SIGTERM sets wl_stop, checks its state,
 * reports each difference with wl_fail() and ends with wl_finish(), which
 * writes "PASS\n" or "FAIL: ...\n" into RESULT_FILE and exits 0 or 1.
 * The process may be checkpointed and restored any number of times while
 * it waits.
 */
#ifndef WORKLOAD_LIB_H
#define WORKLOAD_LIB_H

#define _GNU_SOURCE
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Set to 1 by the SIGTERM handler that wl_init() installs. */
extern volatile sig_atomic_t wl_stop;

/* Remembers RESULT_FILE (argv[1]) and installs the SIGTERM handler (no SA_RESTART). */
void wl_init(int argc, char **argv);

/* Creates RESULT_FILE.ready (opened and closed at once). */
void wl_ready(void);

/* Sleeps in short steps until SIGTERM arrives. */
void wl_wait(void);

/* A path next to RESULT_FILE: "RESULT_FILE.<suffix>" (static buffer, one per call site is enough). */
const char *wl_path(const char *suffix, char *buf, size_t size);

/* Writes one line to stdout (the log), unbuffered. */
void wl_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Records one difference; the run will end in FAIL. */
void wl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Number of differences recorded so far. */
int wl_failures(void);

/* Writes the result file and exits: 0 on PASS, 1 on FAIL. */
__attribute__((noreturn)) void wl_finish(void);

/* A setup step failed: records it (with errno text when errno is set) and finishes. */
__attribute__((noreturn, format(printf, 1, 2))) void wl_die(const char *fmt, ...);

/*
 * Moves the calling process into a user namespace of its own whose uid and gid maps are `map`
 * (e.g. "0 0 1\n"), written by a helper child that stays in the caller's namespace (a process may
 * not write its own maps beyond its own id). Dies on failure.
 */
void wl_unshare_user(const char *map);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t wl_now_ns(void);

/* Reads a whole small file (e.g. under /proc) into buf, NUL-terminated; returns its length or -1. */
ssize_t wl_read_file(const char *path, char *buf, size_t size);

#define WL_CHECK(cond, ...)                                                                        \
	do {                                                                                       \
		if (!(cond))                                                                       \
			wl_fail(__VA_ARGS__);                                                      \
	} while (0)

#endif
