"""Logs a run's Keras export as an MLflow model (xp_pyfunc.py) under its run and registers a version of it.

  register_model.py --keras model.keras --metadata xp-model.json --run-id ID --name NAME \
      --metric final_val_accuracy --value 0.83 --direction maximize --example image.jpg [--tag key=value ...]

MLFLOW_TRACKING_URI (and MLflow's credential variables) name the server. The run keeps its status and end time:
logging reopens it, and it is closed again as it was. The version carries the metric and the tags; the alias
`champion` moves to it only when its metric beats the champion's (or there is none). Prints one JSON line:
{"version": "3", "model_uri": "models:/...", "champion": true, "previous": {"version": "2", "value": 0.81}}.
"""

import argparse
import base64
import importlib.metadata
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
CHAMPION = "champion"


def main() -> int:
    parser = argparse.ArgumentParser()
    for flag in ("--keras", "--metadata", "--run-id", "--name", "--metric", "--direction", "--example"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--value", type=float, required=True)
    parser.add_argument("--tag", action="append", default=[])
    args = parser.parse_args()

    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    client = MlflowClient()
    before = client.get_run(args.run_id).info
    with open(args.example, "rb") as f:
        example = pd.DataFrame({"image": [base64.b64encode(f.read()).decode("ascii")]})
    with mlflow.start_run(run_id=args.run_id):
        logged = mlflow.pyfunc.log_model(
            name="model",
            python_model=os.path.join(HERE, "xp_pyfunc.py"),
            artifacts={"keras_model": args.keras, "xp_model": args.metadata},
            input_example=example,
            pip_requirements=[f"{p}=={importlib.metadata.version(p)}" for p in REQUIREMENTS],
            registered_model_name=args.name,
            await_registration_for=120,
        )
    client.set_terminated(args.run_id, before.status, end_time=before.end_time)

    version = str(logged.registered_model_version)
    tags = dict(t.split("=", 1) for t in args.tag)
    tags.update({"xp.metric": args.metric, "xp.metric_value": repr(args.value), "xp.run_id": args.run_id})
    for key, value in tags.items():
        client.set_model_version_tag(args.name, version, key, value)

    previous = champion(client, args.name, args.metric)
    better = previous is None or (
        args.value > previous["value"] if args.direction == "maximize" else args.value < previous["value"]
    )
    if better:
        client.set_registered_model_alias(args.name, CHAMPION, version)
    print(json.dumps({"version": version, "model_uri": logged.model_uri, "champion": better, "previous": previous}))
    return 0


def champion(client, name: str, metric: str):
    """The current champion's version and metric; None when there is none or it was scored on another metric."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    if version.tags.get("xp.metric") != metric or "xp.metric_value" not in version.tags:
        return None
    return {"version": str(version.version), "value": float(version.tags["xp.metric_value"])}


# What serving the model needs, pinned at the versions of the environment that logged it.
REQUIREMENTS = ("mlflow", "tensorflow-cpu", "keras", "pandas", "pillow", "numpy")


if __name__ == "__main__":
    sys.exit(main())
