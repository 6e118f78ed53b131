"""The op families: one file per family, each op one reader and one emitter per target.

Importing this package registers every op (see ``pipeline.importers.registry``).
Adding an op: a class in the family file it belongs to, decorated ``@register``,
with ``read`` and a ``torch`` and ``keras`` emitter (or a ``refusals`` entry), and a
test that converts a model using it.
"""

from . import (  # noqa: F401  (each module registers its ops on import)
    activation,
    conv,
    conv_transpose,
    elementwise,
    gather,
    linear,
    norm,
    pool,
    recurrent,
    reduce,
    resize,
    shape,
)
