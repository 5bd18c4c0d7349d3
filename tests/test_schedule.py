"""The evaluation schedule ``trainer.eval``: epochs, every K epochs, log-spaced steps."""

from __future__ import annotations

import pytest

from infoflow.spec import ConfigError, validate
from infoflow.training.schedule import (
    ScheduleError,
    canonical,
    eval_points,
    parse_eval,
    steps_per_epoch,
)


def test_epoch_schedule_is_every_epoch_with_integer_epochs():
    points = eval_points("epoch", epochs=3, per_epoch=45)
    assert [p.step for p in points] == [0, 45, 90, 135]
    assert [p.epoch for p in points] == [0, 1, 2, 3]
    assert all(isinstance(p.epoch, int) for p in points)
    assert [p.index for p in points] == [0, 1, 2, 3]


@pytest.mark.parametrize("value", [2, "2", "every:2"])
def test_every_k_keeps_epoch_zero_and_the_last_epoch(value):
    points = eval_points(value, epochs=5, per_epoch=10)
    assert [p.epoch for p in points] == [0, 2, 4, 5]
    assert [p.step for p in points] == [0, 20, 40, 50]


def test_log_schedule_has_step_zero_fractions_of_epoch_one_and_the_end():
    per_epoch, epochs = 235, 5  # Fashion-MNIST at batch 256
    points = eval_points("log:20", epochs=epochs, per_epoch=per_epoch)
    steps = [p.step for p in points]
    assert steps[0] == 0 and steps[-1] == epochs * per_epoch
    assert all(a < b for a, b in zip(steps, steps[1:]))  # strictly increasing, no duplicates
    assert len(points) <= 21
    assert sum(s < per_epoch for s in steps[1:]) >= 5  # dense inside the first epoch
    assert all(isinstance(p.epoch, float) for p in points)
    assert points[3].epoch == pytest.approx(points[3].step / per_epoch)


def test_steps_per_epoch_counts_the_short_last_batch():
    assert steps_per_epoch(1437, 32) == 45
    assert steps_per_epoch(60000, 256) == 235
    assert steps_per_epoch(512, 256) == 2


def test_canonical_forms():
    assert canonical("epoch") == canonical(1) == canonical("every:1") == "epoch"
    assert canonical(3) == canonical("every:3") == "every:3"
    assert canonical("log:50") == "log:50"
    assert parse_eval("log:7") == ("log", 7)


@pytest.mark.parametrize("bad", ["bogus", "every:0", 0, -2, True, "log:1", "log:x", "every:", 2.5])
def test_bad_schedule_names_key_rule_and_value(bad):
    with pytest.raises(ScheduleError) as info:
        parse_eval(bad)
    msg = str(info.value)
    assert "trainer.eval" in msg and "must be" in msg and repr(bad) in msg
    with pytest.raises(ConfigError, match=r"trainer\.eval"):  # at the boundary, as every key
        validate({"trainer": {"eval": bad}})


def test_more_log_points_than_steps_is_refused_before_anything_is_allocated():
    assert eval_points("log:90", epochs=2, per_epoch=45)[-1].step == 90  # as many as steps
    with pytest.raises(ScheduleError, match=r"log:2000000000 .* \(2 epochs x 45 steps = 90\)"):
        eval_points("log:2000000000", epochs=2, per_epoch=45)
