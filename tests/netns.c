/* netns.c — see netns.h. Owns the namespaces, veths and bridge of a test, the guard process
 * that removes them if the test dies, running processes inside a host, and the link captures. */
#include "netns.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NN_IP "/bin/ip"

const char *nn_addr(const nn_t *nn, int host)
{
    cr_assert(host >= 1 && host <= nn->n, "no host %d", host);
    return nn->addr[host];
}

char *nn_path(const nn_t *nn, const char *name) { return tu_path(nn->dir, name); }

static void nn__sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The calling thread moves into a host's network stack (sockets it creates, and processes it
 * forks, belong there) and back. Only the network namespace changes: files are shared. */
void nn_enter(nn_t *nn, int host)
{
    cr_assert(host >= 1 && host <= nn->n, "no host %d", host);
    cr_assert_eq(setns(nn->ns_fd[host], CLONE_NEWNET), 0, "setns into %s: %s", nn->ns[host], strerror(errno));
}

void nn_leave(nn_t *nn)
{
    cr_assert_eq(setns(nn->self_fd, CLONE_NEWNET), 0, "setns back: %s", strerror(errno));
}

/* --- namespaces ------------------------------------------------------------------------------- */

/* A shell line that kills whatever runs in the named namespaces and deletes them. */
static char *nn__del_script(char names[][48], int count)
{
    char *s = strdup(""), *t;
    for (int i = 0; i < count; i++) {
        if (!names[i][0]) continue;
        if (asprintf(&t, "%s" NN_IP " netns pids %s 2>/dev/null | xargs -r kill -9; " NN_IP " netns del %s 2>/dev/null; ", s, names[i],
                     names[i]) < 0)
            cr_assert_fail("oom");
        free(s);
        s = t;
    }
    return s;
}

/* Namespaces named ine<pid>h<n> or ine<pid>sw whose test process is gone (or is this process,
 * which has made none yet: a pid reused since). */
static void nn__remove_stale(void)
{
    char names[64][48];
    int count = 0;
    DIR *d = opendir("/run/netns");
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) && count < 64;) {
        int pid = 0, used = 0, h = 0, used2 = 0;
        if (strlen(e->d_name) >= sizeof names[0]) continue;
        if (sscanf(e->d_name, "ine%d%n", &pid, &used) != 1 || pid <= 0) continue;
        if (strcmp(e->d_name + used, "sw") && (sscanf(e->d_name + used, "h%d%n", &h, &used2) != 1 || e->d_name[used + used2]))
            continue;
        if (pid != getpid() && (kill(pid, 0) == 0 || errno != ESRCH)) continue;
        memcpy(names[count++], e->d_name, strlen(e->d_name) + 1);
    }
    closedir(d);
    if (count) {
        char *script = nn__del_script(names, count), *out = NULL;
        cl_sh(&out, 60, "%s", script);
        cr_log_info("removed %d stale test namespace(s) of dead test processes", count);
        free(out);
        free(script);
    }
}

/* A child that outlives a crashed test just long enough to remove its namespaces: it waits on
 * a pipe whose write end only this process holds; EOF means the test died, a byte that it
 * cleaned up itself. */
static void nn__guard_start(nn_t *nn)
{
    int p[2];
    char *script = nn__del_script(nn->ns, nn->n + 1);
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    nn->guard = fork();
    cr_assert_geq(nn->guard, 0);
    if (nn->guard == 0) {
        char b;
        ssize_t k;
        setsid();
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        close(p[1]);
        do k = read(p[0], &b, 1);
        while (k < 0 && errno == EINTR);
        if (k == 1) _exit(0);
        execl("/bin/sh", "sh", "-c", script, (char *)NULL);
        _exit(127);
    }
    free(script);
    close(p[0]);
    nn->guard_fd = p[1];
}

/* Host `from` reaches host `to`: a connection to a closed port is refused (not unreachable). */
static int nn__reaches(nn_t *nn, int from, int to)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(9)};
    struct pollfd pf;
    int fd, err = 0;
    socklen_t el = sizeof err;
    nn_enter(nn, from);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    nn_leave(nn);
    if (fd < 0) return 0;
    inet_pton(AF_INET, nn->addr[to], &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) err = 0;
    else if (errno != EINPROGRESS) err = errno;
    else {
        pf = (struct pollfd){fd, POLLOUT, 0};
        if (poll(&pf, 1, 1000) == 1) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        else err = ETIMEDOUT;
    }
    close(fd);
    return err == ECONNREFUSED;
}

void nn_create(nn_t *nn, int n)
{
    char *out = NULL, *cmd = NULL, *t;
    int rc, net = 200 + getpid() % 50;
    memset(nn, 0, sizeof *nn);
    nn->self_fd = nn->guard_fd = -1;
    for (int h = 0; h <= NN_MAX_HOSTS; h++) nn->ns_fd[h] = -1;
    cr_assert(n >= 1 && n <= NN_MAX_HOSTS);
    if (geteuid() != 0) cr_skip_test("network namespaces need root (ip netns add); this test runs as uid %d", (int)geteuid());
    if (access(NN_IP, X_OK) != 0) cr_skip_test(NN_IP " is missing: scripts/install-deps.sh installs iproute2");
    nn__remove_stale();
    nn->n = n;
    snprintf(nn->prefix, sizeof nn->prefix, "ine%d", (int)getpid());
    snprintf(nn->ns[0], sizeof nn->ns[0], "%ssw", nn->prefix);
    for (int h = 1; h <= n; h++) {
        snprintf(nn->ns[h], sizeof nn->ns[h], "%sh%d", nn->prefix, h);
        snprintf(nn->addr[h], sizeof nn->addr[h], "10.%d.0.%d", net, h);
    }
    cr_assert(nn->dir = tu_tmpdir());
    nn->self_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    cr_assert_geq(nn->self_fd, 0, "cannot open /proc/self/ns/net: %s", strerror(errno));
    rc = cl_sh(&out, 30, NN_IP " netns add %s && " NN_IP " -n %s link add br0 type bridge && " NN_IP " -n %s link set br0 up", nn->ns[0],
               nn->ns[0], nn->ns[0]);
    if (rc != 0) {
        char why[300];
        size_t len;
        snprintf(why, sizeof why, "%s", out && out[strspn(out, " \n")] ? out : "no message");
        for (len = strlen(why); len && (why[len - 1] == '\n' || why[len - 1] == ' ');) why[--len] = 0;
        free(out);
        out = NULL;
        cl_sh(&out, 30, NN_IP " netns del %s", nn->ns[0]);
        free(out);
        cr_skip_test("ip netns is unusable here (%s)", why);
    }
    free(out);
    nn__guard_start(nn);
    /* From here on nothing is skipped: every failure is the test's. */
    cmd = strdup("set -e; ");
    for (int h = 1; h <= n; h++) {
        if (asprintf(&t,
                     "%s" NN_IP " netns add %s; " NN_IP " -n %s link add " NN_DEV " type veth peer name h%d netns %s; " NN_IP
                     " -n %s link set h%d master br0 up; " NN_IP " -n %s addr add %s/24 dev " NN_DEV "; " NN_IP " -n %s link set " NN_DEV
                     " up; " NN_IP " -n %s link set lo up; ",
                     cmd, nn->ns[h], nn->ns[h], h, nn->ns[0], nn->ns[0], h, nn->ns[h], nn->addr[h], nn->ns[h], nn->ns[h]) < 0)
            cr_assert_fail("oom");
        free(cmd);
        cmd = t;
    }
    rc = cl_sh(&out, 60, "%s", cmd);
    cr_assert_eq(rc, 0, "creating the test hosts failed: %s", out);
    free(out);
    free(cmd);
    for (int h = 0; h <= n; h++) {
        char p[64];
        snprintf(p, sizeof p, "/run/netns/%s", nn->ns[h]);
        nn->ns_fd[h] = open(p, O_RDONLY | O_CLOEXEC);
        cr_assert_geq(nn->ns_fd[h], 0, "cannot open %s: %s", p, strerror(errno));
    }
    /* A veth's carrier and a bridge port take a moment to come up. */
    for (int h = 1; h <= n; h++)
        for (int g = 1; g <= n; g++) {
            if (g == h) continue;
            for (int64_t end = cl_now_ms() + CL_WAIT_MS; !nn__reaches(nn, h, g); nn__sleep_ms(50))
                cr_assert(cl_now_ms() < end, "host %d (%s) cannot reach host %d (%s) over the bridge", h, nn->addr[h], g, nn->addr[g]);
        }
    cr_log_info("test hosts %s-%s: %s .. %s", nn->ns[1], nn->ns[n], nn->addr[1], nn->addr[n]);
}

void nn_destroy(nn_t *nn)
{
    char *script, *out = NULL;
    if (!nn->n) return;
    if (nn->self_fd >= 0) setns(nn->self_fd, CLONE_NEWNET); /* an assertion may have left us inside */
    for (int h = 1; h <= nn->n; h++) nn_kill_host(nn, h, SIGKILL);
    for (int h = 0; h <= NN_MAX_HOSTS; h++)
        if (nn->ns_fd[h] >= 0) close(nn->ns_fd[h]);
    /* Anything left inside (a capture helper's child) goes with the namespaces. */
    script = nn__del_script(nn->ns, nn->n + 1);
    cl_sh(&out, 60, "%s", script);
    free(out);
    free(script);
    for (int h = 0; h <= nn->n; h++) {
        char p[64];
        snprintf(p, sizeof p, "/run/netns/%s", nn->ns[h]);
        cr_expect_neq(access(p, F_OK), 0, "namespace %s was removed", nn->ns[h]);
    }
    if (nn->guard_fd >= 0) {
        if (write(nn->guard_fd, "x", 1) != 1) { /* it will find nothing left to remove */
        }
        close(nn->guard_fd);
    }
    if (nn->guard > 0) waitpid(nn->guard, NULL, 0);
    for (int i = 0; i < NN_MAX_PROCS; i++) free(nn->procs[i].p.log);
    if (nn->self_fd >= 0) close(nn->self_fd);
    if (nn->dir) {
        if (!getenv("INE_KEEP_TEST_DIR")) tu_rmrf(nn->dir);
        else fprintf(stderr, "kept %s\n", nn->dir);
    }
    free(nn->dir);
    memset(nn, 0, sizeof *nn);
}

/* --- processes -------------------------------------------------------------------------------- */

cl_proc *nn_spawn(nn_t *nn, int host, const char *name, char *const argv[])
{
    nn_proc *slot = NULL;
    char *logname, *log;
    pid_t pid, parent = getpid();
    int fd, nsfd;
    cr_assert(host >= 1 && host <= nn->n, "no host %d", host);
    for (int i = 0; i < NN_MAX_PROCS && !slot; i++)
        if (!nn->procs[i].host || !nn->procs[i].p.pid) slot = &nn->procs[i];
    cr_assert(slot, "more than %d processes on the test hosts", NN_MAX_PROCS);
    if (asprintf(&logname, "%s.log", name) < 0) cr_assert_fail("oom");
    log = nn_path(nn, logname);
    free(logname);
    fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0, "cannot open %s", log);
    nsfd = nn->ns_fd[host];
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* The test may die on an assertion: what it started on the hosts goes with it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        if (setns(nsfd, CLONE_NEWNET) != 0) {
            dprintf(2, "setns: %s\n", strerror(errno));
            _exit(127);
        }
        signal(SIGPIPE, SIG_DFL);
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) dup2(nul, 0);
        execv(argv[0], argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    free(slot->p.log);
    memset(slot, 0, sizeof *slot);
    slot->host = host;
    slot->p.pid = pid;
    slot->p.log = log;
    snprintf(slot->p.name, sizeof slot->p.name, "%s", name);
    return &slot->p;
}

int nn_kill_host(nn_t *nn, int host, int sig)
{
    int killed = 0;
    /* Signal them all first, so a service does not notice its neighbours going one by one. */
    for (int i = 0; i < NN_MAX_PROCS; i++)
        if (nn->procs[i].host == host && nn->procs[i].p.pid) kill(nn->procs[i].p.pid, sig);
    for (int i = 0; i < NN_MAX_PROCS; i++)
        if (nn->procs[i].host == host && nn->procs[i].p.pid) {
            cl_kill(&nn->procs[i].p, sig);
            killed++;
        }
    return killed;
}

void nn_link_set(nn_t *nn, int host, int up)
{
    char *out = NULL;
    cr_assert(host >= 1 && host <= nn->n, "no host %d", host);
    /* The bridge's end: the host's own view of its interface stays as it was. */
    cr_assert_eq(cl_sh(&out, 30, NN_IP " -n %s link set h%d %s", nn->ns[0], host, up ? "up" : "down"), 0, "link of host %d: %s", host, out);
    free(out);
    if (up)
        for (int g = 1; g <= nn->n; g++)
            for (int64_t end = cl_now_ms() + CL_WAIT_MS; g != host && !nn__reaches(nn, host, g); nn__sleep_ms(50))
                cr_assert(cl_now_ms() < end, "host %d reaches host %d again", host, g);
}

int nn_run(nn_t *nn, int host, char *const argv[], char **out, char **err)
{
    int rc;
    nn_enter(nn, host);
    rc = tu_run(argv, NULL, out, err);
    nn_leave(nn);
    return rc;
}

typedef struct {
    nn_t *nn;
    int host;
} nn__where;

static int nn__run_in(void *ctx, char **argv, char **out)
{
    nn__where *w = ctx;
    return nn_run(w->nn, w->host, argv, out, NULL);
}

char *nn_redis_cli(nn_t *nn, int host, const char *addr, int port, ...)
{
    nn__where w = {nn, host};
    va_list ap;
    va_start(ap, port);
    char *out = cl_redis_cli_with(nn__run_in, &w, addr, port, ap);
    va_end(ap);
    return out;
}

int nn_resp_open(nn_t *nn, int host, cl_resp *r, const char *addr, int port)
{
    int rc;
    nn_enter(nn, host);
    rc = cl_resp_open(r, addr, port);
    nn_leave(nn);
    return rc;
}

void nn_load_start(nn_t *nn, int host, cl_load *l, const char *addr, int port, const char *key)
{
    nn_enter(nn, host);
    cl_load_start(l, addr, port, key); /* on failure it asserts; nn_destroy moves us back */
    nn_leave(nn);
}

/* --- captures --------------------------------------------------------------------------------- */

void nn_capture_start(nn_t *nn, int host, nn_capture *cap, const char *name, const char *filter, int tls_port)
{
    char *argv[] = {"/usr/bin/tshark", "-i", NN_DEV, "-f", (char *)filter, "-w", NULL, NULL};
    char fname[64];
    cr_assert_eq(access(argv[0], X_OK), 0, "tshark is installed by scripts/install-deps.sh");
    snprintf(fname, sizeof fname, "%s.pcapng", name);
    cap->file = nn_path(nn, fname);
    cap->tls_port = tls_port;
    argv[6] = cap->file;
    cap->p = nn_spawn(nn, host, name, argv);
    cr_assert(cl_wait_log(cap->p, 0, "Capturing on", CL_WAIT_MS), "tshark started capturing on host %d", host);
}

int nn_capture_seen(const nn_capture *cap, const char *text, int timeout_ms)
{
    for (int64_t end = cl_now_ms() + timeout_ms;;) {
        size_t len = 0;
        char *d = tu_read_file(cap->file, &len);
        int found = d && tu_contains(d, len, text, strlen(text));
        free(d);
        if (found) return 1;
        if (cl_now_ms() > end) return 0;
        nn__sleep_ms(50);
    }
}

void nn_capture_stop(nn_capture *cap, const char *sentinel)
{
    cr_assert(nn_capture_seen(cap, sentinel, CL_WAIT_MS), "'%s' never reached the capture %s", sentinel, cap->file);
    cl_kill(cap->p, SIGINT);
}

int nn_capture_count(const nn_capture *cap, const char *display_filter)
{
    char *out = NULL;
    int n = 0, rc = cl_sh(&out, 60, "/usr/bin/tshark -r '%s' -d tcp.port==%d,tls -Y '%s' -T fields -e frame.number 2>/dev/null", cap->file,
                          cap->tls_port, display_filter);
    cr_assert_eq(rc, 0, "tshark -r: %s", out);
    for (char *l = out; (l = strchr(l, '\n')); l++) n++;
    free(out);
    return n;
}

int nn_capture_has(const nn_capture *cap, const char *scope, const char *text)
{
    char *out = NULL, filter[512];
    int rc, found;
    cr_assert_eq(strpbrk(text, "'\"\\"), NULL, "a searchable text has no quotes");
    snprintf(filter, sizeof filter, "(%s) && frame contains \"%s\"", scope ? scope : "frame", text);
    rc = cl_sh(&out, 60, "/usr/bin/tshark -r '%s' -Y '%s' -T fields -e frame.number 2>/dev/null", cap->file, filter);
    cr_assert_eq(rc, 0, "tshark -r: %s", out);
    found = out[strspn(out, " \n")] != 0;
    free(out);
    if (found) return 1;
    rc = cl_sh(&out, 60,
               "z=''; for s in $(/usr/bin/tshark -r '%s' -Y '%s' -T fields -e tcp.stream 2>/dev/null | sort -u); do "
               "z=\"$z -z follow,tcp,ascii,$s\"; done; [ -z \"$z\" ] && echo 0 || "
               "/usr/bin/tshark -r '%s' -q $z 2>/dev/null | tr -d '\\n' | grep -c '%s'",
               cap->file, scope ? scope : "tcp", cap->file, text);
    found = atoi(out) > 0;
    free(out);
    return found;
}

void nn_capture_free(nn_capture *cap)
{
    free(cap->file);
    cap->file = NULL;
}
