"""One Optuna study, driven by xp over JSON lines: a request per line on stdin, one answer per line on stdout.

Started by src/search/optuna.ts with the project's .venv python. The study lives in a journal file (an
append-only log Optuna replays), so a search run again continues where it stopped.

Requests and answers:
  {"op": "ask", "n": k}                     -> {"trials": [{"number": 3, "index": 4, "params": {...}, "again": false}]}
  {"op": "report", "number": 3, "epoch": 2, "value": 0.71}
                                             -> {"prune": true, "reason": "..."}
  {"op": "tell", "number": 3, "state": "complete" | "pruned" | "fail", "value": 0.74}  -> {}
  {"op": "counts"}                          -> {"complete": 5, "pruned": 3, "fail": 0, "running": 1}
  {"op": "summary", "dir": "/abs/dir"}      -> {"best": {"number": 2, "index": 3, "value": 0.8, "params": {...}} | null,
                                                "files": ["trials.csv", ...], "skipped": {"param_importances.png": "why"},
                                                "pruned_epochs": [1, 1, 3]}
Any failure answers {"error": "..."}; the study keeps what it was told.

A grid or random sweep with early_terminate gives its trials in the spec ("listed": [{"index": 1, "values": {...}}]):
each is enqueued with its values fixed, so the study (and its pruner) sees the same distributions as a search's, and
"index" is its place in the list; a search's index is its trial number + 1.
"""

import argparse
import csv
import json
import math
import os
import statistics
import sys
import warnings

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Optuna's matplotlib plots are marked experimental; the pictures are files, never a window.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
os.environ.setdefault("MPLBACKEND", "Agg")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", required=True, help="journal file of the study")
    parser.add_argument("--study", required=True)
    parser.add_argument("--spec", required=True, help="JSON: method, seed, direction, trials, parameters, pruner")
    args = parser.parse_args()
    spec = json.loads(args.spec)

    storage = JournalStorage(JournalFileBackend(args.storage))
    existing = optuna.load_study(study_name=args.study, storage=storage) if has_study(storage, args.study) else None
    done = len(existing.trials) if existing else 0
    # The sampler's seed: the sweep's seed for a new study (the same first round on any machine); a continued
    # study draws on from a seed of its own, so its first random trials are not the first study's again.
    seed = spec["seed"] if done == 0 else (spec["seed"] * 1_000_003 + done) % 2**32
    study = optuna.create_study(
        study_name=args.study,
        storage=storage,
        load_if_exists=True,
        direction=spec["direction"],
        sampler=sampler_of(spec["method"], seed),
        pruner=pruner_of(spec.get("pruner")),
    )
    driver = Driver(study, spec)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = driver.handle(json.loads(line))
        except Exception as error:  # every failure is answered, the study stays as it was told
            answer = {"error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def has_study(storage: JournalStorage, name: str) -> bool:
    return any(s.study_name == name for s in storage.get_all_studies())


def sampler_of(method: str, seed: int) -> optuna.samplers.BaseSampler:
    if method in ("grid", "random"):
        # Listed trials are enqueued with every value fixed: the sampler never draws.
        return optuna.samplers.RandomSampler(seed=seed)
    if method == "tpe":
        # constant_liar: trials asked in one round, not yet told, count as bad guesses, so a round spreads out.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if method == "cmaes":
        # CMA-ES covers the numeric parameters; categorical ones fall back to independent random draws, which
        # the schema says, so Optuna's warning about it would only repeat that on every trial.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise ValueError(f"unknown method {method}")


def pruner_of(spec: dict | None) -> optuna.pruners.BasePruner:
    if spec is None:
        return optuna.pruners.NopPruner()
    kind, min_epochs, eta, epochs = spec["type"], spec["min_epochs"], spec["eta"], spec["max_epochs"]
    if kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=eta)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=epochs, reduction_factor=eta)
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=min_epochs - 1)
    raise ValueError(f"unknown early_terminate type {kind}")


class Driver:
    def __init__(self, study: optuna.Study, spec: dict) -> None:
        self.study = study
        self.spec = spec
        self.open: dict[int, optuna.Trial] = {}
        # Trials left RUNNING by an earlier process (interrupted): handed out again first, never asked anew.
        self.again = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]

    def handle(self, request: dict) -> dict:
        op = request["op"]
        if op == "ask":
            return {"trials": self.ask(int(request["n"]))}
        if op == "report":
            return self.report(int(request["number"]), int(request["epoch"]), float(request["value"]))
        if op == "tell":
            self.tell(int(request["number"]), request["state"], request.get("value"))
            return {}
        if op == "counts":
            return self.counts()
        if op == "summary":
            return self.summary(request["dir"])
        raise ValueError(f"unknown op {op}")

    def counts(self) -> dict:
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        return {
            "complete": states.count(TrialState.COMPLETE),
            "pruned": states.count(TrialState.PRUNED),
            "fail": states.count(TrialState.FAIL),
            "running": states.count(TrialState.RUNNING),
        }

    def ask(self, n: int) -> list[dict]:
        counts = self.counts()
        ended = counts["complete"] + counts["pruned"] + counts["fail"]
        out = []
        while self.again and len(out) < n:
            frozen = self.again.pop(0)
            trial = optuna.Trial(self.study, frozen._trial_id)
            self.open[frozen.number] = trial
            index = frozen.user_attrs.get(INDEX, frozen.number + 1)
            out.append({"number": frozen.number, "index": index, "params": self.params(trial), "again": True})
        if "listed" in self.spec:
            return out + self.ask_listed(n - len(out))
        left = self.spec["trials"] - ended - counts["running"]
        while len(out) < n and left > 0:
            trial = self.study.ask()
            self.open[trial.number] = trial
            out.append({"number": trial.number, "index": trial.number + 1, "params": self.params(trial), "again": False})
            left -= 1
        return out

    def ask_listed(self, n: int) -> list[dict]:
        """The next listed trials the study has not seen, in the list's order, each with its values fixed."""
        seen = {t.user_attrs.get(INDEX) for t in self.study.get_trials(deepcopy=False)}
        out = []
        for entry in self.spec["listed"]:
            if len(out) >= n:
                break
            if entry["index"] in seen:
                continue
            fixed = {name: encode(self.spec["parameters"][name], value) for name, value in entry["values"].items()}
            self.study.enqueue_trial(fixed, user_attrs={INDEX: entry["index"]})
            trial = self.study.ask()
            self.open[trial.number] = trial
            out.append({"number": trial.number, "index": entry["index"], "params": self.params(trial), "again": False})
        return out

    def params(self, trial: optuna.Trial) -> dict:
        return {name: suggest(trial, name, spec) for name, spec in self.spec["parameters"].items()}

    def report(self, number: int, epoch: int, value: float) -> dict:
        trial = self.open[number]
        trial.report(value, epoch)
        if not trial.should_prune():
            return {"prune": False}
        return {"prune": True, "reason": self.reason(number, epoch, value)}

    def reason(self, number: int, epoch: int, value: float) -> str:
        """Why the pruner stopped the trial, in its own terms."""
        kind = self.spec["pruner"]["type"]
        if math.isnan(value):
            return "the metric is not a number"
        trials = self.study.get_trials(deepcopy=False)
        me = next(t for t in trials if t.number == number)
        if kind == "median":
            others = [t.intermediate_values[epoch] for t in trials
                      if t.state == TrialState.COMPLETE and epoch in t.intermediate_values]
            return f"the median of {len(others)} finished trial(s) at this epoch is {statistics.median(others):.4f}"
        rungs = [k for k in me.system_attrs if k.startswith("completed_rung_")]
        if not rungs:
            return "behind at its first rung"
        rung = max(rungs, key=lambda k: int(k.rsplit("_", 1)[1]))
        competing = sorted((t.system_attrs[rung] for t in trials if rung in t.system_attrs), reverse=self.maximize)
        eta = self.spec["pruner"]["eta"]
        keep = max(1, len(competing) // eta)
        return (f"the rung's top {keep} of {len(competing)} (1/{eta}) starts at {competing[keep - 1]:.4f}")

    @property
    def maximize(self) -> bool:
        return self.study.direction == optuna.study.StudyDirection.MAXIMIZE

    def tell(self, number: int, state: str, value: float | None) -> None:
        trial = self.open.pop(number, None) or optuna.Trial(self.study, self.trial_id(number))
        if state == "complete":
            self.study.tell(trial, value)
        elif state == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    def summary(self, directory: str) -> dict:
        """The study as the sweep's parent run shows it: its best trial, its trial table and Optuna's two plots."""
        os.makedirs(directory, exist_ok=True)
        trials = self.study.get_trials(deepcopy=False)
        names = list(self.spec["parameters"])
        with open(os.path.join(directory, "trials.csv"), "w", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(["number", "index", "state", *names, "value", "pruned_epoch"])
            for t in trials:
                pruned = max(t.intermediate_values) if t.state == TrialState.PRUNED and t.intermediate_values else ""
                index = t.user_attrs.get(INDEX, t.number + 1)
                params = [shown(t.params.get(name, "")) for name in names]
                value = "" if t.value is None else t.value
                writer.writerow([t.number, index, t.state.name, *params, value, pruned])
        files, skipped = ["trials.csv"], {}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        for name, plot, least in (
            ("optimization_history.png", plot_history, 1),
            ("param_importances.png", plot_importances, 2),
        ):
            if len(complete) < least:
                skipped[name] = f"needs {least} finished trial(s), the study has {len(complete)}"
                continue
            try:
                plot(self.study, os.path.join(directory, name))
                files.append(name)
            except Exception as error:  # a plot Optuna cannot draw is left out, saying why
                skipped[name] = f"{type(error).__name__}: {error}"
        best = None
        if complete:
            b = self.study.best_trial
            params = {name: json.loads(v) if isinstance(v, str) else v for name, v in b.params.items()}
            best = {"number": b.number, "index": b.user_attrs.get(INDEX, b.number + 1), "value": b.value, "params": params}
        pruned = [max(t.intermediate_values) for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
        return {"best": best, "files": files, "skipped": skipped, "pruned_epochs": pruned}

    def trial_id(self, number: int) -> int:
        return next(t._trial_id for t in self.study.get_trials(deepcopy=False) if t.number == number)


INDEX = "xp_index"


def shown(value: object) -> object:
    """A categorical value's JSON text as the value it stands for, in the table."""
    return json.loads(value) if isinstance(value, str) else value


def figure_to(ax_or_axes: object, file: str) -> None:
    import matplotlib.pyplot as plt

    fig = (ax_or_axes.flat[0] if hasattr(ax_or_axes, "flat") else ax_or_axes).get_figure()
    fig.tight_layout()
    fig.savefig(file, dpi=100)
    plt.close(fig)


def plot_history(study: optuna.Study, file: str) -> None:
    from optuna.visualization import matplotlib as plots

    figure_to(plots.plot_optimization_history(study), file)


def plot_importances(study: optuna.Study, file: str) -> None:
    # fANOVA, Optuna's default evaluator, fits scikit-learn's random forest (installed with MLflow); seeded so the
    # picture is the same for the same study.
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import matplotlib as plots

    figure_to(plots.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0)), file)


def encode(spec: object, value: object) -> object:
    """A listed trial's value as suggest() asks for it: categorical values by their JSON text."""
    if isinstance(spec, list) or spec["distribution"] == "choice":
        return json.dumps(value)
    return value


def suggest(trial: optuna.Trial, name: str, spec: object) -> object:
    # Lists and choices are categorical over their values' JSON text (Optuna's choices are scalars).
    if isinstance(spec, list):
        return json.loads(trial.suggest_categorical(name, [json.dumps(v) for v in spec]))
    kind = spec["distribution"]
    if kind == "choice":
        return json.loads(trial.suggest_categorical(name, [json.dumps(v) for v in spec["values"]]))
    if kind == "int":
        return trial.suggest_int(name, int(spec["min"]), int(spec["max"]))
    return trial.suggest_float(name, float(spec["min"]), float(spec["max"]), log=kind == "log_uniform")


if __name__ == "__main__":
    main()
