/*
 * mem_fileprot: one file mapped four times with different protections and open modes.
 *   A: MAP_SHARED, PROT_READ, from an O_RDWR fd (so it may be made writable later)
 *   B: MAP_SHARED, PROT_READ|PROT_WRITE, from the same fd, at file page 1 (written before the wait)
 *   C: MAP_SHARED, PROT_READ, from an O_RDONLY fd (mprotect to PROT_WRITE must stay refused)
 *   D: MAP_PRIVATE, PROT_READ, from the O_RDONLY fd (may be made writable: copies stay private)
 * After the wait: contents; mprotect(A, rw) must succeed and a store into A reach the file and B;
 * mprotect(C, rw) must fail with EACCES; mprotect(D, rw) must succeed and leave the file alone.
 */
#include "memlib.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#define FILE_PAGES 4

static char path[4096];
static char *a, *b, *c, *d;

static char *map(size_t len, int prot, int flags, int fd, off_t off, const char *what)
{
	char *p = mmap(NULL, len, prot, flags, fd, off);

	if (p == MAP_FAILED)
		wl_die("mmap %s", what);
	return p;
}

static void setup(void)
{
	char *data = malloc(FILE_PAGES * PAGE);
	int rw, ro;

	wl_path("mapped", path, sizeof(path));
	rw = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (rw < 0 || data == NULL)
		wl_die("create %s", path);
	ml_fill(data, FILE_PAGES * PAGE, 1);
	if (write(rw, data, FILE_PAGES * PAGE) != (ssize_t)(FILE_PAGES * PAGE))
		wl_die("write %s", path);
	free(data);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	if (ro < 0)
		wl_die("open %s read-only", path);
	a = map(FILE_PAGES * PAGE, PROT_READ, MAP_SHARED, rw, 0, "A");
	b = map(2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, rw, PAGE, "B");
	c = map(FILE_PAGES * PAGE, PROT_READ, MAP_SHARED, ro, 0, "C");
	d = map(FILE_PAGES * PAGE, PROT_READ, MAP_PRIVATE, ro, 0, "D");
	close(rw);
	close(ro);
	b[10] = 'B'; /* file byte PAGE + 10 */
	if (mprotect(c, PAGE, PROT_READ | PROT_WRITE) == 0 || errno != EACCES)
		wl_die("mprotect of a read-only file's shared mapping was not refused with EACCES");
}

static char file_byte(off_t off)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char ch = 0;

	if (fd < 0 || pread(fd, &ch, 1, off) != 1)
		wl_fail("cannot read %s at %ld", path, (long)off);
	if (fd >= 0)
		close(fd);
	return ch;
}

static void verify(void)
{
	/* everything but byte PAGE + 10 holds pattern 1 */
	WL_CHECK(a[PAGE + 10] == 'B' && c[PAGE + 10] == 'B', "B's store is not seen through A and C");
	ml_expect("A page 0", a, PAGE, 1);
	ml_expect("C page 0", c, PAGE, 1);
	ml_expect("D page 0", d, PAGE, 1);

	if (mprotect(a, FILE_PAGES * PAGE, PROT_READ | PROT_WRITE)) {
		wl_fail("mprotect(A, PROT_READ|PROT_WRITE) failed: %s (the file behind it lost its write access)",
			strerror(errno));
	} else {
		a[PAGE + 20] = 'A';
		WL_CHECK(b[20] == 'A', "a store into A is not seen in B");
		WL_CHECK(file_byte(PAGE + 20) == 'A', "a store into A does not reach the file");
	}

	errno = 0;
	WL_CHECK(mprotect(c, FILE_PAGES * PAGE, PROT_READ | PROT_WRITE) != 0 && errno == EACCES,
		 "mprotect(C, PROT_READ|PROT_WRITE) gave %s, expected EACCES (the file was reopened writable)",
		 errno ? strerror(errno) : "success");

	if (mprotect(d, FILE_PAGES * PAGE, PROT_READ | PROT_WRITE)) {
		wl_fail("mprotect(D, PROT_READ|PROT_WRITE) failed: %s", strerror(errno));
	} else {
		d[3 * PAGE] = 'D';
		WL_CHECK(file_byte(3 * PAGE) == (char)ml_pattern(1, 3 * PAGE), "a store into private D reached the file");
	}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	setup();
	wl_ready();
	wl_wait();
	verify();
	wl_finish();
}
