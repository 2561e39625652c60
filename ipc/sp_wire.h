/*
 * sp_wire: the bytes of NNG's scalability protocols (SP) over ipc://, the
 * one definition shared by the sidecar's server (sidecar/sp_server.c) and
 * libwsgate's client (wsgate_client.c). NNG, nanomsg and mangos speak it.
 *
 * A connection starts with each side sending an 8-byte header: 00 'S' 'P'
 * 00, its protocol number (16 bits, big-endian), 00 00. Then every message
 * is a frame: type 0x01, a 64-bit big-endian length, that many bytes. For
 * req/rep the message starts with the request-id backtrace: 32-bit
 * big-endian words up to and including the first with the high bit set;
 * the reply carries the same words before its body.
 */
#ifndef WSGATE_SP_WIRE_H
#define WSGATE_SP_WIRE_H

#include <stdbool.h>
#include <stdint.h>

#define SP_PROTO_REQ0  0x30
#define SP_PROTO_REP0  0x31
#define SP_PROTO_PUSH0 0x50
#define SP_PROTO_PULL0 0x51

#define SP_HEADER_LEN 8
#define SP_FRAME_HEAD 9 /* type and length */
#define SP_MSG_TYPE   0x01

/* The header a side speaking proto sends. */
void sp_wire_header(uint8_t out[SP_HEADER_LEN], uint16_t proto);
/* Whether h is a valid header of a peer speaking proto. */
bool sp_wire_header_is(const uint8_t h[SP_HEADER_LEN], uint16_t proto);
/* The head of a message frame of len bytes. */
void sp_wire_frame_head(uint8_t out[SP_FRAME_HEAD], uint64_t len);
/* The length a frame head announces (its type is head[0]). */
uint64_t sp_wire_frame_len(const uint8_t head[SP_FRAME_HEAD]);

#endif
