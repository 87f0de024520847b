/* tls.c — the TLS room: the only file that builds an SSL_CTX, checks a peer's identity,
 * drives a handshake, or swaps credentials and sessions. Per plane, a server and a client
 * context from the node's current certificate (unsealed from the log) and a trust store of
 * the bundle's roots, rebuilt when either changes (new handshakes use them at once, open
 * connections keep theirs); SNI picks the plane of an accepted connection; a per-handshake
 * callback presents the previous certificate to a peer that trusts only its root; client
 * sessions are kept per peer node and plane for resumption. */
#include "transport.h"
#include "err.h"
#include "logline.h"
#include "pki.h"
#include "sealed.h"
#include "tlsconf.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *tp__sni(tp_plane plane) { return plane == TP_PLANE_DATA ? "data.ine" : "control.ine"; }

/* --- identity ------------------------------------------------------------------------------- */

int tp_peer_identity(tp_t *tp, SSL *ssl, tp_plane plane, uint32_t *node, char *why, size_t why_len)
{
    X509 *x = SSL_get0_peer_certificate(ssl);
    char cluster[80];
    int cplane = 0;
    *node = 0;
    if (!x) return snprintf(why, why_len, "no certificate"), -1;
    if (pki_x509_node_id(x, cluster, sizeof cluster, node, &cplane)) {
        const proj_node *n = proj_node_find(&tp->st, *node);
        if (strcmp(cluster, tp->st.cluster.uid)) return snprintf(why, why_len, "certificate of another cluster (%s)", cluster), -1;
        if (!n || n->removed) return snprintf(why, why_len, "node %u is not a node of this cluster", *node), -1;
        if ((tp_plane)cplane != plane)
            return snprintf(why, why_len, "a %s-plane certificate cannot open a %s-plane stream",
                            cplane == TP_PLANE_DATA ? "data" : "control",
                            plane == TP_PLANE_DATA ? "data" : "control"), -1;
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
                    plane == TP_PLANE_DATA ? "data" : "control"), -1;
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
int tp_tls_handshake(tp_conn *c, char *why, size_t len)
{
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) return 1;
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ: tp_conn_want(c, 1, 0); return 0;
    case SSL_ERROR_WANT_WRITE: tp_conn_want(c, 0, 1); return 0;
    default: tp__tls_reason(c->ssl, why, len); return -1;
    }
}

/* --- accepting: the plane by SNI, the certificate by the peer's roots ------------------------ */

static int tp__servername_cb(SSL *ssl, int *al, void *arg)
{
    tp_t *tp = arg;
    tp_conn *c = SSL_get_app_data(ssl);
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    (void)al;
    c->plane = sni && !strcmp(sni, "data.ine") ? TP_PLANE_DATA : TP_PLANE_CONTROL;
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

static int tp__cert_cb(SSL *ssl, void *arg)
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

/* --- credentials ------------------------------------------------------------------------------- */

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
static void tp__cred_swap(tp_t *tp, tp_plane plane, tp_cred *next)
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

/* Resumption of the streams we open to other nodes: per peer node and plane, the last
 * session it gave us (a TLS 1.3 ticket, a TLS 1.2 session id). A resumed handshake is still
 * mutual TLS, but skips the certificates and both RSA signatures; the session carries the
 * peer certificate of the full handshake it came from, so tp_peer_identity checks the same
 * identity on every stream. A new certificate applies to the next stream at once: both
 * sides drop what they resumed from whenever a context is rebuilt (our certificate, or the
 * trust bundle, changed) — the client its cached sessions (tp__sessions_drop), the server
 * every ticket it issued before (a new session id context, see tp__contexts). */
static void tp__sessions_drop(tp_t *tp, tp_plane plane)
{
    for (size_t i = 0; i < tp->n_peers; i++) {
        TP_FOR_PLANES(p) {
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

static void tp__session_offer(tp_conn *c)
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

static int tp__build_plane(tp_t *tp, tp_plane plane, const proj_cert *c, X509_STORE *trust, const STACK_OF(X509_NAME) *names)
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
    tlsconf_drop_roots(chain); /* also what tp__cert_cb presents with a previous certificate */
    GUARD_GOTO(sealed_load_key(tp->log, tp->seal, c->issued_seq, &key), out);
    srv = tlsconf_ctx_new(TLSCONF_SERVER, leaf, chain, pki_evp(key), trust);
    cli = tlsconf_ctx_new(TLSCONF_CLIENT, leaf, chain, pki_evp(key), trust);
    if (!srv || !cli) {
        rc = ine_err(INE_ECRYPTO, "cannot build the %s-plane TLS context: %s", proj_plane_name(plane), ine_err_msg());
        goto out;
    }
    SSL_CTX_set_tlsext_servername_callback(srv, tp__servername_cb);
    SSL_CTX_set_tlsext_servername_arg(srv, tp);
    /* Tell peers which roots we trust (CertificateRequest; ClientHello certificate_authorities
     * in TLS 1.3) and let their list pick the certificate we present. */
    SSL_CTX_set0_CA_list(srv, SSL_dup_CA_list(names));
    SSL_CTX_set0_CA_list(cli, SSL_dup_CA_list(names));
    SSL_CTX_set_cert_cb(srv, tp__cert_cb, tp);
    SSL_CTX_set_cert_cb(cli, tp__cert_cb, tp);
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

unsigned tp_tls_refresh(tp_t *tp)
{
    char key[sizeof tp->trust_key];
    X509_STORE *trust = NULL;
    STACK_OF(X509_NAME) *names = NULL;
    int trust_changed;
    unsigned rebuilt = 0;
    tp__trust_key(&tp->st, key, sizeof key);
    trust_changed = strcmp(key, tp->trust_key) != 0;
    TP_FOR_PLANES(p) {
        const proj_cert *c = proj_cert_find(&tp->st, tp->node_uid, p);
        if (!c || (!trust_changed && c->issued_seq == tp->ctx_cert_seq[p])) continue;
        if (!trust && !(trust = tlsconf_trust_from_bundle(&tp->st))) return 0;
        if (!names && !(names = tp__bundle_names(&tp->st))) break;
        if (tp__build_plane(tp, p, c, trust, names) < 0) {
            logline(LOGLINE_ERROR, c->issued_seq, "%s", ine_err_msg());
            continue;
        }
        rebuilt |= 1u << p;
        logline(LOGLINE_INFO, c->issued_seq, "now serving %s-plane certificate %s", proj_plane_name(p), tp->serving_serial[p]);
    }
    if (rebuilt) {
        /* Tickets name the session id context they were issued under: a new one on every
         * rebuild makes the server refuse (fall back to a full handshake for) sessions from
         * before it, whichever plane's context sealed them. Both planes share it, because
         * OpenSSL checks it before the SNI callback switches to the data-plane context. */
        char sid[32];
        int n = snprintf(sid, sizeof sid, "ine-transport/%u", ++tp->ctx_gen);
        TP_FOR_PLANES(p)
            if (tp->srv[p]) SSL_CTX_set_session_id_context(tp->srv[p], (const unsigned char *)sid, (unsigned)n);
    }
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    /* A previous certificate is only useful while its root is trusted. */
    TP_FOR_PLANES(p) {
        if (!trust_changed || !tp->prev[p].leaf || proj_bundle_find(&tp->st, tp->prev[p].root_fp)) continue;
        logline(LOGLINE_INFO, tp->st.trust_changed_seq, "%s plane: certificate %s dropped, its root left the trust bundle",
                proj_plane_name(p), tp->prev[p].serial);
        tp__cred_free(&tp->prev[p]);
    }
    if (trust) {
        X509_STORE_free(trust);
        if (trust_changed) logline(LOGLINE_INFO, tp->st.trust_changed_seq, "trust bundle now holds %zu root(s)", tp->st.n_bundle);
        snprintf(tp->trust_key, sizeof tp->trust_key, "%s", key);
    }
    return rebuilt;
}

SSL *tp_tls_client(tp_conn *c, tp_plane plane)
{
    SSL *ssl = c->tp->cli[plane] ? SSL_new(c->tp->cli[plane]) : NULL;
    if (!ssl) {
        ERR_clear_error();
        return NULL;
    }
    c->ssl = ssl;
    c->plane = plane;
    SSL_set_app_data(ssl, c);
    SSL_set_tlsext_host_name(ssl, tp__sni(plane));
    tp__session_offer(c);
    SSL_set_connect_state(ssl);
    return ssl;
}

SSL *tp_tls_server(tp_t *tp)
{
    SSL *ssl = tp->srv[TP_PLANE_CONTROL] ? SSL_new(tp->srv[TP_PLANE_CONTROL]) : NULL;
    if (!ssl) ERR_clear_error();
    else SSL_set_accept_state(ssl);
    return ssl;
}

void tp_tls_forget(tp_t *tp, uint32_t node)
{
    for (size_t i = 0; i < tp->n_peers; i++) {
        if (node && tp->peers[i].node_uid != node) continue;
        TP_FOR_PLANES(p) {
            SSL_SESSION_free(tp->peers[i].session[p]);
            tp->peers[i].session[p] = NULL;
        }
    }
}

void tp_tls_close(tp_t *tp)
{
    tp_tls_forget(tp, 0);
    TP_FOR_PLANES(p) {
        SSL_CTX_free(tp->srv[p]);
        SSL_CTX_free(tp->cli[p]);
        tp->srv[p] = tp->cli[p] = NULL;
        tp__cred_free(&tp->cur[p]);
        tp__cred_free(&tp->prev[p]);
    }
}
