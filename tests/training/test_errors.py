"""Where the out-of-fold errors are: per image and per group, over several CV runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lightning_app.training import errors
from lightning_app.training.ensemble import pooled_runs
from tests.training.test_ensemble import fold

# GROUPS a b c d, TARGETS no_tumor tumor tumor tumor (see test_ensemble)
RUNS = {
    "r1": [0.9, 0.8, 0.2, 0.7],  # a and c wrong
    "r2": [0.8, 0.9, 0.6, 0.7],  # a wrong
    "r3": [0.7, 0.4, 0.9, 0.8],  # a and b wrong
}


def runs(root: Path) -> list[Path]:
    for name, tumour in RUNS.items():
        fold(root / name, 0, tumour)
    return [root / name for name in RUNS]


def test_a_group_every_run_gets_wrong_is_told_apart_from_the_seeds_noise(tmp_path: Path) -> None:
    result = errors.analyse(pooled_runs(runs(tmp_path)))
    assert result["wrong_in_k_runs"] == [1, 2, 0, 1]  # d never, b and c once, a always
    assert result["errors"] == 5 and result["groups_with_an_error"] == 3
    assert result["ensemble_wrong"] == 1  # averaging fixes b and c, not a
    first = result["by_group"][0]
    assert (first.group, first.label, first.wrong, first.answers) == ("a", "no_tumor", 3, 3)
    assert first.p_label == pytest.approx((0.1 + 0.2 + 0.3) / 3)
    assert result["consistent_groups"] == 1 and result["consistent_by_label"] == {"no_tumor": 1}
    assert result["consistent_share_of_errors"] == pytest.approx(3 / 5)
    text = errors.report(result, top=2)
    assert "1 wrong in 3 of 3" in text and "holding 60% of all errors" in text
    assert "| a | no_tumor | 1 | 3/3 (100%) | 0.20 | x/a.jpg |" in text
    assert text.count("\n| ") == 3  # header and the top two groups


def test_the_sheet_draws_one_tile_per_listed_group_and_the_cues_compare_wrong_with_right(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data" / "x"
    data.mkdir(parents=True)
    for g in "abcd":
        Image.new("L", (300, 200), 40).save(data / f"{g}.jpg")
    dirs = runs(tmp_path)
    sheet = ["--sheet", str(tmp_path / "s.png"), "--data", str(tmp_path / "data")]
    errors.main([*map(str, dirs), "--top", "5", "--cues", *sheet])
    with Image.open(tmp_path / "s.png") as drawn:
        assert drawn.size == (3 * errors.TILE, errors.TILE)  # the three groups with an error, not d
    out = capsys.readouterr().out
    assert "sheet:" in out
    assert "| no_tumor | wrong in >= 50% | 1 | 1.00 | 40 |" in out  # group a, grey 40 everywhere
    assert "| tumor | never wrong | 1 | 1.00 | 40 |" in out  # group d


def test_a_missing_image_or_run_ends_in_one_line(tmp_path: Path) -> None:
    dirs = runs(tmp_path)
    with pytest.raises(SystemExit, match=r"^errors: .*a\.jpg"):
        errors.main([*map(str, dirs), "--sheet", str(tmp_path / "s.png"), "--data", str(tmp_path / "none")])
    assert not (tmp_path / "s.png").exists()
    with pytest.raises(SystemExit, match=r"^errors: no fold is finished in every one"):
        errors.main([str(dirs[0]), str(tmp_path / "missing")])


def test_also_rechecks_another_run_on_the_images_every_listed_run_gets_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dirs = runs(tmp_path)  # every run gets group a wrong
    fold(tmp_path / "fixes_a", 0, [0.2, 0.3, 0.3, 0.9])  # a right; b and c wrong
    fold(tmp_path / "same", 0, [0.9, 0.9, 0.9, 0.9])  # a wrong, the rest right
    errors.main(
        [*map(str, dirs), "--top", "0", "--also", str(tmp_path / "fixes_a"), "--also", str(tmp_path / "same")]
    )
    out = capsys.readouterr().out
    assert "fixes_a: wrong on 0 of the 1 images every listed run gets wrong (0%); 2 wrong overall" in out
    assert "same: wrong on 1 of the 1 images every listed run gets wrong (100%); 1 wrong overall" in out
