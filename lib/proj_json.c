/* proj_json.c — the projection as a readable JSON document (`ine-log state`, debugging), and
 * the enum names it uses.
 *
 * What it leaves out is the point: no sealed blob (only its length), no password hash, no
 * PEM (serial, fingerprint, subject and validity identify a certificate well enough to
 * read). Keys are added in a fixed order so a dump with JSON_PRESERVE_ORDER is stable and two
 * states can be compared by text. */
#include "proj.h"
#include "clock.h"
#include "err.h"

#include <stdio.h>
#include <strings.h>

const char *proj_plane_name(int plane)
{
    switch (plane) {
    case INE__V1__PLANE__PLANE_CONTROL: return "control";
    case INE__V1__PLANE__PLANE_DATA: return "data";
    default: return "unspecified";
    }
}

const char *proj_source_name(int source)
{
    switch (source) {
    case INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED: return "self_signed";
    case INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER: return "customer";
    default: return "unspecified";
    }
}

const char *proj_reason_name(int reason)
{
    switch (reason) {
    case INE__V1__ISSUE_REASON__ISSUE_REASON_INITIAL: return "initial";
    case INE__V1__ISSUE_REASON__ISSUE_REASON_SCHEDULED: return "scheduled";
    case INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL: return "manual";
    case INE__V1__ISSUE_REASON__ISSUE_REASON_CUSTOMER_UPLOAD: return "customer_upload";
    case INE__V1__ISSUE_REASON__ISSUE_REASON_CUSTOMER_EXPIRY_FALLBACK: return "customer_expiry_fallback";
    default: return "unspecified";
    }
}

const char *proj_severity_name(int severity)
{
    switch (severity) {
    case INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_INFO: return "info";
    case INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_WARNING: return "warning";
    case INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_ERROR: return "error";
    default: return "unspecified";
    }
}

const char *proj_root_state_name(proj_root_state s)
{
    return s == PROJ_ROOT_RETIRING ? "retiring" : "current";
}

static const char *proj__root_kind_name(proj_root_kind k)
{
    switch (k) {
    case PROJ_ROOT_CLUSTER_CA: return "cluster_ca";
    case PROJ_ROOT_CUSTOMER: return "customer";
    default: return "unknown";
    }
}

/* Setters that tolerate a NULL value (an earlier allocation failed): the document comes out
 * incomplete, and proj_to_json notices and returns NULL. */
typedef struct {
    int failed;
} proj__jctx;

static void proj__set(proj__jctx *c, json_t *o, const char *k, json_t *v)
{
    if (!v || json_object_set_new(o, k, v) < 0) c->failed = 1;
}

static void proj__str(proj__jctx *c, json_t *o, const char *k, const char *s) { proj__set(c, o, k, json_string(s ? s : "")); }
static void proj__int(proj__jctx *c, json_t *o, const char *k, int64_t v) { proj__set(c, o, k, json_integer((json_int_t)v)); }
static void proj__bool(proj__jctx *c, json_t *o, const char *k, int v) { proj__set(c, o, k, json_boolean(v)); }

static void proj__seq(proj__jctx *c, json_t *o, const char *k, uint64_t v)
{
    proj__set(c, o, k, v ? json_integer((json_int_t)v) : json_null());
}

/* "<k>": RFC 3339 and "<k>_unix": seconds; both null for 0 (never happened). */
static void proj__time_s(proj__jctx *c, json_t *o, const char *k, int64_t secs, int known)
{
    char buf[40], ku[64];
    snprintf(ku, sizeof ku, "%s_unix", k);
    if (!known) {
        proj__set(c, o, k, json_null());
        proj__set(c, o, ku, json_null());
        return;
    }
    proj__str(c, o, k, ine_clock_fmt(secs * INE_USEC_PER_SEC, buf, sizeof buf));
    proj__int(c, o, ku, secs);
}

static void proj__time_us(proj__jctx *c, json_t *o, const char *k, int64_t us)
{
    int64_t s = us / INE_USEC_PER_SEC;
    if (us < 0 && us % INE_USEC_PER_SEC) s -= 1;
    proj__time_s(c, o, k, s, us != 0);
}

static void proj__append(proj__jctx *c, json_t *arr, json_t *v)
{
    if (!v || json_array_append_new(arr, v) < 0) c->failed = 1;
}

static json_t *proj__obj(proj__jctx *c)
{
    json_t *o = json_object();
    if (!o) c->failed = 1;
    return o;
}

static void proj__certinfo(proj__jctx *c, json_t *o, const proj_certinfo *ci)
{
    proj__str(c, o, "subject", ci->subject);
    proj__str(c, o, "issuer", ci->issuer);
    proj__str(c, o, "serial", ci->serial_hex);
    proj__str(c, o, "fingerprint_sha256", ci->fingerprint);
    proj__time_s(c, o, "not_before", ci->not_before, 1);
    proj__time_s(c, o, "not_after", ci->not_after, 1);
}

static json_t *proj__cluster_json(proj__jctx *c, const proj_state *st)
{
    const proj_cluster *cl = &st->cluster;
    json_t *o;
    if (!cl->present) return json_null();
    if (!(o = proj__obj(c))) return NULL;
    proj__str(c, o, "uid", cl->uid);
    proj__str(c, o, "name", cl->name);
    proj__time_us(c, o, "created", cl->created_us);
    proj__seq(c, o, "created_seq", cl->created_seq);
    proj__str(c, o, "admin_username", cl->admin_username);
    proj__bool(c, o, "default_data_internode_encryption", cl->default_data_internode_encryption);
    proj__int(c, o, "rotation_period_seconds", cl->rotation_period_s);
    proj__int(c, o, "cert_validity_seconds", cl->cert_validity_s);
    return o;
}

static json_t *proj__ca_json(proj__jctx *c, const proj_state *st)
{
    json_t *o;
    if (!st->ca.present) return json_null();
    if (!(o = proj__obj(c))) return NULL;
    proj__certinfo(c, o, &st->ca.cert);
    proj__str(c, o, "reason", st->ca.reason);
    proj__time_us(c, o, "created", st->ca.created_us);
    proj__seq(c, o, "seq", st->ca.seq);
    proj__int(c, o, "sealed_key_bytes", (int64_t)st->ca.sealed_key_len);
    return o;
}

static json_t *proj__nodes_json(proj__jctx *c, const proj_state *st)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < st->n_nodes; i++) {
        const proj_node *n = &st->nodes[i];
        json_t *o = proj__obj(c);
        if (!o) break;
        proj__int(c, o, "uid", n->uid);
        proj__str(c, o, "name", n->name);
        proj__str(c, o, "address", n->address);
        proj__bool(c, o, "removed", n->removed);
        proj__seq(c, o, "added_seq", n->added_seq);
        proj__seq(c, o, "removed_seq", n->removed_seq);
        /* Only for nodes that joined, so documents of older logs stay as they were. */
        if (n->join_token_id && *n->join_token_id) proj__str(c, o, "join_token_id", n->join_token_id);
        proj__append(c, a, o);
    }
    return a;
}

/* Join tokens by id, expiry and use; never the hash (it is not secret, but it is no use to
 * a reader either). */
static json_t *proj__tokens_json(proj__jctx *c, const proj_state *st)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < st->n_join_tokens; i++) {
        const proj_join_token *k = &st->join_tokens[i];
        json_t *o = proj__obj(c);
        if (!o) break;
        proj__str(c, o, "token_id", k->token_id);
        proj__time_s(c, o, "expires", k->expires_at, 1);
        proj__seq(c, o, "issued_seq", k->issued_seq);
        proj__int(c, o, "used_by_node", k->used_by);
        proj__seq(c, o, "used_seq", k->used_seq);
        proj__append(c, a, o);
    }
    return a;
}

static json_t *proj__dbs_json(proj__jctx *c, const proj_state *st)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < st->n_dbs; i++) {
        const proj_db *d = &st->dbs[i];
        json_t *o = proj__obj(c);
        if (!o) break;
        proj__int(c, o, "uid", d->uid);
        proj__str(c, o, "name", d->name);
        proj__int(c, o, "port", d->port);
        proj__int(c, o, "shard_node", d->shard_node_uid);
        proj__str(c, o, "shard_address", d->shard_address);
        proj__bool(c, o, "data_internode_encryption", d->data_internode_encryption);
        proj__bool(c, o, "deleted", d->deleted);
        proj__seq(c, o, "created_seq", d->created_seq);
        proj__seq(c, o, "updated_seq", d->updated_seq);
        proj__append(c, a, o);
    }
    return a;
}

static json_t *proj__certs_json(proj__jctx *c, const proj_state *st)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < st->n_certs; i++) {
        const proj_cert *ce = &st->certs[i];
        const proj_activation *act = proj_activation_find(st, ce->node_uid, ce->plane);
        json_t *o = proj__obj(c);
        if (!o) break;
        proj__int(c, o, "node", ce->node_uid);
        proj__str(c, o, "plane", proj_plane_name(ce->plane));
        proj__str(c, o, "source", proj_source_name(ce->source));
        proj__str(c, o, "reason", proj_reason_name(ce->reason));
        proj__certinfo(c, o, &ce->cert);
        proj__str(c, o, "root_fingerprint_sha256", ce->root_fingerprint);
        proj__str(c, o, "rotation_id", ce->rotation_id);
        proj__time_us(c, o, "issued", ce->issued_us);
        proj__seq(c, o, "issued_seq", ce->issued_seq);
        proj__int(c, o, "sealed_key_bytes", (int64_t)ce->sealed_key_len);
        proj__bool(c, o, "active", act && strcasecmp(act->fingerprint, ce->cert.fingerprint) == 0);
        proj__append(c, a, o);
    }
    return a;
}

static json_t *proj__acts_json(proj__jctx *c, const proj_state *st)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < st->n_acts; i++) {
        const proj_activation *ac = &st->acts[i];
        json_t *o = proj__obj(c);
        if (!o) break;
        proj__int(c, o, "node", ac->node_uid);
        proj__str(c, o, "plane", proj_plane_name(ac->plane));
        proj__str(c, o, "serial", ac->serial_hex);
        proj__str(c, o, "fingerprint_sha256", ac->fingerprint);
        proj__time_us(c, o, "activated", ac->time_us);
        proj__seq(c, o, "seq", ac->seq);
        proj__append(c, a, o);
    }
    return a;
}

static json_t *proj__planes_json(unsigned mask)
{
    json_t *a = json_array();
    for (int p = PROJ_PLANE_MIN; a && p <= PROJ_PLANE_MAX; p++)
        if (mask & PROJ_PLANE_BIT(p)) json_array_append_new(a, json_string(proj_plane_name(p)));
    return a;
}

static json_t *proj__rotations_json(proj__jctx *c, const proj_state *st)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < st->n_rotations; i++) {
        const proj_rotation *r = &st->rotations[i];
        json_t *o = proj__obj(c), *nodes;
        if (!o) break;
        proj__str(c, o, "rotation_id", r->rotation_id);
        proj__str(c, o, "reason", proj_reason_name(r->reason));
        proj__set(c, o, "planes", proj__planes_json(r->planes));
        if (r->n_node_uids) {
            nodes = json_array();
            for (size_t k = 0; nodes && k < r->n_node_uids; k++) json_array_append_new(nodes, json_integer(r->node_uids[k]));
        } else {
            nodes = json_string("all");
        }
        proj__set(c, o, "nodes", nodes);
        proj__time_us(c, o, "requested", r->time_us);
        proj__seq(c, o, "seq", r->seq);
        proj__append(c, a, o);
    }
    return a;
}

static json_t *proj__alerts_json(proj__jctx *c, const proj_state *st)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < st->n_alerts; i++) {
        const proj_alert *al = &st->alerts[i];
        json_t *o = proj__obj(c);
        if (!o) break;
        proj__str(c, o, "alert_id", al->alert_id);
        proj__str(c, o, "name", al->name);
        proj__str(c, o, "severity", proj_severity_name(al->severity));
        proj__set(c, o, "node", al->node_uid ? json_integer(al->node_uid) : json_null());
        proj__set(c, o, "plane", al->plane ? json_string(proj_plane_name(al->plane)) : json_null());
        proj__str(c, o, "description", al->description);
        proj__str(c, o, "threshold", al->threshold);
        proj__str(c, o, "change_value", al->change_value);
        proj__time_us(c, o, "raised", al->raised_us);
        proj__seq(c, o, "raised_seq", al->raised_seq);
        proj__seq(c, o, "updated_seq", al->updated_seq);
        proj__append(c, a, o);
    }
    return a;
}

static json_t *proj__settings_json(proj__jctx *c, const proj_state *st)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < st->n_alert_settings; i++) {
        const proj_alert_setting *s = &st->alert_settings[i];
        json_t *o = proj__obj(c);
        if (!o) break;
        proj__str(c, o, "name", s->name);
        proj__set(c, o, "enabled", s->has_enabled ? json_boolean(s->enabled) : json_null());
        proj__set(c, o, "threshold", *s->threshold ? json_string(s->threshold) : json_null());
        proj__seq(c, o, "seq", s->seq);
        proj__append(c, a, o);
    }
    return a;
}

static json_t *proj__fallbacks_json(proj__jctx *c, const proj_state *st)
{
    json_t *a = json_array();
    for (int p = PROJ_PLANE_MIN; a && p <= PROJ_PLANE_MAX; p++) {
        const proj_fallback *f = &st->fallbacks[p];
        json_t *o;
        if (!f->present) continue;
        if (!(o = proj__obj(c))) break;
        proj__str(c, o, "plane", proj_plane_name(p));
        proj__str(c, o, "customer_fingerprint_sha256", f->customer_fingerprint);
        proj__time_s(c, o, "customer_not_after", f->customer_not_after, 1);
        proj__str(c, o, "rotation_id", f->rotation_id);
        proj__time_us(c, o, "time", f->time_us);
        proj__seq(c, o, "seq", f->seq);
        proj__append(c, a, o);
    }
    return a;
}

static json_t *proj__trust_json(proj__jctx *c, const proj_state *st)
{
    json_t *o = proj__obj(c), *roots = json_array();
    if (!o || !roots) {
        json_decref(o);
        json_decref(roots);
        c->failed = 1;
        return NULL;
    }
    proj__bool(c, o, "converged", proj_trust_converged(st));
    proj__seq(c, o, "changed_seq", st->trust_changed_seq);
    for (size_t i = 0; i < st->n_bundle; i++) {
        const proj_root *r = &st->bundle[i];
        json_t *ro = proj__obj(c);
        if (!ro) break;
        proj__str(c, ro, "fingerprint_sha256", r->fingerprint);
        proj__str(c, ro, "state", proj_root_state_name(r->state));
        proj__str(c, ro, "kind", proj__root_kind_name(r->kind));
        proj__str(c, ro, "subject", r->subject);
        proj__bool(c, ro, "pem_known", r->pem != NULL);
        proj__seq(c, ro, "since_seq", r->since_seq);
        proj__append(c, roots, ro);
    }
    proj__set(c, o, "roots", roots);
    return o;
}

json_t *proj_to_json(const proj_state *st)
{
    proj__jctx c = {0};
    json_t *o = json_object();
    if (!o) goto oom;
    proj__seq(&c, o, "applied_seq", st->applied_seq);
    proj__time_us(&c, o, "last_event_time", st->last_time_us);
    proj__set(&c, o, "cluster", proj__cluster_json(&c, st));
    proj__set(&c, o, "ca", proj__ca_json(&c, st));
    proj__set(&c, o, "trust_bundle", proj__trust_json(&c, st));
    proj__set(&c, o, "nodes", proj__nodes_json(&c, st));
    proj__set(&c, o, "databases", proj__dbs_json(&c, st));
    proj__set(&c, o, "certificates", proj__certs_json(&c, st));
    proj__set(&c, o, "activations", proj__acts_json(&c, st));
    proj__set(&c, o, "pending_rotations", proj__rotations_json(&c, st));
    proj__set(&c, o, "customer_fallbacks", proj__fallbacks_json(&c, st));
    proj__set(&c, o, "alerts", proj__alerts_json(&c, st));
    if (st->n_alert_settings) proj__set(&c, o, "alert_settings", proj__settings_json(&c, st));
    if (st->n_join_tokens) proj__set(&c, o, "join_tokens", proj__tokens_json(&c, st));
    if (!c.failed) return o;
    json_decref(o);
oom:
    ine_err(INE_ENOMEM, "out of memory rendering the state as JSON");
    return NULL;
}
