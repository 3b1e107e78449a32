#!/usr/bin/env python
"""The classic pycaffe LeNet tutorial (Caffe's examples/01-learning-lenet.ipynb), as a script.

It runs unchanged against decaf through the `caffe` alias package: NetSpec writes the train and
test nets, an SGDSolver trains with a manual `step` loop that records the training loss and the
test accuracy, and two figures are saved: loss/accuracy curves and the conv1 filters.

    python examples/pycaffe/lenet_tutorial.py [--iters 200] [--test-interval 25] [--out DIR]
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import caffe  # noqa: E402
from caffe import layers as L, params as P  # noqa: E402


def lenet(lmdb, batch_size):
    # our version of LeNet: a series of linear and simple nonlinear transformations
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type='xavier'))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


SOLVER = """# The train/test net protocol buffer definition
train_net: "{out}/lenet_auto_train.prototxt"
test_net: "{out}/lenet_auto_test.prototxt"
test_iter: 100
test_interval: 500
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 100
max_iter: 10000
snapshot: 5000
snapshot_prefix: "{out}/lenet"
random_seed: 1701
solver_mode: CPU
"""


def ensure_lmdbs(out):
    """Convert the bundled MNIST IDX files once (what examples/mnist/create_mnist.sh does)."""
    from decaf.data.mnist import convert_mnist
    data = os.path.join(ROOT, "data", "mnist")
    paths = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        db = os.path.join(out, "mnist_%s_lmdb" % split)
        if not os.path.exists(db):
            convert_mnist(os.path.join(data, "%s-images-idx3-ubyte.gz" % prefix),
                          os.path.join(data, "%s-labels-idx1-ubyte.gz" % prefix), db)
        paths[split] = db
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--test-interval", type=int, default=25)
    ap.add_argument("--test-batches", type=int, default=100, help="test batches of 100 images")
    ap.add_argument("--out", default=os.path.join(ROOT, "examples", "pycaffe", "out"))
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    dbs = ensure_lmdbs(out)

    with open(os.path.join(out, "lenet_auto_train.prototxt"), "w") as f:
        f.write(str(lenet(dbs["train"], 64)))
    with open(os.path.join(out, "lenet_auto_test.prototxt"), "w") as f:
        f.write(str(lenet(dbs["test"], 100)))
    with open(os.path.join(out, "lenet_auto_solver.prototxt"), "w") as f:
        f.write(SOLVER.format(out=out))

    caffe.set_mode_cpu()
    solver = caffe.SGDSolver(os.path.join(out, "lenet_auto_solver.prototxt"))
    # each output is (batch size, feature dim, spatial dim)
    print([(k, v.data.shape) for k, v in solver.net.blobs.items()])
    print([(k, v[0].data.shape) for k, v in solver.net.params.items()])
    solver.net.forward()                 # train net
    solver.test_nets[0].forward()        # test net (there can be more than one)

    niter, test_interval = args.iters, args.test_interval
    train_loss = np.zeros(niter)
    test_acc = np.zeros(int(np.ceil(niter / test_interval)))
    for it in range(niter):
        solver.step(1)                   # SGD by Caffe
        train_loss[it] = solver.net.blobs['loss'].data
        if it % test_interval == 0:
            correct = 0
            for _ in range(args.test_batches):
                solver.test_nets[0].forward()
                correct += np.sum(solver.test_nets[0].blobs['score'].data.argmax(1)
                                  == solver.test_nets[0].blobs['label'].data)
            test_acc[it // test_interval] = correct / (100.0 * args.test_batches)
            print('Iteration', it, 'testing... accuracy', test_acc[it // test_interval])

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax1 = plt.subplots()
    ax2 = ax1.twinx()
    ax1.plot(np.arange(niter), train_loss)
    ax2.plot(test_interval * np.arange(len(test_acc)), test_acc, 'r')
    ax1.set_xlabel('iteration')
    ax1.set_ylabel('train loss')
    ax2.set_ylabel('test accuracy')
    ax2.set_title('Test Accuracy: {:.2f}'.format(test_acc[-1]))
    curves = os.path.join(out, "lenet_loss_accuracy.png")
    fig.savefig(curves, dpi=80)
    plt.close(fig)

    filters = solver.net.params['conv1'][0].data          # 20 x 1 x 5 x 5
    fig = plt.figure(figsize=(5, 4))
    plt.imshow(filters[:, 0].reshape(4, 5, 5, 5).transpose(0, 2, 1, 3).reshape(4 * 5, 5 * 5),
               cmap='gray', interpolation='nearest')
    plt.axis('off')
    plt.title('conv1 filters')
    filt = os.path.join(out, "lenet_conv1_filters.png")
    fig.savefig(filt, dpi=80)
    plt.close(fig)
    print("final train loss %.4f, final test accuracy %.4f" % (train_loss[-1], test_acc[-1]))
    print("wrote", curves, "and", filt)
    return train_loss, test_acc


if __name__ == "__main__":
    main(sys.argv[1:])
