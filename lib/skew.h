/* skew.h — clock offsets between nodes, as the transports measure them on control-plane
 * heartbeats and ine-alerting reads them (the node_clock_skew alert). Each transport writes
 * run/clock-<node>.txt in its data dir (replaced atomically, every heartbeat round): one line
 * per peer, "<observer> <peer> <offset_ms> <measured_at_unix>", where offset_ms is how far the
 * peer's clock is ahead of the observer's (NTP's estimate: the peer's time in its answer minus
 * the midpoint of our send and receive times). Measurements, not history: never in the log. */
#ifndef INE_SKEW_H
#define INE_SKEW_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t observer, node;
    int64_t offset_ms;   /* node's clock minus observer's */
    int64_t at;          /* unix seconds of the measurement (observer's clock) */
} skew_entry;

/* Replace run_dir/clock-<observer>.txt with these entries (0600). */
int skew_write(const char *run_dir, uint32_t observer, const skew_entry *e, size_t n) __attribute__((warn_unused_result));

/* Every entry of run_dir/clock-*.txt measured at or after not_before; *out malloc'd (NULL
 * when *n is 0). Lines that do not parse are skipped (a file being replaced is never torn). */
int skew_read(const char *run_dir, int64_t not_before, skew_entry **out, size_t *n) __attribute__((warn_unused_result));

#endif
