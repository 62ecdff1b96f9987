"""split.exclude: named images leave every split with their reason; a path not in the data fails loudly."""

from __future__ import annotations

import pandas as pd
import pytest

from signflow.config import Config, ConfigError, ExcludeEntry, SplitConfig, from_mapping
from signflow.data.manifest import DataError
from signflow.data.split import (
    EXCLUDED_COLUMNS,
    MAX_PATHS_SHOWN,
    apply_exclude,
    check_exclude,
    excluded_frame,
    split_targets,
)
from signflow.data.unknown import build_open_set

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
CLASSES = {"12": "priority_road", "13": "give_way"}


def _exclude(*entries: tuple[str, str]) -> dict[str, str]:
    return SplitConfig(exclude=tuple(ExcludeEntry(path, reason) for path, reason in entries)).exclude_reasons


def test_split_leaves_out_exactly_the_named_images(make_records) -> None:
    index = make_records({"12": [3] * 5, "13": [3] * 5, "20": [3]})
    named = ["12/00001_00002.png", "13/00004_00000.png", "20/00000_00001.png"]  # two targets, one other sign
    exclude = _exclude(*((path, "blurry") for path in named))
    frames = split_targets(index, CLASSES, FRACTIONS, 42, exclude=exclude)
    kept = [p for f in frames.values() for p in f["path"]]
    targets = [r.path for r in index if r.class_id in CLASSES]
    assert sorted(kept) == sorted(set(targets) - set(named))


def test_excluded_frame_keeps_path_class_and_reason_in_list_order(make_records) -> None:
    index = make_records({"12": [2], "20": [2]})
    exclude = _exclude(("20/00000_00001.png", "not a sign: a billboard"), ("12/00000_00000.png", "label: 13"))
    frame = excluded_frame(index, exclude)
    assert list(frame.columns) == EXCLUDED_COLUMNS
    assert frame.values.tolist() == [["20/00000_00001.png", "20", "not a sign: a billboard"],
                                     ["12/00000_00000.png", "12", "label: 13"]]
    assert excluded_frame(index, {}).empty and list(excluded_frame(index, {}).columns) == EXCLUDED_COLUMNS


def test_a_path_not_in_the_index_fails_naming_it(make_records) -> None:
    index = make_records({"12": [2]})
    exclude = _exclude(("12/00000_00000.png", "ok"), ("12/0000_00001.png", "typo"), ("stop/x.jpg", "wrong"))
    for call in (lambda: check_exclude(index, exclude), lambda: excluded_frame(index, exclude),
                 lambda: split_targets(index, {"12": "priority_road"}, FRACTIONS, 0, exclude=exclude)):
        with pytest.raises(DataError) as err:
            call()
        message = str(err.value)
        assert "split.exclude" in message and "(2)" in message and "\n" not in message
        assert "'12/0000_00001.png'" in message and "'stop/x.jpg'" in message
        assert "12/00000_00000.png" in message.split("e.g.")[1]  # an example of a real path, to compare


def test_many_unknown_paths_are_counted_not_all_listed(make_records) -> None:
    exclude = _exclude(*((f"missing/{k}.png", "x") for k in range(MAX_PATHS_SHOWN + 5)))
    with pytest.raises(DataError, match=rf"\({MAX_PATHS_SHOWN + 5}\).* and 5 more"):
        check_exclude(make_records({"12": [1]}), exclude)


def test_apply_exclude_is_a_filter_for_a_partial_index(make_records) -> None:
    # add_unknown holds only the non-target records: entries naming targets are simply not among them.
    others = make_records({"20": [3]})
    exclude = _exclude(("12/00000_00000.png", "a target"), ("20/00000_00001.png", "an other sign"))
    assert [r.path for r in apply_exclude(others, exclude)] == ["20/00000_00000.png", "20/00000_00002.png"]
    assert apply_exclude(others, {}) == others and apply_exclude(others, {}) is not others


def test_the_open_set_never_picks_an_excluded_image(make_records) -> None:
    index = make_records({"20": [2] * 5, "15": [2] * 5})
    named = {"20/00001_00000.png", "15/00003_00001.png"}
    kept = apply_exclude(index, _exclude(*((path, "mislabelled") for path in named)))
    frames = build_open_set(kept, ["12"], FRACTIONS, 0, enabled=True, unknown_classes=(), heldout=("15",),
                            max_images=100, heldout_max_images=100, available=["12", "15", "20"])
    paths = set(pd.concat(frames.values())["path"])
    assert len(paths) == len(index) - 2 and not paths & named


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"path": "12/a.png", "reason": ""}, "split.exclude[0].reason"),
        ({"path": "12/a.png", "reason": "   "}, "split.exclude[0].reason"),
        ({"path": "12/a.png"}, "split.exclude[0].reason"),
        ({"path": "12/a.png", "reason": None}, "split.exclude[0].reason"),
        ({"reason": "blurry"}, "split.exclude[0].path"),
        ({"path": "12/a.png", "reason": "x", "note": "y"}, "split.exclude[0].note"),
        ("12/a.png", "split.exclude[0]"),
    ],
)
def test_bad_entries_fail_at_config_validation_naming_the_key(entry, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(Config, {"split": {"exclude": [entry]}})
    message = str(err.value)
    assert message.startswith(f"params.yaml: {key}=") and "\n" not in message


def test_an_image_listed_twice_fails() -> None:
    entries = [{"path": "12/a.png", "reason": "x"}, {"path": "12/b.png", "reason": "y"},
               {"path": "12/a.png", "reason": "z"}]
    with pytest.raises(ConfigError, match=r"split.exclude\[2\].path='12/a.png'.*listed earlier"):
        from_mapping(Config, {"split": {"exclude": entries}})


def test_valid_entries_read_in_order() -> None:
    cfg = from_mapping(Config, {"split": {"exclude": [{"path": "12/b.png", "reason": "blurry"},
                                                      {"path": "12/a.png", "reason": "label: 13"}]}})
    assert cfg.split.exclude_reasons == {"12/b.png": "blurry", "12/a.png": "label: 13"}
    assert list(cfg.split.exclude_reasons) == ["12/b.png", "12/a.png"]
    assert SplitConfig().exclude == () and SplitConfig().exclude_reasons == {}
