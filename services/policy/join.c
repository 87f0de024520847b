/* join.c — nodes joining over REST, with a join token as their only credential:
 *   GET  /v1/cluster/ca     the cluster CA's certificate and fingerprint (public, no auth)
 *   POST /v1/nodes/join     {"token", "address", "name"} -> the node's uid and its secrets
 * A join is validated completely first (token known, not expired, unused; address valid and
 * no live node's; name) and a refusal writes nothing. Then one NodeAdded (next uid, the token
 * id) whose request id is derived from the token, so a retry after a lost reply with the same
 * token and address answers the same node again. The reply waits, on a timer of the REST
 * loop (never blocking it), until ine-ca has issued the node's certificates; it carries them
 * sealed under a key derived from the token (lib/jointoken.h), never a secret in clear.
 * Before answering, the node's etcd member is added as a learner (lib/quorum.h: the majority
 * keeps its quorum while the new member is not up; every ine-policy promotes it once it caught
 * up), and the reply says how that member starts: its name, peer URL and --initial-cluster.
 * The new node gets the whole log from its own member (ine-mirror), nothing from us. */
#include "rest.h"
#include "clock.h"
#include "err.h"
#include "jointoken.h"
#include "logline.h"
#include "etcdtls.h"
#include "quorum.h"
#include "sealed.h"
#include "valid.h"

#include "ine/v1/join.pb-c.h"

#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JOIN_WAIT_MS 60000
#define JOIN_POLL_MS 100

typedef struct join_pending {
    policy_t *p;
    struct evhttp_request *req;
    uint32_t uid;
    seal_key *ek;              /* the envelope key, derived from the token (the token is not kept) */
    int64_t deadline_ms;
    int64_t next_member_ms;    /* when to ask etcd again for the node's member */
    struct event *timer;
    struct join_pending *next;
} join_pending;

static join_pending *join__waiting;

static int64_t join__now_ms(void) { return ine_clock_now_us() / 1000; }

int rest_join_public(const char *path)
{
    return path && (!strcmp(path, "/v1/cluster/ca") || !strcmp(path, "/v1/nodes/join"));
}

/* The node's secrets, serialized, sealed and base64-encoded into *b64 (malloc'd). */
static int join__envelope(policy_t *p, uint32_t uid, const seal_key *ek, char **b64)
{
    const proj_cert *cp = proj_cert_find(&p->st, uid, INE__V1__PLANE__PLANE_CONTROL);
    Ine__V1__JoinSecrets js = INE__V1__JOIN_SECRETS__INIT;
    uint8_t sk[SEAL_KEY_LEN], *der = NULL, *buf = NULL, *blob = NULL;
    size_t der_len = 0, len = 0, blob_len = 0;
    char purpose[64], *roots = NULL;
    pki_key *key = NULL;
    int rc;

    *b64 = NULL;
    if (!cp) return ine_err(INE_ENOTFOUND, "node %u has no control-plane certificate", uid);
    GUARD_GOTO(sealed_load_key(p->log, p->seal, cp->issued_seq, &key), out);
    GUARD_GOTO(pki_key_to_der(key, &der, &der_len), out);
    GUARD_GOTO(seal_key_bytes(p->seal, sk), out);
    if (!(roots = proj_roots_pem(&p->st))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    js.seal_key = (ProtobufCBinaryData){sizeof sk, sk};
    js.cert_pem = cp->cert.cert_pem;
    js.chain_pem = cp->cert.chain_pem;
    js.key_der = (ProtobufCBinaryData){der_len, der};
    js.ca_pem = roots;
    js.node_uid = uid;
    js.cluster_uid = p->st.cluster.uid;
    len = ine__v1__join_secrets__get_packed_size(&js);
    if (!(buf = malloc(len))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    ine__v1__join_secrets__pack(&js, buf);
    GUARD_GOTO(jointoken_envelope_purpose(purpose, sizeof purpose, uid), out);
    GUARD_GOTO(seal_seal(ek, purpose, buf, len, &blob, &blob_len), out);
    if (!(*b64 = malloc(4 * ((blob_len + 2) / 3) + 1))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    EVP_EncodeBlock((unsigned char *)*b64, blob, (int)blob_len);
    rc = INE_OK;
out:
    OPENSSL_cleanse(sk, sizeof sk);
    if (buf) seal_free_secret(buf, len);
    pki_secret_free(der, der_len);
    pki_key_free(key);
    free(blob);
    free(roots);
    return rc;
}

static void join__free(join_pending *w)
{
    join_pending **pp = &join__waiting;
    while (*pp && *pp != w) pp = &(*pp)->next;
    if (*pp) *pp = w->next;
    if (w->timer) event_free(w->timer);
    seal_key_free(w->ek);
    free(w);
}

/* 1 once answered (the pending join is finished), 0 to keep waiting. */
static int join__try_answer(join_pending *w)
{
    policy_t *p = w->p;
    rest_ctx c = {.p = p, .req = w->req};
    char *b64 = NULL;
    if (policy_catch_up(p) < 0) logline(LOGLINE_ERROR, p->st.applied_seq, "join: cannot read the log: %s", ine_err_msg());
    if (!proj_cert_find(&p->st, w->uid, INE__V1__PLANE__PLANE_CONTROL) ||
        !proj_cert_find(&p->st, w->uid, INE__V1__PLANE__PLANE_DATA)) {
        if (join__now_ms() < w->deadline_ms) return 0;
        logline(LOGLINE_ERROR, p->st.applied_seq, "join: node %u has no certificates after %d s (is ine-ca running?)", w->uid,
                JOIN_WAIT_MS / 1000);
        rest_error(&c, 504, "certificates_timeout",
                   "node %u was added, but ine-ca did not issue its certificates within %d s; retry the join with the same "
                   "token and address once ine-ca runs", w->uid, JOIN_WAIT_MS / 1000);
        return 1;
    }
    const proj_node *n = proj_node_find(&p->st, w->uid);
    char peer_url[300], listen_url[300], ic[4096], name[32];
    int rc;
    if (!p->etcd) {
        rest_error(&c, 409, "no_consensus", "this node commits the log locally (no etcd.conf): a node can join only a cluster "
                   "whose log is committed through etcd");
        return 1;
    }
    if (!n || etcdtls_peer_urls(n->address, p->etcd_peer_port, p->etcd_peer_local_port, peer_url, sizeof peer_url, listen_url,
                                sizeof listen_url) < 0) {
        rest_error(&c, 500, "internal", "node %u has no address to give its etcd member", w->uid);
        return 1;
    }
    if (join__now_ms() < w->next_member_ms) return 0;
    rc = quorum_member_add(p->etcd, w->uid, peer_url, ic, sizeof ic);
    /* etcd refuses a new member until every voting one has been connected for 5 s, and answers
     * nothing without quorum: both may pass, so keep trying (each second) until the deadline. */
    if (rc == INE_EUNAVAIL && join__now_ms() < w->deadline_ms) {
        w->next_member_ms = join__now_ms() + 1000;
        return 0;
    }
    if (rc < 0) {
        logline(LOGLINE_ERROR, p->st.applied_seq, "join: node %u's etcd member: %s", w->uid, ine_err_msg());
        if (rc == INE_EEXIST) rest_error(&c, 409, "member_taken", "node %u was added, but %s", w->uid, ine_err_msg());
        else if (rc == INE_EAGAIN) rest_error(&c, 409, "member_joining", "node %u was added, but %s (same token and address)",
                                             w->uid, ine_err_msg());
        else rest_error(&c, 503, "no_quorum", "node %u was added, but adding its etcd member failed (%s); retry the join "
                        "with the same token and address", w->uid, ine_err_msg());
        return 1;
    }
    if (join__envelope(p, w->uid, w->ek, &b64) < 0) {
        logline(LOGLINE_ERROR, p->st.applied_seq, "join: node %u: %s", w->uid, ine_err_msg());
        rest_error(&c, 500, "internal", "cannot prepare node %u's secrets: %s", w->uid, ine_err_msg());
        return 1;
    }
    snprintf(name, sizeof name, "node%u", w->uid);
    rest_reply(&c, 200, json_pack("{s:I, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s}}", "node_uid", (json_int_t)w->uid, "cluster_uid",
                                  p->st.cluster.uid, "secrets", b64, "etcd", "name", name, "peer_url", peer_url, "listen_peer_url",
                                  listen_url, "initial_cluster", ic, "prefix", p->etcd_prefix));
    logline(LOGLINE_INFO, p->st.applied_seq, "join: node %u received its certificates (sealed)", w->uid);
    free(b64);
    return 1;
}

static void join__tick(evutil_socket_t fd, short what, void *arg)
{
    join_pending *w = arg;
    (void)fd;
    (void)what;
    if (join__try_answer(w)) join__free(w);
}

/* Answer now if the certificates are there, else wait for them on a timer. */
static void join__wait(rest_ctx *c, uint32_t uid, const char *token)
{
    join_pending *w = calloc(1, sizeof *w);
    struct timeval tv = {0, JOIN_POLL_MS * 1000};
    struct evhttp_connection *conn = evhttp_request_get_connection(c->req);
    if (!w) return rest_error(c, 500, "internal", "out of memory");
    *w = (join_pending){.p = c->p, .req = c->req, .uid = uid, .deadline_ms = join__now_ms() + JOIN_WAIT_MS};
    if (jointoken_envelope_key(token, &w->ek) < 0) {
        free(w);
        return rest_error(c, 500, "internal", "cannot derive the envelope key: %s", ine_err_msg());
    }
    w->next = join__waiting;
    join__waiting = w;
    if (join__try_answer(w)) return join__free(w);
    /* The connection must outlive the wait (evhttp's default is shorter). */
    if (conn) evhttp_connection_set_timeout(conn, JOIN_WAIT_MS / 1000 + 30);
    if (!(w->timer = event_new(c->p->base, -1, EV_PERSIST, join__tick, w)) || event_add(w->timer, &tv)) {
        rest_error(c, 500, "internal", "cannot wait for the certificates");
        join__free(w);
    }
}

static void join__ca(rest_ctx *c)
{
    const proj_state *st = &c->p->st;
    if (evhttp_request_get_command(c->req) != EVHTTP_REQ_GET)
        return rest_error(c, 405, "method_not_allowed", "use GET on /v1/cluster/ca");
    if (!st->ca.present) return rest_error(c, 503, "no_ca", "the cluster has no CA yet");
    rest_reply(c, 200, json_pack("{s:s, s:s}", "ca_pem", st->ca.cert.cert_pem, "fingerprint_sha256", st->ca.cert.fingerprint));
}

static void join__post(rest_ctx *c)
{
    static const char *const allowed[] = {"token", "address", "name", NULL};
    policy_t *p = c->p;
    const proj_join_token *k = NULL;
    const char *token = NULL, *address = NULL, *name = NULL;
    Ine__V1__NodeAdded na = INE__V1__NODE_ADDED__INIT;
    evlog_event ev = INE__V1__EVENT__INIT;
    char reqid[64], token_id[JOINTOKEN_ID_LEN + 1], dname[32];
    uint32_t uid = 1;
    uint64_t seq = 0;
    jointoken_verdict v;
    int rc;
    json_t *o = rest_body_object(c, allowed, 0);

    if (!o) return;
    if (rest_get_string(c, o, "token", &token) < 0 || rest_get_string(c, o, "address", &address) < 0 ||
        rest_get_string(c, o, "name", &name) < 0)
        goto out;
    if (!token || !address) {
        rest_error(c, 400, "missing_field", "a join needs token and address");
        goto out;
    }
    v = jointoken_check(&p->st, token, ine_clock_now(), &k);
    if (v == JOINTOKEN_USED) {
        const proj_node *n = proj_node_find(&p->st, k->used_by);
        /* The same token and address again: a retry after a lost reply gets the same node. */
        if (n && !n->removed && !strcmp(n->address, address)) {
            logline(LOGLINE_INFO, p->st.applied_seq, "join: retry for node %u (%s) with token %s", n->uid, address, k->token_id);
            join__wait(c, n->uid, token);
            goto out;
        }
        logline(LOGLINE_WARN, p->st.applied_seq, "join refused for %s: token %s was already used by node %u", address,
                k->token_id, k->used_by);
        rest_error(c, 403, "token_used", "this join token was already used (by node %u); ask for a new one (inectl node token create)",
                   k->used_by);
        goto out;
    }
    if (v != JOINTOKEN_OK) {
        logline(LOGLINE_WARN, p->st.applied_seq, "join refused for %s: %s", address, jointoken_verdict_code(v));
        if (v == JOINTOKEN_MALFORMED)
            rest_error(c, 401, "token_malformed", "the join token is malformed: expected '%s' and 64 lowercase hex digits",
                       JOINTOKEN_PREFIX);
        else if (v == JOINTOKEN_UNKNOWN)
            rest_error(c, 401, "token_unknown", "this cluster never issued that join token");
        else
            rest_error(c, 403, "token_expired", "the join token %s expired; ask for a new one (inectl node token create)",
                       k->token_id);
        goto out;
    }
    if (!valid_address(address)) {
        rest_error(c, 400, "bad_address", "address '%s' is not an IP address or host name", address);
        goto out;
    }
    for (size_t i = 0; i < p->st.n_nodes; i++) {
        const proj_node *n = &p->st.nodes[i];
        if (!n->removed && !strcmp(n->address, address)) {
            rest_error(c, 409, "address_taken", "address %s is already node %u's", address, n->uid);
            goto out;
        }
        if (n->uid >= uid) uid = n->uid + 1;
    }
    if (name && !valid_name(name)) {
        rest_error(c, 400, "bad_name", "node name '%s' is invalid: use 1-64 letters, digits, '-', '_' or '.'", name);
        goto out;
    }
    if (!p->st.ca.present) {
        rest_error(c, 503, "no_ca", "the cluster has no CA yet");
        goto out;
    }
    if (!p->etcd) {
        /* The new node could never get the log: it comes only from its own etcd member. */
        rest_error(c, 409, "no_consensus", "this node commits the log locally (no etcd.conf in %s): a node can join only a "
                   "cluster whose log is committed through etcd", p->data_dir);
        goto out;
    }
    snprintf(token_id, sizeof token_id, "%s", k->token_id);
    snprintf(dname, sizeof dname, "node:%u", uid);
    na.node_uid = uid;
    na.address = (char *)address;
    na.name = (char *)(name ? name : dname);
    na.join_token_id = token_id;
    ev.body_case = INE__V1__EVENT__BODY_NODE_ADDED;
    ev.node_added = &na;
    snprintf(reqid, sizeof reqid, POLICY_REQID_PREFIX "join/%s", token_id);
    rc = commit_append_one(p->commit, &ev, "join", reqid, &seq);
    if (rc < 0) {
        if (rc == INE_EUNAVAIL) rest_error(c, 503, "no_quorum", "%s", ine_err_msg());
        else rest_error(c, rc == INE_EFULL ? 507 : 500, rc == INE_EFULL ? "log_full" : "internal", "%s", ine_err_msg());
        goto out;
    }
    if (rc == 0) {
        logline(LOGLINE_INFO, seq, "join: node %u (%s) added with token %s", uid, address, token_id);
    }
    if (policy_catch_up(p) < 0) logline(LOGLINE_ERROR, seq, "catch-up after append: %s", ine_err_msg());
    if (rc == 1) {
        /* Another writer recorded this token's join in between: answer only for its node. */
        const proj_join_token *again = proj_join_token_find(&p->st, token_id);
        const proj_node *n = again ? proj_node_find(&p->st, again->used_by) : NULL;
        if (!n || strcmp(n->address, address)) {
            rest_error(c, 403, "token_used", "this join token was already used (by node %u)", n ? n->uid : 0);
            goto out;
        }
        uid = n->uid;
    }
    join__wait(c, uid, token);
out:
    json_decref(o);
}

void rest_join_route(rest_ctx *c, const char *path)
{
    if (!strcmp(path, "/v1/cluster/ca")) return join__ca(c);
    if (evhttp_request_get_command(c->req) != EVHTTP_REQ_POST)
        return rest_error(c, 405, "method_not_allowed", "use POST on /v1/nodes/join");
    join__post(c);
}

int rest_join_stop(policy_t *p)
{
    int n = 0;
    (void)p;
    for (; join__waiting; n++) {
        join_pending *w = join__waiting;
        rest_ctx c = {.p = w->p, .req = w->req};
        rest_error(&c, 503, "shutting_down", "ine-policy is stopping; retry the join with the same token and address");
        join__free(w);
    }
    return n;
}
