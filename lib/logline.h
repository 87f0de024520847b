/* logline.h — one line per event to stderr: time, level, service, the log seq the action
 * relates to, and a sentence. Callers must never pass key material or passwords. */
#ifndef INE_LOGLINE_H
#define INE_LOGLINE_H

#include <stdint.h>

typedef enum { LOGLINE_DEBUG, LOGLINE_INFO, LOGLINE_WARN, LOGLINE_ERROR } logline_level;

/* The service name printed on every line ("ine-ca"); set once at start. */
void logline_init(const char *service);
/* Lines below `min` are dropped (INE_LOG_LEVEL=debug|info|warn|error sets it at init). */
void logline_set_level(logline_level min);
/* seq 0 means "no particular event". */
void logline(logline_level lvl, uint64_t seq, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
