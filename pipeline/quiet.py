"""Keep TensorFlow's and the exporters' start-up noise off the user's terminal.

TensorFlow's C++ runtime writes to file descriptor 2 before absl logging is
configured, so ``TF_CPP_MIN_LOG_LEVEL`` alone does not silence it.  We set the
environment variables early and redirect fd 2 while noisy native code runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

for _name in ("tensorflow", "tf2onnx", "absl", "torch.onnx", "onnxscript", "onnx_ir", "h5py"):
    logging.getLogger(_name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"(keras|tensorflow|tf2onnx|torch).*")

_DEBUG = False


def set_debug(flag: bool) -> None:
    """With ``--debug`` nothing is hidden."""
    global _DEBUG
    _DEBUG = flag


@contextlib.contextmanager
def native_stderr_to_log():
    """Redirect fd 2 (native code included) to a temporary file.

    On an exception the captured text is appended to the exception's notes so
    ``--debug`` still shows it; otherwise it is discarded.
    """
    if _DEBUG:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException as exc:
            os.dup2(saved, 2)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text and hasattr(exc, "add_note"):
                exc.add_note("captured stderr:\n" + text[-4000:])
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow():
    """Import TensorFlow and Keras quietly; return ``(tf, keras)``."""
    with native_stderr_to_log():
        import tensorflow as tf
        import keras

        tf.get_logger().setLevel(logging.ERROR)
        try:
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        except ImportError:  # pragma: no cover - absl ships with TensorFlow
            pass
    return tf, keras


def import_torch():
    """Import torch quietly (its ONNX exporter warns about torchvision)."""
    import torch

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    return torch
