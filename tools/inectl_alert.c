/* inectl_alert.c — cluster alert settings and the alerts in force:
 *   `tune cluster alert <name> [enabled true|false] [threshold <n>]`, sent to ine-policy, which
 *   checks it with the same rules as the REST API (lib/alerts.h) and records it;
 *   `status alerts`, read from this node's log through the projection (works with the
 *   services down). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerts.h"
#include "clock.h"
#include "datadir.h"
#include "err.h"
#include "evlog.h"
#include "inectl.h"
#include "proj.h"

int inectl_tune_alert(int argc, char **argv)
{
    Ine__V1__PolicyRequest req = INE__V1__POLICY_REQUEST__INIT;
    Ine__V1__SetAlertSettings sa = INE__V1__SET_ALERT_SETTINGS__INIT;
    Ine__V1__AlertSetting set = INE__V1__ALERT_SETTING__INIT, *setp = &set;
    char canon[ALERTS_THRESHOLD_LEN] = "";
    const alerts_def *d;
    Ine__V1__Reply *r;
    int rc = 0;

    if (argc < 3 || argc % 2 == 0)
        return inectl_fail("usage: tune cluster alert <name> [enabled true|false] [threshold <n>] (see inectl --help)"), 2;
    set.name = argv[0];
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "enabled")) {
            if (set.enabled_opt_case) return inectl_fail("tune cluster alert: 'enabled' is given twice"), 2;
            if (strcmp(v, "true") && strcmp(v, "false")) return inectl_fail("enabled must be 'true' or 'false', not '%s'", v), 2;
            set.enabled_opt_case = INE__V1__ALERT_SETTING__ENABLED_OPT_ENABLED;
            set.enabled = !strcmp(v, "true");
        } else if (!strcmp(k, "threshold")) {
            if (set.threshold_opt_case) return inectl_fail("tune cluster alert: 'threshold' is given twice"), 2;
            set.threshold_opt_case = INE__V1__ALERT_SETTING__THRESHOLD_OPT_THRESHOLD;
            set.threshold = (char *)v;
        } else {
            return inectl_fail("tune cluster alert: unknown keyword '%s' (use enabled or threshold)", k), 2;
        }
    }
    /* The service checks again; checking here first gives the operator the reason at once. */
    if (alerts_change_check(set.name, set.enabled_opt_case != 0, set.threshold_opt_case != 0, set.threshold, canon) < 0)
        return inectl_fail("tune cluster alert: %s", ine_err_msg()), 2;
    d = alerts_def_find(set.name);
    sa.n_settings = 1;
    sa.settings = &setp;
    req.op_case = INE__V1__POLICY_REQUEST__OP_SET_ALERT_SETTINGS;
    req.set_alert_settings = &sa;
    if (!(r = inectl_policy_call(&req))) return 1;
    if (r->code != INE__V1__ERROR_CODE__ERROR_CODE_OK) {
        rc = inectl_reply_fail("tune cluster alert refused", r);
    } else if (inectl_g.json) {
        printf("{\"alert\": \"%s\", \"seq\": %llu}\n", d->name, (unsigned long long)r->seq);
    } else {
        printf("cluster alert %s:", d->name);
        if (set.enabled_opt_case) printf(" %s", set.enabled ? "enabled" : "disabled");
        if (set.threshold_opt_case) printf("%s threshold %s %s", set.enabled_opt_case ? "," : "", canon, alerts_unit_name(d->unit));
        printf("\n");
    }
    ine__v1__reply__free_unpacked(r, NULL);
    return rc;
}

static void status_json(const proj_state *st)
{
    json_t *o = json_object(), *set = json_object(), *act = json_array();
    char ts[40];
    for (int k = 0; k < ALERTS_COUNT; k++) {
        const alerts_def *d = alerts_def_at((alerts_kind)k);
        alerts_setting s;
        json_t *e;
        alerts_setting_get(st, d, &s);
        e = json_pack("{s:b, s:s}", "enabled", s.enabled, "severity", proj_severity_name(d->severity));
        if (d->unit != ALERTS_UNIT_NONE) {
            json_object_set_new(e, "threshold", json_string(s.threshold_str));
            json_object_set_new(e, "threshold_unit", json_string(alerts_unit_name(d->unit)));
        }
        json_object_set_new(set, d->name, e);
    }
    for (size_t i = 0; i < st->n_alerts; i++) {
        const proj_alert *a = &st->alerts[i];
        json_array_append_new(act, json_pack("{s:s, s:s, s:s, s:o, s:o, s:s, s:s, s:s, s:I}", "alert_id", a->alert_id, "name",
                                             a->name, "severity", proj_severity_name(a->severity), "node",
                                             a->node_uid ? json_integer(a->node_uid) : json_null(), "plane",
                                             a->plane ? json_string(proj_plane_name(a->plane)) : json_null(), "threshold",
                                             a->threshold, "change_value", a->change_value, "raised",
                                             ine_clock_fmt(a->raised_us, ts, sizeof ts), "raised_seq", (json_int_t)a->raised_seq));
        json_object_set_new(json_array_get(act, json_array_size(act) - 1), "description", json_string(a->description));
    }
    json_object_set_new(o, "alert_settings", set);
    json_object_set_new(o, "alerts", act);
    json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    putchar('\n');
    json_decref(o);
}

int inectl_status_alerts(int argc, char **argv)
{
    proj_state st;
    char ts[40], th[48];
    (void)argv;
    if (argc) return inectl_fail("usage: status alerts"), 2;
    if (inectl_load_state(&st)) return proj_free(&st), 1;
    if (inectl_g.json) {
        status_json(&st);
        proj_free(&st);
        return 0;
    }
    printf("ALERT SETTINGS:\n%-37s %-8s %-9s %s\n", "NAME", "ENABLED", "SEVERITY", "THRESHOLD");
    for (int k = 0; k < ALERTS_COUNT; k++) {
        const alerts_def *d = alerts_def_at((alerts_kind)k);
        alerts_setting s;
        alerts_setting_get(&st, d, &s);
        if (d->unit == ALERTS_UNIT_NONE) snprintf(th, sizeof th, "-");
        else snprintf(th, sizeof th, "%s %s", s.threshold_str, alerts_unit_name(d->unit));
        printf("%-37s %-8s %-9s %s\n", d->name, s.enabled ? "yes" : "no", proj_severity_name(d->severity), th);
    }
    printf("\nACTIVE ALERTS:%s\n", st.n_alerts ? "" : " none");
    for (size_t i = 0; i < st.n_alerts; i++) {
        const proj_alert *a = &st.alerts[i];
        printf("  %-8s %-45s since %s\n           %s\n", proj_severity_name(a->severity), a->alert_id,
               ine_clock_fmt(a->raised_us, ts, sizeof ts), a->description);
    }
    proj_free(&st);
    return 0;
}
