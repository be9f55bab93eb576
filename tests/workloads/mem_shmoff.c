/*
 * mem_shmoff: shared anonymous memory whose first mapping starts inside the object.
 *   S1: 8 shared pages; the first 3 are unmapped, so the process maps the object from page 3 on.
 *   S2: 8 shared pages shared with a child; the parent unmaps its first 2 pages, the child keeps
 *       all 8 (the parent, restored first, maps the object from page 2; the child needs all of it).
 * After the wait: contents at their offsets in the objects (pattern from offset 0 of each); stores
 * go both ways between parent and child, in the part both map. The child's verdict is its exit
 * status; SIGTERM is forwarded to it.
 */
#include "memlib.h"

#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#define OBJ_PAGES 8

static char *s1, *s2;

static char *shared(const char *what)
{
	char *p = mmap(NULL, OBJ_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		wl_die("mmap %s", what);
	return p;
}

/* p maps the object from page `from` on: it must hold the object's pattern at those offsets. */
static void expect_from(const char *what, const char *p, size_t from, size_t pages, unsigned tag)
{
	for (size_t i = 0; i < pages * PAGE; i++) {
		unsigned char want = ml_pattern(tag, from * PAGE + i);

		if ((unsigned char)p[i] != want) {
			wl_fail("%s: object byte %zu is %#x, expected %#x", what, from * PAGE + i, (unsigned char)p[i],
				want);
			return;
		}
	}
}

static void child(int ready_fd)
{
	char c = 'r';

	if (write(ready_fd, &c, 1) != 1)
		_exit(3);
	close(ready_fd);
	wl_wait();
	/* the parent stored 'P' at object page 5 before it forwarded SIGTERM */
	WL_CHECK(s2[5 * PAGE] == 'P', "child: the parent's store is not seen");
	s2[5 * PAGE] = (char)ml_pattern(2, 5 * PAGE);
	expect_from("child: S2 (all of it)", s2, 0, OBJ_PAGES, 2);
	s2[6 * PAGE + 1] = 'C';
	_exit(wl_failures() ? 1 : 0);
}

int main(int argc, char **argv)
{
	int ready[2], status = 0;
	pid_t pid;
	char c;

	wl_init(argc, argv);
	s1 = shared("S1");
	ml_fill(s1, OBJ_PAGES * PAGE, 1);
	if (munmap(s1, 3 * PAGE))
		wl_die("munmap S1 head");
	s1 += 3 * PAGE;
	s2 = shared("S2");
	ml_fill(s2, OBJ_PAGES * PAGE, 2);
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
	if (munmap(s2, 2 * PAGE))
		wl_die("munmap S2 head");
	s2 += 2 * PAGE;
	wl_ready();
	wl_wait();

	expect_from("S1 (from page 3)", s1, 3, OBJ_PAGES - 3, 1);
	expect_from("S2 (from page 2)", s2, 2, OBJ_PAGES - 2, 2);
	s2[3 * PAGE] = 'P'; /* object page 5 */
	kill(pid, SIGTERM);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child's view of S2 is wrong (status %#x)",
		 status);
	WL_CHECK(s2[4 * PAGE + 1] == 'C', "the child's store is not seen by the parent");
	wl_finish();
}
