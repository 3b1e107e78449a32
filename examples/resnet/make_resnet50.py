"""Write ResNet-50-deploy.prototxt: Kaiming He's ResNet-50 deploy net (BVLC layout).

    python examples/resnet/make_resnet50.py [out.prototxt]

Layer and blob names follow KaimingHe/deep-residual-networks: conv1 + bn_conv1 + scale_conv1 +
conv1_relu, pool1, then bottleneck blocks res{2a..2c, 3a..3d, 4a..4f, 5a..5c}, each with
branch2a/2b/2c (1x1, 3x3, 1x1; stride 2 on branch2a of the first block of stages 3-5) and, on
the first block of every stage, a projection branch1; every convolution (no bias) is followed
by an in-place BatchNorm (use_global_stats) and Scale (bias_term); Eltwise SUM + ReLU; pool5
(AVE 7x7/1), fc1000, prob.
"""
import os
import sys

STAGES = [("2", 3, 64, 256), ("3", 4, 128, 512), ("4", 6, 256, 1024), ("5", 3, 512, 2048)]


def conv_bn(lines, name, bottom, bn, num_output, kernel, stride, pad, relu):
    """Convolution ``name`` (no bias) + bn<bn> + scale<bn> in place (+ <name>_relu)."""
    pad_line = "\t\tpad: %d\n" % pad if pad else ""
    lines.append(
        'layer {\n\tbottom: "%s"\n\ttop: "%s"\n\tname: "%s"\n\ttype: "Convolution"\n'
        '\tconvolution_param {\n\t\tnum_output: %d\n\t\tkernel_size: %d\n%s'
        '\t\tstride: %d\n\t\tbias_term: false\n\t}\n}\n'
        % (bottom, name, name, num_output, kernel, pad_line, stride))
    lines.append(
        'layer {\n\tbottom: "%s"\n\ttop: "%s"\n\tname: "bn%s"\n\ttype: "BatchNorm"\n'
        '\tbatch_norm_param {\n\t\tuse_global_stats: true\n\t}\n}\n' % (name, name, bn))
    lines.append(
        'layer {\n\tbottom: "%s"\n\ttop: "%s"\n\tname: "scale%s"\n\ttype: "Scale"\n'
        '\tscale_param {\n\t\tbias_term: true\n\t}\n}\n' % (name, name, bn))
    if relu:
        relu_layer(lines, name)


def relu_layer(lines, blob):
    lines.append('layer {\n\tbottom: "%s"\n\ttop: "%s"\n\tname: "%s_relu"\n\ttype: "ReLU"\n}\n'
                 % (blob, blob, blob))


def block(lines, bottom, stage, letter, width, out, first):
    """One bottleneck block res<stage><letter>; returns its top blob name."""
    name = "res%s%s" % (stage, letter)
    stride = 2 if first and stage != "2" else 1
    shortcut = bottom
    if first:
        conv_bn(lines, name + "_branch1", bottom, stage + letter + "_branch1", out, 1, stride,
                0, relu=False)
        shortcut = name + "_branch1"
    conv_bn(lines, name + "_branch2a", bottom, stage + letter + "_branch2a", width, 1, stride,
            0, relu=True)
    conv_bn(lines, name + "_branch2b", name + "_branch2a", stage + letter + "_branch2b", width,
            3, 1, 1, relu=True)
    conv_bn(lines, name + "_branch2c", name + "_branch2b", stage + letter + "_branch2c", out,
            1, 1, 0, relu=False)
    lines.append('layer {\n\tbottom: "%s"\n\tbottom: "%s"\n\ttop: "%s"\n\tname: "%s"\n'
                 '\ttype: "Eltwise"\n\teltwise_param {\n\t\toperation: SUM\n\t}\n}\n'
                 % (shortcut, name + "_branch2c", name, name))
    relu_layer(lines, name)
    return name


def resnet50():
    """The prototxt text of the ResNet-50 deploy net."""
    lines = ['name: "ResNet-50"\ninput: "data"\ninput_shape {\n\tdim: 1\n\tdim: 3\n'
             '\tdim: 224\n\tdim: 224\n}\n']
    conv_bn(lines, "conv1", "data", "_conv1", 64, 7, 2, 3, relu=True)
    lines.append('layer {\n\tbottom: "conv1"\n\ttop: "pool1"\n\tname: "pool1"\n'
                 '\ttype: "Pooling"\n\tpooling_param {\n\t\tkernel_size: 3\n\t\tstride: 2\n'
                 '\t\tpool: MAX\n\t}\n}\n')
    top = "pool1"
    for stage, blocks, width, out in STAGES:
        for i in range(blocks):
            top = block(lines, top, stage, "abcdef"[i], width, out, first=i == 0)
    lines.append('layer {\n\tbottom: "%s"\n\ttop: "pool5"\n\tname: "pool5"\n'
                 '\ttype: "Pooling"\n\tpooling_param {\n\t\tkernel_size: 7\n\t\tstride: 1\n'
                 '\t\tpool: AVE\n\t}\n}\n' % top)
    lines.append('layer {\n\tbottom: "pool5"\n\ttop: "fc1000"\n\tname: "fc1000"\n'
                 '\ttype: "InnerProduct"\n\tinner_product_param {\n\t\tnum_output: 1000\n'
                 '\t}\n}\n')
    lines.append('layer {\n\tbottom: "fc1000"\n\ttop: "prob"\n\tname: "prob"\n'
                 '\ttype: "Softmax"\n}\n')
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                            "ResNet-50-deploy.prototxt")
    with open(out, "w") as f:
        f.write(resnet50())
    return 0


if __name__ == "__main__":
    sys.exit(main())
