/*
 * mem_hugetlb [shared]: private anonymous hugetlb memory (MAP_HUGETLB, the default huge page size),
 * two huge pages: the first written whole, the second at a few places.
 *
 * Huge pages come from the kernel's pool: when it has fewer than needed free, the workload (as
 * root) raises /proc/sys/vm/nr_hugepages and puts the old value back when it finishes; if the
 * kernel still has none, setup fails saying so. After the wait: contents, the area's address,
 * VmFlags "ht", its KernelPageSize, and that it is backed by huge pages (Private_Hugetlb).
 * With "shared", also maps one shared hugetlb page (which dumps refuse, by name).
 */
#include "memlib.h"

#include <fcntl.h>
#include <unistd.h>

#define HUGE_PAGES 2

static size_t huge_size;
static char *area;
static long old_nr = -1;

static long read_long(const char *path)
{
	char buf[64];

	return wl_read_file(path, buf, sizeof(buf)) < 0 ? -1 : strtol(buf, NULL, 10);
}

static int write_long(const char *path, long v)
{
	char buf[32];
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int n = snprintf(buf, sizeof(buf), "%ld\n", v);
	int ok = fd >= 0 && write(fd, buf, n) == n;

	if (fd >= 0)
		close(fd);
	return ok;
}

static char pool[256];

static long available(void)
{
	char path[320];
	long freep, resv;

	snprintf(path, sizeof(path), "%s/free_hugepages", pool);
	freep = read_long(path);
	snprintf(path, sizeof(path), "%s/resv_hugepages", pool);
	resv = read_long(path);
	return freep < 0 || resv < 0 ? -1 : freep - resv;
}

static void put_back(void);

/* Makes sure the pool can give `need` more huge pages; remembers what to put back. */
static void reserve(long need)
{
	char path[320];
	long have = available(), nr;

	if (have >= need)
		return;
	snprintf(path, sizeof(path), "%s/nr_hugepages", pool);
	nr = read_long(path);
	if (nr < 0 || !write_long(path, nr + (need - (have < 0 ? 0 : have))))
		wl_die("cannot raise %s (the pool has %ld free huge pages)", path, have);
	old_nr = nr;
	wl_log("raised %s from %ld to %ld", path, nr, read_long(path));
	if (available() < need) {
		put_back();
		wl_die("the kernel gave no huge pages: %s has %ld available after raising nr_hugepages", pool,
		       available());
	}
}

static void put_back(void)
{
	char path[320];

	if (old_nr < 0)
		return;
	snprintf(path, sizeof(path), "%s/nr_hugepages", pool);
	if (!write_long(path, old_nr))
		wl_fail("cannot put %s back to %ld", path, old_nr);
}

static void verify(void)
{
	char head[512], flags[512], smaps_value[64];
	unsigned long start = 0, end = 0;

	ml_expect("huge page 0", area, huge_size, 1);
	for (size_t i = 0; i < huge_size; i += 4096 * 37)
		WL_CHECK((unsigned char)area[huge_size + i] == (unsigned char)(i / 4096 + 7),
			 "huge page 1: byte %zu is %#x", i, (unsigned char)area[huge_size + i]);
	if (!ml_smaps(area, head, sizeof(head), flags, sizeof(flags)) || sscanf(head, "%lx-%lx", &start, &end) != 2) {
		wl_fail("the hugetlb area is not mapped");
		return;
	}
	WL_CHECK(start == (unsigned long)area && end == start + HUGE_PAGES * huge_size, "the area is now %s", head);
	WL_CHECK(strstr(flags, " ht ") != NULL, "VmFlags [%s] lack 'ht'", flags);
	{
		/* KernelPageSize and Private_Hugetlb of the area, from its smaps block */
		static char smaps[1 << 21];
		char key[64], *at, *kps, *ph;

		snprintf(key, sizeof(key), "\n%lx-", start);
		if (wl_read_file("/proc/self/smaps", smaps, sizeof(smaps)) < 0 || !(at = strstr(smaps, key))) {
			wl_fail("the area is not in smaps");
			return;
		}
		kps = strstr(at, "\nKernelPageSize:");
		ph = strstr(at, "\nPrivate_Hugetlb:");
		snprintf(smaps_value, sizeof(smaps_value), "%lu", huge_size / 1024);
		WL_CHECK(kps && strtoul(kps + 16, NULL, 10) == huge_size / 1024, "KernelPageSize is not %s kB",
			 smaps_value);
		WL_CHECK(ph && strtoul(ph + 17, NULL, 10) == HUGE_PAGES * huge_size / 1024,
			 "Private_Hugetlb is %lu kB, expected %zu", ph ? strtoul(ph + 17, NULL, 10) : 0,
			 HUGE_PAGES * huge_size / 1024);
	}
}

int main(int argc, char **argv)
{
	int with_shared = argc > 2 && strcmp(argv[2], "shared") == 0;
	char meminfo[8192], *hps;
	char *shared = NULL;

	wl_init(argc, argv);
	if (wl_read_file("/proc/meminfo", meminfo, sizeof(meminfo)) < 0 || !(hps = strstr(meminfo, "Hugepagesize:")))
		wl_die("no Hugepagesize in /proc/meminfo");
	huge_size = strtoul(hps + 13, NULL, 10) * 1024;
	snprintf(pool, sizeof(pool), "/sys/kernel/mm/hugepages/hugepages-%zukB", huge_size / 1024);
	reserve(HUGE_PAGES + with_shared);
	area = mmap(NULL, HUGE_PAGES * huge_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
		    -1, 0);
	if (area == MAP_FAILED) {
		put_back();
		wl_die("mmap(MAP_HUGETLB)");
	}
	ml_fill(area, huge_size, 1);
	for (size_t i = 0; i < huge_size; i += 4096 * 37)
		area[huge_size + i] = (char)(i / 4096 + 7);
	if (with_shared) {
		shared = mmap(NULL, huge_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		if (shared == MAP_FAILED) {
			put_back();
			wl_die("mmap(MAP_SHARED|MAP_HUGETLB)");
		}
		shared[0] = 's';
	}
	wl_ready();
	wl_wait();
	verify();
	if (shared)
		WL_CHECK(shared[0] == 's', "the shared hugetlb page lost its data");
	put_back();
	wl_finish();
}
