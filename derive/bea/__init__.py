"""Backward error analysis of update rules: the η-expansion of a rule along its slow manifold
(:mod:`~nmech.derive.bea.expansion`), the order-by-order solve for the modified field and the
states (:mod:`~nmech.derive.bea.slow_manifold`), the result and its concrete evaluation
(:mod:`~nmech.derive.bea.modified_equation`), the modified loss by an exact curl test
(:mod:`~nmech.derive.bea.potential`), the second-order flow of momentum rules
(:mod:`~nmech.derive.bea.second_order`), and the inverse problem, the rule whose modified
equation is a chosen target (:mod:`~nmech.derive.bea.modifying`)."""
