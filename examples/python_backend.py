#!/usr/bin/env python3
"""A Python agent backend behind the wsgate sidecar (plain asyncio; the same
code runs inside FastAPI, see below).

  python_backend.py --user U --run R   one shot: send the five critical events
                                       of run R to user U, print each result,
                                       exit 0 (1 if the sidecar refused or was
                                       unreachable)
  python_backend.py                    service: print every inbound message; a
                                       client frame {"type":"run"} (optional
                                       "run_id") runs the agent for its user

Sockets: --control / --inbound, or WSGATE_CONTROL / WSGATE_INBOUND (the
sidecar's own variables), default ipc:///tmp/wsgate/{control,inbound}.ipc.
Uses the installed wsgate package, else the repository's clients/python.

In FastAPI, one client per process, opened in the lifespan:

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with wsgate.AsyncClient(CONTROL) as client:
            app.state.wsgate = client
            pump = asyncio.create_task(serve_inbound(client, INBOUND, 0.0))
            yield
            pump.cancel()

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.post("/runs/{user_id}/{run_id}")
    async def start_run(user_id: str, run_id: str, request: fastapi.Request):
        await run_agent(request.app.state.wsgate, user_id, run_id, "", 0.0)
"""

import argparse
import asyncio
import json
import os
import sys
import uuid

try:
    import wsgate
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))
    import wsgate

from wsgate import Event, EventType

# What a toy agent says at each of the five critical steps.
STEPS = [
    (EventType.AGENT_STARTED, {"message": "Looking into it"}),
    (EventType.AGENT_THINKING, {"thought": "I should search the docs"}),
    (EventType.TOOL_EXECUTING, {"tool": "search", "args": {"q": "wsgate"}}),
    (EventType.TOOL_COMPLETED, {"tool": "search", "result": "3 hits"}),
    (EventType.AGENT_COMPLETED, {"answer": "Here is what I found"}),
]


async def run_agent(client, user_id, run_id, thread_id, step_delay):
    """Sends the five events of one run, in order; returns their results."""
    results = []
    for etype, payload in STEPS:
        res = await client.send_event(Event(user_id, etype, payload, run_id=run_id, thread_id=thread_id))
        print(f"{user_id} {run_id} {etype.wire_name} seq={res.seq} connections={res.connections}"
              f"{' retained' if res.retained else ''}", flush=True)
        results.append(res)
        if step_delay:
            await asyncio.sleep(step_delay)  # the agent's work
    return results


async def serve_inbound(client, inbound_url, step_delay):
    """Prints what browsers send and their connection notices; a
    {"type":"run"} frame starts a run for the user who sent it."""
    runs = set()
    async for msg in wsgate.inbound(inbound_url):
        kind = msg.WhichOneof("body")
        body = getattr(msg, kind)
        if kind == "client_message":
            print(f"inbound client_message conn={body.conn_id} user={body.user_id} data={body.data.decode(errors='replace')}", flush=True)
            try:
                data = json.loads(body.data)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("type") == "run":
                run_id = str(data.get("run_id") or "r-" + uuid.uuid4().hex[:8])
                task = asyncio.create_task(run_agent(client, body.user_id, run_id, "", step_delay))
                runs.add(task)
                task.add_done_callback(runs.discard)
        elif kind == "opened":
            print(f"inbound opened conn={body.conn_id} user={body.user_id} peer={body.peer}", flush=True)
        else:
            print(f"inbound closed conn={body.conn_id} user={body.user_id} code={body.code} reason={body.reason}", flush=True)


async def main(args):
    async with wsgate.AsyncClient(args.control, timeout=args.timeout) as client:
        if args.user:
            await run_agent(client, args.user, args.run, args.thread, args.step_delay)
        else:
            await serve_inbound(client, args.inbound, args.step_delay)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--control", default=os.environ.get("WSGATE_CONTROL", wsgate.DEFAULT_CONTROL))
    p.add_argument("--inbound", default=os.environ.get("WSGATE_INBOUND", wsgate.DEFAULT_INBOUND))
    p.add_argument("--user", help="one shot: send the five events to this user, then exit")
    p.add_argument("--run", default="r1", help="run id of the one shot (default r1)")
    p.add_argument("--thread", default="", help="thread id of the one shot")
    p.add_argument("--step-delay", type=float, default=0.0, help="seconds between two events")
    p.add_argument("--timeout", type=float, default=wsgate.DEFAULT_TIMEOUT, help="seconds per call")
    return p.parse_args(argv)


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args(sys.argv[1:])))
    except wsgate.WsgateError as e:
        print(f"python_backend: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
