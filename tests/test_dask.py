"""`kam run --engine dask` gives the pandas backend's outputs, value for value and text for text, on
a real local Dask cluster (2 worker processes): uneven partitions, an empty one, a whole tie group in
one partition, ranges of sorted values much smaller than the data, joins across partitions."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from .conftest import ROOT, kam, kam_here
from engine.run import service as api
from engine.run import inputs as run_inputs
from engine.batch.result import RunResult
from engine.engines import dask as distributed
from engine.language.compile import compile_policies
from engine.batch.write import write_frame

sys.path.insert(0, str(ROOT / "benchmarks"))
import dask_data  # noqa: E402

pytestmark = pytest.mark.xdist_group("dask")


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="2GiB",
                           dashboard_address=None)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def _pandas_outputs(pl, parts: dict[str, list[Path]]) -> tuple[RunResult, dict[str, pd.DataFrame]]:
    """The pandas backend on the partitions put together, in partition order."""
    frames = {e: pd.concat([distributed.read_partition(pl, e, str(p), None) for p in ps], ignore_index=True)
              for e, ps in parts.items()}
    result = api.run(pl, frames)
    return result, result.outputs()


def _same_outputs(expected: dict[str, pd.DataFrame], folder: Path, tmp: Path) -> None:
    for entity, frame in expected.items():
        parts = sorted((folder / f"{entity}_decisions").glob("part-*.parquet"))
        got = pq.read_table(parts).to_pandas()
        want_path = tmp / f"want-{entity}.parquet"
        write_frame(frame, want_path, "parquet")
        # every column, its type and every value (the because texts included)
        assert pq.read_table(want_path).equals(pq.read_table(parts)), entity
        assert len(got) == len(frame)


def _generated(client, tmp_path: Path, customers: int, partitions: int, tie_rows: int, range_rows: int):
    """Generated partitions through both engines; the Dask run's figures and the pandas result."""
    parts = dask_data.make(tmp_path / "data", customers, partitions, tie_rows=tie_rows)
    pl = compile_policies(ROOT / "policies")
    result, expected = _pandas_outputs(pl, parts)
    staging = tmp_path / "staged"
    staging.mkdir()
    done = distributed.run(pl, parts, client, staging, range_rows=range_rows)
    _same_outputs(expected, staging, tmp_path)
    return pl, done, result


@pytest.mark.slow  # the default suite keeps to 2 minutes; CI runs it with the slow ones
def test_generated_partitions_give_the_pandas_outputs(client, tmp_path):
    # ranges of 500 sorted values and buckets of 500 keys: every population call and join crosses
    # many ranges, and the tie groups sit across range boundaries' reach
    pl, done, result = _generated(client, tmp_path, 6_000, 6, 300, 500)
    merged = distributed.merge(pl, done)
    assert merged["counts"] == result.counts()
    assert merged["measures"] == result.measures()
    assert merged["warnings"] == result.warnings() + result.conflicts()


def test_kam_run_engine_dask_on_partitioned_examples(tmp_path):
    """The real `kam` entry point, its own local cluster, the examples cut into uneven partitions."""
    data = tmp_path / "data"
    frames = run_inputs.read_inputs(compile_policies(ROOT / "policies"),
                             {"customer": ROOT / "examples/customers.csv", "quote": ROOT / "examples/quotes.csv",
                              "prospect": ROOT / "examples/prospects.csv"})
    for entity, frame in frames.items():
        (data / f"{entity}s").mkdir(parents=True)
        cuts = [0, len(frame) // 3, len(frame) // 3, len(frame) - 7, len(frame)]  # one empty partition
        for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
            pq.write_table(pa.Table.from_pandas(frame.iloc[a:b], preserve_index=False),
                           data / f"{entity}s" / f"part-{i}.parquet")
    out = tmp_path / "out"
    r = kam("run", "--engine", "dask", "--data", str(data), "--out", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and "customer: 2,000 decided" in r.stdout
    reference = tmp_path / "ref"
    r2 = kam_here("run", "--out", str(reference), "--output-format", "parquet", "-q")
    assert r2.returncode == 0, r2.stderr
    for entity in ("customer", "quote", "prospect"):
        want = pq.read_table(reference / f"{entity}_decisions.parquet")
        got = pq.read_table(sorted((out / f"{entity}_decisions").glob("*.parquet")))
        assert want.equals(got), entity
    m, ref = json.loads((out / "manifest.json").read_text()), json.loads((reference / "manifest.json").read_text())
    for key in ("decision_counts", "measures", "invariants", "warnings"):
        assert m[key] == ref[key], key
    listed = {p["path"] for o in m["outputs"] for p in o["parts"]}
    assert listed == {str(p.relative_to(out)) for p in out.rglob("*.parquet")}
    assert m["engine"]["name"] == "dask"


def test_dask_refusals(tmp_path):
    r = kam_here("run", "--engine", "dask", "--report", str(tmp_path / "r.html"))
    assert r.returncode == 2 and "--engine dask does not take --report" in r.stderr
    r = kam_here("run", "--engine", "dask", "--data", str(tmp_path))
    assert r.returncode == 2 and "no Parquet partitions of customer" in r.stderr
    r = kam_here("run", "--engine", "dask", "--output-format", "csv")
    assert r.returncode == 2 and "--engine dask does not take --output-format csv" in r.stderr
    r = kam_here("run", "--scheduler", "tcp://127.0.0.1:1")
    assert r.returncode == 2 and "--scheduler is for --engine dask" in r.stderr
    # read before the run's own error handling began: a traceback
    r = kam_here("run", "--engine", "dask", "--delimiter", ";;")
    assert r.returncode == 2 and "--delimiter ';;' must be one character" in r.stderr, r.stderr


def test_a_key_repeated_across_partitions_is_refused(client, tmp_path):
    pl = compile_policies(ROOT / "policies").only(["prospect"])
    parts = dask_data.make(tmp_path / "data", 4_000, 4)
    first = pq.read_table(parts["prospect"][0]).to_pandas()
    last = pq.read_table(parts["prospect"][-1]).to_pandas()
    last.loc[last.index[3], "prospect_id"] = first["prospect_id"].iloc[5]
    pq.write_table(pa.Table.from_pandas(last, preserve_index=False), parts["prospect"][-1])
    staging = tmp_path / "staged"
    staging.mkdir()
    from engine.language.errors import InputError

    with pytest.raises(InputError, match=f"prospect_id '{first['prospect_id'].iloc[5]}' appears 2 times"):
        distributed.run(pl, {"prospect": parts["prospect"]}, client, staging, range_rows=700)


@pytest.mark.slow
def test_two_million_customers_in_uneven_partitions(client, tmp_path):
    _generated(client, tmp_path, 2_000_000, 7, 5_000, 400_000)


# -- the differential generator's random policies, partitioned ------------------------------------

def _random_case(client, tmp: Path, policy: str, table: pd.DataFrame, cuts: list[int]) -> None:
    from .test_differential import compile_random

    pl, frame = compile_random(tmp, policy, table)
    batch = api.run(pl, {"customer": frame})
    expected = batch.outputs()
    bounds = sorted({0, len(frame), *[c % (len(frame) + 1) for c in cuts]})
    bounds = [0] + bounds[1:-1] + [bounds[-1], bounds[-1]]  # and an empty partition at the end
    parts = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        path = tmp / "parts" / f"part-{i}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame.iloc[a:b], preserve_index=False), path)
        parts.append(path)
    staging = tmp / "staged"
    staging.mkdir()
    done = distributed.run(pl, {"customer": parts}, client, staging, range_rows=2)  # ranges of two rows
    merged = distributed.merge(pl, done)
    # the figures too: counts, measures and the conflicts' warnings, gathered from the partitions
    assert merged["counts"] == batch.counts() and merged["measures"] == batch.measures(), policy
    assert merged["warnings"] == batch.warnings() + batch.conflicts(), policy
    want = tmp / "want.parquet"
    write_frame(expected["customer"], want, "parquet")
    got = pq.read_table(sorted((staging / "customer_decisions").glob("*.parquet")))
    assert pq.read_table(want).equals(got), policy


def _differential(examples: int):
    from hypothesis import HealthCheck, given, settings, strategies as st

    from .test_differential import cases

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(cases(), st.lists(st.integers(0, 8), max_size=3))
    def check(client, tmp_path_factory, case, cuts):
        _random_case(client, tmp_path_factory.mktemp("dask-diff"), *case, cuts)
    return check


@pytest.mark.slow  # the default suite keeps to 2 minutes; CI runs it with the slow ones
def test_dask_agrees_on_random_policies(client, tmp_path_factory):
    """Random policies of the differential generator (population functions of population functions,
    ties, `by=` groups, every hit policy), their rows cut into random partitions and ranges of two rows."""
    _differential(int(os.environ.get("KAM_DASK_DIFF_EXAMPLES", "12")))(client, tmp_path_factory)


@pytest.mark.slow
def test_dask_agrees_on_random_policies_long_run(client, tmp_path_factory):
    _differential(300)(client, tmp_path_factory)


def test_a_partition_without_any_row_of_a_quota(client, tmp_path):
    """The first partition holds only prospects declined before the quota ranks them: the quota's
    kind, ties and rows come from the partitions that have some (a regression: they were read from
    the first partition)."""
    pl = compile_policies(ROOT / "policies").only(["prospect"])
    frame = distributed.read_partition(pl, "prospect", str(ROOT / "examples/prospects.csv"), None)
    low = (0.35 * (frame["industry_influence"] + frame["referral_potential"]) < 3) & \
        ~frame["co_branding"].fillna(False).astype(bool) & ~frame["opens_new_field"].fillna(False).astype(bool)
    assert low.sum() >= 3
    parts = []
    for i, rows in enumerate([frame[low], frame[~low]]):
        path = tmp_path / f"part-{i}.parquet"
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path)
        parts.append(path)
    _, expected = _pandas_outputs(pl, {"prospect": parts})
    staging = tmp_path / "staged"
    staging.mkdir()
    distributed.run(pl, {"prospect": parts}, client, staging, range_rows=50)
    _same_outputs(expected, staging, tmp_path)


def test_a_bad_partition_is_named(client, tmp_path):
    """A partition's fact check fails on a worker; the driver gets the problem itself (it pickles
    with its problems), naming the partition and the column."""
    from engine.language.errors import InputError

    pl = compile_policies(ROOT / "policies").only(["prospect"])
    frame = distributed.read_partition(pl, "prospect", str(ROOT / "examples/prospects.csv"), None)
    parts = [tmp_path / "part-0.parquet", tmp_path / "part-1.parquet"]
    pq.write_table(pa.Table.from_pandas(frame.iloc[:100], preserve_index=False), parts[0])
    bad = frame.iloc[100:].copy()
    bad.loc[bad.index[4], "quality_fit"] = -3.0  # below the declared min
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), parts[1])
    staging = tmp_path / "staged"
    staging.mkdir()
    with pytest.raises(InputError) as caught:
        distributed.run(pl, {"prospect": parts}, client, staging)
    assert any("part-1.parquet" in p.render() and "quality_fit" in p.render() for p in caught.value.problems)


@pytest.mark.parametrize("added", ["derive:\n  share: cumshare(b)\n", "derive:\n  big: a * 1e305\n",
                                   "measures:\n  total: sum(b)\n"], ids=["cumshare", "product", "sum"])
def test_a_number_too_large_to_hold_is_refused_as_the_pandas_engine_refuses_it(client, tmp_path, added):
    """The same error, at the same step, as the pandas engine (tests/test_regressions.py); the running
    total of a share across partitions was infinite and its shares quietly missing."""
    from engine.language.errors import InputError

    from .helpers import compile_text
    from .test_regressions import OVERFLOW_FACTS, OVERFLOW_POLICY

    pl = compile_text(tmp_path, OVERFLOW_POLICY % (added, "a > 100"))
    parts = [tmp_path / "part-0.parquet", tmp_path / "part-1.parquet"]
    OVERFLOW_FACTS.iloc[:2].to_parquet(parts[0], index=False)
    OVERFLOW_FACTS.iloc[2:].to_parquet(parts[1], index=False)
    errors = []
    for run in (lambda: api.run(pl, {"customer": OVERFLOW_FACTS}),
                lambda: distributed.run(pl, {"customer": parts}, client, tmp_path / "staged")):
        (tmp_path / "staged").mkdir(exist_ok=True)
        with pytest.raises(InputError) as caught:
            run()
        errors.append(caught.value.problems[0])
    pandas_error, dask_error = errors
    assert dask_error.code == pandas_error.code == "overflow"
    assert dask_error.loc == pandas_error.loc
    # which entity is named first depends on where the partitions cut
    assert dask_error.message.split(" for ")[0] == pandas_error.message.split(" for ")[0]


def _run_watched(args: list[str], env: dict[str, str], on_line=None) -> tuple[int, str]:
    """`kam` with its standard error read as it comes (a progress bar redraws with carriage returns)."""
    import subprocess

    from .conftest import KAM

    proc = subprocess.Popen([str(KAM), *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "120", **env})
    seen = b""
    assert proc.stderr is not None
    while chunk := proc.stderr.read1(4096):
        seen += chunk
        if on_line is not None:
            on_line(seen.decode("utf-8", "replace"))
    proc.wait(timeout=600)
    return proc.returncode, seen.decode("utf-8", "replace")


@pytest.mark.slow
def test_a_dask_run_shows_its_progress_and_a_reachable_dashboard(tmp_path):
    """On a terminal: the passes and partitions done; the dashboard's address (bokeh comes with the
    kam[dask] extra), answering while the run goes on."""
    import re
    import urllib.request

    dask_data.make(tmp_path / "data", 200_000, 8)
    status: list[int] = []

    def fetch(text: str) -> None:
        m = re.search(r"dashboard: (http://127\.0\.0\.1:\d+)/status", text)
        if m and not status:
            status.append(urllib.request.urlopen(m.group(1) + "/status", timeout=30).status)

    rc, err = _run_watched(["run", "--engine", "dask", "--data", str(tmp_path / "data"), "--out",
                            str(tmp_path / "out"), "--workers", "1", "--threads-per-worker", "2"],
                           {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}, fetch)
    assert rc == 0, err[-2000:]
    assert status == [200]
    assert "customer: reading: partitions" in err and "customer: pass 2: partitions" in err
    assert "8/8" in err
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["engine"]["scheduler"] == "local (1 worker of 2 threads, 2GiB each)"


@pytest.mark.slow  # the default suite keeps to 2 minutes; CI runs it with the slow ones
def test_a_scheduler_is_found_by_file_and_by_dask_configuration(client, tmp_path):
    data = tmp_path / "data"
    dask_data.make(data, 3_000, 3)
    (tmp_path / "scheduler.json").write_text(json.dumps({"address": client.scheduler.address,
                                                         "type": "Scheduler"}), encoding="utf-8")
    r = kam("run", "--engine", "dask", "--data", str(data), "--out", str(tmp_path / "a"), "-q",
            "--scheduler-file", str(tmp_path / "scheduler.json"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["engine"]["scheduler"] == f"{client.scheduler.address} (from {tmp_path / 'scheduler.json'})"
    r = kam("run", "--engine", "dask", "--data", str(data), "--out", str(tmp_path / "b"), "-q",
            env={"DASK_SCHEDULER_ADDRESS": client.scheduler.address})
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["engine"]["scheduler"] == f"{client.scheduler.address} (from Dask's configuration)"
    r = kam_here("run", "--engine", "dask", "--scheduler-file", str(tmp_path / "none.json"), "--data", str(data))
    assert r.returncode == 2 and "scheduler file" in r.stderr and "does not exist" in r.stderr
    r = kam_here("run", "--scheduler-file", str(tmp_path / "scheduler.json"))
    assert r.returncode == 2 and "--scheduler-file is for --engine dask" in r.stderr


# -- each partition read once, hashed as read, counted from its footer ----------------------------

def test_each_partition_is_read_once_and_hashed_as_read(client, tmp_path, monkeypatch):
    """A run opens each partition file once (the key check, the joins' references and every pass
    take the partition's state on its worker); the manifest's sha256 is the file's, hashed by the
    worker as it read it, and its rows come from the Parquet footer: the client reads no data."""
    import hashlib

    parts = dask_data.make(tmp_path / "data", 3_000, 4, tie_rows=200)
    pl = compile_policies(ROOT / "policies")

    def counting_reads() -> None:  # on each worker: every call of the facts reader, by file
        from collections import Counter

        from engine.batch import facts

        seen: Counter = Counter()
        original = facts.read_facts

        def read_facts(path, *args, **kw):
            seen[str(path)] += 1
            return original(path, *args, **kw)

        facts.read_facts = read_facts
        facts.seen_by_test = seen

    def reads_seen() -> dict:
        from engine.batch import facts

        return dict(facts.seen_by_test)

    client.restart()  # workers without the counts of earlier tests
    client.run(counting_reads)
    staging = tmp_path / "staged"
    staging.mkdir()
    done = distributed.run(pl, parts, client, staging, range_rows=400)  # several passes, ranges and buckets
    read_facts_calls: dict[str, int] = {}
    byte_reads: dict[str, int] = {}
    for counts in client.run(reads_seen).values():
        for p, k in counts.items():
            read_facts_calls[p] = read_facts_calls.get(p, 0) + k
    for counts in client.run(distributed.partition_reads).values():
        for p, k in counts.items():
            byte_reads[p] = byte_reads.get(p, 0) + k
    every = {str(p) for ps in parts.values() for p in ps}
    assert read_facts_calls == {p: 1 for p in every}
    assert byte_reads == {p: 1 for p in every}
    assert len(population_passes := [k for k in done.timings if k.startswith("customer_pass_")]) >= 3, \
        population_passes
    for entity, paths in parts.items():
        assert done.entities[entity]["sha256"] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
        assert done.entities[entity]["rows"] == [pq.ParquetFile(p).metadata.num_rows for p in paths]


def test_the_manifest_lists_the_inputs_as_the_workers_read_them(tmp_path, monkeypatch):
    """`kam run --engine dask` through the service: the client never hashes an input (the workers
    did), and the manifest holds each input's sha256 and footer row count."""
    import hashlib

    from engine.batch import facts

    data = tmp_path / "data"
    parts = dask_data.make(data, 2_000, 3)
    hashed: list[str] = []
    original = facts.file_sha256

    def watched(path):
        hashed.append(str(path))
        return original(path)

    monkeypatch.setattr(facts, "file_sha256", watched)
    done = api.run_on_dask(api.DaskRequest(ROOT / "policies", data, {}, tmp_path / "out", workers=1))
    assert done.merged["rows"]["customer"] == 2_000
    inputs = {str(p) for ps in parts.values() for p in ps}
    assert not inputs & set(hashed)
    listed = json.loads((tmp_path / "out" / "manifest.json").read_text())["inputs"]
    assert {i["path"] for i in listed} == inputs
    for i in listed:
        assert i["sha256"] == hashlib.sha256(Path(i["path"]).read_bytes()).hexdigest()
        assert i["rows"] == pq.ParquetFile(i["path"]).metadata.num_rows


def test_a_finished_step_is_not_evaluated_again(client, tmp_path):
    """A later pass takes the steps whose population calls were all answered as they are: a step that
    reads none is final after the first pass (`step_calls`), and the state keeps it."""
    pl = compile_policies(ROOT / "policies")
    ep = pl.entity("customer")
    calls = distributed.step_calls(ep)
    free = [s for s, c in calls.items() if not c]
    waiting = [s for s, c in calls.items() if c]
    assert free and waiting
    parts = dask_data.make(tmp_path / "data", 1_000, 2)
    from engine.engines.dask_partition import advance, open_partition

    state = open_partition(pl, "customer", str(parts["customer"][0]), None, 0)
    after = advance(pl, "customer", state, {}, {}, str(tmp_path))
    assert after.out is not None and after.out.asked and after.out.final is None
    assert set(after.kept) == set(free)


def test_a_bucket_looks_up_every_partition_at_once_and_a_range_splits_by_one_sort(monkeypatch):
    """What keeps the join and the ordered answers linear in the population: a bucket's keys are made
    into one lookup table for all the partitions' references (one per partition grew with partitions
    x buckets), and a range's rows are split by partition with one sort; the pieces each partition
    gets are its own rows, in its own order."""
    import numpy as np
    import pyarrow.compute as pc

    from engine.batch import population as popu
    from engine.engines.dask import Block, finalize_range, join_values, scan_range, sort_range

    keys = pa.array([f"c{i}" for i in range(10)])
    cols = {"tier": np.arange(10, dtype=float) * 10}
    lookups = []
    real = pc.index_in
    monkeypatch.setattr(pc, "index_in", lambda *a, **k: lookups.append(1) or real(*a, **k))
    refs = [(p, np.array([0, 1], dtype=np.int64), pa.array([f"c{p}", "nobody" if p % 2 else f"c{p + 1}"]))
            for p in range(40)]
    got = join_values(("tier",), (keys, cols), *refs)
    assert len(lookups) == 1
    for p in range(40):
        rows, pos, taken = got[p]
        assert rows.tolist() == [0, 1]
        want_second = [-1, math.nan] if p % 2 or p + 1 >= 10 else [p + 1, (p + 1) * 10.0]
        want_first = [p, p * 10.0] if p < 10 else [-1, math.nan]
        assert [pos[0], pos[1]] == [want_first[0], want_second[0]]
        assert np.array_equal(taken["tier"], [want_first[1], want_second[1]], equal_nan=True)

    # a range of sorted rows from partitions 3, 0 and 5, interleaved by value, with equal values
    values = {3: [5.0, 1.0, 9.0, 5.0], 0: [2.0, 5.0], 5: [7.0, 1.0, 3.0]}
    blocks = [Block(q, np.arange(len(v), dtype=np.int64) + 10 * q, np.zeros(len(v), np.int64),
                    [np.array(v)], None, None) for q, v in values.items()]
    st = scan_range(sort_range(*blocks), popu.Carry())
    codes, count, fold = st.groups
    out = finalize_range(st, count, fold, "pct_rank", "key")
    assert sorted(out) == [0, 3, 5]
    for q in values:  # what a mask per partition gave, row for row
        m = st.part == q
        rows, got_values = out[q]
        assert rows.tolist() == st.rows[m].tolist() and sorted(rows.tolist()) == [10 * q + i for i in range(len(values[q]))]
        want = popu.scan_values("pct_rank", st.scan, count[st.scan.codes], fold[st.scan.codes], "key")[0][m]
        assert got_values[0].tolist() == want.tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0.1, 0.2, 1e308, -3.0, 7.25])), max_size=12),
       st.integers(-1, 2), st.integers(0, 5), st.sampled_from([0.0, 0.3, 1e308]), st.booleans())
@example([(0, 0.1), (0, 0.2)], 0, 2, 0.3, True)  # one group, continued, with its running total
@example([(0, 0.1), (1, 0.2)], 0, 2, 0.3, True)  # continued, then closed by another group
def test_the_group_handed_on_from_a_range_is_the_one_its_scan_ends_with(rows, code, count, fold, weighted):
    """The ranges of an ordered call are scanned side by side: what each hands on to the next (the
    group still open, its rows and running total) is computed apart, and must be exactly what the
    whole scan of the range ends with, a group continued from the range before and sums that
    overflow included."""
    import numpy as np

    from engine.batch import population as popu
    from engine.engines.dask import Block, carry_after, scan_range, sort_range

    codes = np.array([c for c, _ in rows], dtype=np.int64)
    values = np.array([v for _, v in rows])
    block = Block(0, np.arange(codes.size, dtype=np.int64), codes, [values], None, values if weighted else None)
    carry = popu.Carry(code, count, fold) if code >= 0 else popu.Carry()
    r = sort_range(block)
    assert carry_after(r, carry) == scan_range(r, carry).carry
