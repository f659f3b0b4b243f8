"""Benchmarks of frame embeddings (issue 13): storage cost, the archive index, frame-to-frame retrieval.

    python examples/bench_embeddings.py [--vectors 300000] [--dim 512] [--queries 200]
                                        [--part all|store|index|retrieval|prototypes] [--train-steps 0]

store:     bytes per frame of the embeddings file, and the tiny model's frames/s scoring only (forward)
           against scoring + features + EmbeddingWriter.push (forward_with_features), same process.
index:     `FrameIndex` (IVF-SQ8 trained once on the first `exact_below` rows, the rest added) over
           --vectors clustered random unit vectors in exams of 60,000 frames: build time, the time to add
           one more exam, bytes per vector (index file on disk + 8-byte frame table), queries/s of
           `FrameIndex.search` against exact search (`exact_search`, the baseline, same process) and
           Recall@10 against exact. 6 million vectors is NOT run here (it needs ~6 GB for the vectors
           and minutes on 2 cores); the printed 6M line is an extrapolation, labelled as such.
retrieval: frame-to-frame Recall@1/@10 on synthetic lesions that reappear in a second exam under a
           different crop, rotation and colour jitter, among 2000 distractor frames; features of the
           tiny model with random weights (bundle seed 0, untrained), of the same model after
           --train-steps contrastive steps on disjoint synthetic lesions (a stand-in for the tiny model
           trained by `vce-stream train`, which learns labels, not re-identification), and raw pixels
           as a reference. Chance level is printed.
prototypes: event-level precision/recall of a finding added from 5 example frames (`vce-stream
           prototypes add` path: embeddings file, calibration on the exam's background, bundle storage,
           `prototype_probs`, the paper's temporal post-processing) on synthetic FEATURE sequences.

Speed is measured, never asserted; the CPU model is printed.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vce_stream.embeddings.search import exact_search
from vce_stream.embeddings.store import EmbeddingWriter, Embeddings, read_embeddings

HASH = "e" * 64
EXAM_FRAMES = 60_000


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --- store ----------------------------------------------------------------------------------------


def bench_store(work: Path) -> None:
    from vce_stream.model.bundle import load_bundle
    from vce_stream.model.random_bundle import create_random_bundle

    bundle = load_bundle(create_random_bundle(work / "bundle", "tiny", seed=0))
    model = bundle.build_frame_model()
    frames = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batches = 60
    with torch.no_grad():
        model(frames)
        rates = {"score only": [], "score + features + write": []}
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(batches):
                model(frames)
            rates["score only"].append(64 * batches / (time.perf_counter() - t))
            writer = EmbeddingWriter(work / "e.emb", bundle.arch.feature_dim, bundle.content_hash, "e")
            t = time.perf_counter()
            for b in range(batches):
                _, feats = model.forward_with_features(frames)
                writer.push(np.arange(b * 64, (b + 1) * 64), feats)
            writer.close()
            rates["score + features + write"].append(64 * batches / (time.perf_counter() - t))
    size = (work / "e.emb").stat().st_size
    n = 64 * batches
    print(f"\n[store] tiny model (feature dim {bundle.arch.feature_dim}), batches of 64, best of 3")
    print(f"{'mode':<28}{'frames/s':>10}{'ratio':>8}")
    base = max(rates["score only"])
    for mode, values in rates.items():
        print(f"{mode:<28}{max(values):>10.0f}{max(values) / base:>8.2f}")
    print(f"file: {size} bytes for {n} frames of dim {bundle.arch.feature_dim} = {(size - 4096) / n:.1f} bytes/frame "
          f"+ 4096-byte header (formula 2D+8: {2 * 512 + 8} bytes/frame at D=512)")
    writer = EmbeddingWriter(work / "f.emb", 512, HASH, "f")
    rows = np.random.default_rng(0).standard_normal((1024, 512)).astype(np.float16)
    for b in range(20):
        writer.push(np.arange(b * 1024, (b + 1) * 1024), rows)
    writer.close()
    print(f"D=512: {(work / 'f.emb').stat().st_size} bytes for 20480 frames "
          f"= {((work / 'f.emb').stat().st_size - 4096) / 20480:.1f} bytes/frame; 130,000 frames = "
          f"{(4096 + 130_000 * 1032) / 1e6:.0f} MB")


# --- index ----------------------------------------------------------------------------------------


def clustered_chunk(n: int, dim: int, centres: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = centres[rng.integers(0, len(centres), n)]
    rows += rng.standard_normal((n, dim), dtype=np.float32) * np.float32(0.6 / np.sqrt(dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float16)


def memory_exam(vectors: np.ndarray, video_id: str) -> Embeddings:
    n = len(vectors)
    return Embeddings(Path(f"/bench/{video_id}.emb"), HASH, video_id, vectors.shape[1], True, np.arange(n, dtype=np.int64), vectors)


def bench_index(work: Path, total: int, dim: int, queries: int) -> None:
    import faiss

    from vce_stream.embeddings.index import IndexParams, create_index, open_index

    centres = np.random.default_rng(1).standard_normal((2000, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    t = time.perf_counter()
    exams = []
    for i, start in enumerate(range(0, total, EXAM_FRAMES)):
        exams.append(memory_exam(clustered_chunk(min(EXAM_FRAMES, total - start), dim, centres, i), f"exam{i:03d}"))
    extra = memory_exam(clustered_chunk(EXAM_FRAMES, dim, centres, 10_000), "extra")
    gen_s = time.perf_counter() - t
    print(f"  generated {total:,} + {EXAM_FRAMES:,} vectors in {gen_s:.1f} s", flush=True)
    params = IndexParams()
    t = time.perf_counter()
    index = create_index(work / "idx", dim, HASH, params)
    index.add(exams)
    build_s = time.perf_counter() - t
    print(f"  built in {build_s:.1f} s", flush=True)
    t = time.perf_counter()
    index.add([extra])
    add_s = time.perf_counter() - t
    index = open_index(work / "idx")
    all_exams = exams + [extra]
    n = index.count
    files = sum(p.stat().st_size for p in (work / "idx").iterdir())
    rng = np.random.default_rng(5)
    qs = np.stack([
        np.asarray(all_exams[e].vectors[r], dtype=np.float32)
        for e, r in zip(rng.integers(0, len(all_exams), queries), rng.integers(0, 1000, queries))
    ])
    qs += rng.standard_normal(qs.shape).astype(np.float32) * 0.2 / np.sqrt(dim)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    t = time.perf_counter()
    approx = [index.search(q, 10) for q in qs]
    index_qps = queries / (time.perf_counter() - t)
    exact_n = min(queries, 20)
    t = time.perf_counter()
    exact = [exact_search(all_exams, q, 10) for q in qs[:exact_n]]
    exact_qps = exact_n / (time.perf_counter() - t)
    # The rest of the exact ground truth in one batched pass (same cosine, faster than per query).
    truth = [{(h.exam, h.frame) for h in hits} for hits in exact]
    if queries > exact_n:
        rest = qs[exact_n:]
        best = np.full((len(rest), 10), -np.inf, dtype=np.float32)
        keys = np.zeros((len(rest), 10, 2), dtype=np.int64)
        for p, emb in enumerate(all_exams):
            for s in range(0, len(emb), 65536):
                scores = rest @ np.asarray(emb.vectors[s:s + 65536], dtype=np.float32).T
                cand = np.concatenate([best, scores], axis=1)
                ckeys = np.concatenate([keys, np.stack(np.broadcast_arrays(p, s + np.arange(scores.shape[1])[None, :].repeat(len(rest), 0)), -1)], axis=1)
                order = np.argsort(-cand, axis=1)[:, :10]
                best = np.take_along_axis(cand, order, 1)
                keys = np.take_along_axis(ckeys, order[..., None], 1)
        truth += [{(all_exams[int(p)].video_id, int(f)) for p, f in row} for row in keys]
    recall = np.mean([len({(h.exam, h.frame) for h in a} & t) / 10 for a, t in zip(approx, truth)])
    per_vector = files / n
    print(f"\n[index] {n:,} clustered unit vectors of dim {dim} ({len(all_exams)} exams of <= {EXAM_FRAMES:,} frames), "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; data generated in {gen_s:.1f} s")
    print(f"kind {index.kind}: nlist {params.nlist}, nprobe {params.nprobe}, trained once at {index.meta['trained_at']:,} rows")
    print(f"{'figure':<44}{'value':>14}")
    rows = [
        ("build (create + add all exams + commit), s", f"{build_s:.1f}"),
        (f"add one exam of {EXAM_FRAMES:,} frames (no retrain), s", f"{add_s:.1f}"),
        ("bytes per vector (index + frame table on disk)", f"{per_vector:.0f}"),
        ("FrameIndex.search queries/s (top 10)", f"{index_qps:.0f}"),
        (f"exact_search queries/s (baseline, {exact_n} q)", f"{exact_qps:.2f}"),
        ("speed-up over exact", f"{index_qps / exact_qps:.0f}x"),
        (f"Recall@10 vs exact ({queries} queries)", f"{recall:.3f}"),
    ]
    for name, value in rows:
        print(f"{name:<44}{value:>14}")
    scale = 6_000_000 / n
    if n >= 6_000_000:
        return
    print(f"6,000,000 vectors: NOT MEASURED. Extrapolated: {per_vector * 6e6 / 1e9:.1f} GB on disk/in memory; "
          f"with nlist fixed at {params.nlist} the lists scanned grow {scale:.1f}x, so roughly "
          f"{index_qps / scale:.0f} queries/s (a larger nlist, e.g. 4096, would restore the speed)")


# --- retrieval ------------------------------------------------------------------------------------


def lesion_bank(count: int, size: int, seed: int) -> torch.Tensor:
    """`count` distinct synthetic lesions on mucosa: uint8 (count, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = []
    for _ in range(count):
        base = torch.tensor([0.75, 0.35, 0.3]) + 0.08 * torch.randn(3, generator=g)
        img = base.view(3, 1, 1).expand(3, size, size).clone()
        for _ in range(3):  # three blobs of random colour, shape and place
            cy, cx = (torch.rand(2, generator=g) - 0.5) * 1.0
            ry, rx = 0.15 + 0.35 * torch.rand(2, generator=g)
            mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1).float()
            colour = torch.rand(3, generator=g)
            img = img * (1 - mask) + colour.view(3, 1, 1) * mask
        img = img + 0.05 * torch.randn(3, size, size, generator=g)
        out.append((img.clamp(0, 1) * 255).to(torch.uint8))
    return torch.stack(out)


def augment(images: torch.Tensor, seed: int, out_size: int) -> torch.Tensor:
    """Per image a different random crop (60-100% of the area, anywhere inside), rotation (+-30 deg) and
    colour jitter (brightness, contrast, saturation +-20%): one batched affine resample, uint8 out."""
    g = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    angle = (torch.rand(n, generator=g) * 2 - 1) * torch.pi / 6
    scale = torch.sqrt(0.6 + 0.4 * torch.rand(n, generator=g))  # side fraction of the crop
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (1 - scale).unsqueeze(1)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, (n, 3, out_size, out_size), align_corners=False)
    x = torch.nn.functional.grid_sample(images.float() / 255, grid, mode="bilinear", padding_mode="reflection",
                                        align_corners=False)
    jitter = lambda: (1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * 0.2)  # noqa: E731
    x = x * jitter()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * jitter() + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * jitter() + grey
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def train_contrastive(model, steps: int, size: int, batch: int = 128, seed: int = 100) -> float:
    """Train the tiny model's vision tower for `steps` InfoNCE steps (SimCLR: two augmented views of the
    same synthetic lesion are positives) on lesions DISJOINT from the evaluation ones. Returns seconds."""
    t = time.perf_counter()
    pool = lesion_bank(2048, 64, seed=seed)
    visual, normalize = model.classifier.visual, model.normalize
    visual.train()
    optimiser = torch.optim.AdamW(visual.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        picks = pool[torch.randint(0, len(pool), (batch,), generator=g)]
        views = torch.cat([augment(picks, seed * 7919 + 2 * step, size), augment(picks, seed * 7919 + 2 * step + 1, size)])
        z = torch.nn.functional.normalize(visual(normalize(views.permute(0, 2, 3, 1))), dim=-1)
        logits = z @ z.T / 0.1
        logits.fill_diagonal_(-1e9)
        targets = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)])
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    visual.eval()
    return time.perf_counter() - t


def recall_at(queries: np.ndarray, gallery: np.ndarray, targets: np.ndarray, k: int) -> float:
    scores = queries @ gallery.T
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([t in row for t, row in zip(targets, top)]))


def bench_retrieval(work: Path, steps: int, lesions: int = 100, background: int = 2000) -> None:
    from vce_stream.model.bundle import load_bundle
    from vce_stream.model.random_bundle import create_random_bundle

    bundle = load_bundle(create_random_bundle(work / "rbundle", "tiny", seed=0))
    size = bundle.arch.img_size
    bank = lesion_bank(lesions, 64, seed=0)
    distractors = lesion_bank(background, 64, seed=1)  # other lesions that never reappear
    exam_a = augment(bank, 1, size)
    exam_b = torch.cat([augment(bank, 2, size), augment(distractors, 3, size)])
    random_model = bundle.build_frame_model()
    trained_model = bundle.build_frame_model()
    train_s = train_contrastive(trained_model, steps, size) if steps else 0.0

    def features(model, name: str) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            _, fa = model.forward_with_features(exam_a.permute(0, 2, 3, 1).contiguous())
            _, fb = model.forward_with_features(exam_b.permute(0, 2, 3, 1).contiguous())
        # The gallery exam goes through the real embeddings file (fp16) before the search.
        with EmbeddingWriter(work / f"{name}.emb", fb.shape[1], bundle.content_hash, "B") as writer:
            writer.push(np.arange(len(fb)), fb)
        return fa.numpy(), np.asarray(read_embeddings(work / f"{name}.emb").vectors, dtype=np.float32)

    def pixels(x: torch.Tensor) -> np.ndarray:
        v = torch.nn.functional.avg_pool2d(x.float(), 4).flatten(1)
        v = v - v.mean(1, keepdim=True)
        return torch.nn.functional.normalize(v, dim=1).numpy()

    targets = np.arange(lesions)
    n = len(exam_b)
    print(f"\n[retrieval] {lesions} lesions in exam A, found again in exam B ({lesions} re-appearances under a new "
          f"crop/rotation/colour jitter + {background} distractor lesions); {size}px, tiny model (dim "
          f"{bundle.arch.feature_dim})" + (f"; trained = {steps} InfoNCE steps on disjoint synthetic lesions ({train_s:.0f} s)" if steps else ""))
    print(f"{'features':<44}{'Recall@1':>10}{'Recall@10':>11}")
    rows = [("tiny model, RANDOM weights (untrained)", features(random_model, "random"))]
    if steps:
        rows.append((f"tiny model, trained ({steps} steps, synthetic)", features(trained_model, "trained")))
    rows.append(("raw pixels 8x8 (reference)", (pixels(exam_a), pixels(exam_b))))
    for name, (q, g) in rows:
        print(f"{name:<44}{recall_at(q, g, targets, 1):>10.3f}{recall_at(q, g, targets, 10):>11.3f}")
    print(f"{'chance':<44}{1 / n:>10.4f}{10 / n:>11.4f}")


# --- prototypes -----------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synthetic_feature_exam(frames: int, segments, finding: np.ndarray, seed: int, mix: float) -> np.ndarray:
    """Unit features: drifting mucosa + noise; inside `segments`, mix * finding + (1 - mix) * mucosa + noise."""
    rng = np.random.default_rng(seed)
    dim = finding.shape[0]
    mucosa = _unit(np.ones(dim) + np.cumsum(rng.standard_normal((frames, dim)) * 0.02, axis=0))
    rows = mucosa + rng.standard_normal((frames, dim)) * 0.1
    for a, b in segments:
        rows[a:b + 1] = mix * finding + (1 - mix) * mucosa[a:b + 1] + rng.standard_normal((b - a + 1, dim)) * 0.1
    return _unit(rows)


def bench_prototypes(work: Path, exams: int = 10, frames: int = 6000) -> None:
    from vce_stream.postprocess.config import TemporalConfig
    from vce_stream.model.bundle import load_bundle
    from vce_stream.model.random_bundle import create_random_bundle
    from vce_stream.model.prototypes import add_prototype, build_prototype, gather_examples, prototype_probs
    from vce_stream.postprocess.filters import offline_events

    bundle = load_bundle(create_random_bundle(work / "pbundle", "tiny", seed=0))
    dim = bundle.arch.feature_dim
    print(f"\n[prototypes] a finding added from 5 example frames of one exam; {exams} other synthetic exams of "
          f"{frames} frames with 4-6 finding segments each (synthetic FEATURE sequences of dim {dim}, not images); "
          f"events by the paper's temporal post-processing; a match is temporal IoU >= 0.3")
    print(f"{'finding strength (mix)':<24}{'precision':>10}{'recall':>8}{'events':>8}{'truth':>7}")
    for mix in (0.8, 0.7, 0.6, 0.5):
        finding = _unit(np.random.default_rng(42).standard_normal(dim))
        first = [(300, 340), (1200, 1230), (2500, 2560)]
        with EmbeddingWriter(work / "p0.emb", dim, bundle.content_hash, "p0") as writer:
            writer.push(np.arange(frames), synthetic_feature_exam(frames, first, finding, 0, mix))
        refs = [f"{work / 'p0.emb'}:{f}" for f in (305, 320, 1210, 2520, 2550)]
        feats, background, names = gather_examples(refs, bundle.content_hash, dim)
        protos = add_prototype(bundle.path, build_prototype(f"finding-{mix}", feats, background, names))
        protos = type(protos)(protos.version, tuple(p for p in protos.prototypes if p.label == f"finding-{mix}"))
        tp = predicted = actual = 0
        for seed in range(1, exams + 1):
            rng = np.random.default_rng(seed)
            k = int(rng.integers(4, 7))
            starts = np.sort(rng.choice(np.arange(100, frames - 200, 250), size=k, replace=False))
            truth = [(int(a), int(a + rng.integers(10, 80))) for a in starts]
            probs = prototype_probs(synthetic_feature_exam(frames, truth, finding, seed, mix), protos)
            events = offline_events(np.arange(frames), probs, [0.5], TemporalConfig(), protos.labels)
            used = set()
            for e in events:
                for j, (a, b) in enumerate(truth):
                    inter, union = min(e.end, b) - max(e.start, a) + 1, max(e.end, b) - min(e.start, a) + 1
                    if j not in used and inter > 0 and inter / union >= 0.3:
                        used.add(j)
                        break
            tp += len(used)
            predicted += len(events)
            actual += len(truth)
        print(f"{mix:<24}{tp / max(predicted, 1):>10.3f}{tp / actual:>8.3f}{predicted:>8}{actual:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", type=int, default=300_000,
                        help="index size; 300,000 keeps a run under ~60 s on 2 busy cores (1,000,000: ~2.5 min)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--train-steps", type=int, default=0,
                        help="contrastive steps for the 'trained' row (0: skip; ~3 s a step on 2 busy cores)")
    parser.add_argument("--part", choices=["all", "store", "index", "retrieval", "prototypes"], default="all")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="vce-bench-emb-") as tmp:
        work = Path(tmp)
        if args.part in ("all", "store"):
            bench_store(work)
        if args.part in ("all", "retrieval"):
            bench_retrieval(work, args.train_steps)
        if args.part in ("all", "prototypes"):
            bench_prototypes(work)
        if args.part in ("all", "index"):
            bench_index(work, args.vectors, args.dim, args.queries)


if __name__ == "__main__":
    main()
