"""The ``avmaster`` command: train, eval, probe, score, extract, demo, predict, explain, config."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

USAGE = """avmaster <command> [options]

commands:
  train    [--config FILE] [data=NAME] [ablation=NAME] [key=value ...]   train AV-Master
  eval     ckpt=FILE [data=NAME] [key=value ...]                 per-type table of a checkpoint
  probe    ckpt=FILE [data=NAME] [--probes P1,P2] [key=value ...]   uses order, audio, vision?
  score    --predictions FILE --annotations FILE [...]            score a predictions file
  extract  --videos DIR --annotations FILE ... --out DIR         features to HDF5 (see --help)
  demo     [--out DIR] [--quick]                    synthetic data -> extract -> train -> eval
  predict  VIDEO "question" --ckpt FILE                       answer a question about a video
  explain  VIDEO "question" --ckpt FILE --out FILE.png   focus over time, modality preference
  config   [--config FILE] [data=NAME] [key=value ...]            print the resolved config
"""


def _config_args(argv: Sequence[str], prog: str) -> tuple[str | None, list[str]]:
    p = argparse.ArgumentParser(prog=f"avmaster {prog}",
                                description="Overrides are key=value (data=NAME and "
                                            "ablation=NAME load presets from configs/).")
    p.add_argument("--config", default=None, help="YAML file (default configs/avmaster.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value")
    a = p.parse_args(argv)
    return a.config, a.overrides


def cmd_train(argv: Sequence[str]) -> int:
    from avmaster.config import load_config
    from avmaster.training import train

    cfg = load_config(*_config_args(argv, "train"))
    result = train(cfg)
    print(f"best checkpoint: {result.best_ckpt}")
    return 0


def cmd_eval(argv: Sequence[str]) -> int:
    from avmaster.config import load_config
    from avmaster.training import evaluate

    cfg = load_config(*_config_args(argv, "eval"))
    evaluate(cfg)
    return 0


def cmd_probe(argv: Sequence[str]) -> int:
    from avmaster.config import ConfigError, load_config
    from avmaster.probe import PROBES, probe_checkpoint, summary

    p = argparse.ArgumentParser(prog="avmaster probe", description=(
        "Per-type accuracy of a checkpoint on the test split under controlled input changes "
        "(time reversed or shuffled, audio or visual swapped with another video's, silenced "
        "or blanked, question only), next to the unchanged input. Overrides are key=value."))
    p.add_argument("--config", default=None, help="YAML file (default configs/avmaster.yaml)")
    p.add_argument("--probes", default=",".join(PROBES), metavar="P1,P2",
                   help="comma-separated probes to run (default all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffles and swaps")
    p.add_argument("--per-template", action="store_true",
                   help="also one row per question template (accuracy under each probe)")
    p.add_argument("--out", default=None,
                   help="write OUT.json/.md/.png (default <run dir>/probe_<data>)")
    p.add_argument("overrides", nargs="*", help="key=value")
    a = p.parse_intermixed_args(argv)  # options may follow the key=value overrides
    cfg = load_config(a.config, a.overrides)
    try:
        report, files = probe_checkpoint(cfg, a.probes.split(","), a.seed, a.out,
                                         per_template=a.per_template)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    print(report.markdown())
    print(summary(report))
    print(f"written: {', '.join(str(f) for f in files.values())}")
    return 0


def cmd_config(argv: Sequence[str]) -> int:
    from omegaconf import OmegaConf

    from avmaster.config import load_config, to_dict

    cfg = load_config(*_config_args(argv, "config"))
    print(OmegaConf.to_yaml(to_dict(cfg)), end="")
    return 0


def cmd_score(argv: Sequence[str]) -> int:
    from pathlib import Path

    from avmaster.data.annotations import concat, ensure_head_tail, load_annotations
    from avmaster.data.tables import get_table
    from avmaster.data.vocab import AnswerVocab
    from avmaster.paths import resolve
    from avmaster.scoring import read_predictions, score

    p = argparse.ArgumentParser(prog="avmaster score", description=(
        "Score predictions (JSONL of question id -> answer, free text with <answer>X</answer> "
        "allowed) against annotations and print the per-type table."))
    p.add_argument("--predictions", required=True)
    p.add_argument("--annotations", required=True, nargs="+")
    p.add_argument("--table", default="music_avqa",
                   help="music_avqa | music_avqa_v2 | music_avqa_r | avqa")
    p.add_argument("--answers", default="answers/music_avqa.json",
                   help="answer vocabulary (JSON list); ignored for multiple choice")
    p.add_argument("--head-tail-ratio", type=float, default=1.2)
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    a = p.parse_args(argv)
    from avmaster.metrics import write_results

    sets = concat([load_annotations(f, "test") for f in a.annotations], "test")
    spec = get_table(a.table)
    records = sets.records
    if spec.head_tail:
        records = ensure_head_tail(records, a.head_tail_ratio)
    vocab = None if records[0].options else AnswerVocab.from_file(resolve(a.answers))
    report = score(read_predictions(a.predictions), records, spec, vocab)
    print(spec.markdown({Path(a.predictions).stem: report.accuracy}))
    print(report.summary(), file=sys.stderr)
    if a.out:
        write_results(a.out, spec, report.accuracy, report.counts, Path(a.predictions).stem)
    return 0


def _delegate(module: str) -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        return int(importlib.import_module(module).main(list(argv)) or 0)

    return run


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "probe": cmd_probe,
    "score": cmd_score,
    "config": cmd_config,
    "extract": _delegate("avmaster.extract.runner"),
    "demo": _delegate("avmaster.demo"),
    "predict": _delegate("avmaster.predict"),
    "explain": _delegate("avmaster.explain"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"avmaster: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Lightning prints through its own handler; propagating as well would print each line twice
    logging.getLogger("lightning").propagate = False
    logging.getLogger("avmaster").setLevel(logging.INFO)
    from avmaster.config import ConfigError
    from avmaster.data.annotations import AnnotationError
    from avmaster.data.store import FeatureStoreError
    from avmaster.scoring import PredictionError

    try:
        return COMMANDS[command](rest)
    except (ConfigError, AnnotationError, FeatureStoreError, PredictionError,
            FileNotFoundError, FileExistsError) as e:
        print(f"avmaster {command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
