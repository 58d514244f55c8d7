"""Manifests as untrusted input: JSONL read with mimi's bounds (pyarrow's reader crashes on deep
JSON), Parquet manifests checked against decompression bombs, types kept as their writers gave them."""
from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mimi_cli.formats.manifests import ManifestError, ManifestOptions, read_manifest


def test_jsonl_columns_have_the_types_pyarrow_infers(tmp_path):
    import pyarrow.json as pjson

    rows = [{"audio_filepath": "a.wav", "duration": 1.5, "speaker": 3, "ok": True, "text": "hi", "tags": ["x"]},
            {"audio_filepath": "b.wav", "duration": 2.0, "speaker": 4, "ok": False, "text": None, "tags": []}]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = read_manifest(path, ManifestOptions(keep_columns=("duration", "speaker", "ok", "text", "tags")))
    assert got.paths == ["a.wav", "b.wav"]
    assert got.types == {c: pjson.read_json(path).schema.field(c).type for c in got.types}
    assert got.kept["tags"] == [["x"], []]


def test_deep_jsonl_is_one_line_and_no_crash(tmp_path):
    """pyarrow's JSON reader dies of SIGSEGV on this line: the manifest is read in a process of its own."""
    path = tmp_path / "m.jsonl"
    path.write_text('{"path": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    code = ("import sys, pathlib\nfrom mimi_cli.formats.manifests import read_manifest, ManifestOptions, "
            "ManifestError\ntry:\n    read_manifest(pathlib.Path(sys.argv[1]), ManifestOptions())\n"
            "except ManifestError as e:\n    print(e)\n    sys.exit(3)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and "nested over 64 deep" in done.stdout


@pytest.mark.parametrize("content", [b"[1, 2]\n", b"{bad\n", b'{"path": "a.wav"}\n{"path": 3}\n'])
def test_other_jsonl_is_a_manifest_error(tmp_path, content):
    (tmp_path / "m.jsonl").write_bytes(content)
    with pytest.raises(ManifestError, match="not a readable JSONL manifest"):
        read_manifest(tmp_path / "m.jsonl", ManifestOptions())


def test_a_parquet_manifest_that_would_expand_a_thousandfold_is_refused(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"path": ["a" * 1_000_000] * 200}), path, compression="zstd", use_dictionary=False)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ManifestError, match="decompression bomb"):
        read_manifest(path, ManifestOptions())


def test_a_parquet_manifest_reads_only_the_columns_it_needs(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"path": ["a.wav"], "text": ["hi"], "big": [b"x" * 1000]}), path)
    got = read_manifest(path, ManifestOptions(keep_columns=("text",)))
    assert got.paths == ["a.wav"] and got.kept == {"text": ["hi"]}
    with pytest.raises(ManifestError, match=r"no column 'nope' \(its columns: path, text, big\)"):
        read_manifest(path, ManifestOptions(keep_columns=("nope",)))
