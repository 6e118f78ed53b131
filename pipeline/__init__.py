"""pipeline: convert neural networks between PyTorch and Keras through ONNX.

Data flows through one module per stage::

    sources  -> export -> normalize -> importers -> parity
    (resolve)   (ONNX)    (passes)     (codegen)    (onnxruntime referee)

``pipeline.convert.convert`` runs one conversion; ``pipeline.cli`` and
``pipeline.batch`` are the command-line edge.
"""

__version__ = "0.1.0"
