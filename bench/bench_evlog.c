/* bench_evlog.c — the event log benchmark. One run, one temp dir on one file system, five
 * figures: the disk's raw synchronous-write limit, durable single-event appends (and their
 * ratio to that limit), 100-event batches, a full replay and verify of a large log, and the
 * bytes each event costs on disk. Prints one table with goals and pass/miss; exits 0 unless
 * something failed outright. Figures and their explanation live in docs/BENCHMARKS.md. */
#include "err.h"
#include "evlog.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <lmdb.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define BENCH__RAW_REC 200
#define BENCH__BATCH 100
#define BENCH__FILL_BATCH 1000
#define BENCH__MAX_ROWS 64

typedef struct {
    const char *dir;  /* parent of our temp dir */
    long events;      /* > 0: durable phases run exactly this many events, not by time */
    long replay;      /* size of the replay log */
    double raw_s;     /* seconds per raw-sync phase */
    double append_s;  /* seconds per durable-append phase */
    int quick;
} bench__cfg;

typedef struct {
    char id[6];
    char what[64];
    char value[32];
    char unit[16];
    char goal[16];
    int verdict; /* -1 no goal, 0 miss, 1 pass */
} bench__row;

static bench__row bench__rows[BENCH__MAX_ROWS];
static int bench__nrows;

static void bench__row_add(const char *id, const char *what, const char *unit, const char *goal,
                           int verdict, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void bench__row_add(const char *id, const char *what, const char *unit, const char *goal,
                           int verdict, const char *fmt, ...)
{
    bench__row *r;
    va_list ap;
    if (bench__nrows == BENCH__MAX_ROWS) return;
    r = &bench__rows[bench__nrows++];
    snprintf(r->id, sizeof r->id, "%s", id);
    snprintf(r->what, sizeof r->what, "%s", what);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    snprintf(r->goal, sizeof r->goal, "%s", goal ? goal : "-");
    r->verdict = goal ? verdict : -1;
    va_start(ap, fmt);
    vsnprintf(r->value, sizeof r->value, fmt, ap);
    va_end(ap);
}

static double bench__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: deterministic filler, so every run writes the same bytes. */
static uint64_t bench__rng = 0x9e3779b97f4a7c15ULL;
static uint64_t bench__rand(void)
{
    bench__rng ^= bench__rng >> 12;
    bench__rng ^= bench__rng << 25;
    bench__rng ^= bench__rng >> 27;
    return bench__rng * 0x2545f4914f6cdd1dULL;
}

static char *bench__strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *bench__strf(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

/* ---- machine facts ------------------------------------------------------------------------ */

static const char *bench__fs_name(long type)
{
    switch ((unsigned long)type) {
    case 0xEF53: return "ext2/3/4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x01021994: return "tmpfs";
    case 0x794c7630: return "overlayfs";
    case 0x2fc12fc2: return "zfs";
    case 0xF2F52010: return "f2fs";
    case 0x6969: return "nfs";
    case 0x65735546: return "fuse";
    default: return "unknown";
    }
}

static void bench__machine(const char *dir)
{
    struct utsname u;
    struct statfs sf;
    char cpu[128] = "unknown", line[256];
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "model name", 10) == 0 && strchr(line, ':')) {
                snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
                cpu[strcspn(cpu, "\n")] = 0;
                break;
            }
        fclose(f);
    }
    if (uname(&u) != 0) memset(&u, 0, sizeof u);
    printf("machine   : nproc %ld, %s\n", sysconf(_SC_NPROCESSORS_ONLN), cpu);
    printf("kernel    : %s %s %s\n", u.sysname, u.release, u.machine);
    if (statfs(dir, &sf) == 0)
        printf("file sys  : %s (statfs f_type 0x%lx, block %ld) at %s\n", bench__fs_name((long)sf.f_type),
               (unsigned long)sf.f_type, (long)sf.f_bsize, dir);
    printf("lmdb      : %s; protobuf-c %s\n", mdb_version(NULL, NULL, NULL), protobuf_c_version());
#if defined(__SANITIZE_ADDRESS__)
    printf("build     : SANITIZED (ASan) - figures are not representative\n");
#elif defined(NDEBUG) && defined(__OPTIMIZE__)
    printf("build     : optimized (NDEBUG)\n");
#else
    printf("build     : debug - figures are not representative; use -DCMAKE_BUILD_TYPE=Release\n");
#endif
}

/* ---- 1. raw synchronous writes ------------------------------------------------------------ */

/* What one "record" costs in each raw mode. BENCH__SYNC_LMDB replays an LMDB commit's I/O as
 * strace shows it for one small event: four 4 KB pages rewritten in place (events leaf, meta
 * leaf, main and free DB pages), one page appended, fdatasync, then the 120-byte meta record
 * rewritten through an O_DSYNC descriptor. */
typedef enum {
    BENCH__SYNC_FDATASYNC,
    BENCH__SYNC_FSYNC,
    BENCH__SYNC_TWO,
    BENCH__SYNC_LMDB,
    BENCH__SYNC_MODES
} bench__sync_mode;

#define BENCH__PAGE 4096
#define BENCH__PREFILL_PAGES 64

typedef struct {
    bench__sync_mode mode;
    char *path;
    int fd, mfd;      /* mfd: O_DSYNC twin for the LMDB shape's meta write */
    off_t end;
    long n;
    double secs;
    uint8_t page[BENCH__PAGE];
} bench__raw;

static int bench__raw_open(const char *dir, bench__sync_mode mode, bench__raw *r)
{
    memset(r, 0, sizeof *r);
    r->mode = mode;
    r->fd = r->mfd = -1;
    for (size_t i = 0; i < sizeof r->page; i++) r->page[i] = (uint8_t)bench__rand();
    if (!(r->path = bench__strf("%s/raw-%d.dat", dir, (int)mode))) return ine_err(INE_ENOMEM, "out of memory");
    if ((r->fd = open(r->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0 ||
        (mode == BENCH__SYNC_LMDB && (r->mfd = open(r->path, O_WRONLY | O_DSYNC | O_CLOEXEC)) < 0))
        return ine_err(INE_EIO, "cannot open %s: %s", r->path, strerror(errno));
    /* The in-place writes land on blocks that already exist, as LMDB's reused pages do. */
    for (int i = 0; i < BENCH__PREFILL_PAGES; i++)
        if (write(r->fd, r->page, BENCH__PAGE) != BENCH__PAGE)
            return ine_err(INE_EIO, "cannot write %s: %s", r->path, strerror(errno));
    if (fsync(r->fd) != 0) return ine_err(INE_EIO, "cannot sync %s: %s", r->path, strerror(errno));
    r->end = (off_t)BENCH__PREFILL_PAGES * BENCH__PAGE;
    return INE_OK;
}

static void bench__raw_close(bench__raw *r)
{
    if (r->fd >= 0) close(r->fd);
    if (r->mfd >= 0) close(r->mfd);
    if (r->path) unlink(r->path);
    free(r->path);
    r->fd = r->mfd = -1;
    r->path = NULL;
}

static int bench__pw(int fd, const void *b, size_t len, off_t off)
{
    return pwrite(fd, b, len, off) == (ssize_t)len ? 0 : -1;
}

/* One durable record in this mode. */
static int bench__raw_one(bench__raw *r)
{
    int s = 0;
    r->page[0]++;
    switch (r->mode) {
    case BENCH__SYNC_FDATASYNC:
    case BENCH__SYNC_FSYNC:
    case BENCH__SYNC_TWO:
        s = bench__pw(r->fd, r->page, BENCH__RAW_REC, r->end);
        r->end += BENCH__RAW_REC;
        if (s == 0) s = r->mode == BENCH__SYNC_FSYNC ? fsync(r->fd) : fdatasync(r->fd);
        if (s == 0 && r->mode == BENCH__SYNC_TWO)
            s = bench__pw(r->fd, r->page, BENCH__RAW_REC, 0) ? -1 : fdatasync(r->fd);
        break;
    case BENCH__SYNC_LMDB:
        for (int i = 0; i < 4 && s == 0; i++) {
            off_t pg = 2 + (r->n * 4 + i) % (BENCH__PREFILL_PAGES - 2); /* pages 0-1: LMDB's metas */
            s = bench__pw(r->fd, r->page, BENCH__PAGE, pg * BENCH__PAGE);
        }
        if (s == 0) s = bench__pw(r->fd, r->page, BENCH__PAGE, r->end);
        r->end += BENCH__PAGE;
        if (s == 0) s = fdatasync(r->fd);
        if (s == 0) s = bench__pw(r->mfd, r->page, 120, (off_t)(r->n & 1) * BENCH__PAGE);
        break;
    default: break;
    }
    if (s != 0) return ine_err(INE_EIO, "cannot write or sync %s: %s", r->path, strerror(errno));
    r->n++;
    return INE_OK;
}

/* Write durable records for `secs`, adding to the running totals. */
static int bench__raw_slice(bench__raw *r, double secs)
{
    double t0 = bench__now(), el;
    do {
        GUARD(bench__raw_one(r));
    } while ((el = bench__now() - t0) < secs);
    r->secs += el;
    return INE_OK;
}

static double bench__raw_rate(const bench__raw *r) { return r->secs > 0 ? (double)r->n / r->secs : 0; }

/* ---- events ------------------------------------------------------------------------------- */

static char *bench__rand_b64(size_t len)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *s = malloc(len + 1);
    if (!s) return NULL;
    for (size_t i = 0; i < len; i++) s[i] = a[bench__rand() & 63];
    s[len] = 0;
    return s;
}

static char *bench__rand_hex(size_t len)
{
    char *s = malloc(len + 1);
    if (!s) return NULL;
    for (size_t i = 0; i < len; i++) s[i] = "0123456789abcdef"[bench__rand() & 15];
    s[len] = 0;
    return s;
}

/* A PEM-shaped string of ~1.2 KB: 64-column base64 between the usual armour. */
static char *bench__pem(void)
{
    const char *hdr = "-----BEGIN CERTIFICATE-----\n", *ftr = "-----END CERTIFICATE-----\n";
    size_t body = 1120, lines = (body + 63) / 64;
    char *b64 = bench__rand_b64(body), *s = malloc(strlen(hdr) + body + lines + strlen(ftr) + 1), *p;
    if (!b64 || !s) {
        free(b64);
        free(s);
        return NULL;
    }
    p = s + sprintf(s, "%s", hdr);
    for (size_t i = 0; i < body; i += 64) {
        size_t k = body - i < 64 ? body - i : 64;
        memcpy(p, b64 + i, k);
        p += k;
        *p++ = '\n';
    }
    strcpy(p, ftr);
    free(b64);
    return s;
}

/* Every builder allocates like protobuf-c's default allocator (malloc), so one generic
 * protobuf_c_message_free_unpacked frees any of them, even half-built. */
static void bench__ev_free(evlog_event *ev)
{
    if (ev) protobuf_c_message_free_unpacked(&ev->base, NULL);
}

static evlog_event *bench__ev_new(const char *producer)
{
    evlog_event *ev = malloc(sizeof *ev);
    if (!ev) return NULL;
    ine__v1__event__init(ev);
    ev->producer = strdup(producer);
    ev->actor = strdup("admin");
    if (!ev->producer || !ev->actor) {
        bench__ev_free(ev);
        return NULL;
    }
    return ev;
}

/* The realistic large event: a node certificate with its sealed key. */
static evlog_event *bench__ev_cert(uint32_t node)
{
    evlog_event *ev = bench__ev_new("ine-ca");
    Ine__V1__CertificateIssued *b;
    Ine__V1__CertInfo *ci;
    if (!ev) return NULL;
    if (!(b = malloc(sizeof *b))) goto fail;
    ine__v1__certificate_issued__init(b);
    ev->body_case = INE__V1__EVENT__BODY_CERTIFICATE_ISSUED;
    ev->certificate_issued = b;
    b->node_uid = node;
    b->plane = INE__V1__PLANE__PLANE_DATA;
    b->source = INE__V1__CERT_SOURCE__CERT_SOURCE_SELF_SIGNED;
    b->reason = INE__V1__ISSUE_REASON__ISSUE_REASON_SCHEDULED;
    if (!(b->rotation_id = bench__rand_hex(32))) goto fail;
    if (!(b->sealed_key.data = malloc(1300))) goto fail;
    b->sealed_key.len = 1300;
    for (size_t i = 0; i < b->sealed_key.len; i++) b->sealed_key.data[i] = (uint8_t)bench__rand();
    if (!(ci = malloc(sizeof *ci))) goto fail;
    ine__v1__cert_info__init(ci);
    b->cert = ci;
    ci->not_before = 1760000000;
    ci->not_after = ci->not_before + 90 * 86400;
    if (!(ci->cert_pem = bench__pem()) || !(ci->serial_hex = bench__rand_hex(32)) ||
        !(ci->fingerprint_sha256 = bench__rand_hex(64)) || !(ci->root_fingerprint_sha256 = bench__rand_hex(64)) ||
        !(ci->subject = bench__strf("CN=node:%u/dp,O=ine cluster", node)) ||
        !(ci->issuer = strdup("CN=ine cluster CA,O=ine cluster")))
        goto fail;
    return ev;
fail:
    bench__ev_free(ev);
    return NULL;
}

static evlog_event *bench__ev_db(uint32_t uid)
{
    evlog_event *ev = bench__ev_new("ine-policy");
    Ine__V1__DatabaseCreated *b;
    if (!ev) return NULL;
    if (!(b = malloc(sizeof *b))) goto fail;
    ine__v1__database_created__init(b);
    ev->body_case = INE__V1__EVENT__BODY_DATABASE_CREATED;
    ev->database_created = b;
    b->db_uid = uid;
    b->port = 12000 + uid % 1000;
    b->shard_node_uid = 1 + uid % 3;
    b->data_internode_encryption = uid & 1;
    if (!(b->name = bench__strf("db-%u", uid)) || !(b->shard_address = strdup("127.0.0.1:6379"))) goto fail;
    return ev;
fail:
    bench__ev_free(ev);
    return NULL;
}

static evlog_event *bench__ev_node(uint32_t uid)
{
    evlog_event *ev = bench__ev_new("ine-policy");
    Ine__V1__NodeAdded *b;
    if (!ev) return NULL;
    if (!(b = malloc(sizeof *b))) goto fail;
    ine__v1__node_added__init(b);
    ev->body_case = INE__V1__EVENT__BODY_NODE_ADDED;
    ev->node_added = b;
    b->node_uid = uid;
    if (!(b->address = bench__strf("10.0.%u.%u", (uid >> 8) & 255, uid & 255)) ||
        !(b->name = bench__strf("node:%u", uid)))
        goto fail;
    return ev;
fail:
    bench__ev_free(ev);
    return NULL;
}

static evlog_event *bench__ev_die(uint32_t uid)
{
    evlog_event *ev = bench__ev_new("ine-policy");
    Ine__V1__DataInternodeEncryptionChanged *b;
    if (!ev) return NULL;
    if (!(b = malloc(sizeof *b))) goto fail;
    ine__v1__data_internode_encryption_changed__init(b);
    ev->body_case = INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED;
    ev->data_internode_encryption_changed = b;
    b->db_uid = uid;
    b->enabled = !(uid & 1);
    return ev;
fail:
    bench__ev_free(ev);
    return NULL;
}

/* The replay mix: a third each of the small policy events. */
static evlog_event *bench__ev_mix(uint32_t i)
{
    switch (i % 3) {
    case 0: return bench__ev_db(i);
    case 1: return bench__ev_node(i);
    default: return bench__ev_die(i);
    }
}

static void bench__evs_free(evlog_event **evs, size_t n)
{
    if (!evs) return;
    for (size_t i = 0; i < n; i++) bench__ev_free(evs[i]);
    free(evs);
}

static int bench__evs_new(size_t n, evlog_event *(*mk)(uint32_t), evlog_event ***out)
{
    evlog_event **evs = calloc(n, sizeof *evs);
    *out = NULL;
    if (!evs) return ine_err(INE_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        if (!(evs[i] = mk((uint32_t)i + 1))) {
            bench__evs_free(evs, n);
            return ine_err(INE_ENOMEM, "out of memory");
        }
    *out = evs;
    return INE_OK;
}

/* ---- 2, 3. durable appends ---------------------------------------------------------------- */

/* The disk of a VM drifts by 2x within seconds, so append phases are cut into rounds and each
 * evlog slice is followed by raw slices of the same length: the ratio compares like with like. */
#define BENCH__ROUNDS 6
#define BENCH__GROW_MIN (1u << 20)
#define BENCH__GROW_MAX (32u << 20)

typedef struct {
    const char *name;                /* the log's directory under the temp dir */
    evlog_event *(*mk)(uint32_t);
    size_t per;                      /* events per transaction */
    int paired;                      /* run raw 1a and 1d slices between evlog slices */
    int preextend;                   /* prototype: keep written zeros ahead of LMDB's last page */
} bench__append_spec;

typedef struct {
    long txns, events;
    double secs, p50_ms, p99_ms;
    double raw_fdatasync, raw_lmdb; /* paired raw rates; 0 when not paired */
    size_t rec_len;                 /* serialized size of the last record */
    double disk_per_ev;
    double *lat;
    size_t nlat, cap;
} bench__append_res;

/* Prototype of a change to lib/evlog.c: LMDB appends pages at the end of data.mdb, so a commit
 * that adds one changes the file size and fdatasync must write the inode as well. Keeping
 * written zeros ahead of the last used page (a quarter of the used size, 1..32 MB, topped up
 * when less than a quarter of that is left) makes such commits pure data writes; the zeros'
 * cost lands inside the timed loop, as it would in evlog_append. */
typedef struct {
    int fd;
    off_t end;
    uint8_t *zeros;
} bench__grow;

static int bench__grow_check(evlog_t *log, bench__grow *g)
{
    uint64_t used, step;
    GUARD(evlog_disk_bytes(log, &used));
    step = used / 4 < BENCH__GROW_MIN ? BENCH__GROW_MIN : used / 4 > BENCH__GROW_MAX ? BENCH__GROW_MAX : used / 4;
    if ((uint64_t)g->end >= used + step / 4) return INE_OK;
    for (; (uint64_t)g->end < used + step; g->end += 1 << 20)
        if (pwrite(g->fd, g->zeros, 1 << 20, g->end) != 1 << 20)
            return ine_err(INE_EIO, "cannot extend data.mdb: %s", strerror(errno));
    return INE_OK;
}

static int bench__cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Append `per` events per transaction for `secs` (or, when max_events > 0, that many events),
 * timing each commit; adds to the running totals in r and returns the slice's length. */
static int bench__append_slice(evlog_t *log, evlog_event **evs, size_t per, bench__grow *g, double secs,
                               long max_events, bench__append_res *r, double *slice_s)
{
    double t0 = bench__now(), t1;
    long done = 0;
    uint64_t seq;
    for (;;) {
        double t;
        for (size_t i = 0; i < per; i++) evs[i]->time_us = 0;
        t = bench__now();
        if (g) GUARD(bench__grow_check(log, g));
        GUARD(evlog_append(log, evs, per, NULL, &seq));
        t1 = bench__now();
        if (r->nlat == r->cap) {
            size_t cap = r->cap ? 2 * r->cap : 1024;
            double *nl = realloc(r->lat, cap * sizeof *nl);
            if (!nl) return ine_err(INE_ENOMEM, "out of memory");
            r->lat = nl;
            r->cap = cap;
        }
        r->lat[r->nlat++] = t1 - t;
        r->txns++;
        done += (long)per;
        if (max_events > 0 ? done >= max_events : t1 - t0 >= secs) break;
    }
    r->events += done;
    r->secs += t1 - t0;
    *slice_s = t1 - t0;
    return INE_OK;
}

/* Serialized size of the last record, and disk bytes per event, of a log. */
static int bench__log_sizes(evlog_t *log, bench__append_res *r)
{
    uint64_t seq, disk;
    uint8_t *raw;
    GUARD(evlog_last_seq(log, &seq));
    GUARD(evlog_read_raw(log, seq, &raw, &r->rec_len));
    free(raw);
    GUARD(evlog_disk_bytes(log, &disk));
    r->disk_per_ev = r->events ? (double)disk / (double)r->events : 0;
    return INE_OK;
}

/* One durable-append phase on a fresh log. */
static int bench__append_phase(const char *tmp, const bench__append_spec *s, const bench__cfg *c,
                               bench__append_res *r)
{
    char *dir = bench__strf("%s/%s", tmp, s->name), *data = NULL;
    evlog_event **evs = NULL;
    evlog_t *log = NULL;
    bench__raw ra = {.fd = -1, .mfd = -1}, rl = {.fd = -1, .mfd = -1};
    bench__grow g = {.fd = -1};
    long slice_events = c->events > 0 ? (c->events + BENCH__ROUNDS - 1) / BENCH__ROUNDS : 0;
    int rc = INE_OK;

    memset(r, 0, sizeof *r);
    if (!dir) return ine_err(INE_ENOMEM, "out of memory");
    GUARD_GOTO(bench__evs_new(s->per, s->mk, &evs), out);
    GUARD_GOTO(evlog_open(dir, NULL, &log), out);
    if (s->paired) {
        GUARD_GOTO(bench__raw_open(tmp, BENCH__SYNC_FDATASYNC, &ra), out);
        GUARD_GOTO(bench__raw_open(tmp, BENCH__SYNC_LMDB, &rl), out);
    }
    if (s->preextend) {
        struct stat st;
        if (!(data = bench__strf("%s/data.mdb", dir)) || !(g.zeros = calloc(1, 1 << 20))) {
            rc = ine_err(INE_ENOMEM, "out of memory");
            goto out;
        }
        if ((g.fd = open(data, O_WRONLY | O_CLOEXEC)) < 0 || fstat(g.fd, &st) != 0) {
            rc = ine_err(INE_EIO, "cannot open %s: %s", data, strerror(errno));
            goto out;
        }
        g.end = st.st_size;
    }
    for (int i = 0; i < BENCH__ROUNDS; i++) {
        double slice_s = 0;
        GUARD_GOTO(bench__append_slice(log, evs, s->per, s->preextend ? &g : NULL, c->append_s / BENCH__ROUNDS,
                                       slice_events, r, &slice_s),
                   out);
        if (s->paired) {
            GUARD_GOTO(bench__raw_slice(&ra, slice_s), out);
            GUARD_GOTO(bench__raw_slice(&rl, slice_s), out);
        }
    }
    r->raw_fdatasync = bench__raw_rate(&ra);
    r->raw_lmdb = bench__raw_rate(&rl);
    qsort(r->lat, r->nlat, sizeof *r->lat, bench__cmp_dbl);
    r->p50_ms = r->lat[r->nlat / 2] * 1e3;
    r->p99_ms = r->lat[r->nlat * 99 / 100] * 1e3;
    GUARD_GOTO(bench__log_sizes(log, r), out);
out:
    if (g.fd >= 0) close(g.fd);
    free(g.zeros);
    free(data);
    bench__raw_close(&ra);
    bench__raw_close(&rl);
    free(r->lat);
    r->lat = NULL;
    evlog_close(log);
    bench__evs_free(evs, s->per);
    free(dir);
    return rc;
}

/* ---- 4, 5. replay ------------------------------------------------------------------------- */

/* Give a reused event a new identity, so the log holds distinct records. */
static void bench__ev_touch(evlog_event *ev, uint32_t uid)
{
    ev->time_us = 0;
    switch (ev->body_case) {
    case INE__V1__EVENT__BODY_DATABASE_CREATED: ev->database_created->db_uid = uid; break;
    case INE__V1__EVENT__BODY_NODE_ADDED: ev->node_added->node_uid = uid; break;
    case INE__V1__EVENT__BODY_DATA_INTERNODE_ENCRYPTION_CHANGED:
        ev->data_internode_encryption_changed->db_uid = uid;
        ev->data_internode_encryption_changed->enabled = uid & 1;
        break;
    default: break;
    }
}

static int bench__fill(const char *dir, long total, double *secs)
{
    evlog_event **evs = NULL;
    evlog_t *log = NULL;
    uint64_t seq;
    long done = 0;
    double t0;
    int rc = INE_OK;

    GUARD_GOTO(bench__evs_new(BENCH__FILL_BATCH, bench__ev_mix, &evs), out);
    GUARD_GOTO(evlog_open(dir, NULL, &log), out);
    t0 = bench__now();
    while (done < total) {
        size_t k = total - done < BENCH__FILL_BATCH ? (size_t)(total - done) : BENCH__FILL_BATCH;
        for (size_t i = 0; i < k; i++) bench__ev_touch(evs[i], (uint32_t)(done + (long)i + 1));
        GUARD_GOTO(evlog_append(log, evs, k, NULL, &seq), out);
        done += (long)k;
    }
    *secs = bench__now() - t0;
out:
    evlog_close(log);
    bench__evs_free(evs, BENCH__FILL_BATCH);
    return rc;
}

/* Drop the data file's pages from the page cache, so the next read comes from the disk. */
static void bench__evict(const char *dir)
{
    char *path = bench__strf("%s/data.mdb", dir);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    free(path);
}

typedef struct {
    uint64_t n, bytes, decoded, seq_sum;
} bench__replay_ctx;

static int bench__replay_cb(const evlog_record *rec, void *ud)
{
    bench__replay_ctx *c = ud;
    c->n++;
    c->bytes += rec->raw_len;
    if (rec->ev && rec->ev->body_case != INE__V1__EVENT__BODY__NOT_SET) {
        c->decoded++;
        c->seq_sum += rec->ev->seq;
    }
    return 0;
}

static int bench__replay_once(evlog_t *log, bench__replay_ctx *c, double *secs)
{
    double t0 = bench__now();
    memset(c, 0, sizeof *c);
    GUARD(evlog_iterate(log, 1, 0, 0, bench__replay_cb, c));
    *secs = bench__now() - t0;
    return INE_OK;
}

/* ---- prototypes for lib/evlog.c ----------------------------------------------------------- */

/* A bump arena as a ProtobufCAllocator: decoding a record costs no malloc/free per field, and
 * freeing the event is a reset. What does not fit spills to malloc (freed at reset), and the
 * next reset grows the block, so the arena settles at the largest record's need. */
typedef struct {
    uint8_t *buf;
    size_t cap, used;
    void **spill;
    size_t nspill, spillcap;
} bench__arena;

static void *bench__arena_alloc(void *ud, size_t size)
{
    bench__arena *a = ud;
    size_t need = (size + 15) & ~(size_t)15;
    void *p;
    if (a->used + need <= a->cap) {
        p = a->buf + a->used;
        a->used += need;
        return p;
    }
    if (a->nspill == a->spillcap) {
        size_t cap = a->spillcap ? 2 * a->spillcap : 16;
        void **ns = realloc(a->spill, cap * sizeof *ns);
        if (!ns) return NULL;
        a->spill = ns;
        a->spillcap = cap;
    }
    if ((p = malloc(size))) a->spill[a->nspill++] = p;
    return p;
}

static void bench__arena_free(void *ud, void *p)
{
    (void)ud;
    (void)p;
}

static void bench__arena_reset(bench__arena *a)
{
    for (size_t i = 0; i < a->nspill; i++) free(a->spill[i]);
    if (a->nspill) {
        uint8_t *nb = malloc(2 * a->cap);
        if (nb) {
            free(a->buf);
            a->buf = nb;
            a->cap *= 2;
        }
    }
    a->nspill = 0;
    a->used = 0;
}

/* Every raw record of the log, copied out, so decoding and hashing can be timed alone. */
typedef struct {
    uint8_t *buf;
    size_t used, cap, n, max;
    size_t *offs;
} bench__raws;

static int bench__collect_cb(const evlog_record *rec, void *ud)
{
    bench__raws *r = ud;
    if (r->n == r->max) return ine_err(INE_EINVAL, "the log grew while it was read");
    if (r->used + rec->raw_len > r->cap) {
        size_t cap = r->cap ? r->cap : 1 << 20;
        uint8_t *nb;
        while (cap < r->used + rec->raw_len) cap *= 2;
        if (!(nb = realloc(r->buf, cap))) return ine_err(INE_ENOMEM, "out of memory");
        r->buf = nb;
        r->cap = cap;
    }
    memcpy(r->buf + r->used, rec->raw, rec->raw_len);
    r->offs[r->n++] = r->used;
    r->used += rec->raw_len;
    r->offs[r->n] = r->used;
    return 0;
}

typedef struct {
    double dec_malloc_ns, dec_arena_ns, sha_oneshot_ns, sha_fetched_ns;
} bench__proto_res;

/* Decode every record with protobuf-c's default allocator and with the arena, and hash every
 * record with SHA256() (what evlog_hash does) and with EVP_Digest on an EVP_MD fetched once. */
static int bench__proto_phase(evlog_t *log, long total, bench__proto_res *p)
{
    bench__raws r = {.max = (size_t)total};
    bench__arena a = {.cap = 4096};
    ProtobufCAllocator al = {bench__arena_alloc, bench__arena_free, &a};
    EVP_MD *md = NULL;
    uint64_t sum[2] = {0, 0};
    uint8_t h[EVLOG_HASH_LEN];
    unsigned hl;
    double t0, n = (double)total;
    int rc = INE_OK;

    if (!(r.offs = malloc(((size_t)total + 1) * sizeof *r.offs)) || !(a.buf = malloc(a.cap))) {
        rc = ine_err(INE_ENOMEM, "out of memory");
        goto out;
    }
    GUARD_GOTO(evlog_iterate(log, 1, 0, 0, bench__collect_cb, &r), out);
    GUARD_OSSL(md = EVP_MD_fetch(NULL, "SHA256", NULL), out);
    /* The arena must give back exactly what the default allocator does: every record decoded
     * through it packs again to its own bytes. */
    for (size_t i = 0; i < r.n; i++) {
        size_t len = r.offs[i + 1] - r.offs[i];
        evlog_event *ev = ine__v1__event__unpack(&al, len, r.buf + r.offs[i]);
        uint8_t *again = ev ? bench__arena_alloc(&a, len) : NULL;
        int same = again && protobuf_c_message_get_packed_size(&ev->base) == len &&
                   protobuf_c_message_pack(&ev->base, again) == len && memcmp(again, r.buf + r.offs[i], len) == 0;
        bench__arena_reset(&a);
        if (!same) {
            rc = ine_err(INE_ECORRUPT, "record %zu does not survive an arena decode", i + 1);
            goto out;
        }
    }
    p->dec_malloc_ns = p->dec_arena_ns = p->sha_oneshot_ns = p->sha_fetched_ns = 1e30;
    /* Alternate the variants and keep each one's best of three: a VM's neighbours only ever
     * make a pass slower. */
    for (int rep = 0; rep < 3; rep++) {
        for (int pass = 0; pass < 2; pass++) {
            double *best = pass ? &p->dec_arena_ns : &p->dec_malloc_ns;
            sum[pass] = 0;
            t0 = bench__now();
            for (size_t i = 0; i < r.n; i++) {
                size_t len = r.offs[i + 1] - r.offs[i];
                evlog_event *ev = ine__v1__event__unpack(pass ? &al : NULL, len, r.buf + r.offs[i]);
                if (!ev) {
                    rc = ine_err(INE_ECORRUPT, "record %zu does not decode", i + 1);
                    goto out;
                }
                sum[pass] += ev->seq;
                if (pass)
                    bench__arena_reset(&a);
                else
                    ine__v1__event__free_unpacked(ev, NULL);
            }
            t0 = (bench__now() - t0) / n * 1e9;
            if (t0 < *best) *best = t0;
        }
        if (sum[0] != sum[1]) {
            rc = ine_err(INE_ECORRUPT, "arena decode disagrees with the default decode");
            goto out;
        }
        t0 = bench__now();
        for (size_t i = 0; i < r.n; i++) evlog_hash(r.buf + r.offs[i], r.offs[i + 1] - r.offs[i], h);
        t0 = (bench__now() - t0) / n * 1e9;
        if (t0 < p->sha_oneshot_ns) p->sha_oneshot_ns = t0;
        t0 = bench__now();
        for (size_t i = 0; i < r.n; i++)
            GUARD_OSSL(EVP_Digest(r.buf + r.offs[i], r.offs[i + 1] - r.offs[i], h, &hl, md, NULL), out);
        t0 = (bench__now() - t0) / n * 1e9;
        if (t0 < p->sha_fetched_ns) p->sha_fetched_ns = t0;
    }
out:
    EVP_MD_free(md);
    bench__arena_reset(&a);
    free(a.buf);
    free(a.spill);
    free(r.offs);
    free(r.buf);
    return rc;
}

typedef struct {
    double fill_s, cold_s, warm_s, verify_s, avg_rec, disk_per_ev;
    bench__proto_res proto;
} bench__replay_res;

/* Fill a log in big batches, close it, drop it from the cache, reopen, and time a cold and a
 * warm full replay (every record decoded) and a full verify. */
static int bench__replay_phase(const char *tmp, long total, bench__replay_res *r)
{
    char *dir = bench__strf("%s/log-replay", tmp);
    evlog_t *log = NULL;
    bench__replay_ctx c;
    evlog_verify_report rep;
    uint64_t disk, n = (uint64_t)total;
    double t0;
    int rc = INE_OK;

    if (!dir) return ine_err(INE_ENOMEM, "out of memory");
    GUARD_GOTO(bench__fill(dir, total, &r->fill_s), out);
    bench__evict(dir);
    GUARD_GOTO(evlog_open(dir, NULL, &log), out);
    GUARD_GOTO(bench__replay_once(log, &c, &r->cold_s), out);
    if (c.n != n || c.decoded != n || c.seq_sum != n * (n + 1) / 2) {
        rc = ine_err(INE_ECORRUPT, "replay saw %llu records (%llu decoded), expected %llu",
                     (unsigned long long)c.n, (unsigned long long)c.decoded, (unsigned long long)n);
        goto out;
    }
    GUARD_GOTO(bench__replay_once(log, &c, &r->warm_s), out);
    r->avg_rec = (double)c.bytes / (double)c.n;
    t0 = bench__now();
    GUARD_GOTO(evlog_verify(log, &rep), out);
    r->verify_s = bench__now() - t0;
    if (rep.records != n) {
        rc = ine_err(INE_ECORRUPT, "verify checked %llu records, expected %llu", (unsigned long long)rep.records,
                     (unsigned long long)n);
        goto out;
    }
    GUARD_GOTO(evlog_disk_bytes(log, &disk), out);
    r->disk_per_ev = (double)disk / (double)n;
    GUARD_GOTO(bench__proto_phase(log, total, &r->proto), out);
out:
    evlog_close(log);
    free(dir);
    return rc;
}

/* ---- driver ------------------------------------------------------------------------------- */

static int bench__rm(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void bench__table(void)
{
    printf("\n%-4s %-44s %14s  %-9s %-12s %s\n", "#", "figure", "value", "unit", "goal", "result");
    for (int i = 0; i < bench__nrows; i++) {
        const bench__row *r = &bench__rows[i];
        printf("%-4s %-44s %14s  %-9s %-12s %s\n", r->id, r->what, r->value, r->unit, r->goal,
               r->verdict < 0 ? "-" : r->verdict ? "pass" : "MISS");
    }
    printf("* prototype in this benchmark, not lib/evlog.c: see docs/BENCHMARKS.md\n");
}

/* Phase 1: the four raw modes in interleaved rounds, so drift hits them alike. */
static int bench__raw_phase(const char *tmp, double secs, double rates[BENCH__SYNC_MODES])
{
    bench__raw r[BENCH__SYNC_MODES];
    int rc = INE_OK, m;

    for (m = 0; m < BENCH__SYNC_MODES; m++) r[m] = (bench__raw){.fd = -1, .mfd = -1};
    for (m = 0; m < BENCH__SYNC_MODES; m++) GUARD_GOTO(bench__raw_open(tmp, (bench__sync_mode)m, &r[m]), out);
    for (int i = 0; i < 2 * BENCH__ROUNDS; i++)
        for (m = 0; m < BENCH__SYNC_MODES; m++) GUARD_GOTO(bench__raw_slice(&r[m], secs / (2 * BENCH__ROUNDS)), out);
    for (m = 0; m < BENCH__SYNC_MODES; m++) rates[m] = bench__raw_rate(&r[m]);
out:
    for (m = 0; m < BENCH__SYNC_MODES; m++) bench__raw_close(&r[m]);
    return rc;
}

static int bench__run(const bench__cfg *c, const char *tmp)
{
    static const char *raw_name[] = {"raw 200 B append + fdatasync", "raw 200 B append + fsync",
                                      "raw 200 B append+fdatasync, rewrite+fdatasync",
                                      "raw LMDB-shaped commit (5x4 KB, 2 syncs)"};
    double raw[BENCH__SYNC_MODES];
    bench__append_res ar = {0};
    bench__replay_res rr = {0};
    char what[64];

    fprintf(stderr, "[1/4] raw synchronous writes (%.1f s per mode, interleaved)\n", c->raw_s);
    GUARD(bench__raw_phase(tmp, c->raw_s, raw));
    for (int m = 0; m < BENCH__SYNC_MODES; m++) {
        char id[3] = {'1', (char)('a' + m), 0};
        bench__row_add(id, raw_name[m], "rec/s", NULL, 0, "%.0f", raw[m]);
    }

    fprintf(stderr, "[2/4] durable single-event appends (paired with raw slices)\n");
    for (int k = 0; k < 3; k++) {
        static const bench__append_spec specs[] = {
            {"log-one-cert", bench__ev_cert, 1, 1, 0},
            {"log-one-small", bench__ev_db, 1, 1, 0},
            {"log-one-cert-pre", bench__ev_cert, 1, 1, 1},
        };
        static const char *kinds[] = {"CertificateIssued", "small DatabaseCreated", "CertificateIssued, pre-extended*"};
        char id[3] = {'2', (char)('a' + 4 * k), 0};
        double rate, ratio;
        GUARD(bench__append_phase(tmp, &specs[k], c, &ar));
        rate = (double)ar.events / ar.secs;
        ratio = rate / ar.raw_fdatasync;
        snprintf(what, sizeof what, "append 1/txn %s", kinds[k]);
        bench__row_add(id, what, "ev/s", NULL, 0, "%.0f", rate);
        snprintf(what, sizeof what, "  commit latency p50 / p99 (%ld txns)", ar.txns);
        bench__row_add("", what, "ms", NULL, 0, "%.3f / %.3f", ar.p50_ms, ar.p99_ms);
        bench__row_add("", "  paired raw fdatasync (1a) / LMDB shape (1d)", "rec/s", NULL, 0, "%.0f / %.0f",
                       ar.raw_fdatasync, ar.raw_lmdb);
        id[1]++;
        bench__row_add(id, "  ratio to paired raw fdatasync (1a)", "x", ">= 0.50", ratio >= 0.5, "%.3f", ratio);
        id[1]++;
        bench__row_add(id, "  ratio to paired LMDB-shaped commit (1d)", "x", NULL, 0, "%.3f", rate / ar.raw_lmdb);
        id[1]++;
        bench__row_add(id, "  record size / disk bytes per event", "B", NULL, 0, "%zu / %.0f", ar.rec_len,
                       ar.disk_per_ev);
    }

    fprintf(stderr, "[3/4] batches of %d events per transaction\n", BENCH__BATCH);
    for (int k = 0; k < 2; k++) {
        bench__append_spec spec = {k ? "log-batch-small" : "log-batch-cert", k ? bench__ev_db : bench__ev_cert,
                                   BENCH__BATCH, 0, 0};
        GUARD(bench__append_phase(tmp, &spec, c, &ar));
        snprintf(what, sizeof what, "append %d/txn %s", BENCH__BATCH, k ? "small DatabaseCreated" : "CertificateIssued");
        bench__row_add(k ? "3c" : "3a", what, "ev/s", NULL, 0, "%.0f", (double)ar.events / ar.secs);
        bench__row_add(k ? "3d" : "3b", "  transactions", "txn/s", NULL, 0, "%.0f", (double)ar.txns / ar.secs);
    }

    fprintf(stderr, "[4/4] replay of %ld small events (fill, evict, reopen, iterate, verify)\n", c->replay);
    GUARD(bench__replay_phase(tmp, c->replay, &rr));
    {
        double n = (double)c->replay, cold = n / rr.cold_s, warm = n / rr.warm_s;
        bench__row_add("4a", "fill (1000/txn, informational)", "ev/s", NULL, 0, "%.0f", n / rr.fill_s);
        snprintf(what, sizeof what, "replay+decode %ld, cold cache", c->replay);
        bench__row_add("4b", what, "ev/s", ">= 500000", cold >= 5e5, "%.0f", cold);
        bench__row_add("", "  total", "s", NULL, 0, "%.3f", rr.cold_s);
        snprintf(what, sizeof what, "replay+decode %ld, warm cache", c->replay);
        bench__row_add("4c", what, "ev/s", ">= 500000", warm >= 5e5, "%.0f", warm);
        bench__row_add("", "  total", "s", NULL, 0, "%.3f", rr.warm_s);
        bench__row_add("4d", "evlog_verify (decode + SHA-256 chain)", "rec/s", NULL, 0, "%.0f", n / rr.verify_s);
        bench__row_add("", "  total", "s", NULL, 0, "%.3f", rr.verify_s);
        bench__row_add("4e", "  decode+free per record: malloc / arena*", "ns", NULL, 0, "%.0f / %.0f",
                       rr.proto.dec_malloc_ns, rr.proto.dec_arena_ns);
        bench__row_add("", "  warm replay with the arena (projected*)", "s", NULL, 0, "%.3f",
                       rr.warm_s - n * (rr.proto.dec_malloc_ns - rr.proto.dec_arena_ns) / 1e9);
        bench__row_add("4f", "  SHA-256 per record: SHA256() / fetched MD*", "ns", NULL, 0, "%.0f / %.0f",
                       rr.proto.sha_oneshot_ns, rr.proto.sha_fetched_ns);
        bench__row_add("", "  verify with arena + fetched MD (projected*)", "s", NULL, 0, "%.3f",
                       rr.verify_s - n * (rr.proto.dec_malloc_ns - rr.proto.dec_arena_ns +
                                          rr.proto.sha_oneshot_ns - rr.proto.sha_fetched_ns) / 1e9);
        bench__row_add("5a", "disk bytes per event (replay log)", "B", NULL, 0, "%.1f", rr.disk_per_ev);
        bench__row_add("5b", "average serialized record (replay log)", "B", NULL, 0, "%.1f", rr.avg_rec);
    }
    return INE_OK;
}

static void bench__usage(FILE *f)
{
    fprintf(f,
            "usage: bench_evlog [--dir D] [--events N] [--replay N] [--quick]\n"
            "  --dir D     parent of the temp dir (default /var/tmp, else .); put it on the data dir's file system\n"
            "  --events N  durable-append phases run N events each instead of ~3 s\n"
            "  --replay N  events in the replay log (default 1000000; 10000 with --quick)\n"
            "  --quick     tiny run (0.3 s phases, 10000 replay events): a smoke test\n");
}

int main(int argc, char **argv)
{
    bench__cfg c = {.dir = NULL, .replay = 0, .raw_s = 2.0, .append_s = 3.0};
    char *tmp = NULL;
    int rc;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            bench__usage(stdout);
            return 0;
        } else if (!strcmp(a, "--quick")) {
            c.quick = 1;
        } else if (!strcmp(a, "--dir") && v) {
            c.dir = v;
            i++;
        } else if ((!strcmp(a, "--events") || !strcmp(a, "--replay")) && v && atol(v) > 0) {
            *(a[2] == 'e' ? &c.events : &c.replay) = atol(v);
            i++;
        } else {
            fprintf(stderr, "bench_evlog: bad argument %s\n", a);
            bench__usage(stderr);
            return 2;
        }
    }
    if (c.quick) c.raw_s = c.append_s = 0.3;
    if (!c.replay) c.replay = c.quick ? 10000 : 1000000;
    if (!c.dir) c.dir = access("/var/tmp", W_OK) == 0 ? "/var/tmp" : ".";

    if (!(tmp = bench__strf("%s/ine-bench-XXXXXX", c.dir)) || !mkdtemp(tmp)) {
        fprintf(stderr, "bench_evlog: cannot create a temp dir in %s: %s\n", c.dir, strerror(errno));
        free(tmp);
        return 1;
    }
    printf("bench_evlog%s: event log (lib/evlog) on %s\n", c.quick ? " --quick" : "", tmp);
    bench__machine(tmp);
    fflush(stdout);
    rc = bench__run(&c, tmp);
    nftw(tmp, bench__rm, 16, FTW_DEPTH | FTW_PHYS);
    free(tmp);
    if (rc < 0) {
        fprintf(stderr, "bench_evlog: %s\n", ine_err_msg());
        return 1;
    }
    bench__table();
    return 0;
}
