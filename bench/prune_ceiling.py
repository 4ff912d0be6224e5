#!/usr/bin/env python3
"""How much scoring exact pruning could skip in a real search (issue "Speed, round 2").

A candidate can stop being scored once it provably cannot enter the generation's elites (the
μ best by the method's ranking) nor become the best (accuracy first, then log-likelihood):
its best reachable score, the examples scored so far plus the best possible value of every
remaining one (exact: 1; log-likelihood and margin: 0), is strictly below both. This replays
the per-example scores of a search, recorded with ZMIX_SCORE_TRACE, and counts the
example-evaluations that pruning would skip:

  speculative  the elite threshold is the previous generation's μ-th score (the only one
               known before the generation is scored); a pruned candidate whose bound turns
               out not to be below the generation's exact μ-th score must be scored to the
               end after all (counted as "resumed", nothing skipped for it);
  oracle       the generation's exact μ-th score, known in advance: no exact method can skip
               more, so this is the ceiling.

Examples are taken in the given order, or hardest first (by the previous generation's mean
per-example value of the ranking's score) with --hardest-first; checks after every block of
--block examples.

  ZMIX_SCORE_TRACE=trace.txt zmix adapt --threads 1 --model M --experts ... --examples ex.json
  python3 bench/prune_ceiling.py trace.txt --examples 12 --pop 8 --mu 4 --rank margin
  # --skip: lines scored before the first generation (the base model and the K single
  # experts: K + 1), --rank metric for the cem method (accuracy, then log-likelihood)
"""

import argparse


def load(path, n_examples, skip):
    rows = []
    for line in open(path):
        f = line.split()[1:]
        if len(f) != 3 * n_examples:
            continue  # held-out or validation scoring
        rows.append([(int(f[3 * i]), float(f[3 * i + 1]), float(f[3 * i + 2]))
                     for i in range(n_examples)])
    return rows[skip:]


def replay(rows, pop, mu, block, rank, oracle, hardest_first):
    n = len(rows[0])
    # a score as the ranking compares it: margin first for sep-cma, else the metric
    key = (lambda m, a, l: (m, a, l)) if rank == "margin" else (lambda m, a, l: (a, l))
    value = 2 if rank == "margin" else 1  # the per-example value that orders examples
    best = None  # (accuracy, loglik) of the best so far: exact, from earlier generations
    threshold = None
    order = list(range(n))
    total = skipped = resumed = 0
    for g0 in range(0, len(rows) - pop + 1, pop):
        gen = rows[g0:g0 + pop]
        full = [key(sum(e[2] for e in c), sum(e[0] for e in c), sum(e[1] for e in c))
                for c in gen]
        exact_mu = sorted(full, reverse=True)[mu - 1]
        if oracle:
            threshold = exact_mu
        pruned = {}
        for i, c in enumerate(gen):
            total += n
            if threshold is None or best is None:
                continue
            a = l = m = 0.0
            for k in range(0, n, block):
                for e in order[k:k + block]:
                    a, l, m = a + c[e][0], l + c[e][1], m + c[e][2]
                done = min(k + block, n)
                if done == n:
                    break
                left = n - done
                bound = key(m, a + left, l)
                cannot_be_best = (a + left, l) < best
                if bound < threshold and cannot_be_best:
                    pruned[i] = (bound, done)
                    break
        complete = sorted((full[i] for i in range(pop) if i not in pruned), reverse=True)
        for bound, done in pruned.values():
            if len(complete) >= mu and bound < complete[mu - 1]:
                skipped += n - done
            else:
                resumed += 1
        threshold = exact_mu
        for c in gen:
            s = (sum(e[0] for e in c), sum(e[1] for e in c))
            best = s if best is None or s > best else best
        if hardest_first:
            mean = [sum(c[e][value] for c in gen) for e in range(n)]
            order = sorted(range(n), key=lambda e: mean[e])
    return total, skipped, resumed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--examples", type=int, required=True, help="search examples per line")
    ap.add_argument("--pop", type=int, required=True)
    ap.add_argument("--mu", type=int, required=True, help="elites per generation")
    ap.add_argument("--rank", choices=("margin", "metric"), default="margin")
    ap.add_argument("--skip", type=int, default=5, help="lines before the first generation")
    ap.add_argument("--blocks", default="1,2,4", help="examples per check, comma-separated")
    args = ap.parse_args()
    rows = load(args.trace, args.examples, args.skip)
    print(f"{len(rows)} candidates, {len(rows) // args.pop} generations of {args.pop}, "
          f"mu {args.mu}, ranked by {args.rank}")
    for oracle in (False, True):
        for hardest in (False, True):
            for block in (int(b) for b in args.blocks.split(",")):
                t, s, r = replay(rows, args.pop, args.mu, block, args.rank, oracle, hardest)
                print(f"{'oracle' if oracle else 'speculative':11s} "
                      f"{'hardest first' if hardest else 'given order  '} block {block}: "
                      f"skipped {s} of {t} example-evaluations ({100 * s / t:.1f}%), "
                      f"resumed {r}")


if __name__ == "__main__":
    main()
