/* seal.c — the cluster seal key (its file, its memory) and AES-256-GCM blobs bound to a
 * purpose. See seal.h for the blob layout. Key bytes live in one page of their own, locked
 * in RAM when the system allows it and left out of core dumps, and are cleansed before
 * they are freed; they are never printed. */
#include "seal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "err.h"

#define SEAL__OVERHEAD (1 + SEAL_NONCE_LEN + SEAL_TAG_LEN)
#define SEAL__PURPOSE_LIMIT 4096      /* a purpose is a short label, never data */
#define SEAL__CHUNK (1 << 30)         /* EVP lengths are ints: feed big buffers in chunks */

struct seal_key {
    uint8_t bytes[SEAL_KEY_LEN];
    size_t page;                      /* size of the page the struct sits alone in */
    int locked;                       /* mlock succeeded: munlock on free */
};

/* ---- key memory ------------------------------------------------------------------------ */

/* A page of its own, so mlock/munlock (which do not nest) never touch another object. */
static int seal__key_alloc(seal_key **out)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t page = pg > 0 && (size_t)pg >= sizeof(seal_key) ? (size_t)pg : 4096;
    void *p = NULL;
    seal_key *k;

    *out = NULL;
    if (posix_memalign(&p, page, page) != 0)
        return ine_err(INE_ENOMEM, "out of memory for the seal key");
    memset(p, 0, page);
    k = p;
    k->page = page;
    /* Best effort: an unprivileged process may be over RLIMIT_MEMLOCK; sealing still works. */
    k->locked = mlock(p, page) == 0;
#ifdef MADV_DONTDUMP
    (void)madvise(p, page, MADV_DONTDUMP);
#endif
    *out = k;
    return INE_OK;
}

void seal_key_free(seal_key *k)
{
    size_t page;
    int locked;

    if (!k) return;
    page = k->page;
    locked = k->locked;
    OPENSSL_cleanse(k, page);
#ifdef MADV_DODUMP
    (void)madvise(k, page, MADV_DODUMP);
#endif
    if (locked) (void)munlock(k, page);
    free(k);
}

int seal_key_from_bytes(const uint8_t *bytes, size_t len, seal_key **out)
{
    seal_key *k;

    if (!out) return ine_err(INE_EINVAL, "seal_key_from_bytes: no output pointer");
    *out = NULL;
    if (!bytes || len != SEAL_KEY_LEN)
        return ine_err(INE_EINVAL, "a seal key must be %d bytes, not %zu", SEAL_KEY_LEN, bytes ? len : 0);
    GUARD(seal__key_alloc(&k));
    memcpy(k->bytes, bytes, SEAL_KEY_LEN);
    *out = k;
    return INE_OK;
}

/* ---- key file -------------------------------------------------------------------------- */

static int seal__errno(int e, const char *what, const char *path)
{
    int rc = INE_EIO;
    switch (e) {
    case ENOENT: case ENOTDIR: rc = INE_ENOTFOUND; break;
    case EACCES: case EPERM: case EROFS: rc = INE_EPERM; break;
    case ENOMEM: rc = INE_ENOMEM; break;
    case EEXIST: rc = INE_EEXIST; break;
    default: break;
    }
    return ine_err(rc, "cannot %s seal key %s: %s", what, path, strerror(e));
}

/* A created file is durable only once its directory entry is. */
static int seal__fsync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    int fd, rc = INE_OK;

    if (!slash) dir = strdup(".");
    else if (slash == path) dir = strdup("/");
    else dir = strndup(path, (size_t)(slash - path));
    if (!dir) return ine_err(INE_ENOMEM, "out of memory");
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        rc = ine_err(INE_EIO, "cannot sync directory %s of seal key %s: %s", dir, path, strerror(errno));
    if (fd >= 0) close(fd);
    free(dir);
    return rc;
}

/* Write `key` to a new file at path (never replacing anything). */
static int seal__key_write(const char *path, const uint8_t key[SEAL_KEY_LEN])
{
    char tmp[4096];
    size_t off = 0;
    int fd = -1, rc = INE_OK;

    if (!path || !*path) return ine_err(INE_EINVAL, "seal key path is empty");
    {
        struct stat st;
        /* Checked again by link() below; this early answer just avoids a needless key. */
        if (lstat(path, &st) == 0)
            return ine_err(INE_EEXIST, "seal key %s already exists: refusing to replace it "
                           "(every sealed secret in the log depends on it)", path);
    }
    /* Written under a temporary name and linked into place: a crash mid-write leaves a stray
     * temporary, never a short key that would block every later start. */
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return ine_err(INE_EINVAL, "seal key path %s is too long", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return seal__errno(errno, "create", tmp);
    /* The umask may only remove bits, but an ACL-default directory may add some: be exact. */
    if (fchmod(fd, 0600) != 0) {
        rc = seal__errno(errno, "set the mode of", tmp);
        goto fail;
    }
    while (off < SEAL_KEY_LEN) {
        ssize_t w = write(fd, key + off, SEAL_KEY_LEN - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            rc = seal__errno(w < 0 ? errno : EIO, "write", tmp);
            goto fail;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        rc = seal__errno(errno, "sync", tmp);
        goto fail;
    }
    rc = close(fd);
    fd = -1;
    if (rc != 0) {
        rc = seal__errno(errno, "close", tmp);
        goto fail;
    }
    /* link(2) never replaces: it also refuses a symlink at path, dangling or not. */
    if (link(tmp, path) != 0) {
        if (errno == EEXIST)
            rc = ine_err(INE_EEXIST, "seal key %s already exists: refusing to replace it "
                         "(every sealed secret in the log depends on it)", path);
        else
            rc = seal__errno(errno, "create", path);
        goto fail;
    }
    unlink(tmp);
    return seal__fsync_dir(path);

fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
    return rc;
}

int seal_key_create(const char *path)
{
    uint8_t key[SEAL_KEY_LEN];
    int rc;
    if (RAND_bytes(key, sizeof key) != 1) return ine_err_ossl(INE_ECRYPTO, "RAND_bytes for the seal key");
    rc = seal__key_write(path, key);
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

int seal_key_write(const char *path, const uint8_t *bytes, size_t len)
{
    if (!bytes || len != SEAL_KEY_LEN)
        return ine_err(INE_EINVAL, "a seal key must be %d bytes, not %zu", SEAL_KEY_LEN, bytes ? len : 0);
    return seal__key_write(path, bytes);
}

int seal_key_bytes(const seal_key *k, uint8_t out[SEAL_KEY_LEN])
{
    if (!k) return ine_err(INE_EINVAL, "seal_key_bytes: no key");
    memcpy(out, k->bytes, SEAL_KEY_LEN);
    return INE_OK;
}

int seal_key_load(const char *path, seal_key **out)
{
    struct stat st;
    seal_key *k = NULL;
    size_t off = 0;
    uint8_t extra;
    ssize_t r;
    int fd, rc = INE_OK;

    if (!out) return ine_err(INE_EINVAL, "seal_key_load: no output pointer");
    *out = NULL;
    if (!path || !*path) return ine_err(INE_EINVAL, "seal key path is empty");
    /* O_NONBLOCK: a FIFO planted at path must not hang us before fstat can refuse it. */
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP)
            return ine_err(INE_EPERM, "seal key %s is a symbolic link: refusing to follow it "
                           "(use the real file's path)", path);
        return seal__errno(errno, "open", path);
    }
    if (fstat(fd, &st) != 0) {
        rc = seal__errno(errno, "stat", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = ine_err(INE_EINVAL, "seal key %s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & 077) {
        rc = ine_err(INE_EPERM, "seal key %s has mode %04o: it must be readable by its owner "
                     "only (chmod 600)", path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if (st.st_size != SEAL_KEY_LEN) {
        rc = ine_err(INE_EINVAL, "seal key %s is %lld bytes: it must be %d bytes",
                     path, (long long)st.st_size, SEAL_KEY_LEN);
        goto out;
    }
    GUARD_GOTO(seal__key_alloc(&k), out);
    while (off < SEAL_KEY_LEN) {
        r = read(fd, k->bytes + off, SEAL_KEY_LEN - off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = seal__errno(errno, "read", path);
            goto out;
        }
        if (r == 0) break;
        off += (size_t)r;
    }
    /* The size was checked, but the file could change under us: insist on exactly 32 bytes. */
    do r = read(fd, &extra, 1); while (r < 0 && errno == EINTR);
    if (off != SEAL_KEY_LEN || r != 0) {
        rc = ine_err(INE_EINVAL, "seal key %s changed size while being read: it must be %d bytes",
                     path, SEAL_KEY_LEN);
        goto out;
    }
    *out = k;
    k = NULL;

out:
    seal_key_free(k);
    close(fd);
    return rc;
}

/* ---- blobs ----------------------------------------------------------------------------- */

size_t seal_overhead(void) { return SEAL__OVERHEAD; }

void seal_free_secret(void *p, size_t len)
{
    if (!p) return;
    OPENSSL_cleanse(p, len);
    free(p);
}

static int seal__check_purpose(const char *purpose)
{
    size_t n = purpose ? strnlen(purpose, SEAL__PURPOSE_LIMIT + 1) : 0;
    if (n == 0) return ine_err(INE_EINVAL, "a sealed blob needs a purpose (what it belongs to)");
    if (n > SEAL__PURPOSE_LIMIT)
        return ine_err(INE_EINVAL, "seal purpose longer than %d bytes", SEAL__PURPOSE_LIMIT);
    return INE_OK;
}

/* Feed `len` bytes through the cipher; out == NULL feeds additional data. */
static int seal__update(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *in, size_t len)
{
    int rc = INE_OK, outl;
    while (len > 0) {
        int n = len > SEAL__CHUNK ? SEAL__CHUNK : (int)len;
        GUARD_OSSL(EVP_CipherUpdate(ctx, out, &outl, in, n) == 1, fail);
        if (out) {
            /* GCM is a stream mode: anything else would be an OpenSSL bug we must not hide. */
            if (outl != n) return ine_err(INE_ECRYPTO, "AES-GCM produced %d bytes for %d", outl, n);
            out += n;
        }
        in += n;
        len -= (size_t)n;
    }
fail:
    return rc;
}

/* A context keyed with `nonce`, its additional data (version || purpose) already fed. */
static int seal__ctx(const seal_key *k, const uint8_t *nonce, int enc, const char *purpose,
                     EVP_CIPHER_CTX **out)
{
    EVP_CIPHER_CTX *ctx;
    const uint8_t version = SEAL_VERSION;
    int rc = INE_OK;

    *out = NULL;
    ctx = EVP_CIPHER_CTX_new();
    GUARD_OSSL(ctx != NULL, fail);
    /* GCM's default IV length is 12 bytes, which is SEAL_NONCE_LEN. */
    GUARD_OSSL(EVP_CipherInit_ex2(ctx, EVP_aes_256_gcm(), k->bytes, nonce, enc, NULL) == 1, fail);
    /* The version is authenticated too, so a blob cannot be relabelled as another format. */
    GUARD_GOTO(seal__update(ctx, NULL, &version, 1), fail);
    GUARD_GOTO(seal__update(ctx, NULL, (const uint8_t *)purpose, strlen(purpose)), fail);
    *out = ctx;
    return INE_OK;

fail:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int seal_seal(const seal_key *k, const char *purpose, const uint8_t *plain, size_t len,
              uint8_t **blob, size_t *blob_len)
{
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t *b = NULL, *nonce, *ct, *tag;
    int rc = INE_OK, outl;

    if (blob) *blob = NULL;
    if (blob_len) *blob_len = 0;
    if (!k || !blob || !blob_len || (!plain && len))
        return ine_err(INE_EINVAL, "seal_seal: missing key, input or output");
    GUARD(seal__check_purpose(purpose));
    if (len > SIZE_MAX - SEAL__OVERHEAD) return ine_err(INE_EINVAL, "secret too large to seal");

    b = malloc(len + SEAL__OVERHEAD);
    if (!b) return ine_err(INE_ENOMEM, "out of memory sealing %zu bytes", len);
    nonce = b + 1;
    ct = nonce + SEAL_NONCE_LEN;
    tag = ct + len;
    b[0] = SEAL_VERSION;
    GUARD_OSSL(RAND_bytes(nonce, SEAL_NONCE_LEN) == 1, fail);
    GUARD_GOTO(seal__ctx(k, nonce, 1, purpose, &ctx), fail);
    GUARD_GOTO(seal__update(ctx, ct, plain, len), fail);
    GUARD_OSSL(EVP_CipherFinal_ex(ctx, tag, &outl) == 1 && outl == 0, fail);
    GUARD_OSSL(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, SEAL_TAG_LEN, tag) == 1, fail);
    EVP_CIPHER_CTX_free(ctx);
    *blob = b;
    *blob_len = len + SEAL__OVERHEAD;
    return INE_OK;

fail:
    EVP_CIPHER_CTX_free(ctx);
    free(b);
    return rc;
}

int seal_open(const seal_key *k, const char *purpose, const uint8_t *blob, size_t blob_len,
              uint8_t **plain, size_t *len)
{
    EVP_CIPHER_CTX *ctx = NULL;
    const uint8_t *nonce, *ct, *tag;
    uint8_t *p = NULL;
    size_t ct_len;
    int rc = INE_OK, outl;

    if (plain) *plain = NULL;
    if (len) *len = 0;
    if (!k || !plain || !len || (!blob && blob_len))
        return ine_err(INE_EINVAL, "seal_open: missing key, input or output");
    GUARD(seal__check_purpose(purpose));
    if (blob_len < SEAL__OVERHEAD)
        return ine_err(INE_EINVAL, "sealed blob for %s is %zu bytes, shorter than the %d-byte "
                       "minimum: it is truncated or not a sealed blob", purpose, blob_len, SEAL__OVERHEAD);
    if (blob[0] != SEAL_VERSION)
        return ine_err(INE_EAUTH, "sealed blob for %s has format version %u, not %d: it was "
                       "altered or written by a newer version", purpose, blob[0], SEAL_VERSION);
    ct_len = blob_len - SEAL__OVERHEAD;
    nonce = blob + 1;
    ct = nonce + SEAL_NONCE_LEN;
    tag = ct + ct_len;

    p = malloc(ct_len ? ct_len : 1);
    if (!p) return ine_err(INE_ENOMEM, "out of memory opening %zu bytes", ct_len);
    GUARD_GOTO(seal__ctx(k, nonce, 0, purpose, &ctx), fail);
    GUARD_GOTO(seal__update(ctx, p, ct, ct_len), fail);
    GUARD_OSSL(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, SEAL_TAG_LEN, (void *)tag) == 1, fail);
    if (EVP_CipherFinal_ex(ctx, p + ct_len, &outl) != 1) {
        ERR_clear_error();
        rc = ine_err(INE_EAUTH, "sealed blob for %s does not authenticate: it was altered, sealed "
                     "with another key, or sealed for another place", purpose);
        goto fail;
    }
    EVP_CIPHER_CTX_free(ctx);
    *plain = p;
    *len = ct_len;
    return INE_OK;

fail:
    EVP_CIPHER_CTX_free(ctx);
    /* Decryption ran before the tag was checked: wipe what it wrote. */
    seal_free_secret(p, ct_len ? ct_len : 1);
    return rc;
}

/* ---- purposes -------------------------------------------------------------------------- */

static int seal__label_ok(const char *s)
{
    return s && *s && !strchr(s, '/');
}

int seal_purpose_event(char *buf, size_t len, uint64_t seq, const char *event_type,
                       const char *field)
{
    int n;

    if (buf && len) buf[0] = '\0';
    if (!buf || !len) return ine_err(INE_EINVAL, "seal_purpose_event: no buffer");
    if (seq == 0) return ine_err(INE_EINVAL, "seal purpose needs the event's seq (0 is unassigned)");
    if (!seal__label_ok(event_type) || !seal__label_ok(field))
        return ine_err(INE_EINVAL, "seal purpose: event type \"%s\" and field \"%s\" must be "
                       "non-empty and contain no '/'", event_type ? event_type : "",
                       field ? field : "");
    n = snprintf(buf, len, "ine.v1/event/%llu/%s/%s", (unsigned long long)seq, event_type, field);
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        return ine_err(INE_EINVAL, "seal purpose buffer of %zu bytes is too small (needs %d)",
                       len, n + 1);
    }
    return INE_OK;
}
