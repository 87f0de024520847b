/* pbjson.h — any protobuf-c message as JSON (jansson), by reflection over its descriptor, so
 * every event type the schema gains is rendered without code here. The one rule that matters:
 * a bytes field named sealed_* renders as "<sealed, N bytes>" and nothing else, so no output
 * built on this can carry key material; a string field whose name holds "password" renders
 * as "<redacted>". */
#ifndef INE_PBJSON_H
#define INE_PBJSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "evlog.h"

/* Fields in field-number order; every non-oneof field, set oneof members only. Enums by
 * name, 64-bit integers as JSON integers, other bytes as lowercase hex. NULL on ENOMEM. */
json_t *pbjson_from_message(const ProtobufCMessage *m);

/* The export form of an event: seq, time (RFC 3339), time_us, producer, actor, request_id,
 * prev_sha256, type, body. */
json_t *pbjson_event(const evlog_event *ev);

/* One line of "k=v" pairs from the body's scalar fields (sealed fields as <sealed, N bytes>,
 * long strings such as PEM elided), for `ine-log list`. Writes into buf; returns buf. */
char *pbjson_summary(const evlog_event *ev, char *buf, size_t len);

/* "<sealed, N bytes>" */
char *pbjson_sealed_text(size_t n, char *buf, size_t len);

#endif
