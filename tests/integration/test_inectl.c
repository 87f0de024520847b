/* test_inectl.c — `inectl cluster create` through the real binary: the events it writes, the
 * seal key's mode, refusal of an existing cluster (log byte-for-byte unchanged), refusal of
 * bad input (nothing created), passwords stored only hashed, and time moved for the whole
 * process with libfaketime. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "err.h"
#include "evlog.h"
#include "passwd.h"
#include "testutil.h"

static char *dir;
static char *dd; /* the data dir: does not exist before create */

static void setup(void)
{
    dir = tu_tmpdir();
    cr_assert(dir);
    dd = tu_path(dir, "node1");
}
static void teardown(void) { tu_rmrf(dir); free(dir); free(dd); }
TestSuite(inectl, .init = setup, .fini = teardown, .timeout = 120);

static int inectl_env(char *const env[], const char *in, char **out, char **err, ...)
{
    char *argv[32];
    int i = 0;
    va_list ap;
    argv[i++] = (char *)tu_bin("inectl");
    argv[i++] = "--data-dir";
    argv[i++] = dd;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) && i < 31;) argv[i++] = a;
    va_end(ap);
    argv[i] = NULL;
    return tu_run_env(argv, env, in, out, err);
}
#define inectl(out, err, ...) inectl_env(NULL, NULL, out, err, __VA_ARGS__)

static evlog_t *open_ro(void)
{
    char *p = tu_path(dd, "log");
    evlog_t *log = NULL;
    evlog_opts o = {.read_only = 1};
    cr_assert_eq(evlog_open(p, &o, &log), INE_OK, "%s", ine_err_msg());
    free(p);
    return log;
}

Test(inectl, cluster_create_writes_cluster_and_nodes)
{
    char *out, *err;
    cr_assert_eq(inectl(&out, &err, "cluster", "create", "name", "prod", "nodes", "127.0.0.1,127.0.0.2,node3.example.com",
                        "username", "admin@example.com", "password", "s3cret-Pass", NULL), 0, "%s", err);
    cr_assert(strstr(out, "cluster 'prod' created"), "%s", out);
    cr_assert_null(strstr(out, "s3cret-Pass"));
    cr_assert_null(strstr(err, "s3cret-Pass"));
    char out_fpr[65] = "", out_token[71] = "", *f = strstr(out, "ca fingerprint  "), *t = strstr(out, "join token      ");
    cr_assert(f && t, "%s", out);
    cr_assert_eq(sscanf(f, "ca fingerprint  %64[0-9a-f]", out_fpr), 1, "%s", out);
    cr_assert_eq(sscanf(t, "join token      %70s", out_token), 1, "%s", out);
    cr_assert_eq(strlen(out_fpr), 64);
    cr_assert_eq(strncmp(out_token, "inejt_", 6), 0, "%s", out);
    cr_assert(strstr(t, "(single use, expires "), "%s", out);
    free(out); free(err);

    struct stat st;
    char *key = tu_path(dd, "seal.key");
    cr_assert_eq(stat(key, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(st.st_size, 32);
    free(key);

    evlog_t *log = open_ro();
    uint64_t last;
    cr_assert_eq(evlog_last_seq(log, &last), INE_OK);
    cr_assert_eq(last, 6, "cluster, 3 nodes, the CA, a join token");
    evlog_event *ev;
    cr_assert_eq(evlog_read(log, 1, &ev), INE_OK);
    cr_assert_eq(ev->body_case, INE__V1__EVENT__BODY_CLUSTER_CREATED);
    cr_assert_str_eq(ev->cluster_created->name, "prod");
    cr_assert_eq(strlen(ev->cluster_created->cluster_uid), 32);
    cr_assert_str_eq(ev->cluster_created->admin_username, "admin@example.com");
    cr_assert_str_eq(ev->producer, "inectl");
    cr_assert_eq(ev->cluster_created->rotation_period_seconds, 30 * 86400);
    cr_assert_eq(ev->cluster_created->cert_validity_seconds, 90 * 86400);
    cr_assert_eq(ev->cluster_created->default_data_internode_encryption, 0);
    cr_assert_eq(passwd_verify("s3cret-Pass", ev->cluster_created->admin_password_hash), INE_OK);
    cr_assert_eq(passwd_verify("s3cret-pass", ev->cluster_created->admin_password_hash), INE_EAUTH);
    cr_assert(ev->time_us > ine_clock_now_us() - 60 * INE_USEC_PER_SEC);
    evlog_event_free(ev);
    const char *addrs[] = {"127.0.0.1", "127.0.0.2", "node3.example.com"};
    for (uint64_t s = 2; s <= 4; s++) {
        cr_assert_eq(evlog_read(log, s, &ev), INE_OK);
        cr_assert_eq(ev->body_case, INE__V1__EVENT__BODY_NODE_ADDED);
        cr_assert_eq(ev->node_added->node_uid, s - 1);
        cr_assert_str_eq(ev->node_added->address, addrs[s - 2]);
        evlog_event_free(ev);
    }
    /* The CA is made with the cluster, its key sealed; the token is there only as a hash. */
    cr_assert_eq(evlog_read(log, 5, &ev), INE_OK);
    cr_assert_eq(ev->body_case, INE__V1__EVENT__BODY_CA_CREATED);
    cr_assert_gt(ev->ca_created->sealed_key.len, 0);
    cr_assert(strstr(out_fpr, ev->ca_created->ca->fingerprint_sha256), "printed fingerprint %s", out_fpr);
    evlog_event_free(ev);
    cr_assert_eq(evlog_read(log, 6, &ev), INE_OK);
    cr_assert_eq(ev->body_case, INE__V1__EVENT__BODY_JOIN_TOKEN_ISSUED);
    cr_assert_eq(ev->join_token_issued->token_sha256.len, 32);
    cr_assert_eq(strlen(ev->join_token_issued->token_id), 16);
    int64_t ttl = ev->join_token_issued->expires_at - ine_clock_now();
    cr_assert(ttl > 86400 - 120 && ttl <= 86400, "24 h lifetime, got %lld s", (long long)ttl);
    evlog_event_free(ev);
    evlog_close(log);

    /* The password itself is nowhere in the log file, nor the token. */
    char *data = tu_path(dd, "log/data.mdb");
    size_t flen;
    char *file = tu_read_file(data, &flen);
    cr_assert_not(tu_contains(file, flen, "s3cret-Pass", 11));
    cr_assert_not(tu_contains(file, flen, out_token, strlen(out_token)), "the join token is not in the log");
    cr_assert_not(tu_contains(file, flen, out_token + 6, 64), "the join token is not in the log");
    free(file);
    free(data);
}

Test(inectl, refuses_an_existing_cluster_and_changes_nothing)
{
    char *out, *err;
    cr_assert_eq(inectl(&out, &err, "cluster", "create", "name", "a", "nodes", "127.0.0.1", NULL), 0, "%s", err);
    free(out); free(err);
    char *data = tu_path(dd, "log/data.mdb"), *key = tu_path(dd, "seal.key");
    size_t l1, l2, k1, k2;
    char *before = tu_read_file(data, &l1), *kb = tu_read_file(key, &k1);
    cr_assert_eq(inectl(&out, &err, "cluster", "create", "name", "b", "nodes", "127.0.0.2", NULL), 1);
    cr_assert(strstr(err, "already holds a cluster"), "%s", err);
    free(out); free(err);
    char *after = tu_read_file(data, &l2), *ka = tu_read_file(key, &k2);
    cr_assert_eq(l1, l2);
    cr_assert_eq(memcmp(before, after, l1), 0, "the log is byte-for-byte unchanged");
    cr_assert_eq(k1, k2);
    cr_assert_eq(memcmp(kb, ka, k1), 0, "the seal key is unchanged");
    free(before); free(after); free(kb); free(ka); free(data); free(key);
}

static void refused(const char *why, ...)
{
    char *argv[32], *out, *err;
    int i = 0;
    va_list ap;
    argv[i++] = (char *)tu_bin("inectl");
    argv[i++] = "--data-dir";
    argv[i++] = dd;
    va_start(ap, why);
    for (char *a; (a = va_arg(ap, char *)) && i < 31;) argv[i++] = a;
    va_end(ap);
    argv[i] = NULL;
    int rc = tu_run(argv, NULL, &out, &err);
    cr_assert_neq(rc, 0, "accepted: %s", out);
    cr_assert(strstr(err, why), "expected '%s' in: %s", why, err);
    cr_assert_eq(strchr(err, '\n'), err + strlen(err) - 1, "one line: %s", err);
    char *key = tu_path(dd, "seal.key");
    cr_assert_neq(access(key, F_OK), 0, "nothing was created for: %s", err);
    free(key);
    free(out);
    free(err);
}

Test(inectl, bad_input_is_refused_with_a_clear_line_and_creates_nothing)
{
    refused("missing 'name", "cluster", "create", "nodes", "127.0.0.1", NULL);
    refused("missing 'nodes", "cluster", "create", "name", "x", NULL);
    refused("name 'bad name!' is invalid", "cluster", "create", "name", "bad name!", "nodes", "127.0.0.1", NULL);
    refused("'300.1.2.3' is not an IP address or host name", "cluster", "create", "name", "x", "nodes", "300.1.2.3", NULL);
    refused("'a..b' is not", "cluster", "create", "name", "x", "nodes", "a..b", NULL);
    refused("'127.0.0.1' is listed twice", "cluster", "create", "name", "x", "nodes", "127.0.0.1,127.0.0.1", NULL);
    refused("lists no address", "cluster", "create", "name", "x", "nodes", ",", NULL);
    refused("unknown keyword 'colour'", "cluster", "create", "name", "x", "nodes", "::1", "colour", "red", NULL);
    refused("username 'a b' is invalid", "cluster", "create", "name", "x", "nodes", "::1", "username", "a b", "password", "p", NULL);
    refused("'username' and 'password' go together", "cluster", "create", "name", "x", "nodes", "::1", "username", "u", NULL);
    refused("must be 'enabled' or 'disabled'", "cluster", "create", "name", "x", "nodes", "::1",
            "data_internode_encryption", "maybe", NULL);
    refused("'nodes' needs a value", "cluster", "create", "name", "x", "nodes", NULL);
    refused("ca_key_bits (or $INE_CA_KEY_BITS) takes 2048..16384", "cluster", "create", "name", "x", "nodes", "::1", "ca_key_bits",
            "1024", NULL);
    refused("no event log at", "node", "token", "create", NULL);
    refused("ttl takes 1..", "node", "token", "create", "ttl", "0", NULL);
    refused("ca_fingerprint must be 64 hex digits", "node", "join", "master", "127.0.0.1", "token",
            "inejt_0000000000000000000000000000000000000000000000000000000000000000", "ca_fingerprint", "abc", "address",
            "127.0.0.2", NULL);
    refused("the join token is malformed", "node", "join", "master", "127.0.0.1", "token", "secret-token", "ca_fingerprint",
            "0000000000000000000000000000000000000000000000000000000000000000", "address", "127.0.0.2", NULL);
    refused("unknown command", "cluster", "explode", NULL);
}

Test(inectl, cluster_create_json_has_the_fingerprint_and_token_and_token_create_adds_one)
{
    char *out, *err;
    cr_assert_eq(inectl(&out, &err, "--json", "cluster", "create", "name", "j", "nodes", "127.0.0.1", NULL), 0, "%s", err);
    json_t *o = json_loads(out, 0, NULL);
    cr_assert_not_null(o, "%s", out);
    const char *fpr = json_string_value(json_object_get(o, "ca_fingerprint_sha256"));
    const char *tok = json_string_value(json_object_get(o, "join_token"));
    cr_assert(fpr && strlen(fpr) == 64, "%s", out);
    cr_assert(tok && strlen(tok) == 70 && !strncmp(tok, "inejt_", 6), "%s", out);
    cr_assert_not_null(json_string_value(json_object_get(o, "join_token_expires")), "%s", out);
    char fp[65];
    snprintf(fp, sizeof fp, "%s", fpr);
    json_decref(o);
    free(out); free(err);
    /* Another token: a new line in the log, the same fingerprint, a different token. */
    cr_assert_eq(inectl(&out, &err, "node", "token", "create", "ttl", "600", NULL), 0, "%s", err);
    cr_assert(strstr(out, "join token inejt_") && strstr(out, "(single use, expires "), "%s", out);
    cr_assert(strstr(out, fp), "%s", out);
    free(out); free(err);
    evlog_t *log = open_ro();
    uint64_t last;
    evlog_event *ev;
    cr_assert_eq(evlog_last_seq(log, &last), INE_OK);
    cr_assert_eq(evlog_read(log, last, &ev), INE_OK);
    cr_assert_eq(ev->body_case, INE__V1__EVENT__BODY_JOIN_TOKEN_ISSUED);
    int64_t ttl = ev->join_token_issued->expires_at - ine_clock_now();
    cr_assert(ttl > 500 && ttl <= 600, "%lld", (long long)ttl);
    evlog_event_free(ev);
    evlog_close(log);
}

Test(inectl, password_from_stdin_and_encryption_default)
{
    char *out, *err;
    cr_assert_eq(inectl_env(NULL, "from-stdin-pw\n", &out, &err, "cluster", "create", "name", "s", "nodes", "::1",
                            "username", "ops", "password", "-", "data_internode_encryption", "enabled", NULL), 0, "%s", err);
    free(out); free(err);
    evlog_t *log = open_ro();
    evlog_event *ev;
    cr_assert_eq(evlog_read(log, 1, &ev), INE_OK);
    cr_assert_eq(passwd_verify("from-stdin-pw", ev->cluster_created->admin_password_hash), INE_OK);
    cr_assert_eq(ev->cluster_created->default_data_internode_encryption, 1);
    evlog_event_free(ev);
    evlog_close(log);
}

/* How end-to-end tests move time for a whole process (docs/ARCHITECTURE.md): libfaketime
 * shifts what clock_gettime returns, so the event times (and OpenSSL's validity checks)
 * see the moved clock. */
Test(inectl, faketime_moves_the_clock_of_a_whole_process)
{
    char *out, *err;
    const char *pre = tu_faketime_preload(0);
    cr_assert_not_null(pre, "libfaketime is installed by scripts/install-deps.sh");
    char *env[] = {"ASAN_OPTIONS=verify_asan_link_order=0", (char *)pre, "FAKETIME=+30d", NULL};
    char *argv[] = {(char *)tu_bin("inectl"), "--data-dir", dd, "cluster", "create", "name", "t", "nodes", "127.0.0.1", NULL};
    cr_assert_eq(tu_run_env(argv, env, NULL, &out, &err), 0, "%s", err);
    free(out); free(err);
    evlog_t *log = open_ro();
    evlog_event *ev;
    cr_assert_eq(evlog_read(log, 1, &ev), INE_OK);
    int64_t moved = ev->time_us - ine_clock_now_us();
    cr_assert(moved > 29 * 86400 * INE_USEC_PER_SEC && moved < 31 * 86400 * INE_USEC_PER_SEC,
              "event time is %lld s from now", (long long)(moved / INE_USEC_PER_SEC));
    evlog_event_free(ev);
    evlog_close(log);
}
