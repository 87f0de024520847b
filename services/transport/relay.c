/* relay.c — the relay role: bytes between two connections. Each side reads into its own
 * bounded buffer, written to the other; a full buffer pauses reading (backpressure), an empty
 * one goes back to a small pool so an idle connection holds no buffer at all. An EOF from one
 * side, once what it sent is delivered, is passed on (shutdown(SHUT_WR) or a TLS close_notify)
 * and the other direction goes on, so a client that half-closes after its request still gets
 * the answer; the pair closes when both directions have ended (or idles TP_LINGER_MS
 * half-closed). A read error resets the pair at once. Also the role of a connection that
 * waits for the other end of its pair (an endpoint client while its upstream dials). */
#include "transport.h"
#include "logline.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <string.h>
#include <sys/socket.h>

static void tp__relay_io(tp_conn *c, int readable, int writable);
static void tp__relay_idle(tp_conn *c) { tp_conn_close(c, "half-closed relay idle too long"); }
static void tp__relay_release(tp_conn *c, const char *why)
{
    (void)why;
    tp_buf_put(c->tp, &c->relay.in);
}
static const tp_conn_ops tp__relay_ops = {"relay", tp__relay_io, tp__relay_idle, tp__relay_release, 0};

static void tp__wait_io(tp_conn *c, int readable, int writable)
{
    (void)readable;
    (void)writable;
    tp_conn_want(c, 0, 0);
}
static void tp__wait_deadline(tp_conn *c) { tp_conn_refuse(c, "no stream header in time"); }
const tp_conn_ops tp_wait_ops = {"waiting for its upstream", tp__wait_io, tp__wait_deadline, NULL, 0};

static int tp__has(const tp_buf *b) { return b->data && b->end > b->start; }

static int tp__pending_out(const tp_conn *c)
{
    return tp__has(&c->out) || (c->peer && tp__has(&c->peer->relay.in));
}

/* Recompute what c waits for. */
static void tp__interest(tp_conn *c)
{
    int rd = (!c->flow.read_blocked && !c->flow.rd_eof) || c->want_read_for_write;
    int wr = tp__pending_out(c) || c->want_write_for_read || c->relay.shut_pending;
    tp_conn_want(c, rd, wr);
}

/* Pass an EOF on to x: 1 done, 0 waiting for writability, -1 failed. */
static int tp__shut_write(tp_conn *x)
{
    int r;
    if (!x->ssl) {
        if (shutdown(x->fd, SHUT_WR) != 0 && errno != ENOTCONN) return -1;
        x->flow.wr_shut = 1;
        return 1;
    }
    x->relay.shut_pending = 0;
    r = SSL_shutdown(x->ssl);
    if (r >= 0) {
        x->flow.wr_shut = 1;
        return 1;
    }
    if (SSL_get_error(x->ssl, r) == SSL_ERROR_WANT_WRITE) {
        x->relay.shut_pending = 1;
        return 0;
    }
    ERR_clear_error();
    return -1;
}

/* (Re)arm the idle deadline of a half-closed pair. */
static void tp__linger(tp_conn *a)
{
    a->flow.lingering = a->peer->flow.lingering = 1;
    tp_conn_deadline(a, TP_LINGER_MS);
    tp_conn_deadline(a->peer, TP_LINGER_MS);
}

/* The direction a -> b ends once a sent EOF and all it sent was written to b: pass the EOF
 * on. The pair closes when both directions have ended. -1 if the pair was closed. */
static int tp__finish(tp_conn *a)
{
    tp_conn *b = a->peer;
    if (!b) {
        tp_conn_close(a, "peer gone");
        return -1;
    }
    if (a->flow.rd_eof && !tp__has(&a->relay.in) && !b->flow.wr_shut && !b->relay.shut_pending && tp__shut_write(b) < 0) {
        tp_conn_close(a, "cannot pass the end of stream on");
        return -1;
    }
    if (a->flow.wr_shut && b->flow.wr_shut) {
        tp_conn_close(a, "end of stream");
        return -1;
    }
    if ((a->flow.wr_shut || b->flow.wr_shut) && !a->flow.lingering) tp__linger(a);
    return 0;
}

static int tp__push(tp_conn *b);

/* Read from a into its buffer, then hand it to a's peer. -1 if the pair was closed. */
static int tp__pump(tp_conn *a)
{
    tp_buf *in = &a->relay.in;
    int drained = 0;
    for (;;) {
        ssize_t n;
        if (!in->data && !(in->data = tp_buf_get(a->tp))) {
            tp_conn_close(a, "out of memory");
            return -1;
        }
        if (in->end == TP_BUF_SIZE) {
            if (in->start == 0) {
                a->flow.read_blocked = 1; /* backpressure: resume when the peer drained it */
                break;
            }
            memmove(in->data, in->data + in->start, in->end - in->start);
            in->end -= in->start;
            in->start = 0;
        }
        n = tp_conn_read(a, in->data + in->end, TP_BUF_SIZE - in->end);
        if (n == 0) {
            drained = 1;
            break;
        }
        if (n == -2) {
            tp_conn_close(a, "read failed");
            return -1;
        }
        if (n < 0) {
            a->flow.rd_eof = 1;
            break;
        }
        in->end += (size_t)n;
        if (a->flow.lingering && a->peer) tp__linger(a);
    }
    if (in->start == in->end) tp_buf_put(a->tp, in);
    /* SSL_MODE_RELEASE_BUFFERS misses the read buffer after post-handshake messages (TLS 1.3
     * session tickets): an idle connection would keep 17 KB. No-op while a record is pending. */
    if (drained && a->ssl) SSL_free_buffers(a->ssl);
    if (!a->peer) {
        tp_conn_close(a, "peer gone");
        return -1;
    }
    if (tp__push(a->peer) < 0) return -1;
    if (tp__finish(a) < 0) return -1;
    tp__interest(a);
    return 0;
}

/* Write b's pending bytes (its own frames, then what its peer read). -1 if closed. */
static int tp__push(tp_conn *b)
{
    tp_conn *a = b->peer;
    tp_buf *src;
    if (b->out.data && tp_flush(b) < 0) return -1;
    if (!a) return 0;
    src = &a->relay.in;
    while (src->data && src->end > src->start) {
        ssize_t n = tp_conn_write(b, src->data + src->start, src->end - src->start);
        if (n < 0) {
            tp_conn_close(b, "write failed");
            return -1;
        }
        if (n == 0) break;
        src->start += (size_t)n;
    }
    if (src->data && src->start == src->end) {
        tp_buf_put(b->tp, src);
        if (a->flow.read_blocked) {
            a->flow.read_blocked = 0;
            /* TLS may hold decrypted bytes no socket event will announce: read now. */
            if (tp__pump(a) < 0) return -1;
            return 0; /* tp__pump finished a's direction and recomputed b's interest */
        }
    }
    if (tp__finish(a) < 0) return -1;
    tp__interest(b);
    return 0;
}

static void tp__relay_io(tp_conn *c, int readable, int writable)
{
    if (writable && c->relay.shut_pending) {
        if (tp__shut_write(c) < 0) return tp_conn_close(c, "cannot pass the end of stream on");
        if (c->peer && tp__finish(c->peer) < 0) return;
    }
    if ((writable || (readable && c->want_read_for_write)) && tp__push(c) < 0) return;
    if ((readable || (writable && c->want_write_for_read)) && tp__pump(c) < 0) return;
}

/* Bytes that came in behind a header or an accept belong to the relay. */
static int tp__frame_leftover(tp_conn *c)
{
    if (!c->frame_len) return tp_frame_drop(c), 0;
    if (!c->relay.in.data && !(c->relay.in.data = tp_buf_get(c->tp))) return -1;
    memcpy(c->relay.in.data + c->relay.in.end, c->frame, c->frame_len);
    c->relay.in.end += c->frame_len;
    tp_frame_drop(c);
    return 0;
}

void tp_relay_start(tp_conn *a, tp_conn *b)
{
    a->peer = b;
    b->peer = a;
    a->ops = b->ops = &tp__relay_ops; /* their buffers are the relay's from here (its release frees them) */
    if (tp__frame_leftover(a) < 0 || tp__frame_leftover(b) < 0) {
        tp_conn_close(a, "out of memory"); /* and b, its peer */
        return;
    }
    tp_conn_deadline(a, 0);
    tp_conn_deadline(b, 0);
    /* Bytes that arrived with a header, or TLS records already decrypted, go first. */
    if (tp__push(a) < 0) return;
    if (b->peer && tp__push(b) < 0) return;
    if (a->peer && tp__pump(a) < 0) return;
    if (b->peer && b->peer == a) tp__pump(b);
}

void tp_relay_upstream_done(tp_conn *up, tp_dial_result r, const char *why)
{
    if (r != TP_DIAL_OK) return tp_conn_refuse(up, why);
    if (!up->peer) return tp_conn_close(up, "client gone");
    tp_relay_start(up->peer, up);
}
