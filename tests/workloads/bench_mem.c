/*
 * bench_mem: a process with MIB mebibytes of touched anonymous memory, for the benchmark.
 *   bin/bench_mem RESULT_FILE MIB
 * Every 8-byte word holds a value derived from its index; after the wait all are checked.
 */
#include "lib.h"

#include <stdlib.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
	size_t words = mib * 1024 * 1024 / sizeof(uint64_t);
	uint64_t *mem = mmap(NULL, words * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (mem == MAP_FAILED)
		wl_die("mmap of %zu MiB", mib);
	for (size_t i = 0; i < words; i++)
		mem[i] = i * 0x9e3779b97f4a7c15ull;
	wl_ready();
	wl_wait();
	for (size_t i = 0; i < words; i++) {
		if (mem[i] != i * 0x9e3779b97f4a7c15ull) {
			wl_fail("word %zu differs", i);
			break;
		}
	}
	wl_finish();
}
