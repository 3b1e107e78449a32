#!/usr/bin/env python
"""Center loss on MNIST (Wen et al., ECCV 2016, Fig. 3): 2-D deep features of a LeNet++-style
net trained with softmax loss alone and with softmax + lambda * center loss.

The net (written with NetSpec into OUT/): three conv + PReLU stages with max pooling, ``ip1``
(InnerProduct, num_output 2) + PReLU: the 2-D feature, ``ip2`` (10 classes, no bias) +
SoftmaxWithLoss, and for lambda > 0 a ``CenterLoss`` on ip1 with loss_weight lambda. As in
caffe-face's mnist_example the centres have ``param { lr_mult: 1 decay_mult: 0 }`` under an SGD
solver with momentum 0.9 and weight decay 5e-4 (``--center-lr-mult`` changes it); caffe-face's
centre step is not scaled by lambda, so lambda only sets how hard the features are pulled.

The MNIST files are read from data/mnist/*.gz (no LMDB); batches are written into the Input
blobs by a solver callback. For every lambda the script writes OUT/features_lambda_<l>.png (the
test features coloured by class) and prints the test accuracy and the compactness of the
features: ``intra`` = mean distance of a test feature to its class mean, ``inter`` = mean
distance between class means, and ``intra/inter``, which does not depend on the feature scale.

    python examples/center_loss/mnist_center_loss.py --out /tmp/center_loss      # full form
    python examples/center_loss/mnist_center_loss.py --quick --out /tmp/cl_quick  # CI form
"""
import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import decaf  # noqa: E402
from decaf.data.mnist import load_mnist  # noqa: E402
from decaf.net_spec import NetSpec, layers as L, params as P  # noqa: E402
from decaf.proto import caffe_pb2  # noqa: E402

MNIST = os.path.join(ROOT, "data", "mnist")
COLORS = ["#f31d29", "#b7509f", "#3853a4", "#6cbb50", "#ff8302", "#a84f41", "#7a3fd7",
          "#231f20", "#00b0f0", "#c8b400"]


def conv_prelu(n, name, bottom, num_output, kernel, pad):
    """n.<name> = Convolution, n.prelu_<name> = PReLU in place (its top is <name>)."""
    n[name] = L.Convolution(bottom, num_output=num_output, kernel_size=kernel, pad=pad,
                            weight_filler=dict(type="xavier"),
                            bias_filler=dict(type="constant", value=0),
                            param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)])
    n["prelu_" + name] = L.PReLU(n[name], in_place=True)
    return n["prelu_" + name]


def lenet_pp(batch, widths, lam=0.0, center_lr_mult=1.0, train=True):
    """NetSpec of the LeNet++-style net; ``train=False``: the deploy net (ip1 and ip2 only)."""
    n = NetSpec()
    if train:
        n.data, n.label = L.Input(shape=[dict(dim=[batch, 1, 28, 28]), dict(dim=[batch])],
                                  ntop=2)
    else:
        n.data = L.Input(shape=dict(dim=[batch, 1, 28, 28]))
    x = conv_prelu(n, "conv1", n.data, widths[0], 5, 2)
    n.pool1 = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    x = conv_prelu(n, "conv2", n.pool1, widths[1], 5, 2)
    n.pool2 = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    x = conv_prelu(n, "conv3", n.pool2, widths[2], 3, 1)
    n.pool3 = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.ip1 = L.InnerProduct(n.pool3, num_output=2, weight_filler=dict(type="xavier"),
                           bias_filler=dict(type="constant", value=0),
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)])
    n.prelu_ip1 = L.PReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.prelu_ip1, num_output=10, bias_term=False,
                           weight_filler=dict(type="xavier"),
                           param=[dict(lr_mult=1, decay_mult=1)])
    if train:
        n.softmax_loss = L.SoftmaxWithLoss(n.ip2, n.label)
        if lam > 0:
            n.center_loss = L.CenterLoss(n.prelu_ip1, n.label, loss_weight=lam,
                                         param=[dict(lr_mult=center_lr_mult, decay_mult=0)],
                                         center_loss_param=dict(
                                             num_output=10, center_filler=dict(type="xavier")))
    return n.to_proto()


def solver_param(net_param, iters, seed, base_lr, kind="SGD"):
    s = caffe_pb2.SolverParameter()
    s.net_param.CopyFrom(net_param)
    s.type = kind
    s.base_lr = base_lr
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.lr_policy = "multistep"          # caffe-face: gamma 0.8 at 50%, 80%, 100% of 10k
    s.gamma = 0.8
    s.stepvalue.extend([int(iters * 0.5), int(iters * 0.8)])
    s.max_iter = iters
    s.display = 0
    s.snapshot_after_train = False
    s.random_seed = seed
    return s


def normalise(images):
    return ((images.astype(np.float32) - 127.5) * 0.0078125)[:, None]


def train(args, lam, train_x, train_y, test_x, test_y):
    """Train one net; returns (features, predictions, results dict)."""
    widths = args.widths or ((16, 32, 64) if args.quick else (32, 64, 128))
    tag = "lambda_%g" % lam
    net_param = lenet_pp(args.batch, widths, lam, args.center_lr_mult)
    deploy = lenet_pp(args.test_batch, widths, train=False)
    sp = solver_param(net_param, args.iters, args.seed, args.base_lr, args.solver)
    with open(os.path.join(args.out, "train_%s.prototxt" % tag), "w") as f:
        f.write(str(net_param))
    with open(os.path.join(args.out, "deploy.prototxt"), "w") as f:
        f.write(str(deploy))
    solver = decaf.get_solver(sp)
    net = solver.net
    rng = np.random.RandomState(args.seed)
    state = {"order": rng.permutation(len(train_x)), "pos": 0}

    def feed():
        if state["pos"] + args.batch > len(state["order"]):
            state["order"], state["pos"] = rng.permutation(len(train_x)), 0
        idx = state["order"][state["pos"]:state["pos"] + args.batch]
        state["pos"] += args.batch
        net.blobs["data"].data[...] = train_x[idx]
        net.blobs["label"].data[...] = train_y[idx]

    solver.add_callback(feed)
    t0 = time.time()
    chunk = max(1, args.iters // 5)
    while solver.iter < args.iters:
        solver.step(min(chunk, args.iters - solver.iter))
        print("  [%s] iter %d  softmax loss %.4f%s  (%.0fs)"
              % (tag, solver.iter, float(net.blobs["softmax_loss"].data),
                 "  center loss %.4f" % float(net.blobs["center_loss"].data) if lam > 0 else "",
                 time.time() - t0), flush=True)
    train_s = time.time() - t0
    test_net = decaf.Net(deploy, decaf.TEST)
    test_net.share_trained_layers_with(net)
    feats, preds = [], []
    for k in range(0, len(test_x), args.test_batch):
        xb = test_x[k:k + args.test_batch]
        test_net.blobs["data"].reshape(xb.shape)
        test_net.blobs["data"].data[...] = xb
        test_net.forward()
        feats.append(test_net.blobs["ip1"].data.copy())
        preds.append(test_net.blobs["ip2"].data.argmax(axis=1))
    feats, preds = np.concatenate(feats), np.concatenate(preds)
    res = dict(lam=lam, accuracy=float((preds == test_y).mean()), train_seconds=train_s,
               **compactness(feats, test_y))
    return feats, res


def compactness(feats, labels):
    """intra: mean ||f - mean of its class||; inter: mean distance between class means."""
    means = np.stack([feats[labels == c].mean(axis=0) for c in range(10)])
    intra = float(np.linalg.norm(feats - means[labels], axis=1).mean())
    d = np.linalg.norm(means[:, None] - means[None], axis=2)
    inter = float(d[np.triu_indices(10, 1)].mean())
    return dict(intra=intra, inter=inter, ratio=intra / inter,
                scale=float(np.sqrt((feats ** 2).sum(axis=1).mean())))


def plot(feats, labels, res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 5))
    for c in range(10):
        f = feats[labels == c]
        ax.scatter(f[:, 0], f[:, 1], s=2, c=COLORS[c], label=str(c), alpha=0.6, linewidths=0)
    title = "softmax only" if res["lam"] == 0 else "softmax + %g center loss" % res["lam"]
    ax.set_title("%s\nacc %.4f  intra/inter %.3f" % (title, res["accuracy"], res["ratio"]))
    ax.legend(markerscale=4, fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=None,
                    help="training iterations per net (full: 6000, quick: 2000)")
    ap.add_argument("--out", default="center_loss_out", help="output directory")
    ap.add_argument("--quick", action="store_true",
                    help="reduced form for CI: narrower net, 12k training / 2k test images, "
                    "lambda 0 and 0.05")
    ap.add_argument("--lambdas", type=float, nargs="+", default=None,
                    help="center loss weights; 0 = softmax only (default: 0 0.003 0.01)")
    ap.add_argument("--batch", type=int, default=None, help="full: 64, quick: 32")
    ap.add_argument("--test-batch", type=int, default=500)
    ap.add_argument("--base-lr", type=float, default=0.01)
    ap.add_argument("--center-lr-mult", type=float, default=1.0,
                    help="lr_mult of the centres (caffe-face's mnist_example: 1)")
    ap.add_argument("--solver", default="SGD", help="solver type (caffe-face: SGD)")
    ap.add_argument("--widths", type=int, nargs=3, default=None,
                    help="conv widths (full: 32 64 128, quick: 16 32 64)")
    ap.add_argument("--seed", type=int, default=1701)
    args = ap.parse_args(argv)
    if args.iters is None:
        args.iters = 2000 if args.quick else 6000
    if args.batch is None:
        args.batch = 32 if args.quick else 64
    if args.lambdas is None:   # the short quick run needs a stronger pull to show it
        args.lambdas = [0.0, 0.05] if args.quick else [0.0, 0.003, 0.01]
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    decaf.init_log(1)   # warnings and errors only
    decaf.set_mode_cpu()
    (trx, try_), (tex, tey) = load_mnist(os.path.join(MNIST, "train-images-idx3-ubyte.gz"),
                                         os.path.join(MNIST, "train-labels-idx1-ubyte.gz")), \
        load_mnist(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz"),
                   os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz"))
    if args.quick:
        trx, try_, tex, tey = trx[:12000], try_[:12000], tex[:2000], tey[:2000]
    trx, tex = normalise(trx), normalise(tex)
    try_, tey = try_.astype(np.float32), tey.astype(np.int64)
    print("center loss on MNIST: %d train / %d test images, %d iterations x batch %d per net"
          % (len(trx), len(tex), args.iters, args.batch), flush=True)
    results = []
    for lam in args.lambdas:
        feats, res = train(args, lam, trx, try_, tex, tey)
        path = os.path.join(args.out, "features_lambda_%g.png" % lam)
        plot(feats, tey, res, path)
        res["plot"] = path
        results.append(res)
    print("\n%-8s %9s %9s %9s %11s %9s" % ("lambda", "accuracy", "intra", "inter",
                                           "intra/inter", "train s"))
    for r in results:
        print("%-8g %9.4f %9.3f %9.3f %11.4f %9.0f" % (r["lam"], r["accuracy"], r["intra"],
                                                       r["inter"], r["ratio"],
                                                       r["train_seconds"]))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
