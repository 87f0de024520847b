/* test_seal.c — the seal module: key files (creation, the permission and shape checks on
 * load), blob round trips, every way a blob can be wrong, purpose binding, and sealing inside
 * an event log append through the prepare hook. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "err.h"
#include "evlog.h"
#include "seal.h"
#include "testutil.h"

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir();
    cr_assert_not_null(dir);
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

TestSuite(seal, .init = setup, .fini = teardown);

static seal_key *key_fixed(uint8_t fill)
{
    uint8_t b[SEAL_KEY_LEN];
    seal_key *k = NULL;
    memset(b, fill, sizeof b);
    cr_assert_eq(seal_key_from_bytes(b, sizeof b, &k), INE_OK, "%s", ine_err_msg());
    return k;
}

static uint8_t *random_bytes(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    cr_assert_not_null(p);
    if (n) cr_assert_eq(RAND_bytes(p, (int)n), 1);
    return p;
}

/* A key file at dir/seal.key with the given contents and mode (no umask in the way). */
static char *write_key_file(const void *data, size_t len, mode_t mode)
{
    char *p = tu_path(dir, "seal.key");
    cr_assert_eq(tu_write_file(p, data, len), 0);
    cr_assert_eq(chmod(p, mode), 0);
    return p;
}

static void assert_open_fails(const seal_key *k, const char *purpose, const uint8_t *blob,
                              size_t blob_len, int want, const char *what)
{
    uint8_t *plain = (uint8_t *)"sentinel";
    size_t len = 12345;
    int rc = seal_open(k, purpose, blob, blob_len, &plain, &len);
    cr_assert_eq(rc, want, "%s: want %s, got %s (%s)", what, ine_strerror(want), ine_strerror(rc),
                 ine_err_msg());
    cr_assert_null(plain, "%s: output must be NULL on failure", what);
    cr_assert_eq(len, 0, "%s: length must be 0 on failure", what);
    cr_assert_neq(ine_err_msg()[0], '\0', "%s: failure without a sentence", what);
}

/* ---- round trips and the blob's shape --------------------------------------------------- */

Test(seal, round_trip_sizes_including_empty_and_1mib)
{
    const size_t sizes[] = {0, 1, 15, 16, 17, 4096, 1u << 20};
    seal_key *k = key_fixed(0x11);

    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i], blob_len, out_len;
        uint8_t *in = random_bytes(n), *blob, *out;

        cr_assert_eq(seal_seal(k, "test/round-trip", n ? in : NULL, n, &blob, &blob_len), INE_OK,
                     "size %zu: %s", n, ine_err_msg());
        cr_assert_eq(blob_len, n + seal_overhead(), "size %zu", n);
        cr_assert_eq(blob[0], SEAL_VERSION);
        cr_assert_eq(seal_open(k, "test/round-trip", blob, blob_len, &out, &out_len), INE_OK,
                     "size %zu: %s", n, ine_err_msg());
        cr_assert_not_null(out, "size %zu: an empty secret still gets a buffer", n);
        cr_assert_eq(out_len, n);
        cr_assert(n == 0 || memcmp(in, out, n) == 0, "size %zu: plaintext differs", n);
        seal_free_secret(out, out_len);
        free(blob);
        free(in);
    }
    seal_key_free(k);
}

Test(seal, overhead_is_version_nonce_tag)
{
    cr_assert_eq(seal_overhead(), 1 + 12 + 16);
}

/* The layout in seal.h is a contract (other tools may one day read blobs): decrypt one with
 * plain OpenSSL calls, following only the documentation. */
Test(seal, blob_layout_is_the_documented_aes_256_gcm)
{
    uint8_t kb[SEAL_KEY_LEN], *blob, out[64], aad[64];
    const char *purpose = "ine.v1/event/7/ca_created/sealed_key", *msg = "documented layout";
    size_t blob_len, n = strlen(msg), plen = strlen(purpose);
    seal_key *k = NULL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int outl, fin;

    for (size_t i = 0; i < sizeof kb; i++) kb[i] = (uint8_t)(i * 7 + 3);
    cr_assert_eq(seal_key_from_bytes(kb, sizeof kb, &k), INE_OK);
    cr_assert_eq(seal_seal(k, purpose, (const uint8_t *)msg, n, &blob, &blob_len), INE_OK);

    aad[0] = SEAL_VERSION;
    memcpy(aad + 1, purpose, plen);
    cr_assert_eq(EVP_DecryptInit_ex2(ctx, EVP_aes_256_gcm(), kb, blob + 1, NULL), 1);
    cr_assert_eq(EVP_DecryptUpdate(ctx, NULL, &outl, aad, (int)plen + 1), 1);
    cr_assert_eq(EVP_DecryptUpdate(ctx, out, &outl, blob + 13, (int)n), 1);
    cr_assert_eq(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, blob + 13 + n), 1);
    fin = EVP_DecryptFinal_ex(ctx, out + outl, &outl);
    cr_assert_eq(fin, 1, "tag does not verify with AAD = version || purpose");
    cr_assert_eq(memcmp(out, msg, n), 0);

    EVP_CIPHER_CTX_free(ctx);
    free(blob);
    seal_key_free(k);
}

Test(seal, blob_does_not_contain_the_plaintext)
{
    const char *pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
                      "BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3S"
                      "\n-----END PRIVATE KEY-----\n";
    size_t n = strlen(pem), blob_len;
    seal_key *k = key_fixed(0x22);
    uint8_t *blob;

    cr_assert_eq(seal_seal(k, "test/leak", (const uint8_t *)pem, n, &blob, &blob_len), INE_OK);
    /* Not the whole secret, and not any 8-byte window of it either. */
    for (size_t i = 0; i + 8 <= n; i++)
        cr_assert(!tu_contains(blob, blob_len, pem + i, 8), "plaintext bytes %zu..%zu appear in the blob",
                  i, i + 7);
    free(blob);
    seal_key_free(k);
}

Test(seal, two_seals_of_the_same_plaintext_differ)
{
    const uint8_t msg[] = "same secret, twice";
    seal_key *k = key_fixed(0x33);
    uint8_t *a, *b, *pa, *pb;
    size_t alen, blen, la, lb;

    cr_assert_eq(seal_seal(k, "test/twice", msg, sizeof msg, &a, &alen), INE_OK);
    cr_assert_eq(seal_seal(k, "test/twice", msg, sizeof msg, &b, &blen), INE_OK);
    cr_assert_eq(alen, blen);
    cr_assert_neq(memcmp(a + 1, b + 1, SEAL_NONCE_LEN), 0, "nonce repeated");
    cr_assert_neq(memcmp(a + 1 + SEAL_NONCE_LEN, b + 1 + SEAL_NONCE_LEN, sizeof msg), 0,
                  "ciphertext repeated");
    cr_assert_eq(seal_open(k, "test/twice", a, alen, &pa, &la), INE_OK);
    cr_assert_eq(seal_open(k, "test/twice", b, blen, &pb, &lb), INE_OK);
    cr_assert_eq(memcmp(pa, pb, sizeof msg), 0);
    seal_free_secret(pa, la);
    seal_free_secret(pb, lb);
    free(a);
    free(b);
    seal_key_free(k);
}

/* ---- blobs that must not open ------------------------------------------------------------ */

Test(seal, flipping_any_byte_of_any_region_is_refused)
{
    const uint8_t msg[] = "thirty-two bytes of private key!";
    seal_key *k = key_fixed(0x44);
    uint8_t *blob;
    size_t blob_len, ct_end = 1 + SEAL_NONCE_LEN + (sizeof msg - 1);

    cr_assert_eq(seal_seal(k, "test/tamper", msg, sizeof msg - 1, &blob, &blob_len), INE_OK);
    for (size_t i = 0; i < blob_len; i++) {
        const char *region = i == 0 ? "version" : i < 1 + SEAL_NONCE_LEN ? "nonce"
                           : i < ct_end ? "ciphertext" : "tag";
        char what[64];
        for (int bit = 0; bit < 8; bit += 7) { /* the lowest and the highest bit */
            blob[i] ^= (uint8_t)(1u << bit);
            snprintf(what, sizeof what, "%s byte %zu bit %d", region, i, bit);
            assert_open_fails(k, "test/tamper", blob, blob_len, INE_EAUTH, what);
            if (i == 0) cr_assert(strstr(ine_err_msg(), "version"), "%s", ine_err_msg());
            else cr_assert(strstr(ine_err_msg(), "does not authenticate"), "%s", ine_err_msg());
            blob[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* Restored, it opens again: the refusals above were the flips, nothing else. */
    {
        uint8_t *p;
        size_t n;
        cr_assert_eq(seal_open(k, "test/tamper", blob, blob_len, &p, &n), INE_OK);
        seal_free_secret(p, n);
    }
    free(blob);
    seal_key_free(k);
}

Test(seal, wrong_key_is_refused)
{
    const uint8_t msg[] = "for key one only";
    seal_key *k1 = key_fixed(0x55), *k2 = key_fixed(0x56);
    uint8_t *blob;
    size_t blob_len;

    cr_assert_eq(seal_seal(k1, "test/key", msg, sizeof msg, &blob, &blob_len), INE_OK);
    assert_open_fails(k2, "test/key", blob, blob_len, INE_EAUTH, "other key");
    free(blob);
    seal_key_free(k1);
    seal_key_free(k2);
}

Test(seal, wrong_purpose_is_refused)
{
    const uint8_t msg[] = "bound to seq 42";
    seal_key *k = key_fixed(0x66);
    char p42[SEAL_PURPOSE_MAX], other[SEAL_PURPOSE_MAX];
    uint8_t *blob, *plain;
    size_t blob_len, len;

    cr_assert_eq(seal_purpose_event(p42, sizeof p42, 42, "certificate_issued", "sealed_key"), INE_OK);
    cr_assert_eq(seal_seal(k, p42, msg, sizeof msg, &blob, &blob_len), INE_OK);

    cr_assert_eq(seal_purpose_event(other, sizeof other, 43, "certificate_issued", "sealed_key"), INE_OK);
    assert_open_fails(k, other, blob, blob_len, INE_EAUTH, "seq 43");
    cr_assert(strstr(ine_err_msg(), other), "the message names the purpose: %s", ine_err_msg());
    cr_assert_eq(seal_purpose_event(other, sizeof other, 4, "certificate_issued", "sealed_key"), INE_OK);
    assert_open_fails(k, other, blob, blob_len, INE_EAUTH, "seq 4 (a prefix of 42)");
    cr_assert_eq(seal_purpose_event(other, sizeof other, 42, "ca_created", "sealed_key"), INE_OK);
    assert_open_fails(k, other, blob, blob_len, INE_EAUTH, "other event type");
    cr_assert_eq(seal_purpose_event(other, sizeof other, 42, "certificate_issued", "sealed_ca_key"), INE_OK);
    assert_open_fails(k, other, blob, blob_len, INE_EAUTH, "other field");
    assert_open_fails(k, "ine.v1/event/42/certificate_issued/sealed_key/", blob, blob_len, INE_EAUTH,
                      "trailing slash");

    cr_assert_eq(seal_open(k, p42, blob, blob_len, &plain, &len), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(len, sizeof msg);
    cr_assert_eq(memcmp(plain, msg, len), 0);
    seal_free_secret(plain, len);
    free(blob);
    seal_key_free(k);
}

Test(seal, truncated_or_extended_blob_is_refused)
{
    const uint8_t msg[] = "cut me short";
    seal_key *k = key_fixed(0x77);
    uint8_t *blob, *longer;
    size_t blob_len;

    cr_assert_eq(seal_seal(k, "test/cut", msg, sizeof msg, &blob, &blob_len), INE_OK);
    for (size_t n = 0; n < blob_len; n++) {
        char what[48];
        snprintf(what, sizeof what, "truncated to %zu bytes", n);
        /* Copy, so ASan catches any read past the shortened end. */
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, blob, n);
        assert_open_fails(k, "test/cut", cut, n, n < seal_overhead() ? INE_EINVAL : INE_EAUTH, what);
        free(cut);
    }
    longer = malloc(blob_len + 1);
    memcpy(longer, blob, blob_len);
    longer[blob_len] = 0;
    assert_open_fails(k, "test/cut", longer, blob_len + 1, INE_EAUTH, "one byte appended");
    free(longer);
    free(blob);
    seal_key_free(k);
}

Test(seal, missing_purpose_or_arguments_are_refused)
{
    const uint8_t msg[] = "x";
    seal_key *k = key_fixed(0x78);
    uint8_t *blob = (uint8_t *)"sentinel";
    size_t blob_len = 99;

    cr_assert_eq(seal_seal(k, "", msg, 1, &blob, &blob_len), INE_EINVAL);
    cr_assert_null(blob);
    cr_assert_eq(blob_len, 0);
    cr_assert_eq(seal_seal(k, NULL, msg, 1, &blob, &blob_len), INE_EINVAL);
    cr_assert_eq(seal_seal(NULL, "p", msg, 1, &blob, &blob_len), INE_EINVAL);
    cr_assert_eq(seal_seal(k, "p", NULL, 1, &blob, &blob_len), INE_EINVAL);
    cr_assert_null(blob);
    seal_key_free(k);
    k = (seal_key *)msg;
    cr_assert_eq(seal_key_from_bytes(msg, 1, &k), INE_EINVAL, "a 1-byte key");
    cr_assert_null(k);
}

/* ---- purposes --------------------------------------------------------------------------- */

Test(seal, purpose_event_format_and_limits)
{
    char buf[SEAL_PURPOSE_MAX];
    const char *want = "ine.v1/event/42/certificate_issued/sealed_key";
    char exact[46];

    cr_assert_eq(seal_purpose_event(buf, sizeof buf, 42, "certificate_issued", "sealed_key"), INE_OK);
    cr_assert_str_eq(buf, want);
    cr_assert_eq(seal_purpose_event(buf, sizeof buf, UINT64_MAX, "certificate_issued", "sealed_key"), INE_OK);
    cr_assert_str_eq(buf, "ine.v1/event/18446744073709551615/certificate_issued/sealed_key");

    cr_assert_eq(sizeof exact, strlen(want) + 1);
    cr_assert_eq(seal_purpose_event(exact, sizeof exact, 42, "certificate_issued", "sealed_key"), INE_OK);
    cr_assert_str_eq(exact, want);
    cr_assert_eq(seal_purpose_event(exact, sizeof exact - 1, 42, "certificate_issued", "sealed_key"),
                 INE_EINVAL, "a truncated purpose must never be produced");
    cr_assert_str_eq(exact, "");

    cr_assert_eq(seal_purpose_event(buf, sizeof buf, 0, "certificate_issued", "sealed_key"), INE_EINVAL);
    cr_assert_eq(seal_purpose_event(buf, sizeof buf, 42, "", "sealed_key"), INE_EINVAL);
    cr_assert_eq(seal_purpose_event(buf, sizeof buf, 42, "certificate_issued", ""), INE_EINVAL);
    cr_assert_eq(seal_purpose_event(buf, sizeof buf, 42, NULL, "sealed_key"), INE_EINVAL);
    /* A '/' would let ("a/b", "c") and ("a", "b/c") name the same place. */
    cr_assert_eq(seal_purpose_event(buf, sizeof buf, 42, "a/b", "c"), INE_EINVAL);
    cr_assert_eq(seal_purpose_event(buf, sizeof buf, 42, "a", "b/c"), INE_EINVAL);
}

/* ---- key files -------------------------------------------------------------------------- */

Test(seal, key_file_is_created_0600_even_with_umask_0)
{
    char *p = tu_path(dir, SEAL_KEY_FILE);
    struct stat st;
    mode_t old = umask(0);
    seal_key *k = NULL;

    cr_assert_eq(seal_key_create(p), INE_OK, "%s", ine_err_msg());
    umask(old);
    cr_assert_eq(lstat(p, &st), 0);
    cr_assert(S_ISREG(st.st_mode));
    cr_assert_eq(st.st_mode & 07777, 0600, "mode %04o", (unsigned)(st.st_mode & 07777));
    cr_assert_eq(st.st_size, SEAL_KEY_LEN);
    cr_assert_eq(seal_key_load(p, &k), INE_OK, "%s", ine_err_msg());
    cr_assert_not_null(k);
    seal_key_free(k);
    free(p);
}

/* The file holds the key itself: a key made from its bytes opens what the loaded key sealed. */
Test(seal, loaded_key_is_the_file_contents_and_keys_differ)
{
    char *p = tu_path(dir, "a.key"), *q = tu_path(dir, "b.key"), *pa, *pb;
    size_t la, lb, blob_len, n;
    seal_key *loaded, *raw;
    uint8_t *blob, *plain;

    cr_assert_eq(seal_key_create(p), INE_OK);
    cr_assert_eq(seal_key_create(q), INE_OK);
    pa = tu_read_file(p, &la);
    pb = tu_read_file(q, &lb);
    cr_assert(la == SEAL_KEY_LEN && lb == SEAL_KEY_LEN);
    cr_assert_neq(memcmp(pa, pb, SEAL_KEY_LEN), 0, "two created keys are equal");

    cr_assert_eq(seal_key_load(p, &loaded), INE_OK);
    cr_assert_eq(seal_key_from_bytes((uint8_t *)pa, la, &raw), INE_OK);
    cr_assert_eq(seal_seal(loaded, "test/file", (const uint8_t *)"abc", 3, &blob, &blob_len), INE_OK);
    cr_assert_eq(seal_open(raw, "test/file", blob, blob_len, &plain, &n), INE_OK, "%s", ine_err_msg());
    cr_assert(n == 3 && memcmp(plain, "abc", 3) == 0);

    seal_free_secret(plain, n);
    free(blob);
    seal_key_free(loaded);
    seal_key_free(raw);
    seal_free_secret(pa, la);
    seal_free_secret(pb, lb);
    free(p);
    free(q);
}

Test(seal, create_refuses_an_existing_file)
{
    char *p = tu_path(dir, SEAL_KEY_FILE), *before, *after;
    size_t lb, la;

    cr_assert_eq(seal_key_create(p), INE_OK);
    before = tu_read_file(p, &lb);
    cr_assert_eq(seal_key_create(p), INE_EEXIST);
    cr_assert(strstr(ine_err_msg(), "already exists"), "%s", ine_err_msg());
    after = tu_read_file(p, &la);
    cr_assert(la == lb && memcmp(before, after, la) == 0, "the existing key was changed");
    free(before);
    free(after);
    free(p);
}

Test(seal, create_refuses_a_symlink_even_dangling)
{
    char *p = tu_path(dir, SEAL_KEY_FILE), *target = tu_path(dir, "elsewhere");
    struct stat st;

    cr_assert_eq(symlink(target, p), 0);
    cr_assert_eq(seal_key_create(p), INE_EEXIST);
    cr_assert_eq(stat(target, &st), -1, "the link's target was created");
    cr_assert_eq(lstat(p, &st), 0);
    cr_assert(S_ISLNK(st.st_mode), "the symlink was removed");
    free(target);
    free(p);
}

Test(seal, load_refuses_group_or_other_access_naming_the_mode)
{
    const mode_t bad[] = {0644, 0640, 0604, 0660, 0606, 0620, 0602, 0610, 0601};
    uint8_t kb[SEAL_KEY_LEN] = {1};
    char *p = write_key_file(kb, sizeof kb, 0600), want[16];
    seal_key *k = NULL;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(chmod(p, bad[i]), 0);
        cr_assert_eq(seal_key_load(p, &k), INE_EPERM, "mode %04o: %s", (unsigned)bad[i], ine_err_msg());
        cr_assert_null(k);
        snprintf(want, sizeof want, "mode %04o", (unsigned)bad[i]);
        cr_assert(strstr(ine_err_msg(), want), "message does not name %s: %s", want, ine_err_msg());
        cr_assert(strstr(ine_err_msg(), p) && strstr(ine_err_msg(), "chmod 600"), "%s", ine_err_msg());
    }
    /* Owner-only modes are fine, read-only included. */
    cr_assert_eq(chmod(p, 0400), 0);
    cr_assert_eq(seal_key_load(p, &k), INE_OK, "%s", ine_err_msg());
    seal_key_free(k);
    cr_assert_eq(chmod(p, 0600), 0);
    cr_assert_eq(seal_key_load(p, &k), INE_OK, "%s", ine_err_msg());
    seal_key_free(k);
    free(p);
}

Test(seal, load_refuses_a_wrong_size)
{
    const size_t sizes[] = {0, 1, 31, 33, 64};
    uint8_t buf[64] = {0};
    seal_key *k = NULL;

    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *p = write_key_file(buf, sizes[i], 0600);
        cr_assert_eq(seal_key_load(p, &k), INE_EINVAL, "size %zu", sizes[i]);
        cr_assert_null(k);
        cr_assert(strstr(ine_err_msg(), "must be 32 bytes"), "%s", ine_err_msg());
        free(p);
    }
}

Test(seal, load_refuses_a_symlink)
{
    uint8_t kb[SEAL_KEY_LEN] = {2};
    char *real = write_key_file(kb, sizeof kb, 0600), *link = tu_path(dir, "link.key");
    seal_key *k = NULL;

    cr_assert_eq(symlink(real, link), 0);
    cr_assert_eq(seal_key_load(link, &k), INE_EPERM, "%s", ine_err_msg());
    cr_assert_null(k);
    cr_assert(strstr(ine_err_msg(), "symbolic link"), "%s", ine_err_msg());
    cr_assert_eq(seal_key_load(real, &k), INE_OK, "the target itself is fine: %s", ine_err_msg());
    seal_key_free(k);
    free(real);
    free(link);
}

Test(seal, load_refuses_non_regular_files_and_reports_a_missing_one)
{
    char *d = tu_path(dir, "adir"), *fifo = tu_path(dir, "fifo"), *none = tu_path(dir, "none");
    seal_key *k = NULL;

    cr_assert_eq(mkdir(d, 0700), 0);
    cr_assert_eq(seal_key_load(d, &k), INE_EINVAL);
    cr_assert(strstr(ine_err_msg(), "not a regular file"), "%s", ine_err_msg());
    /* A FIFO with no writer would block a plain open forever. */
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    cr_assert_eq(seal_key_load(fifo, &k), INE_EINVAL);
    cr_assert(strstr(ine_err_msg(), "not a regular file"), "%s", ine_err_msg());
    cr_assert_eq(seal_key_load(none, &k), INE_ENOTFOUND);
    cr_assert(strstr(ine_err_msg(), none), "%s", ine_err_msg());
    cr_assert_null(k);
    free(d);
    free(fifo);
    free(none);
}

/* ---- sealing inside an event log append --------------------------------------------------- */

typedef struct {
    const seal_key *key;
    const char *secrets[4];   /* by position in the append */
    size_t next;
} hook_ctx;

/* What the CA will do: seal each event's private key for (seq, type, field) once seq is known. */
static int seal_hook(evlog_event *ev, void *ud)
{
    hook_ctx *h = ud;
    char purpose[SEAL_PURPOSE_MAX];
    const char *secret = h->secrets[h->next++];
    Ine__V1__CertificateIssued *ci;

    if (ev->body_case != INE__V1__EVENT__BODY_CERTIFICATE_ISSUED) return INE_OK;
    ci = ev->certificate_issued;
    GUARD(seal_purpose_event(purpose, sizeof purpose, ev->seq, evlog_type_name(ev), "sealed_key"));
    free(ci->sealed_key.data);
    ci->sealed_key.data = NULL;
    ci->sealed_key.len = 0;
    return seal_seal(h->key, purpose, (const uint8_t *)secret, strlen(secret), &ci->sealed_key.data,
                     &ci->sealed_key.len);
}

static evlog_event *ev_cert_issued(uint32_t node)
{
    evlog_event *ev = calloc(1, sizeof *ev);
    Ine__V1__CertificateIssued *b = calloc(1, sizeof *b);
    ine__v1__event__init(ev);
    ine__v1__certificate_issued__init(b);
    b->node_uid = node;
    b->plane = INE__V1__PLANE__PLANE_CONTROL;
    ev->producer = strdup("test");
    ev->actor = strdup("tester");
    ev->body_case = INE__V1__EVENT__BODY_CERTIFICATE_ISSUED;
    ev->certificate_issued = b;
    return ev;
}

static void open_from_log(evlog_t *log, const seal_key *k, uint64_t seq, uint64_t as_seq,
                          const char *want)
{
    evlog_event *ev = NULL;
    char purpose[SEAL_PURPOSE_MAX];
    ProtobufCBinaryData *sk;
    uint8_t *plain, *raw;
    size_t len, raw_len;

    cr_assert_eq(evlog_read(log, seq, &ev), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(ev->body_case, INE__V1__EVENT__BODY_CERTIFICATE_ISSUED);
    sk = &ev->certificate_issued->sealed_key;
    cr_assert_eq(sk->len, strlen(want) + seal_overhead());
    /* Nothing of the secret reaches the disk in clear. */
    cr_assert_eq(evlog_read_raw(log, seq, &raw, &raw_len), INE_OK);
    cr_assert(!tu_contains(raw, raw_len, want, strlen(want)), "secret in clear in record %llu",
              (unsigned long long)seq);
    free(raw);

    cr_assert_eq(seal_purpose_event(purpose, sizeof purpose, as_seq ? as_seq : ev->seq,
                                    evlog_type_name(ev), "sealed_key"), INE_OK);
    if (!as_seq) {
        cr_assert_eq(seal_open(k, purpose, sk->data, sk->len, &plain, &len), INE_OK,
                     "seq %llu: %s", (unsigned long long)seq, ine_err_msg());
        cr_assert(len == strlen(want) && memcmp(plain, want, len) == 0);
        seal_free_secret(plain, len);
    } else {
        assert_open_fails(k, purpose, sk->data, sk->len, INE_EAUTH, "opened under another seq");
    }
    evlog_event_free(ev);
}

Test(seal, sealed_in_the_append_hook_opens_only_under_its_own_seq)
{
    char *logdir = tu_path(dir, "log");
    evlog_t *log = NULL;
    seal_key *k = key_fixed(0x99);
    evlog_event *first = tu_ev_node_added(1, "10.0.0.1"), *evs[2];
    hook_ctx h = {.key = k, .secrets = {"private key of node 1", "private key of node 2"}};
    evlog_append_opts o = {.prepare = seal_hook, .prepare_ud = &h};
    uint64_t seq = 0;

    cr_assert_eq(evlog_open(logdir, NULL, &log), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(evlog_append_one(log, first, NULL, &seq), INE_OK);
    cr_assert_eq(seq, 1);

    evs[0] = ev_cert_issued(1);
    evs[1] = ev_cert_issued(2);
    cr_assert_eq(evlog_append(log, evs, 2, &o, &seq), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(seq, 2);
    cr_assert_eq(h.next, 2);

    open_from_log(log, k, 2, 0, "private key of node 1");
    open_from_log(log, k, 3, 0, "private key of node 2");
    /* Record 2's blob under record 3's purpose (a swap) and the reverse, and seqs that are near. */
    open_from_log(log, k, 2, 3, "private key of node 1");
    open_from_log(log, k, 3, 2, "private key of node 2");
    open_from_log(log, k, 2, 1, "private key of node 1");
    open_from_log(log, k, 3, 4, "private key of node 2");

    evlog_close(log);
    tu_event_free(first);
    tu_event_free(evs[0]);
    tu_event_free(evs[1]);
    seal_key_free(k);
    free(logdir);
}
