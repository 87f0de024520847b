/* inectl_watch.c — `inectl watch`: the node's policy update stream as JSON lines, one per
 * update, in seq order, none twice, none missing (lib/updates_sub.c does the fetching). */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "err.h"
#include "inectl.h"
#include "pbjson.h"
#include "updates.h"

static volatile sig_atomic_t watch_stop;
static void watch__on_signal(int sig)
{
    (void)sig;
    watch_stop = 1;
}

static int watch__u64(const char *what, const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (!*s || *end || errno || s[0] == '-') return inectl_fail("watch: %s takes a number, not '%s'", what, s);
    *out = v;
    return 0;
}

int inectl_watch(int argc, char **argv)
{
    char pub[4096], req[4096];
    const char *topics[UPDATES_MAX_TOPICS];
    size_t n_topics = 0;
    uint64_t since = 0, count = 0, got = 0;
    int have_since = 0, rc = 0;
    void *zctx = NULL;
    updates_sub *s = NULL;
    struct sigaction sa;

    if (updates_default_endpoints(inectl_g.data_dir, pub, sizeof pub, req, sizeof req) < 0)
        return inectl_fail("watch: %s", ine_err_msg());
    for (int i = 0; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "since") || !strcmp(k, "count") || !strcmp(k, "pub") || !strcmp(k, "req")) {
            if (i + 1 >= argc) return inectl_fail("watch: '%s' needs a value", k);
            const char *v = argv[++i];
            if (!strcmp(k, "since")) {
                if (watch__u64("since", v, &since)) return 1;
                have_since = 1;
            } else if (!strcmp(k, "count")) {
                if (watch__u64("count", v, &count)) return 1;
            } else {
                if (strlen(v) >= sizeof pub) return inectl_fail("watch: %s endpoint too long", k);
                snprintf(!strcmp(k, "pub") ? pub : req, sizeof pub, "%s", v);
            }
            continue;
        }
        if (!strcmp(k, "topic")) {
            if (i + 1 >= argc) return inectl_fail("watch: 'topic' needs a prefix");
            k = argv[++i];
        }
        if (n_topics == UPDATES_MAX_TOPICS) return inectl_fail("watch: at most %d topic prefixes", UPDATES_MAX_TOPICS);
        if (updates_topic_check(k) < 0) return inectl_fail("watch: %s", ine_err_msg());
        topics[n_topics++] = k;
    }
    if (!have_since) {
        /* From now on: the end of this node's log. */
        proj_state st;
        rc = inectl_load_state(&st);
        since = st.applied_seq;
        proj_free(&st);
        if (rc) return rc;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = watch__on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (!(zctx = zmq_ctx_new())) return inectl_fail("watch: cannot create a ZeroMQ context");
    if (updates_sub_open(zctx, pub, req, since, topics, n_topics, &s) < 0) {
        rc = inectl_fail("watch: %s", ine_err_msg());
        goto out;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (!watch_stop && (!count || got < count)) {
        updates_msg *u = NULL;
        int r = updates_sub_next(s, 200, &u);
        if (r == INE_EAGAIN) continue;
        if (r == INE_EUNAVAIL) {
            fprintf(stderr, "inectl: watch: %s; retrying\n", ine_err_msg());
            continue;
        }
        if (r < 0) {
            rc = inectl_fail("watch: %s", ine_err_msg());
            break;
        }
        {
            json_t *j = pbjson_from_message(&u->base);
            char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
            if (!line || printf("%s\n", line) < 0) {
                free(line);
                json_decref(j);
                ine__v1__update__free_unpacked(u, NULL);
                rc = inectl_fail("watch: cannot write the update");
                break;
            }
            free(line);
            json_decref(j);
        }
        ine__v1__update__free_unpacked(u, NULL);
        got++;
    }
out:
    updates_sub_close(s);
    if (zctx) zmq_ctx_term(zctx);
    return rc;
}
