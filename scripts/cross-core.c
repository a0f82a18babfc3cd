/* What moving data between this machine's cores costs, the yardstick of
 * `--threads` (README "Performance", issue 18):
 *
 *   gcc -O2 -pthread scripts/cross-core.c -o /tmp/cross-core && /tmp/cross-core
 *
 * 1. A cache line bounced between a thread pinned to core 0 and one pinned
 *    to core 1: the round trip, in ns.
 * 2. 64 KiB chunks written on core 0 and read on core 1 through a ring of 8
 *    (how a batch of events or segments crosses), in GB/s; then the same
 *    writes and reads on one core.
 * Needs two cores. Not part of the build: a measurement, like the benches. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUNDS 2000000L
#define CHUNK (64 * 1024)
#define RING 8
#define CHUNKS 20000L

static _Atomic long flag __attribute__((aligned(64)));
static _Atomic long produced __attribute__((aligned(64)));
static _Atomic long consumed __attribute__((aligned(64)));
static char *ring;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void pin(int core) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
        fprintf(stderr, "cannot pin to core %d (two cores needed)\n", core);
        exit(2);
    }
}

static void *pong(void *arg) {
    (void)arg;
    pin(1);
    for (long i = 0; i < ROUNDS; i++) {
        while (atomic_load_explicit(&flag, memory_order_acquire) != 2 * i + 1)
            ;
        atomic_store_explicit(&flag, 2 * i + 2, memory_order_release);
    }
    return NULL;
}

static long touch(const char *p) {
    long sum = 0;
    for (int i = 0; i < CHUNK; i += 64)
        sum += p[i];
    return sum;
}

static void *reader(void *arg) {
    (void)arg;
    pin(1);
    long sum = 0;
    for (long c = 0; c < CHUNKS; c++) {
        while (atomic_load_explicit(&produced, memory_order_acquire) <= c)
            ;
        sum += touch(ring + (c % RING) * CHUNK);
        atomic_store_explicit(&consumed, c + 1, memory_order_release);
    }
    return (void *)sum;
}

int main(void) {
    pthread_t t;
    pin(0);

    pthread_create(&t, NULL, pong, NULL);
    double start = now();
    for (long i = 0; i < ROUNDS; i++) {
        atomic_store_explicit(&flag, 2 * i + 1, memory_order_release);
        while (atomic_load_explicit(&flag, memory_order_acquire) != 2 * i + 2)
            ;
    }
    double end = now();
    pthread_join(t, NULL);
    printf("cache line round trip, core 0 <-> core 1: %.0f ns\n",
           (end - start) / ROUNDS * 1e9);

    ring = aligned_alloc(64, (size_t)CHUNK * RING);
    memset(ring, 0, (size_t)CHUNK * RING);
    pthread_create(&t, NULL, reader, NULL);
    start = now();
    for (long c = 0; c < CHUNKS; c++) {
        while (c - atomic_load_explicit(&consumed, memory_order_acquire) >= RING)
            ;
        memset(ring + (c % RING) * CHUNK, (int)c, CHUNK);
        atomic_store_explicit(&produced, c + 1, memory_order_release);
    }
    pthread_join(t, NULL);
    end = now();
    double bytes = (double)CHUNKS * CHUNK;
    printf("64 KiB chunks written on core 0, read on core 1: %.1f GB/s\n",
           bytes / (end - start) / 1e9);

    long sum = 0;
    start = now();
    for (long c = 0; c < CHUNKS; c++) {
        char *p = ring + (c % RING) * CHUNK;
        memset(p, (int)c, CHUNK);
        sum += touch(p);
    }
    end = now();
    printf("the same, written and read on core 0: %.1f GB/s%s\n",
           bytes / (end - start) / 1e9, sum == 42 ? " " : "");
    return 0;
}
