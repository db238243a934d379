"""Draw the benchmark figure from bench_peers.py's results.json and bench_scale.py's scale.json.

Usage:  python benchmarks/plot_results.py [--out-dir bench-out] [--png benchmarks/results.png]

Left: train rows/s per system (one run, one machine). Right: end-to-end rows/s against Hogwild
threads (when scale.json exists).
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="bench-out")
    ap.add_argument("--png", default=os.path.join(os.path.dirname(__file__), "results.png"))
    args = ap.parse_args()
    with open(os.path.join(args.out_dir, "results.json")) as f:
        peers = json.load(f)
    scale_path = os.path.join(args.out_dir, "scale.json")
    scale = json.load(open(scale_path)) if os.path.exists(scale_path) else None
    fig, axes = plt.subplots(1, 2 if scale else 1, figsize=(11 if scale else 6, 3.8), squeeze=False)
    ax = axes[0][0]
    runs = sorted(peers["runs"], key=lambda r: r["train_rows_per_s"])
    names = [r["system"] for r in runs]
    rates = [r["train_rows_per_s"] / 1e6 for r in runs]
    colors = ["tab:blue" if n.startswith("fastada") else "tab:gray" for n in names]
    ax.barh(names, rates, color=colors)
    for y, (rate, r) in enumerate(zip(rates, runs)):
        ax.text(rate, y, f" {rate:.2f}M  (logloss {r['logloss']:.4f})", va="center", fontsize=8)
    ax.set_xlabel("train rows/s (millions), read + hash + learn, one pass")
    ax.set_xlim(0, max(rates) * 1.6)
    ax.set_title(f"{peers['rows']:,} Criteo-like rows, 2^{peers['bits']} slots\n{peers['date']}, {peers['machine']}",
                 fontsize=9)
    if scale:
        ax = axes[0][1]
        threads = sorted(int(t) for t in scale["threads"])
        ax.plot(threads, [scale["threads"][str(t)]["rows_per_second"] / 1e6 for t in threads], "o-")
        ax.set_xlabel("Hogwild threads (the other cores read and hash)")
        ax.set_ylabel("train rows/s (millions)")
        ax.set_xticks(threads)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.set_title(f"fastada end to end\n{scale['date']}, {scale['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
