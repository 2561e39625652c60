/*
 * Unit tests of what the sidecar parses from outside before any state is
 * touched: token transports, ?since=, client frames and configuration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_frame.h"
#include "config.h"
#include "handshake.h"

/* tok and len are read after rc was computed (argument order is
 * unspecified, so they are passed by address). */
static void assert_token(int rc, const char *const *tok, const size_t *len,
                         const char *want)
{
	assert_int_equal(rc, 0);
	assert_int_equal(*len, strlen(want));
	assert_memory_equal(*tok, want, *len);
}

static void test_bearer_header_yields_token(void **state)
{
	(void)state;
	const char *tok;
	size_t len;
	const char *h = "Bearer abc.def.ghi";
	assert_token(
	    handshake_token_from_authorization(h, strlen(h), &tok, &len), &tok,
	    &len, "abc.def.ghi");
	h = "bearer   abc.def.ghi  ";
	assert_token(
	    handshake_token_from_authorization(h, strlen(h), &tok, &len), &tok,
	    &len, "abc.def.ghi");
}

static void test_other_schemes_yield_no_token(void **state)
{
	(void)state;
	const char *tok;
	size_t len;
	const char *bad[] = {"Basic dXNlcjpwYXNz", "Bearer", "Bearer   ",
	                     "Bearerabc", ""};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(handshake_token_from_authorization(
		                     bad[i], strlen(bad[i]), &tok, &len),
		                 -1);
}

static void test_subprotocol_list_yields_bearer_token(void **state)
{
	(void)state;
	const char *tok;
	size_t len;
	const char *h = "wsgate.v1, bearer.abc.def.ghi";
	assert_token(handshake_token_from_protocols(h, strlen(h), &tok, &len),
	             &tok, &len, "abc.def.ghi");
	h = "bearer.x.y.z,wsgate.v1";
	assert_token(handshake_token_from_protocols(h, strlen(h), &tok, &len),
	             &tok, &len, "x.y.z");
	h = "wsgate.v1";
	assert_int_equal(
	    handshake_token_from_protocols(h, strlen(h), &tok, &len), -1);
	h = "wsgate.v1, bearer.";
	assert_int_equal(
	    handshake_token_from_protocols(h, strlen(h), &tok, &len), -1);
}

static void test_since_accepts_only_decimal_integers(void **state)
{
	(void)state;
	uint64_t v = 99;
	assert_int_equal(handshake_parse_since(NULL, &v), SINCE_ABSENT);
	assert_int_equal(handshake_parse_since("", &v), SINCE_ABSENT);
	assert_int_equal(handshake_parse_since("0", &v), SINCE_VALID);
	assert_int_equal(v, 0);
	assert_int_equal(handshake_parse_since("18446744073709551615", &v),
	                 SINCE_VALID);
	assert_true(v == UINT64_MAX);
	const char *bad[] = {"-1", "1.5", "abc", "18446744073709551616",
	                     " 1", "1 ",  "0x10"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(handshake_parse_since(bad[i], &v),
		                 SINCE_INVALID);
}

static void test_epoch_accepts_letters_and_digits_that_fit(void **state)
{
	(void)state;
	char e[5] = "keep";
	assert_int_equal(handshake_parse_epoch(NULL, e, sizeof(e)),
	                 EPOCH_ABSENT);
	assert_int_equal(handshake_parse_epoch("", e, sizeof(e)), EPOCH_ABSENT);
	assert_string_equal(e, "keep");
	assert_int_equal(handshake_parse_epoch("0aF9", e, sizeof(e)),
	                 EPOCH_VALID);
	assert_string_equal(e, "0aF9");
	const char *bad[] = {"abcde", "a-b", "a b", "a%20", "\xc3\xa9"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(handshake_parse_epoch(bad[i], e, sizeof(e)),
		                 EPOCH_INVALID);
		assert_string_equal(e, "0aF9");
	}
}

static enum client_frame_kind classify(const char *s, uint64_t *seq)
{
	static struct client_frame cf;
	enum client_frame_kind kind = client_frame_classify(s, strlen(s), &cf);
	*seq = cf.ack_seq;
	return kind;
}

static void test_client_frames_are_classified(void **state)
{
	(void)state;
	uint64_t seq = 0;
	assert_int_equal(classify("{\"type\":\"ping\"}", &seq),
	                 CLIENT_FRAME_PING);
	assert_int_equal(classify("{\"type\":\"ack\",\"seq\":17}", &seq),
	                 CLIENT_FRAME_ACK);
	assert_int_equal(seq, 17);
	assert_int_equal(classify("{\"type\":\"ack\",\"seq\":\"17\"}", &seq),
	                 CLIENT_FRAME_INVALID_ACK);
	assert_int_equal(classify("{\"type\":\"ack\",\"seq\":0}", &seq),
	                 CLIENT_FRAME_INVALID_ACK);
	assert_int_equal(classify("{\"type\":\"ack\"}", &seq),
	                 CLIENT_FRAME_INVALID_ACK);
	assert_int_equal(classify("{\"type\":\"chat\",\"text\":\"hi\"}", &seq),
	                 CLIENT_FRAME_FORWARD);
	assert_int_equal(classify("[1,2]", &seq), CLIENT_FRAME_FORWARD);
	assert_int_equal(classify("\"ping\"", &seq), CLIENT_FRAME_FORWARD);
	assert_int_equal(classify("not json", &seq), CLIENT_FRAME_INVALID_JSON);
	assert_int_equal(classify("{\"type\":\"ping\"} x", &seq),
	                 CLIENT_FRAME_INVALID_JSON);
	assert_int_equal(classify("", &seq), CLIENT_FRAME_INVALID_JSON);
	/* Valid JSON a browser may send: wide integers, escaped NUL. */
	assert_int_equal(classify("{\"id\":12345678901234567000}", &seq),
	                 CLIENT_FRAME_FORWARD);
	assert_int_equal(classify("\"a\\u0000b\"", &seq), CLIENT_FRAME_FORWARD);
	assert_int_equal(
	    classify("{\"type\":\"ack\",\"seq\":9223372036854775808}", &seq),
	    CLIENT_FRAME_INVALID_ACK);
}

static void test_auth_and_refresh_frames_carry_their_token(void **state)
{
	(void)state;
	static struct client_frame cf;
	const char *auth = "{\"type\":\"auth\",\"token\":\"a.b.c\"}";
	assert_int_equal(client_frame_classify(auth, strlen(auth), &cf),
	                 CLIENT_FRAME_AUTH);
	assert_string_equal(cf.token, "a.b.c");
	assert_int_equal(cf.token_len, 5);
	const char *refresh = "{\"token\":\"x.y.z\",\"type\":\"refresh\"}";
	assert_int_equal(client_frame_classify(refresh, strlen(refresh), &cf),
	                 CLIENT_FRAME_REFRESH);
	assert_string_equal(cf.token, "x.y.z");
	/* No token, or not a string: the kind, with no token. */
	const char *none[] = {"{\"type\":\"auth\"}",
	                      "{\"type\":\"auth\",\"token\":42}",
	                      "{\"type\":\"refresh\",\"token\":null}"};
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		enum client_frame_kind k =
		    client_frame_classify(none[i], strlen(none[i]), &cf);
		assert_true(k == CLIENT_FRAME_AUTH ||
		            k == CLIENT_FRAME_REFRESH);
		assert_int_equal(cf.token_len, 0);
	}
	/* Too long: cut one byte past the verifier's limit, which refuses
	 * it. */
	size_t n = AUTH_JWT_MAX_TOKEN + 100;
	char *big = malloc(n + 64);
	assert_non_null(big);
	int head = sprintf(big, "{\"type\":\"auth\",\"token\":\"");
	memset(big + head, 'a', n);
	strcpy(big + head + n, "\"}");
	assert_int_equal(client_frame_classify(big, strlen(big), &cf),
	                 CLIENT_FRAME_AUTH);
	assert_int_equal(cf.token_len, AUTH_JWT_MAX_TOKEN + 1);
	free(big);
	/* "auth" as something else than the type is just a message. */
	const char *other = "{\"type\":\"chat\",\"auth\":\"x\"}";
	assert_int_equal(client_frame_classify(other, strlen(other), &cf),
	                 CLIENT_FRAME_FORWARD);
	assert_int_equal(cf.token_len, 0);
}

static void test_sizes_and_durations_parse_with_suffixes(void **state)
{
	(void)state;
	uint64_t sz;
	int64_t us;
	assert_int_equal(config_parse_size("64K", &sz), 0);
	assert_int_equal(sz, 65536);
	assert_int_equal(config_parse_size("4M", &sz), 0);
	assert_int_equal(sz, 4 << 20);
	assert_int_equal(config_parse_size("1000", &sz), 0);
	assert_int_equal(sz, 1000);
	assert_int_equal(config_parse_size("4X", &sz), -1);
	assert_int_equal(config_parse_size("-1", &sz), -1);
	assert_int_equal(config_parse_duration_us("500ms", &us), 0);
	assert_int_equal(us, 500000);
	assert_int_equal(config_parse_duration_us("25s", &us), 0);
	assert_int_equal(us, 25000000);
	assert_int_equal(config_parse_duration_us("2m", &us), 0);
	assert_int_equal(us, 120000000);
	assert_int_equal(config_parse_duration_us("24h", &us), 0);
	assert_true(us == 24LL * 3600 * 1000000);
	assert_int_equal(config_parse_duration_us("1d", &us), -1);
}

static void test_flag_beats_environment_variable(void **state)
{
	(void)state;
	struct config cfg;
	char err[256];
	setenv("WSGATE_MAX_PAYLOAD", "2M", 1);
	setenv("WSGATE_LISTEN", "127.0.0.1:9999", 1);
	char *argv[] = {"wsgate", "--max-payload", "3K", "--queue-limit=1M",
	                NULL};
	assert_int_equal(config_parse(&cfg, 4, argv, err, sizeof(err)),
	                 CONFIG_OK);
	assert_int_equal(cfg.max_payload, 3 * 1024);
	assert_int_equal(cfg.queue_limit, 1 << 20);
	assert_string_equal(cfg.listen, "127.0.0.1:9999");
	assert_int_equal(cfg.max_client_frame, 64 * 1024);
	unsetenv("WSGATE_MAX_PAYLOAD");
	unsetenv("WSGATE_LISTEN");
}

static void test_bad_flags_are_refused_with_a_reason(void **state)
{
	(void)state;
	struct config cfg;
	char err[256];
	char *a1[] = {"wsgate", "--no-such-flag", "1", NULL};
	assert_int_equal(config_parse(&cfg, 3, a1, err, sizeof(err)),
	                 CONFIG_ERROR);
	assert_non_null(strstr(err, "--no-such-flag"));
	char *a2[] = {"wsgate", "--max-payload", "lots", NULL};
	assert_int_equal(config_parse(&cfg, 3, a2, err, sizeof(err)),
	                 CONFIG_ERROR);
	assert_non_null(strstr(err, "--max-payload"));
	char *a3[] = {"wsgate", "--retention", NULL};
	assert_int_equal(config_parse(&cfg, 2, a3, err, sizeof(err)),
	                 CONFIG_ERROR);
	assert_non_null(strstr(err, "needs a value"));
}

static void test_allowed_origin_repeats(void **state)
{
	(void)state;
	struct config cfg;
	char err[256];
	char *argv[] = {
	    "wsgate",           "--allowed-origin",  "https://a.example",
	    "--allowed-origin", "https://b.example", NULL};
	assert_int_equal(config_parse(&cfg, 5, argv, err, sizeof(err)),
	                 CONFIG_OK);
	assert_int_equal(cfg.n_allowed_origins, 2);
	assert_string_equal(cfg.allowed_origins[1], "https://b.example");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bearer_header_yields_token),
	    cmocka_unit_test(test_other_schemes_yield_no_token),
	    cmocka_unit_test(test_subprotocol_list_yields_bearer_token),
	    cmocka_unit_test(test_since_accepts_only_decimal_integers),
	    cmocka_unit_test(test_epoch_accepts_letters_and_digits_that_fit),
	    cmocka_unit_test(test_client_frames_are_classified),
	    cmocka_unit_test(test_auth_and_refresh_frames_carry_their_token),
	    cmocka_unit_test(test_sizes_and_durations_parse_with_suffixes),
	    cmocka_unit_test(test_flag_beats_environment_variable),
	    cmocka_unit_test(test_bad_flags_are_refused_with_a_reason),
	    cmocka_unit_test(test_allowed_origin_repeats),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
