/*
 * mmap_zoo: one mapping of each kind a checkpoint has to carry over; after
 * the wait every byte and every /proc/self/maps permission must be as set up.
 *
 * Optional argument "alias": also maps the MAP_SHARED anonymous area a second
 * time (mremap with old_size 0) and checks that both views stay one object.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096UL
#define MIB (1024UL * 1024)

struct vma {
	unsigned long start, end, offset;
	char perms[5];
	char path[4096];
};

static char *priv_anon, *shared_anon, *alias, *none_area, *ro_area, *guarded, *grows, *priv_file, *shared_file,
	*reprotected, *holes, *sparse;
static unsigned long grows_start;
static char priv_path[4096], shared_path[4096];
static sigjmp_buf segv_jump;

static unsigned char pattern(unsigned tag, size_t off)
{
	return (unsigned char)(tag * 37 + off * 7 + (off >> 12) * 13 + 1);
}

static void fill(char *p, size_t len, unsigned tag)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (char)pattern(tag, i);
}

/* Expected byte at p[i] when p holds the pattern from offset base on (tag 0: zeroes). */
static unsigned char expected(unsigned tag, size_t base, size_t i)
{
	return tag ? pattern(tag, base + i) : 0;
}

/* First byte in [p, p+len) that differs, or -1. */
static long differs(const char *p, size_t len, unsigned tag, size_t base)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)p[i] != expected(tag, base, i))
			return (long)i;
	return -1;
}

static void expect_content(const char *what, const char *p, size_t len, unsigned tag, size_t base)
{
	long at = differs(p, len, tag, base);

	WL_CHECK(at < 0, "%s: byte %ld is %#x, expected %#x", what, at, at < 0 ? 0 : (unsigned char)p[at],
		 at < 0 ? 0 : expected(tag, base, at));
}

static char *map(size_t len, int prot, int flags, int fd, off_t off, const char *what)
{
	void *p = mmap(NULL, len, prot, flags, fd, off);

	if (p == MAP_FAILED)
		wl_die("mmap %s", what);
	return p;
}

/* The /proc/self/maps line that contains addr. */
static int find_vma(unsigned long addr, struct vma *v)
{
	static char maps[1 << 20];
	char *line, *save = NULL;

	if (wl_read_file("/proc/self/maps", maps, sizeof(maps)) < 0)
		return 0;
	for (line = strtok_r(maps, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		int n = 0;

		v->path[0] = '\0';
		if (sscanf(line, "%lx-%lx %4s %lx %*s %*u %n", &v->start, &v->end, v->perms, &v->offset, &n) < 4)
			continue;
		if (addr < v->start || addr >= v->end)
			continue;
		if (n > 0)
			snprintf(v->path, sizeof(v->path), "%s", line + n);
		return 1;
	}
	return 0;
}

/* [p, p+len) lies in one mapping with these permissions (and this file and offset if path is set). */
static void expect_vma(const char *what, const void *p, size_t len, const char *perms, const char *path,
		       unsigned long file_off)
{
	unsigned long a = (unsigned long)p;
	struct vma v;

	if (!find_vma(a, &v)) {
		wl_fail("%s: no mapping at %#lx", what, a);
		return;
	}
	WL_CHECK(v.end >= a + len, "%s: mapping %lx-%lx ends inside %#lx+%#zx", what, v.start, v.end, a, len);
	WL_CHECK(strcmp(v.perms, perms) == 0, "%s: permissions %s, expected %s", what, v.perms, perms);
	if (path) {
		WL_CHECK(strcmp(v.path, path) == 0, "%s: maps shows file '%s', expected '%s'", what, v.path, path);
		WL_CHECK(v.offset + (a - v.start) == file_off, "%s: file offset %#lx, expected %#lx", what,
			 v.offset + (a - v.start), file_off);
	}
}

static void make_file(const char *path, size_t len, unsigned tag)
{
	char *tmp = malloc(len);
	int fd;

	if (tmp == NULL)
		wl_die("malloc");
	fill(tmp, len, tag);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, tmp, len) != (ssize_t)len)
		wl_die("create %s", path);
	close(fd);
	free(tmp);
}

/* Reads the file at verification time and compares it with the pattern. */
static void expect_file(const char *what, const char *path, size_t len, unsigned tag)
{
	char *tmp = malloc(len + 1);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : pread(fd, tmp, len + 1, 0);

	if (fd >= 0)
		close(fd);
	if (n != (ssize_t)len)
		wl_fail("%s: file %s has %zd bytes, expected %zu", what, path, n, len);
	else
		expect_content(what, tmp, len, tag, 0);
	free(tmp);
}

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(segv_jump, 1);
}

static void setup(int with_alias)
{
	char resolved[4096];
	int fd;

	/* private anonymous: 12 pages written, 4 never touched */
	priv_anon = map(16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, "private anon");
	fill(priv_anon, 12 * PAGE, 1);

	shared_anon = map(8 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0, "shared anon");
	fill(shared_anon, 8 * PAGE, 2);
	if (with_alias) {
		alias = mremap(shared_anon, 0, 8 * PAGE, MREMAP_MAYMOVE);
		if (alias == MAP_FAILED)
			wl_die("mremap alias");
	}

	none_area = map(4 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, "PROT_NONE");

	ro_area = map(3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, "read-only");
	fill(ro_area, 3 * PAGE, 3);
	if (mprotect(ro_area, 3 * PAGE, PROT_READ))
		wl_die("mprotect read-only");

	/* 10 rw pages with pages 4 and 5 turned into a guard */
	guarded = map(10 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, "guarded");
	fill(guarded, 10 * PAGE, 4);
	if (mprotect(guarded + 4 * PAGE, 2 * PAGE, PROT_NONE))
		wl_die("mprotect guard");

	/* MAP_GROWSDOWN at the top of a 16 MiB hole, so that it can grow later */
	{
		char *hole = map(16 * MIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, "hole");

		munmap(hole, 16 * MIB);
		grows = mmap(hole + 12 * MIB, 4 * PAGE, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_FIXED_NOREPLACE, -1, 0);
		if (grows == MAP_FAILED)
			wl_die("mmap MAP_GROWSDOWN");
		grows_start = (unsigned long)grows;
		fill(grows, 4 * PAGE, 5);
	}

	/* private file mapping of pages 1..5 of a 6-page file; pages 1 and 3 of the mapping get written */
	wl_path("zoo-private", priv_path, sizeof(priv_path));
	make_file(priv_path, 6 * PAGE, 6);
	fd = open(priv_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		wl_die("open %s", priv_path);
	priv_file = map(5 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, PAGE, "private file");
	close(fd);
	fill(priv_file + 1 * PAGE, PAGE, 7);
	fill(priv_file + 3 * PAGE, PAGE, 8);
	if (realpath(priv_path, resolved) == NULL)
		wl_die("realpath %s", priv_path);
	strcpy(priv_path, resolved);

	wl_path("zoo-shared", shared_path, sizeof(shared_path));
	make_file(shared_path, 4 * PAGE, 9);
	fd = open(shared_path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		wl_die("open %s", shared_path);
	shared_file = map(4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0, "shared file");
	close(fd);
	fill(shared_file, 4 * PAGE, 10); /* the file must now hold pattern 10 */
	if (realpath(shared_path, resolved) == NULL)
		wl_die("realpath %s", shared_path);
	strcpy(shared_path, resolved);

	/* mprotect-ed several times: ends as r-- rw- r-x r-- */
	reprotected = map(4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, "reprotected");
	fill(reprotected, 4 * PAGE, 11);
	if (mprotect(reprotected, 4 * PAGE, PROT_READ) ||
	    mprotect(reprotected + PAGE, 2 * PAGE, PROT_READ | PROT_WRITE))
		wl_die("mprotect reprotected");
	fill(reprotected + PAGE, 2 * PAGE, 12);
	if (mprotect(reprotected + 2 * PAGE, PAGE, PROT_READ | PROT_EXEC) ||
	    mprotect(reprotected + 3 * PAGE, PAGE, PROT_NONE) || mprotect(reprotected + 3 * PAGE, PAGE, PROT_READ))
		wl_die("mprotect reprotected");

	/* pages 2 and 5 dropped with MADV_DONTNEED */
	holes = map(8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, "holes");
	fill(holes, 8 * PAGE, 13);
	if (madvise(holes + 2 * PAGE, PAGE, MADV_DONTNEED) || madvise(holes + 5 * PAGE, PAGE, MADV_DONTNEED))
		wl_die("madvise DONTNEED");

	/* 1 GiB reserved, five pages written, one page only read (maps the zero page) */
	sparse = map(1024 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0,
		     "sparse");
	fill(sparse, PAGE, 14);
	fill(sparse + 1 * MIB + 3 * PAGE, PAGE, 15);
	fill(sparse + 300 * MIB, 2 * PAGE, 16);
	fill(sparse + 1024 * MIB - PAGE, PAGE, 17);
	if (sparse[700 * MIB] != 0)
		wl_die("fresh sparse page is not zero");
}

static unsigned long sparse_rss_kib(void)
{
	static char smaps[1 << 21];
	char head[64], *at, *rss;

	if (wl_read_file("/proc/self/smaps", smaps, sizeof(smaps)) < 0)
		return ~0UL;
	snprintf(head, sizeof(head), "\n%lx-", (unsigned long)sparse);
	at = strstr(smaps, head);
	rss = at ? strstr(at, "\nRss:") : NULL;
	return rss ? strtoul(rss + 5, NULL, 10) : ~0UL;
}

static void verify(void)
{
	struct sigaction sa = { .sa_handler = on_segv };
	char *below;

	expect_content("private anon", priv_anon, 12 * PAGE, 1, 0);
	expect_content("private anon (untouched)", priv_anon + 12 * PAGE, 4 * PAGE, 0, 0);
	expect_vma("private anon", priv_anon, 16 * PAGE, "rw-p", NULL, 0);

	expect_content("shared anon", shared_anon, 8 * PAGE, 2, 0);
	expect_vma("shared anon", shared_anon, 8 * PAGE, "rw-s", NULL, 0);
	if (alias) {
		expect_content("shared anon alias", alias, 8 * PAGE, 2, 0);
		expect_vma("shared anon alias", alias, 8 * PAGE, "rw-s", NULL, 0);
		alias[5] = 'A';
		shared_anon[PAGE + 9] = 'B';
		WL_CHECK(shared_anon[5] == 'A' && alias[PAGE + 9] == 'B', "shared anon alias: views no longer shared");
	}

	expect_vma("PROT_NONE", none_area, 4 * PAGE, "---p", NULL, 0);

	expect_content("read-only", ro_area, 3 * PAGE, 3, 0);
	expect_vma("read-only", ro_area, 3 * PAGE, "r--p", NULL, 0);

	expect_vma("guarded (below guard)", guarded, 4 * PAGE, "rw-p", NULL, 0);
	expect_vma("guard", guarded + 4 * PAGE, 2 * PAGE, "---p", NULL, 0);
	expect_vma("guarded (above guard)", guarded + 6 * PAGE, 4 * PAGE, "rw-p", NULL, 0);
	mprotect(guarded + 4 * PAGE, 2 * PAGE, PROT_READ); /* the pages under the guard keep their content */
	expect_content("guarded", guarded, 10 * PAGE, 4, 0);

	expect_content("private file (file page 1)", priv_file, PAGE, 6, PAGE);
	expect_content("private file (written page 1)", priv_file + PAGE, PAGE, 7, 0);
	expect_content("private file (file page 3)", priv_file + 2 * PAGE, PAGE, 6, 3 * PAGE);
	expect_content("private file (written page 3)", priv_file + 3 * PAGE, PAGE, 8, 0);
	expect_content("private file (file page 5)", priv_file + 4 * PAGE, PAGE, 6, 5 * PAGE);
	expect_vma("private file", priv_file, 5 * PAGE, "rw-p", priv_path, PAGE);
	expect_file("private file (on disk)", priv_path, 6 * PAGE, 6);

	expect_content("shared file", shared_file, 4 * PAGE, 10, 0);
	expect_vma("shared file", shared_file, 4 * PAGE, "rw-s", shared_path, 0);
	expect_file("shared file (on disk)", shared_path, 4 * PAGE, 10);
	{
		int fd = open(shared_path, O_RDWR | O_CLOEXEC);
		char c = 0;

		shared_file[3 * PAGE + 1] = 'M'; /* mapping -> file */
		WL_CHECK(fd >= 0 && pread(fd, &c, 1, 3 * PAGE + 1) == 1 && c == 'M',
			 "shared file: a store into the mapping is not seen in the file");
		c = 'F'; /* file -> mapping */
		WL_CHECK(fd >= 0 && pwrite(fd, &c, 1, 2 * PAGE + 7) == 1 && shared_file[2 * PAGE + 7] == 'F',
			 "shared file: a write to the file is not seen in the mapping");
		if (fd >= 0)
			close(fd);
	}

	expect_content("reprotected page 0", reprotected, PAGE, 11, 0);
	expect_content("reprotected pages 1-2", reprotected + PAGE, 2 * PAGE, 12, 0);
	expect_content("reprotected page 3", reprotected + 3 * PAGE, PAGE, 11, 3 * PAGE);
	expect_vma("reprotected page 0", reprotected, PAGE, "r--p", NULL, 0);
	expect_vma("reprotected page 1", reprotected + PAGE, PAGE, "rw-p", NULL, 0);
	expect_vma("reprotected page 2", reprotected + 2 * PAGE, PAGE, "r-xp", NULL, 0);
	expect_vma("reprotected page 3", reprotected + 3 * PAGE, PAGE, "r--p", NULL, 0);

	expect_content("holes pages 0-1", holes, 2 * PAGE, 13, 0);
	expect_content("holes page 2 (DONTNEED)", holes + 2 * PAGE, PAGE, 0, 0);
	expect_content("holes pages 3-4", holes + 3 * PAGE, 2 * PAGE, 13, 3 * PAGE);
	expect_content("holes page 5 (DONTNEED)", holes + 5 * PAGE, PAGE, 0, 0);
	expect_content("holes pages 6-7", holes + 6 * PAGE, 2 * PAGE, 13, 6 * PAGE);
	expect_vma("holes", holes, 8 * PAGE, "rw-p", NULL, 0);

	{
		/* before reading untouched pages: a restore must not have filled the reservation */
		unsigned long rss = sparse_rss_kib();

		wl_log("sparse mapping Rss %lu KiB", rss);
		WL_CHECK(rss <= 64 * 1024, "sparse: Rss is %lu KiB, the 1 GiB reservation got populated", rss);
	}
	expect_vma("sparse", sparse, 1024 * MIB, "rw-p", NULL, 0);
	expect_content("sparse page 0", sparse, PAGE, 14, 0);
	expect_content("sparse at 1 MiB + 3 pages", sparse + 1 * MIB + 3 * PAGE, PAGE, 15, 0);
	expect_content("sparse at 300 MiB", sparse + 300 * MIB, 2 * PAGE, 16, 0);
	expect_content("sparse last page", sparse + 1024 * MIB - PAGE, PAGE, 17, 0);
	expect_content("sparse at 700 MiB (read before)", sparse + 700 * MIB, PAGE, 0, 0);
	expect_content("sparse at 2 MiB (never touched)", sparse + 2 * MIB, PAGE, 0, 0);
	expect_content("sparse at 512 MiB (never touched)", sparse + 512 * MIB, PAGE, 0, 0);

	/* last, as it changes the layout: the MAP_GROWSDOWN area must still grow */
	expect_content("growsdown", grows, 4 * PAGE, 5, 0);
	expect_vma("growsdown", grows, 4 * PAGE, "rw-p", NULL, 0);
	{
		struct vma v;

		WL_CHECK(find_vma(grows_start, &v) && v.start == grows_start,
			 "growsdown: mapping starts at %#lx, expected %#lx", v.start, grows_start);
	}
	sigaction(SIGSEGV, &sa, NULL);
	below = grows - 2 * PAGE;
	if (sigsetjmp(segv_jump, 1) == 0) {
		struct vma v;

		*(volatile char *)below = 'g';
		WL_CHECK(find_vma((unsigned long)below, &v) && v.start <= (unsigned long)below &&
				 v.end == grows_start + 4 * PAGE,
			 "growsdown: touching below did not grow the mapping");
	} else {
		wl_fail("growsdown: SIGSEGV below the mapping, it no longer grows down");
	}
	wl_finish();
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	setup(argc > 2 && strcmp(argv[2], "alias") == 0);
	wl_ready();
	wl_wait();
	verify();
}
