"""``nmech flow``: full-batch iterates of a rule on a real network against its modified flows
(:mod:`~nmech.validation.flow.run`), the data (:mod:`~nmech.validation.flow.data`) and the
output folder (:mod:`~nmech.validation.flow.report`)."""
