/*
 * sysv_host: a process in the host's IPC namespace with a private SysV segment attached (and
 * already removed, so it goes away with the process). Its dump must be refused by name, since the
 * segment would not be saved, and it must run on untouched.
 *   bin/sysv_host RESULT_FILE
 */
#include "lib.h"

#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int id = shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600);
	char *p = id < 0 ? (void *)-1 : shmat(id, NULL, 0);
	if (p == (void *)-1 || shmctl(id, IPC_RMID, NULL))
		wl_die("attaching a segment");
	strcpy(p, "still here");
	wl_ready();
	wl_wait();
	WL_CHECK(strcmp(p, "still here") == 0, "the segment holds \"%.16s\"", p);
	wl_finish();
}
