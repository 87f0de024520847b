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

/* The subjects of the certificates node n presents on P for SNI sni, one per line, leaf first,
 * to a client presenting cert/key (and the intermediates in `chain`, if not NULL). */
static char *served_chain(int n, const char *sni, const char *cert, const char *key, const char *chain)
{
    char *o = NULL;
    int rc = cl_sh(&o, 30,
                   "openssl s_client -connect %s:%d -servername %s -cert %s -key %s %s%s -showcerts </dev/null 2>/dev/null | "
                   "sed -n 's/^ *[0-9]* s:/s:/p'",
                   cl_addr(n), c.port, sni, cert, key, chain ? "-cert_chain " : "", chain ? chain : "");
    cr_assert_eq(rc, 0, "s_client to node %d: %s", n, o);
    cr_assert(strstr(o, "s:"), "node %d presented no certificate", n);
    return o;
}

static int lines(const char *s)
{
    int k = 0;
    for (; *s; s++) k += *s == '\n';
    return k;
}

static void expect_serial(int n, int plane)
{
    char want[80], got[80], *cert = cl_path(&c, "client.pem"), *key = cl_path(&c, "client.key");
    /* The client is node 1 (or node 2 when asking node 1) with its current certificate. */
    cl_export_cert(&c, n == 1 ? 2 : 1, plane, cert, key);
    norm_serial(cl_cert(&c, n, plane)->cert.serial_hex, want, sizeof want);
    served_serial(n, plane == 2 ? "data.ine" : "control.ine", cert, key, got, sizeof got);
    cr_assert_str_eq(got, want, "node %d serves %s-plane serial %s, the log says %s", n, plane == 2 ? "data" : "control", got, want);
    /* The leaf alone: the peer holds the cluster CA's root already, and sending it would cost
     * every handshake a certificate to parse (and us a chain to build). */
    char *chain = served_chain(n, plane == 2 ? "data.ine" : "control.ine", cert, key, NULL);
    cr_assert_eq(lines(chain), 1, "node %d presents its leaf only, not the root:\n%s", n, chain);
    free(chain);
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
    char *before, *after;
    size_t marks[CL_NODES + 1];

    cl_start(&c, NULL);
    cl_redis_db(&c, "kv", port, 2, shard);
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
    char ps[16], key[32], val[32];

    cl_start(&c, NULL);
    cl_redis_db(&c, "primary", port, 2, shard);
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

/* A customer root, an intermediate CA under it, and one leaf for every node (both EKUs)
 * issued by the intermediate, as an operator would bring them: leaf, intermediate, root. */
static void make_customer(void)
{
    char *out = NULL;
    int rc = cl_sh(&out, 60,
                   "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout cust-root.key -out cust-root.pem -days 365 "
                   "-subj '/CN=Example Corp Internal Root' -addext basicConstraints=critical,CA:TRUE "
                   "-addext keyUsage=critical,keyCertSign,cRLSign && "
                   "openssl req -newkey rsa:2048 -nodes -keyout cust-int.key -out cust-int.csr -subj '/CN=Example Corp Issuing CA' && "
                   "printf 'basicConstraints=critical,CA:TRUE,pathlen:0\\nkeyUsage=critical,keyCertSign,cRLSign\\n' > cust-int.ext && "
                   "openssl x509 -req -in cust-int.csr -CA cust-root.pem -CAkey cust-root.key -CAcreateserial -days 300 "
                   "-extfile cust-int.ext -out cust-int.pem && "
                   "openssl req -newkey rsa:2048 -nodes -keyout cust.key -out cust.csr -subj '/CN=ine.example.com' && "
                   "printf 'subjectAltName=IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3\\nextendedKeyUsage=serverAuth,clientAuth\\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\\nbasicConstraints=critical,CA:FALSE\\n' > cust.ext && "
                   "openssl x509 -req -in cust.csr -CA cust-int.pem -CAkey cust-int.key -CAcreateserial -days 200 -extfile cust.ext "
                   "-out cust-leaf.pem && cat cust-leaf.pem cust-int.pem cust-root.pem > cust.pem",
                   c.dir);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
}

static int serves(const proj_state *st, int n, const char *fp)
{
    for (int p = 1; p <= 2; p++) {
        const proj_activation *a = proj_activation_find(st, (uint32_t)n, p);
        if (!a || !a->fingerprint || strcmp(a->fingerprint, fp)) return 0;
    }
    return 1;
}


/* SET through node `via` on a new connection, GET it back through another new one. */
static void flows(int via, int port, const char *what)
{
    char key[64], *r;
    snprintf(key, sizeof key, "%s-%ld", what, (long)cl_now_ms());
    r = cl_redis_cli(cl_addr(via), port, "SET", key, what, NULL);
    cr_assert(r && !strcmp(r, "OK"), "%s: SET through node %d: %s", what, via, r ? r : "(failed)");
    free(r);
    r = cl_redis_cli(cl_addr(via), port, "GET", key, NULL);
    cr_assert(r && !strcmp(r, what), "%s: GET through node %d: %s", what, via, r ? r : "(failed)");
    free(r);
}

/* Node 3 follows a replica of the log that lags (as a follower on another machine would) and
 * node 2's transport is stopped during the upload: node 1 switches first, node 2 when
 * continued, node 3 when its replica catches up. Meanwhile: switched -> switched, switched -> not yet
 * switched and not yet switched -> switched streams all carry data, and the long-lived streams
 * opened before the upload keep flowing; once node 3 catches up, everyone serves the
 * customer certificate and everything still flows. */
Test(transport_rotation, a_customer_certificate_with_its_own_root_applies_while_nodes_switch_at_different_moments)
{
    int r2 = cl_free_port(), r3 = cl_free_port(), west = cl_free_port(), east = cl_free_port();
    char addr[64], text[200], *out = NULL, *err = NULL, *cust, *custkey, old3[80], cust_serial[80];
    const proj_cert *pc;
    char cust_fp[65];
    size_t marks[CL_NODES + 1];

    cl_start(&c, NULL);
    cl_redis_start(&c, cl_addr(2), r2, NULL);
    cl_redis_start(&c, cl_addr(3), r3, NULL);
    snprintf(addr, sizeof addr, "%s:%d", cl_addr(2), r2);
    cl_create_db(&c, "west", west, 2, addr, 1);
    snprintf(addr, sizeof addr, "%s:%d", cl_addr(3), r3);
    cl_create_db(&c, "east", east, 3, addr, 1);
    make_customer();

    /* Node 3 moves to its own replica of the log, complete so far. */
    for (int n = 1; n <= 2; n++) marks[n] = cl_log_mark(&c.tp[n]);
    cr_assert_eq(cl_tp_stop(&c, 3, SIGTERM), 0, "transport 3 stopped cleanly");
    cl_replica_make(&c, 3, 0);
    marks[3] = cl_log_mark(&c.tp[3]);
    cl_tp_start(&c, 3);
    cr_assert(cl_wait_links(&c, 3, marks[3], CL_WAIT_MS) && cl_wait_heartbeats(&c, 3, marks[3], CL_WAIT_MS), "node 3 runs from its replica");
    for (int n = 1; n <= 2; n++)
        cr_assert(cl_wait_log(&c.tp[n], marks[n], "control-plane stream to node 3 up", CL_WAIT_MS), "node %d reconnected to node 3", n);
    snprintf(old3, sizeof old3, "%s", cl_cert(&c, 3, 2)->cert.serial_hex);
    cl_load_start(&loads[0], cl_addr(1), west, "west-via-1"); /* 1 -> 2 */
    cl_load_start(&loads[1], cl_addr(1), east, "east-via-1"); /* 1 -> 3 */
    cl_load_start(&loads[2], cl_addr(3), west, "west-via-3"); /* 3 -> 2 */
    for (int i = 0; i < 3; i++) cr_assert(cl_load_progress(&loads[i], 20, CL_WAIT_MS), "load %d: %s", i, loads[i].last_error);

    /* The upload: one certificate for both planes, chained to the customer's root. Node 2's
     * transport is stopped (SIGSTOP) meanwhile, so node 1 switches first, node 2 when it is
     * continued, node 3 when its replica catches up. */
    cust = cl_path(&c, "cust.pem");
    custkey = cl_path(&c, "cust.key");
    for (int n = 1; n <= CL_NODES; n++) marks[n] = cl_log_mark(&c.tp[n]);
    cr_assert_eq(kill(c.tp[2].pid, SIGSTOP), 0);
    cr_assert_eq(cl_inectl(&c, &out, &err, "cluster", "certificate", "set", "internal", "cpine_certificate_file", cust, "cpine_key_file",
                           custkey, "dpine_certificate_file", cust, "dpine_key_file", custkey, NULL), 0, "upload: %s", err);
    free(out);
    free(err);
    pc = cl_cert(&c, 1, 2);
    cr_assert_eq(pc->source, 2, "node 1's data plane now has the customer certificate");
    snprintf(cust_fp, sizeof cust_fp, "%s", pc->cert.fingerprint);
    snprintf(cust_serial, sizeof cust_serial, "%s", pc->cert.serial_hex);
    for (int64_t end = cl_now_ms() + CL_WAIT_MS; !serves(cl_state(&c), 1, cust_fp);)
        cr_assert(cl_now_ms() < end, "node 1 switched to the customer certificate");
    cr_assert_not(serves(cl_state(&c), 2, cust_fp), "node 2 is stopped");
    /* Node 1 presents the leaf and the intermediate its peers need, and not the root they
     * hold (every flow below verifies through that intermediate). */
    {
        char *inter = cl_path(&c, "cust-int.pem"), *chain = served_chain(1, "data.ine", cust, custkey, inter);
        cr_assert_eq(lines(chain), 2, "leaf and intermediate only:\n%s", chain);
        cr_assert(strstr(chain, "CN = ine.example.com") && strstr(chain, "CN = Example Corp Issuing CA"), "%s", chain);
        cr_assert_not(strstr(chain, "Internal Root"), "the root is not sent:\n%s", chain);
        free(chain);
        free(inter);
    }
    flows(1, east, "switched-to-not-yet-while-node-2-is-stopped");
    cr_assert_eq(kill(c.tp[2].pid, SIGCONT), 0);
    for (int64_t end = cl_now_ms() + CL_WAIT_MS; !serves(cl_state(&c), 2, cust_fp);)
        cr_assert(cl_now_ms() < end, "node 2 switched to the customer certificate once continued");
    cr_assert_not(serves(cl_state(&c), 3, cust_fp));
    snprintf(text, sizeof text, "now serving data-plane certificate %s", cust_serial);
    cr_assert_eq(cl_log_count(&c.tp[3], marks[3], text), 0, "node 3 has not seen the upload yet");

    /* Mixed: every pair talks, in both directions, on new streams. */
    flows(1, west, "switched-to-switched");
    flows(1, east, "switched-to-not-yet");
    flows(3, west, "not-yet-to-switched");
    flows(2, east, "switched-to-not-yet-2");
    for (int i = 0; i < 3; i++) cr_assert(cl_load_progress(&loads[i], 20, CL_WAIT_MS), "load %d: %s", i, loads[i].last_error);

    /* Node 3 catches up and switches too. */
    size_t conv[CL_NODES + 1];
    for (int n = 1; n <= 2; n++) conv[n] = cl_log_mark(&c.tp[n]);
    cl_replica_sync(&c, 3, 0);
    cr_assert(cl_wait_log(&c.tp[3], marks[3], text, CL_WAIT_MS), "node 3 switched");
    snprintf(text, sizeof text, "node 3 serves data-plane certificate %s", cust_serial);
    cr_assert(cl_wait_log(&c.tp[1], marks[1], text, CL_WAIT_MS), "node 1 hears node 3 serve the customer certificate");
    flows(1, west, "all-switched-1");
    flows(1, east, "all-switched-2");
    flows(3, west, "all-switched-3");

    /* Node 3's activations reach the cluster's log through its heartbeats (nodes 1 and 2 run
     * from that log and record what a peer serves, as the master does for a follower): the
     * mesh has converged, the cluster CA's root retires, and nodes 1 and 2 drop the previous
     * certificates they kept for node 3. Everything still flows. */
    for (int n = 1; n <= 2; n++) {
        cr_assert(cl_wait_log(&c.tp[n], conv[n], "data plane: certificate", CL_WAIT_MS) &&
                      cl_wait_log(&c.tp[n], conv[n], "dropped, its root left the trust bundle", CL_WAIT_MS),
                  "node %d dropped its previous certificates", n);
        cr_assert(cl_wait_log(&c.tp[n], conv[n], "trust bundle now holds 1 root(s)", CL_WAIT_MS));
    }
    cr_assert(serves(cl_state(&c), 3, cust_fp), "node 3's activation is in the cluster's log");
    flows(1, west, "converged-1");
    flows(2, east, "converged-2");
    flows(3, west, "converged-3");
    for (int i = 0; i < 3; i++) {
        cr_assert(cl_load_progress(&loads[i], 20, CL_WAIT_MS), "load %d: %s", i, loads[i].last_error);
        cr_assert_eq(cl_load_stop(&loads[i]), 0, "load %d: %s", i, loads[i].last_error);
    }
    (void)old3;
    free(cust);
    free(custkey);
    cl_finish(&c);
}
