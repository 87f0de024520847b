/* updates.c — building the stream's messages: one Update per log record, its topic, and the
 * checks on topics and endpoints. The subscriber lives in updates_sub.c.
 *
 * Bodies are filled field by field from the public parts of events (never a CertInfo's PEM,
 * never a sealed_* field), so no key can reach a subscriber whatever the schema grows. */
#include "updates.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "datadir.h"

static const char *updates__plane(int plane)
{
    return plane == INE__V1__PLANE__PLANE_CONTROL ? "cp" : plane == INE__V1__PLANE__PLANE_DATA ? "dp" : "any";
}

/* "cp", "dp", "cp+dp" for a list of planes (empty: every plane). */
static void updates__planes(const Ine__V1__Plane *p, size_t n, char *out, size_t len)
{
    int cp = n == 0, dp = n == 0;
    for (size_t i = 0; i < n; i++) {
        cp |= p[i] == INE__V1__PLANE__PLANE_CONTROL;
        dp |= p[i] == INE__V1__PLANE__PLANE_DATA;
    }
    snprintf(out, len, "%s", cp && dp ? "cp+dp" : cp ? "cp" : dp ? "dp" : "any");
}

/* Every live node enforces an enabled database: each one runs an endpoint for it. */
static void updates__enforcers(const proj_state *st, const proj_db *d, uint32_t self, uint32_t *nodes, size_t *n,
                               int *here)
{
    *n = 0;
    *here = 0;
    if (!d || d->deleted || !d->data_internode_encryption) return;
    for (size_t i = 0; i < st->n_nodes; i++) {
        if (st->nodes[i].removed) continue;
        nodes[(*n)++] = st->nodes[i].uid;
        if (st->nodes[i].uid == self) *here = 1;
    }
}

typedef struct {
    Ine__V1__DatabaseUpdate db;
    Ine__V1__PolicyUpdate policy;
    Ine__V1__CertificateUpdate cert;
    Ine__V1__RotationUpdate rot;
    Ine__V1__AlertUpdate alert;
    Ine__V1__NodeUpdate node;
    Ine__V1__Plane planes[2];
    char names[1024];
    char serial[128];
} updates__bodies;

static void updates__db_after(updates_msg *u, updates__bodies *b, const proj_state *st, uint32_t uid, uint32_t self,
                              uint32_t *enforcers)
{
    const proj_db *d = proj_db_find(st, uid);
    size_t n;
    int here;
    b->db.db_uid = uid;
    if (d) {
        b->db.name = d->name;
        b->db.port = d->port;
        b->db.shard_node_uid = d->shard_node_uid;
        b->db.data_internode_encryption = d->data_internode_encryption && !d->deleted;
    }
    updates__enforcers(st, d, self, enforcers, &n, &here);
    b->db.enforcing_nodes = enforcers;
    b->db.n_enforcing_nodes = n;
    b->db.enforced_here = here;
    u->body_case = INE__V1__UPDATE__BODY_DATABASE;
    u->database = &b->db;
}

/* A certificate's public facts, from its CertInfo (never its PEM). */
static void updates__certinfo(Ine__V1__CertificateUpdate *u, const Ine__V1__CertInfo *ci)
{
    if (!ci) return;
    u->serial_hex = ci->serial_hex ? ci->serial_hex : "";
    u->fingerprint_sha256 = ci->fingerprint_sha256 ? ci->fingerprint_sha256 : "";
    u->not_after = ci->not_after;
}

static const char *updates__db_kind(int k)
{
    switch (k) {
    case INE__V1__DATABASE_UPDATE__KIND__CREATED: return "created";
    case INE__V1__DATABASE_UPDATE__KIND__UPDATED: return "updated";
    case INE__V1__DATABASE_UPDATE__KIND__DELETED: return "deleted";
    default: return "encryption";
    }
}

static const char *updates__cert_kind(int k)
{
    switch (k) {
    case INE__V1__CERTIFICATE_UPDATE__KIND__ISSUED: return "issued";
    case INE__V1__CERTIFICATE_UPDATE__KIND__REPLACED: return "replaced";
    case INE__V1__CERTIFICATE_UPDATE__KIND__ACTIVATED: return "activated";
    case INE__V1__CERTIFICATE_UPDATE__KIND__FALLBACK: return "fallback";
    case INE__V1__CERTIFICATE_UPDATE__KIND__UPLOADED: return "uploaded";
    default: return "created";
    }
}

int updates_build(proj_state *st, const evlog_event *ev, const uint8_t *raw, size_t raw_len, uint32_t self_node,
                  updates_out *out)
{
    updates_msg u = INE__V1__UPDATE__INIT;
    updates__bodies *b = calloc(1, sizeof *b);
    uint32_t *enforcers = NULL;
    uint8_t hash[EVLOG_HASH_LEN];
    char pl[8];
    int rc = INE_OK, arc;

    memset(out, 0, sizeof *out);
    if (!b || !(enforcers = calloc(st->n_nodes + 1, sizeof *enforcers))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    ine__v1__database_update__init(&b->db);
    ine__v1__policy_update__init(&b->policy);
    ine__v1__certificate_update__init(&b->cert);
    ine__v1__rotation_update__init(&b->rot);
    ine__v1__alert_update__init(&b->alert);
    ine__v1__node_update__init(&b->node);
    evlog_hash(raw, raw_len, hash);
    u.seq = ev->seq;
    u.sha256.data = hash;
    u.sha256.len = sizeof hash;
    u.time_us = ev->time_us;
    u.event_type = (char *)evlog_type_name(ev);
    u.actor = ev->actor ? ev->actor : "";
    u.publisher_node = self_node;
    snprintf(out->topic, sizeof out->topic, "log.%s", u.event_type);

    /* What the state said before the event, for the bodies that need it. */
    if (ev->body_case == INE__V1__EVENT__BODY_CERTIFICATE_ISSUED) {
        const Ine__V1__CertificateIssued *t = ev->certificate_issued;
        const proj_cert *prev = proj_cert_find(st, t->node_uid, t->plane);
        b->cert.kind = prev ? INE__V1__CERTIFICATE_UPDATE__KIND__REPLACED : INE__V1__CERTIFICATE_UPDATE__KIND__ISSUED;
        if (prev && prev->cert.serial_hex) snprintf(b->serial, sizeof b->serial, "%s", prev->cert.serial_hex);
    }

    arc = proj_apply(st, ev);
    if (arc < 0 && arc != INE_EUNKNOWN) {
        rc = arc;
        goto out;
    }

    switch (ev->body_case) {
    case INE__V1__EVENT__BODY_DATABASE_CREATED:
        b->db.kind = INE__V1__DATABASE_UPDATE__KIND__CREATED;
        updates__db_after(&u, b, st, ev->database_created->db_uid, self_node, enforcers);
        break;
    case INE__V1__EVENT__BODY_DATABASE_UPDATED:
        b->db.kind = INE__V1__DATABASE_UPDATE__KIND__UPDATED;
        updates__db_after(&u, b, st, ev->database_updated->db_uid, self_node, enforcers);
        break;
    case INE__V1__EVENT__BODY_DATABASE_DELETED:
        b->db.kind = INE__V1__DATABASE_UPDATE__KIND__DELETED;
        updates__db_after(&u, b, st, ev->database_deleted->db_uid, self_node, enforcers);
        break;
    case INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED:
        b->db.kind = INE__V1__DATABASE_UPDATE__KIND__ENCRYPTION;
        updates__db_after(&u, b, st, ev->data_internode_encryption_changed->db_uid, self_node, enforcers);
        break;
    case INE__V1__EVENT__BODY_CLUSTER_POLICY_CHANGED:
        b->policy.default_data_internode_encryption = st->cluster.default_data_internode_encryption;
        b->policy.rotation_period_seconds = st->cluster.rotation_period_s;
        b->policy.cert_validity_seconds = st->cluster.cert_validity_s;
        u.body_case = INE__V1__UPDATE__BODY_POLICY;
        u.policy = &b->policy;
        snprintf(out->topic, sizeof out->topic, "policy.changed");
        break;
    case INE__V1__EVENT__BODY_CERTIFICATE_ISSUED: {
        const Ine__V1__CertificateIssued *t = ev->certificate_issued;
        b->cert.node_uid = t->node_uid;
        b->planes[0] = t->plane;
        b->cert.n_planes = 1;
        b->cert.source = t->source;
        b->cert.reason = t->reason;
        b->cert.rotation_id = t->rotation_id ? t->rotation_id : "";
        b->cert.replaced_serial_hex = b->serial;
        updates__certinfo(&b->cert, t->cert);
        snprintf(pl, sizeof pl, "%s", updates__plane(t->plane));
        snprintf(out->topic, sizeof out->topic, "cert.%u.%s.%s", t->node_uid, pl, updates__cert_kind(b->cert.kind));
        break;
    }
    case INE__V1__EVENT__BODY_CERTIFICATE_ACTIVATED: {
        const Ine__V1__CertificateActivated *t = ev->certificate_activated;
        b->cert.kind = INE__V1__CERTIFICATE_UPDATE__KIND__ACTIVATED;
        b->cert.node_uid = t->node_uid;
        b->planes[0] = t->plane;
        b->cert.n_planes = 1;
        b->cert.serial_hex = t->serial_hex ? t->serial_hex : "";
        b->cert.fingerprint_sha256 = t->fingerprint_sha256 ? t->fingerprint_sha256 : "";
        snprintf(out->topic, sizeof out->topic, "cert.%u.%s.activated", t->node_uid, updates__plane(t->plane));
        break;
    }
    case INE__V1__EVENT__BODY_CUSTOMER_CERTIFICATE_UPLOADED: {
        const Ine__V1__CustomerCertificateUploaded *t = ev->customer_certificate_uploaded;
        b->cert.kind = INE__V1__CERTIFICATE_UPDATE__KIND__UPLOADED;
        for (size_t i = 0; i < t->n_planes && i < 2; i++) b->planes[b->cert.n_planes++] = t->planes[i];
        b->cert.source = INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER;
        b->cert.reason = INE__V1__ISSUE_REASON__ISSUE_REASON_CUSTOMER_UPLOAD;
        updates__certinfo(&b->cert, t->cert);
        updates__planes(t->planes, t->n_planes, pl, sizeof pl);
        snprintf(out->topic, sizeof out->topic, "cert.all.%s.uploaded", pl);
        break;
    }
    case INE__V1__EVENT__BODY_CUSTOMER_EXPIRY_FALLBACK: {
        const Ine__V1__CustomerExpiryFallback *t = ev->customer_expiry_fallback;
        b->cert.kind = INE__V1__CERTIFICATE_UPDATE__KIND__FALLBACK;
        b->planes[0] = t->plane;
        b->cert.n_planes = 1;
        b->cert.source = INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED;
        b->cert.reason = INE__V1__ISSUE_REASON__ISSUE_REASON_CUSTOMER_EXPIRY_FALLBACK;
        b->cert.fingerprint_sha256 = t->customer_fingerprint_sha256 ? t->customer_fingerprint_sha256 : "";
        b->cert.not_after = t->customer_not_after;
        b->cert.rotation_id = t->rotation_id ? t->rotation_id : "";
        snprintf(out->topic, sizeof out->topic, "cert.all.%s.fallback", updates__plane(t->plane));
        break;
    }
    case INE__V1__EVENT__BODY_CA_CREATED: {
        const Ine__V1__CaCreated *t = ev->ca_created;
        b->cert.kind = INE__V1__CERTIFICATE_UPDATE__KIND__CA_CREATED;
        updates__certinfo(&b->cert, t->ca);
        snprintf(out->topic, sizeof out->topic, "cert.ca.created");
        break;
    }
    case INE__V1__EVENT__BODY_ROTATION_REQUESTED: {
        const Ine__V1__RotationRequested *t = ev->rotation_requested;
        b->rot.kind = INE__V1__ROTATION_UPDATE__KIND__STARTED;
        b->rot.rotation_id = t->rotation_id;
        b->rot.planes = t->planes;
        b->rot.n_planes = t->n_planes;
        b->rot.reason = t->reason;
        b->rot.node_uids = t->node_uids;
        b->rot.n_node_uids = t->n_node_uids;
        u.body_case = INE__V1__UPDATE__BODY_ROTATION;
        u.rotation = &b->rot;
        snprintf(out->topic, sizeof out->topic, "rotation.%s.started", t->rotation_id);
        break;
    }
    case INE__V1__EVENT__BODY_CERTIFICATES_ROTATED: {
        const Ine__V1__CertificatesRotated *t = ev->certificates_rotated;
        b->rot.kind = INE__V1__ROTATION_UPDATE__KIND__FINISHED;
        b->rot.rotation_id = t->rotation_id;
        b->rot.planes = t->planes;
        b->rot.n_planes = t->n_planes;
        b->rot.reason = t->reason;
        b->rot.certificates = t->certificates;
        u.body_case = INE__V1__UPDATE__BODY_ROTATION;
        u.rotation = &b->rot;
        snprintf(out->topic, sizeof out->topic, "rotation.%s.finished", t->rotation_id);
        break;
    }
    case INE__V1__EVENT__BODY_ALERT_RAISED: {
        const Ine__V1__AlertRaised *t = ev->alert_raised;
        b->alert.kind = INE__V1__ALERT_UPDATE__KIND__RAISED;
        b->alert.alert_id = t->alert_id;
        b->alert.name = t->name;
        b->alert.severity = t->severity;
        b->alert.node_uid = t->node_uid;
        b->alert.plane = t->plane;
        b->alert.description = t->description;
        u.body_case = INE__V1__UPDATE__BODY_ALERT;
        u.alert = &b->alert;
        snprintf(out->topic, sizeof out->topic, "alert.%s.raised", t->alert_id);
        break;
    }
    case INE__V1__EVENT__BODY_ALERT_CLEARED: {
        const Ine__V1__AlertCleared *t = ev->alert_cleared;
        b->alert.kind = INE__V1__ALERT_UPDATE__KIND__CLEARED;
        b->alert.alert_id = t->alert_id;
        b->alert.reason = t->reason;
        u.body_case = INE__V1__UPDATE__BODY_ALERT;
        u.alert = &b->alert;
        snprintf(out->topic, sizeof out->topic, "alert.%s.cleared", t->alert_id);
        break;
    }
    case INE__V1__EVENT__BODY_ALERT_SETTINGS_CHANGED: {
        const Ine__V1__AlertSettingsChanged *t = ev->alert_settings_changed;
        size_t off = 0;
        for (size_t i = 0; i < t->n_settings && off < sizeof b->names; i++) {
            int w = snprintf(b->names + off, sizeof b->names - off, "%s%s", i ? "," : "", t->settings[i]->name);
            if (w < 0) break;
            off += (size_t)w;
        }
        b->alert.kind = INE__V1__ALERT_UPDATE__KIND__SETTINGS;
        b->alert.name = b->names;
        u.body_case = INE__V1__UPDATE__BODY_ALERT;
        u.alert = &b->alert;
        snprintf(out->topic, sizeof out->topic, "alert.settings.changed");
        break;
    }
    case INE__V1__EVENT__BODY_NODE_ADDED: {
        const Ine__V1__NodeAdded *t = ev->node_added;
        b->node.kind = INE__V1__NODE_UPDATE__KIND__ADDED;
        b->node.node_uid = t->node_uid;
        b->node.address = t->address;
        b->node.name = t->name;
        u.body_case = INE__V1__UPDATE__BODY_NODE;
        u.node = &b->node;
        snprintf(out->topic, sizeof out->topic, "node.%u.added", t->node_uid);
        break;
    }
    case INE__V1__EVENT__BODY_NODE_REMOVED: {
        const proj_node *n = proj_node_find(st, ev->node_removed->node_uid);
        b->node.kind = INE__V1__NODE_UPDATE__KIND__REMOVED;
        b->node.node_uid = ev->node_removed->node_uid;
        if (n) {
            b->node.address = n->address;
            b->node.name = n->name;
        }
        u.body_case = INE__V1__UPDATE__BODY_NODE;
        u.node = &b->node;
        snprintf(out->topic, sizeof out->topic, "node.%u.removed", b->node.node_uid);
        break;
    }
    default: break;
    }
    if (u.body_case == INE__V1__UPDATE__BODY_DATABASE)
        snprintf(out->topic, sizeof out->topic, "db.%u.%s", b->db.db_uid, updates__db_kind(b->db.kind));
    if (b->cert.kind) {
        b->cert.planes = b->planes;
        u.body_case = INE__V1__UPDATE__BODY_CERTIFICATE;
        u.certificate = &b->cert;
    }
    u.topic = out->topic;
    out->len = ine__v1__update__get_packed_size(&u);
    if (!(out->buf = malloc(out->len ? out->len : 1))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    ine__v1__update__pack(&u, out->buf);
out:
    free(enforcers);
    free(b);
    return rc;
}

void updates_out_free(updates_out *o)
{
    free(o->buf);
    o->buf = NULL;
    o->len = 0;
}

int updates_topic_match(const char *topic, const char *const *prefixes, size_t n)
{
    if (n == 0) return 1;
    for (size_t i = 0; i < n; i++)
        if (!strncmp(topic, prefixes[i], strlen(prefixes[i]))) return 1;
    return 0;
}

int updates_topic_check(const char *prefix)
{
    size_t n = prefix ? strlen(prefix) : 0;
    if (n == 0 || n >= UPDATES_TOPIC_MAX)
        return ine_err(INE_EINVAL, "a topic prefix takes 1 to %d characters, not %zu", UPDATES_TOPIC_MAX - 1, n);
    for (size_t i = 0; i < n; i++)
        if (prefix[i] <= ' ' || prefix[i] > '~')
            return ine_err(INE_EINVAL, "topic prefix '%.40s' holds a space or a non-printable character", prefix);
    return INE_OK;
}

int updates_default_endpoints(const char *data_dir, char *pub, size_t pub_len, char *req, size_t req_len)
{
    char p[DATADIR_MAX];
    GUARD(datadir_path(data_dir, UPDATES_PUB_FILE, p, sizeof p));
    if ((size_t)snprintf(pub, pub_len, "ipc://%s", p) >= pub_len) return ine_err(INE_EINVAL, "data dir path too long");
    GUARD(datadir_path(data_dir, UPDATES_REQ_FILE, p, sizeof p));
    if ((size_t)snprintf(req, req_len, "ipc://%s", p) >= req_len) return ine_err(INE_EINVAL, "data dir path too long");
    return INE_OK;
}

int updates_endpoint_check(const char *ep)
{
    const char *host, *colon;
    char *end;
    long port;
    if (!ep) return ine_err(INE_EINVAL, "no endpoint given");
    if (!strncmp(ep, "ipc://", 6) && ep[6]) return INE_OK;
    if (strncmp(ep, "tcp://", 6))
        return ine_err(INE_EINVAL, "endpoint '%.80s' is neither ipc://PATH nor tcp://127.0.0.1:PORT", ep);
    host = ep + 6;
    colon = strrchr(host, ':');
    if (!colon) return ine_err(INE_EINVAL, "endpoint '%.80s' names no port", ep);
    port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || port < 1 || port > 65535) return ine_err(INE_EINVAL, "endpoint '%.80s': the port must be 1..65535", ep);
    if (!strncmp(host, "127.", 4) || !strncmp(host, "[::1]:", 6) || !strncmp(host, "localhost:", 10)) {
        /* 127.x.y.z only: digits and dots up to the colon. */
        for (const char *c = host; c < colon && host[0] == '1'; c++)
            if ((*c < '0' || *c > '9') && *c != '.') return ine_err(INE_EINVAL, "endpoint '%.80s': not a loopback address", ep);
        return INE_OK;
    }
    return ine_err(INE_EINVAL,
                   "endpoint '%.80s' is not on loopback: the update stream is for this node's programs (ipc:// or "
                   "tcp://127.0.0.1:PORT)",
                   ep);
}
