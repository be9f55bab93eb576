/*
 * perf_event_held: a perf event fd (a software "dummy" counter of this process, disabled, read
 * format PERF_FORMAT_ID) at fd 5, made non-blocking. Neither criu-ts nor CRIU takes perf event fds:
 * the plugin tests dump and restore this through a plugin. After the wait fd 5 must still be a perf
 * event with the same flags whose reads give its count and the id the kernel gives it, and which
 * can be enabled.
 */
#include "lib.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PFD 5

/* What read() gives with PERF_FORMAT_ID. */
struct reading {
	uint64_t value;
	uint64_t id;
};

int main(int argc, char **argv)
{
	struct perf_event_attr attr;
	struct reading r;
	char link[64];
	uint64_t id = 0;
	ssize_t n;
	int fd;

	wl_init(argc, argv);
	memset(&attr, 0, sizeof(attr));
	attr.size = sizeof(attr);
	attr.type = PERF_TYPE_SOFTWARE;
	attr.config = PERF_COUNT_SW_DUMMY;
	attr.read_format = PERF_FORMAT_ID;
	attr.disabled = 1;
	fd = syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
	if (fd < 0 || dup2(fd, PFD) != PFD)
		wl_die("perf_event_open");
	close(fd);
	if (fcntl(PFD, F_SETFL, O_NONBLOCK))
		wl_die("O_NONBLOCK");
	wl_ready();
	wl_wait();

	n = readlink("/proc/self/fd/5", link, sizeof(link) - 1);
	if (n < 0) {
		wl_fail("fd %d is gone", PFD);
		wl_finish();
	}
	link[n] = 0;
	WL_CHECK(strcmp(link, "anon_inode:[perf_event]") == 0, "fd %d is %s, not a perf event", PFD, link);
	WL_CHECK(fcntl(PFD, F_GETFL) & O_NONBLOCK, "fd %d lost O_NONBLOCK", PFD);
	WL_CHECK(ioctl(PFD, PERF_EVENT_IOC_ID, &id) == 0, "fd %d: no perf event id: %s", PFD, strerror(errno));
	n = read(PFD, &r, sizeof(r));
	WL_CHECK(n == sizeof(r), "fd %d: a read gave %zd bytes, not the %zu of PERF_FORMAT_ID", PFD, n, sizeof(r));
	WL_CHECK(n != sizeof(r) || (r.id == id && r.value == 0), "fd %d: read value %llu id %llu, kernel id %llu", PFD,
		 (unsigned long long)r.value, (unsigned long long)r.id, (unsigned long long)id);
	WL_CHECK(ioctl(PFD, PERF_EVENT_IOC_ENABLE, 0) == 0, "fd %d cannot be enabled: %s", PFD, strerror(errno));
	wl_finish();
}
