"""Pictures of a trained microgpt, drawn as SVG with the standard library alone.

    python3 scripts/figures.py                  train the default model, write figures/*.svg
    python3 scripts/figures.py --load m.json    draw a model saved with --save (no training curve)
    python3 scripts/figures.py --out DIR        write the files somewhere else

Each figure is a function that takes the model's objects and returns SVG text, so a notebook can
draw its own model after a run (walkthrough.md, section 14):

    import sys; sys.path.insert(0, 'scripts'); import figures
    from IPython.display import SVG
    SVG(figures.attention(state_dict, tokenizer, config))

Every figure has a <title>, a viewBox, an opaque background and text of 11 px or more, and uses
the Okabe-Ito colours, which stay apart for the colour-blind. Running the script twice writes the
same bytes: the run is seeded, and every number is printed to a fixed number of digits.
"""
import argparse
import contextlib
import io
import math
import os
import runpy
import sys
from xml.sax.saxutils import escape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import microgpt  # noqa: E402

BLUE, SKY, ORANGE, GREEN, VERMILLION, GREY = '#0072B2', '#56B4E9', '#E69F00', '#009E73', '#D55E00', '#777777'
FONT = 'font-family="Helvetica, Arial, sans-serif"'


# --- SVG, by hand: a document, text, lines, boxes ------------------------------------------------
def svg(width, height, title, body):
    """A whole SVG document: its title (what screen readers and browsers show), a viewBox so it
    scales, and a white background so it reads on a dark page too."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" {FONT} font-size="13">\n'
            f'<title>{escape(title)}</title>\n'
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>\n' + ''.join(body) + '</svg>\n')


def text(x, y, s, size=13, anchor='start', color='#000000', weight='normal', halo=False):
    """A label; with a halo, a white outline keeps it readable where it crosses a line."""
    outline = ' stroke="#ffffff" stroke-width="4" paint-order="stroke"' if halo else ''
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{color}" font-weight="{weight}"{outline}>{escape(str(s))}</text>\n')


def line(x1, y1, x2, y2, color='#000000', width=1.0, dash=''):
    dashes = f' stroke-dasharray="{dash}"' if dash else ''
    return (f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
            f'stroke-width="{width}"{dashes}/>\n')


def rect(x, y, w, h, fill, stroke='none'):
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{fill}" stroke="{stroke}"/>\n'


def shade(weight):
    """A weight in [0, 1] as a colour from white to BLUE: one hue, darker means more."""
    r, g, b = (int(BLUE[i:i + 2], 16) for i in (1, 3, 5))
    mix = lambda c: round(255 + (c - 255) * weight)  # noqa: E731
    return f'#{mix(r):02x}{mix(g):02x}{mix(b):02x}'


# --- The model, run with the code its weights came from -----------------------------------------
def model_code(state_dict):
    """(the module whose functions go with these weights, the weights). A notebook that ran the
    file's cells made its Values with its own Value class, and its gpt() may have a part swapped
    in: use those. Otherwise microgpt's own, with the weights copied into its Values."""
    cls = type(state_dict['wte'][0][0])
    module = sys.modules.get(cls.__module__)
    if getattr(module, 'Value', None) is cls and hasattr(module, 'gpt'):
        return module, state_dict
    return microgpt, {name: [[microgpt.Value(p.data) for p in row] for row in m]
                      for name, m in state_dict.items()}


def label(tokenizer, i):
    return '.' if i == tokenizer.bos else tokenizer.chars[i]


# --- 1. The training curve ------------------------------------------------------------------------
def bigram_loss(tokenizer, config, train_docs, val_docs):
    """The loss per token of a table of letter pairs counted in train_docs (add-one smoothed), on
    val_docs: the walkthrough's baseline."""
    pairs = lambda docs: [(a, b) for doc in docs  # noqa: E731
                          for t in [microgpt.doc_tokens(doc, tokenizer, config.block_size)]
                          for a, b in zip(t, t[1:])]
    counts = [[1] * tokenizer.vocab_size for _ in range(tokenizer.vocab_size)]
    for a, b in pairs(train_docs):
        counts[a][b] += 1
    held_out = pairs(val_docs)
    return sum(-math.log(counts[a][b] / sum(counts[a])) for a, b in held_out) / len(held_out)


def training_curve(losses, state_dict, tokenizer, config, train_docs, val_docs, window=50):
    """Every step's loss (faint), its mean over the last `window` steps, and three lines to read
    it against: the loss on the report's 100 held-out names, the letter-pair table's, and a
    uniform guess's."""
    code, weights = model_code(state_dict)
    levels = [('validation loss', code.evaluate(val_docs[:100], tokenizer, weights, config), VERMILLION, '6 4'),
              ('letter-pair table', bigram_loss(tokenizer, config, train_docs, val_docs[:100]), GREEN, '2 3'),
              (f'uniform guess, ln {tokenizer.vocab_size}', math.log(tokenizer.vocab_size), GREY, '8 3')]
    means = [sum(losses[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(losses))]
    lo = math.floor(2 * min(losses + [v for _, v, _, _ in levels])) / 2
    hi = math.ceil(2 * max(losses + [v for _, v, _, _ in levels])) / 2
    W, H, left, right, top, bottom = 800, 400, 60, 270, 40, 50
    x = lambda step: left + (W - left - right) * (step - 1) / max(1, len(losses) - 1)  # noqa: E731
    y = lambda v: top + (H - top - bottom) * (hi - v) / (hi - lo)  # noqa: E731
    body = [text(W / 2, 24, f'Training: the loss of each of {len(losses)} steps', 15, 'middle', weight='bold')]
    for k in range(int(round((hi - lo) * 2)) + 1):   # a grid line every 0.5 nats
        v = lo + k / 2
        body += [line(left, y(v), W - right, y(v), '#dddddd'), text(left - 8, y(v) + 4, f'{v:.1f}', 12, 'end')]
    step_ticks = max(1, len(losses) // 5)
    for step in list(range(step_ticks, len(losses) + 1, step_ticks)) or [len(losses)]:
        body += [line(x(step), H - bottom, x(step), H - bottom + 5), text(x(step), H - bottom + 19, step, 12, 'middle')]
    body += [line(left, H - bottom, W - right, H - bottom), line(left, top, left, H - bottom),
             text((left + W - right) / 2, H - 12, 'training step', 12, 'middle'),
             f'<text transform="translate(16 {(top + H - bottom) / 2:.1f}) rotate(-90)" font-size="12" '
             f'text-anchor="middle">loss, nats per token</text>\n']
    points = lambda vs: ' '.join(f'{x(i + 1):.1f},{y(v):.1f}' for i, v in enumerate(vs))  # noqa: E731
    body += [f'<polyline points="{points(losses)}" fill="none" stroke="{SKY}" stroke-width="1" opacity="0.6"/>\n',
             f'<polyline points="{points(means)}" fill="none" stroke="{BLUE}" stroke-width="2.5"/>\n']
    legend = [('loss of each step (one name)', SKY, ''), (f'mean of the last {window} steps', BLUE, ''),
              ('on the same 100 held-out names:', None, '')]
    for name, v, color, dash in levels:
        body.append(line(left, y(v), W - right, y(v), color, 2, dash))
        legend.append((f'{name}: {v:.4f}', color, dash))
    for k, (name, color, dash) in enumerate(legend):
        ly = top + 10 + 22 * k
        if color:
            body.append(line(W - right + 14, ly, W - right + 40, ly, color, 2.5, dash))
        body.append(text(W - right + (46 if color else 14), ly + 4, name, 12))
    return svg(W, H, 'Training curve of microgpt', body)


# --- 2. Attention ---------------------------------------------------------------------------------
def attention_weights(state_dict, tokenizer, config, name, layer=0):
    """For each head: the weights of every position over the positions up to it, as the model
    reads BOS + name."""
    code, weights = model_code(state_dict)
    tokens = [tokenizer.bos] + tokenizer.encode(name)
    kv_cache = [([], [], []) for _ in range(config.n_layer)]
    for pos, token in enumerate(tokens[:config.block_size]):
        code.gpt(token, pos, kv_cache, weights, config)
    per_position = kv_cache[layer][2]   # position 0's heads, then position 1's, ...
    return [[[w.data for w in per_position[pos * config.n_head + h]] for pos in range(len(per_position) // config.n_head)]
            for h in range(config.n_head)]


def attention(state_dict, tokenizer, config, name='emma', layer=0):
    """One heatmap per head: the position that looks (its query) down, the positions it looks at
    (their keys) across, each weight written in its cell; above the diagonal, the future."""
    maps = attention_weights(state_dict, tokenizer, config, name, layer)
    labels = ['.'] + list(name)[:len(maps[0]) - 1]
    n, cell, gap, left, top = len(labels), 46, 36, 40, 78
    side = n * cell
    W, H = left + config.n_head * (side + gap) - gap + 20, top + side + 58
    body = [text(W / 2, 24, f'Attention of layer {layer} reading "{name}", after BOS (.)', 15, 'middle', weight='bold'),
            text(W / 2, 44, 'rows: the position that looks (query); columns: the positions it looks at (keys)', 12, 'middle')]
    for h, weights in enumerate(maps):
        x0 = left + h * (side + gap)
        body.append(text(x0 + side / 2, top - 24, f'head {h}', 13, 'middle', weight='bold'))
        for j, ch in enumerate(labels):
            body += [text(x0 + (j + 0.5) * cell, top - 6, ch, 13, 'middle'),
                     text(x0 - 8, top + (j + 0.5) * cell + 5, ch, 13, 'end')]
        for q in range(n):
            for k in range(n):
                cx, cy = x0 + k * cell, top + q * cell
                if k > q:   # the future: no position looks ahead
                    body.append(rect(cx, cy, cell, cell, '#eeeeee', '#ffffff'))
                    continue
                w = weights[q][k]
                body += [rect(cx, cy, cell, cell, shade(w), '#ffffff'),
                         text(cx + cell / 2, cy + cell / 2 + 4, f'{w:.2f}', 12, 'middle', '#ffffff' if w > 0.5 else '#000000')]
    body.append(text(W / 2, H - 16, 'grey: later positions, which a position never sees (causal attention)', 12, 'middle', GREY))
    return svg(W, H, f'Attention heatmaps of microgpt for "{name}"', body)


# --- 3. Embeddings --------------------------------------------------------------------------------
def principal_axes(vectors, count=2, steps=1000):
    """The `count` directions along which the vectors spread most (principal components), by power
    iteration: multiply a start vector by the covariance matrix again and again, and it turns
    towards the direction of largest spread; remove that direction, and repeat for the next."""
    dim = len(vectors[0])
    mean = [sum(column) / len(vectors) for column in zip(*vectors)]
    centred = [[x - m for x, m in zip(v, mean)] for v in vectors]
    cov = [[sum(r[i] * r[j] for r in centred) / len(vectors) for j in range(dim)] for i in range(dim)]
    axes = []
    for _ in range(count):
        v = [1.0 / math.sqrt(dim)] * dim
        for _ in range(steps):
            v = [sum(c * x for c, x in zip(row, v)) for row in cov]
            for a in axes:   # keep it at right angles to the axes found already
                along = sum(x * y for x, y in zip(v, a))
                v = [x - along * y for x, y in zip(v, a)]
            size = math.sqrt(sum(x * x for x in v))
            v = [x / size for x in v]
        if max(v, key=abs) < 0:   # a direction has two signs: take the one whose largest part is +
            v = [-x for x in v]
        axes.append(v)
    return [[sum(x * y for x, y in zip(c, a)) for a in axes] for c in centred], axes


def embeddings(state_dict, tokenizer, vowels='aeiou'):
    """The token embeddings (rows of wte) projected onto their two principal components, each
    point labelled with its token; vowels and consonants marked apart."""
    points, _ = principal_axes([[p.data for p in row] for row in state_dict['wte']])
    W, H, pad = 560, 520, 60
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    sx = lambda v: pad + (W - 2 * pad) * (v - min(xs)) / (max(xs) - min(xs))  # noqa: E731
    sy = lambda v: 70 + (H - 70 - pad) * (max(ys) - v) / (max(ys) - min(ys))  # noqa: E731
    body = [text(W / 2, 24, 'Token embeddings (wte), on their two principal components', 15, 'middle', weight='bold'),
            text(W / 2, 44, 'letters the model treats alike lie close together', 12, 'middle'),
            line(pad - 20, H - pad + 20, W - pad + 20, H - pad + 20, GREY), text(W - pad + 20, H - pad + 38, 'component 1', 12, 'end', GREY),
            line(pad - 20, 60, pad - 20, H - pad + 20, GREY),
            f'<text transform="translate({pad - 28} 70) rotate(-90)" font-size="12" text-anchor="end" fill="{GREY}">component 2</text>\n']
    placed = [(sx(px) - 7, sy(py) - 7, sx(px) + 7, sy(py) + 7) for px, py in points]   # the marks,
    # then each label drawn: a label takes the first place beside its mark that overlaps none
    for i, (px, py) in enumerate(points):
        ch = 'BOS' if i == tokenizer.bos else tokenizer.chars[i]
        x, y = sx(px), sy(py)
        if ch in vowels:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{ORANGE}" stroke="#000000"/>\n')
        elif ch == 'BOS':
            body.append(f'<path d="M {x:.1f} {y - 7:.1f} L {x + 7:.1f} {y:.1f} L {x:.1f} {y + 7:.1f} L {x - 7:.1f} {y:.1f} Z" fill="{GREY}"/>\n')
        else:
            body.append(rect(x - 5, y - 5, 10, 10, BLUE))
        width = 9 * len(ch)
        for dx, dy, anchor in ((9, 5, 'start'), (9, -9, 'start'), (-9, 5, 'end'), (-9, -9, 'end'), (9, 19, 'start'), (-9, 19, 'end')):
            x0 = x + dx if anchor == 'start' else x + dx - width
            box = (x0, y + dy - 12, x0 + width, y + dy + 2)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        body.append(text(x + dx, y + dy, ch, 14, anchor, weight='bold' if ch in vowels else 'normal', halo=True))
    for k, (name, mark) in enumerate((('vowel', f'<circle cx="{W - 150}" cy="70" r="6" fill="{ORANGE}" stroke="#000000"/>\n'),
                                      ('consonant', rect(W - 155, 87, 10, 10, BLUE)))):
        body += [mark, text(W - 138, 75 + 22 * k, name, 12)]
    return svg(W, H, 'Token embeddings of microgpt, projected to two dimensions', body)


# --- 4. Next-letter odds at three temperatures ----------------------------------------------------
def next_token_odds(state_dict, tokenizer, config, prefix, temperatures):
    """For each temperature: the probability of each token after BOS + prefix, as generate()
    draws it (softmax of the logits divided by the temperature)."""
    code, weights = model_code(state_dict)
    tokens = [tokenizer.bos] + tokenizer.encode(prefix)
    kv_cache = [([], [], []) for _ in range(config.n_layer)]
    for pos, token in enumerate(tokens):
        logits = [v.data for v in code.gpt(token, pos, kv_cache, weights, config)]
    odds = []
    for t in temperatures:
        e = [math.exp((s - max(logits)) / t) for s in logits]
        odds.append([x / sum(e) for x in e])
    return odds


def next_letter(state_dict, tokenizer, config, prefix='em', temperatures=(0.5, 1.0, 2.0)):
    """Bars: the model's odds for the token after `prefix`, side by side at each temperature, the
    tokens in order of their odds at temperature 1 (or the middle one)."""
    odds = next_token_odds(state_dict, tokenizer, config, prefix, temperatures)
    order = sorted(range(tokenizer.vocab_size), key=lambda i: -odds[len(odds) // 2][i])
    colors = (VERMILLION, BLUE, ORANGE, GREEN, GREY)
    top_p = max(max(o) for o in odds)
    W, H, left, top, bottom = 900, 380, 56, 76, 56
    group = (W - left - 20) / len(order)
    bar = (group - 4) / len(temperatures)
    y = lambda p: top + (H - top - bottom) * (1 - p / top_p)  # noqa: E731
    body = [text(W / 2, 24, f'What comes after "{prefix}": the odds of each token at {len(temperatures)} temperatures', 15, 'middle', weight='bold'),
            text(W / 2, 44, 'below 1 the likeliest get likelier; above 1 the odds even out (. is the end of the name)', 12, 'middle')]
    for k in range(6):
        p = top_p * k / 5
        body += [line(left, y(p), W - 20, y(p), '#dddddd'), text(left - 6, y(p) + 4, f'{p:.2f}', 11, 'end')]
    for g, i in enumerate(order):
        x0 = left + g * group + 2
        for t, o in enumerate(odds):
            body.append(rect(x0 + t * bar, y(o[i]), bar, H - bottom - y(o[i]), colors[t]))
        body.append(text(x0 + group / 2 - 2, H - bottom + 18, label(tokenizer, i), 13, 'middle'))
    body.append(line(left, H - bottom, W - 20, H - bottom))
    for t, temp in enumerate(temperatures):
        body += [rect(W - 330 + 105 * t, H - 24, 12, 12, colors[t]), text(W - 314 + 105 * t, H - 14, f'T = {temp:g}', 12)]
    body.append(text(left, H - 14, 'probability of the next token', 12, color=GREY))
    return svg(W, H, f'Next-token probabilities of microgpt after "{prefix}" at several temperatures', body)


# --- 5. A computation graph -----------------------------------------------------------------------
def graph(root, names):
    """Draw the graph behind root, as micrograd's draw_dot does with graphviz: each Value a box
    with its data and grad, each edge labelled with its local derivative. `names` maps a name
    (what the box says, e.g. 'p = a*b') to each Value of the graph; leaves first, in the order to
    stack them. The name before ' =' is the one the edge labels use."""
    name_of = {id(v): n for n, v in names.items()}
    short = lambda v: name_of[id(v)].split(' =')[0]  # noqa: E731
    nodes = [v for v in names.values() if not v._children] + root.graph()
    depth, row = {}, {}
    for v in nodes:   # leaves in column 0, each computed Value one right of its deepest input
        depth[id(v)] = 1 + max((depth[id(c)] for c in v._children), default=-1)
        row[id(v)] = sum(row[id(c)] for c in v._children) / len(v._children) if v._children else len(row)
    bw, bh, col, gap = 150, 64, 250, 96
    W = 40 + col * max(depth.values()) + bw + 40
    H = 80 + gap * (max(row.values()) + 1)
    pos = {i: (40 + col * depth[i], 70 + gap * row[i]) for i in depth}
    body = [text(W / 2, 26, 'A computation graph: each Value with its data and grad', 15, 'middle', weight='bold'),
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
            'orient="auto"><path d="M 0 0 L 10 5 L 0 10 z" fill="#000000"/></marker></defs>\n']
    for v in nodes:
        for c, g in zip(v._children, v._local_grads):
            (x1, y1), (x2, y2) = pos[id(c)], pos[id(v)]
            ax, ay, bx, by = x1 + bw, y1 + bh / 2, x2, y2 + bh / 2
            lx, ly = ax + 0.4 * (bx - ax), ay + 0.4 * (by - ay)   # nearer the input: apart from its siblings
            body += [f'<line x1="{ax:.1f}" y1="{ay:.1f}" x2="{bx:.1f}" y2="{by:.1f}" stroke="#000000" marker-end="url(#arrow)"/>\n',
                     text(lx, ly - 11, f'd{short(v)}/d{short(c)} = {g:g}', 12, 'middle', VERMILLION, halo=True)]
    for v in nodes:
        x, y = pos[id(v)]
        body += [f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw}" height="{bh}" rx="8" fill="#ffffff" stroke="{BLUE}" stroke-width="2"/>\n',
                 text(x + bw / 2, y + 20, name_of[id(v)], 14, 'middle', weight='bold'),
                 text(x + bw / 2, y + 38, f'data {v.data:g}', 12, 'middle'),
                 text(x + bw / 2, y + 55, f'grad {v.grad:g}', 12, 'middle', BLUE)]
    body.append(text(W / 2, H - 12, 'on each edge, its local derivative; in each box, grad = d(output)/d(that Value), by the chain rule', 12, 'middle', GREY))
    return svg(W, H, 'Computation graph of L = (a*b + c)^2, with every gradient', body)


def chain_rule_graph():
    """The walkthrough's example by hand, L = (a*b + c)^2 at a = 2, b = -3, c = 10, after backward()."""
    a, b, c = microgpt.Value(2.0), microgpt.Value(-3.0), microgpt.Value(10.0)
    p = a * b
    s = p + c
    L = s ** 2
    L.backward()
    return graph(L, {'a': a, 'b': b, 'c': c, 'p = a*b': p, 's = p + c': s, 'L = s^2': L})


# --- The script -----------------------------------------------------------------------------------
def run_lesson(flags):
    """Run microgpt.py as the command line would, quietly; returns what it leaves: its globals."""
    argv, sys.argv = sys.argv, [os.path.join(ROOT, 'microgpt.py')] + flags
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return runpy.run_path(sys.argv[0], run_name='__main__')
    finally:
        sys.argv = argv


def draw_all(ns):
    """Every figure the run's objects allow: name -> SVG text (no curve for a loaded model)."""
    sd, tok, config = ns['state_dict'], ns['tokenizer'], ns['config']
    drawn = {}
    if 'losses' in ns:
        drawn['training_curve'] = training_curve(ns['losses'], sd, tok, config, ns['train_docs'], ns['val_docs'])
    drawn['attention'] = attention(sd, tok, config)
    drawn['embeddings'] = embeddings(sd, tok)
    drawn['next_letter'] = next_letter(sd, tok, config)
    drawn['graph'] = chain_rule_graph()
    return drawn


def write_atomically(path, content):
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        with open(tmp, 'w', encoding='utf-8', newline='\n') as f:
            f.write(content)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv=None):
    parser = argparse.ArgumentParser(description='Draw the trained model as SVG figures.')
    parser.add_argument('--load', default='', help='a checkpoint made with microgpt.py --save')
    parser.add_argument('--out', default=os.path.join(ROOT, 'figures'), help='folder to write into')
    args = parser.parse_args(argv)
    ns = run_lesson(['--load', args.load, '--num-samples', '0'] if args.load else [])
    os.makedirs(args.out, exist_ok=True)
    for name, content in draw_all(ns).items():
        path = os.path.join(args.out, name + '.svg')
        write_atomically(path, content)
        print(f'wrote {path}')


if __name__ == '__main__':
    main()
