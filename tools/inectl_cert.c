/* inectl_cert.c — certificate commands, answered by ine-ca over its local socket:
 * `cluster certificate rotate [name]`, `cluster certificate set internal ...` (customer
 * certificates) and `status certificates`. Private keys are read from files only to be sent
 * to ine-ca; they are wiped from memory after, and never printed. */
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "err.h"
#include "inectl.h"
#include "proj.h"

#define INECTL_MAX_PEM (1u << 20)

static int plane_of(const char *name, Ine__V1__Plane *out)
{
    if (!strcmp(name, "ccs_internode_encryption")) *out = INE__V1__PLANE__PLANE_CONTROL;
    else if (!strcmp(name, "data_internode_encryption")) *out = INE__V1__PLANE__PLANE_DATA;
    else return -1;
    return 0;
}

int inectl_cert_rotate(int argc, char **argv)
{
    Ine__V1__CaRequest req = INE__V1__CA_REQUEST__INIT;
    Ine__V1__Rotate rot = INE__V1__ROTATE__INIT;
    Ine__V1__Plane plane;
    Ine__V1__Reply *r;
    int rc = 0;

    if (argc > 1) return inectl_fail("cluster certificate rotate takes at most one name"), 2;
    if (argc == 1 && strcmp(argv[0], "all")) {
        if (plane_of(argv[0], &plane))
            return inectl_fail("unknown certificate '%s': use all, ccs_internode_encryption or data_internode_encryption", argv[0]), 2;
        rot.n_planes = 1;
        rot.planes = &plane;
    }
    req.op_case = INE__V1__CA_REQUEST__OP_ROTATE;
    req.rotate = &rot;
    if (!(r = inectl_ca_call(&req))) return 1;
    if (r->code != INE__V1__ERROR_CODE__ERROR_CODE_OK) {
        rc = inectl_reply_fail("rotation refused", r);
    } else if (inectl_g.json) {
        printf("{\"rotation_id\": \"%s\", \"seq\": %llu}\n", r->description, (unsigned long long)r->seq);
    } else {
        printf("rotated %s certificates: rotation %s done (log seq %llu)\n",
               argc == 1 ? argv[0] : "all internal", r->description, (unsigned long long)r->seq);
        printf("new connections use the new certificates; existing ones keep going\n");
    }
    ine__v1__reply__free_unpacked(r, NULL);
    return rc;
}

/* Read a PEM file whole: NUL-terminated, at most 1 MiB. */
static char *read_pem(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    struct stat st;
    if (!f) {
        inectl_fail("cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > INECTL_MAX_PEM) {
        fclose(f);
        inectl_fail("%s is not a regular file of at most 1 MiB", path);
        return NULL;
    }
    buf = calloc(1, (size_t)st.st_size + 1);
    if (!buf || fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        free(buf);
        fclose(f);
        inectl_fail("cannot read %s", path);
        return NULL;
    }
    fclose(f);
    *len = (size_t)st.st_size;
    return buf;
}

int inectl_cert_set(int argc, char **argv)
{
    const char *files[4] = {0}; /* cp cert, cp key, dp cert, dp key */
    static const char *names[4] = {"cpine_certificate_file", "cpine_key_file", "dpine_certificate_file", "dpine_key_file"};
    char *pem[4] = {0};
    size_t len[4] = {0};
    Ine__V1__UploadCertificate uc[2] = {INE__V1__UPLOAD_CERTIFICATE__INIT, INE__V1__UPLOAD_CERTIFICATE__INIT};
    Ine__V1__UploadCertificate *ucs[2] = {&uc[0], &uc[1]};
    Ine__V1__Plane planes[2][2];
    Ine__V1__Upload up = INE__V1__UPLOAD__INIT;
    Ine__V1__CaRequest req = INE__V1__CA_REQUEST__INIT;
    Ine__V1__Reply *r = NULL;
    int rc = 1, shared;

    for (int i = 0; i < argc; i += 2) {
        int k;
        for (k = 0; k < 4 && strcmp(argv[i], names[k]); k++) {}
        if (k == 4) return inectl_fail("unknown keyword '%s': use cpine_certificate_file, cpine_key_file, dpine_certificate_file, dpine_key_file", argv[i]), 2;
        if (i + 1 >= argc) return inectl_fail("'%s' needs a file", argv[i]), 2;
        files[k] = argv[i + 1];
    }
    if (!files[0] != !files[1]) return inectl_fail("cpine_certificate_file and cpine_key_file go together"), 2;
    if (!files[2] != !files[3]) return inectl_fail("dpine_certificate_file and dpine_key_file go together"), 2;
    if (!files[0] && !files[2]) return inectl_fail("give the control-plane (cpine_*) or data-plane (dpine_*) files, or both"), 2;
    for (int k = 0; k < 4; k++)
        if (files[k] && !(pem[k] = read_pem(files[k], &len[k]))) goto out;
    /* The same certificate and key for both planes is one certificate serving both. */
    shared = files[0] && files[2] && len[0] == len[2] && len[1] == len[3] && !memcmp(pem[0], pem[2], len[0]) &&
             !memcmp(pem[1], pem[3], len[1]);
    for (int p = 0; p < 2; p++) {
        if (!files[2 * p] || (shared && p == 1)) continue;
        Ine__V1__UploadCertificate *u = &uc[up.n_certificates];
        u->cert_pem = pem[2 * p];
        u->key_pem.data = (uint8_t *)pem[2 * p + 1];
        u->key_pem.len = len[2 * p + 1];
        u->planes = planes[up.n_certificates];
        u->planes[u->n_planes++] = p == 0 ? INE__V1__PLANE__PLANE_CONTROL : INE__V1__PLANE__PLANE_DATA;
        if (shared) u->planes[u->n_planes++] = INE__V1__PLANE__PLANE_DATA;
        up.n_certificates++;
    }
    up.certificates = ucs;
    req.op_case = INE__V1__CA_REQUEST__OP_UPLOAD;
    req.upload = &up;
    if (!(r = inectl_ca_call(&req))) goto out;
    if (r->code != INE__V1__ERROR_CODE__ERROR_CODE_OK) {
        rc = inectl_reply_fail("certificate refused, nothing changed", r);
        goto out;
    }
    if (inectl_g.json) printf("{\"seq\": %llu}\n", (unsigned long long)r->seq);
    else
        printf("customer certificate set for the %s (log seq %llu); new connections use it\n",
               files[0] && files[2] ? "control and data planes" : files[0] ? "control plane" : "data plane",
               (unsigned long long)r->seq);
    rc = 0;
out:
    for (int k = 0; k < 4; k++) {
        if (pem[k]) OPENSSL_cleanse(pem[k], len[k]);
        free(pem[k]);
    }
    if (r) ine__v1__reply__free_unpacked(r, NULL);
    return rc;
}

static long days_left(int64_t not_after) { return (long)((not_after - ine_clock_now()) / INE_SEC_PER_DAY); }

static json_t *cert_json(const Ine__V1__CertInfo *c)
{
    char nb[40], na[40];
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s}", "serial", c->serial_hex, "fingerprint_sha256",
                     c->fingerprint_sha256, "subject", c->subject, "not_before",
                     ine_clock_fmt(c->not_before * INE_USEC_PER_SEC, nb, sizeof nb), "not_after",
                     ine_clock_fmt(c->not_after * INE_USEC_PER_SEC, na, sizeof na), "days_left",
                     (json_int_t)days_left(c->not_after), "root_fingerprint_sha256", c->root_fingerprint_sha256);
}

int inectl_status_certificates(int argc, char **argv)
{
    Ine__V1__CaRequest req = INE__V1__CA_REQUEST__INIT;
    Ine__V1__Status st = INE__V1__STATUS__INIT;
    Ine__V1__Reply *r;
    const Ine__V1__CaStatus *s;
    char ts[40];
    int rc = 0;

    (void)argv;
    if (argc) return inectl_fail("status certificates takes no arguments"), 2;
    req.op_case = INE__V1__CA_REQUEST__OP_STATUS;
    req.status = &st;
    if (!(r = inectl_ca_call(&req))) return 1;
    if (r->code != INE__V1__ERROR_CODE__ERROR_CODE_OK || r->result_case != INE__V1__REPLY__RESULT_CA_STATUS) {
        rc = inectl_reply_fail("status", r);
        goto out;
    }
    s = r->ca_status;
    if (inectl_g.json) {
        json_t *o = json_object(), *arr = json_array();
        json_object_set_new(o, "ca", s->ca ? cert_json(s->ca) : json_null());
        for (size_t i = 0; i < s->n_certificates; i++) {
            const Ine__V1__NodeCertStatus *c = s->certificates[i];
            json_t *j = cert_json(c->cert);
            json_object_set_new(j, "node", json_integer(c->node_uid));
            json_object_set_new(j, "plane", json_string(proj_plane_name(c->plane)));
            json_object_set_new(j, "source", json_string(proj_source_name(c->source)));
            json_object_set_new(j, "reason", json_string(proj_reason_name(c->reason)));
            json_object_set_new(j, "issued_seq", json_integer((json_int_t)c->issued_seq));
            json_array_append_new(arr, j);
        }
        json_object_set_new(o, "certificates", arr);
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        putchar('\n');
        json_decref(o);
        goto out;
    }
    if (s->ca)
        printf("CLUSTER CA  serial %s  expires %s (%ld days left)\n  fingerprint %s\n\n", s->ca->serial_hex,
               ine_clock_fmt(s->ca->not_after * INE_USEC_PER_SEC, ts, sizeof ts), days_left(s->ca->not_after),
               s->ca->fingerprint_sha256);
    else
        printf("CLUSTER CA  not created yet\n\n");
    printf("%-5s %-8s %-12s %-34s %-21s %9s  %s\n", "NODE", "PLANE", "SOURCE", "SERIAL", "EXPIRES", "DAYS LEFT", "REASON");
    for (size_t i = 0; i < s->n_certificates; i++) {
        const Ine__V1__NodeCertStatus *c = s->certificates[i];
        printf("%-5u %-8s %-12s %-34s %-21s %9ld  %s\n", c->node_uid, proj_plane_name(c->plane), proj_source_name(c->source),
               c->cert->serial_hex, ine_clock_fmt(c->cert->not_after * INE_USEC_PER_SEC, ts, sizeof ts),
               days_left(c->cert->not_after), proj_reason_name(c->reason));
    }
out:
    ine__v1__reply__free_unpacked(r, NULL);
    return rc;
}
