"""A listing a window at a time: the same items as a whole listing, in the same order, with
duplicates dropped and clashing ids refused across windows, and a manifest read no further than
the window being worked on."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from mimi_cli.formats import cuts, limits
from mimi_cli.formats.digests import DTYPE, SIZE, Digests
from mimi_cli.formats.listing import windows
from mimi_cli.formats.sources import InputError, collect_sources


def _wav(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(2400, np.float32), 24000)
    return path


def _listed(ws):
    got = [(s.id, str(s.path)) for w in ws for s in w.sources]
    problems = [(p.id, p.error) for w in ws for p in w.problems]
    return got, problems


def test_windows_list_what_a_whole_listing_lists_in_its_order(tmp_path):
    for name in ("a", "b", "c", "d", "e"):
        _wav(tmp_path / "clips" / f"{name}.wav")
    (tmp_path / "m.tsv").write_text("path\tid\nclips/a.wav\tA\n\tnone\nclips/b.wav\tB\n../x.wav\tout\n"
                                    "clips/c.wav\tC\n")
    inputs = [str(tmp_path / "m.tsv"), str(tmp_path / "clips"), str(tmp_path / "missing.wav"),
              str(tmp_path / "clips" / "e.wav")]
    sources, problems = collect_sources(inputs)
    whole = ([(s.id, str(s.path)) for s in sources], [(p.id, p.error) for p in problems])
    for size in (1, 2, 3, 1000):
        ws = list(windows(inputs, size=size))
        assert _listed(ws) == whole, size
        assert [w.last for w in ws] == [False] * (len(ws) - 1) + [True]
        if size == 1:
            assert len(ws) > 3  # the test means something: many windows


def test_the_same_file_named_in_two_windows_is_listed_once(tmp_path):
    a = _wav(tmp_path / "d" / "a.wav")
    _wav(tmp_path / "d" / "b.wav")
    ws = list(windows([str(tmp_path / "d"), str(a)], size=1))
    assert [s.id for w in ws for s in w.sources] == ["a.wav", "b.wav"]


def test_an_id_that_names_an_input_of_an_earlier_window_is_refused_when_its_window_comes(tmp_path):
    _wav(tmp_path / "one" / "x.wav")
    _wav(tmp_path / "two" / "x.wav")
    _wav(tmp_path / "two" / "y.wav")
    ws = windows([str(tmp_path / "one"), str(tmp_path / "two")], size=1)
    first = next(ws)
    assert [s.id for s in first.sources] == ["x.wav"]
    with pytest.raises(InputError, match=r"1 ids would name more than one input \('x.wav': .*two/x.wav and an "
                                         r"input listed before\)"):
        list(ws)
    with pytest.raises(InputError, match="'x.wav': .*one/x.wav, .*two/x.wav"):  # one window: both named
        next(windows([str(tmp_path / "one"), str(tmp_path / "two")], size=100))


def test_digests_agree_with_a_set_trailing_zero_bytes_shared_heads_and_all():
    rng = np.random.default_rng(0)
    raw = [bytes(rng.integers(0, 256, SIZE, dtype=np.uint8)) for _ in range(3000)]
    raw += [r[:-1] + b"\0" for r in raw[:200]] + [r[:4] + b"\0" * (SIZE - 4) for r in raw[:200]]  # zeros at the end
    shared = [r[:8] + bytes(rng.integers(0, 256, SIZE - 8, dtype=np.uint8)) for r in raw[:300]]  # first 8 bytes alike
    added = raw[:2000] + shared[:150]
    d, seen = Digests(), set()
    for start in range(0, len(added), 250):
        batch = added[start:start + 250]
        d.add(np.array(batch, DTYPE))
        seen.update(batch)
    twins = [r[:8] + bytes(rng.integers(0, 256, SIZE - 8, dtype=np.uint8)) for r in raw[2500:2600]]
    together = raw[2500:2550] + twins[:50]  # both digests of a shared head in one run
    d.add(np.array(together, DTYPE))
    seen.update(together)
    added += together
    asked = raw + shared + twins
    assert d.holds(np.array(asked, DTYPE)).tolist() == [r in seen for r in asked]
    assert len(d) == len(added)


def test_a_manifest_is_read_no_further_than_the_window_at_hand(tmp_path, monkeypatch):
    """The first window of a 30,000-line lhotse manifest comes before its end is read: listing
    costs memory and time for a window, not for the whole file."""
    pytest.importorskip("lhotse")
    _wav(tmp_path / "x.wav")
    lines = 30_000
    entry = {"sources": [{"type": "file", "channels": [0], "source": "x.wav"}], "sampling_rate": 24000,
             "num_samples": 2400, "duration": 0.1, "channel_ids": [0]}
    (tmp_path / "r.jsonl").write_text("".join(json.dumps({"id": f"r{i}", **entry}) + "\n" for i in range(lines)))
    read = []
    real = limits.read_lines

    def counted(path):
        for line in real(path):
            read.append(1)
            yield line

    monkeypatch.setattr(cuts, "read_lines", counted)
    ws = windows([str(tmp_path / "r.jsonl")], size=2000)
    first = next(ws)
    assert len(first.sources) == 2000 and not first.last
    assert len(read) <= 4000  # a window and a chunk, not the file
    rest = list(ws)
    assert sum(len(w.sources) for w in [first, *rest]) == lines and rest[-1].last



def _paths_parquet(path, names):
    import pyarrow as pa
    import pyarrow.parquet as pq

    audio = pa.StructArray.from_arrays([pa.nulls(len(names), pa.binary()), pa.array(names)], names=["bytes", "path"])
    pq.write_table(pa.table({"audio": audio}), path, row_group_size=500)
    return path


@pytest.mark.parametrize("slice_rows", [8192, 128])
def test_audio_parquet_rows_come_a_chunk_at_a_time_named_by_all_their_paths(tmp_path, monkeypatch, slice_rows):
    """Ids are the rows' paths only if no two rows share one: a repeat in the last row names even
    the first window's rows FILE:ROW, though they are handed on before it is read (a row group's
    paths are taken a slice at a time, across row groups of 500)."""
    from mimi_cli.formats import sources

    monkeypatch.setattr(limits, "SLICE_ROWS", slice_rows)

    names = [f"clips/{i}.wav" for i in range(2500)]
    unique = _paths_parquet(tmp_path / "u.parquet", names)
    repeated = _paths_parquet(tmp_path / "r.parquet", names[:-1] + [names[0]])
    read = []
    real = sources.parquet_items

    def counted(*args):
        for item in real(*args):
            read.append(1)
            yield item

    monkeypatch.setattr(sources, "parquet_items", counted)
    ws = windows([str(unique)], size=1000)
    first = next(ws)
    assert [s.id for s in first.sources[:2]] == ["clips/0.wav", "clips/1.wav"] and len(read) <= 2000
    assert [s.id for w in [first, *ws] for s in w.sources] == names
    ids = [s.id for w in windows([str(repeated)], size=1000) for s in w.sources]
    assert ids[:2] == ["r.parquet:0", "r.parquet:1"] and len(ids) == 2499  # the repeat: the same file, once


def test_an_unreadable_list_named_last_is_a_problem(tmp_path):
    a = _wav(tmp_path / "a.wav")
    listing = "@" + str(tmp_path / "missing.txt")
    ws = list(windows([str(a), listing]))
    assert [(p.id, p.error) for w in ws for p in w.problems] == [
        (listing, "cannot read list file: No such file or directory")]
    assert sum(len(w.sources) for w in ws) == 1


def test_a_kept_field_that_stops_fitting_the_first_chunks_type_is_refused_not_cut(tmp_path):
    pytest.importorskip("lhotse")
    from mimi_cli.formats.manifests import ManifestOptions

    _wav(tmp_path / "x.wav")
    recording = {"id": "x", "sources": [{"type": "file", "channels": [0], "source": "x.wav"}],
                 "sampling_rate": 24000, "num_samples": 2400, "duration": 0.1, "channel_ids": [0]}

    def cut(i, speed):
        return {"id": f"c{i}", "start": 0.0, "duration": 0.1, "channel": 0, "recording": recording,
                "supervisions": [], "custom": {"speed": speed}, "type": "MonoCut"}

    (tmp_path / "ints.jsonl").write_text("".join(json.dumps(cut(i, 1 + i % 2)) + "\n" for i in range(1500)))
    (tmp_path / "halves.jsonl").write_text("".join(json.dumps(cut(i, 1 if i < 1000 else 1.5)) + "\n"
                                                   for i in range(1500)))
    keep = ManifestOptions(keep_columns=("speed",))
    listed = [s for w in windows([str(tmp_path / "ints.jsonl")], keep) for s in w.sources]
    assert len(listed) == 1500 and listed[-1].columns == {"speed": 2}
    with pytest.raises(InputError, match="'speed' .* holds values of mixed types \\(not all int64"):
        list(windows([str(tmp_path / "halves.jsonl")], keep))


@pytest.mark.parametrize("later", [True, "5", {"a": 3, "b": 2}, 2**64])
def test_later_kept_values_the_writer_could_not_take_whole_are_refused(tmp_path, later):
    pytest.importorskip("lhotse")
    from mimi_cli.formats.manifests import ManifestOptions

    _wav(tmp_path / "x.wav")
    recording = {"id": "x", "sources": [{"type": "file", "channels": [0], "source": "x.wav"}],
                 "sampling_rate": 24000, "num_samples": 2400, "duration": 0.1, "channel_ids": [0]}
    first = {"a": 1} if isinstance(later, dict) else 7
    lines = [{"id": f"c{i}", "start": 0.0, "duration": 0.1, "channel": 0, "recording": recording, "supervisions": [],
              "custom": {"n": first if i < 1000 else later}, "type": "MonoCut"} for i in range(1001)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(c) + "\n" for c in lines))
    with pytest.raises(InputError, match="'n' .* holds values of mixed types"):
        list(windows([str(tmp_path / "c.jsonl")], ManifestOptions(keep_columns=("n",))))


def test_a_jsonl_manifest_keeps_only_the_fields_it_needs(tmp_path):
    """Lines that each name a new field (a table of 20,000 columns, were all kept) and values
    out of Arrow's range in fields nobody asked for cost nothing."""
    from mimi_cli.formats.manifests import ManifestOptions, read_manifest

    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"path": f"{i}.wav", f"k{i}": 1, "big": 2**70}) + "\n"
                                              for i in range(20_000)))
    rows = read_manifest(tmp_path / "m.jsonl", ManifestOptions())
    (table,) = rows.tables()
    assert table.column_names == ["path"] and table.num_rows == 20_000
    with pytest.raises(Exception, match="'big' holds values of mixed types or out of range"):
        read_manifest(tmp_path / "m.jsonl", ManifestOptions(keep_columns=("big",)))


def test_ids_that_are_not_text_are_printable_not_a_crash(tmp_path):
    pytest.importorskip("lhotse")
    _wav(tmp_path / "x.wav")
    (tmp_path / "m.csv").write_bytes(b"path,id\nx.wav,bad\xff\n")
    entry = {"id": "x\ud800", "sources": [{"type": "file", "channels": [0], "source": "x.wav"}],
             "sampling_rate": 24000, "num_samples": 2400, "duration": 0.1, "channel_ids": [0]}
    (tmp_path / "r.jsonl").write_text(json.dumps(entry) + "\n")
    from mimi_cli.formats.manifests import ManifestOptions

    ids = [s.id for w in windows([str(tmp_path / "m.csv")], ManifestOptions(id_column="id")) for s in w.sources]
    assert ids == ["bad\\xff"]
    ids = [s.id for w in windows([str(tmp_path / "r.jsonl")]) for s in w.sources]
    assert ids == ["x\\ud800"]
    assert all(i.encode("utf-8") for i in ids)


def test_an_audio_struct_naming_a_field_twice_is_an_error_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    audio = pa.StructArray.from_arrays([pa.array([b"x"]), pa.array(["a.wav"]), pa.array(["b.wav"])],
                                       names=["bytes", "path", "path"])
    pq.write_table(pa.table({"audio": audio}), tmp_path / "d.parquet")
    ws = list(windows([str(tmp_path / "d.parquet")]))
    assert [p.error for w in ws for p in w.problems] == [
        "column 'audio' names a field twice (bytes, path, path): not audio as Hugging Face `datasets` stores it"]


def test_audio_parquet_rows_taken_a_slice_at_a_time_keep_their_audio_and_fields(tmp_path, monkeypatch):
    """Each item read from its row group in slices points at its own row's bytes and fields."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mimi_cli.formats import containers

    monkeypatch.setattr(limits, "SLICE_ROWS", 16)
    blobs = []
    for i in range(120):
        out = io.BytesIO()
        sf.write(out, np.full(240 + i, i / 200, np.float32), 24000, format="WAV")
        blobs.append(out.getvalue())
    audio = pa.StructArray.from_arrays([pa.array(blobs, pa.binary()), pa.array([f"{i}.wav" for i in range(120)])],
                                       names=["bytes", "path"])
    pq.write_table(pa.table({"audio": audio, "n": list(range(120))}), tmp_path / "a.parquet", row_group_size=50)
    items = list(containers.parquet_items(tmp_path / "a.parquet", "audio", ("n",)))
    assert [it.key for it in items] == [str(i) for i in range(120)]
    assert [it.fields["n"] for it in items] == list(range(120)) and [it.path for it in items][-1] == "119.wav"
    assert [it.member.read() for it in items] == blobs


def test_a_parquet_manifest_is_read_a_row_group_at_a_time_as_it_is_listed(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [f"{i}.wav" for i in range(5000)]
    pq.write_table(pa.table({"path": names}), tmp_path / "m.parquet", row_group_size=1000)
    read = []
    real = pq.ParquetFile.iter_batches

    def counted(self, *args, row_groups=None, **kwargs):
        read.extend(row_groups)
        return real(self, *args, row_groups=row_groups, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counted)
    ws = windows([str(tmp_path / "m.parquet")], size=1000)
    first = next(ws)
    assert [s.id for s in first.sources] == names[:1000] and set(read) <= {0, 1}  # a window and a chunk
    assert [s.id for w in ws for s in w.sources] == names[1000:] and list(dict.fromkeys(read)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("repeat", [None, "later batch", "other file"])
def test_audio_parquet_paths_are_ids_only_if_no_batch_or_file_repeats_one(tmp_path, monkeypatch, repeat):
    from mimi_cli.formats import sources

    monkeypatch.setattr(limits, "SLICE_ROWS", 16)
    monkeypatch.setattr(sources, "UNIQUE_BATCH", 64)
    names = [f"{i}.wav" for i in range(300)]
    first, second = names[:200], names[200:]
    if repeat == "later batch":
        first[150] = first[3]
    elif repeat == "other file":
        second[90] = first[5]
    (tmp_path / "d").mkdir()
    _paths_parquet(tmp_path / "d" / "a.parquet", first)
    _paths_parquet(tmp_path / "d" / "b.parquet", second)
    ids = [s.id for w in windows([str(tmp_path / "d")], size=1000) for s in w.sources]
    if repeat is None:
        assert ids == names
    else:
        assert ids[:2] == ["a.parquet:0", "a.parquet:1"] and ids[-1] == "b.parquet:99"


def test_a_parquet_manifest_damaged_in_a_later_row_group_stops_after_the_rows_before(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"path": [f"{i}.wav" for i in range(3000)]}), path, row_group_size=1000,
                   compression="none", use_dictionary=False)
    at = pq.ParquetFile(path).metadata.row_group(2).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[at:at + 16] = b"\xff" * 16  # the third row group's page header
    path.write_bytes(bytes(data))
    ws = windows([str(path)], size=1000)
    assert [s.id for s in next(ws).sources] == [f"{i}.wav" for i in range(1000)]
    assert [s.id for s in next(ws).sources] == [f"{i}.wav" for i in range(1000, 2000)]
    with pytest.raises(InputError, match=r"m.parquet: not a readable manifest at row 2000 or after \("):
        next(ws)


LISTED_PEAK = """
import sys
from mimi_cli.formats.listing import windows
listed = sum(len(w.sources) for w in windows(sys.argv[1:]))
peak = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) // 1024
print(listed, peak)
"""


def _listed_peak(*inputs, cwd) -> tuple[int, int]:
    """(items listed, peak resident MB) of listing `inputs` in a process of its own."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", LISTED_PEAK, *inputs], cwd=cwd, capture_output=True, text=True,
                          check=True, timeout=300)
    listed, peak = done.stdout.split()
    return int(listed), int(peak)


def test_long_distinct_paths_in_one_row_group_are_listed_in_bounded_memory(tmp_path):
    """150,000 distinct paths of 1.7 kB (258 MB of text, within what its 8 MB may expand to) in
    one row group: read a batch of rows at a time, not a row group at once (which took 2.3 times
    the text, +750 MB). What is left is a window of items with such long names."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 150_000
    noise = np.frombuffer(os.urandom(n * 52), np.uint8).reshape(n, 52)
    paths = pa.array([("d" * 200 + "/") * 8 + row.tobytes().hex() + ".wav" for row in noise])
    table = pa.table({"path": paths})  # a manifest; audio Parquet paths are read by the same `limits.batches`
    pq.write_table(table, tmp_path / "long.parquet", compression="zstd", row_group_size=n)
    pq.write_table(table.slice(0, 10), tmp_path / "short.parquet")
    assert (tmp_path / "long.parquet").stat().st_size < 10 << 20
    _, baseline = _listed_peak("short.parquet", cwd=tmp_path)
    listed, peak = _listed_peak("long.parquet", cwd=tmp_path)
    assert listed == n and peak < baseline + 400, (baseline, peak)
