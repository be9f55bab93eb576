/*
 * Helpers the mem_* workloads share (header only: build.ts links lib.c alone): patterns to fill
 * memory with and check it against, and what /proc/self/smaps says about one mapping.
 * A workload that includes this must be touched when it changes, so build.ts rebuilds it.
 */
#ifndef WORKLOAD_MEMLIB_H
#define WORKLOAD_MEMLIB_H

#include "lib.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PAGE 4096UL

static inline unsigned char ml_pattern(unsigned tag, size_t off)
{
	return (unsigned char)(tag * 37 + off * 7 + (off >> 12) * 13 + 1);
}

static inline void ml_fill(void *p, size_t len, unsigned tag)
{
	for (size_t i = 0; i < len; i++)
		((unsigned char *)p)[i] = ml_pattern(tag, i);
}

/* Checks [p, p+len) holds pattern tag (tag 0: zeroes); reports the first difference. */
static inline int ml_expect(const char *what, const void *p, size_t len, unsigned tag)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < len; i++) {
		unsigned char want = tag ? ml_pattern(tag, i) : 0;

		if (b[i] != want) {
			wl_fail("%s: byte %zu is %#x, expected %#x", what, i, b[i], want);
			return 0;
		}
	}
	return 1;
}

/*
 * The smaps block of the mapping that holds addr: its header line into head (may be NULL), the
 * value of "VmFlags:" into flags (" rd wr mr ... " with a space on each side, for strstr(" xx ")).
 * Returns 0 when no mapping holds addr or smaps cannot be read.
 */
static inline int ml_smaps(const void *addr, char *head, size_t head_size, char *flags, size_t flags_size)
{
	static char smaps[1 << 21];
	unsigned long a = (unsigned long)addr;
	char *line, *save = NULL;
	int inside = 0;

	if (wl_read_file("/proc/self/smaps", smaps, sizeof(smaps)) < 0)
		return 0;
	for (line = strtok_r(smaps, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned long start, end;

		/* headers start with a lowercase hex address; fields with a capital ("Size:") */
		if ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f')) {
			if (sscanf(line, "%lx-%lx ", &start, &end) != 2)
				continue;
			inside = a >= start && a < end;
			if (inside && head)
				snprintf(head, head_size, "%s", line);
			continue;
		}
		if (inside && strncmp(line, "VmFlags:", 8) == 0) {
			snprintf(flags, flags_size, "%s ", line + 8);
			return 1;
		}
	}
	return 0;
}

/* The mapping at addr shows VmFlag xx (two letters) exactly when want is set. */
static inline void ml_expect_vmflag(const char *what, const void *addr, const char *flag, int want)
{
	char flags[512], key[8];

	if (!ml_smaps(addr, NULL, 0, flags, sizeof(flags))) {
		wl_fail("%s: no mapping at %p in smaps", what, addr);
		return;
	}
	snprintf(key, sizeof(key), " %s ", flag);
	WL_CHECK((strstr(flags, key) != NULL) == (want != 0), "%s: VmFlags [%s] %s '%s'", what, flags,
		 want ? "lack" : "have", flag);
}

/* Runs fn(arg) and tells whether it faulted (SIGSEGV or SIGBUS) instead of returning. */
static sigjmp_buf ml_fault_jump;

static inline void ml_on_fault(int sig)
{
	(void)sig;
	siglongjmp(ml_fault_jump, 1);
}

static inline int ml_faults(void (*fn)(void *), void *arg)
{
	struct sigaction sa = { .sa_handler = ml_on_fault }, old_segv, old_bus;
	int faulted;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	if (sigsetjmp(ml_fault_jump, 1) == 0) {
		fn(arg);
		faulted = 0;
	} else {
		faulted = 1;
	}
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
	return faulted;
}

static inline void ml_touch(void *p)
{
	(void)*(volatile char *)p;
}

#endif
