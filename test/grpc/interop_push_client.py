"""A gRPC client on Python's grpcio (gRPC C-core) for test/grpc/interop-python.test.ts.

Reads a plan as the first line of stdin: {"target": "host:port", "calls": [call, ...]}, each call
{"name", "method", "token" (or null), "to_usernames", "message" (PushMessage fields, msg_id as a
string; "content_bytes": n repeats "content" to n bytes), "compression" ("gzip" or null),
"timeout" (seconds or null)}. Makes the calls in order on ONE channel, in lock-step with the test:
prints {"ready": name} and waits for a line on stdin before each call, then prints its result,
{"name", "code" (grpc.StatusCode name), "details", "response" (PushResponse or null)}.
Stubs are generated now from proto/ with grpc_tools.protoc, so the messages are the wire
contract's, built by protobuf's own Python code rather than by the gateway's codec.
"""

import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def generate_stubs(out_dir):
    args = [
        "protoc",
        "-I" + PROTO_ROOT,
        "--python_out=" + out_dir,
        os.path.join(PROTO_ROOT, "gateway", "v1", "packet.proto"),
        os.path.join(PROTO_ROOT, "gateway", "v1", "push.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("grpc_tools.protoc failed on " + PROTO_ROOT)
    sys.path.insert(0, out_dir)


def build_request(packet_pb2, push_pb2, call):
    fields = dict(call["message"])
    content_bytes = fields.pop("content_bytes", None)
    if content_bytes is not None:
        unit = fields["content"]
        fields["content"] = (unit * (content_bytes // len(unit) + 1))[:content_bytes]
    fields["msg_id"] = int(fields["msg_id"])
    return push_pb2.PushRequest(to_usernames=call["to_usernames"], message=packet_pb2.PushMessage(**fields))


def main():
    plan = json.loads(sys.stdin.readline())
    with tempfile.TemporaryDirectory(prefix="interop-stubs-") as stubs:
        generate_stubs(stubs)
        from gateway.v1 import packet_pb2, push_pb2

        options = [
            # The oversize call must leave the client, so that the gateway is the one to refuse it.
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ]
        with grpc.insecure_channel(plan["target"], options=options) as channel:
            for call in plan["calls"]:
                method = channel.unary_unary(
                    call["method"],
                    request_serializer=push_pb2.PushRequest.SerializeToString,
                    response_deserializer=push_pb2.PushResponse.FromString,
                )
                metadata = None if call.get("token") is None else [("authorization", "Bearer " + call["token"])]
                compression = grpc.Compression.Gzip if call.get("compression") == "gzip" else None
                request = build_request(packet_pb2, push_pb2, call)
                print(json.dumps({"ready": call["name"]}), flush=True)
                if sys.stdin.readline() == "":
                    raise SystemExit("stdin closed before " + call["name"])
                result = {"name": call["name"], "code": "OK", "details": None, "response": None}
                try:
                    response = method(
                        request,
                        metadata=metadata,
                        compression=compression,
                        timeout=call.get("timeout"),
                    )
                    result["response"] = {
                        "msg_id": str(response.msg_id),
                        "error": response.error,
                        "failed_usernames": list(response.failed_usernames),
                    }
                except grpc.RpcError as error:
                    result["code"] = error.code().name
                    result["details"] = error.details()
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
