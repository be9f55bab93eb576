/*
 * external_file: holds fd 5 on RESULT_FILE.ext (O_RDWR, "hello" written, offset 2), the file a
 * dump may name with --external file[MNT_ID:INODE] and a restore hand back with --inherit-fd.
 * On SIGTERM: fd 5 is still O_RDWR at offset 2, and "XY" is written there (the test looks at which
 * file it reached).
 *   bin/external_file RESULT_FILE
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char path[4096];
	off_t at;
	int fd, flags;

	wl_init(argc, argv);
	fd = open(wl_path("ext", path, sizeof(path)), O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || dup2(fd, 5) != 5)
		wl_die("open %s", path);
	if (fd != 5)
		close(fd);
	if (write(5, "hello", 5) != 5 || lseek(5, 2, SEEK_SET) != 2)
		wl_die("write");
	wl_ready();
	wl_wait();
	flags = fcntl(5, F_GETFL);
	WL_CHECK(flags >= 0 && (flags & O_ACCMODE) == O_RDWR, "fd 5 flags %#x, expected O_RDWR", flags);
	at = lseek(5, 0, SEEK_CUR);
	WL_CHECK(at == 2, "fd 5 at offset %lld, expected 2", (long long)at);
	WL_CHECK(write(5, "XY", 2) == 2, "write to fd 5: %s", strerror(errno));
	wl_finish();
}
