"""MODEL given as a file: .pt2 (torch.export), .keras, SavedModel folder."""


from pipeline.convert import Options, convert
from pipeline.sources import resolve
from pipeline.spec import InputSpec, Symbol


def test_pt2_file_to_keras(tmp_path):
    import torch

    from models.seed_torch_encoder import build

    path = tmp_path / "encoder.pt2"
    torch.export.save(torch.export.export(build(), (torch.randn(4, 10, 128),)), str(path))
    result = convert(Options(model=str(path), to="keras", out=str(tmp_path / "out")))
    assert result.exit_code == 0
    assert result.report["source"] == "torch"
    assert result.report["parity"]["outputs"][0]["max_abs_err"] <= 1e-5


def _small_keras_model():
    import keras

    keras.utils.set_random_seed(7)
    x = keras.Input(shape=(9, 9, 3), batch_size=2, name="image")
    y = keras.layers.Conv2D(4, 3, strides=2, padding="same", bias_initializer="random_normal")(x)
    y = keras.layers.ReLU()(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, keras.layers.Dense(3, bias_initializer="random_normal")(y))


def test_keras_file_to_torch(tmp_path):
    path = tmp_path / "small.keras"
    _small_keras_model().save(path)
    result = convert(Options(model=str(path), out=str(tmp_path / "out")))
    assert result.exit_code == 0 and result.report["target"] == "torch"
    assert result.report["parity"]["outputs"][0]["max_abs_err"] <= 1e-5


def test_savedmodel_folder_to_torch(tmp_path):
    model = _small_keras_model()
    folder = tmp_path / "saved"
    model.export(str(folder), verbose=False)
    # The exported signature has an open batch: B, example 2 unless --dim B= or --input says otherwise.
    assert resolve(str(folder)).inputs[0].dims == (Symbol("B", 2), 9, 9, 3)
    assert resolve(str(folder), dims={"B": 5}).inputs[0].dims == (Symbol("B", 5), 9, 9, 3)
    result = convert(Options(model=str(folder), out=str(tmp_path / "out"), inputs=[InputSpec("image", (2, 9, 9, 3))]))
    assert result.exit_code == 0 and result.report["source"] == "tf"
    assert result.report["parity"]["outputs"][0]["max_abs_err"] <= 1e-5
