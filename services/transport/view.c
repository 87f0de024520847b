/* view.c — this node's view of the log, as every role reads it: the node itself, its peers,
 * waiting until the view reaches a seq another node acted on, and the one rule that admits
 * or refuses a data-plane stream (plain or mux alike). The bottom of the transport: it calls
 * nothing in it. */
#include "transport.h"
#include "err.h"
#include "logline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const proj_node *tp_self(tp_t *tp)
{
    const proj_node *n = proj_node_find(&tp->st, tp->node_uid);
    return n && !n->removed ? n : NULL;
}

tp_peer *tp_peer_find(tp_t *tp, uint32_t node)
{
    for (size_t i = 0; i < tp->n_peers; i++)
        if (tp->peers[i].node_uid == node) return &tp->peers[i];
    return NULL;
}

void tp_view_wait(tp_t *tp, uint64_t seq)
{
    if (seq <= tp->st.applied_seq) return;
    if (follow_wait_seq(tp->follow, seq, TP_VIEW_WAIT_MS) < 0)
        logline(LOGLINE_WARN, tp->st.applied_seq, "a peer acted on seq %llu; this node's log is at %llu: %s",
                (unsigned long long)seq, (unsigned long long)tp->st.applied_seq, ine_err_msg());
    if (tp->kick) event_active(tp->kick, 0, 0);
}

int tp_split_hostport(const char *hp, char *host, size_t hlen, int *port)
{
    const char *colon = strrchr(hp, ':');
    size_t n;
    if (!colon) return -1;
    n = (size_t)(colon - hp);
    if (hp[0] == '[' && n >= 2 && hp[n - 1] == ']') hp++, n -= 2;
    if (n >= hlen) return -1;
    memcpy(host, hp, n);
    host[n] = 0;
    *port = atoi(colon + 1);
    return 0;
}

int tp_admit_data_stream(tp_t *tp, uint32_t db_uid, uint64_t log_seq, char *host, size_t hlen, int *port, char *why,
                         size_t wlen)
{
    const proj_node *self;
    const proj_db *d;
    /* Decide on a view at least as new as the sender's. */
    tp_view_wait(tp, log_seq);
    self = tp_self(tp);
    d = proj_db_find(&tp->st, db_uid);
    if (!d || d->deleted) snprintf(why, wlen, "unknown database %u", db_uid);
    else if (!self || d->shard_node_uid != self->uid) snprintf(why, wlen, "database %u has no shard on this node", db_uid);
    /* Disabled here, but the sender opened it before it could know: an encrypted stream is
     * never weaker than the plaintext one it will use, and it closes this one once it learns. */
    else if (!d->data_internode_encryption && (!log_seq || log_seq >= d->updated_seq))
        snprintf(why, wlen, "database %u has data_internode_encryption disabled", db_uid);
    else if (tp_split_hostport(d->shard_address, host, hlen, port) < 0) snprintf(why, wlen, "bad shard address");
    else if (tp->n_conns >= tp->max_conns) snprintf(why, wlen, "connection limit reached");
    else return 0;
    return -1;
}
