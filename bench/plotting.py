"""``bench/plot``: per-stage times of the one-tenant create, before and after, as a PNG.

Reads every ``bench/results/*.json`` (``before`` first, then ``after``, then the
others) and writes ``bench/results/stages.png``: on the left one group of
horizontal bars per stage (one bar per label, plus the kubectl script of the
newest file), on the right the same times stacked into one bar per run.
"""

import json
import os
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
STAGES = ("starting", "namespace_created", "gitlab_pulled", "k8s_applied", "resources_configured",
          "disk_configured", "gpu_configured", "rollout_completed", "tenant_synced", "completed", "failed", "tail")
NAMES = {"starting": "start -> starting\n(startup, stage 0)", "tail": "tail\n(last report -> exit)"}


def load(results_dir=RESULTS_DIR):
    found = {}
    for name in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
        if name.endswith(".json"):
            with open(os.path.join(results_dir, name)) as handle:
                try:
                    found[name[:-5]] = json.load(handle)
                except ValueError:
                    continue
    order = [label for label in ("before", "after") if label in found]
    order += sorted(label for label in found if label not in order)
    return [(label, found[label]) for label in order]


def series(results):
    """``[(name, {stage: seconds})]``: each label's create, then the kubectl script of the newest label."""
    out, kubectl = [], None
    for label, data in results:
        stages = (data.get("create") or {}).get("stages_median_s")
        if stages:
            total = (data.get("create") or {}).get("median_wall_s")
            out.append(("%s (%s, %.1fs)" % (label, data.get("meta", {}).get("commit", "")[:7], total or 0), stages))
        kube = ((data.get("kubectl") or {}).get("1") or {})
        if kube.get("stages_median_s"):
            kubectl = ("kubectl script (%.1fs)" % kube.get("wall_s", 0), kube["stages_median_s"])
    if kubectl:
        out.append(kubectl)
    return out


def plot(results_dir=RESULTS_DIR, out_path=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_path = out_path or os.path.join(results_dir, "stages.png")
    data = series(load(results_dir))
    if not data:
        raise RuntimeError("no results with a one-tenant create in %s; run bench/run first" % results_dir)
    stages = [s for s in STAGES if any(s in values for _n, values in data)]
    colors = plt.get_cmap("tab10").colors
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, max(6.0, 0.3 * len(stages) * len(data) + 2.5)),
                                      gridspec_kw={"width_ratios": [3, 2]})
    height = 0.8 / len(data)
    for i, (name, values) in enumerate(data):
        ys = [n + i * height for n in range(len(stages))]
        xs = [values.get(s, 0) for s in stages]
        bars = left.barh(ys, xs, height=height, label=name, color=colors[i % len(colors)])
        left.bar_label(bars, labels=["%.2f" % x if x else "" for x in xs], fontsize=7, padding=2)
    left.set_yticks([n + 0.4 - height / 2 for n in range(len(stages))])
    left.set_yticklabels([NAMES.get(s, s) for s in stages], fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("seconds (median of the one-tenant creates)")
    left.set_title("Per stage: time from the previous report to this one")
    left.legend(fontsize=8, loc="lower right")
    left.grid(axis="x", alpha=0.3)

    stage_colors = plt.get_cmap("tab20").colors
    for i, (_name, values) in enumerate(data):
        start = 0.0
        for j, stage in enumerate(stages):
            width = values.get(stage, 0)
            if width:
                right.barh(i, width, left=start, height=0.5, color=stage_colors[j % len(stage_colors)],
                           label=NAMES.get(stage, stage).replace("\n", " ") if i == 0 else None,
                           edgecolor="white", linewidth=0.5)
            start += width
        right.text(start, i, " %.1fs" % start, va="center", fontsize=8)
    right.set_yticks(range(len(data)))
    right.set_yticklabels([name for name, _v in data], fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("seconds")
    right.set_title("Stacked: one create")
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    right.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nusage: bench/plot [RESULTS_DIR]")
        return 0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("bench/plot needs matplotlib: %s -m pip install -r %s" % (
            sys.executable, os.path.join(BENCH_DIR, "requirements.txt")))
        return 2
    try:
        print(plot(argv[0] if argv else RESULTS_DIR))
    except RuntimeError as exc:
        print("bench/plot: %s" % exc)
        return 1
    return 0
