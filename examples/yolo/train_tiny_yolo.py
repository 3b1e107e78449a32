#!/usr/bin/env python
"""A tiny YOLOv3 detector trained on synthetic images: coloured rectangles on noise.

Each 64 x 64 image holds 1 to 4 non-overlapping rectangles (8 to 30 px a side) of one of three
colours (classes: red, green, blue, brightness jittered) on per-pixel noise. Images are drawn on
the fly from fixed seeds (training and held-out streams differ). The net (written with NetSpec
into OUT/): five 3x3 convolutions with leaky ReLU (slope 0.1, darknet's) and max pooling down
to an 8 x 8 grid (stride 8), then a 1x1 convolution to 4 anchors x (5 + 3) channels and
``Yolov3Loss`` (anchors 12x12, 24x14, 14x24, 26x26 px, all in the mask, ignore_thresh .5). The
deploy net ends in ``Yolov3Detection`` (per-class NMS .45). Trained with decaf's Adam solver.

Reported on held-out images: recall (truth boxes found with IoU >= .5 and the right class by a
detection scoring >= .25) and mAP@0.5 (VOC all-point average precision, mean over the classes,
every detection scoring >= .005). OUT/detections.png shows detections (solid) and truths
(dashed) on held-out images.

    python examples/yolo/train_tiny_yolo.py --out /tmp/yolo            # full form
    python examples/yolo/train_tiny_yolo.py --quick --out /tmp/yolo_q  # CI form
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
from decaf.net_spec import NetSpec, layers as L, params as P  # noqa: E402
from decaf.proto import caffe_pb2  # noqa: E402

SIZE = 64
CLASSES = ("red", "green", "blue")
COLORS = np.array([[0.9, 0.15, 0.1], [0.1, 0.8, 0.2], [0.15, 0.3, 0.95]])
ANCHORS = [12, 12, 24, 14, 14, 24, 26, 26]
MAX_BOXES = 6


# -- data -------------------------------------------------------------------------------------

def make_image(rs):
    """(image 3 x SIZE x SIZE in [0, 1], truth rows (x, y, w, h, class) normalised)."""
    img = np.clip(rs.normal(0.5, 0.18, (3, SIZE, SIZE)), 0, 1)
    boxes = []
    for _ in range(rs.randint(1, 5)):
        for _try in range(20):
            w, h = rs.randint(8, 31, 2)
            x0, y0 = rs.randint(0, SIZE - w + 1), rs.randint(0, SIZE - h + 1)
            if all(x0 >= bx + bw or bx >= x0 + w or y0 >= by + bh or by >= y0 + h
                   for bx, by, bw, bh, _ in boxes):
                c = rs.randint(len(CLASSES))
                boxes.append((x0, y0, w, h, c))
                col = COLORS[c] * rs.uniform(0.75, 1.1)
                patch = col[:, None, None] + rs.normal(0, 0.08, (3, h, w))
                img[:, y0:y0 + h, x0:x0 + w] = np.clip(patch, 0, 1)
                break
    truth = np.zeros((MAX_BOXES, 5), np.float32)
    for k, (x0, y0, w, h, c) in enumerate(boxes):
        truth[k] = [(x0 + w / 2) / SIZE, (y0 + h / 2) / SIZE, w / SIZE, h / SIZE, c]
    return img.astype(np.float32), truth


def make_batch(rs, n):
    imgs, truths = zip(*(make_image(rs) for _ in range(n)))
    return np.stack(imgs), np.stack(truths)


# -- nets ---------------------------------------------------------------------------------------

def tiny_yolo(batch, widths, train=True):
    n = NetSpec()
    if train:
        n.data, n.truth = L.Input(shape=[dict(dim=[batch, 3, SIZE, SIZE]),
                                         dict(dim=[batch, MAX_BOXES, 5])], ntop=2)
    else:
        n.data = L.Input(shape=dict(dim=[batch, 3, SIZE, SIZE]))
    x = n.data
    for k, width in enumerate(widths):
        name = "conv%d" % (k + 1)
        n[name] = L.Convolution(x, num_output=width, kernel_size=3, pad=1,
                                weight_filler=dict(type="msra"),
                                bias_filler=dict(type="constant", value=0))
        n["leaky%d" % (k + 1)] = L.ReLU(n[name], negative_slope=0.1, in_place=True)
        x = n["leaky%d" % (k + 1)]
        if k < 3:   # 64 -> 32 -> 16 -> 8
            n["pool%d" % (k + 1)] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=2, stride=2)
            x = n["pool%d" % (k + 1)]
    yolo = dict(anchors=ANCHORS, mask=[0, 1, 2, 3], num=4, classes=len(CLASSES),
                ignore_thresh=0.5, truth_thresh=1.0, max_boxes=MAX_BOXES, net_w=SIZE,
                net_h=SIZE)
    n.out = L.Convolution(x, num_output=4 * (5 + len(CLASSES)), kernel_size=1,
                          weight_filler=dict(type="gaussian", std=0.01),
                          bias_filler=dict(type="constant", value=0))
    if train:
        n.loss = L.Yolov3Loss(n.out, n.truth, yolov3_loss_param=yolo)
    else:
        n.detection = L.Yolov3Detection(n.out, yolov3_loss_param=yolo,
                                        detection_output_param=dict(
                                            confidence_threshold=0.005,
                                            nms_param=dict(nms_threshold=0.45)))
    return n.to_proto()


def solver_param(net_param, iters, lr, seed):
    s = caffe_pb2.SolverParameter()
    s.net_param.CopyFrom(net_param)
    s.type = "Adam"
    s.base_lr = lr
    s.momentum = 0.9
    s.momentum2 = 0.999
    s.weight_decay = 5e-4
    s.lr_policy = "multistep"
    s.gamma = 0.1
    s.stepvalue.append(int(iters * 0.8))
    s.max_iter = iters
    s.display = 0
    s.random_seed = seed
    s.snapshot_after_train = False
    return s


# -- evaluation ---------------------------------------------------------------------------------

def iou_xyxy(a, b):
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = lambda r: np.prod(r[:, 2:] - r[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def truth_xyxy(t):
    t = t[np.cumprod(t[:, 2] != 0).astype(bool)]
    return np.column_stack([t[:, 0] - t[:, 2] / 2, t[:, 1] - t[:, 3] / 2,
                            t[:, 0] + t[:, 2] / 2, t[:, 1] + t[:, 3] / 2]), t[:, 4].astype(int)


def evaluate(dets, truths, score_thresh=0.25, iou_thresh=0.5):
    """(recall at score_thresh, mAP@iou_thresh, per-class AP). ``dets``: rows of
    (image, class, score, x1, y1, x2, y2)."""
    gts = [truth_xyxy(t) for t in truths]
    aps, found, total = [], 0, 0
    for c in range(len(CLASSES)):
        d = dets[dets[:, 1] == c]
        d = d[np.argsort(-d[:, 2], kind="stable")]
        n_gt = sum(int((g[1] == c).sum()) for g in gts)
        used = [np.zeros(int((g[1] == c).sum()), bool) for g in gts]
        tp = np.zeros(len(d))
        for k, row in enumerate(d):
            img = int(row[0])
            boxes = gts[img][0][gts[img][1] == c]
            if len(boxes):
                ov = iou_xyxy(row[None, 3:7], boxes)[0]
                j = int(ov.argmax())
                if ov[j] >= iou_thresh and not used[img][j]:
                    used[img][j] = True
                    tp[k] = 1
        # recall at score_thresh: greedy matching restricted to the confident detections
        strong = d[:, 2] >= score_thresh
        found += int(tp[strong].sum())
        total += n_gt
        ctp = np.cumsum(tp)
        rec = ctp / max(n_gt, 1)
        prec = ctp / np.arange(1, len(d) + 1)
        aps.append(voc_ap(rec, prec))
    return found / max(total, 1), float(np.mean(aps)), aps


def voc_ap(rec, prec):
    """VOC 2010+ all-point interpolated average precision."""
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def detect(net, images, batch):
    rows = []
    for k in range(0, len(images), batch):
        xb = images[k:k + batch]
        net.blobs["data"].reshape(xb.shape)
        net.blobs["data"].data[...] = xb
        net.forward()
        d = net.blobs["detection"].data.reshape(-1, 7).copy()
        d = d[d[:, 0] >= 0]
        d[:, 0] += k
        rows.append(d)
    return np.concatenate(rows) if rows else np.zeros((0, 7))


def draw(images, truths, dets, path, n=8, thresh=0.25):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    fig, axes = plt.subplots(2, n // 2, figsize=(2.2 * n // 2, 4.6))
    edge = ["#ff4040", "#40ff40", "#4080ff"]
    for k, ax in enumerate(axes.ravel()):
        ax.imshow(images[k].transpose(1, 2, 0), extent=(0, 1, 1, 0))
        boxes, cls = truth_xyxy(truths[k])
        for (x1, y1, x2, y2), c in zip(boxes, cls):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ls="--", lw=1,
                                   ec="white"))
        for row in dets[(dets[:, 0] == k) & (dets[:, 2] >= thresh)]:
            c, s, x1, y1, x2, y2 = int(row[1]), row[2], *row[3:7]
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.6, ec="black"))
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=0.8, ec=edge[c]))
            ax.text(x1, y1, "%s %.2f" % (CLASSES[c], s), fontsize=6, color="white",
                    va="bottom", bbox=dict(fc="black", alpha=0.6, pad=0.5, lw=0))
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)
        ax.axis("off")
    fig.suptitle("tiny YOLOv3: detections >= %.2f (solid), truth (dashed)" % thresh,
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=None, help="full: 3000, quick: 600")
    ap.add_argument("--out", default="yolo_out", help="output directory")
    ap.add_argument("--quick", action="store_true",
                    help="reduced form for CI: narrower net, fewer iterations and test images")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--test-images", type=int, default=None, help="full: 500, quick: 150")
    ap.add_argument("--seed", type=int, default=1701)
    args = ap.parse_args(argv)
    if args.iters is None:
        args.iters = 600 if args.quick else 3000
    if args.test_images is None:
        args.test_images = 150 if args.quick else 500
    args.widths = (8, 16, 32, 32, 32) if args.quick else (16, 32, 64, 64, 64)
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    decaf.init_log(1)
    decaf.set_mode_cpu()
    train_net = tiny_yolo(args.batch, args.widths)
    deploy = tiny_yolo(50, args.widths, train=False)
    for name, p in (("train.prototxt", train_net), ("deploy.prototxt", deploy)):
        with open(os.path.join(args.out, name), "w") as f:
            f.write(str(p))
    solver = decaf.get_solver(solver_param(train_net, args.iters, args.lr, args.seed))
    net = solver.net
    rs_train = np.random.RandomState(args.seed)

    def feed():
        x, t = make_batch(rs_train, args.batch)
        net.blobs["data"].data[...] = x
        net.blobs["truth"].data[...] = t

    solver.add_callback(feed)
    loss_layer = net.layer_dict["loss"]
    print("tiny YOLOv3 on synthetic rectangles: %d iterations x batch %d, widths %s"
          % (args.iters, args.batch, args.widths), flush=True)
    t0 = time.time()
    chunk = max(1, args.iters // 6)
    while solver.iter < args.iters:
        solver.step(min(chunk, args.iters - solver.iter))
        extra = ""
        if loss_layer.stats.get("count"):
            extra = "  train recall@.5 %.2f" % loss_layer.stats["recall50"]
        print("  iter %d  loss %.3f%s  (%.0fs)" % (solver.iter, float(net.blobs["loss"].data),
                                                    extra, time.time() - t0), flush=True)
    train_s = time.time() - t0
    test = decaf.Net(deploy, decaf.TEST)
    test.share_trained_layers_with(net)
    images, truths = make_batch(np.random.RandomState(args.seed + 99991), args.test_images)
    dets = detect(test, images, 50)
    recall, mean_ap, aps = evaluate(dets, truths)
    draw(images, truths, dets, os.path.join(args.out, "detections.png"))
    n_truth = int(sum(len(truth_xyxy(t)[1]) for t in truths))
    res = dict(recall=recall, mAP50=mean_ap, ap=dict(zip(CLASSES, aps)), truths=n_truth,
               test_images=args.test_images, iters=args.iters, train_seconds=train_s)
    print("\nheld-out: %d images, %d boxes" % (args.test_images, n_truth))
    print("recall (IoU >= .5, score >= .25): %.4f" % recall)
    print("mAP@0.5: %.4f   (AP %s)" % (mean_ap, ", ".join("%s %.3f" % (c, a)
                                                          for c, a in zip(CLASSES, aps))))
    print("training: %.0f s" % train_s)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
