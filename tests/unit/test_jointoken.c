/* test_jointoken.c — join tokens: their form, parsing, the verdicts against a projection
 * (unknown, expired, used, ok), the projection's record of issue and use, the envelope key
 * (HKDF of the token) and purpose, and seal_key_write. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/sha.h>

#include "err.h"
#include "jointoken.h"
#include "proj.h"
#include "seal.h"
#include "testutil.h"

static char *dir;

static void setup(void) { cr_assert_not_null(dir = tu_tmpdir()); }
static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

TestSuite(jointoken, .init = setup, .fini = teardown);

static void apply_issued(proj_state *st, const jointoken *t, int64_t expires_at)
{
    Ine__V1__JoinTokenIssued b = INE__V1__JOIN_TOKEN_ISSUED__INIT;
    Ine__V1__Event ev = INE__V1__EVENT__INIT;
    b.token_id = (char *)t->id;
    b.token_sha256 = (ProtobufCBinaryData){sizeof t->sha256, (uint8_t *)t->sha256};
    b.expires_at = expires_at;
    ev.body_case = INE__V1__EVENT__BODY_JOIN_TOKEN_ISSUED;
    ev.join_token_issued = &b;
    cr_assert_eq(proj_apply(st, &ev), INE_OK, "%s", ine_err_msg());
}

static void apply_node(proj_state *st, uint32_t uid, const char *addr, const char *token_id)
{
    Ine__V1__NodeAdded b = INE__V1__NODE_ADDED__INIT;
    Ine__V1__Event ev = INE__V1__EVENT__INIT;
    b.node_uid = uid;
    b.address = (char *)addr;
    b.name = "n";
    b.join_token_id = (char *)token_id;
    ev.body_case = INE__V1__EVENT__BODY_NODE_ADDED;
    ev.node_added = &b;
    cr_assert_eq(proj_apply(st, &ev), INE_OK, "%s", ine_err_msg());
}

Test(jointoken, a_new_token_has_its_form_and_its_id_is_its_hash_prefix)
{
    jointoken a, b, p;
    uint8_t sha[32];
    cr_assert_eq(jointoken_new(&a), INE_OK);
    cr_assert_eq(jointoken_new(&b), INE_OK);
    cr_assert_eq(strlen(a.token), JOINTOKEN_STR_LEN);
    cr_assert_eq(strncmp(a.token, "inejt_", 6), 0);
    cr_assert_neq(strcmp(a.token, b.token), 0, "random");
    SHA256((const unsigned char *)a.token, strlen(a.token), sha);
    cr_assert_arr_eq(sha, a.sha256, 32);
    char id[17];
    for (int i = 0; i < 8; i++) sprintf(id + 2 * i, "%02x", sha[i]);
    cr_assert_str_eq(a.id, id);
    /* Parsing the printed token gives the same hash and id, and keeps no copy of it. */
    cr_assert_eq(jointoken_parse(a.token, &p), INE_OK);
    cr_assert_arr_eq(p.sha256, a.sha256, 32);
    cr_assert_str_eq(p.id, a.id);
    cr_assert_str_eq(p.token, "");
    jointoken_clear(&a);
    cr_assert_str_eq(a.token, "");
}

Test(jointoken, malformed_tokens_are_refused_without_echoing_them)
{
    jointoken t, ok;
    char buf[128];
    cr_assert_eq(jointoken_new(&ok), INE_OK);
    const char *bad[] = {"", "inejt_", "inejt_00", "xxxxx_0000000000000000000000000000000000000000000000000000000000000000", NULL};
    for (int i = 0; bad[i]; i++) cr_assert_eq(jointoken_parse(bad[i], &t), INE_EINVAL, "'%s'", bad[i]);
    cr_assert_eq(jointoken_parse(NULL, &t), INE_EINVAL);
    snprintf(buf, sizeof buf, "%s", ok.token);
    buf[10] = 'G';
    cr_assert_eq(jointoken_parse(buf, &t), INE_EINVAL);
    cr_assert_null(strstr(ine_err_msg(), buf), "the message does not repeat the token: %s", ine_err_msg());
    snprintf(buf, sizeof buf, "%s", ok.token);
    buf[10] = (char)(buf[10] >= 'a' ? 'A' : buf[10]); /* uppercase hex is not the printed form */
    if (strcmp(buf, ok.token)) cr_assert_eq(jointoken_parse(buf, &t), INE_EINVAL);
    snprintf(buf, sizeof buf, "%sa", ok.token);
    cr_assert_eq(jointoken_parse(buf, &t), INE_EINVAL, "too long");
}

Test(jointoken, verdicts_unknown_expired_used_ok)
{
    proj_state st;
    jointoken a, b, c;
    const proj_join_token *k;
    proj_init(&st);
    cr_assert_eq(jointoken_new(&a), INE_OK);
    cr_assert_eq(jointoken_new(&b), INE_OK);
    cr_assert_eq(jointoken_new(&c), INE_OK);
    apply_issued(&st, &a, 1000);
    apply_issued(&st, &b, 2000);
    cr_assert_eq(st.n_join_tokens, 2);

    cr_assert_eq(jointoken_check(&st, "nope", 10, &k), JOINTOKEN_MALFORMED);
    cr_assert_null(k);
    cr_assert_eq(jointoken_check(&st, c.token, 10, &k), JOINTOKEN_UNKNOWN);
    cr_assert_null(k);
    cr_assert_eq(jointoken_check(&st, a.token, 999, &k), JOINTOKEN_OK);
    cr_assert_str_eq(k->token_id, a.id);
    cr_assert_eq(jointoken_check(&st, a.token, 1000, &k), JOINTOKEN_EXPIRED, "expired at expires_at");
    cr_assert_eq(jointoken_check(&st, b.token, 1000, &k), JOINTOKEN_OK);
    cr_assert_str_eq(k->token_id, b.id);

    /* A node that joined with b uses it up; a node without a token uses none. */
    apply_node(&st, 1, "10.0.0.1", "");
    cr_assert_eq(jointoken_check(&st, b.token, 1000, &k), JOINTOKEN_OK);
    apply_node(&st, 2, "10.0.0.2", b.id);
    cr_assert_eq(jointoken_check(&st, b.token, 1000, &k), JOINTOKEN_USED);
    cr_assert_eq(k->used_by, 2);
    cr_assert_eq(k->used_seq, 4);
    cr_assert_str_eq(proj_node_find(&st, 2)->join_token_id, b.id);
    /* A second node naming the same token does not take it over. */
    apply_node(&st, 3, "10.0.0.3", b.id);
    cr_assert_eq(proj_join_token_find(&st, b.id)->used_by, 2);
    /* The same id issued again does not re-arm it. */
    apply_issued(&st, &b, 5000);
    cr_assert_eq(st.n_join_tokens, 2);
    cr_assert_eq(jointoken_check(&st, b.token, 1000, &k), JOINTOKEN_USED);
    /* The state's JSON lists the tokens by id and use, and the node's token id. */
    json_t *j = proj_to_json(&st);
    cr_assert_not_null(j);
    json_t *toks = json_object_get(j, "join_tokens");
    cr_assert_eq(json_array_size(toks), 2);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(toks, 1), "token_id")), b.id);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(toks, 1), "used_by_node")), 2);
    char *dump = json_dumps(j, 0);
    cr_assert_null(strstr(dump, "sha"), "no hash in the JSON");
    free(dump);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "nodes"), 1), "join_token_id")), b.id);
    cr_assert_null(json_object_get(json_array_get(json_object_get(j, "nodes"), 0), "join_token_id"));
    json_decref(j);
    cr_assert_str_eq(jointoken_verdict_code(JOINTOKEN_USED), "token_used");
    cr_assert_str_eq(jointoken_verdict_code(JOINTOKEN_EXPIRED), "token_expired");
    cr_assert_str_eq(jointoken_verdict_code(JOINTOKEN_UNKNOWN), "token_unknown");
    cr_assert_str_eq(jointoken_verdict_code(JOINTOKEN_MALFORMED), "token_malformed");
    proj_free(&st);
}

Test(jointoken, a_hash_of_the_wrong_length_matches_nothing)
{
    proj_state st;
    jointoken a;
    Ine__V1__JoinTokenIssued b = INE__V1__JOIN_TOKEN_ISSUED__INIT;
    Ine__V1__Event ev = INE__V1__EVENT__INIT;
    proj_init(&st);
    cr_assert_eq(jointoken_new(&a), INE_OK);
    b.token_id = a.id;
    b.token_sha256 = (ProtobufCBinaryData){31, a.sha256};
    b.expires_at = 1000;
    ev.body_case = INE__V1__EVENT__BODY_JOIN_TOKEN_ISSUED;
    ev.join_token_issued = &b;
    cr_assert_eq(proj_apply(&st, &ev), INE_OK);
    cr_assert_eq(jointoken_check(&st, a.token, 10, NULL), JOINTOKEN_UNKNOWN);
    proj_free(&st);
}

Test(jointoken, the_envelope_opens_with_the_token_only_and_for_its_node_only)
{
    jointoken a, b;
    seal_key *ka, *ka2, *kb;
    uint8_t *blob = NULL, *plain = NULL;
    size_t blen = 0, plen = 0;
    char p2[64], p3[64];
    cr_assert_eq(jointoken_new(&a), INE_OK);
    cr_assert_eq(jointoken_new(&b), INE_OK);
    cr_assert_eq(jointoken_envelope_key(a.token, &ka), INE_OK);
    cr_assert_eq(jointoken_envelope_key(a.token, &ka2), INE_OK);
    cr_assert_eq(jointoken_envelope_key(b.token, &kb), INE_OK);
    cr_assert_eq(jointoken_envelope_purpose(p2, sizeof p2, 2), INE_OK);
    cr_assert_str_eq(p2, "ine.v1/join/2");
    cr_assert_eq(jointoken_envelope_purpose(p3, sizeof p3, 3), INE_OK);
    cr_assert_eq(seal_seal(ka, p2, (const uint8_t *)"secret", 6, &blob, &blen), INE_OK);
    cr_assert_eq(seal_open(ka2, p2, blob, blen, &plain, &plen), INE_OK, "deterministic from the token");
    cr_assert_eq(plen, 6);
    cr_assert_eq(memcmp(plain, "secret", 6), 0);
    seal_free_secret(plain, plen);
    cr_assert_eq(seal_open(kb, p2, blob, blen, &plain, &plen), INE_EAUTH, "another token");
    cr_assert_eq(seal_open(ka, p3, blob, blen, &plain, &plen), INE_EAUTH, "another node");

    /* It is HKDF-SHA256(token, info "ine.v1/join") exactly, so other clients can implement it. */
    uint8_t raw[32];
    seal_key *kr;
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    size_t rl = sizeof raw;
    cr_assert(EVP_PKEY_derive_init(pc) == 1 && EVP_PKEY_CTX_set_hkdf_md(pc, EVP_sha256()) == 1 &&
              EVP_PKEY_CTX_set1_hkdf_key(pc, (unsigned char *)a.token, (int)strlen(a.token)) == 1 &&
              EVP_PKEY_CTX_add1_hkdf_info(pc, (unsigned char *)"ine.v1/join", 11) == 1 && EVP_PKEY_derive(pc, raw, &rl) == 1);
    EVP_PKEY_CTX_free(pc);
    cr_assert_eq(seal_key_from_bytes(raw, sizeof raw, &kr), INE_OK);
    cr_assert_eq(seal_open(kr, p2, blob, blen, &plain, &plen), INE_OK);
    seal_free_secret(plain, plen);
    seal_key_free(kr);
    free(blob);
    seal_key_free(ka);
    seal_key_free(ka2);
    seal_key_free(kb);
}

Test(jointoken, seal_key_write_is_0600_and_never_overwrites)
{
    uint8_t bytes[SEAL_KEY_LEN];
    char *p = tu_path(dir, "seal.key");
    struct stat st;
    seal_key *k;
    uint8_t back[SEAL_KEY_LEN];
    memset(bytes, 0x5a, sizeof bytes);
    cr_assert_eq(seal_key_write(p, bytes, 31), INE_EINVAL);
    cr_assert_neq(stat(p, &st), 0, "nothing written");
    cr_assert_eq(seal_key_write(p, bytes, sizeof bytes), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(st.st_size, SEAL_KEY_LEN);
    cr_assert_eq(seal_key_load(p, &k), INE_OK);
    cr_assert_eq(seal_key_bytes(k, back), INE_OK);
    cr_assert_arr_eq(back, bytes, SEAL_KEY_LEN);
    seal_key_free(k);
    memset(bytes, 0x11, sizeof bytes);
    cr_assert_eq(seal_key_write(p, bytes, sizeof bytes), INE_EEXIST);
    cr_assert_eq(seal_key_load(p, &k), INE_OK);
    cr_assert_eq(seal_key_bytes(k, back), INE_OK);
    cr_assert_eq(back[0], 0x5a, "the first key stays");
    seal_key_free(k);
    free(p);
}
