/* alerts.c — the alert catalogue, settings and the evaluation of a state at a time
 * (alerts.h). Pure functions of the projection and the clock value passed in, so the same
 * state and time always ask for the same alerts: that is what lets ine-alerting restart
 * without raising anything twice. */
#include "alerts.h"
#include "clock.h"
#include "err.h"
#include "pki.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ALERTS__DEFAULT_ROTATION_S (30 * INE_SEC_PER_DAY)

static const alerts_def alerts__defs[ALERTS_COUNT] = {
    {ALERTS_NODE_EXPIRY, "node_internal_certs_about_to_expire", 1, INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_WARNING,
     ALERTS_UNIT_DAYS, 1, 36500, 45, "a node's internal certificate (control or data plane) has fewer days left than the threshold"},
    {ALERTS_CLUSTER_EXPIRY, "cluster_certs_about_to_expire", 0, INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_WARNING,
     ALERTS_UNIT_DAYS, 1, 36500, 45, "the cluster CA certificate has fewer days left than the threshold"},
    {ALERTS_ROTATION_OVERDUE, "node_cert_rotation_overdue", 1, INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_WARNING,
     ALERTS_UNIT_HOURS, 0, 8760, 1, "a self-signed node certificate outlived the rotation period by the threshold without being replaced"},
    {ALERTS_NOT_ACTIVATED, "node_cert_not_activated", 1, INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_WARNING,
     ALERTS_UNIT_MINUTES, 1, 10080, 10, "a node has not activated its current certificate within the threshold after issuance"},
    {ALERTS_CUSTOMER_FALLBACK, "customer_cert_expiry_fallback", 0, INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_INFO,
     ALERTS_UNIT_NONE, 0, 0, 0, "a customer certificate near expiry was replaced by self-signed ones (until a new upload)"},
    {ALERTS_STORAGE, "consensus_storage_near_quota", 0, INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_WARNING,
     ALERTS_UNIT_PERCENT, 1, 99, 75, "etcd's database, where the cluster's log commits, uses more of its quota than the threshold"},
    {ALERTS_CLOCK_SKEW, "node_clock_skew", 1, INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_WARNING,
     ALERTS_UNIT_SECONDS, 1, 3600, 120, "a node's clock is off the cluster's by the threshold or more (measured on heartbeats)"},
};

const alerts_def *alerts_def_at(alerts_kind k)
{
    return (unsigned)k < ALERTS_COUNT ? &alerts__defs[k] : NULL;
}

const alerts_def *alerts_def_find(const char *name)
{
    for (size_t i = 0; name && i < ALERTS_COUNT; i++)
        if (!strcmp(alerts__defs[i].name, name)) return &alerts__defs[i];
    return NULL;
}

const char *alerts_unit_name(alerts_unit u)
{
    switch (u) {
    case ALERTS_UNIT_DAYS: return "days";
    case ALERTS_UNIT_HOURS: return "hours";
    case ALERTS_UNIT_MINUTES: return "minutes";
    case ALERTS_UNIT_PERCENT: return "percent";
    case ALERTS_UNIT_SECONDS: return "seconds";
    default: return "";
    }
}

const char *alerts_plane_tag(int plane)
{
    return plane == INE__V1__PLANE__PLANE_CONTROL ? "cp" : plane == INE__V1__PLANE__PLANE_DATA ? "dp" : "";
}

/* ---- settings ---------------------------------------------------------------------------- */

int alerts_threshold_parse(const alerts_def *d, const char *s, long *out, char *canon)
{
    long v = 0;
    size_t n = s ? strlen(s) : 0;
    if (d->unit == ALERTS_UNIT_NONE) return ine_err(INE_EINVAL, "alert %s takes no threshold", d->name);
    if (n == 0 || n > 9 || strspn(s, "0123456789") != n)
        return ine_err(INE_EINVAL, "threshold '%s' for %s is not a whole number of %s (%ld to %ld)", s ? s : "", d->name,
                       alerts_unit_name(d->unit), d->min_threshold, d->max_threshold);
    for (size_t i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
    if (v < d->min_threshold || v > d->max_threshold)
        return ine_err(INE_EINVAL, "threshold %ld for %s is out of range: %ld to %ld %s", v, d->name, d->min_threshold,
                       d->max_threshold, alerts_unit_name(d->unit));
    if (out) *out = v;
    if (canon) snprintf(canon, ALERTS_THRESHOLD_LEN, "%ld", v);
    return INE_OK;
}

int alerts_change_check(const char *name, int has_enabled, int has_threshold, const char *threshold, char *canon)
{
    const alerts_def *d = alerts_def_find(name);
    if (!d) {
        char known[512] = "";
        for (size_t i = 0; i < ALERTS_COUNT; i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", alerts__defs[i].name);
        return ine_err(INE_ENOTFOUND, "unknown alert '%s' (known: %s)", name ? name : "", known);
    }
    if (!has_enabled && !has_threshold) return ine_err(INE_EINVAL, "the setting for %s changes nothing: give enabled or threshold", d->name);
    if (has_threshold) GUARD(alerts_threshold_parse(d, threshold, NULL, canon));
    return INE_OK;
}

void alerts_setting_get(const proj_state *st, const alerts_def *d, alerts_setting *out)
{
    const proj_alert_setting *s = st ? proj_alert_setting_find(st, d->name) : NULL;
    memset(out, 0, sizeof *out);
    out->enabled = 1;
    out->threshold = d->default_threshold;
    if (s) {
        long v;
        char canon[ALERTS_THRESHOLD_LEN];
        int rc;
        if (s->has_enabled) out->enabled = s->enabled;
        /* A bad threshold in the log keeps the default; the sentence of the parse is dropped. */
        if (d->unit != ALERTS_UNIT_NONE && *s->threshold && (rc = alerts_threshold_parse(d, s->threshold, &v, canon)) == INE_OK)
            out->threshold = v;
        out->seq = s->seq;
    }
    if (d->unit != ALERTS_UNIT_NONE) snprintf(out->threshold_str, sizeof out->threshold_str, "%ld", out->threshold);
}

/* ---- ids and subjects -------------------------------------------------------------------- */

void alerts_id(const alerts_def *d, uint32_t node, int plane, char *buf)
{
    if (d->per_node && !plane) snprintf(buf, ALERTS_ID_LEN, "%s/%u", d->name, node);
    else if (d->per_node) snprintf(buf, ALERTS_ID_LEN, "%s/%u/%s", d->name, node, alerts_plane_tag(plane));
    else if (d->kind == ALERTS_CUSTOMER_FALLBACK) snprintf(buf, ALERTS_ID_LEN, "%s/%s", d->name, alerts_plane_tag(plane));
    else snprintf(buf, ALERTS_ID_LEN, "%s", d->name);
}

const char *alerts_subject(const proj_state *st, const alerts_def *d, uint32_t node, int plane)
{
    const proj_cert *c;
    switch (d->kind) {
    case ALERTS_CLUSTER_EXPIRY: return st->ca.present ? st->ca.cert.fingerprint : "";
    case ALERTS_CUSTOMER_FALLBACK:
        if (plane < PROJ_PLANE_MIN || plane > PROJ_PLANE_MAX || !st->fallbacks[plane].present) return "";
        return st->fallbacks[plane].customer_fingerprint;
    default:
        c = proj_cert_find(st, node, plane);
        return c ? c->cert.fingerprint : "";
    }
}

/* ---- evaluation -------------------------------------------------------------------------- */

static int alerts__cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    alerts_want *v;
    size_t n, cap;
} alerts__list;

static alerts_want *alerts__push(alerts__list *l, const alerts_def *d, uint32_t node, int plane, const alerts_setting *s)
{
    alerts_want *w;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        alerts_want *p = realloc(l->v, ncap * sizeof *p);
        if (!p) return NULL;
        l->v = p;
        l->cap = ncap;
    }
    w = &l->v[l->n++];
    memset(w, 0, sizeof *w);
    w->def = d;
    w->node_uid = node;
    w->plane = plane;
    alerts_id(d, node, plane, w->alert_id);
    snprintf(w->threshold, sizeof w->threshold, "%s", s->threshold_str);
    return w;
}

/* Whole units, rounded towards minus infinity (an expired certificate has -1 days left). */
static int64_t alerts__floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

static void alerts__subject(alerts_want *w, const proj_certinfo *ci)
{
    snprintf(w->fingerprint, sizeof w->fingerprint, "%s", ci->fingerprint);
    snprintf(w->serial, sizeof w->serial, "%s", ci->serial_hex);
}

static int alerts__slot(alerts__list *l, const proj_state *st, const proj_cert *c, int64_t now, const alerts_setting *set)
{
    const alerts_def *d;
    alerts_want *w;
    char ts[40];
    const char *plane = proj_plane_name(c->plane);
    int64_t left = c->cert.not_after - now;

    d = &alerts__defs[ALERTS_NODE_EXPIRY];
    if (set[d->kind].enabled && left < set[d->kind].threshold * INE_SEC_PER_DAY) {
        if (!(w = alerts__push(l, d, c->node_uid, c->plane, &set[d->kind]))) return INE_ENOMEM;
        alerts__subject(w, &c->cert);
        snprintf(w->change_value, sizeof w->change_value, "%lld", (long long)alerts__floor_div(left, INE_SEC_PER_DAY));
        snprintf(w->description, sizeof w->description,
                 "node %u %s-plane certificate (serial %s, %s) expires %s: %s days left, threshold %ld days", c->node_uid,
                 plane, c->cert.serial_hex, proj_source_name(c->source),
                 ine_clock_fmt(c->cert.not_after * INE_USEC_PER_SEC, ts, sizeof ts), w->change_value, set[d->kind].threshold);
    }

    d = &alerts__defs[ALERTS_ROTATION_OVERDUE];
    if (set[d->kind].enabled && c->source == INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED) {
        int64_t period = st->cluster.rotation_period_s > 0 ? st->cluster.rotation_period_s : ALERTS__DEFAULT_ROTATION_S;
        int64_t age = now - (c->cert.not_before + PKI_BACKDATE_S), past = age - period;
        if (past > 0 && past >= set[d->kind].threshold * 3600) {
            if (!(w = alerts__push(l, d, c->node_uid, c->plane, &set[d->kind]))) return INE_ENOMEM;
            alerts__subject(w, &c->cert);
            snprintf(w->change_value, sizeof w->change_value, "%lld", (long long)(past / 3600));
            snprintf(w->description, sizeof w->description,
                     "node %u %s-plane certificate (serial %s) is %lld days old and was due for rotation at %lld days: "
                     "%s hours overdue, threshold %ld hours (is ine-ca running?)",
                     c->node_uid, plane, c->cert.serial_hex, (long long)(age / INE_SEC_PER_DAY),
                     (long long)(period / INE_SEC_PER_DAY), w->change_value, set[d->kind].threshold);
        }
    }

    d = &alerts__defs[ALERTS_NOT_ACTIVATED];
    if (set[d->kind].enabled) {
        const proj_activation *a = proj_activation_find(st, c->node_uid, c->plane);
        int64_t waited = now - alerts__floor_div(c->issued_us, INE_USEC_PER_SEC);
        if ((!a || strcasecmp(a->fingerprint, c->cert.fingerprint)) && waited >= set[d->kind].threshold * 60) {
            if (!(w = alerts__push(l, d, c->node_uid, c->plane, &set[d->kind]))) return INE_ENOMEM;
            alerts__subject(w, &c->cert);
            snprintf(w->change_value, sizeof w->change_value, "%lld", (long long)(waited / 60));
            snprintf(w->description, sizeof w->description,
                     "node %u has not activated its %s-plane certificate (serial %s) %s minutes after issuance "
                     "(threshold %ld minutes); it serves %s",
                     c->node_uid, plane, c->cert.serial_hex, w->change_value, set[d->kind].threshold,
                     a ? a->serial_hex : "nothing reported yet");
        }
    }
    return INE_OK;
}

/* A customer certificate uploaded for the plane after the fallback ends the notice. */
static int alerts__uploaded_since(const proj_state *st, int plane, uint64_t seq)
{
    for (size_t i = 0; i < st->n_certs; i++)
        if (st->certs[i].plane == plane && st->certs[i].source == INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER &&
            st->certs[i].issued_seq > seq)
            return 1;
    return 0;
}

static int alerts__cmp(const void *a, const void *b)
{
    return strcmp(((const alerts_want *)a)->alert_id, ((const alerts_want *)b)->alert_id);
}

/* Per observer: the cluster's clock is the median of the observer's own (0) and the offsets
 * it measured; each node's skew is its offset from that median. The largest a node shows to
 * any observer is what its alert says. */
static int alerts__skew(const proj_state *st, int64_t now, const alerts_env *env, const alerts_def *d, const alerts_setting *s,
                        alerts__list *l)
{
    size_t n = env->n_clocks;
    int64_t *vals = calloc(n + 1, sizeof *vals), *worst = calloc(n + 1, sizeof *worst);
    uint32_t *nodes = calloc(n + 1, sizeof *nodes), *seen_by = calloc(n + 1, sizeof *seen_by);
    size_t n_nodes = 0;
    int rc = -1;
    if (!vals || !worst || !nodes || !seen_by) goto out;
    for (size_t i = 0; i < n; i++) {
        uint32_t o = env->clocks[i].observer;
        size_t k = 0, j;
        int first = 1;
        for (j = 0; j < i; j++)
            if (env->clocks[j].observer == o) first = 0;
        if (!first) continue; /* this observer was done with its first entry */
        vals[k++] = 0;
        for (j = i; j < n; j++)
            if (env->clocks[j].observer == o && env->clocks[j].at >= now - 60) vals[k++] = env->clocks[j].offset_ms;
        if (k < 2) continue;
        qsort(vals, k, sizeof *vals, alerts__cmp_i64);
        int64_t median = vals[k / 2];
        /* The observer itself (offset 0), then each node it measured. */
        for (j = i; j <= n; j++) {
            uint32_t node;
            int64_t skew;
            size_t m;
            if (j == n) {
                node = o;
                skew = -median;
            } else if (env->clocks[j].observer == o && env->clocks[j].at >= now - 60) {
                node = env->clocks[j].node;
                skew = env->clocks[j].offset_ms - median;
            } else {
                continue;
            }
            for (m = 0; m < n_nodes && nodes[m] != node; m++) {
            }
            if (m == n_nodes) {
                nodes[n_nodes] = node;
                worst[n_nodes] = 0;
                n_nodes++;
            }
            if ((skew < 0 ? -skew : skew) > (worst[m] < 0 ? -worst[m] : worst[m])) {
                worst[m] = skew;
                seen_by[m] = o;
            }
        }
    }
    for (size_t m = 0; m < n_nodes; m++) {
        const proj_node *pn = proj_node_find(st, nodes[m]);
        int64_t abs_ms = worst[m] < 0 ? -worst[m] : worst[m];
        alerts_want *w;
        if (!pn || pn->removed || abs_ms < (int64_t)s->threshold * 1000) continue;
        if (!(w = alerts__push(l, d, nodes[m], 0, s))) goto out;
        snprintf(w->change_value, sizeof w->change_value, "%lld", (long long)(worst[m] / 1000));
        snprintf(w->description, sizeof w->description,
                 "node %u's clock is %lld s %s the cluster's (measured on control-plane heartbeats by node %u; threshold %ld s): "
                 "certificates are backdated %d s, past which this node refuses new ones as not yet valid; fix its time "
                 "synchronisation (NTP)",
                 nodes[m], (long long)(abs_ms / 1000), worst[m] > 0 ? "ahead of" : "behind", seen_by[m], s->threshold,
                 PKI_BACKDATE_S);
    }
    rc = 0;
out:
    free(vals);
    free(worst);
    free(nodes);
    free(seen_by);
    return rc;
}

int alerts_evaluate(const proj_state *st, int64_t now, const alerts_env *env, alerts_want **out, size_t *n)
{
    alerts_setting set[ALERTS_COUNT];
    alerts__list l = {0};
    alerts_want *w;
    const alerts_def *d;
    char ts[40];

    *out = NULL;
    *n = 0;
    for (size_t k = 0; k < ALERTS_COUNT; k++) alerts_setting_get(st, &alerts__defs[k], &set[k]);

    for (size_t i = 0; i < st->n_certs; i++) {
        const proj_node *nd = proj_node_find(st, st->certs[i].node_uid);
        if (!nd || nd->removed) continue;
        if (alerts__slot(&l, st, &st->certs[i], now, set) < 0) goto oom;
    }

    d = &alerts__defs[ALERTS_CLUSTER_EXPIRY];
    if (set[d->kind].enabled && st->ca.present) {
        int64_t left = st->ca.cert.not_after - now;
        if (left < set[d->kind].threshold * INE_SEC_PER_DAY) {
            if (!(w = alerts__push(&l, d, 0, 0, &set[d->kind]))) goto oom;
            alerts__subject(w, &st->ca.cert);
            snprintf(w->change_value, sizeof w->change_value, "%lld", (long long)alerts__floor_div(left, INE_SEC_PER_DAY));
            snprintf(w->description, sizeof w->description,
                     "cluster CA certificate (serial %s) expires %s: %s days left, threshold %ld days", st->ca.cert.serial_hex,
                     ine_clock_fmt(st->ca.cert.not_after * INE_USEC_PER_SEC, ts, sizeof ts), w->change_value,
                     set[d->kind].threshold);
        }
    }

    d = &alerts__defs[ALERTS_CUSTOMER_FALLBACK];
    for (int p = PROJ_PLANE_MIN; set[d->kind].enabled && p <= PROJ_PLANE_MAX; p++) {
        const proj_fallback *f = &st->fallbacks[p];
        if (!f->present || alerts__uploaded_since(st, p, f->seq)) continue;
        if (!(w = alerts__push(&l, d, 0, p, &set[d->kind]))) goto oom;
        snprintf(w->fingerprint, sizeof w->fingerprint, "%s", f->customer_fingerprint);
        snprintf(w->change_value, sizeof w->change_value, "%lld",
                 (long long)alerts__floor_div(f->customer_not_after - now, INE_SEC_PER_DAY));
        snprintf(w->description, sizeof w->description,
                 "the customer %s-plane certificate (SHA-256 %.16s...) expiring %s was replaced by self-signed "
                 "certificates; upload a new one to serve your own again",
                 proj_plane_name(p), f->customer_fingerprint, ine_clock_fmt(f->customer_not_after * INE_USEC_PER_SEC, ts, sizeof ts));
    }

    d = &alerts__defs[ALERTS_STORAGE];
    if (set[d->kind].enabled && env && env->storage_quota_bytes > 0 && env->storage_used_bytes > 0) {
        int64_t pct = env->storage_used_bytes * 100 / env->storage_quota_bytes;
        if (pct >= set[d->kind].threshold) {
            if (!(w = alerts__push(&l, d, 0, 0, &set[d->kind]))) goto oom;
            snprintf(w->change_value, sizeof w->change_value, "%lld", (long long)pct);
            snprintf(w->description, sizeof w->description,
                     "etcd's database%s%s uses %lld MiB of its %lld MiB quota (%lld %%, threshold %ld %%): past the quota "
                     "every change to the cluster is refused; compact and defragment etcd, or raise --quota-backend-bytes "
                     "(and quota_bytes in etcd.conf)",
                     env->storage_where ? " on " : "", env->storage_where ? env->storage_where : "",
                     (long long)(env->storage_used_bytes >> 20), (long long)(env->storage_quota_bytes >> 20), (long long)pct,
                     set[d->kind].threshold);
        }
    }

    d = &alerts__defs[ALERTS_CLOCK_SKEW];
    if (set[d->kind].enabled && env && env->n_clocks && alerts__skew(st, now, env, d, &set[d->kind], &l) < 0) goto oom;

    if (l.n) qsort(l.v, l.n, sizeof *l.v, alerts__cmp);
    *out = l.v;
    *n = l.n;
    return INE_OK;
oom:
    free(l.v);
    return ine_err(INE_ENOMEM, "out of memory evaluating alerts");
}

const char *alerts_clear_reason(const proj_state *st, const alerts_def *d, uint32_t node, int plane, const char *raised_for)
{
    alerts_setting s;
    const char *subj;
    alerts_setting_get(st, d, &s);
    if (!s.enabled) return "alert disabled";
    if (d->per_node) {
        const proj_node *n = proj_node_find(st, node);
        if (!n || n->removed) return "node removed";
    }
    subj = alerts_subject(st, d, node, plane);
    if (raised_for && *raised_for && strcasecmp(subj, raised_for)) return *subj ? "certificate replaced" : "certificate removed";
    switch (d->kind) {
    case ALERTS_NODE_EXPIRY:
    case ALERTS_CLUSTER_EXPIRY: return "no longer within the threshold";
    case ALERTS_ROTATION_OVERDUE: return "no longer overdue";
    case ALERTS_NOT_ACTIVATED: {
        const proj_activation *a = proj_activation_find(st, node, plane);
        return a && !strcasecmp(a->fingerprint, subj) ? "certificate activated" : "no longer overdue";
    }
    case ALERTS_CUSTOMER_FALLBACK: return "customer certificate uploaded";
    case ALERTS_STORAGE: return "below the threshold";
    case ALERTS_CLOCK_SKEW: return "clock back within the threshold";
    default: return "resolved";
    }
}
