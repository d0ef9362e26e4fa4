"""The engine: pairs of residual functions `(f, g)` run in the reversible or the sequential form.

Couplings, stream layouts, argument routes, the two executions (`"invert"` and `"autograd"`)
and `check_reversible`. Imports torch only: nothing from the rest of revzoo.
"""

from __future__ import annotations

from ._adapter import BottleneckAdapter as BottleneckAdapter
from ._check import BlockReport as BlockReport
from ._check import ReversibilityReport as ReversibilityReport
from ._check import check_reversible as check_reversible
from ._coupling import Coupling as Coupling
from ._layout import StreamLayout as StreamLayout
from ._model import ZooModel as ZooModel
from ._record import apply_coupling_record as apply_coupling_record
from ._record import coupling_record as coupling_record
from ._routes import RoutesArg as RoutesArg
from ._sequence import EXECUTIONS as EXECUTIONS
from ._sequence import FORMS as FORMS
from ._sequence import Execution as Execution
from ._sequence import Form as Form
from ._sequence import ReversibleSequence as ReversibleSequence
from ._sequence import get_execution as get_execution
from ._sequence import get_form as get_form
from ._sequence import named_stacks as named_stacks
from ._sequence import set_execution as set_execution
from ._sequence import set_form as set_form
from ._slots import tensors_in as tensors_in

__all__ = [
    "EXECUTIONS",
    "FORMS",
    "BlockReport",
    "BottleneckAdapter",
    "Coupling",
    "Execution",
    "Form",
    "ReversibilityReport",
    "ReversibleSequence",
    "RoutesArg",
    "StreamLayout",
    "ZooModel",
    "apply_coupling_record",
    "check_reversible",
    "coupling_record",
    "get_execution",
    "get_form",
    "named_stacks",
    "set_execution",
    "set_form",
    "tensors_in",
]
