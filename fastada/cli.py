"""The ``fastada`` command line: gen, train, eval, predict, inspect, demo.

Errors the user can fix print one line (``fastada: error: ...``) and exit with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time

from .config import FastadaError, LearnConfig, check_environment


def _columns(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _crosses(text: str) -> list[tuple[str, str]]:
    pairs = []
    for item in _columns(text):
        parts = item.split("*") if "*" in item else item.split(":")
        if len(parts) != 2 or not all(parts):
            raise argparse.ArgumentTypeError(f"cross {item!r} must look like A*B")
        pairs.append((parts[0], parts[1]))
    return pairs


def _list_weights(text: str) -> dict[str, str]:
    pairs = {}
    for item in _columns(text):
        parts = item.split("=")
        if len(parts) != 2 or not all(parts):
            raise argparse.ArgumentTypeError(f"list weights {item!r} must look like LIST=WEIGHTS")
        pairs[parts[0]] = parts[1]
    return pairs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastada", description="Hogwild per-feature Adagrad for sparse CTR models.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("gen", help="write a synthetic Criteo-like data set with a planted truth")
    g.add_argument("--rows", type=int, default=1_000_000, help="training rows (default 1,000,000)")
    g.add_argument("--test-rows", type=int, default=200_000,
                   help="test rows, from the same truth (default 200,000: enough to tell learners apart)")
    g.add_argument("--out", required=True, help="folder for train.parquet, test.parquet, truth.json")
    g.add_argument("--seed", type=int, default=0, help="the planted truth and the rows drawn from it (default 0)")
    g.add_argument("--click-rate", type=float, default=None,
                   help="the mean click rate, 0.0001-0.9 (default 0.25; display-ad logs have 0.001-0.05)")
    g.add_argument("--zipf", type=_zipf_range, default=(1.05, 1.5),
                   help="Zipf exponents of the string columns: A (all the same) or A,B (drawn from [A, B]); "
                        "lower is flatter: more distinct values a row group, and Parquet dictionaries that "
                        "overflow into plain pages (0: uniform; the README's worst case is 0.8; "
                        "default 1.05,1.5)")
    g.add_argument("--compression", default="snappy", choices=("snappy", "zstd", "gzip", "lz4", "none"),
                   help="the Parquet codec (default snappy)")
    g.add_argument("--pairs", default="table", choices=("table", "latent"),
                   help="the two planted interactions: an effect for every pair of values, which only a "
                        "cross learns (table, the default), or the dot product of a vector for each value, "
                        "as users' affinities for items are and factorization machines learn (latent)")

    t = sub.add_parser("train", help="train a model on Parquet data", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train a logistic model with Hogwild per-feature Adagrad, one pass (or --epochs) "
                                   "over Parquet data.", epilog=TRAIN_EXAMPLES)
    t.add_argument("data", nargs="+", help="Parquet files, folders, globs or URIs")
    t.add_argument("--model", required=True, help="where to write the model")
    t.add_argument("--init-model", default=None, metavar="MODEL",
                   help="continue this model (an adagrad model: its columns, bits, weights, accumulators and "
                        "learning rate) on DATA, e.g. yesterday's model on today's logs")
    t.add_argument("--quiet", action="store_true", help="no progress lines")
    r = t.add_argument_group("data and column roles (by default: strings categorical, numbers numeric)")
    r.add_argument("--label", default="label")
    r.add_argument("--categorical", type=_columns, default=None, help="columns hashed by value: C1,C2,..")
    r.add_argument("--numeric", type=_columns, default=None, help="columns used as numbers")
    r.add_argument("--ignore", type=_columns, default=[], help="columns to leave out")
    r.add_argument("--weight", default=None, help="per-row weight column")
    r.add_argument("--cross", type=_crosses, default=[], help="column pairs to cross: A*B,C*D")
    r.add_argument("--list-weights", type=_list_weights, default={}, metavar="LIST=WEIGHTS,..",
                   help="list columns whose elements take their values from a parallel list<number> column "
                        "(tags=tag_scores); else each element has value 1")
    r.add_argument("--time-features", action="store_true",
                   help="timestamp and date columns give hour-of-day and weekday features (else ignored)")
    r.add_argument("--no-new-values", dest="new_values", action="store_const", const=False, default=None,
                   help="no new-value features (by default, for --learner adagrad and ftrl, each categorical column, "
                        "bucket and cross learns what a value never seen before is worth, from first sightings, "
                        "and values unseen in training score with it)")
    r.add_argument("--numeric-mode", choices=("value", "bucket", "both"), default="both",
                   help="numeric features: log1p value, log bucket, or both (default)")
    r.add_argument("--bits", type=int, default=24, help="log2 of the number of hashed slots (1..31; default 24)")
    r.add_argument("--hash-seed", type=int, default=0)
    r.add_argument("--on-bad-rows", choices=("fail", "skip"), default="fail",
                   help="rows with a bad label or weight, unreadable files or row groups: stop with an "
                        "error (default) or skip them, counted")
    lg = t.add_argument_group("learning")
    lg.add_argument("--lr", type=_lr_arg, default=LearnConfig.lr,
                    help="Adagrad learning rate, or auto (default): raced on the first rows, the winner kept")
    lg.add_argument("--learner", choices=("adagrad", "ftrl", "fm", "ffm"), default="adagrad",
                    help="per-coordinate Adagrad (default), FTRL-Proximal (--lr is its alpha), or a (field-aware) "
                         "factorization machine over the Adagrad linear model")
    lg.add_argument("--beta", type=float, default=1.0, help="FTRL's beta (default 1)")
    lg.add_argument("--factors", type=int, default=LearnConfig.factors,
                    help=f"FM/FFM: latent factors per feature (and field) (default {LearnConfig.factors})")
    lg.add_argument("--factor-bits", type=int, default=LearnConfig.factor_bits,
                    help=f"FM/FFM: log2 of the factor slots (at most --bits; default {LearnConfig.factor_bits})")
    lg.add_argument("--factor-lr", type=_lr_arg, default=LearnConfig.factor_lr,
                    help="FM/FFM: the factors' Adagrad rate (libffm's eta: 0.2), or auto (default): raced on the "
                         "first rows after --lr, the winner kept")
    lg.add_argument("--factor-l2", type=float, default=LearnConfig.factor_l2,
                    help=f"FM/FFM: the factors' L2 (default {LearnConfig.factor_l2}, libffm's lambda)")
    lg.add_argument("--negative-rate", type=float, default=1.0,
                    help="keep each negative row with this probability (the same rows every epoch); the "
                         "model is recalibrated to the full data (default 1: keep all)")
    lg.add_argument("--l1", type=float, default=0.0)
    lg.add_argument("--l2", type=float, default=0.0)
    lg.add_argument("--initial-accumulator", type=float, default=0.0)
    lg.add_argument("--epochs", type=int, default=1,
                    help="passes over the data; with --lr auto, fewer where the rate race finds that more "
                         "passes predict unseen rows worse (it says so; --all-epochs learns them all)")
    lg.add_argument("--all-epochs", action="store_true",
                    help="learn every one of --epochs even where the race found fewer better")
    lg.add_argument("--lr-decay", type=float, default=1.0,
                    help="multiply the learning rate by this at each new epoch (0 < D <= 1)")
    lg.add_argument("--shuffle", action="store_true", help="shuffle row groups and rows in each chunk, per epoch")
    lg.add_argument("--seed", type=int, default=0)
    v = t.add_argument_group("validation and early stopping")
    v.add_argument("--valid", nargs="+", default=None, metavar="DATA",
                   help="validation data, evaluated after each epoch and every --eval-every-rows rows")
    v.add_argument("--holdout-every", type=int, default=0, metavar="K",
                   help="hold every K-th row out of learning and report its loss (as VW does)")
    v.add_argument("--eval-every-rows", type=int, default=0, metavar="N",
                   help="also evaluate every N rows (default: at the end of each epoch only)")
    v.add_argument("--early-stop", type=int, default=0, metavar="P",
                   help="stop after P evaluations without a better validation logloss; keep the best model")
    v.add_argument("--log-json", default=None, metavar="FILE", help="one JSON line per evaluation")
    c = t.add_argument_group("checkpoints")
    c.add_argument("--checkpoint-dir", default=None, metavar="DIR")
    c.add_argument("--checkpoint-every-rows", type=int, default=0, metavar="N")
    c.add_argument("--checkpoint-every-seconds", type=float, default=0.0, metavar="S")
    c.add_argument("--keep-checkpoints", type=int, default=3, metavar="K")
    c.add_argument("--resume", action="store_true",
                   help="continue from the newest valid checkpoint in --checkpoint-dir (if there is one)")
    dk = t.add_argument_group("distributed (pip install 'fastada[dask]')")
    dk.add_argument("--dask", default=None, metavar="ADDRESS",
                    help="train on Dask workers: local:N (N worker processes on this machine) or a scheduler's "
                         "tcp://HOST:PORT; DATA must be files or URIs every worker can read")
    dk.add_argument("--sync-every-rows", type=int, default=None, metavar="N",
                    help="rows each worker learns between combinations of the models (default 1,000,000; "
                         "the first rounds are shorter, each at most doubling the rows learned; every epoch "
                         "ends with one)")
    dk.add_argument("--combine", choices=("blend", "steps", "average"), default="blend",
                    help="how the workers' changes to a slot combine: their Adagrad steps rescaled and added "
                         "(steps), VW AllReduce's accumulator-weighted average (average), or the two mixed, per "
                         "slot, by the share of its squared gradients from before the round (blend, default)")
    f = t.add_argument_group("performance")
    f.add_argument("--threads", type=_threads_arg, default="auto",
                   help="Hogwild threads, or auto (default: time reading and learning on the first chunks and "
                        "split the cores between them); 1 = sequential and bit-for-bit repeatable")
    f.add_argument("--chunk-rows", type=int, default=LearnConfig.chunk_rows,
                   help=f"rows read, hashed and learned at a time (default {LearnConfig.chunk_rows})")
    f.add_argument("--cache-mb", type=float, default=None, metavar="MB",
                   help="with several epochs, keep the first epoch's hashed rows in memory (up to MB MiB; default: "
                        "a quarter of the memory available) and learn later epochs from them; 0: read every epoch")

    e = sub.add_parser("eval", help="logloss, AUC, normalised entropy and calibration of a model")
    e.add_argument("data", nargs="+")
    e.add_argument("--model", required=True)
    e.add_argument("--label", default=None, help="label column (default: the model's)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--threads", type=int, default=None)

    r = sub.add_parser("predict", help="write predicted probabilities to Parquet")
    r.add_argument("data", nargs="+")
    r.add_argument("--model", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--keep", type=_columns, default=[], help="input columns to copy to the output")
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--chunk-rows", type=int, default=LearnConfig.chunk_rows)
    r.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="score on Dask workers (local:N or tcp://HOST:PORT): --out is then a new folder that gets "
                        "one part-NNNNN.parquet per input row group, in order")

    i = sub.add_parser("inspect", help="print a model's header and its largest weights")
    i.add_argument("model")
    i.add_argument("--top", type=int, default=10)
    i.add_argument("--data", nargs="+", default=None,
                   help="Parquet data to name the categorical values behind the largest weights")
    i.add_argument("--scan-rows", type=int, default=200_000, help="rows of --data to scan")

    pl = sub.add_parser("plot", help="draw learning curves from --log-json files (needs matplotlib)")
    pl.add_argument("logs", nargs="+")
    pl.add_argument("--out", required=True, help="PNG file")

    d = sub.add_parser("demo", help="generate data, train, evaluate, compare with the planted truth")
    d.add_argument("--rows", type=int, default=1_000_000)
    d.add_argument("--test-rows", type=int, default=200_000)
    d.add_argument("--out", default="fastada-demo")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("predict", "gen") and threading.current_thread() is threading.main_thread():
        # SIGTERM as an exception: the command's cleanup runs (no temporary file is left behind)
        signal.signal(signal.SIGTERM, _terminated)
    try:
        check_environment()
        reads = args.command in ("train", "predict", "eval", "demo")  # (the commands that read data)
        if reads:
            from .api import system_allocator
        with system_allocator() if reads else contextlib.nullcontext():
            code = _COMMANDS[args.command](args) or 0
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit-time flush
        return code
    except FastadaError as e:
        if args.debug:
            raise
        print(f"fastada: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastada: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("fastada: terminated; nothing was left behind", file=sys.stderr)
        return 143
    except BrokenPipeError:
        # the reader of our output left (`fastada inspect m | head`): stop quietly, as `cat` does,
        # and keep Python from complaining again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command stopped this way


TRAIN_EXAMPLES = """examples:
  # generated data: column roles from the Arrow types, 2^24 slots, the cores split automatically
  fastada train data/train.parquet --model m.fastada

  # real logs: integer ids are categories, not quantities; a cross; validation with early stopping
  fastada train logs/train/ --label click --ignore id --categorical site_id,app_id,device_type \\
      --cross site_id*app_id --bits 26 --epochs 3 --shuffle --valid logs/valid/ --early-stop 2 \\
      --checkpoint-dir ck/ --resume --model ctr.fastada
"""


class _Terminated(BaseException):
    """SIGTERM arrived (raised from the handler so that ``finally`` blocks clean up)."""


_TERMINATING = threading.Event()


def _terminated(signum, frame):
    # only a flag, which the command's loop checks at each chunk: an exception raised from a
    # signal handler can land inside a callback from C (Numba compiling, say) and be lost there
    _TERMINATING.set()


def _check_terminating() -> None:
    if _TERMINATING.is_set():
        raise _Terminated()


def _lr_arg(text: str):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, got {text!r}") from None


def _threads_arg(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number of threads, got {text!r}") from None


def _zipf_range(text: str) -> tuple[float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not 0.0 <= values[0] <= values[1] <= 10.0:
        raise argparse.ArgumentTypeError(f"expected A or A,B with 0 <= A <= B <= 10, got {text!r}")
    return values[0], values[1]


def _gen(args) -> int:
    from .synth import generate
    if args.rows < 0 or args.test_rows < 0:
        raise FastadaError("--rows and --test-rows must be >= 0")
    start = time.perf_counter()
    import pyarrow as pa
    from .synth import Stopped
    try:
        truth = generate(args.out, rows=args.rows, test_rows=args.test_rows, seed=args.seed,
                         zipf=args.zipf, compression=args.compression, stop=_TERMINATING,
                         pairs=args.pairs, **({} if args.click_rate is None else {"click_rate": args.click_rate}))
    except Stopped:
        raise _Terminated() from None
    except (OSError, pa.ArrowException) as e:
        raise FastadaError(f"{args.out}: cannot write the data ({_first_line(e)}); no partial file was "
                           f"left") from None
    seconds = time.perf_counter() - start
    rate = "" if truth["test_base_rate"] is None else f", {truth['test_base_rate']:.2%} clicks"
    print(f"wrote {args.rows:,} train + {args.test_rows:,} test rows{rate} to {args.out} in {seconds:.1f} s "
          f"({(args.rows + args.test_rows) / seconds:,.0f} rows/s); Bayes test logloss "
          f"{_fmt(truth['bayes_test_logloss'])}, AUC {_fmt(truth['bayes_test_auc'])}")
    return 0


def _train(args) -> int:
    import signal
    import threading

    from . import api
    from .train import Stopped
    progress = _ProgressLine(quiet=args.quiet)
    stop = threading.Event()
    received = []

    def on_signal(signum, frame):  # finish the current chunk, write a checkpoint, leave
        if received:  # asked twice: leave now
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        model = api.train(
            args.data, label=args.label, model=args.model, categorical=args.categorical,
            numeric=args.numeric, ignore=args.ignore, weight=args.weight, crosses=args.cross,
            list_weights=args.list_weights,
            bits=args.bits, hash_seed=args.hash_seed, numeric_mode=args.numeric_mode,
            time_features=args.time_features, new_values=args.new_values, lr=args.lr,
            l1=args.l1, l2=args.l2, initial_accumulator=args.initial_accumulator, epochs=args.epochs,
            all_epochs=args.all_epochs,
            threads=args.threads, seed=args.seed, chunk_rows=args.chunk_rows, shuffle=args.shuffle,
            lr_decay=args.lr_decay, holdout_every=args.holdout_every, bad_rows=args.on_bad_rows,
            learner=args.learner, beta=args.beta, negative_rate=args.negative_rate, factors=args.factors,
            factor_bits=args.factor_bits, factor_lr=args.factor_lr, factor_l2=args.factor_l2,
            valid=args.valid,
            eval_every_rows=args.eval_every_rows, early_stop=args.early_stop,
            checkpoint_dir=args.checkpoint_dir, checkpoint_every_rows=args.checkpoint_every_rows,
            checkpoint_every_seconds=args.checkpoint_every_seconds,
            keep_checkpoints=args.keep_checkpoints, resume=args.resume, log_json=args.log_json,
            cache_mb=args.cache_mb,
            on_chunk=progress, on_evaluation=progress.evaluation, on_note=progress.note, stop=stop,
            init=args.init_model, dask=args.dask, sync_every_rows=args.sync_every_rows,
            combine=args.combine)
    except Stopped as e:
        progress.close()
        print(f"fastada: {e}", file=sys.stderr)
        return 128 + (received[0] if received else signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    progress.close()
    s = model.summary
    kept = f" (negatives kept at rate {s['negative_rate']:g})" if s.get("negative_rate", 1) < 1 else ""
    print(f"trained {s['rows']:,} rows{kept} in {s['seconds']:.2f} s ({s['rows_per_second']:,} rows/s, "
          f"{_threads(s)}), progressive logloss {_fmt(s['progressive_logloss'])}"
          f"{' (last epoch)' if len(s.get('progressive_logloss_by_epoch') or ()) > 1 else ''}; "
          f"model written to {args.model}")
    if s.get("bad_rows") or s.get("skipped_rows") or s.get("skipped_files"):
        print(f"skipped (--on-bad-rows skip): {s['bad_rows']:,} rows with a bad label or weight, "
              f"{s['skipped_rows']:,} rows of {s['skipped_row_groups']:,} unreadable row groups, "
              f"{s['skipped_files']:,} unreadable files")
    if s.get("stopped_early"):
        print(f"stopped early: no better validation logloss in {args.early_stop} evaluations; "
              f"kept the best model (logloss {_fmt(s['best_logloss'])} at {s['best_rows']:,} rows)")
    return 0


class _ProgressLine:
    """Rows, rows/s and progressive logloss on stderr, in place on a terminal."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = time.monotonic()
        self.shown = False

    def __call__(self, p) -> None:
        now = time.monotonic()
        if self.quiet or now - self.last < (0.5 if self.tty else 10.0):
            return
        self.last = now
        rate = p.rows / p.seconds if p.seconds > 0 else 0.0
        eta = (p.total_rows - p.rows) / rate if rate > 0 else math.nan
        line = (f"epoch {p.epoch}  {p.rows:,} rows  {rate:,.0f} rows/s  progressive logloss "
                f"{p.progressive_logloss:.5f}  eta {eta:.0f} s")
        sys.stderr.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        sys.stderr.flush()
        self.shown = True

    def evaluation(self, record: dict) -> None:
        """One line per evaluation (always, unless --quiet): these are what a log reader wants."""
        if self.quiet:
            return
        parts = [f"epoch {record['epoch']}", f"{record['rows']:,} rows", f"{record['seconds']:.1f} s",
                 f"train logloss {_fmt(record['train_logloss'])}"]
        for key in ("holdout_logloss", "valid_logloss", "valid_auc"):
            if key in record:
                parts.append(f"{key.replace('_', ' ')} {_fmt(record[key])}")
        self._line("evaluation: " + "  ".join(parts))

    def note(self, text: str) -> None:
        if not self.quiet:
            self._line(text)

    def _line(self, text: str) -> None:
        if self.tty and self.shown:
            sys.stderr.write("\r\x1b[K")
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty and self.shown:
            sys.stderr.write("\n")


def _eval(args) -> int:
    from .api import load
    model = load(args.model, mmap=True)
    result = model.evaluate(args.data, label=args.label, threads=args.threads)
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}))
    else:
        for key in ("logloss", "auc", "ne", "calibration"):
            print(f"{key:<12} {_fmt(result[key])}")
        print(f"{'rows':<12} {result['rows']:,}")
    return 0


def _predict(args) -> int:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .api import load
    from .model import atomic_replace_target
    from .score import predict_batches
    from .api import open_data
    from .model import check_outputs
    if args.dask is not None:
        return _predict_distributed(args)
    data, inputs = open_data(args.data)
    check_outputs({"--out": args.out}, [args.model, *inputs])
    model = load(args.model, mmap=True)
    tmp = atomic_replace_target(args.out)
    writer = None
    rows = 0
    start = time.perf_counter()
    # Parquet encoding releases the GIL: a writer thread encodes chunk k while chunk k+1 is scored
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastada-write")
    pending: list = []
    try:
        for p, kept, _ in predict_batches(model, data, threads=args.threads,
                                          chunk_rows=args.chunk_rows, keep=args.keep):
            # (from its buffer: pa.array(ndarray) imports pandas, 0.16 s of a short run)
            p = np.ascontiguousarray(p, dtype=np.float64)
            column = pa.Array.from_buffers(pa.float64(), len(p), [None, pa.py_buffer(p)])
            batch = pa.RecordBatch.from_arrays([column, *kept.columns],
                                               names=["prediction", *kept.schema.names])
            if writer is None:
                writer = pq.ParquetWriter(tmp.path, batch.schema)
            pending.append(pool.submit(writer.write_batch, batch))
            if len(pending) > 2:
                pending.pop(0).result()
            rows += batch.num_rows
            _check_terminating()
        for f in pending:
            f.result()
        _check_terminating()
        if writer is None:
            raise FastadaError("no rows to predict")
        writer.close()
        writer = None
        tmp.commit()
    except (OSError, pa.ArrowException) as e:
        raise FastadaError(f"{args.out}: cannot write ({_first_line(e)}); no output was left") from None
    finally:
        pool.shutdown(wait=True)
        if writer is not None:
            writer.close()
        tmp.discard()
    seconds = time.perf_counter() - start
    print(f"wrote {rows:,} predictions to {args.out} in {seconds:.2f} s ({rows / seconds:,.0f} rows/s)")
    return 0


def _predict_distributed(args) -> int:
    from . import distributed
    from .api import open_data
    from .model import check_outputs
    _, inputs = open_data(args.data)
    check_outputs({"--out-dir": args.out}, [args.model, *inputs])
    client, close, _ = distributed.connect(args.dask)
    start = time.perf_counter()
    try:
        done = distributed.predict(client, args.model, args.data, args.out, keep=args.keep, chunk_rows=args.chunk_rows)
    finally:
        close()
    seconds = time.perf_counter() - start
    print(f"wrote {done['rows']:,} predictions to {args.out} ({done['parts']} files, one per row group) in "
          f"{seconds:.2f} s ({done['rows'] / seconds:,.0f} rows/s)")
    return 0


def _inspect(args) -> int:
    import numpy as np
    if args.top < 0 or args.scan_rows < 0:
        raise FastadaError("--top and --scan-rows must be >= 0")

    from .api import load
    from .score import describe_slots
    model = load(args.model, mmap=True)
    spec = model.spec
    w = np.asarray(model.weights[:-1])
    nonzero = int(np.count_nonzero(w))
    summary = {k: v for k, v in model.summary.items() if k != "evaluations"}
    evaluations = model.summary.get("evaluations") or []
    from .score import column_types
    shown = spec.to_dict()
    if shown.pop("schema", ""):  # the columns' Arrow types, as text a reader can use
        shown["types"] = column_types(spec)
    print(json.dumps({"spec": shown, "learn": model.learn, "summary": summary}, indent=2))
    if evaluations:
        print(f"{len(evaluations)} evaluations recorded; the last: {json.dumps(evaluations[-1])}")
    print(f"bias {float(model.weights[-1]):+.6f}; non-zero weights {nonzero:,} of {w.size:,} slots")
    top = np.argsort(-np.abs(w), kind="stable")[: args.top]
    names = describe_slots(model, top, data=args.data, scan_rows=args.scan_rows)
    print("largest weights (slot, weight, what feeds the slot):")
    for s in top:
        what = "; ".join(names[int(s)]) or ("?" if args.data else "? (pass --data to name categorical values)")
        print(f"  {int(s):>10}  {float(w[s]):+.6f}  {what}")
    return 0


def _plot(args) -> int:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FastadaError("fastada plot needs matplotlib: pip install 'fastada[plot]'") from None
    from .model import atomic_replace_target
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = 0
    for path in args.logs:
        records = _read_log(path)
        label = os.path.basename(path)
        for key, style in (("train_logloss", ":"), ("holdout_logloss", "--"), ("valid_logloss", "-")):
            points = [(r["rows"], r[key]) for r in records if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), style, marker="o", markersize=3, label=f"{label}: {key.replace('_', ' ')}")
                drawn += 1
    if not drawn:
        raise FastadaError(f"{', '.join(args.logs)}: no logloss values to plot")
    ax.set_xlabel("rows seen")
    ax.set_ylabel("logloss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    target = atomic_replace_target(args.out)
    try:
        fig.savefig(target.path, format="png", dpi=120)
        target.commit()
    finally:
        target.discard()
    print(f"wrote {args.out}")
    return 0


def _read_log(path: str) -> list[dict]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise FastadaError(f"{path}: cannot read ({e.strerror or e})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise FastadaError(f"{path}, line {number}: not JSON (expected a --log-json file)") from None
        if not isinstance(record, dict) or "rows" not in record:
            raise FastadaError(f"{path}, line {number}: not an evaluation record (no 'rows')")
        records.append(record)
    return records


def _demo(args) -> int:
    from . import api
    from .synth import generate
    print(f"fastada demo: {args.rows:,} train + {args.test_rows:,} test rows of synthetic "
          f"Criteo-like data in {args.out}/")
    start = time.perf_counter()
    truth = generate(args.out, rows=args.rows, test_rows=args.test_rows, seed=args.seed)
    print(f"  generated in {time.perf_counter() - start:.1f} s")
    # Compile (first run) or load (later runs) every kernel on a few rows first, so the training
    # rate below is the rate of training, not of Numba compiling
    import pyarrow.parquet as pq
    start = time.perf_counter()
    sample = os.path.join(args.out, ".compile.parquet")  # read like the real data: Parquet, dictionaries
    pq.write_table(pq.ParquetFile(os.path.join(args.out, "test.parquet")).read_row_group(0).slice(0, 2000), sample)
    try:
        api.train(sample, label="label", bits=12, threads=args.threads).evaluate(sample)
    finally:
        os.unlink(sample)
    seconds = time.perf_counter() - start
    print(f"  compiled code {'compiled in' if seconds > 2 else 'loaded in'} {seconds:.1f} s"
          + (" (the first run only: later runs load it from Numba's cache)" if seconds > 2 else ""))
    model_path = os.path.join(args.out, "model.fastada")
    model = api.train(os.path.join(args.out, "train.parquet"), label="label", model=model_path,
                      threads=args.threads)
    s = model.summary
    print(f"  trained in {s['seconds']:.2f} s: {s['rows_per_second']:,} rows/s on {_threads(s)} "
          f"(one pass, 2^{model.spec.bits} slots)")
    result = model.evaluate(os.path.join(args.out, "test.parquet"), threads=args.threads)
    print()
    print(f"  {'test metric':<22}{'fastada':>10}{'planted truth':>16}")
    rows = (("logloss", "bayes_test_logloss"), ("AUC", "bayes_test_auc"), ("normalised entropy", "bayes_test_ne"))
    for (name, truth_key), key in zip(rows, ("logloss", "auc", "ne")):
        print(f"  {name:<22}{_fmt(result[key]):>10}{_fmt(truth[truth_key]):>16}")
    print(f"  {'calibration':<22}{_fmt(result['calibration']):>10}{'1.0000':>16}")
    print(f"  {'train rows/s':<22}{s['rows_per_second']:>10,}")
    print(f"\n  model: {model_path}; try: fastada eval --model {model_path} {args.out}/test.parquet")
    return 0


def _threads(summary: dict) -> str:
    """"1 learning thread + 2 reading" (or "2 Dask workers, 6 syncs"), from a model's summary."""
    if summary.get("distributed"):
        d = summary["distributed"]
        if not d["rounds"]:
            return "on Dask, nothing left to learn"
        lost = f", {d['lost_workers']} lost" if d.get("lost_workers") else ""
        return f"{d['workers']} Dask workers, {d['rounds']} syncs, {d['bytes_per_sync'] / 1e6:.1f} MB a sync{lost}"
    n, readers = summary["threads"], summary.get("readers")
    text = f"{n} learning thread" + ("" if n == 1 else "s")
    return text + (f" + {readers} reading" if readers else "")


def _first_line(e: Exception) -> str:
    text = (getattr(e, "strerror", None) or str(e)).strip().splitlines()
    return text[0] if text else type(e).__name__


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


_COMMANDS = {"gen": _gen, "train": _train, "eval": _eval, "predict": _predict,
             "inspect": _inspect, "plot": _plot, "demo": _demo}

if __name__ == "__main__":
    sys.exit(main())
