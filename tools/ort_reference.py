"""Runs an ONNX model in onnxruntime on a deterministic input and writes the input and the
reference outputs as JSON, for haca's cross-runtime conformance tests.

python3 tools/ort_reference.py MODEL.onnx 1,3,64,64 OUT.json
"""
import json
import sys

import numpy as np
import onnxruntime as ort


def deterministic_input(shape):
    n = int(np.prod(shape))
    return (np.sin(np.arange(n, dtype=np.float64) * 0.37) * 0.5 + 0.5).astype(np.float32).reshape(shape)


def main():
    model, shape, out = sys.argv[1], [int(d) for d in sys.argv[2].split(",")], sys.argv[3]
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = deterministic_input(shape)
    outputs = sess.run(None, {name: x})
    ref = {
        "runtime": f"onnxruntime {ort.__version__}",
        "input": {name: {"shape": list(x.shape), "data": x.ravel().tolist()}},
        "output": {
            o.name: {"shape": list(v.shape), "data": v.ravel().astype(np.float64).tolist()}
            for o, v in zip(sess.get_outputs(), outputs)
        },
    }
    with open(out, "w") as f:
        json.dump(ref, f)
    print(f"wrote {out}: {[ (o.name, v.shape) for o, v in zip(sess.get_outputs(), outputs)]}")


if __name__ == "__main__":
    main()
