"""How an upstream system submits a flow to Ferry: straight onto the flows topic.

Needs only aiokafka and Python code generated from proto/ferry/v1 (here the
copy Ferry ships in shared/wire/pb; another system would run protoc itself).
The rules: topic `ferry.flows`, record key = flow id (UTF-8), value = a
ferry.v1.Envelope whose `type` is "ferry.v1.FlowSubmitted" and whose payload
is the serialized FlowSubmitted. The verdict comes back as TaskPlanned events
on `ferry.tasks.planned` or a FlowRejected on `ferry.flows.rejected` (key =
flow id), listing every offending field.

    python examples/upstream_producer.py --bootstrap 127.0.0.1:9092 --flow-id my-flow-1
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from aiokafka import AIOKafkaProducer
from google.protobuf import struct_pb2

from shared.wire.pb import envelope_pb2, flow_pb2


def noop_flow(flow_id: str) -> flow_pb2.FlowSubmitted:
    params = struct_pb2.Struct()
    params.update({"sleep_s": 0.1})
    first = flow_pb2.StepSpec(name="first", algorithm="ferry.noop", version="1", params=params,
                              parties=[flow_pb2.PartyRole(party="node-a", role="worker"),
                                       flow_pb2.PartyRole(party="node-b", role="worker")])
    second = flow_pb2.StepSpec(name="second", algorithm="ferry.noop", version="1", depends_on=["first"],
                               parties=[flow_pb2.PartyRole(party="node-a", role="worker")])
    return flow_pb2.FlowSubmitted(flow_id=flow_id, name="upstream-example", steps=[first, second],
                                  submitted_by="upstream-example", labels={"source": "example"})


def envelope_for(flow: flow_pb2.FlowSubmitted) -> bytes:
    return envelope_pb2.Envelope(
        event_id=uuid.uuid4().hex, type="ferry.v1.FlowSubmitted", key=flow.flow_id, sequence=1,
        producer=f"upstream-example/{uuid.uuid4().hex[:8]}", timestamp_ms=time.time_ns() // 1_000_000,
        schema_version=1, payload=flow.SerializeToString(),
    ).SerializeToString()


async def submit(bootstrap: str, flow: flow_pb2.FlowSubmitted) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait("ferry.flows", envelope_for(flow), key=flow.flow_id.encode())
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--flow-id", default=f"upstream-{uuid.uuid4().hex[:8]}")
    args = parser.parse_args()
    asyncio.run(submit(args.bootstrap, noop_flow(args.flow_id)))
    print(f"submitted {args.flow_id} to {args.bootstrap}")


if __name__ == "__main__":
    main()
