/*
 * sigtrap: a SIGTRAP handler (with SA_SIGINFO) that must survive every dump
 * and restore. criu's own code in the task ends in traps, and the kernel
 * resets the handler of a trap it forces while SIGTRAP is blocked: so the
 * handler is checked by sigaction() and by taking real traps (int3 and
 * raise) after the wait, which must reach it with the right si_code.
 *
 * With `pending` (tgkill: for this thread) or `pending-shared` (kill: for the
 * process) a SIGTRAP is also queued while blocked. A dump must refuse it and
 * leave it queued: after the wait it must still be pending, and unblocking it
 * must run the handler once with si_code SI_TKILL or SI_USER.
 *
 *   bin/sigtrap RESULT_FILE [pending|pending-shared]
 */
#include "lib.h"

#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <string.h>

static volatile sig_atomic_t traps, last_code;

static void on_trap(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)ctx;
	traps++;
	last_code = si->si_code;
}

int main(int argc, char **argv)
{
	struct sigaction sa, now;
	const char *mode = argc > 2 ? argv[2] : "";
	int queued = strcmp(mode, "pending") == 0 || strcmp(mode, "pending-shared") == 0;
	sigset_t trap, pending;

	wl_init(argc, argv);
	sigemptyset(&trap);
	sigaddset(&trap, SIGTRAP);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_trap;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGUSR1);
	if (sigaction(SIGTRAP, &sa, NULL))
		wl_die("sigaction(SIGTRAP)");
	__asm__ volatile("int3");
	if (traps != 1)
		wl_die("setup: int3 reached the handler %d times", (int)traps);
	if (queued) {
		sigprocmask(SIG_BLOCK, &trap, NULL);
		if (strcmp(mode, "pending") == 0)
			syscall(SYS_tgkill, getpid(), gettid(), SIGTRAP);
		else
			kill(getpid(), SIGTRAP);
	}
	wl_ready();
	wl_wait();

	if (sigaction(SIGTRAP, NULL, &now))
		wl_die("sigaction(SIGTRAP) read back");
	WL_CHECK(now.sa_sigaction == on_trap, "SIGTRAP handler %p, expected %p", (void *)now.sa_sigaction,
		 (void *)on_trap);
	WL_CHECK((now.sa_flags & (SA_SIGINFO | SA_RESTART)) == (SA_SIGINFO | SA_RESTART), "SIGTRAP flags %#x",
		 now.sa_flags);
	WL_CHECK(sigismember(&now.sa_mask, SIGUSR1) == 1, "SIGTRAP sa_mask lost SIGUSR1");
	if (queued) {
		sigpending(&pending);
		WL_CHECK(sigismember(&pending, SIGTRAP) == 1, "the queued SIGTRAP is gone");
		sigprocmask(SIG_UNBLOCK, &trap, NULL);
		WL_CHECK(traps == 2 && last_code == (strcmp(mode, "pending") == 0 ? SI_TKILL : SI_USER),
			 "queued SIGTRAP: %d traps, si_code %d", (int)traps, (int)last_code);
		traps = 1;
	}
	__asm__ volatile("int3");
	WL_CHECK(traps == 2 && last_code == 0x80, "int3: %d traps, si_code %d, expected 2 and SI_KERNEL",
		 (int)traps, (int)last_code);
	raise(SIGTRAP);
	WL_CHECK(traps == 3 && last_code == SI_TKILL, "raise: %d traps, si_code %d, expected 3 and SI_TKILL",
		 (int)traps, (int)last_code);
	wl_finish();
}
