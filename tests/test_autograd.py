"""Tests for microgpt's scalar autograd: every Value operation, constants, backward() (through the
graph, or from a recording), graph(), and the dot() node.

Values are checked against plain-float arithmetic from the math module, and gradients against
central finite differences of those plain-float functions, so that neither side is derived from
the code under test.
"""
import contextlib
import math
import os
import random
import sys
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import microgpt  # noqa: E402

Value = microgpt.Value
H = 1e-6         # finite-difference step
ATOL = 1e-7      # central differences at h = 1e-6 are good to ~1e-9 for these O(1) functions
RTOL = 1e-6


def central_diff(f, xs, i, h=H):
    """d f(xs) / d xs[i] by a central finite difference; f takes and returns plain floats."""
    up, down = list(xs), list(xs)
    up[i] += h
    down[i] -= h
    return (f(up) - f(down)) / (2 * h)


def both_ways():
    """backward() outside a recording (it searches self's graph) and inside one, from the newest
    Value (it replays the tape): (name, a fresh context manager) for each."""
    return (('outside a recording', contextlib.nullcontext), ('recording', Value.recording))


class AutogradTestCase(unittest.TestCase):
    """No recording is on when a test starts, and none is left on when it ends: Value.tape is None
    outside `with Value.recording():`, so no test sees another's Values."""

    def setUp(self):
        self.assertIsNone(Value.tape)
        self.addCleanup(lambda: self.assertIsNone(Value.tape))


class GradTestCase(AutogradTestCase):
    def assertClose(self, actual, expected, atol=ATOL, rtol=RTOL, msg=None):
        bound = atol + rtol * abs(expected)
        if not abs(actual - expected) <= bound:   # also fails on nan
            self.fail(f"{actual!r} != {expected!r} within {bound:.3g}" + (f": {msg}" if msg else ""))

    def check_op(self, value_fn, float_fn, xs, name):
        """value_fn builds the expression from Values, float_fn computes it from floats.
        Checks the forward value, and the gradient of every input against central differences."""
        leaves = [Value(x) for x in xs]
        out = value_fn(*leaves)
        self.assertIsInstance(out, Value, name)
        self.assertClose(out.data, float_fn(*xs), atol=1e-12, rtol=1e-12, msg=f"{name} value")
        out.backward()
        for i, leaf in enumerate(leaves):
            fd = central_diff(lambda v: float_fn(*v), xs, i)
            self.assertClose(leaf.grad, fd, msg=f"{name}: d/d(input {i}) at {xs}")


class TestBinaryOps(GradTestCase):
    # Points on both signs, none where an operation is undefined.
    PAIRS = [(1.3, -0.7), (-2.1, 0.4), (0.5, 3.0)]

    def test_add(self):
        for a, b in self.PAIRS:
            self.check_op(lambda x, y: x + y, lambda x, y: x + y, [a, b], 'a + b')

    def test_sub(self):
        for a, b in self.PAIRS:
            self.check_op(lambda x, y: x - y, lambda x, y: x - y, [a, b], 'a - b')

    def test_mul(self):
        for a, b in self.PAIRS:
            self.check_op(lambda x, y: x * y, lambda x, y: x * y, [a, b], 'a * b')

    def test_truediv(self):
        for a, b in self.PAIRS:
            self.check_op(lambda x, y: x / y, lambda x, y: x / y, [a, b], 'a / b')

    def test_exact_local_gradients(self):
        # By hand at a = 3, b = -2 (all exact in binary floating point):
        #   a*b: d/da = b = -2,  d/db = a = 3
        #   a/b: d/da = 1/b = -0.5,  d/db = -a/b^2 = -3/4 = -0.75
        #   a-b: d/da = 1, d/db = -1
        cases = [(lambda x, y: x * y, -6.0, -2.0, 3.0),
                 (lambda x, y: x / y, -1.5, -0.5, -0.75),
                 (lambda x, y: x - y, 5.0, 1.0, -1.0),
                 (lambda x, y: x + y, 1.0, 1.0, 1.0)]
        for fn, value, da, db in cases:
            a, b = Value(3.0), Value(-2.0)
            out = fn(a, b)
            out.backward()
            self.assertEqual((out.data, a.grad, b.grad), (value, da, db))


class TestPow(GradTestCase):
    def test_no_complex_numbers(self):
        # Python's own (-1.0) ** 0.5 is a complex number, which would flow on through every
        # later operation. A Value has real numbers only: there is no real answer, so it raises.
        for base, k in ((-1.0, 0.5), (-8.0, 1 / 3), (-0.5, -1.5)):
            with self.subTest(base=base, k=k):
                with self.assertRaises(ValueError):
                    Value(base) ** k
        self.assertEqual((Value(-2.0) ** 3).data, -8.0)   # a whole exponent: real, as ever

    def test_pow_positive_base(self):
        # Integer, zero, negative and fractional exponents on a positive base.
        for k in (2, 3, 1, 0, -1, -2.5, 0.5, 1.5, -0.5):
            for a in (1.7, 0.3):
                self.check_op(lambda x: x ** k, lambda x: x ** k, [a], f'a ** {k}')

    def test_pow_negative_base_integer_exponent(self):
        for k in (2, 3, -1, -2):
            self.check_op(lambda x: x ** k, lambda x: x ** k, [-1.2], f'a ** {k}')

    def test_pow_by_hand(self):
        # a = 4: a ** 0.5 = 2, d/da = 0.5 * 4 ** -0.5 = 0.25
        #        a ** -1 = 0.25, d/da = -1 * 4 ** -2 = -0.0625
        for k, value, grad in ((0.5, 2.0, 0.25), (-1, 0.25, -0.0625), (3, 64.0, 48.0)):
            a = Value(4.0)
            out = a ** k
            out.backward()
            self.assertEqual((out.data, a.grad), (value, grad))


class TestUnaryOps(GradTestCase):
    def test_neg(self):
        for a in (1.3, -0.7):
            self.check_op(lambda x: -x, lambda x: -x, [a], '-a')
        # -a is a * -1.0: one node, child a, local gradient -1
        a = Value(2.5)
        out = -a
        self.assertEqual((out.data, out._children, out._local_grads), (-2.5, (a,), (-1.0,)))

    def test_log(self):
        for a in (0.3, 1.0, 2.5, 1e-3):
            self.check_op(lambda x: x.log(), math.log, [a], 'log a')
        # By hand: ln 1 = 0 with slope 1/1 = 1;  ln 4 with slope 1/4 = 0.25
        for x, value, grad in ((1.0, 0.0, 1.0), (4.0, math.log(4.0), 0.25)):
            a = Value(x)
            out = a.log()
            out.backward()
            self.assertEqual((out.data, a.grad), (value, grad))

    def test_tanh(self):
        for a in (-2.0, -0.3, 0.0, 0.7, 3.0):
            self.check_op(lambda x: x.tanh(), math.tanh, [a], 'tanh a')
        # By hand: tanh 0 = 0 with slope 1 - 0^2 = 1; far out it saturates: value +-1, slope 0
        for x, value, grad in ((0.0, 0.0, 1.0), (40.0, 1.0, 0.0), (-40.0, -1.0, 0.0)):
            a = Value(x)
            out = a.tanh()
            out.backward()
            self.assertEqual((out.data, a.grad), (value, grad))

    def test_relu_keeps_a_nan(self):
        # Not a number in, not a number out, as in PyTorch: a ReLU that turned a nan into 0 would
        # hide a blown-up computation from everything after it.
        for op in (lambda x: x.relu(), lambda x: x.relu_squared()):
            self.assertTrue(math.isnan(op(Value(float('nan'))).data))

    def test_relu_both_sides(self):
        relu = lambda x: max(0.0, x)  # noqa: E731
        for a in (0.8, 2.0, -0.8, -3.0, 0.01, -0.01):
            self.check_op(lambda x: x.relu(), relu, [a], 'relu a')
        # By hand: 1.5 -> 1.5 with slope 1;  -1.5 -> 0 with slope 0;  0 -> 0 with slope 0 (the
        # kink: relu takes the left-hand slope there, as PyTorch does)
        pos, neg, zero = Value(1.5), Value(-1.5), Value(0.0)
        outs = [pos.relu(), neg.relu(), zero.relu()]
        self.assertEqual([o.data for o in outs], [1.5, 0.0, 0.0])
        self.assertEqual([o._local_grads for o in outs], [(1.0,), (0.0,), (0.0,)])
        out = outs[0] + outs[1] + outs[2]
        out.backward()
        self.assertEqual((out.data, pos.grad, neg.grad, zero.grad), (1.5, 1.0, 0.0, 0.0))
        self.assertTrue(all(type(o.data) is float for o in outs))

    def test_exp(self):
        for a in (-1.3, 0.0, 2.5):
            self.check_op(lambda x: x.exp(), math.exp, [a], 'exp a')

    def test_relu_squared_both_sides(self):
        relu_squared = lambda x: max(0.0, x) ** 2  # noqa: E731
        for a in (0.8, 2.0, -0.8, -3.0, 0.01, -0.01):   # (smooth at 0 too: slope 2 max(0, a))
            self.check_op(lambda x: x.relu_squared(), relu_squared, [a], 'relu_squared a')
        # By hand: 1.5 -> 2.25 with slope 2 * 1.5 = 3;  -1.5 -> 0 with slope 0;  0 -> 0, slope 0
        pos, neg, zero = Value(1.5), Value(-1.5), Value(0.0)
        out = pos.relu_squared() + neg.relu_squared() + zero.relu_squared()
        out.backward()
        self.assertEqual((out.data, pos.grad, neg.grad, zero.grad), (2.25, 3.0, 0.0, 0.0))


class TestConstants(GradTestCase):
    """A plain number as an operand is a constant: it enters the one node the operation makes as a
    number (its local gradient, or part of the value), never as a node of its own."""

    def test_number_on_the_right(self):
        for a in (1.3, -0.7):
            self.check_op(lambda x: x + 2, lambda x: x + 2, [a], 'a + 2')
            self.check_op(lambda x: x - 2, lambda x: x - 2, [a], 'a - 2')
            self.check_op(lambda x: x * 2, lambda x: x * 2, [a], 'a * 2')
            self.check_op(lambda x: x / 2, lambda x: x / 2, [a], 'a / 2')
            self.check_op(lambda x: x * -0.3, lambda x: x * -0.3, [a], 'a * -0.3')

    def test_number_on_the_left(self):
        # A number on the left: Python calls __radd__, __rsub__, __rmul__, __rtruediv__. sum()
        # needs __radd__, as it starts from 0 + v[0].
        for a in (1.3, -0.7):
            self.check_op(lambda x: 2 + x, lambda x: 2 + x, [a], '2 + a')
            self.check_op(lambda x: 0 + x, lambda x: 0 + x, [a], '0 + a')
            self.check_op(lambda x: 1 - x, lambda x: 1 - x, [a], '1 - a')
            self.check_op(lambda x: 2 - x, lambda x: 2 - x, [a], '2 - a')
            self.check_op(lambda x: 2 * x, lambda x: 2 * x, [a], '2 * a')
            self.check_op(lambda x: -0.3 * x, lambda x: -0.3 * x, [a], '-0.3 * a')
            self.check_op(lambda x: 2 / x, lambda x: 2 / x, [a], '2 / a')
            self.check_op(lambda x: 1 / x, lambda x: 1 / x, [a], '1 / a')
        self.check_op(lambda x, y, z: sum([x, y * y, z]), lambda x, y, z: x + y * y + z,
                      [0.3, -1.1, 2.0], 'sum([a, b*b, c])')

    def test_numbers_on_both_sides_in_one_expression(self):
        # (3 - a) * (b / 2) / (1 + 2 / (a * a)) - 4 * b + 0.5, in floats and in Values
        def floats(x, y):
            return (3 - x) * (y / 2) / (1 + 2 / (x * x)) - 4 * y + 0.5
        rng = random.Random(31)
        for _ in range(4):
            xs = [rng.uniform(0.5, 2.0) * rng.choice((-1, 1)) for _ in range(2)]
            self.check_op(floats, floats, xs, 'numbers on both sides')

    def test_constants_by_hand(self):
        # At a = 2 (all exact in binary floating point):
        #   a + 5 = 7, slope 1;    a - 5 = -3, slope 1;   a * 3 = 6, slope 3
        #   a / 4 = a * 0.25 = 0.5, slope 0.25;   5 + a = 7, slope 1
        #   sum([a, a, a]) = 0 + a + a + a = 6, slope 3
        #   5 - a = 3, slope -1;   3 * a = 6, slope 3;   4 / a = 2, slope -4/a^2 = -1
        cases = [(lambda x: x + 5, 7.0, 1.0), (lambda x: x - 5, -3.0, 1.0),
                 (lambda x: x * 3, 6.0, 3.0), (lambda x: x / 4, 0.5, 0.25),
                 (lambda x: 5 + x, 7.0, 1.0), (lambda x: sum([x, x, x]), 6.0, 3.0),
                 (lambda x: 5 - x, 3.0, -1.0), (lambda x: 3 * x, 6.0, 3.0),
                 (lambda x: 4 / x, 2.0, -1.0)]
        for fn, value, grad in cases:
            a = Value(2.0)
            out = fn(a)
            out.backward()
            self.assertEqual((out.data, a.grad), (value, grad))

    def test_a_constant_makes_one_node_with_one_child(self):
        # Each of these operations on one Value and a number records exactly one Value, whose
        # only child is `a`. (Were the number wrapped in a Value, the result would have two
        # children; the wrapper, a leaf, would not be recorded.)
        a = Value(2.0)
        ops = {'a + 2': lambda: a + 2, 'a - 2': lambda: a - 2, 'a * 2': lambda: a * 2,
               'a / 2': lambda: a / 2, 'a ** 2': lambda: a ** 2, '2 + a': lambda: 2 + a,
               '2 * a': lambda: 2 * a, '-a': lambda: -a, 'a.exp()': lambda: a.exp(),
               'a.log()': lambda: a.log(), 'a.tanh()': lambda: a.tanh(),
               'a.relu()': lambda: a.relu(), 'a.relu_squared()': lambda: a.relu_squared()}
        for name, op in ops.items():
            with Value.recording():
                out = op()
                self.assertEqual(Value.tape, [out], name)
            self.assertEqual(len(out._children), 1, name)
            self.assertIs(out._children[0], a, name)
            self.assertEqual(len(out._local_grads), 1, name)

    def test_node_counts_of_operations_on_two_values(self):
        # a + b and a * b: one node with children (a, b).  a - b = a + (-b): two nodes, -b and the
        # sum.  a / b = a * b**-1: two nodes, b**-1 and the product.  sum of n Values: n nodes,
        # 0 + v0 (the 0 a constant), then one + per further Value.  A number on the left of - or
        # /: 2 - a = 2 + (-a) and 2 / a = a**-1 * 2, two nodes each.
        a, b, c = Value(2.0), Value(4.0), Value(8.0)
        for name, op, nodes in (('a + b', lambda: a + b, 1), ('a * b', lambda: a * b, 1),
                                ('a - b', lambda: a - b, 2), ('a / b', lambda: a / b, 2),
                                ('sum([a, b, c])', lambda: sum([a, b, c]), 3),
                                ('2 - a', lambda: 2 - a, 2), ('2 / a', lambda: 2 / a, 2)):
            with Value.recording():
                out = op()
                self.assertEqual(len(Value.tape), nodes, name)
                self.assertIs(Value.tape[-1], out, name)
        for out in (a + b, a * b):   # (Value has no __eq__: lists of Values compare by identity)
            self.assertEqual(list(out._children), [a, b])


class TestGraphs(GradTestCase):
    def test_node_used_several_times_gets_summed_gradient(self):
        # f = a*a + a*b + exp(a):  df/da = 2a + b + exp(a),  df/db = a
        a0, b0 = 0.7, -1.9
        a, b = Value(a0), Value(b0)
        f = a * a + a * b + a.exp()
        f.backward()
        self.assertClose(f.data, a0 * a0 + a0 * b0 + math.exp(a0), atol=1e-15, rtol=1e-15)
        self.assertClose(a.grad, 2 * a0 + b0 + math.exp(a0), atol=1e-15, rtol=1e-15)
        self.assertClose(b.grad, a0, atol=1e-15, rtol=1e-15)
        float_f = lambda v: v[0] * v[0] + v[0] * v[1] + math.exp(v[0])  # noqa: E731
        self.assertClose(a.grad, central_diff(float_f, [a0, b0], 0))
        self.assertClose(b.grad, central_diff(float_f, [a0, b0], 1))

    def test_same_value_on_both_sides(self):
        # a*a: d/da = 2a;  a/a = 1: d/da = 1/a - a/a^2 = 0;  a - a = 0: slope 0
        a = Value(1.5)
        (a * a).backward()
        self.assertEqual(a.grad, 3.0)
        a = Value(1.5)
        (a / a).backward()
        self.assertEqual(a.grad, 0.0)
        a = Value(1.5)
        (a - a).backward()
        self.assertEqual(a.grad, 0.0)

    def test_composite_expression_of_several_variables(self):
        def build(x, y, z, w):
            # f = exp(x*y) / (z^2 + 1) + relu(w - x)^2 * y^3 - exp(z/2) * w + (w + 3)^-1 + 1 + -y
            return ((x * y).exp() / (z ** 2 + 1) + (w - x).relu_squared() * y ** 3
                    - (z / 2).exp() * w + (w + 3) ** -1 + 1 + -y)

        def floats(v):
            x, y, z, w = v
            return (math.exp(x * y) / (z ** 2 + 1) + max(0.0, w - x) ** 2 * y ** 3
                    - math.exp(z / 2) * w + 1 / (w + 3) + 1 - y)

        rng = random.Random(1234)
        for _ in range(5):
            xs = [rng.uniform(-1.5, 1.5) for _ in range(4)]
            self.check_op(build, lambda *v: floats(v), xs, 'composite')

    def test_log_tanh_and_relu_inside_larger_expressions(self):
        # The brief's own: (1 - tanh p) / (2 + ln p * relu p), for p > 0 (ln needs it)
        def lesson(p):
            return (1 - math.tanh(p)) / (2 + math.log(p) * max(0.0, p))
        for p in (0.2, 0.9, 1.7, 3.0):
            self.check_op(lambda x: (1 - x.tanh()) / (2 + x.log() * x.relu()), lesson, [p],
                          '(1 - tanh p) / (2 + ln p * relu p)')

        # Two variables, with relu on both sides of its kink: relu(q - p) is 0 for q < p.
        def build(p, q):
            return ((1 - (p * q).tanh()) / (2 + p.log() * (q - p).relu())
                    - 3 / (q * q + 1) + (2 - q).relu() * (q / p).log() + 0.5 * (q - 1).tanh())

        def floats(p, q):
            return ((1 - math.tanh(p * q)) / (2 + math.log(p) * max(0.0, q - p))
                    - 3 / (q * q + 1) + max(0.0, 2 - q) * math.log(q / p) + 0.5 * math.tanh(q - 1))

        rng = random.Random(4321)
        points = [(0.5, 1.5), (1.5, 0.5), (2.5, 3.0), (0.8, 2.4)]   # q - p, 2 - q: both signs
        points += [(rng.uniform(0.2, 3), rng.uniform(0.2, 3)) for _ in range(4)]
        for p, q in points:
            self.check_op(build, floats, [p, q], 'composite of log, tanh, relu')

    def test_backward_sets_root_grad_to_one(self):
        a = Value(2.0)
        out = a * 3.0
        out.backward()
        self.assertEqual(out.grad, 1.0)
        self.assertEqual(a.grad, 3.0)

    def test_constants_do_not_disturb_leaves(self):
        # Only the leaves the expression uses get gradient; an unrelated Value keeps 0.
        a, unused = Value(1.0), Value(5.0)
        (a * 4 + 1).backward()
        self.assertEqual((a.grad, unused.grad), (4.0, 0.0))


class TestDeepChains(AutogradTestCase):
    """Outside a recording, backward() orders the graph itself, by graph()'s loop: a chain far
    deeper than Python's recursion limit must not raise RecursionError. In a recording it replays
    the tape. Both must give the same exact numbers."""
    N = 10_000   # far beyond Python's default recursion limit of 1000

    def test_deep_chain_of_additions_of_a_constant(self):
        # x_N = a + N * 1.0: value a + N, dx_N/da = 1 (each + passes the gradient through).
        for way, context in both_ways():
            with self.subTest(way), context():
                a = Value(0.5)
                x = a
                for _ in range(self.N):
                    x = x + 1.0
                x.backward()
                self.assertEqual(x.data, 0.5 + self.N)
                self.assertEqual(a.grad, 1.0)

    def test_deep_chain_of_additions_of_the_leaf(self):
        # x_0 = a, x_{k+1} = x_k + a  =>  x_N = (N + 1) a,  dx_N/da = N + 1 (each + adds 1).
        for way, context in both_ways():
            with self.subTest(way), context():
                a = Value(0.25)
                x = a
                for _ in range(self.N):
                    x = x + a
                x.backward()
                self.assertEqual(x.data, 0.25 * (self.N + 1))
                self.assertEqual(a.grad, float(self.N + 1))

    def test_deep_chain_of_multiplications(self):
        # x_N = a * c^N with c = 1.0001, so dx_N/da = c^N = exp(N * ln(1.0001)) ~ e^0.99995.
        # N roundings of ~1e-16 each bound the relative error by ~1e-12.
        c, a0 = 1.0001, 1.5
        # 1.0001 ** 10000 = 2.71814592682522486... (exact decimal arithmetic, 40 digits)
        expected_slope = 2.718145926825225
        self.assertLess(abs(math.exp(self.N * math.log1p(1e-4)) - expected_slope), 1e-12)
        for way, context in both_ways():
            with self.subTest(way), context():
                a = Value(a0)
                x = a
                for _ in range(self.N):
                    x = x * c
                x.backward()
                self.assertLess(abs(a.grad - expected_slope), 1e-10 * expected_slope)
                self.assertLess(abs(x.data - a0 * expected_slope), 1e-10 * a0 * expected_slope)

    def test_deep_chain_with_two_paths_at_every_step(self):
        # x_{k+1} = x_k * 0.5 + x_k * 0.5 = x_k, through two nodes that both use x_k: a graph
        # 2N nodes deep in which every node has two parents. dx_N/da = 1 (each step: 0.5 + 0.5).
        # graph() lists every computed Value once: 3 per step (two products and their sum).
        a = Value(1.25)
        x = a
        for _ in range(self.N):
            x = x * 0.5 + x * 0.5
        self.assertEqual(len(x.graph()), 3 * self.N)
        x.backward()
        self.assertEqual((x.data, a.grad), (1.25, 1.0))


class TestDot(GradTestCase):
    A = [1.5, -2.0, 0.25]
    B = [4.0, 0.5, -8.0]

    def test_value_and_exact_gradients(self):
        # 1.5*4 + (-2)*0.5 + 0.25*(-8) = 6 - 1 - 2 = 3;  d/da_i = b_i,  d/db_i = a_i
        a, b = [Value(x) for x in self.A], [Value(x) for x in self.B]
        with Value.recording():
            out = microgpt.dot(a, b)
            self.assertEqual(Value.tape, [out])   # one node, its children all of a and b
        self.assertEqual(list(out._children), a + b)
        self.assertIsInstance(out, Value)
        self.assertEqual(out.data, 3.0)
        out.backward()
        self.assertEqual([x.grad for x in a], self.B)
        self.assertEqual([x.grad for x in b], self.A)

    def test_gradients_against_finite_differences(self):
        rng = random.Random(7)
        n = 6
        xs = [rng.uniform(-2, 2) for _ in range(2 * n)]

        def floats(v):
            # a nonlinear use of the dot product, so every gradient is checked through a chain
            d = sum(v[i] * v[n + i] for i in range(n))
            return math.exp(0.3 * d) + d * d

        leaves = [Value(x) for x in xs]
        d = microgpt.dot(leaves[:n], leaves[n:])
        out = (d * 0.3).exp() + d * d
        self.assertClose(out.data, floats(xs), atol=1e-12, rtol=1e-12)
        out.backward()
        for i, leaf in enumerate(leaves):
            self.assertClose(leaf.grad, central_diff(floats, xs, i), msg=f"input {i}")

    def test_dot_of_a_vector_with_itself(self):
        # dot(x, x) = sum x_i^2 = 2.25 + 4 + 0.0625 = 6.3125;  d/dx_i = 2 x_i
        x = [Value(v) for v in self.A]
        out = microgpt.dot(x, x)
        self.assertEqual(out.data, 6.3125)
        out.backward()
        self.assertEqual([v.grad for v in x], [3.0, -4.0, 0.5])

    def test_vector_shared_between_two_dot_nodes(self):
        # f = dot(x, y) + 3 * dot(x, z):  df/dx = y + 3z,  df/dy = x,  df/dz = 3x
        rng = random.Random(11)
        n = 4
        xs = [rng.uniform(-2, 2) for _ in range(3 * n)]
        x, y, z = ([Value(v) for v in xs[k * n:(k + 1) * n]] for k in range(3))
        f = microgpt.dot(x, y) + microgpt.dot(x, z) * 3
        f.backward()

        def floats(v):
            return sum(v[i] * v[n + i] for i in range(n)) + 3 * sum(v[i] * v[2 * n + i] for i in range(n))

        self.assertClose(f.data, floats(xs), atol=1e-12, rtol=1e-12)
        for i in range(n):
            self.assertClose(x[i].grad, xs[n + i] + 3 * xs[2 * n + i], atol=1e-14, rtol=1e-14)
            self.assertClose(y[i].grad, xs[i], atol=1e-14, rtol=1e-14)
            self.assertClose(z[i].grad, 3 * xs[i], atol=1e-14, rtol=1e-14)
        leaves = x + y + z
        for i, leaf in enumerate(leaves):
            self.assertClose(leaf.grad, central_diff(floats, xs, i), msg=f"input {i}")

    def test_same_value_twice_within_one_vector(self):
        # dot([a, a], [b, c]) = a*b + a*c:  d/da = b + c
        a, b, c = Value(2.0), Value(3.0), Value(-5.0)
        out = microgpt.dot([a, a], [b, c])
        out.backward()
        self.assertEqual((out.data, a.grad, b.grad, c.grad), (-4.0, -2.0, 2.0, 2.0))

    def test_dot_of_computed_values(self):
        # Inputs that are themselves nodes: dot([a*a, exp(a)], [b, 2]) = a^2 b + 2 e^a
        # d/da = 2ab + 2e^a, d/db = a^2
        a0, b0 = 0.8, -1.1
        a, b = Value(a0), Value(b0)
        out = microgpt.dot([a * a, a.exp()], [b, Value(2.0)])
        out.backward()
        self.assertClose(out.data, a0 * a0 * b0 + 2 * math.exp(a0), atol=1e-15, rtol=1e-15)
        self.assertClose(a.grad, 2 * a0 * b0 + 2 * math.exp(a0), atol=1e-15, rtol=1e-14)
        self.assertClose(b.grad, a0 * a0, atol=1e-15, rtol=1e-15)


class TestRecording(AutogradTestCase):
    """Inside `with Value.recording():` every computed Value (one with children) is appended to
    Value.tape, a fresh list, as it is made; leaves (weights, inputs) are not. Outside, Value.tape
    is None and nothing is kept. backward() from the newest Value on the tape replays the tape
    newest-first and leaves it as it was; from any other Value it searches that Value's graph."""

    def test_nothing_is_recorded_outside_a_recording(self):
        self.assertIsNone(Value.tape)
        a, b = Value(1.0), Value(2.0)
        out = microgpt.dot([a * b, a.exp()], [b.tanh(), 1 - a]) / 3
        out.backward()
        self.assertIsNone(Value.tape)

    def test_only_computed_values_are_recorded_in_the_order_made(self):
        with Value.recording():
            self.assertEqual(Value.tape, [])
            a, b = Value(1.0), Value(2.0)   # leaves: not recorded
            self.assertEqual(Value.tape, [])
            c = a * b
            d = c + 1
            e = microgpt.dot([a, c], [d, b])
            f = Value(7.0, (e,), (0.5,))    # made directly, but with a child: recorded too
            self.assertEqual(Value.tape, [c, d, e, f])   # (lists of Values: by identity)
        self.assertIsNone(Value.tape)

    def test_each_recording_starts_a_fresh_tape(self):
        a = Value(2.0)
        with Value.recording():
            first = Value.tape
            b = a * 3
        self.assertIsNone(Value.tape)
        self.assertEqual(first, [b])   # the list itself is left as it was
        c = b + 1                      # between recordings: not recorded anywhere
        with Value.recording():
            self.assertIsNot(Value.tape, first)
            self.assertEqual(Value.tape, [])
            d = c * a
            self.assertEqual(Value.tape, [d])
        self.assertEqual(first, [b])

    def test_a_recording_inside_another_goes_on_with_its_tape(self):
        # A learner's recording around a call that records too (train(), say): one tape for
        # both, so that a Value made in the inner one may use a Value of the outer one, and
        # backward() from the newest Value replays everything in order. After the inner block
        # the outer recording is still on.
        a, b = Value(2.0), Value(3.0)
        with Value.recording():
            outer = Value.tape
            p = a * b                        # made in the outer recording only
            with Value.recording():
                self.assertIs(Value.tape, outer)
                q = p * p                    # made in the inner one, from p
            self.assertIs(Value.tape, outer)
            r = q + a                        # the outer recording goes on after the inner one
            self.assertEqual(outer, [p, q, r])
            r.backward()                     # r = (ab)^2 + a: dr/da = 2ab^2 + 1, dr/db = 2a^2 b
        self.assertIsNone(Value.tape)
        self.assertEqual((a.grad, b.grad), (2 * 2.0 * 9.0 + 1, 2 * 4.0 * 3.0))

    def test_the_tape_is_none_after_a_recording_that_raised(self):
        a = Value(0.0)
        with self.assertRaises(ValueError):   # math.log(0): math domain error
            with Value.recording():
                b = a + 1
                self.assertEqual(Value.tape, [b])
                a.log()
        self.assertIsNone(Value.tape)
        with self.assertRaises(KeyboardInterrupt):
            with Value.recording():
                raise KeyboardInterrupt
        self.assertIsNone(Value.tape)

    def test_backward_leaves_the_tape_as_it_was(self):
        with Value.recording():
            other = Value(5.0) * 2   # an unrelated graph, never differentiated: kept all the same
            a = Value(3.0)
            out = (a * a).exp() + a
            tape = list(Value.tape)
            self.assertEqual(len(tape), 4)   # other, a * a, its exp, the sum: a itself is a leaf
            self.assertIs(tape[0], other)
            for _ in range(2):
                out.backward()
                self.assertEqual(Value.tape, tape)
        self.assertEqual(other.grad, 0.0)   # off out's path: nothing reached it
        # d(out)/da = 2a e^(a^2) + 1 at a = 3, added up over the two calls
        self.assertAlmostEqual(a.grad, 2 * (2 * 3 * math.exp(9.0) + 1), delta=1e-9)

    def test_backward_replays_the_tape_only_from_its_newest_value(self):
        # Which way backward() orders the graph: graph() is called for every Value except the
        # newest on the tape of a recording that is on. Either way, the same exact gradients.
        searched, graph = [], Value.graph

        def spy(self):
            searched.append(self)
            return graph(self)

        with mock.patch.object(Value, 'graph', spy):
            a = Value(1.5)
            x = a * 4
            x.backward()                     # outside a recording
            self.assertEqual((searched, a.grad), ([x], 4.0))
            with Value.recording():
                y = a * 4
                z = y * y
                a.grad = 0.0
                z.backward()                 # the newest: the tape is replayed
                self.assertEqual((searched, a.grad), ([x], 2 * 6.0 * 4))
                a.grad = 0.0
                y.backward()                 # not the newest: its graph is searched
                self.assertEqual((searched, a.grad), ([x, y], 4.0))
            a.grad = 0.0
            z.backward()                     # the recording is over
            self.assertEqual((searched, a.grad), ([x, y, z], 48.0))

    def test_backward_from_a_node_with_newer_nodes_on_the_tape(self):
        # x = a * 2 is followed on the tape by z = x * 7 (which uses x) and u = a * 100 (which
        # uses a). Neither is on the path from x down to a, so d(x)/d(a) = 2 exactly. z and u can
        # be backpropagated next: dz/dx = 7, dz/da = 14, du/da = 100, and the leaf adds them up:
        # 2 + 14 = 16, then 16 + 100 = 116. u is the newest: its backward() replays the whole
        # tape, which starts x and z from 0 again.
        with Value.recording():
            a = Value(1.5)
            x = a * 2
            z = x * 7
            u = a * 100
            x.backward()
            self.assertEqual((a.grad, x.grad, z.grad, u.grad), (2.0, 1.0, 0.0, 0.0))
            self.assertEqual(Value.tape, [x, z, u])
            z.backward()
            self.assertEqual((a.grad, x.grad, z.grad, u.grad), (16.0, 7.0, 1.0, 0.0))
            u.backward()
            self.assertEqual((a.grad, x.grad, z.grad, u.grad), (116.0, 0.0, 0.0, 1.0))


class TestGraph(AutogradTestCase):
    """graph(): every computed Value self depends on, each once, each after its inputs, self
    last; leaves are left out (backward() never resets them)."""

    def assertTopologicalOrder(self, root):
        order = root.graph()
        # What root depends on, found here by a plain search of the children
        reachable, stack = {}, [root]
        while stack:
            node = stack.pop()
            if id(node) not in reachable and (node._children or node is root):
                reachable[id(node)] = node
                stack += node._children
        self.assertIs(order[-1], root)
        self.assertEqual(len({id(node) for node in order}), len(order))   # each once
        self.assertEqual({id(node) for node in order}, set(reachable))
        position = {id(node): i for i, node in enumerate(order)}
        for node in order:
            for child in node._children:
                if child._children:   # a computed input: listed before the node
                    self.assertLess(position[id(child)], position[id(node)])
        return order

    def test_an_expression_by_hand(self):
        # c = a*b, d = c + a, e = d * c: the only order with inputs first is c, d, e
        a, b = Value(2.0), Value(3.0)
        c = a * b
        d = c + a
        e = d * c
        self.assertEqual(self.assertTopologicalOrder(e), [c, d, e])
        self.assertEqual(d.graph(), [c, d])

    def test_a_leaf_has_nothing_to_replay_and_its_gradient_adds_up(self):
        # A leaf's graph holds no computed Value. Its backward() adds d(a)/d(a) = 1 to what
        # its .grad already holds, as every backward() does to a leaf.
        a = Value(2.0)
        self.assertEqual(a.graph(), [])
        a.grad = 5.0
        a.backward()
        self.assertEqual(a.grad, 6.0)
        a.backward()
        self.assertEqual(a.grad, 7.0)

    def test_random_graphs(self):
        # 300 Values, each made from up to three earlier ones (often the same one twice, or
        # through a dot node with many inputs): a topological order from every one of them.
        rng = random.Random(99)
        nodes = [Value(rng.uniform(-1, 1)) for _ in range(5)]
        for _ in range(300):
            pick = lambda: nodes[max(0, len(nodes) - 1 - int(rng.expovariate(0.1)))]  # noqa: E731
            kind = rng.randrange(5)
            if kind == 0:
                nodes.append(pick() + pick())
            elif kind == 1:
                nodes.append((pick() * pick()).tanh())
            elif kind == 2:
                nodes.append(1 - pick())
            elif kind == 3:
                x = pick()
                nodes.append(x * x)
            else:
                n = rng.randrange(1, 5)
                nodes.append(microgpt.dot([pick() for _ in range(n)], [pick() for _ in range(n)]))
        for root in nodes[5:]:
            if root._children:
                self.assertTopologicalOrder(root)
            else:   # a dot node whose inputs were all 0 with slope 0: a constant 0
                self.assertEqual((root.data, root.graph()), (0.0, []))
        self.assertGreater(len(nodes[-1].graph()), 50)


class TestBackward(AutogradTestCase):
    """backward() first sets the grad of every computed Value it is about to visit to 0 and its own
    to 1, then runs the chain rule. So computed Values get fresh gradients on every call, while
    leaves (weights, inputs) add up across calls, as in PyTorch, until reset (Adam.step() resets
    them). A second backward() through the same graph is allowed (PyTorch needs retain_graph=True
    for it), and the leaves add its gradients again."""

    def test_backward_starts_every_computed_value_from_zero(self):
        # p = a * 2 is backpropagated first, which leaves p.grad = 1. Then, with the leaf reset,
        # q = a * 5: dq/da = 5. Were p's stale grad of 1 passed on, a would get 2 more.
        for way, context in both_ways():
            with self.subTest(way), context():
                a = Value(1.0)
                p = a * 2
                p.backward()
                self.assertEqual((p.grad, a.grad), (1.0, 2.0))
                a.grad = 0.0
                q = a * 5
                q.backward()
                self.assertEqual((q.grad, a.grad), (1.0, 5.0))
                # p is not in q's graph: outside a recording backward() does not touch it; a
                # replay of the tape [p, q] starts every Value on it from 0, p included.
                self.assertEqual(p.grad, 0.0 if Value.tape else 1.0)
                # Stale grads left by hand on the graph being differentiated are overwritten the
                # same way: out = m * m with m = 3b, b = 2, m = 6: d/dm = 2m = 12, d/db = 36.
                b = Value(2.0)
                m = b * 3
                out = m * m
                m.grad, out.grad = 100.0, -7.0
                out.backward()
                self.assertEqual((out.grad, m.grad, b.grad), (1.0, 12.0, 36.0))

    def test_fresh_graph_gives_exact_derivatives(self):
        # out = (a * b + a) * 2:  d/da = 2(b + 1) = 2 * 4 = 8,  d/db = 2a = -3
        a, b = Value(-1.5), Value(3.0)
        out = (a * b + a) * 2
        out.backward()
        self.assertEqual((out.data, a.grad, b.grad), (-12.0, 8.0, -3.0))

    def test_second_backward_on_the_same_graph_adds_to_the_leaves_only(self):
        # c = (a * 2) * 3 with b = a * 2: c.grad = 1, b.grad = 3, a.grad = 6. Each further call
        # goes through the same graph: c and b start again from 0 and get the same 1 and 3 (not 2
        # and 6), while the leaf a adds its 6 again, as in PyTorch: 12, then 18.
        for way, context in both_ways():
            with self.subTest(way), context():
                a = Value(1.0)
                b = a * 2
                c = b * 3
                c.backward()
                self.assertEqual((c.grad, b.grad, a.grad), (1.0, 3.0, 6.0))
                c.backward()
                self.assertEqual((c.grad, b.grad, a.grad), (1.0, 3.0, 12.0))
                c.backward()
                self.assertEqual((c.grad, b.grad, a.grad), (1.0, 3.0, 18.0))

    def test_backward_twice_across_an_unrelated_update(self):
        # c = x * y, d = c * c + x at x = 1.5, y = -2 (c = -3), exactly:
        #   dd/dc = 2c = -6,  dd/dx = 2c y + 1 = 13,  dd/dy = 2c x = -9
        # Between two backward() calls, another weight takes an Adam step (its own forward,
        # backward and update, as a training loop beside this one would). The second call still
        # goes through d's whole graph: x and y add up exactly (26, -18), c and d get the same
        # gradients again. Then e = c * 3 + y, a second graph that shares the computed c:
        #   de/dc = 3,  de/dx = 3y = -6,  de/dy = 3x + 1 = 5.5
        # added to the leaves' sums: 26 - 6 = 20 and -18 + 5.5 = -12.5.
        x, y = Value(1.5), Value(-2.0)
        c = x * y
        d = c * c + x
        d.backward()
        self.assertEqual((d.grad, c.grad, x.grad, y.grad), (1.0, -6.0, 13.0, -9.0))
        w = Value(0.5)
        optimizer = microgpt.Adam([w])
        (w * w).backward()
        optimizer.step(0.1)
        self.assertAlmostEqual(w.data, 0.4, delta=1e-9)   # moved by ~lr
        d.backward()
        self.assertEqual((d.grad, c.grad, x.grad, y.grad), (1.0, -6.0, 26.0, -18.0))
        e = c * 3 + y
        e.backward()
        self.assertEqual((e.grad, c.grad, x.grad, y.grad), (1.0, 3.0, 20.0, -12.5))

    def test_a_value_made_before_an_unrelated_training_step(self):
        # p = a * b, then a training step on another weight w (a learner's own loop: forward,
        # backward, Adam), then q = p * p built on p:
        #   dq/da = 2p b = 2 * 6 * 3 = 36,  dq/db = 2p a = 24, exactly.
        a, b = Value(2.0), Value(3.0)
        p = a * b
        w = Value(0.7)
        (w * w).backward()
        microgpt.Adam([w]).step(0.1)
        q = p * p
        q.backward()
        self.assertEqual((q.data, p.grad, a.grad, b.grad), (36.0, 12.0, 36.0, 24.0))
        self.assertEqual(w.grad, 0.0)   # (Adam.step reset it)
        # The same with the training step recorded, as train() takes it
        a, b = Value(2.0), Value(3.0)
        p = a * b
        with Value.recording():
            loss = w * w
            loss.backward()
        microgpt.Adam([w]).step(0.1)
        q = p * p
        q.backward()
        self.assertEqual((q.data, p.grad, a.grad, b.grad), (36.0, 12.0, 36.0, 24.0))

    def test_a_value_from_an_ended_recording_still_backpropagates(self):
        # x = 5a and y = 7a are made in a recording that has ended: each still backpropagates
        # on its own (dy/da = 7, dx/da = 5), and so does x * y = 35 a^2 made after it:
        # d/da = 70a = 105 at a = 1.5 (5 * 10.5 + 7 * 7.5, exactly).
        a = Value(1.5)
        with Value.recording():
            x = a * 5
            y = a * 7
        y.backward()
        self.assertEqual(a.grad, 7.0)
        a.grad = 0.0
        x.backward()
        self.assertEqual(a.grad, 5.0)
        a.grad = 0.0
        (x * y).backward()
        self.assertEqual((x.grad, y.grad, a.grad), (10.5, 7.5, 105.0))

    def test_earlier_graph_after_a_later_one(self):
        # m = a * b is shared by x = m + a and y = m * m, made in that order. At a = 1.5, b = -2
        # (so m = -3), exactly:
        #   y = m^2:    dy/dm = 2m = -6,  dy/da = 2m b = 12,    dy/db = 2m a = -9
        #   x = m + a:  dx/dm = 1,        dx/da = b + 1 = -1,  dx/db = a = 1.5
        # x.backward() after y.backward(): m no longer carries y's -6.
        for way, context in both_ways():
            with self.subTest(way), context():
                a, b = Value(1.5), Value(-2.0)
                m = a * b
                x = m + a
                y = m * m
                y.backward()
                self.assertEqual((y.grad, x.grad, m.grad, a.grad, b.grad),
                                 (1.0, 0.0, -6.0, 12.0, -9.0))
                a.grad = b.grad = 0.0
                x.backward()
                self.assertEqual((x.grad, m.grad, a.grad, b.grad), (1.0, 1.0, -1.0, 1.5))
                self.assertEqual(y.grad, 1.0)   # not in x's graph: left as y's backward() left it
                # y again, without resetting the leaves: they add y's gradients to x's,
                # -1 + 12 = 11 and 1.5 - 9 = -7.5, while m holds y's pass alone.
                y.backward()
                self.assertEqual((y.grad, m.grad, a.grad, b.grad), (1.0, -6.0, 11.0, -7.5))
                # x: untouched outside a recording; on the tape, which y (the newest) replays, 0
                self.assertEqual(x.grad, 0.0 if Value.tape else 1.0)

    def test_a_node_of_a_backpropagated_graph_can_be_used_again(self):
        # b = a * 2 is part of a graph that was backpropagated; a new graph c = b * 3 built on it
        # still reaches a through b: dc/da = 3 * 2 = 6. (Were b's grad of 3 from the first call
        # kept, b would get 6 and a 12.)
        a = Value(1.0)
        b = a * 2
        (b * 3).backward()
        self.assertEqual((b.grad, a.grad), (3.0, 6.0))
        a.grad = 0.0
        c = b * 3
        c.backward()
        self.assertEqual((c.grad, b.grad, a.grad), (1.0, 3.0, 6.0))
        # together with a itself: d = b * a = 2a^2, dd/da = 4a = 4 (2 through b, 2 directly)
        a.grad = 0.0
        d = b * a
        d.backward()
        self.assertEqual((d.grad, b.grad, a.grad), (1.0, 1.0, 4.0))

    def test_a_graph_built_again_can_be_differentiated_again(self):
        # Computing the loss again, as each training step does: the leaves add up, 6 + 6 = 12.
        a = Value(1.0)
        (a * 2 * 3).backward()
        (a * 2 * 3).backward()
        self.assertEqual(a.grad, 12.0)

    def test_separate_graphs_over_shared_leaves_accumulate(self):
        # L1 = a*b: (dL1/da, dL1/db) = (b, a) = (3, 2)
        # L2 = a + b*b: (dL2/da, dL2/db) = (1, 2b) = (1, 6)
        # After both backward() calls: a.grad = 3 + 1 = 4, b.grad = 2 + 6 = 8
        a, b = Value(2.0), Value(3.0)
        (a * b).backward()
        self.assertEqual((a.grad, b.grad), (3.0, 2.0))
        (a + b * b).backward()
        self.assertEqual((a.grad, b.grad), (4.0, 8.0))

    def test_summed_losses_give_the_summed_gradients(self):
        # Batching: one backward() of L1 + L2 gives what two backward() calls give, one per
        # loss. At a = 1.5, b = -2 (every number below is exact in binary floating point):
        #   L1 = a*b + a*a:   dL1/da = b + 2a = 1,      dL1/db = a = 1.5
        #   L2 = a*b*b - b:   dL2/da = b^2 = 4,         dL2/db = 2ab - 1 = -7
        #   sum:              d/da = 5,                 d/db = -5.5
        def l1(a, b):
            return a * b + a * a

        def l2(a, b):
            return a * b * b - b

        a, b = Value(1.5), Value(-2.0)
        total = l1(a, b) + l2(a, b)
        total.backward()
        self.assertEqual((total.data, a.grad, b.grad), (-0.75 + 8.0, 5.0, -5.5))
        a, b = Value(1.5), Value(-2.0)
        l1(a, b).backward()
        self.assertEqual((a.grad, b.grad), (1.0, 1.5))
        l2(a, b).backward()
        self.assertEqual((a.grad, b.grad), (5.0, -5.5))

    def test_zeroing_leaves_between_graphs_gives_fresh_gradients(self):
        # What Adam.step() does between training steps: grads to 0, then a new graph.
        a = Value(2.0)
        (a * a).backward()
        self.assertEqual(a.grad, 4.0)
        a.grad = 0.0
        (a * 5).backward()
        self.assertEqual(a.grad, 5.0)


if __name__ == '__main__':
    unittest.main()
