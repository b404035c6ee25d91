"""The transport ceiling: a bare Python gRPC server that answers every Predict with pre-encoded bytes.

No TensorFlow, no decoding, no model: the same grpcio, thread pool and options as digits-serve, so
its throughput is the most any Python gRPC Predict server can answer on this machine with these
clients. `make bench-serve` measures it beside digits-serve to show what ratios the hardware allows.
"""

from __future__ import annotations

import argparse
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from common import PREDICT_METHOD


class _CannedPredict(grpc.GenericRpcHandler):
    def __init__(self, response: bytes):
        self._handler = grpc.unary_unary_rpc_method_handler(lambda request, context: response)

    def service(self, handler_call_details):
        return self._handler if handler_call_details.method == PREDICT_METHOD else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--response", type=Path, required=True, help="file with a serialized PredictResponse")
    parser.add_argument("--max-threads", type=int, default=8, help="worker threads (digits-serve: 4 x CPUs)")
    args = parser.parse_args(argv)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.max_threads),
        handlers=[_CannedPredict(args.response.read_bytes())],
        options=[("grpc.so_reuseport", 0)],
    )
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"echo gRPC server on 127.0.0.1:{args.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
