"""Tests for microgpt's model side: logsumexp, softmax, rmsnorm, cross-entropy, the full GPT's
gradients and attention weights, the tokenizer, load_docs and find_input, Adam, the fast paths
(dot, linear, logsumexp, softmax) against plain Value arithmetic, training, the tape around training,
evaluation and sampling, memory and determinism.

Expected numbers are derived by hand (the derivation is in a comment) or computed independently
in plain floats; gradients are checked against central finite differences.
"""
import contextlib
import dataclasses
import gc
import io
import math
import os
import random
import sys
import tempfile
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import microgpt  # noqa: E402

Value = microgpt.Value
H = 1e-6

NAMES = ['ana', 'bob', 'cara', 'dan', 'eve', 'fay', 'gus', 'hal', 'ida', 'jo',
         'kim', 'lea', 'max', 'nia', 'ole', 'pam', 'ray', 'sue', 'tom', 'una',
         'val', 'wes', 'xia', 'yan', 'zoe', 'abe', 'bea', 'cal', 'dee', 'eli']


def close(actual, expected, atol, rtol):
    return abs(actual - expected) <= atol + rtol * abs(expected)   # False on nan


def tiny_model(seed=0, n_layer=2, n_embd=8, n_head=2, block_size=6, chars='abcd', **kw):
    config = microgpt.Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                             block_size=block_size, **kw)
    tokenizer = microgpt.Tokenizer(chars)
    state_dict = microgpt.init_params(tokenizer.vocab_size, config, random.Random(seed))
    return config, tokenizer, state_dict


def central_difference(f, xs, i):
    """d f / d xs[i] by central finite differences: (f(x + h) - f(x - h)) / 2h."""
    up, down = list(xs), list(xs)
    up[i] += H
    down[i] -= H
    return (f(up) - f(down)) / (2 * H)


def assert_grads_match(test, leaves, f, xs):
    """Each leaf's .grad equals the central difference of the float function f at xs."""
    for i, leaf in enumerate(leaves):
        fd = central_difference(f, xs, i)
        test.assertTrue(close(leaf.grad, fd, 1e-8, 1e-6), (i, leaf.grad, fd))


def new_kv_cache(config):
    """What document_loss and generate start from: per layer, (keys, values, attention)."""
    return [([], [], []) for _ in range(config.n_layer)]


def value_log(x):
    """ln x as a Value node, for building composites: microgpt itself has no log(), as its one
    use, logsumexp, is a fused node. d(ln x)/dx = 1/x."""
    return Value(math.log(x.data), (x,), (1.0 / x.data,))


def composite_logsumexp(x):
    """log(sum_i e^x_i) built from Value ops: the max subtracted as a constant (which changes
    neither value nor gradient), exp, +, log, then the max added back."""
    composite_logsumexp.calls += 1
    top = max(xi.data for xi in x)
    return value_log(sum((xi - top).exp() for xi in x)) + top


def composite_softmax(logits):
    """e^x_i / sum_j e^x_j built from Value ops: exp of x - max, +, a reciprocal, *."""
    composite_softmax.calls += 1
    top = max(x.data for x in logits)
    exps = [(x - top).exp() for x in logits]
    inv_total = sum(exps) ** -1
    return [e * inv_total for e in exps]


composite_logsumexp.calls = composite_softmax.calls = 0


class TapeTestCase(unittest.TestCase):
    """Each test starts and ends with an empty tape. backward() no longer empties it (only train()
    does), so without this the graphs of earlier tests would stay on it: kept alive, zeroed and
    replayed by every later backward(), and seen by tests that look at the tape."""

    def setUp(self):
        Value.tape.clear()
        self.addCleanup(Value.tape.clear)


def float_softmax(xs):
    top = max(xs)
    exps = [math.exp(x - top) for x in xs]
    total = sum(exps)
    return [e / total for e in exps]


# %% logsumexp, softmax, rmsnorm, cross_entropy
class TestLogsumexp(TapeTestCase):
    def test_hand_values(self):
        # log(e^0 + e^(ln 2) + e^(ln 3)) = log(1 + 2 + 3) = ln 6; and log(e^a) = a for one value
        lse = microgpt.logsumexp([Value(0.0), Value(math.log(2)), Value(math.log(3))])
        self.assertAlmostEqual(lse.data, math.log(6), delta=1e-15)
        self.assertEqual(microgpt.logsumexp([Value(-7.5)]).data, -7.5)

    def test_one_node_whose_local_gradients_are_softmax(self):
        # d/dx_i log(sum_j e^x_j) = e^x_i / sum_j e^x_j: for [0, ln 2, ln 3], (1, 2, 3) / 6
        leaves = [Value(0.0), Value(math.log(2)), Value(math.log(3))]
        start = len(Value.tape)
        lse = microgpt.logsumexp(leaves)
        self.assertEqual(Value.tape[start:], [lse])
        self.assertEqual(lse._children, tuple(leaves))
        for g, expected in zip(lse._local_grads, (1 / 6, 2 / 6, 3 / 6)):
            self.assertAlmostEqual(g, expected, delta=1e-15)

    def test_large_and_small_values_stay_finite(self):
        # log(e^1000 + e^1000) = 1000 + ln 2, though e^1000 alone overflows a float;
        # log(e^-1000 + e^-1001) = -1000 + ln(1 + 1/e), though e^-1000 rounds to 0.
        self.assertAlmostEqual(microgpt.logsumexp([Value(1000.0)] * 2).data, 1000 + math.log(2),
                               delta=1e-12)
        lse = microgpt.logsumexp([Value(-1000.0), Value(-1001.0)])
        self.assertAlmostEqual(lse.data, -1000 + math.log(1 + 1 / math.e), delta=1e-12)

    def test_gradient_against_finite_differences(self):
        rng = random.Random(15)
        for n in (1, 2, 6):
            xs = [rng.gauss(0, 2) for _ in range(n)]
            leaves = [Value(x) for x in xs]
            (microgpt.logsumexp(leaves) * 1.5).backward()
            f = lambda v: 1.5 * math.log(sum(math.exp(x) for x in v))  # noqa: E731
            assert_grads_match(self, leaves, f, xs)


class TestSoftmax(TapeTestCase):
    def test_hand_values(self):
        # exp(0), exp(ln 2), exp(ln 3) = 1, 2, 3 -> 1/6, 2/6, 3/6
        probs = microgpt.softmax([Value(0.0), Value(math.log(2)), Value(math.log(3))])
        for p, expected in zip(probs, (1 / 6, 2 / 6, 3 / 6)):
            self.assertIsInstance(p, Value)
            self.assertAlmostEqual(p.data, expected, delta=1e-15)

    def test_sums_to_one(self):
        rng = random.Random(3)
        for n in (1, 2, 5, 27):
            probs = microgpt.softmax([Value(rng.gauss(0, 3)) for _ in range(n)])
            self.assertAlmostEqual(sum(p.data for p in probs), 1.0, delta=1e-12)
            self.assertTrue(all(0.0 <= p.data <= 1.0 for p in probs))

    def test_large_logits_do_not_overflow(self):
        # softmax is shift-invariant: [1000, 1001, 1002] -> [0, 1, 2] -> e^k / (1 + e + e^2).
        # (math.exp(1000) alone would raise OverflowError.)
        probs = [p.data for p in microgpt.softmax([Value(1000.0), Value(1001.0), Value(1002.0)])]
        z = 1 + math.e + math.e ** 2
        for p, expected in zip(probs, (1 / z, math.e / z, math.e ** 2 / z)):
            self.assertAlmostEqual(p, expected, delta=1e-14)

    def test_very_negative_logit(self):
        # [-1000, 0]: e^-1000 ~ 5e-435 is below the smallest double, so exactly [0.0, 1.0].
        probs = [p.data for p in microgpt.softmax([Value(-1000.0), Value(0.0)])]
        self.assertEqual(probs, [0.0, 1.0])

    def test_gradient_against_finite_differences(self):
        # f = sum_i w_i softmax(x)_i with fixed weights w
        rng = random.Random(5)
        xs = [rng.uniform(-2, 2) for _ in range(5)]
        ws = [rng.uniform(-1, 1) for _ in range(5)]
        f = lambda v: sum(w * p for w, p in zip(ws, float_softmax(v)))  # noqa: E731
        leaves = [Value(x) for x in xs]
        out = sum(p * w for w, p in zip(ws, microgpt.softmax(leaves)))
        out.backward()
        assert_grads_match(self, leaves, f, xs)

    def test_one_logsumexp_node_then_one_node_per_probability(self):
        # softmax of n Values adds n + 1 nodes: ONE logsumexp over all n, then each p_i =
        # e^(x_i - lse) with the two children x_i and lse, local gradients p_i and -p_i.
        # (Built from exp, + and a shared reciprocal, as composite_softmax does, it takes 4n + 1.)
        for n in (1, 3, 27):
            logits = [Value(float(i)) for i in range(n)]   # leaves: not on the tape
            start = len(Value.tape)
            probs = microgpt.softmax(logits)
            self.assertEqual(len(Value.tape) - start, n + 1, n)
            lse = Value.tape[start]
            self.assertEqual(lse._children, tuple(logits))
            self.assertEqual(Value.tape[start + 1:], probs)
            for x, p in zip(logits, probs):
                self.assertEqual(p._children, (x, lse))
                self.assertEqual(p._local_grads, (p.data, -p.data))
            start = len(Value.tape)
            composite_softmax(logits)
            self.assertEqual(len(Value.tape) - start, 4 * n + 1, n)

    def test_matches_a_composite_of_value_operations(self):
        # The same probabilities built node by node (exp, +, ** -1, *): same values and the same
        # gradients of a weighted sum of them.
        rng = random.Random(14)
        for n in (1, 2, 5, 27):
            xs = [rng.gauss(0, 3) for _ in range(n)]
            ws = [rng.uniform(-1, 1) for _ in range(n)]
            fast, composite = [Value(x) for x in xs], [Value(x) for x in xs]
            a = sum(p * w for w, p in zip(ws, microgpt.softmax(fast)))
            a.backward()
            b = sum(p * w for w, p in zip(ws, composite_softmax(composite)))
            b.backward()
            self.assertAlmostEqual(a.data, b.data, delta=1e-14)
            for u, v in zip(fast, composite):
                self.assertAlmostEqual(u.grad, v.grad, delta=1e-14)


class TestLinear(TapeTestCase):
    def test_empty_vector_gives_float_zeros_off_the_tape(self):
        # No columns: each row's dot product is the empty sum, 0.0 (a float, like every other
        # Value's data), with no children, so nothing is recorded on the tape.
        out = microgpt.linear([], [[], []])
        self.assertEqual([(type(y.data), y.data, y._children) for y in out], [(float, 0.0, [])] * 2)
        self.assertEqual(Value.tape, [])

    def test_hand_values_and_gradients(self):
        # w = [[1, 2], [3, -1], [0.5, 0]], x = [4, -2]:
        #   y = w @ x = [1*4 + 2*(-2), 3*4 + (-1)*(-2), 0.5*4 + 0*(-2)] = [0, 14, 2]
        # L = 1*y0 + 2*y1 - 1*y2 = 26:  dL/dw[r][j] = c_r x_j with c = (1, 2, -1),
        #   dL/dx_j = sum_r c_r w[r][j] = (1 + 6 - 0.5, 2 - 2 - 0) = (6.5, 0)
        w = [[Value(a) for a in row] for row in ((1.0, 2.0), (3.0, -1.0), (0.5, 0.0))]
        x = [Value(4.0), Value(-2.0)]
        start = len(Value.tape)
        y = microgpt.linear(x, w)
        self.assertEqual(len(Value.tape) - start, 3)   # one node per row of w
        for row, node in zip(w, y):
            self.assertTrue(all(a is b for a, b in zip(node._children, row + x)))
        self.assertEqual([v.data for v in y], [0.0, 14.0, 2.0])
        loss = y[0] + y[1] * 2 - y[2]
        loss.backward()
        self.assertEqual(loss.data, 26.0)
        self.assertEqual([[p.grad for p in row] for row in w],
                         [[4.0, -2.0], [8.0, -4.0], [-4.0, 2.0]])
        self.assertEqual([v.grad for v in x], [6.5, 0.0])

    def test_gradient_against_finite_differences(self):
        # f = sum_r exp(0.3 * (w @ x)_r): every entry of w and x through a nonlinearity
        rng = random.Random(14)
        rows, cols = 3, 4
        xs = [rng.uniform(-1, 1) for _ in range(rows * cols + cols)]   # w row by row, then x

        def f(v):
            w, x = [v[r * cols:(r + 1) * cols] for r in range(rows)], v[rows * cols:]
            return sum(math.exp(0.3 * sum(a * b for a, b in zip(row, x))) for row in w)

        leaves = [Value(v) for v in xs]
        w = [leaves[r * cols:(r + 1) * cols] for r in range(rows)]
        out = sum((y * 0.3).exp() for y in microgpt.linear(leaves[rows * cols:], w))
        self.assertAlmostEqual(out.data, f(xs), delta=1e-12)
        out.backward()
        assert_grads_match(self, leaves, f, xs)


class TestRmsnorm(TapeTestCase):
    def test_output_has_unit_rms(self):
        rng = random.Random(8)
        for scale in (0.5, 1.0, 30.0):
            x = [Value(rng.gauss(0, scale)) for _ in range(16)]
            y = microgpt.rmsnorm(x)
            rms = math.sqrt(sum(v.data ** 2 for v in y) / len(y))
            self.assertAlmostEqual(rms, 1.0, delta=1e-4)

    def test_hand_values(self):
        # x = [3, 4]: mean square = (9 + 16) / 2 = 12.5, scale = 1 / sqrt(12.5 + 1e-5)
        y = [v.data for v in microgpt.rmsnorm([Value(3.0), Value(4.0)])]
        s = 1 / math.sqrt(12.50001)
        self.assertAlmostEqual(y[0], 3 * s, delta=1e-15)
        self.assertAlmostEqual(y[1], 4 * s, delta=1e-15)
        # x = 0: the 1e-5 keeps it finite: output 0, gradient 1 / sqrt(1e-5) per unit of input
        zeros = [Value(0.0), Value(0.0)]
        y = microgpt.rmsnorm(zeros)
        self.assertEqual([v.data for v in y], [0.0, 0.0])
        y[0].backward()
        self.assertAlmostEqual(zeros[0].grad, 1e-5 ** -0.5, delta=1e-9)
        self.assertEqual(zeros[1].grad, 0.0)

    def test_gradient_against_finite_differences(self):
        rng = random.Random(9)
        xs = [rng.gauss(0, 1) for _ in range(6)]
        ws = [rng.uniform(-1, 1) for _ in range(6)]

        def f(v):   # sum_i w_i * rmsnorm(v)_i, in floats
            s = (sum(a * a for a in v) / len(v) + 1e-5) ** -0.5
            return sum(w * a * s for w, a in zip(ws, v))

        leaves = [Value(x) for x in xs]
        out = sum(y * w for w, y in zip(ws, microgpt.rmsnorm(leaves)))
        self.assertAlmostEqual(out.data, f(xs), delta=1e-12)
        out.backward()
        assert_grads_match(self, leaves, f, xs)


class TestCrossEntropy(TapeTestCase):
    def test_equals_minus_log_softmax(self):
        logits = [0.5, -1.0, 2.0, 0.0]
        for target in range(4):
            expected = -math.log(math.exp(logits[target]) / sum(math.exp(x) for x in logits))
            loss = microgpt.cross_entropy([Value(x) for x in logits], target)
            self.assertAlmostEqual(loss.data, expected, delta=1e-14)

    def test_uniform_logits_give_log_vocab(self):
        # all logits equal: p = 1/n, loss = ln n
        loss = microgpt.cross_entropy([Value(1.7)] * 5, 3)
        self.assertAlmostEqual(loss.data, math.log(5), delta=1e-15)

    def test_extreme_logits_stay_finite(self):
        # logits [0, -1e4, 1e4]: logsumexp = 1e4 + ln(1 + e^-1e4 + e^-2e4) = 1e4 in floats, so
        # the loss for target t is 1e4 - logits[t]: 1e4, 2e4, 0.
        logits = [0.0, -1e4, 1e4]
        # The naive route fails: softmax rounds the probability of target 1 down to 0.
        self.assertEqual(float_softmax(logits)[1], 0.0)
        for target, expected in ((0, 1e4), (1, 2e4), (2, 0.0)):
            leaves = [Value(x) for x in logits]
            loss = microgpt.cross_entropy(leaves, target)
            self.assertEqual(loss.data, expected)
            loss.backward()
            # softmax is (0, 0, 1) to within e^-1e4, so the gradient is that minus one-hot
            onehot = [1.0 if i == target else 0.0 for i in range(3)]
            self.assertEqual([v.grad for v in leaves], [p - o for p, o in zip([0.0, 0.0, 1.0], onehot)])

    def test_is_logsumexp_minus_the_target_logit(self):
        # Three nodes: logsumexp over all the logits, -logits[target], and their sum.
        leaves = [Value(x) for x in (0.5, -1.0, 2.0, 0.0)]
        start = len(Value.tape)
        loss = microgpt.cross_entropy(leaves, 2)
        lse, minus_target = Value.tape[start:start + 2]
        self.assertEqual(Value.tape[start:], [lse, minus_target, loss])
        self.assertEqual(lse._children, tuple(leaves))
        self.assertEqual(minus_target._children, (leaves[2],))
        self.assertEqual(loss._children, (lse, minus_target))
        self.assertEqual(loss.data, lse.data - 2.0)

    def test_matches_a_composite_of_value_operations(self):
        # The same loss built node by node (exp, sum, log, -) must agree in value and gradient.
        rng = random.Random(12)
        for n in (2, 5, 27):
            xs = [rng.gauss(0, 3) for _ in range(n)]
            target = rng.randrange(n)
            fused, composite = [Value(x) for x in xs], [Value(x) for x in xs]
            a = microgpt.cross_entropy(fused, target)
            (a * 0.5).backward()   # through one more node: each local gradient times 0.5
            b = composite_logsumexp(composite) - composite[target]   # (a's graph stays on the tape)
            (b * 0.5).backward()
            self.assertAlmostEqual(a.data, b.data, delta=1e-12)
            for u, v in zip(fused, composite):
                self.assertAlmostEqual(u.grad, v.grad, delta=1e-14)

    def test_equal_huge_logits(self):
        # n equal logits, however large: p = 1/n, loss = ln n, gradient 1/n - one_hot.
        # (exp(1000) alone overflows; e^0 = 1 after subtracting the max.)
        leaves = [Value(1000.0) for _ in range(4)]
        loss = microgpt.cross_entropy(leaves, 1)
        self.assertAlmostEqual(loss.data, math.log(4), delta=1e-12)
        loss.backward()
        self.assertEqual([v.grad for v in leaves], [0.25, -0.75, 0.25, 0.25])

    def test_gradient_is_softmax_minus_onehot(self):
        # loss = ln(sum_j e^x_j) - x_t  =>  d loss / d x_i = e^x_i / sum_j e^x_j - [i == t]
        logits = [0.5, -1.0, 2.0]
        exps = [math.exp(x) for x in logits]
        p = [e / sum(exps) for e in exps]
        for target in range(3):
            leaves = [Value(x) for x in logits]
            microgpt.cross_entropy(leaves, target).backward()
            for i, leaf in enumerate(leaves):
                expected = p[i] - (1.0 if i == target else 0.0)
                self.assertAlmostEqual(leaf.grad, expected, delta=1e-15)
                # and against a central difference of the float formula
                f = lambda v: math.log(sum(math.exp(x) for x in v)) - v[target]  # noqa: E731
                self.assertAlmostEqual(leaf.grad, central_difference(f, logits, i), delta=1e-8)

    def test_gradient_against_finite_differences_at_random_points(self):
        # d/dx_i of ln(sum_j e^x_j) - x_t, by central differences of the float formula.
        rng = random.Random(13)
        for _ in range(5):
            n = rng.randrange(2, 8)
            xs = [rng.gauss(0, 2) for _ in range(n)]
            target = rng.randrange(n)
            f = lambda v: math.log(sum(math.exp(x) for x in v)) - v[target]  # noqa: E731
            leaves = [Value(x) for x in xs]
            loss = microgpt.cross_entropy(leaves, target)
            self.assertAlmostEqual(loss.data, f(xs), delta=1e-12)
            loss.backward()
            assert_grads_match(self, leaves, f, xs)


# %% The full model
def float_forward(tokens, state_dict, config, attention=None):
    """An independent plain-float GPT forward pass: the logits at every input position. If a
    list is given as `attention`, per layer, it receives each head's attention weights in order:
    for each position, for each head."""
    W = {name: [[p.data for p in row] for row in m] for name, m in state_dict.items()}
    hd = config.n_embd // config.n_head

    def lin(x, w):
        return [sum(a * b for a, b in zip(row, x)) for row in w]

    def rms(x):
        s = (sum(a * a for a in x) / len(x) + 1e-5) ** -0.5
        return [a * s for a in x]

    keys = [[] for _ in range(config.n_layer)]
    vals = [[] for _ in range(config.n_layer)]
    out = []
    for pos, tok in enumerate(tokens):
        x = rms([a + b for a, b in zip(W['wte'][tok], W['wpe'][pos])])
        for i in range(config.n_layer):
            res = x
            x = rms(x)
            q, k, v = (lin(x, W[f'layer{i}.attn.{n}']) for n in ('wq', 'wk', 'wv'))
            keys[i].append(k)
            vals[i].append(v)
            heads = []
            for h in range(config.n_head):
                lo, hi = h * hd, (h + 1) * hd
                scores = [sum(q[j] * kt[j] for j in range(lo, hi)) / math.sqrt(hd) for kt in keys[i]]
                w = float_softmax(scores)
                if attention is not None:
                    attention[i].append(w)
                heads += [sum(w[t] * vals[i][t][j] for t in range(len(w))) for j in range(lo, hi)]
            x = [a + b for a, b in zip(lin(heads, W[f'layer{i}.attn.wo']), res)]
            res = x
            x = lin(rms(x), W[f'layer{i}.mlp.fc1'])
            x = [max(0.0, a) ** 2 for a in x]
            x = [a + b for a, b in zip(lin(x, W[f'layer{i}.mlp.fc2']), res)]
        out.append(lin(x, W['lm_head']))
    return out


@contextlib.contextmanager
def recorded_linear_calls():
    """While active, every microgpt.linear(x, w) call is appended to the yielded list as
    (x, w, out)."""
    calls, linear = [], microgpt.linear

    def recording_linear(x, w):
        out = linear(x, w)
        calls.append((x, w, out))
        return out
    with mock.patch.object(microgpt, 'linear', recording_linear):
        yield calls


class TestModel(TapeTestCase):
    def test_param_shapes(self):
        config, tok, sd = tiny_model()
        e, v = 8, tok.vocab_size
        expected = {'wte': (v, e), 'wpe': (6, e), 'lm_head': (v, e)}
        for i in range(2):
            expected.update({f'layer{i}.attn.wq': (e, e), f'layer{i}.attn.wk': (e, e),
                             f'layer{i}.attn.wv': (e, e), f'layer{i}.attn.wo': (e, e),
                             f'layer{i}.mlp.fc1': (4 * e, e), f'layer{i}.mlp.fc2': (e, 4 * e)})
        self.assertEqual({n: (len(m), len(m[0])) for n, m in sd.items()}, expected)
        self.assertTrue(all(len(row) == len(m[0]) for m in sd.values() for row in m))
        # 2*5*8 + 6*8 + 2 layers * (4*64 + 2*256) = 80 + 48 + 1536
        self.assertEqual(len(microgpt.flat_params(sd)), 1664)

    def test_forward_matches_plain_float_reference(self):
        config, tok, sd = tiny_model(seed=4)
        tokens = [tok.bos, 0, 1, 2, 0, tok.bos]
        kv = new_kv_cache(config)
        expected = float_forward(tokens[:-1], sd, config)
        for pos, tok_id in enumerate(tokens[:-1]):
            logits = microgpt.gpt(tok_id, pos, kv, sd, config)
            self.assertEqual(len(logits), tok.vocab_size)
            for a, b in zip(logits, expected[pos]):
                self.assertAlmostEqual(a.data, b, delta=1e-12)
        self.assertEqual([(len(keys), len(values)) for keys, values, _ in kv], [(5, 5), (5, 5)])
        # document_loss is the mean over positions of -log softmax(logits)[next token]
        losses = [-math.log(float_softmax(lg)[nxt]) for lg, nxt in zip(expected, tokens[1:])]
        loss = microgpt.document_loss(tokens, sd, config)
        self.assertAlmostEqual(loss.data, sum(losses) / len(losses), delta=1e-12)

    def test_attention_is_causal(self):
        # The logits at position t depend only on tokens 0..t: changing a later token must not
        # change them, and changing an earlier one must.
        config, tok, sd = tiny_model(seed=5)

        def logits_of(tokens):
            kv = new_kv_cache(config)
            return [[v.data for v in microgpt.gpt(t, pos, kv, sd, config)] for pos, t in enumerate(tokens)]

        a = logits_of([tok.bos, 0, 1, 2])
        b = logits_of([tok.bos, 0, 1, 3])
        c = logits_of([tok.bos, 3, 1, 2])
        self.assertEqual(a[:3], b[:3])
        self.assertNotEqual(a[3], b[3])
        self.assertEqual(a[0], c[0])
        self.assertNotEqual(a[2], c[2])

    def test_attention_weights_in_the_cache(self):
        # After position pos, each layer's attention list holds n_head lists per position so far:
        # (pos + 1) * n_head. The newest n_head are this position's weights, one per head, over
        # positions 0..pos: pos + 1 probabilities summing to 1, equal to softmax(q.k / sqrt(4))
        # recomputed in plain floats (head_dim = 8 // 2 = 4).
        config, tok, sd = tiny_model(seed=8)
        tokens = [tok.bos, 2, 0, 3, 1]
        expected = [[], []]
        float_forward(tokens, sd, config, attention=expected)
        kv = new_kv_cache(config)
        for pos, t in enumerate(tokens):
            microgpt.gpt(t, pos, kv, sd, config)
            for i, (_, _, attention) in enumerate(kv):
                self.assertEqual(len(attention), (pos + 1) * 2)
                for weights in attention[-2:]:
                    self.assertEqual(len(weights), pos + 1)
                    self.assertTrue(all(isinstance(w, Value) for w in weights))
                    self.assertAlmostEqual(sum(w.data for w in weights), 1.0, delta=1e-12)
        for i, (_, _, attention) in enumerate(kv):
            self.assertEqual(len(attention), len(expected[i]))
            for got, want in zip(attention, expected[i]):
                self.assertEqual(len(got), len(want))
                for a, b in zip(got, want):
                    self.assertAlmostEqual(a.data, b, delta=1e-12)
        # and they are not trivially uniform: the check above could tell them apart
        self.assertGreater(max(abs(w.data - 1 / len(ws)) for ws in kv[0][2] for w in ws), 1e-3)

    def test_zero_queries_attend_uniformly(self):
        # Layer 0's wq = 0 -> q = 0 -> every score q.k / sqrt(head_dim) is 0 -> softmax of pos + 1
        # equal scores is 1 / (pos + 1) each, in every head.
        config, tok, sd = tiny_model(seed=9, n_layer=1)
        for row in sd['layer0.attn.wq']:
            for p in row:
                p.data = 0.0
        kv = new_kv_cache(config)
        for pos, t in enumerate([tok.bos, 0, 1, 2]):
            microgpt.gpt(t, pos, kv, sd, config)
        weights = [[w.data for w in ws] for ws in kv[0][2]]
        self.assertEqual(len(weights), 4 * 2)
        for pos in range(4):
            for h in range(2):
                for w in weights[pos * 2 + h]:
                    self.assertAlmostEqual(w, 1 / (pos + 1), delta=1e-15)

    def test_zero_lm_head_gives_log_vocab_loss(self):
        # lm_head = 0 -> every logit is 0 -> softmax is uniform -> every position's loss is ln V
        config, tok, sd = tiny_model(seed=6)
        for row in sd['lm_head']:
            for p in row:
                p.data = 0.0
        loss = microgpt.document_loss([tok.bos, 1, 2, tok.bos], sd, config)
        self.assertAlmostEqual(loss.data, math.log(tok.vocab_size), delta=1e-12)

    def test_evaluate_is_the_mean_loss_per_token(self):
        # evaluate() weighs each document by its number of predictions (tokens - 1), unlike a mean
        # of document means: here 'ab' has 3 predictions, 'cadbcadb' (cut to block_size) 6.
        config, tok, sd = tiny_model(seed=11)
        docs = ['ab', 'cadbcadb']
        total, count = 0.0, 0
        for doc in docs:
            tokens = microgpt.doc_tokens(doc, tok, config.block_size)
            logits = float_forward(tokens[:-1], sd, config)
            total += sum(-math.log(float_softmax(lg)[n]) for lg, n in zip(logits, tokens[1:]))
            count += len(tokens) - 1
        self.assertEqual(count, 3 + 6)
        self.assertAlmostEqual(microgpt.evaluate(docs, tok, sd, config), total / count, delta=1e-12)

    def test_long_document_fits_the_position_table(self):
        # doc_tokens cuts to block_size + 1 tokens, so the model reads positions 0..block_size-1,
        # exactly the rows of wpe: no IndexError, and the loss averages block_size predictions.
        config, tok, sd = tiny_model(seed=7, block_size=4)
        tokens = microgpt.doc_tokens('abcdabcd', tok, config.block_size)
        self.assertEqual(len(tokens), 5)
        loss = microgpt.document_loss(tokens, sd, config)
        logits = float_forward(tokens[:-1], sd, config)
        expected = sum(-math.log(float_softmax(lg)[n]) for lg, n in zip(logits, tokens[1:])) / 4
        self.assertAlmostEqual(loss.data, expected, delta=1e-12)

    def test_mlp_gives_fc2_only_the_active_units(self):
        # Squared ReLU is exactly 0, with slope 0, for every input <= 0. gpt() hands fc2 just the
        # other units, with their columns of fc2: the logits are those of the dense float
        # reference, and fc2's nodes have 2 children per active unit, not 2 per unit.
        config, tok, sd = tiny_model(seed=4, n_layer=1)
        kv = new_kv_cache(config)
        tokens = [tok.bos, 0, 1, 2]
        expected = float_forward(tokens, sd, config)
        with recorded_linear_calls() as calls:
            for pos, t in enumerate(tokens):
                logits = microgpt.gpt(t, pos, kv, sd, config)
                for a, b in zip(logits, expected[pos]):
                    self.assertAlmostEqual(a.data, b, delta=1e-12)
        fc1, fc2 = sd['layer0.mlp.fc1'], sd['layer0.mlp.fc2']
        fc1_calls = [i for i, (x, w, out) in enumerate(calls) if w is fc1]
        self.assertEqual(len(fc1_calls), 4)   # one per position
        active_counts = []
        for i in fc1_calls:
            hidden = calls[i][2]
            active = [j for j, h in enumerate(hidden) if h.data > 0]
            x, w, out = calls[i + 1]   # the next matrix product is fc2's
            self.assertEqual([xj._children for xj in x], [(hidden[j],) for j in active])
            self.assertEqual(len(w), len(fc2))
            for row, fc2_row in zip(w, fc2):
                self.assertEqual(len(row), len(active))
                self.assertTrue(all(a is fc2_row[j] for a, j in zip(row, active)))
            self.assertTrue(all(len(node._children) == 2 * len(active) for node in out))
            active_counts.append(len(active))
        # some units are active and some are not, so the test sees both kinds
        self.assertTrue(all(0 < n < 4 * config.n_embd for n in active_counts), active_counts)

    def test_mlp_skips_a_unit_only_if_its_value_and_slope_are_0(self):
        # Rows of fc1 made from one row k whose output at position 0 is clearly positive, z_k:
        # row 0 = 1e-8 * row k (value ~1e-16 z_k^2, tiny but not 0: kept), row 1 = 1e-170 * row k
        # (its square underflows to 0.0, but the slope 2e-170 z_k does not: kept), row 2 = 0
        # (value 0, slope 0: skipped), row 3 = -row k (negative: value 0, slope 0: skipped).
        config, tok, sd = tiny_model(seed=4, n_layer=1)
        fc1 = sd['layer0.mlp.fc1']

        def fc2_inputs_at_position_0():
            with recorded_linear_calls() as calls:
                microgpt.gpt(tok.bos, 0, new_kv_cache(config), sd, config)
            i = next(i for i, (x, w, out) in enumerate(calls) if w is fc1)
            return calls[i][2], calls[i + 1][0]
        hidden, _ = fc2_inputs_at_position_0()
        k = max(range(4, len(fc1)), key=lambda j: hidden[j].data)
        self.assertGreater(hidden[k].data, 0.1)
        for j, scale in ((0, 1e-8), (1, 1e-170), (2, 0.0), (3, -1.0)):
            for p, q in zip(fc1[j], fc1[k]):
                p.data = scale * q.data
        hidden, fc2_x = fc2_inputs_at_position_0()
        self.assertGreater(hidden[0].data, 0.0)
        self.assertEqual(hidden[1].data ** 2, 0.0)
        kept = [xj._children[0] for xj in fc2_x]   # the fc1 outputs behind fc2's inputs
        self.assertTrue(any(h is hidden[0] for h in kept))
        self.assertTrue(any(h is hidden[1] for h in kept))
        self.assertFalse(any(h is hidden[2] or h is hidden[3] for h in kept))
        self.assertTrue(any(h is hidden[k] for h in kept))

    def test_mlp_with_another_nonlinearity_keeps_units_at_0_with_a_slope(self):
        # A learner swaps squared ReLU for tanh. With fc1 = 0 every hidden unit is tanh(0) = 0,
        # but its slope is 1, so it must still reach fc2 and pass gradient back to fc1: fc1's
        # gradient must match central differences of the loss, and not be all 0.
        def tanh(self):
            t = math.tanh(self.data)
            return Value(t, (self,), (1 - t * t,))
        config, tok, sd = tiny_model(seed=8, n_layer=1)
        for row in sd['layer0.mlp.fc1']:
            for p in row:
                p.data = 0.0
        tokens = [tok.bos, 2, 0, tok.bos]
        with mock.patch.object(Value, 'relu_squared', tanh):
            loss = microgpt.document_loss(tokens, sd, config)
            loss.backward()
            fc1 = sd['layer0.mlp.fc1']
            self.assertTrue(any(p.grad != 0.0 for row in fc1 for p in row))
            for r, c in ((0, 0), (5, 3), (17, 7), (31, 2)):
                p, saved = fc1[r][c], fc1[r][c].data
                losses = []
                for value in (saved + H, saved - H):
                    p.data = value
                    losses.append(microgpt.document_loss(tokens, sd, config).data)
                p.data = saved
                fd = (losses[0] - losses[1]) / (2 * H)
                self.assertTrue(close(p.grad, fd, 1e-8, 1e-5), (r, c, p.grad, fd))

    def test_mlp_with_no_active_unit(self):
        # fc1 = 0: every hidden unit is 0, so fc2 gets no inputs at all. Its outputs are then the
        # float 0.0 (an empty sum started at 0.0, not the int 0), constants with no gradient.
        config, tok, sd = tiny_model(seed=5, n_layer=1)
        for row in sd['layer0.mlp.fc1']:
            for p in row:
                p.data = 0.0
        tokens = [tok.bos, 1, 0, tok.bos]
        logits = float_forward(tokens[:-1], sd, config)
        expected = sum(-math.log(float_softmax(lg)[n]) for lg, n in zip(logits, tokens[1:])) / 3
        with recorded_linear_calls() as calls:
            loss = microgpt.document_loss(tokens, sd, config)
        fc2_outputs = [y for x, w, out in calls if len(w) == len(sd['layer0.mlp.fc2']) and not x
                       for y in out]
        self.assertAlmostEqual(loss.data, expected, delta=1e-12)
        self.assertEqual(len(fc2_outputs), 3 * config.n_embd)   # 3 positions, no inputs each
        self.assertEqual({(type(y.data), y.data) for y in fc2_outputs}, {(float, 0.0)})
        loss.backward()
        for name in ('layer0.mlp.fc1', 'layer0.mlp.fc2'):
            self.assertEqual({p.grad for row in sd[name] for p in row}, {0.0}, name)
        self.assertTrue(any(p.grad != 0.0 for row in sd['layer0.attn.wv'] for p in row))

    def test_gradients_of_every_matrix_against_finite_differences(self):
        config, tok, sd = tiny_model(seed=1)
        tokens = microgpt.doc_tokens('abca', tok, config.block_size)
        self.assertEqual(tokens, [4, 0, 1, 2, 0, 4])   # inputs: tokens 4, 0, 1, 2 at positions 0..4
        loss = microgpt.document_loss(tokens, sd, config)
        loss.backward()

        def loss_at(p, value):
            saved = p.data
            p.data = value
            try:
                return microgpt.document_loss(tokens, sd, config).data
            finally:
                p.data = saved

        rng = random.Random(2)
        checked = 0
        for name, matrix in sd.items():
            grads = [abs(p.grad) for row in matrix for p in row]
            # Every matrix takes part in the loss: some entry has a clearly nonzero gradient.
            self.assertGreater(max(grads), 1e-6, name)
            entries = {(rng.randrange(len(matrix)), rng.randrange(len(matrix[0]))) for _ in range(3)}
            flat_max = grads.index(max(grads))
            entries.add(divmod(flat_max, len(matrix[0])))   # the entry with the largest gradient
            if name == 'wte':   # rows of the input tokens 4, 0, 1, 2, and row 3 ('d'), unused
                entries |= {(4, 1), (0, 2), (1, 3), (2, 4), (3, 5)}
            if name == 'wpe':   # rows of positions 0..4, and row 5, never reached
                entries |= {(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)}
            for r, c in sorted(entries):
                p = matrix[r][c]
                fd = (loss_at(p, p.data + H) - loss_at(p, p.data - H)) / (2 * H)
                self.assertTrue(close(p.grad, fd, 1e-7, 1e-5), f"{name}[{r}][{c}]: {p.grad} vs {fd}")
                checked += 1
        # rows that never feed the forward pass get exactly no gradient
        self.assertEqual([p.grad for p in sd['wte'][3]], [0.0] * 8)
        self.assertEqual([p.grad for p in sd['wpe'][5]], [0.0] * 8)
        # wte rows of used tokens and wpe rows of used positions do get gradient
        for r in (0, 1, 2, 4):
            self.assertTrue(any(p.grad != 0.0 for p in sd['wte'][r]), r)
        for r in range(5):
            self.assertTrue(any(p.grad != 0.0 for p in sd['wpe'][r]), r)
        self.assertGreaterEqual(checked, 15 * 3)


# %% Tokenizer and documents
class TestTokenizer(unittest.TestCase):
    def test_round_trip(self):
        for text in ('hello world', 'Zoë Ångström café', '日本語のテキスト', 'mixed: ñ 中 é 🙂'):
            tok = microgpt.Tokenizer(text)
            self.assertEqual(tok.decode(tok.encode(text)), text)
            self.assertEqual(len(tok.encode(text)), len(text))   # one token per character

    def test_ids_in_sorted_order(self):
        # distinct characters of 'cabbage' sorted: a b c e g -> ids 0..4
        tok = microgpt.Tokenizer('cabbage')
        self.assertEqual(tok.chars, ['a', 'b', 'c', 'e', 'g'])
        self.assertEqual(tok.encode('abceg'), [0, 1, 2, 3, 4])
        self.assertEqual(tok.encode('cabbage'), [2, 0, 1, 1, 0, 4, 3])
        # by code point: 'Z' (90) < 'a' (97) < 'é' (233) < '日' (26085)
        tok = microgpt.Tokenizer('日éaZ')
        self.assertEqual(tok.encode('Zaé日'), [0, 1, 2, 3])

    def test_bos_is_the_last_id(self):
        tok = microgpt.Tokenizer('cabbage')
        self.assertEqual(tok.bos, 5)
        self.assertEqual(tok.bos, len(tok.chars))
        self.assertEqual(tok.vocab_size, 6)
        self.assertEqual(tok.bos, tok.vocab_size - 1)

    def test_doc_tokens_short_doc(self):
        tok = microgpt.Tokenizer('abc')   # a=0 b=1 c=2, bos=3
        self.assertEqual(microgpt.doc_tokens('cab', tok, 16), [3, 2, 0, 1, 3])
        # a doc of exactly block_size - 1 characters still fits whole, with both BOS
        self.assertEqual(microgpt.doc_tokens('cab', tok, 4), [3, 2, 0, 1, 3])

    def test_doc_tokens_long_doc_is_cut(self):
        tok = microgpt.Tokenizer('abc')
        tokens = microgpt.doc_tokens('abcabcabc', tok, 4)
        self.assertEqual(tokens, [3, 0, 1, 2, 0])   # block_size + 1 = 5 tokens: BOS + 4 chars
        self.assertEqual(microgpt.doc_tokens('abca', tok, 4), [3, 0, 1, 2, 0])   # end BOS cut off


class TestLoadDocs(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def write(self, data, name='input.txt'):
        path = os.path.join(self.tmp.name, name)
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def test_lines_cleaned(self):
        data = '\ufeffAnna\r\n  Bob  \r\n\r\n\t \n Zoë\n日本\nlast'.encode('utf-8')
        self.assertTrue(data.startswith(b'\xef\xbb\xbf'))
        self.assertEqual(microgpt.load_docs(self.write(data)), ['Anna', 'Bob', 'Zoë', '日本', 'last'])

    def test_crlf_only(self):
        path = self.write(b'a\r\nb\r\n')
        self.assertEqual(microgpt.load_docs(path), ['a', 'b'])

    def test_blank_files_give_no_documents(self):
        # load_docs only reads: an empty result is the caller's to refuse.
        for name, data in (('empty.txt', b''), ('blank.txt', b'  \n\t\r\n \n'),
                           ('bom.txt', b'\xef\xbb\xbf\n\n')):
            self.assertEqual(microgpt.load_docs(self.write(data, name)), [], name)

    def test_errors_are_the_native_ones(self):
        with self.assertRaises(FileNotFoundError):
            microgpt.load_docs(os.path.join(self.tmp.name, 'no-such-file.txt'))
        with self.assertRaises(OSError) as ctx:   # IsADirectoryError; PermissionError on Windows
            microgpt.load_docs(self.tmp.name)
        self.assertIsInstance(ctx.exception, (IsADirectoryError, PermissionError))
        with self.assertRaises(UnicodeDecodeError):   # 'é' in Latin-1 is the lone byte 0xe9
            microgpt.load_docs(self.write('café\n'.encode('latin-1'), 'latin1.txt'))


class TestFindInput(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name
        cwd = os.getcwd()
        os.chdir(self.dir)   # relative names are looked up here
        self.addCleanup(os.chdir, cwd)

    def test_a_regular_file_is_returned(self):
        with open('names.txt', 'w', encoding='utf-8') as f:
            f.write('ana\n')
        self.assertEqual(microgpt.find_input('names.txt'), 'names.txt')
        full = os.path.join(self.dir, 'names.txt')
        self.assertEqual(microgpt.find_input(full), full)

    def test_missing_file_or_directory_is_an_input_error(self):
        os.mkdir('folder')
        for path in ('no-such-file.txt', 'folder', os.path.join(self.dir, 'folder')):
            with self.assertRaises(microgpt.InputError) as ctx:
                microgpt.find_input(path)
            self.assertEqual(str(ctx.exception),
                             f"input file not found (or not a regular file): {path}")

    def test_default_input_is_also_looked_for_beside_the_script(self):
        # Here (a fresh folder) there is no input.txt, but there is one beside microgpt.py.
        beside = os.path.join(os.path.dirname(os.path.abspath(microgpt.__file__)), 'input.txt')
        self.assertTrue(os.path.isfile(beside))
        self.assertEqual(microgpt.find_input(microgpt.Config.input), beside)
        # One in the current folder comes first.
        with open('input.txt', 'w', encoding='utf-8') as f:
            f.write('ana\n')
        self.assertEqual(microgpt.find_input('input.txt'), 'input.txt')

    def test_other_names_are_not_looked_for_beside_the_script(self):
        # README.md is beside microgpt.py, but only the default name is looked for there.
        script_dir = os.path.dirname(os.path.abspath(microgpt.__file__))
        self.assertTrue(os.path.isfile(os.path.join(script_dir, 'README.md')))
        with self.assertRaises(microgpt.InputError) as ctx:
            microgpt.find_input('README.md')
        self.assertTrue(str(ctx.exception).endswith(': README.md'), str(ctx.exception))


# %% Optimizer
class TestAdam(unittest.TestCase):
    def test_two_steps_by_hand(self):
        p1, p2, p3 = Value(1.0), Value(-0.5), Value(0.25)
        opt = microgpt.Adam([p1, p2, p3])
        self.assertEqual((opt.beta1, opt.beta2, opt.eps), (0.85, 0.99, 1e-8))

        # Step 1, lr 0.01, grads g = 0.5, -2.0, 0.0:
        #   m = 0.15 g = 0.075, -0.3, 0;   v = 0.01 g^2 = 0.0025, 0.04, 0
        #   m_hat = m / (1 - 0.85) = g;    v_hat = v / (1 - 0.99) = g^2
        #   update = lr g / (|g| + eps) ~ lr sign(g); the zero-gradient parameter stays put.
        p1.grad, p2.grad, p3.grad = 0.5, -2.0, 0.0
        opt.step(0.01)
        self.assertAlmostEqual(opt.m[0], 0.075, delta=1e-15)
        self.assertAlmostEqual(opt.m[1], -0.3, delta=1e-15)
        self.assertAlmostEqual(opt.v[0], 0.0025, delta=1e-15)
        self.assertAlmostEqual(opt.v[1], 0.04, delta=1e-15)
        self.assertAlmostEqual(p1.data, 1.0 - 0.01 * 0.5 / (0.5 + 1e-8), delta=1e-15)
        self.assertAlmostEqual(p2.data, -0.5 + 0.01 * 2.0 / (2.0 + 1e-8), delta=1e-15)
        self.assertAlmostEqual(p1.data, 0.99, delta=1e-9)    # ~ 1 - lr
        self.assertAlmostEqual(p2.data, -0.49, delta=1e-9)   # ~ -0.5 + lr
        self.assertEqual(p3.data, 0.25)
        self.assertEqual((p1.grad, p2.grad, p3.grad), (0.0, 0.0, 0.0))

        # Step 2, lr 0.005, grads 0.1, 1.0, 0.0:
        #   p1: m = 0.85 * 0.075 + 0.15 * 0.1 = 0.07875,  v = 0.99 * 0.0025 + 0.01 * 0.01 = 0.002575
        #   p2: m = 0.85 * -0.3 + 0.15 * 1.0 = -0.105,    v = 0.99 * 0.04 + 0.01 * 1.0 = 0.0496
        #   bias corrections: 1 - 0.85^2 = 0.2775,  1 - 0.99^2 = 0.0199
        #   p1: m_hat = 0.07875 / 0.2775 = 0.283784,  v_hat = 0.002575 / 0.0199 = 0.129397
        #   p2: m_hat = -0.105 / 0.2775 = -0.378378,  v_hat = 0.0496 / 0.0199 = 2.492462
        #   update = 0.005 * m_hat / (sqrt(v_hat) + 1e-8):
        #   p1: 0.005 * 0.283784 / 0.359718 = 0.0039445;  p2: 0.005 * -0.378378 / 1.578753 = -0.0011983
        p1.grad, p2.grad = 0.1, 1.0
        before1, before2 = p1.data, p2.data
        opt.step(0.005)
        self.assertAlmostEqual(opt.m[0], 0.07875, delta=1e-15)
        self.assertAlmostEqual(opt.v[0], 0.002575, delta=1e-15)
        self.assertAlmostEqual(opt.m[1], -0.105, delta=1e-15)
        self.assertAlmostEqual(opt.v[1], 0.0496, delta=1e-15)
        upd1 = 0.005 * (0.07875 / 0.2775) / (math.sqrt(0.002575 / 0.0199) + 1e-8)
        upd2 = 0.005 * (-0.105 / 0.2775) / (math.sqrt(0.0496 / 0.0199) + 1e-8)
        self.assertAlmostEqual(upd1, 0.0039445, delta=1e-7)
        self.assertAlmostEqual(upd2, -0.0011983, delta=1e-7)
        self.assertAlmostEqual(p1.data, before1 - upd1, delta=1e-15)
        self.assertAlmostEqual(p2.data, before2 - upd2, delta=1e-15)
        self.assertEqual(p3.data, 0.25)
        self.assertEqual(opt.t, 2)
        self.assertEqual((p1.grad, p2.grad, p3.grad), (0.0, 0.0, 0.0))


# %% Training
def atomic_dot(a, b):
    """Reference dot product built from Value * and + only: a[0]*b[0] + a[1]*b[1] + ..."""
    assert len(a) == len(b)
    atomic_dot.calls += 1
    products = [x * y for x, y in zip(a, b)]
    total = products[0]
    for p in products[1:]:
        total = total + p
    return total


atomic_dot.calls = 0


def atomic_linear(x, w):
    """Reference matrix-vector product: one atomic dot product per row."""
    atomic_linear.calls += 1
    return [atomic_dot(row, x) for row in w]


atomic_linear.calls = 0


def train(docs, tokenizer, state_dict, config, log=None):
    """microgpt.train, returning the list of step losses it appended to."""
    losses = []
    microgpt.train(docs, tokenizer, state_dict, config, losses, log)
    return losses


def run_steps(seed, steps, config, tokenizer, docs):
    """init_params from a seeded rng, then train() for `steps` steps. Returns the step losses and
    the final weights. Keeps no graph alive once it returns."""
    state_dict = microgpt.init_params(tokenizer.vocab_size, config, random.Random(seed))
    losses = train(docs, tokenizer, state_dict, dataclasses.replace(config, steps=steps))
    return losses, [p.data for p in microgpt.flat_params(state_dict)]


def live_values():
    return sum(1 for o in gc.get_objects() if type(o) is Value)


class TestTraining(TapeTestCase):
    def test_fast_paths_match_atomic_operations(self):
        # dot() and linear() as plain * and + nodes, logsumexp() and softmax() as exp, +, log
        # and ** -1 nodes: the same losses and the same weights after three steps of training.
        config = microgpt.Config(n_layer=2, n_embd=8, n_head=2, block_size=6, learning_rate=0.01)
        tok = microgpt.Tokenizer(''.join(NAMES))
        fast_losses, fast_weights = run_steps(21, 3, config, tok, NAMES)
        patches = {'dot': atomic_dot, 'linear': atomic_linear, 'logsumexp': composite_logsumexp,
                   'softmax': composite_softmax}
        calls = {name: f.calls for name, f in patches.items()}
        with contextlib.ExitStack() as stack:
            for name, f in patches.items():
                stack.enter_context(mock.patch.object(microgpt, name, f))
            slow_losses, slow_weights = run_steps(21, 3, config, tok, NAMES)
        # the patches really took effect: one logsumexp per prediction ('ana', 'bob', 'cara'
        # make 4 + 4 + 5), one softmax per head per position (2 layers x 2 heads x 13)
        self.assertGreater(atomic_dot.calls - calls['dot'], 100)
        self.assertGreater(atomic_linear.calls - calls['linear'], 100)
        self.assertEqual(composite_logsumexp.calls - calls['logsumexp'], 13)
        self.assertEqual(composite_softmax.calls - calls['softmax'], 2 * 2 * 13)
        for name, f in patches.items():   # and were undone
            self.assertIsNot(getattr(microgpt, name), f)
        self.assertEqual(len(fast_losses), 3)
        for a, b in zip(fast_losses, slow_losses):
            self.assertAlmostEqual(a, b, delta=1e-9)
        self.assertEqual(len(fast_weights), len(slow_weights))
        self.assertLess(max(abs(a - b) for a, b in zip(fast_weights, slow_weights)), 1e-9)
        # the weights did move, so matching them is not trivial: each moved ~lr at step 1
        init = [p.data for p in microgpt.flat_params(
            microgpt.init_params(tok.vocab_size, config, random.Random(21)))]
        self.assertGreater(max(abs(a - b) for a, b in zip(fast_weights, init)), 0.005)

    def test_short_training_run_lowers_the_loss(self):
        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=8, steps=60,
                                 learning_rate=0.01)
        tok = microgpt.Tokenizer(''.join(NAMES))
        state_dict = microgpt.init_params(tok.vocab_size, config, random.Random(3))
        start = microgpt.evaluate(NAMES, tok, state_dict, config)
        # small random weights: the first predictions are close to uniform, loss ~ ln V
        self.assertAlmostEqual(start, math.log(tok.vocab_size), delta=0.2)
        logged = []
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            losses = train(NAMES, tok, state_dict, config,
                                    lambda step, loss: logged.append((step, loss)))
        self.assertEqual(out.getvalue(), '')   # train() reports only through log
        self.assertEqual(len(losses), 60)
        self.assertEqual(logged, list(zip(range(1, 61), losses)))   # steps count from 1
        first, last = sum(losses[:15]) / 15, sum(losses[-15:]) / 15
        self.assertLess(last, first - 0.5, (first, last))
        end = microgpt.evaluate(NAMES, tok, state_dict, config)
        self.assertLess(end, start - 0.5, (start, end))

    def test_log_returning_true_stops_training(self):
        # Stopping after step 3 of 10 leaves the first 3 steps exactly as a full run takes them
        # (same documents, same learning rates, which decay over all 10 steps).
        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=8, steps=10)
        tok = microgpt.Tokenizer(''.join(NAMES))
        full, _ = run_steps(5, 10, config, tok, NAMES)
        state_dict = microgpt.init_params(tok.vocab_size, config, random.Random(5))
        steps_logged = []

        def log(step, loss):
            steps_logged.append(step)
            return step == 3

        stopped = train(NAMES, tok, state_dict, config, log)
        self.assertEqual(steps_logged, [1, 2, 3])
        self.assertEqual(stopped, full[:3])
        self.assertEqual(len(full), 10)
        # zero steps: nothing logged, nothing learned
        before = [p.data for p in microgpt.flat_params(state_dict)]
        no_steps = dataclasses.replace(config, steps=0)
        self.assertEqual(train(NAMES, tok, state_dict, no_steps, log), [])
        self.assertEqual(steps_logged, [1, 2, 3])
        self.assertEqual([p.data for p in microgpt.flat_params(state_dict)], before)

    def test_losses_so_far_survive_an_error(self):
        # train() appends each step's loss to the caller's list as it goes, so a run stopped by
        # an error (here a divergence, as Progress.log reports it) still holds the steps it took:
        # the same numbers as the first steps of a run that was not stopped.
        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=8, steps=10,
                                 learning_rate=0.01)
        tok = microgpt.Tokenizer(''.join(NAMES))
        full = train(NAMES, tok, microgpt.init_params(tok.vocab_size, config, random.Random(5)),
                     config)

        def log(step, loss):
            microgpt.require(step < 3, f"training diverged at step {step}")

        losses = []
        state_dict = microgpt.init_params(tok.vocab_size, config, random.Random(5))
        with self.assertRaisesRegex(microgpt.InputError, 'diverged at step 3'):
            microgpt.train(NAMES, tok, state_dict, config, losses, log)
        self.assertEqual(losses, full[:3])
        self.assertEqual(Value.tape, [])   # log runs after Adam.step, which cleared the tape

    def test_no_graph_outlives_a_training_step(self):
        # Progress switches the cycle collector off while training (and runs it every 40 steps),
        # relying on reference counting to free each step's graph. So train inside Progress, and
        # count the live Values at every step before Progress's own log can collect anything:
        # train() has already dropped the step's graph (`del loss`, after Adam.step cleared the
        # tape), so only the parameters and what other tests hold may be alive, every step.
        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=8, steps=15,
                                 learning_rate=0.01)
        docs = [name for name in NAMES if len(name) == 3]
        self.assertGreater(len(docs), 15)
        tok = microgpt.Tokenizer(''.join(docs))
        state_dict = microgpt.init_params(tok.vocab_size, config, random.Random(4))
        n_params = len(microgpt.flat_params(state_dict))
        # One step first, so that anything a first step creates once is in the baseline.
        train(docs, tok, state_dict, dataclasses.replace(config, steps=1))
        gc.collect()
        baseline = live_values()   # the parameters and any Values other tests still hold
        was_enabled = gc.isenabled()
        counts, tape_lengths, collector_on = [], [], []
        try:
            with contextlib.redirect_stdout(io.StringIO()), \
                    microgpt.Progress(config, tok.vocab_size) as progress:
                def log(step, loss):
                    counts.append(live_values())
                    tape_lengths.append(len(Value.tape))
                    collector_on.append(gc.isenabled())
                    return progress.log(step, loss)

                losses = train(docs, tok, state_dict, config, log)
            after = live_values()
        finally:
            if was_enabled:
                gc.enable()
        self.assertTrue(was_enabled)
        self.assertTrue(gc.isenabled())   # Progress switched the collector back on
        self.assertEqual(collector_on, [False] * 15)
        self.assertEqual(len(losses), 15)
        self.assertEqual(tape_lengths, [0] * 15)
        self.assertGreater(n_params, 500)
        self.assertGreaterEqual(baseline, n_params)
        self.assertEqual(counts, [baseline] * 15)   # no graph outlives its step
        self.assertEqual(after, baseline)

    def test_same_seed_same_run(self):
        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=8, learning_rate=0.01)
        tok = microgpt.Tokenizer(''.join(NAMES))
        a = run_steps(42, 3, config, tok, NAMES)
        b = run_steps(42, 3, config, tok, NAMES)
        self.assertEqual(a, b)   # losses and weights, exactly
        c = run_steps(43, 3, config, tok, NAMES)
        self.assertNotEqual(a[0], c[0])   # a different seed really is a different run


class TestTapeAroundTheModel(TapeTestCase):
    """Only computed Values go on the tape, never the weights. evaluate() and generate() drop only
    their own part of it; Adam.step() (so train(), after each step) clears it, earlier graphs
    included. backward()
    leaves it as it was: a graph can be backpropagated again (the weights add up), and graphs
    backpropagated earlier do not leak into later ones. Summed losses backpropagate as one."""

    CONFIG = dict(seed=10, n_layer=1, n_embd=8, n_head=2, block_size=8, chars='abcdeo')

    def grads(self, state_dict):
        return [p.grad for p in microgpt.flat_params(state_dict)]

    def test_evaluate_and_generate_keep_an_earlier_graph(self):
        # Two copies of the same model: the first backpropagates its loss straight away, the
        # second runs evaluate() and generate() between building its loss and backward(). Same
        # graph, same tape order, so the same gradients, exactly.
        config, tok, sd_a = tiny_model(**self.CONFIG)
        tokens = microgpt.doc_tokens('abode', tok, config.block_size)
        loss_a = microgpt.document_loss(tokens, sd_a, config)
        loss_a.backward()
        expected = self.grads(sd_a)
        self.assertGreater(sum(g != 0.0 for g in expected), 100)

        _, _, sd_b = tiny_model(**self.CONFIG)
        loss_b = microgpt.document_loss(tokens, sd_b, config)
        before = len(Value.tape)
        self.assertIs(Value.tape[-1], loss_b)
        microgpt.evaluate(['cab', 'deed', 'bead'], tok, sd_b, config)
        self.assertEqual(len(Value.tape), before)
        rng = random.Random(0)
        for prompt in ('', 'b', 'dec'):
            sample = microgpt.generate(sd_b, tok, config, rng, prompt)
            self.assertTrue(sample.startswith(prompt), (prompt, sample))
            self.assertEqual(len(Value.tape), before)
        self.assertIs(Value.tape[-1], loss_b)
        self.assertEqual(self.grads(sd_b), [0.0] * len(expected))   # nothing backpropagated yet
        loss_b.backward()
        self.assertEqual(loss_b.data, loss_a.data)
        self.assertEqual(self.grads(sd_b), expected)

    def test_exact_gradients_after_training_evaluating_and_sampling(self):
        config, tok, sd = tiny_model(**self.CONFIG)
        train(['abode', 'cab'], tok, sd, dataclasses.replace(config, steps=2))
        self.assertEqual(Value.tape, [])   # train() cleared it after its last step
        microgpt.evaluate(['abode'], tok, sd, config)
        microgpt.generate(sd, tok, config, random.Random(1), 'a')
        self.assertEqual(Value.tape, [])
        # out = a*b + exp(c) at a = 1.5, b = -2, c = 0: d/da = b = -2, d/db = a = 1.5,
        # d/dc = e^0 = 1, exactly
        a, b, c = Value(1.5), Value(-2.0), Value(0.0)
        out = a * b + c.exp()
        out.backward()
        self.assertEqual((out.data, a.grad, b.grad, c.grad), (-2.0, -2.0, 1.5, 1.0))
        self.assertEqual(len(Value.tape), 3)   # a * b, exp(c), the sum: backward() keeps them
        self.assertIs(Value.tape[-1], out)

    def test_only_computed_values_are_on_the_tape(self):
        # init_params makes leaves only, so the tape stays empty; a document's loss puts its
        # computed Values on it, the loss last, and never a weight.
        config, tok, sd = tiny_model(**self.CONFIG)
        self.assertEqual(Value.tape, [])
        tokens = microgpt.doc_tokens('cab', tok, config.block_size)
        loss = microgpt.document_loss(tokens, sd, config)
        self.assertGreater(len(Value.tape), 500)
        self.assertIs(Value.tape[-1], loss)
        self.assertTrue(all(node._children for node in Value.tape))
        on_tape = {id(node) for node in Value.tape}
        self.assertFalse(any(id(p) in on_tape for p in microgpt.flat_params(sd)))

    def test_train_clears_the_tape_including_an_earlier_graph(self):
        # A loss built before train() is gone from the tape afterwards: backward() on it raises,
        # and adds nothing to the weights (Adam's last step reset their grads to 0). Computing it
        # again gives a loss that backpropagates, and that the two steps have lowered: the first
        # step trained on this very document.
        config, tok, sd = tiny_model(**self.CONFIG)
        tokens = microgpt.doc_tokens('abode', tok, config.block_size)
        early = microgpt.document_loss(tokens, sd, config)
        self.assertIs(Value.tape[-1], early)
        train(['abode', 'cab'], tok, sd, dataclasses.replace(config, steps=2))
        self.assertEqual(Value.tape, [])
        with self.assertRaisesRegex(RuntimeError, 'no longer on the tape'):
            early.backward()
        n = len(microgpt.flat_params(sd))
        self.assertEqual(self.grads(sd), [0.0] * n)
        again = microgpt.document_loss(tokens, sd, config)
        again.backward()
        self.assertGreater(sum(g != 0.0 for g in self.grads(sd)), 100)
        self.assertLess(again.data, early.data)

    def test_a_hand_written_loop_with_adam_keeps_the_tape_bounded(self):
        # A learner's own training loop (forward, backward, Adam.step, with no tape handling of
        # its own) must not pile graphs up on the tape: Adam.step() clears it, because every graph
        # recorded so far was built from the weights it has just changed. Without that clear the
        # tape would hold one more document's graph after every step (and every backward() would
        # replay them all).
        config, tok, sd = tiny_model(**self.CONFIG)
        optimizer = microgpt.Adam(microgpt.flat_params(sd))
        lengths = []
        for doc in ['abode', 'cab', 'dab', 'bead', 'ace']:
            loss = microgpt.document_loss(microgpt.doc_tokens(doc, tok, config.block_size), sd, config)
            self.assertGreater(len(Value.tape), 50)   # the graph is on the tape until the update
            loss.backward()
            optimizer.step(0.01)
            lengths.append(len(Value.tape))
        self.assertEqual(lengths, [0] * 5)

    def test_a_backpropagated_graph_left_on_the_tape_does_not_leak_into_training(self):
        # A graph backpropagated before train() is still on the tape when train()'s first
        # backward() replays it, but its Values start again from 0 and pass nothing on. So, with
        # the weights' grads reset (as Adam.step() leaves them), training goes exactly as from an
        # empty tape: same losses, same weights.
        docs, steps = ['abode', 'cab'], dict(steps=2)
        config, tok, sd_a = tiny_model(**self.CONFIG, **steps)
        deed = microgpt.doc_tokens('deed', tok, config.block_size)
        microgpt.document_loss(deed, sd_a, config).backward()
        self.assertGreater(len(Value.tape), 500)
        for p in microgpt.flat_params(sd_a):
            p.grad = 0.0
        losses_a = train(docs, tok, sd_a, config)
        _, _, sd_b = tiny_model(**self.CONFIG, **steps)
        losses_b = train(docs, tok, sd_b, config)
        weights = [p.data for p in microgpt.flat_params(sd_b)]
        self.assertEqual(losses_a, losses_b)
        self.assertEqual([p.data for p in microgpt.flat_params(sd_a)], weights)
        # Without that reset, the weights' grads from 'deed' add into the first step, as in
        # PyTorch: same first loss (the forward pass does not read .grad), different weights.
        _, _, sd_c = tiny_model(**self.CONFIG, **steps)
        microgpt.document_loss(deed, sd_c, config).backward()
        losses_c = train(docs, tok, sd_c, config)
        self.assertEqual(losses_c[0], losses_b[0])
        self.assertGreater(max(abs(p.data - w)
                               for p, w in zip(microgpt.flat_params(sd_c), weights)), 1e-4)

    def test_backward_twice_on_a_model_loss(self):
        # The weights add the gradient up: twice what one call gives them (to rounding, as the
        # second call adds each contribution onto the first call's sum). Every computed Value gets
        # the same gradient again, exactly: it starts from 0 and the replay is the same.
        config, tok, sd = tiny_model(**self.CONFIG)
        loss = microgpt.document_loss(microgpt.doc_tokens('abode', tok, config.block_size), sd,
                                      config)
        loss.backward()
        once, nodes_once = self.grads(sd), [node.grad for node in Value.tape]
        self.assertGreater(sum(g != 0.0 for g in once), 100)
        self.assertGreater(sum(g != 0.0 for g in nodes_once), 100)
        loss.backward()
        self.assertEqual([node.grad for node in Value.tape], nodes_once)
        twice = self.grads(sd)
        for g1, g2 in zip(once, twice):
            self.assertTrue(close(g2, 2 * g1, 1e-15, 1e-12), (g1, g2))
            self.assertEqual(g2 == 0.0, g1 == 0.0)   # weights off the loss's path stay at 0

    def test_summed_document_losses_give_summed_gradients(self):
        # Batching: backward() of loss1 + loss2 gives each weight the sum of the gradients that
        # separate backward() calls give it (equal up to the order of the float additions).
        config, tok, sd_a = tiny_model(**self.CONFIG)
        docs = [microgpt.doc_tokens(d, tok, config.block_size) for d in ('abode', 'cab')]
        total = sum(microgpt.document_loss(t, sd_a, config) for t in docs)
        total.backward()
        _, _, sd_b = tiny_model(**self.CONFIG)
        separate = []
        for t in docs:
            loss = microgpt.document_loss(t, sd_b, config)
            loss.backward()
            separate.append(loss.data)
        self.assertAlmostEqual(total.data, sum(separate), delta=1e-12)
        batched, summed = self.grads(sd_a), self.grads(sd_b)
        self.assertGreater(max(abs(g) for g in summed), 1e-3)
        for x, y in zip(batched, summed):
            self.assertTrue(close(x, y, 1e-14, 1e-10), (x, y))
        # and the sum differs from either document's gradient alone
        _, _, sd_c = tiny_model(**self.CONFIG)
        microgpt.document_loss(docs[0], sd_c, config).backward()
        self.assertGreater(max(abs(x - y) for x, y in zip(self.grads(sd_c), summed)), 1e-3)


class TestScale(TapeTestCase):
    def test_deep_model_on_a_long_document_trains_and_samples(self):
        # 4 blocks over 64 positions make a graph far deeper than Python's ~1000-call recursion
        # limit (each position's residual stream runs through every earlier operation), so this
        # fails with RecursionError on a recursive topological sort.
        config = microgpt.Config(n_layer=4, n_embd=16, n_head=4, block_size=64)
        doc = ('abcd' * 20)[:70]   # longer than block_size: cut to 64 inputs
        tok = microgpt.Tokenizer(doc)
        state_dict = microgpt.init_params(tok.vocab_size, config, random.Random(3))
        tokens = microgpt.doc_tokens(doc, tok, config.block_size)
        self.assertEqual(len(tokens), 65)
        optimizer = microgpt.Adam(microgpt.flat_params(state_dict))
        loss = microgpt.document_loss(tokens, state_dict, config)
        self.assertAlmostEqual(loss.data, math.log(tok.vocab_size), delta=0.5)   # ~uniform at init
        loss.backward()
        self.assertTrue(any(p.grad != 0 for p in state_dict['layer0.attn.wq'][0]))
        optimizer.step(0.01)
        second = microgpt.document_loss(tokens, state_dict, config).data
        self.assertLess(second, loss.data)   # one Adam step on this very document helps it
        sample = microgpt.generate(state_dict, tok, dataclasses.replace(config, temperature=1.0),
                                   random.Random(0))
        self.assertLessEqual(len(sample), config.block_size)
        self.assertTrue(set(sample) <= set(doc))


if __name__ == '__main__':
    unittest.main()
