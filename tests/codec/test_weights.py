"""Both on-disk layouts, and a clear error for every way weights can be wrong."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from mimi_cli.codec import MimiConfig, WeightsError, load_codec, weights
from tests.helpers import GOLDEN

TINY = MimiConfig.tiny()


def hf_layout(moshi: dict[str, torch.Tensor], num_heads: int) -> dict[str, torch.Tensor]:
    """The kyutai/mimi Hub layout, written independently of our loader: the renames
    transformers uses, and q/k rows permuted for its split-half rotary."""
    renames = [
        ("conv.conv.conv", "conv"), ("convtr.convtr.convtr", "conv"), ("conv.conv", "conv"),
        ("convtr.convtr", "conv"),
        ("quantizer.rvq_first.vq", "quantizer.semantic_residual_vector_quantizer"),
        ("quantizer.rvq_first", "quantizer.semantic_residual_vector_quantizer"),
        ("quantizer.rvq_rest.vq", "quantizer.acoustic_residual_vector_quantizer"),
        ("quantizer.rvq_rest", "quantizer.acoustic_residual_vector_quantizer"),
        ("_codebook", "codebook"), ("_initialized", "initialized"), ("embedding_sum", "embed_sum"),
        ("encoder.model", "encoder.layers"), ("decoder.model", "decoder.layers"),
        ("encoder_transformer.transformer", "encoder_transformer"),
        ("decoder_transformer.transformer", "decoder_transformer"),
        ("linear1", "mlp.fc1"), ("linear2", "mlp.fc2"), ("self_attn.out_proj", "self_attn.o_proj"),
        ("norm1", "input_layernorm"), ("norm2", "post_attention_layernorm"),
        ("layer_scale_1", "self_attn_layer_scale"), ("layer_scale_2", "mlp_layer_scale"),
    ]
    out = {}
    for key, value in moshi.items():
        for old, new in renames:
            key = key.replace(old, new)
        if key.endswith("in_proj_weight"):
            dim = value.shape[1]
            for name, w in zip("qkv", value.chunk(3)):
                if name != "v":
                    w = w.view(num_heads, dim // num_heads // 2, 2, dim).transpose(1, 2).reshape(dim, dim)
                out[key.replace("in_proj_weight", f"{name}_proj.weight")] = w.contiguous()
        else:
            out[key] = value
    return out


def test_hf_writer_matches_reference_layout():
    """Our test's HF writer gives the reference's kyutai/mimi file, tensor for tensor (seed 0)."""
    expected = json.loads((GOLDEN / "seed0.weights-sha256.json").read_text())["hf"]
    hf = hf_layout(weights.synthetic_tensors(MimiConfig(), 0), num_heads=8)
    assert sorted(hf) == sorted(expected)
    assert all(hashlib.sha256(v.numpy().tobytes()).hexdigest()[:16] == expected[k] for k, v in hf.items())


def test_both_layouts_give_identical_models(tmp_path):
    moshi = weights.synthetic_tensors(TINY, 5)
    save_file(moshi, str(tmp_path / "tokenizer.safetensors"))
    (tmp_path / "hf").mkdir()
    save_file(hf_layout(moshi, TINY.num_heads), str(tmp_path / "hf" / "model.safetensors"))
    a = load_codec(tmp_path / "tokenizer.safetensors", device="cpu", config=TINY).state_dict()
    b = load_codec(tmp_path / "hf", device="cpu", config=TINY).state_dict()
    c = load_codec("synthetic:5", device="cpu", config=TINY).state_dict()
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]), k


def test_codebook_is_sum_over_clamped_usage():
    t = weights.synthetic_tensors(TINY, 1)
    key = "quantizer.rvq_rest.vq.layers.2._codebook"
    t[f"{key}.cluster_usage"][0] = 0.0  # clamped to 1e-5, as the reference does
    sd = weights.convert_state_dict(t, TINY)
    expected = t[f"{key}.embedding_sum"] / t[f"{key}.cluster_usage"].clamp(min=1e-5)[:, None]
    assert torch.equal(sd["quantizer.acoustic.codebooks"][2], expected)


def _save(tmp_path, tensors):
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    return path


def test_missing_key_is_named(tmp_path):
    t = weights.synthetic_tensors(TINY, 0)
    del t["decoder.model.0.conv.conv.bias"]
    with pytest.raises(WeightsError, match=r"missing 1 keys \(first: decoder.model.0.conv.conv.bias"):
        load_codec(_save(tmp_path, t), device="cpu", config=TINY)


def test_unexpected_key_is_named(tmp_path):
    t = weights.synthetic_tensors(TINY, 0)
    t["encoder.model.99.extra"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="unexpected 1 keys .*encoder.model.99.extra"):
        load_codec(_save(tmp_path, t), device="cpu", config=TINY)


def test_wrong_shape_is_named(tmp_path):
    t = weights.synthetic_tensors(TINY, 0)
    t["decoder.model.0.conv.conv.bias"] = torch.zeros(3)
    with pytest.raises(WeightsError, match=r"decoder.model.0.conv.conv.bias \(3,\)"):
        load_codec(_save(tmp_path, t), device="cpu", config=TINY)


def test_full_size_weights_into_tiny_config_fail_clearly(tmp_path):
    t = weights.synthetic_tensors(TINY, 0)
    with pytest.raises(WeightsError, match="do not match|wrong shape"):
        weights.convert_state_dict(t, MimiConfig())


def test_not_mimi_weights(tmp_path):
    with pytest.raises(WeightsError, match="not Mimi weights"):
        load_codec(_save(tmp_path, {"foo.weight": torch.zeros(2)}), device="cpu", config=TINY)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"RIFF....WAVEfmt definitely audio")
    with pytest.raises(WeightsError, match="cannot read .* as safetensors"):
        load_codec(path, device="cpu", config=TINY)


def test_missing_local_file():
    with pytest.raises(WeightsError, match="not found"):
        load_codec("./nope/model.safetensors", device="cpu", config=TINY)


def test_directory_without_weights(tmp_path):
    with pytest.raises(WeightsError, match="expected model.safetensors"):
        load_codec(tmp_path, device="cpu", config=TINY)


def test_failed_download_says_how_to_pass_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="could not get kyutai/mimi .*--weights /path/to/model.safetensors"):
        load_codec("kyutai/mimi", device="cpu", config=TINY)


def test_hub_download_uses_cache_and_records_revision(tmp_path, monkeypatch):
    """A repo id resolves through huggingface_hub; what it returns is loaded and described."""
    src = tmp_path / "snapshots" / "0123abc" / "model.safetensors"
    src.parent.mkdir(parents=True)
    save_file(hf_layout(weights.synthetic_tensors(TINY, 2), TINY.num_heads), str(src))
    calls = []

    def fake_download(repo, filename, revision=None):
        calls.append((repo, filename, revision))
        return str(src)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    codec = load_codec("kyutai/mimi@v1", device="cpu", config=TINY)
    assert calls == [("kyutai/mimi", "model.safetensors", "v1")]
    assert codec.weights_info["repo"] == "kyutai/mimi" and codec.weights_info["revision"] == "0123abc"
    assert len(codec.weights_info["sha256"]) == 64


@pytest.mark.parametrize("spec", ["synthetic:x", "synthetic:"])
def test_bad_synthetic_spec(spec):
    with pytest.raises(WeightsError, match="synthetic:SEED"):
        load_codec(spec, device="cpu", config=TINY)


def test_synthetic_warns(caplog):
    with caplog.at_level("WARNING", logger="mimi_cli"):
        load_codec("synthetic", device="cpu", config=TINY)
    assert "NOT Mimi's" in caplog.text


def test_dtype_and_device_selection():
    codec = load_codec("synthetic", device="cpu", dtype="bfloat16", config=TINY)
    assert codec.dtype == torch.bfloat16
    assert codec.quantizer.acoustic.codebooks.dtype == torch.float32
    with pytest.raises(Exception, match="float32, bfloat16 or float16"):
        load_codec("synthetic", device="cpu", dtype="int4", config=TINY)
