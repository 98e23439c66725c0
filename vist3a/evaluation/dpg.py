"""DPG-bench score of generated scenes, as the official `evaluation/gen_eval/dpg_evaluation.py` computes it.

Question set: the DPG-bench CSV the official script reads (`--csv`, columns `item_id`, `text`, `proposition_id`,
`tuple`, `dependency`, `question_natural_language`; rows of one item consecutive). It is not shipped here: point
`--dpg-csv` at your copy. Rows are grouped the official way: consecutive rows with the same `item_id` form one
question set, stored under the row's `text` (the prompt); a later group with the same text replaces an earlier one.

Per sample (8 frames of `gs.mp4`, as for the other metrics), for each frame every question is asked; an answer
counts 1 only if it is exactly ``"Yes"``. Then, in question order, a question whose parent (any non-zero id in
its `dependency`) currently scores 0 is set to 0 (so zeros propagate down chains); the frame's score is the mean,
the sample's the mean over frames. A sample whose prompt has no question set is skipped with a warning; one whose
dependency names an unknown question, or whose questions fail in any other way, is skipped as failed (both
as officially, with a line saying so). Categories use the *last* frame's
answers before the dependency rule (the official ``qid2scores_orig``): L2 = the tuple's text before ``(``, L1 = L2's
part before ``-``. Reported scores are means x 100.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import VIST3AError

COLUMNS = ("item_id", "text", "proposition_id", "tuple", "dependency", "question_natural_language")


@dataclass
class QuestionSet:
    tuples: dict[int, str] = field(default_factory=dict)
    dependencies: dict[int, list[int]] = field(default_factory=dict)
    questions: dict[int, str] = field(default_factory=dict)


def read_questions(path: str | Path) -> dict[str, QuestionSet]:
    """prompt -> its questions, grouped as the official `prepare_dpg_data` groups them."""
    p = Path(path)
    if not p.is_file():
        raise VIST3AError(f"--dpg-csv {p} does not exist; give the DPG-bench question CSV the official "
                          "dpg_evaluation.py reads (--csv)")
    try:
        with p.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise VIST3AError(f"--dpg-csv {p} cannot be read as CSV ({exc})") from None
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise VIST3AError(f"--dpg-csv {p} is not the DPG-bench question CSV: "
                          + (f"no column {missing[0]!r}" if rows else "no rows") + f" (needs {', '.join(COLUMNS)})")
    out: dict[str, QuestionSet] = {}
    previous = None
    for n, row in enumerate(rows, 2):
        try:
            qid = int(row["proposition_id"])
            deps = [int(d.strip()) for d in row["dependency"].split(",")]
        except (TypeError, ValueError):
            raise VIST3AError(f"--dpg-csv {p} line {n}: proposition_id and dependency must be integers "
                              f"(got {row['proposition_id']!r}, {row['dependency']!r})") from None
        if row["item_id"] != previous:
            out[row["text"]] = QuestionSet()
        qs = out[row["text"]]
        qs.tuples[qid], qs.dependencies[qid], qs.questions[qid] = row["tuple"], deps, row["question_natural_language"]
        previous = row["item_id"]
    return out


def score_sample(qs: QuestionSet, images: list, vqa: Callable[[object, str], str]) -> tuple[float, dict[int, float]]:
    """-> (sample score in [0, 1], last frame's answers before the dependency rule). KeyError for a
    dependency on a question that does not exist (the official loop then skips the sample)."""
    scores: dict[int, float] = {}
    original: dict[int, float] = {}
    per_frame = []
    for img in images:
        for qid, question in qs.questions.items():
            scores[qid] = float(vqa(img, question) == "Yes")
        original = dict(scores)
        for qid, parents in qs.dependencies.items():
            if any(scores[p] == 0 for p in parents if p != 0):
                scores[qid] = 0
        per_frame.append(sum(scores.values()) / len(scores))
    return sum(per_frame) / len(per_frame), original


class DpgBench:
    """Scores samples one by one (``__call__`` -> {"dpg_score": 0..1 or None}); ``summary()`` gives the
    official report: the mean and the L1/L2 category means, all x 100."""

    key = "dpg_score"

    def __init__(self, questions: dict[str, QuestionSet], vqa: Callable[[object, str], str],
                 log: Callable[[str], None] = print):
        self.questions, self.vqa, self.log = questions, vqa, log
        self.scores: list[float] = []
        self.categories: dict[str, list[float]] = {}

    def __call__(self, images: list, prompt: str) -> dict:
        qs = self.questions.get(prompt)
        if qs is None:
            self.log(f"dpg: prompt has no question set, skipped: {prompt[:80]}")
            return {self.key: None}
        try:
            score, answers = score_sample(qs, images, self.vqa)
        except Exception as exc:  # noqa: BLE001 - the official loop skips a sample on any failure (and says so)
            self.log(f"dpg: sample {prompt[:80]!r} failed ({type(exc).__name__}: {exc}); skipped, as officially")
            return {self.key: None}
        self.scores.append(score)
        for qid, value in answers.items():
            self.categories.setdefault(qs.tuples[qid].split("(")[0].strip(), []).append(value)
        return {self.key: score}

    def summary(self) -> Optional[dict]:
        if not self.scores:
            return None
        l1: dict[str, list[float]] = {}
        for cat in sorted(self.categories):
            l1.setdefault(cat.split("-")[0].strip(), []).extend(self.categories[cat])
        return {"score": float(np.mean(self.scores)) * 100, "samples": len(self.scores),
                "l1": {k: float(np.mean(v)) * 100 for k, v in l1.items()},
                "l2": {k: float(np.mean(self.categories[k])) * 100 for k in sorted(self.categories)}}


def official_report(summary: dict, folder: str, res_path: str) -> str:
    """The text block the official script appends to its results file (L1 categories here in sorted order;
    the official prints them in Python set order, which changes from run to run)."""
    out = "L1 category scores:\n" + "".join(f"\t{k}: {v}\n" for k, v in summary["l1"].items())
    out += "L2 category scores:\n" + "".join(f"\t{k}: {v}\n" for k, v in summary["l2"].items())
    return out + f"Folder path: {folder}\nSave results to: {res_path}\nDPG-Bench score: {summary['score']}\n"
