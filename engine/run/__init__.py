"""The run service: the one sequence every surface calls (`service`), with which facts file each
entity reads (`inputs`) and the output set a run writes (`outputs`). Above the batch primitives, the
history and the engines it orchestrates; below every surface.
"""
