/* repl.c — the follower's side of log replication: replica.conf, the credentials it presents,
 * and one blocking session against the master's transport port (see repl.h). The master's
 * side lives in ine-transport (services/transport/repl.c). Blocking I/O with socket timeouts
 * is enough here: a follower has exactly one such stream, in a process of its own
 * (ine-replica) or in `inectl node join`. */
#include "repl.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "datadir.h"
#include "err.h"
#include "pki.h"
#include "proj.h"
#include "sealed.h"
#include "tlsconf.h"
#include "valid.h"

#include "ine/v1/transport.pb-c.h"

/* --- replica.conf ------------------------------------------------------------------------------ */

int repl_is_replica(const char *data_dir)
{
    char p[DATADIR_MAX];
    struct stat sb;
    return datadir_path(data_dir, REPL_CONF_FILE, p, sizeof p) == 0 && lstat(p, &sb) == 0;
}

static int repl__conf_line(repl_conf *c, const char *key, const char *val, const char *path, int lineno)
{
    char *end;
    unsigned long v;
    if (!strcmp(key, "node_uid") || !strcmp(key, "master_port")) {
        errno = 0;
        v = strtoul(val, &end, 10);
        if (errno || end == val || *end || v == 0 || v > (!strcmp(key, "node_uid") ? 0xFFFFFFFFul : 65535ul))
            return ine_err(INE_EINVAL, "%s line %d: %s takes a number (%s), not '%s'", path, lineno, key,
                           !strcmp(key, "node_uid") ? "a node uid" : "1..65535", val);
        if (key[0] == 'n') c->node_uid = (uint32_t)v;
        else c->master_port = (int)v;
        return INE_OK;
    }
    if (!strcmp(key, "master_address")) {
        if (!valid_address(val) || strlen(val) >= sizeof c->master_address)
            return ine_err(INE_EINVAL, "%s line %d: master_address '%s' is not an IP address or host name", path, lineno, val);
        snprintf(c->master_address, sizeof c->master_address, "%s", val);
        return INE_OK;
    }
    if (!strcmp(key, "cluster_uid")) {
        if (!*val || strlen(val) >= sizeof c->cluster_uid || strspn(val, "0123456789abcdef") != strlen(val))
            return ine_err(INE_EINVAL, "%s line %d: cluster_uid '%s' is not a lowercase hex uid", path, lineno, val);
        snprintf(c->cluster_uid, sizeof c->cluster_uid, "%s", val);
        return INE_OK;
    }
    return ine_err(INE_EINVAL, "%s line %d: unknown setting '%s'", path, lineno, key);
}

int repl_conf_load(const char *data_dir, repl_conf *c)
{
    char p[DATADIR_MAX], line[512];
    FILE *f;
    int lineno = 0, rc = INE_OK;
    memset(c, 0, sizeof *c);
    GUARD(datadir_path(data_dir, REPL_CONF_FILE, p, sizeof p));
    if (!(f = fopen(p, "r"))) {
        if (errno == ENOENT) return ine_err(INE_ENOTFOUND, "%s does not exist: this data dir is not a follower's", p);
        return ine_err(INE_EIO, "cannot read %s: %s", p, strerror(errno));
    }
    while (rc == INE_OK && fgets(line, sizeof line, f)) {
        char key[64], val[300];
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) rc = ine_err(INE_EINVAL, "%s line %d is too long", p, lineno);
        else if (line[strspn(line, " \t\r\n")] == 0 || line[strspn(line, " \t")] == '#') continue;
        else if (sscanf(line, " %63s %299s", key, val) != 2) rc = ine_err(INE_EINVAL, "%s line %d: expected 'key value'", p, lineno);
        else rc = repl__conf_line(c, key, val, p, lineno);
    }
    fclose(f);
    if (rc < 0) return rc;
    if (!c->node_uid || !c->master_address[0])
        return ine_err(INE_EINVAL, "%s: node_uid and master_address are required", p);
    if (!c->master_port) c->master_port = 3342;
    return INE_OK;
}

int repl_conf_save(const char *data_dir, const repl_conf *c)
{
    char p[DATADIR_MAX], tmp[DATADIR_MAX + 16], body[512];
    int fd, n, rc = INE_OK;
    if (!c->node_uid || !valid_address(c->master_address) || c->master_port < 1 || c->master_port > 65535)
        return ine_err(INE_EINVAL, "replica.conf: a node uid, a master address and a port 1..65535 are required");
    GUARD(datadir_path(data_dir, REPL_CONF_FILE, p, sizeof p));
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    n = snprintf(body, sizeof body,
                 "# This node follows the master's event log (written by inectl node join).\n"
                 "node_uid %u\nmaster_address %s\nmaster_port %d\n%s%s%s",
                 c->node_uid, c->master_address, c->master_port, c->cluster_uid[0] ? "cluster_uid " : "", c->cluster_uid,
                 c->cluster_uid[0] ? "\n" : "");
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
        return ine_err(INE_EIO, "cannot create %s: %s", tmp, strerror(errno));
    if (write(fd, body, (size_t)n) != n || fsync(fd) != 0) rc = ine_err(INE_EIO, "cannot write %s: %s", tmp, strerror(errno));
    close(fd);
    if (rc == INE_OK && rename(tmp, p) != 0) rc = ine_err(INE_EIO, "cannot rename %s: %s", tmp, strerror(errno));
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    if ((fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        fsync(fd);
        close(fd);
    }
    return INE_OK;
}

/* --- credentials ------------------------------------------------------------------------------- */

void repl_creds_free(repl_creds *c)
{
    X509_free(c->cert);
    sk_X509_pop_free(c->chain, X509_free);
    EVP_PKEY_free(c->key);
    X509_STORE_free(c->trust);
    memset(c, 0, sizeof *c);
}

int repl_creds_from_log(evlog_t *log, const seal_key *seal, uint32_t node_uid, repl_creds *out)
{
    proj_state st;
    const proj_cert *pc;
    pki_key *key = NULL;
    char *pem = NULL;
    int rc;
    memset(out, 0, sizeof *out);
    GUARD(proj_build(log, 0, &st));
    if (!(pc = proj_cert_find(&st, node_uid, INE__V1__PLANE__PLANE_CONTROL))) {
        rc = ine_err(INE_ENOTFOUND, "the local log has no control-plane certificate for node %u (has it joined?)", node_uid);
        goto out;
    }
    if (asprintf(&pem, "%s%s", pc->cert.cert_pem ? pc->cert.cert_pem : "", pc->cert.chain_pem ? pc->cert.chain_pem : "") < 0) {
        pem = NULL;
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    GUARD_GOTO(tlsconf_pem_certs(pem, &out->cert, &out->chain), out);
    GUARD_GOTO(sealed_load_key(log, seal, pc->issued_seq, &key), out);
    out->key = pki_evp(key);
    EVP_PKEY_up_ref(out->key);
    if (!(out->trust = tlsconf_trust_from_bundle(&st))) rc = ine_err(INE_ECRYPTO, "cannot build the trust store: %s", ine_err_msg());
out:
    if (rc < 0) repl_creds_free(out);
    pki_key_free(key);
    free(pem);
    proj_free(&st);
    return rc;
}

/* --- framing ----------------------------------------------------------------------------------- */

void repl_rec_header(uint8_t out[REPL_REC_HDR], uint64_t seq, uint32_t len)
{
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(seq >> (56 - 8 * i));
    for (int i = 0; i < 4; i++) out[8 + i] = (uint8_t)(len >> (24 - 8 * i));
}

void repl_rec_parse(const uint8_t in[REPL_REC_HDR], uint64_t *seq, uint32_t *len)
{
    uint64_t s = 0;
    uint32_t l = 0;
    for (int i = 0; i < 8; i++) s = (s << 8) | in[i];
    for (int i = 0; i < 4; i++) l = (l << 8) | in[8 + i];
    *seq = s;
    *len = l;
}

/* --- one session ------------------------------------------------------------------------------- */

typedef struct {
    const repl_session_opts *o;
    int fd;
    SSL *ssl;
    char peer[300];
} repl__conn;

/* Connect with a deadline; the socket stays blocking, with receive/send timeouts. */
static int repl__connect(repl__conn *k, int timeout_ms)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
    char port[8];
    int rc, err = ETIMEDOUT;
    snprintf(port, sizeof port, "%d", k->o->conf->master_port);
    snprintf(k->peer, sizeof k->peer, "%s:%d", k->o->conf->master_address, k->o->conf->master_port);
    if ((rc = getaddrinfo(k->o->conf->master_address, port, &hints, &res)) != 0)
        return ine_err(INE_EIO, "cannot resolve the master %s: %s", k->o->conf->master_address, gai_strerror(rc));
    for (ai = res; ai; ai = ai->ai_next) {
        struct pollfd pfd;
        socklen_t el = sizeof err;
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
        if (fd < 0) continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            err = errno;
            close(fd);
            continue;
        }
        pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, timeout_ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err) {
            if (!err) err = ETIMEDOUT;
            close(fd);
            continue;
        }
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        k->fd = fd;
        break;
    }
    freeaddrinfo(res);
    if (k->fd < 0) return ine_err(INE_EIO, "cannot connect to the master at %s: %s", k->peer, strerror(err));
    return INE_OK;
}

/* Whether a failed SSL call ran into the socket's receive/send timeout. */
static int repl__timed_out(int e, int sys)
{
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE || (e == SSL_ERROR_SYSCALL && (sys == EAGAIN || sys == EWOULDBLOCK));
}

static int repl__io_error(repl__conn *k, int r, const char *what)
{
    int sys = errno, e = SSL_get_error(k->ssl, r);
    if (k->o->stop && *k->o->stop) return ine_err(INE_EAGAIN, "stopped");
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN) return ine_err(INE_EIO, "the master closed the stream while %s", what);
    if (repl__timed_out(e, sys))
        return ine_err(INE_EIO, "the master sent nothing for %d ms while %s (gone or hung)", k->o->io_timeout_ms ? k->o->io_timeout_ms : REPL_IO_TIMEOUT_MS, what);
    return ine_err(INE_EIO, "the connection to the master broke while %s", what);
}

static int repl__read(repl__conn *k, void *buf, size_t len, const char *what)
{
    size_t got = 0, n;
    while (got < len) {
        int r = SSL_read_ex(k->ssl, (uint8_t *)buf + got, len - got, &n);
        if (r != 1) {
            int sys = errno;
            if (SSL_get_error(k->ssl, r) == SSL_ERROR_SYSCALL && sys == EINTR && !(k->o->stop && *k->o->stop)) continue;
            errno = sys;
            return repl__io_error(k, r, what);
        }
        got += n;
    }
    return INE_OK;
}

/* The master must be a control-plane identity of our cluster (or a customer certificate,
 * which the trust bundle alone vouches for: it names no node). */
static int repl__check_master(repl__conn *k)
{
    X509 *x = SSL_get1_peer_certificate(k->ssl);
    pki_cert *pc = NULL;
    pki_info info;
    int rc = INE_OK;
    memset(&info, 0, sizeof info);
    if (!x) return ine_err(INE_EAUTH, "the master at %s presented no certificate", k->peer);
    if (pki_cert_adopt(x, &pc) < 0 || pki_cert_info(pc, &info) < 0) rc = ine_err(INE_EAUTH, "the master's certificate: %s", ine_err_msg());
    else if (info.node_uid && info.plane != PKI_PLANE_CONTROL)
        rc = ine_err(INE_EAUTH, "the master at %s presented a data-plane certificate on the control plane", k->peer);
    else if (info.node_uid && k->o->conf->cluster_uid[0] && strcmp(info.cluster_uid, k->o->conf->cluster_uid))
        rc = ine_err(INE_EAUTH, "the master at %s presented a certificate of another cluster (%s)", k->peer, info.cluster_uid);
    pki_info_clear(&info);
    pki_cert_free(pc);
    return rc;
}

static int repl__handshake(repl__conn *k, const repl_creds *cr, SSL_CTX **ctx)
{
    int r, rc;
    if (!(*ctx = tlsconf_ctx_new(TLSCONF_CLIENT, cr->cert, cr->chain, cr->key, cr->trust)))
        return ine_err(INE_ECRYPTO, "cannot build the TLS context: %s", ine_err_msg());
    if (!(k->ssl = SSL_new(*ctx)) || !SSL_set_tlsext_host_name(k->ssl, "control.ine") || !SSL_set_fd(k->ssl, k->fd))
        return ine_err_ossl(INE_ECRYPTO, "SSL_new");
    if ((r = SSL_connect(k->ssl)) != 1) {
        int sys = errno;
        long v = SSL_get_verify_result(k->ssl);
        if (repl__timed_out(SSL_get_error(k->ssl, r), sys)) {
            ERR_clear_error();
            return ine_err(INE_EIO, "the master at %s accepted the connection but did not answer the TLS handshake (hung?)", k->peer);
        }
        if (v != X509_V_OK) {
            ERR_clear_error();
            return ine_err(INE_EAUTH, "the master's certificate at %s was refused: %s", k->peer, X509_verify_cert_error_string(v));
        }
        rc = ine_err_ossl(INE_EAUTH, "TLS handshake with the master");
        return ine_err(rc, "%s (%s)", ine_err_msg(), k->peer);
    }
    return repl__check_master(k);
}

static int repl__send_header(repl__conn *k, uint64_t from, const uint8_t hash[EVLOG_HASH_LEN])
{
    Ine__V1__StreamHeader h = INE__V1__STREAM_HEADER__INIT;
    uint8_t buf[2 + 256];
    size_t n, put;
    h.plane = INE__V1__PLANE__PLANE_CONTROL;
    h.from_node_uid = k->o->conf->node_uid;
    h.replicate = 1;
    h.replicate_from_seq = from;
    h.replicate_prev_sha256.data = (uint8_t *)hash;
    h.replicate_prev_sha256.len = EVLOG_HASH_LEN;
    n = ine__v1__stream_header__pack(&h, buf + 2);
    buf[0] = (uint8_t)(n >> 8);
    buf[1] = (uint8_t)n;
    if (SSL_write_ex(k->ssl, buf, n + 2, &put) != 1) return repl__io_error(k, 0, "sending the stream header");
    return INE_OK;
}

static int repl__read_accept(repl__conn *k, uint64_t *master_head)
{
    uint8_t len[2], msg[4096];
    size_t n;
    Ine__V1__StreamAccept *a;
    int rc = INE_OK;
    GUARD(repl__read(k, len, 2, "waiting for the stream accept"));
    n = ((size_t)len[0] << 8) | len[1];
    if (!n || n > sizeof msg) return ine_err(INE_EIO, "the master sent a malformed stream accept (%zu bytes)", n);
    GUARD(repl__read(k, msg, n, "waiting for the stream accept"));
    if (!(a = ine__v1__stream_accept__unpack(NULL, n, msg))) return ine_err(INE_EIO, "the master sent a malformed stream accept");
    if (!a->ok) rc = ine_err(INE_EAUTH, "the master at %s refused replication: %s", k->peer, a->reason ? a->reason : "");
    *master_head = a->head_seq;
    ine__v1__stream_accept__free_unpacked(a, NULL);
    return rc;
}

/* Records until until_head is reached or the stream ends. */
static int repl__records(repl__conn *k, uint64_t target, uint64_t *head)
{
    const repl_session_opts *o = k->o;
    uint8_t hdr[REPL_REC_HDR], *raw = NULL;
    int rc = INE_OK;
    while (!(o->stop && *o->stop)) {
        uint64_t seq;
        uint32_t len;
        if (o->until_head && *head >= target) break;
        if ((rc = repl__read(k, hdr, sizeof hdr, "waiting for records")) < 0) break;
        repl_rec_parse(hdr, &seq, &len);
        if (!seq && !len) continue; /* keepalive */
        if (seq != *head + 1) {
            rc = ine_err(INE_ECHAIN, "the master sent seq %llu where seq %llu comes next: stream refused",
                         (unsigned long long)seq, (unsigned long long)(*head + 1));
            break;
        }
        if (!len || len > REPL_MAX_RECORD) {
            rc = ine_err(INE_ECORRUPT, "the master sent seq %llu with a length of %u bytes: stream refused", (unsigned long long)seq, len);
            break;
        }
        if (!(raw = malloc(len))) {
            rc = ine_err(INE_ENOMEM, "out of memory");
            break;
        }
        if ((rc = repl__read(k, raw, len, "reading a record")) < 0) break;
        if ((rc = evlog_append_raw(o->log, seq, raw, len)) < 0) {
            rc = ine_err(rc, "record %llu from the master refused, stream cut: %s", (unsigned long long)seq, ine_err_msg());
            break;
        }
        free(raw);
        raw = NULL;
        *head = seq;
        if (o->on_append) o->on_append(seq, o->ud);
    }
    free(raw);
    return rc;
}

int repl_session(const repl_session_opts *o, uint64_t *head_out)
{
    repl__conn k = {.o = o, .fd = -1};
    repl_creds own = {0};
    const repl_creds *cr = o->creds;
    SSL_CTX *ctx = NULL;
    uint64_t head = 0, master_head = 0;
    uint8_t hash[EVLOG_HASH_LEN];
    int rc, timeout = o->io_timeout_ms ? o->io_timeout_ms : REPL_IO_TIMEOUT_MS;
    GUARD_GOTO(evlog_head(o->log, &head, hash), out);
    if (!cr) {
        GUARD_GOTO(repl_creds_from_log(o->log, o->seal, o->conf->node_uid, &own), out);
        cr = &own;
    }
    GUARD_GOTO(repl__connect(&k, timeout), out);
    GUARD_GOTO(repl__handshake(&k, cr, &ctx), out);
    GUARD_GOTO(repl__send_header(&k, head + 1, hash), out);
    GUARD_GOTO(repl__read_accept(&k, &master_head), out);
    if (master_head < head) {
        rc = ine_err(INE_ECHAIN, "the master's log ends at seq %llu, before this replica's (%llu)", (unsigned long long)master_head,
                     (unsigned long long)head);
        goto out;
    }
    rc = repl__records(&k, master_head, &head);
out:
    if (k.ssl) {
        if (rc == INE_OK) SSL_shutdown(k.ssl);
        SSL_free(k.ssl);
    }
    if (k.fd >= 0) close(k.fd);
    SSL_CTX_free(ctx);
    repl_creds_free(&own);
    ERR_clear_error();
    if (head_out) *head_out = head;
    return rc;
}

int repl_sync(const char *data_dir, const repl_conf *c, const repl_creds *creds, int timeout_ms, uint64_t *head)
{
    char p[DATADIR_MAX];
    evlog_t *log = NULL;
    evlog_opts lo = {0};
    repl_session_opts o = {.conf = c, .creds = creds, .io_timeout_ms = timeout_ms, .until_head = 1};
    int rc;
    GUARD(datadir_path(data_dir, "log", p, sizeof p));
    GUARD(evlog_opts_from_env(&lo));
    GUARD(evlog_open(p, &lo, &log));
    o.log = log;
    rc = repl_session(&o, head);
    evlog_close(log);
    return rc;
}
