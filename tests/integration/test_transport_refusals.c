/* test_transport_refusals.c — what port P refuses, each case driven by a real client against
 * node 2 while a good stream (a redis connection through node 1, crossing node 2's P in TLS)
 * keeps flowing: plaintext and garbage, TLS 1.0/1.1, suites outside the four (openssl
 * s_client), no client certificate, a foreign CA's certificate, an expired one, a node that is
 * not in the cluster, a data-plane certificate on the control plane, an unknown database, a
 * client stalling in the handshake or before its stream header, and hundreds of half-open
 * connections. Every refusal must be logged with its reason on the transport's stderr. And
 * the other way round: a node opening a stream refuses an impostor (openssl s_server) at its
 * peer's address with a foreign certificate, another node's, or the wrong plane's, and the
 * client's bytes never reach it. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster.h"
#include "testutil.h"

#include "ine/v1/transport.pb-c.h"

static cl_t c;
static cl_load good;
static int db_port;
static uint32_t db_uid;
static char *n1dp_cert, *n1dp_key, *n1cp_cert, *n1cp_key;

static SSL_SESSION *last_ticket;

static void teardown(void)
{
    SSL_SESSION_free(last_ticket);
    cl_load_stop(&good);
    cl_stop(&c);
    free(n1dp_cert);
    free(n1dp_key);
    free(n1cp_cert);
    free(n1cp_key);
}
TestSuite(transport_refusals, .fini = teardown, .timeout = 150);

/* A cluster with a redis shard behind node 2 and the good stream running through node 1. */
static void start(void)
{
    int shard = cl_free_port();
    char addr[64];
    cl_opts o = {.handshake_ms = 700};
    cl_start(&c, &o);
    cl_redis_start(&c, cl_addr(2), shard, NULL);
    db_port = cl_free_port();
    snprintf(addr, sizeof addr, "%s:%d", cl_addr(2), shard);
    db_uid = cl_create_db(&c, "good", db_port, 2, addr, 1);
    n1dp_cert = cl_path(&c, "n1-dp.pem");
    n1dp_key = cl_path(&c, "n1-dp.key");
    n1cp_cert = cl_path(&c, "n1-cp.pem");
    n1cp_key = cl_path(&c, "n1-cp.key");
    cl_export_cert(&c, 1, 2, n1dp_cert, n1dp_key);
    cl_export_cert(&c, 1, 1, n1cp_cert, n1cp_key);
    cl_load_start(&good, cl_addr(1), db_port, "good-stream");
    cr_assert(cl_load_progress(&good, 20, CL_WAIT_MS), "the good stream flows: %s", good.last_error);
}

/* The good stream made progress since the last check (so it flowed across the refusal). */
static void good_flows(const char *after)
{
    cr_assert(cl_load_progress(&good, 10, CL_WAIT_MS), "the good stream stopped after %s: %s", after, good.last_error);
}

/* Wait for node 2 to log a refusal line with `reason` after mark. */
static void refused(size_t mark, const char *reason)
{
    for (int64_t end = cl_now_ms() + CL_WAIT_MS;;) {
        char *log = cl_log_since(&c.tp[2], mark), *l, *save = NULL;
        int found = 0;
        for (l = strtok_r(log, "\n", &save); l && !found; l = strtok_r(NULL, "\n", &save))
            found = strstr(l, "warn ine-transport-2 refused stream from 127.0.0.") && strstr(l, reason);
        if (!found && cl_now_ms() > end) cr_assert_fail("node 2 did not log a refusal for '%s'; its log since:\n%s", reason, cl_log_since(&c.tp[2], mark));
        free(log);
        if (found) return;
        usleep(50 * 1000);
    }
}

/* openssl s_client against node 2's P; -ign_eof keeps it reading until the server closes. */
static int s_client(char **out, const char *fmt_args)
{
    return cl_sh(out, 30, "openssl s_client -connect %s:%d -ign_eof %s </dev/null", cl_addr(2), c.port, fmt_args);
}

/* Send bytes on a raw TCP connection to node 2's P and wait for the server to close it. */
static void raw_refused(const void *bytes, size_t len, const char *reason)
{
    size_t mark = cl_log_mark(&c.tp[2]);
    cl_resp r;
    cr_assert_eq(cl_resp_open(&r, cl_addr(2), c.port), 0);
    if (len) cr_assert_eq(send(r.fd, bytes, len, MSG_NOSIGNAL), (ssize_t)len);
    cr_assert(cl_resp_wait_closed(&r, CL_WAIT_MS), "the server closed the connection");
    cl_resp_close(&r);
    refused(mark, reason);
}

Test(transport_refusals, plaintext_garbage_old_protocols_and_other_suites_are_refused_and_logged)
{
    uint8_t garbage[4096];
    char *out = NULL, args[256];
    size_t mark;
    start();

    raw_refused("PING\r\n", 6, "TLS handshake failed");
    good_flows("plaintext");
    raw_refused("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, "TLS handshake failed: http request");
    good_flows("an HTTP request");
    for (size_t i = 0; i < sizeof garbage; i++) garbage[i] = (uint8_t)(i * 7919u >> 3);
    raw_refused(garbage, sizeof garbage, "TLS handshake failed");
    good_flows("garbage");

    /* TLS 1.0 and 1.1 (OpenSSL 3 needs security level 0 to even offer them). */
    const char *old[] = {"-tls1", "-tls1_1"};
    for (int i = 0; i < 2; i++) {
        mark = cl_log_mark(&c.tp[2]);
        snprintf(args, sizeof args, "-servername data.ine -cert %s -key %s %s -cipher 'DEFAULT:@SECLEVEL=0'", n1dp_cert, n1dp_key, old[i]);
        cr_assert_neq(s_client(&out, args), 0, "%s handshake completed:\n%s", old[i], out);
        cr_assert(strstr(out, "alert protocol version") || strstr(out, "unsupported protocol"), "%s: %s", old[i], out);
        free(out);
        refused(mark, "TLS handshake failed: unsupported protocol");
        good_flows(old[i]);
    }

    /* Suites outside the four, with a perfectly good client certificate. */
    const char *bad[] = {"-tls1_2 -cipher 'ECDHE-RSA-CHACHA20-POLY1305'", "-tls1_2 -cipher 'ECDHE-RSA-AES256-SHA384'",
                         "-tls1_2 -cipher 'AES256-GCM-SHA384'", "-tls1_2 -cipher 'DHE-RSA-AES128-GCM-SHA256'",
                         "-tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256", "-tls1_3 -ciphersuites TLS_AES_128_CCM_SHA256"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mark = cl_log_mark(&c.tp[2]);
        snprintf(args, sizeof args, "-servername data.ine -cert %s -key %s %s", n1dp_cert, n1dp_key, bad[i]);
        cr_assert_neq(s_client(&out, args), 0, "%s completed:\n%s", bad[i], out);
        cr_assert(strstr(out, "handshake failure"), "%s: %s", bad[i], out);
        free(out);
        refused(mark, "TLS handshake failed: no shared cipher");
        good_flows(bad[i]);
    }

    /* The control: the same client with one of the four completes and is only cut for not
     * sending a stream header in time. */
    mark = cl_log_mark(&c.tp[2]);
    snprintf(args, sizeof args, "-servername data.ine -cert %s -key %s -tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256", n1dp_cert, n1dp_key);
    cr_assert_eq(s_client(&out, args), 0, "%s", out);
    cr_assert(strstr(out, "Cipher is ECDHE-RSA-AES128-GCM-SHA256"), "%s", out);
    free(out);
    refused(mark, "no stream header in time");
    cr_assert_eq(cl_load_stop(&good), 0, "the good stream had errors: %s", good.last_error);
    cl_finish(&c);
}

/* --- a TLS client of our own, to speak the stream protocol ------------------------------------- */

typedef struct {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
} tls_client;

/* The TLS 1.3 session tickets our client received (OpenSSL hands each over as a session), the
 * last one kept. */
static int tickets;

static int on_ticket(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    tickets++;
    SSL_SESSION_free(last_ticket);
    last_ticket = sess;
    return 1;
}

/* Connect to node 2's P with SNI and a client certificate; 0 once the handshake completed. */
static int tls_open(tls_client *t, const char *sni, const char *cert, const char *key)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c.port)};
    struct timeval tv = {10, 0};
    memset(t, 0, sizeof *t);
    t->fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(t->fd, 0);
    setsockopt(t->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(t->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    inet_pton(AF_INET, cl_addr(2), &sa.sin_addr);
    cr_assert_eq(connect(t->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert(t->ctx = SSL_CTX_new(TLS_client_method()));
    cr_assert_eq(SSL_CTX_use_certificate_chain_file(t->ctx, cert), 1);
    cr_assert_eq(SSL_CTX_use_PrivateKey_file(t->ctx, key, SSL_FILETYPE_PEM), 1);
    SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(t->ctx, on_ticket);
    cr_assert(t->ssl = SSL_new(t->ctx));
    SSL_set_fd(t->ssl, t->fd);
    SSL_set_tlsext_host_name(t->ssl, sni);
    return SSL_connect(t->ssl) == 1 ? 0 : -1;
}

static void tls_close(tls_client *t)
{
    if (t->ssl) SSL_free(t->ssl);
    if (t->ctx) SSL_CTX_free(t->ctx);
    if (t->fd >= 0) close(t->fd);
    ERR_clear_error();
    memset(t, 0, sizeof *t);
    t->fd = -1;
}

static int tls_read_all(tls_client *t, uint8_t *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        int n = SSL_read(t->ssl, buf + got, (int)(len - got));
        if (n <= 0) return -1;
        got += (size_t)n;
    }
    return 0;
}

/* Send a StreamHeader and read the StreamAccept (NULL if the server closed first). */
static Ine__V1__StreamAccept *tls_header_send(tls_client *t, const Ine__V1__StreamHeader *h)
{
    uint8_t buf[512];
    size_t n = protobuf_c_message_get_packed_size(&h->base);
    buf[0] = (uint8_t)(n >> 8);
    buf[1] = (uint8_t)n;
    protobuf_c_message_pack(&h->base, buf + 2);
    if (SSL_write(t->ssl, buf, (int)n + 2) != (int)n + 2) return NULL;
    if (tls_read_all(t, buf, 2) < 0) return NULL;
    n = ((size_t)buf[0] << 8) | buf[1];
    if (n > sizeof buf || tls_read_all(t, buf, n) < 0) return NULL;
    return ine__v1__stream_accept__unpack(NULL, n, buf);
}

static Ine__V1__StreamAccept *tls_header(tls_client *t, int plane, uint32_t db, uint32_t from)
{
    Ine__V1__StreamHeader h = INE__V1__STREAM_HEADER__INIT;
    h.plane = plane;
    h.db_uid = db;
    h.from_node_uid = from;
    return tls_header_send(t, &h);
}

/* 1 when the server ended the TLS connection (alert or close) within the timeout. */
static int tls_closed(tls_client *t)
{
    uint8_t b[64];
    int n = SSL_read(t->ssl, b, sizeof b);
    return n <= 0 && SSL_get_error(t->ssl, n) != SSL_ERROR_WANT_READ;
}

/* --- certificates made for the occasion --------------------------------------------------------- */

/* A leaf for node `node`'s `plane` ("dp"/"cp") signed by ca/cakey, valid `days` from when
 * `faketime` (environment assignments for libfaketime, or "") says now is. */
/* A leaf whose SAN says spiffe://<cluster>/node/<node_text>/<plane> (IP 127.0.0.<ip_node>). */
static void make_leaf_as(const char *name, int ip_node, const char *node_text, const char *plane, const char *ca, const char *cakey,
                         const char *faketime, int days)
{
    char *out = NULL;
    int rc = cl_sh(&out, 60,
                   "cd %s && printf 'subjectAltName=IP:127.0.0.%d,URI:spiffe://%s/node/%s/%s\\nextendedKeyUsage=serverAuth,clientAuth\\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\\nbasicConstraints=critical,CA:FALSE\\n' > %s.ext && "
                   "openssl req -newkey rsa:2048 -nodes -keyout %s.key -out %s.csr -subj '/CN=%s %s' && "
                   "%s openssl x509 -req -in %s.csr -CA %s -CAkey %s -CAcreateserial -days %d -extfile %s.ext -out %s.pem",
                   c.dir, ip_node, cl_state(&c)->cluster.uid, node_text, plane, name, name, name, name, plane, faketime, name, ca,
                   cakey, days, name, name);
    cr_assert_eq(rc, 0, "making %s: %s", name, out);
    free(out);
}

static void make_leaf(const char *name, int node, const char *plane, const char *ca, const char *cakey, const char *faketime, int days)
{
    char text[16];
    snprintf(text, sizeof text, "%d", node);
    make_leaf_as(name, node, text, plane, ca, cakey, faketime, days);
}

Test(transport_refusals, certificates_that_are_missing_foreign_expired_unknown_or_for_the_wrong_plane_are_refused)
{
    char *out = NULL, args[512], *ca, *cakey, *p;
    size_t mark;
    tls_client t;
    Ine__V1__StreamAccept *a;
    start();
    ca = cl_path(&c, "ca.pem");
    cakey = cl_path(&c, "ca.key");
    cl_export_ca(&c, ca, cakey);

    /* No client certificate: over TLS 1.2 the handshake itself fails; over TLS 1.3 the server
     * refuses right after it. */
    for (const char *v = "-tls1_2"; v; v = !strcmp(v, "-tls1_2") ? "-tls1_3" : NULL) {
        mark = cl_log_mark(&c.tp[2]);
        snprintf(args, sizeof args, "-servername data.ine %s", v);
        int rc = s_client(&out, args);
        if (!strcmp(v, "-tls1_2")) cr_assert_neq(rc, 0, "TLS 1.2 without a client certificate completed:\n%s", out);
        free(out);
        refused(mark, "TLS handshake failed: peer did not return a certificate");
        good_flows("no client certificate");
    }

    /* A certificate naming node 1's data plane, but from a CA of our own. */
    cr_assert_eq(cl_sh(&out, 60,
                       "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout foreign-ca.key -out foreign-ca.pem -days 30 "
                       "-subj '/CN=ine cluster CA tp' -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
                       c.dir), 0, "%s", out);
    free(out);
    make_leaf("foreign", 1, "dp", "foreign-ca.pem", "foreign-ca.key", "", 30);
    mark = cl_log_mark(&c.tp[2]);
    snprintf(args, sizeof args, "-servername data.ine -cert %s/foreign.pem -key %s/foreign.key -tls1_2", c.dir, c.dir);
    cr_assert_neq(s_client(&out, args), 0, "a foreign CA's certificate was accepted:\n%s", out);
    free(out);
    refused(mark, "certificate refused: unable to get local issuer certificate");
    good_flows("a foreign certificate");

    /* Node 1's identity, signed by the cluster CA itself, but expired (issued 100 days ago for 30). */
    {
        char pre[512];
        const char *preload = tu_faketime_preload(0);
        cr_assert_not_null(preload, "libfaketime is installed by scripts/install-deps.sh");
        snprintf(pre, sizeof pre, "%s FAKETIME=-100d", preload);
        make_leaf("expired", 1, "dp", "ca.pem", "ca.key", pre, 30);
    }
    mark = cl_log_mark(&c.tp[2]);
    snprintf(args, sizeof args, "-servername data.ine -cert %s/expired.pem -key %s/expired.key -tls1_2", c.dir, c.dir);
    cr_assert_neq(s_client(&out, args), 0, "an expired certificate was accepted:\n%s", out);
    free(out);
    refused(mark, "certificate refused: certificate has expired");
    good_flows("an expired certificate");

    /* Signed by the cluster CA, valid, but for a node the cluster does not have. */
    make_leaf("stranger", 9, "dp", "ca.pem", "ca.key", "", 30);
    mark = cl_log_mark(&c.tp[2]);
    snprintf(args, sizeof args, "-servername data.ine -cert %s/stranger.pem -key %s/stranger.key", c.dir, c.dir);
    s_client(&out, args);
    free(out);
    refused(mark, "node 9 is not a node of this cluster");
    good_flows("a certificate of an unknown node");

    /* Signed by the cluster CA with node 1's address, but its identity is not exactly
     * node/1/dp: read loosely, each of these would be node 1. */
    {
        static const char *odd[] = {"01", "+1", "-4294967295", "1x"};
        for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
            char name[32], why[160];
            snprintf(name, sizeof name, "odd%zu", i);
            make_leaf_as(name, 1, odd[i], "dp", "ca.pem", "ca.key", "", 30);
            mark = cl_log_mark(&c.tp[2]);
            snprintf(args, sizeof args, "-servername data.ine -cert %s/%s.pem -key %s/%s.key", c.dir, name, c.dir, name);
            s_client(&out, args);
            free(out);
            refused(mark, "the certificate is not a data-plane certificate of this cluster");
            snprintf(why, sizeof why, "a certificate naming node '%s'", odd[i]);
            good_flows(why);
        }
    }

    /* Node 1's real data-plane certificate asking for the control plane (SNI control.ine), and
     * its control-plane certificate asking for the data plane. */
    mark = cl_log_mark(&c.tp[2]);
    snprintf(args, sizeof args, "-servername control.ine -cert %s -key %s", n1dp_cert, n1dp_key);
    s_client(&out, args);
    free(out);
    refused(mark, "a data-plane certificate cannot open a control-plane stream");
    good_flows("a data-plane certificate on the control plane");
    mark = cl_log_mark(&c.tp[2]);
    snprintf(args, sizeof args, "-servername data.ine -cert %s -key %s", n1cp_cert, n1cp_key);
    s_client(&out, args);
    free(out);
    refused(mark, "a control-plane certificate cannot open a data-plane stream");
    good_flows("a control-plane certificate on the data plane");

    /* Our own client with node 1's data-plane certificate: the header decides. A known
     * database is accepted and relayed (the control)... */
    cr_assert_eq(tls_open(&t, "data.ine", n1dp_cert, n1dp_key), 0, "node 1's certificate completes a handshake");
    a = tls_header(&t, 2, db_uid, 1);
    cr_assert(a && a->ok, "a stream for database %u is accepted: %s", db_uid, a ? a->reason : "(closed)");
    ine__v1__stream_accept__free_unpacked(a, NULL);
    cr_assert_eq(SSL_write(t.ssl, "PING\r\n", 6), 6);
    char pong[16] = {0};
    cr_assert_eq(tls_read_all(&t, (uint8_t *)pong, 7), 0);
    cr_assert_str_eq(pong, "+PONG\r\n");
    tls_close(&t);
    /* ... an unknown one is refused with its reason, in the StreamAccept and in the log ... */
    mark = cl_log_mark(&c.tp[2]);
    cr_assert_eq(tls_open(&t, "data.ine", n1dp_cert, n1dp_key), 0);
    a = tls_header(&t, 2, 999, 1);
    cr_assert(a, "the server answers before closing");
    cr_assert_not(a->ok);
    cr_assert_str_eq(a->reason, "unknown database 999");
    ine__v1__stream_accept__free_unpacked(a, NULL);
    cr_assert(tls_closed(&t), "and closes the stream");
    tls_close(&t);
    refused(mark, "unknown database 999");
    good_flows("an unknown database");
    /* ... and a data-plane handshake whose header claims the control plane is refused too. */
    mark = cl_log_mark(&c.tp[2]);
    cr_assert_eq(tls_open(&t, "data.ine", n1dp_cert, n1dp_key), 0);
    a = tls_header(&t, 1, 0, 1);
    cr_assert(a && !a->ok, "a control-plane header on a data-plane handshake is refused");
    ine__v1__stream_accept__free_unpacked(a, NULL);
    tls_close(&t);
    refused(mark, "cannot open a control-plane stream");
    good_flows("a control-plane header");

    p = cl_log_since(&c.tp[2], 0);
    cr_assert_null(strstr(p, "PRIVATE KEY"), "no key material in the log");
    free(p);
    free(ca);
    free(cakey);
    cr_assert_eq(cl_load_stop(&good), 0, "the good stream had errors: %s", good.last_error);
    cl_finish(&c);
}

/* --- streams inside one data-plane connection (StreamHeader.mux) ------------------------------- */

enum { MF_OPEN = 1, MF_ACCEPT, MF_DATA, MF_FIN, MF_RESET, MF_WINDOW, MF_GOAWAY };

static void mux_send(tls_client *t, int type, uint32_t sid, const void *payload, size_t len)
{
    uint8_t buf[8 + 1024];
    cr_assert_leq(len, 1024);
    buf[0] = (uint8_t)type;
    buf[1] = (uint8_t)(len >> 16);
    buf[2] = (uint8_t)(len >> 8);
    buf[3] = (uint8_t)len;
    buf[4] = (uint8_t)(sid >> 24);
    buf[5] = (uint8_t)(sid >> 16);
    buf[6] = (uint8_t)(sid >> 8);
    buf[7] = (uint8_t)sid;
    if (len) memcpy(buf + 8, payload, len);
    cr_assert_eq(SSL_write(t->ssl, buf, (int)(len + 8)), (int)(len + 8));
}

static void mux_open(tls_client *t, uint32_t sid, uint32_t db, uint32_t from)
{
    Ine__V1__StreamHeader h = INE__V1__STREAM_HEADER__INIT;
    uint8_t buf[256];
    h.plane = 2;
    h.db_uid = db;
    h.from_node_uid = from;
    protobuf_c_message_pack(&h.base, buf);
    mux_send(t, MF_OPEN, sid, buf, protobuf_c_message_get_packed_size(&h.base));
}

/* The next frame; its payload length, -1 if the server closed first. */
static int mux_recv(tls_client *t, int *type, uint32_t *sid, uint8_t *buf, size_t cap)
{
    uint8_t h[8];
    size_t len;
    if (tls_read_all(t, h, 8) < 0) return -1;
    len = (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    cr_assert_leq(len, cap, "a frame of %zu bytes", len);
    if (len && tls_read_all(t, buf, len) < 0) return -1;
    *type = h[0];
    *sid = (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
    return (int)len;
}

/* 1 when the server ended the connection, after whatever frames it sent first. */
static int mux_closed(tls_client *t)
{
    uint8_t b[512];
    for (int i = 0; i < 1000; i++) {
        int n = SSL_read(t->ssl, b, sizeof b);
        if (n <= 0) return SSL_get_error(t->ssl, n) != SSL_ERROR_WANT_READ;
    }
    return 0;
}

/* A data-plane connection (node 1's certificate) that asked to carry streams. */
static void mux_connect(tls_client *t)
{
    Ine__V1__StreamHeader h = INE__V1__STREAM_HEADER__INIT;
    Ine__V1__StreamAccept *a;
    h.plane = 2;
    h.from_node_uid = 1;
    h.mux = 1;
    cr_assert_eq(tls_open(t, "data.ine", n1dp_cert, n1dp_key), 0);
    a = tls_header_send(t, &h);
    cr_assert(a && a->ok, "a data-plane connection carrying streams is accepted: %s", a ? a->reason : "(closed)");
    ine__v1__stream_accept__free_unpacked(a, NULL);
}

/* Send one bad frame on a fresh connection: the server closes it and logs why. */
static void mux_bad_frame(int type, uint32_t sid, const void *payload, size_t len, const char *reason)
{
    size_t mark = cl_log_mark(&c.tp[2]);
    tls_client t;
    mux_connect(&t);
    mux_send(&t, type, sid, payload, len);
    cr_assert(mux_closed(&t), "the server closed the connection after a bad frame (%s)", reason);
    tls_close(&t);
    refused(mark, reason);
    good_flows(reason);
}

Test(transport_refusals, a_data_plane_connection_carrying_streams_serves_good_ones_refuses_bad_ones_and_bad_frames)
{
    tls_client t;
    uint8_t buf[1024];
    int type, n;
    uint32_t sid;
    size_t mark;
    Ine__V1__StreamAccept *a;
    start();

    /* Two streams in one connection: an unknown database is refused with its reason (the
     * connection goes on), the good one carries a PING to the shard and its answer back. */
    mark = cl_log_mark(&c.tp[2]);
    mux_connect(&t);
    mux_open(&t, 1, 999, 1);
    mux_open(&t, 2, db_uid, 1);
    mux_send(&t, MF_DATA, 2, "PING\r\n", 6);
    char got[64] = "";
    int refused_seen = 0, accepted_seen = 0;
    while (!refused_seen || !accepted_seen || strcmp(got, "+PONG\r\n")) {
        cr_assert_geq(n = mux_recv(&t, &type, &sid, buf, sizeof buf), 0, "the server closed the connection");
        if (type == MF_ACCEPT) {
            cr_assert(a = ine__v1__stream_accept__unpack(NULL, (size_t)n, buf));
            if (sid == 1) {
                cr_assert_not(a->ok, "stream 1 (database 999) is refused");
                cr_assert_str_eq(a->reason, "unknown database 999");
                refused_seen = 1;
            } else {
                cr_assert_eq(sid, 2u);
                cr_assert(a->ok, "stream 2 (database %u) is accepted: %s", db_uid, a->reason);
                accepted_seen = 1;
            }
            ine__v1__stream_accept__free_unpacked(a, NULL);
        } else {
            cr_assert_eq(type, MF_DATA, "frame type %d", type);
            cr_assert_eq(sid, 2u, "data only for the accepted stream");
            strncat(got, (char *)buf, (size_t)n < sizeof got - strlen(got) - 1 ? (size_t)n : sizeof got - strlen(got) - 1);
        }
    }
    refused(mark, "unknown database 999");
    /* A stream of another node inside node 1's connection is refused too. */
    mark = cl_log_mark(&c.tp[2]);
    mux_open(&t, 3, db_uid, 3);
    cr_assert_geq(n = mux_recv(&t, &type, &sid, buf, sizeof buf), 0);
    cr_assert_eq(type, MF_ACCEPT);
    cr_assert(a = ine__v1__stream_accept__unpack(NULL, (size_t)n, buf));
    cr_assert_not(a->ok);
    ine__v1__stream_accept__free_unpacked(a, NULL);
    refused(mark, "the stream header names node 3 but the connection is node 1's");
    tls_close(&t);
    good_flows("streams inside one connection");

    /* Frames that break the protocol close the whole connection, logged. */
    mux_bad_frame(99, 1, NULL, 0, "protocol error: unknown frame type 99");
    mux_bad_frame(MF_DATA, 7, "x", 1, "protocol error: frame for stream 7, never opened");
    mux_bad_frame(MF_OPEN, 1, "\xff\xff\xff", 3, "protocol error: malformed stream header");
    mux_bad_frame(MF_GOAWAY, 0, NULL, 0, "protocol error: GOAWAY from the opening side");
    {
        uint8_t h[8] = {MF_DATA, 0x7f, 0xff, 0xff, 0, 0, 0, 1};
        mark = cl_log_mark(&c.tp[2]);
        mux_connect(&t);
        cr_assert_eq(SSL_write(t.ssl, h, 8), 8);
        cr_assert(tls_closed(&t), "a frame announcing 8 MB is refused");
        tls_close(&t);
        refused(mark, "protocol error: a frame of 8388607 bytes");
    }
    /* Reusing a stream id, and handing out credit the stream never spent. */
    mark = cl_log_mark(&c.tp[2]);
    mux_connect(&t);
    mux_open(&t, 5, db_uid, 1);
    mux_open(&t, 5, db_uid, 1);
    cr_assert(mux_closed(&t), "a reused stream id closes the connection");
    tls_close(&t);
    refused(mark, "protocol error: stream id 5 reused");
    mark = cl_log_mark(&c.tp[2]);
    mux_connect(&t);
    mux_open(&t, 1, db_uid, 1);
    {
        uint8_t inc[4] = {0, 0, 0x10, 0};
        mux_send(&t, MF_WINDOW, 1, inc, 4);
    }
    cr_assert(mux_closed(&t), "credit beyond the window closes the connection");
    tls_close(&t);
    refused(mark, "protocol error: bad credit for stream 1");
    /* Streams in one connection are for the data plane only. */
    {
        Ine__V1__StreamHeader h = INE__V1__STREAM_HEADER__INIT;
        mark = cl_log_mark(&c.tp[2]);
        h.plane = 1;
        h.from_node_uid = 1;
        h.mux = 1;
        cr_assert_eq(tls_open(&t, "control.ine", n1cp_cert, n1cp_key), 0);
        a = tls_header_send(&t, &h);
        cr_assert(a && !a->ok, "a control-plane connection cannot carry streams");
        ine__v1__stream_accept__free_unpacked(a, NULL);
        tls_close(&t);
        refused(mark, "only the data plane carries streams in one connection");
    }
    good_flows("bad frames");
    cr_assert_eq(cl_load_stop(&good), 0, "the good stream had errors: %s", good.last_error);
    cl_finish(&c);
}

#define HALF_OPEN 300

Test(transport_refusals, stalled_handshakes_and_hundreds_of_half_open_connections_are_cut_while_good_streams_go_on)
{
    static cl_resp conns[HALF_OPEN];
    static const uint8_t partial_hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03};
    size_t mark;
    tls_client t;
    int baseline, closed = 0;
    char *fresh;
    start();

    /* A client that connects and says nothing, one that stops inside its ClientHello, and one
     * that completes the handshake but never sends its stream header. */
    raw_refused(NULL, 0, "handshake timed out");
    good_flows("a silent client");
    raw_refused(partial_hello, sizeof partial_hello, "handshake timed out");
    good_flows("a stalled ClientHello");
    mark = cl_log_mark(&c.tp[2]);
    cr_assert_eq(tls_open(&t, "data.ine", n1dp_cert, n1dp_key), 0);
    cr_assert(tls_closed(&t), "the server closes a stream that never sends its header");
    tls_close(&t);
    refused(mark, "no stream header in time");
    good_flows("a missing stream header");

    /* Hundreds of half-open connections at once: half silent, half stalled mid-record. */
    baseline = cl_open_fds(c.tp[2].pid);
    mark = cl_log_mark(&c.tp[2]);
    for (int i = 0; i < HALF_OPEN; i++) {
        cr_assert_eq(cl_resp_open(&conns[i], cl_addr(2), c.port), 0, "connection %d: %s", i, strerror(errno));
        if (i % 2) cr_assert_eq(send(conns[i].fd, partial_hello, sizeof partial_hello, MSG_NOSIGNAL), (ssize_t)sizeof partial_hello);
    }
    /* Meanwhile a new stream through node 2's P is opened and served, and the old one flows. */
    fresh = cl_redis_cli(cl_addr(1), db_port, "INCR", "fresh", NULL);
    cr_assert(fresh && !strcmp(fresh, "1"), "a new stream during the flood: %s", fresh ? fresh : "(failed)");
    free(fresh);
    good_flows("the flood began");
    for (int i = 0; i < HALF_OPEN; i++) {
        closed += cl_resp_wait_closed(&conns[i], CL_WAIT_MS);
        cl_resp_close(&conns[i]);
    }
    cr_assert_eq(closed, HALF_OPEN, "the server cut every half-open connection");
    for (int64_t end = cl_now_ms() + CL_WAIT_MS; cl_log_count(&c.tp[2], mark, "handshake timed out") < HALF_OPEN;)
        cr_assert(cl_now_ms() < end, "%d of %d refusals logged", cl_log_count(&c.tp[2], mark, "handshake timed out"), HALF_OPEN);
    good_flows("the flood was cut");
    /* Nothing leaked: node 2 holds about as many descriptors as before the flood. */
    cr_assert(cl_wait_fds_at_most(&c, 2, baseline + 2, CL_WAIT_MS), "node 2 holds %d descriptors, %d before the flood",
              cl_open_fds(c.tp[2].pid), baseline);
    cr_assert_eq(cl_load_stop(&good), 0, "the good stream had errors: %s", good.last_error);
    cl_finish(&c);
}

/* Node 1's data-plane connection with header h, accepted; the ticket count starts at 0. */
static void ticket_client(tls_client *t, const Ine__V1__StreamHeader *h)
{
    Ine__V1__StreamAccept *a;
    tickets = 0;
    cr_assert_eq(tls_open(t, "data.ine", n1dp_cert, n1dp_key), 0);
    cr_assert(a = tls_header_send(t, h), "the server answered");
    cr_assert(a->ok, "%s", a->reason);
    ine__v1__stream_accept__free_unpacked(a, NULL);
}

/* Session tickets are minted on request: a TLS 1.3 ticket goes to a client whose accepted
 * stream header did not say no_ticket, with the answer to it; none to a client that does not
 * resume (INE_TRANSPORT_RESUME=0 sends no_ticket), none to a header refused for its sender's
 * identity. */
Test(transport_refusals, a_session_ticket_goes_only_to_a_client_that_resumes_with_the_answer_to_its_header)
{
    Ine__V1__StreamHeader h = INE__V1__STREAM_HEADER__INIT;
    Ine__V1__StreamAccept *a;
    tls_client t;
    uint8_t buf[256];
    char got[16] = "";
    int type, n;
    uint32_t sid;
    start();
    h.plane = 2;
    h.from_node_uid = 1;
    h.mux = 1;

    /* no_ticket: the connection carries a stream to the shard and back, and no ticket. */
    h.no_ticket = 1;
    ticket_client(&t, &h);
    mux_open(&t, 1, db_uid, 1);
    mux_send(&t, MF_DATA, 1, "PING\r\n", 6);
    while (strcmp(got, "+PONG\r\n")) {
        cr_assert_geq(n = mux_recv(&t, &type, &sid, buf, sizeof buf), 0, "the server closed the connection");
        if (type == MF_DATA) strncat(got, (char *)buf, (size_t)n < sizeof got - strlen(got) - 1 ? (size_t)n : sizeof got - strlen(got) - 1);
    }
    cr_assert_eq(tickets, 0, "a client that does not resume got %d ticket(s)", tickets);
    cr_assert_not(SSL_session_reused(t.ssl));
    tls_close(&t);

    /* A header refused for who sent it (node 1's certificate naming node 3) gets no ticket. */
    tickets = 0;
    cr_assert_eq(tls_open(&t, "data.ine", n1dp_cert, n1dp_key), 0);
    cr_assert(a = tls_header(&t, 2, db_uid, 3), "the server answered");
    cr_assert_not(a->ok);
    ine__v1__stream_accept__free_unpacked(a, NULL);
    cr_assert(tls_closed(&t));
    cr_assert_eq(tickets, 0, "a stream refused for its identity got %d ticket(s)", tickets);
    tls_close(&t);

    /* A client that resumes: one ticket, with the answer to its header... */
    h.no_ticket = 0;
    ticket_client(&t, &h);
    cr_assert_eq(tickets, 1, "one ticket with the answer, got %d", tickets);
    cr_assert(last_ticket && SSL_SESSION_is_resumable(last_ticket));
    tls_close(&t);
    /* (That ine's own client resumes with it: test_transport_data, without_mux_streams_resume...) */
    good_flows("tickets");
    cl_finish(&c);
}

static int n_impostors;
/* An impostor listening on node 2's address and P, played by openssl s_server. */
static cl_proc *impostor(const char *cert, const char *key)
{
    char *cmd = NULL, *fifo = cl_path(&c, "impostor.stdin");
    /* s_server stops at the end of its stdin: give it a FIFO opened read-write, which never
     * ends; it prints what clients send it. */
    unlink(fifo);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    cr_assert(asprintf(&cmd, "exec /usr/bin/openssl s_server -accept %s:%d -cert %s -key %s 0<>%s", cl_addr(2), c.port, cert, key, fifo) > 0);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL}, name[32];
    snprintf(name, sizeof name, "impostor-%d", ++n_impostors);
    cl_proc *p = cl_spawn(&c, NULL, name, argv, NULL);
    free(cmd);
    free(fifo);
    cr_assert(cl_wait_log(p, 0, "ACCEPT", CL_WAIT_MS), "s_server started");
    return p;
}

/* Mutual TLS the other way: node 1, opening a stream to node 2, refuses a server it cannot
 * trust, and the client's bytes never reach it. */
Test(transport_refusals, a_node_refuses_a_server_at_its_peers_address_that_it_cannot_trust)
{
    int shard = cl_free_port();
    char addr[64], *r, *ca, *cakey, *n3cert, *n3key, *n2cp, *n2cpkey, *seen;
    size_t mark;
    cl_proc *imp;
    cl_start(&c, NULL);
    cl_redis_start(&c, cl_addr(2), shard, NULL);
    db_port = cl_free_port();
    snprintf(addr, sizeof addr, "%s:%d", cl_addr(2), shard);
    cl_create_db(&c, "kv", db_port, 2, addr, 1);
    ca = cl_path(&c, "ca.pem");
    cakey = cl_path(&c, "ca.key");
    n3cert = cl_path(&c, "n3-dp.pem");
    n3key = cl_path(&c, "n3-dp.key");
    n2cp = cl_path(&c, "n2-cp.pem");
    n2cpkey = cl_path(&c, "n2-cp.key");
    cl_export_ca(&c, ca, cakey);
    cl_export_cert(&c, 3, 2, n3cert, n3key);
    cl_export_cert(&c, 2, 1, n2cp, n2cpkey);
    cr_assert_eq(cl_sh(&r, 60,
                       "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout foreign-ca.key -out foreign-ca.pem -days 30 "
                       "-subj '/CN=ine cluster CA tp' -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
                       c.dir), 0, "%s", r);
    free(r);
    make_leaf("foreign2", 2, "dp", "foreign-ca.pem", "foreign-ca.key", "", 30);
    cr_assert_eq(cl_tp_stop(&c, 2, SIGTERM), 0);

    struct {
        const char *cert, *key, *reason;
    } cases[] = {
        {"foreign2.pem", "foreign2.key", "certificate refused: unable to get local issuer certificate"},
        {n3cert, n3key, "server presented node 3's certificate, not node 2's"},
        {n2cp, n2cpkey, "a control-plane certificate cannot open a data-plane stream"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cert[512], key[512];
        snprintf(cert, sizeof cert, "%s%s%s", cases[i].cert[0] == '/' ? "" : c.dir, cases[i].cert[0] == '/' ? "" : "/", cases[i].cert);
        snprintf(key, sizeof key, "%s%s%s", cases[i].key[0] == '/' ? "" : c.dir, cases[i].key[0] == '/' ? "" : "/", cases[i].key);
        imp = impostor(cert, key);
        mark = cl_log_mark(&c.tp[1]);
        r = cl_redis_cli(cl_addr(1), db_port, "SET", "secret-for-node-2", "must-not-leak", NULL);
        cr_assert_null(r, "the client was served by an impostor: %s", r);
        cr_assert(cl_wait_log(&c.tp[1], mark, cases[i].reason, CL_WAIT_MS), "node 1 refused the impostor: %s", cases[i].reason);
        cr_assert(cl_log_count(&c.tp[1], mark, "refused connection to 127.0.0.2:") > 0);
        cl_kill(imp, SIGKILL);
        seen = cl_log_since(imp, 0);
        cr_assert_null(strstr(seen, "must-not-leak"), "the impostor received the client's bytes:\n%s", seen);
        free(seen);
    }
    /* The real node 2 back: data flows again. */
    mark = cl_log_mark(&c.tp[2]);
    cl_tp_start(&c, 2);
    cr_assert(cl_wait_log(&c.tp[2], mark, "node 2 listening on", CL_WAIT_MS));
    r = cl_redis_cli(cl_addr(1), db_port, "SET", "secret-for-node-2", "delivered", NULL);
    cr_assert(r && !strcmp(r, "OK"), "%s", r ? r : "(failed)");
    free(r);
    free(ca);
    free(cakey);
    free(n3cert);
    free(n3key);
    free(n2cp);
    free(n2cpkey);
    cl_finish(&c);
}
