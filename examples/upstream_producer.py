"""How an upstream system submits a flow to Ferry: straight onto the flows topic.

Needs only aiokafka and Python code generated from proto/ferry/v1 (here the
copy Ferry ships in shared/wire/pb; another system would run protoc itself).
The rules: topic `ferry.flows`, record key = flow id (UTF-8), value = a
ferry.v1.Envelope whose `type` is "ferry.v1.FlowSubmitted" and whose payload
is the serialized FlowSubmitted. The verdict comes back as TaskPlanned events
on `ferry.tasks.planned` or a FlowRejected on `ferry.flows.rejected` (key =
flow id), listing every offending field.

The broker speaks mutual TLS only: the upstream system holds a certificate with role
``upstream`` from the federation's CA (`ferry certs issue upstream-erp --role upstream`),
which the ACLs allow to write flows and read verdicts, nothing else.

    python examples/upstream_producer.py --bootstrap 127.0.0.1:9092 --flow-id my-flow-1 \
        --ca ca.crt --cert upstream-erp.crt --key upstream-erp.key
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.helpers import create_ssl_context
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


async def submit(bootstrap: str, flow: flow_pb2.FlowSubmitted, ca: str, cert: str, key: str) -> None:
    tls = create_ssl_context(cafile=ca, certfile=cert, keyfile=key)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                security_protocol="SSL", ssl_context=tls, request_timeout_ms=30_000)
    await producer.start()
    try:
        await producer.send_and_wait("ferry.flows", envelope_for(flow), key=flow.flow_id.encode())
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--flow-id", default=f"upstream-{uuid.uuid4().hex[:8]}")
    # Defaults from a Ferry dev machine's environment (`eval "$(ferry kafka env)"`).
    cert_dir = Path(os.environ.get("FERRY_KAFKA__TLS_CERT_DIR", "."))
    parser.add_argument("--ca", default=os.environ.get("FERRY_KAFKA__TLS_CA_FILE", str(cert_dir / "ca.crt")))
    parser.add_argument("--cert", default=str(cert_dir / "upstream.crt"), help="client certificate, role upstream")
    parser.add_argument("--key", default=str(cert_dir / "upstream.key"))
    args = parser.parse_args()
    asyncio.run(submit(args.bootstrap, noop_flow(args.flow_id), args.ca, args.cert, args.key))
    print(f"submitted {args.flow_id} to {args.bootstrap}")


if __name__ == "__main__":
    main()
