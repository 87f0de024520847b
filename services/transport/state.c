/* state.c — the transport's view of the log. Following it, the worker (re)builds its TLS
 * contexts when its certificates or the trust bundle change (new handshakes use them at once,
 * open connections keep theirs), records CertificateActivated when it starts serving a new
 * certificate, opens and closes database endpoints, tracks its peers for heartbeats, and on a
 * database's data_internode_encryption change closes that database's remote connections. */
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

const proj_node *tp_self(tp_t *tp)
{
    const proj_node *n = proj_node_find(&tp->st, tp->node_uid);
    return n && !n->removed ? n : NULL;
}

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
        int p = u->planes[i];
        char **n;
        if ((p != 1 && p != 2) || !u->cert) continue;
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

/* The fingerprints of the bundle, as a key that changes whenever the trust does. */
static void tp__trust_key(const proj_state *st, char *out, size_t len)
{
    size_t off = 0;
    out[0] = 0;
    for (size_t i = 0; i < st->n_bundle && off < len; i++)
        off += (size_t)snprintf(out + off, len - off, "%s%c;", st->bundle[i].fingerprint, st->bundle[i].pem ? '+' : '-');
}

static void tp__cred_free(tp_cred *cr)
{
    X509_free(cr->leaf);
    sk_X509_pop_free(cr->chain, X509_free);
    EVP_PKEY_free(cr->key);
    X509_NAME_free(cr->root_name);
    memset(cr, 0, sizeof *cr);
}

/* The subject names of the bundle's roots: the CAs we tell peers we trust. */
static STACK_OF(X509_NAME) *tp__bundle_names(const proj_state *st)
{
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    for (size_t i = 0; names && i < st->n_bundle; i++) {
        BIO *b = st->bundle[i].pem ? BIO_new_mem_buf(st->bundle[i].pem, -1) : NULL;
        X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        X509_NAME *n = x ? X509_NAME_dup(X509_get_subject_name(x)) : NULL;
        if (n && !sk_X509_NAME_push(names, n)) X509_NAME_free(n);
        X509_free(x);
        BIO_free(b);
    }
    ERR_clear_error();
    return names;
}

/* Serve `next` from now on; the certificate it replaces is kept as prev when its root differs
 * (a customer root coming in, the cluster CA coming back): peers that still know only the old
 * root can then verify us. A rotation under the same root needs no such bridge. */
static void tp__cred_swap(tp_t *tp, int plane, tp_cred *next)
{
    tp_cred *cur = &tp->cur[plane], *prev = &tp->prev[plane];
    if (cur->leaf && strcmp(cur->root_fp, next->root_fp)) {
        tp__cred_free(prev);
        *prev = *cur;
        logline(LOGLINE_INFO, 0, "%s plane: keeping certificate %s for peers that do not trust the new root yet", proj_plane_name(plane),
                prev->serial);
    } else {
        tp__cred_free(cur);
    }
    *cur = *next;
    memset(next, 0, sizeof *next);
}

tp_peer *tp_peer_find(tp_t *tp, uint32_t node)
{
    for (size_t i = 0; i < tp->n_peers; i++)
        if (tp->peers[i].node_uid == node) return &tp->peers[i];
    return NULL;
}

/* Resumption of the streams we open to other nodes: per peer node and plane, the last
 * session it gave us (a TLS 1.3 ticket, a TLS 1.2 session id). A resumed handshake is still
 * mutual TLS, but skips the certificates and both RSA signatures; the session carries the
 * peer certificate of the full handshake it came from, so tp_peer_identity checks the same
 * identity on every stream. A new certificate applies to the next stream at once: both
 * sides drop what they resumed from whenever a context is rebuilt (our certificate, or the
 * trust bundle, changed) — the client its cached sessions (tp__sessions_drop), the server
 * every ticket it issued before (a new session id context, see tp__contexts). */
static void tp__sessions_drop(tp_t *tp, int plane)
{
    for (size_t i = 0; i < tp->n_peers; i++) {
        for (int p = 1; p <= 2; p++) {
            if (plane && p != plane) continue;
            SSL_SESSION_free(tp->peers[i].session[p]);
            tp->peers[i].session[p] = NULL;
        }
    }
}

/* OpenSSL hands us each new client session (after the handshake, or with each ticket). */
static int tp__new_session(SSL *ssl, SSL_SESSION *sess)
{
    tp_conn *c = SSL_get_app_data(ssl);
    tp_peer *pr;
    char why[200];
    uint32_t node;
    if (!c || c->plane < 1 || c->plane > 2 || !c->peer_node || !(pr = tp_peer_find(c->tp, c->peer_node))) return 0;
    /* A session of a context since replaced, or of a peer we would refuse, is not kept. */
    if (SSL_get_SSL_CTX(ssl) != c->tp->cli[c->plane]) return 0;
    if (tp_peer_identity(c->tp, ssl, c->plane, &node, why, sizeof why) < 0 || (node && node != c->peer_node)) return 0;
    SSL_SESSION_free(pr->session[c->plane]);
    pr->session[c->plane] = sess;
    return 1; /* the reference is ours */
}

/* INE_TRANSPORT_RESUME=0 makes every stream a full handshake (the benchmark measures both). */
int tp_resume(void)
{
    const char *v = getenv("INE_TRANSPORT_RESUME");
    return !v || strcmp(v, "0") != 0;
}

void tp_session_offer(tp_conn *c)
{
    tp_peer *pr = c->plane >= 1 && c->plane <= 2 ? tp_peer_find(c->tp, c->peer_node) : NULL;
    SSL_SESSION *s = pr ? pr->session[c->plane] : NULL;
    if (s && SSL_SESSION_is_resumable(s) && SSL_set_session(c->ssl, s) != 1) ERR_clear_error();
}

/* The server's half of resumption: a TLS 1.3 ticket for a client whose accepted header did
 * not say no_ticket, sent before our answer. Minting one is ~1.7 M instructions of OpenSSL
 * 3.0 (it copies the session through DER, parsing the client's certificate again): a client
 * with resumption off gets none. TLS 1.2 tickets come with the handshake, to clients that ask
 * for one in their hello. */
void tp_ticket_offer(tp_conn *c, int wanted)
{
    if (!wanted || !c->ssl || SSL_version(c->ssl) != TLS1_3_VERSION) return;
    if (SSL_new_session_ticket(c->ssl) != 1) ERR_clear_error();
}

static int tp__build_plane(tp_t *tp, int plane, const proj_cert *c, X509_STORE *trust, const STACK_OF(X509_NAME) *names)
{
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = NULL;
    pki_key *key = NULL;
    SSL_CTX *srv = NULL, *cli = NULL;
    char *pem = NULL;
    int rc = INE_OK;
    if (asprintf(&pem, "%s%s", c->cert.cert_pem ? c->cert.cert_pem : "", c->cert.chain_pem ? c->cert.chain_pem : "") < 0)
        return ine_err(INE_ENOMEM, "out of memory");
    GUARD_GOTO(tlsconf_pem_certs(pem, &leaf, &chain), out);
    tlsconf_drop_roots(chain); /* also what tp_cert_cb presents with a previous certificate */
    GUARD_GOTO(sealed_load_key(tp->log, tp->seal, c->issued_seq, &key), out);
    srv = tlsconf_ctx_new(TLSCONF_SERVER, leaf, chain, pki_evp(key), trust);
    cli = tlsconf_ctx_new(TLSCONF_CLIENT, leaf, chain, pki_evp(key), trust);
    if (!srv || !cli) {
        rc = ine_err(INE_ECRYPTO, "cannot build the %s-plane TLS context: %s", proj_plane_name(plane), ine_err_msg());
        goto out;
    }
    SSL_CTX_set_tlsext_servername_callback(srv, tp_servername_cb);
    SSL_CTX_set_tlsext_servername_arg(srv, tp);
    /* Tell peers which roots we trust (CertificateRequest; ClientHello certificate_authorities
     * in TLS 1.3) and let their list pick the certificate we present. */
    SSL_CTX_set0_CA_list(srv, SSL_dup_CA_list(names));
    SSL_CTX_set0_CA_list(cli, SSL_dup_CA_list(names));
    SSL_CTX_set_cert_cb(srv, tp_cert_cb, tp);
    SSL_CTX_set_cert_cb(cli, tp_cert_cb, tp);
    /* Resumption (see tp__new_session): the client keeps its sessions itself, one per peer
     * node and plane; the server issues one ticket per stream header that asks for it (the
     * client keeps only the latest). Tickets are sealed with the server context's keys: never
     * shared, and gone with the process. */
    if (tp_resume()) {
        SSL_CTX_set_session_cache_mode(cli, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(cli, tp__new_session);
    } else {
        SSL_CTX_set_session_cache_mode(cli, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(cli, SSL_OP_NO_TICKET); /* TLS 1.2: no ticket asked for in the hello */
    }
    /* TLS 1.3 tickets only on request: one per accepted stream header that does not say
     * no_ticket (tp_ticket_offer), none right after the handshake. */
    SSL_CTX_set_num_tickets(srv, 0);
    /* No server-side session store: resumption is by ticket only. With a session id context
     * set (tp__contexts), OpenSSL would otherwise keep every TLS 1.2 session (up to 20,480,
     * each with the client's certificate) in the context. */
    SSL_CTX_set_session_cache_mode(srv, SSL_SESS_CACHE_OFF);
    /* Read ahead: one recv() per TLS record (and part of the next) where OpenSSL otherwise
     * makes two (the 5-byte header, then the body): half the reads of a bulk relay. The relay
     * reads until SSL_read wants the socket, so nothing waits unseen in the buffer. A larger
     * buffer (four records) cut reads further but cost +24 % instructions on the reading
     * node: OpenSSL moves the unread rest to the front of the buffer for every record. */
    SSL_CTX_set_read_ahead(srv, 1);
    SSL_CTX_set_read_ahead(cli, 1);
    SSL_CTX_free(tp->srv[plane]);
    SSL_CTX_free(tp->cli[plane]);
    tp->srv[plane] = srv;
    tp->cli[plane] = cli;
    srv = cli = NULL;
    tp__sessions_drop(tp, plane);
    tp->ctx_cert_seq[plane] = c->issued_seq;
    snprintf(tp->serving_fp[plane], sizeof tp->serving_fp[plane], "%s", c->cert.fingerprint);
    snprintf(tp->serving_serial[plane], sizeof tp->serving_serial[plane], "%s", c->cert.serial_hex);
    {
        X509 *top = sk_X509_num(chain) ? sk_X509_value(chain, sk_X509_num(chain) - 1) : leaf;
        tp_cred next = {.leaf = leaf, .chain = chain, .key = pki_evp(key)};
        EVP_PKEY_up_ref(next.key);
        next.root_name = X509_NAME_dup(X509_get_issuer_name(top));
        snprintf(next.root_fp, sizeof next.root_fp, "%s", c->root_fingerprint ? c->root_fingerprint : "");
        snprintf(next.serial, sizeof next.serial, "%s", c->cert.serial_hex);
        leaf = NULL;
        chain = NULL;
        tp__cred_swap(tp, plane, &next);
    }
out:
    SSL_CTX_free(srv);
    SSL_CTX_free(cli);
    free(pem);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    pki_key_free(key);
    return rc;
}

/* Record that a node now serves a certificate (once per fingerprint, across restarts): our
 * own, and what peers' heartbeats say they serve (the request id makes a repeat a no-op).
 * Only the node's current certificate is recorded: a lagging node serving an older one is not
 * "activated". */
void tp_record_activation(tp_t *tp, uint32_t node, int plane, const char *fp, const char *serial)
{
    const proj_activation *a = proj_activation_find(&tp->st, node, plane);
    const proj_cert *cur = proj_cert_find(&tp->st, node, plane);
    if (!fp || !*fp || !cur || !cur->cert.fingerprint || strcmp(cur->cert.fingerprint, fp)) return;
    if (a && a->fingerprint && !strcmp(a->fingerprint, fp)) return;
    tp_activation_append(tp, node, plane, fp, serial);
}

static void tp__contexts(tp_t *tp)
{
    char key[sizeof tp->trust_key];
    X509_STORE *trust = NULL;
    STACK_OF(X509_NAME) *names = NULL;
    int trust_changed, rebuilt = 0;
    tp__trust_key(&tp->st, key, sizeof key);
    trust_changed = strcmp(key, tp->trust_key) != 0;
    for (int p = 1; p <= 2; p++) {
        const proj_cert *c = proj_cert_find(&tp->st, tp->node_uid, p);
        if (!c || (!trust_changed && c->issued_seq == tp->ctx_cert_seq[p])) continue;
        if (!trust && !(trust = tlsconf_trust_from_bundle(&tp->st))) return;
        if (!names && !(names = tp__bundle_names(&tp->st))) break;
        if (tp__build_plane(tp, p, c, trust, names) < 0) {
            logline(LOGLINE_ERROR, c->issued_seq, "%s", ine_err_msg());
            continue;
        }
        rebuilt = 1;
        logline(LOGLINE_INFO, c->issued_seq, "now serving %s-plane certificate %s", proj_plane_name(p), tp->serving_serial[p]);
        tp_record_activation(tp, tp->node_uid, p, tp->serving_fp[p], tp->serving_serial[p]);
    }
    if (rebuilt) {
        /* Tickets name the session id context they were issued under: a new one on every
         * rebuild makes the server refuse (fall back to a full handshake for) sessions from
         * before it, whichever plane's context sealed them. Both planes share it, because
         * OpenSSL checks it before the SNI callback switches to the data-plane context. */
        char sid[32];
        int n = snprintf(sid, sizeof sid, "ine-transport/%u", ++tp->ctx_gen);
        for (int p = 1; p <= 2; p++)
            if (tp->srv[p]) SSL_CTX_set_session_id_context(tp->srv[p], (const unsigned char *)sid, (unsigned)n);
        /* New streams present the new certificate: they open new data-plane connections. */
        tp_mux_rotated(tp);
    }
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    /* A previous certificate is only useful while its root is trusted. */
    for (int p = 1; trust_changed && p <= 2; p++) {
        if (!tp->prev[p].leaf || proj_bundle_find(&tp->st, tp->prev[p].root_fp)) continue;
        logline(LOGLINE_INFO, tp->st.trust_changed_seq, "%s plane: certificate %s dropped, its root left the trust bundle",
                proj_plane_name(p), tp->prev[p].serial);
        tp__cred_free(&tp->prev[p]);
    }
    if (trust) {
        X509_STORE_free(trust);
        if (trust_changed) logline(LOGLINE_INFO, tp->st.trust_changed_seq, "trust bundle now holds %zu root(s)", tp->st.n_bundle);
        snprintf(tp->trust_key, sizeof tp->trust_key, "%s", key);
    }
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
        SSL_SESSION_free(tp->peers[i].session[1]);
        SSL_SESSION_free(tp->peers[i].session[2]);
        tp->peers[i] = tp->peers[--tp->n_peers];
    }
}

void tp_state_tick(tp_t *tp)
{
    const proj_node *self;
    if (follow_poll(tp->follow, 0) < 0) logline(LOGLINE_ERROR, tp->st.applied_seq, "follow: %s", ine_err_msg());
    tp__run_closes(tp);
    tp__contexts(tp);
    self = tp_self(tp);
    if (!tp->listener && self && tp->srv[INE__V1__PLANE__PLANE_CONTROL]) {
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

void tp_state_view_wait(tp_t *tp, uint64_t seq)
{
    if (seq <= tp->st.applied_seq) return;
    if (follow_wait_seq(tp->follow, seq, TP_VIEW_WAIT_MS) < 0)
        logline(LOGLINE_WARN, tp->st.applied_seq, "a peer acted on seq %llu; this node's log is at %llu: %s",
                (unsigned long long)seq, (unsigned long long)tp->st.applied_seq, ine_err_msg());
    if (tp->kick) event_active(tp->kick, 0, 0);
}

/* The log holds the cluster, this node and its control-plane certificate: enough to serve. */
static int tp__ready(void *ud)
{
    tp_t *tp = ud;
    return tp->st.cluster.present && tp_self(tp) && proj_cert_find(&tp->st, tp->node_uid, INE__V1__PLANE__PLANE_CONTROL);
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
    tp__sessions_drop(tp, 0);
    free(tp->peers);
    if (tp->listener) evconnlistener_free(tp->listener);
    tp_etcd_close(tp);
    tp_activator_close(tp);
    for (int p = 1; p <= 2; p++) {
        SSL_CTX_free(tp->srv[p]);
        SSL_CTX_free(tp->cli[p]);
        tp__cred_free(&tp->cur[p]);
        tp__cred_free(&tp->prev[p]);
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
