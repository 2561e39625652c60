/*
 * frame: ready-to-send WebSocket text frames, built once and shared.
 *
 * An event's JSON is built once, whatever the number of connections it goes
 * to; each connection's queue holds a reference. The buffer keeps LWS_PRE
 * bytes of headroom in front of the payload, as lws_write requires (lws
 * writes the frame header there; the header is the same for every
 * connection, so sharing the buffer across connections is safe).
 *
 * Threads: a frame is referenced and released on the service thread only
 * (its reference count is not atomic); the store's writer thread builds
 * replay frames and hands them over whole.
 */
#ifndef WSGATE_FRAME_H
#define WSGATE_FRAME_H

#include <stddef.h>
#include <stdint.h>

struct frame {
	uint32_t refs;
	uint64_t seq; /* event frames: the user's seq; 0 for protocol frames */
	size_t len;   /* payload bytes after the headroom */
	/* Event frames: the event's own ids, for the audit rows of each
	 * delivery (NULL for protocol frames); pending: the event was kept
	 * for a user with no connection and is still owed to one. */
	const char *event_id;
	const char *user_id;
	int pending;
	/* Event frames: SHA-256 of the payload, for the same rows (set from
	 * the event's commit, before the frame is sent anywhere). */
	unsigned char payload_sha256[32];
	unsigned char *payload; /* = storage + FRAME_HEADROOM */
	unsigned char storage[];
};

/* The fields of an event frame; strings need not be NUL-terminated. */
struct frame_event {
	const char *type;
	uint64_t seq;
	const char *event_id;
	size_t event_id_len;
	const char *user_id;
	size_t user_id_len;
	const char *thread_id;
	size_t thread_id_len;
	const char *run_id;
	size_t run_id_len;
	int64_t ts_us;
	const void *payload; /* validated JSON, embedded verbatim */
	size_t payload_len;  /* 0: {} */
};

/* NULL on allocation failure. The new frame holds one reference. */
struct frame *frame_build_event(const struct frame_event *ev);
/* {"type":"connected","conn_id":…,"user_id":…,"seq":N,"epoch":…} */
struct frame *frame_build_connected(const char *conn_id, const char *user_id,
                                    uint64_t seq, const char *epoch);
/* {"type":"error","code":CODE}, with ,"message":MESSAGE unless it is
 * NULL. */
struct frame *frame_build_error(const char *code, const char *message);
/* {"type":"pong"} and the like: a literal JSON text. */
struct frame *frame_build_literal(const char *json);

static inline struct frame *frame_ref(struct frame *f)
{
	f->refs++;
	return f;
}
void frame_unref(struct frame *f);

/*
 * frame_queue: a growable ring of frame references, in send order. It
 * holds one reference per entry and counts the payload bytes it holds.
 */
struct frame_queue {
	struct frame **items;
	uint32_t cap;
	uint32_t head;
	uint32_t len;
	size_t bytes;
};

/* Takes a new reference on f. -1 on allocation failure. */
int frame_queue_push(struct frame_queue *q, struct frame *f);
static inline struct frame *frame_queue_peek(const struct frame_queue *q)
{
	return q->len ? q->items[q->head] : NULL;
}
static inline struct frame *frame_queue_at(const struct frame_queue *q,
                                           uint32_t i)
{
	return q->items[(q->head + i) & (q->cap - 1)];
}
/* Drops the head entry and its reference. */
void frame_queue_pop(struct frame_queue *q);
/* Drops every entry; returns how many there were. Frees the ring. */
uint32_t frame_queue_clear(struct frame_queue *q);

#endif
