/* quorum.c — the consensus as one node sees it (quorum.h). */
#include "quorum.h"

#include "commit.h"
#include "err.h"
#include "etcd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first URL of a comma-separated list. */
static void quorum__first_url(const char *list, char *out, size_t len)
{
    size_t n = strcspn(list, ",");
    snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), list);
}

/* One key's value (serializable: the local member's view): the head's seq, or text; JSON null
 * when absent or unreadable. */
static json_t *quorum__key_text(etcd_t *e, const char *key, int head)
{
    etcd_range_req q = {.key = key, .key_len = strlen(key), .serializable = 1};
    etcd_range_result r = {0};
    json_t *v = NULL;
    if (etcd_range(e, &q, &r) < 0) return json_null();
    if (r.n == 1 && head && r.kvs[0].value_len == COMMIT_HEAD_LEN) {
        uint64_t seq = 0;
        for (int i = 0; i < 8; i++) seq = seq << 8 | r.kvs[0].value[i];
        v = json_integer((json_int_t)seq);
    } else if (r.n == 1 && !head) {
        v = json_stringn((const char *)r.kvs[0].value, r.kvs[0].value_len);
    }
    etcd_range_result_free(&r);
    return v ? v : json_null();
}

/* A removal sent while etcd changes leader can hang unanswered, and a later one then goes
 * through in milliseconds (measured on 3.4.23): ask again, a short while each time. */
#define QUORUM__REMOVE_TRY_MS 2000
#define QUORUM__REMOVE_TRIES 5

int quorum_member_remove(const char *data_dir, uint32_t uid, uint64_t *id)
{
    commit_etcd_conf conf;
    etcd_t *e = NULL;
    char name[32];
    int rc = commit_conf_load(data_dir, &conf), asked = 0;
    if (rc == INE_ENOTFOUND) return 0;
    GUARD(rc);
    snprintf(name, sizeof name, "node%u", uid);
    GUARD(commit_conf_etcd_open(&conf, QUORUM__REMOVE_TRY_MS, &e));
    for (int t = 0; t < QUORUM__REMOVE_TRIES; t++) {
        etcd_member *ms = NULL;
        size_t n = 0, i;
        if ((rc = etcd_member_list(e, &ms, &n)) < 0) {
            if (rc == INE_EUNAVAIL) continue;
            break;
        }
        for (i = 0; i < n && strcmp(ms[i].name, name); i++) {
        }
        if (i == n) {
            rc = asked; /* gone: by us (an answer lost), or never there */
            free(ms);
            break;
        }
        if (n == 1) {
            rc = ine_err(INE_EPERM, "etcd member %s is the cluster's last one: removing it would end the cluster", name);
            free(ms);
            break;
        }
        if (id) *id = ms[i].id;
        asked = 1;
        rc = etcd_member_remove(e, ms[i].id);
        free(ms);
        if (rc == INE_OK || rc == INE_ENOTFOUND) {
            rc = 1;
            break;
        }
        if (rc != INE_EUNAVAIL) break;
    }
    etcd_close(e);
    return rc;
}

int quorum_status(const char *data_dir, json_t **out)
{
    commit_etcd_conf conf;
    etcd_t *e = NULL;
    etcd_member *ms = NULL;
    size_t n = 0, healthy = 0, voters = 0;
    json_t *o, *arr;
    char key[300];
    const char *leader = NULL;
    int rc = commit_conf_load(data_dir, &conf);

    if (rc == INE_ENOTFOUND) {
        *out = json_pack("{s:s}", "mode", "local");
        return INE_OK;
    }
    GUARD(rc);
    o = json_pack("{s:s}", "mode", "etcd");
    if ((rc = commit_conf_etcd_open(&conf, QUORUM_TIMEOUT_MS, &e)) < 0) goto unreachable;
    if ((rc = etcd_member_list(e, &ms, &n)) < 0) goto unreachable;
    arr = json_array();
    for (size_t i = 0; i < n; i++) {
        etcd_status_info si;
        char url[256], id[24];
        json_t *m;
        quorum__first_url(ms[i].client_urls, url, sizeof url);
        snprintf(id, sizeof id, "%016llx", (unsigned long long)ms[i].id);
        m = json_pack("{s:s, s:s, s:s, s:s, s:b}", "name", ms[i].name, "id", id, "client_urls", ms[i].client_urls, "peer_urls",
                      ms[i].peer_urls, "learner", ms[i].is_learner);
        voters += !ms[i].is_learner;
        if (url[0] && etcd_status(e, url, &si) == INE_OK) {
            healthy += si.leader != 0 && !ms[i].is_learner;
            json_object_set_new(m, "healthy", json_boolean(si.leader != 0));
            json_object_set_new(m, "leader", json_boolean(si.leader == ms[i].id));
            json_object_set_new(m, "db_size_bytes", json_integer(si.db_size));
            if (si.leader == ms[i].id) leader = ms[i].name;
        } else {
            json_object_set_new(m, "healthy", json_false());
            json_object_set_new(m, "leader", json_false());
            json_object_set_new(m, "error", json_string(url[0] ? ine_err_msg() : "no client URL"));
        }
        json_array_append_new(arr, m);
    }
    json_object_set_new(o, "members", arr);
    json_object_set_new(o, "leader", leader ? json_string(leader) : json_null());
    json_object_set_new(o, "healthy_members", json_integer((json_int_t)healthy));
    json_object_set_new(o, "quorum", json_boolean(leader && healthy > voters / 2));
    snprintf(key, sizeof key, "%s" COMMIT_KEY_HEAD, conf.prefix);
    json_object_set_new(o, "log_head_seq", quorum__key_text(e, key, 1));
    snprintf(key, sizeof key, "%sca/holder", conf.prefix);
    json_object_set_new(o, "ca_holder", quorum__key_text(e, key, 0));
    free(ms);
    etcd_close(e);
    *out = o;
    return INE_OK;

unreachable:
    json_object_set_new(o, "members", json_array());
    json_object_set_new(o, "leader", json_null());
    json_object_set_new(o, "healthy_members", json_integer(0));
    json_object_set_new(o, "quorum", json_false());
    json_object_set_new(o, "error", json_string(ine_err_msg()));
    free(ms);
    etcd_close(e);
    *out = o;
    return INE_OK;
}

/* "name=url,..." for every member, `uid`'s own named node<uid> (a member added but not yet
 * started has no name of its own). */
static int quorum__initial_cluster(const etcd_member *ms, size_t n, uint64_t own_id, uint32_t uid, char *out, size_t cap)
{
    size_t off = 0;
    out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        char url[256], name[64];
        int w;
        quorum__first_url(ms[i].peer_urls, url, sizeof url);
        if (ms[i].id == own_id) snprintf(name, sizeof name, "node%u", uid);
        else if (ms[i].name[0]) snprintf(name, sizeof name, "%s", ms[i].name);
        else continue; /* another join under way: its member is not ours to name */
        w = snprintf(out + off, cap - off, "%s%s=%s", off ? "," : "", name, url);
        if (w < 0 || (size_t)w >= cap - off) return ine_err(INE_EINVAL, "the members' list does not fit");
        off += (size_t)w;
    }
    return INE_OK;
}

int quorum_member_add(etcd_t *e, uint32_t uid, const char *peer_url, char *initial_cluster, size_t cap)
{
    etcd_member *ms = NULL;
    size_t n = 0, i;
    uint64_t id = 0;
    int rc;
    GUARD(etcd_member_list(e, &ms, &n));
    for (i = 0; i < n; i++) {
        char url[256];
        quorum__first_url(ms[i].peer_urls, url, sizeof url);
        if (!strcmp(url, peer_url)) break;
    }
    if (i < n) {
        char name[32];
        snprintf(name, sizeof name, "node%u", uid);
        /* Ours from an earlier try (a retried join), or a started member of that name. */
        if (ms[i].name[0] && strcmp(ms[i].name, name)) {
            rc = ine_err(INE_EEXIST, "etcd member %s already uses peer URL %s", ms[i].name, peer_url);
            goto out;
        }
        id = ms[i].id;
    } else {
        /* etcd 3.4 takes one learner at a time: say who is in the way. */
        for (size_t k = 0; k < n; k++)
            if (ms[k].is_learner) {
                rc = ine_err(INE_EAGAIN, "another node's etcd member (%s, peer %s) is still a learner: etcd takes one joining "
                             "member at a time; start that member (and its ine-mirror) and retry once it caught up",
                             ms[k].name[0] ? ms[k].name : "not started yet", ms[k].peer_urls);
                goto out;
            }
        free(ms);
        ms = NULL;
        GUARD(etcd_member_add(e, peer_url, 1, &id));
        GUARD(etcd_member_list(e, &ms, &n));
    }
    rc = quorum__initial_cluster(ms, n, id, uid, initial_cluster, cap);
out:
    free(ms);
    return rc;
}

int quorum_promote_learners(etcd_t *e, int *promoted)
{
    etcd_member *ms = NULL;
    size_t n = 0;
    *promoted = 0;
    GUARD(etcd_member_list(e, &ms, &n));
    for (size_t i = 0; i < n; i++)
        if (ms[i].is_learner && etcd_member_promote(e, ms[i].id) == INE_OK) ++*promoted;
    free(ms);
    return INE_OK;
}
