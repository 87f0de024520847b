/* logline.c — stderr log lines (supervisord collects them). One write(2) per line so lines
 * from concurrent processes never interleave mid-line. */
#include "logline.h"
#include "clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char logline__service[32] = "ine";
static logline_level logline__min = LOGLINE_INFO;

void logline_init(const char *service)
{
    const char *lv = getenv("INE_LOG_LEVEL");
    snprintf(logline__service, sizeof logline__service, "%s", service);
    if (lv) {
        if (!strcmp(lv, "debug")) logline__min = LOGLINE_DEBUG;
        else if (!strcmp(lv, "warn")) logline__min = LOGLINE_WARN;
        else if (!strcmp(lv, "error")) logline__min = LOGLINE_ERROR;
        else logline__min = LOGLINE_INFO;
    }
}

void logline_set_level(logline_level min) { logline__min = min; }

void logline(logline_level lvl, uint64_t seq, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char line[1024], ts[32];
    size_t off;
    va_list ap;
    if (lvl < logline__min) return;
    ine_clock_fmt(ine_clock_now_us(), ts, sizeof ts);
    off = (size_t)snprintf(line, sizeof line, "%s %s %s", ts, names[lvl], logline__service);
    if (seq && off < sizeof line) off += (size_t)snprintf(line + off, sizeof line - off, " seq=%llu", (unsigned long long)seq);
    if (off < sizeof line) off += (size_t)snprintf(line + off, sizeof line - off, " ");
    va_start(ap, fmt);
    if (off < sizeof line) off += (size_t)vsnprintf(line + off, sizeof line - off, fmt, ap);
    va_end(ap);
    if (off >= sizeof line - 1) off = sizeof line - 2;
    line[off++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, off);
    (void)w;
}
