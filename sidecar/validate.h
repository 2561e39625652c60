/*
 * validate: the limits of DESIGN.md applied to decoded control requests, and
 * the checks of outside bytes they rely on (printable UTF-8, JSON).
 *
 * Every function is pure and thread-safe: the control module calls them as
 * it reads a request, before the request is queued for dispatch. On failure
 * they return -1 and write a message naming the field (e.g. "event.user_id:
 * must be 1-256 bytes of printable UTF-8").
 */
#ifndef WSGATE_VALIDATE_H
#define WSGATE_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsgate.pb-c.h"

#define VALIDATE_MAX_ID       256 /* user_id, thread_id, run_id */
#define VALIDATE_MAX_EVENT_ID 128
#define VALIDATE_MAX_CUSTOM   64
#define VALIDATE_MAX_BATCH    1000

/* len bytes of valid UTF-8 without control characters (C0, DEL, C1). */
bool validate_printable_utf8(const char *s, size_t len);
/* One JSON value (object, array, string, number, true, false, null), with
 * only whitespace around it, in valid UTF-8. */
bool validate_json(const void *buf, size_t len);

/* One event: ids, type (not UNSPECIFIED, known), custom_type rules and
 * reserved names, payload size (<= max_payload) and JSON. */
int validate_event(const Wsgate__V1__Event *ev, size_t max_payload, char *err,
                   size_t errlen);
/* The parts of a request that are not per-event: a body is present, a
 * SendEvent has an event, a batch has 1..1000 events, a Disconnect names a
 * user or a connection, ids within limits. Events of a batch are checked
 * one by one with validate_event, so that valid ones are still accepted. */
int validate_request(const Wsgate__V1__Request *req, char *err, size_t errlen);
/* protobuf-c hands strings over as C strings, so a user_id "u1\0x" would
 * read as "u1". This walks the wire bytes p[len] of a Request that
 * protobuf-c decoded: 1 with the path of the first string field holding a
 * NUL byte in path ("send_batch.events[3].user_id"), 0 when there is none,
 * -1 when the bytes cannot be walked (refuse those too). */
int validate_request_wire(const uint8_t *p, size_t len, char *path,
                          size_t pathlen);

/* The frame type name of an event: "agent_started" ... or its custom_type.
 * Only for events that passed validate_event. */
const char *validate_event_type_name(const Wsgate__V1__Event *ev);

#endif
