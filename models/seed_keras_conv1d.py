"""Seed 1 (Keras -> PyTorch): ``Conv1D(filters=1024, kernel_size=5, padding="same")``.

From the first seed question: a Keras Conv1D on channels-last input
``(256, 237, 21)`` giving ``(256, 237, 1024)``; the person could not find the
PyTorch equivalent.  The answer is ``nn.Conv1d(21, 1024, kernel_size=5,
padding=2)`` between two permutes.
"""

INPUTS = {"x": (256, 237, 21)}


def build():
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    x = keras.Input(shape=(237, 21), batch_size=256, name="x")
    conv = keras.layers.Conv1D(filters=1024, kernel_size=5, padding="same", name="conv1d")
    model = keras.Model(x, conv(x), name="seed_keras_conv1d")
    # Stand-in for trained weights: a non-zero bias, so the bias path is exercised.
    conv.bias.assign(np.random.default_rng(0).standard_normal(1024).astype("float32") * 0.1)
    return model
