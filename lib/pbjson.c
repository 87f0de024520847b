/* pbjson.c — reflective protobuf-c -> JSON rendering with sealed-field redaction. */
#include "pbjson.h"
#include "clock.h"

#include <stdio.h>
#include <string.h>

#define PBJSON__SUMMARY_STR_MAX 48

static int pbjson__is_sealed(const ProtobufCFieldDescriptor *f)
{
    return f->type == PROTOBUF_C_TYPE_BYTES && strncmp(f->name, "sealed_", 7) == 0;
}

/* Password material, even hashed, is nobody's business in an inspector's output: a hash
 * printed is a hash someone can try to crack offline. */
static int pbjson__is_redacted(const ProtobufCFieldDescriptor *f)
{
    return f->type == PROTOBUF_C_TYPE_STRING && strstr(f->name, "password") != NULL;
}

char *pbjson_sealed_text(size_t n, char *buf, size_t len)
{
    snprintf(buf, len, "<sealed, %zu bytes>", n);
    return buf;
}

static json_t *pbjson__hex(const uint8_t *d, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    char *s = malloc(n * 2 + 1);
    json_t *j;
    if (!s) return NULL;
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = hx[d[i] >> 4];
        s[2 * i + 1] = hx[d[i] & 15];
    }
    s[2 * n] = 0;
    j = json_string(s);
    free(s);
    return j;
}

static const char *pbjson__enum_name(const ProtobufCFieldDescriptor *f, int v)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
    return ev ? ev->name : NULL;
}

/* One value of field f stored at p (for repeated fields, p points at one element). */
static json_t *pbjson__value(const ProtobufCFieldDescriptor *f, const void *p)
{
    char buf[64];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
        return json_integer((json_int_t) * (const uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT: return json_real(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE: return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL: return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        const char *n = pbjson__enum_name(f, *(const int *)p);
        return n ? json_string(n) : json_integer(*(const int *)p);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        if (pbjson__is_redacted(f)) return json_string(s && *s ? "<redacted>" : "");
        return json_string(s ? s : "");
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        if (pbjson__is_sealed(f)) return json_string(pbjson_sealed_text(b->len, buf, sizeof buf));
        return pbjson__hex(b->data, b->len);
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        return m ? pbjson_from_message(m) : json_null();
    }
    }
    return json_null();
}

static size_t pbjson__elem_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    default: return 4;
    }
}

json_t *pbjson_from_message(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    json_t *o = json_object();
    if (!o) return NULL;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;
        json_t *v;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id) continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(char *const *)(base + f->offset);
            v = json_array();
            for (size_t k = 0; v && k < n; k++) json_array_append_new(v, pbjson__value(f, arr + k * pbjson__elem_size(f)));
        } else {
            v = pbjson__value(f, base + f->offset);
        }
        if (!v || json_object_set_new(o, f->name, v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

json_t *pbjson_event(const evlog_event *ev)
{
    char ts[40];
    json_t *o = json_object(), *body = NULL;
    if (!o) return NULL;
    if (ev->body_case != INE__V1__EVENT__BODY__NOT_SET) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(&ine__v1__event__descriptor, (unsigned)ev->body_case);
        if (f) body = pbjson__value(f, (const char *)ev + f->offset);
    }
    json_object_set_new(o, "seq", json_integer((json_int_t)ev->seq));
    json_object_set_new(o, "time", json_string(ine_clock_fmt(ev->time_us, ts, sizeof ts)));
    json_object_set_new(o, "time_us", json_integer(ev->time_us));
    json_object_set_new(o, "producer", json_string(ev->producer ? ev->producer : ""));
    json_object_set_new(o, "actor", json_string(ev->actor ? ev->actor : ""));
    json_object_set_new(o, "request_id", json_string(ev->request_id ? ev->request_id : ""));
    json_object_set_new(o, "prev_sha256", pbjson__hex(ev->prev_sha256.data, ev->prev_sha256.len));
    json_object_set_new(o, "type", json_string(evlog_type_name(ev)));
    json_object_set_new(o, "body", body ? body : json_null());
    return o;
}

/* Append "k=v" for one scalar; strings that look like PEM or are long are elided. */
static void pbjson__summ_one(const ProtobufCFieldDescriptor *f, const void *p, char *buf, size_t len, size_t *off)
{
    char val[96], tmp[64];
    switch (f->type) {
    case PROTOBUF_C_TYPE_MESSAGE:
        return;
    case PROTOBUF_C_TYPE_BYTES:
        if (!pbjson__is_sealed(f)) return;
        pbjson_sealed_text(((const ProtobufCBinaryData *)p)->len, val, sizeof val);
        break;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        size_t n = s ? strlen(s) : 0;
        if (!n) return;
        if (pbjson__is_redacted(f)) snprintf(val, sizeof val, "<redacted>");
        else if (n > PBJSON__SUMMARY_STR_MAX || strchr(s, '\n')) snprintf(val, sizeof val, "<%zu chars>", n);
        else snprintf(val, sizeof val, "%s", s);
        break;
    }
    default: {
        json_t *j = pbjson__value(f, p);
        if (json_is_string(j)) snprintf(val, sizeof val, "%s", json_string_value(j));
        else if (json_is_integer(j)) snprintf(val, sizeof val, "%lld", (long long)json_integer_value(j));
        else if (json_is_boolean(j)) snprintf(val, sizeof val, "%s", json_is_true(j) ? "true" : "false");
        else snprintf(val, sizeof val, "%s", "?");
        json_decref(j);
        (void)tmp;
    }
    }
    if (*off < len) *off += (size_t)snprintf(buf + *off, len - *off, "%s%s=%s", *off ? " " : "", f->name, val);
}

char *pbjson_summary(const evlog_event *ev, char *buf, size_t len)
{
    const ProtobufCFieldDescriptor *bf;
    const ProtobufCMessage *m;
    size_t off = 0;
    buf[0] = 0;
    if (ev->body_case == INE__V1__EVENT__BODY__NOT_SET) return buf;
    bf = protobuf_c_message_descriptor_get_field(&ine__v1__event__descriptor, (unsigned)ev->body_case);
    if (!bf || !(m = *(ProtobufCMessage *const *)((const char *)ev + bf->offset))) return buf;
    for (unsigned i = 0; i < m->descriptor->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &m->descriptor->fields[i];
        const char *base = (const char *)m;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF && *(const uint32_t *)(base + f->quantifier_offset) != f->id) continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(char *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++) pbjson__summ_one(f, arr + k * pbjson__elem_size(f), buf, len, &off);
            continue;
        }
        pbjson__summ_one(f, base + f->offset, buf, len, &off);
    }
    if (off >= len && len > 4) memcpy(buf + len - 4, "...", 4);
    return buf;
}
