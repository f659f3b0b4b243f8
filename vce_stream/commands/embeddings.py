"""`vce-stream similar`, `vce-stream search` and `vce-stream index`: retrieval over embeddings files."""

from __future__ import annotations

from pathlib import Path

import click

from vce_stream.embeddings import search as S
from vce_stream.errors import InputError

_EMB = click.Path(dir_okay=False, path_type=Path)


@click.command("similar")
@click.argument("embeddings", nargs=-1, required=True, type=_EMB)
@click.option("--frame", "frame_ref", required=True, help="The query frame as EXAM:INDEX (exam = video id or file stem).")
@click.option("--top", type=click.IntRange(min=1, max=100_000), default=10, show_default=True)
@click.option("--exclude-within", type=click.IntRange(min=0), default=0, show_default=True,
              help="Leave out frames of the query's exam within N frames of it (the query itself always).")
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A FAISS index built by `vce-stream index` over the archive (else exact search).")
@click.option("--model", "bundle_path", type=click.Path(path_type=Path), default=None,
              help="Check that the embeddings come from this bundle.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def similar(embeddings, frame_ref, top, exclude_within, index_dir, bundle_path, as_json) -> None:
    """Frames that look like one frame, across one exam or many (EMBEDDINGS from `run --save-embeddings`)."""
    bundle_hash = _bundle_hash(bundle_path)
    exams = S.open_exams(embeddings, bundle_hash=bundle_hash)
    index = None
    if index_dir is not None:
        from vce_stream.embeddings.index import open_index

        index = open_index(index_dir, bundle_hash=exams[0].bundle_hash, dim=exams[0].dim)
    query, hits = S.similar_frames(exams, frame_ref, top, exclude_within, index=index)
    if as_json:
        click.echo(S.hits_json({"exam": query.exam, "frame": query.frame, "exclude_within": exclude_within}, hits))
    else:
        click.echo(S.format_table(hits))


@click.command("search")
@click.argument("embeddings", nargs=-1, required=True, type=_EMB)
@click.option("--text", required=True, help="What to look for, e.g. 'fresh blood in the small bowel'.")
@click.option("--model", "bundle_path", required=True, type=click.Path(path_type=Path),
              help="The bundle the embeddings came from (its text side encodes the query).")
@click.option("--text-model", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A text tower (an `import-weights` output) for any text; default: BUNDLE/text_model/ if present, else the bundle's label prompts only.")
@click.option("--top", type=click.IntRange(min=1, max=100_000), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def search(embeddings, text, bundle_path, text_model, top, as_json) -> None:
    """Frames matching a text, within one exam or several (exact cosine search)."""
    from vce_stream.model.bundle import load_bundle

    if not text.strip():
        raise InputError("--text is empty: give the finding to search for, e.g. --text 'fresh blood'")
    bundle = load_bundle(bundle_path)
    exams = S.open_exams(embeddings, bundle_hash=bundle.content_hash)
    hits = S.text_search(exams, text, text_encoder_for(bundle, text_model), top)
    if as_json:
        click.echo(S.hits_json({"text": text.strip()}, hits))
    else:
        click.echo(S.format_table(hits))


def text_encoder_for(bundle, text_model: Path | None = None) -> S.TextEncoder:
    """The text encoder `search` uses for `bundle`: a text tower (`--text-model`, or the bundle's own
    `text_model/` folder) encodes any text; without one, the bundle's stored label-prompt embeddings
    answer its label names and prompts."""
    from vce_stream.model.text import BUNDLE_TEXT_MODEL_DIR, open_text_encoder

    if text_model is None and not (bundle.path / BUNDLE_TEXT_MODEL_DIR).is_dir():
        return S.StoredPromptEncoder.from_bundle(bundle)
    encoder = open_text_encoder(bundle.path, bundle.arch.feature_dim, text_model)
    return encoder.encode_texts


def _bundle_hash(bundle_path: Path | None) -> str | None:
    if bundle_path is None:
        return None
    from vce_stream.model.bundle import load_bundle

    return load_bundle(bundle_path).content_hash


@click.command("index")
@click.argument("archive_out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--add", "embeddings", multiple=True, type=_EMB, help="An embeddings file to add (repeat --add for several); exams already in the index are skipped.")
@click.option("--exact-below", type=click.IntRange(min=1), default=None,
              help="Rows under which the index stays exact (set when the index is created).")
@click.option("--nlist", type=click.IntRange(min=1), default=None, help="IVF lists (set when the index is created).")
@click.option("--nprobe", type=click.IntRange(min=1), default=None, help="IVF lists scanned per query.")
def index(archive_out, embeddings, exact_below, nlist, nprobe) -> None:
    """Build or grow the vector index of an archive (ARCHIVE_OUT/) from embeddings files."""
    import dataclasses

    from vce_stream.embeddings import index as I

    exams = S.open_exams(embeddings) if embeddings else []
    overrides = {k: v for k, v in dict(exact_below=exact_below, nlist=nlist, nprobe=nprobe).items() if v is not None}
    params = dataclasses.replace(I.IndexParams(), **overrides)
    idx = I.open_or_create(archive_out, exams, params)
    added = idx.add(exams)
    skipped = len(exams) - len(added)
    click.echo(f"{archive_out}: {idx.kind} index, {idx.count} frames of {len(idx.exams)} exams "
               f"(added {len(added)}{f', {skipped} already present' if skipped else ''})")


@click.group("prototypes")
def prototypes() -> None:
    """Few-shot findings: prototypes of example frames stored in a bundle."""


@prototypes.command("add")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option("--label", required=True, help="The new finding's name (not one of the bundle's labels).")
@click.option("--examples",
              help="Comma-separated EMB:INDEX example frames (embeddings files scored by this bundle).")
@click.option("--examples-dir", type=click.Path(file_okay=False, path_type=Path),
              help="A folder of example images (.png/.jpg) instead, scored by the bundle's model; needs --background.")
@click.option("--background", "background_emb", type=click.Path(dir_okay=False, path_type=Path),
              help="With --examples-dir: an exam's embeddings file (this bundle) to calibrate the threshold against.")
@click.option("--background-gap", type=click.IntRange(min=0), default=50, show_default=True,
              help="Frames of the example exams farther than this from every example are background.")
def prototypes_add(bundle_path, label, examples, examples_dir, background_emb, background_gap) -> None:
    """Add a finding from a handful of example frames (EMB:INDEX, or a folder of images); its threshold
    is calibrated on the exams' background."""
    from vce_stream.model import prototypes as P
    from vce_stream.model.bundle import load_bundle

    if (examples is None) == (examples_dir is None):
        raise InputError("give the examples as --examples EMB:INDEX,... or as --examples-dir FOLDER (one of them)")
    bundle = load_bundle(bundle_path)
    if examples_dir is not None:
        if background_emb is None:
            raise InputError("--examples-dir needs --background EMB: an exam's embeddings file to calibrate the threshold against")
        feats, names = P.image_examples(examples_dir, bundle)
        background = P.background_features(background_emb, bundle.content_hash, bundle.arch.feature_dim)
    else:
        refs = [r for r in (part.strip() for part in examples.split(",")) if r]
        if not refs:
            raise InputError("--examples is empty: give EMB:INDEX frames, comma-separated")
        feats, background, names = P.gather_examples(refs, bundle.content_hash, bundle.arch.feature_dim, background_gap)
    proto = P.build_prototype(label, feats, background, names)
    result = P.add_prototype(bundle.path, proto)
    note = "" if proto.separable else " (WARNING: the examples do not separate from the background; threshold at its 99.9th percentile)"
    click.echo(f"{bundle.path}: prototype {label!r} from {len(names)} examples, cosine threshold {proto.threshold:.4f}, "
               f"prototypes version {result.version} ({len(result.prototypes)} in all){note}")


@prototypes.command("list")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path))
def prototypes_list(bundle_path) -> None:
    """The bundle's prototypes: label, threshold, examples."""
    from vce_stream.model import prototypes as P
    from vce_stream.model.bundle import load_bundle

    protos = P.load_prototypes(load_bundle(bundle_path))
    click.echo(f"prototypes version {protos.version}")
    for p in protos.prototypes:
        click.echo(f"{p.label}\tthreshold {p.threshold:.4f}\t{'separable' if p.separable else 'NOT separable'}\t{','.join(p.examples)}")
