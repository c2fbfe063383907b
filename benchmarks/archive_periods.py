"""Which ISIC archive period each class's images come from: can the data hold out a source?

    .venv/bin/python -m benchmarks.archive_periods runs/benchmarks/cv-lite0/fold-0

Reads a run's data_index.csv (every file of the dataset, its label and whether the audit kept it)
and counts each class's images by ISIC image id: ids below 24306 were published before HAM10000
(the ISIC 2016-2017 challenge era), ids 24306-34320 are HAM10000 (ISIC 2018). A hold-out by archive
period needs classes present in both periods; a class found in one period only lets a model learn
the period's look (camera, lighting, framing) as if it were the disease. Records
benchmarks/results/archive_periods.{md,json}.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

from benchmarks.common import markdown_table, record, write_table
from edgelesion.fileio import read_csv
from edgelesion.train.runs import RunDir

HAM10000_FIRST_ID = 24306
PERIODS = ("before HAM10000 (ISIC 2016-2017)", "HAM10000 (ISIC 2018)", "no ISIC id")


def period(path: str) -> str:
    """The archive period of an image from its ISIC id, or 'no ISIC id'."""
    found = re.search(r"ISIC_(\d+)", path)
    if not found:
        return PERIODS[2]
    return PERIODS[0] if int(found.group(1)) < HAM10000_FIRST_ID else PERIODS[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a training run on the dataset (its data_index.csv)")
    rows = read_csv(RunDir(parser.parse_args().run).data_index)
    counts = {status: Counter((r["label"], period(r["path"])) for r in rows if status == "all" or r["status"] == status)
              for status in ("all", "kept")}
    classes = sorted({r["label"] for r in rows})
    both = [c for c in classes if all(counts["kept"][(c, p)] for p in PERIODS[:2])]
    record("archive_periods", {"periods": PERIODS, "ham10000_first_id": HAM10000_FIRST_ID,
                               "counts": {status: {f"{c} | {p}": n for (c, p), n in sorted(counter.items())}
                                          for status, counter in counts.items()},
                               "classes_in_both_periods_after_audit": both})
    shown = [p for p in PERIODS if any(counts["all"][(c, p)] for c in classes)]
    lines = markdown_table(["class", *[f"{p}: all / kept by the audit" for p in shown]],
                           [[c, *[f"{counts['all'][(c, p)]} / {counts['kept'][(c, p)]}" for p in shown]]
                            for c in classes], "l" + "r" * len(shown))
    lines += ["", f"Classes with images from both periods after the audit: {', '.join(both) or 'none'}."]
    write_table("archive_periods", lines)


if __name__ == "__main__":
    main()
