"""The classifier, its heads, the uint8 wrapper, and its export with a dynamic batch dimension."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim, export

from vce_stream.sources.preprocess import PreprocessConfig
from vce_stream.model.classifier import FrameProbabilityModel, UInt8Normalize, build_classifier
from vce_stream.model.config import ArchConfig, arch_preset
from vce_stream.model.heads import ExcitationBlock, label_prompts, random_text_embeddings

TINY = arch_preset("tiny")


@pytest.fixture(scope="module")
def frame_model() -> FrameProbabilityModel:
    return FrameProbabilityModel(build_classifier(TINY, seed=0).eval(), PreprocessConfig(size=TINY.img_size)).eval()


def frames(batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, TINY.img_size, TINY.img_size, 3), dtype=torch.uint8, generator=generator)


def test_classifier_outputs_both_logits_per_label():
    model = build_classifier(TINY, seed=0).eval()
    out = model(torch.randn(3, 3, 32, 32))
    assert out.logits.shape == out.contrastive_logits.shape == (3, TINY.num_labels)


def test_contrastive_logits_are_scaled_cosines_with_the_text_embeddings():
    text = random_text_embeddings(TINY.num_labels, TINY.feature_dim, seed=3)
    model = build_classifier(TINY, text_embeddings=text * 7.0, seed=0).eval()
    with torch.no_grad():
        model.heads.logit_scale.fill_(10.0)  # exp(10) is clamped to exp(logit_scale_max) = 100
        images = torch.randn(2, 3, 32, 32)
        features = model.image_features(images)
        expected = 100.0 * F.normalize(features, dim=-1) @ text.t()
        torch.testing.assert_close(model(images).contrastive_logits, expected, atol=1e-4, rtol=1e-4)


def test_excitation_block_gates_then_batch_normalises():
    block = ExcitationBlock(8, 4).eval()
    x = torch.randn(5, 8)
    gate = torch.sigmoid(block.fc2(torch.relu(block.fc1(x))))
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.bn(x * gate))


def test_param_groups_partition_parameters_by_role():
    model = build_classifier(TINY, seed=0)
    groups = model.param_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    ids = [id(p) for group in groups.values() for p in group]
    assert sorted(ids) == sorted(names)  # every parameter exactly once
    differential = {names[id(p)].split(".attn.")[-1] for p in groups["differential"]}
    assert differential == {"qk2.weight", "qk2.bias", "lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"}
    assert all(names[id(p)].startswith("heads.") for p in groups["heads"])
    assert any(names[id(p)].endswith("attn.qkv.weight") for p in groups["backbone"])


def test_plain_architecture_has_no_differential_parameters():
    model = build_classifier(ArchConfig(**{**TINY.__dict__, "differential": False}), seed=0)
    assert model.param_groups()["differential"] == []


def test_same_seed_same_weights_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a, b = build_classifier(TINY, seed=11).state_dict(), build_classifier(TINY, seed=11).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build_classifier(TINY, seed=12).state_dict()
    assert not torch.equal(a["heads.classifier.weight"], c["heads.classifier.weight"])


def test_uint8_normalize_is_x_over_255_minus_mean_over_std():
    cfg = PreprocessConfig(size=32)
    x = frames(2)
    expected = (x.permute(0, 3, 1, 2).float() / 255.0 - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(
        cfg.std
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(UInt8Normalize(cfg)(x), expected, atol=1e-5, rtol=1e-5)


def test_frame_model_is_sigmoid_of_classifier_on_normalised_frames(frame_model):
    x = frames(4)
    with torch.no_grad():
        expected = torch.sigmoid(frame_model.classifier(UInt8Normalize(PreprocessConfig(size=32))(x)).logits)
        probs = frame_model(x)
    assert probs.dtype == torch.float32 and probs.shape == (4, TINY.num_labels)
    torch.testing.assert_close(probs, expected)
    assert float(probs.min()) >= 0.0 and float(probs.max()) <= 1.0


def test_frame_model_refuses_a_preprocess_size_other_than_the_model_input():
    with pytest.raises(ValueError, match="preprocess.size 224 differs from arch.img_size 32"):
        FrameProbabilityModel(build_classifier(TINY, seed=0), PreprocessConfig(size=224))


def test_frame_model_has_no_graph_break(frame_model):
    explanation = torch._dynamo.explain(frame_model)(frames(2))
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1


def test_export_with_dynamic_batch_gives_the_same_probabilities(frame_model):
    program = export(
        frame_model, (frames(2),), dynamic_shapes={"frames": {0: Dim("batch", min=1, max=4096)}}, strict=True
    )
    exported = program.module()
    for batch in (1, 3, 8):
        x = frames(batch, seed=batch)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), frame_model(x), atol=1e-6, rtol=1e-5)


def test_label_prompts_follow_the_paper_template():
    assert label_prompts(["small intestine"]) == ["a video capsule endoscopy image showing small intestine"]
