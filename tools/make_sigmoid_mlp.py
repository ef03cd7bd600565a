"""Writes fixtures/models/sigmoid-mlp.onnx: a 4-3-2 MLP with a Sigmoid, an operator zkml mode
does not prove, so that tests see it refused by name. Run:
python3 tools/make_sigmoid_mlp.py fixtures/models/sigmoid-mlp.onnx
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)
w1 = rng.standard_normal((4, 3)).astype(np.float32)
b1 = np.zeros(3, np.float32)
w2 = rng.standard_normal((3, 2)).astype(np.float32)
b2 = np.zeros(2, np.float32)
graph = helper.make_graph(
    [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Sigmoid", ["h"], ["hs"], name="squash"),
        helper.make_node("Gemm", ["hs", "w2", "b2"], ["output"], name="fc2"),
    ],
    "sigmoid_mlp",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
    [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2])],
    initializer=[numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]],
)
model = helper.make_model(graph, producer_name="haca-fixtures", opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
print(f"wrote {sys.argv[1]}")
