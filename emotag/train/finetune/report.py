"""The report of a fine-tuning run: eval_report.json / .md, the confusion matrix plot, the model card,
and the progress display while training.

The report puts the result beside its baselines, in one table: the majority class, the base model's
zero-shot reading of the user's dev texts (when the labels map onto its heads), the linear head on
frozen features, and the fine-tuned network; the one chosen is marked. Per-class recall and the
confusion matrix show what class imbalance did.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emotag.model.config import EmotagConfig
from emotag.train.finetune.data import CLASS_WEIGHT_CLIP

log = logging.getLogger("emotag.finetune")

REPORT_JSON, REPORT_MD, CONFUSION_PNG = "eval_report.json", "eval_report.md", "confusion_matrix.png"
ZERO_SHOT_SCORE = "zero-shot polarity_score"  # the regression baseline's candidate name


def _cjk_font(names: Sequence[str]) -> str | None:
    """A font that can draw every character of `names`, or None (plots then use ASCII stand-ins)."""
    needed = {ord(c) for n in names for c in n if ord(c) > 127}
    if not needed:
        return "DejaVu Sans"
    from matplotlib import font_manager, ft2font

    preferred = ("Noto Sans CJK", "Noto Sans SC", "Source Han Sans", "WenQuanYi", "SimHei", "Microsoft YaHei",
                 "PingFang", "Heiti", "AR PL", "Droid Sans Fallback")
    fonts = sorted(font_manager.fontManager.ttflist, key=lambda f: not any(f.name.startswith(p) for p in preferred))
    for f in fonts:
        if "last resort" in f.name.lower():  # claims every code point, draws a box for each
            continue
        try:
            if needed <= set(ft2font.FT2Font(f.fname).get_charmap()):
                return f.name
        except Exception:  # noqa: BLE001,S112 - an unreadable font file is just not a candidate
            continue
    return None


def confusion_png(path: Path, matrix: list, labels: Sequence[str], multi_label: bool, title: str) -> dict[str, str]:
    """Draw the confusion matrix (or one 2x2 panel per label for multi-label); returns ASCII stand-ins used.

    Label names may be Chinese: a CJK-capable font is looked up, and without one the axes show L0, L1 ...
    (the mapping is returned and written into eval_report.md).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    font = _cjk_font(list(labels))
    standins = {} if font else {f"L{i}": lab for i, lab in enumerate(labels)}
    shown = list(labels) if font else list(standins)
    rc = {"font.family": [font, "DejaVu Sans"]} if font else {}  # fallback list: digits, Latin
    with plt.rc_context(rc):
        if multi_label:
            k = len(shown)
            cols = min(4, k)
            rows = math.ceil(k / cols)
            fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
            for a in axes.ravel()[k:]:
                a.axis("off")
            for i, name in enumerate(shown):
                ax = axes.ravel()[i]
                cm = np.asarray(matrix[i])
                ax.imshow(cm, cmap="Blues")
                for (r, c), v in np.ndenumerate(cm):
                    ax.text(c, r, str(v), ha="center", va="center", color="black")
                ax.set_xticks([0, 1], ["pred 0", "pred 1"])
                ax.set_yticks([0, 1], ["gold 0", "gold 1"])
                ax.set_title(name)
        else:
            cm = np.asarray(matrix)
            size = max(4.0, 0.6 * len(shown) + 2)
            fig, ax = plt.subplots(figsize=(size + 1, size))
            im = ax.imshow(cm, cmap="Blues")
            fig.colorbar(im, ax=ax, fraction=0.046)
            hi = cm.max() if cm.size else 0
            for (r, c), v in np.ndenumerate(cm):
                ax.text(c, r, str(v), ha="center", va="center", color="white" if v > hi / 2 else "black")
            ax.set_xticks(range(len(shown)), shown, rotation=45, ha="right")
            ax.set_yticks(range(len(shown)), shown)
            ax.set_xlabel("predicted")
            ax.set_ylabel("gold")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return standins


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_report(out: Path, report: dict[str, Any], after_detail: dict[str, Any], multi_label: bool) -> list[Path]:
    """eval_report.json, eval_report.md and confusion_matrix.png next to the model (regression: the two
    reports, with Pearson r and MAE instead of classes)."""
    if report["task"] == "regression":
        return _regression_report(out, report)
    labels = after_detail["confusion_labels"]
    standins = confusion_png(out / CONFUSION_PNG, after_detail["confusion"], labels, multi_label,
                             f"{report['task']} on dev (n={after_detail['n']})")
    report = {**report, "per_class": after_detail["per_class"], "confusion_matrix": {
        "labels": labels, "matrix": after_detail["confusion"], "png": CONFUSION_PNG, "png_label_standins": standins}}
    (out / REPORT_JSON).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    lines = _header(out, report, f"- task: **{report['task']}**, labels: {', '.join(report['labels'])}"
                                 f"{' (multi-label)' if multi_label else ''}")
    if report.get("starts_from"):
        lines += ["The labels map onto the base model's own outputs, and the head started from them: "
                  + ", ".join(f"{k} = {v}" for k, v in report["starts_from"].items()) + ".", ""]
    lines += ["## Dev metrics (texts, as `emotag eval` scores them)", ""]
    cands = report["candidates"]
    keys = [k for k in report["dev_after"] if k != "n"]
    lines += ["| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, m in cands.items():
        mark = " (kept)" if name == report["chosen"] else ""
        lines.append(f"| {name}{mark} | " + " | ".join(_fmt(m.get(k, "-")) if m else "-" for k in keys) + " |")
    lines.append("| final model, as `emotag eval` measures it | "
                 + " | ".join(_fmt(report["dev_after"][k]) for k in keys) + " |")
    if "zero-shot" not in cands:
        lines += ["", "The labels do not map onto the base model's heads, so there is no zero-shot score."]
    lines += ["", "## Per class (final model, dev)", "", "| label | precision | recall | F1 | support |",
              "|---|---|---|---|---|"]
    for lab, r in report["per_class"].items():
        lines.append(f"| {lab} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {int(r['support'])} |")
    lines += ["", "Confusion matrix (rows gold, columns predicted)" if not multi_label else
              "Confusion per label ([[tn, fp], [fn, tp]])", ""]
    if multi_label:
        lines += [f"- {lab}: {m}" for lab, m in zip(labels, after_detail["confusion"], strict=True)]
    else:
        lines += ["| gold \\ pred | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        lines += [f"| {lab} | " + " | ".join(str(v) for v in row) + " |"
                  for lab, row in zip(labels, after_detail["confusion"], strict=True)]
    lines += ["", f"![confusion matrix]({CONFUSION_PNG})", ""]
    if standins:
        lines += ["No CJK font was found for the plot; its axes use: "
                  + ", ".join(f"{k} = {v}" for k, v in standins.items()), ""]
    ece = report["calibration"]
    lines += ["## Calibration", "",
              f"Expected calibration error of the {report['task']} head on dev: "
              f"{ece['ece_before']:.4f} before, {ece['ece_after']:.4f} after temperature scaling "
              f"(T = {ece['temperature']:.3f}, stored in config.json)."
              + (" Multi-label outputs are sigmoids and are not temperature-scaled." if multi_label else ""), ""]
    if report.get("kept_heads"):
        lines += ["## Heads kept from the base model", "",
                  "Not supervised by this data; anchored to the base model's own predictions while training.", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in report["kept_heads"].items()]
        lines.append("")
    if report["data"].get("class_weights"):
        lines += ["## Class weights", "", "Inverse-frequency loss weights (clipped to "
                  f"{CLASS_WEIGHT_CLIP[0]}..{CLASS_WEIGHT_CLIP[1]}, mean 1): "
                  + ", ".join(f"{k or '(none)'} {v:.2f}" for k, v in report["data"]["class_weights"].items()), ""]
    st = report["linear_head"].get("stacked")
    if st:
        joint = max(v for k, v in report["linear_head"]["cv_macro_f1"].items() if k != "start")
        lines += ["## Linear head", "",
                  "Every label is new to the base, so the head on frozen features and the lexical expert's columns "
                  "(a char TF-IDF + logistic regression over the model's n-gram ids) were also fitted apart and "
                  f"their logits mixed: best by 3-fold cross-validation L2 {st['l2']:g}, C {st['C']:g}, expert share "
                  f"{st['mix']:.1f} (macro-F1 {st['cv']:.4f}); "
                  + ("kept, above the joint fit's " if st["kept"] else "not kept, the joint fit's is ")
                  + f"{joint:.4f}.", ""]
    lines += ["The dev split also chose the linear head's L2 strength, the fine-tuning's early stop and which "
              "candidate is kept, so its numbers are slightly optimistic; a separate test file is the honest check "
              "(`emotag eval MODEL test.csv`).", ""]
    (out / REPORT_MD).write_text("\n".join(lines), encoding="utf-8")
    return [out / REPORT_JSON, out / REPORT_MD, out / CONFUSION_PNG]


def _header(out: Path, report: dict[str, Any], what: str) -> list[str]:
    data, tr = report["data"], report["training"]
    return [f"# Fine-tuning report: {out.name}", "", what,
            f"- base model: `{report['base_model']}`",
            f"- data: {data['train_rows']} training rows from `{data['train_path']}`, "
            f"{data['dev_rows']} dev rows ({data['dev_source']})"
            f"{', skipped ' + str(data['skipped_rows']) + ' rows without text/label' if data['skipped_rows'] else ''}",
            f"- training: linear head {tr['linear_head_seconds']:.1f} s, then {tr['steps']} fine-tuning steps in "
            f"{tr['minutes'] * 60:.1f} s; {tr['minutes_total'] * 60:.0f} s in all, seed {tr['seed']}",
            f"- kept: **{report['chosen']}**" + (f" ({report['verdict']})" if report.get("verdict") else ""),
            *_calibration_line(report.get("int8_calibration")), ""]


def _calibration_line(c: dict[str, Any] | None) -> list[str]:
    """What the int8 file's ranges were measured on: a user reading the report of a small run learns that
    emotag's sample texts were added to theirs (too few texts set ranges that clip others)."""
    if not c or "texts" not in c:
        return ["- int8 ONNX: copied from the base model"] if c else []
    extra = f", topped up with {c['sample_texts']} of emotag's sample texts" if c["sample_texts"] else ""
    return [f"- int8 ONNX calibrated on {c['texts']} texts: {c['training_texts']} training texts{extra}"]


def _regression_report(out: Path, report: dict[str, Any]) -> list[Path]:
    """eval_report.json / .md of a regression run: every candidate's Pearson r and MAE on dev."""
    (out / REPORT_JSON).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    lo, hi = report["scale"]
    name = report["labels"][0]
    lines = _header(out, report, f"- task: **regression** on the scale {lo:g}..{hi:g}; records carry the "
                                 f"prediction as `score` (label `{name}`)")
    keys = ["pearson_r", "mae", "rmse"]
    lines += ["## Dev metrics (texts, as `emotag eval` scores them)", "",
              "| | Pearson r | MAE | RMSE |", "|---|---|---|---|"]
    for cand, m in report["candidates"].items():
        mark = " (kept)" if cand == report["chosen"] else ""
        label = {ZERO_SHOT_SCORE: "zero-shot: polarity_score, linear map (fit on training rows)",
                 "training mean": "predict the training mean",
                 "polarity start": "start: the polarity head, logistic map (fit on training rows)"}.get(cand, cand)
        lines.append(f"| {label}{mark} | " + " | ".join(_fmt(m.get(k, "-")) for k in keys) + " |")
    lines.append("| final model, as `emotag eval` measures it | "
                 + " | ".join(_fmt(report["dev_after"][k]) for k in keys) + " |")
    zs = report["candidates"].get(ZERO_SHOT_SCORE)
    lines += [""]
    if report.get("starts_from"):
        lines += ["The read-out started from the base model's polarity head (sigmoid of a line in its positive - "
                  "negative logit, fitted on the training rows); the linear head's cross-validation kept that start"
                  if report["linear_head"]["l2"] is None else
                  "The read-out started from the base model's polarity head (sigmoid of a line in its positive - "
                  "negative logit, fitted on the training rows), and the linear head was pulled toward it.", ""]
    if zs:
        lines += [f"The base model's own `polarity_score` has Pearson r {zs['polarity_score_r']:.4f} with the dev "
                  "values (the linear map keeps |r| and puts it on your scale).", ""]
    else:
        lines += ["The base model has no polarity head, so there is no zero-shot baseline.", ""]
    lines += [f"The predict-the-mean row always answers {report['majority']['label']} (the training mean); its "
              "Pearson r is 0 by definition.", "",
              "The dev split also chose the linear head's L2 strength, the fine-tuning's early stop and which "
              "candidate is kept, so its numbers are slightly optimistic; a separate test file is the honest check "
              "(`emotag eval MODEL test.csv`).", ""]
    (out / REPORT_MD).write_text("\n".join(lines), encoding="utf-8")
    return [out / REPORT_JSON, out / REPORT_MD]


def model_card(out: Path, cfg: EmotagConfig, report: dict[str, Any]) -> Path:
    """MODEL_CARD.md of the fine-tuned model: where it came from and its dev numbers."""
    after = report["dev_after"]
    head = {"polarity": "polarity", "regression": "regression read-out (the record's `score`)"}.get(
        report["task"], "emotion")
    text = f"""# {cfg.name}

Fine-tuned with `emotag train` from `{report['base_model']}` on `{Path(report['data']['train_path']).name}`
({report['data']['train_rows']} rows; task `{report['task']}`; kept: {report['chosen']}).

- emotion labels: {', '.join(cfg.emotion_labels)}{' (multi-label, sigmoid)' if cfg.multi_label else ''}
- polarity labels: {', '.join(cfg.polarity_labels) or 'none (this model has no polarity head)'}
- trained head: {head}; dev {', '.join(f'{k} {_fmt(v)}' for k, v in after.items() if k != 'n')} (n={after['n']})
- temperature: {cfg.temperature}

Files: config.json, tokenizer.json, model.safetensors, model.onnx, model.int8.onnx; the evaluation is in
{REPORT_MD}. Score with `emotag score INPUT --model {out}`.
"""
    path = out / "MODEL_CARD.md"
    path.write_text(text, encoding="utf-8")
    return path


def progress_display(enabled: bool) -> tuple[Callable[[int, int, dict[str, float]], None], Callable[[], None]]:
    """A rich bar on a terminal, periodic log lines elsewhere (CI logs, notebooks, pipes)."""
    if enabled and sys.stderr.isatty() and not os.environ.get("CI"):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        prog = Progress(TextColumn("fine-tuning"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), transient=True)
        task = prog.add_task("train", total=None, loss="-")
        prog.start()

        def bar(step: int, total: int, stats: dict[str, float]) -> None:
            prog.update(task, completed=step, total=total, loss=f"{stats.get('loss', float('nan')):.3f}")

        return bar, prog.stop
    last = [time.time()]

    def lines(step: int, total: int, stats: dict[str, float]) -> None:
        if step == total or time.time() - last[0] > 30:
            last[0] = time.time()
            log.info("step %d/%d loss %.4f", step, total, stats.get("loss", float("nan")))

    return lines, lambda: None


