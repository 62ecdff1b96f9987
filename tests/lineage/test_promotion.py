"""Promotion on a real MLflow store: versions whose runs hold hand-made test predictions.

No training: each version's run logs a ``predictions.csv`` built so the
verdict is known (a candidate misreading many more images is worse). What is
tested is what ``signflow promote`` does with the verdict: the aliases, the
records on the versions and the run, --force with its reason, and roll-back.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from review.test_compare import predictions

from signflow.config import ReviewConfig
from signflow.lineage.promotion import (
    CHAMPION,
    FIRST,
    FORCED,
    NOT_PAIRED,
    PREDICTIONS_ARTIFACT,
    PREVIOUS,
    PROMOTED,
    REFUSED,
    PromotionError,
    decide,
)
from signflow.lineage.trace import PROMOTION_TAG_PREFIX

NAME = "signflow"
CFG = ReviewConfig(bootstrap_resamples=200)
BINS = 15


class Clock:
    """A new second per decision: each record gets its own tag."""

    def __init__(self) -> None:
        self.second = 0

    def __call__(self) -> datetime:
        self.second += 1
        return datetime(2026, 12, 7, 12, 0, self.second, tzinfo=UTC)


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model(NAME)
    return client


def register(client: MlflowClient, tmp_path: Path, frame: pd.DataFrame) -> str:
    """A run holding ``frame`` as its evaluate predictions, registered as the next version."""
    experiment = client.get_experiment_by_name("signflow") or client.create_experiment("signflow")
    experiment_id = experiment if isinstance(experiment, str) else experiment.experiment_id
    run = client.create_run(experiment_id)
    folder = tmp_path / run.info.run_id / "evaluate"
    folder.mkdir(parents=True)
    frame.to_csv(folder / "predictions.csv", index=False)
    client.log_artifact(run.info.run_id, str(folder / "predictions.csv"), "evaluate")
    client.set_terminated(run.info.run_id)
    return str(client.create_model_version(NAME, f"runs:/{run.info.run_id}/model", run.info.run_id).version)


def promote(client: MlflowClient, version: str, clock: Clock, **options: object) -> object:
    options = {"force": False, "reason": None, **options}
    return decide(client, NAME, client.get_model_version(NAME, version), CFG, BINS, now=clock, **options)


def records(client: MlflowClient, version: str) -> list[dict]:
    tags = client.get_model_version(NAME, version).tags
    return [json.loads(v) for k, v in sorted(tags.items()) if k.startswith(PROMOTION_TAG_PREFIX)]


def aliases(client: MlflowClient) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(NAME).aliases.items()}


def test_promotion_refusal_force_and_rollback(client: MlflowClient, tmp_path: Path) -> None:
    clock = Clock()
    good = register(client, tmp_path, predictions(wrong={"stop": 12}))
    worse = register(client, tmp_path, predictions(wrong={"stop": 30, "give_way": 20}))
    better = register(client, tmp_path, predictions(wrong={}))

    first = promote(client, good, clock)
    assert first.outcome == FIRST and first.gate is None and aliases(client) == {CHAMPION: good}

    refused = promote(client, worse, clock)
    assert refused.outcome == REFUSED and not refused.promoted
    assert any(f.startswith("test.accuracy") for f in refused.gate.failures)
    assert aliases(client) == {CHAMPION: good}  # nothing moved
    [record] = records(client, worse)
    assert record["decision"] == REFUSED and record["champion"] == good and record["gate"] == "failed"
    assert "points" in record["figures"]["test.accuracy"] and record["by"]

    accepted = promote(client, better, clock)
    assert accepted.outcome == PROMOTED and accepted.gate.passed
    assert aliases(client) == {CHAMPION: better, PREVIOUS: good}
    assert records(client, good)[-1]["decision"] == f"replaced by version {better}"

    with pytest.raises(PromotionError, match="--reason"):
        promote(client, worse, clock, force=True)
    forced = promote(client, worse, clock, force=True, reason="hot-fix for a customer demo")
    assert forced.outcome == FORCED and aliases(client) == {CHAMPION: worse, PREVIOUS: better}
    assert records(client, worse)[-1]["reason"] == "hot-fix for a customer demo"

    rollback = promote(client, aliases(client)[PREVIOUS], clock)  # `signflow promote previous`
    assert rollback.outcome == PROMOTED and aliases(client) == {CHAMPION: better, PREVIOUS: worse}

    with pytest.raises(PromotionError, match="already the champion"):
        promote(client, better, clock)
    verdicts = client.list_artifacts(client.get_model_version(NAME, better).run_id, "promotion")
    assert len(verdicts) == 2  # promoted, then rolled back to: each decision's full verdict on the run


def test_different_test_images_refuse_the_promotion(client: MlflowClient, tmp_path: Path) -> None:
    clock = Clock()
    champion = register(client, tmp_path, predictions())
    other_images = register(client, tmp_path, predictions(prefix="new/"))
    promote(client, champion, clock)
    decision = promote(client, other_images, clock)
    assert decision.outcome == REFUSED and decision.gate.failures[0] == NOT_PAIRED


def test_a_version_without_predictions_is_a_clear_error(client: MlflowClient, tmp_path: Path) -> None:
    clock = Clock()
    promote(client, register(client, tmp_path, predictions()), clock)
    run = client.create_run(client.get_experiment_by_name("signflow").experiment_id)
    bare = client.create_model_version(NAME, f"runs:/{run.info.run_id}/model", run.info.run_id).version
    with pytest.raises(PromotionError, match=PREDICTIONS_ARTIFACT):
        promote(client, bare, clock)
