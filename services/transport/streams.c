/* streams.c — what happens on port 3342 and on the database endpoints:
 *   accepting a stream: TLS handshake (deadline), the peer's identity (a node of this
 *   cluster, on the plane its certificate is for), the StreamHeader (plane, database), then a
 *   relay to the local shard or a control-plane heartbeat exchange;
 *   opening a stream: a database endpoint's client relayed to the shard's node over TLS
 *   (encryption on) or straight to the shard in plaintext (off), and control-plane streams
 *   to every other node carrying heartbeats. Every refusal is logged with its reason. */
#include "transport.h"
#include "clock.h"
#include "err.h"
#include "logline.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void tp_relay_event(tp_conn *c, int readable, int writable);

static const char *tp__sni(int plane) { return plane == INE__V1__PLANE__PLANE_DATA ? "data.ine" : "control.ine"; }

static void tp__nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* --- identity ------------------------------------------------------------------------------- */

static int tp__spiffe(X509 *x, char *cluster, size_t clen, uint32_t *node, int *plane)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int found = 0;
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && !found; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        char buf[256], pl[4];
        unsigned n;
        int len;
        if (g->type != GEN_URI) continue;
        len = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (len <= 0 || len >= (int)sizeof buf) continue;
        memcpy(buf, ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), (size_t)len);
        buf[len] = 0;
        char *p = strncmp(buf, "spiffe://", 9) ? NULL : buf + 9, *slash = p ? strchr(p, '/') : NULL;
        if (!slash || (size_t)(slash - p) >= clen) continue;
        memcpy(cluster, p, (size_t)(slash - p));
        cluster[slash - p] = 0;
        if (sscanf(slash, "/node/%u/%3s", &n, pl) != 2) continue;
        *node = n;
        *plane = !strcmp(pl, "cp") ? INE__V1__PLANE__PLANE_CONTROL : !strcmp(pl, "dp") ? INE__V1__PLANE__PLANE_DATA : 0;
        found = *plane != 0;
    }
    GENERAL_NAMES_free(sans);
    return found;
}

int tp_peer_identity(tp_t *tp, SSL *ssl, int plane, uint32_t *node, char *why, size_t why_len)
{
    X509 *x = SSL_get0_peer_certificate(ssl);
    char cluster[80];
    int cplane = 0;
    *node = 0;
    if (!x) return snprintf(why, why_len, "no certificate"), -1;
    if (tp__spiffe(x, cluster, sizeof cluster, node, &cplane)) {
        const proj_node *n = proj_node_find(&tp->st, *node);
        if (strcmp(cluster, tp->st.cluster.uid)) return snprintf(why, why_len, "certificate of another cluster (%s)", cluster), -1;
        if (!n || n->removed) return snprintf(why, why_len, "node %u is not a node of this cluster", *node), -1;
        if (cplane != plane)
            return snprintf(why, why_len, "a %s-plane certificate cannot open a %s-plane stream",
                            cplane == INE__V1__PLANE__PLANE_DATA ? "data" : "control",
                            plane == INE__V1__PLANE__PLANE_DATA ? "data" : "control"), -1;
        return 0;
    }
    /* Customer certificates carry no node identity: the one certificate serves every node,
     * so it is recognised by its fingerprint among those uploaded for this plane. */
    {
        unsigned char md[SHA256_DIGEST_LENGTH];
        unsigned int mdlen = 0;
        char fp[65];
        X509_digest(x, EVP_sha256(), md, &mdlen);
        for (unsigned i = 0; i < 32; i++) sprintf(fp + 2 * i, "%02x", md[i]);
        for (size_t i = 0; i < tp->n_customer_fps[plane]; i++)
            if (!strcmp(tp->customer_fps[plane][i], fp)) return 0;
    }
    return snprintf(why, why_len, "the certificate is not a %s-plane certificate of this cluster",
                    plane == INE__V1__PLANE__PLANE_DATA ? "data" : "control"), -1;
}

static void tp__tls_reason(SSL *ssl, char *why, size_t len)
{
    long v = SSL_get_verify_result(ssl);
    unsigned long e = ERR_peek_error();
    if (v != X509_V_OK) snprintf(why, len, "certificate refused: %s", X509_verify_cert_error_string(v));
    else if (e) snprintf(why, len, "TLS handshake failed: %s", ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "error");
    else snprintf(why, len, "TLS handshake failed: connection closed");
    ERR_clear_error();
}

/* Drive a handshake: 1 done, 0 waiting, -1 failed (reason in why). */
static int tp__handshake(tp_conn *c, char *why, size_t len)
{
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) return 1;
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ: tp_conn_want(c, 1, 0); return 0;
    case SSL_ERROR_WANT_WRITE: tp_conn_want(c, 0, 1); return 0;
    default: tp__tls_reason(c->ssl, why, len); return -1;
    }
}

/* --- connecting out ------------------------------------------------------------------------- */

static int tp__resolve(const char *host, int port, struct sockaddr_storage *ss, socklen_t *sl)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    char ps[8];
    snprintf(ps, sizeof ps, "%d", port);
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    /* Numeric first (never blocks); a host name is resolved synchronously, which only node
     * addresses configured as names pay for. */
    if (getaddrinfo(host, ps, &hints, &res) != 0) {
        hints.ai_flags = AI_NUMERICSERV;
        if (getaddrinfo(host, ps, &hints, &res) != 0) return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

tp_conn *tp_connect(tp_t *tp, const char *host, int port, tp_kind kind)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    tp_conn *c;
    int fd;
    if (tp__resolve(host, port, &ss, &sl) < 0) {
        logline(LOGLINE_WARN, 0, "cannot resolve %s", host);
        return NULL;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return NULL;
    tp__nodelay(fd);
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS) {
        logline(LOGLINE_WARN, 0, "cannot connect to %s:%d: %s", host, port, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!(c = tp_conn_new(tp, fd, NULL, TP_S_CONNECTING, kind))) {
        close(fd);
        return NULL;
    }
    snprintf(c->desc, sizeof c->desc, "%s:%d", host, port);
    tp_conn_want(c, 0, 1);
    tp_conn_deadline(c, tp->handshake_ms);
    return c;
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

tp_conn *tp_open_stream(tp_t *tp, uint32_t node, int plane, uint32_t db_uid, tp_kind kind)
{
    const proj_node *n = proj_node_find(&tp->st, node);
    tp_conn *c;
    if (!n || n->removed || !tp->cli[plane]) return NULL;
    if (!(c = tp_connect(tp, n->address, tp->port, kind))) return NULL;
    c->plane = plane;
    c->db_uid = db_uid;
    c->peer_node = node;
    c->remote = 1;
    if (!(c->ssl = SSL_new(tp->cli[plane]))) {
        tp_conn_close(c, "SSL_new failed");
        return NULL;
    }
    SSL_set_app_data(c->ssl, c);
    SSL_set_tlsext_host_name(c->ssl, tp__sni(plane));
    tp_session_offer(c);
    SSL_set_connect_state(c->ssl);
    return c;
}

/* --- database endpoints ---------------------------------------------------------------------- */

void tp_endpoint_accept(tp_t *tp, uint32_t db_uid, int fd, const struct sockaddr *sa)
{
    const proj_db *d = proj_db_find(&tp->st, db_uid);
    const proj_node *self = tp_self(tp);
    tp_conn *cl, *up;
    char host[256];
    int port;

    if (tp->n_conns + 2 > tp->max_conns) {
        logline(LOGLINE_WARN, 0, "refused client of db %u: connection limit (%d) reached", db_uid, tp->max_conns);
        close(fd);
        return;
    }
    if (!d || d->deleted || !self) {
        close(fd);
        return;
    }
    tp__nodelay(fd);
    if (!(cl = tp_conn_new(tp, fd, NULL, TP_S_WAIT_PEER, TP_K_ENDPOINT))) {
        close(fd);
        return;
    }
    tp_describe(cl, sa);
    cl->db_uid = db_uid;
    cl->plane = INE__V1__PLANE__PLANE_DATA;
    if (d->shard_node_uid != self->uid && d->data_internode_encryption && !tp->mux_off) {
        /* Remote: crosses nodes, so a toggle of this database closes it. */
        cl->remote = 1;
        if (tp_mux_open_stream(tp, cl, d->shard_node_uid, db_uid) == 0) return;
        up = NULL;
    } else if (d->shard_node_uid != self->uid && d->data_internode_encryption) {
        up = tp_open_stream(tp, d->shard_node_uid, INE__V1__PLANE__PLANE_DATA, db_uid, TP_K_UPSTREAM);
    } else {
        up = tp_split_hostport(d->shard_address, host, sizeof host, &port) == 0 ? tp_connect(tp, host, port, TP_K_UPSTREAM) : NULL;
        if (up) up->db_uid = db_uid;
    }
    if (!up) {
        logline(LOGLINE_WARN, 0, "db %u: cannot reach its shard on node %u; client %s dropped", db_uid, d->shard_node_uid, cl->desc);
        tp_conn_close(cl, NULL);
        return;
    }
    /* Remote: crosses nodes, so a toggle of this database closes it. */
    cl->remote = up->remote = d->shard_node_uid != self->uid;
    cl->peer = up;
    up->peer = cl;
    tp_conn_want(cl, 0, 0);
}

/* --- accepting streams on 3342 ---------------------------------------------------------------- */

int tp_servername_cb(SSL *ssl, int *al, void *arg)
{
    tp_t *tp = arg;
    tp_conn *c = SSL_get_app_data(ssl);
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    (void)al;
    c->plane = sni && !strcmp(sni, "data.ine") ? INE__V1__PLANE__PLANE_DATA : INE__V1__PLANE__PLANE_CONTROL;
    if (!tp->srv[c->plane]) return SSL_TLSEXT_ERR_ALERT_FATAL;
    SSL_set_SSL_CTX(ssl, tp->srv[c->plane]);
    return SSL_TLSEXT_ERR_OK;
}

static int tp__names_have(const STACK_OF(X509_NAME) *names, const X509_NAME *n)
{
    for (int i = 0; n && i < sk_X509_NAME_num(names); i++)
        if (!X509_NAME_cmp(sk_X509_NAME_value(names, i), n)) return 1;
    return 0;
}

int tp_cert_cb(SSL *ssl, void *arg)
{
    tp_t *tp = arg;
    tp_conn *c = SSL_get_app_data(ssl);
    const STACK_OF(X509_NAME) *peer = SSL_get0_peer_CA_list(ssl);
    const tp_cred *cur, *prev;
    if (!c || c->plane < 1 || c->plane > 2 || !peer || !sk_X509_NAME_num(peer)) return 1;
    cur = &tp->cur[c->plane];
    prev = &tp->prev[c->plane];
    if (!prev->leaf || tp__names_have(peer, cur->root_name) || !tp__names_have(peer, prev->root_name)) return 1;
    /* The peer does not trust our new root yet, but trusts the one before it. */
    if (SSL_use_certificate(ssl, prev->leaf) != 1 || SSL_use_PrivateKey(ssl, prev->key) != 1 || SSL_set1_chain(ssl, prev->chain) != 1) {
        ERR_clear_error();
        return 0;
    }
    logline(LOGLINE_DEBUG, 0, "%s: presenting the previous %s-plane certificate %s (the peer does not trust the new root yet)", c->desc,
            proj_plane_name(c->plane), prev->serial);
    return 1;
}

void tp_on_accept(tp_t *tp, int fd, const struct sockaddr *sa) { tp_accept_tls(tp, fd, sa, TP_K_STREAM_IN); }

void tp_accept_tls(tp_t *tp, int fd, const struct sockaddr *sa, tp_kind kind)
{
    tp_conn *c;
    SSL *ssl;
    if (tp->n_conns >= tp->max_conns || !tp->srv[INE__V1__PLANE__PLANE_CONTROL]) {
        char host[INET6_ADDRSTRLEN] = "?";
        inet_ntop(sa->sa_family, sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                                                           : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr,
                  host, sizeof host);
        tp->refused++;
        logline(LOGLINE_WARN, 0, "refused connection from %s: %s", host,
                tp->srv[1] ? "connection limit reached" : "no certificate to serve yet");
        close(fd);
        return;
    }
    tp__nodelay(fd);
    if (!(ssl = SSL_new(tp->srv[INE__V1__PLANE__PLANE_CONTROL]))) {
        close(fd);
        return;
    }
    if (!(c = tp_conn_new(tp, fd, ssl, TP_S_ACCEPT_HS, kind))) {
        SSL_free(ssl);
        close(fd);
        return;
    }
    tp_describe(c, sa);
    c->plane = INE__V1__PLANE__PLANE_CONTROL;
    SSL_set_fd(ssl, fd);
    SSL_set_accept_state(ssl);
    tp_conn_deadline(c, tp->handshake_ms);
    tp_conn_want(c, 1, 0);
}

/* Accept a stream; -1 when the write failed and c (with its peer) is gone. */
static int tp__send_accept(tp_conn *c)
{
    Ine__V1__StreamAccept a = INE__V1__STREAM_ACCEPT__INIT;
    a.ok = 1;
    a.reason = "";
    tp_send_frame(c, &a.base);
    return tp_flush(c);
}

/* Refuse a stream: tell the peer why (best effort: it may have hung up already), log, close. */
void tp_stream_refuse(tp_conn *c, const char *why)
{
    Ine__V1__StreamAccept a = INE__V1__STREAM_ACCEPT__INIT;
    a.ok = 0;
    a.reason = (char *)why;
    if (tp_send_frame(c, &a.base) == 0) tp_flush_try(c);
    tp_conn_refuse(c, why);
}

/* -1 when writing it failed and c is closed (freed): the caller must not touch c again. */
static int tp__heartbeat_send(tp_conn *c)
{
    tp_t *tp = c->tp;
    Ine__V1__Heartbeat hb = INE__V1__HEARTBEAT__INIT;
    Ine__V1__ServedCertificate sc[2] = {INE__V1__SERVED_CERTIFICATE__INIT, INE__V1__SERVED_CERTIFICATE__INIT};
    Ine__V1__ServedCertificate *scp[2] = {&sc[0], &sc[1]};
    hb.node_uid = tp->node_uid;
    hb.time_us = ine_clock_now_us();
    for (int p = 1; p <= 2; p++) {
        sc[p - 1].plane = p;
        sc[p - 1].fingerprint_sha256 = tp->serving_fp[p];
        sc[p - 1].serial_hex = tp->serving_serial[p];
    }
    hb.served = scp;
    hb.n_served = 2;
    if (tp_send_frame(c, &hb.base) == 0) return tp_flush(c);
    return 0;
}

/* Heartbeat frames on a control stream; the accepting side answers each with its own. */
static void tp__control_read(tp_conn *c)
{
    const uint8_t *msg;
    int n;
    if (tp_read_frame_bytes(c) < 0) {
        tp_conn_close(c, "control stream ended");
        return;
    }
    while ((n = tp_frame_ready(c, &msg)) != 0) {
        Ine__V1__Heartbeat *hb = n > 0 ? ine__v1__heartbeat__unpack(NULL, (size_t)n, msg) : NULL;
        tp_peer *pr;
        if (!hb || hb->node_uid != c->peer_node) {
            if (hb) ine__v1__heartbeat__free_unpacked(hb, NULL);
            tp_conn_refuse(c, "malformed heartbeat on the control plane");
            return;
        }
        if ((pr = tp_peer_find(c->tp, hb->node_uid))) {
            pr->last_heartbeat_ms = ine_clock_mono_ms();
            for (size_t i = 0; i < hb->n_served; i++) {
                int p = hb->served[i]->plane;
                if ((p == 1 || p == 2) && strcmp(pr->served[p], hb->served[i]->fingerprint_sha256)) {
                    snprintf(pr->served[p], sizeof pr->served[p], "%s", hb->served[i]->fingerprint_sha256);
                    logline(LOGLINE_INFO, 0, "node %u serves %s-plane certificate %s", hb->node_uid, p == 2 ? "data" : "control",
                            hb->served[i]->serial_hex);
                }
                /* Also the peer's: one that cannot reach etcd now is recorded by whoever can (the
                 * request id makes the second record of one activation a no-op). */
                if (p == 1 || p == 2) tp_record_activation(c->tp, hb->node_uid, p, hb->served[i]->fingerprint_sha256, hb->served[i]->serial_hex);
            }
        }
        ine__v1__heartbeat__free_unpacked(hb, NULL);
        tp_frame_consume(c);
        if (c->kind == TP_K_CONTROL_IN && tp__heartbeat_send(c) < 0) return;
    }
    tp_conn_want(c, 1, c->out.data != NULL);
}

int tp_admit_data_stream(tp_t *tp, uint32_t db_uid, uint64_t log_seq, char *host, size_t hlen, int *port, char *why,
                         size_t wlen)
{
    const proj_node *self;
    const proj_db *d;
    /* Decide on a view at least as new as the sender's. */
    tp_state_view_wait(tp, log_seq);
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

static void tp__accept_header(tp_conn *c)
{
    tp_t *tp = c->tp;
    const uint8_t *msg;
    Ine__V1__StreamHeader *h;
    char host[256], why[160];
    int n, port = 0;
    tp_conn *shard;

    if (tp_read_frame_bytes(c) < 0) return tp_conn_refuse(c, "closed before sending a stream header");
    if ((n = tp_frame_ready(c, &msg)) == 0) return;
    if (n < 0 || !(h = ine__v1__stream_header__unpack(NULL, (size_t)n, msg))) return tp_conn_refuse(c, "malformed stream header");
    tp_frame_consume(c);
    /* A customer certificate names no node (one certificate serves them all): the node is
     * the one the header names, if it is a node of this cluster. A node certificate must
     * agree with the header. */
    if (!c->peer_node) {
        const proj_node *from = proj_node_find(&tp->st, h->from_node_uid);
        if (!from || from->removed) snprintf(why, sizeof why, "the stream header names node %u, not a node of this cluster", h->from_node_uid);
        else c->peer_node = h->from_node_uid;
    } else if (h->from_node_uid != c->peer_node) {
        snprintf(why, sizeof why, "the stream header names node %u but the certificate is node %u's", h->from_node_uid, c->peer_node);
    }
    if (!c->peer_node || h->from_node_uid != c->peer_node) {
        ine__v1__stream_header__free_unpacked(h, NULL);
        return tp_stream_refuse(c, why);
    }
    if ((int)h->plane != c->plane) {
        snprintf(why, sizeof why, "a %s-plane certificate cannot open a %s-plane stream", c->plane == 2 ? "data" : "control",
                 h->plane == 2 ? "data" : "control");
        ine__v1__stream_header__free_unpacked(h, NULL);
        return tp_stream_refuse(c, why);
    }
    /* Past the identity checks: a client that resumes gets its ticket with our answer, even
     * if what it asks for next is refused (an unknown database is no reason to make its next
     * stream a full handshake); one refused for who it is gets none. */
    tp_ticket_offer(c, !h->no_ticket);
    if (h->mux) {
        int data = h->plane == INE__V1__PLANE__PLANE_DATA;
        ine__v1__stream_header__free_unpacked(h, NULL);
        if (!data) return tp_stream_refuse(c, "only the data plane carries streams in one connection");
        tp_conn_deadline(c, 0);
        tp_mux_accepted(c);
        return;
    }
    if (h->plane == INE__V1__PLANE__PLANE_CONTROL) {
        ine__v1__stream_header__free_unpacked(h, NULL);
        c->state = TP_S_CONTROL;
        c->kind = TP_K_CONTROL_IN;
        tp_conn_deadline(c, 0);
        tp->accepted++;
        if (tp__send_accept(c) < 0) return;
        return tp_conn_want(c, 1, c->out.data != NULL);
    }
    c->db_uid = h->db_uid;
    {
        uint64_t log_seq = h->log_seq;
        ine__v1__stream_header__free_unpacked(h, NULL);
        if (tp_admit_data_stream(tp, c->db_uid, log_seq, host, sizeof host, &port, why, sizeof why) < 0)
            return tp_stream_refuse(c, why);
    }
    if (!(shard = tp_connect(tp, host, port, TP_K_SHARD))) return tp_stream_refuse(c, "the shard is unreachable");
    shard->db_uid = c->db_uid;
    c->remote = shard->remote = 1;
    c->peer = shard;
    shard->peer = c;
    c->state = TP_S_WAIT_PEER;
    tp_conn_want(c, 0, 0);
}

/* An outgoing connection finished its TCP connect. */
static void tp__connected(tp_conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    char why[200];
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err) {
        snprintf(why, sizeof why, "connect failed: %s", strerror(err ? err : errno));
        if (c->mux) return tp_mux_shard_connected(c, why);
        if (c->kind == TP_K_CONTROL_OUT) return tp_conn_close(c, why);
        return tp_conn_refuse(c, why);
    }
    if (c->ssl) {
        SSL_set_fd(c->ssl, c->fd);
        c->state = TP_S_CLIENT_HS;
        return tp_conn_event(c, 0, 1);
    }
    if (c->mux) return tp_mux_shard_connected(c, NULL);
    /* Plaintext upstream (a local shard, or encryption off): relay now. */
    tp_conn_deadline(c, 0);
    if (c->peer) {
        tp_conn *other = c->peer;
        if (other->kind == TP_K_STREAM_IN) {
            c->tp->accepted++;
            /* A failed write closed both ends: nothing left to relay. */
            if (tp__send_accept(other) < 0) return;
        }
        tp_relay_start(other, c);
    } else {
        tp_conn_close(c, "client gone");
    }
}

static void tp__client_handshaken(tp_conn *c)
{
    Ine__V1__StreamHeader h = INE__V1__STREAM_HEADER__INIT;
    char why[200];
    uint32_t node;
    if (tp_peer_identity(c->tp, c->ssl, c->plane, &node, why, sizeof why) < 0) return tp_conn_refuse(c, why);
    /* node 0: a customer certificate, which names no node; we dialled the node's address. */
    if (node && node != c->peer_node) {
        snprintf(why, sizeof why, "server presented node %u's certificate, not node %u's", node, c->peer_node);
        return tp_conn_refuse(c, why);
    }
    h.plane = c->plane;
    h.db_uid = c->db_uid;
    h.from_node_uid = c->tp->node_uid;
    h.mux = c->trunk != NULL;
    h.no_ticket = !tp_resume();
    h.log_seq = c->tp->st.applied_seq;
    c->state = TP_S_CLIENT_ACK;
    tp_send_frame(c, &h.base);
    if (tp_flush(c) < 0) return;
    tp_conn_want(c, 1, c->out.data != NULL);
}

static void tp__client_ack(tp_conn *c)
{
    const uint8_t *msg;
    Ine__V1__StreamAccept *a;
    int n;
    if (tp_read_frame_bytes(c) < 0) return tp_conn_refuse(c, "stream closed before it was accepted");
    if ((n = tp_frame_ready(c, &msg)) == 0) return;
    if (n < 0 || !(a = ine__v1__stream_accept__unpack(NULL, (size_t)n, msg))) return tp_conn_refuse(c, "malformed stream accept");
    tp_frame_consume(c);
    if (!a->ok) {
        char why[300];
        snprintf(why, sizeof why, "node %u refused the stream: %s", c->peer_node, a->reason);
        ine__v1__stream_accept__free_unpacked(a, NULL);
        return tp_conn_refuse(c, why);
    }
    ine__v1__stream_accept__free_unpacked(a, NULL);
    tp_conn_deadline(c, 0);
    if (c->trunk) return tp_mux_ready(c);
    if (c->kind == TP_K_CONTROL_OUT) {
        c->state = TP_S_CONTROL;
        {
            tp_peer *pr = tp_peer_find(c->tp, c->peer_node);
            if (pr) pr->last_heartbeat_ms = ine_clock_mono_ms();
        }
        logline(LOGLINE_INFO, 0, "control-plane stream to node %u up", c->peer_node);
        if (tp__heartbeat_send(c) < 0) return;
        return tp_conn_want(c, 1, c->out.data != NULL);
    }
    if (!c->peer) return tp_conn_close(c, "client gone");
    tp_relay_start(c->peer, c);
}

void tp_conn_event(tp_conn *c, int readable, int writable)
{
    char why[200];
    uint32_t node;
    int r;
    switch (c->state) {
    case TP_S_RELAY: return tp_relay_event(c, readable, writable);
    case TP_S_CONNECTING: return tp__connected(c);
    case TP_S_ACCEPT_HS:
        if ((r = tp__handshake(c, why, sizeof why)) == 0) return;
        if (r < 0) return tp_conn_refuse(c, why);
        if (tp_peer_identity(c->tp, c->ssl, c->plane, &node, why, sizeof why) < 0) return tp_conn_refuse(c, why);
        c->peer_node = node;
        if (c->kind == TP_K_ETCD_IN) return tp_etcd_accepted(c);
        c->state = TP_S_ACCEPT_HDR;
        tp_conn_want(c, 1, 0);
        return tp__accept_header(c);
    case TP_S_ACCEPT_HDR: return tp__accept_header(c);
    case TP_S_CLIENT_HS:
        if ((r = tp__handshake(c, why, sizeof why)) == 0) return;
        if (r < 0) return tp_conn_refuse(c, why);
        return tp__client_handshaken(c);
    case TP_S_CLIENT_ACK:
        if (writable && tp_flush(c) < 0) return;
        if (readable) return tp__client_ack(c);
        return tp_conn_want(c, 1, c->out.data != NULL);
    case TP_S_CONTROL:
        if (writable && tp_flush(c) < 0) return;
        if (readable) return tp__control_read(c);
        return tp_conn_want(c, 1, c->out.data != NULL);
    case TP_S_WAIT_PEER: return tp_conn_want(c, 0, 0);
    case TP_S_MUX: return tp_mux_event(c, readable, writable);
    case TP_S_MSTREAM: return tp_mux_stream_event(c, readable, writable);
    }
}

/* --- control plane ---------------------------------------------------------------------------- */

void tp_heartbeat_tick(tp_t *tp)
{
    int64_t now = ine_clock_mono_ms();
    for (size_t i = 0; i < tp->n_peers; i++) {
        tp_peer *p = &tp->peers[i];
        if (p->conn) {
            /* A peer that stopped answering (hung, or the network between us dropped packets
             * without a reset) would keep a dead stream open for ever: TCP alone never says. */
            if (p->conn->state == TP_S_CONTROL && now - p->last_heartbeat_ms > TP_HEARTBEAT_DEAD_MS) {
                char why[96];
                snprintf(why, sizeof why, "no heartbeat for %lld ms", (long long)(now - p->last_heartbeat_ms));
                tp_conn_close(p->conn, why);
                tp_mux_peer_lost(tp, p->node_uid);
                continue;
            }
            if (p->conn->state == TP_S_CONTROL) (void)tp__heartbeat_send(p->conn);
            continue;
        }
        if (now < p->next_try_ms) continue;
        p->next_try_ms = now + TP_HEARTBEAT_MS;
        if ((p->conn = tp_open_stream(tp, p->node_uid, INE__V1__PLANE__PLANE_CONTROL, 0, TP_K_CONTROL_OUT))) p->conn->remote = 0;
    }
}
