/*
 * validate: owns the request limits of DESIGN.md ("Limits on requests",
 * reserved type names, payload) and the byte-level checks behind them:
 * strict printable UTF-8 and "exactly one JSON value".
 *
 * No state: every function reads only its arguments, so any thread may
 * call them. Error messages name the field and never
 * echo the offending bytes, so they are always valid UTF-8 for Reply.error.
 */
#include "validate.h"

#include <assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#define VALIDATE_MAX_CONN_ID 64
#define VALIDATE_MAX_REASON  128

/* The frame type names of the standard events, indexed by EventType. */
static const char *const validate_standard_names[] = {
    [WSGATE__V1__EVENT_TYPE__AGENT_STARTED] = "agent_started",
    [WSGATE__V1__EVENT_TYPE__AGENT_THINKING] = "agent_thinking",
    [WSGATE__V1__EVENT_TYPE__TOOL_EXECUTING] = "tool_executing",
    [WSGATE__V1__EVENT_TYPE__TOOL_COMPLETED] = "tool_completed",
    [WSGATE__V1__EVENT_TYPE__AGENT_COMPLETED] = "agent_completed",
    [WSGATE__V1__EVENT_TYPE__AGENT_ERROR] = "agent_error",
};

/* Frame types the sidecar itself sends or consumes: a custom event named
 * like one of them would be indistinguishable from it on the wire. */
static const char *const validate_reserved_names[] = {
    "connected",      "pong",
    "error",          "resume_failed",
    "ping",           "ack",
    "auth",           "refresh",
    "refreshed",      "agent_started",
    "agent_thinking", "tool_executing",
    "tool_completed", "agent_completed",
    "agent_error",
};

bool validate_printable_utf8(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		unsigned char c = p[i];
		uint32_t cp;
		size_t n;

		if (c < 0x80) {
			/* C0 controls (NUL included) and DEL. */
			if (c < 0x20 || c == 0x7f)
				return false;
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			/* Continuation byte as a lead, 0xc0/0xc1 (always
			 * overlong) or 0xf5.. (beyond U+10FFFF). */
			return false;
		}
		if (len - i - 1 < n)
			return false; /* truncated */
		for (size_t k = 1; k <= n; k++) {
			unsigned char cc = p[i + k];

			if ((cc & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (cc & 0x3f);
		}
		/* Shortest form only; no surrogates; Unicode's upper bound. */
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000))
			return false;
		if (cp >= 0xd800 && cp <= 0xdfff)
			return false;
		if (cp > 0x10ffff)
			return false;
		/* C1 controls. */
		if (cp >= 0x80 && cp <= 0x9f)
			return false;
		i += n + 1;
	}
	return true;
}

bool validate_json(const void *buf, size_t len)
{
	json_error_t jerr;
	json_t *v;

	/* json_loadb refuses trailing data (no JSON_DISABLE_EOF_CHECK),
	 * invalid UTF-8 and bytes after a NUL, so success means exactly one
	 * value. INT_AS_REAL only stops it from refusing valid integers wider
	 * than json_int_t; the value is discarded anyway. ALLOW_NUL accepts
	 * the escape "\u0000", which is valid JSON: the payload is relayed
	 * verbatim and never held as a C string. */
	v = json_loadb(
	    buf, len,
	    JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &jerr);
	if (v == NULL)
		return false;
	json_decref(v);
	return true;
}

/* s may be NULL when a message was built by hand rather than unpacked. */
static bool validate_text(const char *s, size_t min, size_t max)
{
	size_t len = s != NULL ? strlen(s) : 0;

	if (len < min || len > max)
		return false;
	return validate_printable_utf8(s, len);
}

static bool validate_is_empty(const char *s)
{
	return s == NULL || s[0] == '\0';
}

/* 1-64 bytes of [a-z0-9_.-]. */
static bool validate_custom_charset(const char *s)
{
	size_t len = s != NULL ? strlen(s) : 0;

	if (len < 1 || len > VALIDATE_MAX_CUSTOM)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

static bool validate_is_reserved(const char *s)
{
	size_t n = sizeof(validate_reserved_names) /
	           sizeof(validate_reserved_names[0]);

	for (size_t i = 0; i < n; i++)
		if (strcmp(s, validate_reserved_names[i]) == 0)
			return true;
	return false;
}

static int validate_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int validate_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

int validate_event(const Wsgate__V1__Event *ev, size_t max_payload, char *err,
                   size_t errlen)
{
	int type;

	if (ev == NULL)
		return validate_fail(err, errlen, "event: required");
	if (!validate_text(ev->event_id, 1, VALIDATE_MAX_EVENT_ID))
		return validate_fail(err, errlen,
		                     "event.event_id: required, 1-%d bytes of "
		                     "printable UTF-8",
		                     VALIDATE_MAX_EVENT_ID);
	if (!validate_text(ev->user_id, 1, VALIDATE_MAX_ID))
		return validate_fail(err, errlen,
		                     "event.user_id: required, 1-%d bytes of "
		                     "printable UTF-8",
		                     VALIDATE_MAX_ID);
	if (!validate_text(ev->thread_id, 0, VALIDATE_MAX_ID))
		return validate_fail(err, errlen,
		                     "event.thread_id: at most %d bytes of "
		                     "printable UTF-8",
		                     VALIDATE_MAX_ID);
	if (!validate_text(ev->run_id, 0, VALIDATE_MAX_ID))
		return validate_fail(err, errlen,
		                     "event.run_id: at most %d bytes of "
		                     "printable UTF-8",
		                     VALIDATE_MAX_ID);

	/* protobuf-c keeps enum numbers it does not know, so range-check. */
	type = (int)ev->type;
	if (type == WSGATE__V1__EVENT_TYPE__EVENT_TYPE_UNSPECIFIED)
		return validate_fail(err, errlen,
		                     "event.type: required, "
		                     "EVENT_TYPE_UNSPECIFIED is invalid");
	if (type < WSGATE__V1__EVENT_TYPE__AGENT_STARTED ||
	    type > WSGATE__V1__EVENT_TYPE__CUSTOM)
		return validate_fail(err, errlen,
		                     "event.type: unknown value %d", type);

	if (type == WSGATE__V1__EVENT_TYPE__CUSTOM) {
		if (!validate_custom_charset(ev->custom_type))
			return validate_fail(
			    err, errlen,
			    "event.custom_type: required when type is "
			    "CUSTOM, 1-%d bytes of [a-z0-9_.-]",
			    VALIDATE_MAX_CUSTOM);
		if (validate_is_reserved(ev->custom_type))
			return validate_fail(
			    err, errlen, "event.custom_type: reserved name");
	} else if (!validate_is_empty(ev->custom_type)) {
		/* Refused rather than ignored: a backend setting it surely
		 * meant CUSTOM and would otherwise get the wrong frame type. */
		return validate_fail(
		    err, errlen,
		    "event.custom_type: only allowed when type "
		    "is CUSTOM");
	}

	if (ev->payload_json.len > max_payload)
		return validate_fail(err, errlen,
		                     "event.payload_json: larger than max "
		                     "payload (%zu bytes)",
		                     max_payload);
	/* Empty means {} (DESIGN.md, "Payload"). */
	if (ev->payload_json.len > 0 &&
	    !validate_json(ev->payload_json.data, ev->payload_json.len))
		return validate_fail(err, errlen,
		                     "event.payload_json: not valid JSON");
	return 0;
}

static int validate_disconnect(const Wsgate__V1__Disconnect *d, char *err,
                               size_t errlen)
{
	if (d == NULL ||
	    (validate_is_empty(d->user_id) && validate_is_empty(d->conn_id)))
		return validate_fail(err, errlen,
		                     "disconnect: user_id or conn_id required");
	if (!validate_is_empty(d->user_id) &&
	    !validate_text(d->user_id, 1, VALIDATE_MAX_ID))
		return validate_fail(err, errlen,
		                     "disconnect.user_id: 1-%d bytes of "
		                     "printable UTF-8",
		                     VALIDATE_MAX_ID);
	if (!validate_is_empty(d->conn_id) &&
	    !validate_text(d->conn_id, 1, VALIDATE_MAX_CONN_ID))
		return validate_fail(err, errlen,
		                     "disconnect.conn_id: 1-%d bytes of "
		                     "printable UTF-8",
		                     VALIDATE_MAX_CONN_ID);
	if (!validate_text(d->reason, 0, VALIDATE_MAX_REASON))
		return validate_fail(err, errlen,
		                     "disconnect.reason: at most %d bytes of "
		                     "printable UTF-8",
		                     VALIDATE_MAX_REASON);
	return 0;
}

/* Nesting of the wire walk; the schema needs 3 (Request.send_batch.events). */
#define VALIDATE_WIRE_MAX_DEPTH 8

/* Reads a varint at p[*i], at most 10 bytes; -1 when malformed. */
static int wire_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
	*v = 0;
	for (unsigned shift = 0; shift < 70 && *i < len; shift += 7) {
		uint8_t b = p[(*i)++];
		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return 0;
	}
	return -1;
}

/*
 * protobuf-c hands strings over as C strings, so a user_id of "u1\0x"
 * would read as "u1": an event meant for nobody valid would reach user u1.
 * This walks the wire bytes of a message (desc) that protobuf-c decoded and
 * finds the first string field holding a NUL byte. Returns 1 and its path
 * ("send_batch.events[3].user_id") in path, 0 when there is none, -1 when
 * the bytes cannot be walked (refused too: protobuf-c accepted something
 * this reader does not understand).
 */
static int wire_find_nul(const uint8_t *p, size_t len,
                         const ProtobufCMessageDescriptor *desc, int depth,
                         char *path, size_t pathlen)
{
	unsigned seen[32] = {0}; /* occurrences per field, for [index] */
	size_t i = 0;

	if (depth > VALIDATE_WIRE_MAX_DEPTH)
		return -1;
	while (i < len) {
		uint64_t tag, flen;
		if (wire_varint(p, len, &i, &tag))
			return -1;
		switch (tag & 7) {
		case 0:
			if (wire_varint(p, len, &i, &flen))
				return -1;
			continue;
		case 1:
			if (len - i < 8)
				return -1;
			i += 8;
			continue;
		case 5:
			if (len - i < 4)
				return -1;
			i += 4;
			continue;
		case 2:
			break;
		default:
			return -1; /* groups and reserved wire types */
		}
		if (wire_varint(p, len, &i, &flen) || flen > len - i)
			return -1;
		const uint8_t *v = p + i;
		i += (size_t)flen;
		const ProtobufCFieldDescriptor *f =
		    tag >> 3 <= UINT32_MAX
		        ? protobuf_c_message_descriptor_get_field(
		              desc, (unsigned)(tag >> 3))
		        : NULL;
		if (!f)
			continue; /* unknown field: protobuf-c skipped it */
		size_t k = (size_t)(f - desc->fields);
		unsigned index = k < 32 ? seen[k]++ : 0;
		size_t used = strlen(path);
		if (f->label == PROTOBUF_C_LABEL_REPEATED)
			snprintf(path + used, pathlen - used, "%s%s[%u]",
			         used ? "." : "", f->name, index);
		else
			snprintf(path + used, pathlen - used, "%s%s",
			         used ? "." : "", f->name);
		if (f->type == PROTOBUF_C_TYPE_STRING &&
		    memchr(v, 0, (size_t)flen))
			return 1;
		if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
			int rv = wire_find_nul(v, (size_t)flen, f->descriptor,
			                       depth + 1, path, pathlen);
			if (rv)
				return rv;
		}
		path[used] = '\0';
	}
	return 0;
}

int validate_request_wire(const uint8_t *p, size_t len, char *path,
                          size_t pathlen)
{
	if (pathlen == 0)
		return -1;
	path[0] = '\0';
	return wire_find_nul(p, len, &wsgate__v1__request__descriptor, 0, path,
	                     pathlen);
}

int validate_request(const Wsgate__V1__Request *req, char *err, size_t errlen)
{
	if (req == NULL)
		return validate_fail(err, errlen, "request: required");

	switch (req->body_case) {
	case WSGATE__V1__REQUEST__BODY__NOT_SET:
		return validate_fail(err, errlen, "request.body: required");
	case WSGATE__V1__REQUEST__BODY_SEND_EVENT:
		if (req->send_event == NULL || req->send_event->event == NULL)
			return validate_fail(err, errlen,
			                     "send_event.event: required");
		return 0;
	case WSGATE__V1__REQUEST__BODY_SEND_BATCH:
		if (req->send_batch == NULL || req->send_batch->n_events == 0)
			return validate_fail(err, errlen,
			                     "send_batch.events: at least 1 "
			                     "event");
		if (req->send_batch->n_events > VALIDATE_MAX_BATCH)
			return validate_fail(err, errlen,
			                     "send_batch.events: at most %d "
			                     "events",
			                     VALIDATE_MAX_BATCH);
		return 0;
	case WSGATE__V1__REQUEST__BODY_DISCONNECT:
		return validate_disconnect(req->disconnect, err, errlen);
	case WSGATE__V1__REQUEST__BODY_LIST_CONNECTIONS:
		/* Empty (or absent) lists every connection. */
		if (req->list_connections != NULL &&
		    !validate_is_empty(req->list_connections->user_id) &&
		    !validate_text(req->list_connections->user_id, 1,
		                   VALIDATE_MAX_ID))
			return validate_fail(err, errlen,
			                     "list_connections.user_id: 1-%d "
			                     "bytes of printable UTF-8",
			                     VALIDATE_MAX_ID);
		return 0;
	case WSGATE__V1__REQUEST__BODY_GET_STATS:
	case WSGATE__V1__REQUEST__BODY_PING:
		return 0;
	default:
		return validate_fail(err, errlen, "request.body: unknown");
	}
}

const char *validate_event_type_name(const Wsgate__V1__Event *ev)
{
	int type = (int)ev->type;

	if (type == WSGATE__V1__EVENT_TYPE__CUSTOM)
		return ev->custom_type;
	assert(type >= WSGATE__V1__EVENT_TYPE__AGENT_STARTED &&
	       type <= WSGATE__V1__EVENT_TYPE__AGENT_ERROR);
	if (type < WSGATE__V1__EVENT_TYPE__AGENT_STARTED ||
	    type > WSGATE__V1__EVENT_TYPE__AGENT_ERROR)
		return NULL;
	return validate_standard_names[type];
}
