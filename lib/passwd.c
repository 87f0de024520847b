/* passwd.c — PBKDF2-HMAC-SHA256 password hashing (OpenSSL) and constant-time verification. */
#include "passwd.h"
#include "err.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PASSWD__SALT 16
#define PASSWD__OUT 32

static int passwd__derive(const char *pw, const unsigned char *salt, int slen, int iter, unsigned char out[PASSWD__OUT])
{
    int rc = INE_OK;
    GUARD_OSSL(PKCS5_PBKDF2_HMAC(pw, (int)strlen(pw), salt, slen, iter, EVP_sha256(), PASSWD__OUT, out) == 1, err);
err:
    return rc;
}

int passwd_hash(const char *password, char *out, size_t len)
{
    unsigned char salt[PASSWD__SALT], dk[PASSWD__OUT];
    char s64[64], h64[64];
    int rc = INE_OK, n;
    if (!password || !*password) return ine_err(INE_EINVAL, "the password is empty");
    GUARD_OSSL(RAND_bytes(salt, sizeof salt) == 1, err);
    GUARD_GOTO(passwd__derive(password, salt, sizeof salt, PASSWD_ITERATIONS, dk), err);
    EVP_EncodeBlock((unsigned char *)s64, salt, sizeof salt);
    EVP_EncodeBlock((unsigned char *)h64, dk, sizeof dk);
    n = snprintf(out, len, "pbkdf2-sha256$%d$%s$%s", PASSWD_ITERATIONS, s64, h64);
    if (n < 0 || (size_t)n >= len) rc = ine_err(INE_EINVAL, "password hash buffer too small");
err:
    OPENSSL_cleanse(dk, sizeof dk);
    return rc;
}

int passwd_verify(const char *password, const char *stored)
{
    char copy[PASSWD_HASH_MAX], *save = NULL, *alg, *it, *s64, *h64;
    unsigned char salt[64], want[64], got[PASSWD__OUT];
    int iter, slen, hlen, rc;
    if (!stored || strlen(stored) >= sizeof copy) return ine_err(INE_EINVAL, "malformed password hash");
    strcpy(copy, stored);
    alg = strtok_r(copy, "$", &save);
    it = strtok_r(NULL, "$", &save);
    s64 = strtok_r(NULL, "$", &save);
    h64 = strtok_r(NULL, "$", &save);
    if (!alg || !it || !s64 || !h64 || strcmp(alg, "pbkdf2-sha256") || (iter = atoi(it)) < 1000 ||
        strlen(s64) > 80 || strlen(h64) > 80)
        return ine_err(INE_EINVAL, "malformed password hash");
    slen = EVP_DecodeBlock(salt, (unsigned char *)s64, (int)strlen(s64));
    hlen = EVP_DecodeBlock(want, (unsigned char *)h64, (int)strlen(h64));
    /* EVP_DecodeBlock counts base64 padding as zero bytes. */
    if (slen < PASSWD__SALT || hlen < PASSWD__OUT) return ine_err(INE_EINVAL, "malformed password hash");
    if ((rc = passwd__derive(password ? password : "", salt, PASSWD__SALT, iter, got)) < 0) return rc;
    rc = CRYPTO_memcmp(got, want, PASSWD__OUT) == 0 ? INE_OK : ine_err(INE_EAUTH, "wrong password");
    OPENSSL_cleanse(got, sizeof got);
    return rc;
}
