/* test_inectl_db.c — the inectl commands that talk to ine-policy and ine-ca, through the real
 * binaries on a fresh cluster per test: create/tune/delete db, tune cluster, info, status,
 * --json, --request-id, the certificate commands with a customer certificate made at test
 * time (its key in no output), and what happens when a service is not running. Every refusal
 * exits non-zero with one clear line and leaves the log as it was. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ine/v1/event.pb-c.h"
#include "svc.h"
#include "testutil.h"

static svc_cluster C;
static char *seen;       /* every output of the test, for the key scan */
static size_t seen_len;

static void setup(void)
{
    seen = NULL;
    seen_len = 0;
    cr_assert_eq(svc_cluster_init(&C, "admin", "pw-for-inectl-tests"), 0, "%s", svc_why());
}
static void teardown(void)
{
    svc_cluster_free(&C);
    free(seen);
}
TestSuite(inectl_db, .init = setup, .fini = teardown, .timeout = 400);

static void see(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    seen = realloc(seen, seen_len + n + 2);
    memcpy(seen + seen_len, s ? s : "", n);
    seen_len += n;
    seen[seen_len++] = '\n';
    seen[seen_len] = 0;
}

/* ine-policy without REST: the inectl database commands need no certificates. */
static void start_policy(void) { cr_assert_eq(svc_start_policy(&C, 0, 60000), 0, "%s", svc_why()); }

static void stop_clean(void)
{
    int st;
    cr_assert_eq(st = svc_stop_policy(&C), 0, "ine-policy exited %d: %s", st, svc_tail(C.policy_log));
    cr_assert_eq(st = svc_stop_ca(&C), 0, "ine-ca exited %d: %s", st, svc_tail(C.ca_log));
}

typedef struct {
    int rc;
    char *out, *err;
} run_t;

static void run_free(run_t *r)
{
    free(r->out);
    free(r->err);
}

#define INECTL(...) inectl_run(__VA_ARGS__, NULL)
static run_t inectl_run(const char *first, ...)
{
    char *argv[40];
    int i = 0;
    va_list ap;
    run_t r;
    argv[i++] = strdup(tu_bin("inectl"));
    argv[i++] = "--data-dir";
    argv[i++] = C.dd;
    argv[i++] = (char *)first;
    va_start(ap, first);
    for (char *a; (a = va_arg(ap, char *)) && i < 39;) argv[i++] = a;
    va_end(ap);
    argv[i] = NULL;
    r.rc = tu_run(argv, NULL, &r.out, &r.err);
    free(argv[0]);
    see(r.out);
    see(r.err);
    return r;
}

/* Succeeds; stdout returned (caller frees). */
#define OK(...) ok_run(INECTL(__VA_ARGS__))
static char *ok_run(run_t r)
{
    cr_assert_eq(r.rc, 0, "exit %d: %s%s", r.rc, r.err, r.out);
    cr_assert_str_eq(r.err, "", "nothing on stderr: %s", r.err);
    free(r.err);
    return r.out;
}

/* Refused: the exit status, one line on stderr naming why, nothing on stdout, log unchanged. */
#define REFUSED(code, why, ...) refused_run(code, why, __VA_ARGS__, NULL)
static void refused_run(int code, const char *why, const char *first, ...)
{
    char *argv[40];
    int i = 0;
    va_list ap;
    run_t r;
    svc_snap s;
    cr_assert_eq(svc_snap_take(C.dd, &s), 0, "%s", svc_why());
    argv[i++] = strdup(tu_bin("inectl"));
    argv[i++] = "--data-dir";
    argv[i++] = C.dd;
    argv[i++] = (char *)first;
    va_start(ap, first);
    for (char *a; (a = va_arg(ap, char *)) && i < 39;) argv[i++] = a;
    va_end(ap);
    argv[i] = NULL;
    r.rc = tu_run(argv, NULL, &r.out, &r.err);
    see(r.out);
    see(r.err);
    cr_assert_eq(r.rc, code, "%s ...: exit %d, expected %d: %s", first, r.rc, code, r.err);
    cr_assert(strstr(r.err, why), "expected '%s' in: %s", why, r.err);
    cr_assert(!strncmp(r.err, "inectl: ", 8), "%s", r.err);
    cr_assert_eq(strchr(r.err, '\n'), r.err + strlen(r.err) - 1, "one line: %s", r.err);
    cr_assert_str_eq(r.out, "", "nothing on stdout: %s", r.out);
    cr_assert_eq(svc_snap_same(C.dd, &s), 0, "'%s' changed the log: %s", r.err, svc_why());
    svc_snap_free(&s);
    free(argv[0]);
    run_free(&r);
}

static json_t *json_of(char *out)
{
    json_error_t e;
    json_t *j = json_loads(out, 0, &e);
    cr_assert(j, "not JSON (%s): %s", e.text, out);
    free(out);
    return j;
}

static json_int_t jint(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    cr_assert(json_is_integer(v), "'%s' is not an integer", k);
    return json_integer_value(v);
}

static int enc_of(const char *db)
{
    json_t *j = json_of(OK("--json", "info", "db", db));
    json_t *v = json_object_get(j, "data_internode_encryption");
    cr_assert(json_is_boolean(v));
    int on = json_is_true(v);
    json_decref(j);
    return on;
}

static uint64_t last_seq(void)
{
    uint64_t s;
    cr_assert_eq(svc_last_seq(C.dd, &s), 0, "%s", svc_why());
    return s;
}

/* --- databases ------------------------------------------------------------------------------- */

Test(inectl_db, create_info_tune_delete_a_database)
{
    char *o;
    start_policy();
    uint64_t s0 = last_seq();
    o = OK("create", "db", "name", "orders", "port", "12000", "shard_node", "1", "shard_address", "127.0.0.1:6379");
    cr_assert(strstr(o, "db:1 orders created"), "%s", o);
    free(o);
    cr_assert_eq(last_seq(), s0 + 1);

    json_t *j = json_of(OK("--json", "create", "db", "name", "carts", "port", "12001", "shard_node", "2", "shard_address", "127.0.0.2:6379"));
    cr_assert_eq(jint(j, "uid"), 2);
    cr_assert_eq((uint64_t)jint(j, "seq"), s0 + 2);
    json_decref(j);

    /* info by name and by uid, text and JSON. */
    o = OK("info", "db", "orders");
    cr_assert(strstr(o, "db:1 orders") && strstr(o, "port:                      12000") && strstr(o, "node 1 at 127.0.0.1:6379") &&
              strstr(o, "data_internode_encryption: disabled"), "%s", o);
    free(o);
    j = json_of(OK("--json", "info", "db", "2"));
    cr_assert_str_eq(json_string_value(json_object_get(j, "name")), "carts");
    cr_assert_eq(jint(j, "port"), 12001);
    cr_assert_eq(jint(j, "shard_node"), 2);
    cr_assert_str_eq(json_string_value(json_object_get(j, "shard_address")), "127.0.0.2:6379");
    json_decref(j);

    /* tune db: one event when it changes, none when it is already so. */
    o = OK("tune", "db", "orders", "data_internode_encryption", "enabled");
    cr_assert(strstr(o, "db:1 orders: data_internode_encryption enabled"), "%s", o);
    free(o);
    cr_assert_eq(enc_of("orders"), 1);
    cr_assert_eq(enc_of("carts"), 0, "only the named database changed");
    uint64_t s = last_seq();
    free(OK("tune", "db", "1", "data_internode_encryption", "enabled"));
    cr_assert_eq(last_seq(), s, "enabling an enabled database records nothing");
    free(OK("--json", "tune", "db", "1", "data_internode_encryption", "disabled"));
    cr_assert_eq(enc_of("orders"), 0);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED), 2);

    /* status lists both, with their encryption state. */
    o = OK("status");
    cr_assert(strstr(o, "orders") && strstr(o, "carts") && strstr(o, "DATA_INTERNODE_ENCRYPTION") && strstr(o, "127.0.0.2"), "%s", o);
    free(o);
    j = json_of(OK("--json", "status"));
    cr_assert(json_is_object(j));
    json_decref(j);

    /* delete by name; afterwards the name is unknown and free again, the uid is not reused. */
    o = OK("delete", "db", "orders");
    cr_assert(strstr(o, "db:1 orders deleted"), "%s", o);
    free(o);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_DATABASE_DELETED), 1);
    REFUSED(1, "no database 'orders'", "info", "db", "orders");
    REFUSED(1, "no database '1'", "delete", "db", "1");
    j = json_of(OK("--json", "create", "db", "name", "orders", "port", "12000", "shard_node", "1", "shard_address", "127.0.0.1:6379"));
    cr_assert_eq(jint(j, "uid"), 3);
    json_decref(j);
    stop_clean();
}

Test(inectl_db, the_cluster_default_applies_to_databases_created_after_it)
{
    start_policy();
    char *o = OK("info", "cluster");
    cr_assert(strstr(o, "data_internode_encryption: disabled"), "%s", o);
    free(o);
    free(OK("create", "db", "name", "a", "port", "12000", "shard_node", "1", "shard_address", "127.0.0.1:6379"));
    cr_assert_eq(enc_of("a"), 0, "default off: A off");

    o = OK("tune", "cluster", "data_internode_encryption", "enabled");
    cr_assert(strstr(o, "enabled"), "%s", o);
    free(o);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_CLUSTER_POLICY_CHANGED), 1);
    o = OK("info", "cluster");
    cr_assert(strstr(o, "data_internode_encryption: enabled"), "%s", o);
    free(o);
    free(OK("create", "db", "name", "b", "port", "12001", "shard_node", "1", "shard_address", "127.0.0.1:6380"));
    cr_assert_eq(enc_of("b"), 1, "default on: B on");
    cr_assert_eq(enc_of("a"), 0, "A keeps what it had");
    free(OK("create", "db", "name", "c", "port", "12002", "shard_node", "1", "shard_address", "127.0.0.1:6381",
            "data_internode_encryption", "disabled"));
    cr_assert_eq(enc_of("c"), 0, "explicit beats the default");

    free(OK("tune", "cluster", "data_internode_encryption", "disabled"));
    cr_assert_eq(enc_of("b"), 1, "B keeps what it had");
    free(OK("create", "db", "name", "d", "port", "12003", "shard_node", "1", "shard_address", "127.0.0.1:6382",
            "data_internode_encryption", "enabled"));
    cr_assert_eq(enc_of("d"), 1);
    json_t *j = json_of(OK("--json", "info", "cluster"));
    cr_assert(json_is_object(j));
    json_decref(j);
    stop_clean();
}

Test(inectl_db, refusals_exit_non_zero_with_one_line_and_change_nothing)
{
    start_policy();
    free(OK("create", "db", "name", "a", "port", "12000", "shard_node", "1", "shard_address", "127.0.0.1:6379"));
    /* Refused by ine-policy: exit 1, its sentence and its code. */
    REFUSED(1, "database name 'a' is taken by database 1 [CONFLICT]", "create", "db", "name", "a", "port", "12001", "shard_node", "1",
            "shard_address", "127.0.0.1:6379");
    REFUSED(1, "port 12000 is used by database 1 [CONFLICT]", "create", "db", "name", "b", "port", "12000", "shard_node", "1",
            "shard_address", "127.0.0.1:6379");
    REFUSED(1, "node 9 is not a node of this cluster [NOT_FOUND]", "create", "db", "name", "b", "port", "12001", "shard_node", "9",
            "shard_address", "127.0.0.1:6379");
    REFUSED(1, "database name 'bad!' is invalid", "create", "db", "name", "bad!", "port", "12001", "shard_node", "1", "shard_address",
            "127.0.0.1:6379");
    REFUSED(1, "shard address 'nowhere' is invalid", "create", "db", "name", "b", "port", "12001", "shard_node", "1", "shard_address",
            "nowhere");
    REFUSED(1, "database uid 1 is taken", "create", "db", "uid", "1", "name", "b", "port", "12001", "shard_node", "1", "shard_address",
            "127.0.0.1:6379");
    /* Refused by inectl itself: unknown databases (1), usage errors (2). */
    REFUSED(1, "no database 'zzz'", "tune", "db", "zzz", "data_internode_encryption", "enabled");
    REFUSED(1, "no database '42'", "delete", "db", "42");
    REFUSED(1, "no database 'zzz'", "info", "db", "zzz");
    REFUSED(2, "must be 'enabled' or 'disabled', not 'on'", "tune", "db", "a", "data_internode_encryption", "on");
    REFUSED(2, "must be 'enabled' or 'disabled', not 'yes'", "tune", "cluster", "data_internode_encryption", "yes");
    REFUSED(2, "usage: tune db", "tune", "db", "a", "colour", "red");
    REFUSED(2, "usage: tune db", "tune", "cluster");
    REFUSED(2, "create db needs name, port, shard_node and shard_address", "create", "db", "name", "b");
    REFUSED(2, "unknown keyword 'colour'", "create", "db", "name", "b", "colour", "red");
    REFUSED(2, "'port' needs a value", "create", "db", "name", "b", "port");
    REFUSED(2, "port must be a number from 1 to 65535, not '0'", "create", "db", "name", "b", "port", "0", "shard_node", "1",
            "shard_address", "127.0.0.1:1");
    REFUSED(2, "port must be a number from 1 to 65535, not '70000'", "create", "db", "name", "b", "port", "70000", "shard_node", "1",
            "shard_address", "127.0.0.1:1");
    REFUSED(2, "usage: delete db", "delete", "db");
    REFUSED(2, "usage: info cluster | info db", "info", "nodes");
    REFUSED(2, "usage: status", "status", "everything");
    REFUSED(2, "unknown command 'frobnicate'", "frobnicate");
    REFUSED(2, "--request-id takes 1-200 characters", "--request-id", "", "tune", "cluster", "data_internode_encryption", "enabled");
    stop_clean();
}

Test(inectl_db, the_same_request_id_twice_writes_one_event)
{
    start_policy();
    uint64_t s0 = last_seq();
    json_t *j = json_of(OK("--json", "--request-id", "ticket-4711", "create", "db", "name", "a", "port", "12000", "shard_node", "1",
                           "shard_address", "127.0.0.1:6379"));
    cr_assert_eq(jint(j, "uid"), 1);
    cr_assert_eq((uint64_t)jint(j, "seq"), s0 + 1);
    json_decref(j);
    svc_snap s;
    cr_assert_eq(svc_snap_take(C.dd, &s), 0);
    j = json_of(OK("--json", "--request-id", "ticket-4711", "create", "db", "name", "a", "port", "12000", "shard_node", "1",
                   "shard_address", "127.0.0.1:6379"));
    cr_assert_eq(jint(j, "uid"), 1, "the retry reports the database the first attempt created");
    cr_assert_eq((uint64_t)jint(j, "seq"), s0 + 1, "and the seq it wrote");
    json_decref(j);
    cr_assert_eq(svc_snap_same(C.dd, &s), 0, "the retry wrote: %s", svc_why());
    svc_snap_free(&s);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_DATABASE_CREATED), 1);
    /* Without the same id, the same command is a new request (and refused). */
    REFUSED(1, "is taken", "create", "db", "name", "a", "port", "12000", "shard_node", "1", "shard_address", "127.0.0.1:6379");

    /* tune with a request id: retried after the state moved on, it does not act again. */
    free(OK("--request-id", "t-1", "tune", "db", "a", "data_internode_encryption", "enabled"));
    free(OK("--request-id", "t-2", "tune", "db", "a", "data_internode_encryption", "disabled"));
    free(OK("--request-id", "t-1", "tune", "db", "a", "data_internode_encryption", "enabled"));
    cr_assert_eq(enc_of("a"), 0, "the retry of t-1 did not enable it again");
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED), 2);
    stop_clean();
}

/* --- services not running ---------------------------------------------------------------------- */

static void not_running(const char *service)
{
    char why[64];
    snprintf(why, sizeof why, "ine-%s is not running", service);
    if (!strcmp(service, "policy")) {
        REFUSED(1, why, "create", "db", "name", "a", "port", "12000", "shard_node", "1", "shard_address", "127.0.0.1:6379");
        REFUSED(1, why, "tune", "cluster", "data_internode_encryption", "enabled");
    } else {
        REFUSED(1, why, "cluster", "certificate", "rotate");
        REFUSED(1, why, "status", "certificates");
    }
}

Test(inectl_db, a_service_that_is_not_running_is_named_at_once)
{
    /* Never started. */
    not_running("policy");
    not_running("ca");
    /* Reads come from the log and need no service. */
    free(OK("status"));
    free(OK("info", "cluster"));

    /* Stopped cleanly. */
    start_policy();
    free(OK("create", "db", "name", "a", "port", "12000", "shard_node", "1", "shard_address", "127.0.0.1:6379"));
    cr_assert_eq(svc_stop_policy(&C), 0, "%s", svc_tail(C.policy_log));
    not_running("policy");
    REFUSED(1, "ine-policy is not running", "tune", "db", "a", "data_internode_encryption", "enabled");
    REFUSED(1, "ine-policy is not running", "delete", "db", "a");
    free(OK("info", "db", "a"));

    /* Killed: its socket file stays behind, and inectl still says so at once (the timeout is
     * long on purpose: a wait for it would show as a failure of the test's own timeout). */
    start_policy();
    int st;
    kill(C.policy, SIGKILL);
    waitpid(C.policy, &st, 0);
    C.policy = 0;
    char *sock = tu_path(C.dd, "run/policy.sock");
    cr_assert_eq(access(sock, F_OK), 0, "the killed service left its socket");
    free(sock);
    not_running("policy");

    /* And it comes back. */
    start_policy();
    free(OK("tune", "db", "a", "data_internode_encryption", "enabled"));
    cr_assert_eq(enc_of("a"), 1);
    stop_clean();
}

/* --- certificates ----------------------------------------------------------------------------- */

static char *write_tmp(const char *name, const char *text)
{
    char *p = tu_path(C.dir, name);
    cr_assert_eq(tu_write_file(p, text, strlen(text)), 0);
    return p;
}

Test(inectl_db, certificate_commands_never_print_a_key)
{
    svc_chain ch, old;
    cr_assert_eq(svc_start_ca(&C, 180000), 0, "%s", svc_why());
    cr_assert_eq(svc_chain_make(&ch, -3600, 60L * 86400), 0, "%s", svc_why());
    cr_assert_eq(svc_chain_make(&old, -90L * 86400, -86400), 0, "%s", svc_why());
    char *cert = write_tmp("leaf-chain.pem", ch.cert_pem), *key = write_tmp("leaf.key", ch.key_pem);
    char *ocert = write_tmp("old-chain.pem", old.cert_pem), *okey = write_tmp("old.key", old.key_pem);

    /* rotate, text and JSON. */
    char *o = OK("cluster", "certificate", "rotate", "ccs_internode_encryption");
    cr_assert(strstr(o, "rotated ccs_internode_encryption certificates"), "%s", o);
    free(o);
    json_t *j = json_of(OK("--json", "cluster", "certificate", "rotate"));
    cr_assert(json_is_string(json_object_get(j, "rotation_id")));
    json_decref(j);
    cr_assert_eq(svc_count_events(C.dd, INE__V1__EVENT__BODY_CERTIFICATES_ROTATED), 2);

    /* An expired certificate: refused with its code, nothing written. */
    REFUSED(1, "[CERT_EXPIRED]", "cluster", "certificate", "set", "internal", "cpine_certificate_file", ocert, "cpine_key_file", okey);
    REFUSED(2, "cpine_certificate_file and cpine_key_file go together", "cluster", "certificate", "set", "internal",
            "cpine_certificate_file", cert);
    REFUSED(2, "unknown certificate 'proxy'", "cluster", "certificate", "rotate", "proxy");

    /* The customer certificate on the control plane, then on both. */
    o = OK("cluster", "certificate", "set", "internal", "cpine_certificate_file", cert, "cpine_key_file", key);
    cr_assert(strstr(o, "customer certificate set for the control plane"), "%s", o);
    free(o);
    o = OK("cluster", "certificate", "set", "internal", "cpine_certificate_file", cert, "cpine_key_file", key, "dpine_certificate_file",
           cert, "dpine_key_file", key);
    cr_assert(strstr(o, "control and data planes"), "%s", o);
    free(o);
    j = json_of(OK("--json", "status", "certificates"));
    json_t *c;
    size_t i, customer = 0;
    json_array_foreach(json_object_get(j, "certificates"), i, c) {
        cr_assert_str_eq(json_string_value(json_object_get(c, "source")), "customer");
        cr_assert_str_eq(json_string_value(json_object_get(c, "fingerprint_sha256")), ch.leaf_fingerprint);
        customer++;
    }
    cr_assert_eq(customer, 4, "both planes of both nodes");
    json_decref(j);
    free(OK("status", "certificates"));
    free(OK("status"));
    free(OK("--json", "status"));
    free(OK("info", "cluster"));
    free(OK("--json", "info", "cluster"));

    stop_clean();
    char *logs[2] = {tu_read_file(C.ca_log, NULL), tu_read_file(C.policy_log, NULL)};
    for (int k = 0; k < 2; k++) see(logs[k]), free(logs[k]);
    const char *leak = svc_key_leak(&ch, seen, seen_len);
    cr_assert_null(leak, "found %s in the outputs", leak);
    cr_assert_null(svc_key_leak(&old, seen, seen_len));
    cr_assert(strstr(seen, ch.leaf_fingerprint), "the scan covered the certificate views");
    free(cert);
    free(key);
    free(ocert);
    free(okey);
    svc_chain_free(&ch);
    svc_chain_free(&old);
}
