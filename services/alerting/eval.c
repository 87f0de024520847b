/* eval.c — the alerting service's view of the log and its actions on it.
 *
 * Following: every event is folded into the projection; alert events also update the memo
 * (which certificate an alert was raised for, when it was last cleared) and, with a webhook,
 * queue a JSON post. Acting: lib/alerts says which alerts the state asks for now; what is
 * asked for and not active is raised, what is active and no longer asked for is cleared. The
 * projection is checked before every append, and every append carries a request id that names
 * the alert, the certificate it concerns and the episode, so a repeat writes nothing. */
#include "alerting.h"
#include "skew.h"
#include "clock.h"
#include "err.h"
#include "logline.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- memo ------------------------------------------------------------------------------ */

static size_t alerting__memo_pos(const alerting_t *a, const char *id, int *found)
{
    size_t lo = 0, hi = a->n_memo;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(a->memo[mid].alert_id, id) < 0) lo = mid + 1;
        else hi = mid;
    }
    *found = lo < a->n_memo && strcmp(a->memo[lo].alert_id, id) == 0;
    return lo;
}

static const alerting_memo *alerting__memo_find(const alerting_t *a, const char *id)
{
    int found;
    size_t i = alerting__memo_pos(a, id, &found);
    return found ? &a->memo[i] : NULL;
}

static alerting_memo *alerting__memo_get(alerting_t *a, const char *id)
{
    int found;
    size_t i = alerting__memo_pos(a, id, &found);
    char *dup;
    if (found) return &a->memo[i];
    if (a->n_memo == a->cap_memo) {
        size_t ncap = a->cap_memo ? a->cap_memo * 2 : 16;
        alerting_memo *p = realloc(a->memo, ncap * sizeof *p);
        if (!p) return NULL;
        a->memo = p;
        a->cap_memo = ncap;
    }
    if (!(dup = strdup(id))) return NULL;
    memmove(&a->memo[i + 1], &a->memo[i], (a->n_memo - i) * sizeof *a->memo);
    memset(&a->memo[i], 0, sizeof a->memo[i]);
    a->memo[i].alert_id = dup;
    a->n_memo++;
    return &a->memo[i];
}

void alerting_memo_free(alerting_t *a)
{
    for (size_t i = 0; i < a->n_memo; i++) free(a->memo[i].alert_id);
    free(a->memo);
    a->memo = NULL;
    a->n_memo = a->cap_memo = 0;
}

/* ---- following --------------------------------------------------------------------------- */

static const char *alerting__severity_upper(int s)
{
    switch (s) {
    case INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_INFO: return "INFO";
    case INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_WARNING: return "WARNING";
    case INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_ERROR: return "ERROR";
    default: return "UNSPECIFIED";
    }
}

/* The webhook body for an alert event; a clear is described from the alert it ends (still in
 * the state, as this runs before the fold). NULL if there is nothing to say. */
static char *alerting__hook_body(const alerting_t *a, const evlog_event *ev, uint64_t seq)
{
    const Ine__V1__AlertRaised *r = ev->body_case == INE__V1__EVENT__BODY_ALERT_RAISED ? ev->alert_raised : NULL;
    const proj_alert *old = r ? NULL : proj_alert_find(&a->st, ev->alert_cleared->alert_id);
    char ts[40], *s;
    json_t *o;
    if (!r && !old) return NULL; /* clearing what was not active changes nothing */
    o = json_pack("{s:s, s:I, s:s, s:{s:s, s:s}, s:s, s:s, s:b, s:s}", "event", r ? "alert_raised" : "alert_cleared", "seq",
                  (json_int_t)seq, "time", ine_clock_fmt(ev->time_us, ts, sizeof ts), "cluster", "uid",
                  a->st.cluster.uid ? a->st.cluster.uid : "", "name", a->st.cluster.name ? a->st.cluster.name : "", "alert_id",
                  r ? r->alert_id : old->alert_id, "name", r ? r->name : old->name, "state", r != NULL, "severity",
                  alerting__severity_upper(r ? (int)r->severity : old->severity));
    if (!o) return NULL;
    {
        uint32_t node = r ? r->node_uid : old->node_uid;
        int plane = r ? (int)r->plane : old->plane;
        json_object_set_new(o, "node", node ? json_integer(node) : json_null());
        json_object_set_new(o, "plane", plane ? json_string(proj_plane_name(plane)) : json_null());
        json_object_set_new(o, "threshold", json_string(r ? r->threshold : old->threshold));
        json_object_set_new(o, "change_value", json_string(r ? r->change_value : old->change_value));
        json_object_set_new(o, "description", json_string(r ? r->description : old->description));
        if (!r) json_object_set_new(o, "reason", json_string(ev->alert_cleared->reason ? ev->alert_cleared->reason : ""));
    }
    s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

int alerting_apply(const evlog_event *ev, uint64_t seq, void *ud)
{
    alerting_t *a = ud;
    int rc;
    if (ev->body_case == INE__V1__EVENT__BODY_ALERT_RAISED && ev->alert_raised) {
        const Ine__V1__AlertRaised *r = ev->alert_raised;
        /* A raise of an active alert only updates it: it keeps its subject. */
        if (r->alert_id && !proj_alert_find(&a->st, r->alert_id)) {
            const alerts_def *d = alerts_def_find(r->name);
            alerting_memo *m = alerting__memo_get(a, r->alert_id);
            if (!m) return ine_err(INE_ENOMEM, "out of memory remembering alert %s", r->alert_id);
            snprintf(m->subject, sizeof m->subject, "%s", d ? alerts_subject(&a->st, d, r->node_uid, r->plane) : "");
            m->raised_seq = seq;
        }
    } else if (ev->body_case == INE__V1__EVENT__BODY_ALERT_CLEARED && ev->alert_cleared && ev->alert_cleared->alert_id &&
               proj_alert_find(&a->st, ev->alert_cleared->alert_id)) {
        alerting_memo *m = alerting__memo_get(a, ev->alert_cleared->alert_id);
        if (!m) return ine_err(INE_ENOMEM, "out of memory remembering alert %s", ev->alert_cleared->alert_id);
        m->cleared_seq = seq;
        m->subject[0] = 0;
    }
    if (a->hook && seq > a->hook_cursor &&
        ((ev->body_case == INE__V1__EVENT__BODY_ALERT_RAISED && ev->alert_raised) ||
         (ev->body_case == INE__V1__EVENT__BODY_ALERT_CLEARED && ev->alert_cleared))) {
        char *body = alerting__hook_body(a, ev, seq);
        if (body) alerting_hook_push(a->hook, seq, body);
    }
    rc = proj_apply(&a->st, ev);
    return rc == INE_EUNKNOWN ? INE_OK : rc;
}

int alerting_catch_up(alerting_t *a)
{
    int rc = follow_catch_up(a->follow);
    return rc < 0 ? rc : INE_OK;
}

/* ---- acting ------------------------------------------------------------------------------ */

static int alerting__append(alerting_t *a, evlog_event *ev, const char *reqid, uint64_t *seq)
{
    int rc = commit_append_one(a->commit, ev, NULL, reqid, seq);
    if (rc < 0) return rc;
    GUARD(alerting_catch_up(a));
    return rc;
}

static int alerting__clear(alerting_t *a, const proj_alert *al, const char *reason)
{
    evlog_event ev = INE__V1__EVENT__INIT;
    Ine__V1__AlertCleared b = INE__V1__ALERT_CLEARED__INIT;
    char id[ALERTS_ID_LEN + 64], reqid[EVLOG_MAX_REQUEST_ID];
    uint64_t seq = 0;
    int rc;
    snprintf(id, sizeof id, "%s", al->alert_id);
    /* One clear per raise: the raise's seq names the episode. */
    snprintf(reqid, sizeof reqid, "alert-clear/%s/%llu", id, (unsigned long long)al->raised_seq);
    b.alert_id = id;
    b.reason = (char *)reason;
    ev.body_case = INE__V1__EVENT__BODY_ALERT_CLEARED;
    ev.alert_cleared = &b;
    rc = alerting__append(a, &ev, reqid, &seq);
    if (rc < 0) return rc;
    logline(LOGLINE_INFO, seq, "cleared %s: %s%s", id, reason, rc ? " (already recorded)" : "");
    return INE_OK;
}

static int alerting__raise(alerting_t *a, const alerts_want *w)
{
    evlog_event ev = INE__V1__EVENT__INIT;
    Ine__V1__AlertRaised b = INE__V1__ALERT_RAISED__INIT;
    const alerting_memo *m = alerting__memo_find(a, w->alert_id);
    char reqid[EVLOG_MAX_REQUEST_ID];
    uint64_t seq = 0;
    int rc;
    /* The alert, the certificate it concerns, and the last clear of this id: a restart asks for
     * the same id again and writes nothing; the next episode gets a new one. */
    snprintf(reqid, sizeof reqid, "alert/%s/%.32s/%llu", w->alert_id, w->fingerprint,
             (unsigned long long)(m ? m->cleared_seq : 0));
    b.alert_id = (char *)w->alert_id;
    b.name = (char *)w->def->name;
    b.severity = w->def->severity;
    b.node_uid = w->node_uid;
    b.plane = w->plane;
    b.description = (char *)w->description;
    b.threshold = (char *)w->threshold;
    b.change_value = (char *)w->change_value;
    ev.body_case = INE__V1__EVENT__BODY_ALERT_RAISED;
    ev.alert_raised = &b;
    rc = alerting__append(a, &ev, reqid, &seq);
    if (rc < 0) return rc;
    logline(w->def->severity == INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_INFO ? LOGLINE_INFO : LOGLINE_WARN, seq,
            "raised %s (%s): %s%s", w->alert_id, proj_severity_name(w->def->severity), w->description,
            rc ? " (already recorded)" : "");
    return INE_OK;
}

static const alerts_want *alerting__wanted(const alerts_want *want, size_t n, const char *id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(want[mid].alert_id, id);
        if (c == 0) return &want[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

int alerting_evaluate(alerting_t *a)
{
    alerts_want *want = NULL;
    size_t n = 0;
    char **clear = NULL;
    size_t n_clear = 0;
    int rc = INE_OK;

    GUARD(alerting_catch_up(a));
    a->evaluations++;
    a->evaluated_seq = a->st.applied_seq;
    if (!a->st.cluster.present) return INE_OK;
    if (a->etcd) {
        etcd_status_info si;
        if (etcd_status(a->etcd, NULL, &si) == INE_OK) {
            a->storage_used = si.db_size;
            snprintf(a->storage_where, sizeof a->storage_where, "%s", etcd_endpoint(a->etcd));
        } else {
            logline(LOGLINE_WARN, a->st.applied_seq, "cannot measure etcd's storage: %s", ine_err_msg());
        }
    }
    {
        alerts_env env = {.storage_used_bytes = a->storage_used, .storage_quota_bytes = a->storage_quota,
                          .storage_where = a->storage_where[0] ? a->storage_where : NULL};
        skew_entry *clocks = NULL;
        /* The clock offsets this node's transports measured (lib/skew.h); none: no skew alert. */
        if (skew_read(a->run_dir, ine_clock_now() - 60, &clocks, &env.n_clocks) < 0)
            logline(LOGLINE_WARN, a->st.applied_seq, "clock offsets: %s", ine_err_msg());
        env.clocks = clocks;
        rc = alerts_evaluate(&a->st, ine_clock_now(), &env, &want, &n);
        free(clocks);
        GUARD(rc);
    }

    /* Clears first: an alert whose certificate was replaced by one that also qualifies ends,
     * and the new certificate's alert starts as its own episode. */
    if (a->st.n_alerts && !(clear = calloc(a->st.n_alerts, sizeof *clear))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < a->st.n_alerts; i++) {
        const proj_alert *al = &a->st.alerts[i];
        const alerts_def *d = alerts_def_find(al->name);
        const alerts_want *w;
        const alerting_memo *m;
        if (!d) continue; /* not ours to judge */
        w = alerting__wanted(want, n, al->alert_id);
        m = alerting__memo_find(a, al->alert_id);
        if (w && !(m && *m->subject && strcasecmp(m->subject, w->fingerprint))) continue;
        if (!(clear[n_clear++] = strdup(al->alert_id))) {
            rc = ine_err(INE_ENOMEM, "out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < n_clear; i++) {
        const proj_alert *al = proj_alert_find(&a->st, clear[i]);
        const alerting_memo *m = alerting__memo_find(a, clear[i]);
        const alerts_def *d;
        if (!al || !(d = alerts_def_find(al->name))) continue;
        GUARD_GOTO(alerting__clear(a, al, alerts_clear_reason(&a->st, d, al->node_uid, al->plane, m ? m->subject : "")), out);
    }
    for (size_t i = 0; i < n; i++)
        if (!proj_alert_find(&a->st, want[i].alert_id)) GUARD_GOTO(alerting__raise(a, &want[i]), out);
out:
    for (size_t i = 0; i < n_clear; i++) free(clear[i]);
    free(clear);
    free(want);
    return rc;
}
