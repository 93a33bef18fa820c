"""The batch primitives: a plan over a table of facts.

facts (read and check a facts file; `workbook` bounds and checks .xlsx files) -> evaluate (every step
over the whole table at once, in numpy) with `population` (ranks, shares, quantiles, quotas and
calibrated values, one definition for every engine) -> explain (rule ids, because texts, traces) ->
write (CSV, Parquet, JSON Lines or a workbook, swapped in as one set). `result` is what a run decided,
for every surface to read; `number_columns` writes and rounds numbers column-wise.
"""
