"""The synthetic dataset (answers from hand-made scenes, file format, balance, media) and the
quick demo end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import child_env

from avmaster.data.annotations import load_annotations
from avmaster.data.records import MUSIC_AVQA_TYPES
from avmaster.demo.questions import (
    ORDER_ONLY,
    TEMPLATES,
    answer_balance,
    build_annotations,
    majority_accuracy,
    order_pair,
)
from avmaster.demo.render import render_audio, render_frames
from avmaster.demo.scene import (
    INSTRUMENTS,
    POSITIONS,
    Instrument,
    Scene,
    SynthConfig,
    sample_scenes,
)
from avmaster.demo.synth import write_dataset

T = 10
NAMES = tuple(INSTRUMENTS)

# piano left, always and loudest; violin in the middle from 3 s to 8 s; cello on the right,
# silent; a flute heard off-screen from 5 s, quietest.
ORCHESTRA = Scene("00000001", T, (
    Instrument("piano", "left", 0, 10, 0.7),
    Instrument("violin", "middle", 3, 8, 0.25),
    Instrument("cello", "right"),
    Instrument("flute", None, 5, 9, 0.08),
))
# two violins (left, right) coming in together, a drum in the middle coming in later.
DUET = Scene("00000002", T, (
    Instrument("violin", "left", 2, 6, 0.25),
    Instrument("drum", "middle", 4, 10, 0.7),
    Instrument("violin", "right", 2, 9, 0.08),
))
SOLO = Scene("00000003", T, (Instrument("guzheng", "middle", 1, 4, 0.25),))


def answers(scene: Scene, text: str) -> dict[tuple[str, ...], str]:
    """Every question of one template about ``scene``: values -> answer."""
    (template,) = [t for t in TEMPLATES if t.text == text]
    out = template.ask(scene, NAMES)
    assert len({v for v, _ in out}) == len(out), "one answer per question"
    return dict(out)


def test_audio_questions():
    a = answers(ORCHESTRA, "Is there a <Object> sound?")
    assert (a[("piano",)], a[("violin",)], a[("cello",)], a[("flute",)], a[("drum",)]) == (
        "yes", "yes", "no", "yes", "no")
    assert answers(ORCHESTRA, "How many musical instruments were heard throughout the video?") \
        == {(): "three"}
    both = answers(ORCHESTRA, "Are there <Object> and <Object> sound? ")
    assert both[("piano", "flute")] == "yes" and both[("piano", "cello")] == "no"
    louder = answers(ORCHESTRA, "Is the <Object> louder than the <Object>?")
    assert louder[("piano", "violin")] == "yes" and louder[("flute", "violin")] == "no"
    assert ("cello", "piano") not in louder  # the cello never sounds: not asked
    longer = answers(ORCHESTRA, "Is the <Object> playing longer than the <Object>?")
    assert longer[("piano", "violin")] == "yes" and longer[("flute", "violin")] == "no"
    assert ("violin", "violin") not in answers(DUET, "Is the <Object> louder than the <Object>?")


def test_visual_questions():
    seen = answers(ORCHESTRA, "Is there a <Object> in the entire video?")
    assert seen[("cello",)] == "yes" and seen[("flute",)] == "no"  # heard, never seen
    assert answers(ORCHESTRA, "How many types of musical instruments appeared in the entire "
                              "video?") == {(): "three"}
    assert answers(DUET, "How many types of musical instruments appeared in the entire "
                         "video?") == {(): "two"}
    assert answers(DUET, "How many <Object> are in the entire video?") == {
        ("drum",): "one", ("violin",): "two"}
    both = answers(DUET, "Are there <Object> and <Object> instruments in the video?")
    assert both[("drum", "violin")] == "yes" and both[("drum", "piano")] == "no"
    assert answers(ORCHESTRA, "What is the instrument on the <LR> of <Object>?") == {
        ("right", "piano"): "violin", ("left", "violin"): "piano",
        ("right", "violin"): "cello", ("left", "cello"): "violin"}
    assert answers(DUET, "What is the instrument on the <LR> of <Object>?") == {
        ("left", "drum"): "violin", ("right", "drum"): "violin"}
    assert answers(ORCHESTRA, "What kind of instrument is the <LRer> instrument? ") == {
        ("leftest",): "piano", ("rightest",): "cello"}
    assert answers(SOLO, "What kind of musical instrument is it?") == {(): "guzheng"}
    assert answers(ORCHESTRA, "What kind of musical instrument is it?") == {}


def test_audio_visual_questions():
    always = answers(ORCHESTRA, "Is the <Object> in the video always playing?")
    assert always == {("piano",): "yes", ("violin",): "no", ("cello",): "no"}
    assert answers(ORCHESTRA, "Is this sound from the instrument in the video?") == {(): "no"}
    assert answers(DUET, "Is this sound from the instrument in the video?") == {(): "yes"}
    assert answers(DUET, "How many sounding <Object> in the video？") == {
        ("drum",): "one", ("violin",): "two"}
    assert answers(ORCHESTRA, "How many sounding <Object> in the video？")[("cello",)] == "zero"
    assert answers(ORCHESTRA, "How many instruments are sounding in the video?") == {(): "two"}
    assert answers(ORCHESTRA, "How many instruments in the video did not sound from beginning "
                              "to end?") == {(): "one"}
    assert answers(DUET, "How many types of musical instruments sound in the video?") == {
        (): "two"}
    assert answers(ORCHESTRA, "Where is the <LL> instrument?") == {("loudest",): "left"}
    # the last instrument to come in is the off-screen flute: no on-screen one is "last"
    fl = answers(ORCHESTRA, "Is the <FL> sound coming from the <LR> instrument?")
    assert fl[("first", "left")] == "yes" and fl[("first", "middle")] == "no"
    assert {fl[("last", p)] for p in ("left", "middle", "right")} == {"no"}
    assert answers(ORCHESTRA, "What is the <LR> instrument of the <FL> sounding instrument?") \
        == {("right", "first"): "violin"}
    assert answers(DUET, "Which is the musical instrument that sounds at the same time as the "
                         "<Object>?") == {}  # the drum overlaps both violins
    assert answers(SOLO, "Which is the musical instrument that sounds at the same time as the "
                         "<Object>?") == {}
    louder = answers(ORCHESTRA, "Is the instrument on the <LR> louder than the instrument on "
                                "the <LR>?")
    assert louder == {("left", "middle"): "yes", ("middle", "left"): "no"}
    named = answers(DUET, "Is the <Object> on the <LR> louder than the <Object> on the <LR>?")
    assert named[("violin", "left", "violin", "right")] == "yes"
    assert named[("violin", "right", "drum", "middle")] == "no"


def test_temporal_questions():
    assert answers(ORCHESTRA, "Where is the <FL> sounding instrument?") == {
        ("first",): "left", ("last",): "middle"}
    assert answers(ORCHESTRA, "What is the <TH> instrument that comes in?") == {
        ("first",): "piano", ("second",): "violin"}
    assert answers(DUET, "What is the <TH> instrument that comes in?") == {}  # a tie
    assert answers(DUET, "Which <Object> makes the sound <FL>?") == {
        ("violin", "first"): "simultaneously"}
    early = Scene("9", T, (Instrument("violin", "left", 5, 9, 0.25),
                           Instrument("violin", "right", 1, 9, 0.7)))
    assert answers(early, "Which <Object> makes the sound <FL>?") == {
        ("violin", "first"): "right", ("violin", "last"): "left"}
    assert answers(ORCHESTRA, "Which instrument makes sounds <BA> the <Object>?") == {
        ("after", "piano"): "violin", ("before", "violin"): "piano"}


def test_order_only_questions():
    # equally loud, equally long, 3 s apart: which comes first is a matter of order only
    order = Scene("4", T, (Instrument("piano", "left", 1, 3, 0.25),
                           Instrument("flute", "right", 6, 8, 0.25)))
    assert answers(order, ORDER_ONLY.text) == {
        ("first", "piano", "flute"): "piano", ("first", "flute", "piano"): "piano",
        ("last", "piano", "flute"): "flute", ("last", "flute", "piano"): "flute"}
    # not asked where loudness or length would tell the two apart
    assert answers(order.__class__("5", T, (Instrument("piano", "left", 1, 3, 0.7),
                                            Instrument("flute", "right", 6, 8, 0.25))),
                   ORDER_ONLY.text) == {}
    assert answers(ORCHESTRA, ORDER_ONLY.text) == {} and answers(DUET, ORDER_ONLY.text) == {}


def test_order_scenes_are_as_likely_backwards():
    cfg = SynthConfig(videos=600, p_order=1.0)
    scenes = sample_scenes(cfg)
    left_first, starts, ends = 0, [], []
    for s in scenes:
        a, b = order_pair(s)
        assert b.start - a.end >= cfg.order_gap and a.duration == b.duration
        left_first += POSITIONS.index(a.position) < POSITIONS.index(b.position)
        starts.append(a.start)
        ends.append(T - b.end)
    assert 0.45 < left_first / len(scenes) < 0.55
    # the time-reversed scenes are as likely: the first onset and the time after the last
    # offset have the same distribution
    assert abs(np.mean(starts) - np.mean(ends)) < 0.15
    entries = build_annotations(scenes[:120], cfg)
    asked = [e for e in entries["train"] if e["question_content"] == ORDER_ONLY.text]
    assert len(asked) > 20 and answer_balance(asked)


def test_every_template_has_the_placeholders_it_fills():
    scenes = sample_scenes(SynthConfig(videos=60, seed=3))
    for t in TEMPLATES:
        n_slots = t.text.count("<")
        asked = [v for s in scenes for v, _ in t.ask(s, NAMES)]
        assert asked, t.text
        assert all(len(v) == n_slots for v in asked), t.text


@pytest.fixture(scope="module")
def entries() -> dict[str, list[dict]]:
    return build_annotations(sample_scenes(SynthConfig(videos=120)), SynthConfig(videos=120))


def test_annotation_files_load_with_all_nine_types(entries, tmp_path):
    ids = [e["question_id"] for es in entries.values() for e in es]
    assert len(ids) == len(set(ids))
    for split, es in entries.items():
        path = tmp_path / f"avqa-{split}.json"
        path.write_text(json.dumps(es, ensure_ascii=False))
        loaded = load_annotations(path, split)
        assert len(loaded) == len(es) and not loaded.duplicates
        assert {(r.modality, r.qtype) for r in loaded.records} == {
            (m, q) for m, q, _ in MUSIC_AVQA_TYPES}, split
        e = es[0]
        assert set(e) == {"video_id", "question_id", "type", "question_content",
                          "templ_values", "question_deleted", "anser"}
        assert isinstance(json.loads(e["type"]), list)
        assert isinstance(json.loads(e["templ_values"]), list)
        assert e["question_deleted"] == 0 and len(e["video_id"]) == 8
    texts = {r.question for r in loaded.records}
    assert "How many sounding violin in the video" in texts or any(
        t.startswith("How many sounding ") for t in texts)


def test_answers_are_balanced_per_template(entries):
    for split, es in entries.items():
        for template, counts in answer_balance(es).items():
            assert len(counts) >= 2, (split, template)
            assert len(set(counts.values())) == 1, (split, template, counts)
    # so answering each template's most frequent training answer is worth little
    assert majority_accuracy(entries["train"], entries["test"]) < 45


def test_dataset_is_deterministic_per_seed():
    cfg = SynthConfig(videos=30)
    assert build_annotations(sample_scenes(cfg), cfg) == build_annotations(sample_scenes(cfg), cfg)
    other = SynthConfig(videos=30, seed=1)
    assert sample_scenes(other) != sample_scenes(cfg)


def test_frames_show_the_instruments_and_who_sounds():
    cfg = SynthConfig()
    frames = render_frames(ORCHESTRA, cfg)
    assert frames.shape == (T * cfg.fps, cfg.size, cfg.size, 3) and frames.dtype == np.uint8
    second = frames[::cfg.fps]
    third = cfg.size // 3

    def pixels(s: int, k: int, name: str, gain: float = 1.0) -> int:
        """How many pixels of slot k at second s have the instrument's colour (x gain)."""
        colour = (np.array(INSTRUMENTS[name][0].colour) * gain).astype(np.uint8)
        return int(np.all(second[s, :, k * third:(k + 1) * third] == colour, axis=-1).sum())

    least = cfg.size  # a shape covers far more pixels than one column
    assert pixels(0, 0, "piano") > least and pixels(9, 0, "piano") > least  # always bright
    assert pixels(0, 1, "violin") == 0 and pixels(0, 1, "violin", cfg.dim) > least  # dim
    assert pixels(4, 1, "violin") > least  # sounding from 3 s
    assert all(pixels(s, 2, "cello") == 0 for s in range(T))  # the silent cello stays dim
    assert pixels(0, 2, "cello", cfg.dim) > least
    assert pixels(0, 0, "violin") == 0  # nothing else in the piano's slot


def test_audio_holds_each_instrument_at_its_pitch_when_it_sounds():
    cfg = SynthConfig()
    rng = np.random.default_rng(0)
    solo = render_audio(SOLO, cfg, rng)[:, 0]
    assert solo.shape == (T * cfg.sample_rate,)
    sr = cfg.sample_rate
    assert np.abs(solo[: sr // 2]).max() < 1e-3 and np.abs(solo[5 * sr:]).max() < 1e-3
    seg = solo[2 * sr: 3 * sr]
    spectrum = np.abs(np.fft.rfft(seg))
    peak_hz = np.argmax(spectrum) * sr / len(seg)
    assert abs(peak_hz - INSTRUMENTS["guzheng"][1].f0) < 2
    mix = render_audio(ORCHESTRA, cfg, rng)[:, 0]
    assert np.abs(mix).max() <= cfg.peak + 1e-6


def test_write_dataset_makes_real_videos_and_reuses_them(tmp_path):
    cfg = SynthConfig(videos=6, seconds=4, min_duration=1, order_gap=2, questions_per_video=2.0,
                      min_answer_count=1)
    ds = write_dataset(tmp_path, cfg)
    assert not ds.reused and len(list(ds.videos_dir.glob("*.mp4"))) == 6
    with av.open(str(ds.videos_dir / "00000001.mp4")) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, a.codec_context.name) == ("h264", "aac")
        assert (v.width, v.height) == (cfg.size, cfg.size)
        assert abs(float(c.duration / av.time_base) - cfg.seconds) < 0.5
    answers = json.loads(ds.answers.read_text())
    for path in ds.annotations.values():
        assert {e["anser"] for e in json.loads(path.read_text())} <= set(answers)
    again = write_dataset(tmp_path, cfg)
    assert again.reused and again.questions == ds.questions
    # videos written with other encoder settings (a manifest without them) are written anew
    manifest = tmp_path / "synth.json"
    manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items()
                                    if k != "encoder"}))
    assert not write_dataset(tmp_path, cfg).reused
    assert write_dataset(tmp_path, cfg).reused


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    from avmaster import reports
    from avmaster.demo import DemoSettings, run_demo, summary
    from avmaster.demo.pipeline import FULL, QUESTION_ONLY

    result = run_demo(DemoSettings(out=str(tmp_path / "demo"), device="cpu").quick())
    for key in ("json", "md", "png"):
        assert result.files[key].exists() and result.files[key].stat().st_size > 0
    md = result.files["md"].read_text()
    assert f"| {FULL} |" in md and f"| {QUESTION_ONLY} |" in md
    payload = json.loads(result.files["json"].read_text(), parse_constant=pytest.fail)
    for path in (tmp_path / "demo" / "results").glob("*.json"):
        json.loads(path.read_text(), parse_constant=pytest.fail)
    for text in (md, summary(result), *(p.read_text() for p in
                                        (tmp_path / "demo" / "results").glob("*.md"))):
        assert not re.search(r"\bnan\b", text, re.IGNORECASE), text
    assert set(payload["rows"]) == {FULL, QUESTION_ONLY}
    assert payload["meta"]["pretrained"] is False
    assert "RANDOMLY INITIALISED" in payload["meta"]["encoders"]
    assert result.margin > 0, result.accuracy
    # the paired comparison of the two runs is the margin, with its interval and test
    paired = payload["meta"]["paired_avg"]
    assert paired["diff"] == pytest.approx(result.margin, abs=1e-4)
    assert paired["n"] == payload["counts"]["avg"]
    assert paired["diff_low"] <= paired["diff"] <= paired["diff_high"]
    assert paired["only_a"] - paired["only_b"] == round(paired["n"] * result.margin / 100)
    assert "McNemar exact p" in md and "| 95% CI |" in md
    assert set(payload["intervals"]) == {FULL, QUESTION_ONLY}
    measured = reports.load_measured(tmp_path / "demo")
    assert Counter(measured["method"]) == {FULL: 1, QUESTION_ONLY: 1}
    assert (tmp_path / "demo" / "features" / "extract_summary.json").exists()
    assert list((tmp_path / "demo" / "runs" / "avmaster" / "checkpoints").glob("*.ckpt"))
    assert {p.name for p in tmp_path.iterdir()} == {"demo"}  # nothing outside its folder

    # the reports (what the notebooks show) read what the demo wrote
    demo = reports.section("demo", measured, chart=False)
    assert demo.note.startswith("2 measured") and any(
        c.startswith("measured question only") for c in demo.frame.columns)
    ablations = reports.ablation_section(measured, chart=False)
    assert "measured (demo)" in ablations.frame.columns


def test_demo_command_line(tmp_path):
    from avmaster.demo import DemoSettings, settings_from_args
    from avmaster.demo.pipeline import encoder_note, extract_args, weights_from_env

    s = settings_from_args(["--quick", "--out", str(tmp_path), "--seed", "3"])
    assert s.videos == DemoSettings().quick().videos and s.seed == 3
    assert "RANDOMLY" in encoder_note(s)
    w = tmp_path / "w.pt"
    w.write_bytes(b"x")
    s2 = settings_from_args(["--clip-weights", str(w), "--vggish-weights", str(w)])
    assert s2.pretrained and "pretrained encoders" in encoder_note(s2)
    one = weights_from_env(settings_from_args(["--clip-weights", str(w)]))
    assert not one.pretrained and "only CLIP" in encoder_note(one)
    ds = write_dataset(tmp_path / "data", SynthConfig(videos=3, seconds=4, min_duration=1,
                                                      order_gap=2, min_answer_count=1))
    args = extract_args(s, ds, Path(tmp_path / "features"))
    assert "--random-init" in args and args[args.index("--model") + 1] == "avmaster-tiny"


def test_demo_order_share_option_reaches_synth_config():
    from avmaster.demo import DemoSettings, settings_from_args

    assert settings_from_args([]).synth_config().p_order == SynthConfig().p_order == 0.25
    s = settings_from_args(["--order-share", "1.0", "--quick"])
    assert s.order_share == 1.0 and s.synth_config().p_order == 1.0
    assert DemoSettings(order_share=0.5).quick().synth_config().p_order == 0.5
    scenes = sample_scenes(replace(s.synth_config(), videos=20))
    assert all(len(sc.instruments) == 2 for sc in scenes)  # every scene an order scene
    assert settings_from_args(["--order-share", "0"]).synth_config().p_order == 0.0
    with pytest.raises(SystemExit):
        settings_from_args(["--order-share", "1.5"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's MALLOC_PERTURB_")
def test_videos_do_not_depend_on_uninitialised_memory(tmp_path):
    """The same scenes encode to the same bytes in processes whose fresh memory holds
    different garbage (glibc's ``MALLOC_PERTURB_``), as in different runs of the demo."""
    code = (
        "import hashlib, sys; from pathlib import Path; "
        "from avmaster.demo.render import write_scene_video; "
        "from avmaster.demo.scene import SynthConfig, sample_scenes; "
        "cfg = SynthConfig(videos=8); out = Path(sys.argv[1]); "
        "print(' '.join(hashlib.md5(write_scene_video(s, cfg, out / f'{s.video_id}.mp4')"
        ".read_bytes()).hexdigest() for s in sample_scenes(cfg)))"
    )
    hashes = []
    for perturb in ("165", "77"):
        out = tmp_path / perturb
        out.mkdir()
        run = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                             text=True, check=True, env=child_env(MALLOC_PERTURB_=perturb))
        hashes.append(run.stdout.split())
    assert len(hashes[0]) == 8 and hashes[0] == hashes[1]
