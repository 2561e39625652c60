"""The SP wire format and the event encoding, without a sidecar; and the
client against a hand-made rep0 peer that answers out of order."""

import asyncio
import os
import shutil
import struct
import tempfile
import unittest

import helpers  # noqa: F401 (first: puts the package on sys.path)

import wsgate
from wsgate import Event, EventType, _wire
from wsgate import wsgate_pb2 as pb


class WireTest(unittest.TestCase):
    def test_header_names_the_protocol(self):
        self.assertEqual(_wire.header(_wire.PROTO_REQ0), b"\x00SP\x00\x00\x30\x00\x00")
        self.assertEqual(_wire.header(_wire.PROTO_PULL0), b"\x00SP\x00\x00\x51\x00\x00")

    def test_frame_is_type_and_64_bit_length(self):
        self.assertEqual(_wire.frame(b"abc"), b"\x01" + struct.pack(">Q", 3) + b"abc")

    def test_request_id_word_has_the_high_bit_set(self):
        self.assertEqual(_wire.req_id_word(1), b"\x80\x00\x00\x01")
        self.assertEqual(_wire.req_id_word(0x1_0000_0005), b"\x80\x00\x00\x05")

    def test_only_ipc_urls(self):
        self.assertEqual(_wire.ipc_path("ipc:///tmp/x.ipc"), "/tmp/x.ipc")
        for bad in ("ipc://", "tcp://127.0.0.1:5", "/tmp/x.ipc"):
            with self.assertRaises(ValueError):
                _wire.ipc_path(bad)

    def test_event_payload_encoding(self):
        self.assertEqual(Event("u", EventType.AGENT_STARTED).to_pb().payload_json, b"")
        self.assertEqual(Event("u", EventType.AGENT_STARTED, {"a": [1, "é"]}).to_pb().payload_json,
                         '{"a":[1,"é"]}'.encode())
        self.assertEqual(Event("u", EventType.AGENT_STARTED, b'{"raw": 1}').to_pb().payload_json, b'{"raw": 1}')
        self.assertEqual(Event("u", EventType.AGENT_STARTED, "text").to_pb().payload_json, b'"text"')

    def test_event_ids_are_fresh_per_event_and_kept_by_it(self):
        a, b = Event("u", EventType.AGENT_STARTED), Event("u", EventType.AGENT_STARTED)
        self.assertNotEqual(a.event_id, b.event_id)
        self.assertEqual(a.to_pb().event_id, a.to_pb().event_id)

    def test_each_refusal_status_has_its_error(self):
        from wsgate.errors import error_of
        for status, cls in [(pb.INVALID_ARGUMENT, wsgate.InvalidArgument), (pb.RESOURCE_EXHAUSTED, wsgate.ResourceExhausted),
                            (pb.NOT_FOUND, wsgate.NotFound), (pb.INTERNAL, wsgate.Internal),
                            (pb.UNAVAILABLE, wsgate.Unavailable)]:
            err = error_of(status, "why")
            self.assertIs(type(err), cls)
            self.assertIsInstance(err, wsgate.WsgateError)
            self.assertEqual(str(err), "why")
        self.assertIsInstance(error_of(99, ""), wsgate.ProtocolError)

    def test_result_classes_have_every_field_of_their_messages(self):
        import dataclasses
        for cls, msg in [(wsgate.Stats, pb.Stats), (wsgate.Connection, pb.Connection)]:
            self.assertEqual([f.name for f in dataclasses.fields(cls)], [f.name for f in msg.DESCRIPTOR.fields])

    def test_event_types_are_the_schemas(self):
        self.assertEqual([t.name for t in EventType], [n for n in pb.EventType.keys() if n != "EVENT_TYPE_UNSPECIFIED"])
        self.assertEqual([int(t) for t in EventType], list(range(1, 8)))


class OutOfOrderPeerTest(unittest.IsolatedAsyncioTestCase):
    """A rep0 peer that reads three requests, then answers them last first."""

    async def test_replies_reach_their_calls_in_any_order(self):
        tmp = tempfile.mkdtemp(prefix="wsgate-py-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "rep.ipc")
        headers = []

        async def serve(reader, writer):
            writer.write(_wire.header(_wire.PROTO_REP0))
            headers.append(await reader.readexactly(8))
            reqs = [await _wire.read_frame(reader) for _ in range(3)]
            for body in reversed(reqs):
                req = pb.Request.FromString(body[4:])
                rep = pb.Reply(request_id=req.request_id, status=pb.OK,
                               disconnected=len(req.disconnect.user_id))
                writer.write(_wire.frame(body[:4] + rep.SerializeToString()))
            await writer.drain()
            await reader.read()  # until the client leaves
            writer.close()

        server = await asyncio.start_unix_server(serve, path)
        self.addAsyncCleanup(server.wait_closed)
        self.addCleanup(server.close)
        async with wsgate.AsyncClient("ipc://" + path, timeout=5) as client:
            got = await asyncio.gather(client.disconnect("a"), client.disconnect("bb"), client.disconnect("ccc"))
        self.assertEqual(got, [1, 2, 3])
        self.assertEqual(headers, [_wire.header(_wire.PROTO_REQ0)])

    async def test_peer_of_another_protocol_is_not_used(self):
        tmp = tempfile.mkdtemp(prefix="wsgate-py-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "push.ipc")

        async def serve(reader, writer):
            writer.write(_wire.header(_wire.PROTO_PUSH0))
            await reader.read()
            writer.close()

        server = await asyncio.start_unix_server(serve, path)
        self.addAsyncCleanup(server.wait_closed)
        self.addCleanup(server.close)
        async with wsgate.AsyncClient("ipc://" + path, timeout=0.5) as client:
            with self.assertRaises(wsgate.Unavailable) as cm:
                await client.ping()
        self.assertIn("does not speak SP protocol 0x31", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
