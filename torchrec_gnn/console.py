"""What a person sees on the console: this package's INFO logs, and the third-party warnings
a user cannot act on filtered, each with the reason (nothing of this package's own is silenced).

Filtered, every one raised by library code calling another library's deprecated API, not by
anything in a user's config or code:

* ``torch.fx``: "is_fx_tracing will return true for both fx.symbolic_trace and torch.export",
  logged once per process (the trainer and every DataLoader worker) because TorchRec's
  ``KeyedTensor`` regrouping asks ``is_fx_tracing()`` on every call.
* ``FutureWarning`` "`broadcast_buffers` is deprecated": TorchRec's ``DistributedModelParallel``
  passes the old DDP argument itself.
* ``DeprecationWarning`` from torch, fbgemm-gpu, torchrec and torchmetrics internals
  (``torch.jit.script``, fbgemm's lookup invokers, ``distutils`` versions): Python hides
  those outside ``__main__`` already; they stay hidden under ``-W default``-style runs too.
"""

from __future__ import annotations

import logging
import warnings

_THIRD_PARTY_DEPRECATIONS = r"(torch|fbgemm_gpu|torchrec|torchmetrics)(\.|$)"


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def configure_console() -> None:
    """INFO logs of ``torchrec_gnn`` to stderr and the filters above; safe to call twice.

    Call it at a program's entry (the CLI recipes and the examples do); DataLoader workers
    forked afterwards inherit it.
    """
    package = logging.getLogger("torchrec_gnn")
    if not package.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        package.addHandler(handler)
        package.propagate = False
    package.setLevel(logging.INFO)
    fx_logger = logging.getLogger("torch.fx._symbolic_trace")
    if not any(isinstance(f, _DropMessage) for f in fx_logger.filters):
        fx_logger.addFilter(_DropMessage("is_fx_tracing will return true"))
    warnings.filterwarnings("ignore", message=r"`broadcast_buffers` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=_THIRD_PARTY_DEPRECATIONS)
