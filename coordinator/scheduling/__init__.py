"""Layer 3, scheduling: the priority formula (`scheduler`), the cost factor (`cost`), the preemption
rule (`preemption_rule`, pure) and its runtime (`preempter`, which acts on the stores).
"""
