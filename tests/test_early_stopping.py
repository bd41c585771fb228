"""`EarlyStoppingCB`: when it stops, `min_delta`, modes, NaN, resuming, and its errors."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from miniai import (
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CheckpointCB,
    EarlyStoppingCB,
    MetricsCB,
    TrainLearner,
    load_checkpoint,
)


class ScriptedValidLoss(Callback):
    """Makes every validation loss of epoch `e` equal `values[e]`."""
    def __init__(self, values): self.values = values

    def after_loss(self, learn):
        if not learn.training:
            learn.loss = learn.loss * 0 + self.values[learn.epoch]


def learner(values, *cbs):
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g))
    torch.manual_seed(0)
    return TrainLearner(nn.Linear(4, 2), SimpleNamespace(train=DataLoader(ds, 8), valid=DataLoader(ds, 8)),
                        F.cross_entropy, lr=0.1, cbs=[MetricsCB(), ScriptedValidLoss(values), *cbs])


def epochs_run(learn):
    return sorted({h['epoch'] for h in learn.metrics.history})


@pytest.mark.filterwarnings('ignore:MetricsCB. the valid loss')
@pytest.mark.parametrize('values, kw, stopped', [
    ([1.0, 0.95, 0.94, 0.96, 0.5, 0.4], dict(patience=2, min_delta=0.02), 3),  # 0.94 is not 0.02 better
    ([1.0, 0.95, 0.94, 0.96, 0.5, 0.4], dict(patience=2), None),               # it is better: no stop
    ([1.0, 2.0, 2.0, 2.0, 2.0, 2.0], dict(patience=3, mode='max'), 4),
    ([1.0, math.nan, math.nan, 0.5, 0.4, 0.3], dict(patience=2), 2),           # NaN is never better
])
def test_stops_after_patience_epochs_without_improvement(values, kw, stopped):
    es = EarlyStoppingCB(**kw)
    learn = learner(values, es)
    learn.fit(6)
    assert es.stopped_epoch == stopped
    assert epochs_run(learn) == list(range(6 if stopped is None else stopped + 1))


def test_a_resumed_fit_goes_on_counting(tmp_path):
    values = [1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.7]
    ref = EarlyStoppingCB(patience=3)
    learner(values, ref).fit(7)

    class StopAfter(Callback):
        order = CheckpointCB.order + 1  # after the epoch's checkpoint
        def after_epoch(self, learn):
            if not learn.training and learn.epoch == 2: raise CancelFitException()
    learner(values, EarlyStoppingCB(patience=3), CheckpointCB(tmp_path / 'ck.pt'), StopAfter()).fit(7)
    es = EarlyStoppingCB(patience=3)
    learn = learner(values, es, CheckpointCB(tmp_path / 'ck.pt'))
    learn.fit(7, resume=tmp_path / 'ck.pt')
    assert es.stopped_epoch == ref.stopped_epoch == 4 and epochs_run(learn) == list(range(5))


def test_bad_arguments_and_monitors_are_named():
    for kw, msg in ((dict(mode='lowest'), "'min' or 'max'"), *((dict(patience=p), 'a whole number >= 1; got')
                    for p in (0, True, 2.0, '3')), *((dict(min_delta=d), 'min_delta must be a number, 0 or more; got')
                                                    for d in (-1, '0.1', None, True, math.nan))):
        with pytest.raises(ValueError, match=msg):
            EarlyStoppingCB(**kw)
    es = EarlyStoppingCB(patience=np.int64(3), min_delta=np.float32(0.5))
    assert (es.patience, es.min_delta) == (3, 0.5) and type(es.patience) is int and type(es.min_delta) is float
    with pytest.raises(ValueError, match=r"EarlyStoppingCB: monitor='acc' is not one of this fit's values"):
        learner([1.0], EarlyStoppingCB(monitor='acc', mode='max')).fit(1)
    for cls in (EarlyStoppingCB, CheckpointCB):  # higher is better, or lower? Not guessed for a metric
        with pytest.raises(ValueError, match=rf"{cls.__name__}\(monitor='accuracy'\): say which way is better"):
            cls(monitor='accuracy')


def test_the_stop_ends_like_a_full_fit_and_is_checkpointed(tmp_path):
    values = [1.0, 0.9, 0.95, 0.96, 0.5, 0.4, 0.3, 0.2]
    es = EarlyStoppingCB(patience=1)
    learn = learner(values, es, CheckpointCB(tmp_path / 'ck.pt', every=2))
    learn.fit(8)
    assert es.stopped_epoch == 2 and learn.epoch == 2 and not learn.model.training  # eval mode, as after a full fit
    # every=2 saves after epochs 1 and 3; the epoch the fit stops after is saved too
    assert load_checkpoint(tmp_path / 'ck.pt')['epoch'] == 3
    resumed = EarlyStoppingCB(patience=1)
    again = learner(values, resumed, CheckpointCB(tmp_path / 'ck.pt', every=2))
    with pytest.warns(UserWarning, match='nothing to train'):
        again.fit(8, resume=tmp_path / 'ck.pt')
    assert epochs_run(again) == [0, 1, 2] and resumed.stopped_epoch == 2  # it stopped there: nothing more to train
    for p, q in zip(learn.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_an_epoch_without_the_value_does_not_count():
    class CancelTraining(Callback):
        def before_epoch(self, learn):
            if learn.training: raise CancelEpochException()
    es = EarlyStoppingCB(monitor='train_loss', patience=1)
    learn = learner([1.0] * 4, es, CancelTraining())
    with pytest.warns(UserWarning, match=r"epoch \d has no 'train_loss'.*does not count"):
        learn.fit(4)
    assert es.stopped_epoch is None and epochs_run(learn) == [0, 1, 2, 3]


def test_an_epoch_whose_valid_batches_were_all_cancelled_has_no_value(tmp_path):
    class SkipOddValid(Callback):  # e.g. validating every other epoch
        def before_batch(self, learn):
            if not learn.training and learn.epoch % 2: raise CancelBatchException()
    es, ck = EarlyStoppingCB(patience=1), CheckpointCB(tmp_path / 'ck.pt', monitor='valid_loss')
    learn = learner([1.0, 0.9, 0.8, 0.7], es, ck, SkipOddValid())
    with pytest.warns(UserWarning) as warned:
        learn.fit(4)
    msgs = [str(w.message) for w in warned]
    assert [m.split(':')[0] for m in msgs] == ['MetricsCB', 'EarlyStoppingCB'] * 2
    assert msgs[0].startswith('MetricsCB: no batch of the valid phase of epoch 1 counted')
    assert [h['epoch'] for h in learn.metrics.history if not h['train']] == [0, 2]
    assert es.best == ck.best == pytest.approx(0.8) and es.stopped_epoch is None


class StopAfterThisEpoch(Callback):
    """Sets `learn.should_stop` during the first batch of epoch 1 (e.g. a time budget): that epoch is finished."""
    def after_batch(self, learn):
        if learn.training and learn.epoch == 1 and learn.iter == 0: learn.should_stop = True


def test_should_stop_set_mid_epoch_finishes_the_epoch_also_after_a_mid_epoch_resume(tmp_path):
    ref = learner([1.0] * 5, StopAfterThisEpoch())
    ref.fit(5)
    assert epochs_run(ref) == [0, 1] and ref.train_iter == 4 and not ref.model.training

    class CancelAtBatchEnd(Callback):  # as `InterruptCB` does on Ctrl-C
        order = 100
        def after_batch(self, learn):
            if learn.training and learn.epoch == 1 and learn.iter == 0: raise CancelFitException()
    stopped = learner([1.0] * 5, StopAfterThisEpoch(), CancelAtBatchEnd())
    stopped.fit(5)
    stopped.save(tmp_path / 'mid.pt')
    resumed = learner([1.0] * 5, StopAfterThisEpoch())
    resumed.fit(5, resume=tmp_path / 'mid.pt')  # the rest of epoch 1, then the stop
    assert epochs_run(resumed) == [0, 1] and resumed.train_iter == 4
    assert torch.equal(resumed.model.weight, ref.model.weight)


@pytest.mark.filterwarnings('ignore:Checkpoint. callback states')
def test_resuming_a_stopped_run_trains_nothing_and_says_so_while_load_then_fit_trains_on(tmp_path):
    es = EarlyStoppingCB(patience=1)
    learn = learner([1.0] * 6, es, CheckpointCB(tmp_path / 'ck.pt'))
    learn.fit(6)
    assert es.stopped_epoch == 1
    again = learner([1.0] * 6, EarlyStoppingCB(patience=1))
    with pytest.warns(UserWarning, match='stopped early .* after epoch 1, so there is nothing to train'):
        again.fit(6, resume=tmp_path / 'ck.pt')
    assert torch.equal(again.model.weight, learn.model.weight) and again.should_stop
    again.save(tmp_path / 'same.pt')  # a resume that ran no epoch saves the checkpoint it resumed
    assert load_checkpoint(tmp_path / 'same.pt')['epoch'] == load_checkpoint(tmp_path / 'ck.pt')['epoch'] == 2
    fresh = learner([1.0] * 6, EarlyStoppingCB(patience=10))
    fresh.load(tmp_path / 'ck.pt')
    assert fresh.should_stop
    fresh.fit(2)  # a new fit: trains on from the loaded weights
    assert not fresh.should_stop and fresh.train_iter == 4


@pytest.mark.filterwarnings('ignore:Checkpoint. callback states')
def test_a_stop_set_in_before_fit_holds_on_resume(tmp_path):
    class StopAtOnce(Callback):
        def before_fit(self, learn): learn.should_stop = True
    learn = learner([1.0] * 4, CheckpointCB(tmp_path / 'ck.pt'))
    learn.fit(1)
    again = learner([1.0] * 4, StopAtOnce())
    again.fit(4, resume=tmp_path / 'ck.pt')
    assert again.train_iter == 2 and epochs_run(again) == [0]  # only the checkpoint's epoch


def test_a_state_saved_for_another_monitor_or_mode_is_refused(tmp_path):
    learn = learner([1.0, 0.9], EarlyStoppingCB(patience=3), CheckpointCB(tmp_path / 'ck.pt'))
    learn.fit(2)
    for es, this in ((EarlyStoppingCB('train_loss'), "monitor='train_loss', mode='min'"),
                     (EarlyStoppingCB(mode='max'), "monitor='valid_loss', mode='max'")):
        with pytest.raises(ValueError, match=f"watched monitor='valid_loss', mode='min'; this one {this}"):
            learner([1.0, 0.9], es).load(tmp_path / 'ck.pt')
    es = EarlyStoppingCB()
    es.load_state_dict({'best': 0.5, 'wait': 1, 'stopped_epoch': None})  # saved before monitor and mode were
    assert (es.best, es.wait) == (0.5, 1)
