"""The naive baseline: a plain Flask app that calls Keras `model.predict` once per request.

This is the serving code people write first; the benchmark measures digits-serve against it. It takes
the same TF Serving row-format JSON body as digits-serve's REST API, so both are timed on equal requests.
"""

from __future__ import annotations

import argparse
import os
import sys


def create_app(model_dir: str):
    """A Flask app with one route, POST /v1/models/<name>:predict, backed by keras `Model.predict`."""
    import keras
    import numpy as np
    from flask import Flask, jsonify, request

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from client.contract import IMAGE_SIZE, INPUT_DTYPE, SIGNATURE_NAME

    layer = keras.layers.TFSMLayer(model_dir, call_endpoint=SIGNATURE_NAME)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE), dtype=INPUT_DTYPE)
    model = keras.Model(inputs, layer(inputs))
    app = Flask(__name__)

    @app.post("/v1/models/<name>:predict")
    def predict(name: str):
        images = np.asarray(request.get_json()["instances"], dtype=INPUT_DTYPE)
        outputs = model.predict(images, verbose=0)
        rows = [{key: value[i].tolist() for key, value in outputs.items()} for i in range(len(images))]
        return jsonify(predictions=rows)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    return app


def main(argv: list[str] | None = None) -> int:
    """Serve the naive app on Werkzeug's threaded server."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True, help="one SavedModel version directory")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    create_app(args.model_dir).run(host="127.0.0.1", port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
