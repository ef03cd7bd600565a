"""Writes the example model fixture: a 784-128-10 MLP (Gemm, Relu, Gemm) as ONNX.

The weights are seeded random (no data set can be downloaded here), scaled like a trained
network so outputs stay in a sane range. Input `input` float32 [1,784]; output `output`
float32 [1,10]. Run: python3 tools/make_mnist_mlp.py fixtures/models/mnist-mlp.onnx
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(20261125)
w1 = (rng.standard_normal((784, 128)) * np.sqrt(2.0 / 784)).astype(np.float32)
b1 = (rng.standard_normal(128) * 0.01).astype(np.float32)
w2 = (rng.standard_normal((128, 10)) * np.sqrt(2.0 / 128)).astype(np.float32)
b2 = (rng.standard_normal(10) * 0.01).astype(np.float32)

graph = helper.make_graph(
    [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["h1r"], name="relu1"),
        helper.make_node("Gemm", ["h1r", "w2", "b2"], ["output"], name="fc2"),
    ],
    "mnist_mlp",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 784])],
    [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])],
    initializer=[
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
    ],
)
model = helper.make_model(graph, producer_name="haca-fixtures", opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
print(f"wrote {sys.argv[1]}")
