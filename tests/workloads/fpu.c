/*
 * fpu: x87 stack, x87 control word, MXCSR, xmm0-15 and (when the CPU and
 * kernel have AVX) the upper halves of ymm0-15 hold known values while one
 * asm loop spins. Each turn the loop stores the registers to memory (fxsave
 * and plain vector stores, which change no register) and compares them with
 * the values loaded; it leaves only on a difference or when it sees wl_stop.
 * No C code runs between loading and the last comparison, so nothing but a
 * checkpoint/restore (or a signal frame) can touch these registers.
 *
 * Optional argument "sse": leave the AVX state alone even when it exists.
 */
#include "lib.h"

#include <cpuid.h>
#include <string.h>

#define FCW_CUSTOM 0x0e7f /* round toward zero, double precision, all exceptions masked */
#define MXCSR_CUSTOM 0xffc0 /* flush to zero, round toward zero, all masked, denormals are zero */
#define MXCSR_DAZ 0x0040

struct fpu_ctx {
	unsigned char ref[512];   /* fxsave right after loading */
	unsigned char cur[512];   /* fxsave of the current turn */
	unsigned char vinit[512]; /* the 16 ymm (or xmm, low halves) values loaded */
	unsigned char vcur[512];  /* the vector registers of the current turn */
	long double st[8];        /* pushed in this order: st(0) ends up as st[7] */
	uint64_t turns;
	uint32_t mxcsr;
	uint32_t mxcsr_saved; /* the process's own MXCSR, put back after the loop */
	uint16_t fcw;
} __attribute__((aligned(64)));

static struct fpu_ctx ctx __attribute__((aligned(64)));

static int have_avx(void)
{
	unsigned a, b, c, d, lo, hi;

	if (!__get_cpuid(1, &a, &b, &c, &d))
		return 0;
	if (!(c & bit_AVX) || !(c & bit_OSXSAVE))
		return 0;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (lo & 6) == 6; /* the OS saves SSE and AVX state */
}

/* Offsets in struct fpu_ctx and in the fxsave image, for the asm below. */
#define OPS                                                                                                  \
	[c] "b"(&ctx), [stop] "m"(wl_stop), [o_ref] "i"(offsetof(struct fpu_ctx, ref)),                      \
		[o_cur] "i"(offsetof(struct fpu_ctx, cur)), [o_vinit] "i"(offsetof(struct fpu_ctx, vinit)),  \
		[o_vcur] "i"(offsetof(struct fpu_ctx, vcur)), [o_st] "i"(offsetof(struct fpu_ctx, st)),      \
		[o_turns] "i"(offsetof(struct fpu_ctx, turns)), [o_mxcsr] "i"(offsetof(struct fpu_ctx, mxcsr)), \
		[o_mxcsr_saved] "i"(offsetof(struct fpu_ctx, mxcsr_saved)),                                  \
		[o_fcw] "i"(offsetof(struct fpu_ctx, fcw))

#define CLOBBERS                                                                                             \
	"rcx", "rsi", "rdi", "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",    \
		"xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "st", "st(1)",  \
		"st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)"

/* Compare LEN bytes at OFF in cur and ref; on a difference leave with code 1. */
#define CMP_FX(off, len)                                                                                     \
	"lea %c[o_cur]+" #off "(%[c]), %%rsi\n\t"                                                            \
	"lea %c[o_ref]+" #off "(%[c]), %%rdi\n\t"                                                            \
	"mov $" #len ", %%ecx\n\t"                                                                           \
	"repe cmpsb\n\t"                                                                                     \
	"jne 8f\n\t"

#define LOAD_X87                                                                                             \
	"fninit\n\t"                                                                                         \
	"fldcw %c[o_fcw](%[c])\n\t"                                                                          \
	"ldmxcsr %c[o_mxcsr](%[c])\n\t"                                                                      \
	".irp i,0,1,2,3,4,5,6,7\n\t"                                                                         \
	"fldt %c[o_st]+16*\\i(%[c])\n\t"                                                                     \
	".endr\n\t"

/* One turn: fxsave and compare control words, MXCSR and the eight 80-bit registers. */
#define CHECK_X87                                                                                            \
	"fxsave %c[o_cur](%[c])\n\t"                                                                         \
	CMP_FX(0, 5)  /* FCW, FSW, abridged FTW */                                                           \
	CMP_FX(24, 4) /* MXCSR */                                                                            \
	CMP_FX(32, 10) CMP_FX(48, 10) CMP_FX(64, 10) CMP_FX(80, 10)                                          \
	CMP_FX(96, 10) CMP_FX(112, 10) CMP_FX(128, 10) CMP_FX(144, 10)

#define CHECK_VEC                                                                                            \
	"lea %c[o_vcur](%[c]), %%rsi\n\t"                                                                    \
	"lea %c[o_vinit](%[c]), %%rdi\n\t"                                                                   \
	"mov $512, %%ecx\n\t"                                                                                \
	"repe cmpsb\n\t"                                                                                     \
	"jne 9f\n\t"

#define LOOP_END                                                                                             \
	"incq %c[o_turns](%[c])\n\t"                                                                         \
	"cmpl $0, %[stop]\n\t"                                                                               \
	"je 1b\n\t"                                                                                          \
	"xor %%eax, %%eax\n\t"                                                                               \
	"jmp 7f\n"                                                                                           \
	"8:\tmov $1, %%eax\n\t"                                                                              \
	"jmp 7f\n"                                                                                           \
	"9:\tmov $2, %%eax\n"                                                                                \
	"7:\tfninit\n\t"                                                                                     \
	"ldmxcsr %c[o_mxcsr_saved](%[c])\n\t"

/* Returns 0 when the loop ended on wl_stop, 1 on an x87/MXCSR difference, 2 on a vector difference. */
static int spin_avx(void)
{
	int r;

	__asm__ volatile(LOAD_X87 ".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n\t"
				  "vmovdqu %c[o_vinit]+32*\\i(%[c]), %%ymm\\i\n\t"
				  ".endr\n\t"
				  "fxsave %c[o_ref](%[c])\n"
				  "1:\t" CHECK_X87 ".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n\t"
				  "vmovdqu %%ymm\\i, %c[o_vcur]+32*\\i(%[c])\n\t"
				  ".endr\n\t" CHECK_VEC LOOP_END "vzeroupper\n\t"
			 : "=&a"(r)
			 : OPS
			 : CLOBBERS);
	return r;
}

static int spin_sse(void)
{
	int r;

	__asm__ volatile(LOAD_X87 ".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n\t"
				  "movdqu %c[o_vinit]+32*\\i(%[c]), %%xmm\\i\n\t"
				  ".endr\n\t"
				  "fxsave %c[o_ref](%[c])\n"
				  "1:\t" CHECK_X87 ".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n\t"
				  "movdqu %%xmm\\i, %c[o_vcur]+32*\\i(%[c])\n\t"
				  ".endr\n\t" CHECK_VEC LOOP_END
			 : "=&a"(r)
			 : OPS
			 : CLOBBERS);
	return r;
}

static void report_vectors(int avx)
{
	for (int i = 0; i < 16; i++) {
		const unsigned char *want = ctx.vinit + 32 * i, *got = ctx.vcur + 32 * i;

		if (memcmp(want, got, 16) != 0)
			wl_fail("xmm%d differs", i);
		if (avx && memcmp(want + 16, got + 16, 16) != 0)
			wl_fail("upper half of ymm%d differs", i);
	}
}

static void report_x87(const unsigned char *fx, const char *which)
{
	uint16_t fcw, fsw;
	uint32_t mxcsr;

	memcpy(&fcw, fx, 2);
	memcpy(&fsw, fx + 2, 2);
	memcpy(&mxcsr, fx + 24, 4);
	WL_CHECK(fcw == ctx.fcw, "%s: x87 control word %#x, expected %#x", which, fcw, ctx.fcw);
	WL_CHECK(mxcsr == ctx.mxcsr, "%s: MXCSR %#x, expected %#x", which, mxcsr, ctx.mxcsr);
	WL_CHECK((fsw & 0x38ff) == 0, "%s: x87 status word %#x (TOP or exception bits set)", which, fsw);
	WL_CHECK(fx[4] == 0xff, "%s: x87 tag word %#x, expected all valid", which, fx[4]);
	for (int i = 0; i < 8; i++)
		WL_CHECK(memcmp(fx + 32 + 16 * i, &ctx.st[7 - i], 10) == 0, "%s: st(%d) differs", which, i);
}

int main(int argc, char **argv)
{
	int avx, r;
	uint32_t mxcsr_mask;

	wl_init(argc, argv);
	avx = have_avx() && !(argc > 2 && strcmp(argv[2], "sse") == 0);

	/* find which MXCSR bits this CPU accepts */
	__asm__ volatile("fxsave %0" : "=m"(ctx.ref));
	memcpy(&mxcsr_mask, ctx.ref + 28, 4);
	memcpy(&ctx.mxcsr_saved, ctx.ref + 24, 4);
	if (mxcsr_mask == 0)
		mxcsr_mask = 0xffbf; /* the documented default: no DAZ */
	ctx.mxcsr = MXCSR_CUSTOM & mxcsr_mask;
	ctx.fcw = FCW_CUSTOM;

	ctx.st[0] = 1.0L;
	ctx.st[1] = 3.14159265358979323846264338327950288L;
	ctx.st[2] = -2.5e-300L;
	ctx.st[3] = 1.0e4000L; /* only an 80-bit register holds this */
	ctx.st[4] = -0.0L;
	ctx.st[5] = 123456789012345678.0L;
	ctx.st[6] = 1.0L / 3.0L;
	ctx.st[7] = -7.25L;
	for (int i = 0; i < 512; i++)
		ctx.vinit[i] = (unsigned char)(i * 29 + 11 + (i >> 5));
	memcpy(ctx.vcur, ctx.vinit, sizeof(ctx.vcur)); /* the sse path stores low halves only */
	wl_log("AVX %s, MXCSR %#x, FCW %#x", avx ? "used" : "not used", ctx.mxcsr, ctx.fcw);

	wl_ready();
	r = avx ? spin_avx() : spin_sse();

	wl_log("%llu turns", (unsigned long long)ctx.turns);
	report_x87(ctx.ref, "after loading");
	if (r == 1)
		report_x87(ctx.cur, "in the loop");
	if (r == 2)
		report_vectors(avx);
	WL_CHECK(r == 0, "the loop found its registers changed");
	WL_CHECK(ctx.turns > 0, "the loop never ran");
	wl_wait();
	wl_finish();
}
