/* test_rpc.c — local request/reply: a round trip between processes, the instance lock, a
 * service that is not running, one that does not answer, and a stale socket file. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "err.h"
#include "rpc.h"
#include "testutil.h"

static char *dir, *run;
static void setup(void) { dir = tu_tmpdir(); run = tu_path(dir, "run"); }
static void teardown(void) { tu_rmrf(dir); free(dir); free(run); }
TestSuite(rpc, .init = setup, .fini = teardown, .timeout = 60);

/* A child serving `n` requests: replies with the request reversed. */
static pid_t echo_server(int n, int answer)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        void *z = zmq_ctx_new();
        rpc_server *s;
        if (rpc_server_open(z, run, "echo", &s)) _exit(2);
        if (write(p[1], "r", 1) != 1) _exit(3);
        for (int i = 0; i < n;) {
            zmq_pollitem_t it = {rpc_server_socket(s), 0, ZMQ_POLLIN, 0};
            uint8_t *buf;
            size_t len;
            zmq_poll(&it, 1, 100);
            int rc = rpc_server_recv(s, &buf, &len);
            if (rc < 0) _exit(4);
            if (rc == 0) continue;
            i++;
            if (!answer) { free(buf); pause(); }
            for (size_t k = 0; k < len / 2; k++) { uint8_t t = buf[k]; buf[k] = buf[len - 1 - k]; buf[len - 1 - k] = t; }
            rpc_server_send(s, buf, len);
            free(buf);
        }
        rpc_server_close(s);
        zmq_ctx_term(z);
        _exit(0);
    }
    char c;
    close(p[1]);
    cr_assert_eq(read(p[0], &c, 1), 1, "server did not start");
    close(p[0]);
    return pid;
}

Test(rpc, round_trip_between_processes)
{
    pid_t pid = echo_server(2, 1);
    void *z = zmq_ctx_new();
    uint8_t *r;
    size_t rl;
    cr_assert_eq(rpc_call(z, run, "echo", (const uint8_t *)"abc", 3, 5000, &r, &rl), INE_OK, "%s", ine_err_msg());
    cr_assert_eq(rl, 3);
    cr_assert_eq(memcmp(r, "cba", 3), 0);
    free(r);
    cr_assert_eq(rpc_call(z, run, "echo", (const uint8_t *)"xy", 2, 5000, &r, &rl), INE_OK);
    cr_assert_eq(memcmp(r, "yx", 2), 0);
    free(r);
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    struct stat sb;
    char *sp = tu_path(dir, "run/echo.sock");
    cr_assert_neq(stat(sp, &sb), 0, "socket file removed on close");
    free(sp);
    zmq_ctx_term(z);
}

Test(rpc, second_instance_is_refused)
{
    pid_t pid = echo_server(1, 1);
    void *z = zmq_ctx_new();
    rpc_server *s = NULL;
    cr_assert_eq(rpc_server_open(z, run, "echo", &s), INE_EEXIST);
    cr_assert(strstr(ine_err_msg(), "already running"), "%s", ine_err_msg());
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    /* Its socket file is left behind: a call says so at once instead of waiting it out. */
    uint8_t *r;
    size_t rl;
    cr_assert_eq(rpc_call(z, run, "echo", (const uint8_t *)"x", 1, 60000, &r, &rl), INE_EAGAIN);
    cr_assert(strstr(ine_err_msg(), "left from an instance that stopped"), "%s", ine_err_msg());
    /* The dead instance's socket file is stale; the lock is free again. */
    cr_assert_eq(rpc_server_open(z, run, "echo", &s), INE_OK, "%s", ine_err_msg());
    rpc_server_close(s);
    zmq_ctx_term(z);
}

Test(rpc, service_not_running_is_said_plainly)
{
    void *z = zmq_ctx_new();
    uint8_t *r;
    size_t rl;
    cr_assert_eq(rpc_call(z, run, "ca", (const uint8_t *)"x", 1, 1000, &r, &rl), INE_EAGAIN);
    cr_assert(strstr(ine_err_msg(), "ine-ca is not running"), "%s", ine_err_msg());
    zmq_ctx_term(z);
}

Test(rpc, silent_service_times_out)
{
    pid_t pid = echo_server(1, 0);
    void *z = zmq_ctx_new();
    uint8_t *r;
    size_t rl;
    cr_assert_eq(rpc_call(z, run, "echo", (const uint8_t *)"x", 1, 300, &r, &rl), INE_EAGAIN);
    cr_assert(strstr(ine_err_msg(), "did not answer"), "%s", ine_err_msg());
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    zmq_ctx_term(z);
}
