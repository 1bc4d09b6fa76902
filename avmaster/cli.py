"""The ``avmaster`` command: train, eval, probe, score, extract, demo, predict, explain, config."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

USAGE = """avmaster <command> [options]

commands:
  train    [--config FILE] [--seeds N] [data=NAME] [ablation=NAME] [key=value ...]
                                               train AV-Master (N seeds: one run each + mean)
  eval     ckpt=FILE|RUN [data=NAME] [variants=table12,table13,fig6] [key=value ...]
              per-type table of a checkpoint or run(s) (one per inference-time variant)
  probe    ckpt=FILE|RUN [data=NAME] [--probes P1,P2] [key=value ...]    uses order, audio, vision?
  score    --predictions FILE --annotations FILE [...]            score a predictions file
  compare  A B [--annotations FILE ...]    paired comparison of two predictions files or runs
  extract  --videos DIR --annotations FILE ... --out DIR         features to HDF5 (see --help)
  import-features --release NAME --npy DIR --out DIR    released .npy features into the store
  demo     [--out DIR] [--quick]                    synthetic data -> extract -> train -> eval
  predict  VIDEO "question" --ckpt FILE|RUN [--options A B C D]   answer a question about a video
  explain  VIDEO "question" --ckpt FILE|RUN --out FILE.png        seconds the answer depends on
  config   [--config FILE] [data=NAME] [key=value ...]            print the resolved config
"""


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"avmaster {prog}",
                                description="Overrides are key=value (data=NAME and "
                                            "ablation=NAME load presets from configs/).")
    p.add_argument("--config", default=None, help="YAML file (default configs/avmaster.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value")
    return p


def _config_args(argv: Sequence[str], prog: str) -> tuple[str | None, list[str]]:
    a = _parser(prog).parse_args(argv)
    return a.config, a.overrides


def cmd_train(argv: Sequence[str]) -> int:
    p = _parser("train")
    p.add_argument("--seeds", type=int, default=None,
                   help="train seeds 0..N-1 into <name>/seed<k> and write the aggregate "
                        "(mean +- std over seeds, pooled interval) as <name>/results_<data>")
    a = p.parse_args(argv)
    from avmaster.config import load_config
    from avmaster.training import train

    cfg = load_config(a.config, a.overrides)
    if a.seeds is not None:
        from avmaster.seeds import train_seeds

        print(f"aggregate: {train_seeds(cfg, a.seeds)}")
        return 0
    result = train(cfg)
    print(f"best checkpoint: {result.best_ckpt}")
    return 0


def cmd_eval(argv: Sequence[str]) -> int:
    args = _config_args(argv, "eval")
    from pathlib import Path

    from avmaster.config import load_config
    from avmaster.training import evaluate
    from avmaster.variants import evaluate_variants

    cfg = load_config(*args)
    if cfg.ckpt and Path(cfg.ckpt).is_dir():  # a run folder, or one of several seeds
        from avmaster.seeds import evaluate_folder

        evaluate_folder(cfg, Path(cfg.ckpt))
        return 0
    if cfg.variants:  # one checkpoint, one results file per inference-time row
        evaluate_variants(cfg)
    else:
        evaluate(cfg)
    return 0


def cmd_probe(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="avmaster probe", description=(
        "Per-type accuracy of a checkpoint on the test split under controlled input changes "
        "(time reversed or shuffled, audio or visual swapped with another video's, silenced "
        "or blanked, question only), next to the unchanged input. Overrides are key=value."))
    p.add_argument("--config", default=None, help="YAML file (default configs/avmaster.yaml)")
    p.add_argument("--probes", default=None, metavar="P1,P2",
                   help="comma-separated probes to run (default: all of reversed, shuffled, "
                        "audio_swapped, visual_swapped, audio_silenced, visual_blanked, "
                        "question_only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffles and swaps")
    p.add_argument("--per-template", action="store_true",
                   help="also one row per question template (accuracy under each probe)")
    p.add_argument("--out", default=None,
                   help="write OUT.json/.md/.png (default: probe_<data> in the checkpoint's run "
                        "folder, or in name=/output_dir= when given)")
    p.add_argument("overrides", nargs="*", help="key=value")
    a = p.parse_intermixed_args(argv)  # options may follow the key=value overrides
    from avmaster.config import ConfigError, load_config
    from avmaster.probe import PROBES, probe_checkpoint, summary

    cfg = load_config(a.config, a.overrides)
    probes = a.probes.split(",") if a.probes else list(PROBES)
    try:
        report, files = probe_checkpoint(cfg, probes, a.seed, a.out,
                                         per_template=a.per_template)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    print(report.markdown())
    print(summary(report))
    print(f"written: {', '.join(str(f) for f in files.values())}")
    return 0


def cmd_config(argv: Sequence[str]) -> int:
    args = _config_args(argv, "config")
    from omegaconf import OmegaConf

    from avmaster.config import load_config, to_dict

    cfg = load_config(*args)
    print(OmegaConf.to_yaml(to_dict(cfg)), end="")
    return 0


def cmd_score(argv: Sequence[str]) -> int:
    from avmaster.data.annotations import HEAD_TAIL_GROUPS

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
    p.add_argument("--head-tail-group", default="template", choices=HEAD_TAIL_GROUPS,
                   help="groups the head/tail rule counts answers in (files without head_tail)")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    a = p.parse_args(argv)
    from pathlib import Path

    from avmaster.data.annotations import concat, ensure_head_tail, load_annotations
    from avmaster.data.tables import get_table
    from avmaster.data.vocab import AnswerVocab
    from avmaster.metrics import intervals_of, write_results
    from avmaster.paths import resolve
    from avmaster.scoring import PredictionError, read_predictions, score

    sets = concat([load_annotations(f, "test") for f in a.annotations], "test")
    sets.report(logging.getLogger("avmaster.score"))
    spec = get_table(a.table)
    records = sets.records
    if spec.head_tail:
        records = ensure_head_tail(records, a.head_tail_ratio, a.head_tail_group)
    vocab = None if records[0].options else AnswerVocab.from_file(resolve(a.answers))
    predictions = read_predictions(a.predictions)
    report = score(predictions, records, spec, vocab)
    if predictions and len(report.missing) == len(records):  # a table of zeros says nothing
        raise PredictionError(
            f"{a.predictions}: none of its {len(predictions)} predictions is for a question of "
            f"{', '.join(map(str, a.annotations))} ({len(records)} questions): score it against "
            "the annotations it was made for")
    rows = {Path(a.predictions).stem: report.accuracy}
    print(spec.markdown(rows, intervals_of(rows, report.counts), report.counts))
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
    "compare": _delegate("avmaster.compare"),
    "extract": _delegate("avmaster.extract.runner"),
    "import-features": _delegate("avmaster.extract.import_command"),
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
    for name in RANK_ZERO_LOGGERS:
        logging.getLogger(name).addFilter(_drop_tips)
    try:
        return COMMANDS[command](rest)
    except Exception as e:
        if not isinstance(e, _user_errors()):
            raise
        print(f"avmaster {command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        close_process_group()


def close_process_group() -> None:
    """Destroy the process group a multi-process run (``trainer.strategy=ddp``) left open:
    torch's gloo group still alive at interpreter exit sometimes aborts the process ("terminate
    called without an active exception", exit status 134) after a run that succeeded."""
    if "torch" not in sys.modules:  # nothing distributed can have started
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# Lightning's rank-zero messages (its install tips among them) go through these loggers.
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero",
                     "lightning.fabric.utilities.rank_zero", "lightning_utilities.core.rank_zero")


def _drop_tips(record: logging.LogRecord) -> bool:
    """Lightning advertises optional packages ("Tip: ... try installing ...") in every run."""
    return "Tip: For seamless" not in str(record.msg)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's input to fix: one line, exit 2, no traceback. Imported
    only when something went wrong, so that ``--help`` stays light."""
    from avmaster.checkpoints import CheckpointError
    from avmaster.compare import CompareError
    from avmaster.config import ConfigError
    from avmaster.data.annotations import AnnotationError
    from avmaster.data.store import FeatureStoreError
    from avmaster.extract.extractor import UndecodableVideoError
    from avmaster.scoring import PredictionError
    from avmaster.seeds import AggregateError

    return (ConfigError, AnnotationError, FeatureStoreError, PredictionError, CheckpointError,
            UndecodableVideoError, CompareError, AggregateError, FileNotFoundError,
            FileExistsError)


if __name__ == "__main__":
    sys.exit(main())
