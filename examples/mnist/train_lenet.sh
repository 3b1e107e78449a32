#!/usr/bin/env bash
# Train LeNet on MNIST (Caffe's examples/mnist/train_lenet.sh). Run from the repository root.
set -e
decaf train --solver=examples/mnist/lenet_solver.prototxt "$@"
