/*
 * frame: builds the JSON text frames of the client protocol into shared,
 * reference-counted buffers (see frame.h). Strings from backends and tokens
 * are JSON-escaped here; payloads are embedded verbatim because they were
 * validated as JSON when the request arrived.
 */
#include "frame.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FRAME_HEADROOM LWS_PRE

/* Upper bound of a string's escaped length: \u00XX is 6 bytes per byte. */
static size_t escaped_max(size_t len)
{
	return len * 6 + 2;
}

static struct frame *frame_alloc(size_t cap)
{
	struct frame *f = malloc(sizeof(*f) + FRAME_HEADROOM + cap);
	if (!f)
		return NULL;
	f->refs = 1;
	f->seq = 0;
	f->len = 0;
	f->event_id = NULL;
	f->user_id = NULL;
	f->pending = 0;
	memset(f->payload_sha256, 0, sizeof(f->payload_sha256));
	f->payload = f->storage + FRAME_HEADROOM;
	return f;
}

void frame_unref(struct frame *f)
{
	if (f && --f->refs == 0)
		free(f);
}

static char *put_raw(char *p, const char *s, size_t len)
{
	memcpy(p, s, len);
	return p + len;
}

/* Writes s as a JSON string, quotes included. */
static char *put_string(char *p, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	*p++ = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		switch (c) {
		case '"':
			*p++ = '\\', *p++ = '"';
			break;
		case '\\':
			*p++ = '\\', *p++ = '\\';
			break;
		case '\n':
			*p++ = '\\', *p++ = 'n';
			break;
		case '\r':
			*p++ = '\\', *p++ = 'r';
			break;
		case '\t':
			*p++ = '\\', *p++ = 't';
			break;
		default:
			if (c < 0x20 || c == 0x7f) {
				p = put_raw(p, "\\u00", 4);
				*p++ = hex[c >> 4];
				*p++ = hex[c & 15];
			} else {
				*p++ = (char)c;
			}
		}
	}
	*p++ = '"';
	return p;
}

static char *put_u64(char *p, uint64_t v)
{
	return p + sprintf(p, "%llu", (unsigned long long)v);
}

#define PUT_LIT(p, lit) put_raw(p, lit, sizeof(lit) - 1)

struct frame *frame_build_event(const struct frame_event *ev)
{
	size_t tlen = strlen(ev->type);
	size_t payload_len = ev->payload_len ? ev->payload_len : 2;
	size_t cap = 128 + escaped_max(tlen) + escaped_max(ev->event_id_len) +
	             escaped_max(ev->user_id_len) +
	             escaped_max(ev->thread_id_len) +
	             escaped_max(ev->run_id_len) + payload_len +
	             ev->event_id_len + ev->user_id_len + 2;
	struct frame *f = frame_alloc(cap);
	if (!f)
		return NULL;
	char *start = (char *)f->payload, *p = start;
	p = PUT_LIT(p, "{\"type\":");
	p = put_string(p, ev->type, tlen);
	p = PUT_LIT(p, ",\"seq\":");
	p = put_u64(p, ev->seq);
	p = PUT_LIT(p, ",\"event_id\":");
	p = put_string(p, ev->event_id, ev->event_id_len);
	p = PUT_LIT(p, ",\"user_id\":");
	p = put_string(p, ev->user_id, ev->user_id_len);
	p = PUT_LIT(p, ",\"thread_id\":");
	p = put_string(p, ev->thread_id, ev->thread_id_len);
	p = PUT_LIT(p, ",\"run_id\":");
	p = put_string(p, ev->run_id, ev->run_id_len);
	p = PUT_LIT(p, ",\"ts\":");
	p = p + sprintf(p, "%lld", (long long)ev->ts_us);
	p = PUT_LIT(p, ",\"payload\":");
	if (ev->payload_len)
		p = put_raw(p, ev->payload, ev->payload_len);
	else
		p = PUT_LIT(p, "{}");
	*p++ = '}';
	f->len = (size_t)(p - start);
	f->seq = ev->seq;
	/* The ids, NUL-terminated, after the text: for audit rows. */
	char *ids = p;
	memcpy(ids, ev->event_id, ev->event_id_len);
	ids[ev->event_id_len] = '\0';
	f->event_id = ids;
	ids += ev->event_id_len + 1;
	memcpy(ids, ev->user_id, ev->user_id_len);
	ids[ev->user_id_len] = '\0';
	f->user_id = ids;
	return f;
}

struct frame *frame_build_connected(const char *conn_id, const char *user_id,
                                    uint64_t seq, const char *epoch)
{
	size_t clen = strlen(conn_id), ulen = strlen(user_id),
	       elen = strlen(epoch);
	struct frame *f = frame_alloc(80 + escaped_max(clen) +
	                              escaped_max(ulen) + escaped_max(elen));
	if (!f)
		return NULL;
	char *start = (char *)f->payload, *p = start;
	p = PUT_LIT(p, "{\"type\":\"connected\",\"conn_id\":");
	p = put_string(p, conn_id, clen);
	p = PUT_LIT(p, ",\"user_id\":");
	p = put_string(p, user_id, ulen);
	p = PUT_LIT(p, ",\"seq\":");
	p = put_u64(p, seq);
	p = PUT_LIT(p, ",\"epoch\":");
	p = put_string(p, epoch, elen);
	*p++ = '}';
	f->len = (size_t)(p - start);
	return f;
}

struct frame *frame_build_error(const char *code, const char *message)
{
	size_t clen = strlen(code), mlen = message ? strlen(message) : 0;
	struct frame *f =
	    frame_alloc(64 + escaped_max(clen) + escaped_max(mlen));
	if (!f)
		return NULL;
	char *start = (char *)f->payload, *p = start;
	p = PUT_LIT(p, "{\"type\":\"error\",\"code\":");
	p = put_string(p, code, clen);
	if (message) {
		p = PUT_LIT(p, ",\"message\":");
		p = put_string(p, message, mlen);
	}
	*p++ = '}';
	f->len = (size_t)(p - start);
	return f;
}

struct frame *frame_build_literal(const char *json)
{
	size_t len = strlen(json);
	struct frame *f = frame_alloc(len);
	if (!f)
		return NULL;
	memcpy(f->payload, json, len);
	f->len = len;
	return f;
}

int frame_queue_push(struct frame_queue *q, struct frame *f)
{
	if (q->len == q->cap) {
		/* Capacity stays a power of two so that indexes wrap by mask;
		 * growing unrolls the ring to the front of the new array. */
		uint32_t cap = q->cap ? q->cap * 2 : 8;
		struct frame **items = malloc(cap * sizeof(*items));
		if (!items)
			return -1;
		for (uint32_t i = 0; i < q->len; i++)
			items[i] = frame_queue_at(q, i);
		free(q->items);
		q->items = items;
		q->cap = cap;
		q->head = 0;
	}
	q->items[(q->head + q->len) & (q->cap - 1)] = frame_ref(f);
	q->len++;
	q->bytes += f->len;
	return 0;
}

void frame_queue_pop(struct frame_queue *q)
{
	struct frame *f = q->items[q->head];
	q->head = (q->head + 1) & (q->cap - 1);
	q->len--;
	q->bytes -= f->len;
	frame_unref(f);
}

uint32_t frame_queue_clear(struct frame_queue *q)
{
	uint32_t n = q->len;
	while (q->len)
		frame_queue_pop(q);
	free(q->items);
	q->items = NULL;
	q->cap = q->head = 0;
	return n;
}
