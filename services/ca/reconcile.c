/* reconcile.c — what the log and the clock ask of the CA, done in this order each time:
 * the cluster CA if there is none, pending rotation requests, certificates for nodes that
 * lack them, the customer-expiry fallback, then scheduled rotation. Each step is one atomic
 * append whose request id is derived from what it acts on, so repeating a step (after a crash,
 * or because the state has not caught up yet) never writes it twice. */
#include "ca.h"
#include "cacreate.h"
#include "clock.h"
#include "err.h"
#include "logline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Only for a log without a CA: `inectl cluster create` records the CA with the cluster, so
 * ine-ca normally finds it. */
static int ca__create_ca(ca_t *ca)
{
    pki_ca_params p = {.cluster_name = ca->st.cluster.name, .cluster_uid = ca->st.cluster.uid,
                       .key_bits = ca->ca_key_bits, .now = ine_clock_now()};
    ca_item it = {0};
    const Ine__V1__CertInfo *ci;
    char reqid[128], ts[40];
    uint64_t seq;
    int rc;

    GUARD(cacreate_event(&p, "ine-ca", "ine-ca", &it.ev, &it.key_der, &it.key_der_len, NULL));
    ci = it.ev->ca_created->ca;
    /* One CA per cluster, even if two starts race or a crash hides the first attempt's reply. */
    snprintf(reqid, sizeof reqid, "ca-create/%s", ca->st.cluster.uid);
    rc = ca_append(ca, &it, 1, reqid, &seq);
    if (rc >= 0)
        logline(LOGLINE_INFO, seq, "cluster CA %s: serial %s, fingerprint %s, valid until %s",
                rc ? "already recorded" : "created", ci->serial_hex, ci->fingerprint_sha256,
                ine_clock_fmt(ci->not_after * INE_USEC_PER_SEC, ts, sizeof ts));
    ca_items_free(&it, 1);
    return rc < 0 ? rc : INE_OK;
}

static int ca__live(const proj_node *n) { return n && !n->removed; }

/* A plane served by one customer certificate on every live node that has one: a node that
 * joins later gets the same certificate and key, so the upload keeps applying to every node. */
static const proj_cert *ca__customer_plane(const proj_state *st, int plane)
{
    const proj_cert *cust = NULL;
    for (size_t i = 0; i < st->n_certs; i++) {
        const proj_cert *c = &st->certs[i];
        if (c->plane != plane || !ca__live(proj_node_find(st, c->node_uid))) continue;
        if (c->source != INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER) return NULL;
        if (cust && strcmp(cust->cert.fingerprint, c->cert.fingerprint)) return NULL;
        cust = c;
    }
    return cust;
}

/* A deep copy of a message, through its wire form. */
static ProtobufCMessage *ca__clone(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    ProtobufCMessage *c;
    if (!buf) return NULL;
    protobuf_c_message_pack(m, buf);
    c = protobuf_c_message_unpack(m->descriptor, NULL, n, buf);
    free(buf);
    return c;
}

/* The customer certificate of `src` again, for one more node. */
static int ca__customer_copy(ca_t *ca, const proj_cert *src, uint32_t node_uid, ca_item *out)
{
    evlog_event *ev = NULL;
    const Ine__V1__CertInfo *info = NULL;
    Ine__V1__CertificateIssued *ci;
    pki_key *key = NULL;
    int rc;

    GUARD(evlog_read(ca->log, src->issued_seq, &ev));
    if (ev->body_case == INE__V1__EVENT__BODY_CUSTOMER_CERTIFICATE_UPLOADED) info = ev->customer_certificate_uploaded->cert;
    else if (ev->body_case == INE__V1__EVENT__BODY_CERTIFICATE_ISSUED) info = ev->certificate_issued->cert;
    if (!info) {
        rc = ine_err(INE_ECORRUPT, "event %llu does not carry a certificate", (unsigned long long)src->issued_seq);
        goto out;
    }
    GUARD_GOTO(ca_load_key(ca, src->issued_seq, &key), out);
    if (!(ci = calloc(1, sizeof *ci))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    ine__v1__certificate_issued__init(ci);
    ci->node_uid = node_uid;
    ci->plane = src->plane;
    ci->source = INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER;
    ci->reason = INE__V1__ISSUE_REASON__ISSUE_REASON_CUSTOMER_UPLOAD;
    if (!(out->ev = ca_event_new(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, ci, "ine-ca"))) {
        free(ci);
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    if (!(ci->cert = (Ine__V1__CertInfo *)ca__clone(&info->base))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    rc = pki_key_to_der(key, &out->key_der, &out->key_der_len);
out:
    pki_key_free(key);
    evlog_event_free(ev);
    return rc;
}

/* Append issued items plus, for a rotation, its CertificatesRotated, as one transaction. */
static int ca__commit(ca_t *ca, ca_item *items, size_t n, const char *rotation_id, unsigned planes, int reason,
                      const char *actor, const char *reqid, uint64_t *done_seq)
{
    uint64_t first = 0;
    int rc;
    if (rotation_id) {
        Ine__V1__CertificatesRotated *cr = calloc(1, sizeof *cr);
        if (!cr) return ine_err(INE_ENOMEM, "out of memory");
        ine__v1__certificates_rotated__init(cr);
        cr->rotation_id = strdup(rotation_id);
        cr->reason = reason;
        /* The certificates only: a fallback's batch also carries its CustomerExpiryFallback. */
        for (size_t i = 0; i < n; i++)
            cr->certificates += items[i].ev->body_case == INE__V1__EVENT__BODY_CERTIFICATE_ISSUED;
        cr->planes = calloc(2, sizeof *cr->planes);
        for (int p = PROJ_PLANE_MIN; cr->planes && p <= PROJ_PLANE_MAX; p++)
            if (planes & PROJ_PLANE_BIT(p)) cr->planes[cr->n_planes++] = p;
        if (!(items[n].ev = ca_event_new(INE__V1__EVENT__BODY_CERTIFICATES_ROTATED, cr, actor)) || !cr->rotation_id ||
            !cr->planes) {
            if (!items[n].ev) protobuf_c_message_free_unpacked(&cr->base, NULL);
            return ine_err(INE_ENOMEM, "out of memory");
        }
        n++;
    }
    if (n == 0) return INE_OK;
    rc = ca_append(ca, items, n, reqid, &first);
    if (rc < 0) return rc;
    if (done_seq) *done_seq = first + n - 1;
    return INE_OK;
}

static void ca__log_issued(const ca_item *items, size_t n, uint64_t first, const char *why)
{
    char ts[40];
    for (size_t i = 0; i < n; i++) {
        const Ine__V1__CertificateIssued *ci = items[i].ev->certificate_issued;
        if (items[i].ev->body_case != INE__V1__EVENT__BODY_CERTIFICATE_ISSUED) continue;
        logline(LOGLINE_INFO, first + i, "%s: node %u %s certificate serial %s, valid until %s", why, ci->node_uid,
                proj_plane_name(ci->plane), ci->cert->serial_hex, ine_clock_fmt(ci->cert->not_after * INE_USEC_PER_SEC, ts, sizeof ts));
    }
}

static int ca__issue_missing(ca_t *ca)
{
    ca_target *t = calloc(ca->st.n_nodes * PROJ_PLANE_MAX + 1, sizeof *t);
    ca_item *items = NULL;
    size_t n = 0, k = 0, cap = 0;
    char *ids = NULL, reqid[64], dig[33];
    int rc = INE_OK;

    if (!t) return ine_err(INE_ENOMEM, "out of memory");
    for (size_t i = 0; i < ca->st.n_nodes; i++) {
        const proj_node *nd = &ca->st.nodes[i];
        if (!ca__live(nd)) continue;
        for (int p = PROJ_PLANE_MIN; p <= PROJ_PLANE_MAX; p++)
            if (!proj_cert_find(&ca->st, nd->uid, p)) t[n++] = (ca_target){nd, p};
    }
    if (n == 0) goto out;
    cap = n * 40 + 1;
    items = calloc(n + 1, sizeof *items);
    ids = calloc(1, cap);
    if (!items || !ids) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    /* Self-signed for planes the cluster CA serves; a copy of the customer's where one is in use. */
    for (size_t i = 0; i < n; i++) {
        const proj_cert *cust = ca__customer_plane(&ca->st, t[i].plane);
        size_t len = strlen(ids);
        snprintf(ids + len, cap - len, "%u.%d.%llu;", t[i].node->uid, t[i].plane, (unsigned long long)t[i].node->added_seq);
        if (cust) {
            GUARD_GOTO(ca__customer_copy(ca, cust, t[i].node->uid, &items[k]), out);
            k++;
            t[i].node = NULL;
        }
    }
    {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (t[i].node) t[m++] = t[i];
        GUARD_GOTO(ca_issue(ca, t, m, INE__V1__ISSUE_REASON__ISSUE_REASON_INITIAL, NULL, "ine-ca", items + k), out);
        k += m;
    }
    ca_digest_id(ids, dig);
    snprintf(reqid, sizeof reqid, "initial/%s", dig);
    {
        uint64_t first = 0;
        rc = ca_append(ca, items, k, reqid, &first);
        if (rc == 0) ca__log_issued(items, k, first, "initial");
        if (rc > 0) rc = INE_OK;
    }
out:
    if (items) ca_items_free(items, n + 1);
    free(items);
    free(ids);
    free(t);
    return rc;
}

/* Rotate the targets under one rotation id, in one transaction with its CertificatesRotated. */
static int ca__rotate_targets(ca_t *ca, ca_target *t, size_t n, const char *rotation_id, unsigned planes, int reason,
                              const char *actor, ca_item *extra_first, uint64_t *done_seq)
{
    ca_item *items = calloc(n + 2, sizeof *items);
    size_t k = 0;
    char reqid[160];
    uint64_t done = 0;
    int rc;
    if (!items) return ine_err(INE_ENOMEM, "out of memory");
    if (extra_first) items[k++] = *extra_first, *extra_first = (ca_item){0};
    GUARD_GOTO(ca_issue(ca, t, n, reason, rotation_id, actor, items + k), out);
    snprintf(reqid, sizeof reqid, "rotation/%s", rotation_id);
    GUARD_GOTO(ca__commit(ca, items, k + n, rotation_id, planes, reason, actor, reqid, &done), out);
    if (done_seq) *done_seq = done;
    ca__log_issued(items, k + n, done - (k + n), proj_reason_name(reason));
out:
    ca_items_free(items, n + 2);
    free(items);
    return rc;
}

int ca_complete_rotation(ca_t *ca, const char *rotation_id, uint64_t *done_seq)
{
    const proj_rotation *r = proj_rotation_find(&ca->st, rotation_id);
    ca_target *t;
    size_t n = 0;
    unsigned planes;
    char id[128], actor[64] = "ine-ca";
    int reason, rc;

    if (!r) return ine_err(INE_ENOTFOUND, "no pending rotation %s", rotation_id);
    planes = r->planes ? r->planes : PROJ_PLANES_ALL;
    reason = r->reason;
    snprintf(id, sizeof id, "%s", r->rotation_id);
    if (!(t = calloc(ca->st.n_nodes * PROJ_PLANE_MAX + 1, sizeof *t))) return ine_err(INE_ENOMEM, "out of memory");
    for (size_t i = 0; i < ca->st.n_nodes; i++) {
        const proj_node *nd = &ca->st.nodes[i];
        int wanted = r->n_node_uids == 0;
        for (size_t j = 0; j < r->n_node_uids; j++) wanted |= r->node_uids[j] == nd->uid;
        if (!wanted || !ca__live(nd)) continue;
        for (int p = PROJ_PLANE_MIN; p <= PROJ_PLANE_MAX; p++) {
            const proj_cert *c = proj_cert_find(&ca->st, nd->uid, p);
            /* Customer certificates are never rotated. */
            if (!(planes & PROJ_PLANE_BIT(p)) || (c && c->source == INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER)) continue;
            t[n++] = (ca_target){nd, p};
        }
    }
    {
        /* The actor who asked owns the whole rotation in the audit trail. */
        evlog_event *req = NULL;
        if (evlog_read(ca->log, r->seq, &req) == 0 && req->actor && *req->actor) snprintf(actor, sizeof actor, "%s", req->actor);
        evlog_event_free(req);
    }
    rc = ca__rotate_targets(ca, t, n, id, planes, reason, actor, NULL, done_seq);
    free(t);
    return rc;
}

static int ca__fallback(ca_t *ca)
{
    int64_t now = ine_clock_now();
    for (int p = PROJ_PLANE_MIN; p <= PROJ_PLANE_MAX; p++) {
        ca_target *t = NULL;
        size_t n = 0;
        const proj_cert *cust = NULL;
        uint64_t newest = 0;
        for (size_t i = 0; i < ca->st.n_certs; i++) {
            const proj_cert *c = &ca->st.certs[i];
            if (c->plane != p || c->source != INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER) continue;
            if (!ca__live(proj_node_find(&ca->st, c->node_uid))) continue;
            if (c->cert.not_after - now > CA_FALLBACK_BEFORE_S) continue;
            if (!t && !(t = calloc(ca->st.n_certs + 1, sizeof *t))) return ine_err(INE_ENOMEM, "out of memory");
            t[n++] = (ca_target){proj_node_find(&ca->st, c->node_uid), p};
            cust = c;
            if (c->issued_seq > newest) newest = c->issued_seq;
        }
        if (n) {
            char rid[160], dig[33], key[256];
            ca_item fb = {0};
            Ine__V1__CustomerExpiryFallback *f = calloc(1, sizeof *f);
            uint64_t done = 0;
            int rc;
            /* The upload's seq too: the same certificate uploaded again after a fallback is a
             * new upload and falls back again, instead of colliding with the first fallback's
             * request id (which made every tick regenerate keys only to discard them). */
            snprintf(key, sizeof key, "fallback/%d/%s/%llu", p, cust->cert.fingerprint, (unsigned long long)newest);
            ca_digest_id(key, dig);
            snprintf(rid, sizeof rid, "fallback-%s", dig);
            if (!f) {
                free(t);
                return ine_err(INE_ENOMEM, "out of memory");
            }
            ine__v1__customer_expiry_fallback__init(f);
            f->plane = p;
            f->customer_fingerprint_sha256 = strdup(cust->cert.fingerprint);
            f->customer_not_after = cust->cert.not_after;
            f->rotation_id = strdup(rid);
            fb.ev = ca_event_new(INE__V1__EVENT__BODY_CUSTOMER_EXPIRY_FALLBACK, f, "ine-ca");
            if (!fb.ev || !f->customer_fingerprint_sha256 || !f->rotation_id) {
                if (!fb.ev) protobuf_c_message_free_unpacked(&f->base, NULL);
                ca_items_free(&fb, 1);
                free(t);
                return ine_err(INE_ENOMEM, "out of memory");
            }
            logline(LOGLINE_WARN, 0, "customer %s certificate %s expires at %s (within 5 days): replacing it with self-signed ones",
                    proj_plane_name(p), cust->cert.serial_hex, ine_clock_fmt(cust->cert.not_after * INE_USEC_PER_SEC, key, sizeof key));
            rc = ca__rotate_targets(ca, t, n, rid, PROJ_PLANE_BIT(p), INE__V1__ISSUE_REASON__ISSUE_REASON_CUSTOMER_EXPIRY_FALLBACK,
                                    "ine-ca", &fb, &done);
            ca_items_free(&fb, 1);
            free(t);
            GUARD(rc);
        }
    }
    return INE_OK;
}

static int ca__scheduled(ca_t *ca)
{
    int64_t now = ine_clock_now();
    int64_t period = ca->st.cluster.rotation_period_s > 0 ? ca->st.cluster.rotation_period_s : CA_DEFAULT_ROTATION_S;
    ca_target *t = calloc(ca->st.n_certs + 1, sizeof *t);
    size_t n = 0, cap = ca->st.n_certs * 40 + 1;
    char *ids = calloc(1, cap), rid[64], dig[33];
    unsigned planes = 0;
    int rc = INE_OK;

    if (!t || !ids) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < ca->st.n_certs; i++) {
        const proj_cert *c = &ca->st.certs[i];
        const proj_node *nd = proj_node_find(&ca->st, c->node_uid);
        size_t len = strlen(ids);
        /* Age counts from issuance (notBefore is backdated a minute); a clock that jumped
         * backwards gives a negative age and rotates nothing. */
        if (c->source != INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED || !ca__live(nd)) continue;
        if (now - (c->cert.not_before + PKI_BACKDATE_S) < period) continue;
        t[n++] = (ca_target){nd, c->plane};
        planes |= PROJ_PLANE_BIT(c->plane);
        snprintf(ids + len, cap - len, "%u.%d.%llu;", c->node_uid, c->plane, (unsigned long long)c->issued_seq);
    }
    if (n) {
        ca_digest_id(ids, dig);
        snprintf(rid, sizeof rid, "scheduled-%s", dig);
        rc = ca__rotate_targets(ca, t, n, rid, planes, INE__V1__ISSUE_REASON__ISSUE_REASON_SCHEDULED, "ine-ca", NULL, NULL);
    }
out:
    free(t);
    free(ids);
    return rc;
}

int ca_reconcile(ca_t *ca)
{
    GUARD(ca_catch_up(ca));
    if (!ca->st.cluster.present) return INE_OK;
    if (!ca->st.ca.present) GUARD(ca__create_ca(ca));
    GUARD(ca_load_ca(ca));
    while (ca->st.n_rotations > 0) {
        char id[128];
        snprintf(id, sizeof id, "%s", ca->st.rotations[0].rotation_id);
        GUARD(ca_complete_rotation(ca, id, NULL));
        if (ca->st.n_rotations > 0 && !strcmp(ca->st.rotations[0].rotation_id, id))
            return ine_err(INE_ERR, "rotation %s is still pending after completing it", id);
    }
    GUARD(ca__issue_missing(ca));
    GUARD(ca__fallback(ca));
    GUARD(ca__scheduled(ca));
    return INE_OK;
}
