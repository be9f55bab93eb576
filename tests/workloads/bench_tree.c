/*
 * bench_tree: a tree of COUNT processes for the benchmark: the root and COUNT-1 children that
 * wait. On SIGTERM the root ends the children and checks each ended as it should.
 *   bin/bench_tree RESULT_FILE COUNT
 */
#include "lib.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int count = argc > 2 ? atoi(argv[2]) : 100;
	pid_t *kids = calloc(count, sizeof(*kids));

	for (int i = 0; i < count - 1; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			wl_die("fork %d", i);
		if (kids[i] == 0) {
			signal(SIGTERM, SIG_DFL);
			for (;;)
				pause();
		}
	}
	wl_ready();
	wl_wait();
	for (int i = 0; i < count - 1; i++)
		kill(kids[i], SIGTERM);
	for (int i = 0; i < count - 1; i++) {
		int status;
		if (waitpid(kids[i], &status, 0) != kids[i] || !WIFSIGNALED(status) || WTERMSIG(status) != SIGTERM)
			wl_fail("child %d did not end by SIGTERM", i);
	}
	wl_finish();
}
