/*
 * mqueue_fd: a process holding a POSIX message queue open (already unlinked, so it goes away with
 * the process) with one message in it. Its dump must be refused by name, and it must run on with
 * the message still queued. With "named", the queue keeps its name (in criu's IPC namespace, which
 * is not saved) until the check, which removes it.
 *   bin/mqueue_fd RESULT_FILE [named]
 */
#include "lib.h"

#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	char name[64];
	snprintf(name, sizeof(name), "/criu-ts-mq-%d", getpid());
	struct mq_attr attr = { .mq_maxmsg = 4, .mq_msgsize = 64 };
	mqd_t q = mq_open(name, O_CREAT | O_EXCL | O_RDWR | O_NONBLOCK, 0600, &attr);
	int named = argc > 2 && strcmp(argv[2], "named") == 0;
	if (q == (mqd_t)-1 || (!named && mq_unlink(name)) || mq_send(q, "queued", 7, 1)) {
		if (named)
			mq_unlink(name);
		wl_die("a message queue");
	}
	wl_ready();
	wl_wait();
	if (named)
		WL_CHECK(mq_unlink(name) == 0, "the queue lost its name");
	char buf[64] = { 0 };
	WL_CHECK(mq_receive(q, buf, sizeof(buf), NULL) == 7 && strcmp(buf, "queued") == 0,
		 "the queue holds \"%s\"", buf);
	wl_finish();
}
