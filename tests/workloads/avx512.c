/*
 * avx512: the AVX-512 state (opmask registers k0-k7 and all 512 bits of
 * zmm0-31) holds known values while one asm loop spins. Each turn the loop
 * stores the registers to memory (plain stores, which change no register) and
 * compares them with the values loaded; it leaves only on a difference or when
 * it sees wl_stop. No C code runs between loading and the last comparison, so
 * nothing but a checkpoint/restore (or a signal frame) can touch them.
 *
 * These components sit at different places of the XSAVE area on different
 * CPUs (CPUID leaf 0xD): on an AMD EPYC without MPX opmask is at 832, on an
 * Intel CPU with MPX at 1088. A CPU without AVX-512F/BW (or a kernel that does
 * not save the state) is an error: the test asks /proc/cpuinfo first.
 */
#include "lib.h"

#include <cpuid.h>
#include <string.h>

#define XCR0_AVX512 0xe6 /* SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM */

struct avx512_ctx {
	unsigned char vinit[32 * 64]; /* zmm0-31 as loaded */
	unsigned char vcur[32 * 64];  /* zmm0-31 of the current turn */
	uint64_t kinit[8];            /* k0-k7 as loaded */
	uint64_t kcur[8];             /* k0-k7 of the current turn */
	uint64_t turns;
} __attribute__((aligned(64)));

static struct avx512_ctx ctx __attribute__((aligned(64)));

static int have_avx512(void)
{
	unsigned a, b, c, d, lo, hi;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
		return 0;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & bit_AVX512F) || !(b & bit_AVX512BW))
		return 0;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (lo & XCR0_AVX512) == XCR0_AVX512;
}

#define ZMM_LIST "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31"

/* Returns 0 when the loop ended on wl_stop, 1 on an opmask difference, 2 on a zmm difference. */
__attribute__((target("avx512f,avx512bw"))) static int spin(void)
{
	int r;

	__asm__ volatile(".irp i,0,1,2,3,4,5,6,7\n\t"
			 "kmovq %c[o_kinit]+8*\\i(%[c]), %%k\\i\n\t"
			 ".endr\n\t"
			 ".irp i," ZMM_LIST "\n\t"
			 "vmovdqu64 %c[o_vinit]+64*\\i(%[c]), %%zmm\\i\n\t"
			 ".endr\n"
			 "1:\t.irp i,0,1,2,3,4,5,6,7\n\t"
			 "kmovq %%k\\i, %c[o_kcur]+8*\\i(%[c])\n\t"
			 ".endr\n\t"
			 ".irp i," ZMM_LIST "\n\t"
			 "vmovdqu64 %%zmm\\i, %c[o_vcur]+64*\\i(%[c])\n\t"
			 ".endr\n\t"
			 "lea %c[o_kcur](%[c]), %%rsi\n\t"
			 "lea %c[o_kinit](%[c]), %%rdi\n\t"
			 "mov $64, %%ecx\n\t"
			 "repe cmpsb\n\t"
			 "jne 8f\n\t"
			 "lea %c[o_vcur](%[c]), %%rsi\n\t"
			 "lea %c[o_vinit](%[c]), %%rdi\n\t"
			 "mov $2048, %%ecx\n\t"
			 "repe cmpsb\n\t"
			 "jne 9f\n\t"
			 "incq %c[o_turns](%[c])\n\t"
			 "cmpl $0, %[stop]\n\t"
			 "je 1b\n\t"
			 "xor %%eax, %%eax\n\t"
			 "jmp 7f\n"
			 "8:\tmov $1, %%eax\n\t"
			 "jmp 7f\n"
			 "9:\tmov $2, %%eax\n"
			 "7:\tvzeroupper\n\t"
			 : "=&a"(r)
			 : [c] "b"(&ctx), [stop] "m"(wl_stop), [o_vinit] "i"(offsetof(struct avx512_ctx, vinit)),
			   [o_vcur] "i"(offsetof(struct avx512_ctx, vcur)),
			   [o_kinit] "i"(offsetof(struct avx512_ctx, kinit)),
			   [o_kcur] "i"(offsetof(struct avx512_ctx, kcur)),
			   [o_turns] "i"(offsetof(struct avx512_ctx, turns))
			 : "rcx", "rsi", "rdi", "cc", "memory", "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7",
			   "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
			   "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20",
			   "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",
			   "xmm31");
	return r;
}

int main(int argc, char **argv)
{
	int r;

	wl_init(argc, argv);
	if (!have_avx512())
		wl_die("this CPU (or kernel) has no AVX-512F/BW state to check");
	for (size_t i = 0; i < sizeof(ctx.vinit); i++)
		ctx.vinit[i] = (unsigned char)(i * 37 + 5 + (i >> 6));
	for (int i = 0; i < 8; i++)
		ctx.kinit[i] = 0x0123456789abcdefULL * (uint64_t)(i + 1) ^ (0xf0f0f0f000000000ULL >> i);

	wl_ready();
	r = spin();

	wl_log("%llu turns", (unsigned long long)ctx.turns);
	for (int i = 0; r == 1 && i < 8; i++)
		WL_CHECK(ctx.kcur[i] == ctx.kinit[i], "k%d is %#llx, expected %#llx", i,
			 (unsigned long long)ctx.kcur[i], (unsigned long long)ctx.kinit[i]);
	for (int i = 0; r == 2 && i < 32; i++) {
		const unsigned char *want = ctx.vinit + 64 * i, *got = ctx.vcur + 64 * i;

		WL_CHECK(memcmp(want, got, 16) == 0, "xmm%d differs", i);
		WL_CHECK(memcmp(want + 16, got + 16, 16) == 0, "bits 128-255 of zmm%d differ", i);
		WL_CHECK(memcmp(want + 32, got + 32, 32) == 0, "bits 256-511 of zmm%d differ", i);
	}
	WL_CHECK(r == 0, "the loop found its registers changed");
	WL_CHECK(ctx.turns > 0, "the loop never ran");
	wl_wait();
	wl_finish();
}
