/* testutil.h — helpers shared by the Criterion tests: a fresh temp dir per test, running the
 * real binaries and capturing their output, small event builders. */
#ifndef INE_TESTUTIL_H
#define INE_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "evlog.h"

/* Create a fresh 0700 temp dir; the path is owned by the caller (free + tu_rmrf). */
char *tu_tmpdir(void);
/* rm -rf, for the temp dir at the end of a test. */
void tu_rmrf(const char *path);
/* path joined: returns a static-ish malloc'd string (caller frees). */
char *tu_path(const char *dir, const char *name);

/* Run argv (argv[0] a path) with optional stdin text; captures stdout and stderr (malloc'd,
 * NUL-terminated; pass NULL to discard). Returns the exit status, or 128+signal. */
int tu_run(char *const argv[], const char *stdin_text, char **out, char **err);
/* The same with extra environment entries ("K=V", NULL-terminated list, may be NULL). */
int tu_run_env(char *const argv[], char *const envadd[], const char *stdin_text, char **out, char **err);

/* Path of a built binary: INE_BIN_DIR "/" name (static buffer, valid until next call). */
const char *tu_bin(const char *name);

/* The environment entry that preloads libfaketime ("LD_PRELOAD=<path>"; the threaded
 * libfaketimeMT when `threaded`), or NULL if it is not installed. Static: valid until the next
 * call. Tests preload it themselves (this + FAKETIME=...) and never run
 * /usr/bin/faketime: that wrapper names a semaphore after its own pid and leaves it behind when
 * it is killed, so a later wrapper given the same pid fails ("sem_open: File exists"). */
const char *tu_faketime_preload(int threaded);

/* Read a whole file (malloc'd, NUL-terminated); NULL on error. */
char *tu_read_file(const char *path, size_t *len);
int tu_write_file(const char *path, const void *data, size_t len);

/* memmem for tests. */
int tu_contains(const void *hay, size_t hlen, const void *needle, size_t nlen);

/* A database-created event with the given uid and name (free with evlog_event_free-safe
 * tu_event_free). */
evlog_event *tu_ev_db_created(uint32_t uid, const char *name);
evlog_event *tu_ev_node_added(uint32_t uid, const char *addr);
void tu_event_free(evlog_event *ev);

/* Append a well-formed record of an event type this version does not know (as a newer
 * version would write: a body field number the schema lacks). Returns its seq, 0 on error. */
uint64_t tu_append_unknown(evlog_t *log, int64_t time_us);

#endif
