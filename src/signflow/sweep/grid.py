"""A sweep's grid: `-S` assignments and --grid files into points, each checked before anything is queued.

The grammar and the expansion are DVC's own: `-S` strings go through the functions
`dvc exp run --queue -S` calls (``to_path_overrides``, then ``get_hydra_sweeps`` on
Hydra's ``OverridesParser``), so `signflow sweep` accepts exactly what DVC accepts
(`a,b`, `choice()`, `range()`, quotes, lists) and plans the same points in the same
order: keys in the order given (`-S` first, then the file's), the last varying fastest.
A --grid file (dotted key -> list of values) is spelled into that grammar by
Hydra's own printer. Each point is then applied to a copy of ``params.yaml`` by
DVC's ``apply_overrides`` (what a queued experiment does to its params.yaml) and
validated by ``load_config``; points that validate but make no sense are skipped
with the reason. Over seeds (`--seeds N`), each point becomes N experiments
`<point>-s<seed>` that set the seed keys (``train.seed`` by default) to 0..N-1,
each validated like any point; a grid that varies a seed key itself is grouped
by its other keys instead.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dvc.exceptions import DvcException
from dvc.utils.cli_parse import to_path_overrides
from dvc.utils.hydra import apply_overrides, get_hydra_sweeps, to_hydra_overrides
from hydra.core.override_parser.types import Override, Quote, QuotedString, Transformer
from hydra.errors import HydraException

from signflow import paths
from signflow.catalog import BACKBONE_ENTRIES, STRATEGIES
from signflow.config import Config, ConfigError, load_config, load_params, load_yaml
from signflow.processes import tail

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "sweep"
MAX_PREFIX_LENGTH = 40
# A git-ref-safe experiment name prefix: DVC stores experiments as refs/exps/.../<name>.
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
DEFAULT_SEED_KEYS = ("train.seed",)
SEED_SUFFIX = "-s"  # experiment name = <point>-s<seed>
PARAMS_FILE = paths.PARAMS.as_posix()  # the file a sweep sets keys of (DVC's default for `-S key=value`)
GRID_EXAMPLE = "train.lr: [0.01, 0.001]"


class SweepError(RuntimeError):
    """The sweep cannot run as asked; the one-line message says what to fix."""


@dataclass(frozen=True)
class Point:
    """One point of the grid: its experiment name, its `-S` overrides and the values they set."""

    index: int  # 1-based position in the product
    name: str
    overrides: tuple[str, ...]  # `key=value` as DVC's sweep expansion spells them, passed on as `-S`
    values: dict[str, Any]  # dotted key -> value, as Hydra parses the override
    skip_reason: str | None = None
    group: str = ""  # the grid point this experiment repeats over seeds ("" when there are no seeds)

    @property
    def label(self) -> str:
        return " ".join(self.overrides)

    @property
    def point(self) -> str:
        """The grid point's name: its seeds' shared group, else the experiment's own name."""
        return self.group or self.name

    def set_args(self) -> list[str]:
        """`-S key=value` arguments for `dvc exp run`."""
        return [arg for override in self.overrides for arg in ("-S", override)]


# ------------------------------------------------------------------ reading the grid


def parse_overrides(texts: Sequence[str], where: str) -> list[Override]:
    """``texts`` parsed as `dvc exp run -S` parses them (DVC's ``to_hydra_overrides``)."""
    try:
        return to_hydra_overrides(list(texts))
    except HydraException as err:
        raise SweepError(f"{where}: {tail(str(err))}") from None


def grid_keys(overrides: Sequence[str]) -> list[str]:
    """The dotted keys ``overrides`` (`[params.yaml:]key=...`) set, in order (the table's params columns)."""
    texts = to_path_overrides(overrides).get(PARAMS_FILE, []) if overrides else []
    return [override.key_or_group for override in parse_overrides(texts, "grid")]


def read_assignments(texts: Sequence[str]) -> list[str]:
    """Repeated `-S key=v1,v2` options, each checked: valid for DVC, a params.yaml key, given once."""
    keys: set[str] = set()
    for text in texts:
        files = to_path_overrides([text])  # DVC's split of `[file:]key=value`
        if list(files) != [PARAMS_FILE]:
            raise SweepError(f"-S {text!r}: a sweep sets {PARAMS_FILE} keys only (checked against signflow.config)")
        (override,) = parse_overrides(files[PARAMS_FILE], f"-S {text!r}")
        key = override.key_or_group
        if key in keys:
            raise SweepError(f"-S {key} is given twice; list all its values in one -S {key}=v1,v2")
        keys.add(key)
    return list(texts)


def _quoted(value: Any, where: str) -> Any:
    """``value`` with every string quoted for Hydra's printer; SweepError for what `-S` cannot carry."""
    if isinstance(value, str):
        return QuotedString(value, Quote.single)
    if isinstance(value, list):
        return [_quoted(item, where) for item in value]
    if isinstance(value, Mapping):
        return {key: _quoted(item, where) for key, item in value.items()}
    if value is None or isinstance(value, bool | int | float):
        return value
    raise SweepError(f"{where}: cannot pass a {type(value).__name__} value ({value!r}) to dvc exp run -S")


def _parse_one(text: str) -> Override | None:
    """``text`` as one override, or None when DVC's parser refuses it."""
    try:
        (override,) = to_hydra_overrides([text])
    except HydraException:
        return None
    return override


def _reads_back(text: str, value: Any) -> bool:
    override = _parse_one(f"key={text}")
    # repr, not ==: True == 1 == 1.0 in Python, but DVC writes them differently to params.yaml.
    return override is not None and not override.is_sweep_override() and repr(override.value()) == repr(value)


def spell_value(value: Any, where: str = "grid") -> str:
    """``value`` in the `-S` grammar, by Hydra's own printer (the one DVC's sweep expansion uses); quoted
    when the bare spelling would read back as something else (`'true'`, `'1.0'`, `it's`)."""
    quoted = _quoted(value, where)
    for element in (value, quoted):
        text = Transformer.str(element)
        if _reads_back(text, value):
            return text
    raise SweepError(f"{where}: {value!r} cannot be passed to dvc exp run -S (use letters, digits, _-./ in keys)")


def grid_file_overrides(text: str, where: str = "grid") -> list[str]:
    """A YAML mapping of dotted key -> list of values (a single value is a one-value axis), as `-S` strings."""
    try:
        loaded = load_yaml(text)
    except yaml.YAMLError as err:
        raise SweepError(f"{where}: not valid YAML ({tail(str(err))})") from None
    if not isinstance(loaded, Mapping) or not loaded:
        raise SweepError(f"{where}: expected a mapping of dotted params keys to lists of values ({GRID_EXAMPLE})")
    overrides = []
    for key, values in loaded.items():
        not_a_key = SweepError(f"{where}: {key!r} must be a dotted params key with a list of values ({GRID_EXAMPLE})")
        if isinstance(values, Mapping):
            raise not_a_key
        values = values if isinstance(values, list) else [values]
        if not values:
            raise SweepError(f"{where}: {key} has no values")
        text = f"{key}=" + ",".join(spell_value(value, where) for value in values)
        override = _parse_one(text)
        if override is None or override.key_or_group != str(key):  # not a key, or a `+key`, `~key`, `key@pkg`
            raise not_a_key
        overrides.append(text)
    return overrides


def read_grid_file(path: Path) -> list[str]:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise SweepError(f"--grid {path}: cannot read it ({err.strerror})") from None
    return grid_file_overrides(text, where=str(path))


def merge_overrides(from_flags: Sequence[str], from_file: Sequence[str]) -> list[str]:
    """The `-S` overrides then the grid file's, as one list; a key in both is an error."""
    both = [key for key in grid_keys(from_flags) if key in grid_keys(from_file)]
    if both:
        raise SweepError(f"{both[0]} is given both with -S and in --grid; give it once")
    return [*from_flags, *from_file]


def read_grid(assignments: Sequence[str], grid_file: Path | None = None) -> list[str]:
    """The overrides of `-S` options and a --grid file."""
    return merge_overrides(read_assignments(assignments), read_grid_file(grid_file) if grid_file else [])


# ------------------------------------------------------------------ points


def check_prefix(prefix: str) -> str:
    if not PREFIX_PATTERN.fullmatch(prefix) or len(prefix) > MAX_PREFIX_LENGTH:
        raise SweepError(
            f"--prefix {prefix!r}: use letters, digits, '-' and '_' (starting with a letter or digit), "
            f"at most {MAX_PREFIX_LENGTH} characters"
        )
    return prefix


def expand(overrides: Sequence[str], prefix: str = DEFAULT_PREFIX) -> list[Point]:
    """The points `dvc exp run --queue -S ...` would queue (DVC's ``get_hydra_sweeps``), named `<prefix>-<index>`."""
    check_prefix(prefix)
    if not overrides:
        raise SweepError("empty grid: give -S key=v1,v2 and/or --grid FILE.yaml")
    try:
        sweeps = get_hydra_sweeps(to_path_overrides(overrides))
    except (HydraException, DvcException) as err:
        raise SweepError(f"-S {' '.join(overrides)}: {tail(str(err))}") from None
    points, seen = [], {}
    for index, sweep in enumerate(sweeps, start=1):
        strings = tuple(sweep[PARAMS_FILE])
        values = {override.key_or_group: override.value() for override in parse_overrides(strings, "grid")}
        point = Point(index, f"{prefix}-{index}", strings, values)
        if strings in seen:
            raise SweepError(f"{seen[strings]} and {point.name} are the same point ({point.label}): "
                             "a value is listed twice")
        seen[strings] = point.name
        points.append(point)
    return points


# ------------------------------------------------------------------ seeds


def seed_keys_in(overrides: Sequence[str], seed_keys: Sequence[str]) -> list[str]:
    """The seed keys the grid itself varies (then the grid's points are already the seeds)."""
    return [key for key in grid_keys(overrides) if key in seed_keys]


def repeat_over_seeds(points: Sequence[Point], seeds: int, seed_keys: Sequence[str]) -> list[Point]:
    """Each point as ``seeds`` experiments, ``<point>-s<seed>`` with every seed key set to seed 0..seeds-1."""
    repeated = []
    for point in points:
        for seed in range(seeds):
            extra = tuple(f"{key}={seed}" for key in seed_keys)
            repeated.append(Point(len(repeated) + 1, f"{point.name}{SEED_SUFFIX}{seed}", point.overrides + extra,
                                  {**point.values, **dict.fromkeys(seed_keys, seed)}, group=point.name))
    return repeated


def _seed_label(values: Mapping[str, Any], seed_keys: Sequence[str], position: int) -> str:
    """The grid's own seed value when it is a plain int on the one seed key varied, else the position."""
    varied = [values[key] for key in seed_keys if key in values]
    only = varied[0] if len(varied) == 1 else None
    return str(only) if isinstance(only, int) and not isinstance(only, bool) and only >= 0 else str(position)


def group_by_seed(points: Sequence[Point], seed_keys: Sequence[str], prefix: str) -> list[Point]:
    """A grid that varies seed keys itself: points sharing every other value form one group `<prefix>-<k>`."""
    groups: dict[str, list[int]] = {}
    for i, point in enumerate(points):
        rest = {key: value for key, value in point.values.items() if key not in seed_keys}
        groups.setdefault(repr(sorted(rest.items())), []).append(i)
    named = list(points)
    for k, members in enumerate(groups.values(), start=1):
        for position, i in enumerate(members):
            label = _seed_label(points[i].values, seed_keys, position)
            named[i] = dataclasses.replace(points[i], name=f"{prefix}-{k}{SEED_SUFFIX}{label}", group=f"{prefix}-{k}")
    return named


def check_seed_keys(keys: Sequence[str]) -> list[str]:
    if not keys or len(set(keys)) != len(keys) or not all(keys):
        raise SweepError(f"--seed-keys {','.join(keys)!r}: give distinct dotted params keys "
                         "(e.g. train.seed,split.seed)")
    return list(keys)


def seeded_points(
    points: Sequence[Point], overrides: Sequence[str], seeds: int, seed_keys: Sequence[str], prefix: str
) -> list[Point]:
    """The experiments of a grid over seeds: --seeds N repeats each point, a seed key in the grid groups them."""
    in_grid = seed_keys_in(overrides, seed_keys)
    if in_grid and seeds > 1:
        raise SweepError(f"{in_grid[0]} is in the grid and --seeds {seeds} is given: give the seeds one way")
    if in_grid:
        return group_by_seed(points, seed_keys, prefix)
    return repeat_over_seeds(points, seeds, seed_keys) if seeds > 1 else list(points)


def _pretrained_strategy_without_weights(cfg: Config) -> str | None:
    if STRATEGIES[cfg.strategy].pretrained and not BACKBONE_ENTRIES[cfg.model.backbone].pretrained:
        return (f"strategy {cfg.strategy} needs pretrained weights but backbone {cfg.model.backbone} "
                "has none (use strategy=scratch)")
    return None


def _pretrained_strategy_on_random_backbone(cfg: Config) -> str | None:
    spec = STRATEGIES[cfg.strategy]
    if spec.pretrained and cfg.model.weights == "none":
        what = "a frozen random backbone" if spec.frozen_backbone else "a random backbone"
        return f"strategy {cfg.strategy} with model.weights=none adapts {what} (use strategy=scratch)"
    return None


# Points that validate but make no sense; each rule returns why, or None. First match wins.
SKIP_RULES: tuple[Callable[[Config], str | None], ...] = (
    _pretrained_strategy_without_weights,
    _pretrained_strategy_on_random_backbone,
)


def skip_reason(cfg: Config) -> str | None:
    return next((reason for rule in SKIP_RULES if (reason := rule(cfg)) is not None), None)


def check_point(params_text: str, point: Point, copy: Path) -> Config:
    """``point`` applied to ``params_text`` written to ``copy`` as DVC applies it, then validated as every stage."""
    copy.write_text(params_text)
    try:
        apply_overrides(copy, list(point.overrides))
        return load_config(copy)
    except (DvcException, HydraException) as err:  # DVC's message is generic; its cause names the key
        raise SweepError(f"{point.name} ({point.label}): {tail(str(err.__cause__ or err))}") from None
    except ConfigError as err:
        raise SweepError(f"{point.name} ({point.label}): {err}") from None


def plan_points(
    params_path: Path, overrides: Sequence[str], prefix: str = DEFAULT_PREFIX, seeds: int = 1,
    seed_keys: Sequence[str] = DEFAULT_SEED_KEYS,
) -> list[Point]:
    """Expand the grid (over ``seeds`` when asked) and check every experiment against ``params_path`` before
    anything is queued: an invalid one is an error, a senseless one is skipped with the reason."""
    params, text = load_params(params_path), Path(params_path).read_text()
    experiments = seeded_points(expand(overrides, prefix), overrides, seeds, check_seed_keys(seed_keys), prefix)
    planned = []
    with tempfile.TemporaryDirectory(prefix="signflow-sweep-") as workdir:
        copy = Path(workdir) / paths.PARAMS.name
        for point in experiments:
            reason = skip_reason(check_point(text, point, copy))
            if reason:
                log.info("skipping %s (%s): %s", point.name, point.label, reason)
            elif load_params(copy) == params:
                log.info("%s has the workspace's params: DVC reuses the baseline's results (no training run)",
                         point.name)
            planned.append(dataclasses.replace(point, skip_reason=reason))
    if not any(point.skip_reason is None for point in planned):
        raise SweepError(f"all {len(planned)} points are skipped (first: {planned[0].skip_reason}); change the grid")
    return planned
