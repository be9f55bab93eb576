/*
 * mem_wipe: a MAP_DROPPABLE area and a MADV_WIPEONFORK area across a fork. The parent fills both;
 * the child, forked before the wait, must have found them zeroed and writes its own data into
 * their first half. After the wait each process must see its own data (the kernel may have dropped
 * droppable pages: a page of zeroes passes there, another's data never does) and the areas'
 * VmFlags (dp, wf, dd); a process forked from each then must see both areas zeroed again.
 * SIGTERM is forwarded to the child, whose verdict is its exit status.
 */
#include "memlib.h"

#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif

#define AREA_PAGES 4

static char *droppable, *wiped;

/* The data one process keeps: the parent all four pages, the child the first two. */
struct view {
	const char *who;
	unsigned drop_tag, wipe_tag;
	size_t pages;
};

static const struct view PARENT = { "parent", 1, 2, AREA_PAGES }, CHILD = { "child", 3, 4, 2 };

/* Page by page: the view's pattern up to v->pages, zeroes after (droppable: a zero page too). */
static void check_area(const struct view *v, const char *name, const char *p, unsigned tag, int may_drop)
{
	for (size_t pg = 0; pg < AREA_PAGES; pg++) {
		const unsigned char *b = (const unsigned char *)p + pg * PAGE;
		int zero = 1, mine = 1;

		for (size_t i = 0; i < PAGE; i++) {
			zero &= b[i] == 0;
			mine &= pg < v->pages && b[i] == ml_pattern(tag, pg * PAGE + i);
		}
		if (pg >= v->pages)
			WL_CHECK(zero, "%s: %s page %zu is not zero (first byte %#x)", v->who, name, pg, b[0]);
		else if (may_drop && zero)
			wl_log("%s: %s page %zu was dropped by the kernel", v->who, name, pg);
		else
			WL_CHECK(mine, "%s: %s page %zu does not hold its data (first byte %#x)", v->who, name, pg,
				 b[0]);
	}
}

static void check_flags(const char *who)
{
	char what[64];

	snprintf(what, sizeof(what), "%s: droppable", who);
	ml_expect_vmflag(what, droppable, "dp", 1);
	ml_expect_vmflag(what, droppable, "wf", 1);
	ml_expect_vmflag(what, droppable, "dd", 1);
	snprintf(what, sizeof(what), "%s: wipeonfork", who);
	ml_expect_vmflag(what, wiped, "wf", 1);
	ml_expect_vmflag(what, wiped, "dp", 0);
}

/* A process forked now must see both areas zeroed. */
static void check_fork_wipes(const char *who)
{
	int status = 0;
	pid_t pid = fork();

	if (pid == 0) {
		for (size_t i = 0; i < AREA_PAGES * PAGE; i++)
			if (droppable[i] || wiped[i])
				_exit(1);
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
		wl_fail("%s: a process forked after the wait did not get both areas zeroed (status %#x)", who,
			status);
}

static void verify(const struct view *v)
{
	check_area(v, "droppable", droppable, v->drop_tag, 1);
	check_area(v, "wipeonfork", wiped, v->wipe_tag, 0);
	check_flags(v->who);
	check_fork_wipes(v->who);
}

static void child(int ready_fd)
{
	char c = 'r';

	check_area(&(struct view){ "child before the wait", 0, 0, 0 }, "droppable", droppable, 0, 0);
	check_area(&(struct view){ "child before the wait", 0, 0, 0 }, "wipeonfork", wiped, 0, 0);
	ml_fill(droppable, CHILD.pages * PAGE, CHILD.drop_tag);
	ml_fill(wiped, CHILD.pages * PAGE, CHILD.wipe_tag);
	if (write(ready_fd, &c, 1) != 1)
		_exit(3);
	close(ready_fd);
	wl_wait();
	verify(&CHILD);
	_exit(wl_failures() ? 1 : 0);
}

int main(int argc, char **argv)
{
	int ready[2], status = 0;
	pid_t pid;
	char c;

	wl_init(argc, argv);
	droppable = mmap(NULL, AREA_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_DROPPABLE | MAP_ANONYMOUS, -1, 0);
	if (droppable == MAP_FAILED)
		wl_die("mmap(MAP_DROPPABLE)");
	wiped = mmap(NULL, AREA_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (wiped == MAP_FAILED || madvise(wiped, AREA_PAGES * PAGE, MADV_WIPEONFORK))
		wl_die("mmap + madvise(MADV_WIPEONFORK)");
	ml_fill(droppable, AREA_PAGES * PAGE, PARENT.drop_tag);
	ml_fill(wiped, AREA_PAGES * PAGE, PARENT.wipe_tag);
	if (pipe(ready))
		wl_die("pipe");
	pid = fork();
	if (pid < 0)
		wl_die("fork");
	if (pid == 0) {
		close(ready[0]);
		child(ready[1]);
	}
	close(ready[1]);
	if (read(ready[0], &c, 1) != 1)
		wl_die("the child failed before the wait");
	close(ready[0]);
	wl_ready();
	wl_wait();
	kill(pid, SIGTERM);
	verify(&PARENT);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child's memory is wrong (status %#x, see the log)",
		 status);
	wl_finish();
}
