/* clock.c — wall clock with a test offset, monotonic clock, RFC 3339 formatting/parsing. */
#include "clock.h"
#include "err.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static _Atomic int64_t clock__offset_us;

int64_t ine_clock_now_us(void)
{
    struct timespec ts;
    /* clock_gettime, not a raw syscall: libfaketime intercepts it for whole-process tests. */
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * INE_USEC_PER_SEC + ts.tv_nsec / 1000 + atomic_load(&clock__offset_us);
}

int64_t ine_clock_now(void) { return ine_clock_now_us() / INE_USEC_PER_SEC; }

void ine_clock_set_offset(int64_t offset_us) { atomic_store(&clock__offset_us, offset_us); }

int64_t ine_clock_offset(void) { return atomic_load(&clock__offset_us); }

int64_t ine_clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *ine_clock_fmt(int64_t us, char *buf, unsigned len)
{
    time_t t = (time_t)(us / INE_USEC_PER_SEC);
    struct tm tm;
    if (us < 0 && us % INE_USEC_PER_SEC) t -= 1;
    if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, len, "@%lld", (long long)t);
    return buf;
}

int ine_clock_parse(const char *s, int64_t *out_us)
{
    struct tm tm;
    const char *end;
    if (!s || !*s) return ine_err(INE_EINVAL, "empty time");
    if (s[0] == '@') {
        char *e;
        long long v = strtoll(s + 1, &e, 10);
        if (e == s + 1 || *e) return ine_err(INE_EINVAL, "bad time '%s': expected @<unix seconds>", s);
        *out_us = v * INE_USEC_PER_SEC;
        return INE_OK;
    }
    memset(&tm, 0, sizeof tm);
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end && (*end == 'Z' || *end == 'z') && end[1] == '\0') goto ok;
    memset(&tm, 0, sizeof tm);
    end = strptime(s, "%Y-%m-%d", &tm);
    if (end && *end == '\0') goto ok;
    return ine_err(INE_EINVAL, "bad time '%s': expected YYYY-MM-DDTHH:MM:SSZ, YYYY-MM-DD or @<unix seconds>", s);
ok:
    *out_us = (int64_t)timegm(&tm) * INE_USEC_PER_SEC;
    return INE_OK;
}
