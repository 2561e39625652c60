/*
 * Tests of validate: each limit of DESIGN.md from both sides of its boundary,
 * strict printable UTF-8, "exactly one JSON value", reserved type names, and
 * error messages that name the field.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "validate.h"

#define MAX_PAYLOAD 64

/* Strings of a given length, for boundaries; sized for the largest limit. */
struct text {
	char s[VALIDATE_MAX_ID + 2];
};

static struct text text_of(size_t n, char c)
{
	struct text t;

	assert_true(n < sizeof(t.s));
	memset(t.s, c, n);
	t.s[n] = '\0';
	return t;
}

/* A valid AGENT_STARTED event; tests break one field at a time. */
static Wsgate__V1__Event event_valid(void)
{
	Wsgate__V1__Event ev = WSGATE__V1__EVENT__INIT;

	ev.event_id = "e-1";
	ev.user_id = "u1";
	ev.thread_id = "t1";
	ev.run_id = "r1";
	ev.type = WSGATE__V1__EVENT_TYPE__AGENT_STARTED;
	return ev;
}

static Wsgate__V1__Event event_custom(char *name)
{
	Wsgate__V1__Event ev = event_valid();

	ev.type = WSGATE__V1__EVENT_TYPE__CUSTOM;
	ev.custom_type = name;
	return ev;
}

static void event_set_payload(Wsgate__V1__Event *ev, const char *json,
                              size_t len)
{
	ev->payload_json.data = (uint8_t *)json;
	ev->payload_json.len = len;
}

/* Macros rather than functions so that a failure names the test's line. */
#define assert_utf8_ok(lit)                                                    \
	assert_true(validate_printable_utf8(lit, sizeof(lit) - 1))
#define assert_utf8_refused(lit)                                               \
	assert_false(validate_printable_utf8(lit, sizeof(lit) - 1))
#define assert_json_ok(lit) assert_true(validate_json(lit, sizeof(lit) - 1))
#define assert_json_refused(lit)                                               \
	assert_false(validate_json(lit, sizeof(lit) - 1))

#define assert_event_ok(ev)                                                    \
	do {                                                                   \
		char err_[256] = "";                                           \
		int rc_ = validate_event(ev, MAX_PAYLOAD, err_, sizeof err_);  \
		if (rc_ != 0)                                                  \
			fail_msg("refused: %s", err_);                         \
	} while (0)

#define assert_event_refused(ev, field)                                        \
	do {                                                                   \
		char err_[256] = "";                                           \
		assert_int_equal(                                              \
		    validate_event(ev, MAX_PAYLOAD, err_, sizeof err_), -1);   \
		assert_non_null(strstr(err_, field));                          \
	} while (0)

#define assert_request_ok(req)                                                 \
	do {                                                                   \
		char err_[256] = "";                                           \
		int rc_ = validate_request(req, err_, sizeof err_);            \
		if (rc_ != 0)                                                  \
			fail_msg("refused: %s", err_);                         \
	} while (0)

#define assert_request_refused(req, field)                                     \
	do {                                                                   \
		char err_[256] = "";                                           \
		assert_int_equal(validate_request(req, err_, sizeof err_),     \
		                 -1);                                          \
		assert_non_null(strstr(err_, field));                          \
	} while (0)

/* ---- printable UTF-8 ---- */

static void test_ascii_is_printable(void **state)
{
	(void)state;
	assert_utf8_ok("user-42 with spaces ~!");
	assert_utf8_ok("");
}

static void test_multibyte_utf8_is_accepted(void **state)
{
	(void)state;
	assert_utf8_ok("caf\xc3\xa9");              /* U+00E9, 2 bytes */
	assert_utf8_ok("\xc2\xa0");                 /* U+00A0, first after C1 */
	assert_utf8_ok("\xe2\x82\xac");             /* U+20AC, 3 bytes */
	assert_utf8_ok("\xef\xbf\xbd");             /* U+FFFD */
	assert_utf8_ok("\xf0\x9f\x98\x80");         /* U+1F600, 4 bytes */
	assert_utf8_ok("\xf4\x8f\xbf\xbf");         /* U+10FFFF, the last */
	assert_utf8_ok("\xe4\xb8\xad\xe6\x96\x87"); /* two CJK */
}

static void test_overlong_utf8_is_refused(void **state)
{
	(void)state;
	assert_utf8_refused("\xc0\xaf"); /* '/' in 2 bytes */
	assert_utf8_refused("\xc1\xbf");
	assert_utf8_refused("\xe0\x80\xaf");     /* '/' in 3 bytes */
	assert_utf8_refused("\xe0\x9f\xbf");     /* U+07FF in 3 bytes */
	assert_utf8_refused("\xf0\x80\x80\xaf"); /* '/' in 4 bytes */
	assert_utf8_refused("\xf0\x8f\xbf\xbf"); /* U+FFFF in 4 bytes */
}

static void test_surrogate_code_points_are_refused(void **state)
{
	(void)state;
	assert_utf8_refused("\xed\xa0\x80");             /* U+D800 */
	assert_utf8_refused("\xed\xbf\xbf");             /* U+DFFF */
	assert_utf8_refused("\xed\xa0\xbd\xed\xb8\x80"); /* CESU-8 pair */
	assert_utf8_ok("\xed\x9f\xbf");                  /* U+D7FF is fine */
}

static void test_code_points_above_10ffff_are_refused(void **state)
{
	(void)state;
	assert_utf8_refused("\xf4\x90\x80\x80"); /* U+110000 */
	assert_utf8_refused("\xf5\x80\x80\x80");
	assert_utf8_refused("\xff");
}

static void test_truncated_utf8_is_refused(void **state)
{
	(void)state;
	assert_utf8_refused("\xc3");
	assert_utf8_refused("ab\xe2\x82");
	assert_utf8_refused("\xf0\x9f\x98");
	assert_utf8_refused("\xe2\x82x"); /* continuation replaced */
	assert_utf8_refused("\x80");      /* lone continuation */
	/* The length bounds the read: a sequence cut by len is truncated
	 * even when the bytes after it would complete it. */
	assert_false(validate_printable_utf8("\xe2\x82\xac", 2));
}

static void test_control_characters_are_refused(void **state)
{
	(void)state;
	assert_utf8_refused("a\tb");
	assert_utf8_refused("a\nb");
	assert_utf8_refused("\x1f");
	assert_false(validate_printable_utf8("a\0b", 3)); /* NUL */
}

static void test_del_is_refused(void **state)
{
	(void)state;
	assert_utf8_refused("a\x7f");
}

static void test_c1_controls_are_refused(void **state)
{
	(void)state;
	assert_utf8_refused("\xc2\x80"); /* U+0080 */
	assert_utf8_refused("\xc2\x85"); /* NEL */
	assert_utf8_refused("\xc2\x9f"); /* U+009F */
}

/* ---- JSON ---- */

static void test_json_objects_and_arrays_are_accepted(void **state)
{
	(void)state;
	assert_json_ok("{}");
	assert_json_ok("[]");
	assert_json_ok("{\"a\":[1,2,{\"b\":null}],\"c\":\"\xc3\xa9\"}");
	assert_json_ok("[true,false,null,-1.5e3,\"x\"]");
}

static void test_json_scalars_are_accepted(void **state)
{
	(void)state;
	assert_json_ok("\"text\"");
	assert_json_ok("42");
	assert_json_ok("-0.5");
	assert_json_ok("true");
	assert_json_ok("false");
	assert_json_ok("null");
	/* Wider than any C integer: still one JSON number. */
	assert_json_ok("123456789012345678901234567890");
}

static void test_json_with_surrounding_whitespace_is_accepted(void **state)
{
	(void)state;
	assert_json_ok(" \t\r\n{\"a\":1} \n");
	assert_json_ok("  7  ");
}

static void test_json_with_trailing_garbage_is_refused(void **state)
{
	(void)state;
	assert_json_refused("{} x");
	assert_json_refused("{}}");
	assert_json_refused("[1],");
	assert_json_refused("nullx");
}

static void test_two_json_values_are_refused(void **state)
{
	(void)state;
	assert_json_refused("1 2");
	assert_json_refused("{}{}");
	assert_json_refused("\"a\" \"b\"");
}

static void test_json_escaped_nul_in_string_is_accepted(void **state)
{
	(void)state;
	const char json[] = "{\"a\":\"x\\u0000y\"}";
	assert_true(validate_json(json, sizeof(json) - 1));
}

static void test_json_nul_byte_after_value_is_refused(void **state)
{
	(void)state;
	assert_json_refused("{}\0");
	assert_json_refused("1\0garbage");
}

static void test_json_with_invalid_utf8_in_string_is_refused(void **state)
{
	(void)state;
	assert_json_refused("\"\xff\"");
	assert_json_refused("\"\xc0\xaf\"");         /* overlong */
	assert_json_refused("\"\xed\xa0\x80\"");     /* surrogate */
	assert_json_refused("{\"k\":\"\xe2\x82\"}"); /* truncated */
}

static void test_empty_or_whitespace_only_json_is_refused(void **state)
{
	(void)state;
	assert_json_refused("");
	assert_json_refused("   ");
	assert_json_refused(" \n\t ");
}

static void test_malformed_json_is_refused(void **state)
{
	(void)state;
	assert_json_refused("{");
	assert_json_refused("{'a':1}");
	assert_json_refused("[1,]");
	assert_json_refused("01");
	assert_json_refused("NaN");
	assert_json_refused("\"a\tb\""); /* raw control in a string */
}

/* ---- event: ids ---- */

static void test_valid_event_is_accepted(void **state)
{
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	assert_event_ok(&ev);
}

static void test_user_id_of_256_bytes_is_accepted(void **state)
{
	Wsgate__V1__Event ev = event_valid();
	struct text t = text_of(256, 'u');

	(void)state;
	ev.user_id = t.s;
	assert_event_ok(&ev);
}

static void test_user_id_of_257_bytes_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_valid();
	struct text t = text_of(257, 'u');

	(void)state;
	ev.user_id = t.s;
	assert_event_refused(&ev, "event.user_id");
}

static void test_empty_user_id_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_valid();
	char err[256];

	(void)state;
	ev.user_id = "";
	assert_int_equal(validate_event(&ev, MAX_PAYLOAD, err, sizeof err), -1);
	assert_string_equal(
	    err, "event.user_id: required, 1-256 bytes of printable UTF-8");
}

static void test_user_id_with_control_or_bad_utf8_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	ev.user_id = "u\n1";
	assert_event_refused(&ev, "event.user_id");
	ev.user_id = "u\xc0\xaf";
	assert_event_refused(&ev, "event.user_id");
	ev.user_id = "\xc2\x85";
	assert_event_refused(&ev, "event.user_id");
}

static void test_multibyte_user_id_is_accepted(void **state)
{
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	ev.user_id = "J\xc3\xbcrgen \xf0\x9f\x98\x80";
	assert_event_ok(&ev);
}

static void test_user_id_limit_counts_bytes_not_characters(void **state)
{
	Wsgate__V1__Event ev = event_valid();
	char id[2 * 129 + 1];

	(void)state;
	/* 129 two-byte characters: 258 bytes. */
	for (int i = 0; i < 129; i++)
		memcpy(id + 2 * i, "\xc3\xa9", 2);
	id[258] = '\0';
	ev.user_id = id;
	assert_event_refused(&ev, "event.user_id");
	id[256] = '\0'; /* 128 characters, 256 bytes */
	assert_event_ok(&ev);
}

static void test_empty_thread_and_run_ids_are_accepted(void **state)
{
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	ev.thread_id = "";
	ev.run_id = "";
	assert_event_ok(&ev);
}

static void test_thread_id_of_256_bytes_is_accepted(void **state)
{
	Wsgate__V1__Event ev = event_valid();
	struct text t = text_of(256, 't');

	(void)state;
	ev.thread_id = t.s;
	assert_event_ok(&ev);
}

static void test_thread_id_of_257_bytes_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_valid();
	struct text t = text_of(257, 't');

	(void)state;
	ev.thread_id = t.s;
	assert_event_refused(&ev, "event.thread_id");
}

static void test_thread_id_with_control_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	ev.thread_id = "t\x7f";
	assert_event_refused(&ev, "event.thread_id");
}

static void test_run_id_of_256_bytes_is_accepted(void **state)
{
	Wsgate__V1__Event ev = event_valid();
	struct text t = text_of(256, 'r');

	(void)state;
	ev.run_id = t.s;
	assert_event_ok(&ev);
}

static void test_run_id_of_257_bytes_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_valid();
	struct text t = text_of(257, 'r');

	(void)state;
	ev.run_id = t.s;
	assert_event_refused(&ev, "event.run_id");
}

static void test_event_id_of_128_bytes_is_accepted(void **state)
{
	Wsgate__V1__Event ev = event_valid();
	struct text t = text_of(128, 'e');

	(void)state;
	ev.event_id = t.s;
	assert_event_ok(&ev);
}

static void test_event_id_of_129_bytes_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_valid();
	struct text t = text_of(129, 'e');

	(void)state;
	ev.event_id = t.s;
	assert_event_refused(&ev, "event.event_id");
}

static void test_empty_event_id_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	ev.event_id = "";
	assert_event_refused(&ev, "event.event_id");
}

static void test_event_id_with_bad_utf8_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	ev.event_id = "e-\xed\xa0\x80";
	assert_event_refused(&ev, "event.event_id");
}

static void test_missing_event_is_refused(void **state)
{
	(void)state;
	assert_event_refused(NULL, "event");
}

/* ---- event: type ---- */

static void test_every_standard_type_is_accepted(void **state)
{
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	for (int t = WSGATE__V1__EVENT_TYPE__AGENT_STARTED;
	     t <= WSGATE__V1__EVENT_TYPE__AGENT_ERROR; t++) {
		ev.type = (Wsgate__V1__EventType)t;
		assert_event_ok(&ev);
	}
}

static void test_unspecified_type_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	ev.type = WSGATE__V1__EVENT_TYPE__EVENT_TYPE_UNSPECIFIED;
	assert_event_refused(&ev, "event.type");
}

static void test_unknown_type_42_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	ev.type = (Wsgate__V1__EventType)42;
	assert_event_refused(&ev, "event.type: unknown value 42");
	ev.type = (Wsgate__V1__EventType)8;
	assert_event_refused(&ev, "event.type");
	ev.type = (Wsgate__V1__EventType)-1;
	assert_event_refused(&ev, "event.type");
}

static void test_unknown_type_from_the_wire_is_refused(void **state)
{
	/* event_id "e", user_id "u", type = 42: protobuf-c keeps the number. */
	static const uint8_t wire[] = {0x0a, 1, 'e', 0x12, 1, 'u', 0x28, 42};
	Wsgate__V1__Event *ev;

	(void)state;
	ev = wsgate__v1__event__unpack(NULL, sizeof wire, wire);
	assert_non_null(ev);
	assert_event_refused(ev, "event.type");
	wsgate__v1__event__free_unpacked(ev, NULL);
}

/* ---- event: custom_type ---- */

static void test_custom_type_is_accepted(void **state)
{
	Wsgate__V1__Event ev = event_custom("progress.update_v2-beta");

	(void)state;
	assert_event_ok(&ev);
	assert_string_equal(validate_event_type_name(&ev),
	                    "progress.update_v2-beta");
}

static void test_custom_type_of_64_bytes_is_accepted(void **state)
{
	struct text t = text_of(64, 'c');
	Wsgate__V1__Event ev = event_custom(t.s);

	(void)state;
	assert_event_ok(&ev);
}

static void test_custom_type_of_65_bytes_is_refused(void **state)
{
	struct text t = text_of(65, 'c');
	Wsgate__V1__Event ev = event_custom(t.s);

	(void)state;
	assert_event_refused(&ev, "event.custom_type");
}

static void test_custom_without_custom_type_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_custom("");

	(void)state;
	assert_event_refused(&ev, "event.custom_type: required");
}

static void test_custom_type_outside_its_charset_is_refused(void **state)
{
	static char *const bad[] = {
	    "Progress",    "has space", "slash/x", "colon:x",
	    "caf\xc3\xa9", "tab\t",     "quote\"", "plus+",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		Wsgate__V1__Event ev = event_custom(bad[i]);

		assert_event_refused(&ev, "event.custom_type");
	}
}

static void test_reserved_custom_type_names_are_refused(void **state)
{
	static char *const reserved[] = {
	    "connected",      "pong",
	    "error",          "resume_failed",
	    "ping",           "ack",
	    "auth",           "refresh",
	    "refreshed",      "agent_started",
	    "agent_thinking", "tool_executing",
	    "tool_completed", "agent_completed",
	    "agent_error",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
		Wsgate__V1__Event ev = event_custom(reserved[i]);

		assert_event_refused(&ev, "event.custom_type: reserved name");
	}
}

static void test_names_near_reserved_ones_are_accepted(void **state)
{
	static char *const near[] = {"connected2", "ping.pong", "ack_",
	                             "err",        "authx",     "refreshed.v2"};

	(void)state;
	for (size_t i = 0; i < sizeof(near) / sizeof(near[0]); i++) {
		Wsgate__V1__Event ev = event_custom(near[i]);

		assert_event_ok(&ev);
	}
}

static void test_custom_type_with_standard_type_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	ev.custom_type = "progress";
	assert_event_refused(&ev, "event.custom_type");
}

/* ---- event: payload ---- */

static void test_empty_payload_is_accepted(void **state)
{
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	event_set_payload(&ev, NULL, 0);
	assert_event_ok(&ev);
	event_set_payload(&ev, "", 0);
	assert_event_ok(&ev);
}

static void test_payload_at_max_payload_is_accepted(void **state)
{
	Wsgate__V1__Event ev = event_valid();
	struct text t = text_of(MAX_PAYLOAD, ' ');

	(void)state;
	t.s[0] = '[';
	t.s[MAX_PAYLOAD - 1] = ']';
	event_set_payload(&ev, t.s, MAX_PAYLOAD);
	assert_event_ok(&ev);
}

static void test_payload_over_max_payload_is_refused(void **state)
{
	Wsgate__V1__Event ev = event_valid();
	struct text t = text_of(MAX_PAYLOAD + 1, ' ');
	char err[256];

	(void)state;
	t.s[0] = '[';
	t.s[MAX_PAYLOAD] = ']';
	event_set_payload(&ev, t.s, MAX_PAYLOAD + 1);
	assert_int_equal(validate_event(&ev, MAX_PAYLOAD, err, sizeof err), -1);
	assert_string_equal(err, "event.payload_json: larger than max payload "
	                         "(64 bytes)");
}

static void test_json_payloads_of_any_kind_are_accepted(void **state)
{
	static const char *const ok[] = {"{\"step\":1}", "[1,2]", "\"s\"",
	                                 "3.25",         "null",  "  {}  "};
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		event_set_payload(&ev, ok[i], strlen(ok[i]));
		assert_event_ok(&ev);
	}
}

static void test_payload_that_is_not_json_is_refused(void **state)
{
	static const char *const bad[] = {"{", "{} x", "1 2", "   ",
	                                  "\"\xff\""};
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		event_set_payload(&ev, bad[i], strlen(bad[i]));
		assert_event_refused(&ev, "event.payload_json: not valid JSON");
	}
}

/* ---- error messages ---- */

static void test_short_error_buffer_is_truncated_safely(void **state)
{
	Wsgate__V1__Event ev = event_valid();
	char err[8];

	(void)state;
	ev.user_id = "";
	assert_int_equal(validate_event(&ev, MAX_PAYLOAD, err, sizeof err), -1);
	assert_string_equal(err, "event.u");
	assert_int_equal(validate_event(&ev, MAX_PAYLOAD, NULL, 0), -1);
}

/* ---- event type names ---- */

static void test_standard_types_have_their_frame_names(void **state)
{
	static const char *const names[] = {
	    NULL,
	    "agent_started",
	    "agent_thinking",
	    "tool_executing",
	    "tool_completed",
	    "agent_completed",
	    "agent_error",
	};
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	for (int t = 1; t <= 6; t++) {
		ev.type = (Wsgate__V1__EventType)t;
		assert_string_equal(validate_event_type_name(&ev), names[t]);
	}
}

/* ---- requests ---- */

static void test_request_without_body_is_refused(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;

	(void)state;
	assert_request_refused(&req, "request.body");
}

static void test_send_event_without_event_is_refused(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__SendEvent se = WSGATE__V1__SEND_EVENT__INIT;

	(void)state;
	req.body_case = WSGATE__V1__REQUEST__BODY_SEND_EVENT;
	req.send_event = &se;
	assert_request_refused(&req, "send_event.event");
}

static void test_send_event_leaves_the_event_to_validate_event(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__SendEvent se = WSGATE__V1__SEND_EVENT__INIT;
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	ev.user_id = ""; /* invalid, but that is validate_event's call */
	se.event = &ev;
	req.body_case = WSGATE__V1__REQUEST__BODY_SEND_EVENT;
	req.send_event = &se;
	assert_request_ok(&req);
}

/* A batch of n copies of one valid event. */
static void batch_request(Wsgate__V1__Request *req, Wsgate__V1__SendBatch *sb,
                          Wsgate__V1__Event *ev, size_t n)
{
	Wsgate__V1__Event **events = NULL;

	if (n > 0) {
		events = calloc(n, sizeof(*events));
		assert_non_null(events);
		for (size_t i = 0; i < n; i++)
			events[i] = ev;
	}
	sb->n_events = n;
	sb->events = events;
	req->body_case = WSGATE__V1__REQUEST__BODY_SEND_BATCH;
	req->send_batch = sb;
}

static void test_empty_batch_is_refused(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__SendBatch sb = WSGATE__V1__SEND_BATCH__INIT;
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	batch_request(&req, &sb, &ev, 0);
	assert_request_refused(&req, "send_batch.events");
}

static void test_batch_of_one_event_is_accepted(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__SendBatch sb = WSGATE__V1__SEND_BATCH__INIT;
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	batch_request(&req, &sb, &ev, 1);
	assert_request_ok(&req);
	free(sb.events);
}

static void test_batch_of_1000_events_is_accepted(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__SendBatch sb = WSGATE__V1__SEND_BATCH__INIT;
	Wsgate__V1__Event ev = event_valid();

	(void)state;
	batch_request(&req, &sb, &ev, 1000);
	assert_request_ok(&req);
	free(sb.events);
}

static void test_batch_of_1001_events_is_refused(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__SendBatch sb = WSGATE__V1__SEND_BATCH__INIT;
	Wsgate__V1__Event ev = event_valid();
	char err[256];

	(void)state;
	batch_request(&req, &sb, &ev, 1001);
	assert_int_equal(validate_request(&req, err, sizeof err), -1);
	assert_string_equal(err, "send_batch.events: at most 1000 events");
	free(sb.events);
}

static void disconnect_request(Wsgate__V1__Request *req,
                               Wsgate__V1__Disconnect *d, char *user_id,
                               char *conn_id)
{
	d->user_id = user_id;
	d->conn_id = conn_id;
	req->body_case = WSGATE__V1__REQUEST__BODY_DISCONNECT;
	req->disconnect = d;
}

static void test_disconnect_naming_nobody_is_refused(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__Disconnect d = WSGATE__V1__DISCONNECT__INIT;

	(void)state;
	disconnect_request(&req, &d, "", "");
	assert_request_refused(&req, "disconnect");
}

static void test_disconnect_by_user_or_connection_is_accepted(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__Disconnect d = WSGATE__V1__DISCONNECT__INIT;

	(void)state;
	disconnect_request(&req, &d, "u1", "");
	assert_request_ok(&req);
	disconnect_request(&req, &d, "", "c-1");
	assert_request_ok(&req);
	disconnect_request(&req, &d, "u1", "c-1");
	d.reason = "policy";
	assert_request_ok(&req);
}

static void test_disconnect_user_id_of_257_bytes_is_refused(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__Disconnect d = WSGATE__V1__DISCONNECT__INIT;
	struct text ok = text_of(256, 'u');
	struct text bad = text_of(257, 'u');

	(void)state;
	disconnect_request(&req, &d, ok.s, "");
	assert_request_ok(&req);
	disconnect_request(&req, &d, bad.s, "");
	assert_request_refused(&req, "disconnect.user_id");
	disconnect_request(&req, &d, "u\x01", "");
	assert_request_refused(&req, "disconnect.user_id");
}

static void test_disconnect_conn_id_of_64_bytes_is_accepted(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__Disconnect d = WSGATE__V1__DISCONNECT__INIT;
	struct text t = text_of(64, 'c');

	(void)state;
	disconnect_request(&req, &d, "", t.s);
	assert_request_ok(&req);
}

static void test_disconnect_conn_id_of_65_bytes_is_refused(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__Disconnect d = WSGATE__V1__DISCONNECT__INIT;
	struct text t = text_of(65, 'c');

	(void)state;
	disconnect_request(&req, &d, "", t.s);
	assert_request_refused(&req, "disconnect.conn_id");
	disconnect_request(&req, &d, "", "c\x7f");
	assert_request_refused(&req, "disconnect.conn_id");
}

static void test_disconnect_reason_of_128_bytes_is_accepted(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__Disconnect d = WSGATE__V1__DISCONNECT__INIT;
	struct text t = text_of(128, 'r');

	(void)state;
	disconnect_request(&req, &d, "u1", "");
	d.reason = t.s;
	assert_request_ok(&req);
}

static void test_disconnect_reason_of_129_bytes_is_refused(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__Disconnect d = WSGATE__V1__DISCONNECT__INIT;
	struct text t = text_of(129, 'r');

	(void)state;
	disconnect_request(&req, &d, "u1", "");
	d.reason = t.s;
	assert_request_refused(&req, "disconnect.reason");
	d.reason = "bye\n";
	assert_request_refused(&req, "disconnect.reason");
}

static void test_list_connections_for_all_or_one_user_is_accepted(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__ListConnections lc = WSGATE__V1__LIST_CONNECTIONS__INIT;
	struct text t = text_of(256, 'u');

	(void)state;
	req.body_case = WSGATE__V1__REQUEST__BODY_LIST_CONNECTIONS;
	req.list_connections = &lc;
	assert_request_ok(&req);
	lc.user_id = t.s;
	assert_request_ok(&req);
}

static void test_list_connections_user_id_of_257_bytes_is_refused(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__ListConnections lc = WSGATE__V1__LIST_CONNECTIONS__INIT;
	struct text t = text_of(257, 'u');

	(void)state;
	req.body_case = WSGATE__V1__REQUEST__BODY_LIST_CONNECTIONS;
	req.list_connections = &lc;
	lc.user_id = t.s;
	assert_request_refused(&req, "list_connections.user_id");
	lc.user_id = "\xc0\x80";
	assert_request_refused(&req, "list_connections.user_id");
}

static void test_get_stats_and_ping_are_accepted(void **state)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__GetStats gs = WSGATE__V1__GET_STATS__INIT;
	Wsgate__V1__Ping ping = WSGATE__V1__PING__INIT;

	(void)state;
	req.body_case = WSGATE__V1__REQUEST__BODY_GET_STATS;
	req.get_stats = &gs;
	assert_request_ok(&req);
	req.body_case = WSGATE__V1__REQUEST__BODY_PING;
	req.ping = &ping;
	assert_request_ok(&req);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ascii_is_printable),
	    cmocka_unit_test(test_multibyte_utf8_is_accepted),
	    cmocka_unit_test(test_overlong_utf8_is_refused),
	    cmocka_unit_test(test_surrogate_code_points_are_refused),
	    cmocka_unit_test(test_code_points_above_10ffff_are_refused),
	    cmocka_unit_test(test_truncated_utf8_is_refused),
	    cmocka_unit_test(test_control_characters_are_refused),
	    cmocka_unit_test(test_del_is_refused),
	    cmocka_unit_test(test_c1_controls_are_refused),
	    cmocka_unit_test(test_json_objects_and_arrays_are_accepted),
	    cmocka_unit_test(test_json_scalars_are_accepted),
	    cmocka_unit_test(test_json_with_surrounding_whitespace_is_accepted),
	    cmocka_unit_test(test_json_with_trailing_garbage_is_refused),
	    cmocka_unit_test(test_two_json_values_are_refused),
	    cmocka_unit_test(test_json_escaped_nul_in_string_is_accepted),
	    cmocka_unit_test(test_json_nul_byte_after_value_is_refused),
	    cmocka_unit_test(test_json_with_invalid_utf8_in_string_is_refused),
	    cmocka_unit_test(test_empty_or_whitespace_only_json_is_refused),
	    cmocka_unit_test(test_malformed_json_is_refused),
	    cmocka_unit_test(test_valid_event_is_accepted),
	    cmocka_unit_test(test_user_id_of_256_bytes_is_accepted),
	    cmocka_unit_test(test_user_id_of_257_bytes_is_refused),
	    cmocka_unit_test(test_empty_user_id_is_refused),
	    cmocka_unit_test(test_user_id_with_control_or_bad_utf8_is_refused),
	    cmocka_unit_test(test_multibyte_user_id_is_accepted),
	    cmocka_unit_test(test_user_id_limit_counts_bytes_not_characters),
	    cmocka_unit_test(test_empty_thread_and_run_ids_are_accepted),
	    cmocka_unit_test(test_thread_id_of_256_bytes_is_accepted),
	    cmocka_unit_test(test_thread_id_of_257_bytes_is_refused),
	    cmocka_unit_test(test_thread_id_with_control_is_refused),
	    cmocka_unit_test(test_run_id_of_256_bytes_is_accepted),
	    cmocka_unit_test(test_run_id_of_257_bytes_is_refused),
	    cmocka_unit_test(test_event_id_of_128_bytes_is_accepted),
	    cmocka_unit_test(test_event_id_of_129_bytes_is_refused),
	    cmocka_unit_test(test_empty_event_id_is_refused),
	    cmocka_unit_test(test_event_id_with_bad_utf8_is_refused),
	    cmocka_unit_test(test_missing_event_is_refused),
	    cmocka_unit_test(test_every_standard_type_is_accepted),
	    cmocka_unit_test(test_unspecified_type_is_refused),
	    cmocka_unit_test(test_unknown_type_42_is_refused),
	    cmocka_unit_test(test_unknown_type_from_the_wire_is_refused),
	    cmocka_unit_test(test_custom_type_is_accepted),
	    cmocka_unit_test(test_custom_type_of_64_bytes_is_accepted),
	    cmocka_unit_test(test_custom_type_of_65_bytes_is_refused),
	    cmocka_unit_test(test_custom_without_custom_type_is_refused),
	    cmocka_unit_test(test_custom_type_outside_its_charset_is_refused),
	    cmocka_unit_test(test_reserved_custom_type_names_are_refused),
	    cmocka_unit_test(test_names_near_reserved_ones_are_accepted),
	    cmocka_unit_test(test_custom_type_with_standard_type_is_refused),
	    cmocka_unit_test(test_empty_payload_is_accepted),
	    cmocka_unit_test(test_payload_at_max_payload_is_accepted),
	    cmocka_unit_test(test_payload_over_max_payload_is_refused),
	    cmocka_unit_test(test_json_payloads_of_any_kind_are_accepted),
	    cmocka_unit_test(test_payload_that_is_not_json_is_refused),
	    cmocka_unit_test(test_short_error_buffer_is_truncated_safely),
	    cmocka_unit_test(test_standard_types_have_their_frame_names),
	    cmocka_unit_test(test_request_without_body_is_refused),
	    cmocka_unit_test(test_send_event_without_event_is_refused),
	    cmocka_unit_test(
	        test_send_event_leaves_the_event_to_validate_event),
	    cmocka_unit_test(test_empty_batch_is_refused),
	    cmocka_unit_test(test_batch_of_one_event_is_accepted),
	    cmocka_unit_test(test_batch_of_1000_events_is_accepted),
	    cmocka_unit_test(test_batch_of_1001_events_is_refused),
	    cmocka_unit_test(test_disconnect_naming_nobody_is_refused),
	    cmocka_unit_test(test_disconnect_by_user_or_connection_is_accepted),
	    cmocka_unit_test(test_disconnect_user_id_of_257_bytes_is_refused),
	    cmocka_unit_test(test_disconnect_conn_id_of_64_bytes_is_accepted),
	    cmocka_unit_test(test_disconnect_conn_id_of_65_bytes_is_refused),
	    cmocka_unit_test(test_disconnect_reason_of_128_bytes_is_accepted),
	    cmocka_unit_test(test_disconnect_reason_of_129_bytes_is_refused),
	    cmocka_unit_test(
	        test_list_connections_for_all_or_one_user_is_accepted),
	    cmocka_unit_test(
	        test_list_connections_user_id_of_257_bytes_is_refused),
	    cmocka_unit_test(test_get_stats_and_ping_are_accepted),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
