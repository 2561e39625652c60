/*
 * fuzz_request: a control request as it arrives from a backend over NNG.
 *
 * The bytes take the path of control.c: wsgate__v1__request__unpack, then
 * validate_request and validate_request_wire (NUL bytes in strings), then
 * validate_event on the event of a SendEvent and on
 * each event of a SendBatch. Events are checked even when the request as a
 * whole was refused: validate_event must hold up on anything that unpacks.
 *
 * Besides the sanitizers, the harness checks what callers rely on: a refusal
 * comes with a non-empty printable message (it goes into Reply.error), a
 * smaller payload limit never accepts more, and an accepted event has a
 * frame type name.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "validate.h"
#include "wsgate.pb-c.h"

#define FUZZ_MAX_PAYLOAD   (1024 * 1024) /* the --max-payload default */
#define FUZZ_SMALL_PAYLOAD 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_refusal(int rc, const char *err)
{
	if (rc == 0)
		return;
	assert(rc == -1);
	size_t n = strnlen(err, 256);
	assert(n > 0 && n < 256);
	assert(validate_printable_utf8(err, n));
}

static void fuzz_event(const Wsgate__V1__Event *ev)
{
	char err[256] = "";
	int rc = validate_event(ev, FUZZ_MAX_PAYLOAD, err, sizeof(err));
	check_refusal(rc, err);

	char small_err[256] = "";
	int small_rc = validate_event(ev, FUZZ_SMALL_PAYLOAD, small_err,
	                              sizeof(small_err));
	check_refusal(small_rc, small_err);
	assert(small_rc != 0 || rc == 0);

	if (rc == 0) {
		const char *name = validate_event_type_name(ev);
		assert(name != NULL && name[0] != '\0');
		assert(validate_printable_utf8(name, strlen(name)));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Wsgate__V1__Request *req =
	    wsgate__v1__request__unpack(NULL, size, data);
	if (req == NULL)
		return 0;

	char err[256] = "";
	int rc = validate_request(req, err, sizeof(err));
	check_refusal(rc, err);

	/* The NUL-byte walk of the same bytes: a path when it finds one. */
	char path[256];
	int nul = validate_request_wire(data, size, path, sizeof(path));
	assert(nul >= -1 && nul <= 1);
	assert(nul != 1 || (path[0] != '\0' && strlen(path) < sizeof(path)));

	switch (req->body_case) {
	case WSGATE__V1__REQUEST__BODY_SEND_EVENT:
		if (req->send_event != NULL && req->send_event->event != NULL)
			fuzz_event(req->send_event->event);
		else
			assert(rc != 0);
		break;
	case WSGATE__V1__REQUEST__BODY_SEND_BATCH:
		if (req->send_batch == NULL) {
			assert(rc != 0);
			break;
		}
		assert(rc != 0 ||
		       (req->send_batch->n_events >= 1 &&
		        req->send_batch->n_events <= VALIDATE_MAX_BATCH));
		for (size_t i = 0; i < req->send_batch->n_events; i++)
			fuzz_event(req->send_batch->events[i]);
		break;
	default:
		break;
	}

	wsgate__v1__request__free_unpacked(req, NULL);
	return 0;
}
