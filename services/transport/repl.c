/* repl.c — the master's side of log replication: a follower opens a control-plane stream
 * with `replicate` in its header; after the checks below we send it every record from the seq
 * it asked for, then each new one as our follower of the log applies it, with a keepalive when
 * nothing happens. Records go out exactly as stored; the follower re-verifies the chain.
 * Only a node whose log is authoritative serves this (a follower refuses: it would hand out a
 * replica that may lag). The follower's side is lib/repl.c. */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "logline.h"
#include "repl.h"
#include "transport.h"

#define TP_REPL_BUF (256 * 1024)   /* refilled when drained; a larger record gets its own */

struct tp_repl {
    uint64_t next;                 /* the next seq to queue */
    uint8_t *buf;
    size_t cap, start, end;
    int64_t last_sent_ms;
};

void tp_repl_free(tp_conn *c)
{
    if (!c->repl) return;
    free(c->repl->buf);
    free(c->repl);
    c->repl = NULL;
}

/* Whether the follower's head (from - 1, hash) is a prefix of our log; why says what is not. */
static int tp__repl_check(tp_t *tp, uint64_t from, const ProtobufCBinaryData *prev, uint64_t *head, char *why, size_t len)
{
    uint8_t hash[EVLOG_HASH_LEN], *raw = NULL;
    size_t rlen = 0;
    if (evlog_last_seq(tp->log, head) < 0) return snprintf(why, len, "cannot read the log: %s", ine_err_msg()), -1;
    if (from < 1) return snprintf(why, len, "replication starts at seq 1 at the earliest"), -1;
    if (from - 1 > *head)
        return snprintf(why, len, "your log goes to seq %llu, past this node's head %llu: it is not this cluster's log",
                        (unsigned long long)(from - 1), (unsigned long long)*head), -1;
    if (from == 1) {
        memset(hash, 0, sizeof hash);
    } else {
        if (evlog_read_raw(tp->log, from - 1, &raw, &rlen) < 0) return snprintf(why, len, "cannot read seq %llu", (unsigned long long)(from - 1)), -1;
        evlog_hash(raw, rlen, hash);
        free(raw);
    }
    if (prev->len != EVLOG_HASH_LEN || memcmp(prev->data, hash, EVLOG_HASH_LEN))
        return snprintf(why, len, "your log differs from this node's at seq %llu (it diverged: rebuild the follower)",
                        (unsigned long long)(from - 1)), -1;
    return 0;
}

/* Queue records into the (drained) buffer while they fit; a record larger than the buffer
 * gets one of its size. */
static int tp__repl_fill(tp_conn *c)
{
    tp_repl *r = c->repl;
    uint64_t last = 0;
    if (evlog_last_seq(c->tp->log, &last) < 0) return -1;
    r->start = r->end = 0;
    while (r->next <= last && r->end < TP_REPL_BUF / 2) {
        uint8_t *raw = NULL;
        size_t len = 0, need;
        if (evlog_read_raw(c->tp->log, r->next, &raw, &len) < 0) return -1;
        need = REPL_REC_HDR + len;
        if (r->end + need > r->cap) {
            uint8_t *nb = r->end ? NULL : realloc(r->buf, need);
            if (!nb) {
                free(raw);
                if (r->end) break; /* send what is queued first */
                return -1;
            }
            r->buf = nb;
            r->cap = need;
        }
        repl_rec_header(r->buf + r->end, r->next, (uint32_t)len);
        memcpy(r->buf + r->end + REPL_REC_HDR, raw, len);
        r->end += need;
        free(raw);
        r->next++;
    }
    return 0;
}

/* Write what is queued, refill, repeat until the socket is full or we are caught up. */
static void tp__repl_pump(tp_conn *c)
{
    tp_repl *r = c->repl;
    for (;;) {
        if (r->start == r->end && tp__repl_fill(c) < 0) return tp_conn_close(c, "cannot read the log for a follower");
        if (r->start == r->end) break;
        ssize_t n = tp_conn_write(c, r->buf + r->start, r->end - r->start);
        if (n < 0) return tp_conn_close(c, "follower gone");
        if (n == 0) break;
        r->start += (size_t)n;
        r->last_sent_ms = ine_clock_mono_ms();
    }
    tp_conn_want(c, 1, r->start != r->end || c->want_read_for_write);
}

void tp_repl_start(tp_conn *c, const Ine__V1__StreamHeader *h)
{
    tp_t *tp = c->tp;
    char why[200];
    uint64_t head = 0;
    Ine__V1__StreamAccept a = INE__V1__STREAM_ACCEPT__INIT;
    if (tp->replica) {
        snprintf(why, sizeof why, "node %u follows a replica of the log itself; replicate from the master", tp->node_uid);
        return tp_stream_refuse(c, why);
    }
    if (tp__repl_check(tp, h->replicate_from_seq, &h->replicate_prev_sha256, &head, why, sizeof why) < 0) return tp_stream_refuse(c, why);
    if (!(c->repl = calloc(1, sizeof *c->repl)) || !(c->repl->buf = malloc(TP_REPL_BUF))) {
        tp_repl_free(c);
        return tp_stream_refuse(c, "out of memory");
    }
    c->repl->cap = TP_REPL_BUF;
    c->repl->next = h->replicate_from_seq;
    c->repl->last_sent_ms = ine_clock_mono_ms();
    c->state = TP_S_REPL;
    c->kind = TP_K_REPL_OUT;
    tp_conn_deadline(c, 0);
    tp->accepted++;
    a.ok = 1;
    a.reason = "";
    a.head_seq = head;
    tp_send_frame(c, &a.base);
    if (tp_flush(c) < 0) return;
    logline(LOGLINE_INFO, head, "node %u replicates the log from seq %llu (head %llu)", c->peer_node,
            (unsigned long long)h->replicate_from_seq, (unsigned long long)head);
    tp__repl_pump(c);
}

void tp_repl_event(tp_conn *c, int readable, int writable)
{
    if (readable) {
        /* A follower sends nothing after its header: drain, and notice its end. */
        uint8_t sink[256];
        ssize_t n;
        while ((n = tp_conn_read(c, sink, sizeof sink)) > 0) {
        }
        if (n < 0) {
            logline(LOGLINE_INFO, c->repl->next - 1, "node %u stopped replicating", c->peer_node);
            return tp_conn_close(c, "follower closed");
        }
    }
    if (writable || readable) tp__repl_pump(c);
}

void tp_repl_tick(tp_t *tp)
{
    int64_t now = ine_clock_mono_ms();
    tp_conn *c = tp->conns, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->state != TP_S_REPL) continue;
        tp_repl *r = c->repl;
        if (r->start == r->end && now - r->last_sent_ms >= REPL_KEEPALIVE_MS) {
            if (r->end + REPL_REC_HDR > r->cap) r->start = r->end = 0;
            repl_rec_header(r->buf + r->end, 0, 0);
            r->end += REPL_REC_HDR;
        }
        tp__repl_pump(c);
    }
}
