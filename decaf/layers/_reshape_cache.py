"""Skipping a layer's reshape when nothing changed (the net calls reshape before every forward).

``unchanged(layer, bottom, top)`` is True when the layer is called with the same blobs, the
bottoms have the same shapes and the tops still have the shapes its last reshape gave them; the
layer's reshape then has nothing to do.  A layer that uses it calls ``remember(layer, bottom,
top)`` at the end of a full reshape.  Everything such a reshape computes must depend only on
those shapes (and on the layer's fixed parameters).
"""


def _key(bottom, top):
    return (tuple(map(id, bottom)), tuple(map(id, top)),
            tuple(b.shape for b in bottom), tuple(t.shape for t in top))


def unchanged(layer, bottom, top):
    return layer.__dict__.get("_reshape_key") == _key(bottom, top)


def remember(layer, bottom, top):
    layer._reshape_key = _key(bottom, top)
