/* rest.c — the REST API's server side: HTTPS through libevent's evhttp on OpenSSL
 * bufferevents (one TLS stack for the whole suite), HTTP basic auth against the hash recorded
 * at cluster creation, body limits, JSON errors, and hot reload of the serving certificate
 * after a rotation (new connections get the new one; open ones keep theirs). */
#include "rest.h"
#include "clock.h"
#include "err.h"
#include "logline.h"
#include "passwd.h"
#include "sealed.h"
#include "tlsconf.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct policy_rest {
    struct evhttp *http;
    SSL_CTX *ctx;              /* for new connections; open ones hold their own reference */
    uint64_t cert_seq;         /* the event whose certificate is served (0: operator files) */
    char *user, *pw_hash;
    unsigned char mac_key[32]; /* caches the last good credentials as an HMAC, not in clear */
    unsigned char good[32];
    int have_good;
};

/* --- replies ------------------------------------------------------------------------------ */

void rest_reply(rest_ctx *c, int status, json_t *j)
{
    struct evbuffer *b = evbuffer_new();
    char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    evhttp_add_header(evhttp_request_get_output_headers(c->req), "Content-Type", "application/json");
    if (b && s) evbuffer_add_printf(b, "%s\n", s);
    evhttp_send_reply(c->req, status, NULL, b);
    free(s);
    if (b) evbuffer_free(b);
}

void rest_error(rest_ctx *c, int status, const char *code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (status == 401)
        evhttp_add_header(evhttp_request_get_output_headers(c->req), "WWW-Authenticate", "Basic realm=\"ine\"");
    rest_reply(c, status, json_pack("{s:s, s:s}", "error_code", code, "description", msg));
}

void rest_error_code(rest_ctx *c, Ine__V1__ErrorCode code, const char *description)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&ine__v1__error_code__descriptor, code);
    char name[64];
    int status;
    switch (code) {
    case INE__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND: status = 404; break;
    case INE__V1__ERROR_CODE__ERROR_CODE_CONFLICT: case INE__V1__ERROR_CODE__ERROR_CODE_BUSY: status = 409; break;
    case INE__V1__ERROR_CODE__ERROR_CODE_UNAUTHORIZED: status = 401; break;
    case INE__V1__ERROR_CODE__ERROR_CODE_CERT_EXPIRED: status = 406; break;
    case INE__V1__ERROR_CODE__ERROR_CODE_LOG_FULL: status = 507; break;
    case INE__V1__ERROR_CODE__ERROR_CODE_NO_QUORUM: status = 503; break;
    case INE__V1__ERROR_CODE__ERROR_CODE_INTERNAL: status = 500; break;
    default: status = 400; break;
    }
    snprintf(name, sizeof name, "%s", v ? v->name + strlen("ERROR_CODE_") : "internal");
    for (char *s = name; *s; s++) *s = (char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s);
    rest_error(c, status, name, "%s", description && *description ? description : "refused");
}

/* --- request bodies ------------------------------------------------------------------------- */

json_t *rest_body_object(rest_ctx *c, const char *const *allowed, int empty_ok)
{
    json_error_t e;
    json_t *o;
    const char *k;
    json_t *v;
    if (c->body_len == 0 && empty_ok) return json_object();
    if (!(o = json_loadb(c->body, c->body_len, JSON_REJECT_DUPLICATES, &e))) {
        rest_error(c, 400, "bad_json", "the body is not valid JSON: %s (line %d, column %d)", e.text, e.line, e.column);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        rest_error(c, 400, "bad_json", "the body must be a JSON object");
        return NULL;
    }
    json_object_foreach(o, k, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++) ok = !strcmp(*a, k);
        if (!ok) {
            rest_error(c, 400, "unknown_field", "unknown field '%s'", k);
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

int rest_get_bool(rest_ctx *c, json_t *o, const char *k, int *out)
{
    json_t *v = json_object_get(o, k);
    if (!v) return 0;
    if (!json_is_boolean(v)) return rest_error(c, 400, "wrong_type", "field '%s' must be true or false", k), -1;
    *out = json_is_true(v);
    return 1;
}

int rest_get_uint(rest_ctx *c, json_t *o, const char *k, uint32_t max, uint32_t *out)
{
    json_t *v = json_object_get(o, k);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (json_int_t)max)
        return rest_error(c, 400, "wrong_type", "field '%s' must be an integer from 0 to %u", k, max), -1;
    *out = (uint32_t)json_integer_value(v);
    return 1;
}

int rest_get_string(rest_ctx *c, json_t *o, const char *k, const char **out)
{
    json_t *v = json_object_get(o, k);
    if (!v) return 0;
    if (!json_is_string(v)) return rest_error(c, 400, "wrong_type", "field '%s' must be a string", k), -1;
    *out = json_string_value(v);
    return 1;
}

/* --- authentication -------------------------------------------------------------------------- */

static int rest__load_credentials(policy_t *p)
{
    evlog_event *ev = NULL;
    struct policy_rest *r = p->rest;
    GUARD(evlog_read(p->log, p->st.cluster.created_seq, &ev));
    if (ev->body_case == INE__V1__EVENT__BODY_CLUSTER_CREATED && *ev->cluster_created->admin_username) {
        r->user = strdup(ev->cluster_created->admin_username);
        r->pw_hash = strdup(ev->cluster_created->admin_password_hash);
    }
    evlog_event_free(ev);
    return INE_OK;
}

/* 1 if the request carries the cluster's credentials. PBKDF2 is slow on purpose, so the last
 * good pair is remembered as a keyed hash and later requests compare against that. */
static int rest__authorized(struct policy_rest *r, struct evhttp_request *req, char *user, size_t ulen)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    unsigned char dec[1024], mac[32];
    unsigned int maclen = 0;
    char *colon;
    int n, ok = 0;
    size_t in;
    user[0] = 0;
    if (!r->user || !h || strncasecmp(h, "Basic ", 6)) return 0;
    h += 6;
    while (*h == ' ') h++;
    in = strlen(h);
    if (in == 0 || in > (sizeof dec / 3) * 4 || in % 4) return 0;
    n = EVP_DecodeBlock(dec, (const unsigned char *)h, (int)in);
    if (n < 0) return 0;
    if (in >= 1 && h[in - 1] == '=') n--;
    if (in >= 2 && h[in - 2] == '=') n--;
    dec[n] = 0;
    if (!(colon = memchr(dec, ':', (size_t)n))) goto out;
    *colon = 0;
    {
        size_t ul = strlen((char *)dec);
        if (ul >= ulen) ul = ulen - 1; /* only for log lines: truncation is fine */
        memcpy(user, dec, ul);
        user[ul] = 0;
    }
    if (strcmp((char *)dec, r->user)) goto out;
    *colon = 0; /* HMAC over "user\0password" */
    HMAC(EVP_sha256(), r->mac_key, sizeof r->mac_key, dec, (size_t)n, mac, &maclen);
    if (r->have_good && CRYPTO_memcmp(mac, r->good, sizeof mac) == 0) {
        ok = 1;
    } else if (passwd_verify(colon + 1, r->pw_hash) == INE_OK) {
        memcpy(r->good, mac, sizeof mac);
        r->have_good = 1;
        ok = 1;
    }
out:
    OPENSSL_cleanse(dec, sizeof dec);
    return ok;
}

/* --- requests -------------------------------------------------------------------------------- */

/* It becomes part of the log's request ids (policy and CA), which have a length limit. */
static int rest__request_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n < 1 || n > POLICY_MAX_REQUEST_ID) return 0;
    for (; *id; id++)
        if (*id < 0x20 || *id > 0x7e) return 0;
    return 1;
}

static void rest__handle(struct evhttp_request *req, void *arg)
{
    policy_t *p = arg;
    rest_ctx c = {.p = p, .req = req};
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    char user[256] = "join";
    int pub = rest_join_public(path);

    if (!pub && !rest__authorized(p->rest, req, user, sizeof user)) {
        logline(LOGLINE_WARN, 0, "REST %s: refused (401) for user '%s'", path ? path : "?", user);
        rest_error(&c, 401, "unauthorized", p->rest->user ? "wrong or missing credentials (HTTP basic auth)"
                                                          : "no REST credentials were set at cluster creation");
        return;
    }
    c.user = user;
    c.request_id = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    c.body_len = evbuffer_get_length(in);
    if (c.body_len > REST_MAX_BODY) {
        rest_error(&c, 413, "too_large", "the body has %zu bytes; at most %u are accepted", c.body_len, REST_MAX_BODY);
        return;
    }
    if (c.request_id && !rest__request_id_ok(c.request_id)) {
        rest_error(&c, 400, "bad_request", "X-Request-Id takes 1-%d printable ASCII characters", POLICY_MAX_REQUEST_ID);
        return;
    }
    if (!(c.body = malloc(c.body_len + 1))) {
        rest_error(&c, 500, "internal", "out of memory");
        return;
    }
    evbuffer_remove(in, c.body, c.body_len);
    c.body[c.body_len] = 0;
    if (policy_catch_up(p) < 0) rest_error(&c, 500, "internal", "cannot read the log: %s", ine_err_msg());
    else if (pub) rest_join_route(&c, path);
    else rest_route(&c, path ? path : "/");
    /* Bodies may hold private keys (certificate uploads) or join tokens. */
    OPENSSL_cleanse(c.body, c.body_len);
    free(c.body);
}

/* --- TLS ----------------------------------------------------------------------------------- */

/* The serving context from the node's control-plane certificate in the log, or the files. */
static SSL_CTX *rest__load_ctx(policy_t *p, uint64_t *seq_out)
{
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = NULL;
    EVP_PKEY *key = NULL;
    pki_key *pk = NULL;
    SSL_CTX *ctx = NULL;
    char *pem = NULL;
    *seq_out = 0;
    if (p->rest_cert_file) {
        FILE *f;
        struct stat st;
        size_t n;
        if (stat(p->rest_key_file, &st) != 0 || (st.st_mode & 077)) {
            ine_err(INE_EPERM, "REST key %s is missing or readable by group or others (chmod 600)", p->rest_key_file);
            return NULL;
        }
        if (!(f = fopen(p->rest_cert_file, "r"))) {
            ine_err(INE_EIO, "cannot read %s", p->rest_cert_file);
            return NULL;
        }
        pem = calloc(1, REST_MAX_BODY + 1);
        n = pem ? fread(pem, 1, REST_MAX_BODY, f) : 0;
        fclose(f);
        if (!n || tlsconf_pem_certs(pem, &leaf, &chain) < 0) goto out;
        if ((f = fopen(p->rest_key_file, "r"))) {
            key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
            fclose(f);
        }
        if (!key) {
            ERR_clear_error();
            ine_err(INE_EINVAL, "cannot read the REST key %s (PEM, unencrypted)", p->rest_key_file);
            goto out;
        }
    } else {
        const proj_cert *c = proj_cert_find(&p->st, p->rest_node, INE__V1__PLANE__PLANE_CONTROL);
        if (!c) {
            ine_err(INE_ENOTFOUND, "node %u has no control-plane certificate yet (is ine-ca running?)", p->rest_node);
            return NULL;
        }
        if (asprintf(&pem, "%s%s", c->cert.cert_pem ? c->cert.cert_pem : "", c->cert.chain_pem ? c->cert.chain_pem : "") < 0) {
            pem = NULL;
            goto out;
        }
        if (tlsconf_pem_certs(pem, &leaf, &chain) < 0 || sealed_load_key(p->log, p->seal, c->issued_seq, &pk) < 0) goto out;
        key = pki_evp(pk);
        EVP_PKEY_up_ref(key);
        *seq_out = c->issued_seq;
    }
    ctx = tlsconf_ctx_new(TLSCONF_SERVER, leaf, chain, key, NULL);
out:
    free(pem);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
    pki_key_free(pk);
    return ctx;
}

static struct bufferevent *rest__bevcb(struct event_base *base, void *arg)
{
    policy_t *p = arg;
    SSL *ssl = SSL_new(p->rest->ctx);
    if (!ssl) return NULL;
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
}

void policy_rest_tick(policy_t *p)
{
    struct policy_rest *r = p->rest;
    const proj_cert *c;
    uint64_t seq;
    SSL_CTX *ctx;
    if (!r || p->rest_cert_file) return;
    c = proj_cert_find(&p->st, p->rest_node, INE__V1__PLANE__PLANE_CONTROL);
    if (!c || c->issued_seq == r->cert_seq) return;
    if (!(ctx = rest__load_ctx(p, &seq))) {
        logline(LOGLINE_ERROR, c->issued_seq, "REST certificate reload: %s", ine_err_msg());
        r->cert_seq = c->issued_seq; /* do not retry every tick; the next change will */
        return;
    }
    SSL_CTX_free(r->ctx);
    r->ctx = ctx;
    r->cert_seq = seq;
    logline(LOGLINE_INFO, seq, "REST now serves node %u's control-plane certificate %s", p->rest_node, c->cert.serial_hex);
}

int policy_rest_start(policy_t *p)
{
    struct policy_rest *r = calloc(1, sizeof *r);
    if (!r) return ine_err(INE_ENOMEM, "out of memory");
    p->rest = r;
    if (RAND_bytes(r->mac_key, sizeof r->mac_key) != 1) return ine_err_ossl(INE_ECRYPTO, "RAND_bytes");
    GUARD(rest__load_credentials(p));
    if (!r->user) logline(LOGLINE_WARN, 0, "no REST credentials were set at cluster creation: every REST request gets 401");
    if (!(r->ctx = rest__load_ctx(p, &r->cert_seq))) return ine_err(INE_ERR, "REST certificate: %s", ine_err_msg());
    if (!(r->http = evhttp_new(p->base))) return ine_err(INE_ENOMEM, "cannot create the HTTP server");
    evhttp_set_bevcb(r->http, rest__bevcb, p);
    evhttp_set_gencb(r->http, rest__handle, p);
    /* evhttp's own hard limit, well above ours, so ours answers in JSON. */
    evhttp_set_max_body_size(r->http, 8 * REST_MAX_BODY);
    evhttp_set_max_headers_size(r->http, 64 * 1024);
    evhttp_set_timeout(r->http, 30);
    evhttp_set_allowed_methods(r->http, EVHTTP_REQ_GET | EVHTTP_REQ_PUT | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE);
    if (!evhttp_bind_socket_with_handle(r->http, p->rest_addr, (ev_uint16_t)p->rest_port))
        return ine_err(INE_EIO, "cannot listen on %s:%d for REST (in use?)", p->rest_addr, p->rest_port);
    return INE_OK;
}

int policy_rest_drain(policy_t *p) { return p->rest ? rest_join_stop(p) : 0; }

void policy_rest_stop(policy_t *p)
{
    struct policy_rest *r = p->rest;
    if (!r) return;
    rest_join_stop(p);
    if (r->http) evhttp_free(r->http);
    SSL_CTX_free(r->ctx);
    free(r->user);
    if (r->pw_hash) OPENSSL_cleanse(r->pw_hash, strlen(r->pw_hash));
    free(r->pw_hash);
    OPENSSL_cleanse(r, sizeof *r);
    free(r);
    p->rest = NULL;
}
