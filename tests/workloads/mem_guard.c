/*
 * mem_guard: MADV_GUARD_INSTALL guards, which no vma shows (the area stays one mapping):
 *   A: 16 private anonymous pages, guards on pages 3-4 and 10
 *   R: 4 private anonymous read-only pages, a guard on page 1
 *   P: 8 pages of a file mapped private, a guard on page 2
 *   S: 8 pages of the same file mapped shared, a guard on page 5
 * After the wait: each area is still one mapping; exactly the guarded pages show as guards in
 * /proc/self/pagemap (bit 58) and fault when touched; the other pages hold their data; removing a
 * guard (MADV_GUARD_REMOVE) gives back a page that reads as before the guard (zero, or the file).
 */
#include "memlib.h"

#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE 103
#endif
#define PM_GUARD_REGION (1ULL << 58)

struct area {
	const char *name;
	char *p;
	size_t pages;
	unsigned tag;	    /* data pattern (the file's for P and S) */
	unsigned long guards; /* bit N: page N is guarded */
};

static struct area areas[4];

static void install(struct area *a)
{
	for (size_t pg = 0; pg < a->pages; pg++)
		if (a->guards & (1UL << pg) && madvise(a->p + pg * PAGE, PAGE, MADV_GUARD_INSTALL))
			wl_die("MADV_GUARD_INSTALL on %s page %zu", a->name, pg);
}

static void setup(void)
{
	char path[4096];
	char *data = malloc(8 * PAGE);
	int fd;

	areas[0] = (struct area){ "A", NULL, 16, 1, (1UL << 3) | (1UL << 4) | (1UL << 10) };
	areas[0].p = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	areas[1] = (struct area){ "R", NULL, 4, 2, 1UL << 1 };
	areas[1].p = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (areas[0].p == MAP_FAILED || areas[1].p == MAP_FAILED)
		wl_die("mmap");
	ml_fill(areas[0].p, 16 * PAGE, 1);
	ml_fill(areas[1].p, 4 * PAGE, 2);
	if (mprotect(areas[1].p, 4 * PAGE, PROT_READ))
		wl_die("mprotect R");

	wl_path("file", path, sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || data == NULL)
		wl_die("create %s", path);
	ml_fill(data, 8 * PAGE, 3);
	if (write(fd, data, 8 * PAGE) != (ssize_t)(8 * PAGE))
		wl_die("write %s", path);
	free(data);
	areas[2] = (struct area){ "P", NULL, 8, 3, 1UL << 2 };
	areas[2].p = mmap(NULL, 8 * PAGE, PROT_READ, MAP_PRIVATE, fd, 0);
	areas[3] = (struct area){ "S", NULL, 8, 3, 1UL << 5 };
	areas[3].p = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (areas[2].p == MAP_FAILED || areas[3].p == MAP_FAILED)
		wl_die("mmap %s", path);
	close(fd);
	for (size_t i = 0; i < 4; i++)
		install(&areas[i]);
}

static uint64_t pagemap_entry(const void *addr)
{
	static int fd = -1;
	uint64_t e = 0;

	if (fd < 0)
		fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || pread(fd, &e, 8, (off_t)((uintptr_t)addr / PAGE * 8)) != 8)
		wl_fail("cannot read /proc/self/pagemap");
	return e;
}

static void check(struct area *a)
{
	char head[512], flags[512];
	unsigned long start, end;

	if (!ml_smaps(a->p, head, sizeof(head), flags, sizeof(flags)) ||
	    sscanf(head, "%lx-%lx", &start, &end) != 2) {
		wl_fail("%s: not mapped", a->name);
		return;
	}
	WL_CHECK(start <= (unsigned long)a->p && end >= (unsigned long)a->p + a->pages * PAGE,
		 "%s: split into several mappings (%s)", a->name, head);
	for (size_t pg = 0; pg < a->pages; pg++) {
		char *page = a->p + pg * PAGE;
		int guarded = (a->guards >> pg) & 1;
		char what[64];

		snprintf(what, sizeof(what), "%s page %zu", a->name, pg);
		WL_CHECK(((pagemap_entry(page) & PM_GUARD_REGION) != 0) == guarded, "%s: pagemap says %sguard", what,
			 guarded ? "no " : "");
		WL_CHECK(ml_faults(ml_touch, page) == guarded, "%s: touching it %s", what,
			 guarded ? "did not fault" : "faulted");
		if (!guarded) {
			for (size_t i = 0; i < PAGE; i++)
				if ((unsigned char)page[i] != ml_pattern(a->tag, pg * PAGE + i)) {
					wl_fail("%s: byte %zu differs", what, i);
					break;
				}
		}
	}
}

/* A removed guard leaves the page as if never touched: zero for anonymous memory, else the file. */
static void check_remove(void)
{
	char *anon = areas[0].p + 3 * PAGE, *file = areas[2].p + 2 * PAGE;

	if (madvise(anon, PAGE, MADV_GUARD_REMOVE) || madvise(file, PAGE, MADV_GUARD_REMOVE)) {
		wl_fail("MADV_GUARD_REMOVE failed");
		return;
	}
	WL_CHECK(!ml_faults(ml_touch, anon) && !ml_faults(ml_touch, file), "a removed guard still faults");
	for (size_t i = 0; i < PAGE; i++) {
		if (anon[i] != 0 || (unsigned char)file[i] != ml_pattern(3, 2 * PAGE + i)) {
			wl_fail("a page whose guard was removed reads wrong at byte %zu", i);
			break;
		}
	}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	setup();
	wl_ready();
	wl_wait();
	for (size_t i = 0; i < 4; i++)
		check(&areas[i]);
	check_remove();
	wl_finish();
}
