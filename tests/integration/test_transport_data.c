/* test_transport_data.c — the data plane through the real binaries: a redis-server shard
 * behind node 2, redis-cli through node 1's and node 3's endpoints with data_internode_encryption
 * on (a capture of port P holds TLS records and never the marker) and off (nothing crosses P,
 * the marker goes straight to the shard); toggles close only the toggled database's remote
 * connections; a killed transport rebuilds from the log and the others reconnect. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    cl_redis_start(&c, cl_addr(2), shard_port, NULL);
    snprintf(filter, sizeof filter, "%s:%d", cl_addr(2), shard_port);
    cl_create_db(&c, "cache", db_port, 2, filter, 1);

    /* Encryption on: node 1 and node 3 reach the shard through node 2's port P, in TLS. */
    marker(m1, sizeof m1, "tls");
    snprintf(filter, sizeof filter, "tcp port %d or tcp port %d", c.port, shard_port);
    capture_start(&cap, "capture-on", filter);
    set_get(1, get13, 3, db_port, m1, m1);
    set_get(3, (int[]){1}, 1, db_port, "second-key", m1);
    capture_stop(&cap, m1);
    cr_assert(capture_has(&cap, shard_port, m1), "the marker reached the shard (the capture works)");
    cr_assert_not(capture_has(&cap, c.port, m1), "the marker never crossed port P in clear");
    cr_assert_geq(capture_count(&cap, "tls.handshake.type == 1 && tls.handshake.extensions_server_name == \"data.ine\""), 2,
                  "node 1 and node 3 opened data-plane TLS streams to node 2");
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
