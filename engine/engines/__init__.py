"""The other engines of the same plan: `durable` (rule matching by durable_rules) and `stream`
(`kam stream`, one event at a time), `calibration` (saved populations, so one entity is scored as in
its batch), `dask` (`kam run --engine dask`, partitions on a cluster). Each agrees with the batch
evaluator; the differential tests hold them to it.
"""
