"""FrameProbabilityModel returns probabilities and the unit image feature from one backbone pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.sources.preprocess import PreprocessConfig
from vce_stream.model.classifier import FrameProbabilityModel, build_classifier
from vce_stream.model.config import arch_preset

TINY = arch_preset("tiny")


@pytest.fixture(scope="module")
def classifier():
    return build_classifier(TINY, seed=0).eval()


def frames(batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, TINY.img_size, TINY.img_size, 3), dtype=torch.uint8, generator=generator)


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_probabilities_equal_plain_forward_and_features_are_the_unit_backbone_feature(classifier, batch, seed):
    model = FrameProbabilityModel(classifier, PreprocessConfig(size=TINY.img_size)).eval()
    x = frames(batch, seed)
    with torch.no_grad():
        probabilities, features = model.forward_with_features(x)
        expected_probabilities = model(x)
        backbone = classifier.image_features(model.normalize(x))
    assert torch.equal(probabilities, expected_probabilities)
    assert features.shape == (batch, TINY.feature_dim) == (batch, model.feature_dim)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(batch), atol=1e-5, rtol=0)
    torch.testing.assert_close(features, F.normalize(backbone, dim=-1), atol=1e-6, rtol=0)


def test_backbone_runs_once_per_forward_with_features(classifier):
    model = FrameProbabilityModel(classifier, PreprocessConfig(size=TINY.img_size)).eval()
    calls = []
    handle = classifier.visual.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            model.forward_with_features(frames(2))
    finally:
        handle.remove()
    assert len(calls) == 1


def test_with_features_flag_exports_a_graph_with_two_outputs(classifier):
    model = FrameProbabilityModel(classifier, PreprocessConfig(size=TINY.img_size), with_features=True).eval()
    x = frames(3, seed=1)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    assert len(exported.graph_signature.user_outputs) == 2
    with torch.no_grad():
        probabilities, features = exported.module()(frames(5, seed=2))
        expected = model.forward_with_features(frames(5, seed=2))
    torch.testing.assert_close(probabilities, expected[0])
    torch.testing.assert_close(features, expected[1])
