"""RNN, LSTM (unrolled over their static T timesteps) and LSTMUnit in ONNX operators.

The math is decaf's (Caffe's unrolled net): gates_t = (x_t W^T + b [+ x_static W_s^T]) +
(cont_t h_{t-1}) W_h^T; LSTM gates in the order i, f, o, g (sigmoid, sigmoid, sigmoid, tanh),
c_t = (cont_t f_t) c_{t-1} + i_t g_t, h_t = o_t tanh(c_t); RNN h_t = tanh(gates_t),
o_t = tanh(h_t W_ho^T + b_o). A Caffe net without expose_hidden starts each forward pass from
the state the previous pass left; the exported graph is stateless and starts from zeros (Caffe's
first pass, or after Reset); with expose_hidden the initial states are inputs.
"""
import numpy as np

from .registry import register_emitter


def _gate_parts(c, x, H):
    """i, f, o, g of gate pre-activations x (N, 4H), activated."""
    g, b = c.g, c.base()
    parts = [g.slice(x, [k * H], [(k + 1) * H], [1], base=b) for k in range(4)]
    i, f, o = (g.op1("Sigmoid", [p], base=b) for p in parts[:3])
    return i, f, o, g.op1("Tanh", [parts[3]], base=b)


def _cell(c, gates, c_prev, cont, H):
    """One LSTM step: (c, h) from gate pre-activations (N, 4H), c_prev (N, H), cont (N, 1)."""
    g, b = c.g, c.base()
    i, f, o, gg = _gate_parts(c, gates, H)
    f = g.op1("Mul", [f, cont], base=b)
    cell = g.op1("Add", [g.op1("Mul", [f, c_prev], base=b), g.op1("Mul", [i, gg], base=b)],
                 base=b)
    h = g.op1("Mul", [o, g.op1("Tanh", [cell], base=b)], base=b)
    return cell, h


def _state(c, index, shape):
    """An initial state: bottom ``index`` (1, N, H) as (N, H), or zeros."""
    g = c.g
    if c.layer.expose_hidden:
        return g.op1("Reshape", [c.bottom[index], g.ints(shape)], base=c.base())
    return g.const(np.zeros(shape, np.float32), c.base("zero_state"))


def _unrolled(c, cell_step):
    """The shared unrolling of RNN and LSTM: ``cell_step(gates_t, states, cont_t)``
    returns the new states (h first); returns the stacked h_t (T, N, H) and the final states."""
    g, b, L = c.g, c.base(), c.layer
    if g.dynamic_batch:
        c.error("recurrent layers have the time axis first: no dynamic batch")
    T, N, D, H = L.T, L.N, L.D, L.H
    x = g.op1("Reshape", [c.bottom[0], g.ints([T, N, D])], base=b)
    gates = g.op1("Add", [g.op1("MatMul", [x, g.const(c.blob(0).T, c.base("W_x"))], base=b),
                          g.const(c.blob(1), c.base("b"))], base=b)
    if L.static_input:
        xs = g.op1("Reshape", [c.bottom[2], g.ints([N, L.S])], base=b)
        gates = g.op1("Add", [gates, g.op1("MatMul", [xs, g.const(c.blob(2).T,
                                                                  c.base("W_static"))],
                                           base=b)], base=b)
    first = 2 + int(L.static_input)
    states = [_state(c, first + j, [N, H]) for j in range(L.num_states)]
    hs = []
    for t in range(T):
        gt = g.op1("Squeeze", [g.slice(gates, [t], [t + 1], [0], base=b), g.ints([0])], base=b)
        ct = g.op1("Reshape", [g.slice(c.bottom[1], [t], [t + 1], [0], base=b),
                               g.ints([N, 1])], base=b)
        states = cell_step(gt, states, ct)
        hs.append(g.op1("Unsqueeze", [states[0], g.ints([0])], base=b))
    return g.op1("Concat", hs, base=b, axis=0), states


def _final_states(c, states):
    for j, s in enumerate(states):
        if len(c.top) > 1 + j:
            c.g.op1("Reshape", [s, c.g.ints([1, c.layer.N, c.layer.H])], c.top[1 + j])


@register_emitter("LSTM")
def lstm(c):
    """LSTM unrolled: per step the recurrent GEMM, the gates, the cell."""
    g, b, H = c.g, c.base(), c.layer.H
    w_h = g.const(c.blob(-1).T, c.base("W_h"))

    def step(gates, states, cont):
        h_prev, c_prev = states
        hc = g.op1("Mul", [h_prev, cont], base=b)
        pre = g.op1("Add", [gates, g.op1("MatMul", [hc, w_h], base=b)], base=b)
        cell, h = _cell(c, pre, c_prev, cont, H)
        return [h, cell]

    hs, states = _unrolled(c, step)
    g.op1("Identity", [hs], c.y)
    _final_states(c, states)


@register_emitter("RNN")
def rnn(c):
    """RNN unrolled: h_t = tanh(gates_t), top o = tanh(h W_ho^T + b_o)."""
    g, b = c.g, c.base()
    s = int(c.layer.static_input)
    w_h = g.const(c.blob(2 + s).T, c.base("W_hh"))

    def step(gates, states, cont):
        hc = g.op1("Mul", [states[0], cont], base=b)
        pre = g.op1("Add", [gates, g.op1("MatMul", [hc, w_h], base=b)], base=b)
        return [g.op1("Tanh", [pre], base=b)]

    hs, states = _unrolled(c, step)
    o = g.op1("Add", [g.op1("MatMul", [hs, g.const(c.blob(3 + s).T, c.base("W_ho"))], base=b),
                      g.const(c.blob(4 + s), c.base("b_o"))], base=b)
    g.op1("Tanh", [o], c.y)
    _final_states(c, states)


@register_emitter("LSTMUnit")
def lstm_unit(c):
    """One LSTM step on c_prev (1, N, H), gates (1, N, 4H), cont (1, N): tops c, h."""
    g, b, L = c.g, c.base(), c.layer
    N, H = L.N, L.H
    flat = lambda t, w: g.op1("Reshape", [t, g.ints([N, w])], base=b)  # noqa: E731
    cell, h = _cell(c, flat(c.bottom[1], 4 * H), flat(c.bottom[0], H), flat(c.bottom[2], 1), H)
    g.op1("Reshape", [cell, g.ints([1, N, H])], c.top[0])
    g.op1("Reshape", [h, g.ints([1, N, H])], c.top[1])
