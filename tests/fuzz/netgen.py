"""Structure-aware random nets: a few layers from a palette, wired to earlier tops, to names
nobody produces (missing bottoms), to later tops (cycles), with wrong bottom counts and absurd
dimensions (0, negative, huge). Driven by a ``random.Random`` (or by hypothesis, which draws
the seed and the choices through ``HypothesisRandom``)."""

DIMS = (0, 1, 2, 3, 5, 8, -1, 999999999, 2 ** 31 - 1)

PARAMS = {
    "Convolution": lambda r: "convolution_param { num_output: %d kernel_size: %d stride: %d "
                             "pad: %d group: %d }" % (r.choice((1, 4, 0, 999999999)),
                                                      r.choice((1, 3, 0, 99)),
                                                      r.choice((1, 2, 0)), r.choice((0, 1, 50)),
                                                      r.choice((1, 2, 3))),
    "Deconvolution": lambda r: "convolution_param { num_output: %d kernel_size: %d stride: %d }"
                               % (r.choice((1, 4, 0)), r.choice((1, 3, 0)), r.choice((1, 2, 0))),
    "Pooling": lambda r: "pooling_param { pool: %s kernel_size: %d stride: %d pad: %d %s}"
                         % (r.choice(("MAX", "AVE")), r.choice((1, 2, 3, 0, 99)),
                            r.choice((1, 2, 0)), r.choice((0, 1, 5)),
                            r.choice(("", "global_pooling: true "))),
    "InnerProduct": lambda r: "inner_product_param { num_output: %d axis: %d }"
                              % (r.choice((1, 10, 0, 999999999)), r.choice((1, 0, -1, 3, 7))),
    "ReLU": lambda r: "",
    "Sigmoid": lambda r: "",
    "Softmax": lambda r: "softmax_param { axis: %d }" % r.choice((1, 0, -1, 5)),
    "SoftmaxWithLoss": lambda r: "",
    "EuclideanLoss": lambda r: "",
    "Accuracy": lambda r: "accuracy_param { top_k: %d }" % r.choice((1, 5, 0, 999)),
    "Concat": lambda r: "concat_param { axis: %d }" % r.choice((1, 0, 3, -1, 9)),
    "Eltwise": lambda r: "eltwise_param { operation: %s }" % r.choice(("SUM", "PROD", "MAX")),
    "Slice": lambda r: "slice_param { axis: %d %s}" % (r.choice((1, 0, 4)),
                                                       r.choice(("", "slice_point: 1 ",
                                                                 "slice_point: 99 "))),
    "Split": lambda r: "",
    "Flatten": lambda r: "flatten_param { axis: %d }" % r.choice((1, 0, -1, 7)),
    "Reshape": lambda r: "reshape_param { shape { dim: %d dim: %d } }"
                         % (r.choice((0, -1, 2, 7)), r.choice((0, -1, 3, 999999999))),
    "LRN": lambda r: "lrn_param { local_size: %d }" % r.choice((1, 3, 5, 2, 0)),
    "BatchNorm": lambda r: "",
    "Scale": lambda r: "scale_param { bias_term: true axis: %d }" % r.choice((1, 0, 4)),
    "Crop": lambda r: "crop_param { axis: %d offset: %d }" % (r.choice((2, 1, 5)),
                                                              r.choice((0, 1, 99))),
    "Tile": lambda r: "tile_param { axis: %d tiles: %d }" % (r.choice((1, 0, 5)),
                                                             r.choice((1, 2, 0, 999999999))),
    "Dropout": lambda r: "dropout_param { dropout_ratio: %s }" % r.choice(("0.5", "1", "-1")),
    "Embed": lambda r: "embed_param { num_output: %d input_dim: %d }"
                       % (r.choice((1, 4, 0)), r.choice((1, 10, 0))),
    "ArgMax": lambda r: "argmax_param { top_k: %d }" % r.choice((1, 3, 0, 99)),
    "Reduction": lambda r: "reduction_param { axis: %d }" % r.choice((0, 1, -1, 9)),
    "Power": lambda r: "power_param { power: %s }" % r.choice(("2", "0.5", "-1")),
    "NoSuchLayer": lambda r: "",
}
TYPES = sorted(PARAMS)


def _input(r, name):
    dims = " ".join("dim: %d" % r.choice(DIMS[:6] if r.random() < 0.8 else DIMS)
                    for _ in range(r.choice((0, 1, 2, 4, 4, 4, 5))))
    return 'layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }' % (
        name, name, dims)


def random_net(r):
    """Prototxt text of a random net drawn with ``r`` (random.Random-like)."""
    layers = [_input(r, "in%d" % i) for i in range(r.randint(0, 2))]
    tops = ["in%d" % i for i in range(len(layers))]
    for k in range(r.randint(1, 6)):
        kind = r.choice(TYPES)
        nb = r.choice((0, 1, 1, 1, 2, 3))
        bottoms = []
        for _ in range(nb):
            roll = r.random()
            if tops and roll < 0.8:
                bottoms.append(r.choice(tops))
            elif roll < 0.9:
                bottoms.append("l%d" % (k + 1))       # a later layer's top: a cycle
            else:
                bottoms.append("nowhere")             # produced by nobody
        ntop = r.choice((1, 1, 1, 0, 2))
        names = ["l%d" % k] + ["l%d_%d" % (k, j) for j in range(1, ntop)]
        if bottoms and r.random() < 0.15:
            names = [bottoms[0]]                      # in place
        text = 'layer { name: "l%d" type: "%s" %s %s %s }' % (
            k, kind, " ".join('bottom: "%s"' % b for b in bottoms),
            " ".join('top: "%s"' % t for t in names[:ntop]), PARAMS[kind](r))
        layers.append(text)
        tops.extend(names[:ntop])
    return 'name: "g"\n' + "\n".join(layers) + "\n"
