/*
 * bench_ghost: a process holding an unlinked file of MIB mebibytes of data, for the benchmark
 * (dumped with a --ghost-limit above it).
 *   bin/bench_ghost RESULT_FILE MIB
 * Every 8-byte word holds a value derived from its offset; after the wait the file must be
 * unlinked still, as long, at its offset, with every word in place.
 */
#include "lib.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (1024 * 1024)

static uint64_t word_at(uint64_t off)
{
	return off * 0x9e3779b97f4a7c15ull + 7;
}

int main(int argc, char **argv)
{
	char path[4096];
	uint64_t *buf = malloc(CHUNK);
	struct stat st;
	int fd;

	wl_init(argc, argv);
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
	fd = open(wl_path("ghost", path, sizeof(path)), O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (buf == NULL || fd < 0)
		wl_die("setup");
	for (size_t c = 0; c < mib; c++) {
		for (size_t i = 0; i < CHUNK / 8; i++)
			buf[i] = word_at(c * CHUNK + i * 8);
		if (write(fd, buf, CHUNK) != CHUNK)
			wl_die("write");
	}
	if (unlink(path) < 0 || lseek(fd, 12345, SEEK_SET) != 12345)
		wl_die("unlink");
	wl_ready();
	wl_wait();
	WL_CHECK(fstat(fd, &st) == 0 && st.st_nlink == 0 && st.st_size == (off_t)(mib * CHUNK),
		 "ghost: not an unlinked file of %zu MiB", mib);
	WL_CHECK(lseek(fd, 0, SEEK_CUR) == 12345, "ghost: offset %ld", (long)lseek(fd, 0, SEEK_CUR));
	for (size_t c = 0; c < mib && wl_failures() == 0; c++) {
		WL_CHECK(pread(fd, buf, CHUNK, c * CHUNK) == CHUNK, "ghost: short read at MiB %zu", c);
		for (size_t i = 0; i < CHUNK / 8; i++)
			if (buf[i] != word_at(c * CHUNK + i * 8)) {
				wl_fail("ghost: word at %zu differs", c * CHUNK + i * 8);
				break;
			}
	}
	wl_finish();
}
