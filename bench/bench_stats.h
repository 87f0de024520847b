/* bench_stats.h — what the latency benchmarks share: a monotonic clock in milliseconds and
 * one line of percentiles ("WHAT WHO n=N p50_ms=… p99_ms=… max_ms=…", sorted in place). */
#ifndef INE_BENCH_STATS_H
#define INE_BENCH_STATS_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline int bench__cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static inline void bench_report(const char *what, const char *who, double *v, size_t n)
{
    if (!n) return;
    qsort(v, n, sizeof *v, bench__cmp_double);
    printf("%s %s n=%zu p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n", what, who, n, v[n / 2], v[(size_t)(n * 0.99)], v[n - 1]);
}

#endif
