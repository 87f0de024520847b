/* state.c — the top of the transport: following the log. On each tick the worker has tls.c
 * rebuild its TLS contexts when its certificates or the trust bundle changed (and records
 * CertificateActivated, and has the muxes drain), opens and closes database endpoints, tracks
 * its peers for heartbeats, and closes the remote connections of a database whose encryption
 * changed (queued by the follower, run here). */
#include "transport.h"
#include "clock.h"
#include "err.h"
#include "logline.h"
#include "sealed.h"
#include "tlsconf.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* Close a database's remote connections; returns how many were closed. */
static int tp__close_db(tp_t *tp, uint32_t db_uid, const char *why)
{
    int closed = 0;
    for (int again = 1; again;) {
        again = 0;
        for (tp_conn *c = tp->conns; c; c = c->next) {
            if (c->db_uid != db_uid || !c->remote) continue;
            tp_conn_close(c, why); /* may free c and its peer: restart the walk */
            closed++;
            again = 1;
            break;
        }
    }
    return closed;
}

static void tp__queue_close(tp_t *tp, uint32_t db_uid, uint64_t seq, const char *why)
{
    if (tp->n_closing == tp->cap_closing) {
        size_t cap = tp->cap_closing ? tp->cap_closing * 2 : 8;
        void *n = realloc(tp->closing, cap * sizeof *tp->closing);
        if (!n) {
            /* Out of memory: close now rather than never (no caller holds a connection here
             * except an admission, which re-checks its own after the wait). */
            (void)tp__close_db(tp, db_uid, why);
            return;
        }
        tp->closing = n;
        tp->cap_closing = cap;
    }
    tp->closing[tp->n_closing].db_uid = db_uid;
    tp->closing[tp->n_closing].seq = seq;
    tp->closing[tp->n_closing].why = why;
    tp->n_closing++;
}

/* What the follower queued, in log order. A toggle is logged even when nothing was open:
 * operators (and tests) see when a node applied it. */
static void tp__run_closes(tp_t *tp)
{
    for (size_t i = 0; i < tp->n_closing; i++) {
        int n = tp__close_db(tp, tp->closing[i].db_uid, tp->closing[i].why);
        if (n || !strncmp(tp->closing[i].why, "data_internode", 14))
            logline(LOGLINE_INFO, tp->closing[i].seq, "db %u: %s; closed %d remote connection(s)", tp->closing[i].db_uid,
                    tp->closing[i].why, n);
    }
    tp->n_closing = 0;
}

static void tp__note_customer(tp_t *tp, const Ine__V1__CustomerCertificateUploaded *u)
{
    for (size_t i = 0; i < u->n_planes; i++) {
        tp_plane p = (tp_plane)u->planes[i];
        char **n;
        if ((p != TP_PLANE_CONTROL && p != TP_PLANE_DATA) || !u->cert) continue;
        if (!(n = realloc(tp->customer_fps[p], (tp->n_customer_fps[p] + 1) * sizeof *n))) continue;
        tp->customer_fps[p] = n;
        if ((n[tp->n_customer_fps[p]] = strdup(u->cert->fingerprint_sha256))) tp->n_customer_fps[p]++;
    }
}

static int tp__follow(const evlog_event *ev, uint64_t seq, void *ud)
{
    tp_t *tp = ud;
    int rc = proj_apply(&tp->st, ev);
    if (rc < 0 && rc != INE_EUNKNOWN) return rc;
    switch (ev->body_case) {
    case INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED: {
        /* Logged even when nothing was open: operators (and tests) see when a node applied it. */
        const Ine__V1__DataInternodeEncryptionChanged *t = ev->data_internode_encryption_changed;
        const char *what = t->enabled ? "data_internode_encryption enabled" : "data_internode_encryption disabled";
        tp__queue_close(tp, t->db_uid, seq, what);
        break;
    }
    case INE__V1__EVENT__BODY_DATABASE_DELETED: tp__queue_close(tp, ev->database_deleted->db_uid, seq, "database deleted"); break;
    case INE__V1__EVENT__BODY_DATABASE_UPDATED:
        tp__queue_close(tp, ev->database_updated->db_uid, seq, "database moved or renamed");
        break;
    case INE__V1__EVENT__BODY_CUSTOMER_CERTIFICATE_UPLOADED: tp__note_customer(tp, ev->customer_certificate_uploaded); break;
    default: break;
    }
    return INE_OK;
}

static void tp__on_listener(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    (void)l;
    (void)len;
    tp_on_accept(arg, fd, sa);
}

static void tp__on_endpoint(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    tp_endpoint *ep = arg;
    (void)l;
    (void)len;
    tp_endpoint_accept(ep->tp, ep->db_uid, fd, sa);
}

static void tp__endpoint_bind(tp_t *tp, tp_endpoint *ep, const proj_node *self, const proj_db *d)
{
    if (ep->l || ine_clock_mono_ms() < ep->retry_ms) return;
    if (!(ep->l = tp_listen(tp, self->address, (int)ep->port, tp__on_endpoint, ep))) {
        ep->retry_ms = ine_clock_mono_ms() + 5000;
        logline(LOGLINE_ERROR, d->updated_seq, "db %u: cannot listen on %s:%u (retrying every 5 s)", d->uid, self->address, ep->port);
        return;
    }
    logline(LOGLINE_INFO, d->updated_seq, "db %u (%s): endpoint on %s:%u, shard on node %u, encryption %s", d->uid, d->name,
            self->address, ep->port, d->shard_node_uid, d->data_internode_encryption ? "on" : "off");
}

/* One endpoint per live database, on this node's address and the database's port. */
static void tp__endpoints(tp_t *tp)
{
    const proj_node *self = tp_self(tp);
    for (size_t i = 0; i < tp->n_eps;) {
        tp_endpoint *ep = tp->eps[i];
        const proj_db *d = proj_db_find(&tp->st, ep->db_uid);
        if (self && d && !d->deleted && d->port == ep->port) {
            i++;
            continue;
        }
        if (ep->l) {
            evconnlistener_free(ep->l);
            logline(LOGLINE_INFO, 0, "db %u: endpoint on port %u closed", ep->db_uid, ep->port);
        }
        free(ep);
        tp->eps[i] = tp->eps[--tp->n_eps];
    }
    if (!self) return;
    for (size_t i = 0; i < tp->st.n_dbs; i++) {
        const proj_db *d = &tp->st.dbs[i];
        tp_endpoint *ep = NULL, **n;
        if (d->deleted) continue;
        for (size_t k = 0; k < tp->n_eps && !ep; k++)
            if (tp->eps[k]->db_uid == d->uid) ep = tp->eps[k];
        if (!ep) {
            if (!(ep = calloc(1, sizeof *ep)) || !(n = realloc(tp->eps, (tp->n_eps + 1) * sizeof *n))) {
                free(ep);
                return;
            }
            tp->eps = n;
            ep->tp = tp;
            ep->db_uid = d->uid;
            ep->port = d->port;
            tp->eps[tp->n_eps++] = ep;
        }
        tp__endpoint_bind(tp, ep, self, d);
    }
}

static void tp__peers(tp_t *tp)
{
    for (size_t i = 0; i < tp->st.n_nodes; i++) {
        const proj_node *n = &tp->st.nodes[i];
        size_t k;
        tp_peer *np;
        if (n->removed || n->uid == tp->node_uid) continue;
        for (k = 0; k < tp->n_peers && tp->peers[k].node_uid != n->uid; k++) {}
        if (k < tp->n_peers) continue;
        if (!(np = realloc(tp->peers, (tp->n_peers + 1) * sizeof *np))) return;
        tp->peers = np;
        memset(&tp->peers[tp->n_peers], 0, sizeof *np);
        tp->peers[tp->n_peers++].node_uid = n->uid;
    }
    for (size_t i = 0; i < tp->n_peers;) {
        const proj_node *n = proj_node_find(&tp->st, tp->peers[i].node_uid);
        if (n && !n->removed) {
            i++;
            continue;
        }
        if (tp->peers[i].conn) tp_conn_close(tp->peers[i].conn, "node removed");
        tp_tls_forget(tp, tp->peers[i].node_uid);
        tp->peers[i] = tp->peers[--tp->n_peers];
    }
}

void tp_state_tick(tp_t *tp)
{
    const proj_node *self;
    unsigned rebuilt;
    if (follow_poll(tp->follow, 0) < 0) logline(LOGLINE_ERROR, tp->st.applied_seq, "follow: %s", ine_err_msg());
    tp__run_closes(tp);
    rebuilt = tp_tls_refresh(tp);
    TP_FOR_PLANES(p)
        if (rebuilt & (1u << p)) tp_record_activation(tp, tp->node_uid, p, tp->serving_fp[p], tp->serving_serial[p]);
    /* New streams present the new certificate: they open new data-plane connections. */
    if (rebuilt) tp_mux_rotated(tp);
    self = tp_self(tp);
    if (!tp->listener && self && tp->srv[TP_PLANE_CONTROL]) {
        if ((tp->listener = tp_listen(tp, self->address, tp->port, tp__on_listener, tp)))
            logline(LOGLINE_INFO, tp->st.applied_seq, "node %u listening on %s:%d", tp->node_uid, self->address, tp->port);
    }
    tp__endpoints(tp);
    tp__peers(tp);
    tp_etcd_tick(tp);
}

static void tp__on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tp_state_tick(arg);
}

/* The log holds the cluster, this node and its control-plane certificate: enough to serve. */
static int tp__ready(void *ud)
{
    tp_t *tp = ud;
    return tp->st.cluster.present && tp_self(tp) && proj_cert_find(&tp->st, tp->node_uid, TP_PLANE_CONTROL);
}

int tp_state_open(tp_t *tp)
{
    char p[DATADIR_MAX];
    GUARD(datadir_path(tp->data_dir, "seal.key", p, sizeof p));
    GUARD(seal_key_load(p, &tp->seal));
    GUARD(datadir_path(tp->data_dir, "log", p, sizeof p));
    GUARD(evlog_open(p, NULL, &tp->log));
    GUARD(datadir_path(tp->data_dir, "run", tp->run_dir, sizeof tp->run_dir));
    if (!(tp->zctx = zmq_ctx_new())) return ine_err(INE_EZMQ, "cannot create a ZeroMQ context");
    {
        char producer[32];
        snprintf(producer, sizeof producer, "ine-transport-%u", tp->node_uid);
        GUARD(follow_pub_open(tp->zctx, tp->run_dir, producer, &tp->pub));
        {
            commit_cfg cc = {.data_dir = tp->data_dir, .producer = "ine-transport", .log = tp->log, .pub = tp->pub,
                         .zctx = tp->zctx, .run_dir = tp->run_dir};
            GUARD(commit_open(&cc, &tp->commit));
            GUARD(tp_activator_open(tp));
        }
    }
    proj_init(&tp->st);
    GUARD(follow_new(tp->zctx, tp->log, tp->run_dir, 0, tp__follow, tp, &tp->follow));
    if (!(tp->kick = event_new(tp->base, -1, 0, tp__on_kick, tp))) return ine_err(INE_ENOMEM, "cannot create an event");
    {
        int rc = follow_catch_up(tp->follow);
        if (rc < 0) return rc;
    }
    if (!strcmp(commit_backend(tp->commit), "etcd")) {
        char what[64];
        snprintf(what, sizeof what, "this cluster's node %u", tp->node_uid);
        GUARD(follow_wait_ready(tp->follow, tp__ready, tp, what));
    }
    if (!tp->st.cluster.present) return ine_err(INE_ENOTFOUND, "%s holds no cluster", tp->data_dir);
    if (!tp_self(tp)) return ine_err(INE_ENOTFOUND, "node %u is not a node of this cluster", tp->node_uid);
    tp_etcd_open(tp);
    return INE_OK;
}

void tp_state_close(tp_t *tp)
{
    while (tp->conns) tp_conn_close(tp->conns, NULL);
    if (tp->kick) event_free(tp->kick);
    free(tp->closing);
    for (size_t i = 0; i < tp->n_eps; i++) {
        if (tp->eps[i]->l) evconnlistener_free(tp->eps[i]->l);
        free(tp->eps[i]);
    }
    free(tp->eps);
    tp_tls_close(tp);
    free(tp->peers);
    if (tp->listener) evconnlistener_free(tp->listener);
    tp_etcd_close(tp);
    tp_activator_close(tp);
    TP_FOR_PLANES(p) {
        for (size_t i = 0; i < tp->n_customer_fps[p]; i++) free(tp->customer_fps[p][i]);
        free(tp->customer_fps[p]);
    }
    for (int i = 0; i < tp->n_pool; i++) free(tp->pool[i]);
    follow_free(tp->follow);
    commit_close(tp->commit);
    follow_pub_close(tp->pub);
    if (tp->zctx) zmq_ctx_term(tp->zctx);
    evlog_close(tp->log);
    seal_key_free(tp->seal);
    proj_free(&tp->st);
}
