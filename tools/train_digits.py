"""Trains the digit model fixtures on real data and writes them with the held-out set.

Data: scikit-learn's bundled `load_digits` (1,797 real 8x8 digits, values 0..16; ships in
the wheel, no download; BSD-3). Each digit is scaled to [0,1] (value/16), upscaled to 28x28
with bilinear interpolation (`scipy.ndimage.zoom(img, 3.5, order=1)`, corners aligned),
clipped to [0,1] and rounded to 8 bits (pixel = round(value*255)); models train and are
evaluated on pixel/255.0 as float32, so the committed u8 held-out set is exactly what they saw.
Split: stratified 80/20 (`train_test_split(test_size=0.2, stratify=y, random_state=SEED)`),
360 held-out digits.

Writes (all ONNX opset 13, ir_version 8, weights float32, outputs are logits, no softmax):
  fixtures/models/mnist-mlp.onnx      784-128-10 MLP: Gemm, Relu, Gemm (devnet's example model)
  fixtures/models/digits-mlp-56.onnx  784-56-10 MLP:  Gemm, Relu, Gemm
  fixtures/models/digits-cnn.onnx     Conv(1->8, 5x5, s2) Relu Conv(8->16, 3x3, s2) Relu
                                      Flatten Gemm(400->10)
  fixtures/digits/heldout-images.u8   N*784 bytes, row-major 28x28
  fixtures/digits/heldout-labels.u8   N bytes
Gemm weights are stored [in, out] (no transB). The MLPs are sklearn MLPClassifier (adam);
the CNN is trained here in numpy (im2col, Adam). Accuracies are checked with onnxruntime on
the written ONNX files and the written u8 data.

Run: python3 tools/train_digits.py [--root .] [--only mnist-mlp|digits-mlp-56|digits-cnn|data]
Needs numpy, scipy, scikit-learn, onnx, onnxruntime.
"""
import argparse
import os
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20261205


def load_data():
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    imgs = d.images.astype(np.float64) / 16.0
    big = np.stack([zoom(im, 3.5, order=1) for im in imgs])
    assert big.shape[1:] == (28, 28)
    u8 = np.round(np.clip(big, 0.0, 1.0) * 255.0).astype(np.uint8)
    labels = d.target.astype(np.uint8)
    idx = np.arange(len(labels))
    tr, te = train_test_split(idx, test_size=0.2, stratify=labels, random_state=SEED)
    return u8[tr], labels[tr], u8[np.sort(te)], labels[np.sort(te)]


def to_float(u8):
    return (u8.astype(np.float32) / 255.0).astype(np.float32)


def save(model, path):
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)
    print(f"wrote {path}")


def mlp_onnx(w1, b1, w2, b2, name):
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "w1", "b1"], ["h1"], name="fc1"),
            helper.make_node("Relu", ["h1"], ["h1r"], name="relu1"),
            helper.make_node("Gemm", ["h1r", "w2", "b2"], ["output"], name="fc2"),
        ],
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 784])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])],
        initializer=[
            numpy_helper.from_array(np.asarray(w1, np.float32), "w1"),
            numpy_helper.from_array(np.asarray(b1, np.float32), "b1"),
            numpy_helper.from_array(np.asarray(w2, np.float32), "w2"),
            numpy_helper.from_array(np.asarray(b2, np.float32), "b2"),
        ],
    )
    return helper.make_model(graph, producer_name="haca-fixtures", opset_imports=[helper.make_opsetid("", 13)])


def train_mlp(xtr, ytr, hidden):
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=(hidden,),
        activation="relu",
        solver="adam",
        alpha=1e-3,
        batch_size=32,
        learning_rate_init=1e-3,
        max_iter=200,
        random_state=SEED,
    )
    clf.fit(xtr.reshape(len(xtr), 784), ytr)
    (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_
    return w1, b1, w2, b2  # w1 [784,hidden], w2 [hidden,10]: Gemm without transB


# --- CNN in numpy -----------------------------------------------------------------------

CONV1 = dict(cout=8, cin=1, k=5, s=2)  # 28 -> 12
CONV2 = dict(cout=16, cin=8, k=3, s=2)  # 12 -> 5
FLAT = 16 * 5 * 5


def im2col(x, k, s):
    """x [B,C,H,W] -> cols [B,OH,OW,C*k*k] (pads 0)."""
    b, c, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # B,C,H-k+1,W-k+1,k,k
    win = win[:, :, : s * (oh - 1) + 1 : s, : s * (ow - 1) + 1 : s]  # B,C,OH,OW,k,k
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(b, oh, ow, c * k * k)


def col2im(dcols, xshape, k, s):
    b, c, h, w = xshape
    _, oh, ow, _ = dcols.shape
    d = dcols.reshape(b, oh, ow, c, k, k)
    dx = np.zeros(xshape, dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dx[:, :, i : i + s * oh : s, j : j + s * ow : s] += d[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dx


def conv_fwd(x, w, b, s):
    cout, cin, k, _ = w.shape
    cols = im2col(x, k, s)
    out = cols @ w.reshape(cout, -1).T + b  # B,OH,OW,cout
    return out.transpose(0, 3, 1, 2), cols


def conv_bwd(dout, cols, xshape, w, s, need_dx):
    cout, cin, k, _ = w.shape
    d = dout.transpose(0, 2, 3, 1)  # B,OH,OW,cout
    dw = (d.reshape(-1, cout).T @ cols.reshape(-1, cols.shape[-1])).reshape(w.shape)
    db = d.sum(axis=(0, 1, 2))
    dx = col2im(d @ w.reshape(cout, -1), xshape, k, s) if need_dx else None
    return dx, dw, db


def cnn_forward(p, x):
    z1, c1 = conv_fwd(x, p["c1w"], p["c1b"], CONV1["s"])
    a1 = np.maximum(z1, 0)
    z2, c2 = conv_fwd(a1, p["c2w"], p["c2b"], CONV2["s"])
    a2 = np.maximum(z2, 0)
    f = a2.reshape(len(x), -1)  # ONNX Flatten(axis=1) of NCHW: (C,H,W) order
    logits = f @ p["fw"] + p["fb"]
    return logits, (x, z1, c1, a1, z2, c2, a2, f)


def train_cnn(xtr, ytr, epochs=40, batch=32, lr=2e-3, wd=1e-4):
    rng = np.random.default_rng(SEED)

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    p = {
        "c1w": he((8, 1, 5, 5), 25),
        "c1b": np.zeros(8, np.float32),
        "c2w": he((16, 8, 3, 3), 72),
        "c2b": np.zeros(16, np.float32),
        "fw": he((FLAT, 10), FLAT),
        "fb": np.zeros(10, np.float32),
    }
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    b1, b2, eps, t = 0.9, 0.999, 1e-8, 0
    x = xtr.reshape(-1, 1, 28, 28)
    for ep in range(epochs):
        order = rng.permutation(len(x))
        step_lr = lr * 0.5 * (1 + np.cos(np.pi * ep / epochs))  # cosine decay
        loss_sum = 0.0
        for i in range(0, len(x), batch):
            bi = order[i : i + batch]
            xb, yb = x[bi], ytr[bi]
            logits, (x0, z1, c1, a1, z2, c2, a2, f) = cnn_forward(p, xb)
            logits = logits - logits.max(axis=1, keepdims=True)
            pr = np.exp(logits)
            pr /= pr.sum(axis=1, keepdims=True)
            loss_sum += -np.log(pr[np.arange(len(yb)), yb] + 1e-12).sum()
            dl = pr
            dl[np.arange(len(yb)), yb] -= 1
            dl /= len(yb)
            g = {"fw": f.T @ dl, "fb": dl.sum(0)}
            da2 = (dl @ p["fw"].T).reshape(a2.shape) * (z2 > 0)
            da1, g["c2w"], g["c2b"] = conv_bwd(da2, c2, a1.shape, p["c2w"], CONV2["s"], True)
            dz1 = da1 * (z1 > 0)
            _, g["c1w"], g["c1b"] = conv_bwd(dz1, c1, x0.shape, p["c1w"], CONV1["s"], False)
            t += 1
            for k in p:
                gk = g[k] + (wd * p[k] if k.endswith("w") else 0)
                m[k] = b1 * m[k] + (1 - b1) * gk
                v[k] = b2 * v[k] + (1 - b2) * gk * gk
                mh, vh = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
                p[k] = (p[k] - step_lr * mh / (np.sqrt(vh) + eps)).astype(np.float32)
        if ep % 10 == 9 or ep == epochs - 1:
            print(f"  cnn epoch {ep + 1}/{epochs} loss {loss_sum / len(x):.4f}")
    return p


def cnn_onnx(p):
    graph = helper.make_graph(
        [
            helper.make_node(
                "Conv", ["input", "c1w", "c1b"], ["z1"], name="conv1",
                kernel_shape=[5, 5], strides=[2, 2], pads=[0, 0, 0, 0],
            ),
            helper.make_node("Relu", ["z1"], ["a1"], name="relu1"),
            helper.make_node(
                "Conv", ["a1", "c2w", "c2b"], ["z2"], name="conv2",
                kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 0, 0],
            ),
            helper.make_node("Relu", ["z2"], ["a2"], name="relu2"),
            helper.make_node("Flatten", ["a2"], ["flat"], name="flatten", axis=1),
            helper.make_node("Gemm", ["flat", "fw", "fb"], ["output"], name="fc"),
        ],
        "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])],
        initializer=[numpy_helper.from_array(p[k].astype(np.float32), k) for k in ["c1w", "c1b", "c2w", "c2b", "fw", "fb"]],
    )
    return helper.make_model(graph, producer_name="haca-fixtures", opset_imports=[helper.make_opsetid("", 13)])


def ort_accuracy(path, xs_u8, ys, shape):
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    xs = to_float(xs_u8)
    pred = np.array([int(np.argmax(sess.run(["output"], {"input": x.reshape(shape)})[0])) for x in xs])
    return float((pred == ys).mean())


def write_mnist_mlp(root, data=None):
    """The devnet example model alone (tools/make_mnist_mlp.py calls this)."""
    xtr, ytr, _, _ = data or load_data()
    path = os.path.join(root, "fixtures/models/mnist-mlp.onnx")
    save(mlp_onnx(*train_mlp(to_float(xtr), ytr, 128), "mnist_mlp"), path)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")))
    ap.add_argument("--only", choices=["mnist-mlp", "digits-mlp-56", "digits-cnn", "data"])
    a = ap.parse_args()
    root = a.root
    t0 = time.time()
    data = load_data()
    xtr, ytr, xte, yte = data
    print(f"train {len(ytr)}, held out {len(yte)} (per class {np.bincount(yte).tolist()})")
    want = lambda n: a.only in (None, n)  # noqa: E731
    if want("data"):
        os.makedirs(os.path.join(root, "fixtures/digits"), exist_ok=True)
        xte.reshape(-1).tofile(os.path.join(root, "fixtures/digits/heldout-images.u8"))
        yte.tofile(os.path.join(root, "fixtures/digits/heldout-labels.u8"))
        print(f"wrote fixtures/digits/heldout-*.u8 ({len(yte)} digits)")
    results = {}
    if want("mnist-mlp"):
        t = time.time()
        path = write_mnist_mlp(root, data)
        results["mnist-mlp"] = (ort_accuracy(path, xte, yte, (1, 784)), time.time() - t)
    if want("digits-mlp-56"):
        t = time.time()
        path = os.path.join(root, "fixtures/models/digits-mlp-56.onnx")
        save(mlp_onnx(*train_mlp(to_float(xtr), ytr, 56), "digits_mlp_56"), path)
        results["digits-mlp-56"] = (ort_accuracy(path, xte, yte, (1, 784)), time.time() - t)
    if want("digits-cnn"):
        t = time.time()
        p = train_cnn(to_float(xtr), ytr)
        path = os.path.join(root, "fixtures/models/digits-cnn.onnx")
        save(cnn_onnx(p), path)
        results["digits-cnn"] = (ort_accuracy(path, xte, yte, (1, 1, 28, 28)), time.time() - t)
    for name, (acc, secs) in results.items():
        print(f"{name}: held-out accuracy (onnxruntime, u8 inputs) {acc:.4f}  trained in {secs:.1f}s")
    print(f"total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
