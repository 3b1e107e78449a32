"""Tests of decaf.layers.recurrent: RNN, LSTM, LSTMUnit."""
import numpy as np
import pytest

from decaf.errors import LayerSetupError
from decaf.layer import layer_class
from decaf.testing import golden
from decaf.testing.gradient_check import build_layer, check_gradient, make_layer_param

TYPES = ["RNN", "LSTM", "LSTMUnit"]
FILLERS = ('weight_filler { type: "uniform" min: -0.6 max: 0.6 } '
           'bias_filler { type: "uniform" min: -0.4 max: 0.4 }')


def rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape)


def spec(kind, H, extra=""):
    return 'type: "%s" recurrent_param { num_output: %d %s %s }' % (kind, H, FILLERS, extra)


def cont_with_resets(T, N):
    """cont = 0 at t = 0 (new sequences) and once mid-sequence for stream 1."""
    c = np.ones((T, N))
    c[0] = 0
    if T > 2 and N > 1:
        c[2, 1] = 0
    return c


# -- independent references (plain numpy, one formula per line) ------------------------------
def sig(a):
    return 1 / (1 + np.exp(-a))


def rnn_reference(x, cont, params, xs=None, h0=None):
    T, N = cont.shape
    W_xh, b_h = params[0], params[1]
    rest = params[2:]
    W_s = None
    if xs is not None:
        W_s, rest = rest[0], rest[1:]
    W_hh, W_ho, b_o = rest
    h = np.zeros((N, W_hh.shape[0])) if h0 is None else h0.reshape(N, -1)
    outs = []
    for t in range(T):
        a = W_xh @ x[t].reshape(N, -1).T + b_h[:, None] + W_hh @ (cont[t][:, None] * h).T
        if xs is not None:
            a = a + W_s @ xs.reshape(N, -1).T
        h = np.tanh(a).T
        outs.append(np.tanh(h @ W_ho.T + b_o))
    return np.stack(outs), h


def lstm_reference(x, cont, params, xs=None, h0=None, c0=None):
    T, N = cont.shape
    W_xc, b_c = params[0], params[1]
    W_hc = params[-1]
    H = W_hc.shape[1]
    h = np.zeros((N, H)) if h0 is None else h0.reshape(N, H)
    c = np.zeros((N, H)) if c0 is None else c0.reshape(N, H)
    hs = []
    for t in range(T):
        z = x[t].reshape(N, -1) @ W_xc.T + b_c + (cont[t][:, None] * h) @ W_hc.T
        if xs is not None:
            z = z + xs.reshape(N, -1) @ params[2].T
        i, f, o = sig(z[:, :H]), sig(z[:, H:2 * H]), sig(z[:, 2 * H:3 * H])
        g = np.tanh(z[:, 3 * H:])
        c = cont[t][:, None] * f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs), h, c


# -- golden cases (BVLC Caffe) ----------------------------------------------------------------
@pytest.mark.parametrize("case", golden.layer_cases(types=TYPES))
def test_golden(case):
    golden.assert_layer_case(case)


def test_golden_cases_present():
    types = {golden.load_case(n)["layer_type"] for n in golden.layer_cases(types=TYPES)}
    assert types == set(TYPES)


# -- gradient checks ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
@pytest.mark.parametrize("xshape", [(4, 3, 3), (3, 2, 2, 2)])
@pytest.mark.parametrize("static", [False, True])
def test_recurrent_gradient(kind, xshape, static):
    T, N = xshape[:2]
    bottoms = [rand(*xshape), cont_with_resets(T, N)]
    if static:
        bottoms.append(rand(N, 2, seed=1) if len(xshape) == 3 else rand(N, 2, 2, seed=1))
    check_gradient(spec(kind, 3), bottoms)


@pytest.mark.parametrize("kind,ns", [("RNN", 1), ("LSTM", 2)])
@pytest.mark.parametrize("static", [False, True])
def test_recurrent_gradient_expose_hidden(kind, ns, static):
    """Initial states that matter (cont_0 = 1): gradients to x, x_static and params are exact.
    The state bottoms share only data with Caffe's unrolled net (no gradient to them), and the
    hT/cT top diffs are not used, so they are left out of the objective."""
    T, N, H = 3, 2, 3
    cont = np.ones((T, N))
    cont[1, 0] = 0
    bottoms = [rand(T, N, 2), cont]
    if static:
        bottoms.append(rand(N, 3, seed=1))
    bottoms += [rand(1, N, H, seed=5 + j) for j in range(ns)]
    pd = [True, False] + [True] * static + [False] * ns
    check_gradient(spec(kind, H, "expose_hidden: true"), bottoms, num_tops=1 + ns,
                   propagate_down=pd, top_weights=[rand(T, N, H, seed=7)] + [None] * ns)


@pytest.mark.parametrize("cont", [[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
def test_lstm_unit_gradient(cont):
    N, H = 3, 2
    check_gradient('type: "LSTMUnit"', [rand(1, N, H), rand(1, N, 4 * H, seed=1), [cont]],
                   num_tops=2, propagate_down=[True, True, False])


# -- forward against the formulas ---------------------------------------------------------------
@pytest.mark.parametrize("static", [False, True])
def test_rnn_forward(static):
    T, N, H = 5, 3, 4
    x, cont = rand(T, N, 2, 3), cont_with_resets(T, N)
    bottoms = [x, cont] + ([rand(N, 3, seed=2)] if static else [])
    layer, bottom, top = build_layer(spec("RNN", H), bottoms)
    layer.Forward(bottom, top)
    want, _ = rnn_reference(x, cont, [b.data for b in layer.blobs], bottoms[2] if static else None)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("static", [False, True])
def test_lstm_forward(static):
    T, N, H = 5, 3, 4
    x, cont = rand(T, N, 3), cont_with_resets(T, N)
    bottoms = [x, cont] + ([rand(N, 2, 2, seed=2)] if static else [])
    layer, bottom, top = build_layer(spec("LSTM", H), bottoms)
    layer.Forward(bottom, top)
    want, _, _ = lstm_reference(x, cont, [b.data for b in layer.blobs],
                                bottoms[2] if static else None)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-10, atol=1e-12)


def test_param_shapes_and_order():
    layer, _, _ = build_layer(spec("RNN", 5), [rand(4, 2, 3), np.ones((4, 2)), rand(2, 6)])
    assert [b.shape for b in layer.blobs] == [(5, 3), (5,), (5, 6), (5, 5), (5, 5), (5,)]
    layer, _, _ = build_layer(spec("LSTM", 3), [rand(4, 2, 2, 3), np.ones((4, 2))])
    assert [b.shape for b in layer.blobs] == [(12, 6), (12,), (12, 3)]
    layer, _, _ = build_layer(spec("LSTM", 3), [rand(4, 2, 3), np.ones((4, 2)), rand(2, 2)])
    assert [b.shape for b in layer.blobs] == [(12, 3), (12,), (12, 2), (12, 3)]
    assert layer.param_propagate_down == [True] * 4
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)


def test_fillers():
    s = ('type: "LSTM" recurrent_param { num_output: 2 weight_filler { type: "constant" '
         'value: 0.5 } bias_filler { type: "constant" value: -2 } }')
    layer, _, _ = build_layer(s, [rand(2, 1, 3), np.ones((2, 1))])
    assert np.all(layer.blobs[0].data == 0.5) and np.all(layer.blobs[2].data == 0.5)
    assert np.all(layer.blobs[1].data == -2)
    # no fillers given: Caffe's FillerParameter default (constant 0)
    layer, _, _ = build_layer('type: "RNN" recurrent_param { num_output: 2 }',
                              [rand(2, 1, 3), np.ones((2, 1))])
    assert all(np.all(b.data == 0) for b in layer.blobs)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_state_carried_between_forward_passes(kind):
    """Without expose_hidden, h_0 (c_0) of a pass is the last state of the previous pass, so two
    passes with cont = 1 at the second pass's start equal one pass over the joined sequence."""
    T, N, H = 3, 2, 3
    x, cont = rand(2 * T, N, 2), np.ones((2 * T, N))
    cont[0] = 0
    whole, wbottom, wtop = build_layer(spec(kind, H), [x, cont])
    whole.Forward(wbottom, wtop)
    want = wtop[0].data.copy()
    layer, bottom, top = build_layer(spec(kind, H), [x[:T], cont[:T]],
                                     params=[b.data for b in whole.blobs])
    layer.Forward(bottom, top)
    first = top[0].data.copy()
    bottom[0].data[...], bottom[1].data[...] = x[T:], cont[T:]
    layer.Forward(bottom, top)
    np.testing.assert_allclose(np.concatenate([first, top[0].data]), want, rtol=1e-10)
    # reset() zeroes the carried state: the second half then starts from zeros
    layer.reset()
    layer.Forward(bottom, top)
    ref = rnn_reference if kind == "RNN" else lstm_reference
    fresh = ref(x[T:], cont[T:], [b.data for b in layer.blobs])[0]
    np.testing.assert_allclose(top[0].data, fresh, rtol=1e-10)


@pytest.mark.parametrize("kind,ns", [("RNN", 1), ("LSTM", 2)])
def test_expose_hidden_forward_and_backward(kind, ns):
    T, N, H = 4, 2, 3
    x, cont = rand(T, N, 2), np.ones((T, N))
    cont[2, 1] = 0
    states = [rand(1, N, H, seed=3 + j) for j in range(ns)]
    layer, bottom, top = build_layer(spec(kind, H, "expose_hidden: true"), [x, cont] + states,
                                     num_tops=1 + ns)
    layer.Forward(bottom, top)
    params = [b.data for b in layer.blobs]
    if kind == "RNN":
        want, hT = rnn_reference(x, cont, params, h0=states[0])
        finals = [hT]
    else:
        want, hT, cT = lstm_reference(x, cont, params, h0=states[0], c0=states[1])
        finals = [hT, cT]
    np.testing.assert_allclose(top[0].data, want, rtol=1e-10)
    for j, f in enumerate(finals):
        assert top[1 + j].shape == (1, N, H)
        np.testing.assert_allclose(top[1 + j].data[0], f, rtol=1e-10)
    # the state bottoms get zero diffs; diffs written into hT/cT are not used (as in Caffe)
    top[0].diff[...] = rand(T, N, H, seed=8)
    for j in range(ns):
        bottom[2 + j].diff[...] = 7.0
    layer.Backward(top, [True, False] + [True] * ns, bottom)
    dx = bottom[0].diff.copy()
    for j in range(ns):
        assert np.all(bottom[2 + j].diff == 0)
        top[1 + j].diff[...] = rand(1, N, H, seed=11 + j)
    layer.Backward(top, [True, False] + [True] * ns, bottom)
    np.testing.assert_allclose(bottom[0].diff, dx)


def test_cont_zero_resets_state():
    """A stream whose cont is 0 at t starts afresh: its outputs from t on equal a new run."""
    T, N, H = 4, 1, 2
    x = rand(T, N, 3)
    cont = np.array([[0.0], [1.0], [0.0], [1.0]])
    layer, bottom, top = build_layer(spec("LSTM", H), [x, cont])
    layer.Forward(bottom, top)
    out = top[0].data.copy()
    params = [b.data for b in layer.blobs]
    fresh, _, _ = lstm_reference(x[2:], np.array([[0.0], [1.0]]), params)
    np.testing.assert_allclose(out[2:], fresh, rtol=1e-10)


def test_lstm_unit_forward():
    N, H = 3, 2
    c_prev, x, cont = rand(1, N, H), rand(1, N, 4 * H, seed=1), np.array([[1.0, 0.0, 1.0]])
    layer, bottom, top = build_layer('type: "LSTMUnit"', [c_prev, x, cont], num_tops=2)
    layer.Forward(bottom, top)
    z = x[0]
    i, f, o, g = sig(z[:, :H]), sig(z[:, H:2 * H]), sig(z[:, 2 * H:3 * H]), np.tanh(z[:, 3 * H:])
    c = cont[0][:, None] * f * c_prev[0] + i * g
    np.testing.assert_allclose(top[0].data[0], c, rtol=1e-10)
    np.testing.assert_allclose(top[1].data[0], o * np.tanh(c), rtol=1e-10)
    # cont = 0 zeroes the gradient to c_prev
    top[0].diff[...], top[1].diff[...] = 1.0, 1.0
    layer.Backward(top, [True, True, False], bottom)
    assert np.all(bottom[0].diff[0, 1] == 0) and np.all(bottom[0].diff[0, 0] != 0)
    assert not layer.allow_force_backward(2)


def test_float32():
    layer, bottom, top = build_layer(spec("LSTM", 3), [rand(3, 2, 4), cont_with_resets(3, 2)],
                                     dtype=np.float32)
    layer.Forward(bottom, top)
    assert top[0].data.dtype == np.float32 and layer.blobs[0].dtype == np.float32
    want, _, _ = lstm_reference(rand(3, 2, 4), cont_with_resets(3, 2),
                                [b.data.astype(np.float64) for b in layer.blobs])
    np.testing.assert_allclose(top[0].data, want, rtol=1e-4, atol=1e-5)


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_recurrent_errors(kind):
    x, cont = rand(3, 2, 4), np.ones((3, 2))
    with pytest.raises(LayerSetupError, match="num_output must be positive"):
        build_layer('type: "%s"' % kind, [x, cont])
    with pytest.raises(LayerSetupError, match="cont"):
        build_layer(spec(kind, 2), [x, np.ones((3, 3))])
    with pytest.raises(LayerSetupError, match="cont"):
        build_layer(spec(kind, 2), [x, np.ones((3, 2, 1))])
    with pytest.raises(LayerSetupError, match="at least 2 axes"):
        build_layer(spec(kind, 2), [rand(3), np.ones((3, 1))])
    with pytest.raises(LayerSetupError, match="static input"):
        build_layer(spec(kind, 2), [x, cont, rand(3, 2)])
    with pytest.raises(LayerSetupError, match="bottom"):
        build_layer(spec(kind, 2), [x])
    with pytest.raises(LayerSetupError, match="bottom"):  # expose_hidden needs the state bottoms
        build_layer(spec(kind, 2, "expose_hidden: true"), [x, cont], num_tops=2)
    ns = 1 if kind == "RNN" else 2
    with pytest.raises(LayerSetupError, match="hidden state input shape"):
        build_layer(spec(kind, 2, "expose_hidden: true"), [x, cont] + [rand(1, 2, 3)] * ns,
                    num_tops=1 + ns)
    with pytest.raises(LayerSetupError, match="top"):
        build_layer(spec(kind, 2, "expose_hidden: true"), [x, cont] + [rand(1, 2, 2)] * ns)
    layer, bottom, top = build_layer(spec(kind, 2), [x, cont])
    bottom[0].reshape(4, 2, 4)
    bottom[1].reshape(4, 2)
    with pytest.raises(LayerSetupError, match="number of timesteps changed"):
        layer.Forward(bottom, top)
    bottom[0].reshape(3, 2, 5)
    bottom[1].reshape(3, 2)
    with pytest.raises(LayerSetupError, match="input dimension"):
        layer.Forward(bottom, top)


def test_recurrent_batch_size_may_change():
    layer, bottom, top = build_layer(spec("RNN", 2), [rand(3, 2, 4), cont_with_resets(3, 2)])
    bottom[0].reshape(3, 5, 4)
    bottom[1].reshape(3, 5)
    bottom[0].data[...], bottom[1].data[...] = rand(3, 5, 4), cont_with_resets(3, 5)
    layer.Forward(bottom, top)
    want, _ = rnn_reference(rand(3, 5, 4), cont_with_resets(3, 5), [b.data for b in layer.blobs])
    np.testing.assert_allclose(top[0].data, want, rtol=1e-10)


def test_recurrent_loaded_blobs_checked():
    param = make_layer_param(spec("RNN", 2))
    bp = param.blobs.add()
    bp.shape.dim.extend([2, 4])
    bp.data.extend([0.0] * 8)
    with pytest.raises(LayerSetupError, match="expected parameter blobs"):
        build_layer(param, [rand(3, 2, 4), np.ones((3, 2))])


def test_lstm_unit_errors():
    with pytest.raises(LayerSetupError, match="4 \\* hidden_dim"):
        build_layer('type: "LSTMUnit"', [rand(1, 2, 3), rand(1, 2, 8), np.ones((1, 2))],
                    num_tops=2)
    with pytest.raises(LayerSetupError, match="bottom\\[2\\]"):
        build_layer('type: "LSTMUnit"', [rand(1, 2, 2), rand(1, 2, 8), np.ones((1, 3))],
                    num_tops=2)
    with pytest.raises(LayerSetupError, match="bottom\\[0\\]"):
        build_layer('type: "LSTMUnit"', [rand(2, 2, 2), rand(1, 2, 8), np.ones((1, 2))],
                    num_tops=2)
    with pytest.raises(LayerSetupError, match="top"):
        build_layer('type: "LSTMUnit"', [rand(1, 2, 2), rand(1, 2, 8), np.ones((1, 2))])


def test_registered():
    for t in TYPES:
        assert layer_class(t) is not None, t
