"""The end of a run: weights as safetensors (CDF tables built, the SHA-256 prefix in the file name), then
the RD measurement on held-out data with the weights read back from those files, and a model card."""

from __future__ import annotations

import hashlib
import json
import os

from ..weights import load_state, save_state
from .build import build_models
from .evaluate import RDResult, measure_rd, rd_table


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export_weights(cfg, intra, inter, out: str, steps: int, clips=None, say=print) -> dict[str, tuple[str, str]]:
    """Write ``intra-<sha8>.safetensors`` and ``inter-<sha8>.safetensors`` into ``out`` from copies of the
    models with their CDF tables built (``update(force=True)``); return {kind: (path, sha256)}. With
    ``clips`` (``(name, pictures)`` of training videos) the fixed priors are first fitted to the symbols
    the encoder codes on them (:func:`lvcodec.train.priors.fit_priors`)."""
    from ..models import LAMBDAS

    fresh = build_models(cfg.model.name, **cfg.model.kwargs)
    meta = {"model": cfg.model.name, "args": cfg.model.kwargs, "steps": steps,
            "lambdas": list(cfg.train.lambdas or LAMBDAS)}
    for model, copy in ((intra, fresh[0]), (inter, fresh[1])):
        copy.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
        copy.update(force=True)
        copy.eval()
    if clips:
        from .priors import fit_priors

        say(f"fitting the priors to the symbols of {len(clips)} training videos "
            f"({sum(len(p) for _, p in clips)} pictures x 8 qualities)")
        fit_priors(fresh[0], fresh[1], clips, cfg.priors.steps, say=lambda line: say(f"  {line}"))
        meta["priors"] = f"fitted on {len(clips)} training videos"
        if cfg.priors.context_steps and all(hasattr(m, "context") for m in fresh):
            from .context import fit_contexts

            say(f"fitting the checkerboard contexts ({cfg.priors.context_steps} steps each)")
            fit_contexts(fresh[0], fresh[1], list(clips), cfg.priors.context_steps, say=lambda line: say(f"  {line}"))
            meta["context"] = f"fitted on {len(clips)} training videos"
    files = {}
    for name, copy in (("intra", fresh[0]), ("inter", fresh[1])):
        tmp = os.path.join(out, f".{name}.safetensors.tmp")
        # one metadata key: safetensors writes several in a random order, and the file hash must not vary
        sha = save_state(copy, tmp, {"lvc_train": json.dumps({**meta, "part": name}, sort_keys=True)})
        os.chmod(tmp, 0o666 & ~_umask())
        path = os.path.join(out, f"{name}-{sha[:8]}.safetensors")
        for old in os.listdir(out):
            if old.startswith(f"{name}-") and old.endswith(".safetensors"):
                os.remove(os.path.join(out, old))
        os.replace(tmp, path)
        files[name] = (path, sha)
    return files


def load_exported(cfg, files: dict[str, tuple[str, str]]):
    """The exported models read back from their files (hash checked), in eval mode."""
    intra, inter = build_models(cfg.model.name, **cfg.model.kwargs)
    for model, name in ((intra, "intra"), (inter, "inter")):
        path, sha = files[name]
        model.load_state_dict(load_state(path, sha))
    return intra.eval(), inter.eval()


def export_and_measure(cfg, intra, inter, data, out: str, steps: int, world: int, precision: str, device: str,
                       seconds: float, say) -> tuple[dict, RDResult | None]:
    clips = []
    if cfg.priors.videos:
        clips = data.training_clips(cfg.priors.frames, cfg.priors.videos)
        if not clips:
            say("no training videos (packed data only): the priors keep what training gave them")
    files = export_weights(cfg, intra, inter, out, steps, clips, say)
    priors_note = (f"fitted to the coded symbols of {len(clips)} training videos (first {cfg.priors.frames} frames)"
                   if clips else "as trained (not fitted: no training videos, or `[priors] videos = 0`)")
    for name, (path, sha) in files.items():
        say(f"exported {path} (SHA-256 {sha[:16]}…)")
    rd = None
    ev = cfg.eval
    if ev.qualities:
        clips = data.held_out_clips(ev.frames, ev.crop, ev.videos) if ev.videos else []
        images = data.held_out_images(ev.crop, ev.images) if ev.images else []
        if clips or images:
            n = sum(len(p) for _, p in clips) + len(images)
            say(f"measuring RD on {len(clips)} held-out clips and {len(images)} held-out images "
                f"({n} pictures x {len(ev.qualities)} qualities)")
            m_intra, m_inter = load_exported(cfg, files)
            rd = measure_rd(m_intra, m_inter, clips, images, ev.qualities)
        else:
            say("no held-out data: RD not measured (raise [data] holdout)")
    card = os.path.join(out, "MODEL_CARD.md")
    with open(card, "w") as f:
        f.write(model_card(cfg, data, files, steps, world, precision, device, seconds, rd, priors_note))
    say(f"wrote {card}")
    result = {"intra": files["intra"][0], "inter": files["inter"][0], "card": card}
    return result, rd


def model_card(cfg, data, files, steps, world, precision, device, seconds, rd: RDResult | None,
               priors_note: str = "as trained") -> str:
    from ..models import LAMBDAS

    lam = cfg.train.lambdas or LAMBDAS
    dc = cfg.data
    L = [f"# {cfg.model.name}, trained with `lvc train`", ""]
    L += ["| | |", "|---|---|",
          f"| model | `{cfg.model.name}` {json.dumps(cfg.model.kwargs, sort_keys=True) if cfg.model.kwargs else '(default size)'} |"]
    for name, (path, sha) in files.items():
        L.append(f"| {name} weights | `{os.path.basename(path)}`, SHA-256 `{sha}` |")
    L += [f"| steps | {steps} ({', '.join(f'{s.name} {s.steps}' for s in cfg.stages)}) |",
          f"| started from | {cfg.model.init or 'random initialisation'} (seed {cfg.train.seed}) |",
          f"| hardware | {world} process{'es' if world > 1 else ''} on {device}, {precision} |",
          f"| training time | {seconds / 60:.1f} min |",
          f"| fixed priors (ẑ, vector tables) | {priors_note} |",
          f"| config | `{os.path.basename(cfg.path)}`, SHA-256 `{hashlib.sha256(cfg.text.encode()).hexdigest()[:16]}…` "
          f"(copied to `config.toml` in the run folder) |", ""]
    L += ["## Data", ""]
    L += [f"- {line}" for line in data.describe()]
    L += [f"- {dc.crop}x{dc.crop} crops (8-bit 4:2:0, random offsets, horizontal flips, sequences also played "
          f"backwards); sources whose larger side exceeds {dc.downscale_above} px halved by a 2x2 area filter"
          if dc.downscale_above else f"- {dc.crop}x{dc.crop} crops (8-bit 4:2:0, random offsets, horizontal "
          "flips, sequences also played backwards); no downscaling",
          f"- videos: the first {dc.max_frames} frames, sequence frames 1 to {dc.max_stride} frames apart",
          f"- held out (never trained on): {round(100 * dc.holdout)}% of the files, chosen by a hash of their path", ""]
    L += ["## Schedule", "",
          "| stage | steps | lr | images / step | sequences x frames / step | trains |", "|---|---|---|---|---|---|"]
    for s in cfg.stages:
        lr = f"{s.lr:g}" + (f" → {s.lr_final:g} (last 25%)" if s.lr_final else "")
        L.append(f"| {s.name} | {s.steps} | {lr} | {s.images} | {s.sequences} x {s.frames} | {' + '.join(s.train)} |")
    L += ["", "Batch sizes are per process. Loss per frame: λ[q] · 255² · MSE-YUV + bpp, with MSE-YUV = "
          "(6 MSE-Y + MSE-U + MSE-V) / 8 and the quality q drawn per sample; P-frames are coded from the decoded "
          "(8-bit) previous frame with motion from the encoder's block search.", ""]
    L += ["## λ per quality", "", "| quality | " + " | ".join(str(q) for q in range(1, len(lam) + 1)) + " |",
          "|---" * (len(lam) + 1) + "|", "| λ | " + " | ".join(f"{v:g}" for v in lam) + " |", ""]
    L += ["## Rate–distortion on held-out data", ""]
    if rd is None:
        L += ["Not measured (no held-out data, or `[eval] qualities = []`).", ""]
    else:
        ev = cfg.eval
        what = []
        if rd.clips:
            what.append(f"{len(rd.clips)} held-out clips (the first {max(rd.frames_per_clip)} frames: one I-frame, "
                        "then P-frames)")
        if rd.image_names:
            what.append(f"{len(rd.image_names)} held-out images (I-frames)")
        crop = f"centre crops of at most {ev.crop}x{ev.crop}" if ev.crop else "whole frames"
        L += [f"Measured at the end of training on {' and '.join(what)}, {crop}, through the models' real "
              "`compress`/`decompress` path with the exported weights: bpp counts the bytes of every entropy-coded "
              "substream (motion vectors included; the container's per-frame headers are not counted), PSNR-YUV = "
              "(6 PSNR-Y + PSNR-U + PSNR-V) / 8 of the decoded pictures.", "", rd_table(rd)]
        frames = sum(r.frames for r in rd.video + rd.images)
        L += [f"Decoded pictures equal to the encoder's reconstruction: "
              + ("all " + str(frames) if not rd.mismatches else f"{frames - rd.mismatches} of {frames} (MISMATCH)"),
              ""]
        L += ["Held-out files: " + ", ".join(f"`{p}`" for p in rd.clips + rd.image_names), ""]
    return "\n".join(L)
