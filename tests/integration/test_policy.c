/* test_policy.c — ine-policy's REST API end to end: the real ine-ca and ine-policy on a fresh
 * cluster per test, driven with the real curl (and openssl s_client where the served
 * certificate is the point). Every endpoint's success path; every refusal answers in JSON and
 * leaves the log as it was (last seq and every byte of data.mdb); credentials; the cluster
 * default for new databases; a customer key never in any output; TLS only, 1.2 and up, with
 * node 1's control-plane certificate, swapped after a rotation; idempotent retries. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ine/v1/event.pb-c.h"
#include "svc.h"
#include "testutil.h"

#define USER "admin"
#define PASS "Corr3ct-Horse-Battery"
#define CREDS USER ":" PASS

static svc_cluster C;
static char *seen;       /* every response and output of the test, for the key scan */
static size_t seen_len;

static void setup(void)
{
    seen = NULL;
    seen_len = 0;
    cr_assert_eq(svc_cluster_init(&C, USER, PASS), 0, "%s", svc_why());
    cr_assert_eq(svc_start_ca(&C, 180000), 0, "%s", svc_why());
    cr_assert_eq(svc_start_policy(&C, 1, 60000), 0, "%s", svc_why());
}
static void teardown(void)
{
    svc_cluster_free(&C);
    free(seen);
}
TestSuite(policy, .init = setup, .fini = teardown, .timeout = 400);

static void see(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    seen = realloc(seen, seen_len + n + 2);
    memcpy(seen + seen_len, s ? s : "", n);
    seen_len += n;
    seen[seen_len++] = '\n';
    seen[seen_len] = 0;
}

/* Both services stop cleanly on SIGTERM (under ASan: without a leak report). */
static void stop_clean(void)
{
    int st;
    see(svc_tail(C.policy_log));
    cr_assert_eq(st = svc_stop_policy(&C), 0, "ine-policy exited %d: %s", st, svc_tail(C.policy_log));
    cr_assert_eq(st = svc_stop_ca(&C), 0, "ine-ca exited %d: %s", st, svc_tail(C.ca_log));
}

/* --- curl ---------------------------------------------------------------------------------- */

typedef struct {
    int rc;      /* curl's exit status */
    int code;    /* HTTP status, 0 when there was no HTTP answer */
    char *body, *err;
    json_t *j;   /* the body as JSON, or NULL */
} res_t;

static void res_free(res_t *r)
{
    free(r->body);
    free(r->err);
    json_decref(r->j);
    memset(r, 0, sizeof *r);
}

/* curl with these arguments (NULL-terminated) after the common ones; stdin feeds --data-binary @-. */
static res_t curl_v(const char *stdin_text, char *const *args, char *const *env)
{
    char *argv[64], *out = NULL, *bodyf = tu_path(C.dir, "curl.body");
    int i = 0;
    res_t r = {0};
    unlink(bodyf);
    argv[i++] = "/usr/bin/curl";
    argv[i++] = "-sS";
    argv[i++] = "--noproxy";
    argv[i++] = "*";
    argv[i++] = "--max-time";
    argv[i++] = "200";
    argv[i++] = "-o";
    argv[i++] = bodyf;
    argv[i++] = "-w";
    argv[i++] = "%{http_code}";
    for (; *args && i < 63; args++) argv[i++] = *args;
    argv[i] = NULL;
    r.rc = tu_run_env(argv, env, stdin_text, &out, &r.err);
    r.code = atoi(out);
    r.body = tu_read_file(bodyf, NULL);
    if (!r.body) r.body = strdup("");
    r.j = json_loads(r.body, JSON_DECODE_ANY, NULL);
    see(r.body);
    see(r.err);
    free(out);
    free(bodyf);
    return r;
}

/* One REST request with -k: auth "user:password" or NULL for none, an optional extra header. */
static res_t call(const char *auth, const char *method, const char *path, const char *body, const char *header)
{
    char url[256];
    char *args[20];
    int i = 0;
    snprintf(url, sizeof url, "https://127.0.0.1:%d%s", C.port, path);
    args[i++] = "-k";
    args[i++] = "-X";
    args[i++] = (char *)method;
    if (auth) args[i++] = "-u", args[i++] = (char *)auth;
    if (header) args[i++] = "-H", args[i++] = (char *)header;
    if (body) args[i++] = "-H", args[i++] = "Content-Type: application/json", args[i++] = "--data-binary", args[i++] = "@-";
    args[i++] = url;
    args[i] = NULL;
    return curl_v(body, args, NULL);
}

#define REST(m, p, b) call(CREDS, m, p, b, NULL)

/* The JSON of a reply with this status (owned by the caller). */
static json_t *expect(res_t r, int code, const char *what)
{
    json_t *j;
    cr_assert_eq(r.code, code, "%s: HTTP %d (curl %d), expected %d: %s %s", what, r.code, r.rc, code, r.body, r.err);
    cr_assert(r.j, "%s: the body is not JSON: %s", what, r.body);
    j = json_incref(r.j);
    res_free(&r);
    return j;
}

static json_int_t jint(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    cr_assert(json_is_integer(v), "'%s' is not an integer", k);
    return json_integer_value(v);
}
static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    cr_assert(json_is_string(v), "'%s' is not a string", k);
    return json_string_value(v);
}
static int jbool(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    cr_assert(json_is_boolean(v), "'%s' is not a boolean", k);
    return json_is_true(v);
}

static uint64_t last_seq(void)
{
    uint64_t s;
    cr_assert_eq(svc_last_seq(C.dd, &s), 0, "%s", svc_why());
    return s;
}

/* A refused request: the status, {"error_code": code, "description": a sentence}, and the
 * log exactly as before. */
static void refused_as(const char *auth, const char *m, const char *p, const char *body, int status, const char *code)
{
    svc_snap s;
    char what[200];
    snprintf(what, sizeof what, "%s %s %.60s", m, p, body ? body : "");
    cr_assert_eq(svc_snap_take(C.dd, &s), 0, "%s", svc_why());
    json_t *j = expect(call(auth, m, p, body, NULL), status, what);
    cr_assert_str_eq(jstr(j, "error_code"), code, "%s: %s", what, jstr(j, "description"));
    cr_assert_gt(strlen(jstr(j, "description")), 10, "%s: a sentence says why", what);
    cr_assert_eq(svc_snap_same(C.dd, &s), 0, "%s changed the log: %s", what, svc_why());
    svc_snap_free(&s);
    json_decref(j);
}
#define REFUSED(m, p, b, status, code) refused_as(CREDS, m, p, b, status, code)

static json_t *create_db(const char *name, int port, const char *extra)
{
    char body[300];
    snprintf(body, sizeof body, "{\"name\":\"%s\",\"port\":%d,\"shard_node\":1,\"shard_address\":\"127.0.0.1:%d\"%s}", name, port,
             port + 1000, extra ? extra : "");
    return expect(REST("POST", "/v1/bdbs", body), 200, body);
}

/* The node 1 control-plane certificate in GET /v1/cluster/certificates (a copy of its fingerprint). */
static char *cert_fp(int node, const char *name)
{
    json_t *j = expect(REST("GET", "/v1/cluster/certificates", NULL), 200, "GET certificates"), *c;
    size_t i;
    char *fp = NULL;
    json_array_foreach(json_object_get(j, "certificates"), i, c)
        if (jint(c, "node") == node && !strcmp(jstr(c, "name"), name)) fp = strdup(jstr(c, "fingerprint_sha256"));
    cr_assert(fp, "no %s certificate for node %d", name, node);
    json_decref(j);
    return fp;
}

/* What the REST port serves, by openssl s_client: lowercase hex SHA-256, "" if no handshake. */
static char *served_fp(void)
{
    char cmd[300], *out = NULL, *fp = calloc(1, 65), *p;
    snprintf(cmd, sizeof cmd,
             "timeout 60 openssl s_client -connect 127.0.0.1:%d </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
             C.port);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    tu_run(argv, NULL, &out, NULL);
    see(out);
    if ((p = strstr(out, "Fingerprint="))) {
        int n = 0;
        for (p += 12; *p && *p != '\n' && n < 64; p++)
            if (*p != ':') fp[n++] = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    }
    free(out);
    return fp;
}

static char *write_tmp(const char *name, const char *text)
{
    char *p = tu_path(C.dir, name);
    cr_assert_eq(tu_write_file(p, text, strlen(text)), 0);
    return p;
}

/* --- success paths ------------------------------------------------------------------------- */

Test(policy, every_endpoint_answers_on_its_success_path)
{
    json_t *j, *a, *c;
    size_t i;
    uint64_t s0 = last_seq();

    j = expect(REST("GET", "/v1/cluster", NULL), 200, "GET /v1/cluster");
    cr_assert_str_eq(jstr(j, "name"), "test");
    cr_assert_eq(strlen(jstr(j, "uid")), 32);
    cr_assert_eq(jint(j, "nodes"), 2);
    cr_assert_eq(jint(j, "bdbs"), 0);
    cr_assert_eq(jbool(j, "data_internode_encryption"), 0);
    cr_assert_eq((uint64_t)jint(j, "log_seq"), s0);
    /* No etcd.conf in this data dir: the log commits locally, and the cluster says so. */
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "consensus"), "mode")), "local");
    json_decref(j);

    a = expect(REST("GET", "/v1/nodes", NULL), 200, "GET /v1/nodes");
    cr_assert_eq(json_array_size(a), 2);
    cr_assert_eq(jint(json_array_get(a, 0), "uid"), 1);
    cr_assert_str_eq(jstr(json_array_get(a, 0), "addr"), "127.0.0.1");
    cr_assert_str_eq(jstr(json_array_get(a, 1), "addr"), "127.0.0.2");
    json_decref(a);

    /* Redis Enterprise's shape: every cluster-level alert by name, none of them raised yet. */
    j = expect(REST("GET", "/v1/cluster/alerts", NULL), 200, "GET alerts");
    cr_assert(json_is_object(j) && json_object_get(j, "cluster_certs_about_to_expire"), "cluster alerts listed by name");
    {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) cr_assert(json_is_false(json_object_get(v, "state")), "alert %s not raised yet", k);
    }
    json_decref(j);

    j = expect(REST("GET", "/v1/cluster/policy", NULL), 200, "GET policy");
    cr_assert_eq(jbool(j, "data_internode_encryption"), 0);
    json_decref(j);

    j = create_db("orders", 12000, NULL);
    cr_assert_eq(jint(j, "uid"), 1);
    cr_assert_str_eq(jstr(j, "name"), "orders");
    cr_assert_eq(jint(j, "port"), 12000);
    cr_assert_eq(jint(j, "shard_node"), 1);
    cr_assert_str_eq(jstr(j, "shard_address"), "127.0.0.1:13000");
    cr_assert_eq(jbool(j, "data_internode_encryption"), 0);
    json_decref(j);
    cr_assert_eq(last_seq(), s0 + 1);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_DATABASE_CREATED), 1);

    a = expect(REST("GET", "/v1/bdbs", NULL), 200, "GET /v1/bdbs");
    cr_assert_eq(json_array_size(a), 1);
    cr_assert_str_eq(jstr(json_array_get(a, 0), "name"), "orders");
    json_decref(a);
    j = expect(REST("GET", "/v1/bdbs/1", NULL), 200, "GET /v1/bdbs/1");
    cr_assert_str_eq(jstr(j, "name"), "orders");
    json_decref(j);

    j = expect(REST("PUT", "/v1/bdbs/1", "{\"name\":\"orders-eu\",\"port\":12001,\"data_internode_encryption\":true}"), 200, "PUT bdb");
    cr_assert_str_eq(jstr(j, "name"), "orders-eu");
    cr_assert_eq(jint(j, "port"), 12001);
    cr_assert_eq(jbool(j, "data_internode_encryption"), 1);
    json_decref(j);
    cr_assert_eq(last_seq(), s0 + 3, "an update and an encryption change");
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED), 1);

    j = expect(REST("PUT", "/v1/cluster/policy", "{\"data_internode_encryption\":true}"), 200, "PUT policy");
    cr_assert_eq(jbool(j, "data_internode_encryption"), 1);
    json_decref(j);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_CLUSTER_POLICY_CHANGED), 1);
    j = expect(REST("GET", "/v1/cluster", NULL), 200, "GET /v1/cluster");
    cr_assert_eq(jint(j, "bdbs"), 1);
    cr_assert_eq(jbool(j, "data_internode_encryption"), 1);
    json_decref(j);

    /* Certificates: the CA and four node certificates, public parts only. */
    j = expect(REST("GET", "/v1/cluster/certificates", NULL), 200, "GET certificates");
    cr_assert(strstr(jstr(json_object_get(j, "ca"), "certificate"), "BEGIN CERTIFICATE"));
    cr_assert_eq(json_array_size(json_object_get(j, "certificates")), 4);
    char *before[4];
    json_array_foreach(json_object_get(j, "certificates"), i, c) {
        cr_assert_str_eq(jstr(c, "source"), "self_signed");
        cr_assert(!strcmp(jstr(c, "name"), "ccs_internode_encryption") || !strcmp(jstr(c, "name"), "data_internode_encryption"));
        cr_assert_null(json_object_get(c, "key"));
        before[i] = strdup(jstr(c, "fingerprint_sha256"));
    }
    char *dump = json_dumps(j, 0);
    cr_assert_null(strstr(dump, "PRIVATE"));
    free(dump);
    json_decref(j);

    j = expect(REST("POST", "/v1/cluster/certificates/rotate", NULL), 200, "rotate");
    cr_assert_gt(strlen(jstr(j, "rotation_id")), 0);
    cr_assert_gt((uint64_t)jint(j, "seq"), s0);
    json_decref(j);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_CERTIFICATES_ROTATED), 1);
    j = expect(REST("GET", "/v1/cluster/certificates", NULL), 200, "GET certificates");
    json_array_foreach(json_object_get(j, "certificates"), i, c) {
        cr_assert_str_neq(jstr(c, "fingerprint_sha256"), before[i], "certificate %zu was replaced", i);
        free(before[i]);
    }
    json_decref(j);

    j = expect(REST("DELETE", "/v1/bdbs/1", NULL), 200, "DELETE");
    json_decref(j);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_DATABASE_DELETED), 1);
    a = expect(REST("GET", "/v1/bdbs", NULL), 200, "GET /v1/bdbs");
    cr_assert_eq(json_array_size(a), 0);
    json_decref(a);
    REFUSED("GET", "/v1/bdbs/1", NULL, 404, "not_found");
    stop_clean();
}

Test(policy, new_databases_take_the_cluster_default_at_creation_only)
{
    json_t *j;
    j = create_db("a", 12000, NULL);
    cr_assert_eq(jbool(j, "data_internode_encryption"), 0, "default off: A off");
    json_decref(j);

    json_decref(expect(REST("PUT", "/v1/cluster/policy", "{\"data_internode_encryption\":true}"), 200, "default on"));
    j = create_db("b", 12001, NULL);
    cr_assert_eq(jbool(j, "data_internode_encryption"), 1, "default on: B on");
    json_decref(j);
    j = expect(REST("GET", "/v1/bdbs/1", NULL), 200, "GET A");
    cr_assert_eq(jbool(j, "data_internode_encryption"), 0, "A keeps what it had");
    json_decref(j);
    j = create_db("c", 12002, ",\"data_internode_encryption\":false");
    cr_assert_eq(jbool(j, "data_internode_encryption"), 0, "explicit off beats the default");
    json_decref(j);

    json_decref(expect(REST("PUT", "/v1/cluster/policy", "{\"data_internode_encryption\":false}"), 200, "default off"));
    j = create_db("d", 12003, ",\"data_internode_encryption\":true");
    cr_assert_eq(jbool(j, "data_internode_encryption"), 1, "explicit on beats the default");
    json_decref(j);
    j = expect(REST("GET", "/v1/bdbs/2", NULL), 200, "GET B");
    cr_assert_eq(jbool(j, "data_internode_encryption"), 1, "B keeps what it had");
    json_decref(j);

    /* Setting the default it already has records nothing. */
    uint64_t s = last_seq();
    json_decref(expect(REST("PUT", "/v1/cluster/policy", "{\"data_internode_encryption\":false}"), 200, "same default"));
    cr_assert_eq(last_seq(), s);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_CLUSTER_POLICY_CHANGED), 2);
    stop_clean();
}

Test(policy, a_node_is_removed_through_its_remove_action)
{
    json_t *j;
    uint64_t s;
    /* Node 1 holds a shard: refused, nothing written. */
    json_decref(create_db("a", 12000, NULL));
    s = last_seq();
    REFUSED("POST", "/v1/nodes/1/actions/remove", NULL, 409, "conflict");
    REFUSED("GET", "/v1/nodes/2/actions/remove", NULL, 405, "method_not_allowed");
    REFUSED("POST", "/v1/nodes/x/actions/remove", NULL, 404, "not_found");
    REFUSED("POST", "/v1/nodes/9/actions/remove", NULL, 404, "not_found");
    cr_assert_eq(last_seq(), s);
    j = expect(REST("POST", "/v1/nodes/2/actions/remove", NULL), 200, "remove node 2");
    cr_assert_eq(jint(j, "uid"), 2);
    cr_assert_eq((uint64_t)jint(j, "seq"), s + 1);
    json_decref(j);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_NODE_REMOVED), 1);
    j = expect(REST("GET", "/v1/nodes", NULL), 200, "nodes");
    cr_assert_eq(json_array_size(j), 1, "the removed node is still listed");
    json_decref(j);
    REFUSED("POST", "/v1/nodes/2/actions/remove", NULL, 404, "not_found");
    stop_clean();
}

/* --- refusals --------------------------------------------------------------------------------- */

#define DB(extra) "{\"name\":\"x\",\"port\":12100,\"shard_node\":1,\"shard_address\":\"127.0.0.1:6379\"" extra "}"

Test(policy, every_refusal_answers_in_json_and_leaves_the_log_alone)
{
    json_decref(create_db("a", 12000, NULL));
    json_decref(create_db("b", 12001, NULL));

    /* 400: bodies that are not one JSON object, wrong types, unknown fields, missing ones. */
    REFUSED("POST", "/v1/bdbs", "{\"name\": ", 400, "bad_json");
    REFUSED("POST", "/v1/bdbs", "[1, 2]", 400, "bad_json");
    REFUSED("POST", "/v1/bdbs", "", 400, "bad_json");
    REFUSED("POST", "/v1/bdbs", "{\"name\":\"x\",\"name\":\"y\"}", 400, "bad_json");
    REFUSED("POST", "/v1/bdbs", "{\"name\":\"x\",\"port\":\"12100\",\"shard_node\":1,\"shard_address\":\"127.0.0.1:6379\"}", 400, "wrong_type");
    REFUSED("POST", "/v1/bdbs", "{\"name\":7,\"port\":12100,\"shard_node\":1,\"shard_address\":\"127.0.0.1:6379\"}", 400, "wrong_type");
    REFUSED("POST", "/v1/bdbs", DB(",\"data_internode_encryption\":\"yes\""), 400, "wrong_type");
    REFUSED("POST", "/v1/bdbs", "{\"name\":\"x\",\"port\":70000,\"shard_node\":1,\"shard_address\":\"127.0.0.1:6379\"}", 400, "wrong_type");
    REFUSED("POST", "/v1/bdbs", "{\"name\":\"x\",\"port\":-1,\"shard_node\":1,\"shard_address\":\"127.0.0.1:6379\"}", 400, "wrong_type");
    REFUSED("POST", "/v1/bdbs", DB(",\"colour\":\"red\""), 400, "unknown_field");
    REFUSED("POST", "/v1/bdbs", "{\"name\":\"x\"}", 400, "missing_field");
    REFUSED("POST", "/v1/bdbs", "{\"name\":\"bad name!\",\"port\":12100,\"shard_node\":1,\"shard_address\":\"127.0.0.1:6379\"}", 400, "bad_request");
    REFUSED("POST", "/v1/bdbs", "{\"name\":\"x\",\"port\":12100,\"shard_node\":1,\"shard_address\":\"nowhere\"}", 400, "bad_request");
    /* 404 and 409 from the policy rules. */
    REFUSED("POST", "/v1/bdbs", "{\"name\":\"x\",\"port\":12100,\"shard_node\":9,\"shard_address\":\"127.0.0.1:6379\"}", 404, "not_found");
    REFUSED("POST", "/v1/bdbs", "{\"name\":\"a\",\"port\":12100,\"shard_node\":1,\"shard_address\":\"127.0.0.1:6379\"}", 409, "conflict");
    REFUSED("POST", "/v1/bdbs", "{\"name\":\"x\",\"port\":12000,\"shard_node\":1,\"shard_address\":\"127.0.0.1:6379\"}", 409, "conflict");
    REFUSED("POST", "/v1/bdbs", DB(",\"uid\":1"), 409, "conflict");
    REFUSED("GET", "/v1/bdbs/99", NULL, 404, "not_found");
    REFUSED("GET", "/v1/bdbs/abc", NULL, 404, "not_found");
    REFUSED("PUT", "/v1/bdbs/99", "{\"name\":\"z\"}", 404, "not_found");
    REFUSED("DELETE", "/v1/bdbs/99", NULL, 404, "not_found");
    REFUSED("GET", "/v1/nothing", NULL, 404, "not_found");
    REFUSED("PUT", "/v1/bdbs/1", "{}", 400, "missing_field");
    REFUSED("PUT", "/v1/bdbs/1", "{\"port\":\"x\"}", 400, "wrong_type");
    REFUSED("PUT", "/v1/bdbs/1", "{\"bogus\":1}", 400, "unknown_field");
    REFUSED("PUT", "/v1/bdbs/1", "{\"name\":\"b\"}", 409, "conflict");
    REFUSED("PUT", "/v1/bdbs/1", "{\"port\":12001}", 409, "conflict");
    REFUSED("PUT", "/v1/bdbs/1", "{\"name\":\"ok\",\"data_internode_encryption\":1}", 400, "wrong_type");
    REFUSED("PUT", "/v1/cluster/policy", "{}", 400, "missing_field");
    REFUSED("PUT", "/v1/cluster/policy", "{\"data_internode_encryption\":1}", 400, "wrong_type");
    REFUSED("PUT", "/v1/cluster/policy", "{\"data_internode_encryption\":true,\"x\":1}", 400, "unknown_field");
    REFUSED("PUT", "/v1/cluster/policy", "true", 400, "bad_json");
    REFUSED("DELETE", "/v1/cluster", NULL, 405, "method_not_allowed");
    /* Certificate requests: refused here, or by ine-ca. */
    REFUSED("PUT", "/v1/cluster/certificates", "{\"certificates\":\"x\"}", 400, "wrong_type");
    REFUSED("PUT", "/v1/cluster/certificates", "{\"certificates\":[]}", 400, "wrong_type");
    REFUSED("PUT", "/v1/cluster/certificates", "{\"certificates\":[{\"name\":\"ccs_internode_encryption\",\"certificate\":\"c\",\"key\":\"k\",\"x\":1}]}", 400, "unknown_field");
    REFUSED("PUT", "/v1/cluster/certificates", "{\"certificates\":[{\"name\":\"ccs_internode_encryption\",\"certificate\":\"c\"}]}", 400, "missing_field");
    REFUSED("PUT", "/v1/cluster/certificates", "{\"certificates\":[{\"name\":\"proxy\",\"certificate\":\"c\",\"key\":\"k\"}]}", 400, "bad_request");
    REFUSED("PUT", "/v1/cluster/certificates", "{\"certificates\":[{\"name\":\"ccs_internode_encryption\",\"certificate\":\"c\",\"key\":5}]}", 400, "wrong_type");
    REFUSED("PUT", "/v1/cluster/certificates", "{\"certificates\":[{\"name\":\"ccs_internode_encryption\",\"certificate\":\"junk\",\"key\":\"junk\"}]}", 400, "cert_parse");
    REFUSED("POST", "/v1/cluster/certificates/rotate", "{\"name\":\"proxy\"}", 400, "bad_request");
    REFUSED("POST", "/v1/cluster/certificates/rotate", "{\"name\":1}", 400, "wrong_type");
    REFUSED("POST", "/v1/cluster/certificates/rotate", "{\"planes\":[]}", 400, "unknown_field");

    /* 413 above 1 MiB; exactly 1 MiB is still read (and, being valid, acted on). */
    const char *db = "{\"name\":\"big\",\"port\":12009,\"shard_node\":1,\"shard_address\":\"127.0.0.1:6379\"}";
    size_t mib = 1u << 20;
    char *big = malloc(mib + 2);
    memset(big, ' ', mib + 1);
    memcpy(big, db, strlen(db));
    big[mib + 1] = 0;
    REFUSED("POST", "/v1/bdbs", big, 413, "too_large");
    {
        /* Past libevent's own hard limit (8 MiB) the 413 is libevent's, not JSON: status only. */
        char *huge = malloc(9 * mib + 1);
        svc_snap s;
        memset(huge, ' ', 9 * mib);
        huge[9 * mib] = 0;
        cr_assert_eq(svc_snap_take(C.dd, &s), 0);
        res_t r = REST("POST", "/v1/bdbs", huge);
        cr_assert_eq(r.code, 413, "9 MiB: HTTP %d (curl %d)", r.code, r.rc);
        res_free(&r);
        cr_assert_eq(svc_snap_same(C.dd, &s), 0, "%s", svc_why());
        svc_snap_free(&s);
        free(huge);
    }
    big[mib] = 0;
    json_t *j = expect(REST("POST", "/v1/bdbs", big), 200, "a body of exactly 1 MiB");
    cr_assert_str_eq(jstr(j, "name"), "big");
    json_decref(j);
    free(big);
    stop_clean();
}

Test(policy, wrong_or_missing_credentials_get_401_and_change_nothing)
{
    svc_chain ch;
    char *put_certs;
    cr_assert_eq(svc_chain_make(&ch, -3600, 60L * 86400), 0, "%s", svc_why());
    json_t *body = json_pack("{s:[{s:s, s:s, s:s}]}", "certificates", "name", "ccs_internode_encryption", "certificate", ch.cert_pem,
                             "key", ch.key_pem);
    put_certs = json_dumps(body, 0);
    json_decref(body);
    json_decref(create_db("a", 12000, NULL));

    static const char *bad[] = {NULL, USER ":Wr0ng-Pass-Phrase", "root:" PASS, USER ":", "Admin:" PASS, USER ":" PASS "x"};
    const struct { const char *m, *p, *b; } eps[] = {
        {"GET", "/v1/cluster", NULL},
        {"GET", "/v1/bdbs", NULL},
        {"GET", "/v1/cluster/certificates", NULL},
        {"POST", "/v1/bdbs", DB("")},
        {"PUT", "/v1/bdbs/1", "{\"data_internode_encryption\":true}"},
        {"DELETE", "/v1/bdbs/1", NULL},
        {"PUT", "/v1/cluster/policy", "{\"data_internode_encryption\":true}"},
        {"PUT", "/v1/cluster/certificates", put_certs},
        {"POST", "/v1/cluster/certificates/rotate", NULL},
    };
    for (size_t e = 0; e < sizeof eps / sizeof eps[0]; e++)
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) refused_as(bad[b], eps[e].m, eps[e].p, eps[e].b, 401, "unauthorized");

    /* Malformed Authorization headers, and the challenge that comes with a 401. */
    const char *hdrs[] = {"Authorization: Basic !!!!", "Authorization: Bearer abc", "Authorization: Basic YWRtaW4=", "Authorization: Basic"};
    svc_snap s;
    cr_assert_eq(svc_snap_take(C.dd, &s), 0);
    for (size_t h = 0; h < sizeof hdrs / sizeof hdrs[0]; h++) {
        res_t r = call(NULL, "DELETE", "/v1/bdbs/1", NULL, hdrs[h]);
        cr_assert_eq(r.code, 401, "%s: %d", hdrs[h], r.code);
        res_free(&r);
    }
    char *hfile = tu_path(C.dir, "headers"), url[128];
    snprintf(url, sizeof url, "https://127.0.0.1:%d/v1/bdbs", C.port);
    char *args[] = {"-k", "-D", hfile, url, NULL};
    res_t r = curl_v(NULL, args, NULL);
    char *hdr = tu_read_file(hfile, NULL);
    cr_assert_eq(r.code, 401);
    cr_assert(strcasestr(hdr, "WWW-Authenticate: Basic"), "%s", hdr);
    res_free(&r);
    free(hdr);
    free(hfile);
    cr_assert_eq(svc_snap_same(C.dd, &s), 0, "%s", svc_why());
    uint64_t seq = s.last_seq;
    svc_snap_free(&s);

    /* The same writes with the right credentials do change things: the 401s were real. */
    json_decref(expect(REST("PUT", "/v1/bdbs/1", "{\"data_internode_encryption\":true}"), 200, "PUT with credentials"));
    cr_assert_eq(last_seq(), seq + 1);

    /* The passwords, right or wrong, are in no log. */
    for (int k = 0; k < 2; k++) {
        char *log = tu_read_file(k ? C.ca_log : C.policy_log, NULL);
        cr_assert_null(strstr(log, PASS));
        cr_assert_null(strstr(log, "Wr0ng-Pass-Phrase"));
        free(log);
    }
    free(put_certs);
    svc_chain_free(&ch);
    stop_clean();
}

/* --- customer certificates and key secrecy ----------------------------------------------------- */

static char *upload_body(const svc_chain *ch)
{
    json_t *b = json_pack("{s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}]}", "certificates", "name", "ccs_internode_encryption", "certificate",
                          ch->cert_pem, "key", ch->key_pem, "name", "data_internode_encryption", "certificate", ch->cert_pem, "key",
                          ch->key_pem);
    char *s = json_dumps(b, 0);
    json_decref(b);
    return s;
}

Test(policy, a_customer_key_never_appears_in_any_response_or_output)
{
    svc_chain ch;
    json_t *j, *c;
    size_t i;
    cr_assert_eq(svc_chain_make(&ch, -3600, 60L * 86400), 0, "%s", svc_why());
    char *body = upload_body(&ch);
    cr_assert_not_null(svc_key_leak(&ch, body, strlen(body)), "the scan finds the key where it is");

    j = expect(REST("PUT", "/v1/cluster/certificates", body), 200, "upload");
    cr_assert_gt(jint(j, "seq"), 0);
    json_decref(j);
    j = expect(REST("GET", "/v1/cluster/certificates", NULL), 200, "GET certificates");
    cr_assert_eq(json_array_size(json_object_get(j, "certificates")), 4);
    json_array_foreach(json_object_get(j, "certificates"), i, c) {
        cr_assert_str_eq(jstr(c, "source"), "customer", "node %lld %s", jint(c, "node"), jstr(c, "name"));
        cr_assert_str_eq(jstr(c, "fingerprint_sha256"), ch.leaf_fingerprint);
    }
    json_decref(j);

    /* REST itself now serves the customer certificate, which verifies with the customer root. */
    char *fp = NULL;
    for (int t = 0; t < 600; t++) {
        free(fp);
        if (!strcmp(fp = served_fp(), ch.leaf_fingerprint)) break;
        usleep(100 * 1000);
    }
    cr_assert_str_eq(fp, ch.leaf_fingerprint, "REST serves the uploaded certificate");
    free(fp);
    char *root = write_tmp("customer-root.pem", ch.root_pem), url[128];
    snprintf(url, sizeof url, "https://127.0.0.1:%d/v1/cluster", C.port);
    char *args[] = {"--cacert", root, "-u", CREDS, url, NULL};
    res_t r = curl_v(NULL, args, NULL);
    cr_assert_eq(r.rc, 0, "curl --cacert customer root: %s", r.err);
    cr_assert_eq(r.code, 200);
    res_free(&r);
    free(root);

    /* Every other view of the certificates: REST and the CLIs. */
    static const char *const gets[] = {"/v1/cluster", "/v1/nodes", "/v1/cluster/alerts", "/v1/bdbs", "/v1/cluster/policy"};
    for (i = 0; i < sizeof gets / sizeof gets[0]; i++) json_decref(expect(REST("GET", gets[i], NULL), 200, gets[i]));
    static const char *const cli[][4] = {{"status", NULL}, {"--json", "status", NULL}, {"status", "certificates", NULL},
                                         {"--json", "status", "certificates", NULL}, {"info", "cluster", NULL},
                                         {"--json", "info", "cluster", NULL}};
    for (i = 0; i < sizeof cli / sizeof cli[0]; i++) {
        char *out, *err;
        int rc = svc_inectl(&C, &out, &err, cli[i][0], cli[i][1], cli[i][2], NULL);
        cr_assert_eq(rc, 0, "inectl %s %s: %s", cli[i][0], cli[i][1] ? cli[i][1] : "", err);
        see(out);
        see(err);
        free(out);
        free(err);
    }
    static const char *const logcmds[][2] = {{"list", NULL}, {"export", NULL}, {"state", NULL}};
    for (i = 0; i < sizeof logcmds / sizeof logcmds[0]; i++) {
        char *argv[] = {(char *)strdup(tu_bin("ine-log")), "--data-dir", C.dd, (char *)logcmds[i][0], NULL}, *out, *err;
        cr_assert_eq(tu_run(argv, NULL, &out, &err), 0, "ine-log %s: %s", logcmds[i][0], err);
        see(out);
        see(err);
        free(out);
        free(err);
        free(argv[0]);
    }
    stop_clean();
    see(svc_tail(C.ca_log));
    char *logs[2] = {tu_read_file(C.policy_log, NULL), tu_read_file(C.ca_log, NULL)};
    for (int k = 0; k < 2; k++) see(logs[k]), free(logs[k]);

    const char *leak = svc_key_leak(&ch, seen, seen_len);
    cr_assert_null(leak, "found %s in the outputs", leak);
    cr_assert(strstr(seen, ch.leaf_fingerprint), "the scan did cover the certificate views");
    /* Nor is it in the log file in clear: the CA sealed it. */
    size_t flen;
    char *data = tu_path(C.dd, "log/data.mdb"), *file = tu_read_file(data, &flen);
    cr_assert_not_null(file);
    leak = svc_key_leak(&ch, file, flen);
    cr_assert_null(leak, "found %s in data.mdb", leak);
    free(file);
    free(data);
    free(body);
    svc_chain_free(&ch);
}

Test(policy, an_expired_customer_certificate_gets_406_and_changes_nothing)
{
    svc_chain old, early;
    cr_assert_eq(svc_chain_make(&old, -90L * 86400, -86400), 0, "%s", svc_why());
    cr_assert_eq(svc_chain_make(&early, 86400, 90L * 86400), 0, "%s", svc_why());
    char *b1 = upload_body(&old), *b2 = upload_body(&early);
    REFUSED("PUT", "/v1/cluster/certificates", b1, 406, "cert_expired");
    REFUSED("PUT", "/v1/cluster/certificates", b2, 400, "cert_not_yet_valid");
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_CUSTOMER_CERTIFICATE_UPLOADED), 0);
    stop_clean();
    cr_assert_null(svc_key_leak(&old, seen, seen_len));
    cr_assert_null(svc_key_leak(&early, seen, seen_len));
    free(b1);
    free(b2);
    svc_chain_free(&old);
    svc_chain_free(&early);
}

/* --- the TLS listener ------------------------------------------------------------------------ */

Test(policy, https_only_tls_1_2_and_up_serving_node_1_control_plane_certificate)
{
    char url[128], http_url[128];
    json_t *j = expect(REST("GET", "/v1/cluster/certificates", NULL), 200, "GET certificates");
    char *ca = write_tmp("cluster-ca.pem", jstr(json_object_get(j, "ca"), "certificate"));
    json_decref(j);
    snprintf(url, sizeof url, "https://127.0.0.1:%d/v1/cluster", C.port);
    snprintf(http_url, sizeof http_url, "http://127.0.0.1:%d/v1/cluster", C.port);

    /* Verified with the cluster CA only: the SAN is node 1's address. */
    {
        char *args[] = {"--cacert", ca, "-u", CREDS, url, NULL};
        res_t r = curl_v(NULL, args, NULL);
        cr_assert_eq(r.rc, 0, "curl --cacert cluster CA: %s", r.err);
        cr_assert_eq(r.code, 200);
        res_free(&r);
    }
    /* ... and not with another root, nor with the system store. */
    {
        svc_chain other;
        cr_assert_eq(svc_chain_make(&other, -3600, 86400 * 30), 0);
        char *root = write_tmp("other-root.pem", other.root_pem);
        char *a1[] = {"--cacert", root, "-u", CREDS, url, NULL}, *a2[] = {"-u", CREDS, url, NULL};
        res_t r = curl_v(NULL, a1, NULL);
        cr_assert_eq(r.rc, 60, "another root does not verify (curl %d)", r.rc);
        res_free(&r);
        r = curl_v(NULL, a2, NULL);
        cr_assert_eq(r.rc, 60, "the system store does not verify (curl %d)", r.rc);
        res_free(&r);
        free(root);
        svc_chain_free(&other);
    }
    /* The served certificate is node 1's control-plane one. */
    char *want = cert_fp(1, "ccs_internode_encryption"), *got = served_fp();
    cr_assert_str_eq(got, want);
    free(got);
    free(want);

    /* Plaintext HTTP on the HTTPS port gets no HTTP answer. */
    {
        char *args[] = {"-u", CREDS, http_url, NULL};
        res_t r = curl_v(NULL, args, NULL);
        cr_assert_neq(r.rc, 0, "plaintext got an answer: %d %s", r.code, r.body);
        cr_assert_eq(r.code, 0);
        res_free(&r);
    }
    /* TLS 1.2 and 1.3 work; 1.1 does not. OpenSSL 3 clients refuse 1.1 themselves unless told
     * otherwise, so the client is set to allow it and shown to speak it to a server that does. */
    {
        char *a12[] = {"-k", "--tlsv1.2", "--tls-max", "1.2", "-u", CREDS, url, NULL};
        char *a13[] = {"-k", "--tlsv1.3", "-u", CREDS, url, NULL};
        res_t r = curl_v(NULL, a12, NULL);
        cr_assert_eq(r.code, 200, "TLS 1.2: curl %d %s", r.rc, r.err);
        res_free(&r);
        r = curl_v(NULL, a13, NULL);
        cr_assert_eq(r.code, 200, "TLS 1.3: curl %d %s", r.rc, r.err);
        res_free(&r);
    }
    {
        char *cnf = write_tmp("openssl-empty.cnf", "\n"), env_cnf[300];
        snprintf(env_cnf, sizeof env_cnf, "OPENSSL_CONF=%s", cnf);
        char *env[] = {env_cnf, NULL};
        svc_chain ch;
        cr_assert_eq(svc_chain_make(&ch, -3600, 86400 * 30), 0);
        char *cert = write_tmp("s_server.crt", ch.cert_pem), *key = write_tmp("s_server.key", ch.key_pem);
        char port[16], ctl_url[128];
        int p = svc_free_port();
        snprintf(port, sizeof port, "%d", p);
        snprintf(ctl_url, sizeof ctl_url, "https://127.0.0.1:%d/", p);
        char *sargv[] = {"/usr/bin/openssl", "s_server", "-accept", port, "-cert", cert, "-key", key, "-tls1_1", "-cipher",
                         "DEFAULT:@SECLEVEL=0", "-www", NULL};
        char *slog = tu_path(C.dir, "s_server.log");
        pid_t srv = svc_spawn(sargv, env, slog);
        cr_assert_gt(srv, 0);
        res_t r = {0};
        char *actl[] = {"-k", "--tlsv1.1", "--tls-max", "1.1", "--ciphers", "DEFAULT:@SECLEVEL=0", ctl_url, NULL};
        for (int t = 0; t < 300 && r.code != 200; t++) {
            res_free(&r);
            if (t) usleep(100 * 1000);
            r = curl_v(NULL, actl, env);
        }
        cr_assert_eq(r.code, 200, "the client speaks TLS 1.1 to a server that allows it: curl %d %s %s", r.rc, r.err, svc_tail(slog));
        res_free(&r);
        svc_stop(srv, 10000);
        char *a11[] = {"-k", "--tlsv1.1", "--tls-max", "1.1", "--ciphers", "DEFAULT:@SECLEVEL=0", "-u", CREDS, url, NULL};
        r = curl_v(NULL, a11, env);
        cr_assert_eq(r.code, 0, "TLS 1.1 got HTTP %d", r.code);
        cr_assert_eq(r.rc, 35, "TLS 1.1 fails in the handshake (curl %d: %s)", r.rc, r.err);
        cr_assert(strstr(r.err, "protocol version"), "the server says why: %s", r.err);
        res_free(&r);
        free(cnf);
        free(cert);
        free(key);
        free(slog);
        svc_chain_free(&ch);
    }
    free(ca);
    stop_clean();
}

Test(policy, after_a_control_plane_rotation_new_connections_get_the_new_certificate)
{
    char *cp0 = cert_fp(1, "ccs_internode_encryption"), *dp0 = cert_fp(1, "data_internode_encryption"), *got = served_fp();
    cr_assert_str_eq(got, cp0);
    free(got);

    json_t *j = expect(REST("POST", "/v1/cluster/certificates/rotate", "{\"name\":\"ccs_internode_encryption\"}"), 200, "rotate ccs");
    cr_assert_gt(strlen(jstr(j, "rotation_id")), 0);
    json_decref(j);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_ROTATION_REQUESTED), 1);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_CERTIFICATES_ROTATED), 1);
    char *cp1 = cert_fp(1, "ccs_internode_encryption"), *dp1 = cert_fp(1, "data_internode_encryption");
    cr_assert_str_neq(cp1, cp0, "the control-plane certificate was replaced");
    cr_assert_str_eq(dp1, dp0, "the data-plane one was not named");

    for (int t = 0; t < 600; t++) {
        got = served_fp();
        if (!strcmp(got, cp1)) break;
        free(got);
        got = NULL;
        usleep(100 * 1000);
    }
    cr_assert_not_null(got, "REST still serves %s, not the new %s: %s", cp0, cp1, svc_tail(C.policy_log));
    free(got);

    /* The new certificate verifies with the same cluster CA. */
    j = expect(REST("GET", "/v1/cluster/certificates", NULL), 200, "GET certificates");
    char *ca = write_tmp("cluster-ca.pem", jstr(json_object_get(j, "ca"), "certificate")), url[128];
    json_decref(j);
    snprintf(url, sizeof url, "https://127.0.0.1:%d/v1/nodes", C.port);
    char *args[] = {"--cacert", ca, "-u", CREDS, url, NULL};
    res_t r = curl_v(NULL, args, NULL);
    cr_assert_eq(r.code, 200, "curl %d: %s", r.rc, r.err);
    res_free(&r);
    free(ca);
    free(cp0);
    free(cp1);
    free(dp0);
    free(dp1);
    stop_clean();
}

/* --- idempotency and the CA being away --------------------------------------------------------- */

Test(policy, the_same_request_id_twice_creates_one_database)
{
    const char *body = "{\"name\":\"a\",\"port\":12000,\"shard_node\":1,\"shard_address\":\"127.0.0.1:6379\"}";
    json_t *j = expect(call(CREDS, "POST", "/v1/bdbs", body, "X-Request-Id: create-a-1"), 200, "first");
    cr_assert_eq(jint(j, "uid"), 1);
    json_decref(j);
    svc_snap s;
    cr_assert_eq(svc_snap_take(C.dd, &s), 0);

    j = expect(call(CREDS, "POST", "/v1/bdbs", body, "X-Request-Id: create-a-1"), 200, "retry");
    cr_assert_eq(jint(j, "uid"), 1);
    cr_assert_str_eq(jstr(j, "name"), "a");
    json_decref(j);
    cr_assert_eq(svc_snap_same(C.dd, &s), 0, "the retry wrote: %s", svc_why());
    /* The same id with another body answers what that id did, and writes nothing. */
    j = expect(call(CREDS, "POST", "/v1/bdbs", "{\"name\":\"b\",\"port\":12001,\"shard_node\":1,\"shard_address\":\"127.0.0.1:6379\"}",
                    "X-Request-Id: create-a-1"), 200, "reused id");
    cr_assert_eq(jint(j, "uid"), 1);
    cr_assert_str_eq(jstr(j, "name"), "a");
    json_decref(j);
    cr_assert_eq(svc_snap_same(C.dd, &s), 0, "%s", svc_why());
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_DATABASE_CREATED), 1);
    /* Without the id the same body is a new request, refused: the id is what made it a retry. */
    refused_as(CREDS, "POST", "/v1/bdbs", body, 409, "conflict");

    /* Retries are recognised across a restart of ine-policy. */
    cr_assert_eq(svc_stop_policy(&C), 0, "%s", svc_tail(C.policy_log));
    cr_assert_eq(svc_start_policy(&C, 1, 60000), 0, "%s", svc_why());
    j = expect(call(CREDS, "POST", "/v1/bdbs", body, "X-Request-Id: create-a-1"), 200, "retry after restart");
    cr_assert_eq(jint(j, "uid"), 1);
    json_decref(j);
    cr_assert_eq(svc_snap_same(C.dd, &s), 0, "%s", svc_why());
    svc_snap_free(&s);

    /* Request ids: up to 200 printable characters (they become part of the log's own ids). */
    {
        char hdr[300];
        int n = snprintf(hdr, sizeof hdr, "X-Request-Id: ");
        memset(hdr + n, 'r', 201);
        hdr[n + 201] = 0;
        cr_assert_eq(svc_snap_take(C.dd, &s), 0);
        j = expect(call(CREDS, "POST", "/v1/bdbs", "{\"name\":\"c\",\"port\":12002,\"shard_node\":1,\"shard_address\":\"127.0.0.1:1\"}", hdr),
                   400, "a 201-character request id");
        cr_assert_str_eq(jstr(j, "error_code"), "bad_request");
        json_decref(j);
        cr_assert_eq(svc_snap_same(C.dd, &s), 0, "%s", svc_why());
        svc_snap_free(&s);
        hdr[n + 200] = 0;
        for (int k = 0; k < 2; k++) {
            j = expect(call(CREDS, "POST", "/v1/bdbs", "{\"name\":\"c\",\"port\":12002,\"shard_node\":1,\"shard_address\":\"127.0.0.1:1\"}", hdr),
                       200, "a 200-character request id");
            cr_assert_eq(jint(j, "uid"), 2);
            json_decref(j);
        }
        memset(hdr + n, 's', 200); /* another request: another id */
        j = expect(call(CREDS, "PUT", "/v1/bdbs/2", "{\"name\":\"c2\",\"data_internode_encryption\":true}", hdr), 200,
                   "a PUT with a 200-character request id");
        cr_assert_str_eq(jstr(j, "name"), "c2");
        cr_assert_eq(jbool(j, "data_internode_encryption"), 1);
        json_decref(j);
    }

    /* A PUT doing two things retried: each thing once. */
    for (int k = 0; k < 2; k++) {
        j = expect(call(CREDS, "PUT", "/v1/bdbs/1", "{\"name\":\"a2\",\"data_internode_encryption\":true}", "X-Request-Id: put-1"), 200, "PUT");
        cr_assert_str_eq(jstr(j, "name"), "a2");
        cr_assert_eq(jbool(j, "data_internode_encryption"), 1);
        json_decref(j);
    }
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_DATABASE_CREATED), 2);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_DATABASE_UPDATED), 2);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED), 2);
    stop_clean();
}

Test(policy, certificate_requests_with_ine_ca_stopped_get_503_and_change_nothing)
{
    svc_chain ch;
    cr_assert_eq(svc_chain_make(&ch, -3600, 60L * 86400), 0);
    char *body = upload_body(&ch);
    cr_assert_eq(svc_stop_ca(&C), 0, "%s", svc_tail(C.ca_log));
    REFUSED("POST", "/v1/cluster/certificates/rotate", NULL, 503, "ca_unavailable");
    REFUSED("PUT", "/v1/cluster/certificates", body, 503, "ca_unavailable");
    /* Everything else still works without the CA. */
    json_decref(create_db("a", 12000, NULL));
    json_decref(expect(REST("GET", "/v1/cluster/certificates", NULL), 200, "GET certificates"));
    cr_assert_eq(svc_stop_policy(&C), 0, "%s", svc_tail(C.policy_log));
    cr_assert_null(svc_key_leak(&ch, seen, seen_len));
    free(body);
    svc_chain_free(&ch);
}
