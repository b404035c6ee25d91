"""The op types inside a SavedModel, to check what its serving graph does (and does not) contain."""

from __future__ import annotations

from pathlib import Path

from tensorflow.core.protobuf import saved_model_pb2

# Ops a RandomRotation/Zoom/Translation, an ElasticDistortion or a GridDistortion leaves in a graph
# that applies it.
AUGMENT_OPS = ("ImageProjectiveTransform", "RandomUniform", "StatelessRandom")


def graph_ops(saved_model_dir: Path) -> set[str]:
    """Every op type in a SavedModel: its graphs and all the functions in their libraries."""
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    ops = set()
    for meta_graph in proto.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def augmentation_ops(saved_model_dir: Path) -> set[str]:
    return {op for op in graph_ops(saved_model_dir) if op.startswith(AUGMENT_OPS)}
