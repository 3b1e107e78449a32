"""Recurrent layers: RNN, LSTM (Caffe's RecurrentLayer) and the single-step LSTMUnit.

Caffe builds an unrolled net (InnerProduct, Scale, Eltwise, LSTMUnit/TanH, Slice, Concat layers)
for RNN and LSTM; here the same math runs directly: one GEMM for the input transform of all T
timesteps, one small GEMM per timestep for the recurrence, and back-propagation through time with
the parameter gradients gathered into one GEMM each.

Bottoms: x (T x N x ...), cont (T x N; 0 starts a new sequence: the hidden input is
cont_t * h_{t-1}), optional x_static (N x ...), and with expose_hidden the initial states
(h0 [, c0], each 1 x N x num_output). Tops: the outputs (T x N x num_output) and with
expose_hidden the final states (hT [, cT]).

Caffe details kept: without expose_hidden the initial state of a forward pass is the final state
of the previous one (zero before the first); the cont bottom gets no gradient; with expose_hidden
the hidden-state bottoms share only data with the unrolled net, so they receive no gradient
(zeros are written) and the diffs of the hT/cT tops are ignored.
"""
from ..filler import fill
from ..layer import Layer, register_layer


def _sigmoid(xp, a, out):
    """out = 1 / (1 + exp(-a)), written as 0.5 tanh(a / 2) + 0.5 (no overflow)."""
    xp.multiply(a, 0.5, out=out)
    xp.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


class _RecurrentLayer(Layer):
    """Caffe's RecurrentLayer: shared checks, parameter creation, hidden-state bookkeeping."""

    num_states = 1  # recurrent state blobs (RNN: h; LSTM: h, c)

    def __init__(self, layer_param):
        super().__init__(layer_param)
        self.expose_hidden = layer_param.recurrent_param.expose_hidden
        self.min_bottom = 2 + (self.num_states if self.expose_hidden else 0)
        self.max_bottom = self.min_bottom + 1
        self.exact_num_top = 1 + (self.num_states if self.expose_hidden else 0)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    # -- subclass hooks ----------------------------------------------------------------------
    def param_specs(self, D, S):
        """[(name, shape, is_bias)] in Caffe's blob order."""
        raise NotImplementedError

    # -- setup / reshape ---------------------------------------------------------------------
    def setup(self, bottom, top):
        rp = self.layer_param.recurrent_param
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 2:
            self.error("bottom[0] must have at least 2 axes -- (#timesteps, #streams, ...); "
                       "got shape %s" % (x.shape,))
        self.T, self.N = x.shape[0], x.shape[1]
        if cont.num_axes != 2 or cont.shape != (self.T, self.N):
            self.error("bottom[1] (cont) must have exactly 2 axes -- (#timesteps, #streams) = "
                       "(%d, %d); got shape %s" % (self.T, self.N, cont.shape))
        self.H = int(rp.num_output)
        if self.H <= 0:
            self.error("recurrent_param.num_output must be positive")
        self.static_input = len(bottom) > 2 + (self.num_states if self.expose_hidden else 0)
        self.D = x.count_range(2)
        self.S = 0
        if self.static_input:
            xs = bottom[2]
            if xs.num_axes < 1 or xs.shape[0] != self.N:
                self.error("bottom[2] (static input) must have shape (#streams = %d, ...); got %s"
                           % (self.N, xs.shape))
            self.S = xs.count_range(1)
        specs = self.param_specs(self.D, self.S)
        if self.blobs:
            want = [tuple(s) for _, s, _ in specs]
            got = [b.shape for b in self.blobs]
            if got != want:
                self.error("expected parameter blobs %s of shapes %s, got %s"
                           % ([n for n, _, _ in specs], want, got))
        else:
            for _, shape, is_bias in specs:
                blob = self.make_blob(shape, x.dtype)
                fill(blob, rp.bias_filler if is_bias else rp.weight_filler)
                self.blobs.append(blob)
        self.param_propagate_down = [True] * len(self.blobs)
        self._key = None
        self._state = None

    def reshape(self, bottom, top):
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 2:
            self.error("bottom[0] must have at least 2 axes -- (#timesteps, #streams, ...); "
                       "got shape %s" % (x.shape,))
        if x.shape[0] != self.T:
            self.error("input number of timesteps changed: %d at setup, now %d"
                       % (self.T, x.shape[0]))
        N = x.shape[1]
        if x.count_range(2) != self.D:
            self.error("bottom[0] shape %s: the input dimension (count from axis 2) must stay %d"
                       % (x.shape, self.D))
        if cont.num_axes != 2 or cont.shape != (self.T, N):
            self.error("bottom[1] (cont) must have shape (#timesteps, #streams) = (%d, %d); got %s"
                       % (self.T, N, cont.shape))
        if self.static_input:
            xs = bottom[2]
            if xs.num_axes < 1 or xs.shape[0] != N or xs.count_range(1) != self.S:
                self.error("bottom[2] (static input) must have %d streams of %d values; got "
                           "shape %s" % (N, self.S, xs.shape))
        state_shape = (1, N, self.H)
        if self.expose_hidden:
            first = 2 + int(self.static_input)
            for j in range(self.num_states):
                if bottom[first + j].shape != state_shape:
                    self.error("bottom[%d] shape must match hidden state input shape %s; got %s"
                               % (first + j, state_shape, bottom[first + j].shape))
        self.N = N
        top[0].reshape(self.T, N, self.H)
        for j in range(1, len(top)):
            top[j].reshape(state_shape)
        key = (N, x.dtype)
        if key != self._key:
            self._key = key
            xp = self.xp
            # recurrent state carried between forward passes (Caffe zero-fills new memory)
            self._state = [xp.zeros((N, self.H), x.dtype) for _ in range(self.num_states)]
            self.allocate_buffers(N, x.dtype)

    def reset(self):
        """Caffe's RecurrentLayer::Reset: zero the carried hidden state."""
        if self._state is not None:
            for s in self._state:
                s[...] = 0

    # -- helpers -----------------------------------------------------------------------------
    def _initial_states(self, bottom):
        if self.expose_hidden:
            first = 2 + int(self.static_input)
            return [bottom[first + j].data.reshape(self.N, self.H)
                    for j in range(self.num_states)]
        return self._state

    def _store_final_states(self, finals, top):
        for j, f in enumerate(finals):
            self._state[j][...] = f
            if self.expose_hidden:
                top[1 + j].data.reshape(self.N, self.H)[...] = f

    def _input_transform(self, bottom, W, b, out2d, W_static):
        """out (T*N x G) = x W^T + b (+ x_static W_static^T on every timestep)."""
        xp = self.xp
        x2 = bottom[0].data.reshape(self.T * self.N, self.D)
        xp.matmul(x2, W.T, out=out2d)
        out2d += b
        if self.static_input:
            xs = bottom[2].data.reshape(self.N, self.S)
            out2d.reshape(self.T, self.N, -1)[...] += xp.matmul(xs, W_static.T)[None]

    def _input_backward(self, bottom, propagate_down, dG2d, iW, ib, iWs):
        """Gradients of the input transform from dG (T*N x G): W, b, x, static W and x_static."""
        xp = self.xp
        blobs = self.blobs
        x2 = bottom[0].data.reshape(self.T * self.N, self.D)
        if self.param_propagate_down[iW]:
            blobs[iW].diff[...] += xp.matmul(dG2d.T, x2)
        if self.param_propagate_down[ib]:
            blobs[ib].diff[...] += dG2d.sum(axis=0)
        if propagate_down[0]:
            xp.matmul(dG2d, blobs[iW].data, out=bottom[0].diff.reshape(self.T * self.N, self.D))
        if self.static_input:
            dGs = dG2d.reshape(self.T, self.N, -1).sum(axis=0)
            xs = bottom[2].data.reshape(self.N, self.S)
            if self.param_propagate_down[iWs]:
                blobs[iWs].diff[...] += xp.matmul(dGs.T, xs)
            if propagate_down[2]:
                xp.matmul(dGs, blobs[iWs].data, out=bottom[2].diff.reshape(self.N, self.S))
        if self.expose_hidden:  # Caffe shares only the data of the hidden-state bottoms
            first = 2 + int(self.static_input)
            for j in range(self.num_states):
                if propagate_down[first + j]:
                    bottom[first + j].diff[...] = 0


@register_layer("RNN")
class RNNLayer(_RecurrentLayer):
    """RNN: h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t [+ W_xh_static x_static] + b_h),
    top o_t = tanh(W_ho h_t + b_o). Params: W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o.
    Backward is exact BPTT within the batch (no gradient to cont)."""

    num_states = 1

    def param_specs(self, D, S):
        H = self.H
        specs = [("W_xh", (H, D), False), ("b_h", (H,), True)]
        if self.static_input:
            specs.append(("W_xh_static", (H, S), False))
        specs += [("W_hh", (H, H), False), ("W_ho", (H, H), False), ("b_o", (H,), True)]
        return specs

    def _idx(self):
        s = int(self.static_input)
        return dict(W_xh=0, b_h=1, W_s=2 if s else None, W_hh=2 + s, W_ho=3 + s, b_o=4 + s)

    def allocate_buffers(self, N, dtype):
        xp, T, H = self.xp, self.T, self.H
        self._pre = xp.zeros((T, N, H), dtype)    # pre-activations, then dA in backward
        self._h = xp.zeros((T, N, H), dtype)      # h_t
        self._hc = xp.zeros((T, N, H), dtype)     # cont_t * h_{t-1}
        self._o = xp.zeros((T, N, H), dtype)      # outputs
        self._tmp = xp.zeros((N, H), dtype)

    def forward(self, bottom, top):
        xp, T, N, H = self.xp, self.T, self.N, self.H
        k, W = self._idx(), [b.data for b in self.blobs]
        pre, h, hc = self._pre, self._h, self._hc
        self._input_transform(bottom, W[k["W_xh"]], W[k["b_h"]], pre.reshape(T * N, H),
                              W[k["W_s"]] if self.static_input else None)
        cont = bottom[1].data
        h_prev = self._initial_states(bottom)[0]
        W_hh_T = W[k["W_hh"]].T
        for t in range(T):
            xp.multiply(h_prev, cont[t][:, None], out=hc[t])
            xp.matmul(hc[t], W_hh_T, out=self._tmp)
            pre[t] += self._tmp
            xp.tanh(pre[t], out=h[t])
            h_prev = h[t]
        o2 = self._o.reshape(T * N, H)
        xp.matmul(h.reshape(T * N, H), W[k["W_ho"]].T, out=o2)
        o2 += W[k["b_o"]]
        xp.tanh(o2, out=o2)
        top[0].data[...] = self._o
        self._store_final_states([h[T - 1]], top)

    def backward(self, top, propagate_down, bottom):
        xp, T, N, H = self.xp, self.T, self.N, self.H
        k, blobs, ppd = self._idx(), self.blobs, self.param_propagate_down
        o, h = self._o, self._h
        dO = (1 - o * o) * top[0].diff          # d(pre-activation of o)
        dO2, h2 = dO.reshape(T * N, H), h.reshape(T * N, H)
        if ppd[k["W_ho"]]:
            blobs[k["W_ho"]].diff[...] += xp.matmul(dO2.T, h2)
        if ppd[k["b_o"]]:
            blobs[k["b_o"]].diff[...] += dO2.sum(axis=0)
        dH = xp.matmul(dO2, blobs[k["W_ho"]].data).reshape(T, N, H)
        dA = self._pre                          # reused: dA_t = dh_t * (1 - h_t^2)
        W_hh = blobs[k["W_hh"]].data
        cont = bottom[1].data
        dh_rec = xp.zeros((N, H), h.dtype)
        for t in range(T - 1, -1, -1):
            dH[t] += dh_rec
            xp.multiply(h[t], h[t], out=dA[t])
            xp.subtract(1, dA[t], out=dA[t])
            dA[t] *= dH[t]
            xp.matmul(dA[t], W_hh, out=dh_rec)
            dh_rec *= cont[t][:, None]
        dA2 = dA.reshape(T * N, H)
        if ppd[k["W_hh"]]:
            blobs[k["W_hh"]].diff[...] += xp.matmul(dA2.T, self._hc.reshape(T * N, H))
        self._input_backward(bottom, propagate_down, dA2, k["W_xh"], k["b_h"], k["W_s"])


@register_layer("LSTM")
class LSTMLayer(_RecurrentLayer):
    """LSTM: [i f o g]_t = W_hc (cont_t h_{t-1}) + W_xc x_t [+ W_xc_x_static x_static] + b_c;
    i, f, o sigmoid, g tanh; c_t = cont_t f_t c_{t-1} + i_t g_t; top h_t = o_t tanh(c_t).
    Params: W_xc (4H x D), b_c (4H), [W_xc_x_static (4H x S)], W_hc (4H x H).
    Backward is BPTT within the batch with Caffe's LSTMUnit gradients (no gradient to cont)."""

    num_states = 2

    def param_specs(self, D, S):
        G = 4 * self.H
        specs = [("W_xc", (G, D), False), ("b_c", (G,), True)]
        if self.static_input:
            specs.append(("W_xc_x_static", (G, S), False))
        specs.append(("W_hc", (G, self.H), False))
        return specs

    def allocate_buffers(self, N, dtype):
        xp, T, H = self.xp, self.T, self.H
        self._gates = xp.zeros((T, N, 4 * H), dtype)  # pre-activations, then dG in backward
        self._acts = xp.zeros((T, N, 4 * H), dtype)   # i, cont*f, o, g
        self._c = xp.zeros((T + 1, N, H), dtype)      # c_0 .. c_T
        self._tanh_c = xp.zeros((T, N, H), dtype)
        self._hc = xp.zeros((T, N, H), dtype)         # cont_t * h_{t-1}
        self._h = xp.zeros((T, N, H), dtype)
        self._tmp = xp.zeros((N, 4 * H), dtype)

    def forward(self, bottom, top):
        xp, T, N, H = self.xp, self.T, self.N, self.H
        blobs = self.blobs
        gates, acts, c, tanh_c, hc, h = (self._gates, self._acts, self._c, self._tanh_c,
                                         self._hc, self._h)
        self._input_transform(bottom, blobs[0].data, blobs[1].data, gates.reshape(T * N, 4 * H),
                              blobs[2].data if self.static_input else None)
        W_hc_T = blobs[-1].data.T
        cont = bottom[1].data
        h_prev, c0 = self._initial_states(bottom)
        c[0] = c0
        for t in range(T):
            ct = cont[t][:, None]
            xp.multiply(h_prev, ct, out=hc[t])
            xp.matmul(hc[t], W_hc_T, out=self._tmp)
            gates[t] += self._tmp
            a = acts[t]
            _sigmoid(xp, gates[t, :, :3 * H], a[:, :3 * H])
            xp.tanh(gates[t, :, 3 * H:], out=a[:, 3 * H:])
            i, f, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            f *= ct
            xp.multiply(f, c[t], out=c[t + 1])
            c[t + 1] += i * g
            xp.tanh(c[t + 1], out=tanh_c[t])
            xp.multiply(o, tanh_c[t], out=h[t])
            h_prev = h[t]
        top[0].data[...] = h
        self._store_final_states([h[T - 1], c[T]], top)

    def backward(self, top, propagate_down, bottom):
        xp, T, N, H = self.xp, self.T, self.N, self.H
        blobs, ppd = self.blobs, self.param_propagate_down
        acts, c, tanh_c = self._acts, self._c, self._tanh_c
        dG = self._gates  # reused
        W_hc = blobs[-1].data
        cont = bottom[1].data
        top_diff = top[0].diff
        dh_rec = xp.zeros((N, H), acts.dtype)
        dc_next = xp.zeros((N, H), acts.dtype)
        for t in range(T - 1, -1, -1):
            a = acts[t]
            i, f, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            tc = tanh_c[t]
            dh = top_diff[t] + dh_rec
            dc = dc_next + dh * o * (1 - tc * tc)
            d = dG[t]
            xp.multiply(dc * g, i * (1 - i), out=d[:, :H])
            xp.multiply(dc * c[t], f * (1 - f), out=d[:, H:2 * H])
            xp.multiply(dh * tc, o * (1 - o), out=d[:, 2 * H:3 * H])
            xp.multiply(dc * i, 1 - g * g, out=d[:, 3 * H:])
            xp.multiply(dc, f, out=dc_next)
            xp.matmul(d, W_hc, out=dh_rec)
            dh_rec *= cont[t][:, None]
        dG2 = dG.reshape(T * N, 4 * H)
        if ppd[-1]:
            blobs[-1].diff[...] += xp.matmul(dG2.T, self._hc.reshape(T * N, H))
        self._input_backward(bottom, propagate_down, dG2, 0, 1, 2 if self.static_input else None)


@register_layer("LSTMUnit")
class LSTMUnitLayer(Layer):
    """LSTMUnit: one LSTM step. x = [i' f' o' g'] (1 x N x 4H); i, f, o = sigmoid, g = tanh;
    c = cont f c_prev + i g; h = o tanh(c). Backward to c_prev and x (none to cont)."""

    exact_num_bottom = 3
    exact_num_top = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        c_prev, x, cont = bottom
        N = c_prev.shape[1] if c_prev.num_axes > 1 else -1
        for k, (blob, axes) in enumerate(((c_prev, 3), (x, 3), (cont, 2))):
            if blob.num_axes != axes or blob.shape[0] != 1 or blob.shape[1] != N:
                self.error("bottom[%d] must have %d axes (1 x #streams%s) with #streams = %s; "
                           "got shape %s (bottoms %s)"
                           % (k, axes, " x ..." if axes == 3 else "", N, blob.shape,
                              self.blob_names("bottom")))
        self.H = c_prev.shape[2]
        if x.shape[2] != 4 * self.H:
            self.error("bottom[1] (gate inputs) must have 4 * hidden_dim = %d values per stream; "
                       "got shape %s" % (4 * self.H, x.shape))
        self.N = N
        top[0].reshape(c_prev.shape)
        top[1].reshape(c_prev.shape)
        key = (N, self.H, x.dtype)
        if getattr(self, "_key", None) != key:
            self._key = key
            self._acts = self.xp.zeros((N, 4 * self.H), x.dtype)
            self._tanh_c = self.xp.zeros((N, self.H), x.dtype)

    def forward(self, bottom, top):
        xp, H = self.xp, self.H
        c_prev = bottom[0].data.reshape(self.N, H)
        x = bottom[1].data.reshape(self.N, 4 * H)
        ct = bottom[2].data.reshape(self.N, 1)
        a = self._acts
        _sigmoid(xp, x[:, :3 * H], a[:, :3 * H])
        xp.tanh(x[:, 3 * H:], out=a[:, 3 * H:])
        i, f, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        f *= ct
        c = top[0].data.reshape(self.N, H)
        xp.multiply(f, c_prev, out=c)
        c += i * g
        xp.tanh(c, out=self._tanh_c)
        xp.multiply(o, self._tanh_c, out=top[1].data.reshape(self.N, H))

    def backward(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        xp, H = self.xp, self.H
        a, tc = self._acts, self._tanh_c
        i, f, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        dC = top[0].diff.reshape(self.N, H)
        dH = top[1].diff.reshape(self.N, H)
        dc = dC + dH * o * (1 - tc * tc)
        if propagate_down[1]:
            c_prev = bottom[0].data.reshape(self.N, H)
            d = bottom[1].diff.reshape(self.N, 4 * H)
            xp.multiply(dc * g, i * (1 - i), out=d[:, :H])
            xp.multiply(dc * c_prev, f * (1 - f), out=d[:, H:2 * H])
            xp.multiply(dH * tc, o * (1 - o), out=d[:, 2 * H:3 * H])
            xp.multiply(dc * i, 1 - g * g, out=d[:, 3 * H:])
        if propagate_down[0]:
            xp.multiply(dc, f, out=bottom[0].diff.reshape(self.N, H))
