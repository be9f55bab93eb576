/*
 * mem_advice: private anonymous areas, each given madvise advice that the kernel keeps in the
 * area (VmFlags in /proc/self/smaps): DONTFORK, DONTDUMP, HUGEPAGE, NOHUGEPAGE, RANDOM,
 * SEQUENTIAL, MERGEABLE, WIPEONFORK, and one area with two of them. After the wait every area
 * must hold its data and show exactly its own advice flags; a child forked then must not have the
 * DONTFORK area and must see the WIPEONFORK area zeroed, the others as its parent has them.
 */
#include "memlib.h"

#include <sys/wait.h>
#include <unistd.h>

#define AREA_PAGES 4

struct advice {
	int advice;
	const char *flag; /* the VmFlags letters it sets */
};

static const struct advice ADVICE[] = {
	{ MADV_DONTFORK, "dc" }, { MADV_DONTDUMP, "dd" },   { MADV_HUGEPAGE, "hg" },
	{ MADV_NOHUGEPAGE, "nh" }, { MADV_RANDOM, "rr" },   { MADV_SEQUENTIAL, "sr" },
	{ MADV_MERGEABLE, "mg" },  { MADV_WIPEONFORK, "wf" },
};
#define NR_ADVICE (sizeof(ADVICE) / sizeof(ADVICE[0]))

/* one area per advice, then one with RANDOM and DONTDUMP together */
static char *areas[NR_ADVICE + 1];

static int has_advice(size_t area, size_t a)
{
	if (area < NR_ADVICE)
		return area == a;
	return ADVICE[a].advice == MADV_RANDOM || ADVICE[a].advice == MADV_DONTDUMP;
}

static void setup(void)
{
	for (size_t i = 0; i <= NR_ADVICE; i++) {
		/* a page of PROT_NONE on each side keeps areas from merging with anything */
		char *p = mmap(NULL, (AREA_PAGES + 2) * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			wl_die("mmap area %zu", i);
		areas[i] = p + PAGE;
		if (mprotect(areas[i], AREA_PAGES * PAGE, PROT_READ | PROT_WRITE))
			wl_die("mprotect area %zu", i);
		ml_fill(areas[i], AREA_PAGES * PAGE, 1 + i);
		for (size_t a = 0; a < NR_ADVICE; a++)
			if (has_advice(i, a) && madvise(areas[i], AREA_PAGES * PAGE, ADVICE[a].advice))
				wl_die("madvise(%s) on area %zu", ADVICE[a].flag, i);
	}
}

static void check_flags(void)
{
	for (size_t i = 0; i <= NR_ADVICE; i++) {
		char what[64];

		snprintf(what, sizeof(what), "area %zu (%s)", i, i < NR_ADVICE ? ADVICE[i].flag : "rr+dd");
		ml_expect(what, areas[i], AREA_PAGES * PAGE, 1 + i);
		for (size_t a = 0; a < NR_ADVICE; a++)
			ml_expect_vmflag(what, areas[i], ADVICE[a].flag, has_advice(i, a));
	}
}

/* In a child: what fork does with each advice. Exit status 0 when all is as expected. */
static int child_checks(void)
{
	int bad = 0;

	for (size_t i = 0; i < NR_ADVICE; i++) {
		if (ADVICE[i].advice == MADV_DONTFORK) {
			if (!ml_faults(ml_touch, areas[i])) {
				wl_log("child: the DONTFORK area is mapped");
				bad = 1;
			}
		} else if (ADVICE[i].advice == MADV_WIPEONFORK) {
			for (size_t b = 0; b < AREA_PAGES * PAGE; b++)
				if (areas[i][b] != 0) {
					wl_log("child: the WIPEONFORK area is not zero at byte %zu", b);
					bad = 1;
					break;
				}
		} else {
			for (size_t b = 0; b < AREA_PAGES * PAGE; b++)
				if ((unsigned char)areas[i][b] != ml_pattern(1 + i, b)) {
					wl_log("child: area %zu (%s) differs at byte %zu", i, ADVICE[i].flag, b);
					bad = 1;
					break;
				}
		}
	}
	return bad;
}

static void check_fork(void)
{
	int status = 0;
	pid_t pid = fork();

	if (pid < 0) {
		wl_fail("fork: cannot fork");
		return;
	}
	if (pid == 0)
		_exit(child_checks());
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		wl_fail("a child forked after the wait saw the wrong memory (status %#x, see the log)", status);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	setup();
	check_flags();
	if (wl_failures())
		wl_die("advice is not as set up before the wait");
	wl_ready();
	wl_wait();
	check_flags();
	check_fork();
	wl_finish();
}
