/*
 * sp_wire: the SP header and message frames (see sp_wire.h).
 */
#include "sp_wire.h"

#include <string.h>

void sp_wire_header(uint8_t out[SP_HEADER_LEN], uint16_t proto)
{
	memset(out, 0, SP_HEADER_LEN);
	out[1] = 'S';
	out[2] = 'P';
	out[4] = (uint8_t)(proto >> 8);
	out[5] = (uint8_t)proto;
}

bool sp_wire_header_is(const uint8_t h[SP_HEADER_LEN], uint16_t proto)
{
	uint8_t want[SP_HEADER_LEN];
	sp_wire_header(want, proto);
	return memcmp(h, want, SP_HEADER_LEN) == 0;
}

void sp_wire_frame_head(uint8_t out[SP_FRAME_HEAD], uint64_t len)
{
	out[0] = SP_MSG_TYPE;
	for (int i = 0; i < 8; i++)
		out[1 + i] = (uint8_t)(len >> (56 - 8 * i));
}

uint64_t sp_wire_frame_len(const uint8_t head[SP_FRAME_HEAD])
{
	uint64_t len = 0;
	for (int i = 0; i < 8; i++)
		len = len << 8 | head[1 + i];
	return len;
}
