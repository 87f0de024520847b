/* test_proj.c — the projection: per-event rules, the trust bundle across changes of trust,
 * replay from a real log (by seq and by time), and the JSON document's secrecy. */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <lmdb.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "err.h"
#include "evlog.h"
#include "proj.h"
#include "testutil.h"

#define CP INE__V1__PLANE__PLANE_CONTROL
#define DP INE__V1__PLANE__PLANE_DATA
#define BIT(p) (1u << (p))

/* ---- event builders (malloc'd like protobuf-c's own, freed by tu_event_free) ------------- */

static Ine__V1__Event *t_ev(Ine__V1__Event__BodyCase body_case, void *body)
{
    Ine__V1__Event *ev = calloc(1, sizeof *ev);
    ine__v1__event__init(ev);
    ev->producer = strdup("test");
    ev->actor = strdup("tester");
    ev->body_case = body_case;
    ev->cluster_created = body; /* every body member is the same pointer slot */
    return ev;
}

#define T_NEW(type, init) ({ type *b__ = calloc(1, sizeof *b__); init(b__); b__; })

static Ine__V1__Plane *t_planes(unsigned mask, size_t *n)
{
    Ine__V1__Plane *p = calloc(2, sizeof *p);
    *n = 0;
    if (mask & BIT(CP)) p[(*n)++] = CP;
    if (mask & BIT(DP)) p[(*n)++] = DP;
    return p;
}

static Ine__V1__CertInfo *t_ci(const char *fp, const char *root_fp)
{
    Ine__V1__CertInfo *c = T_NEW(Ine__V1__CertInfo, ine__v1__cert_info__init);
    char buf[256];
    snprintf(buf, sizeof buf, "-----BEGIN CERTIFICATE-----\nPEM-OF-%s\n-----END CERTIFICATE-----\n", fp);
    c->cert_pem = strdup(buf);
    snprintf(buf, sizeof buf, "serial-%s", fp);
    c->serial_hex = strdup(buf);
    c->fingerprint_sha256 = strdup(fp);
    snprintf(buf, sizeof buf, "CN=%s", fp);
    c->subject = strdup(buf);
    c->issuer = strdup("CN=issuer");
    c->root_fingerprint_sha256 = strdup(root_fp);
    c->not_before = 1767225600;  /* 2026-01-01 */
    c->not_after = 1774998000;
    return c;
}

static void t_sealed(ProtobufCBinaryData *b, const uint8_t *bytes, size_t n)
{
    b->data = malloc(n);
    memcpy(b->data, bytes, n);
    b->len = n;
}

static Ine__V1__Event *t_cluster(const char *name, const char *user, const char *hash)
{
    Ine__V1__ClusterCreated *b = T_NEW(Ine__V1__ClusterCreated, ine__v1__cluster_created__init);
    b->cluster_uid = strdup("0123456789abcdef0123456789abcdef");
    b->name = strdup(name);
    b->admin_username = strdup(user);
    b->admin_password_hash = strdup(hash);
    b->default_data_internode_encryption = 1;
    b->rotation_period_seconds = 30 * INE_SEC_PER_DAY;
    b->cert_validity_seconds = 90 * INE_SEC_PER_DAY;
    return t_ev(INE__V1__EVENT__BODY_CLUSTER_CREATED, b);
}

static Ine__V1__Event *t_ca(const char *fp, const char *reason, const uint8_t *sealed, size_t n)
{
    Ine__V1__CaCreated *b = T_NEW(Ine__V1__CaCreated, ine__v1__ca_created__init);
    b->ca = t_ci(fp, fp);
    b->reason = strdup(reason);
    if (sealed) t_sealed(&b->sealed_key, sealed, n);
    return t_ev(INE__V1__EVENT__BODY_CA_CREATED, b);
}

static Ine__V1__Event *t_node_removed(uint32_t uid)
{
    Ine__V1__NodeRemoved *b = T_NEW(Ine__V1__NodeRemoved, ine__v1__node_removed__init);
    b->node_uid = uid;
    return t_ev(INE__V1__EVENT__BODY_NODE_REMOVED, b);
}

static Ine__V1__Event *t_issued(uint32_t node, int plane, const char *fp, const char *root_fp, const char *rot,
                                const uint8_t *sealed, size_t n)
{
    Ine__V1__CertificateIssued *b = T_NEW(Ine__V1__CertificateIssued, ine__v1__certificate_issued__init);
    b->node_uid = node;
    b->plane = plane;
    b->source = INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED;
    b->reason = rot ? INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL : INE__V1__ISSUE_REASON__ISSUE_REASON_INITIAL;
    b->cert = t_ci(fp, root_fp);
    if (rot) b->rotation_id = strdup(rot);
    if (sealed) t_sealed(&b->sealed_key, sealed, n);
    else t_sealed(&b->sealed_key, (const uint8_t *)"0123456789", 10);
    return t_ev(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, b);
}

static Ine__V1__Event *t_upload(unsigned planes, const char *fp, const char *root_fp, const char *root_pem)
{
    Ine__V1__CustomerCertificateUploaded *b =
        T_NEW(Ine__V1__CustomerCertificateUploaded, ine__v1__customer_certificate_uploaded__init);
    b->planes = t_planes(planes, &b->n_planes);
    b->cert = t_ci(fp, root_fp);
    b->root_pem = strdup(root_pem);
    t_sealed(&b->sealed_key, (const uint8_t *)"customer-sealed", 15);
    return t_ev(INE__V1__EVENT__BODY_CUSTOMER_CERTIFICATE_UPLOADED, b);
}

static Ine__V1__Event *t_fallback(int plane, const char *fp, const char *rot)
{
    Ine__V1__CustomerExpiryFallback *b = T_NEW(Ine__V1__CustomerExpiryFallback, ine__v1__customer_expiry_fallback__init);
    b->plane = plane;
    b->customer_fingerprint_sha256 = strdup(fp);
    b->customer_not_after = 1774998000;
    b->rotation_id = strdup(rot);
    return t_ev(INE__V1__EVENT__BODY_CUSTOMER_EXPIRY_FALLBACK, b);
}

static Ine__V1__Event *t_activated(uint32_t node, int plane, const char *fp)
{
    Ine__V1__CertificateActivated *b = T_NEW(Ine__V1__CertificateActivated, ine__v1__certificate_activated__init);
    char serial[128];
    snprintf(serial, sizeof serial, "serial-%s", fp);
    b->node_uid = node;
    b->plane = plane;
    b->fingerprint_sha256 = strdup(fp);
    b->serial_hex = strdup(serial);
    return t_ev(INE__V1__EVENT__BODY_CERTIFICATE_ACTIVATED, b);
}

static Ine__V1__Event *t_rot_req(const char *id, unsigned planes, const uint32_t *nodes, size_t n_nodes)
{
    Ine__V1__RotationRequested *b = T_NEW(Ine__V1__RotationRequested, ine__v1__rotation_requested__init);
    b->rotation_id = strdup(id);
    b->planes = t_planes(planes, &b->n_planes);
    b->reason = INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL;
    if (n_nodes) {
        b->node_uids = malloc(n_nodes * sizeof *b->node_uids);
        memcpy(b->node_uids, nodes, n_nodes * sizeof *nodes);
        b->n_node_uids = n_nodes;
    }
    return t_ev(INE__V1__EVENT__BODY_ROTATION_REQUESTED, b);
}

static Ine__V1__Event *t_rotated(const char *id)
{
    Ine__V1__CertificatesRotated *b = T_NEW(Ine__V1__CertificatesRotated, ine__v1__certificates_rotated__init);
    b->rotation_id = strdup(id);
    b->certificates = 6;
    return t_ev(INE__V1__EVENT__BODY_CERTIFICATES_ROTATED, b);
}

static Ine__V1__Event *t_alert(const char *id, const char *change)
{
    Ine__V1__AlertRaised *b = T_NEW(Ine__V1__AlertRaised, ine__v1__alert_raised__init);
    b->alert_id = strdup(id);
    b->name = strdup("node_internal_certs_about_to_expire");
    b->severity = INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_WARNING;
    b->node_uid = 2;
    b->plane = DP;
    b->description = strdup("certificate expires soon");
    b->threshold = strdup("45");
    b->change_value = strdup(change);
    return t_ev(INE__V1__EVENT__BODY_ALERT_RAISED, b);
}

static Ine__V1__Event *t_alert_clear(const char *id)
{
    Ine__V1__AlertCleared *b = T_NEW(Ine__V1__AlertCleared, ine__v1__alert_cleared__init);
    b->alert_id = strdup(id);
    b->reason = strdup("renewed");
    return t_ev(INE__V1__EVENT__BODY_ALERT_CLEARED, b);
}

static Ine__V1__Event *t_db_deleted(uint32_t uid)
{
    Ine__V1__DatabaseDeleted *b = T_NEW(Ine__V1__DatabaseDeleted, ine__v1__database_deleted__init);
    b->db_uid = uid;
    return t_ev(INE__V1__EVENT__BODY_DATABASE_DELETED, b);
}

static Ine__V1__Event *t_dine(uint32_t uid, int on)
{
    Ine__V1__DataInternodeEncryptionChanged *b =
        T_NEW(Ine__V1__DataInternodeEncryptionChanged, ine__v1__data_internode_encryption_changed__init);
    b->db_uid = uid;
    b->enabled = on;
    return t_ev(INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED, b);
}

static Ine__V1__Event *t_unknown(void) { return t_ev(INE__V1__EVENT__BODY__NOT_SET, NULL); }

/* Apply and free; seq 0 lets the projection number in-memory events itself. */
static int t_apply(proj_state *st, Ine__V1__Event *ev)
{
    int rc = proj_apply(st, ev);
    tu_event_free(ev);
    return rc;
}
#define APPLY(st, ev) cr_assert_eq(t_apply((st), (ev)), INE_OK, "apply: %s", ine_err_msg())

static char *t_dump(const proj_state *st)
{
    json_t *j = proj_to_json(st);
    char *s;
    cr_assert_not_null(j, "proj_to_json: %s", ine_err_msg());
    s = json_dumps(j, JSON_PRESERVE_ORDER | JSON_COMPACT);
    json_decref(j);
    cr_assert_not_null(s);
    return s;
}

/* A cluster with CA `ca_fp`, nodes 1..n, both planes issued ("n<uid>-<plane>-<gen>") and
 * activated. */
static void t_issue_all(proj_state *st, const char *gen, const char *root_fp)
{
    for (size_t i = 0; i < st->n_nodes; i++) {
        if (st->nodes[i].removed) continue;
        for (int p = CP; p <= DP; p++) {
            char fp[64];
            snprintf(fp, sizeof fp, "n%u-%s-%s", st->nodes[i].uid, proj_plane_name(p), gen);
            APPLY(st, t_issued(st->nodes[i].uid, p, fp, root_fp, NULL, NULL, 0));
        }
    }
}

static void t_activate(proj_state *st, uint32_t node, int plane)
{
    const proj_cert *c = proj_cert_find(st, node, plane);
    char fp[128];
    cr_assert_not_null(c, "node %u %s has no certificate", node, proj_plane_name(plane));
    snprintf(fp, sizeof fp, "%s", c->cert.fingerprint);
    APPLY(st, t_activated(node, plane, fp));
}

static void t_activate_all(proj_state *st)
{
    for (size_t i = 0; i < st->n_nodes; i++)
        if (!st->nodes[i].removed)
            for (int p = CP; p <= DP; p++) t_activate(st, st->nodes[i].uid, p);
}

static void t_base(proj_state *st, uint32_t n, const char *ca_fp)
{
    proj_init(st);
    APPLY(st, t_cluster("c1", "admin", "pbkdf2-sha256$1$c2FsdA==$aGFzaA=="));
    APPLY(st, t_ca(ca_fp, "initial", NULL, 0));
    for (uint32_t u = 1; u <= n; u++) {
        char addr[32];
        snprintf(addr, sizeof addr, "127.0.0.%u", u);
        APPLY(st, tu_ev_node_added(u, addr));
    }
    t_issue_all(st, "g1", ca_fp);
    t_activate_all(st);
}

static void t_expect_root(const proj_state *st, const char *fp, proj_root_state want)
{
    const proj_root *r = proj_bundle_find(st, fp);
    cr_assert_not_null(r, "root %s is not in the bundle", fp);
    cr_assert_eq(r->state, want, "root %s is %s, expected %s", fp, proj_root_state_name(r->state),
                 proj_root_state_name(want));
}

/* ---- cluster, nodes, databases, policy --------------------------------------------------- */

Test(proj, cluster_nodes_dbs)
{
    proj_state st;
    Ine__V1__Event *ev;
    proj_init(&st);
    ev = t_cluster("prod", "admin", "pbkdf2-sha256$1$c2FsdA==$aGFzaA==");
    ev->time_us = 1767225600LL * INE_USEC_PER_SEC;
    APPLY(&st, ev);
    APPLY(&st, tu_ev_node_added(1, "127.0.0.1"));
    APPLY(&st, tu_ev_node_added(3, "127.0.0.3"));
    APPLY(&st, tu_ev_node_added(2, "127.0.0.2"));
    APPLY(&st, tu_ev_db_created(7, "cache"));
    APPLY(&st, tu_ev_db_created(5, "sessions"));

    cr_assert_eq(st.applied_seq, 6);
    cr_assert(st.cluster.present);
    cr_assert_str_eq(st.cluster.name, "prod");
    cr_assert_str_eq(st.cluster.admin_username, "admin");
    cr_assert_eq(st.cluster.created_us, 1767225600LL * INE_USEC_PER_SEC);
    cr_assert_eq(st.cluster.created_seq, 1);
    cr_assert(st.cluster.default_data_internode_encryption);
    cr_assert_eq(st.cluster.rotation_period_s, 30 * INE_SEC_PER_DAY);
    cr_assert_eq(st.cluster.cert_validity_s, 90 * INE_SEC_PER_DAY);

    cr_assert_eq(st.n_nodes, 3);
    cr_assert_eq(st.nodes[0].uid, 1); /* kept sorted */
    cr_assert_eq(st.nodes[2].uid, 3);
    cr_assert_str_eq(proj_node_find(&st, 2)->address, "127.0.0.2");
    cr_assert_str_eq(proj_node_find(&st, 3)->name, "node:3");
    cr_assert_eq(proj_node_find(&st, 3)->added_seq, 3);
    cr_assert_null(proj_node_find(&st, 4));

    const proj_db *d = proj_db_find(&st, 7);
    cr_assert_not_null(d);
    cr_assert_str_eq(d->name, "cache");
    cr_assert_eq(d->port, 12007);
    cr_assert_eq(d->shard_node_uid, 1);
    cr_assert_str_eq(d->shard_address, "127.0.0.1:6379");
    cr_assert_not(d->data_internode_encryption);
    cr_assert_eq(proj_db_find_name(&st, "sessions")->uid, 5);
    cr_assert_null(proj_db_find_name(&st, "nope"));

    APPLY(&st, t_db_deleted(5));
    cr_assert(proj_db_find(&st, 5)->deleted);
    cr_assert_null(proj_db_find_name(&st, "sessions"), "a deleted database is not found by name");
    APPLY(&st, t_db_deleted(99)); /* unknown: lenient */
    cr_assert_eq(st.n_dbs, 2);
    proj_free(&st);
}

Test(proj, database_updated_changes_only_set_fields)
{
    proj_state st;
    Ine__V1__DatabaseUpdated *b;
    proj_init(&st);
    APPLY(&st, tu_ev_db_created(4, "orders"));

    b = T_NEW(Ine__V1__DatabaseUpdated, ine__v1__database_updated__init);
    b->db_uid = 4;
    b->name_opt_case = INE__V1__DATABASE_UPDATED__NAME_OPT_NAME;
    b->name = strdup("orders-v2");
    APPLY(&st, t_ev(INE__V1__EVENT__BODY_DATABASE_UPDATED, b));
    const proj_db *d = proj_db_find(&st, 4);
    cr_assert_str_eq(d->name, "orders-v2");
    cr_assert_eq(d->port, 12004, "port untouched when not set");
    cr_assert_str_eq(d->shard_address, "127.0.0.1:6379");
    cr_assert_eq(d->updated_seq, 2);

    b = T_NEW(Ine__V1__DatabaseUpdated, ine__v1__database_updated__init);
    b->db_uid = 4;
    b->port_opt_case = INE__V1__DATABASE_UPDATED__PORT_OPT_PORT;
    b->port = 0; /* set to zero is still set */
    b->shard_address_opt_case = INE__V1__DATABASE_UPDATED__SHARD_ADDRESS_OPT_SHARD_ADDRESS;
    b->shard_address = strdup("10.0.0.9:7000");
    b->shard_node_opt_case = INE__V1__DATABASE_UPDATED__SHARD_NODE_OPT_SHARD_NODE_UID;
    b->shard_node_uid = 3;
    APPLY(&st, t_ev(INE__V1__EVENT__BODY_DATABASE_UPDATED, b));
    d = proj_db_find(&st, 4);
    cr_assert_str_eq(d->name, "orders-v2", "name untouched when not set");
    cr_assert_eq(d->port, 0);
    cr_assert_eq(d->shard_node_uid, 3);
    cr_assert_str_eq(d->shard_address, "10.0.0.9:7000");

    b = T_NEW(Ine__V1__DatabaseUpdated, ine__v1__database_updated__init);
    b->db_uid = 77;
    b->name_opt_case = INE__V1__DATABASE_UPDATED__NAME_OPT_NAME;
    b->name = strdup("ghost");
    APPLY(&st, t_ev(INE__V1__EVENT__BODY_DATABASE_UPDATED, b));
    cr_assert_eq(st.n_dbs, 1, "an update to an unknown database creates nothing");
    cr_assert_null(proj_db_find_name(&st, "ghost"));
    proj_free(&st);
}

Test(proj, data_internode_encryption_changed)
{
    proj_state st;
    proj_init(&st);
    APPLY(&st, tu_ev_db_created(1, "a"));
    APPLY(&st, tu_ev_db_created(2, "b"));
    APPLY(&st, t_dine(2, 1));
    cr_assert(proj_db_find(&st, 2)->data_internode_encryption);
    cr_assert_not(proj_db_find(&st, 1)->data_internode_encryption, "only the named database changes");
    cr_assert_eq(proj_db_find(&st, 2)->updated_seq, 3);
    APPLY(&st, t_dine(2, 0));
    cr_assert_not(proj_db_find(&st, 2)->data_internode_encryption);
    APPLY(&st, t_dine(42, 1));
    cr_assert_eq(st.n_dbs, 2);
    cr_assert_eq(st.applied_seq, 5);
    proj_free(&st);
}

Test(proj, cluster_policy_changed)
{
    proj_state st;
    Ine__V1__ClusterPolicyChanged *b;
    proj_init(&st);
    APPLY(&st, t_cluster("c", "", ""));

    b = T_NEW(Ine__V1__ClusterPolicyChanged, ine__v1__cluster_policy_changed__init);
    b->rotation_period_opt_case = INE__V1__CLUSTER_POLICY_CHANGED__ROTATION_PERIOD_OPT_ROTATION_PERIOD_SECONDS;
    b->rotation_period_seconds = 7 * INE_SEC_PER_DAY;
    APPLY(&st, t_ev(INE__V1__EVENT__BODY_CLUSTER_POLICY_CHANGED, b));
    cr_assert_eq(st.cluster.rotation_period_s, 7 * INE_SEC_PER_DAY);
    cr_assert(st.cluster.default_data_internode_encryption, "unset fields stay");
    cr_assert_eq(st.cluster.cert_validity_s, 90 * INE_SEC_PER_DAY);

    b = T_NEW(Ine__V1__ClusterPolicyChanged, ine__v1__cluster_policy_changed__init);
    b->default_encryption_opt_case = INE__V1__CLUSTER_POLICY_CHANGED__DEFAULT_ENCRYPTION_OPT_DEFAULT_DATA_INTERNODE_ENCRYPTION;
    b->default_data_internode_encryption = 0;
    b->cert_validity_opt_case = INE__V1__CLUSTER_POLICY_CHANGED__CERT_VALIDITY_OPT_CERT_VALIDITY_SECONDS;
    b->cert_validity_seconds = 20 * INE_SEC_PER_DAY;
    APPLY(&st, t_ev(INE__V1__EVENT__BODY_CLUSTER_POLICY_CHANGED, b));
    cr_assert_not(st.cluster.default_data_internode_encryption);
    cr_assert_eq(st.cluster.cert_validity_s, 20 * INE_SEC_PER_DAY);
    cr_assert_eq(st.cluster.rotation_period_s, 7 * INE_SEC_PER_DAY);
    proj_free(&st);
}

/* ---- certificates ------------------------------------------------------------------------ */

Test(proj, certificate_issuance_and_replacement)
{
    proj_state st;
    proj_init(&st);
    APPLY(&st, t_ca("ca1", "initial", (const uint8_t *)"sealed-ca-key", 13));
    cr_assert(st.ca.present);
    cr_assert_eq(st.ca.seq, 1);
    cr_assert_eq(st.ca.sealed_key_len, 13);
    cr_assert_str_eq(st.ca.cert.fingerprint, "ca1");
    cr_assert_str_eq(st.ca.reason, "initial");
    APPLY(&st, tu_ev_node_added(1, "127.0.0.1"));
    APPLY(&st, t_issued(1, DP, "fp-a", "", NULL, (const uint8_t *)"k1k1k1", 6));

    const proj_cert *c = proj_cert_find(&st, 1, DP);
    cr_assert_not_null(c);
    cr_assert_null(proj_cert_find(&st, 1, CP));
    cr_assert_str_eq(c->cert.fingerprint, "fp-a");
    cr_assert_str_eq(c->cert.serial_hex, "serial-fp-a");
    cr_assert_str_eq(c->cert.subject, "CN=fp-a");
    cr_assert(strstr(c->cert.cert_pem, "PEM-OF-fp-a"));
    cr_assert_eq(c->cert.not_after, 1774998000);
    cr_assert_eq(c->source, INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED);
    cr_assert_eq(c->reason, INE__V1__ISSUE_REASON__ISSUE_REASON_INITIAL);
    cr_assert_eq(c->issued_seq, 3);
    cr_assert_eq(c->sealed_key_len, 6);
    cr_assert_str_eq(c->root_fingerprint, "ca1", "a self-signed cert without a root chains to the CA");

    APPLY(&st, t_issued(1, DP, "fp-b", "ca1", "rot-1", NULL, 0));
    c = proj_cert_find(&st, 1, DP);
    cr_assert_eq(st.n_certs, 1, "a replacement replaces");
    cr_assert_str_eq(c->cert.fingerprint, "fp-b");
    cr_assert_eq(c->reason, INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL);
    cr_assert_str_eq(c->rotation_id, "rot-1");
    cr_assert_eq(c->issued_seq, 4);
    cr_assert_eq(c->sealed_key_len, 10);

    /* Planes outside the schema are ignored, not stored. */
    APPLY(&st, t_issued(1, 0, "fp-x", "ca1", NULL, NULL, 0));
    APPLY(&st, t_issued(1, 9, "fp-y", "ca1", NULL, NULL, 0));
    cr_assert_eq(st.n_certs, 1);
    proj_free(&st);
}

Test(proj, node_removal_drops_its_certificates)
{
    proj_state st;
    t_base(&st, 2, "ca1");
    cr_assert_eq(st.n_certs, 4);
    cr_assert_eq(st.n_acts, 4);
    APPLY(&st, t_node_removed(2));
    const proj_node *n = proj_node_find(&st, 2);
    cr_assert_not_null(n);
    cr_assert(n->removed);
    cr_assert_eq(n->removed_seq, st.applied_seq);
    cr_assert_null(proj_cert_find(&st, 2, CP));
    cr_assert_null(proj_cert_find(&st, 2, DP));
    cr_assert_null(proj_activation_find(&st, 2, DP));
    cr_assert_not_null(proj_cert_find(&st, 1, CP));
    cr_assert_not_null(proj_cert_find(&st, 1, DP));
    cr_assert_eq(st.n_certs, 2);

    /* Late events about the removed node do not bring its slots back. */
    APPLY(&st, t_issued(2, CP, "late", "ca1", NULL, NULL, 0));
    APPLY(&st, t_activated(2, CP, "late"));
    cr_assert_null(proj_cert_find(&st, 2, CP));
    cr_assert_null(proj_activation_find(&st, 2, CP));
    APPLY(&st, t_node_removed(9)); /* unknown: lenient */

    /* Re-adding the uid brings the node back, live and empty. */
    APPLY(&st, tu_ev_node_added(2, "127.0.0.9"));
    cr_assert_not(proj_node_find(&st, 2)->removed);
    cr_assert_str_eq(proj_node_find(&st, 2)->address, "127.0.0.9");
    cr_assert_null(proj_cert_find(&st, 2, CP));
    proj_free(&st);
}

Test(proj, customer_upload_applies_to_live_nodes_for_named_planes)
{
    proj_state st;
    t_base(&st, 3, "ca1");
    APPLY(&st, t_node_removed(3));
    APPLY(&st, t_upload(BIT(DP), "cust-leaf", "cust-root", "ROOT-PEM"));
    uint64_t up = st.applied_seq;

    for (uint32_t u = 1; u <= 2; u++) {
        const proj_cert *d = proj_cert_find(&st, u, DP), *c = proj_cert_find(&st, u, CP);
        cr_assert_not_null(d);
        cr_assert_eq(d->source, INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER);
        cr_assert_eq(d->reason, INE__V1__ISSUE_REASON__ISSUE_REASON_CUSTOMER_UPLOAD);
        cr_assert_str_eq(d->cert.fingerprint, "cust-leaf");
        cr_assert_str_eq(d->root_fingerprint, "cust-root");
        cr_assert_eq(d->issued_seq, up, "the key is fetched from the upload event");
        cr_assert_eq(d->sealed_key_len, 15);
        cr_assert_eq(c->source, INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED, "control plane was not named");
        cr_assert_str_eq(c->root_fingerprint, "ca1");
    }
    cr_assert_null(proj_cert_find(&st, 3, DP), "a removed node gets nothing");
    cr_assert_eq(st.n_certs, 4);
    proj_free(&st);
}

/* ---- trust bundle ------------------------------------------------------------------------ */

Test(proj, trust_bundle_initial)
{
    proj_state st;
    proj_init(&st);
    APPLY(&st, t_ca("ca1", "initial", NULL, 0));
    t_expect_root(&st, "ca1", PROJ_ROOT_CURRENT);
    cr_assert_eq(st.n_bundle, 1);
    cr_assert_str_eq(st.bundle[0].pem, "-----BEGIN CERTIFICATE-----\nPEM-OF-ca1\n-----END CERTIFICATE-----\n");
    cr_assert_eq(st.bundle[0].kind, PROJ_ROOT_CLUSTER_CA);
    cr_assert_str_eq(st.bundle[0].subject, "CN=ca1");
    cr_assert_eq(st.trust_changed_seq, 1);
    proj_free(&st);

    t_base(&st, 3, "ca1");
    cr_assert_eq(st.n_bundle, 1);
    t_expect_root(&st, "ca1", PROJ_ROOT_CURRENT);
    cr_assert(proj_trust_converged(&st));
    proj_free(&st);
}

Test(proj, trust_bundle_fills_in_a_root_pem_carried_later)
{
    proj_state st;
    proj_init(&st);
    APPLY(&st, tu_ev_node_added(1, "127.0.0.1"));
    APPLY(&st, t_issued(1, CP, "leaf", "ca-x", NULL, NULL, 0)); /* before any CaCreated: lenient */
    const proj_root *r = proj_bundle_find(&st, "ca-x");
    cr_assert_not_null(r);
    cr_assert_null(r->pem);
    cr_assert_eq(r->kind, PROJ_ROOT_UNKNOWN);
    APPLY(&st, t_ca("ca-x", "initial", NULL, 0));
    r = proj_bundle_find(&st, "ca-x");
    cr_assert_not_null(r->pem);
    cr_assert(strstr(r->pem, "PEM-OF-ca-x"));
    cr_assert_str_eq(r->subject, "CN=ca-x");
    cr_assert_eq(r->kind, PROJ_ROOT_CLUSTER_CA);
    cr_assert_eq(st.n_bundle, 1);
    proj_free(&st);
}

Test(proj, trust_bundle_across_customer_upload)
{
    proj_state st;
    t_base(&st, 3, "ca1");
    cr_assert(proj_trust_converged(&st), "every node serves its certificate");

    APPLY(&st, t_upload(BIT(CP) | BIT(DP), "cust-leaf", "cust-root", "CUSTOMER-ROOT-PEM"));
    uint64_t up = st.applied_seq;
    t_expect_root(&st, "cust-root", PROJ_ROOT_CURRENT);
    t_expect_root(&st, "ca1", PROJ_ROOT_RETIRING);
    cr_assert_eq(st.n_bundle, 2);
    cr_assert_str_eq(proj_bundle_find(&st, "cust-root")->pem, "CUSTOMER-ROOT-PEM");
    cr_assert_eq(proj_bundle_find(&st, "cust-root")->kind, PROJ_ROOT_CUSTOMER);
    cr_assert_eq(proj_bundle_find(&st, "ca1")->since_seq, up);
    cr_assert_eq(st.trust_changed_seq, up);
    cr_assert_not(proj_trust_converged(&st), "the old activations do not match the new certificates");

    /* Every node but the last plane of node 3: the old root must stay. */
    t_activate(&st, 1, CP);
    t_activate(&st, 1, DP);
    t_activate(&st, 2, CP);
    t_activate(&st, 2, DP);
    t_activate(&st, 3, CP);
    t_expect_root(&st, "ca1", PROJ_ROOT_RETIRING);
    cr_assert_not(proj_trust_converged(&st));

    /* Activating a stale fingerprint does not count either. */
    APPLY(&st, t_activated(3, DP, "n3-data-g1"));
    t_expect_root(&st, "ca1", PROJ_ROOT_RETIRING);

    t_activate(&st, 3, DP);
    cr_assert(proj_trust_converged(&st));
    cr_assert_null(proj_bundle_find(&st, "ca1"), "the old CA root leaves once all nodes serve the new certificates");
    cr_assert_eq(st.n_bundle, 1);
    t_expect_root(&st, "cust-root", PROJ_ROOT_CURRENT);
    cr_assert_eq(st.trust_changed_seq, up, "dropping a retiring root completes the change, it is not a new one");

    /* A node added now has no customer certificate: the cluster CA must be trusted again. */
    APPLY(&st, tu_ev_node_added(4, "127.0.0.4"));
    t_expect_root(&st, "ca1", PROJ_ROOT_CURRENT);
    t_expect_root(&st, "cust-root", PROJ_ROOT_CURRENT);
    proj_free(&st);
}

Test(proj, trust_bundle_removed_node_does_not_hold_back)
{
    proj_state st;
    t_base(&st, 3, "ca1");
    APPLY(&st, t_upload(BIT(CP) | BIT(DP), "cust-leaf", "cust-root", "PEM"));
    t_activate(&st, 1, CP);
    t_activate(&st, 1, DP);
    t_activate(&st, 2, CP);
    t_activate(&st, 2, DP);
    t_expect_root(&st, "ca1", PROJ_ROOT_RETIRING);
    APPLY(&st, t_node_removed(3));
    cr_assert_null(proj_bundle_find(&st, "ca1"));
    cr_assert_eq(st.n_bundle, 1);
    proj_free(&st);
}

Test(proj, trust_bundle_partial_upload_keeps_ca_current)
{
    proj_state st;
    t_base(&st, 2, "ca1");
    APPLY(&st, t_upload(BIT(DP), "cust-leaf", "cust-root", "PEM"));
    t_expect_root(&st, "ca1", PROJ_ROOT_CURRENT); /* the control plane still chains to it */
    t_expect_root(&st, "cust-root", PROJ_ROOT_CURRENT);
    t_activate_all(&st);
    cr_assert_eq(st.n_bundle, 2);
    proj_free(&st);
}

Test(proj, trust_bundle_across_ca_renewal)
{
    proj_state st;
    t_base(&st, 2, "ca1");
    APPLY(&st, t_ca("ca2", "renewal", NULL, 0));
    /* Nodes still serve ca1 certificates, and ca2's will come: both are trusted. Activations
     * of the old certificates being complete must not drop ca1. */
    t_expect_root(&st, "ca1", PROJ_ROOT_CURRENT);
    t_expect_root(&st, "ca2", PROJ_ROOT_CURRENT);
    cr_assert_eq(st.trust_changed_seq, st.applied_seq);

    /* Re-issue under ca2 (root fingerprint left out: resolved to the CA of the day). */
    t_issue_all(&st, "g2", "");
    cr_assert_str_eq(proj_cert_find(&st, 2, DP)->root_fingerprint, "ca2");
    t_expect_root(&st, "ca1", PROJ_ROOT_RETIRING);
    t_activate(&st, 1, CP);
    t_activate(&st, 1, DP);
    t_activate(&st, 2, CP);
    t_expect_root(&st, "ca1", PROJ_ROOT_RETIRING);
    t_activate(&st, 2, DP);
    cr_assert_null(proj_bundle_find(&st, "ca1"));
    t_expect_root(&st, "ca2", PROJ_ROOT_CURRENT);
    proj_free(&st);
}

Test(proj, trust_bundle_across_fallback)
{
    proj_state st;
    t_base(&st, 2, "ca1");
    APPLY(&st, t_upload(BIT(CP) | BIT(DP), "cust-leaf", "cust-root", "PEM"));
    t_activate_all(&st);
    cr_assert_null(proj_bundle_find(&st, "ca1"));

    /* The fallback is announced before any self-signed certificate exists: the cluster CA
     * must be trusted from that moment, or the first new certificate would be refused. */
    APPLY(&st, t_fallback(DP, "cust-leaf", "fb-1"));
    uint64_t fb = st.applied_seq;
    t_expect_root(&st, "ca1", PROJ_ROOT_CURRENT);
    cr_assert_eq(proj_bundle_find(&st, "ca1")->since_seq, fb);
    cr_assert(st.fallbacks[DP].present);
    cr_assert_str_eq(st.fallbacks[DP].rotation_id, "fb-1");
    cr_assert_not(st.fallbacks[CP].present);

    APPLY(&st, t_issued(1, DP, "n1-data-fb", "ca1", "fb-1", NULL, 0));
    APPLY(&st, t_issued(2, DP, "n2-data-fb", "ca1", "fb-1", NULL, 0));
    t_activate_all(&st);
    t_expect_root(&st, "cust-root", PROJ_ROOT_CURRENT); /* still serves the control plane */
    t_expect_root(&st, "ca1", PROJ_ROOT_CURRENT);

    APPLY(&st, t_fallback(CP, "cust-leaf", "fb-2"));
    APPLY(&st, t_issued(1, CP, "n1-control-fb", "ca1", "fb-2", NULL, 0));
    APPLY(&st, t_issued(2, CP, "n2-control-fb", "ca1", "fb-2", NULL, 0));
    t_expect_root(&st, "cust-root", PROJ_ROOT_RETIRING);
    t_activate(&st, 1, CP);
    t_expect_root(&st, "cust-root", PROJ_ROOT_RETIRING);
    t_activate(&st, 2, CP);
    cr_assert_null(proj_bundle_find(&st, "cust-root"));
    cr_assert_eq(st.n_bundle, 1);
    proj_free(&st);
}

/* ---- alerts and rotations ---------------------------------------------------------------- */

Test(proj, alerts_raised_and_cleared)
{
    proj_state st;
    Ine__V1__Event *ev;
    proj_init(&st);
    ev = t_alert("expiry/2/dp", "44");
    ev->time_us = 1000 * INE_USEC_PER_SEC;
    APPLY(&st, ev);
    APPLY(&st, t_alert("cluster/ca", "30"));
    cr_assert_eq(st.n_alerts, 2);
    cr_assert_str_eq(st.alerts[0].alert_id, "cluster/ca", "sorted by id");

    const proj_alert *a = proj_alert_find(&st, "expiry/2/dp");
    cr_assert_not_null(a);
    cr_assert_str_eq(a->name, "node_internal_certs_about_to_expire");
    cr_assert_eq(a->severity, INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_WARNING);
    cr_assert_eq(a->node_uid, 2);
    cr_assert_eq(a->plane, DP);
    cr_assert_str_eq(a->threshold, "45");
    cr_assert_str_eq(a->description, "certificate expires soon");
    cr_assert_eq(a->raised_us, 1000 * INE_USEC_PER_SEC);

    ev = t_alert("expiry/2/dp", "43");
    ev->time_us = 2000 * INE_USEC_PER_SEC;
    APPLY(&st, ev);
    a = proj_alert_find(&st, "expiry/2/dp");
    cr_assert_eq(st.n_alerts, 2, "a re-raise is the same alert");
    cr_assert_str_eq(a->change_value, "43");
    cr_assert_eq(a->raised_us, 1000 * INE_USEC_PER_SEC, "it keeps its first raise time");
    cr_assert_eq(a->raised_seq, 1);
    cr_assert_eq(a->updated_seq, 3);

    APPLY(&st, t_alert_clear("expiry/2/dp"));
    cr_assert_null(proj_alert_find(&st, "expiry/2/dp"));
    cr_assert_not_null(proj_alert_find(&st, "cluster/ca"));
    APPLY(&st, t_alert_clear("never-raised"));
    cr_assert_eq(st.n_alerts, 1);
    proj_free(&st);
}

Test(proj, pending_rotations)
{
    proj_state st;
    uint32_t nodes[] = {2, 3};
    proj_init(&st);
    APPLY(&st, t_rot_req("r1", 0, NULL, 0));
    APPLY(&st, t_rot_req("r2", BIT(DP), nodes, 2));
    cr_assert_eq(st.n_rotations, 2);
    const proj_rotation *r = proj_rotation_find(&st, "r1");
    cr_assert_eq(r->planes, PROJ_PLANES_ALL, "no plane named means every plane");
    cr_assert_eq(r->n_node_uids, 0);
    cr_assert_eq(r->seq, 1);
    r = proj_rotation_find(&st, "r2");
    cr_assert_eq(r->planes, BIT(DP));
    cr_assert_eq(r->n_node_uids, 2);
    cr_assert_eq(r->node_uids[1], 3);
    cr_assert_eq(r->reason, INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL);

    APPLY(&st, t_rotated("r1"));
    cr_assert_null(proj_rotation_find(&st, "r1"));
    cr_assert_not_null(proj_rotation_find(&st, "r2"));
    APPLY(&st, t_rotated("unknown"));
    cr_assert_eq(st.n_rotations, 1);
    APPLY(&st, t_rotated("r2"));
    cr_assert_eq(st.n_rotations, 0);
    proj_free(&st);
}

/* ---- unknown events, ordering ------------------------------------------------------------ */

Test(proj, unknown_body_changes_only_applied_seq)
{
    proj_state st;
    json_t *before, *after;
    Ine__V1__Event *ev;
    t_base(&st, 2, "ca1");
    APPLY(&st, tu_ev_db_created(1, "db"));
    before = proj_to_json(&st);
    uint64_t seq = st.applied_seq;
    int64_t t = st.last_time_us;

    ev = t_unknown();
    ev->time_us = 999999999999;
    cr_assert_eq(t_apply(&st, ev), INE_EUNKNOWN);
    cr_assert_eq(st.applied_seq, seq + 1);
    cr_assert_eq(st.last_time_us, t);
    /* A body case set without its message is just as unknown (and must not crash). */
    ev = t_ev(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, NULL);
    cr_assert_eq(t_apply(&st, ev), INE_EUNKNOWN);
    cr_assert_eq(st.applied_seq, seq + 2);

    after = proj_to_json(&st);
    cr_assert_not(json_equal(before, after));
    json_object_del(before, "applied_seq");
    json_object_del(after, "applied_seq");
    cr_assert(json_equal(before, after), "nothing but applied_seq may change");
    json_decref(before);
    json_decref(after);
    proj_free(&st);
}

Test(proj, refuses_events_out_of_order)
{
    proj_state st;
    Ine__V1__Event *ev;
    proj_init(&st);
    ev = tu_ev_node_added(1, "127.0.0.1");
    ev->seq = 5;
    cr_assert_eq(t_apply(&st, ev), INE_OK);
    ev = tu_ev_node_added(2, "127.0.0.2");
    ev->seq = 5;
    cr_assert_eq(t_apply(&st, ev), INE_EINVAL);
    cr_assert(strstr(ine_err_msg(), "seq 5"));
    cr_assert_null(proj_node_find(&st, 2));
    cr_assert_eq(st.applied_seq, 5);
    proj_free(&st);
}

/* ---- replay from a real log -------------------------------------------------------------- */

#define T_T0 (1767225600LL * INE_USEC_PER_SEC)

/* A varied history, one event a second from T_T0; returns how many were appended. */
static size_t t_fill_log(evlog_t *log)
{
    Ine__V1__Event *evs[32];
    size_t n = 0;
    evs[n++] = t_cluster("c1", "admin", "pbkdf2-sha256$1$c2FsdA==$aGFzaA==");
    evs[n++] = t_ca("ca1", "initial", (const uint8_t *)"sealed", 6);
    evs[n++] = tu_ev_node_added(1, "127.0.0.1");
    evs[n++] = tu_ev_node_added(2, "127.0.0.2");
    evs[n++] = t_issued(1, CP, "n1c", "ca1", NULL, NULL, 0);
    evs[n++] = t_issued(1, DP, "n1d", "ca1", NULL, NULL, 0);
    evs[n++] = t_issued(2, CP, "n2c", "ca1", NULL, NULL, 0);
    evs[n++] = t_issued(2, DP, "n2d", "ca1", NULL, NULL, 0);
    evs[n++] = tu_ev_db_created(1, "db1");
    evs[n++] = t_dine(1, 1);
    evs[n++] = t_activated(1, CP, "n1c");
    evs[n++] = t_upload(BIT(DP), "cust", "croot", "PEM");
    evs[n++] = t_alert("a/1", "40");
    evs[n++] = t_rot_req("r1", BIT(CP), NULL, 0);
    evs[n++] = t_issued(1, CP, "n1c2", "ca1", "r1", NULL, 0);
    evs[n++] = t_rotated("r1");
    evs[n++] = t_alert_clear("a/1");
    evs[n++] = t_node_removed(2);
    for (size_t i = 0; i < n; i++) {
        uint64_t seq;
        evs[i]->time_us = T_T0 + (int64_t)i * INE_USEC_PER_SEC;
        cr_assert_eq(evlog_append_one(log, evs[i], NULL, &seq), INE_OK, "append: %s", ine_err_msg());
        cr_assert_eq(seq, i + 1);
        tu_event_free(evs[i]);
    }
    return n;
}

/* Fold seqs 1..n read back from the log, one proj_apply at a time. */
static void t_fold_prefix(evlog_t *log, uint64_t n, proj_state *st)
{
    proj_init(st);
    for (uint64_t s = 1; s <= n; s++) {
        evlog_event *ev;
        int rc;
        cr_assert_eq(evlog_read(log, s, &ev), INE_OK);
        rc = proj_apply(st, ev);
        cr_assert(rc == INE_OK || rc == INE_EUNKNOWN);
        evlog_event_free(ev);
    }
}

Test(proj, build_at_seq_equals_prefix)
{
    char *dir = tu_tmpdir();
    evlog_t *log;
    proj_state a, b;
    cr_assert_eq(evlog_open(dir, NULL, &log), INE_OK);
    size_t n = t_fill_log(log);

    for (uint64_t at = 1; at <= n; at++) {
        cr_assert_eq(proj_build(log, at, &a), INE_OK, "build %llu: %s", (unsigned long long)at, ine_err_msg());
        t_fold_prefix(log, at, &b);
        char *sa = t_dump(&a), *sb = t_dump(&b);
        cr_assert_eq(a.applied_seq, at);
        cr_assert_str_eq(sa, sb, "state at seq %llu differs", (unsigned long long)at);
        free(sa);
        free(sb);
        proj_free(&a);
        proj_free(&b);
    }

    /* 0 means the end; beyond the end is an error with a sentence. */
    cr_assert_eq(proj_build(log, 0, &a), INE_OK);
    cr_assert_eq(a.applied_seq, n);
    cr_assert(proj_node_find(&a, 2)->removed);
    cr_assert_eq(proj_db_find(&a, 1)->data_internode_encryption, 1);
    cr_assert_str_eq(proj_cert_find(&a, 1, CP)->cert.fingerprint, "n1c2");
    cr_assert_str_eq(proj_cert_find(&a, 1, DP)->cert.fingerprint, "cust");
    cr_assert_eq(a.n_rotations, 0);
    cr_assert_eq(a.n_alerts, 0);
    proj_free(&a);
    cr_assert_eq(proj_build(log, n + 1, &a), INE_ENOTFOUND);
    cr_assert(strstr(ine_err_msg(), "beyond the end"));
    cr_assert_eq(a.applied_seq, 0);
    proj_free(&a);

    /* Following: build half, then catch up. */
    cr_assert_eq(proj_build(log, 7, &a), INE_OK);
    cr_assert_eq(proj_update(log, &a), INE_OK);
    t_fold_prefix(log, n, &b);
    char *sa = t_dump(&a), *sb = t_dump(&b);
    cr_assert_str_eq(sa, sb);
    free(sa);
    free(sb);
    cr_assert_eq(proj_update(log, &a), INE_OK, "nothing new is not an error");
    cr_assert_eq(a.applied_seq, n);
    proj_free(&a);
    proj_free(&b);
    /* A state ahead of the log belongs to another log. */
    proj_init(&a);
    a.applied_seq = n + 5;
    cr_assert_eq(proj_update(log, &a), INE_ECHAIN);
    proj_free(&a);

    evlog_close(log);
    tu_rmrf(dir);
    free(dir);
}

Test(proj, build_at_time)
{
    char *dir = tu_tmpdir();
    evlog_t *log;
    proj_state st;
    Ine__V1__Event *ev;
    uint64_t seq;
    cr_assert_eq(evlog_open(dir, NULL, &log), INE_OK);
    size_t n = t_fill_log(log);

    /* Event i (seq i+1) is stamped T_T0 + i seconds. */
    cr_assert_eq(proj_build_at_time(log, T_T0 + 3 * INE_USEC_PER_SEC + 500000, &st), INE_OK);
    cr_assert_eq(st.applied_seq, 4);
    cr_assert_not_null(proj_node_find(&st, 2));
    cr_assert_eq(st.n_certs, 0);
    cr_assert_eq(st.last_time_us, T_T0 + 3 * INE_USEC_PER_SEC);
    proj_free(&st);

    cr_assert_eq(proj_build_at_time(log, T_T0 + 4 * INE_USEC_PER_SEC, &st), INE_OK);
    cr_assert_eq(st.applied_seq, 5, "an event stamped exactly at the time is included");
    proj_free(&st);

    cr_assert_eq(proj_build_at_time(log, T_T0 - 1, &st), INE_OK);
    cr_assert_eq(st.applied_seq, 0);
    cr_assert_not(st.cluster.present);
    proj_free(&st);

    /* A later stamp stops the replay even if an event after it bears an earlier time. */
    ev = tu_ev_db_created(8, "late");
    ev->time_us = T_T0 + 100 * INE_USEC_PER_SEC;
    cr_assert_eq(evlog_append_one(log, ev, NULL, &seq), INE_OK);
    tu_event_free(ev);
    ev = tu_ev_db_created(9, "skewed");
    ev->time_us = T_T0 + 50 * INE_USEC_PER_SEC;
    cr_assert_eq(evlog_append_one(log, ev, NULL, &seq), INE_OK);
    tu_event_free(ev);
    cr_assert_eq(proj_build_at_time(log, T_T0 + 60 * INE_USEC_PER_SEC, &st), INE_OK);
    cr_assert_eq(st.applied_seq, n);
    cr_assert_null(proj_db_find(&st, 9));
    proj_free(&st);
    cr_assert_eq(proj_build_at_time(log, T_T0 + 100 * INE_USEC_PER_SEC, &st), INE_OK);
    cr_assert_eq(st.applied_seq, n + 2);
    proj_free(&st);

    evlog_close(log);
    tu_rmrf(dir);
    free(dir);
}

static void t_be64(uint8_t b[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) b[i] = (uint8_t)v;
}

/* evlog refuses to write an event without a body, so write what a newer version would: an
 * Event whose body is field 999, appended behind the head with liblmdb and chained as evlog
 * does. The log must be closed in this process meanwhile. */
static void t_raw_append_future(const char *dir)
{
    static const uint8_t future_body[] = {0xba, 0x3e, 0x02, 0x08, 0x01}; /* field 999: {1: 1} */
    Ine__V1__Event ev = INE__V1__EVENT__INIT;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi events, meta;
    MDB_val k = {4, "head"}, v;
    uint8_t key[8], head[8 + EVLOG_HASH_LEN], prev[EVLOG_HASH_LEN], bytes[512];
    uint64_t seq = 0;
    size_t len;

    cr_assert_eq(mdb_env_create(&env), 0);
    cr_assert_eq(mdb_env_set_maxdbs(env, 4), 0);
    cr_assert_eq(mdb_env_set_mapsize(env, EVLOG_DEFAULT_MAP_SIZE), 0);
    cr_assert_eq(mdb_env_open(env, dir, 0, 0600), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "events", 0, &events), 0);
    cr_assert_eq(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    cr_assert_eq(mdb_get(txn, meta, &k, &v), 0);
    for (int i = 0; i < 8; i++) seq = (seq << 8) | ((uint8_t *)v.mv_data)[i];
    memcpy(prev, (uint8_t *)v.mv_data + 8, EVLOG_HASH_LEN);
    ev.seq = ++seq;
    ev.time_us = T_T0;
    ev.producer = "ine-from-the-future";
    ev.prev_sha256 = (ProtobufCBinaryData){EVLOG_HASH_LEN, prev};
    len = ine__v1__event__pack(&ev, bytes);
    memcpy(bytes + len, future_body, sizeof future_body);
    len += sizeof future_body;
    t_be64(key, seq);
    k = (MDB_val){8, key};
    v = (MDB_val){len, bytes};
    cr_assert_eq(mdb_put(txn, events, &k, &v, MDB_APPEND), 0);
    t_be64(head, seq);
    evlog_hash(bytes, len, head + 8);
    k = (MDB_val){4, "head"};
    v = (MDB_val){sizeof head, head};
    cr_assert_eq(mdb_put(txn, meta, &k, &v, 0), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

Test(proj, build_skips_unknown_types_with_a_warning)
{
    char *dir = tu_tmpdir();
    char *errpath = tu_path(dir, "stderr");
    evlog_t *log;
    proj_state st;
    Ine__V1__Event *ev;
    uint64_t seq;
    int saved, fd;
    cr_assert_eq(evlog_open(dir, NULL, &log), INE_OK);
    ev = tu_ev_node_added(1, "127.0.0.1");
    cr_assert_eq(evlog_append_one(log, ev, NULL, &seq), INE_OK);
    tu_event_free(ev);
    evlog_close(log);
    t_raw_append_future(dir);
    cr_assert_eq(evlog_open(dir, NULL, &log), INE_OK);
    ev = tu_ev_db_created(3, "after");
    cr_assert_eq(evlog_append_one(log, ev, NULL, &seq), INE_OK);
    tu_event_free(ev);

    fflush(stderr);
    saved = dup(STDERR_FILENO);
    fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(saved >= 0 && fd >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    int rc = proj_build(log, 0, &st);
    dup2(saved, STDERR_FILENO);
    close(saved);

    cr_assert_eq(rc, INE_OK, "%s", ine_err_msg());
    cr_assert_eq(st.applied_seq, 3);
    cr_assert_not_null(proj_node_find(&st, 1));
    cr_assert_not_null(proj_db_find(&st, 3), "the replay goes on after the unknown event");
    char *out = tu_read_file(errpath, NULL);
    cr_assert_not_null(out);
    cr_assert(strstr(out, "warn") && strstr(out, "seq 2: unknown event type, skipped"), "got: %s", out);
    free(out);
    proj_free(&st);
    evlog_close(log);
    tu_rmrf(dir);
    free(errpath);
    free(dir);
}

/* ---- JSON -------------------------------------------------------------------------------- */

static void t_assert_absent(const char *doc, const uint8_t *secret, size_t n, const char *what)
{
    char hex[256], HEX[256];
    unsigned char b64[256];
    cr_assert_lt(n * 2, sizeof hex);
    cr_assert_not(tu_contains(doc, strlen(doc), secret, n), "%s appears raw", what);
    for (size_t i = 0; i < n; i++) {
        snprintf(hex + 2 * i, 3, "%02x", secret[i]);
        snprintf(HEX + 2 * i, 3, "%02X", secret[i]);
    }
    cr_assert_not(strstr(doc, hex), "%s appears as hex", what);
    cr_assert_not(strstr(doc, HEX), "%s appears as HEX", what);
    /* Base64 at each of the three alignments, minus the padded edges. */
    for (size_t off = 0; off < 3; off++) {
        int len = EVP_EncodeBlock(b64, secret + off, (int)(n - off));
        b64[len > 4 ? len - 4 : 0] = 0;
        cr_assert_not(strstr(doc, (const char *)b64 + 1), "%s appears as base64", what);
    }
}

Test(proj, json_holds_no_secrets)
{
    static const uint8_t node_key[32] = {0xde, 0xad, 0xbe, 0xef, 'S', 'E', 'C', 'R', 'E', 'T', '-', 'N', 'O', 'D', 'E',
                                         0x00, 0x01, 0xfe, 0x7f, 0x80, 'K', 'E', 'Y', '-', 'B', 'Y', 'T', 'E', 'S',
                                         0x5a, 0xa5, 0x99};
    static const uint8_t ca_key[24] = {'C', 'A', '-', 'P', 'R', 'I', 'V', 'A', 'T', 'E', 0xca, 0xfe, 0xba, 0xbe,
                                       0x01, 0x02, 0x03, 0x04, 'E', 'N', 'D', '!', 0x0f, 0xf0};
    const char *hash = "pbkdf2-sha256$600000$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNo";
    proj_state st;
    proj_init(&st);
    APPLY(&st, t_cluster("c1", "admin", hash));
    APPLY(&st, t_ca("ca1", "initial", ca_key, sizeof ca_key));
    APPLY(&st, tu_ev_node_added(1, "127.0.0.1"));
    APPLY(&st, t_issued(1, DP, "fp-1", "ca1", NULL, node_key, sizeof node_key));
    APPLY(&st, t_alert("a", "1"));
    APPLY(&st, t_rot_req("r", 0, NULL, 0));
    APPLY(&st, t_fallback(DP, "fp-1", "r"));
    APPLY(&st, t_activated(1, DP, "fp-1"));

    char *doc = t_dump(&st);
    t_assert_absent(doc, node_key, sizeof node_key, "the node key");
    t_assert_absent(doc, ca_key, sizeof ca_key, "the CA key");
    cr_assert_not(strstr(doc, hash), "the password hash appears");
    cr_assert_not(strstr(doc, "aGFzaGhhc2hoYXNo"), "part of the password hash appears");
    cr_assert_not(strstr(doc, "pbkdf2"), "the password hash scheme appears");
    cr_assert_not(strstr(doc, "BEGIN CERTIFICATE"), "PEMs are left out for readability");
    /* What it shows instead. */
    cr_assert(strstr(doc, "\"sealed_key_bytes\":32"), "%s", doc);
    cr_assert(strstr(doc, "\"sealed_key_bytes\":24"));
    cr_assert(strstr(doc, "\"admin_username\":\"admin\""));
    free(doc);
    proj_free(&st);
}

Test(proj, json_is_stable_and_readable)
{
    proj_state st;
    json_t *j;
    t_base(&st, 2, "ca1");
    APPLY(&st, t_upload(BIT(DP), "cust", "croot", "PEM"));
    APPLY(&st, tu_ev_db_created(3, "db3"));
    char *a = t_dump(&st), *b = t_dump(&st);
    cr_assert_str_eq(a, b);

    static const char *top[] = {"applied_seq", "last_event_time", "last_event_time_unix", "cluster", "ca", "trust_bundle",
                                "nodes", "databases", "certificates", "activations", "pending_rotations",
                                "customer_fallbacks", "alerts"};
    j = proj_to_json(&st);
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        cr_assert_lt(i, sizeof top / sizeof *top);
        cr_assert_str_eq(k, top[i], "key %zu is %s, expected %s", i, k, top[i]);
        i++;
    }
    cr_assert_eq(i, sizeof top / sizeof *top);

    json_t *cert = json_array_get(json_object_get(j, "certificates"), 1);
    cr_assert_eq(json_integer_value(json_object_get(cert, "node")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(cert, "plane")), "data");
    cr_assert_str_eq(json_string_value(json_object_get(cert, "source")), "customer");
    cr_assert_str_eq(json_string_value(json_object_get(cert, "not_after")), "2026-03-31T23:00:00Z");
    cr_assert_eq(json_integer_value(json_object_get(cert, "not_after_unix")), 1774998000);
    cr_assert(json_is_false(json_object_get(cert, "active")));

    json_t *roots = json_object_get(json_object_get(j, "trust_bundle"), "roots");
    cr_assert_eq(json_array_size(roots), 2);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(roots, 0), "kind")), "cluster_ca");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(roots, 1), "state")), "current");
    cr_assert(json_is_false(json_object_get(json_object_get(j, "trust_bundle"), "converged")));
    json_decref(j);
    free(a);
    free(b);
    proj_free(&st);
}
