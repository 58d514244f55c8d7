"""`mimi_cli.bench`: the figures follow from the times measured (a clock of known times stands in
for the machine), and the settings' lists are parsed strictly."""
from __future__ import annotations

import pytest

from mimi_cli import bench
from mimi_cli.codec import InvalidArgument, MimiConfig

SETTINGS = bench.BenchSettings(seconds=2.0, repeats=1, stream_frames=4, streams=(1, 2, 4), num_codebooks=4)


def report_with_step_time(monkeypatch, seconds_per_call: float, dtype: str = "float32") -> bench.BenchReport:
    monkeypatch.setattr(bench, "timed", lambda fn, device: (fn(), seconds_per_call)[1])
    return bench.run_bench("synthetic:3", device="cpu", dtype=dtype, settings=SETTINGS, config=MimiConfig.tiny())


def test_figures_follow_from_the_times_measured(monkeypatch):
    r = report_with_step_time(monkeypatch, 0.010)
    e = r.engines["mimi-cli"]
    assert e.encode_x_realtime == pytest.approx(2.0 / 0.010) and e.decode_x_realtime == pytest.approx(200)
    assert e.encode_step_ms_p50 == pytest.approx(10) and e.decode_step_ms_p99 == pytest.approx(10)
    assert [c.streams for c in e.concurrency] == [1, 2, 4]
    assert e.max_realtime_streams == {"encode": 4, "decode": 4, "encode+decode": 4}  # 10 + 10 ms <= 80 ms


def test_a_step_past_the_frame_is_not_real_time(monkeypatch):
    e = report_with_step_time(monkeypatch, 0.050).engines["mimi-cli"]
    # 50 ms each fits an 80 ms frame; encode and decode together (100 ms) do not.
    assert e.max_realtime_streams == {"encode": 4, "decode": 4, "encode+decode": 0}
    slow = report_with_step_time(monkeypatch, 0.300).engines["mimi-cli"]
    assert slow.max_realtime_streams["encode"] == 0
    assert [c.streams for c in slow.concurrency] == [1]  # far past real time: larger batches are not measured


def test_later_dtypes_are_reported_against_the_first(monkeypatch):
    r = report_with_step_time(monkeypatch, 0.010, "float32,bfloat16")
    assert list(r.engines) == ["mimi-cli float32", "mimi-cli bfloat16"]
    x = r.vs_first_dtype["mimi-cli bfloat16"]
    assert x["encode_step"] == pytest.approx(1.0) and x["encode_x_realtime"] == pytest.approx(1.0)
    assert 0.0 <= x["codes_equal_all"] <= x["codes_equal_codebook0"] <= 1.0
    d = r.as_dict()
    assert "ratios_vs_moshi" not in d and d["engines"]["mimi-cli float32"]["concurrency"][0]["streams"] == 1
    assert "mimi-cli bfloat16 against mimi-cli float32" in bench.format_report(r)


@pytest.mark.parametrize("text", ["", "float32,float32", "float64", "int8,,float32"])
def test_dtype_lists_are_distinct_known_names(text):
    with pytest.raises(InvalidArgument, match="distinct precisions"):
        bench.parse_dtypes(text)


def test_dtype_and_stream_lists_parse():
    assert bench.parse_dtypes("float32, int8") == ("float32", "int8")
    assert bench.parse_streams("1,4,16") == (1, 4, 16)
    for bad in ("", "0,4", "a", "1,70000"):
        with pytest.raises(InvalidArgument):
            bench.parse_streams(bad)
