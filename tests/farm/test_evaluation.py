"""The model evaluated through the farm: seams through the window engine, repeatable MP4s."""

from __future__ import annotations

from farm.evaluation import main, seam_report


def test_seam_report_end_to_end_on_tiny():
    r = seam_report("tiny", prompt="a red cup", seconds=2, fps=8, size=32, steps=2, window=2,
                    overlap=1, more_overlaps=(0,))  # fmt: skip
    assert r["frames"] == 17 and r["windows"] >= 3
    assert [o["overlap"] for o in r["by_overlap"]] == [1, 0]
    assert r["by_overlap"][1]["windows"] < r["windows"]
    assert r["seam_ratio_windowed"] > 0 and r["seam_ratio_independent_chunks"] > 0
    assert r["mp4_identical"]


def test_farm_eval_adds_seams_to_the_prompt_following_report(tmp_path):
    out = tmp_path / "eval.json"
    argv = ["--model", "tiny", "--limit", "1", "--steps", "1", "--size", "32", "--frames", "5"]
    report = main([*argv, "--seconds", "2", "--out", str(out)])
    assert set(report["accuracy"]) == {"colour", "motion"}
    assert report["seams"]["frames"] == 49 and report["seams"]["mp4_identical"]
    assert out.exists()
