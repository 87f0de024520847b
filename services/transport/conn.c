/* conn.c — the I/O floor: a connection's socket, non-blocking I/O over TLS or plain TCP,
 * event interest, deadlines, frames (2-byte length + protobuf), the pool of relay buffers,
 * listeners. Every event of a connection goes to its role (c->ops: io, deadline, release);
 * this file never names a role, and calls nothing else of the transport. */
#include "transport.h"
#include "clock.h"
#include "err.h"
#include "logline.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

static void tp__on_io(evutil_socket_t fd, short what, void *arg)
{
    tp_conn *c = arg;
    (void)fd;
    c->ops->io(c, (what & EV_READ) != 0, (what & EV_WRITE) != 0);
}

static void tp__on_deadline(evutil_socket_t fd, short what, void *arg)
{
    tp_conn *c = arg;
    (void)fd;
    (void)what;
    c->ops->deadline(c);
}

void tp_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

struct evconnlistener *tp_listen(tp_t *tp, const char *host, int port, evconnlistener_cb cb, void *arg)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *res = NULL;
    struct evconnlistener *l;
    char ps[8];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0) return NULL;
    l = evconnlistener_new_bind(tp->base, cb, arg, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 1024,
                                res->ai_addr, (int)res->ai_addrlen);
    freeaddrinfo(res);
    return l;
}

tp_conn *tp_conn_new(tp_t *tp, int fd, SSL *ssl, const tp_conn_ops *ops)
{
    tp_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->tp = tp;
    c->fd = fd;
    c->ssl = ssl;
    c->ops = ops;
    c->rev = event_new(tp->base, fd, EV_READ | EV_PERSIST, tp__on_io, c);
    c->wev = event_new(tp->base, fd, EV_WRITE | EV_PERSIST, tp__on_io, c);
    c->timer = evtimer_new(tp->base, tp__on_deadline, c);
    if (!c->rev || !c->wev || !c->timer) {
        if (c->rev) event_free(c->rev);
        if (c->wev) event_free(c->wev);
        if (c->timer) event_free(c->timer);
        free(c);
        return NULL;
    }
    if (ssl) SSL_set_app_data(ssl, c);
    c->next = tp->conns;
    if (tp->conns) tp->conns->prev = c;
    tp->conns = c;
    tp->n_conns++;
    snprintf(c->desc, sizeof c->desc, "fd %d", fd);
    return c;
}

void tp_describe(tp_conn *c, const struct sockaddr *sa)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        port = ntohs(s4->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        port = ntohs(s6->sin6_port);
    }
    snprintf(c->desc, sizeof c->desc, "%s:%d", host, port);
}

uint8_t *tp_buf_get(tp_t *tp)
{
    return tp->n_pool ? tp->pool[--tp->n_pool] : malloc(TP_BUF_SIZE);
}

void tp_buf_put(tp_t *tp, tp_buf *b)
{
    if (!b->data) return;
    if (tp->n_pool < (int)(sizeof tp->pool / sizeof tp->pool[0])) tp->pool[tp->n_pool++] = b->data;
    else free(b->data);
    b->data = NULL;
    b->start = b->end = 0;
}

void tp_conn_want(tp_conn *c, int rd, int wr)
{
    if (rd) event_add(c->rev, NULL);
    else event_del(c->rev);
    if (wr) event_add(c->wev, NULL);
    else event_del(c->wev);
}

void tp_conn_deadline(tp_conn *c, int ms)
{
    if (ms <= 0) {
        evtimer_del(c->timer);
        return;
    }
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

static void tp__free(tp_conn *c, const char *why)
{
    tp_t *tp = c->tp;
    if (c->ops->release) c->ops->release(c, why);
    event_free(c->rev);
    event_free(c->wev);
    event_free(c->timer);
    if (c->ssl) {
        /* One non-blocking close_notify; a peer that never reads it loses nothing. */
        if (SSL_is_init_finished(c->ssl) && !c->flow.wr_shut) SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    if (c->fd >= 0) close(c->fd);
    tp_buf_put(tp, &c->out);
    free(c->frame);
    if (c->prev) c->prev->next = c->next;
    else tp->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    tp->n_conns--;
    free(c);
}

void tp_conn_close(tp_conn *c, const char *why)
{
    tp_conn *peer = c->peer;
    if (why) logline(LOGLINE_DEBUG, 0, "%s: closed: %s", c->desc, why);
    if (peer) {
        peer->peer = NULL;
        c->peer = NULL;
        tp__free(peer, why);
    }
    tp__free(c, why);
}

void tp_conn_refuse(tp_conn *c, const char *reason)
{
    c->tp->refused++;
    logline(LOGLINE_WARN, 0, "refused %s %s: %s", c->ops->inbound ? "stream from" : "connection to", c->desc, reason);
    tp_conn_close(c, reason);
}

/* --- raw I/O: > 0 bytes, 0 would block, -1 end of stream (reads), -2 error -------------------- */

static ssize_t tp__read(tp_conn *c, uint8_t *buf, size_t len)
{
    if (!c->ssl) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n > 0) return n;
        if (n == 0) return -1;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
        return -2;
    }
    size_t got = 0;
    c->want_write_for_read = 0;
    if (SSL_read_ex(c->ssl, buf, len, &got) == 1) return (ssize_t)got;
    switch (SSL_get_error(c->ssl, 0)) {
    case SSL_ERROR_WANT_READ: return 0;
    case SSL_ERROR_WANT_WRITE: c->want_write_for_read = 1; return 0;
    case SSL_ERROR_ZERO_RETURN: return -1; /* close_notify: a clean end of what it sends */
    default: ERR_clear_error(); return -2;
    }
}

static ssize_t tp__write(tp_conn *c, const uint8_t *buf, size_t len)
{
    if (!c->ssl) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0) return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
        return -1;
    }
    size_t put = 0;
    c->want_read_for_write = 0;
    if (SSL_write_ex(c->ssl, buf, len, &put) == 1) return (ssize_t)put;
    switch (SSL_get_error(c->ssl, 0)) {
    case SSL_ERROR_WANT_WRITE: return 0;
    case SSL_ERROR_WANT_READ: c->want_read_for_write = 1; return 0;
    default: ERR_clear_error(); return -1;
    }
}

/* OpenSSL writes each TLS record (16 KiB at most) with its own write(): on loopback that is a
 * segment, a softirq and a wake-up of the reader per record. A buffering BIO between the
 * record layer and the socket sends up to four records per write() (64 KiB, the most one
 * loopback or TSO segment carries): node A's CPU per GB relayed -9 to -12 % in paired runs.
 * Handshake flights and alerts are flushed by OpenSSL itself (BIO_flush); application data
 * waits for tp_conn_flush_records, which the mux calls once its queue is written. */
#define TP_COALESCE_BYTES (64 * 1024)

int tp_conn_coalesce(tp_conn *c)
{
    BIO *sock = SSL_get_wbio(c->ssl), *buf = BIO_new(BIO_f_buffer());
    if (!buf || BIO_set_write_buffer_size(buf, TP_COALESCE_BYTES) != 1 || !BIO_up_ref(sock)) {
        BIO_free(buf);
        ERR_clear_error();
        return ine_err(INE_ENOMEM, "out of memory for the record buffer");
    }
    /* buf takes the reference just added; SSL_set0_wbio drops the one the SSL held. */
    SSL_set0_wbio(c->ssl, BIO_push(buf, sock));
    return INE_OK;
}

int tp_conn_flush_records(tp_conn *c)
{
    BIO *b = SSL_get_wbio(c->ssl);
    if (!BIO_wpending(b)) return 1;
    if (BIO_flush(b) == 1 && !BIO_wpending(b)) return 1;
    if (BIO_should_retry(b)) return 0;
    ERR_clear_error();
    return -1;
}

/* A relay reads until the socket says "would block": one read() per round that returns
 * nothing, two system calls in eight per request and node on a ping. A short read already says
 * the socket was empty at that moment, and epoll (level-triggered) reports whatever comes next,
 * so the relay may stop there. OpenSSL does not tell how its last read went: this callback on
 * the socket BIO keeps it. */
static long tp__bio_read_cb(BIO *b, int oper, const char *argp, size_t len, int argi, long argl, int ret, size_t *processed)
{
    (void)argp; (void)argi; (void)argl;
    if (oper == (BIO_CB_READ | BIO_CB_RETURN)) {
        tp_conn *c = (tp_conn *)BIO_get_callback_arg(b);
        c->rd_short = ret <= 0 || !processed || *processed < len;
    }
    return ret;
}

void tp_conn_watch_reads(tp_conn *c)
{
    BIO *sock = SSL_get_rbio(c->ssl);
    BIO_set_callback_arg(sock, (char *)c);
    BIO_set_callback_ex(sock, tp__bio_read_cb);
}

int tp_conn_drained(const tp_conn *c) { return c->ssl && c->rd_short && !SSL_has_pending(c->ssl); }

ssize_t tp_conn_read(tp_conn *c, uint8_t *buf, size_t len) { return tp__read(c, buf, len); }
ssize_t tp_conn_write(tp_conn *c, const uint8_t *buf, size_t len) { return tp__write(c, buf, len); }

/* --- frames (headers, accepts, heartbeats) ---------------------------------------------------- */

int tp_send_frame(tp_conn *c, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n > TP_FRAME_MAX) return ine_err(INE_EINVAL, "frame of %zu bytes is too large", n);
    if (!c->out.data && !(c->out.data = tp_buf_get(c->tp))) return ine_err(INE_ENOMEM, "out of memory");
    if (TP_BUF_SIZE - c->out.end < n + 2) return ine_err(INE_EAGAIN, "output queue full");
    c->out.data[c->out.end] = (uint8_t)(n >> 8);
    c->out.data[c->out.end + 1] = (uint8_t)n;
    protobuf_c_message_pack(m, c->out.data + c->out.end + 2);
    c->out.end += n + 2;
    return INE_OK;
}

/* The frame buffer exists only while a frame is incomplete: a relayed or idle connection
 * holds none (4 KiB per tp_conn, four per tunnelled connection). */
void tp_frame_drop(tp_conn *c)
{
    free(c->frame);
    c->frame = NULL;
    c->frame_len = 0;
}

int tp_read_frame_bytes(tp_conn *c)
{
    if (!c->frame && !(c->frame = malloc(TP_FRAME_MAX + 2))) return -1;
    while (c->frame_len < TP_FRAME_MAX + 2) {
        ssize_t n = tp__read(c, c->frame + c->frame_len, TP_FRAME_MAX + 2 - c->frame_len);
        if (n == 0) break;
        if (n < 0) return -1;
        c->frame_len += (size_t)n;
        if (!c->frames_only) break; /* a header: do not read into relayed bytes */
    }
    if (!c->frame_len) tp_frame_drop(c);
    return 0;
}

int tp_frame_ready(tp_conn *c, const uint8_t **msg)
{
    size_t n;
    if (c->frame_len < 2) return 0;
    n = ((size_t)c->frame[0] << 8) | c->frame[1];
    if (n > TP_FRAME_MAX) return -1;
    if (c->frame_len < n + 2) return 0;
    *msg = c->frame + 2;
    return (int)n ? (int)n : -1;
}

void tp_frame_consume(tp_conn *c)
{
    size_t n = (((size_t)c->frame[0] << 8) | c->frame[1]) + 2;
    memmove(c->frame, c->frame + n, c->frame_len - n);
    c->frame_len -= n;
    if (!c->frame_len) tp_frame_drop(c);
}

int tp_flush_try(tp_conn *c)
{
    tp_buf *b = &c->out;
    while (b->data && b->end > b->start) {
        ssize_t n = tp__write(c, b->data + b->start, b->end - b->start);
        if (n < 0) return -1;
        if (n == 0) break;
        b->start += (size_t)n;
    }
    if (b->data && b->start == b->end) tp_buf_put(c->tp, b);
    return 0;
}

int tp_flush(tp_conn *c)
{
    if (tp_flush_try(c) == 0) return 0;
    tp_conn_close(c, "write failed");
    return -1;
}
