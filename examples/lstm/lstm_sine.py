#!/usr/bin/env python
"""An LSTM that predicts the next value of a noisy sine wave (Caffe's ``LSTM`` layer).

Each sequence is x_t = A sin(2 pi t / period + phase) + noise, with the amplitude A in
[0.6, 1.2], the period in [12, 30] steps, a random phase and Gaussian noise (sd 0.1), all drawn
per sequence from fixed seeds; the net reads x_t and predicts x_{t+1}.

The net is built with NetSpec in Caffe's time-major layout: ``data`` T x N x 1, ``cont``
T x N (0 at t = 0: every sequence starts with a fresh state, 1 after), ``LSTM``
(recurrent_param num_output H) -> ``InnerProduct`` (axis 2, one output) -> ``EuclideanLoss``
against ``target`` T x N x 1. Only BVLC fields are used, so OUT/train.prototxt and
OUT/deploy.prototxt (written with ``to_proto()``) load in BVLC Caffe. Trained with decaf's Adam.

Reported on held-out sequences, over the steps t >= 5 (the first steps have too little context
to tell the phase and the period): the mean squared error of the prediction against the noisy
next value, the same for "predict the last value" (x_{t+1} ~ x_t), and the error against the
noise-free next value. OUT/lstm_sine.png plots prediction and target for a few sequences.

    python examples/lstm/lstm_sine.py --out /tmp/lstm            # full form
    python examples/lstm/lstm_sine.py --quick --out /tmp/lstm_q  # CI form
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
from decaf.net_spec import NetSpec, layers as L  # noqa: E402
from decaf.proto import caffe_pb2  # noqa: E402

NOISE = 0.1
BURN_IN = 5


def sequences(rs, T, N):
    """(inputs T x N x 1, noisy targets T x N x 1, clean targets T x N x 1)."""
    t = np.arange(T + 1)[:, None]
    amp = rs.uniform(0.6, 1.2, N)
    period = rs.uniform(12, 30, N)
    phase = rs.uniform(0, 2 * np.pi, N)
    clean = amp * np.sin(2 * np.pi * t / period + phase)
    noisy = clean + rs.normal(0, NOISE, clean.shape)
    f = lambda a: a[:, :, None].astype(np.float32)  # noqa: E731
    return f(noisy[:-1]), f(noisy[1:]), f(clean[1:])


def lstm_net(T, N, hidden, train=True):
    n = NetSpec()
    if train:
        n.data, n.cont, n.target = L.Input(shape=[dict(dim=[T, N, 1]), dict(dim=[T, N]),
                                                  dict(dim=[T, N, 1])], ntop=3)
    else:
        n.data, n.cont = L.Input(shape=[dict(dim=[T, N, 1]), dict(dim=[T, N])], ntop=2)
    n.lstm = L.LSTM(n.data, n.cont, recurrent_param=dict(
        num_output=hidden, weight_filler=dict(type="uniform", min=-0.1, max=0.1),
        bias_filler=dict(type="constant", value=0)))
    n.pred = L.InnerProduct(n.lstm, num_output=1, axis=2, weight_filler=dict(type="gaussian",
                                                                              std=0.1),
                            bias_filler=dict(type="constant", value=0))
    if train:
        n.loss = L.EuclideanLoss(n.pred, n.target)
    return n.to_proto()


def solver_param(net_param, iters, lr, seed):
    s = caffe_pb2.SolverParameter()
    s.net_param.CopyFrom(net_param)
    s.type = "Adam"
    s.base_lr = lr
    s.momentum = 0.9
    s.momentum2 = 0.999
    s.lr_policy = "step"
    s.gamma = 0.3
    s.stepsize = max(1, int(iters * 0.7))
    s.clip_gradients = 1.0
    s.max_iter = iters
    s.display = 0
    s.random_seed = seed
    s.snapshot_after_train = False
    return s


def cont_for(T, N):
    c = np.ones((T, N), np.float32)
    c[0] = 0
    return c


def plot(x, y, clean, pred, path, k=3):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(k, 1, figsize=(8, 2.2 * k), sharex=True)
    t = np.arange(1, x.shape[0] + 1)
    for j, ax in enumerate(axes):
        ax.plot(t, y[:, j, 0], ".", ms=4, color="0.5", label="target (noisy next value)")
        ax.plot(t, clean[:, j, 0], "-", lw=1, color="0.75", label="noise-free next value")
        ax.plot(t, pred[:, j, 0], "-", lw=1.5, color="C3", label="LSTM prediction")
        ax.axvspan(0.5, BURN_IN + 0.5, color="0.93")
    axes[0].legend(fontsize=7, loc="upper right", ncol=3)
    axes[-1].set_xlabel("t (shaded: burn-in, not scored)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=None, help="full: 3000, quick: 800")
    ap.add_argument("--out", default="lstm_out", help="output directory")
    ap.add_argument("--quick", action="store_true", help="reduced form for CI")
    ap.add_argument("--timesteps", type=int, default=50)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=None, help="full: 32, quick: 16")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--test-streams", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1701)
    args = ap.parse_args(argv)
    if args.iters is None:
        args.iters = 800 if args.quick else 3000
    if args.hidden is None:
        args.hidden = 16 if args.quick else 32
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    decaf.init_log(1)
    decaf.set_mode_cpu()
    T, N = args.timesteps, args.streams
    train_net = lstm_net(T, N, args.hidden)
    deploy = lstm_net(T, args.test_streams, args.hidden, train=False)
    for name, p in (("train.prototxt", train_net), ("deploy.prototxt", deploy)):
        with open(os.path.join(args.out, name), "w") as f:
            f.write(str(p))
    solver = decaf.get_solver(solver_param(train_net, args.iters, args.lr, args.seed))
    net = solver.net
    rs = np.random.RandomState(args.seed)
    net.blobs["cont"].data[...] = cont_for(T, N)

    def feed():
        x, y, _ = sequences(rs, T, N)
        net.blobs["data"].data[...] = x
        net.blobs["target"].data[...] = y

    solver.add_callback(feed)
    print("LSTM on noisy sines: %d iterations, T %d x N %d, hidden %d"
          % (args.iters, T, N, args.hidden), flush=True)
    t0 = time.time()
    chunk = max(1, args.iters // 5)
    while solver.iter < args.iters:
        solver.step(min(chunk, args.iters - solver.iter))
        print("  iter %d  loss %.4f  (%.0fs)" % (solver.iter, float(net.blobs["loss"].data),
                                                 time.time() - t0), flush=True)
    train_s = time.time() - t0
    test = decaf.Net(deploy, decaf.TEST)
    test.share_trained_layers_with(net)
    x, y, clean = sequences(np.random.RandomState(args.seed + 7919), T, args.test_streams)
    test.blobs["data"].data[...] = x
    test.blobs["cont"].data[...] = cont_for(T, args.test_streams)
    test.forward()
    pred = test.blobs["pred"].data.copy()
    s = slice(BURN_IN, None)
    res = dict(mse=float(np.mean((pred[s] - y[s]) ** 2)),
               mse_last_value=float(np.mean((x[s] - y[s]) ** 2)),
               mse_clean=float(np.mean((pred[s] - clean[s]) ** 2)),
               noise_floor=NOISE ** 2, iters=args.iters, train_seconds=train_s)
    plot(x, y, clean, pred, os.path.join(args.out, "lstm_sine.png"))
    print("\nheld-out: %d sequences x %d steps (scored from t = %d)"
          % (args.test_streams, T, BURN_IN))
    print("test MSE (vs noisy next value):     %.5f" % res["mse"])
    print("MSE of predicting the last value:   %.5f" % res["mse_last_value"])
    print("test MSE vs noise-free next value:  %.5f   (noise variance %.4f)"
          % (res["mse_clean"], NOISE ** 2))
    print("training: %.0f s" % train_s)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
