/* hsloop.c — mutual-TLS 1.3 handshakes in one process, client and server over a BIO pair, to
 * take a handshake's cost apart by configuration without sockets, scheduling or a second
 * process in the way (run it under callgrind: bench/transport/hsloop.sh).
 *
 *   hsloop N DIR [chain-built | chain-root | leaf-only] [ticket]
 *
 * DIR holds ca.pem, a.pem/a.key (client), b.pem/b.key (server). The chain each side presents:
 * chain-built — no chain configured, OpenSSL builds one from the trust store per handshake
 * (what ine did before e55814a); chain-root — the root configured as the chain; leaf-only —
 * SSL_MODE_NO_AUTO_CHAIN and no chain (what ine does now). `ticket`: the server issues one
 * TLS 1.3 ticket per handshake (ine's server does), which the client reads. */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { CHAIN_BUILT, CHAIN_ROOT, LEAF_ONLY };

/* A certificate (key = 0) or a private key (key = 1) from DIR/NAME in PEM; NULL if missing. */
static void *hs__pem(const char *dir, const char *name, int key)
{
    char path[512];
    FILE *f;
    void *v;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!(f = fopen(path, "r"))) return NULL;
    v = key ? (void *)PEM_read_PrivateKey(f, NULL, NULL, NULL) : (void *)PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    return v;
}

static SSL_CTX *hs__ctx(int server, const char *dir, int chain, int ticket)
{
    SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    X509 *leaf = hs__pem(dir, server ? "b.pem" : "a.pem", 0), *ca = hs__pem(dir, "ca.pem", 0), *ca2 = hs__pem(dir, "ca.pem", 0);
    EVP_PKEY *key = hs__pem(dir, server ? "b.key" : "a.key", 1);
    X509_STORE *store = X509_STORE_new();
    if (!c || !leaf || !ca || !ca2 || !key || !store) {
        fprintf(stderr, "hsloop: cannot load the certificates and keys in %s\n", dir);
        exit(2);
    }
    SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
    SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256");
    SSL_CTX_use_certificate(c, leaf);
    SSL_CTX_use_PrivateKey(c, key);
    if (chain == CHAIN_ROOT) SSL_CTX_add1_chain_cert(c, ca);
    if (chain == LEAF_ONLY) SSL_CTX_set_mode(c, SSL_MODE_NO_AUTO_CHAIN);
    X509_STORE_add_cert(store, ca2);
    SSL_CTX_set_cert_store(c, store);
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    if (server) SSL_CTX_set_num_tickets(c, ticket ? 1 : 0);
    X509_free(leaf);
    X509_free(ca);
    X509_free(ca2);
    EVP_PKEY_free(key);
    return c;
}

/* Step both ends until each has finished; the client then reads what the server sent after
 * its Finished (the ticket, if any, and one byte). */
static int hs__once(SSL_CTX *sc, SSL_CTX *cc)
{
    SSL *s = SSL_new(sc), *c = SSL_new(cc);
    BIO *bs, *bc;
    int sd = 0, cd = 0, rc = -1;
    char b;
    if (!s || !c || !BIO_new_bio_pair(&bs, 0, &bc, 0)) goto out;
    SSL_set_bio(s, bs, bs);
    SSL_set_bio(c, bc, bc);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    for (int i = 0; i < 20 && !(sd && cd); i++) {
        int r;
        if (!cd && (r = SSL_do_handshake(c)) != 1 && SSL_get_error(c, r) != SSL_ERROR_WANT_READ) goto out;
        cd = cd || r == 1;
        if (!sd && (r = SSL_do_handshake(s)) != 1 && SSL_get_error(s, r) != SSL_ERROR_WANT_READ) goto out;
        sd = sd || r == 1;
    }
    if (sd && cd && SSL_write(s, "x", 1) == 1 && SSL_read(c, &b, 1) == 1) rc = 0;
out:
    SSL_free(s);
    SSL_free(c);
    return rc;
}

int main(int argc, char **argv)
{
    int n, chain = LEAF_ONLY, ticket = 0;
    SSL_CTX *sc, *cc;
    struct timespec t0, t1;
    if (argc < 3 || (n = atoi(argv[1])) < 1) {
        fprintf(stderr, "usage: hsloop N DIR [chain-built | chain-root | leaf-only] [ticket]\n");
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "chain-built")) chain = CHAIN_BUILT;
        else if (!strcmp(argv[i], "chain-root")) chain = CHAIN_ROOT;
        else if (!strcmp(argv[i], "leaf-only")) chain = LEAF_ONLY;
        else if (!strcmp(argv[i], "ticket")) ticket = 1;
        else return fprintf(stderr, "hsloop: unknown option %s\n", argv[i]), 2;
    }
    sc = hs__ctx(1, argv[2], chain, ticket);
    cc = hs__ctx(0, argv[2], chain, ticket);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    for (int i = 0; i < n; i++) {
        if (hs__once(sc, cc) < 0) {
            fprintf(stderr, "hsloop: handshake %d failed\n", i);
            ERR_print_errors_fp(stderr);
            return 1;
        }
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    printf("%d handshakes, %.3f ms CPU each (both sides)\n", n,
           ((double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6) / n);
    SSL_CTX_free(sc);
    SSL_CTX_free(cc);
    return 0;
}
