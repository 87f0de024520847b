/* test_transport_toggle.c — a database's encryption toggled 50 times, one every 200 ms, while
 * a client opens a new connection every 5 ms through every node's endpoint and runs a command
 * on it: no stream is refused (each node admits a stream on a view of the log at least as new
 * as the sender's), no answer is wrong, and a second database's long-lived clients through
 * every node are never disconnected. Connections a toggle closes (its existing remote clients,
 * as it should) are counted and checked against what the transports say they closed. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "testutil.h"

static cl_t c;

static void setup(void) {}
static void teardown(void) { cl_stop(&c); }
TestSuite(transport_toggle, .init = setup, .fini = teardown, .timeout = 300);

typedef struct {
    int port;
    volatile int stop;
    long opened, answered, unanswered, wrong, refused_connect;
    char last_wrong[300];
} churn_t;

/* Every 5 ms: a new connection through each node in turn, ECHO a token, check it, close. */
static void *churn(void *arg)
{
    churn_t *ch = arg;
    for (long i = 0; !ch->stop; i++) {
        for (int n = 1; n <= CL_NODES && !ch->stop; n++) {
            cl_resp r;
            char tok[64], reply[128];
            if (cl_resp_open(&r, cl_addr(n), ch->port) != 0) {
                ch->refused_connect++;
                continue;
            }
            ch->opened++;
            snprintf(tok, sizeof tok, "tok-%d-%ld", n, i);
            if (cl_resp_cmd(&r, reply, sizeof reply, "ECHO %s", tok) != 0) ch->unanswered++;
            else if (strcmp(reply, tok)) {
                ch->wrong++;
                snprintf(ch->last_wrong, sizeof ch->last_wrong, "via node %d: sent %s, got %.100s", n, tok, reply);
            } else ch->answered++;
            cl_resp_close(&r);
        }
        usleep(5000);
    }
    return NULL;
}

/* "closed N remote connection(s)" summed over a transport's log lines since mark. */
static long closed_since(cl_proc *p, size_t mark, const char *db)
{
    char *log = cl_log_since(p, mark);
    long n = 0;
    char pat[64];
    snprintf(pat, sizeof pat, "db %s: data_internode_encryption ", db);
    for (char *s = log; s && (s = strstr(s, pat)); s++) {
        char *cl = strstr(s, "; closed ");
        if (cl) n += strtol(cl + 9, NULL, 10);
    }
    free(log);
    return n;
}

Test(transport_toggle, a_toggle_storm_refuses_no_new_client_and_leaves_other_databases_alone)
{
    int ra = cl_free_port(), rb = cl_free_port(), pa = cl_free_port(), pb = cl_free_port();
    char addr[64];
    size_t marks[CL_NODES + 1];
    cl_load keep[CL_NODES + 1];
    churn_t ch = {0};
    pthread_t th;

    cl_start(&c, NULL);
    cl_redis_start(&c, cl_addr(2), ra, NULL);
    cl_redis_start(&c, cl_addr(3), rb, NULL);
    snprintf(addr, sizeof addr, "%s:%d", cl_addr(2), ra);
    cl_create_db(&c, "alpha", pa, 2, addr, 1);
    snprintf(addr, sizeof addr, "%s:%d", cl_addr(3), rb);
    cl_create_db(&c, "beta", pb, 3, addr, 1);

    /* beta's long-lived clients, one through each node (two of them cross nodes). */
    for (int n = 1; n <= CL_NODES; n++) {
        char key[32];
        snprintf(key, sizeof key, "beta-%d", n);
        cl_load_start(&keep[n], cl_addr(n), pb, key);
    }
    for (int n = 1; n <= CL_NODES; n++) marks[n] = cl_log_mark(&c.tp[n]);
    ch.port = pa;
    cr_assert_eq(pthread_create(&th, NULL, churn, &ch), 0);
    for (int t = 0; t < 50; t++) {
        int64_t t0 = cl_now_ms();
        cl_set_encryption(&c, "alpha", t % 2); /* created enabled: off, on, off, ... */
        int64_t left = 200 - (cl_now_ms() - t0);
        if (left > 0) usleep((useconds_t)left * 1000);
    }
    usleep(300 * 1000);
    ch.stop = 1;
    pthread_join(th, NULL);

    long refused = 0, closed = 0;
    for (int n = 1; n <= CL_NODES; n++) {
        refused += cl_log_count(&c.tp[n], marks[n], "refused stream") + cl_log_count(&c.tp[n], marks[n], "refused the stream") +
                   cl_log_count(&c.tp[n], marks[n], "refused connection");
        closed += closed_since(&c.tp[n], marks[n], "1");
    }
    cr_log_info("toggle storm: %ld connections, %ld answered, %ld closed before answering, %ld closed by toggles (both ends "
                "counted), %ld refused",
                ch.opened, ch.answered, ch.unanswered, closed, refused);
    cr_assert_eq(ch.wrong, 0, "%ld wrong answers, e.g. %s", ch.wrong, ch.last_wrong);
    cr_assert_eq(ch.refused_connect, 0, "%ld connections to an endpoint failed", ch.refused_connect);
    cr_assert_eq(refused, 0, "%ld streams refused during the toggles", refused);
    cr_assert_gt(ch.answered, 1000, "the churn ran (%ld answered)", ch.answered);
    /* A client that got no answer was an existing remote client when a toggle came, closed
     * by it as it must be: never more than the transports closed. */
    cr_assert_leq(ch.unanswered, closed, "%ld clients got no answer, toggles closed %ld connections", ch.unanswered, closed);
    for (int n = 1; n <= CL_NODES; n++) {
        long errs = cl_load_stop(&keep[n]);
        cr_assert_eq(errs, 0, "beta's client through node %d: %s", n, keep[n].last_error);
        cr_assert_gt(keep[n].ops, 10, "beta's client through node %d ran", n);
    }
    cl_finish(&c);
}
