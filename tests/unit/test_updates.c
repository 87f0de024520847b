/* test_updates.c — lib/updates: what each event becomes on the stream (topic, body, the
 * state around it), that a certificate's key never gets in, and the checks on topic prefixes
 * and endpoints. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "testutil.h"
#include "updates.h"

static proj_state st;

static void setup(void) { proj_init(&st); }
static void teardown(void) { proj_free(&st); }
TestSuite(updates, .init = setup, .fini = teardown);


/* Build event ev as the next record; returns the unpacked Update (caller frees). */
static updates_msg *build(evlog_event *ev, uint32_t self, char *topic)
{
    uint8_t raw[] = "stand-in record bytes";
    updates_out o;
    ev->seq = st.applied_seq + 1;
    cr_assert_eq(updates_build(&st, ev, raw, sizeof raw, self, &o), INE_OK, "%s", ine_err_msg());
    updates_msg *u = ine__v1__update__unpack(NULL, o.len, o.buf);
    cr_assert_not_null(u);
    cr_assert_str_eq(u->topic, o.topic, "the message names its topic frame");
    cr_assert_eq(u->seq, ev->seq);
    uint8_t h[EVLOG_HASH_LEN];
    evlog_hash(raw, sizeof raw, h);
    cr_assert_eq(u->sha256.len, EVLOG_HASH_LEN);
    cr_assert_arr_eq(u->sha256.data, h, EVLOG_HASH_LEN, "the record's hash");
    if (topic) strcpy(topic, o.topic);
    updates_out_free(&o);
    return u;
}

static void add_node(uint32_t uid)
{
    evlog_event *ev = tu_ev_node_added(uid, uid == 1 ? "127.0.0.1" : "127.0.0.2");
    char t[UPDATES_TOPIC_MAX];
    updates_msg *u = build(ev, 1, t);
    cr_assert_eq(u->body_case, INE__V1__UPDATE__BODY_NODE);
    cr_assert_eq(u->node->kind, INE__V1__NODE_UPDATE__KIND__ADDED);
    ine__v1__update__free_unpacked(u, NULL);
    tu_event_free(ev);
}

Test(updates, database_changes_say_who_enforces)
{
    char t[UPDATES_TOPIC_MAX];
    add_node(1);
    add_node(2);
    evlog_event *ev = tu_ev_db_created(7, "cache");
    ev->database_created->data_internode_encryption = 1;
    updates_msg *u = build(ev, 2, t);
    cr_assert_str_eq(t, "db.7.created");
    cr_assert_eq(u->body_case, INE__V1__UPDATE__BODY_DATABASE);
    cr_assert_str_eq(u->database->name, "cache");
    cr_assert(u->database->data_internode_encryption);
    cr_assert(u->database->enforced_here);
    cr_assert_eq(u->database->n_enforcing_nodes, 2);
    cr_assert_eq(u->publisher_node, 2);
    ine__v1__update__free_unpacked(u, NULL);
    tu_event_free(ev);

    Ine__V1__DataInternodeEncryptionChanged ch = INE__V1__DATA_INTERNODE_ENCRYPTION_CHANGED__INIT;
    Ine__V1__Event e2 = INE__V1__EVENT__INIT;
    ch.db_uid = 7;
    ch.enabled = 0;
    e2.body_case = INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED;
    e2.data_internode_encryption_changed = &ch;
    u = build(&e2, 2, t);
    cr_assert_str_eq(t, "db.7.encryption");
    cr_assert_eq(u->database->kind, INE__V1__DATABASE_UPDATE__KIND__ENCRYPTION);
    cr_assert_not(u->database->data_internode_encryption);
    cr_assert_not(u->database->enforced_here, "disabled: nobody enforces");
    cr_assert_eq(u->database->n_enforcing_nodes, 0);
    ine__v1__update__free_unpacked(u, NULL);

    /* A node that is not in the cluster (or no --node) enforces nothing itself. */
    ch.enabled = 1;
    u = build(&e2, 0, t);
    cr_assert_not(u->database->enforced_here);
    cr_assert_eq(u->database->n_enforcing_nodes, 2);
    ine__v1__update__free_unpacked(u, NULL);
}

Test(updates, a_new_certificate_replaces_the_old_and_carries_no_key)
{
    char t[UPDATES_TOPIC_MAX];
    add_node(1);
    uint8_t sealed[64];
    memset(sealed, 0x5a, sizeof sealed);
    for (int round = 0; round < 2; round++) {
        Ine__V1__CertInfo ci = INE__V1__CERT_INFO__INIT;
        Ine__V1__CertificateIssued ci_ev = INE__V1__CERTIFICATE_ISSUED__INIT;
        Ine__V1__Event ev = INE__V1__EVENT__INIT;
        ci.cert_pem = "-----BEGIN CERTIFICATE-----\nMIIB-not-a-real-one\n-----END CERTIFICATE-----\n";
        ci.serial_hex = round ? "02" : "01";
        ci.fingerprint_sha256 = round ? "bb" : "aa";
        ci.not_after = 1900000000 + round;
        ci_ev.node_uid = 1;
        ci_ev.plane = INE__V1__PLANE__PLANE_DATA;
        ci_ev.source = INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED;
        ci_ev.reason = round ? INE__V1__ISSUE_REASON__ISSUE_REASON_MANUAL : INE__V1__ISSUE_REASON__ISSUE_REASON_INITIAL;
        ci_ev.cert = &ci;
        ci_ev.sealed_key.data = sealed;
        ci_ev.sealed_key.len = sizeof sealed;
        ev.body_case = INE__V1__EVENT__BODY_CERTIFICATE_ISSUED;
        ev.certificate_issued = &ci_ev;
        ev.seq = st.applied_seq + 1;
        {
            uint8_t raw[] = "r";
            updates_out o;
            cr_assert_eq(updates_build(&st, &ev, raw, sizeof raw, 1, &o), INE_OK, "%s", ine_err_msg());
            cr_assert_eq(tu_contains(o.buf, o.len, sealed, 16), 0, "the sealed key is in the message");
            cr_assert_eq(tu_contains(o.buf, o.len, "BEGIN", 5), 0, "the PEM is in the message");
            updates_msg *u = ine__v1__update__unpack(NULL, o.len, o.buf);
            strcpy(t, o.topic);
            updates_out_free(&o);
            cr_assert_str_eq(t, round ? "cert.1.dp.replaced" : "cert.1.dp.issued");
            cr_assert_str_eq(u->certificate->serial_hex, ci.serial_hex);
            cr_assert_str_eq(u->certificate->replaced_serial_hex, round ? "01" : "");
            cr_assert_eq(u->certificate->not_after, ci.not_after);
            ine__v1__update__free_unpacked(u, NULL);
        }
    }
}

Test(updates, records_of_no_interest_still_have_an_update)
{
    char t[UPDATES_TOPIC_MAX];
    Ine__V1__Event ev = INE__V1__EVENT__INIT; /* a type from a newer version: no body */
    updates_msg *u = build(&ev, 0, t);
    cr_assert_str_eq(t, "log.unknown");
    cr_assert_eq(u->body_case, INE__V1__UPDATE__BODY__NOT_SET);
    ine__v1__update__free_unpacked(u, NULL);
    cr_assert_eq(st.applied_seq, 1, "the state moved past it");
}

Test(updates, topic_prefixes_match_and_are_checked)
{
    const char *p[] = {"db.1.", "cert."};
    cr_assert(updates_topic_match("db.1.encryption", p, 2));
    cr_assert(updates_topic_match("cert.2.cp.replaced", p, 2));
    cr_assert_not(updates_topic_match("db.10.created", p, 2), "db.1. is not db.10.");
    cr_assert(updates_topic_match("anything", NULL, 0));
    cr_assert_eq(updates_topic_check("db.1."), INE_OK);
    cr_assert_eq(updates_topic_check(""), INE_EINVAL);
    cr_assert_eq(updates_topic_check("a b"), INE_EINVAL);
    cr_assert(strstr(ine_err_msg(), "space"), "%s", ine_err_msg());
    char big[UPDATES_TOPIC_MAX + 1];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    cr_assert_eq(updates_topic_check(big), INE_EINVAL);
}

Test(updates, endpoints_are_ipc_or_loopback_tcp)
{
    cr_assert_eq(updates_endpoint_check("ipc:///var/lib/ine/run/updates.pub"), INE_OK);
    cr_assert_eq(updates_endpoint_check("tcp://127.0.0.1:7001"), INE_OK);
    cr_assert_eq(updates_endpoint_check("tcp://[::1]:7001"), INE_OK);
    cr_assert_eq(updates_endpoint_check("tcp://localhost:7001"), INE_OK);
    cr_assert_eq(updates_endpoint_check("tcp://0.0.0.0:7001"), INE_EINVAL);
    cr_assert(strstr(ine_err_msg(), "not on loopback"), "%s", ine_err_msg());
    cr_assert_eq(updates_endpoint_check("tcp://10.0.0.1:7001"), INE_EINVAL);
    cr_assert_eq(updates_endpoint_check("tcp://127.evil.com:7001"), INE_EINVAL);
    cr_assert_eq(updates_endpoint_check("tcp://127.0.0.1"), INE_EINVAL);
    cr_assert_eq(updates_endpoint_check("tcp://127.0.0.1:0"), INE_EINVAL);
    cr_assert_eq(updates_endpoint_check("pgm://x"), INE_EINVAL);
    cr_assert_eq(updates_endpoint_check("ipc://"), INE_EINVAL);
}
