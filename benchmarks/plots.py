"""PNG plots of W1 against the number of worker processes and of W2's
latency distribution (matplotlib: ``pip install 'zasync[bench]'``)."""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.results import Results


def available() -> str | None:
    try:
        import matplotlib  # noqa: F401, PLC0415 - optional: the bench extra
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no plots"
    return None


def write(results: Results, directory: Path, prefix: str) -> list[Path]:
    import matplotlib  # noqa: PLC0415 - optional: the bench extra

    matplotlib.use("Agg")
    written = []
    w1 = results.extra.get("w1") or {}
    if w1:
        zeo_alone = results.extra.get("zeo_clients") or {}
        written.append(_w1(w1, zeo_alone, directory / f"{prefix}w1_workers.png"))
    w2 = results.extra.get("w2") or {}
    if w2:
        written.append(_w2(w2, directory / f"{prefix}w2_latency.png"))
    return written


def _w1(w1: dict, zeo_alone: dict, path: Path) -> Path:
    """W1's jobs/s against the worker processes; beside it, on an axis of
    its own, ZEO's commits/s alone against its client processes (the
    storage figures of the same run), which bound it."""
    import matplotlib.pyplot as plt  # noqa: PLC0415 - optional: the bench extra

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    zeo = [
        (n, w1[letter])
        for n, letter in ((1, "b"), (2, "c"), (4, "e"))
        if w1.get(letter)
    ]
    if zeo:
        xs = [n for n, _ in zeo]
        med = [statistics.median(s) for _, s in zeo]
        low = [m - min(s) for m, (_, s) in zip(med, zeo, strict=True)]
        high = [max(s) - m for m, (_, s) in zip(med, zeo, strict=True)]
        ax.errorbar(xs, med, yerr=[low, high], marker="o", capsize=4, label="ZEO")
    for letter, name, marker in (
        ("a", "FileStorage (in process)", "s"),
        ("d", "RelStorage", "^"),
    ):
        samples = w1.get(letter)
        if samples:
            m = statistics.median(samples)
            ax.errorbar(
                [1],
                [m],
                yerr=[[m - min(samples)], [max(samples) - m]],
                marker=marker,
                capsize=4,
                linestyle="none",
                label=name,
            )
    for n, bound, text, side in (
        (1, 400, "ZEO 1: 400", 1),
        (4, 1000, "ZEO 4: 1,000", -1),
    ):
        ax.plot([n], [bound], marker="_", markersize=18, color="grey")
        ax.annotate(
            f"target {text}",
            (n, bound),
            textcoords="offset points",
            xytext=(10 * side, -3),
            ha="left" if side > 0 else "right",
            fontsize=7,
            color="grey",
        )
    ax.set_xlabel("worker processes (ZEO alone: client processes)")
    ax.set_ylabel("jobs per second (median, min-max)")
    ax.set_xticks([1, 2, 4])
    ax.set_ylim(bottom=0)
    ax.set_title("W1 throughput, 4 threads per worker")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    alone = sorted((int(n), s) for n, s in zeo_alone.items() if s)
    if alone:
        other = ax.twinx()
        line = other.plot(
            [n for n, _ in alone],
            [statistics.median(s) for _, s in alone],
            marker="x",
            linestyle="--",
            color="grey",
            label="ZEO alone, all clients (right axis)",
        )
        other.set_ylabel("ZEO alone: commits per second, all clients (median)")
        other.set_ylim(bottom=0)
        handles += line
        labels.append(line[0].get_label())
    ax.legend(handles, labels, fontsize=8, loc="lower center")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _w2(w2: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt  # noqa: PLC0415 - optional: the bench extra

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for label, values in w2.items():
        if not values:
            continue
        ordered = sorted(values)
        n = len(ordered)
        ax.plot(ordered, [(i + 1) / n for i in range(n)], label=label)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("latency, start stamp - producer's commit (ms)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title("W2 latency distribution (all runs)")
    for q in (0.5, 0.99):
        ax.axhline(q, color="grey", linewidth=0.6, linestyle=":")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
