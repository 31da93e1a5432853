"""Merge results files that evaluated disjoint quality points of one run into one file.

    python benchmarks/merge_points.py PART.json PART.json ... -o benchmarks/results/OUT.json

On two cores a 4-quality `licq ptq` / `licq qat` run is faster as two 1-thread processes of two
qualities each. Every quality is calibrated and evaluated independently (same seed, same data), so
the parts hold exactly the points one 4-quality run would write. This script checks that the parts
agree on everything but their qualities (architecture, setting, method and its configuration,
calibration, images, threads, code commit), concatenates the per-quality lists in quality order,
recomputes the mean size ratios, and records each part's own command and provenance under
``licq.merged_from`` (``python -m benchmarks run`` re-runs those commands, then this one).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from licq._provenance import provenance  # noqa: E402
from licq.eval.results import read_results, write_results  # noqa: E402

#: licq fields with one entry per quality point, concatenated
PER_POINT = ("points", "model_bytes", "fp32_bytes", "calibration_seconds", "ptq_seconds")
#: licq fields that are means over the quality points, recomputed as the points-weighted mean
MEANS = ("ratio", "weight_ratio", "quantized_layers_ratio")
#: licq fields describing one part's own invocation (kept per part, under merged_from)
OWN = ("command", "provenance")
#: every other licq field (architecture, setting, bit config, method and its configuration,
#: calibration, images, threads, commit, ...) must be the same in every part: a part differing
#: in one is another experiment


class MergeError(ValueError):
    pass


def merge(parts: list[dict], command: str) -> dict:
    """One results object from ``parts`` (each a results object of some quality points)."""
    if len(parts) < 2:
        raise MergeError("give at least two parts")
    first = parts[0]["licq"]
    keys = set(first)
    shared = sorted(keys - set(PER_POINT) - set(MEANS) - set(OWN))
    for p in parts[1:]:
        lq = p["licq"]
        if set(lq) != keys:
            raise MergeError(f"the parts record different fields: {sorted(keys ^ set(lq))}")
        for k in shared:
            if lq[k] != first[k]:
                raise MergeError(f"the parts differ in licq.{k}: {first[k]!r} vs {lq[k]!r}")
        if set(p["results"]) != set(parts[0]["results"]):
            raise MergeError("the parts report different metrics")
    # (quality, part index, point index), sorted by quality
    order = sorted((pt["quality"], i, j) for i, p in enumerate(parts)
                   for j, pt in enumerate(p["licq"]["points"]))
    qualities = [q for q, _, _ in order]
    if len(set(qualities)) != len(qualities):
        raise MergeError(f"a quality appears in more than one part: {qualities}")
    for i, p in enumerate(parts):
        n = len(p["licq"]["points"])
        if any(len(v) != n for v in p["results"].values()):
            raise MergeError(f"part {i}: results lists and licq.points differ in length")

    def gather(get) -> list:
        return [get(parts[i])[j] for _, i, j in order]

    out_licq = {k: first[k] for k in first if k not in OWN}
    for k in PER_POINT:
        if k in first:
            out_licq[k] = gather(lambda p, k=k: p["licq"][k])
    n_total = len(order)
    for k in MEANS:
        if k in first:
            out_licq[k] = sum(p["licq"][k] * len(p["licq"]["points"]) for p in parts) / n_total
    out_licq["command"] = command  # its commit is the parts' (shared): the code of every point
    out_licq["merged_from"] = [{"command": p["licq"]["command"],
                                "qualities": [pt["quality"] for pt in p["licq"]["points"]],
                                "provenance": p["licq"].get("provenance")} for p in parts]
    out_licq["provenance"] = provenance()
    descriptions = {p.get("description", "") for p in parts}
    return {"name": parts[0]["name"],
            "description": " | ".join(sorted(descriptions)) + (
                f" (merged from {len(parts)} runs of disjoint qualities)"),
            "results": {k: gather(lambda p, k=k: p["results"][k]) for k in parts[0]["results"]},
            "licq": out_licq}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="+", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    command = shlex.join(["benchmarks/merge_points.py", *map(str, args.parts), "-o",
                          str(args.output)])
    try:
        obj = merge([read_results(p) for p in args.parts], command)
    except MergeError as e:
        print(f"merge_points: {e}", file=sys.stderr)
        return 2
    write_results(obj, args.output)
    qs = [pt["quality"] for pt in obj["licq"]["points"]]
    print(f"wrote {args.output}: qualities {qs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
