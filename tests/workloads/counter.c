/*
 * counter: memory of every kind (.data, .bss, small and large heap blocks,
 * stack) is rewritten by a busy loop; after the wait the contents must be
 * exactly what the final counter value implies, and the counter must have
 * gone on increasing.
 *
 * Iteration c (c = 1, 2, ...) stores value_at(buf, i, c) at index
 * i = c % len of every buffer, so the expected content of a buffer is a
 * function of the last counter value alone. A running checksum (the sum of
 * every word of every buffer) is kept up to date by the loop.
 */
#include "lib.h"

#include <stdlib.h>
#include <string.h>

#define NBUF 9

struct buf {
	const char *name;
	uint32_t *words;
	size_t len; /* in words */
};

static uint32_t data_words[4096] = { 1, 2, 3 }; /* .data, 16 KiB */
static uint32_t bss_words[64 * 1024];           /* .bss, 256 KiB */
static struct buf bufs[NBUF];

/* Three copies of the counter, each in a different kind of memory. */
static volatile uint64_t global_counter;
static volatile uint64_t *heap_counter;

static uint32_t value_at(unsigned b, size_t i, uint64_t c)
{
	uint64_t x = (c << 20) ^ ((uint64_t)b << 56) ^ i ^ 0x9e3779b97f4a7c15ull;

	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 29;
	return (uint32_t)x;
}

/* The counter value whose write is the last one at index i when the counter is c (0: initial fill). */
static uint64_t last_writer(size_t i, size_t len, uint64_t c)
{
	uint64_t back = (c + len - i % len) % len; /* c - back == i (mod len) */

	return back > c ? 0 : c - back;
}

static int copies_agree(uint64_t expected, uint64_t on_stack)
{
	if (global_counter == expected && *heap_counter == expected && on_stack == expected)
		return 1;
	wl_fail("counter copies differ: expected %llu, global %llu heap %llu stack %llu",
		(unsigned long long)expected, (unsigned long long)global_counter,
		(unsigned long long)*heap_counter, (unsigned long long)on_stack);
	return 0;
}

static uint64_t sum_all(void)
{
	uint64_t sum = 0;

	for (unsigned b = 0; b < NBUF; b++)
		for (size_t i = 0; i < bufs[b].len; i++)
			sum += bufs[b].words[i];
	return sum;
}

static void add_buf(unsigned b, const char *name, uint32_t *words, size_t bytes)
{
	if (words == NULL)
		wl_die("malloc %s (%zu bytes)", name, bytes);
	bufs[b].name = name;
	bufs[b].words = words;
	bufs[b].len = bytes / sizeof(uint32_t);
	for (size_t i = 0; i < bufs[b].len; i++)
		words[i] = value_at(b, i, 0);
}

int main(int argc, char **argv)
{
	uint32_t stack_words[8192]; /* 32 KiB */
	volatile uint64_t stack_counter = 0;
	uint64_t checksum, c, at_ready;
	unsigned b;

	wl_init(argc, argv);

	add_buf(0, "data", data_words, sizeof(data_words));
	add_buf(1, "bss", bss_words, sizeof(bss_words));
	add_buf(2, "stack", stack_words, sizeof(stack_words));
	add_buf(3, "heap-24", malloc(24), 24);
	add_buf(4, "heap-1000", malloc(1000), 1000);
	add_buf(5, "heap-64k", malloc(64 << 10), 64 << 10);
	add_buf(6, "heap-200k", malloc(200 << 10), 200 << 10); /* above M_MMAP_THRESHOLD: own mapping */
	add_buf(7, "heap-8m", malloc(8 << 20), 8 << 20);
	add_buf(8, "heap-12", malloc(12), 12);
	heap_counter = malloc(sizeof(*heap_counter));
	if (heap_counter == NULL)
		wl_die("malloc counter");
	*heap_counter = 0;
	checksum = sum_all();

	wl_ready();
	at_ready = global_counter;

	do { /* at least one turn after ready, however early SIGTERM comes */
		c = global_counter + 1;
		if (!copies_agree(c - 1, stack_counter))
			break;
		for (b = 0; b < NBUF; b++) {
			struct buf *p = &bufs[b];
			size_t i = c % p->len;
			uint32_t v = value_at(b, i, c);

			checksum += (uint64_t)v - p->words[i];
			p->words[i] = v;
		}
		/* c lives in a register meanwhile: compare it with memory again */
		if (!copies_agree(c - 1, stack_counter))
			break;
		global_counter = c;
		*heap_counter = c;
		stack_counter = c;
	} while (!wl_stop);

	wl_wait(); /* after a broken copy was seen, still wait for SIGTERM */
	if (wl_failures())
		wl_finish();
	c = global_counter;
	wl_log("counter %llu at ready, %llu at SIGTERM", (unsigned long long)at_ready, (unsigned long long)c);
	WL_CHECK(c > at_ready, "counter did not increase: %llu at ready, %llu at the end",
		 (unsigned long long)at_ready, (unsigned long long)c);
	WL_CHECK(*heap_counter == c && stack_counter == c, "counter copies differ: global %llu heap %llu stack %llu",
		 (unsigned long long)c, (unsigned long long)*heap_counter, (unsigned long long)stack_counter);
	WL_CHECK(checksum == sum_all(), "running checksum %llx, memory sums to %llx", (unsigned long long)checksum,
		 (unsigned long long)sum_all());
	for (b = 0; b < NBUF; b++) {
		struct buf *p = &bufs[b];
		size_t bad = 0, first = 0;

		for (size_t i = 0; i < p->len; i++) {
			if (p->words[i] != value_at(b, i, last_writer(i, p->len, c)) && bad++ == 0)
				first = i;
		}
		WL_CHECK(bad == 0, "%s: %zu of %zu words differ, first at index %zu", p->name, bad, p->len, first);
	}
	wl_finish();
}
