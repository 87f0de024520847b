/* skew.c — the files that carry clock offsets from the transports to ine-alerting (skew.h). */
#include "skew.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"

int skew_write(const char *run_dir, uint32_t observer, const skew_entry *e, size_t n)
{
    char path[4096], tmp[4128];
    FILE *f;
    int fd, ok = 1;
    if ((size_t)snprintf(path, sizeof path, "%s/clock-%u.txt", run_dir, observer) >= sizeof path)
        return ine_err(INE_EINVAL, "run dir path too long");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0 || !(f = fdopen(fd, "w"))) {
        if (fd >= 0) close(fd);
        return ine_err(INE_EIO, "cannot write %s: %s", tmp, strerror(errno));
    }
    for (size_t i = 0; i < n && ok; i++)
        ok = fprintf(f, "%u %u %" PRId64 " %" PRId64 "\n", e[i].observer, e[i].node, e[i].offset_ms, e[i].at) > 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return ine_err(INE_EIO, "cannot write %s: %s", path, strerror(errno));
    }
    return INE_OK;
}

int skew_read(const char *run_dir, int64_t not_before, skew_entry **out, size_t *n)
{
    DIR *d = opendir(run_dir);
    struct dirent *de;
    skew_entry *v = NULL;
    size_t cnt = 0, cap = 0;
    *out = NULL;
    *n = 0;
    if (!d) return errno == ENOENT ? INE_OK : ine_err(INE_EIO, "cannot read %s: %s", run_dir, strerror(errno));
    while ((de = readdir(d))) {
        char path[4096], line[128];
        size_t len = strlen(de->d_name);
        FILE *f;
        if (strncmp(de->d_name, "clock-", 6) || len < 11 || strcmp(de->d_name + len - 4, ".txt")) continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", run_dir, de->d_name) >= sizeof path || !(f = fopen(path, "r"))) continue;
        while (fgets(line, sizeof line, f)) {
            skew_entry e;
            if (sscanf(line, "%" SCNu32 " %" SCNu32 " %" SCNd64 " %" SCNd64, &e.observer, &e.node, &e.offset_ms, &e.at) != 4) continue;
            if (e.at < not_before || !e.observer || !e.node) continue;
            if (cnt == cap) {
                skew_entry *g = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof *v);
                if (!g) {
                    fclose(f);
                    closedir(d);
                    free(v);
                    return ine_err(INE_ENOMEM, "out of memory");
                }
                v = g;
            }
            v[cnt++] = e;
        }
        fclose(f);
    }
    closedir(d);
    *out = v;
    *n = cnt;
    return INE_OK;
}
