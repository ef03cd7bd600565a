"""Writes the example model fixture: a 784-128-10 MLP (Gemm, Relu, Gemm) as ONNX.

Now trained on real digits: this is a pointer to tools/train_digits.py (which writes all the
digit models and the held-out set); this script writes only the example model, the same bytes.
Input `input` float32 [1,784]; output `output` float32 [1,10] (logits).
Run: python3 tools/make_mnist_mlp.py fixtures/models/mnist-mlp.onnx
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_digits  # noqa: E402

with tempfile.TemporaryDirectory() as root:
    path = train_digits.write_mnist_mlp(root)
    shutil.copyfile(path, sys.argv[1])
print(f"wrote {sys.argv[1]}")
