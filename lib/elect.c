/* elect.c — the lease-bound role key of elect.h: campaign, keepalive, stepping down. */
#include "elect.h"

#include "clock.h"
#include "err.h"
#include "logline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ELECT__RETRY_MS 500

struct elect {
    etcd_t *etcd;
    char key[256];
    char who[256];
    char holder[256];
    int ttl_s;
    int64_t lease;           /* 0: none granted (or it ended) */
    int64_t fence;           /* our key's create_revision while we hold the role */
    int64_t last_alive_ms;   /* the last keepalive etcd answered */
    int64_t next_keepalive_ms, next_campaign_ms;
};

int elect_open(etcd_t *etcd, const char *key, const char *who, int ttl_s, elect_t **out)
{
    elect_t *e;
    if (!etcd || !key || !*key || ttl_s < 2 || ttl_s > 600) return ine_err(INE_EINVAL, "an election needs a key and a TTL of 2..600 s");
    if (!(e = calloc(1, sizeof *e))) return ine_err(INE_ENOMEM, "out of memory");
    e->etcd = etcd;
    e->ttl_s = ttl_s;
    snprintf(e->key, sizeof e->key, "%s", key);
    snprintf(e->who, sizeof e->who, "%s", who ? who : "");
    *out = e;
    return INE_OK;
}

void elect_close(elect_t *e)
{
    if (!e) return;
    /* Hand over at once instead of after a TTL. */
    if (e->lease && etcd_lease_revoke(e->etcd, e->lease) < 0)
        logline(LOGLINE_WARN, 0, "could not give up the lease of %s (it ends by itself within %d s): %s", e->key, e->ttl_s,
                ine_err_msg());
    free(e);
}

static void elect__lost(elect_t *e, const char *why)
{
    if (e->fence) logline(LOGLINE_WARN, 0, "no longer holds %s: %s", e->key, why);
    e->fence = 0;
    e->lease = 0;
    e->next_campaign_ms = 0;
}

static int elect__keepalive(elect_t *e, int64_t now)
{
    int64_t left = 0;
    int rc = etcd_lease_keepalive(e->etcd, e->lease, &left);
    if (rc == INE_OK) {
        e->last_alive_ms = now;
        return INE_OK;
    }
    if (rc == INE_ENOTFOUND) {
        elect__lost(e, "its lease ended");
        return INE_OK;
    }
    /* Unreachable etcd: the lease runs down on the server's clock; give up a little before. */
    if (now - e->last_alive_ms > (int64_t)e->ttl_s * 1000 - 500) {
        char why[600];
        snprintf(why, sizeof why, "no keepalive answered for %d s (%s)", e->ttl_s, ine_err_msg());
        elect__lost(e, why);
    }
    return INE_OK;
}

static int elect__campaign(elect_t *e, int64_t now)
{
    etcd_cmp cmp = {.target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL, .key = e->key, .key_len = strlen(e->key)};
    etcd_op put = {.type = ETCD_OP_PUT, .key = e->key, .key_len = strlen(e->key), .value = e->who, .value_len = strlen(e->who)};
    etcd_op get = {.type = ETCD_OP_RANGE, .key = e->key, .key_len = strlen(e->key)};
    etcd_txn_result r = {0};
    int rc;
    /* Win only with a lease that has most of its TTL ahead: a holding must not end before
     * its first keepalive is due. */
    if (e->lease && now - e->last_alive_ms > (int64_t)e->ttl_s * 1000 / 3) {
        int64_t left = 0;
        rc = etcd_lease_keepalive(e->etcd, e->lease, &left);
        if (rc == INE_ENOTFOUND) e->lease = 0;
        else if (rc < 0) return rc;
        else e->last_alive_ms = now;
    }
    if (!e->lease) {
        int64_t ttl = 0;
        if ((rc = etcd_lease_grant(e->etcd, e->ttl_s, &e->lease, &ttl)) < 0) return rc;
        e->last_alive_ms = now;
    }
    put.lease = e->lease;
    if ((rc = etcd_txn(e->etcd, &cmp, 1, &put, 1, &get, 1, &r)) < 0) return rc;
    if (r.succeeded) {
        e->fence = r.revision;
        snprintf(e->holder, sizeof e->holder, "%s", e->who);
        logline(LOGLINE_INFO, 0, "holds %s (lease TTL %d s, fence revision %lld)", e->key, e->ttl_s, (long long)e->fence);
    } else if (r.n_ranges == 1 && r.ranges[0].n == 1) {
        const etcd_kv *kv = &r.ranges[0].kvs[0];
        snprintf(e->holder, sizeof e->holder, "%.*s", (int)kv->value_len, (const char *)kv->value);
        if (kv->lease == e->lease) {
            /* Our own create, whose answer was lost earlier: the role is ours. */
            e->fence = kv->create_revision;
            logline(LOGLINE_INFO, 0, "holds %s (lease TTL %d s, fence revision %lld; the create's answer was lost)", e->key,
                    e->ttl_s, (long long)e->fence);
        }
        /* Else another's, or ours from a holding we gave up while etcd kept it: wait it out. */
    }
    etcd_txn_result_free(&r);
    return INE_OK;
}

int elect_tick(elect_t *e, int *holding, int *changed)
{
    int64_t now = ine_clock_mono_ms();
    int before = e->fence != 0;
    /* Checked on every tick, not only when a keepalive is due: give up before etcd would. */
    if (e->fence && now - e->last_alive_ms > (int64_t)e->ttl_s * 1000 - 500)
        elect__lost(e, "no keepalive answered within the lease's TTL");
    if (e->lease && now >= e->next_keepalive_ms) {
        GUARD(elect__keepalive(e, now));
        e->next_keepalive_ms = now + e->ttl_s * 1000 / 3;
    }
    if (!e->fence && now >= e->next_campaign_ms) {
        if (elect__campaign(e, now) < 0) {
            /* etcd unreachable: try again later; a lease we could not use runs out by itself. */
            if (now - e->last_alive_ms > (int64_t)e->ttl_s * 1000) e->lease = 0;
        }
        e->next_campaign_ms = now + ELECT__RETRY_MS;
        /* Keepalives run on their own schedule, from the lease's last renewal. */
        if (e->fence) e->next_keepalive_ms = e->last_alive_ms + e->ttl_s * 1000 / 3;
    }
    *holding = e->fence != 0;
    if (changed) *changed = *holding != before;
    return INE_OK;
}

void elect_fenced_off(elect_t *e)
{
    if (e && e->fence) elect__lost(e, "an append was fenced off (the holding ended on etcd's side)");
}

int64_t elect_fence(const elect_t *e) { return e ? e->fence : 0; }
const char *elect_key(const elect_t *e) { return e->key; }
const char *elect_holder(const elect_t *e) { return e->holder; }
