"""Tests for microgpt's scalar autograd: every Value operation, backward(), and the dot() node.

Values are checked against plain-float arithmetic from the math module, and gradients against
central finite differences of those plain-float functions, so that neither side is derived from
the code under test.
"""
import math
import os
import random
import sys
import unittest

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


class GradTestCase(unittest.TestCase):
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

    def test_log(self):
        for a in (0.6, 1.0, 4.2):
            self.check_op(lambda x: x.log(), math.log, [a], 'log a')

    def test_exp(self):
        for a in (-1.3, 0.0, 2.5):
            self.check_op(lambda x: x.exp(), math.exp, [a], 'exp a')

    def test_relu_both_sides(self):
        relu = lambda x: max(0.0, x)  # noqa: E731
        for a in (0.8, 2.0, -0.8, -3.0):   # well away from the kink at 0
            self.check_op(lambda x: x.relu(), relu, [a], 'relu a')
        # By hand: relu(0.8) = 0.8 with slope 1; relu(-0.8) = 0 with slope 0.
        pos, neg = Value(0.8), Value(-0.8)
        out = pos.relu() + neg.relu()
        out.backward()
        self.assertEqual((out.data, pos.grad, neg.grad), (0.8, 1.0, 0.0))


class TestReflectedOps(GradTestCase):
    """A plain number on either side of the operator."""

    def test_number_on_the_left(self):
        for a in (1.3, -0.7):
            self.check_op(lambda x: 2 + x, lambda x: 2 + x, [a], '2 + a')
            self.check_op(lambda x: 2 - x, lambda x: 2 - x, [a], '2 - a')
            self.check_op(lambda x: 2 * x, lambda x: 2 * x, [a], '2 * a')
            self.check_op(lambda x: 2 / x, lambda x: 2 / x, [a], '2 / a')
            self.check_op(lambda x: 2 ** x, lambda x: 2 ** x, [a], '2 ** a')
            self.check_op(lambda x: 0.5 ** x, lambda x: 0.5 ** x, [a], '0.5 ** a')

    def test_number_on_the_right(self):
        for a in (1.3, -0.7):
            self.check_op(lambda x: x + 2, lambda x: x + 2, [a], 'a + 2')
            self.check_op(lambda x: x - 2, lambda x: x - 2, [a], 'a - 2')
            self.check_op(lambda x: x * 2, lambda x: x * 2, [a], 'a * 2')
            self.check_op(lambda x: x / 2, lambda x: x / 2, [a], 'a / 2')

    def test_reflected_by_hand(self):
        # At a = 2:  2 - a = 0 (slope -1);  2 / a = 1 (slope -2/a^2 = -0.5);
        #            2 ** a = 4 (slope 4 * ln 2);  3 * a = 6 (slope 3)
        cases = [(lambda x: 2 - x, 0.0, -1.0), (lambda x: 2 / x, 1.0, -0.5),
                 (lambda x: 2 ** x, 4.0, 4.0 * math.log(2.0)), (lambda x: 3 * x, 6.0, 3.0),
                 (lambda x: 5 + x, 7.0, 1.0)]
        for fn, value, grad in cases:
            a = Value(2.0)
            out = fn(a)
            out.backward()
            self.assertEqual(out.data, value)
            self.assertClose(a.grad, grad, atol=1e-15, rtol=1e-15)


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
            # f = log(1 + exp(x*y)) / (z^2 + 1) + relu(w - x) * y ** 3 - (2 ** z) * w + 1 / (w + 3)
            return ((1 + (x * y).exp()).log() / (z ** 2 + 1) + (w - x).relu() * y ** 3
                    - (2 ** z) * w + 1 / (w + 3))

        def floats(v):
            x, y, z, w = v
            return (math.log(1 + math.exp(x * y)) / (z ** 2 + 1) + max(0.0, w - x) * y ** 3
                    - (2 ** z) * w + 1 / (w + 3))

        rng = random.Random(1234)
        for _ in range(5):
            xs = [rng.uniform(-1.5, 1.5) for _ in range(4)]
            if abs(xs[3] - xs[0]) < 0.01:   # keep away from the relu kink
                xs[3] += 0.1
            self.check_op(build, lambda *v: floats(v), xs, 'composite')

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


class TestDeepChains(unittest.TestCase):
    N = 10_000   # far beyond Python's default recursion limit of 1000

    def test_deep_chain_of_additions_of_a_constant(self):
        # x_N = a + N * 1.0: value a + N, dx_N/da = 1 (each + passes the gradient through).
        a = Value(0.5)
        x = a
        for _ in range(self.N):
            x = x + 1.0
        x.backward()
        self.assertEqual(x.data, 0.5 + self.N)
        self.assertEqual(a.grad, 1.0)

    def test_deep_chain_of_additions_of_the_leaf(self):
        # x_0 = a, x_{k+1} = x_k + a  =>  x_N = (N + 1) a,  dx_N/da = N + 1 (each + adds 1).
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
        a = Value(a0)
        x = a
        for _ in range(self.N):
            x = x * c
        x.backward()
        # 1.0001 ** 10000 = 2.71814592682522486... (exact decimal arithmetic, 40 digits)
        expected_slope = 2.718145926825225
        self.assertLess(abs(math.exp(self.N * math.log1p(1e-4)) - expected_slope), 1e-12)
        self.assertLess(abs(a.grad - expected_slope), 1e-10 * expected_slope)
        self.assertLess(abs(x.data - a0 * expected_slope), 1e-10 * a0 * expected_slope)


class TestDot(GradTestCase):
    A = [1.5, -2.0, 0.25]
    B = [4.0, 0.5, -8.0]

    def test_value_and_exact_gradients(self):
        # 1.5*4 + (-2)*0.5 + 0.25*(-8) = 6 - 1 - 2 = 3;  d/da_i = b_i,  d/db_i = a_i
        a, b = [Value(x) for x in self.A], [Value(x) for x in self.B]
        out = microgpt.dot(a, b)
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
        f = microgpt.dot(x, y) + 3 * microgpt.dot(x, z)
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


class TestBackwardSemantics(unittest.TestCase):
    """What .grad holds after one or more backward() calls.

    Findings: backward() ADDS into .grad (it never zeroes anything but the root, whose grad it
    sets to 1). On a fresh graph with zeroed leaves, every leaf's .grad is exactly d(out)/d(leaf).
    Two backward() calls on two separate graphs that share only leaves sum the two gradients,
    as gradient accumulation should. Calling backward() twice on the SAME graph double-counts:
    the intermediate nodes keep their grads from the first call, so the leaves receive more than
    twice the gradient. The training loop never does that: each step builds a new graph, calls
    backward() once, and Adam.step() resets every parameter's grad to 0.
    """

    def test_fresh_graph_gives_exact_derivatives(self):
        # out = (a * b + a) * 2:  d/da = 2(b + 1) = 2 * 4 = 8,  d/db = 2a = -3
        a, b = Value(-1.5), Value(3.0)
        out = (a * b + a) * 2
        out.backward()
        self.assertEqual((out.data, a.grad, b.grad), (-12.0, 8.0, -3.0))

    def test_separate_graphs_over_shared_leaves_accumulate(self):
        # L1 = a*b: (dL1/da, dL1/db) = (b, a) = (3, 2)
        # L2 = a + b*b: (dL2/da, dL2/db) = (1, 2b) = (1, 6)
        # After both backward() calls: a.grad = 3 + 1 = 4, b.grad = 2 + 6 = 8
        a, b = Value(2.0), Value(3.0)
        (a * b).backward()
        self.assertEqual((a.grad, b.grad), (3.0, 2.0))
        (a + b * b).backward()
        self.assertEqual((a.grad, b.grad), (4.0, 8.0))

    def test_zeroing_leaves_between_graphs_gives_fresh_gradients(self):
        # What Adam.step() does between training steps: grads to 0, then a new graph.
        a = Value(2.0)
        (a * a).backward()
        self.assertEqual(a.grad, 4.0)
        a.grad = 0.0
        (a * 5).backward()
        self.assertEqual(a.grad, 5.0)

    def test_second_backward_on_same_graph_double_counts_intermediates(self):
        # c = (a * 2) * 3 with b = a * 2.  First call: c.grad = 1, b.grad = 3, a.grad = 6.
        # Second call on the same graph: c.grad is set to 1 again, but b.grad becomes 3 + 3 = 6,
        # so a.grad = 6 + 2 * 6 = 18, not 12 (accumulation) nor 6 (recomputation).
        # This pins current behaviour: backward() is meant to run once per graph. If it is
        # changed to reset intermediate grads, the expected value here becomes 12.
        a = Value(1.0)
        b = a * 2
        c = b * 3
        c.backward()
        self.assertEqual((c.grad, b.grad, a.grad), (1.0, 3.0, 6.0))
        c.backward()
        self.assertEqual((c.grad, b.grad, a.grad), (1.0, 6.0, 18.0))


if __name__ == '__main__':
    unittest.main()
