/* clock.h — the suite's notion of "now".
 *
 * Every timestamp the suite writes or compares goes through ine_clock_now_us(), so time can
 * be moved: in-process by tests (ine_clock_set_offset), and for whole processes by running the
 * binary under libfaketime (FAKETIME="+30d", see docs/ARCHITECTURE.md), which OpenSSL's
 * certificate validity checks then see as well. */
#ifndef INE_CLOCK_H
#define INE_CLOCK_H

#include <stdint.h>

#define INE_USEC_PER_SEC 1000000LL
#define INE_SEC_PER_DAY 86400LL

/* Wall-clock microseconds since the epoch, plus the test offset. */
int64_t ine_clock_now_us(void);
/* The same in seconds. */
int64_t ine_clock_now(void);

/* Shift this process's clock by `offset_us` (tests only; 0 restores real time). */
void ine_clock_set_offset(int64_t offset_us);
int64_t ine_clock_offset(void);

/* Monotonic milliseconds, for timeouts (never moved). */
int64_t ine_clock_mono_ms(void);

/* Format `us` as RFC 3339 UTC with seconds ("2026-11-22T10:49:33Z") into buf (>= 21 bytes). */
char *ine_clock_fmt(int64_t us, char *buf, unsigned len);

/* Parse "2026-11-22T10:49:33Z", "2026-11-22" or "@<unix seconds>" into microseconds. */
int ine_clock_parse(const char *s, int64_t *out_us);

#endif
