"""Break fastada on purpose and check that the test suite notices: each breakage must fail it.

    python tests/mutations.py             # every breakage (a few minutes each at worst)
    python tests/mutations.py --list
    python tests/mutations.py bias-sum    # one

Each breakage is applied to a copy of the checkout (the files git tracks), and the suite runs
there with ``-x`` (it stops at the first failure, so a caught breakage is quick). The script
exits 1 if any breakage leaves the suite green. Not part of the suite itself: it runs the suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (file, text, replacement, what it breaks)
BREAKAGES = {
    "bias-sum": ("fastada/kernels.py", "mine[h, _W] - mine[h, _W0])", "mine[h, _W])",
                 "Hogwild views of the bias and hot slots add their whole weight, not their change"),
    "one-bias-copy": ("fastada/kernels.py", "    for b in range(private.shape[0]):\n        if taken[b, _HOLDS] == 0:",
                      "    for b in range(1):\n        if taken[b, _HOLDS] == 0:",
                      "only the first thread's views of the bias and hot slots reach the table"),
    "no-row-shuffle": ("fastada/train.py", "        if learn.shuffle:\n            order =",
                       "        if False:\n            order =", "rows are not shuffled within chunks"),
    "no-row-group-shuffle": ("fastada/train.py",
                             "units = [units[i] for i in np.random.default_rng([self.learn.seed, epoch]).permutation(len(units))]",
                             "units = units", "row groups are not shuffled per epoch"),
    "no-lr-decay": ("fastada/train.py", "        lr = self._rate(epoch)\n", "        lr = self.state.lr\n",
                    "the learning kernel ignores --lr-decay"),
    "lost-pieces-dropped": ("fastada/distributed.py", "                queue.extendleft(reversed(pieces))\n",
                            "", "a Dask worker lost mid-round takes its pieces with it (rows never learned)"),
    "no-hot-folds": ("fastada/kernels.py", "                    _fold_due(table, clock, hot, mine, folds, fold_ends, shared, before, lr, l1, l2, eps)\n",
                     "                    pass\n", "threads hand their views of the bias and hot slots back only at a refresh"),
    "refresh-fixed-per-chunk": ("fastada/kernels.py", "period = refresh_period(before, blocks, refresh_longest)",
                                "period = refresh_period(step0, blocks, refresh_longest)",
                                "a first chunk's threads refresh their views every 256 rows to its end"),
    "race-epochs-ignored": ("fastada/train.py", "                state.epochs = chosen + 1\n", "                pass\n",
                            "lr auto's race finds that fewer epochs predict better, and all are learned anyway"),
    "race-remembers-scored": ("fastada/train.py", "                        kernels.copy_rows(saved, places, table, rows_written)\n",
                              "                        pass\n",
                              "with several epochs the race's next pass goes on from a model that learned the scored half"),
    "no-read-retry": ("fastada/reader.py", "READ_RETRIES = 5 ", "READ_RETRIES = 0 ",
                      "a read cut short by the network or the store is not tried again"),
    "predict-reversed": ("fastada/score.py", "read_ahead(units, work, len(featurizers))",
                         "read_ahead(units[::-1], work, len(featurizers))",
                         "predict reads row groups in reverse order (predictions misaligned with rows)"),
    "auc-ties-lose": ("fastada/metrics.py", "area += positives[b] * (below + 0.5 * negatives[b])",
                      "area += positives[b] * below", "AUC counts ties as losses"),
    "list-hidden-files": ("fastada/reader.py", 'return not base.startswith((".", "_")) and base.lower()',
                          "return base.lower()", "folder listings no longer skip _ and . files"),
    "calibration-unapplied": ("fastada/train.py", "weights[-1] += np.float32(shift)", "weights[-1] += np.float32(0.0)",
                              "a downsampled model's bias is not moved to predict the data's clicks"),
    "kept-chunks-unshuffled": ("fastada/train.py", "yield self._arrange(block, epoch, unit, at, where_to), where, pos, at",
                               "yield self._arrange(block, 0, unit, at, where_to), where, pos, at",
                               "later epochs learn kept chunks in the first epoch's order"),
    "ffm-hot-positions-stale": ("fastada/ffm.py", "                hot_here, hot_ahead = hot_ahead, hot_here\n",
                                "                pass\n", "FFM rows learn with hot positions looked up for another row"),
    "ffm-vectors-frozen": ("fastada/ffm.py", "builder.store(_shuffle(builder, v, v, lo), wa_p, align=4)", "pass",
                           "one vector of each FFM pair never learns (K = 4, the vector step)"),
    "ffm-vectors-frozen-scalar": ("fastada/ffm.py", "flat[ia, d] = va - lr32 * ga * _rsqrt(acc_a)",
                                  "flat[ia, d] = va", "one vector of each FFM pair never learns (K other than 4)"),
    "stale-kernels-kept": ("fastada/__init__.py", "\n_forget_stale_kernels()\n", "\n",
                           "Numba's cached kernels outlive a change to a source file that they inline"),
    "fm-no-views": ("fastada/ffm.py", "    use_views = lookup.shape[0] > 0\n", "    use_views = field_aware and lookup.shape[0] > 0\n",
                    "FM threads learn their hot vectors on the shared table, not in their views"),
    "ffm-views-kept": ("fastada/ffm.py", "                    factors[u, f, d] += change\n",
                       "                    pass\n", "FFM threads keep what their views of hot factor slots learned since the last fold"),
    "ffm-views-not-handed-back": ("fastada/learners.py",
                                  "            ffm.hand_back_views(factors, taken, hot.slots, self.fmask, blocks)\n",
                                  "            pass\n", "FFM's learner never hands its threads' views back after a chunk"),
    "ffm-linear-views-kept": ("fastada/ffm.py",
                              "                    _give(table, clock, lin_hot, mine, h, True, step0 + hi, lr, l1, l2, eps)\n",
                              "                    pass\n",
                              "FFM threads keep what their views of the bias and hot linear slots learned since the last fold"),
    "ffm-odd-pair-dropped": ("fastada/ffm.py", "                add(second_sum, builder.sub(k, one), sa, fa, single=True)\n",
                             "                pass\n",
                             "FFM's pair sum leaves out a feature's last pair where it has an odd number after it"),
    "ffm-pair-weights-alike": ("fastada/ffm.py", "second, xs = vectors(builder.add(b, one), sa, fa), x_lanes(b, f8)",
                               "second, xs = vectors(builder.add(b, one), sa, fa), "
                               "builder.shuffle_vector(x_lanes(b, f4), x_lanes(b, f4), eight_lanes)",
                               "FFM's pair sum weighs the second pair of two by the first one's x_b"),
    "ffm-pair-sum-without-x-a": ("fastada/ffm.py", "builder.fmul(sums, _splat(builder, xa, 8), flags=C)", "sums",
                                 "FFM's pair sum leaves x_a out of a feature's pairs"),
    "ffm-numeric-pairs-as-unit": ("fastada/ffm.py", "            split = max(a + 1, units)\n",
                                  "            split = max(a + 1, k)\n",
                                  "FFM's pair steps take every feature's x as 1, numeric ones too"),
    "ffm-linear-steps-unsaved": ("fastada/ffm.py", "            table[t, ACCUMULATOR] = acc\n", "            pass\n",
                                 "FFM's linear part forgets the accumulators of its cold slots' steps"),
    "ftrl-views-kept": ("fastada/ftrl.py", "    if hot is not None:\n        for h in range(hot.shape[0]):\n"
                        "            _give(table, hot, mine, h, beta)\n",
                        "    if hot is not None:\n        for h in range(hot.shape[0]):\n            pass\n",
                        "FTRL threads keep what their views of the bias and hot slots learned since the last fold"),
    "ftrl-give-own-z": ("fastada/ftrl.py", "np.float32((z / (beta + np.sqrt(n)) + moved) * scale - z)",
                        "np.float32(mine[h, Z] - mine[h, _Z0])",
                        "FTRL threads hand back their views' change of z (each one's sigma w from its own n)"),
    "ftrl-views-read-stale": ("fastada/ftrl.py", "            ws[j] = _weight(np.float64(mine[h, Z]), np.float64(mine[h, N])",
                              "            ws[j] = _weight(np.float64(table[s, Z]), np.float64(table[s, N])",
                              "FTRL threads weigh a hot slot by the table's z and n, not their own view's"),
    "continue-forgets-g": ("fastada/train.py", "self.table[:, kernels.ACCUMULATOR] = init.accumulators",
                           "pass", "a continued model starts its accumulators from zero"),
    "hot-first-reversed": ("fastada/kernels.py", "out[r, hot_count + c] = cold[c]",
                           "out[r, hot_count + c] = cold[cold_count - 1 - c]",
                           "locate lists a row's cold features in reverse column order"),
    "resume-drops-best": ("fastada/train.py", 'self.best_table = found.arrays.get("best")',
                          "self.best_table = None", "resume drops the best model kept for early stopping"),
    "views-path-accumulator-lost": ("fastada/kernels.py", "_store32(addresses[j] + 4, acc)",
                                    "_store32(addresses[j] + 8, acc)",
                                    "with views, a feature's new G is written past its slot's accumulator"),
    "new-values-unscored": ("fastada/score.py", "blocks, margin, out,\n                                      new_slots)",
                            "blocks, margin, out,\n                                      new_slots[:0])",
                            "scoring gives a value never seen in training nothing, not its column's new-value weight"),
    "new-values-column-order": ("fastada/kernels.py", "n = new_where[origin[r, j] if origins else j]",
                                "n = new_where[j]",
                                "with hot slots first, a first sighting is credited to the column at its place in the row"),
    "new-values-unlearned": ("fastada/kernels.py", "                else:\n                    _adagrad(table, n, g0, lr, eps)",
                             "                else:\n                    pass", "new-value slots in the table never learn"),
    "plain-pages-unnoticed": ("fastada/reader.py", "            if size > sizes.get(name, size):",
                              "            if size > sizes.get(name, size) and False:",
                              "a column whose dictionary overflowed into plain pages is still read dictionary-encoded"),
    "overflow-not-carried": ("fastada/reader.py", "setdefault(unit.file, set(self._overflowed))",
                             "setdefault(unit.file, set())",
                             "a file read after one whose dictionary overflowed reads the column dictionary-encoded again"),
    "dictionary-tail-unchecked": ("fastada/hashing.py", "    for k in range(words * 8, size):",
                                  "    for k in range(words * 8, words * 8):",
                                  "a dictionary that differs from the one before only in its last bytes is taken for it"),
    "factor-race-not-put-back": ("fastada/train.py", "        finally:\n            factors[written] = fresh\n",
                                 "        finally:\n            pass\n",
                                 "training starts from the factors the last candidate of the factors' race left"),
    "factor-race-one-fold": ("fastada/train.py", "for swap in (False, True)]\n        found: dict[float, float]",
                             "for swap in (False,)]\n        found: dict[float, float]",
                             "the factors' race scores one half of its rows, not both"),
    "race-reads-every-chunk": ("fastada/train.py", "        for tasks in (first, rest):\n",
                               "        first, rest = [(0, pos, unit, 0) for pos, unit in enumerate(units)], []\n"
                               "        for tasks in (first, rest):\n",
                               "the lr race's readers read on into chunks it never learns"),
}


def run(name: str, pytest_args: list[str]) -> bool:
    """Apply breakage ``name`` to a copy of the checkout and run the suite; True if it failed."""
    path, text, replacement, _ = BREAKAGES[name]
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    with tempfile.TemporaryDirectory(prefix=f"fastada-{name}-") as copy:
        for f in files:
            os.makedirs(os.path.dirname(os.path.join(copy, f)) or copy, exist_ok=True)
            if os.path.isfile(os.path.join(ROOT, f)):
                shutil.copy2(os.path.join(ROOT, f), os.path.join(copy, f))
        source = open(os.path.join(copy, path)).read()
        if source.count(text) != 1:
            raise SystemExit(f"{name}: the text to break is not found once in {path}; update tests/mutations.py")
        with open(os.path.join(copy, path), "w") as f:
            f.write(source.replace(text, replacement))
        # (not the test that finds each breakage's text: in the broken copy it finds the replacement)
        keep_texts = "--deselect=tests/test_structure.py::test_every_breakage_of_the_mutation_run_finds_its_text_once"
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", keep_texts,
                               *pytest_args],
                              cwd=copy, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=copy, NUMBA_CACHE_DIR=os.path.join(copy, ".numba")))
        lines = done.stdout.strip().splitlines()
        failed = [line.split(" - ")[0][len("FAILED "):] for line in lines if line.startswith("FAILED ")]
        summary = (f"by {failed[0]}" if failed else lines[-1]) if lines else done.stderr[-300:]
        print(f"{name:22} {'caught' if done.returncode else 'MISSED'} {summary}", flush=True)
        return done.returncode != 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="breakages to apply (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--pytest", default="", help="extra pytest arguments, e.g. a test file")
    args = ap.parse_args()
    if args.list:
        for name, (_, _, _, what) in BREAKAGES.items():
            print(f"{name:22} {what}")
        return 0
    missed = [n for n in (args.names or BREAKAGES) if not run(n, args.pytest.split())]
    if missed:
        print(f"the suite stays green with: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
