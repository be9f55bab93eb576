/*
 * bench_maps: a process with COUNT separate small mappings (each one page, touched, with its own
 * protection so neighbours cannot merge), for the benchmark.
 *   bin/bench_maps RESULT_FILE COUNT
 */
#include "lib.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	size_t count = argc > 2 ? strtoul(argv[2], NULL, 10) : 2000;
	long page = sysconf(_SC_PAGESIZE);
	/* One reservation, then every other page made accessible: each accessible page is a mapping. */
	char *base = mmap(NULL, 2 * count * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (base == MAP_FAILED)
		wl_die("mmap reservation");
	for (size_t i = 0; i < count; i++) {
		char *p = base + 2 * i * page;
		if (mprotect(p, page, PROT_READ | PROT_WRITE))
			wl_die("mprotect %zu", i);
		p[0] = (char)i;
		p[page - 1] = (char)(i * 7);
	}
	wl_ready();
	wl_wait();
	for (size_t i = 0; i < count; i++) {
		char *p = base + 2 * i * page;
		if (p[0] != (char)i || p[page - 1] != (char)(i * 7)) {
			wl_fail("mapping %zu lost its content", i);
			break;
		}
	}
	wl_finish();
}
