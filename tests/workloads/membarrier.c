/*
 * membarrier: the commands a process registered for (membarrier(2)), which
 * belong to its address space. Registers GLOBAL_EXPEDITED, PRIVATE_EXPEDITED,
 * PRIVATE_EXPEDITED_SYNC_CORE and PRIVATE_EXPEDITED_RSEQ; after the wait
 * MEMBARRIER_CMD_GET_REGISTRATIONS must give the same mask, and the private
 * expedited barriers must work (an unregistered one fails with EPERM).
 *
 *   bin/membarrier RESULT_FILE
 */
#include "lib.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CMD_GET_REGISTRATIONS (1 << 9)

static long membarrier(int cmd)
{
	return syscall(SYS_membarrier, cmd, 0, 0);
}

int main(int argc, char **argv)
{
	static const int registers[] = { MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
					 MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
					 MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
					 MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ };
	static const int barriers[] = { MEMBARRIER_CMD_PRIVATE_EXPEDITED, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
					MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ };
	long before, after;

	wl_init(argc, argv);
	if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != -1 || errno != EPERM)
		wl_die("setup: a private expedited barrier works before any registration");
	for (size_t i = 0; i < sizeof(registers) / sizeof(registers[0]); i++)
		if (membarrier(registers[i]))
			wl_die("membarrier register %#x", registers[i]);
	before = membarrier(CMD_GET_REGISTRATIONS);
	if (before < 0)
		wl_die("MEMBARRIER_CMD_GET_REGISTRATIONS");
	wl_log("registrations %#lx", before);
	wl_ready();
	wl_wait();

	after = membarrier(CMD_GET_REGISTRATIONS);
	WL_CHECK(after == before, "registrations %#lx, expected %#lx", after, before);
	for (size_t i = 0; i < sizeof(barriers) / sizeof(barriers[0]); i++)
		WL_CHECK(membarrier(barriers[i]) == 0, "barrier %#x: %s", barriers[i], strerror(errno));
	wl_finish();
}
