/* test_transport_data.c — the data plane through the real binaries: a redis-server shard
 * behind node 2, redis-cli through node 1's and node 3's endpoints with data_internode_encryption
 * on (a capture of port P holds TLS records and never the marker) and off (nothing crosses P,
 * the marker goes straight to the shard); toggles close only the toggled database's remote
 * connections; a killed transport rebuilds from the log and the others reconnect; large values
 * and many concurrent pipelined clients cross the relay intact; streams share one TLS
 * connection per node pair (seen on the wire), a rotation moves new ones to a new connection
 * while held ones go on; without mux, streams resume their TLS sessions and a rotation makes
 * the next handshake a full one; over TLS 1.2 they resume by ticket, and with resumption off
 * ask for none. How many system calls the relay makes: test_transport_io.c. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster.h"
#include "testutil.h"

static cl_t c;

static void setup(void) {}
static void teardown(void) { cl_stop(&c); }
TestSuite(transport_data, .init = setup, .fini = teardown, .timeout = 150);

/* --- capture ----------------------------------------------------------------------------------- */

typedef struct {
    cl_proc *p;
    char *file;
} capture;

static void capture_start(capture *cap, const char *name, const char *filter)
{
    char *argv[] = {"/usr/bin/tshark", "-i", "lo", "-f", (char *)filter, "-w", NULL, NULL};
    char fname[64];
    cr_assert_eq(access(argv[0], X_OK), 0, "tshark is installed by scripts/install-deps.sh");
    snprintf(fname, sizeof fname, "%s.pcapng", name);
    cap->file = cl_path(&c, fname);
    argv[6] = cap->file;
    cap->p = cl_spawn(&c, NULL, name, argv, NULL);
    cr_assert(cl_wait_log(cap->p, 0, "Capturing on", CL_WAIT_MS), "tshark started capturing");
}

/* tshark says it captures a moment before it does: write to the shard directly (in clear)
 * until the capture holds it, so the handshake of a data-plane connection opened next (one per
 * node pair, not one per client) is not missed. */
static void marker(char *buf, size_t len, const char *tag);
static void capture_ready(capture *cap, int shard_port)
{
    char probe[96];
    marker(probe, sizeof probe, "probe");
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;;) {
        free(cl_redis_cli(cl_addr(2), shard_port, "SET", "probe", probe, NULL));
        size_t len = 0;
        char *d = tu_read_file(cap->file, &len);
        int found = d && tu_contains(d, len, probe, strlen(probe));
        free(d);
        if (found) break;
        cr_assert(cl_now_ms() < end, "the capture never started holding packets");
        usleep(100 * 1000);
    }
}

/* Stop once `text` shows in the capture (the traffic we made has been written). */
static void capture_stop(capture *cap, const char *text)
{
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;;) {
        size_t len = 0;
        char *d = tu_read_file(cap->file, &len);
        int found = d && tu_contains(d, len, text, strlen(text));
        free(d);
        if (found) break;
        cr_assert(cl_now_ms() < end, "'%s' never reached the capture", text);
        usleep(100 * 1000);
    }
    cl_kill(cap->p, SIGINT);
}

/* tshark over the file with a display filter; the number of matching packets. */
static int capture_count(capture *cap, const char *filter)
{
    char *out = NULL;
    int n = 0, rc = cl_sh(&out, 60, "/usr/bin/tshark -r '%s' -d tcp.port==%d,tls -Y '%s' -T fields -e frame.number 2>/dev/null",
                          cap->file, c.port, filter);
    cr_assert_eq(rc, 0, "tshark -r: %s", out);
    for (char *l = out; (l = strchr(l, '\n')); l++) n++;
    free(out);
    return n;
}

/* Whether any packet to or from port `port` carries `text` (per packet and per reassembled
 * stream, so a marker split across segments is found too). */
static int capture_has(capture *cap, int port, const char *text)
{
    char *out = NULL;
    int rc, found;
    rc = cl_sh(&out, 60, "/usr/bin/tshark -r '%s' -Y 'tcp.port==%d && frame contains \"%s\"' -T fields -e frame.number 2>/dev/null", cap->file,
               port, text);
    cr_assert_eq(rc, 0, "tshark -r: %s", out);
    found = out[strspn(out, " \n")] != 0;
    free(out);
    if (found) return 1;
    rc = cl_sh(&out, 60, "z=''; for s in $(/usr/bin/tshark -r '%s' -Y 'tcp.port==%d' -T fields -e tcp.stream 2>/dev/null | sort -u); do "
                         "z=\"$z -z follow,tcp,ascii,$s\"; done; [ -z \"$z\" ] && echo 0 || "
                         "/usr/bin/tshark -r '%s' -q $z 2>/dev/null | tr -d '\\n' | grep -c '%s'",
               cap->file, port, cap->file, text);
    found = atoi(out) > 0;
    free(out);
    return found;
}

static void marker(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "ine-marker-%s-%d-%ld", tag, getpid(), (long)cl_now_ms());
}

/* SET through one endpoint, GET through the others. */
static void set_get(int via_set, const int *via_get, int n_get, int db_port, const char *key, const char *val)
{
    char *r = cl_redis_cli(cl_addr(via_set), db_port, "SET", key, val, NULL);
    cr_assert(r && !strcmp(r, "OK"), "SET through node %d: %s", via_set, r ? r : "(failed)");
    free(r);
    for (int i = 0; i < n_get; i++) {
        r = cl_redis_cli(cl_addr(via_get[i]), db_port, "GET", key, NULL);
        cr_assert(r && !strcmp(r, val), "GET through node %d: %s", via_get[i], r ? r : "(failed)");
        free(r);
    }
}

Test(transport_data, redis_through_every_endpoint_in_tls_then_in_plaintext)
{
    char m1[96], m2[96], filter[128];
    capture cap;
    int shard_port, db_port, get13[] = {3, 1, 2};
    size_t marks[CL_NODES + 1];

    cl_start(&c, NULL);
    shard_port = cl_free_port();
    db_port = cl_free_port();
    cl_redis_db(&c, "cache", db_port, 2, shard_port);

    /* Encryption on: node 1 and node 3 reach the shard through node 2's port P, in TLS. */
    marker(m1, sizeof m1, "tls");
    snprintf(filter, sizeof filter, "tcp port %d or tcp port %d", c.port, shard_port);
    capture_start(&cap, "capture-on", filter);
    capture_ready(&cap, shard_port);
    set_get(1, get13, 3, db_port, m1, m1);
    set_get(3, (int[]){1}, 1, db_port, "second-key", m1);
    capture_stop(&cap, m1);
    cr_assert(capture_has(&cap, shard_port, m1), "the marker reached the shard (the capture works)");
    cr_assert_not(capture_has(&cap, c.port, m1), "the marker never crossed port P in clear");
    cr_assert_geq(capture_count(&cap, "tls.handshake.type == 1 && tls.handshake.extensions_server_name == \"data.ine\""), 2,
                  "node 1 and node 3 opened data-plane TLS connections to node 2");
    /* TLS 1.3 records show as opaque type 23 (application data), TLS 1.2 ones as content type 23. */
    cr_assert_gt(capture_count(&cap, "tls.record.opaque_type == 23 || tls.record.content_type == 23"), 4,
                 "the data crossed P in TLS application records");
    cr_assert_geq(capture_count(&cap, "tls.handshake.type == 2 && tls.handshake.extensions.supported_version == 0x0304"), 2,
                  "the streams negotiated TLS 1.3");
    cr_assert_eq(capture_count(&cap, "tls.record && tls.record.version < 0x0301"), 0, "no SSL 3.0 record");
    free(cap.file);

    /* Encryption off: every transport applies it, then data goes straight to the shard. */
    for (int n = 1; n <= CL_NODES; n++) marks[n] = cl_log_mark(&c.tp[n]);
    cl_set_encryption(&c, "cache", 0);
    for (int n = 1; n <= CL_NODES; n++)
        cr_assert(cl_wait_log(&c.tp[n], marks[n], "data_internode_encryption disabled", CL_WAIT_MS), "transport %d applied the toggle", n);
    marker(m2, sizeof m2, "plain");
    capture_start(&cap, "capture-off", filter);
    set_get(1, get13, 3, db_port, m2, m2);
    set_get(3, (int[]){1}, 1, db_port, "third-key", m2);
    capture_stop(&cap, m2);
    cr_assert(capture_has(&cap, shard_port, m2), "the marker went to the shard in clear");
    cr_assert_not(capture_has(&cap, c.port, m2), "the marker did not cross P");
    cr_assert_eq(capture_count(&cap, "tls.handshake.extensions_server_name == \"data.ine\""), 0, "no data-plane stream crossed P");
    free(cap.file);

    /* And back on: TLS again. */
    for (int n = 1; n <= CL_NODES; n++) marks[n] = cl_log_mark(&c.tp[n]);
    cl_set_encryption(&c, "cache", 1);
    for (int n = 1; n <= CL_NODES; n++)
        cr_assert(cl_wait_log(&c.tp[n], marks[n], "data_internode_encryption enabled", CL_WAIT_MS), "transport %d applied the toggle", n);
    set_get(3, get13, 3, db_port, "fourth-key", "back-on");
    cl_finish(&c);
}

/* Established TCP connections that process `pid` holds to addr:port (ss -tnp). */
static int conns_to(pid_t pid, const char *addr, int port)
{
    char *out = NULL, needle[32];
    int n = 0;
    cr_assert_eq(cl_sh(&out, 30, "/bin/ss -tnpH state established dst %s:%d", addr, port), 0, "ss: %s", out);
    snprintf(needle, sizeof needle, "pid=%d,", (int)pid);
    for (char *q = out; (q = strstr(q, needle)); q++) n++;
    free(out);
    return n;
}

static void ping(cl_resp *r, const char *what)
{
    char reply[64];
    cr_assert_eq(cl_resp_cmd(r, reply, sizeof reply, "PING"), 0, "%s: no answer on the held connection", what);
    cr_assert_str_eq(reply, "+PONG", "%s", what);
}

/* Wait until every transport logged `prefix` N after its mark; the sum of the N. */
static int closed_on_toggle(const size_t *marks, const char *prefix)
{
    int sum = 0;
    for (int n = 1; n <= CL_NODES; n++) {
        char *log, *q;
        cr_assert(cl_wait_log(&c.tp[n], marks[n], prefix, CL_WAIT_MS), "transport %d applied the toggle", n);
        log = cl_log_since(&c.tp[n], marks[n]);
        q = strstr(log, prefix);
        sum += atoi(q + strlen(prefix));
        free(log);
    }
    return sum;
}

Test(transport_data, a_toggle_closes_only_that_databases_remote_connections_within_a_second)
{
    int ra = cl_free_port(), rb = cl_free_port(), pa = cl_free_port(), pb = cl_free_port();
    char addr[64], reply[128];
    cl_resp a1, a3, a2, b1, b2, again;
    size_t marks[CL_NODES + 1];
    int64_t t0, waited;
    int p_before;

    cl_start(&c, NULL);
    cl_redis_start(&c, cl_addr(2), ra, NULL);
    cl_redis_start(&c, cl_addr(3), rb, NULL);
    snprintf(addr, sizeof addr, "%s:%d", cl_addr(2), ra);
    cl_create_db(&c, "alpha", pa, 2, addr, 1);
    snprintf(addr, sizeof addr, "%s:%d", cl_addr(3), rb);
    cl_create_db(&c, "beta", pb, 3, addr, 1);

    /* alpha's shard is on node 2: through nodes 1 and 3 it is remote, through node 2 local. */
    p_before = conns_to(c.tp[1].pid, cl_addr(2), c.port); /* its control-plane stream */
    cr_assert_eq(cl_resp_open(&a1, cl_addr(1), pa), 0);
    cr_assert_eq(cl_resp_open(&a3, cl_addr(3), pa), 0);
    cr_assert_eq(cl_resp_open(&a2, cl_addr(2), pa), 0);
    cr_assert_eq(cl_resp_open(&b1, cl_addr(1), pb), 0);
    cr_assert_eq(cl_resp_open(&b2, cl_addr(2), pb), 0);
    ping(&a1, "alpha via node 1");
    ping(&a3, "alpha via node 3");
    ping(&a2, "alpha via node 2 (local)");
    ping(&b1, "beta via node 1");
    ping(&b2, "beta via node 2");
    /* Encrypted: node 1's transport reaches alpha's shard through node 2's port P only. */
    cr_assert_eq(conns_to(c.tp[1].pid, cl_addr(2), ra), 0);
    cr_assert_eq(conns_to(c.tp[1].pid, cl_addr(2), c.port), p_before + 1, "one more connection to node 2's P: the data plane's");

    for (int n = 1; n <= CL_NODES; n++) marks[n] = cl_log_mark(&c.tp[n]);
    t0 = cl_now_ms();
    cl_set_encryption(&c, "alpha", 0);
    cr_assert(cl_resp_wait_closed(&a1, CL_WAIT_MS), "alpha's connection through node 1 was closed");
    cr_assert(cl_resp_wait_closed(&a3, CL_WAIT_MS), "alpha's connection through node 3 was closed");
    waited = cl_now_ms() - t0;
    cr_log_info("alpha's remote connections closed %lld ms after inectl was started", (long long)waited);
    cr_assert_lt(waited, 1000, "closed within a second of the toggle (took %lld ms)", (long long)waited);
    /* Each node applies it; whichever end sees it first closes the stream, so the two streams
     * (node 1 -> 2, node 3 -> 2) are counted on node 2, or on 1 and 3, or split between them. */
    cr_assert_geq(closed_on_toggle(marks, "db 1: data_internode_encryption disabled; closed "), 2);

    /* The other database, and alpha's local connection, go on on the same connections. */
    ping(&b1, "beta via node 1 after the toggle");
    ping(&b2, "beta via node 2 after the toggle");
    ping(&a2, "alpha via node 2 (local) after the toggle");
    cr_assert_eq(cl_resp_cmd(&b1, reply, sizeof reply, "SET kept yes"), 0);
    cr_assert_eq(cl_resp_cmd(&b2, reply, sizeof reply, "GET kept"), 0);
    cr_assert_str_eq(reply, "yes");

    /* New alpha connections use the new mode: straight to the shard, in plaintext. */
    cr_assert_eq(cl_resp_open(&again, cl_addr(1), pa), 0);
    ping(&again, "a new alpha connection through node 1");
    cr_assert_geq(conns_to(c.tp[1].pid, cl_addr(2), ra), 1, "node 1's transport connects to the shard directly");

    /* Toggled back on, the plaintext connection is remote too and closes; beta untouched. */
    for (int n = 1; n <= CL_NODES; n++) marks[n] = cl_log_mark(&c.tp[n]);
    t0 = cl_now_ms();
    cl_set_encryption(&c, "alpha", 1);
    cr_assert(cl_resp_wait_closed(&again, CL_WAIT_MS));
    waited = cl_now_ms() - t0;
    cr_assert_lt(waited, 1000, "closed within a second of the toggle (took %lld ms)", (long long)waited);
    cr_assert_geq(closed_on_toggle(marks, "db 1: data_internode_encryption enabled; closed "), 1);
    ping(&b1, "beta via node 1 after the second toggle");
    ping(&a2, "alpha via node 2 (local) after the second toggle");
    cl_resp_close(&again);
    p_before = conns_to(c.tp[3].pid, cl_addr(2), c.port);
    cr_assert_eq(cl_resp_open(&again, cl_addr(3), pa), 0);
    ping(&again, "a new alpha connection through node 3, encrypted again");
    cr_assert_eq(conns_to(c.tp[3].pid, cl_addr(2), ra), 0, "not to the shard directly");
    /* The toggle closed alpha's streams, not the data-plane connection that carried them: the
     * new stream rides it (control stream + that one). */
    cr_assert_eq(p_before, 2, "node 3 kept its data-plane connection to node 2's P");
    cr_assert_eq(conns_to(c.tp[3].pid, cl_addr(2), c.port), p_before, "through node 2's port P, in the connection already there");
    cl_resp_close(&a1);
    cl_resp_close(&a3);
    cl_resp_close(&a2);
    cl_resp_close(&b1);
    cl_resp_close(&b2);
    cl_resp_close(&again);
    cl_finish(&c);
}

Test(transport_data, a_killed_transport_rebuilds_from_the_log_and_the_others_reconnect)
{
    int shard = cl_free_port(), port = cl_free_port();
    char text[128];
    size_t marks[CL_NODES + 1];
    uint64_t seq_before, seq_after;
    cl_resp held;

    cl_start(&c, NULL);
    cl_redis_db(&c, "kv", port, 2, shard);
    set_get(1, (int[]){3}, 1, port, "before", "kill");
    cr_assert_eq(cl_resp_open(&held, cl_addr(1), port), 0);
    ping(&held, "through node 1 before the kill");

    for (int n = 1; n <= CL_NODES; n++) marks[n] = cl_log_mark(&c.tp[n]);
    cr_assert_eq(cl_tp_stop(&c, 2, SIGKILL), 128 + SIGKILL);
    cr_assert(cl_resp_wait_closed(&held, CL_WAIT_MS), "a stream through the dead node ends");
    cl_resp_close(&held);
    for (int n = 1; n <= CL_NODES; n += 2)
        cr_assert(cl_wait_log(&c.tp[n], marks[n], "control-plane stream to node 2 lost", CL_WAIT_MS), "node %d saw node 2 go", n);
    cr_assert_null(cl_redis_cli(cl_addr(1), port, "GET", "before", NULL), "no data while the shard's node is down");
    seq_before = cl_state(&c)->applied_seq;

    cl_tp_start(&c, 2);
    cr_assert(cl_wait_log(&c.tp[2], marks[2], "node 2 listening on", CL_WAIT_MS));
    for (int n = 1; n <= CL_NODES; n += 2) {
        cr_assert(cl_wait_log(&c.tp[n], marks[n], "control-plane stream to node 2 up", CL_WAIT_MS), "node %d reconnected", n);
        snprintf(text, sizeof text, "node 2 serves data-plane certificate %s", cl_cert(&c, 2, 2)->cert.serial_hex);
        cr_assert(cl_wait_log(&c.tp[n], marks[n], text, CL_WAIT_MS), "node %d hears node 2's heartbeats again", n);
    }
    cr_assert(cl_wait_links(&c, 2, marks[2], CL_WAIT_MS), "node 2 reconnected to the others");
    cr_assert(cl_wait_heartbeats(&c, 2, marks[2], CL_WAIT_MS), "node 2 hears the others");
    /* It rebuilt everything from the log: same certificates, nothing re-activated. */
    seq_after = cl_state(&c)->applied_seq;
    cr_assert_eq(seq_after, seq_before, "the restart appended nothing (activations are already recorded)");
    set_get(1, (int[]){3, 2}, 2, port, "after", "restart");
    set_get(3, (int[]){1}, 1, port, "before", "kill-again");
    cl_finish(&c);
}

/* Large values and many concurrent pipelined clients through the relay, over TLS: the bytes
 * come back exactly (partial TLS writes, full buffers, backpressure), nothing is lost. */
Test(transport_data, large_values_and_many_concurrent_pipelined_clients_cross_intact)
{
    int shard = cl_free_port(), port = cl_free_port();
    char *out = NULL;
    cl_start(&c, NULL);
    cl_redis_db(&c, "big", port, 2, shard);
    int fds[CL_NODES + 1];
    for (int n = 1; n <= CL_NODES; n++) fds[n] = cl_open_fds(c.tp[n].pid);

    /* 8 MiB of random bytes in through node 1, out through node 3, compared by digest. */
    cr_assert_eq(cl_sh(&out, 60,
                       "cd %s && head -c 8388608 /dev/urandom | base64 -w0 > big.txt && "
                       "redis-cli -h %s -p %d -x SET big < big.txt && "
                       "redis-cli -h %s -p %d --raw GET big | head -c $(stat -c %%s big.txt) > back.txt && "
                       "cmp big.txt back.txt && echo SAME",
                       c.dir, cl_addr(1), port, cl_addr(3), port),
                 0, "%s", out);
    cr_assert(strstr(out, "SAME"), "%s", out);
    free(out);
    /* 50 clients at once through each of nodes 1 and 3, 16 commands in flight each. */
    for (int n = 1; n <= 3; n += 2) {
        cr_assert_eq(cl_sh(&out, 120, "redis-benchmark -h %s -p %d -c 50 -n 20000 -P 16 -t set,get,incr -q", cl_addr(n), port), 0, "%s",
                     out);
        cr_assert(strstr(out, "SET:") && strstr(out, "GET:") && strstr(out, "INCR:"), "redis-benchmark through node %d: %s", n, out);
        cr_assert_null(strstr(out, "rror"), "redis-benchmark through node %d: %s", n, out);
        free(out);
    }
    /* Every INCR arrived exactly once: 2 x 20000. */
    out = cl_redis_cli(cl_addr(2), shard, "GET", "counter:__rand_int__", NULL);
    cr_assert(out && atoi(out) == 40000, "INCRs that reached the shard: %s", out ? out : "(none)");
    free(out);
    /* Every client is gone, and so is every relay it used. */
    for (int n = 1; n <= CL_NODES; n++)
        cr_assert(cl_wait_fds_at_most(&c, n, fds[n], CL_WAIT_MS), "transport %d holds %d descriptors, %d before", n, cl_open_fds(c.tp[n].pid),
                  fds[n]);
    cl_finish(&c);
}

/* A client that sends its request and then shuts down its sending side (as `printf ... | nc -N`
 * does) still gets the whole answer, through the local path and across P in TLS. */
static char *half_close_exchange(const char *addr, int port, const char *req)
{
    cl_resp r;
    char *out = calloc(1, 4096);
    size_t len = 0;
    cr_assert_eq(cl_resp_open(&r, addr, port), 0);
    cr_assert_eq(send(r.fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    cr_assert_eq(shutdown(r.fd, SHUT_WR), 0);
    for (;;) {
        ssize_t n = recv(r.fd, out + len, 4095 - len, 0);
        if (n <= 0) break;
        len += (size_t)n;
    }
    cl_resp_close(&r);
    return out;
}

/* Streams share one TLS connection, so one client that stops reading must stall only itself:
 * its stream runs out of credit (TP_MUX_WINDOW), the rest of its replies wait in node 2's
 * socket and node 1's buffer, and the others' streams go on. When it reads again, every byte
 * arrives, in order. */
Test(transport_data, a_client_that_stops_reading_stalls_only_its_own_stream)
{
    enum { VAL = 100000, GETS = 400 };
    int shard_port = cl_free_port(), db_port = cl_free_port();
    char reply[64], *val = malloc(VAL + 1), *r, hdr[32];
    static const char get[] = "*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n";
    size_t want, got = 0, hl;
    cl_resp slow, fast;
    uint8_t buf[65536];

    cl_start(&c, NULL);
    cl_redis_db(&c, "big", db_port, 2, shard_port);
    for (int i = 0; i < VAL; i++) val[i] = (char)('a' + i % 26);
    val[VAL] = 0;
    r = cl_redis_cli(cl_addr(2), shard_port, "SET", "big", val, NULL);
    cr_assert(r && !strcmp(r, "OK"), "SET big: %s", r ? r : "(failed)");
    free(r);

    /* 400 GETs of 100 KB (40 MB of replies, ten times the window) and no reading. */
    cr_assert_eq(cl_resp_open(&slow, cl_addr(1), db_port), 0);
    for (int i = 0; i < GETS; i++) cr_assert_eq(send(slow.fd, get, sizeof get - 1, MSG_NOSIGNAL), (ssize_t)(sizeof get - 1));
    usleep(500 * 1000);
    cr_assert_eq(cl_resp_open(&fast, cl_addr(1), db_port), 0);
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(cl_resp_cmd(&fast, reply, sizeof reply, "INCR beside-the-slow-one"), 0, "the other client is served (%d)", i);
        cr_assert_eq(atoi(reply + 1), i + 1);
    }
    cr_assert_eq(cl_log_count(&c.tp[1], 0, "protocol error"), 0);
    cr_assert_eq(cl_log_count(&c.tp[2], 0, "protocol error"), 0);

    /* Now it reads: every reply, whole and in order. */
    hl = (size_t)snprintf(hdr, sizeof hdr, "$%d\r\n", VAL);
    want = (size_t)GETS * (hl + VAL + 2);
    while (got < want) {
        ssize_t n = recv(slow.fd, buf, sizeof buf, 0);
        cr_assert_gt(n, 0, "the slow client got %zu of %zu bytes", got, want);
        for (ssize_t i = 0; i < n; i++, got++) {
            size_t off = got % (hl + VAL + 2);
            char exp = off < hl ? hdr[off] : off < hl + VAL ? val[off - hl] : off == hl + VAL ? '\r' : '\n';
            cr_assert_eq((char)buf[i], exp, "byte %zu of the replies", got);
        }
    }
    cl_resp_close(&slow);
    cl_resp_close(&fast);
    free(val);
    cl_finish(&c);
}

Test(transport_data, a_client_that_half_closes_still_gets_its_answer)
{
    int shard = cl_free_port(), port = cl_free_port();
    char *got;
    const char *req = "SET hc value\r\nGET hc\r\n", *want = "+OK\r\n$5\r\nvalue\r\n";
    cl_start(&c, NULL);
    cl_redis_db(&c, "hc", port, 2, shard);
    got = half_close_exchange(cl_addr(2), shard, req);
    cr_assert_str_eq(got, want, "redis itself answers a half-closed client");
    free(got);
    for (int n = 1; n <= CL_NODES; n++) {
        got = half_close_exchange(cl_addr(n), port, req);
        cr_assert_str_eq(got, want, "through node %d (encrypted): '%s'", n, got);
        free(got);
    }
    cl_set_encryption(&c, "hc", 0);
    cr_assert(cl_wait_log(&c.tp[1], 0, "data_internode_encryption disabled", CL_WAIT_MS));
    got = half_close_exchange(cl_addr(1), port, req);
    cr_assert_str_eq(got, want, "through node 1 (plaintext): '%s'", got);
    free(got);
    cl_finish(&c);
}

/* Node `from`'s data-plane streams in the capture, in the order they were opened: for each,
 * whether node 2 resumed its TLS session (its ServerHello carries the pre_shared_key extension,
 * 41, which is in clear in TLS 1.3). Returns how many streams; resumed[] gets 0/1 each. */
static int data_streams(capture *cap, int from, int *resumed, int max)
{
    char *hellos = NULL, *servers = NULL;
    int n = 0, rc;
    rc = cl_sh(&hellos, 60,
               "/usr/bin/tshark -r '%s' -d tcp.port==%d,tls -Y 'tls.handshake.type == 1 && tls.handshake.extensions_server_name == \"data.ine\" "
               "&& ip.src == %s' -T fields -e tcp.stream 2>/dev/null",
               cap->file, c.port, cl_addr(from));
    cr_assert_eq(rc, 0, "tshark -r: %s", hellos);
    rc = cl_sh(&servers, 60, "/usr/bin/tshark -r '%s' -d tcp.port==%d,tls -Y 'tls.handshake.type == 2' -T fields -e tcp.stream -e tls.handshake.extension.type 2>/dev/null",
               cap->file, c.port);
    cr_assert_eq(rc, 0, "tshark -r: %s", servers);
    for (char *l = hellos, *nl; *l && n < max; l = nl + 1) {
        if (!(nl = strchr(l, '\n'))) break;
        *nl = 0;
        char want[32], *s;
        snprintf(want, sizeof want, "%s\t", l);
        /* A ServerHello line: "<stream>\t<ext>,<ext>,...". */
        for (s = servers; s && strncmp(s, want, strlen(want)); s = strchr(s, '\n'), s = s ? s + 1 : NULL) {}
        cr_assert(s, "stream %s: a ClientHello from node %d with no ServerHello from node 2", l, from);
        char exts[128];
        snprintf(exts, sizeof exts, ",%.*s,", (int)strcspn(s + strlen(want), "\n"), s + strlen(want));
        resumed[n++] = strstr(exts, ",41,") != NULL;
    }
    free(hellos);
    free(servers);
    return n;
}

/* Each SET is a new redis-cli connection, so a new data-plane stream from node 1 to node 2. */
static void new_streams(capture *cap, const char *filter, int shard_port, int db_port, int count, const char *tag)
{
    char m[96], key[32];
    marker(m, sizeof m, tag);
    capture_start(cap, tag, filter);
    capture_ready(cap, shard_port);
    for (int i = 0; i < count; i++) {
        snprintf(key, sizeof key, "%s-%d", tag, i);
        char *r = cl_redis_cli(cl_addr(1), db_port, "SET", key, m, NULL);
        cr_assert(r && !strcmp(r, "OK"), "SET %d through node 1: %s", i, r ? r : "(failed)");
        free(r);
    }
    capture_stop(cap, m);
}

Test(transport_data, streams_share_one_tls_connection_per_node_pair_and_after_a_rotation_new_ones_take_a_new_one)
{
    char filter[128], *out = NULL, *err = NULL;
    capture cap;
    cl_resp keep;
    int shard_port = cl_free_port(), db_port = cl_free_port(), resumed[16], n;

    cl_start(&c, NULL);
    cl_redis_db(&c, "cache", db_port, 2, shard_port);
    snprintf(filter, sizeof filter, "tcp port %d or tcp port %d", c.port, shard_port);

    /* Four clients one after the other: one TLS connection from node 1 carries them all. */
    new_streams(&cap, filter, shard_port, db_port, 4, "mux-before");
    n = data_streams(&cap, 1, resumed, 16);
    cr_assert_eq(n, 1, "four SETs through node 1, one data-plane TLS connection (got %d)", n);
    free(cap.file);
    cr_assert_eq(cl_resp_open(&keep, cl_addr(1), db_port), 0);
    ping(&keep, "a client held across the rotation, before it");
    cr_assert_eq(conns_to(c.tp[1].pid, cl_addr(2), c.port), 2, "node 1 to node 2's P: its control stream and one data-plane connection");

    /* A rotation: new clients go on a new connection, a full handshake on the new certificates;
     * the held client's stream stays where it was, and that connection closes after it. */
    cr_assert_eq(cl_inectl(&c, &out, &err, "cluster", "certificate", "rotate", NULL), 0, "rotate: %s", err);
    free(out);
    free(err);
    cr_assert(cl_wait_converged(&c, CL_WAIT_MS), "every node activated its new certificates");
    new_streams(&cap, filter, shard_port, db_port, 3, "mux-after");
    n = data_streams(&cap, 1, resumed, 16);
    cr_assert_eq(n, 1, "three SETs after the rotation, one new data-plane connection (got %d)", n);
    cr_assert_not(resumed[0], "its handshake was a full one");
    free(cap.file);
    ping(&keep, "the held client after the rotation");
    cr_assert_eq(conns_to(c.tp[1].pid, cl_addr(2), c.port), 3, "the control stream, the old connection (draining) and the new one");
    cl_resp_close(&keep);
    for (int64_t end = cl_now_ms() + CL_WAIT_MS; conns_to(c.tp[1].pid, cl_addr(2), c.port) != 2;) {
        cr_assert(cl_now_ms() < end, "the old connection closed once its last stream ended");
        usleep(50 * 1000);
    }
    cl_finish(&c);
}

/* INE_TRANSPORT_MUX=0 (the benchmark's comparison): a TLS connection per stream. */
Test(transport_data, without_mux_streams_resume_their_tls_sessions_and_a_rotation_makes_the_next_handshake_full)
{
    char filter[128], *out = NULL, *err = NULL;
    capture cap;
    int shard_port = cl_free_port(), db_port = cl_free_port(), resumed[16], n;

    setenv("INE_TRANSPORT_MUX", "0", 1); /* inherited by the transports this test starts */
    cl_start(&c, NULL);
    cl_redis_db(&c, "cache", db_port, 2, shard_port);
    snprintf(filter, sizeof filter, "tcp port %d or tcp port %d", c.port, shard_port);

    /* Once node 1 holds a ticket from node 2, its next streams skip the certificates. */
    new_streams(&cap, filter, shard_port, db_port, 4, "resume-before");
    n = data_streams(&cap, 1, resumed, 16);
    cr_assert_eq(n, 4, "four SETs, four data-plane streams from node 1 (got %d)", n);
    for (int i = 1; i < n; i++) cr_assert(resumed[i], "stream %d of %d from node 1 resumed its TLS session", i + 1, n);
    free(cap.file);

    /* A rotation: the first stream after it is a full handshake (on the new certificates, which
     * test_transport_rotation checks are the ones served), and the ones after resume again. */
    cr_assert_eq(cl_inectl(&c, &out, &err, "cluster", "certificate", "rotate", NULL), 0, "rotate: %s", err);
    free(out);
    free(err);
    cr_assert(cl_wait_converged(&c, CL_WAIT_MS), "every node activated its new certificates");
    new_streams(&cap, filter, shard_port, db_port, 3, "resume-after");
    n = data_streams(&cap, 1, resumed, 16);
    cr_assert_eq(n, 3, "three SETs, three data-plane streams from node 1 (got %d)", n);
    cr_assert_not(resumed[0], "the first stream after the rotation made a full handshake");
    cr_assert(resumed[1] && resumed[2], "the streams after it resumed the new session");
    free(cap.file);
    cl_finish(&c);
}

/* --- TLS 1.2 ----------------------------------------------------------------------------------- */

/* Whether tshark's field output `list` has a line for TCP stream `s` (its first field); its
 * second field (up to the line's end) into `rest` when asked. */
static int stream_line(const char *list, const char *s, char *rest, size_t len)
{
    size_t n = strlen(s);
    for (const char *l = list; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, s, n) || (l[n] != '\n' && l[n] != '\t')) continue;
        if (rest) snprintf(rest, len, ",%.*s,", l[n] == '\t' ? (int)strcspn(l + n + 1, "\n") : 0, l + n + 1);
        return 1;
    }
    return 0;
}

typedef struct {
    int asked;  /* its ClientHello asked for a ticket (session_ticket extension, 35) */
    int full;   /* node 2 sent its certificate: a full handshake, not a resumed one */
    int ticket; /* node 2 sent a NewSessionTicket */
} tls12_stream;

/* Over TLS 1.2 the whole handshake is in clear: node `from`'s data-plane streams in the capture,
 * in the order they were opened. Each ServerHello must have chosen TLS 1.2 (it carries no
 * supported_versions extension, 43, which a TLS 1.3 one always does). */
static int tls12_streams(capture *cap, int from, tls12_stream *st, int max)
{
    char *hellos = NULL, *lists[3] = {NULL, NULL, NULL}, ext[256];
    char certs[96];
    const char *filters[3] = {"tls.handshake.type == 2", certs, "tls.handshake.type == 4"};
    int n = 0;
    snprintf(certs, sizeof certs, "tls.handshake.type == 11 && ip.src == %s", cl_addr(2));
    cr_assert_eq(cl_sh(&hellos, 60,
                       "/usr/bin/tshark -r '%s' -d tcp.port==%d,tls -Y 'tls.handshake.type == 1 && tls.handshake.extensions_server_name == "
                       "\"data.ine\" && ip.src == %s' -T fields -e tcp.stream -e tls.handshake.extension.type 2>/dev/null",
                       cap->file, c.port, cl_addr(from)), 0, "tshark -r: %s", hellos);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(cl_sh(&lists[i], 60, "/usr/bin/tshark -r '%s' -d tcp.port==%d,tls -Y '%s' -T fields -e tcp.stream -e tls.handshake.extension.type 2>/dev/null",
                           cap->file, c.port, filters[i]), 0, "tshark -r: %s", lists[i]);
    }
    for (char *l = hellos, *nl; *l && n < max; l = nl + 1) {
        char id[32];
        if (!(nl = strchr(l, '\n'))) break;
        *nl = 0;
        snprintf(id, sizeof id, "%.*s", (int)strcspn(l, "\t"), l);
        stream_line(l, id, ext, sizeof ext);
        st[n].asked = strstr(ext, ",35,") != NULL;
        cr_assert(stream_line(lists[0], id, ext, sizeof ext), "stream %s: no ServerHello from node 2", id);
        cr_assert_null(strstr(ext, ",43,"), "stream %s: node 2 answered in TLS 1.3 (%s)", id, ext);
        st[n].full = stream_line(lists[1], id, NULL, 0);
        st[n++].ticket = stream_line(lists[2], id, NULL, 0);
    }
    free(hellos);
    for (int i = 0; i < 3; i++) free(lists[i]);
    return n;
}

/* TLS 1.2 between the nodes (capped through OpenSSL's configuration, as bench/transport/run.sh
 * does) and a TLS connection per stream: node 1 asks for tickets and resumes with them; started
 * again with INE_TRANSPORT_RESUME=0 its hellos ask for none, node 2 sends none, and every stream
 * is a full handshake. */
Test(transport_data, over_tls_1_2_streams_resume_by_ticket_and_with_resumption_off_ask_for_none)
{
    char filter[128], *dir = tu_tmpdir(), *cnf;
    static const char conf[] = "openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n[sys]\nMaxProtocol = TLSv1.2\n";
    capture cap;
    tls12_stream s[16];
    int shard_port = cl_free_port(), db_port = cl_free_port(), n;
    size_t mark;

    cr_assert_not_null(dir);
    cnf = tu_path(dir, "tls12.cnf");
    cr_assert_eq(tu_write_file(cnf, conf, strlen(conf)), 0);
    setenv("OPENSSL_CONF", cnf, 1); /* inherited by every process this test starts */
    setenv("INE_TRANSPORT_MUX", "0", 1);
    cl_start(&c, NULL);
    cl_redis_db(&c, "cache", db_port, 2, shard_port);
    snprintf(filter, sizeof filter, "tcp port %d or tcp port %d", c.port, shard_port);

    new_streams(&cap, filter, shard_port, db_port, 3, "tls12-resume");
    n = tls12_streams(&cap, 1, s, 16);
    cr_assert_eq(n, 3, "three SETs, three data-plane streams from node 1 (got %d)", n);
    for (int i = 0; i < n; i++) cr_assert(s[i].asked, "stream %d of %d asked for a ticket", i + 1, n);
    cr_assert(s[0].full && s[0].ticket, "the first stream: a full handshake that brought a ticket");
    for (int i = 1; i < n; i++) cr_assert_not(s[i].full, "stream %d of %d resumed (node 2 sent no certificate)", i + 1, n);
    free(cap.file);

    cr_assert_eq(cl_tp_stop(&c, 1, SIGTERM), 0, "node 1's transport stopped cleanly");
    setenv("INE_TRANSPORT_RESUME", "0", 1);
    mark = cl_log_mark(&c.tp[1]);
    cl_tp_start(&c, 1);
    cr_assert(cl_wait_links(&c, 1, mark, CL_WAIT_MS), "node 1 is back");
    new_streams(&cap, filter, shard_port, db_port, 3, "tls12-no-resume");
    n = tls12_streams(&cap, 1, s, 16);
    cr_assert_eq(n, 3, "three SETs, three data-plane streams from node 1 (got %d)", n);
    for (int i = 0; i < n; i++) {
        cr_assert_not(s[i].asked, "stream %d of %d: resumption off, yet its hello asked for a ticket", i + 1, n);
        cr_assert(s[i].full, "stream %d of %d: a full handshake", i + 1, n);
        cr_assert_not(s[i].ticket, "stream %d of %d: node 2 sent a ticket nobody asked for", i + 1, n);
    }
    free(cap.file);
    cl_finish(&c);
    tu_rmrf(dir);
    free(cnf);
    free(dir);
}
