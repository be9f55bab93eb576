/*
 * bench_files: a process with COUNT open regular files (each its own file, fds from 10 on), for
 * the benchmark.
 *   bin/bench_files RESULT_FILE COUNT
 * File i holds its number; its fd sits at offset i % 8. After the wait every fd must name its
 * file at its offset.
 */
#include "lib.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIRST_FD 10

int main(int argc, char **argv)
{
	char dir[4096], path[4200], buf[32], got[32];
	struct rlimit rl;

	wl_init(argc, argv);
	size_t count = argc > 2 ? strtoul(argv[2], NULL, 10) : 10000;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < count + FIRST_FD + 16) {
		rl.rlim_cur = count + FIRST_FD + 16;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			wl_die("setrlimit(RLIMIT_NOFILE, %zu)", count + FIRST_FD + 16);
	}
	if (mkdir(wl_path("files", dir, sizeof(dir)), 0700) < 0)
		wl_die("mkdir");
	for (size_t i = 0; i < count; i++) {
		int n = snprintf(buf, sizeof(buf), "%08zu", i), fd;

		snprintf(path, sizeof(path), "%s/%zu", dir, i);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || write(fd, buf, n) != n || lseek(fd, i % 8, SEEK_SET) < 0 ||
		    dup2(fd, FIRST_FD + i) < 0)
			wl_die("file %zu", i);
		close(fd);
	}
	wl_ready();
	wl_wait();
	for (size_t i = 0; i < count; i++) {
		int fd = FIRST_FD + i;

		snprintf(buf, sizeof(buf), "%08zu", i);
		memset(got, 0, sizeof(got));
		if (lseek(fd, 0, SEEK_CUR) != (off_t)(i % 8) || pread(fd, got, 8, 0) != 8 || memcmp(got, buf, 8)) {
			wl_fail("fd %d: not file %zu at offset %zu", fd, i, i % 8);
			break;
		}
	}
	wl_finish();
}
