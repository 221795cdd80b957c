"""Update rules: the :class:`Rule` object, the built-in optimizers, and the rule language.

>>> from nmech.derive import rules
>>> rules.heavy_ball().name
'heavy-ball'
>>> rules.parse("theta_next = theta - eta*grad(theta)").states
()
"""

from nmech.derive.rules.averaging import ema, lookahead, schedule_free
from nmech.derive.rules.builtins import (
    BUILTINS,
    adagrad,
    adam,
    adamw,
    builtin,
    clipped_gd,
    gd,
    heavy_ball,
    lion,
    nesterov,
    normalized_gd,
    rmsprop,
    sam,
    signsgd,
    signum,
    torch_sgd,
)
from nmech.derive.rules.language import parse_rule as parse
from nmech.derive.rules.rule import NEXT, PARAMETER, PREV, Assignment, Rule, rule_key

__all__ = [
    "Rule",
    "Assignment",
    "PARAMETER",
    "NEXT",
    "PREV",
    "rule_key",
    "parse",
    "builtin",
    "BUILTINS",
    "gd",
    "heavy_ball",
    "nesterov",
    "torch_sgd",
    "adam",
    "adamw",
    "adagrad",
    "rmsprop",
    "signsgd",
    "signum",
    "lion",
    "ema",
    "lookahead",
    "schedule_free",
    "normalized_gd",
    "sam",
    "clipped_gd",
]
