/* ops.c — the policy operations: create/update/delete a database, set a database's
 * data_internode_encryption, set the cluster default for new databases, add/remove a node,
 * change cluster alert settings.
 * Each is validated against the caught-up projection (every rule before anything is written)
 * and recorded as one append; a request id makes a retry answer with the original outcome. */
#include "policy.h"
#include "quorum.h"
#include "alerts.h"
#include "clock.h"
#include "err.h"
#include "logline.h"
#include "valid.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void ops__fail(policy_result *r, Ine__V1__ErrorCode code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void ops__fail(policy_result *r, Ine__V1__ErrorCode code, const char *fmt, ...)
{
    va_list ap;
    r->code = code;
    va_start(ap, fmt);
    vsnprintf(r->description, sizeof r->description, fmt, ap);
    va_end(ap);
}

int policy_catch_up(policy_t *p)
{
    int rc = follow_catch_up(p->follow);
    return rc < 0 ? rc : INE_OK;
}

static evlog_event *ops__event(int body_case, void *body)
{
    evlog_event *ev = calloc(1, sizeof *ev);
    if (!ev) return NULL;
    ine__v1__event__init(ev);
    ev->body_case = body_case;
    ev->cluster_created = body; /* the body members share one union slot */
    return ev;
}

/* Append one event built on the stack; fill the result. */
static void ops__append(policy_t *p, const Ine__V1__PolicyRequest *req, int body_case, void *body, policy_result *r,
                        const char *what)
{
    evlog_event *ev = ops__event(body_case, body);
    char reqid[320];
    uint64_t seq = 0;
    int rc;
    if (!ev) return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_INTERNAL, "out of memory");
    snprintf(reqid, sizeof reqid, POLICY_REQID_PREFIX "%s", req->request_id ? req->request_id : "");
    {
        /* Checked against the state at applied_seq: commit only if nobody wrote since. */
        commit_opts o = {.actor = req->actor, .request_id = req->request_id && *req->request_id ? reqid : NULL,
                         .based_on = follow_applied(p->follow)}; /* counts skipped unknown types too */
        rc = commit_append(p->commit, &ev, 1, &o, &seq);
    }
    free(ev);
    if (rc == INE_ESTALE) {
        r->stale = 1;
        return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BUSY, "%s", ine_err_msg());
    }
    if (rc < 0) {
        return ops__fail(r, rc == INE_EFULL      ? INE__V1__ERROR_CODE__ERROR_CODE_LOG_FULL
                            : rc == INE_EUNAVAIL ? INE__V1__ERROR_CODE__ERROR_CODE_NO_QUORUM
                            : rc == INE_EAGAIN   ? INE__V1__ERROR_CODE__ERROR_CODE_BUSY
                                                 : INE__V1__ERROR_CODE__ERROR_CODE_INTERNAL,
                         "%s", ine_err_msg());
    }
    r->seq = seq;
    if (rc == 1) {
        /* Recorded before but not yet in our index: the original event says what it was about. */
        evlog_event *orig = NULL;
        if (evlog_read(p->log, seq, &orig) == INE_OK) r->uid = policy_event_uid(orig);
        evlog_event_free(orig);
    }
    if (rc == 0) {
        if (r->uid) logline(LOGLINE_INFO, seq, "%s: uid %u, by %s", what, r->uid, req->actor && *req->actor ? req->actor : "?");
        else logline(LOGLINE_INFO, seq, "%s, by %s", what, req->actor && *req->actor ? req->actor : "?");
    }
    if (policy_catch_up(p) < 0) logline(LOGLINE_ERROR, seq, "catch-up after append: %s", ine_err_msg());
}

static const proj_db *ops__live_db(const proj_state *st, uint32_t uid)
{
    const proj_db *d = proj_db_find(st, uid);
    return d && !d->deleted ? d : NULL;
}

static const proj_node *ops__live_node(const proj_state *st, uint32_t uid)
{
    const proj_node *n = proj_node_find(st, uid);
    return n && !n->removed ? n : NULL;
}

static const proj_db *ops__db_on_port(const proj_state *st, uint32_t port, uint32_t except)
{
    for (size_t i = 0; i < st->n_dbs; i++)
        if (!st->dbs[i].deleted && st->dbs[i].port == port && st->dbs[i].uid != except) return &st->dbs[i];
    return NULL;
}

/* Rules shared by create and update. */
static int ops__check_db_fields(policy_t *p, uint32_t self, const char *name, int has_port, uint32_t port,
                                int has_node, uint32_t node, const char *shard_addr, policy_result *r)
{
    const proj_db *other;
    if (name) {
        if (!valid_name(name)) {
            ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST,
                      "database name '%s' is invalid: use 1-64 letters, digits, '-', '_' or '.'", name);
            return -1;
        }
        if ((other = proj_db_find_name(&p->st, name)) && other->uid != self) {
            ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_CONFLICT, "database name '%s' is taken by database %u", name, other->uid);
            return -1;
        }
    }
    if (has_port) {
        if (port < 1 || port > 65535) {
            ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "port %u is outside 1-65535", port);
            return -1;
        }
        if ((other = ops__db_on_port(&p->st, port, self))) {
            ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_CONFLICT, "port %u is used by database %u", port, other->uid);
            return -1;
        }
    }
    if (has_node && !ops__live_node(&p->st, node)) {
        ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND, "node %u is not a node of this cluster", node);
        return -1;
    }
    if (shard_addr && !valid_hostport(shard_addr)) {
        ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST,
                  "shard address '%s' is invalid: expected host:port (e.g. 127.0.0.2:6379)", shard_addr);
        return -1;
    }
    return 0;
}

static void ops__create_db(policy_t *p, const Ine__V1__PolicyRequest *req, policy_result *r)
{
    const Ine__V1__CreateDatabase *c = req->create_database;
    Ine__V1__DatabaseCreated b = INE__V1__DATABASE_CREATED__INIT;
    uint32_t uid = c->db_uid;
    if (!c->name || !*c->name) return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "a database needs a name");
    if (!c->port) return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "a database needs a port");
    if (!c->shard_address || !*c->shard_address)
        return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "a database needs a shard address (host:port)");
    if (uid && proj_db_find(&p->st, uid))
        return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_CONFLICT, "database uid %u is taken", uid);
    if (ops__check_db_fields(p, 0, c->name, 1, c->port, 1, c->shard_node_uid, c->shard_address, r)) return;
    if (!uid) /* next after the highest ever used: a deleted database's uid is never reused */
        for (size_t i = 0; i < p->st.n_dbs; i++)
            if (p->st.dbs[i].uid >= uid) uid = p->st.dbs[i].uid + 1;
    if (!uid) uid = 1;
    b.db_uid = uid;
    b.name = c->name;
    b.port = c->port;
    b.shard_node_uid = c->shard_node_uid;
    b.shard_address = c->shard_address;
    /* A new database takes the cluster default at creation; later default changes leave it be. */
    b.data_internode_encryption = c->encryption_opt_case == INE__V1__CREATE_DATABASE__ENCRYPTION_OPT_DATA_INTERNODE_ENCRYPTION
                                      ? c->data_internode_encryption
                                      : p->st.cluster.default_data_internode_encryption;
    r->uid = uid;
    ops__append(p, req, INE__V1__EVENT__BODY_DATABASE_CREATED, &b, r, "database created");
}

static void ops__update_db(policy_t *p, const Ine__V1__PolicyRequest *req, policy_result *r)
{
    const Ine__V1__UpdateDatabase *u = req->update_database;
    Ine__V1__DatabaseUpdated b = INE__V1__DATABASE_UPDATED__INIT;
    int has_name = u->name_opt_case == INE__V1__UPDATE_DATABASE__NAME_OPT_NAME;
    int has_port = u->port_opt_case == INE__V1__UPDATE_DATABASE__PORT_OPT_PORT;
    int has_node = u->shard_node_opt_case == INE__V1__UPDATE_DATABASE__SHARD_NODE_OPT_SHARD_NODE_UID;
    int has_addr = u->shard_address_opt_case == INE__V1__UPDATE_DATABASE__SHARD_ADDRESS_OPT_SHARD_ADDRESS;
    if (!ops__live_db(&p->st, u->db_uid)) return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND, "no database %u", u->db_uid);
    if (!has_name && !has_port && !has_node && !has_addr)
        return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "the update changes nothing");
    if (ops__check_db_fields(p, u->db_uid, has_name ? u->name : NULL, has_port, u->port, has_node, u->shard_node_uid,
                             has_addr ? u->shard_address : NULL, r))
        return;
    b.db_uid = u->db_uid;
    if (has_name) b.name_opt_case = INE__V1__DATABASE_UPDATED__NAME_OPT_NAME, b.name = u->name;
    if (has_port) b.port_opt_case = INE__V1__DATABASE_UPDATED__PORT_OPT_PORT, b.port = u->port;
    if (has_node) b.shard_node_opt_case = INE__V1__DATABASE_UPDATED__SHARD_NODE_OPT_SHARD_NODE_UID, b.shard_node_uid = u->shard_node_uid;
    if (has_addr) b.shard_address_opt_case = INE__V1__DATABASE_UPDATED__SHARD_ADDRESS_OPT_SHARD_ADDRESS, b.shard_address = u->shard_address;
    r->uid = u->db_uid;
    ops__append(p, req, INE__V1__EVENT__BODY_DATABASE_UPDATED, &b, r, "database updated");
}

static void ops__delete_db(policy_t *p, const Ine__V1__PolicyRequest *req, policy_result *r)
{
    Ine__V1__DatabaseDeleted b = INE__V1__DATABASE_DELETED__INIT;
    uint32_t uid = req->delete_database->db_uid;
    if (!ops__live_db(&p->st, uid)) return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND, "no database %u", uid);
    b.db_uid = uid;
    r->uid = uid;
    ops__append(p, req, INE__V1__EVENT__BODY_DATABASE_DELETED, &b, r, "database deleted");
}

static void ops__set_db_enc(policy_t *p, const Ine__V1__PolicyRequest *req, policy_result *r)
{
    const Ine__V1__SetDatabaseEncryption *s = req->set_database_encryption;
    Ine__V1__DataInternodeEncryptionChanged b = INE__V1__DATA_INTERNODE_ENCRYPTION_CHANGED__INIT;
    const proj_db *d = ops__live_db(&p->st, s->db_uid);
    if (!d) return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND, "no database %u", s->db_uid);
    r->uid = s->db_uid;
    if (!!d->data_internode_encryption == !!s->enabled) {
        /* Already so: nothing to record, and no connection should drop for it. */
        r->seq = d->updated_seq;
        return;
    }
    b.db_uid = s->db_uid;
    b.enabled = s->enabled;
    ops__append(p, req, INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED, &b, r,
                s->enabled ? "database data_internode_encryption enabled" : "database data_internode_encryption disabled");
}

static void ops__set_default(policy_t *p, const Ine__V1__PolicyRequest *req, policy_result *r)
{
    Ine__V1__ClusterPolicyChanged b = INE__V1__CLUSTER_POLICY_CHANGED__INIT;
    int on = req->set_cluster_default_encryption->enabled;
    if (!!p->st.cluster.default_data_internode_encryption == !!on) {
        r->seq = p->st.applied_seq;
        return;
    }
    b.default_encryption_opt_case = INE__V1__CLUSTER_POLICY_CHANGED__DEFAULT_ENCRYPTION_OPT_DEFAULT_DATA_INTERNODE_ENCRYPTION;
    b.default_data_internode_encryption = on;
    ops__append(p, req, INE__V1__EVENT__BODY_CLUSTER_POLICY_CHANGED, &b, r,
                on ? "cluster default data_internode_encryption enabled" : "cluster default data_internode_encryption disabled");
}

static void ops__add_node(policy_t *p, const Ine__V1__PolicyRequest *req, policy_result *r)
{
    const Ine__V1__AddNode *a = req->add_node;
    Ine__V1__NodeAdded b = INE__V1__NODE_ADDED__INIT;
    char name[32];
    uint32_t uid = 1;
    if (!valid_address(a->address))
        return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "node address '%s' is not an IP address or host name",
                         a->address ? a->address : "");
    if (a->name && *a->name && !valid_name(a->name))
        return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "node name '%s' is invalid", a->name);
    for (size_t i = 0; i < p->st.n_nodes; i++) {
        if (!p->st.nodes[i].removed && !strcmp(p->st.nodes[i].address, a->address))
            return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_CONFLICT, "node %u already has address %s", p->st.nodes[i].uid,
                             a->address);
        if (p->st.nodes[i].uid >= uid) uid = p->st.nodes[i].uid + 1;
    }
    snprintf(name, sizeof name, "node:%u", uid);
    b.node_uid = uid;
    b.address = a->address;
    b.name = a->name && *a->name ? a->name : name;
    r->uid = uid;
    ops__append(p, req, INE__V1__EVENT__BODY_NODE_ADDED, &b, r, "node added");
}

static void ops__remove_node(policy_t *p, const Ine__V1__PolicyRequest *req, policy_result *r)
{
    Ine__V1__NodeRemoved b = INE__V1__NODE_REMOVED__INIT;
    uint32_t uid = req->remove_node->node_uid;
    if (!ops__live_node(&p->st, uid)) return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND, "no node %u in this cluster", uid);
    for (size_t i = 0; i < p->st.n_dbs; i++)
        if (!p->st.dbs[i].deleted && p->st.dbs[i].shard_node_uid == uid)
            return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_CONFLICT,
                             "node %u holds the shard of database %u; move or delete the database first", uid, p->st.dbs[i].uid);
    /* Its etcd member first: a retry finds it gone and goes on to the event. */
    {
        uint64_t id = 0;
        int rc = quorum_member_remove(p->data_dir, uid, &id);
        if (rc < 0)
            return ops__fail(r, rc == INE_EUNAVAIL ? INE__V1__ERROR_CODE__ERROR_CODE_NO_QUORUM : INE__V1__ERROR_CODE__ERROR_CODE_CONFLICT,
                             "node %u's etcd member: %s", uid, ine_err_msg());
        if (rc == 1) logline(LOGLINE_INFO, 0, "etcd member node%u (%016llx) removed", uid, (unsigned long long)id);
    }
    b.node_uid = uid;
    r->uid = uid;
    ops__append(p, req, INE__V1__EVENT__BODY_NODE_REMOVED, &b, r, "node removed");
}

/* Every setting is checked before anything is written; settings that change nothing are left
 * out, and a request that changes nothing writes nothing. */
static void ops__set_alerts(policy_t *p, const Ine__V1__PolicyRequest *req, policy_result *r)
{
    const Ine__V1__SetAlertSettings *in = req->set_alert_settings;
    Ine__V1__AlertSettingsChanged b = INE__V1__ALERT_SETTINGS_CHANGED__INIT;
    Ine__V1__AlertSetting out[ALERTS_COUNT], *outp[ALERTS_COUNT];
    char canon[ALERTS_COUNT][ALERTS_THRESHOLD_LEN], what[512];
    size_t n = 0, len;
    if (!in->n_settings) return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "no alert setting given");
    snprintf(what, sizeof what, "alert settings changed:");
    for (size_t i = 0; i < in->n_settings; i++) {
        const Ine__V1__AlertSetting *s = in->settings[i];
        int has_en = s->enabled_opt_case == INE__V1__ALERT_SETTING__ENABLED_OPT_ENABLED;
        int has_th = s->threshold_opt_case == INE__V1__ALERT_SETTING__THRESHOLD_OPT_THRESHOLD;
        char c[ALERTS_THRESHOLD_LEN] = "";
        const alerts_def *d;
        alerts_setting cur;
        if (alerts_change_check(s->name, has_en, has_th, s->threshold, c) < 0)
            return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "%s", ine_err_msg());
        for (size_t j = 0; j < i; j++)
            if (!strcmp(in->settings[j]->name, s->name))
                return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "alert %s is named twice", s->name);
        d = alerts_def_find(s->name);
        alerts_setting_get(&p->st, d, &cur);
        if (!(has_en && !!s->enabled != cur.enabled) && !(has_th && strcmp(c, cur.threshold_str))) continue;
        ine__v1__alert_setting__init(&out[n]);
        out[n].name = (char *)d->name;
        if (has_en) out[n].enabled_opt_case = INE__V1__ALERT_SETTING__ENABLED_OPT_ENABLED, out[n].enabled = s->enabled;
        if (has_th) {
            memcpy(canon[n], c, sizeof c);
            out[n].threshold_opt_case = INE__V1__ALERT_SETTING__THRESHOLD_OPT_THRESHOLD;
            out[n].threshold = canon[n];
        }
        len = strlen(what);
        snprintf(what + len, sizeof what - len, "%s %s", n ? ";" : "", d->name);
        len = strlen(what);
        if (has_en) snprintf(what + len, sizeof what - len, " %s", s->enabled ? "enabled" : "disabled"), len = strlen(what);
        if (has_th) snprintf(what + len, sizeof what - len, "%s threshold %s %s", has_en ? "," : "", c, alerts_unit_name(d->unit));
        outp[n] = &out[n];
        n++;
    }
    if (!n) {
        /* Already so: nothing to record. */
        r->seq = p->st.applied_seq;
        return;
    }
    b.n_settings = n;
    b.settings = outp;
    ops__append(p, req, INE__V1__EVENT__BODY_ALERT_SETTINGS_CHANGED, &b, r, what);
}

/* Writers on other nodes may append between our checks and our commit: then the commit is
 * refused (stale) and the request is checked again against the newer state. */
#define OPS_STALE_RETRIES 50

static void ops__execute_once(policy_t *p, const Ine__V1__PolicyRequest *req, policy_result *r);

void policy_execute(policy_t *p, const Ine__V1__PolicyRequest *req, policy_result *r)
{
    for (int i = 0; i < OPS_STALE_RETRIES; i++) {
        ops__execute_once(p, req, r);
        if (!r->stale) return;
    }
    r->stale = 0;
    ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BUSY, "the cluster's log kept changing under this request (%d tries); retry",
              OPS_STALE_RETRIES);
}

static void ops__execute_once(policy_t *p, const Ine__V1__PolicyRequest *req, policy_result *r)
{
    memset(r, 0, sizeof *r);
    if (policy_catch_up(p) < 0)
        return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_INTERNAL, "cannot read the log: %s", ine_err_msg());
    if (!p->st.cluster.present)
        return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND, "no cluster in this data directory (inectl cluster create)");
    if (req->request_id && strlen(POLICY_REQID_PREFIX) + strlen(req->request_id) > EVLOG_MAX_REQUEST_ID)
        return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "the request id is longer than %zu bytes",
                         EVLOG_MAX_REQUEST_ID - strlen(POLICY_REQID_PREFIX));
    if (req->request_id && *req->request_id) {
        /* A retry answers with the original outcome, before validation: the first attempt
         * changed the state, so validating again would refuse it or act on something else. */
        char reqid[320];
        const policy_reqid *done;
        snprintf(reqid, sizeof reqid, POLICY_REQID_PREFIX "%s", req->request_id);
        if ((done = policy_reqids_find(p, reqid))) {
            r->seq = done->seq;
            r->uid = done->uid;
            return;
        }
    }
    switch (req->op_case) {
    case INE__V1__POLICY_REQUEST__OP_CREATE_DATABASE: return ops__create_db(p, req, r);
    case INE__V1__POLICY_REQUEST__OP_UPDATE_DATABASE: return ops__update_db(p, req, r);
    case INE__V1__POLICY_REQUEST__OP_DELETE_DATABASE: return ops__delete_db(p, req, r);
    case INE__V1__POLICY_REQUEST__OP_SET_DATABASE_ENCRYPTION: return ops__set_db_enc(p, req, r);
    case INE__V1__POLICY_REQUEST__OP_SET_CLUSTER_DEFAULT_ENCRYPTION: return ops__set_default(p, req, r);
    case INE__V1__POLICY_REQUEST__OP_ADD_NODE: return ops__add_node(p, req, r);
    case INE__V1__POLICY_REQUEST__OP_REMOVE_NODE: return ops__remove_node(p, req, r);
    case INE__V1__POLICY_REQUEST__OP_SET_ALERT_SETTINGS: return ops__set_alerts(p, req, r);
    default: return ops__fail(r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "unknown policy operation");
    }
}

int policy_serve(policy_t *p)
{
    for (;;) {
        uint8_t *buf, *out;
        size_t len, olen;
        Ine__V1__PolicyRequest *req;
        Ine__V1__Reply rep = INE__V1__REPLY__INIT;
        policy_result r;
        int rc = rpc_server_recv(p->rpc, &buf, &len);
        if (rc <= 0) return rc;
        if ((req = ine__v1__policy_request__unpack(NULL, len, buf))) {
            policy_execute(p, req, &r);
            ine__v1__policy_request__free_unpacked(req, NULL);
        } else {
            memset(&r, 0, sizeof r);
            ops__fail(&r, INE__V1__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "the request is not an ine.v1.PolicyRequest");
        }
        free(buf);
        rep.code = r.code;
        rep.description = r.description;
        rep.seq = r.seq;
        rep.uid = r.uid;
        olen = ine__v1__reply__get_packed_size(&rep);
        if (!(out = malloc(olen ? olen : 1))) return ine_err(INE_ENOMEM, "out of memory");
        ine__v1__reply__pack(&rep, out);
        rc = rpc_server_send(p->rpc, out, olen);
        free(out);
        GUARD(rc);
    }
}
