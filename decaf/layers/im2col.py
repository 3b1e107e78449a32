"""Im2col: Caffe's column buffer of each image as a layer (convolution_param's geometry)."""
import numpy as np

from ..kernels.im2col import Im2Col, conv_output_shape
from ..layer import Layer, register_layer
from .conv import _channel_axis, parse_geometry


@register_layer("Im2col")
class Im2colLayer(Layer):
    """Im2col: top (N, C * prod(k), *out) is Caffe's column buffer of each bottom image.

    top[n, (c*kh + i)*kw + j, oh, ow] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw] (0 outside);
    backward: bottom_diff = col2im(top_diff).
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        cp = self.layer_param.convolution_param
        self.channel_axis = _channel_axis(self, bottom[0], cp.axis)
        self.num_spatial = bottom[0].num_axes - self.channel_axis - 1
        if self.num_spatial < 1:
            self.error("needs at least one spatial axis after the channel axis %d (bottom %s is "
                       "%s)" % (self.channel_axis, self.blob_names("bottom"), bottom[0].shape))
        self.geometry = parse_geometry(self, cp, self.num_spatial)
        self._plan_key = None

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes != self.channel_axis + 1 + self.num_spatial:
            self.error("bottom num_axes may not change")
        if top[0] is b:
            self.error("Im2col cannot be computed in-place")
        lead = b.shape[:self.channel_axis]
        channels = b.shape[self.channel_axis]
        in_spatial = b.shape[self.channel_axis + 1:]
        out_spatial = conv_output_shape(in_spatial, *self.geometry)
        if any(o <= 0 for o in out_spatial):
            self.error("output spatial shape %s is empty for input %s with kernel %s, stride %s, "
                       "pad %s, dilation %s" % ((out_spatial, in_spatial) + self.geometry))
        kcount = int(np.prod(self.geometry[0], dtype=np.int64))
        top[0].reshape(lead + (channels * kcount,) + out_spatial)
        self.num = int(np.prod(lead, dtype=np.int64))
        self.image_shape = (self.num, channels) + tuple(in_spatial)
        key = (self.image_shape, b.dtype, self.xp)
        if key != self._plan_key:
            self._plan_key = key
            self.plan = Im2Col(self.image_shape[1:], *self.geometry, dtype=b.dtype, xp=self.xp)

    def forward(self, bottom, top):
        self.plan.im2col(bottom[0].data.reshape(self.image_shape), top[0].data, order="nck")

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.plan.col2im(top[0].diff, bottom[0].diff.reshape(self.image_shape), order="nck")
