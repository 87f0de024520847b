/* testutil.c — see testutil.h. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

char *tu_tmpdir(void)
{
    char tmpl[] = "/tmp/ine-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static int tu__rm(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

void tu_rmrf(const char *path)
{
    if (path) nftw(path, tu__rm, 16, FTW_DEPTH | FTW_PHYS);
}

char *tu_path(const char *dir, const char *name)
{
    char *p;
    if (asprintf(&p, "%s/%s", dir, name) < 0) return NULL;
    return p;
}

const char *tu_bin(const char *name)
{
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/%s", INE_BIN_DIR, name);
    return buf;
}

typedef struct { char *data; size_t len, cap; } tu__buf;

static void tu__append(tu__buf *b, const char *d, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->data = realloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, d, n);
    b->len += n;
    b->data[b->len] = 0;
}

int tu_run_env(char *const argv[], char *const envadd[], const char *stdin_text, char **out, char **err)
{
    int pin[2], pout[2], perr[2], status;
    pid_t pid;
    tu__buf bo = {0}, be = {0};
    size_t in_off = 0, in_len = stdin_text ? strlen(stdin_text) : 0;

    if (pipe(pin) || pipe(pout) || pipe(perr)) return -1;
    pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(pin[0], 0); dup2(pout[1], 1); dup2(perr[1], 2);
        close(pin[0]); close(pin[1]); close(pout[0]); close(pout[1]); close(perr[0]); close(perr[1]);
        for (int i = 0; envadd && envadd[i]; i++) putenv(envadd[i]);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(pin[0]); close(pout[1]); close(perr[1]);
    if (!in_len) { close(pin[1]); pin[1] = -1; }
    tu__append(&bo, "", 0);
    tu__append(&be, "", 0);
    signal(SIGPIPE, SIG_IGN);
    for (int open_fds = 2; open_fds > 0;) {
        struct pollfd p[3] = {{pout[0], POLLIN, 0}, {perr[0], POLLIN, 0}, {pin[1], POLLOUT, 0}};
        char buf[65536];
        if (poll(p, pin[1] >= 0 ? 3 : 2, -1) < 0) { if (errno == EINTR) continue; break; }
        for (int i = 0; i < 2; i++) {
            if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t r = read(p[i].fd, buf, sizeof buf);
            if (r > 0) tu__append(i == 0 ? &bo : &be, buf, (size_t)r);
            else { close(p[i].fd); if (i == 0) pout[0] = -1; else perr[0] = -1; open_fds--; }
        }
        if (pin[1] >= 0 && (p[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = write(pin[1], stdin_text + in_off, in_len - in_off);
            if (w > 0) in_off += (size_t)w;
            if (w < 0 || in_off == in_len) { close(pin[1]); pin[1] = -1; }
        }
    }
    if (pin[1] >= 0) close(pin[1]);
    waitpid(pid, &status, 0);
    if (out) *out = bo.data; else free(bo.data);
    if (err) *err = be.data; else free(be.data);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

int tu_run(char *const argv[], const char *stdin_text, char **out, char **err)
{
    return tu_run_env(argv, NULL, stdin_text, out, err);
}

const char *tu_faketime_preload(int threaded)
{
    static const char *dirs[] = {"/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime",
                                 "/usr/lib/faketime", NULL};
    static char entry[256];
    const size_t at = strlen("LD_PRELOAD=");
    for (int i = 0; dirs[i]; i++) {
        snprintf(entry, sizeof entry, "LD_PRELOAD=%s/%s", dirs[i], threaded ? "libfaketimeMT.so.1" : "libfaketime.so.1");
        if (access(entry + at, R_OK) == 0) return entry;
    }
    return NULL;
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *d = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        d = malloc((size_t)n + 1);
        if (d && fread(d, 1, (size_t)n, f) == (size_t)n) {
            d[n] = 0;
            if (len) *len = (size_t)n;
        } else {
            free(d);
            d = NULL;
        }
    }
    fclose(f);
    return d;
}

int tu_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

int tu_contains(const void *hay, size_t hlen, const void *needle, size_t nlen)
{
    return memmem(hay, hlen, needle, nlen) != NULL;
}

evlog_event *tu_ev_db_created(uint32_t uid, const char *name)
{
    evlog_event *ev = calloc(1, sizeof *ev);
    Ine__V1__DatabaseCreated *b = calloc(1, sizeof *b);
    ine__v1__event__init(ev);
    ine__v1__database_created__init(b);
    b->db_uid = uid;
    b->name = strdup(name);
    b->port = 12000 + uid;
    b->shard_node_uid = 1;
    b->shard_address = strdup("127.0.0.1:6379");
    ev->producer = strdup("test");
    ev->actor = strdup("tester");
    ev->body_case = INE__V1__EVENT__BODY_DATABASE_CREATED;
    ev->database_created = b;
    return ev;
}

evlog_event *tu_ev_node_added(uint32_t uid, const char *addr)
{
    evlog_event *ev = calloc(1, sizeof *ev);
    Ine__V1__NodeAdded *b = calloc(1, sizeof *b);
    char name[32];
    ine__v1__event__init(ev);
    ine__v1__node_added__init(b);
    snprintf(name, sizeof name, "node:%u", uid);
    b->node_uid = uid;
    b->address = strdup(addr);
    b->name = strdup(name);
    ev->producer = strdup("test");
    ev->actor = strdup("tester");
    ev->body_case = INE__V1__EVENT__BODY_NODE_ADDED;
    ev->node_added = b;
    return ev;
}

/* Builders allocate with malloc like protobuf-c's default allocator, so the generic free
 * walks them correctly. */
void tu_event_free(evlog_event *ev)
{
    if (ev) protobuf_c_message_free_unpacked(&ev->base, NULL);
}

uint64_t tu_append_unknown(evlog_t *log, int64_t time_us)
{
    evlog_event ev = INE__V1__EVENT__INIT;
    uint8_t hash[EVLOG_HASH_LEN], buf[512];
    uint64_t head;
    size_t n;
    /* Field 99, length-delimited, 5 bytes: an unknown oneof member to this schema. */
    static const uint8_t future[] = {0x9a, 0x06, 0x05, 'h', 'e', 'l', 'l', 'o'};
    if (evlog_head(log, &head, hash) != 0) return 0;
    ev.seq = head + 1;
    ev.time_us = time_us;
    ev.producer = "ine-future";
    ev.actor = "tester";
    ev.prev_sha256.data = hash;
    ev.prev_sha256.len = EVLOG_HASH_LEN;
    n = protobuf_c_message_pack(&ev.base, buf);
    memcpy(buf + n, future, sizeof future);
    n += sizeof future;
    return evlog_append_raw(log, head + 1, buf, n) == 0 ? head + 1 : 0;
}

/* Every `inectl cluster create` a test runs makes a 2048-bit CA (as the helpers ask for
 * explicitly with ca_key_bits), for speed; a test that checks the default unsets it. */
__attribute__((constructor)) static void tu__fast_ca(void) { setenv("INE_CA_KEY_BITS", "2048", 0); }
