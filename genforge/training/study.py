"""A study that several ``genforge tune`` workers share: opening it, claiming trial slots, heartbeats.

Workers on one Optuna storage (an SQLite file, or any RDB URL for many machines)
ask for trials until the study holds N that are finished, pruned or running; a
trial asked after that is marked surplus and dropped. A worker records its
running trial alive every heartbeat interval; one silent for ``GRACE`` intervals
(its worker was killed) is failed by the next worker that asks, and its slot is
run again.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from typing import Any, Callable, Iterator

from genforge.training.trainer import TrainingError

__all__ = ["GRACE", "HEARTBEAT_S", "SURPLUS", "open_study", "work"]

SURPLUS = "surplus"  # user attribute of a trial asked after the study already held N
HEARTBEAT_S = 60  # a worker records its running trial alive this often; GRACE intervals of silence fail it
GRACE = 3


def open_study(name: str, storage: str, direction: str, prune: bool, heartbeat_s: int = HEARTBEAT_S) -> Any:
    """Create or load the shared study (retrying while another worker creates the same database)."""
    import optuna

    kwargs = {"connect_args": {"timeout": 120}} if storage.startswith("sqlite") else {}
    for attempt in range(10):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
                store = optuna.storages.RDBStorage(storage, engine_kwargs=kwargs, heartbeat_interval=heartbeat_s,
                                                   grace_period=GRACE * heartbeat_s)
            return optuna.create_study(study_name=name, storage=store, load_if_exists=True, direction=direction,
                                       sampler=optuna.samplers.TPESampler(),
                                       pruner=optuna.pruners.MedianPruner(n_startup_trials=2) if prune
                                       else optuna.pruners.NopPruner())
        except Exception:  # noqa: BLE001  (a concurrent schema creation; the last attempt re-raises)
            if attempt == 9:
                raise
            time.sleep(0.2 + 0.3 * attempt)


def _taken(study: Any) -> list[int]:
    """Numbers of the trials that count toward N: finished, pruned or running."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sorted(t.number for t in study.get_trials(deepcopy=False, states=states)
                  if not t.user_attrs.get(SURPLUS))


@contextlib.contextmanager
def _alive(study: Any, trial: Any) -> Iterator[None]:
    """Record ``trial`` alive in the storage every heartbeat interval (a daemon thread) while the block runs, so
    that other workers fail it only when this worker is gone (killed, machine lost)."""
    storage, trial_id = study._storage, trial._trial_id  # optuna's ask/tell API exposes no public trial id
    interval = storage.get_heartbeat_interval()
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # noqa: BLE001  (a busy database: the next beat tries again)
                pass
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"tune-heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _fail_stale(study: Any) -> None:
    """Fail the running trials whose worker stopped recording them alive, and those whose worker was killed
    before their first heartbeat (optuna skips a trial without one; a live worker records it at once, so one
    older than the grace period has none only when its worker is gone); their slots count toward N again."""
    import datetime

    import optuna
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks fail_stale_trials experimental
        optuna.storages.fail_stale_trials(study)
    storage = study._storage  # optuna has no public query for a trial's heartbeats
    oldest = datetime.datetime.now() - datetime.timedelta(seconds=GRACE * storage.get_heartbeat_interval())
    session = getattr(storage, "_backend", storage).scoped_session()  # the RDB storage under optuna's cache
    try:
        never = [t.number for t in session.query(models.TrialModel).filter(
            models.TrialModel.study_id == study._study_id, models.TrialModel.state == TrialState.RUNNING)
            if not t.heartbeats and t.datetime_start is not None and t.datetime_start < oldest]
    finally:
        session.close()
    for number in never:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            study.tell(number, state=TrialState.FAIL)


def _tell(study: Any, trial: Any, notes: list[str], *args: Any, **kwargs: Any) -> None:
    """``study.tell``, except for a trial that another worker already failed as stale (its result is dropped)."""
    import optuna

    try:
        study.tell(trial, *args, **kwargs)
    except optuna.exceptions.UpdateFinishedTrialError:
        notes.append(f"trial {trial.number} was failed by another worker (no heartbeat for "
                     f"{GRACE * study._storage.get_heartbeat_interval()} s); its result is dropped")


def work(study: Any, n_trials: int, run_one: Callable[[Any], float]) -> tuple[int, list[str]]:
    """Ask and run trials until the study holds N; returns how many ran here and notes."""
    import optuna
    from optuna.trial import TrialState

    ran, failed, notes = 0, 0, []
    while True:
        _fail_stale(study)
        if len(_taken(study)) >= n_trials:
            break
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Heartbeat of storage")  # optuna expects optimize(); _alive beats here
            trial = study.ask()
        study._storage.record_heartbeat(trial._trial_id)  # at once: a trial with none is failed after the grace
        if trial.number not in _taken(study)[:n_trials]:  # another worker took the last slot meanwhile
            trial.set_user_attr(SURPLUS, True)
            study.tell(trial, state=TrialState.FAIL)
            break
        try:
            with _alive(study, trial):
                value = run_one(trial)
        except optuna.TrialPruned:
            _tell(study, trial, notes, state=TrialState.PRUNED)
        except TrainingError as e:  # e.g. a diverging learning rate: this trial fails, the search goes on
            _tell(study, trial, notes, state=TrialState.FAIL)
            failed += 1
            notes.append(f"trial {trial.number} failed: {e}")
            if failed > n_trials:
                notes.append("stopped: more failed trials than N")
                break
            continue
        except BaseException:
            _tell(study, trial, notes, state=TrialState.FAIL)
            raise
        else:
            _tell(study, trial, notes, value)
        ran += 1
    return ran, notes
