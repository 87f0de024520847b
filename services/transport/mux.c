/* mux.c — the multiplexed data plane. Every encrypted stream from this node to one peer rides
 * one TLS connection (a "mux"), opened on the first stream and kept while streams use it: a
 * new client costs no handshake (two RSA signatures saved) and an idle one no TLS state
 * (about 20 KB per side), and the small writes of many clients leave as one TLS record and
 * one system call per event-loop round (tp_mux_flush_all); bulk leaves in writes of up to
 * four records (tp_conn_coalesce).
 *
 * Frames (transport.proto, StreamHeader.mux): OPEN, ACCEPT, DATA, FIN, RESET, WINDOW, GOAWAY.
 * Each stream has a credit of TP_MUX_WINDOW bytes: a slow client stalls its own stream only,
 * never the connection, and a receiver buffers at most that much per stream. Stream ids grow
 * and are never reused on a connection, so a frame that crosses a RESET is dropped: bytes can
 * never reach another stream. A rotation (new contexts here, or a GOAWAY from the peer) makes
 * the mux drain: open streams go on, new ones open a new connection with the new certificate. */
#include "transport.h"
#include "err.h"
#include "logline.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

enum { MF_OPEN = 1, MF_ACCEPT, MF_DATA, MF_FIN, MF_RESET, MF_WINDOW, MF_GOAWAY };

#define MUX_HDR 8
#define MUX_DATA_MAX (64 * 1024)        /* one read of a local socket, one write of the other */
#define MUX_FRAME_MAX MUX_DATA_MAX      /* >= TP_FRAME_MAX: headers and accepts fit too */
#define MUX_RQ_CAP (256 * 1024)
#define MUX_RQ_ROOM (17 * 1024)         /* at least a TLS record's worth free before a read */
#define MUX_WQ_DATA (1024 * 1024)       /* queued frames past which streams stop reading */
#define MUX_WQ_MAX (16 * 1024 * 1024)   /* control frames may go beyond; past this the mux fails */
#define MUX_READ_BUDGET (512 * 1024)    /* per readable event: the other sockets get their turn */
/* A read shorter than asked and than this ends a round: the socket was empty, so the next read
 * would only say "would block" (two system calls in eight per request and node on a ping). A
 * bulk sender refills the socket while we read: there, reading on gathers more per write. */
#define MUX_SMALL_READ (16 * 1024)
#define MUX_ACK_AT (TP_MUX_WINDOW / 16)   /* credit returns in 256 KiB steps */
#define MUX_SID_LAST 0x7fffffffu

static void mux__stream_io(tp_conn *c, int readable, int writable);
static void mux__stream_idle(tp_conn *c) { tp_conn_close(c, "half-closed stream idle too long"); }
static void mux__unlink(tp_conn *c, const char *why);
static const tp_conn_ops mux__stream_ops = {"mux stream", mux__stream_io, mux__stream_idle, mux__unlink, 0};

static void mux__trunk_io(tp_conn *c, int readable, int writable);
static void mux__trunk_idle(tp_conn *c) { tp_conn_close(c, "no streams for a while"); }
static void mux__teardown(tp_conn *c, const char *why);
static const tp_conn_ops mux__trunk_out_ops = {"mux trunk", mux__trunk_io, mux__trunk_idle, mux__teardown, 0};
static const tp_conn_ops mux__trunk_in_ops = {"mux trunk (accepted)", mux__trunk_io, mux__trunk_idle, mux__teardown, 1};

static void mux__trunk_dialed(tp_conn *c, tp_dial_result r, const char *why);
static void mux__shard_dialed(tp_conn *c, tp_dial_result r, const char *err);

static void mux__put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t mux__get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static const char *mux__dir(const tp_mux *m) { return m->outgoing ? "to" : "from"; }

/* --- streams by id ----------------------------------------------------------------------------- */

static uint32_t mux__home(uint32_t sid, uint32_t cap) { return (sid * 2654435761u) & (cap - 1); }

static tp_conn *mux__find(const tp_mux *m, uint32_t sid)
{
    for (uint32_t i = m->cap ? mux__home(sid, m->cap) : 0; m->cap && m->slots[i]; i = (i + 1) & (m->cap - 1))
        if (m->slots[i]->ms.sid == sid) return m->slots[i];
    return NULL;
}

static void mux__place(tp_conn **slots, uint32_t cap, tp_conn *c)
{
    uint32_t i = mux__home(c->ms.sid, cap);
    while (slots[i]) i = (i + 1) & (cap - 1);
    slots[i] = c;
}

static int mux__insert(tp_mux *m, tp_conn *c)
{
    if ((m->count + 1) * 2 > m->cap) {
        uint32_t cap = m->cap ? m->cap * 2 : 16;
        tp_conn **ns = calloc(cap, sizeof *ns);
        if (!ns) return -1;
        for (uint32_t i = 0; i < m->cap; i++)
            if (m->slots[i]) mux__place(ns, cap, m->slots[i]);
        free(m->slots);
        m->slots = ns;
        m->cap = cap;
    }
    mux__place(m->slots, m->cap, c);
    m->count++;
    return 0;
}

static void mux__remove(tp_mux *m, const tp_conn *c)
{
    uint32_t mask = m->cap - 1, i;
    if (!m->cap) return;
    for (i = mux__home(c->ms.sid, m->cap); m->slots[i] != c; i = (i + 1) & mask)
        if (!m->slots[i]) return;
    m->slots[i] = NULL;
    m->count--;
    /* Backward shift: an entry further along the probe run moves into the hole when the hole
     * lies between its home and where it sits, so lookups never need tombstones. */
    for (uint32_t j = (i + 1) & mask; m->slots[j]; j = (j + 1) & mask) {
        uint32_t h = mux__home(m->slots[j]->ms.sid, m->cap);
        if (((j - h) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            m->slots[j] = NULL;
            i = j;
        }
    }
}

/* --- the write queue --------------------------------------------------------------------------- */

/* Room for n more bytes, with at most `limit` queued; NULL when there is none. */
static uint8_t *mux__reserve(tp_mux *m, size_t n, size_t limit)
{
    size_t used = m->wq_end - m->wq_start;
    if (used + n > limit) return NULL;
    if (m->wq_cap - m->wq_end < n && m->wq_start) {
        memmove(m->wq, m->wq + m->wq_start, used); /* SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER */
        m->wq_start = 0;
        m->wq_end = used;
    }
    if (m->wq_cap - m->wq_end < n) {
        size_t cap = m->wq_cap ? m->wq_cap : 64 * 1024;
        uint8_t *nq;
        while (cap - m->wq_end < n) cap *= 2;
        if (!(nq = realloc(m->wq, cap))) return NULL;
        m->wq = nq;
        m->wq_cap = cap;
    }
    return m->wq + m->wq_end;
}

static void mux__hdr(uint8_t *p, int type, size_t len, uint32_t sid)
{
    p[0] = (uint8_t)type;
    p[1] = (uint8_t)(len >> 16);
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
    mux__put32(p + 4, sid);
}

/* A mux that cannot queue a control frame is closed after this round (tp_mux_flush_all):
 * closing it here would free streams the caller still holds. */
static void mux__break(tp_mux *m, const char *why)
{
    if (!m->broken) m->broken = why;
}

static void mux__frame(tp_mux *m, int type, uint32_t sid, const uint8_t *payload, size_t len)
{
    uint8_t *p = mux__reserve(m, MUX_HDR + len, MUX_WQ_MAX);
    if (!p) return mux__break(m, "the peer does not read its frames");
    mux__hdr(p, type, len, sid);
    if (len) memcpy(p + MUX_HDR, payload, len);
    m->wq_end += MUX_HDR + len;
    m->dirty = 1;
}

static void mux__frame_msg(tp_mux *m, int type, uint32_t sid, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *p = n <= TP_FRAME_MAX ? mux__reserve(m, MUX_HDR + n, MUX_WQ_MAX) : NULL;
    if (!p) return mux__break(m, "the peer does not read its frames");
    mux__hdr(p, type, n, sid);
    protobuf_c_message_pack(msg, p + MUX_HDR);
    m->wq_end += MUX_HDR + n;
    m->dirty = 1;
}

static void mux__accept_frame(tp_mux *m, uint32_t sid, const char *refused)
{
    Ine__V1__StreamAccept a = INE__V1__STREAM_ACCEPT__INIT;
    a.ok = refused == NULL;
    a.reason = (char *)(refused ? refused : "");
    mux__frame_msg(m, MF_ACCEPT, sid, &a.base);
}

/* --- a stream's local socket ------------------------------------------------------------------- */

static void mux__interest(tp_conn *c)
{
    if (c->ops != &mux__stream_ops) return;
    tp_conn_want(c, !c->flow.rd_eof && !c->flow.read_blocked && c->ms.credit > 0, c->ms.rx_end > c->ms.rx_start);
}

/* n bytes reached the local socket: the peer may send that much more. */
static void mux__acked(tp_conn *c, size_t n)
{
    uint8_t inc[4];
    c->ms.unacked += (uint32_t)n;
    if (c->ms.unacked < MUX_ACK_AT) return;
    mux__put32(inc, c->ms.unacked);
    mux__frame(c->ms.mux, MF_WINDOW, c->ms.sid, inc, 4);
    c->ms.unacked = 0;
}

/* Pass an EOF on once delivered; close when both directions ended. -1 if c was closed. */
static int mux__check(tp_conn *c)
{
    if (c->ms.fin_in && !c->flow.wr_shut && c->ms.rx_end == c->ms.rx_start && c->ops == &mux__stream_ops) {
        shutdown(c->fd, SHUT_WR);
        c->flow.wr_shut = 1;
    }
    if (c->flow.rd_eof && c->flow.wr_shut) {
        c->ms.quiet = 1; /* both FINs crossed: the peer closes its end by itself */
        tp_conn_close(c, "end of stream");
        return -1;
    }
    if ((c->flow.rd_eof || c->flow.wr_shut) && !c->flow.lingering) {
        c->flow.lingering = 1;
        tp_conn_deadline(c, TP_LINGER_MS);
    }
    mux__interest(c);
    return 0;
}

static int mux__write_local(tp_conn *c)
{
    while (c->ms.rx_end > c->ms.rx_start) {
        ssize_t n = send(c->fd, c->ms.rx + c->ms.rx_start, c->ms.rx_end - c->ms.rx_start, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
            tp_conn_close(c, "write failed");
            return -1;
        }
        c->ms.rx_start += (size_t)n;
        mux__acked(c, (size_t)n);
    }
    if (c->ms.rx_start == c->ms.rx_end) {
        free(c->ms.rx);
        c->ms.rx = NULL;
        c->ms.rx_start = c->ms.rx_end = c->ms.rx_cap = 0;
    }
    if (c->flow.lingering) tp_conn_deadline(c, TP_LINGER_MS);
    return mux__check(c);
}

/* DATA for c: straight to its socket when nothing waits before it, the rest buffered.
 * -1: the peer overran its credit (a protocol error: the caller closes the mux). */
static int mux__deliver(tp_conn *c, const uint8_t *p, size_t n)
{
    size_t held = c->ms.rx_end - c->ms.rx_start;
    if (held + n > TP_MUX_WINDOW) return -1;
    if (!held && c->ops == &mux__stream_ops) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            tp_conn_close(c, "write failed");
            return 0;
        }
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            mux__acked(c, (size_t)w);
        }
    }
    if (n) {
        if (c->ms.rx_cap - c->ms.rx_end < n && c->ms.rx_start) {
            memmove(c->ms.rx, c->ms.rx + c->ms.rx_start, held);
            c->ms.rx_start = 0;
            c->ms.rx_end = held;
        }
        if (c->ms.rx_cap - c->ms.rx_end < n) {
            size_t cap = c->ms.rx_cap ? c->ms.rx_cap : 16384;
            uint8_t *nb;
            while (cap - c->ms.rx_end < n) cap *= 2;
            if (!(nb = realloc(c->ms.rx, cap))) {
                tp_conn_close(c, "out of memory");
                return 0;
            }
            c->ms.rx = nb;
            c->ms.rx_cap = cap;
        }
        memcpy(c->ms.rx + c->ms.rx_end, p, n);
        c->ms.rx_end += n;
    }
    if (c->flow.lingering) tp_conn_deadline(c, TP_LINGER_MS);
    mux__interest(c);
    return 0;
}

/* Read the local socket into DATA frames, as far as credit and the queue allow. */
static void mux__read_local(tp_conn *c)
{
    tp_mux *m = c->ms.mux;
    /* Up to 1 MiB per event: bulk leaves in large writes (smaller rounds measured slower). */
    for (int i = 0; i < 16 && !c->flow.rd_eof; i++) {
        size_t want = c->ms.credit < MUX_DATA_MAX ? c->ms.credit : MUX_DATA_MAX;
        uint8_t *p;
        ssize_t n;
        if (!want) break; /* until a WINDOW */
        if (!(p = mux__reserve(m, MUX_HDR + want, MUX_WQ_DATA))) {
            c->flow.read_blocked = 1; /* until the connection drains (mux__flush) */
            m->n_blocked++;
            break;
        }
        n = recv(c->fd, p + MUX_HDR, want, 0);
        if (n > 0) {
            mux__hdr(p, MF_DATA, (size_t)n, c->ms.sid);
            m->wq_end += MUX_HDR + (size_t)n;
            m->dirty = 1;
            c->ms.credit -= (uint32_t)n;
            if (c->flow.lingering) tp_conn_deadline(c, TP_LINGER_MS);
            if ((size_t)n < want && (size_t)n < MUX_SMALL_READ) break; /* epoll reports what comes next */
            continue;
        }
        if (n == 0) {
            c->flow.rd_eof = 1;
            c->ms.fin_sent = 1;
            mux__frame(m, MF_FIN, c->ms.sid, NULL, 0);
            break;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
        return tp_conn_close(c, "read failed");
    }
    mux__check(c);
}

static void mux__stream_io(tp_conn *c, int readable, int writable)
{
    if (writable && mux__write_local(c) < 0) return;
    if (readable) mux__read_local(c);
}

/* A stream's socket closes (or its shard never connected): out of the mux, RESET unless the
 * peer knows. */
static void mux__unlink(tp_conn *c, const char *why)
{
    tp_mux *m = c->ms.mux;
    (void)why;
    free(c->ms.rx);
    c->ms.rx = NULL;
    if (!m) return;
    c->ms.mux = NULL;
    if (m->closing) return;
    mux__remove(m, c);
    if (!c->ms.quiet) mux__frame(m, MF_RESET, c->ms.sid, NULL, 0);
    if (!m->count && m->ready && m->outgoing) tp_conn_deadline(m->c, TP_MUX_IDLE_MS);
}

/* --- opening streams ---------------------------------------------------------------------------- */

static tp_mux *mux__new(tp_t *tp, tp_conn *c, uint32_t node, int outgoing)
{
    tp_mux *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->tp = tp;
    m->c = c;
    m->peer_node = node;
    m->outgoing = outgoing;
    m->gen = tp->ctx_gen;
    m->next_sid = 1;
    c->trunk = m;
    m->next = tp->muxes;
    tp->muxes = m;
    return m;
}

static tp_mux *mux__usable(tp_t *tp, uint32_t node)
{
    for (tp_mux *m = tp->muxes; m; m = m->next)
        if (m->outgoing && m->peer_node == node && !m->draining && !m->broken && m->gen == tp->ctx_gen && m->next_sid < MUX_SID_LAST)
            return m;
    return NULL;
}

int tp_mux_open_stream(tp_t *tp, tp_conn *cl, uint32_t node, uint32_t db_uid)
{
    Ine__V1__StreamHeader h = INE__V1__STREAM_HEADER__INIT;
    tp_mux *m = mux__usable(tp, node);
    if (!m) {
        tp_conn *c = tp_dial_stream(tp, node, TP_PLANE_DATA, 0, 1, mux__trunk_dialed);
        if (!c) return -1;
        if (!(m = mux__new(tp, c, node, 1))) {
            tp_conn_close(c, "out of memory");
            return -1;
        }
        c->dial.release = mux__teardown;
        logline(LOGLINE_DEBUG, 0, "opening the data-plane connection to node %u (streams of every database)", node);
    }
    cl->ms.sid = m->next_sid++;
    if (mux__insert(m, cl) < 0) return -1;
    cl->ms.mux = m;
    cl->plane = TP_PLANE_DATA;
    cl->peer_node = node;
    cl->ms.credit = TP_MUX_WINDOW;
    cl->ops = &mux__stream_ops;
    h.plane = INE__V1__PLANE__PLANE_DATA;
    h.db_uid = db_uid;
    h.from_node_uid = tp->node_uid;
    h.log_seq = tp->st.applied_seq;
    mux__frame_msg(m, MF_OPEN, cl->ms.sid, &h.base);
    if (m->ready) tp_conn_deadline(m->c, 0); /* no longer idle; a handshake keeps its deadline */
    /* The client may speak at once: its bytes follow the OPEN, no round trip waits for ACCEPT. */
    mux__interest(cl);
    return 0;
}

static int mux__refuse_open(tp_mux *m, uint32_t sid, const char *why)
{
    m->tp->refused++;
    logline(LOGLINE_WARN, 0, "refused stream from %s: %s", m->c->desc, why);
    mux__accept_frame(m, sid, why);
    return 0;
}

/* OPEN on a mux a peer opened: the same checks as a stream of its own connection. */
static int mux__open_in(tp_mux *m, uint32_t sid, const uint8_t *p, size_t len)
{
    tp_t *tp = m->tp;
    Ine__V1__StreamHeader *h = ine__v1__stream_header__unpack(NULL, len, p);
    char host[256], why[200] = "";
    int port = 0;
    uint32_t db_uid;
    uint64_t log_seq;
    tp_conn *s;
    if (!h) return -1;
    db_uid = h->db_uid;
    log_seq = h->log_seq;
    if (h->from_node_uid != m->peer_node)
        snprintf(why, sizeof why, "the stream header names node %u but the connection is node %u's", h->from_node_uid, m->peer_node);
    else if ((tp_plane)h->plane != TP_PLANE_DATA || h->mux)
        snprintf(why, sizeof why, "a stream inside a data-plane connection must be a data-plane stream");
    ine__v1__stream_header__free_unpacked(h, NULL);
    if (*why) return mux__refuse_open(m, sid, why);
    if (tp_admit_data_stream(tp, db_uid, log_seq, host, sizeof host, &port, why, sizeof why) < 0) return mux__refuse_open(m, sid, why);
    if (!(s = tp_dial_tcp(tp, host, port, mux__shard_dialed))) return mux__refuse_open(m, sid, "the shard is unreachable");
    s->dial.release = mux__unlink;
    s->ms.sid = sid;
    if (mux__insert(m, s) < 0) {
        tp_conn_close(s, "out of memory");
        return mux__refuse_open(m, sid, "out of memory");
    }
    s->ms.mux = m;
    s->db_uid = db_uid;
    s->remote = 1;
    s->plane = TP_PLANE_DATA;
    s->peer_node = m->peer_node;
    s->ms.credit = TP_MUX_WINDOW;
    return 0;
}

static void mux__shard_dialed(tp_conn *c, tp_dial_result r, const char *err)
{
    tp_mux *m = c->ms.mux;
    if (r != TP_DIAL_OK) {
        char why[240];
        snprintf(why, sizeof why, "the shard is unreachable: %s", err);
        mux__refuse_open(m, c->ms.sid, why);
        c->ms.quiet = 1; /* the refusal ends the stream at the peer */
        return tp_conn_close(c, why);
    }
    c->tp->accepted++;
    mux__accept_frame(m, c->ms.sid, NULL);
    c->ops = &mux__stream_ops;
    tp_conn_deadline(c, 0);
    mux__write_local(c); /* what the client sent before the shard answered */
}

/* --- the connection ------------------------------------------------------------------------------ */

static int mux__protocol(tp_mux *m, const char *fmt, ...)
{
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    tp_conn_refuse(m->c, why);
    return -1;
}

static int mux__frame_in(tp_mux *m, int type, uint32_t sid, const uint8_t *p, size_t len)
{
    tp_conn *s;
    if (type == MF_OPEN) {
        if (m->outgoing) return mux__protocol(m, "protocol error: the accepting side opened a stream");
        if (sid <= m->last_sid) return mux__protocol(m, "protocol error: stream id %u reused", sid);
        m->last_sid = sid;
        if (mux__open_in(m, sid, p, len) < 0) return mux__protocol(m, "protocol error: malformed stream header");
        return 0;
    }
    if (type == MF_GOAWAY) {
        if (!m->outgoing) return mux__protocol(m, "protocol error: GOAWAY from the opening side");
        if (!m->draining) logline(LOGLINE_DEBUG, 0, "node %u changed its certificate: new streams open a new connection", m->peer_node);
        m->draining = 1;
        return 0;
    }
    if (type < MF_OPEN || type > MF_GOAWAY) return mux__protocol(m, "protocol error: unknown frame type %d", type);
    if (!(s = mux__find(m, sid))) {
        /* Ids are never reused: a stream closed here may still get frames sent before the
         * peer learnt it; one never opened is an error. */
        if (!sid || sid > (m->outgoing ? m->next_sid - 1 : m->last_sid)) return mux__protocol(m, "protocol error: frame for stream %u, never opened", sid);
        return 0;
    }
    switch (type) {
    case MF_ACCEPT: {
        Ine__V1__StreamAccept *a = m->outgoing ? ine__v1__stream_accept__unpack(NULL, len, p) : NULL;
        char why[300];
        if (!a) return mux__protocol(m, "protocol error: malformed stream accept");
        if (a->ok) {
            ine__v1__stream_accept__free_unpacked(a, NULL);
            return 0;
        }
        snprintf(why, sizeof why, "node %u refused the stream: %s", m->peer_node, a->reason);
        ine__v1__stream_accept__free_unpacked(a, NULL);
        m->tp->refused++;
        logline(LOGLINE_WARN, 0, "refused connection to %s: %s", m->c->desc, why);
        s->ms.quiet = 1;
        tp_conn_close(s, why);
        return 0;
    }
    case MF_DATA:
        if (s->ms.fin_in) return mux__protocol(m, "protocol error: data for stream %u after its FIN", sid);
        if (mux__deliver(s, p, len) < 0) return mux__protocol(m, "protocol error: stream %u exceeded its credit", sid);
        return 0;
    case MF_FIN:
        s->ms.fin_in = 1;
        mux__check(s);
        return 0;
    case MF_RESET:
        s->ms.quiet = 1;
        tp_conn_close(s, "the peer reset the stream");
        return 0;
    case MF_WINDOW: {
        uint32_t inc = len == 4 ? mux__get32(p) : 0;
        if (!inc || inc > TP_MUX_WINDOW - s->ms.credit) return mux__protocol(m, "protocol error: bad credit for stream %u", sid);
        s->ms.credit += inc;
        mux__interest(s);
        return 0;
    }
    default: return mux__protocol(m, "protocol error: frame type %d misplaced", type);
    }
}

/* Dispatch the whole frames in rq; -1 if the mux was closed. */
static int mux__parse(tp_mux *m)
{
    size_t off = m->rq_start;
    while (m->rq_len - off >= MUX_HDR) {
        const uint8_t *p = m->rq + off;
        size_t len = (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (len > MUX_FRAME_MAX) return mux__protocol(m, "protocol error: a frame of %zu bytes", len);
        if (m->rq_len - off < MUX_HDR + len) break;
        if (mux__frame_in(m, p[0], mux__get32(p + 4), p + MUX_HDR, len) < 0) return -1;
        off += MUX_HDR + len;
    }
    /* A frame split across reads stays where it is until the buffer runs short of room:
     * moving it after every record would copy the stream a second time. */
    m->rq_start = off;
    if (m->rq_start == m->rq_len) m->rq_start = m->rq_len = 0;
    return 0;
}

static void mux__trunk_interest(tp_mux *m)
{
    tp_conn *c = m->c;
    tp_conn_want(c, 1, (m->ready && m->write_blocked) || c->want_write_for_read);
}

static int mux__read(tp_mux *m)
{
    tp_conn *c = m->c;
    size_t budget = MUX_READ_BUDGET;
    for (;;) {
        ssize_t n;
        if (!m->rq && !(m->rq = malloc(MUX_RQ_CAP))) {
            tp_conn_close(c, "out of memory");
            return -1;
        }
        if (MUX_RQ_CAP - m->rq_len < MUX_RQ_ROOM) {
            memmove(m->rq, m->rq + m->rq_start, m->rq_len - m->rq_start);
            m->rq_len -= m->rq_start;
            m->rq_start = 0;
        }
        n = tp_conn_read(c, m->rq + m->rq_len, MUX_RQ_CAP - m->rq_len);
        if (n == 0) break;
        if (n < 0) {
            tp_conn_close(c, n == -1 ? "the peer closed the connection" : "read failed");
            return -1;
        }
        m->rq_len += (size_t)n;
        if (mux__parse(m) < 0) return -1;
        if ((size_t)n < MUX_SMALL_READ && tp_conn_drained(c)) break;
        if (budget <= (size_t)n) {
            /* TLS may hold decrypted records no socket event will announce: come back. */
            event_active(c->rev, EV_READ, 0);
            break;
        }
        budget -= (size_t)n;
    }
    mux__trunk_interest(m);
    return 0;
}

static int mux__flush(tp_mux *m)
{
    tp_conn *c = m->c;
    if (!m->ready) return 0;
    m->dirty = 0;
    m->write_blocked = 0;
    while (m->wq_end > m->wq_start) {
        ssize_t n = tp_conn_write(c, m->wq + m->wq_start, m->wq_end - m->wq_start);
        if (n < 0) {
            tp_conn_close(c, "write failed");
            return -1;
        }
        if (n == 0) {
            m->write_blocked = 1;
            break;
        }
        m->wq_start += (size_t)n;
    }
    if (!m->write_blocked) {
        int f = tp_conn_flush_records(c);
        if (f < 0) {
            tp_conn_close(c, "write failed");
            return -1;
        }
        if (f == 0) m->write_blocked = 1;
    }
    if (m->wq_start == m->wq_end) {
        m->wq_start = m->wq_end = 0;
        if (m->wq_cap > MUX_WQ_DATA) {
            free(m->wq);
            m->wq = NULL;
            m->wq_cap = 0;
        }
    }
    if (m->n_blocked && m->wq_end - m->wq_start < MUX_WQ_DATA / 2) {
        m->n_blocked = 0;
        for (uint32_t i = 0; i < m->cap; i++) {
            tp_conn *s = m->slots[i];
            if (!s || !s->flow.read_blocked) continue;
            s->flow.read_blocked = 0;
            mux__interest(s);
        }
    }
    mux__trunk_interest(m);
    return 0;
}

/* Bytes read with the StreamHeader or StreamAccept are the first frames. */
static int mux__start(tp_mux *m)
{
    tp_conn *c = m->c;
    c->ops = m->outgoing ? &mux__trunk_out_ops : &mux__trunk_in_ops;
    m->ready = 1;
    if (tp_conn_coalesce(c) < 0) {
        tp_conn_close(c, "out of memory");
        return -1;
    }
    tp_conn_watch_reads(c);
    tp_conn_deadline(c, m->outgoing && !m->count ? TP_MUX_IDLE_MS : 0);
    if (c->frame_len) {
        if (!(m->rq = malloc(MUX_RQ_CAP))) {
            tp_conn_close(c, "out of memory");
            return -1;
        }
        memcpy(m->rq, c->frame, c->frame_len);
        m->rq_len = c->frame_len;
        c->frame_len = 0;
        if (mux__parse(m) < 0) return -1;
    }
    free(c->frame);
    c->frame = NULL;
    if (mux__flush(m) < 0) return -1;
    return mux__read(m);
}

int tp_mux_accepted(tp_conn *c)
{
    Ine__V1__StreamAccept a = INE__V1__STREAM_ACCEPT__INIT;
    size_t n;
    uint8_t *p;
    tp_mux *m = mux__new(c->tp, c, c->peer_node, 0);
    if (!m) {
        tp_conn_close(c, "out of memory");
        return -1;
    }
    c->ops = &mux__trunk_in_ops; /* its release tears the mux down, whatever happens next */
    c->tp->accepted++;
    a.ok = 1;
    a.reason = "";
    /* The accept goes through the queue, so no frame can overtake it. */
    n = protobuf_c_message_get_packed_size(&a.base);
    if (!(p = mux__reserve(m, n + 2, MUX_WQ_MAX))) {
        tp_conn_close(c, "out of memory");
        return -1;
    }
    p[0] = (uint8_t)(n >> 8);
    p[1] = (uint8_t)n;
    protobuf_c_message_pack(&a.base, p + 2);
    m->wq_end += n + 2;
    logline(LOGLINE_DEBUG, 0, "%s: data-plane connection from node %u carries streams", c->desc, c->peer_node);
    return mux__start(m);
}

static void mux__trunk_dialed(tp_conn *c, tp_dial_result r, const char *why)
{
    if (r != TP_DIAL_OK) return tp_conn_refuse(c, why);
    logline(LOGLINE_DEBUG, 0, "data-plane connection to node %u up%s", c->peer_node, SSL_session_reused(c->ssl) ? " (resumed)" : "");
    mux__start(c->trunk);
}

static void mux__trunk_io(tp_conn *c, int readable, int writable)
{
    tp_mux *m = c->trunk;
    if ((writable || (readable && c->want_read_for_write)) && mux__flush(m) < 0) return;
    if (readable || (writable && c->want_write_for_read)) mux__read(m);
}

/* The TLS connection closes: every stream in it ends with it. */
static void mux__teardown(tp_conn *c, const char *why)
{
    tp_mux *m = c->trunk, **pp;
    if (!m) return;
    c->trunk = NULL;
    m->closing = 1;
    if (m->count)
        logline(LOGLINE_INFO, 0, "data-plane connection %s node %u closed (%s): %u stream(s) end with it", mux__dir(m), m->peer_node,
                why ? why : "closed", m->count);
    for (uint32_t i = 0; i < m->cap; i++) {
        tp_conn *s = m->slots[i];
        if (!s) continue;
        m->slots[i] = NULL;
        s->ms.quiet = 1;
        tp_conn_close(s, why);
    }
    for (pp = &m->tp->muxes; *pp != m; pp = &(*pp)->next) {}
    *pp = m->next;
    free(m->slots);
    free(m->wq);
    free(m->rq);
    free(m);
}

void tp_mux_flush_all(tp_t *tp)
{
    tp_mux *next;
    for (tp_mux *m = tp->muxes; m; m = next) {
        next = m->next;
        if (m->broken) {
            tp_conn_close(m->c, m->broken);
            continue;
        }
        if (m->dirty && !m->write_blocked && mux__flush(m) < 0) continue;
        if (m->outgoing && m->draining && !m->count && m->wq_end == m->wq_start) tp_conn_close(m->c, "drained");
    }
}

void tp_mux_rotated(tp_t *tp)
{
    for (tp_mux *m = tp->muxes; m; m = m->next) {
        if (m->outgoing) m->draining = 1;
        else mux__frame(m, MF_GOAWAY, 0, NULL, 0);
    }
}

void tp_mux_peer_lost(tp_t *tp, uint32_t node)
{
    for (tp_mux *m = tp->muxes; m; m = m->next)
        if (m->outgoing && m->peer_node == node) m->draining = 1;
}
