"""The MLflow model `xp register` logs: MLflow's python_function flavor around the run's Keras export.

Logged as a model from code (mlflow.models.set_model below), with two artifacts: `keras_model` (model.keras, the
self-contained model of `xp export --format keras`: 0-255 RGB in, probabilities out) and `xp_model` (its
xp-model.json: class names in output order, image size, resize method).

Input: a DataFrame with a column `image` of images as base64 strings (JPEG, PNG, GIF or WebP bytes), as
`mlflow models serve` receives them in `{"dataframe_split": {"columns": ["image"], "data": [["<base64>"]]}}` or
`{"inputs": {"image": ["<base64>"]}}`. Each image is decoded to RGB and resized to the run's size with the run's
resize method (an image already at that size is used as it is). Output: a DataFrame with the column `class` (the
most probable), `probability` (its probability) and one column per class name with that class's probability.
"""

import base64
import io
import json

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class XpImageClassifier(PythonModel):
    def load_context(self, context):
        import keras

        self.model = keras.saving.load_model(context.artifacts["keras_model"])
        with open(context.artifacts["xp_model"], encoding="utf8") as f:
            self.info = json.load(f)

    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        images = np.stack([self.pixels(value, i) for i, value in enumerate(frame["image"])])
        outputs = np.asarray(self.model.predict(images, verbose=0), dtype=np.float64)
        names = self.info["class_names"]
        probabilities = np.concatenate([1 - outputs, outputs], axis=1) if outputs.shape[1] == 1 else outputs
        best = probabilities.argmax(axis=1)
        table = {"class": [names[k] for k in best], "probability": probabilities[np.arange(len(best)), best]}
        for j, name in enumerate(names):
            table[name] = probabilities[:, j]
        return pd.DataFrame(table)

    def pixels(self, value, index):
        from PIL import Image

        try:
            data = value if isinstance(value, bytes | bytearray) else base64.b64decode(value, validate=True)
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except Exception as error:
            raise ValueError(f"image {index} is not a base64 JPEG, PNG, GIF or WebP image: {error}") from error
        height, width = self.info["image_size"]
        if image.size != (width, height):
            resample = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
            image = image.resize((width, height), resample[self.info.get("resize", "nearest")])
        return np.asarray(image, dtype=np.float32)


mlflow.models.set_model(XpImageClassifier())
