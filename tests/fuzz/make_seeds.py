#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/ (run once; the files are
committed). Standard library only: protobuf messages are encoded by hand
following schema/wsgate.proto, tokens are signed with fuzz_jwt.c's fixed
HS256 secret. See fuzz_jwt.c for the meaning of its first (mode) byte."""
import base64
import hashlib
import hmac
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = b"wsgate-fuzz-secret-0123456789abcdefghijk"  # as in fuzz_jwt.c
NOW = 1700000000


def write(harness, name, data):
    d = os.path.join(HERE, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- protobuf wire format ---

def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(num, n):
    return varint(num << 3) + varint(n)


def f_bytes(num, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(num << 3 | 2) + varint(len(b)) + b


def event(event_id, user_id, etype, payload=b"", thread_id="", run_id="",
          custom_type=""):
    m = f_bytes(1, event_id) + f_bytes(2, user_id)
    if thread_id:
        m += f_bytes(3, thread_id)
    if run_id:
        m += f_bytes(4, run_id)
    if etype:
        m += f_varint(5, etype)
    if custom_type:
        m += f_bytes(6, custom_type)
    if payload:
        m += f_bytes(7, payload)
    return m


def request(request_id, field, body):
    return f_varint(1, request_id) + f_bytes(field, body)


AGENT_STARTED, TOOL_COMPLETED, CUSTOM = 1, 4, 7


def request_seeds():
    ok = event("e1", "u1", AGENT_STARTED, b'{"step":1}', thread_id="t1",
               run_id="r1")
    write("request", "ping", request(1, 7, b""))
    write("request", "get_stats", request(2, 6, b""))
    write("request", "send_event", request(3, 2, f_bytes(1, ok)))
    write("request", "send_event_custom",
          request(4, 2, f_bytes(1, event("e2", "u1", CUSTOM, b"[1,2.5,null]",
                                         custom_type="deploy.progress"))))
    write("request", "send_event_bad",
          request(5, 2, f_bytes(1, event("e3", "u\x01", 99, b'{"a":',
                                         custom_type="pong"))))
    batch = (f_bytes(1, ok) +
             f_bytes(1, event("e4", "u2", TOOL_COMPLETED, b'"\\u0000"')) +
             f_bytes(1, event("e5", "u2", CUSTOM, custom_type="ping")) +
             f_bytes(1, b""))
    write("request", "send_batch", request(6, 3, batch))
    write("request", "disconnect",
          request(7, 4, f_bytes(1, "u1") + f_bytes(3, "logged out")))
    write("request", "disconnect_conn", request(8, 4, f_bytes(2, "c-42")))
    write("request", "list_connections", request(9, 5, f_bytes(1, "u1")))
    write("request", "empty", b"")


# --- JWTs ---

def b64(b):
    if isinstance(b, str):
        b = b.encode()
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hs256(header, claims, key=SECRET):
    signing = b64(json.dumps(header, separators=(",", ":"))) + "." + \
        b64(json.dumps(claims, separators=(",", ":")))
    mac = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(mac)


def mode(signer=0, shape=0, clock=0, null_claims=0):
    return bytes([signer | shape << 2 | clock << 4 | null_claims << 6])


def jwt_seeds():
    hdr = {"alg": "HS256", "typ": "JWT"}
    claims = {"sub": "u1", "exp": NOW + 3600, "iat": NOW, "jti": "j-1"}
    full = dict(claims, iss="https://auth.example",
                aud=["other", "wsgate"], nbf=NOW - 10)
    write("jwt", "raw_valid_hs256", mode() + hs256(hdr, claims).encode())
    write("jwt", "raw_valid_iss_aud", mode() + hs256(hdr, full).encode())
    write("jwt", "raw_expired",
          mode() + hs256(hdr, dict(claims, exp=NOW - 100)).encode())
    write("jwt", "raw_bad_mac",
          mode() + hs256(hdr, claims, key=b"x" * 32).encode())
    write("jwt", "raw_alg_none",
          mode() + (b64('{"alg":"none"}') + "." + b64(json.dumps(claims)) +
                    ".").encode())
    write("jwt", "raw_garbage", mode() + b"a.b.c")
    write("jwt", "raw_dots", mode() + b"..")
    signing = b64(json.dumps(hdr)) + "." + b64(json.dumps(claims))
    write("jwt", "signed_prefix_hs", mode(0, 1) + signing.encode())
    for signer, name in ((0, "hs"), (1, "rs"), (2, "es"), (3, "hs_pubkey")):
        write("jwt", "signed_claims_" + name,
              mode(signer, 3) + json.dumps(claims).encode())
    write("jwt", "signed_crit",
          mode(0, 2) + b'{"alg":"HS256","crit":["b64"]}\0' +
          json.dumps(claims).encode())
    write("jwt", "signed_rs_header_hs_key",
          mode(0, 2) + b'{"alg":"RS256"}\0' + json.dumps(claims).encode())
    write("jwt", "signed_real_dates",
          mode(0, 3) + b'{"sub":"u1","exp":1e300,"nbf":-1e300,"iat":1.5}')
    write("jwt", "signed_dup_sub",
          mode(0, 3) + b'{"sub":"u1","sub":"u2","exp":1800000000}')
    write("jwt", "clock_min",
          mode(0, 3, 1) + b'{"sub":"u1","exp":-9223372036854775808}')
    write("jwt", "clock_max",
          mode(2, 3, 2) + b'{"sub":"u1","exp":9223372036854775807,'
          b'"nbf":9223372036854775807}')
    write("jwt", "clock_input",
          mode(0, 3, 3) + struct.pack(">q", -9223372036854775779) +
          b'{"sub":"u1","exp":1,"iat":-9223372036854775807}')
    write("jwt", "null_claims", mode(1, 3, 0, 1) + json.dumps(claims).encode())


def client_frame_seeds():
    for name, data in (("ping", '{"type":"ping"}'),
                       ("ack", '{"type":"ack","seq":42}'),
                       ("ack_zero", '{"type":"ack","seq":0}'),
                       ("ack_string", '{"type":"ack","seq":"5"}'),
                       ("ack_huge", '{"type":"ack","seq":18446744073709551615}'),
                       ("forward", '{"type":"chat","text":"hi \\u00e9"}'),
                       ("array", '[1,2,{"type":"ping"}]'),
                       ("string_nul", '"\\u0000"'),
                       ("truncated", '{"type":'),
                       ("garbage", "\xff\xfe{}"),
                       ("empty", "")):
        write("client_frame", name, data)


def handshake_seeds():
    for name, data in (("bearer", "Bearer x"),
                       ("bearer_spaces", "bearer \t abc.def.ghi  "),
                       ("basic", "Basic dXNlcjpwYXNz"),
                       ("protocols", "wsgate.v1, bearer.a.b.c"),
                       ("protocols_empty_token", "wsgate.v1,bearer.,x"),
                       ("since", "123"),
                       ("since_max", "18446744073709551615"),
                       ("since_overflow", "18446744073709551616"),
                       ("since_sign", "-1"),
                       ("empty", "")):
        write("handshake", name, data)


def payload_json_seeds():
    for name, data in (("object", b'{"a":[1,2.5,true,false,null,"x"]}'),
                       ("nul_escape", b'"\\u0000"'),
                       ("number_ws", b"  123 \n"),
                       ("big_int", b"123456789012345678901234567890"),
                       ("overflow", b"1e400"),
                       ("two_values", b"1 2"),
                       ("duplicate_keys", b'{"a":1,"a":2}'),
                       ("truncated", b"["),
                       ("utf8", "é€𝄞 ok".encode()),
                       ("c1", b"\xc2\x85"),
                       ("surrogate", b"\xed\xa0\x80"),
                       ("overlong", b"\xc0\xaf"),
                       ("del", b"a\x7fb"),
                       ("empty", b"")):
        write("payload_json", name, data)


if __name__ == "__main__":
    request_seeds()
    jwt_seeds()
    client_frame_seeds()
    handshake_seeds()
    payload_json_seeds()
