/* metrics.c — the Prometheus endpoint: GET /metrics in the text exposition format (0.0.4),
 * plain HTTP through evhttp on the service's own loop, so a scrape reads the projection
 * between two log catch-ups and never needs a lock. Values are computed at scrape time from
 * the state and the clock (seconds left move even when the log does not). */
#include "alerting.h"
#include "clock.h"
#include "err.h"
#include "logline.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A label value, escaped as the format asks (backslash, double quote, newline). */
static void metrics__label(struct evbuffer *b, const char *k, const char *v, int first)
{
    evbuffer_add_printf(b, "%s%s=\"", first ? "" : ",", k);
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '\\') evbuffer_add(b, "\\\\", 2);
        else if (*p == '"') evbuffer_add(b, "\\\"", 2);
        else if (*p == '\n') evbuffer_add(b, "\\n", 2);
        else evbuffer_add(b, p, 1);
    }
    evbuffer_add(b, "\"", 1);
}

static void metrics__head(struct evbuffer *b, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metrics__certs(struct evbuffer *b, const proj_state *st, int64_t now)
{
    char node[16];
    metrics__head(b, "node_cert_expiration_seconds", "gauge",
                  "Seconds until a node's current certificate expires (negative once expired).");
    for (size_t i = 0; i < st->n_certs; i++) {
        const proj_cert *c = &st->certs[i];
        const proj_node *n = proj_node_find(st, c->node_uid);
        if (!n || n->removed) continue;
        snprintf(node, sizeof node, "%u", c->node_uid);
        evbuffer_add_printf(b, "node_cert_expiration_seconds{");
        metrics__label(b, "node", node, 1);
        metrics__label(b, "plane", proj_plane_name(c->plane), 0);
        metrics__label(b, "source", proj_source_name(c->source), 0);
        evbuffer_add_printf(b, "} %lld\n", (long long)(c->cert.not_after - now));
    }
    metrics__head(b, "cluster_ca_cert_expiration_seconds", "gauge", "Seconds until the cluster CA certificate expires.");
    if (st->ca.present) evbuffer_add_printf(b, "cluster_ca_cert_expiration_seconds %lld\n", (long long)(st->ca.cert.not_after - now));

    metrics__head(b, "node_cert_activated_info", "gauge",
                  "The certificate each node last reported serving per plane; current is true when it is the node's current certificate.");
    for (size_t i = 0; i < st->n_acts; i++) {
        const proj_activation *a = &st->acts[i];
        const proj_cert *c = proj_cert_find(st, a->node_uid, a->plane);
        const proj_node *n = proj_node_find(st, a->node_uid);
        if (!n || n->removed) continue;
        snprintf(node, sizeof node, "%u", a->node_uid);
        evbuffer_add_printf(b, "node_cert_activated_info{");
        metrics__label(b, "node", node, 1);
        metrics__label(b, "plane", proj_plane_name(a->plane), 0);
        metrics__label(b, "serial", a->serial_hex, 0);
        metrics__label(b, "current", c && !strcasecmp(c->cert.fingerprint, a->fingerprint) ? "true" : "false", 0);
        evbuffer_add_printf(b, "} 1\n");
    }
}

static void metrics__alerts(struct evbuffer *b, const proj_state *st)
{
    metrics__head(b, "ine_alerts_active", "gauge", "Active alerts by name.");
    for (int k = 0; k < ALERTS_COUNT; k++) {
        const alerts_def *d = alerts_def_at((alerts_kind)k);
        size_t n = 0;
        for (size_t i = 0; i < st->n_alerts; i++) n += !strcmp(st->alerts[i].name, d->name);
        evbuffer_add_printf(b, "ine_alerts_active{");
        metrics__label(b, "name", d->name, 1);
        metrics__label(b, "severity", proj_severity_name(d->severity), 0);
        evbuffer_add_printf(b, "} %zu\n", n);
    }
    /* Alerts of names this version does not define (another producer's) count too. */
    for (size_t i = 0; i < st->n_alerts; i++) {
        size_t n = 0;
        int first = 1;
        if (alerts_def_find(st->alerts[i].name)) continue;
        for (size_t j = 0; j < st->n_alerts; j++) {
            if (strcmp(st->alerts[j].name, st->alerts[i].name)) continue;
            if (j < i) first = 0;
            n++;
        }
        if (!first) continue;
        evbuffer_add_printf(b, "ine_alerts_active{");
        metrics__label(b, "name", st->alerts[i].name, 1);
        metrics__label(b, "severity", proj_severity_name(st->alerts[i].severity), 0);
        evbuffer_add_printf(b, "} %zu\n", n);
    }
}

static void metrics__service(struct evbuffer *b, alerting_t *a)
{
    uint64_t last = 0;
    if (evlog_last_seq(a->log, &last) < 0) last = a->st.applied_seq;
    metrics__head(b, "ine_log_last_seq", "gauge", "The sequence number of the last event in the log.");
    evbuffer_add_printf(b, "ine_log_last_seq %llu\n", (unsigned long long)last);
    metrics__head(b, "ine_alerting_applied_seq", "gauge", "The last event the alerting service has applied.");
    evbuffer_add_printf(b, "ine_alerting_applied_seq %llu\n", (unsigned long long)a->st.applied_seq);
    metrics__head(b, "ine_alerting_evaluated_seq", "gauge", "The log sequence number the last alert evaluation judged.");
    evbuffer_add_printf(b, "ine_alerting_evaluated_seq %llu\n", (unsigned long long)a->evaluated_seq);
    metrics__head(b, "ine_alerting_evaluations_total", "counter", "Alert evaluations run since the service started.");
    evbuffer_add_printf(b, "ine_alerting_evaluations_total %llu\n", (unsigned long long)a->evaluations);
    if (a->etcd && a->storage_used > 0) {
        metrics__head(b, "ine_etcd_db_size_bytes", "gauge", "Size of etcd's database on this node's member (the committed log).");
        evbuffer_add_printf(b, "ine_etcd_db_size_bytes %lld\n", (long long)a->storage_used);
        metrics__head(b, "ine_etcd_quota_bytes", "gauge", "etcd's quota (--quota-backend-bytes): past it every write fails.");
        evbuffer_add_printf(b, "ine_etcd_quota_bytes %lld\n", (long long)a->storage_quota);
    }
    if (a->hook) {
        alerting_hook_stats s;
        alerting_hook_get_stats(a->hook, &s);
        metrics__head(b, "ine_alerting_webhook_pending", "gauge", "Alert posts waiting for the webhook receiver.");
        evbuffer_add_printf(b, "ine_alerting_webhook_pending %llu\n", (unsigned long long)s.pending);
        metrics__head(b, "ine_alerting_webhook_delivered_total", "counter", "Alert posts the webhook receiver accepted.");
        evbuffer_add_printf(b, "ine_alerting_webhook_delivered_total %llu\n", (unsigned long long)s.delivered);
        metrics__head(b, "ine_alerting_webhook_failures_total", "counter", "Failed webhook post attempts (each is retried).");
        evbuffer_add_printf(b, "ine_alerting_webhook_failures_total %llu\n", (unsigned long long)s.failures);
        metrics__head(b, "ine_alerting_webhook_dropped_total", "counter", "Alert posts dropped because the queue was full.");
        evbuffer_add_printf(b, "ine_alerting_webhook_dropped_total %llu\n", (unsigned long long)s.dropped);
    }
}

static void metrics__handle(struct evhttp_request *req, void *arg)
{
    alerting_t *a = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct evbuffer *b = evbuffer_new();
    if (!b) return evhttp_send_error(req, 500, "out of memory");
    if (!path || (strcmp(path, "/metrics") && strcmp(path, "/"))) {
        evbuffer_add_printf(b, "not found: the metrics are at /metrics\n");
        evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
        evhttp_send_reply(req, 404, "Not Found", b);
    } else if (evhttp_request_get_command(req) != EVHTTP_REQ_GET && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
        evbuffer_add_printf(b, "use GET\n");
        evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
        evhttp_send_reply(req, 405, "Method Not Allowed", b);
    } else {
        /* Catch up first, so a scrape right after an event sees it. */
        if (alerting_catch_up(a) < 0) logline(LOGLINE_ERROR, a->st.applied_seq, "metrics: %s", ine_err_msg());
        metrics__certs(b, &a->st, ine_clock_now());
        metrics__alerts(b, &a->st);
        metrics__service(b, a);
        evhttp_add_header(h, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
        evhttp_send_reply(req, 200, "OK", b);
    }
    evbuffer_free(b);
}

int alerting_metrics_start(alerting_t *a)
{
    if (!(a->http = evhttp_new(a->base))) return ine_err(INE_ENOMEM, "cannot create the metrics HTTP server");
    evhttp_set_gencb(a->http, metrics__handle, a);
    evhttp_set_timeout(a->http, 30);
    evhttp_set_max_body_size(a->http, 4096);
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    if (!evhttp_bind_socket_with_handle(a->http, a->metrics_addr, (ev_uint16_t)a->metrics_port))
        return ine_err(INE_EIO, "cannot listen on %s:%d for metrics (in use?)", a->metrics_addr, a->metrics_port);
    return INE_OK;
}

void alerting_metrics_stop(alerting_t *a)
{
    if (a->http) evhttp_free(a->http);
    a->http = NULL;
}
