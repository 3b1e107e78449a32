#!/usr/bin/env bash
# Convert the MNIST IDX files shipped in data/mnist/ into LMDBs of Datum, as Caffe's
# examples/mnist/create_mnist.sh does. Run from the repository root.
set -e
EXAMPLE=examples/mnist
DATA=data/mnist
BACKEND=lmdb

echo "Creating ${BACKEND}..."
rm -rf $EXAMPLE/mnist_train_${BACKEND} $EXAMPLE/mnist_test_${BACKEND}
decaf convert_mnist_data $DATA/train-images-idx3-ubyte.gz $DATA/train-labels-idx1-ubyte.gz \
  $EXAMPLE/mnist_train_${BACKEND} --backend=${BACKEND}
decaf convert_mnist_data $DATA/t10k-images-idx3-ubyte.gz $DATA/t10k-labels-idx1-ubyte.gz \
  $EXAMPLE/mnist_test_${BACKEND} --backend=${BACKEND}
echo "Done."
