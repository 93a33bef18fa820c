"""What holds for every possible portfolio, found without the user's data: `rules` (rules that can
never fire, overlaps, gaps, unused names) and `invariants` (each invariant proved, or refuted with an
example entity that the batch evaluator confirms).
"""
