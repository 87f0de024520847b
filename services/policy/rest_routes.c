/* rest_routes.c — the REST endpoints, in Redis Enterprise's shapes:
 *   GET/POST /v1/bdbs, GET/PUT/DELETE /v1/bdbs/{uid}   (data_internode_encryption)
 *   GET/PUT  /v1/cluster/policy                        (the default for new databases)
 *   GET      /v1/nodes
 *   GET/PUT  /v1/cluster                               (PUT: alert_settings)
 *   GET      /v1/cluster/alerts, /v1/nodes/alerts, /v1/nodes/{uid}/alerts
 *   GET/PUT  /v1/cluster/certificates                  (never a key in a reply)
 *   POST     /v1/cluster/certificates/rotate
 * (GET /v1/cluster/ca and POST /v1/nodes/join, which need no credentials, are in join.c.)
 * Writes go through policy_execute (validation, then one append); certificate writes are
 * forwarded to ine-ca. A refused request changes nothing. */
#include "quorum.h"
#include "rest.h"
#include "alerts.h"
#include "clock.h"
#include "err.h"
#include "logline.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define REST_CA_TIMEOUT_MS 120000

static const char *rest__cert_name(int plane)
{
    return plane == INE__V1__PLANE__PLANE_CONTROL ? "ccs_internode_encryption" : "data_internode_encryption";
}

static json_t *rest__bdb_json(const proj_db *d)
{
    return json_pack("{s:I, s:s, s:I, s:I, s:s, s:b, s:s}", "uid", (json_int_t)d->uid, "name", d->name, "port",
                     (json_int_t)d->port, "shard_node", (json_int_t)d->shard_node_uid, "shard_address", d->shard_address,
                     "data_internode_encryption", d->data_internode_encryption, "status", d->deleted ? "deleted" : "active");
}

/* Reply with a database the request created or changed. A retried request answers with the
 * database it first acted on, which may since have been deleted (then shown as such). */
static void rest__bdb_reply(rest_ctx *c, uint32_t uid)
{
    const proj_db *d = proj_db_find(&c->p->st, uid);
    if (!d) return rest_error(c, 500, "internal", "database %u is not in the state after the request", uid);
    rest_reply(c, 200, rest__bdb_json(d));
}

static json_t *rest__time(int64_t unix_s)
{
    char ts[40];
    return json_string(ine_clock_fmt(unix_s * INE_USEC_PER_SEC, ts, sizeof ts));
}

/* Run one policy request and answer with `then` (or the error). */
static int rest__exec(rest_ctx *c, Ine__V1__PolicyRequest *req, policy_result *r)
{
    req->request_id = (char *)(c->request_id ? c->request_id : "");
    req->actor = (char *)c->user;
    policy_execute(c->p, req, r);
    if (r->code != INE__V1__ERROR_CODE__ERROR_CODE_OK) {
        rest_error_code(c, r->code, r->description);
        return -1;
    }
    return 0;
}

static void rest__bdbs_get(rest_ctx *c)
{
    json_t *a = json_array();
    for (size_t i = 0; i < c->p->st.n_dbs; i++)
        if (!c->p->st.dbs[i].deleted) json_array_append_new(a, rest__bdb_json(&c->p->st.dbs[i]));
    rest_reply(c, 200, a);
}

static void rest__bdbs_post(rest_ctx *c)
{
    static const char *const allowed[] = {"uid", "name", "port", "shard_node", "shard_address", "data_internode_encryption", NULL};
    Ine__V1__PolicyRequest req = INE__V1__POLICY_REQUEST__INIT;
    Ine__V1__CreateDatabase cd = INE__V1__CREATE_DATABASE__INIT;
    policy_result r;
    const char *name = NULL, *addr = NULL;
    int enc, has_enc;
    json_t *o = rest_body_object(c, allowed, 0);
    if (!o) return;
    if (rest_get_uint(c, o, "uid", UINT32_MAX, &cd.db_uid) < 0 || rest_get_string(c, o, "name", &name) < 0 ||
        rest_get_uint(c, o, "port", 65535, &cd.port) < 0 || rest_get_uint(c, o, "shard_node", UINT32_MAX, &cd.shard_node_uid) < 0 ||
        rest_get_string(c, o, "shard_address", &addr) < 0 || (has_enc = rest_get_bool(c, o, "data_internode_encryption", &enc)) < 0)
        goto out;
    if (!name || !cd.port || !cd.shard_node_uid || !addr) {
        rest_error(c, 400, "missing_field", "a database needs name, port, shard_node and shard_address");
        goto out;
    }
    cd.name = (char *)name;
    cd.shard_address = (char *)addr;
    if (has_enc) {
        cd.encryption_opt_case = INE__V1__CREATE_DATABASE__ENCRYPTION_OPT_DATA_INTERNODE_ENCRYPTION;
        cd.data_internode_encryption = enc;
    }
    req.op_case = INE__V1__POLICY_REQUEST__OP_CREATE_DATABASE;
    req.create_database = &cd;
    if (rest__exec(c, &req, &r) == 0) rest__bdb_reply(c, r.uid);
out:
    json_decref(o);
}

static void rest__bdb_put(rest_ctx *c, uint32_t uid)
{
    static const char *const allowed[] = {"name", "port", "shard_node", "shard_address", "data_internode_encryption", NULL};
    Ine__V1__PolicyRequest req = INE__V1__POLICY_REQUEST__INIT;
    Ine__V1__UpdateDatabase ud = INE__V1__UPDATE_DATABASE__INIT;
    Ine__V1__SetDatabaseEncryption se = INE__V1__SET_DATABASE_ENCRYPTION__INIT;
    policy_result r;
    const char *name = NULL, *addr = NULL;
    int enc = 0, has[5];
    json_t *o = rest_body_object(c, allowed, 0);
    if (!o) return;
    if ((has[0] = rest_get_string(c, o, "name", &name)) < 0 || (has[1] = rest_get_uint(c, o, "port", 65535, &ud.port)) < 0 ||
        (has[2] = rest_get_uint(c, o, "shard_node", UINT32_MAX, &ud.shard_node_uid)) < 0 ||
        (has[3] = rest_get_string(c, o, "shard_address", &addr)) < 0 ||
        (has[4] = rest_get_bool(c, o, "data_internode_encryption", &enc)) < 0)
        goto out;
    if (!has[0] && !has[1] && !has[2] && !has[3] && !has[4]) {
        rest_error(c, 400, "missing_field", "the body changes nothing");
        goto out;
    }
    if (has[0] || has[1] || has[2] || has[3]) {
        ud.db_uid = uid;
        if (has[0]) ud.name_opt_case = INE__V1__UPDATE_DATABASE__NAME_OPT_NAME, ud.name = (char *)name;
        if (has[1]) ud.port_opt_case = INE__V1__UPDATE_DATABASE__PORT_OPT_PORT;
        if (has[2]) ud.shard_node_opt_case = INE__V1__UPDATE_DATABASE__SHARD_NODE_OPT_SHARD_NODE_UID;
        if (has[3]) ud.shard_address_opt_case = INE__V1__UPDATE_DATABASE__SHARD_ADDRESS_OPT_SHARD_ADDRESS, ud.shard_address = (char *)addr;
        req.op_case = INE__V1__POLICY_REQUEST__OP_UPDATE_DATABASE;
        req.update_database = &ud;
        if (rest__exec(c, &req, &r) < 0) goto out;
    }
    if (has[4]) {
        char rid[300];
        se.db_uid = uid;
        se.enabled = enc;
        req.op_case = INE__V1__POLICY_REQUEST__OP_SET_DATABASE_ENCRYPTION;
        req.set_database_encryption = &se;
        /* A second operation of the same request needs its own idempotency key. */
        if (c->request_id) snprintf(rid, sizeof rid, "%s/encryption", c->request_id), c->request_id = rid;
        if (rest__exec(c, &req, &r) < 0) goto out;
    }
    rest__bdb_reply(c, uid);
out:
    json_decref(o);
}

static void rest__bdb_one(rest_ctx *c, enum evhttp_cmd_type m, const char *id)
{
    char *end;
    unsigned long uid = strtoul(id, &end, 10);
    const proj_db *d;
    if (!*id || *end || uid == 0 || uid > UINT32_MAX) return rest_error(c, 404, "not_found", "no database '%s'", id);
    d = proj_db_find(&c->p->st, (uint32_t)uid);
    if (!d || d->deleted) return rest_error(c, 404, "not_found", "no database %lu", uid);
    if (m == EVHTTP_REQ_GET) return rest_reply(c, 200, rest__bdb_json(d));
    if (m == EVHTTP_REQ_PUT) return rest__bdb_put(c, (uint32_t)uid);
    if (m == EVHTTP_REQ_DELETE) {
        Ine__V1__PolicyRequest req = INE__V1__POLICY_REQUEST__INIT;
        Ine__V1__DeleteDatabase dd = INE__V1__DELETE_DATABASE__INIT;
        policy_result r;
        dd.db_uid = (uint32_t)uid;
        req.op_case = INE__V1__POLICY_REQUEST__OP_DELETE_DATABASE;
        req.delete_database = &dd;
        if (rest__exec(c, &req, &r) == 0) rest_reply(c, 200, json_object());
        return;
    }
    rest_error(c, 405, "method_not_allowed", "use GET, PUT or DELETE on /v1/bdbs/{uid}");
}

static void rest__policy(rest_ctx *c, enum evhttp_cmd_type m)
{
    static const char *const allowed[] = {"data_internode_encryption", NULL};
    if (m == EVHTTP_REQ_GET)
        return rest_reply(c, 200, json_pack("{s:b}", "data_internode_encryption", c->p->st.cluster.default_data_internode_encryption));
    if (m == EVHTTP_REQ_PUT) {
        Ine__V1__PolicyRequest req = INE__V1__POLICY_REQUEST__INIT;
        Ine__V1__SetClusterDefaultEncryption sd = INE__V1__SET_CLUSTER_DEFAULT_ENCRYPTION__INIT;
        policy_result r;
        int on, has;
        json_t *o = rest_body_object(c, allowed, 0);
        if (!o) return;
        if ((has = rest_get_bool(c, o, "data_internode_encryption", &on)) <= 0) {
            if (has == 0) rest_error(c, 400, "missing_field", "the body changes nothing");
            json_decref(o);
            return;
        }
        json_decref(o);
        sd.enabled = on;
        req.op_case = INE__V1__POLICY_REQUEST__OP_SET_CLUSTER_DEFAULT_ENCRYPTION;
        req.set_cluster_default_encryption = &sd;
        if (rest__exec(c, &req, &r) == 0)
            rest_reply(c, 200, json_pack("{s:b}", "data_internode_encryption", c->p->st.cluster.default_data_internode_encryption));
        return;
    }
    rest_error(c, 405, "method_not_allowed", "use GET or PUT on /v1/cluster/policy");
}

static void rest__nodes(rest_ctx *c)
{
    json_t *a = json_array();
    for (size_t i = 0; i < c->p->st.n_nodes; i++) {
        const proj_node *n = &c->p->st.nodes[i];
        if (!n->removed)
            json_array_append_new(a, json_pack("{s:I, s:s, s:s, s:s}", "uid", (json_int_t)n->uid, "addr", n->address, "name",
                                               n->name, "status", "active"));
    }
    rest_reply(c, 200, a);
}

/* Every alert's effective setting: {"<name>": {"enabled": true, "threshold": "45"}, ...}. */
static json_t *rest__alert_settings(const proj_state *st)
{
    json_t *o = json_object();
    for (int k = 0; k < ALERTS_COUNT; k++) {
        const alerts_def *d = alerts_def_at((alerts_kind)k);
        alerts_setting s;
        json_t *e;
        alerts_setting_get(st, d, &s);
        e = json_pack("{s:b}", "enabled", s.enabled);
        if (d->unit != ALERTS_UNIT_NONE) {
            json_object_set_new(e, "threshold", json_string(s.threshold_str));
            json_object_set_new(e, "threshold_unit", json_string(alerts_unit_name(d->unit)));
        }
        json_object_set_new(o, d->name, e);
    }
    return o;
}

static json_t *rest__cluster_json(const proj_state *st)
{
    size_t nodes = 0, dbs = 0;
    for (size_t i = 0; i < st->n_nodes; i++) nodes += !st->nodes[i].removed;
    for (size_t i = 0; i < st->n_dbs; i++) dbs += !st->dbs[i].deleted;
    return json_pack("{s:s, s:s, s:o, s:I, s:I, s:b, s:I, s:o}", "name", st->cluster.name, "uid", st->cluster.uid, "created",
                     rest__time(st->cluster.created_us / INE_USEC_PER_SEC), "nodes", (json_int_t)nodes, "bdbs", (json_int_t)dbs,
                     "data_internode_encryption", st->cluster.default_data_internode_encryption, "log_seq",
                     (json_int_t)st->applied_seq, "alert_settings", rest__alert_settings(st));
}

/* PUT /v1/cluster {"alert_settings": {"<name>": {"enabled": bool, "threshold": "N"}, ...}}:
 * every setting checked (by ine-policy, the same rules as inectl) before anything changes. */
static void rest__cluster_put(rest_ctx *c)
{
    static const char *const allowed[] = {"alert_settings", NULL};
    Ine__V1__PolicyRequest req = INE__V1__POLICY_REQUEST__INIT;
    Ine__V1__SetAlertSettings sa = INE__V1__SET_ALERT_SETTINGS__INIT;
    Ine__V1__AlertSetting *items = NULL, **ptrs = NULL;
    char (*th)[ALERTS_THRESHOLD_LEN] = NULL;
    policy_result r;
    json_t *o = rest_body_object(c, allowed, 0), *as, *v;
    const char *name;
    size_t n = 0;
    if (!o) return;
    as = json_object_get(o, "alert_settings");
    if (!as) {
        rest_error(c, 400, "missing_field", "the body changes nothing (PUT /v1/cluster takes alert_settings)");
        goto out;
    }
    if (!json_is_object(as) || json_object_size(as) == 0) {
        rest_error(c, 400, "wrong_type", "'alert_settings' must be an object of {\"<alert>\": {\"enabled\": ..., \"threshold\": ...}}");
        goto out;
    }
    items = calloc(json_object_size(as), sizeof *items);
    ptrs = calloc(json_object_size(as), sizeof *ptrs);
    th = calloc(json_object_size(as), sizeof *th);
    if (!items || !ptrs || !th) {
        rest_error(c, 500, "internal", "out of memory");
        goto out;
    }
    json_object_foreach(as, name, v) {
        Ine__V1__AlertSetting *it = &items[n];
        json_t *t;
        const char *k;
        json_t *kv;
        int on, has;
        ine__v1__alert_setting__init(it);
        it->name = (char *)name;
        if (!json_is_object(v)) {
            rest_error(c, 400, "wrong_type", "alert_settings.%s must be an object with enabled and/or threshold", name);
            goto out;
        }
        json_object_foreach(v, k, kv) {
            if (strcmp(k, "enabled") && strcmp(k, "threshold")) {
                rest_error(c, 400, "unknown_field", "unknown field 'alert_settings.%s.%s'", name, k);
                goto out;
            }
        }
        if ((has = rest_get_bool(c, v, "enabled", &on)) < 0) goto out;
        if (has) it->enabled_opt_case = INE__V1__ALERT_SETTING__ENABLED_OPT_ENABLED, it->enabled = on;
        if ((t = json_object_get(v, "threshold"))) {
            /* Redis Enterprise sends thresholds as strings; a JSON number is taken too. */
            if (json_is_string(t)) snprintf(th[n], sizeof th[n], "%s", json_string_value(t));
            else if (json_is_integer(t)) snprintf(th[n], sizeof th[n], "%" JSON_INTEGER_FORMAT, json_integer_value(t));
            else {
                rest_error(c, 400, "wrong_type", "alert_settings.%s.threshold must be a string such as \"45\"", name);
                goto out;
            }
            it->threshold_opt_case = INE__V1__ALERT_SETTING__THRESHOLD_OPT_THRESHOLD;
            it->threshold = th[n];
        }
        ptrs[n++] = it;
    }
    sa.n_settings = n;
    sa.settings = ptrs;
    req.op_case = INE__V1__POLICY_REQUEST__OP_SET_ALERT_SETTINGS;
    req.set_alert_settings = &sa;
    if (rest__exec(c, &req, &r) == 0) rest_reply(c, 200, rest__cluster_json(&c->p->st));
out:
    free(items);
    free(ptrs);
    free(th);
    json_decref(o);
}

static const char *rest__severity(int s)
{
    switch (s) {
    case INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_INFO: return "INFO";
    case INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_WARNING: return "WARNING";
    case INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_ERROR: return "ERROR";
    default: return "UNSPECIFIED";
    }
}

/* One alert in Redis Enterprise's shape, for `name` on `node` (0: cluster-wide). An alert with
 * one instance per plane is active when any instance is; the latest raise gives change_time
 * and change_value. */
static json_t *rest__alert_entry(const proj_state *st, const char *name, uint32_t node)
{
    const alerts_def *d = alerts_def_find(name);
    const proj_alert *latest = NULL;
    alerts_setting s = {.enabled = 1};
    json_t *e, *planes = json_array();
    if (d) alerts_setting_get(st, d, &s);
    for (size_t i = 0; i < st->n_alerts; i++) {
        const proj_alert *a = &st->alerts[i];
        if (strcmp(a->name, name) || a->node_uid != node) continue;
        if (!latest || a->raised_us > latest->raised_us) latest = a;
        if (a->plane) json_array_append_new(planes, json_string(proj_plane_name(a->plane)));
    }
    e = json_pack("{s:s, s:b, s:b, s:s}", "name", name, "enabled", s.enabled, "state", latest != NULL, "severity",
                  rest__severity(d ? d->severity : latest ? latest->severity : 0));
    /* An alert that takes no threshold shows none. */
    if (d ? d->unit != ALERTS_UNIT_NONE : latest && *latest->threshold)
        json_object_set_new(e, "threshold", json_string(d ? s.threshold_str : latest->threshold));
    if (latest) {
        json_object_set_new(e, "change_time", rest__time(latest->raised_us / INE_USEC_PER_SEC));
        json_object_set_new(e, "change_value", json_pack("{s:b, s:s, s:s}", "state", 1, "threshold", latest->threshold, "value",
                                                         latest->change_value));
        json_object_set_new(e, "description", json_string(latest->description));
    } else {
        json_object_set_new(e, "change_time", json_null());
        json_object_set_new(e, "change_value", json_null());
    }
    if (json_array_size(planes)) json_object_set_new(e, "planes", planes);
    else json_decref(planes);
    return e;
}

/* {"<name>": alert, ...}: every alert of the level, plus any active one of a name this version
 * does not define (another producer's). */
static json_t *rest__alerts_of(const proj_state *st, uint32_t node)
{
    json_t *o = json_object();
    for (int k = 0; k < ALERTS_COUNT; k++) {
        const alerts_def *d = alerts_def_at((alerts_kind)k);
        if (!!d->per_node == !!node) json_object_set_new(o, d->name, rest__alert_entry(st, d->name, node));
    }
    for (size_t i = 0; i < st->n_alerts; i++)
        if (st->alerts[i].node_uid == node && !json_object_get(o, st->alerts[i].name))
            json_object_set_new(o, st->alerts[i].name, rest__alert_entry(st, st->alerts[i].name, node));
    return o;
}

static void rest__alerts(rest_ctx *c) { rest_reply(c, 200, rest__alerts_of(&c->p->st, 0)); }

/* POST /v1/nodes/{uid}/actions/remove: the node's etcd member out, then NodeRemoved. */
static void rest__node_remove(rest_ctx *c, const char *uid_s, size_t len)
{
    Ine__V1__PolicyRequest req = INE__V1__POLICY_REQUEST__INIT;
    Ine__V1__RemoveNode rn = INE__V1__REMOVE_NODE__INIT;
    policy_result r;
    char buf[16], *end;
    unsigned long uid;
    snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), uid_s);
    uid = strtoul(buf, &end, 10);
    if (!*buf || *end || len >= sizeof buf || uid == 0 || uid > UINT32_MAX)
        return rest_error(c, 404, "not_found", "no node '%.*s'", (int)(len < 64 ? len : 64), uid_s);
    rn.node_uid = (uint32_t)uid;
    req.op_case = INE__V1__POLICY_REQUEST__OP_REMOVE_NODE;
    req.remove_node = &rn;
    if (rest__exec(c, &req, &r) == 0) rest_reply(c, 200, json_pack("{s:I, s:I}", "uid", (json_int_t)r.uid, "seq", (json_int_t)r.seq));
}

/* GET /v1/nodes/alerts: {"<uid>": {"<name>": alert, ...}, ...} for every live node. */
static void rest__nodes_alerts(rest_ctx *c, const char *uid_s)
{
    const proj_state *st = &c->p->st;
    json_t *o;
    if (uid_s) {
        char *end;
        unsigned long uid = strtoul(uid_s, &end, 10);
        const proj_node *n = *uid_s && !*end && uid <= UINT32_MAX ? proj_node_find(st, (uint32_t)uid) : NULL;
        if (!n || n->removed) return rest_error(c, 404, "not_found", "no node '%s'", uid_s);
        return rest_reply(c, 200, rest__alerts_of(st, n->uid));
    }
    o = json_object();
    for (size_t i = 0; i < st->n_nodes; i++) {
        char k[16];
        if (st->nodes[i].removed) continue;
        snprintf(k, sizeof k, "%u", st->nodes[i].uid);
        json_object_set_new(o, k, rest__alerts_of(st, st->nodes[i].uid));
    }
    rest_reply(c, 200, o);
}

static json_t *rest__cert(const proj_certinfo *ci)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:I, s:s}", "serial", ci->serial_hex, "fingerprint_sha256",
                     ci->fingerprint, "subject", ci->subject, "issuer", ci->issuer, "not_before", rest__time(ci->not_before),
                     "not_after", rest__time(ci->not_after), "days_left",
                     (json_int_t)((ci->not_after - ine_clock_now()) / INE_SEC_PER_DAY), "certificate",
                     ci->cert_pem ? ci->cert_pem : "");
}

static void rest__certs_get(rest_ctx *c)
{
    const proj_state *st = &c->p->st;
    json_t *a = json_array();
    for (size_t i = 0; i < st->n_certs; i++) {
        const proj_cert *pc = &st->certs[i];
        const proj_node *n = proj_node_find(st, pc->node_uid);
        json_t *j;
        if (!n || n->removed) continue;
        j = rest__cert(&pc->cert);
        json_object_set_new(j, "name", json_string(rest__cert_name(pc->plane)));
        json_object_set_new(j, "node", json_integer(pc->node_uid));
        json_object_set_new(j, "source", json_string(proj_source_name(pc->source)));
        json_object_set_new(j, "reason", json_string(proj_reason_name(pc->reason)));
        json_array_append_new(a, j);
    }
    rest_reply(c, 200, json_pack("{s:o, s:o}", "ca", st->ca.present ? rest__cert(&st->ca.cert) : json_null(), "certificates", a));
}

/* Forward a CA request; NULL (error already sent) when it could not be asked. */
static Ine__V1__Reply *rest__ca_call(rest_ctx *c, Ine__V1__CaRequest *req)
{
    char rid[64];
    uint8_t *buf, *out = NULL;
    size_t len, olen = 0;
    Ine__V1__Reply *r;
    int rc;
    if (!c->request_id) {
        unsigned char b[12];
        RAND_bytes(b, sizeof b);
        snprintf(rid, sizeof rid, "rest-");
        for (size_t i = 0; i < sizeof b; i++) snprintf(rid + 5 + 2 * i, sizeof rid - 5 - 2 * i, "%02x", b[i]);
    }
    req->request_id = (char *)(c->request_id ? c->request_id : rid);
    req->actor = (char *)c->user;
    len = ine__v1__ca_request__get_packed_size(req);
    if (!(buf = malloc(len ? len : 1))) return rest_error(c, 500, "internal", "out of memory"), NULL;
    ine__v1__ca_request__pack(req, buf);
    rc = rpc_call(c->p->zctx, c->p->run_dir, "ca", buf, len, REST_CA_TIMEOUT_MS, &out, &olen);
    OPENSSL_cleanse(buf, len);
    free(buf);
    if (rc < 0) return rest_error(c, 503, "ca_unavailable", "%s", ine_err_msg()), NULL;
    r = ine__v1__reply__unpack(NULL, olen, out);
    free(out);
    if (!r) rest_error(c, 500, "internal", "ine-ca sent a reply that does not decode");
    return r;
}

static int rest__plane_of(const char *name)
{
    if (!strcmp(name, "ccs_internode_encryption")) return INE__V1__PLANE__PLANE_CONTROL;
    if (!strcmp(name, "data_internode_encryption")) return INE__V1__PLANE__PLANE_DATA;
    return 0;
}

static void rest__certs_put(rest_ctx *c)
{
    static const char *const allowed[] = {"certificates", NULL};
    static const char *const item_keys[] = {"name", "certificate", "key"};
    Ine__V1__UploadCertificate uc[2] = {INE__V1__UPLOAD_CERTIFICATE__INIT, INE__V1__UPLOAD_CERTIFICATE__INIT};
    Ine__V1__UploadCertificate *ucs[2] = {&uc[0], &uc[1]};
    Ine__V1__Plane planes[2][2];
    Ine__V1__Upload up = INE__V1__UPLOAD__INIT;
    Ine__V1__CaRequest req = INE__V1__CA_REQUEST__INIT;
    Ine__V1__Reply *r = NULL;
    json_t *o = rest_body_object(c, allowed, 0), *arr, *it;
    size_t i;
    if (!o) return;
    arr = json_object_get(o, "certificates");
    if (!json_is_array(arr) || json_array_size(arr) < 1 || json_array_size(arr) > 2) {
        rest_error(c, 400, "wrong_type", "'certificates' must be an array of one or two {name, certificate, key} objects");
        goto out;
    }
    json_array_foreach(arr, i, it) {
        const char *name = NULL, *cert = NULL, *key = NULL, *k;
        json_t *v;
        int plane;
        if (!json_is_object(it)) {
            rest_error(c, 400, "wrong_type", "certificates[%zu] must be an object", i);
            goto out;
        }
        json_object_foreach(it, k, v) {
            int ok = 0;
            for (size_t j = 0; j < 3; j++) ok |= !strcmp(k, item_keys[j]);
            if (!ok) {
                rest_error(c, 400, "unknown_field", "unknown field 'certificates[%zu].%s'", i, k);
                goto out;
            }
        }
        if (rest_get_string(c, it, "name", &name) < 0 || rest_get_string(c, it, "certificate", &cert) < 0 ||
            rest_get_string(c, it, "key", &key) < 0)
            goto out;
        if (!name || !cert || !key) {
            rest_error(c, 400, "missing_field", "certificates[%zu] needs name, certificate and key", i);
            goto out;
        }
        if (!(plane = rest__plane_of(name))) {
            rest_error(c, 400, "bad_request", "unknown certificate name '%s': use ccs_internode_encryption or data_internode_encryption", name);
            goto out;
        }
        for (size_t j = 0; j < up.n_certificates; j++) {
            if (uc[j].planes[0] == (Ine__V1__Plane)plane) {
                rest_error(c, 400, "bad_request", "certificate '%s' is named twice", name);
                goto out;
            }
            /* The same certificate and key for both planes: one certificate serving both. */
            if (!strcmp(uc[j].cert_pem, cert) && uc[j].key_pem.len == strlen(key) && !memcmp(uc[j].key_pem.data, key, strlen(key))) {
                uc[j].planes[uc[j].n_planes++] = plane;
                goto next;
            }
        }
        uc[up.n_certificates].cert_pem = (char *)cert;
        uc[up.n_certificates].key_pem.data = (uint8_t *)key;
        uc[up.n_certificates].key_pem.len = strlen(key);
        uc[up.n_certificates].planes = planes[up.n_certificates];
        uc[up.n_certificates].planes[uc[up.n_certificates].n_planes++] = plane;
        up.n_certificates++;
    next:;
    }
    up.certificates = ucs;
    req.op_case = INE__V1__CA_REQUEST__OP_UPLOAD;
    req.upload = &up;
    if (!(r = rest__ca_call(c, &req))) goto out;
    if (r->code != INE__V1__ERROR_CODE__ERROR_CODE_OK) rest_error_code(c, r->code, r->description);
    else rest_reply(c, 200, json_pack("{s:I}", "seq", (json_int_t)r->seq));
out:
    /* The key strings live in the parsed document too: wipe them before it goes. */
    arr = o ? json_object_get(o, "certificates") : NULL;
    json_array_foreach(arr, i, it) {
        json_t *k = json_object_get(it, "key");
        if (json_is_string(k)) OPENSSL_cleanse((char *)json_string_value(k), json_string_length(k));
    }
    if (r) ine__v1__reply__free_unpacked(r, NULL);
    json_decref(o);
}

static void rest__rotate(rest_ctx *c)
{
    static const char *const allowed[] = {"name", NULL};
    Ine__V1__CaRequest req = INE__V1__CA_REQUEST__INIT;
    Ine__V1__Rotate rot = INE__V1__ROTATE__INIT;
    Ine__V1__Plane plane;
    Ine__V1__Reply *r;
    const char *name = NULL;
    json_t *o = rest_body_object(c, allowed, 1);
    if (!o) return;
    if (rest_get_string(c, o, "name", &name) < 0) goto out;
    if (name && strcmp(name, "all")) {
        if (!(plane = (Ine__V1__Plane)rest__plane_of(name))) {
            rest_error(c, 400, "bad_request", "unknown certificate name '%s': use ccs_internode_encryption or data_internode_encryption", name);
            goto out;
        }
        rot.n_planes = 1;
        rot.planes = &plane;
    }
    req.op_case = INE__V1__CA_REQUEST__OP_ROTATE;
    req.rotate = &rot;
    if (!(r = rest__ca_call(c, &req))) goto out;
    if (r->code != INE__V1__ERROR_CODE__ERROR_CODE_OK) rest_error_code(c, r->code, r->description);
    else rest_reply(c, 200, json_pack("{s:s, s:I}", "rotation_id", r->description, "seq", (json_int_t)r->seq));
    ine__v1__reply__free_unpacked(r, NULL);
out:
    json_decref(o);
}

void rest_route(rest_ctx *c, const char *path)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(c->req);
    const char *sub;
    if (!strcmp(path, "/v1/bdbs")) {
        if (m == EVHTTP_REQ_GET) return rest__bdbs_get(c);
        if (m == EVHTTP_REQ_POST) return rest__bdbs_post(c);
        return rest_error(c, 405, "method_not_allowed", "use GET or POST on /v1/bdbs");
    }
    if (!strncmp(path, "/v1/bdbs/", 9) && !strchr(sub = path + 9, '/')) return rest__bdb_one(c, m, sub);
    if (!strcmp(path, "/v1/cluster/policy")) return rest__policy(c, m);
    if (!strcmp(path, "/v1/cluster/certificates")) {
        if (m == EVHTTP_REQ_GET) return rest__certs_get(c);
        if (m == EVHTTP_REQ_PUT) return rest__certs_put(c);
        return rest_error(c, 405, "method_not_allowed", "use GET or PUT on /v1/cluster/certificates");
    }
    if (!strcmp(path, "/v1/cluster/certificates/rotate")) {
        if (m == EVHTTP_REQ_POST) return rest__rotate(c);
        return rest_error(c, 405, "method_not_allowed", "use POST on /v1/cluster/certificates/rotate");
    }
    if (!strcmp(path, "/v1/cluster")) {
        if (m == EVHTTP_REQ_GET) {
            /* The consensus as this node sees it; each member asked with a short timeout. */
            json_t *o = rest__cluster_json(&c->p->st), *q = NULL;
            if (quorum_status(c->p->data_dir, &q) == INE_OK) json_object_set_new(o, "consensus", q);
            return rest_reply(c, 200, o);
        }
        if (m == EVHTTP_REQ_PUT) return rest__cluster_put(c);
        return rest_error(c, 405, "method_not_allowed", "use GET or PUT on /v1/cluster");
    }
    if (!strncmp(path, "/v1/nodes/", 10) && (sub = strchr(path + 10, '/')) && !strcmp(sub, "/actions/remove")) {
        if (m != EVHTTP_REQ_POST) return rest_error(c, 405, "method_not_allowed", "use POST on %s", path);
        return rest__node_remove(c, path + 10, (size_t)(sub - (path + 10)));
    }
    if (!strncmp(path, "/v1/nodes/", 10) && (sub = strchr(path + 10, '/')) && !strcmp(sub, "/alerts")) {
        char uid[16];
        if (m != EVHTTP_REQ_GET) return rest_error(c, 405, "method_not_allowed", "use GET on %s", path);
        snprintf(uid, sizeof uid, "%.*s", (int)(sub - (path + 10)), path + 10);
        return rest__nodes_alerts(c, uid);
    }
    if (m != EVHTTP_REQ_GET && (!strcmp(path, "/v1/nodes") || !strcmp(path, "/v1/cluster/alerts") || !strcmp(path, "/v1/nodes/alerts")))
        return rest_error(c, 405, "method_not_allowed", "use GET on %s", path);
    if (!strcmp(path, "/v1/nodes")) return rest__nodes(c);
    if (!strcmp(path, "/v1/cluster/alerts")) return rest__alerts(c);
    if (!strcmp(path, "/v1/nodes/alerts")) return rest__nodes_alerts(c, NULL);
    rest_error(c, 404, "not_found", "no endpoint %s", path);
}
