"""SSD's greedy non-maximum suppression (DetectionOutput), compiled (Numba).

``greedy_nms(boxes, areas, threshold, eta, keep)``: boxes (K, 4) [xmin, ymin, xmax, ymax]
already in score order (best first), areas their BBoxSize.  Caffe's ApplyNMSFast: a box is
kept when its JaccardOverlap with every box kept so far is <= the adaptive threshold, which
becomes threshold * eta after each kept box while it is > 0.5.  The overlap is SSD's, in the
boxes' dtype: iw = min(xmax) - max(xmin), ih likewise, 0 unless both > 0, else
iw * ih / ((area_1 + area_2) - iw * ih).  Sequential: each decision depends on the kept set.
"""
from numba import njit


@njit(cache=True, inline="always")
def _overlap(boxes, areas, i, j):
    """SSD's JaccardOverlap of boxes i and j, in their dtype."""
    iw = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
    ih = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
    if not (iw > 0 and ih > 0):
        return boxes.dtype.type(0)
    inter = iw * ih
    return inter / ((areas[i] + areas[j]) - inter)


@njit(cache=True)
def greedy_nms(boxes, areas, threshold, eta, keep):
    """keep[:count] = the kept rows of ``boxes``, in order; returns count (see the module)."""
    count = 0
    thr = threshold
    for i in range(boxes.shape[0]):
        ok = True
        for k in range(count):
            if _overlap(boxes, areas, i, keep[k]) > thr:
                ok = False
                break
        if ok:
            keep[count] = i
            count += 1
            if eta < 1 and thr > 0.5:
                thr = thr * eta
    return count
