/* test_inelog.c — the real ine-log binary on real logs: golden output on a deterministic
 * fixture, verify's exit status and the seq it names, follow while another process appends,
 * reads during appends, bad arguments, and a scan of every output and of the raw LMDB file
 * for private-key bytes. Set INE_UPDATE_GOLDEN=1 to rewrite tests/golden/. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "err.h"
#include "evlog.h"
#include "follow.h"
#include "seal.h"
#include "testutil.h"

static char *dir;

static void setup(void) { dir = tu_tmpdir(); cr_assert(dir); }
static void teardown(void) { tu_rmrf(dir); free(dir); }
TestSuite(inelog, .init = setup, .fini = teardown, .timeout = 120);

#define T0 1795000000000000LL /* 2026-11-18T11:06:40Z: fixed, so the output is stable */

static evlog_event *ev_new(int body_case, void *body, int64_t t)
{
    evlog_event *ev = calloc(1, sizeof *ev);
    ine__v1__event__init(ev);
    ev->time_us = t;
    ev->producer = strdup("fixture");
    ev->actor = strdup("tester");
    ev->body_case = body_case;
    ev->cluster_created = body; /* a union: any member will do */
    return ev;
}

/* A fingerprint of its own per certificate, derived from the serial. */
static char *fp_of(const char *serial)
{
    static char fp[65];
    for (int i = 0; i < 64; i++) fp[i] = "0123456789abcdef"[(serial[i % strlen(serial)] + i) % 16];
    fp[64] = 0;
    return fp;
}

/* Serial "01" is the fixture's CA; every other certificate chains to it. */
static Ine__V1__CertInfo *certinfo(const char *serial, int64_t nb, int64_t na)
{
    char fp[65];
    snprintf(fp, sizeof fp, "%s", fp_of(serial));
    Ine__V1__CertInfo *c = calloc(1, sizeof *c);
    ine__v1__cert_info__init(c);
    c->cert_pem = strdup("-----BEGIN CERTIFICATE-----\nMIIBfixture\n-----END CERTIFICATE-----\n");
    c->serial_hex = strdup(serial);
    c->fingerprint_sha256 = strdup(fp);
    c->root_fingerprint_sha256 = strdup(fp_of("01"));
    c->not_before = nb;
    c->not_after = na;
    c->subject = strdup("CN=fixture");
    c->issuer = strdup("CN=fixture-ca");
    return c;
}

static ProtobufCBinaryData fake_sealed(size_t n)
{
    ProtobufCBinaryData b = {n, malloc(n)};
    memset(b.data, 0xA5, n);
    return b;
}

/* The fixture: one of (nearly) every event type, with fixed times and contents. */
static void build_fixture(const char *logdir)
{
    evlog_t *log;
    int64_t t = T0, s = T0 / 1000000;
    cr_assert_eq(evlog_open(logdir, NULL, &log), INE_OK);
    evlog_event *evs[32];
    size_t n = 0;

    Ine__V1__ClusterCreated *cc = calloc(1, sizeof *cc);
    ine__v1__cluster_created__init(cc);
    cc->cluster_uid = strdup("00112233445566778899aabbccddeeff");
    cc->name = strdup("fixture");
    cc->admin_username = strdup("admin");
    cc->admin_password_hash = strdup("pbkdf2-sha256$100000$c2FsdA==$aGFzaA==");
    cc->rotation_period_seconds = 30 * 86400;
    cc->cert_validity_seconds = 90 * 86400;
    evs[n++] = ev_new(INE__V1__EVENT__BODY_CLUSTER_CREATED, cc, t += 1000000);
    for (uint32_t i = 1; i <= 3; i++) {
        evlog_event *e = tu_ev_node_added(i, i == 1 ? "127.0.0.1" : i == 2 ? "127.0.0.2" : "127.0.0.3");
        e->time_us = (t += 1000000);
        evs[n++] = e;
    }
    Ine__V1__CaCreated *ca = calloc(1, sizeof *ca);
    ine__v1__ca_created__init(ca);
    ca->ca = certinfo("01", s, s + 10 * 365 * 86400);
    ca->sealed_key = fake_sealed(1217);
    ca->reason = strdup("initial");
    evs[n++] = ev_new(INE__V1__EVENT__BODY_CA_CREATED, ca, t += 1000000);
    for (uint32_t i = 1; i <= 3; i++) {
        for (int p = 1; p <= 2; p++) {
            Ine__V1__CertificateIssued *ci = calloc(1, sizeof *ci);
            char serial[8];
            ine__v1__certificate_issued__init(ci);
            snprintf(serial, sizeof serial, "%u%d", i, p);
            ci->node_uid = i;
            ci->plane = p;
            ci->source = INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED;
            ci->reason = INE__V1__ISSUE_REASON__ISSUE_REASON_INITIAL;
            ci->cert = certinfo(serial, s - 60, s + 90 * 86400);
            ci->sealed_key = fake_sealed(1219);
            evs[n++] = ev_new(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, ci, t += 1000000);
        }
    }
    evlog_event *db = tu_ev_db_created(1, "cache");
    db->time_us = (t += 1000000);
    evs[n++] = db;
    Ine__V1__DataInternodeEncryptionChanged *dc = calloc(1, sizeof *dc);
    ine__v1__data_internode_encryption_changed__init(dc);
    dc->db_uid = 1;
    dc->enabled = 1;
    evs[n++] = ev_new(INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED, dc, t += 1000000);
    Ine__V1__ClusterPolicyChanged *pc = calloc(1, sizeof *pc);
    ine__v1__cluster_policy_changed__init(pc);
    pc->default_encryption_opt_case = INE__V1__CLUSTER_POLICY_CHANGED__DEFAULT_ENCRYPTION_OPT_DEFAULT_DATA_INTERNODE_ENCRYPTION;
    pc->default_data_internode_encryption = 1;
    evs[n++] = ev_new(INE__V1__EVENT__BODY_CLUSTER_POLICY_CHANGED, pc, t += 1000000);
    Ine__V1__CertificateActivated *act = calloc(1, sizeof *act);
    ine__v1__certificate_activated__init(act);
    act->node_uid = 2;
    act->plane = INE__V1__PLANE__PLANE_DATA;
    act->fingerprint_sha256 = strdup(fp_of("22"));
    act->serial_hex = strdup("22");
    evs[n++] = ev_new(INE__V1__EVENT__BODY_CERTIFICATE_ACTIVATED, act, t += 1000000);
    Ine__V1__AlertRaised *ar = calloc(1, sizeof *ar);
    ine__v1__alert_raised__init(ar);
    ar->alert_id = strdup("node_internal_certs_about_to_expire/2/dp");
    ar->name = strdup("node_internal_certs_about_to_expire");
    ar->severity = INE__V1__ALERT_SEVERITY__ALERT_SEVERITY_WARNING;
    ar->node_uid = 2;
    ar->plane = INE__V1__PLANE__PLANE_DATA;
    ar->description = strdup("data-plane certificate of node 2 expires in 44 days");
    ar->threshold = strdup("45");
    ar->change_value = strdup("44");
    evs[n++] = ev_new(INE__V1__EVENT__BODY_ALERT_RAISED, ar, t += 1000000);
    cr_assert_eq(evlog_append(log, evs, n, NULL, NULL), INE_OK, "%s", ine_err_msg());
    for (size_t i = 0; i < n; i++) tu_event_free(evs[i]);
    cr_assert_eq(tu_append_unknown(log, t += 1000000), n + 1);
    evlog_close(log);
}

static char *fixture(void)
{
    char *logdir = tu_path(dir, "log");
    build_fixture(logdir);
    free(logdir);
    return dir;
}

static int inelog(char **out, char **err, ...)
{
    char *argv[16];
    int i = 0;
    va_list ap;
    argv[i++] = (char *)tu_bin("ine-log");
    argv[i++] = "--data-dir";
    argv[i++] = dir;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) && i < 15;) argv[i++] = a;
    va_end(ap);
    argv[i] = NULL;
    return tu_run(argv, NULL, out, err);
}

static void golden(const char *name, const char *got)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/golden/%s", INE_SOURCE_DIR, name);
    if (getenv("INE_UPDATE_GOLDEN")) {
        cr_assert_eq(tu_write_file(path, got, strlen(got)), 0);
        return;
    }
    char *want = tu_read_file(path, NULL);
    cr_assert_not_null(want, "golden file %s missing (run with INE_UPDATE_GOLDEN=1)", path);
    cr_assert_str_eq(got, want, "output differs from %s", path);
    free(want);
}

Test(inelog, golden_list_show_export_verify_state)
{
    char *out, *err;
    fixture();
    cr_assert_eq(inelog(&out, &err, "list", NULL), 0, "%s", err);
    golden("list.txt", out);
    free(out); free(err);
    cr_assert_eq(inelog(&out, &err, "show", "6", NULL), 0, "%s", err);
    golden("show-6.json", out);
    free(out); free(err);
    cr_assert_eq(inelog(&out, &err, "export", NULL), 0, "%s", err);
    golden("export.jsonl", out);
    free(out); free(err);
    cr_assert_eq(inelog(&out, &err, "verify", NULL), 0, "%s", err);
    golden("verify.txt", out);
    free(out); free(err);
    cr_assert_eq(inelog(&out, &err, "state", "--at", "14", NULL), 0, "%s", err);
    golden("state-14.json", out);
    free(out); free(err);
    /* By time: the state after the 4th event (3 nodes, no CA yet). */
    cr_assert_eq(inelog(&out, &err, "state", "--at", "@1795000004", NULL), 0, "%s", err);
    golden("state-at-time.json", out);
    free(out); free(err);
}

Test(inelog, list_filters_by_type_and_range)
{
    char *out, *err;
    fixture();
    cr_assert_eq(inelog(&out, &err, "list", "--type", "node_added", NULL), 0, "%s", err);
    int lines = 0;
    for (char *p = out; (p = strchr(p, '\n')); p++) lines++;
    cr_assert_eq(lines, 3, "%s", out);
    cr_assert(strstr(out, "127.0.0.3"));
    free(out); free(err);
    cr_assert_eq(inelog(&out, &err, "list", "--from", "15", "--to", "16", NULL), 0, "%s", err);
    cr_assert(strstr(out, "      15  "), "%s", out);
    cr_assert(strstr(out, "      16  "), "%s", out);
    cr_assert_null(strstr(out, "      14  "), "%s", out);
    cr_assert_null(strstr(out, "      17  "), "%s", out);
    free(out); free(err);
}

Test(inelog, unknown_event_type_is_listed_and_skipped_by_state)
{
    char *out, *err;
    fixture();
    cr_assert_eq(inelog(&out, &err, "list", "--from", "17", NULL), 0, "%s", err);
    cr_assert(strstr(out, "unknown"), "%s", out);
    free(out); free(err);
    cr_assert_eq(inelog(&out, &err, "state", NULL), 0, "%s", err);
    cr_assert(strstr(err, "seq=17") && strstr(err, "unknown event type"), "stderr: %s", err);
    cr_assert(strstr(out, "\"applied_seq\": 17"), "%s", out);
    free(out); free(err);
}

Test(inelog, verify_names_the_bad_seq_and_fails)
{
    char *out, *err;
    fixture();
    /* Flip one byte of record 7's stored value on disk, through LMDB itself. */
    char *logdir = tu_path(dir, "log");
    evlog_t *log;
    cr_assert_eq(evlog_open(logdir, NULL, &log), INE_OK);
    uint8_t *raw;
    size_t len;
    cr_assert_eq(evlog_read_raw(log, 7, &raw, &len), INE_OK);
    evlog_close(log);
    size_t flen;
    char *data_path = tu_path(logdir, "data.mdb");
    uint8_t *file = (uint8_t *)tu_read_file(data_path, &flen);
    uint8_t *at = memmem(file, flen, raw, len);
    cr_assert_not_null(at);
    at[len - 1] ^= 0x01;
    cr_assert_eq(tu_write_file(data_path, file, flen), 0);
    free(file); free(raw); free(data_path); free(logdir);

    cr_assert_neq(inelog(&out, &err, "verify", NULL), 0);
    cr_assert(strstr(err, "FAILED at seq 7"), "stderr: %s", err);
    free(out); free(err);
}

Test(inelog, bad_arguments_get_one_clear_line)
{
    char *out, *err;
    fixture();
    cr_assert_eq(inelog(&out, &err, "frobnicate", NULL), 2);
    cr_assert(strstr(err, "unknown command 'frobnicate'"), "%s", err);
    free(out); free(err);
    cr_assert_eq(inelog(&out, &err, "show", "x", NULL), 2);
    free(out); free(err);
    cr_assert_eq(inelog(&out, &err, "show", "999", NULL), 1);
    cr_assert(strstr(err, "no record 999"), "%s", err);
    free(out); free(err);
    cr_assert_eq(inelog(&out, &err, "list", "--type", "bogus", NULL), 2);
    cr_assert(strstr(err, "unknown event type 'bogus'"), "%s", err);
    free(out); free(err);
    cr_assert_eq(inelog(&out, &err, "state", "--at", "yesterday", NULL), 2);
    cr_assert(strstr(err, "--at"), "%s", err);
    free(out); free(err);
    char *argv[] = {(char *)tu_bin("ine-log"), "--data-dir", "/nonexistent/ine", "list", NULL};
    cr_assert_eq(tu_run(argv, NULL, &out, &err), 1);
    cr_assert(strstr(err, "cannot open the event log") && strstr(err, "/nonexistent/ine"), "%s", err);
    free(out); free(err);
    char *help[] = {(char *)tu_bin("ine-log"), "--help", NULL};
    cr_assert_eq(tu_run(help, NULL, &out, &err), 0);
    cr_assert(strstr(out, "usage: ine-log"));
    free(out); free(err);
}

/* Start `ine-log follow` with its stdout on a pipe; returns the pid. */
static pid_t spawn_follow(int *rfd)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        execl(tu_bin("ine-log"), "ine-log", "--data-dir", dir, "follow", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    *rfd = p[0];
    return pid;
}

static char *read_until(int fd, const char *needle, int timeout_ms)
{
    size_t cap = 65536, len = 0;
    char *buf = calloc(1, cap);
    for (int waited = 0; waited < timeout_ms && !strstr(buf, needle);) {
        fd_set rs;
        struct timeval tv = {0, 100000};
        FD_ZERO(&rs);
        FD_SET(fd, &rs);
        if (select(fd + 1, &rs, NULL, NULL, &tv) > 0) {
            ssize_t r = read(fd, buf + len, cap - len - 1);
            if (r <= 0) break;
            len += (size_t)r;
        } else {
            waited += 100;
        }
    }
    return buf;
}

Test(inelog, follow_prints_new_events_as_they_come)
{
    fixture();
    int fd;
    pid_t pid = spawn_follow(&fd);
    usleep(300 * 1000);
    /* Append from this process, with a hint, as a service would. */
    char *logdir = tu_path(dir, "log"), *run = tu_path(dir, "run");
    mkdir(run, 0700);
    void *z = zmq_ctx_new();
    follow_pub *pub;
    cr_assert_eq(follow_pub_open(z, run, "test", &pub), INE_OK, "%s", ine_err_msg());
    evlog_t *log;
    cr_assert_eq(evlog_open(logdir, NULL, &log), INE_OK);
    for (uint32_t i = 100; i < 103; i++) {
        evlog_event *ev = tu_ev_db_created(i, "followed");
        uint64_t seq;
        cr_assert_eq(evlog_append_one(log, ev, NULL, &seq), INE_OK);
        follow_pub_hint(pub, seq);
        tu_event_free(ev);
    }
    char *got = read_until(fd, "db_uid=102", 10000);
    cr_assert(strstr(got, "db_uid=100") && strstr(got, "db_uid=101") && strstr(got, "db_uid=102"), "follow printed: %s", got);
    cr_assert_null(strstr(got, "cluster_created"), "follow starts at the end, like tail -f: %s", got);
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
    free(got);
    close(fd);
    follow_pub_close(pub);
    evlog_close(log);
    zmq_ctx_term(z);
    free(logdir);
    free(run);
}

Test(inelog, reads_while_another_process_appends)
{
    fixture();
    char *logdir = tu_path(dir, "log");
    pid_t pid = fork();
    if (pid == 0) {
        evlog_t *log;
        if (evlog_open(logdir, NULL, &log)) _exit(2);
        for (uint32_t i = 0; i < 3000; i++) {
            evlog_event *ev = tu_ev_db_created(1000 + i, "busy");
            if (evlog_append_one(log, ev, NULL, NULL)) _exit(3);
            tu_event_free(ev);
        }
        evlog_close(log);
        _exit(0);
    }
    for (int round = 0; round < 5; round++) {
        char *out, *err;
        cr_assert_eq(inelog(&out, &err, "verify", NULL), 0, "round %d: %s", round, err);
        free(out); free(err);
        cr_assert_eq(inelog(&out, &err, "export", NULL), 0, "round %d: %s", round, err);
        free(out); free(err);
    }
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    free(logdir);
}

/* --- no key material anywhere --------------------------------------------------------------- */

typedef struct { seal_key *key; ProtobufCBinaryData der; } seal_ctx;

static int seal_in_txn(evlog_event *ev, void *ud)
{
    seal_ctx *c = ud;
    char purpose[SEAL_PURPOSE_MAX];
    ProtobufCBinaryData *dst = ev->body_case == INE__V1__EVENT__BODY_CA_CREATED ? &ev->ca_created->sealed_key
                                                                                : &ev->certificate_issued->sealed_key;
    GUARD(seal_purpose_event(purpose, sizeof purpose, ev->seq, evlog_type_name(ev), "sealed_key"));
    return seal_seal(c->key, purpose, c->der.data, c->der.len, &dst->data, &dst->len);
}

Test(inelog, no_private_key_bytes_in_any_output_or_in_the_lmdb_file)
{
    fixture();
    /* A real RSA key, sealed into the log the way the CA will do it. */
    EVP_PKEY *pk = EVP_RSA_gen(2048);
    cr_assert_not_null(pk);
    unsigned char *der = NULL;
    int der_len = i2d_PrivateKey(pk, &der);
    cr_assert_gt(der_len, 0);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL);
    char *pem;
    long pem_len = BIO_get_mem_data(b, &pem);

    char *keypath = tu_path(dir, "seal.key"), *logdir = tu_path(dir, "log");
    cr_assert_eq(seal_key_create(keypath), INE_OK);
    seal_ctx sc = {.der = {(size_t)der_len, der}};
    cr_assert_eq(seal_key_load(keypath, &sc.key), INE_OK);
    evlog_t *log;
    cr_assert_eq(evlog_open(logdir, NULL, &log), INE_OK);
    Ine__V1__CertificateIssued *ci = calloc(1, sizeof *ci);
    ine__v1__certificate_issued__init(ci);
    ci->node_uid = 1;
    ci->plane = INE__V1__PLANE__PLANE_CONTROL;
    ci->cert = certinfo("99", 1, 2);
    evlog_event *ev = ev_new(INE__V1__EVENT__BODY_CERTIFICATE_ISSUED, ci, 0);
    evlog_append_opts ao = {.prepare = seal_in_txn, .prepare_ud = &sc};
    uint64_t seq;
    cr_assert_eq(evlog_append(log, &ev, 1, &ao, &seq), INE_OK, "%s", ine_err_msg());
    free(ci->sealed_key.data);
    ci->sealed_key.data = NULL;
    ci->sealed_key.len = 0;
    tu_event_free(ev);
    evlog_close(log);

    /* Needles: the whole DER, 24-byte windows across it, and the PEM's base64 lines. */
    char seqs[16];
    snprintf(seqs, sizeof seqs, "%llu", (unsigned long long)seq);
    const char *cmds[][5] = {{"list"}, {"export"}, {"show", seqs}, {"state"}, {"verify"}};
    size_t flen;
    char *data_path = tu_path(logdir, "data.mdb");
    char *file = tu_read_file(data_path, &flen);
    for (size_t c = 0; c <= sizeof cmds / sizeof cmds[0]; c++) {
        char *out = NULL, *err = NULL;
        const char *hay;
        size_t hlen;
        if (c < sizeof cmds / sizeof cmds[0]) {
            cr_assert_eq(inelog(&out, &err, cmds[c][0], cmds[c][1], NULL), 0, "%s: %s", cmds[c][0], err);
            hay = out;
            hlen = strlen(out);
            cr_assert(strstr(out, "<sealed,") || c >= 3, "%s shows sealed fields as <sealed, N bytes>", cmds[c][0]);
            cr_assert_null(strstr(err, "PRIVATE"), "%s", err);
        } else {
            hay = file;
            hlen = flen;
        }
        cr_assert_not(tu_contains(hay, hlen, der, (size_t)der_len));
        for (int off = 0; off + 24 <= der_len; off += 24)
            cr_assert_not(tu_contains(hay, hlen, der + off, 24), "DER bytes at %d found (output %zu)", off, c);
        cr_assert_null(memmem(hay, hlen, "PRIVATE KEY", 11));
        char *pcopy = strndup(pem, (size_t)pem_len);
        for (char *save = NULL, *line = strtok_r(pcopy, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
            if (line[0] != '-') cr_assert_not(tu_contains(hay, hlen, line, strlen(line)), "a PEM line found (output %zu)", c);
        free(pcopy);
        free(out);
        free(err);
    }
    /* And the seal is real: the blob opens back to the key with the right purpose. */
    cr_assert_eq(evlog_open(logdir, NULL, &log), INE_OK);
    cr_assert_eq(evlog_read(log, seq, &ev), INE_OK);
    char purpose[SEAL_PURPOSE_MAX];
    uint8_t *plain;
    size_t plen;
    seal_purpose_event(purpose, sizeof purpose, seq, "certificate_issued", "sealed_key");
    cr_assert_eq(seal_open(sc.key, purpose, ev->certificate_issued->sealed_key.data, ev->certificate_issued->sealed_key.len,
                           &plain, &plen), INE_OK);
    cr_assert_eq(plen, (size_t)der_len);
    cr_assert_arr_eq(plain, der, plen);
    seal_free_secret(plain, plen);
    evlog_event_free(ev);
    evlog_close(log);
    seal_key_free(sc.key);
    free(file); free(data_path); free(keypath); free(logdir);
    OPENSSL_free(der);
    BIO_free(b);
    EVP_PKEY_free(pk);
}
