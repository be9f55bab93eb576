/*
 * mem_aio: a Linux AIO context (io_setup) whose ring has wrapped around and holds completed events
 * nobody has reaped yet (head 126, tail 3 of 127).
 *
 * Before the wait: 124 writes to a file are submitted and reaped one by one (the ring goes round),
 * then six more (data 1000..1005) are submitted and two of them reaped. After the wait: the context
 * id is unchanged and is still the ring's address in /proc/self/maps, the ring header reads as
 * before, io_getevents gives exactly the four pending events in order (data 1002..1005, 8 bytes
 * each) and then none; new writes can be submitted and reaped; the file holds every write; and
 * io_destroy succeeds.
 */
#include "memlib.h"

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NR_EVENTS 16 /* a one-page ring of 127 events */
#define ROUNDS 124
#define PENDING_FIRST 1000
#define SUBMITTED 6
#define REAPED 2

struct ring_header {
	unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
};

static aio_context_t ctx;
static int fd;
static struct ring_header before;

static long io_setup_(unsigned nr, aio_context_t *c)
{
	return syscall(SYS_io_setup, nr, c);
}

static long io_submit_(struct iocb **iocbs, long n)
{
	return syscall(SYS_io_submit, ctx, n, iocbs);
}

static long io_getevents_(long min, long max, struct io_event *ev, struct timespec *t)
{
	return syscall(SYS_io_getevents, ctx, min, max, ev, t);
}

/* Writes the 8-byte tag `data` at offset 8 * (data % 4096) of the file. */
static long submit_writes(uint64_t first, int n)
{
	static uint64_t payload[64];
	struct iocb cbs[64], *ptrs[64];

	for (int i = 0; i < n; i++) {
		payload[i] = first + i;
		memset(&cbs[i], 0, sizeof(cbs[i]));
		cbs[i].aio_data = first + i;
		cbs[i].aio_lio_opcode = IOCB_CMD_PWRITE;
		cbs[i].aio_fildes = fd;
		cbs[i].aio_buf = (uint64_t)(uintptr_t)&payload[i];
		cbs[i].aio_nbytes = 8;
		cbs[i].aio_offset = 8 * ((first + i) % 4096);
		ptrs[i] = &cbs[i];
	}
	return io_submit_(ptrs, n);
}

/* Reaps exactly n events, expecting data first..first+n-1 in order. */
static void reap(uint64_t first, int n, const char *when)
{
	struct io_event ev[64];
	struct timespec t = { 2, 0 };
	long got = io_getevents_(n, n, ev, &t);

	if (got != n) {
		wl_fail("%s: io_getevents gave %ld events, expected %d", when, got, n);
		return;
	}
	for (int i = 0; i < n; i++)
		WL_CHECK(ev[i].data == first + i && ev[i].res == 8, "%s: event %d has data %llu res %lld, expected %llu",
			 when, i, (unsigned long long)ev[i].data, (long long)ev[i].res,
			 (unsigned long long)(first + i));
}

static void setup(void)
{
	char path[4096];

	wl_path("aio-file", path, sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		wl_die("create %s", path);
	if (io_setup_(NR_EVENTS, &ctx))
		wl_die("io_setup");
	for (int i = 0; i < ROUNDS; i++) {
		if (submit_writes(i, 1) != 1)
			wl_die("io_submit round %d", i);
		reap(i, 1, "setup");
	}
	if (submit_writes(PENDING_FIRST, SUBMITTED) != SUBMITTED)
		wl_die("io_submit of the pending writes");
	reap(PENDING_FIRST, REAPED, "setup");
	if (wl_failures())
		wl_die("setup did not go as planned");
	before = *(struct ring_header *)(uintptr_t)ctx;
	wl_log("ring at %#llx: nr %u head %u tail %u", (unsigned long long)ctx, before.nr, before.head, before.tail);
	if (before.tail >= before.head)
		wl_die("the ring did not wrap (head %u, tail %u)", before.head, before.tail);
}

static void verify(void)
{
	struct ring_header *now = (struct ring_header *)(uintptr_t)ctx;
	char head[512], flags[512];
	unsigned long start = 0;
	struct io_event ev[4];
	struct timespec zero = { 0, 0 };

	if (!ml_smaps(now, head, sizeof(head), flags, sizeof(flags)) || sscanf(head, "%lx-", &start) != 1 ||
	    start != (unsigned long)ctx || strstr(head, "/[aio]") == NULL) {
		wl_fail("the context id %#llx is not an AIO ring in maps (%s)", (unsigned long long)ctx, head);
		return;
	}
	WL_CHECK(now->nr == before.nr && now->head == before.head && now->tail == before.tail &&
			 now->magic == before.magic && now->header_length == before.header_length,
		 "ring header: nr %u head %u tail %u magic %#x, expected nr %u head %u tail %u magic %#x", now->nr,
		 now->head, now->tail, now->magic, before.nr, before.head, before.tail, before.magic);
	reap(PENDING_FIRST + REAPED, SUBMITTED - REAPED, "after the wait");
	WL_CHECK(io_getevents_(0, 4, ev, &zero) == 0, "events beyond the pending ones came back");
	WL_CHECK(submit_writes(2000, 3) == 3, "io_submit after the wait failed");
	reap(2000, 3, "new writes");
	for (uint64_t tag = 0; tag < 2003; tag++) {
		uint64_t got = 0;

		if ((tag >= ROUNDS && tag < PENDING_FIRST) || (tag >= PENDING_FIRST + SUBMITTED && tag < 2000))
			continue;
		if (pread(fd, &got, 8, 8 * (tag % 4096)) != 8 || got != tag) {
			wl_fail("the file lacks write %llu", (unsigned long long)tag);
			break;
		}
	}
	WL_CHECK(syscall(SYS_io_destroy, ctx) == 0, "io_destroy failed");
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
