/* commit_int.h — what lib/commit.c shares with its backends (commit_etcd.c) and the layer
 * below both (commit_conf.c): the handle, the backend ops table, the mirror notes. Not for
 * use outside lib/commit*.c. */
#ifndef INE_COMMIT_INT_H
#define INE_COMMIT_INT_H

#include "commit.h"

/* One backend: where an append commits. `append` gets events whose envelope (producer, actor)
 * is already stamped and must stamp seq, link and request id itself (evlog_encode or
 * evlog_append do). It sets *wait_seq to the seq this node's log must hold before the caller
 * reads it back (0: nothing to wait for): the front door does the waiting. */
typedef struct {
    const char *name;
    int (*append)(commit_t *c, evlog_event **evs, size_t n, const commit_opts *o, uint64_t *first_seq, uint64_t *wait_seq);
    void (*close)(commit_t *c);
} commit__ops;

struct commit {
    const commit__ops *ops;
    char *producer;
    evlog_t *log;
    follow_pub *pub;
    follow_t *follow;      /* woken by the mirror's hints while waiting for it; may be NULL */
    void *notes;           /* ZeroMQ PUSH to the local mirror: what we just committed (may be NULL) */
    void *backend;         /* the backend's own state */
};

extern const commit__ops commit__local_ops;
extern const commit__ops commit__etcd_ops;

/* Connect c->notes to the mirror's inbox in run_dir (best effort: NULL when it cannot). */
void commit__notes_open(commit_t *c, void *zctx, const char *run_dir);
/* Tell the local ine-mirror the records just committed at first_seq.. (their exact bytes), so
 * it applies them without waiting for etcd's watch; best effort, never blocks. */
void commit__note(commit_t *c, uint64_t first_seq, uint8_t *const *bufs, const size_t *lens, size_t n);

/* Open the etcd backend on c (sets c->ops and c->backend). */
int commit__etcd_open(commit_t *c, const commit_etcd_conf *conf);

#endif
