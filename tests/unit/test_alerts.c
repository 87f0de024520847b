/* test_alerts.c — the alert catalogue, threshold rules, settings folded from the log (the
 * projection's AlertSettingsChanged rule included), and the evaluation of states at exact
 * times around every threshold: what is asked for, with which id, subject and value, and why
 * an alert that is no longer asked for ends. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerts.h"
#include "pki.h"
#include "clock.h"
#include "err.h"
#include "proj.h"
#include "testutil.h"

#define CP INE__V1__PLANE__PLANE_CONTROL
#define DP INE__V1__PLANE__PLANE_DATA
#define DAY INE_SEC_PER_DAY
#define T0 1790000000LL /* issuance time of the certificates below */

TestSuite(alerts, .timeout = 30);

/* ---- event builders (malloc'd like protobuf-c's own, freed by tu_event_free) ------------- */

static Ine__V1__Event *t_ev(Ine__V1__Event__BodyCase body_case, void *body, int64_t t)
{
    Ine__V1__Event *ev = calloc(1, sizeof *ev);
    ine__v1__event__init(ev);
    ev->producer = strdup("test");
    ev->actor = strdup("tester");
    ev->time_us = t * INE_USEC_PER_SEC;
    ev->body_case = body_case;
    ev->cluster_created = body; /* every body member shares one pointer slot */
    return ev;
}

static void t_apply(proj_state *st, Ine__V1__Event *ev)
{
    cr_assert_eq(proj_apply(st, ev), INE_OK, "%s", ine_err_msg());
    tu_event_free(ev);
}

static Ine__V1__CertInfo *t_ci(const char *fp, int64_t not_before, int64_t validity)
{
    Ine__V1__CertInfo *c = calloc(1, sizeof *c);
    char buf[128];
    ine__v1__cert_info__init(c);
    c->cert_pem = strdup("");
    snprintf(buf, sizeof buf, "serial-%s", fp);
    c->serial_hex = strdup(buf);
    c->fingerprint_sha256 = strdup(fp);
    c->subject = strdup("CN=x");
    c->issuer = strdup("CN=ca");
    c->root_fingerprint_sha256 = strdup("");
    c->not_before = not_before;
    c->not_after = not_before + validity;
    return c;
}

static void t_cluster(proj_state *st)
{
    Ine__V1__ClusterCreated *b = calloc(1, sizeof *b);
    ine__v1__cluster_created__init(b);
    b->cluster_uid = strdup("00112233445566778899aabbccddeeff");
    b->name = strdup("t");
    b->admin_username = strdup("");
    b->admin_password_hash = strdup("");
    b->rotation_period_seconds = 30 * DAY;
    b->cert_validity_seconds = 90 * DAY;
    t_apply(st, t_ev(INE__V1__EVENT__BODY_CLUSTER_CREATED, b, T0 - 100));
}

static void t_node(proj_state *st, uint32_t uid)
{
    Ine__V1__Event *ev = tu_ev_node_added(uid, uid == 1 ? "127.0.0.1" : "127.0.0.2");
    ev->time_us = (T0 - 50) * INE_USEC_PER_SEC;
    t_apply(st, ev);
}

static void t_ca(proj_state *st, const char *fp, int64_t validity)
{
    Ine__V1__CaCreated *b = calloc(1, sizeof *b);
    ine__v1__ca_created__init(b);
    b->ca = t_ci(fp, T0 - 60, validity);
    b->reason = strdup("initial");
    t_apply(st, t_ev(INE__V1__EVENT__BODY_CA_CREATED, b, T0 - 60));
}

/* A certificate issued at time t (notBefore backdated PKI_BACKDATE_S, as the CA does). */
static void t_issue(proj_state *st, uint32_t node, int plane, int source, const char *fp, int64_t t, int64_t validity)
{
    Ine__V1__CertificateIssued *b = calloc(1, sizeof *b);
    ine__v1__certificate_issued__init(b);
    b->node_uid = node;
    b->plane = plane;
    b->source = source;
    b->reason = INE__V1__ISSUE_REASON__ISSUE_REASON_INITIAL;
    b->cert = t_ci(fp, t - PKI_BACKDATE_S, validity + PKI_BACKDATE_S);
    b->rotation_id = strdup("");
    t_apply(st, t_ev(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, b, t));
}

static void t_activate(proj_state *st, uint32_t node, int plane, const char *fp, int64_t t)
{
    Ine__V1__CertificateActivated *b = calloc(1, sizeof *b);
    char serial[80];
    ine__v1__certificate_activated__init(b);
    b->node_uid = node;
    b->plane = plane;
    b->fingerprint_sha256 = strdup(fp);
    snprintf(serial, sizeof serial, "serial-%s", fp);
    b->serial_hex = strdup(serial);
    t_apply(st, t_ev(INE__V1__EVENT__BODY_CERTIFICATE_ACTIVATED, b, t));
}

/* One setting change; enabled < 0 leaves enabling alone, threshold NULL the threshold. */
static void t_setting(proj_state *st, const char *name, int enabled, const char *threshold)
{
    Ine__V1__AlertSettingsChanged *b = calloc(1, sizeof *b);
    Ine__V1__AlertSetting *s = calloc(1, sizeof *s);
    ine__v1__alert_settings_changed__init(b);
    ine__v1__alert_setting__init(s);
    s->name = strdup(name);
    if (enabled >= 0) s->enabled_opt_case = INE__V1__ALERT_SETTING__ENABLED_OPT_ENABLED, s->enabled = enabled;
    if (threshold) s->threshold_opt_case = INE__V1__ALERT_SETTING__THRESHOLD_OPT_THRESHOLD, s->threshold = strdup(threshold);
    b->settings = calloc(1, sizeof *b->settings);
    b->settings[0] = s;
    b->n_settings = 1;
    t_apply(st, t_ev(INE__V1__EVENT__BODY_ALERT_SETTINGS_CHANGED, b, T0));
}

/* Two nodes, both planes self-signed at T0 and activated; CA for 10 years. */
static void t_cluster_2x2(proj_state *st)
{
    static const char *fps[2][3] = {{"", "n1cp", "n1dp"}, {"", "n2cp", "n2dp"}};
    proj_init(st);
    t_cluster(st);
    t_node(st, 1);
    t_node(st, 2);
    t_ca(st, "cafp", 3650 * DAY);
    for (uint32_t n = 1; n <= 2; n++)
        for (int p = CP; p <= DP; p++) {
            t_issue(st, n, p, INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED, fps[n - 1][p], T0, 90 * DAY);
            t_activate(st, n, p, fps[n - 1][p], T0 + 5);
        }
}

typedef struct {
    alerts_want *v;
    size_t n;
} t_eval;

static t_eval t_evaluate(const proj_state *st, int64_t now)
{
    t_eval e;
    cr_assert_eq(alerts_evaluate(st, now, NULL, &e.v, &e.n), INE_OK, "%s", ine_err_msg());
    for (size_t i = 1; i < e.n; i++) cr_assert_lt(strcmp(e.v[i - 1].alert_id, e.v[i].alert_id), 0, "sorted, no duplicates");
    return e;
}

static const alerts_want *t_find(const t_eval *e, const char *id)
{
    for (size_t i = 0; i < e->n; i++)
        if (!strcmp(e->v[i].alert_id, id)) return &e->v[i];
    return NULL;
}

static size_t t_count(const t_eval *e, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < e->n; i++) n += !strcmp(e->v[i].def->name, name);
    return n;
}

/* ---- catalogue and rules ----------------------------------------------------------------- */

Test(alerts, catalogue_names_defaults_and_ids)
{
    const alerts_def *d = alerts_def_find("node_internal_certs_about_to_expire");
    char id[ALERTS_ID_LEN];
    cr_assert_not_null(d);
    cr_assert_eq(d->kind, ALERTS_NODE_EXPIRY);
    cr_assert_eq(d->default_threshold, 45);
    cr_assert_eq(d->unit, ALERTS_UNIT_DAYS);
    cr_assert(d->per_node);
    cr_assert_eq(alerts_def_find("cluster_certs_about_to_expire")->default_threshold, 45);
    cr_assert_not(alerts_def_find("cluster_certs_about_to_expire")->per_node);
    cr_assert_eq(alerts_def_find("customer_cert_expiry_fallback")->severity, INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_INFO);
    cr_assert_eq(alerts_def_find("node_cert_not_activated")->default_threshold, 10);
    cr_assert_null(alerts_def_find("no_such_alert"));
    cr_assert_null(alerts_def_find(NULL));
    for (int k = 0; k < ALERTS_COUNT; k++) cr_assert_eq(alerts_def_at((alerts_kind)k)->kind, (alerts_kind)k);
    cr_assert_null(alerts_def_at(ALERTS_COUNT));

    alerts_id(d, 2, DP, id);
    cr_assert_str_eq(id, "node_internal_certs_about_to_expire/2/dp");
    alerts_id(alerts_def_find("cluster_certs_about_to_expire"), 0, 0, id);
    cr_assert_str_eq(id, "cluster_certs_about_to_expire");
    alerts_id(alerts_def_find("customer_cert_expiry_fallback"), 0, CP, id);
    cr_assert_str_eq(id, "customer_cert_expiry_fallback/cp");
}

static void t_bad_threshold(const char *name, const char *value, const char *why)
{
    long v = -1;
    cr_assert_eq(alerts_threshold_parse(alerts_def_find(name), value, &v, NULL), INE_EINVAL, "accepted '%s' for %s", value, name);
    cr_assert(strstr(ine_err_msg(), why), "expected '%s' in: %s", why, ine_err_msg());
    cr_assert_eq(v, -1, "nothing stored on refusal");
}

Test(alerts, thresholds_are_whole_numbers_in_range)
{
    long v = 0;
    char canon[ALERTS_THRESHOLD_LEN];
    cr_assert_eq(alerts_threshold_parse(alerts_def_find("cluster_certs_about_to_expire"), "0045", &v, canon), INE_OK);
    cr_assert_eq(v, 45);
    cr_assert_str_eq(canon, "45");
    cr_assert_eq(alerts_threshold_parse(alerts_def_find("node_cert_rotation_overdue"), "0", &v, canon), INE_OK, "hours may be 0");
    cr_assert_eq(alerts_threshold_parse(alerts_def_find("node_internal_certs_about_to_expire"), "36500", &v, NULL), INE_OK);
    t_bad_threshold("node_internal_certs_about_to_expire", "0", "out of range: 1 to 36500 days");
    t_bad_threshold("node_internal_certs_about_to_expire", "36501", "out of range");
    t_bad_threshold("node_internal_certs_about_to_expire", "abc", "is not a whole number of days");
    t_bad_threshold("node_internal_certs_about_to_expire", "", "is not a whole number");
    t_bad_threshold("node_internal_certs_about_to_expire", " 45", "is not a whole number");
    t_bad_threshold("node_internal_certs_about_to_expire", "-1", "is not a whole number");
    t_bad_threshold("node_internal_certs_about_to_expire", "4.5", "is not a whole number");
    t_bad_threshold("node_internal_certs_about_to_expire", "99999999999999999999", "is not a whole number");
    t_bad_threshold("node_cert_not_activated", "10081", "1 to 10080 minutes");
    t_bad_threshold("customer_cert_expiry_fallback", "5", "takes no threshold");
}

Test(alerts, change_check_names_the_problem)
{
    char canon[ALERTS_THRESHOLD_LEN] = "untouched";
    cr_assert_eq(alerts_change_check("bogus", 1, 0, NULL, canon), INE_ENOTFOUND);
    cr_assert(strstr(ine_err_msg(), "unknown alert 'bogus'"), "%s", ine_err_msg());
    cr_assert(strstr(ine_err_msg(), "cluster_certs_about_to_expire"), "the known names are listed: %s", ine_err_msg());
    cr_assert_eq(alerts_change_check("cluster_certs_about_to_expire", 0, 0, NULL, canon), INE_EINVAL);
    cr_assert(strstr(ine_err_msg(), "changes nothing"), "%s", ine_err_msg());
    cr_assert_eq(alerts_change_check("cluster_certs_about_to_expire", 1, 0, NULL, canon), INE_OK);
    cr_assert_str_eq(canon, "untouched");
    cr_assert_eq(alerts_change_check("cluster_certs_about_to_expire", 0, 1, "007", canon), INE_OK);
    cr_assert_str_eq(canon, "7");
    cr_assert_eq(alerts_change_check("customer_cert_expiry_fallback", 1, 1, "3", canon), INE_EINVAL);
}

Test(alerts, settings_fold_from_the_log_over_defaults)
{
    proj_state st;
    alerts_setting s;
    const alerts_def *d = alerts_def_find("node_internal_certs_about_to_expire");
    json_t *j;
    proj_init(&st);
    t_cluster(&st);
    j = proj_to_json(&st);
    cr_assert_null(json_object_get(j, "alert_settings"), "absent until an operator changes one");
    json_decref(j);

    alerts_setting_get(&st, d, &s);
    cr_assert(s.enabled);
    cr_assert_eq(s.threshold, 45);
    cr_assert_str_eq(s.threshold_str, "45");
    cr_assert_eq(s.seq, 0);

    t_setting(&st, d->name, -1, "30");
    alerts_setting_get(&st, d, &s);
    cr_assert(s.enabled, "enabling untouched by a threshold change");
    cr_assert_eq(s.threshold, 30);
    cr_assert_eq(s.seq, st.applied_seq);

    t_setting(&st, d->name, 0, NULL);
    alerts_setting_get(&st, d, &s);
    cr_assert_not(s.enabled);
    cr_assert_eq(s.threshold, 30, "the threshold stays when only enabling changes");

    /* A hand-written bad threshold in the log: the default holds, nothing crashes. */
    t_setting(&st, "cluster_certs_about_to_expire", -1, "soon");
    alerts_setting_get(&st, alerts_def_find("cluster_certs_about_to_expire"), &s);
    cr_assert_eq(s.threshold, 45);
    /* A name this version does not know is kept by the fold, and ignored by everyone else. */
    t_setting(&st, "future_alert", 1, "3");
    cr_assert_not_null(proj_alert_setting_find(&st, "future_alert"));
    cr_assert_eq(st.n_alert_settings, 3);
    cr_assert_str_eq(st.alert_settings[0].name, "cluster_certs_about_to_expire", "sorted by name");

    j = proj_to_json(&st);
    cr_assert_eq(json_array_size(json_object_get(j, "alert_settings")), 3);
    json_t *e = json_array_get(json_object_get(j, "alert_settings"), 2);
    cr_assert_str_eq(json_string_value(json_object_get(e, "name")), "node_internal_certs_about_to_expire");
    cr_assert(json_is_false(json_object_get(e, "enabled")));
    cr_assert_str_eq(json_string_value(json_object_get(e, "threshold")), "30");
    json_decref(j);
    proj_free(&st);
}

/* ---- evaluation ---------------------------------------------------------------------------- */

Test(alerts, node_expiry_fires_below_the_threshold_only)
{
    proj_state st;
    t_eval e;
    t_cluster_2x2(&st);
    t_setting(&st, "node_cert_rotation_overdue", 0, NULL); /* the CA "is down" in this story */

    e = t_evaluate(&st, T0 + 44 * DAY); /* 46 days left */
    cr_assert_eq(e.n, 0, "no alert with 46 days left, got %s", e.n ? e.v[0].alert_id : "");
    free(e.v);
    e = t_evaluate(&st, T0 + 45 * DAY); /* exactly 45 days left: not fewer */
    cr_assert_eq(e.n, 0);
    free(e.v);
    e = t_evaluate(&st, T0 + 45 * DAY + 1);
    cr_assert_eq(e.n, 4, "one per certificate");
    free(e.v);

    e = t_evaluate(&st, T0 + 46 * DAY); /* 44 days left */
    cr_assert_eq(t_count(&e, "node_internal_certs_about_to_expire"), 4);
    const alerts_want *w = t_find(&e, "node_internal_certs_about_to_expire/2/dp");
    cr_assert_not_null(w);
    cr_assert_eq(w->node_uid, 2);
    cr_assert_eq(w->plane, DP);
    cr_assert_str_eq(w->fingerprint, "n2dp", "the subject is the certificate");
    cr_assert_str_eq(w->change_value, "44");
    cr_assert_str_eq(w->threshold, "45");
    cr_assert(strstr(w->description, "node 2 data-plane certificate (serial serial-n2dp"), "%s", w->description);
    cr_assert(strstr(w->description, "44 days left, threshold 45 days"), "%s", w->description);
    free(e.v);

    /* Expired: a negative count of days, still alerting. */
    e = t_evaluate(&st, T0 + 91 * DAY);
    cr_assert_str_eq(t_find(&e, "node_internal_certs_about_to_expire/1/cp")->change_value, "-1");
    free(e.v);

    /* The threshold is the cluster's setting, read at every evaluation. */
    t_setting(&st, "node_internal_certs_about_to_expire", -1, "100");
    e = t_evaluate(&st, T0);
    cr_assert_eq(e.n, 4);
    cr_assert_str_eq(e.v[0].threshold, "100");
    free(e.v);
    t_setting(&st, "node_internal_certs_about_to_expire", 0, NULL);
    e = t_evaluate(&st, T0 + 80 * DAY);
    cr_assert_eq(e.n, 0, "a disabled alert is never asked for");
    free(e.v);
    proj_free(&st);
}

Test(alerts, cluster_ca_expiry)
{
    proj_state st;
    t_eval e;
    t_cluster_2x2(&st);
    e = t_evaluate(&st, T0 + 10);
    cr_assert_eq(e.n, 0);
    free(e.v);
    t_setting(&st, "cluster_certs_about_to_expire", -1, "4000");
    e = t_evaluate(&st, T0 + 10);
    cr_assert_eq(e.n, 1);
    cr_assert_str_eq(e.v[0].alert_id, "cluster_certs_about_to_expire");
    cr_assert_eq(e.v[0].node_uid, 0);
    cr_assert_str_eq(e.v[0].fingerprint, "cafp");
    cr_assert_str_eq(e.v[0].change_value, "3649");
    free(e.v);
    cr_assert_str_eq(alerts_clear_reason(&st, alerts_def_find("cluster_certs_about_to_expire"), 0, 0, "cafp"),
                     "no longer within the threshold");
    t_ca(&st, "cafp2", 3650 * DAY);
    cr_assert_str_eq(alerts_clear_reason(&st, alerts_def_find("cluster_certs_about_to_expire"), 0, 0, "cafp"),
                     "certificate replaced");
    proj_free(&st);
}

Test(alerts, rotation_overdue_counts_from_the_rotation_period)
{
    proj_state st;
    t_eval e;
    const alerts_def *d = alerts_def_find("node_cert_rotation_overdue");
    t_cluster_2x2(&st);
    /* Age counts from notBefore + 60 s, i.e. from issuance at T0. */
    e = t_evaluate(&st, T0 + 30 * DAY + 3600 - 1);
    cr_assert_eq(t_count(&e, d->name), 0);
    free(e.v);
    e = t_evaluate(&st, T0 + 30 * DAY + 3600);
    cr_assert_eq(t_count(&e, d->name), 4);
    cr_assert_str_eq(t_find(&e, "node_cert_rotation_overdue/1/cp")->change_value, "1");
    cr_assert(strstr(t_find(&e, "node_cert_rotation_overdue/1/cp")->description, "is 30 days old and was due for rotation at 30 days"),
              "%s", t_find(&e, "node_cert_rotation_overdue/1/cp")->description);
    free(e.v);

    /* The CA came back: node 1's control plane was rotated, the rest not yet. */
    t_issue(&st, 1, CP, INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED, "n1cp-2", T0 + 31 * DAY, 90 * DAY);
    t_activate(&st, 1, CP, "n1cp-2", T0 + 31 * DAY);
    e = t_evaluate(&st, T0 + 31 * DAY);
    cr_assert_eq(t_count(&e, d->name), 3);
    cr_assert_null(t_find(&e, "node_cert_rotation_overdue/1/cp"));
    free(e.v);
    cr_assert_str_eq(alerts_clear_reason(&st, d, 1, CP, "n1cp"), "certificate replaced");

    /* Customer certificates are never rotated, so never overdue. */
    t_issue(&st, 2, DP, INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER, "cust", T0, 400 * DAY);
    e = t_evaluate(&st, T0 + 31 * DAY);
    cr_assert_null(t_find(&e, "node_cert_rotation_overdue/2/dp"));
    free(e.v);
    proj_free(&st);
}

Test(alerts, not_activated_within_the_threshold_names_the_node)
{
    proj_state st;
    t_eval e;
    const alerts_def *d = alerts_def_find("node_cert_not_activated");
    t_cluster_2x2(&st);
    /* Node 2's data plane gets a new certificate; node 2 keeps serving the old one. */
    t_issue(&st, 2, DP, INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED, "n2dp-2", T0 + 1000, 90 * DAY);
    e = t_evaluate(&st, T0 + 1000 + 10 * 60 - 1);
    cr_assert_eq(e.n, 0);
    free(e.v);
    e = t_evaluate(&st, T0 + 1000 + 10 * 60);
    cr_assert_eq(e.n, 1);
    cr_assert_str_eq(e.v[0].alert_id, "node_cert_not_activated/2/dp");
    cr_assert_eq(e.v[0].node_uid, 2);
    cr_assert_str_eq(e.v[0].change_value, "10");
    cr_assert(strstr(e.v[0].description, "node 2 has not activated its data-plane certificate (serial serial-n2dp-2) 10 minutes"),
              "%s", e.v[0].description);
    cr_assert(strstr(e.v[0].description, "it serves serial-n2dp"), "%s", e.v[0].description);
    free(e.v);

    t_activate(&st, 2, DP, "n2dp-2", T0 + 2000);
    e = t_evaluate(&st, T0 + 3000);
    cr_assert_eq(e.n, 0);
    free(e.v);
    cr_assert_str_eq(alerts_clear_reason(&st, d, 2, DP, "n2dp-2"), "certificate activated");
    proj_free(&st);
}

Test(alerts, customer_fallback_is_a_notice_until_a_new_upload)
{
    proj_state st;
    t_eval e;
    const alerts_def *d = alerts_def_find("customer_cert_expiry_fallback");
    Ine__V1__CustomerExpiryFallback *f = calloc(1, sizeof *f);
    t_cluster_2x2(&st);
    ine__v1__customer_expiry_fallback__init(f);
    f->plane = DP;
    f->customer_fingerprint_sha256 = strdup("custfp");
    f->customer_not_after = T0 + 4 * DAY;
    f->rotation_id = strdup("fallback-x");
    t_apply(&st, t_ev(INE__V1__EVENT__BODY_CUSTOMER_EXPIRY_FALLBACK, f, T0));

    e = t_evaluate(&st, T0 + 60);
    cr_assert_eq(e.n, 1);
    cr_assert_str_eq(e.v[0].alert_id, "customer_cert_expiry_fallback/dp");
    cr_assert_eq(e.v[0].def->severity, INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_INFO);
    cr_assert_str_eq(e.v[0].fingerprint, "custfp");
    cr_assert_str_eq(e.v[0].threshold, "");
    cr_assert_str_eq(e.v[0].change_value, "3");
    free(e.v);

    /* A new customer certificate on that plane ends the notice. */
    t_issue(&st, 1, DP, INE__V1__CERT_SOURCE__CERT_SOURCE_CUSTOMER, "cust2", T0 + 100, 365 * DAY);
    t_activate(&st, 1, DP, "cust2", T0 + 100);
    e = t_evaluate(&st, T0 + 200);
    cr_assert_eq(e.n, 0);
    free(e.v);
    cr_assert_str_eq(alerts_clear_reason(&st, d, 0, DP, "custfp"), "customer certificate uploaded");
    proj_free(&st);
}

Test(alerts, clear_reasons_for_disabled_and_removed)
{
    proj_state st;
    Ine__V1__NodeRemoved *r = calloc(1, sizeof *r);
    t_eval e;
    const alerts_def *d = alerts_def_find("node_internal_certs_about_to_expire");
    t_cluster_2x2(&st);
    ine__v1__node_removed__init(r);
    r->node_uid = 2;
    t_apply(&st, t_ev(INE__V1__EVENT__BODY_NODE_REMOVED, r, T0));
    cr_assert_str_eq(alerts_clear_reason(&st, d, 2, CP, "n2cp"), "node removed");
    t_setting(&st, "node_cert_rotation_overdue", 0, NULL);
    e = t_evaluate(&st, T0 + 46 * DAY);
    cr_assert_eq(e.n, 2, "only node 1's certificates count");
    cr_assert_str_eq(e.v[0].alert_id, "node_internal_certs_about_to_expire/1/cp");
    cr_assert_str_eq(e.v[1].alert_id, "node_internal_certs_about_to_expire/1/dp");
    free(e.v);
    t_setting(&st, d->name, 0, NULL);
    cr_assert_str_eq(alerts_clear_reason(&st, d, 1, CP, "n1cp"), "alert disabled");
    proj_free(&st);
}

Test(alerts, consensus_storage_from_the_measure_the_caller_passes)
{
    proj_state st;
    alerts_want *v = NULL;
    size_t n = 0;
    alerts_env env = {.storage_used_bytes = 70LL << 20, .storage_quota_bytes = 100LL << 20, .storage_where = "m1"};
    const alerts_def *d = alerts_def_find("consensus_storage_near_quota");
    cr_assert_not_null(d);
    cr_assert_eq(d->unit, ALERTS_UNIT_PERCENT);
    cr_assert_eq(d->default_threshold, 75);
    t_cluster_2x2(&st);
    cr_assert_eq(alerts_evaluate(&st, T0 + 10, &env, &v, &n), INE_OK);
    cr_assert_eq(n, 0, "70 %% is below 75 %%");
    free(v);
    env.storage_used_bytes = 80LL << 20;
    cr_assert_eq(alerts_evaluate(&st, T0 + 10, &env, &v, &n), INE_OK);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(v[0].alert_id, "consensus_storage_near_quota");
    cr_assert_str_eq(v[0].change_value, "80");
    cr_assert(strstr(v[0].description, "on m1 uses 80 MiB of its 100 MiB quota (80 %, threshold 75 %)"), "%s", v[0].description);
    free(v);
    /* Unknown measure: nothing asked for (an unreachable member is not a full one). */
    env.storage_used_bytes = 0;
    cr_assert_eq(alerts_evaluate(&st, T0 + 10, &env, &v, &n), INE_OK);
    cr_assert_eq(n, 0);
    free(v);
    /* The operator's threshold and switch apply as to every alert. */
    env.storage_used_bytes = 80LL << 20;
    t_setting(&st, "consensus_storage_near_quota", -1, "90");
    cr_assert_eq(alerts_evaluate(&st, T0 + 10, &env, &v, &n), INE_OK);
    cr_assert_eq(n, 0, "80 %% is below an operator's 90 %%");
    free(v);
    t_setting(&st, "consensus_storage_near_quota", 0, "50");
    cr_assert_eq(alerts_evaluate(&st, T0 + 10, &env, &v, &n), INE_OK);
    cr_assert_eq(n, 0, "disabled");
    free(v);
    cr_assert_str_eq(alerts_clear_reason(&st, d, 0, 0, ""), "alert disabled");
    proj_free(&st);
}

/* node_clock_skew: from each observer's heartbeat measurements, a node's offset from the
 * median of the observer's view; stale measurements, removed nodes and a disabled alert ask
 * for nothing. */
Test(alerts, a_node_whose_clock_is_off_the_clusters_is_named_from_either_side)
{
    proj_state st;
    t_cluster_2x2(&st);
    t_node(&st, 3);
    int64_t now = T0 + DAY;
    /* Node 3 is 5 minutes ahead: as node 1 sees it, and as node 3 sees the others. */
    skew_entry from1[] = {{1, 2, 80, now - 2}, {1, 3, 300000, now - 2}};
    skew_entry from3[] = {{3, 1, -300000, now - 1}, {3, 2, -299900, now - 1}};
    const skew_entry *views[] = {from1, from3};
    for (int v = 0; v < 2; v++) {
        alerts_env env = {.clocks = views[v], .n_clocks = 2};
        alerts_want *w = NULL;
        size_t n = 0;
        cr_assert_eq(alerts_evaluate(&st, now, &env, &w, &n), INE_OK, "%s", ine_err_msg());
        size_t found = 0;
        for (size_t i = 0; i < n; i++) {
            if (strncmp(w[i].alert_id, "node_clock_skew", 15)) continue;
            found++;
            cr_assert_str_eq(w[i].alert_id, "node_clock_skew/3", "only node 3 (view %d)", v);
            cr_assert_eq(w[i].node_uid, 3);
            cr_assert(strstr(w[i].description, "ahead of the cluster's"), "%s", w[i].description);
            cr_assert(strtol(w[i].change_value, NULL, 10) >= 299, "%s", w[i].change_value);
            cr_assert_str_eq(w[i].threshold, "120");
        }
        cr_assert_eq(found, 1, "view %d: %zu skew alerts", v, found);
        free(w);
    }
    /* Within the threshold (119 s), measured too long ago, or disabled: nothing. */
    skew_entry close[] = {{1, 2, 0, now}, {1, 3, 119000, now}};
    skew_entry stale[] = {{1, 2, 0, now - 61}, {1, 3, 300000, now - 61}};
    const skew_entry *quiet[] = {close, stale};
    for (int v = 0; v < 2; v++) {
        alerts_env env = {.clocks = quiet[v], .n_clocks = 2};
        alerts_want *w = NULL;
        size_t n = 0;
        cr_assert_eq(alerts_evaluate(&st, now, &env, &w, &n), INE_OK);
        for (size_t i = 0; i < n; i++) cr_assert(strncmp(w[i].alert_id, "node_clock_skew", 15), "%s asked for (%d)", w[i].alert_id, v);
        free(w);
    }
    t_setting(&st, "node_clock_skew", 0, NULL);
    {
        alerts_env env = {.clocks = from1, .n_clocks = 2};
        alerts_want *w = NULL;
        size_t n = 0;
        cr_assert_eq(alerts_evaluate(&st, now, &env, &w, &n), INE_OK);
        for (size_t i = 0; i < n; i++) cr_assert(strncmp(w[i].alert_id, "node_clock_skew", 15), "disabled, yet %s", w[i].alert_id);
        free(w);
    }
    proj_free(&st);
}
