/* jointoken.c — see jointoken.h. */
#include "jointoken.h"
#include "err.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

static void jointoken__id(jointoken *t)
{
    for (int i = 0; i < JOINTOKEN_ID_LEN / 2; i++) snprintf(t->id + 2 * i, 3, "%02x", t->sha256[i]);
}

int jointoken_new(jointoken *t)
{
    uint8_t raw[JOINTOKEN_BYTES];
    memset(t, 0, sizeof *t);
    if (RAND_bytes(raw, sizeof raw) != 1) return ine_err_ossl(INE_ECRYPTO, "RAND_bytes for a join token");
    memcpy(t->token, JOINTOKEN_PREFIX, strlen(JOINTOKEN_PREFIX));
    for (size_t i = 0; i < sizeof raw; i++) snprintf(t->token + strlen(JOINTOKEN_PREFIX) + 2 * i, 3, "%02x", raw[i]);
    OPENSSL_cleanse(raw, sizeof raw);
    SHA256((const unsigned char *)t->token, JOINTOKEN_STR_LEN, t->sha256);
    jointoken__id(t);
    return INE_OK;
}

void jointoken_clear(jointoken *t) { OPENSSL_cleanse(t, sizeof *t); }

int jointoken_parse(const char *s, jointoken *t)
{
    size_t plen = strlen(JOINTOKEN_PREFIX);
    memset(t, 0, sizeof *t);
    if (!s || strlen(s) != JOINTOKEN_STR_LEN || strncmp(s, JOINTOKEN_PREFIX, plen))
        return ine_err(INE_EINVAL, "the join token is malformed: expected '%s' and %d lowercase hex digits", JOINTOKEN_PREFIX,
                       2 * JOINTOKEN_BYTES);
    for (const char *c = s + plen; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return ine_err(INE_EINVAL, "the join token is malformed: expected '%s' and %d lowercase hex digits",
                           JOINTOKEN_PREFIX, 2 * JOINTOKEN_BYTES);
    SHA256((const unsigned char *)s, JOINTOKEN_STR_LEN, t->sha256);
    jointoken__id(t);
    return INE_OK;
}

jointoken_verdict jointoken_check(const proj_state *st, const char *presented, int64_t now, const proj_join_token **known)
{
    jointoken t;
    const proj_join_token *hit = NULL;
    if (known) *known = NULL;
    if (jointoken_parse(presented, &t) < 0) return JOINTOKEN_MALFORMED;
    for (size_t i = 0; i < st->n_join_tokens; i++) {
        const proj_join_token *k = &st->join_tokens[i];
        if (k->sha_ok && CRYPTO_memcmp(k->sha256, t.sha256, sizeof t.sha256) == 0 && !hit) hit = k;
    }
    jointoken_clear(&t);
    if (!hit) return JOINTOKEN_UNKNOWN;
    if (known) *known = hit;
    if (hit->used_by) return JOINTOKEN_USED;
    if (now >= hit->expires_at) return JOINTOKEN_EXPIRED;
    return JOINTOKEN_OK;
}

const char *jointoken_verdict_code(jointoken_verdict v)
{
    switch (v) {
    case JOINTOKEN_OK: return "ok";
    case JOINTOKEN_MALFORMED: return "token_malformed";
    case JOINTOKEN_UNKNOWN: return "token_unknown";
    case JOINTOKEN_EXPIRED: return "token_expired";
    case JOINTOKEN_USED: return "token_used";
    }
    return "token_unknown";
}

int jointoken_envelope_key(const char *token, seal_key **out)
{
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *ctx = NULL;
    OSSL_PARAM params[4];
    uint8_t key[SEAL_KEY_LEN];
    int rc = INE_OK;

    *out = NULL;
    if (!token || !*token) return ine_err(INE_EINVAL, "no join token to derive the envelope key from");
    GUARD_OSSL((kdf = EVP_KDF_fetch(NULL, "HKDF", NULL)) != NULL, out);
    GUARD_OSSL((ctx = EVP_KDF_CTX_new(kdf)) != NULL, out);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)token, strlen(token));
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, JOINTOKEN_ENVELOPE_INFO,
                                                  strlen(JOINTOKEN_ENVELOPE_INFO));
    params[3] = OSSL_PARAM_construct_end();
    GUARD_OSSL(EVP_KDF_derive(ctx, key, sizeof key, params) == 1, out);
    rc = seal_key_from_bytes(key, sizeof key, out);
out:
    OPENSSL_cleanse(key, sizeof key);
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return rc;
}

int jointoken_envelope_purpose(char *buf, size_t len, uint32_t node_uid)
{
    int n = snprintf(buf, len, "ine.v1/join/%u", node_uid);
    if (n < 0 || (size_t)n >= len) return ine_err(INE_EINVAL, "no room for the envelope purpose");
    return INE_OK;
}
