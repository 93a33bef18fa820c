"""The decision history: periods recorded in one DuckDB file, and the questions asked of it.

`store` is a history file (`History`, made of `base`, `reading`, `past` and `recording`); `tables` is
what a period holds; `ids` the id hashes the periods are aligned by; `recorder` writes a run's period
beside the run; `questions` answers `kam history` (one entity's path) and `kam changes` (who moved).
"""
