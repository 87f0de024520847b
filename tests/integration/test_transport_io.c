/* test_transport_io.c — how many system calls the relay makes, through the real binaries (a
 * redis-server shard behind node 2, clients through node 1's endpoint, TLS across P): bulk
 * leaves a node in writes of several TLS records, and a request or a reply is read once per
 * node, not once more to hear "would block". Counted with /proc/PID/io, so each figure is
 * exact whatever the machine's speed. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster.h"
#include "testutil.h"

static cl_t c;

static void teardown(void) { cl_stop(&c); }
TestSuite(transport_io, .fini = teardown, .timeout = 150);

/* read() or write() calls a process has made (/proc/PID/io `syscr: ` / `syscw: `): OpenSSL
 * reads and writes TLS records with read() and write(); ine's plaintext sockets use recv() and
 * send(), which these do not count. */
static long io_calls(pid_t pid, const char *field)
{
    char path[64], line[128];
    long n = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    cr_assert_not_null(f = fopen(path, "r"), "%s is readable", path);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, strlen(field))) n = atol(line + strlen(field));
    fclose(f);
    cr_assert_geq(n, 0, "%s has %s", path, field);
    return n;
}

static long write_calls(pid_t pid) { return io_calls(pid, "syscw: "); }
static long read_calls(pid_t pid) { return io_calls(pid, "syscr: "); }

/* Bulk leaves a node in writes of several TLS records (up to 64 KiB), not one write() per
 * 16 KiB record: 8 MiB is 512 records, and each way the sending node makes fewer than half
 * that many write() calls in all (its log and control-plane heartbeats included). */
Test(transport_io, bulk_crosses_in_writes_of_several_tls_records)
{
    enum { VAL = 8 << 20, RECORDS = VAL / 16384 };
    int shard = cl_free_port(), port = cl_free_port();
    char reply[64], *val = malloc(VAL), *back = malloc(VAL + 64), hdr[64];
    long w0, w1;
    size_t hl, got = 0;
    cl_resp r;

    cl_start(&c, NULL);
    cl_redis_db(&c, "bulk", port, 2, shard);
    for (int i = 0; i < VAL; i++) val[i] = (char)('a' + (i * 7 + i / 4096) % 26);
    cr_assert_eq(cl_resp_open(&r, cl_addr(1), port), 0);
    cr_assert_eq(cl_resp_cmd(&r, reply, sizeof reply, "PING"), 0);

    /* Node 1 -> node 2: SET of 8 MiB. */
    hl = (size_t)snprintf(hdr, sizeof hdr, "*3\r\n$3\r\nSET\r\n$4\r\nbulk\r\n$%d\r\n", VAL);
    w0 = write_calls(c.tp[1].pid);
    cr_assert_eq(send(r.fd, hdr, hl, MSG_NOSIGNAL), (ssize_t)hl);
    for (size_t off = 0; off < VAL;) {
        ssize_t n = send(r.fd, val + off, VAL - off, MSG_NOSIGNAL);
        cr_assert_gt(n, 0, "sent %zu of %d bytes", off, VAL);
        off += (size_t)n;
    }
    cr_assert_eq(send(r.fd, "\r\n", 2, MSG_NOSIGNAL), 2);
    while (got < 5) {
        ssize_t n = recv(r.fd, reply + got, 5 - got, 0);
        cr_assert_gt(n, 0, "the SET's reply");
        got += (size_t)n;
    }
    cr_assert(!memcmp(reply, "+OK\r\n", 5), "the SET's reply: %.5s", reply);
    w1 = write_calls(c.tp[1].pid);
    cr_assert_lt(w1 - w0, RECORDS / 2, "node 1 sent %d records in %ld write() calls", RECORDS, w1 - w0);

    /* Node 2 -> node 1: the value back, byte for byte. */
    w0 = write_calls(c.tp[2].pid);
    cr_assert_eq(send(r.fd, "GET bulk\r\n", 10, MSG_NOSIGNAL), 10);
    hl = (size_t)snprintf(hdr, sizeof hdr, "$%d\r\n", VAL);
    for (got = 0; got < hl + VAL + 2;) {
        ssize_t n = recv(r.fd, back + got, hl + VAL + 2 - got, 0);
        cr_assert_gt(n, 0, "got %zu of %zu bytes of the GET", got, hl + VAL + 2);
        got += (size_t)n;
    }
    w1 = write_calls(c.tp[2].pid);
    cr_assert(!memcmp(back, hdr, hl) && !memcmp(back + hl, val, VAL) && !memcmp(back + hl + VAL, "\r\n", 2), "the value came back intact");
    cr_assert_lt(w1 - w0, RECORDS / 2, "node 2 sent %d records in %ld write() calls", RECORDS, w1 - w0);
    cl_resp_close(&r);
    free(val);
    free(back);
    cl_finish(&c);
}

/* Requests one at a time (a ping, the latency benchmark's workload): the TLS record carrying
 * each comes in one read(), and the relay stops there, the socket being empty, instead of
 * reading again only to hear "would block" (two of the eight system calls per request and
 * node before). 2,000 PINGs through node 1 to the shard behind node 2: node 2 reads each
 * request and node 1 each reply in one read() — at least one each, and fewer than 1.5 with
 * heartbeats and credit updates counted in. */
Test(transport_io, a_request_and_its_reply_are_read_once_per_node)
{
    enum { PINGS = 2000 };
    int shard = cl_free_port(), port = cl_free_port();
    char reply[64];
    long r1, r2;
    cl_resp r;

    cl_start(&c, NULL);
    cl_redis_db(&c, "ping", port, 2, shard);
    cr_assert_eq(cl_resp_open(&r, cl_addr(1), port), 0);
    cr_assert_eq(cl_resp_cmd(&r, reply, sizeof reply, "PING"), 0, "the stream is open");
    r1 = read_calls(c.tp[1].pid);
    r2 = read_calls(c.tp[2].pid);
    for (int i = 0; i < PINGS; i++) {
        cr_assert_eq(cl_resp_cmd(&r, reply, sizeof reply, "PING"), 0, "PING %d of %d", i + 1, PINGS);
        cr_assert_str_eq(reply, "+PONG", "PING %d of %d", i + 1, PINGS);
    }
    r1 = read_calls(c.tp[1].pid) - r1;
    r2 = read_calls(c.tp[2].pid) - r2;
    cr_log_info("%d PINGs: read() calls on node 1 %ld, node 2 %ld", PINGS, r1, r2);
    cr_assert_geq(r2, PINGS, "node 2 read %d requests from P in %ld read() calls: did they cross in TLS?", PINGS, r2);
    cr_assert_lt(r2, PINGS * 3 / 2, "node 2 read %d requests from P in %ld read() calls", PINGS, r2);
    cr_assert_geq(r1, PINGS, "node 1 read %d replies from P in %ld read() calls: did they cross in TLS?", PINGS, r1);
    cr_assert_lt(r1, PINGS * 3 / 2, "node 1 read %d replies from P in %ld read() calls", PINGS, r1);
    cl_resp_close(&r);
    cl_finish(&c);
}
