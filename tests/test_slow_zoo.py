"""Slow: whole model zoos (`make test-slow`).  Not part of the default run."""

import textwrap

import pytest

from pipeline.convert import Options, convert
from pipeline.spec import InputSpec

# keras.applications constructors and the smallest input each accepts comfortably.
KERAS_APPS = {
    "MobileNet": 96, "MobileNetV2": 96, "MobileNetV3Small": 96, "MobileNetV3Large": 96,
    "ResNet50": 96, "ResNet50V2": 96, "ResNet101": 96, "ResNet152": 96,
    "DenseNet121": 96, "EfficientNetB0": 96, "EfficientNetV2B0": 96, "VGG16": 64, "VGG19": 64,
    "InceptionV3": 96, "InceptionResNetV2": 96, "Xception": 96, "NASNetMobile": 96,
    "ConvNeXtTiny": 96,
}

FACTORY = """
import keras
import numpy as np

def build():
    keras.utils.set_random_seed(0)
    model = keras.applications.{name}(weights=None, input_shape=({size}, {size}, 3), classifier_activation=None)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # stand-in for trained statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            # gamma/beta may be absent (scale=False, center=False): randomize what the layer has.
            ranges = dict(gamma=(0.5, 1.5), beta=(-.2, .2), moving_mean=(-.2, .2), moving_variance=(0.5, 1.5))
            layer.set_weights([rng.uniform(*ranges[w.name], w.shape) for w in layer.weights])
    return model
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KERAS_APPS))
def test_keras_application_to_torch(tmp_path, name):
    size = KERAS_APPS[name]
    path = tmp_path / "app.py"
    path.write_text(textwrap.dedent(FACTORY.format(name=name, size=size)))
    # The application's input is named by Keras; its static shape only lacks the batch.
    from pipeline.sources import _keras_input_name, _load_module_from_file

    model = _load_module_from_file(path).build()
    spec = InputSpec(_keras_input_name(model.inputs[0]), (1, size, size, 3))
    result = convert(Options(model=f"{path}:build", to="torch", out=str(tmp_path / "out"), inputs=[spec]))
    assert result.exit_code == 0, result.report["parity"]
    assert result.report["parity"]["outputs"][0]["max_rel_err"] <= 1e-4


@pytest.mark.slow
def test_convnext_t_sized_torch_to_keras(tmp_path):
    result = convert(Options(model="models/torch_zoo.py:convnext_t", to="keras", out=str(tmp_path / "out"),
                             inputs=[InputSpec("x", (1, 3, 224, 224))]))
    assert result.exit_code == 0
    assert result.report["parity"]["outputs"][0]["max_rel_err"] <= 1e-4
