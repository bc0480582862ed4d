"""The training loop of ``lvc train``: staged schedules, the rate–distortion loss, checkpoints that resume
exactly, and DistributedDataParallel when started by torchrun.

Each step codes a batch of photo crops and the first frames of video sequences with the intra model, then
the next frames of each sequence as P-frames from the *decoded* previous frame (rounded to 8 bits, motion
found by :func:`lvcodec.motion.search` as the encoder finds it), so the inter model learns on its own
references. The quality level is drawn per sample: one variable-rate model learns every rate. Loss per
frame: ``lambda[q] * 255^2 * MSE_YUV + bpp`` with ``MSE_YUV = (6 MSE_Y + MSE_U + MSE_V) / 8``; the loss of a
step is the mean over the I-frames plus the mean over the P-frames. The entropy bottlenecks' quantiles
follow their own "aux" loss with their own optimizer (CompressAI's recipe).

Exact resumes: a checkpoint holds both models, the stage, the step within it, both optimizers, and every
rank's random state (the numpy generator that draws data and qualities, torch's generators that draw the
quantization noise). On the CPU a resumed run ends with the same bits as an uninterrupted one.

Several processes: every rank draws its own batches (its own generator), DDP averages the gradients, so
the weights stay identical on all ranks (checked at the end). The quantiles are left out of DDP (no data
gradient reaches them) and their aux gradients are averaged by hand.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, LvcError, OutputExistsError
from .build import build_models, init_weights
from .config import Config, StageConfig
from .data import TrainingSet
from ..zoo import HyperpriorV1
from ..models import fitted_after_training, upgrade_state
from .distributed import Dist

#: the motion field P-frames are trained with: the one the shipped encoder codes with
ENCODER_FIELD = HyperpriorV1.MOTION_FIELDS[0]

CHECKPOINT = "checkpoint.pt"
LOG = "log.csv"
LOG_FIELDS = ["step", "stage", "seconds", "lr", "loss", "i_psnr", "i_bpp", "p_psnr", "p_bpp", "aux"]
CHECKPOINT_FORMAT = 1


class DivergedError(LvcError):
    """The ranks of a distributed run ended with different weights."""


# -- the loss -------------------------------------------------------------------------------------


def to6(y: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """uint8 Y (B,H,W) and UV (B,2,H/2,W/2) -> float (B,6,H/2,W/2) in [0, 1]."""
    return torch.cat((F.pixel_unshuffle(y[:, None].float(), 2), uv.float()), 1) / 255.0


def bpp(likelihoods: dict, pixels: int) -> torch.Tensor:
    """Bits per luma pixel of each batch item."""
    return sum(torch.log(v.float()).flatten(1).sum(1) for v in likelihoods.values()) / (-math.log(2) * pixels)


def round8(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255) / 255


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


# -- batches, drawn in a thread ------------------------------------------------------------------------


class _Batches:
    """Draws ``n`` batches of one stage in a background thread (decoding overlaps training). Each batch comes
    with the generator state right after it was drawn: what a checkpoint taken after that step stores."""

    def __init__(self, data: TrainingSet, stage: StageConfig, rng: np.random.Generator, n: int, qualities: int):
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.stop = threading.Event()

        def work():
            try:
                for _ in range(n):
                    b = {}
                    if stage.images:
                        b["img"] = data.images_batch(rng, stage.images)
                    if stage.sequences:
                        b["seq"] = data.sequences_batch(rng, stage.sequences, stage.frames)
                    b["q"] = rng.integers(0, qualities, stage.images + stage.sequences)
                    item = (b, rng.bit_generator.state)
                    while not self.stop.is_set():
                        try:
                            self.q.put(item, timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if self.stop.is_set():
                        return
            except BaseException as e:  # handed to the training thread
                self.q.put((e, None))

        self.thread = threading.Thread(target=work, daemon=True, name="lvc-train-data")
        self.thread.start()

    def next(self):
        b, state = self.q.get()
        if isinstance(b, BaseException):
            raise b
        return b, state

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


# -- state ---------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    out: str
    steps: int
    finished: bool  # all stages done (else stopped by --stop-after)
    files: dict = field(default_factory=dict)  # exported weights and the model card
    rd: object = None  # an evaluate.RDResult
    seconds: float = 0.0


def _rng_states(rng: np.random.Generator, np_state=None) -> dict:
    return {"numpy": np_state if np_state is not None else rng.bit_generator.state,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None}


def _set_rng_states(rng: np.random.Generator, st: dict) -> None:
    rng.bit_generator.state = st["numpy"]
    torch.set_rng_state(st["torch"].cpu())
    if st.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"].cpu())


def state_digest(*models) -> str:
    """SHA-256 of the models' state dicts (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for m in models:
        for k, v in sorted(m.state_dict().items()):
            t = v.detach().cpu().contiguous()
            h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _atomic_save(obj, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _prepare_out(cfg: Config, out: str, resume: bool, overwrite: bool):
    """Rank 0: check the run folder; return (checkpoint or None, error message or None)."""
    ck_path = os.path.join(out, CHECKPOINT)
    if resume:
        if not os.path.isfile(ck_path):
            return None, f"{out}: no {CHECKPOINT} to resume from"
        try:
            ck = torch.load(ck_path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a damaged file is the user's to know about
            return None, f"{ck_path}: unreadable checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        if ck.get("format") != CHECKPOINT_FORMAT:
            return None, f"{ck_path}: checkpoint format {ck.get('format')}, this lvcodec reads {CHECKPOINT_FORMAT}"
        if ck["model"] != {"name": cfg.model.name, "args": cfg.model.kwargs}:
            return None, (f"{ck_path} holds model {ck['model']['name']} {ck['model']['args']}, the config asks for "
                          f"{cfg.model.name} {cfg.model.kwargs}")
        return ck, None
    if os.path.exists(ck_path) and not overwrite:
        return None, f"{out} holds a run (continue it with --resume, or start over with -y)"
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):  # starting over: nothing of the old run may be mistaken for this one
        if name in (CHECKPOINT, LOG, "MODEL_CARD.md", "ranks.json", "config.toml") or \
                (name.endswith(".safetensors") and name.startswith(("intra", "inter"))):
            os.remove(os.path.join(out, name))
    with open(os.path.join(out, "config.toml"), "w") as f:
        f.write(cfg.text)
    return None, None


def _trim_log(path: str, step: int) -> None:
    """Keep the rows of log.csv up to ``step`` (a resumed run writes the later ones again)."""
    if not os.path.isfile(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(LOG_FIELDS)
        w.writerows(keep)


# -- the run ---------------------------------------------------------------------------------------------


class _Echo:
    """Progress for rank 0: a tqdm bar on stderr when it is a terminal, plain lines otherwise."""

    def __init__(self, enabled: bool, total: int, initial: int):
        from tqdm import tqdm

        self.enabled = enabled
        self.bar = tqdm(total=total, initial=initial, unit="step", file=sys.stderr, dynamic_ncols=True,
                        disable=None if enabled else True, leave=True)
        self.lines = enabled and self.bar.disable  # no terminal: print the log rows instead

    def say(self, msg: str) -> None:
        if self.enabled:
            if self.bar.disable:
                print(f"lvc train: {msg}", file=sys.stderr, flush=True)
            else:
                self.bar.write(f"lvc train: {msg}", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def run(cfg: Config, out: str | None = None, resume: bool = False, overwrite: bool = False,
        stop_after: int | None = None, device: str | None = None, progress: bool = True,
        check_only: bool = False) -> RunResult:
    """Train as ``cfg`` says into the run folder ``out`` (default ``cfg.train.out``); see the module docstring.

    ``stop_after`` stops after that global step with a checkpoint (continue with ``resume``); ``check_only``
    scans the data, prints the plan and trains nothing."""
    out = out or cfg.train.out
    t_start = time.time()
    dev_pref = device or cfg.train.device
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    d = Dist.setup(dev_pref)
    try:
        return _run(cfg, out, resume, overwrite, stop_after, d, progress, check_only, t_start)
    finally:
        d.close()


def _run(cfg, out, resume, overwrite, stop_after, d: Dist, progress, check_only, t_start) -> RunResult:
    from ..models import LAMBDAS, NUM_QUALITIES

    tc = cfg.train
    echo_enabled = progress and d.main
    data = TrainingSet(cfg.data)
    data.check(cfg.stages)
    precision = tc.precision if tc.precision != "auto" else ("bf16" if d.device.type == "cuda" else "fp32")
    plan = [f"{cfg.model.name} {cfg.model.kwargs or ''}".rstrip() + f" on {d.device.type}, {precision}, "
            f"{d.world} process{'es' if d.world > 1 else ''}; run folder {out}",
            *data.describe()]
    for i, s in enumerate(cfg.stages, 1):
        plan.append(f"stage {i}/{len(cfg.stages)} {s.name}: {s.steps} steps, lr {s.lr:g}"
                    + (f" -> {s.lr_final:g}" if s.lr_final else "") + f", {s.images} images + {s.sequences} "
                    f"sequences x {s.frames} frames per process, trains {' + '.join(s.train)}")
    if check_only:
        if d.main:
            for line in plan:
                print(line, flush=True)
        return RunResult(out, 0, False)

    torch.manual_seed(tc.seed)  # the same initial weights on every rank
    intra, inter = build_models(cfg.model.name, **cfg.model.kwargs)

    # rank 0 owns the run folder; everyone learns its verdict and the checkpoint from it
    ck, err = _prepare_out(cfg, out, resume, overwrite) if d.main else (None, None)
    err = d.broadcast_object(err)
    if err:
        raise (OutputExistsError if "holds a run" in err else InputError)(err)
    ck = d.broadcast_object(ck)

    lambdas = torch.tensor(tc.lambdas or LAMBDAS, dtype=torch.float32, device=d.device)
    if d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = not tc.deterministic
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    if ck is None and cfg.model.init:
        init_weights(intra, inter, cfg.model.init)
    step, stage_i, stage_step, elapsed = 0, 0, 0, 0.0
    rng = np.random.default_rng(np.random.SeedSequence([tc.seed, d.rank]))
    torch.manual_seed(int(np.random.SeedSequence([tc.seed, d.rank, 1]).generate_state(1)[0]))
    if ck is not None:
        intra.load_state_dict(upgrade_state(intra, ck["intra"]))
        inter.load_state_dict(upgrade_state(inter, ck["inter"]))
        step, stage_i, stage_step, elapsed = ck["step"], ck["stage"], ck["stage_step"], ck["elapsed"]
        if ck["world_size"] == d.world:
            _set_rng_states(rng, ck["rng"][d.rank])
        else:  # fresh streams that do not repeat the run's first batches
            rng = np.random.default_rng(np.random.SeedSequence([tc.seed, d.rank, step]))
            torch.manual_seed(int(np.random.SeedSequence([tc.seed, d.rank, step, 1]).generate_state(1)[0]))
            if d.main:
                print(f"lvc train: warning: the checkpoint was written by {ck['world_size']} processes, this run "
                      f"has {d.world}: the random streams restart (the run goes on, not bit-exactly)", file=sys.stderr)
        if ck["config"] != cfg.text and d.main:
            print("lvc train: warning: the config differs from the one the checkpoint was written with",
                  file=sys.stderr)
    intra.to(d.device).train()
    inter.to(d.device).train()
    if precision == "bf16":
        from .precision import autocast_transforms, slow_bf16_warning

        if d.main and (msg := slow_bf16_warning(d.device.type)):
            print(f"lvc train: warning: {msg}", file=sys.stderr)
        autocast_transforms(intra, d.device.type)
        autocast_transforms(inter, d.device.type)
    fwd = {"intra": intra, "inter": inter}
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        for name, m in (("intra", intra), ("inter", inter)):
            DDP._set_params_and_buffers_to_ignore_for_model(
                m, [n for n, _ in m.named_parameters() if n.endswith("quantiles") or fitted_after_training(n)])
            fwd[name] = DDP(m, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    raw = {"intra": intra, "inter": inter}

    total = cfg.total_steps
    log_path = os.path.join(out, LOG)
    writer = log_file = None
    if d.main:
        if ck is not None:
            _trim_log(log_path, step)
        new = not os.path.isfile(log_path)
        log_file = open(log_path, "a", newline="")
        writer = csv.writer(log_file)
        if new:
            writer.writerow(LOG_FIELDS)
    echo = _Echo(echo_enabled, min(total, stop_after or total), min(step, total))
    for line in plan:
        echo.say(line)
    if ck is not None:
        echo.say(f"resumed at step {step} (stage {min(stage_i + 1, len(cfg.stages))}, step {stage_step} in it)")

    def checkpoint(opt, aux_opt, np_state):
        states = d.gather_objects(_rng_states(rng, np_state))
        if d.main:
            _atomic_save({
                "format": CHECKPOINT_FORMAT, "config": cfg.text,
                "model": {"name": cfg.model.name, "args": cfg.model.kwargs},
                "intra": intra.state_dict(), "inter": inter.state_dict(),
                "step": step, "stage": stage_i, "stage_step": stage_step,
                "opt": opt.state_dict() if opt else None, "aux_opt": aux_opt.state_dict() if aux_opt else None,
                "elapsed": elapsed + time.time() - t_start, "world_size": d.world, "rng": states,
            }, os.path.join(out, CHECKPOINT))

    stopped = False
    t_log = time.time()
    try:
        while stage_i < len(cfg.stages) and not stopped:
            stage = cfg.stages[stage_i]
            if stage_step >= stage.steps:  # resumed with a config whose stage is shorter now
                stage_i, stage_step, ck = stage_i + 1, 0, None
                continue
            trained = [n for n in ("intra", "inter") if n in stage.train]
            named = [(k, p) for n in trained for k, p in raw[n].named_parameters() if not fitted_after_training(k)]
            params = [p for k, p in named if not k.endswith("quantiles")]
            aux_params = [p for k, p in named if k.endswith("quantiles")]
            opt = torch.optim.Adam(params, lr=stage.lr)
            aux_opt = torch.optim.Adam(aux_params, lr=stage.aux_lr)
            if ck is not None and ck["stage"] == stage_i and ck["opt"] is not None:
                opt.load_state_dict(ck["opt"])
                aux_opt.load_state_dict(ck["aux_opt"])
            ck = None
            n = stage.steps - stage_step
            if stop_after is not None:
                n = max(0, min(n, stop_after - step))
            echo.bar.set_description(stage.name)
            batches = _Batches(data, stage, rng, n, NUM_QUALITIES)
            np_state = rng.bit_generator.state if n == 0 else None
            sums = torch.zeros(7, dtype=torch.float64)
            try:
                for _ in range(n):
                    b, np_state = batches.next()
                    lr = stage.lr_final if stage.lr_final and stage_step >= max(1, int(0.75 * stage.steps)) else stage.lr
                    for g in opt.param_groups:
                        g["lr"] = lr
                    stats = _step(b, stage, fwd, trained, lambdas, tc, d.device)
                    loss = stats.pop("loss")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if tc.clip_grad:
                        torch.nn.utils.clip_grad_norm_(params, tc.clip_grad)
                    opt.step()
                    aux = sum(raw[n_].aux_loss() for n_ in trained)
                    aux_opt.zero_grad(set_to_none=True)
                    aux.backward()
                    d.average_([p.grad for p in aux_params if p.grad is not None])
                    aux_opt.step()
                    step += 1
                    stage_step += 1
                    sums += torch.tensor([1, loss.item(), *stats.values(), aux.item()], dtype=torch.float64)
                    echo.bar.update(1)
                    last = stage_step == stage.steps or step == stop_after
                    if step % tc.log_every == 0 or last:
                        if d.world > 1:
                            summed = sums.to(d.device)
                            torch.distributed.all_reduce(summed)
                            sums = summed.cpu()
                        m = (sums[1:] / sums[0].clamp_min(1)).tolist()
                        row = [step, stage.name, round(elapsed + time.time() - t_start, 1), f"{lr:g}",
                               *(f"{v:.4f}" if math.isfinite(v) else "" for v in m)]
                        if d.main:
                            writer.writerow(row)
                            log_file.flush()
                            if not echo.lines:
                                echo.bar.set_postfix_str(f"loss {m[0]:.3f} I {m[1]:.2f}dB {m[2]:.3f}bpp"
                                                         + (f" P {m[3]:.2f}dB {m[4]:.3f}bpp" if stage.p_frames else ""))
                        if echo.lines:
                            echo.say(f"step {step}/{total} {stage.name}: loss {m[0]:.3f}  I {m[1]:.2f} dB "
                                     f"{m[2]:.3f} bpp" + (f"  P {m[3]:.2f} dB {m[4]:.3f} bpp" if stage.p_frames
                                                           else "") + f"  aux {m[5]:.1f}  ({time.time() - t_log:.0f} s)")
                        t_log = time.time()
                        sums.zero_()
                    if stage_step == stage.steps:
                        stage_i, stage_step = stage_i + 1, 0
                        checkpoint(None, None, np_state)
                    elif step % tc.checkpoint_every == 0 or step == stop_after:
                        checkpoint(opt, aux_opt, np_state)
            finally:
                batches.close()
            if stop_after is not None and step >= stop_after and stage_i < len(cfg.stages):
                stopped = True
    finally:
        echo.close()
        if log_file:
            log_file.close()

    # every rank must hold the same weights
    digests = d.gather_objects(state_digest(intra, inter))
    result = RunResult(out, step, stage_i >= len(cfg.stages), seconds=elapsed + time.time() - t_start)
    if d.main:
        import json

        with open(os.path.join(out, "ranks.json"), "w") as f:
            json.dump({"world_size": d.world, "step": step, "sha256": digests}, f, indent=1)
        if len(set(digests)) > 1:
            raise DivergedError(f"the {d.world} ranks ended with different weights (see {out}/ranks.json)")
    if stopped:
        echo.say(f"stopped after step {step} of {total}; continue with --resume")
        return result
    d.close()  # the rest is rank 0's alone (and may take longer than a collective's timeout)
    if d.main:
        from .export import export_and_measure

        intra.eval()
        inter.eval()
        result.files, result.rd = export_and_measure(cfg, raw["intra"], raw["inter"], data, out, step, d.world,
                                                      precision, str(d.device), result.seconds, echo.say)
    return result


def _step(b: dict, stage: StageConfig, fwd: dict, trained: list[str], lambdas: torch.Tensor, tc, dev) -> dict:
    """Forward one batch: returns the loss (a tensor) and per-step means for the log."""
    from .. import motion
    from ..codec import mv_lambda
    from ..models import mse_yuv

    q = torch.from_numpy(b["q"]).to(dev)
    xs = []
    if "img" in b:
        xs.append(to6(*(torch.from_numpy(a).to(dev) for a in b["img"])))
    seq = None
    if "seq" in b:
        ys, uvs = (torch.from_numpy(a).to(dev) for a in b["seq"])
        seq = [to6(ys[:, t], uvs[:, t]) for t in range(ys.shape[1])]
        xs.append(seq[0])
    x = torch.cat(xs, 0)
    pixels = 4 * x.shape[-1] * x.shape[-2]
    with torch.set_grad_enabled("intra" in trained):
        out = fwd["intra"](x, q)
    dist_i = mse_yuv(out["x_hat"], x)
    rate_i = bpp(out["likelihoods"], pixels)
    loss = (lambdas[q] * 255**2 * dist_i + rate_i).mean()
    stats = {"i_psnr": _psnr(dist_i.detach()).mean().item(), "i_bpp": rate_i.detach().mean().item(),
             "p_psnr": float("nan"), "p_bpp": float("nan")}
    if seq is not None and len(seq) > 1:
        n_img = x.shape[0] - seq[0].shape[0]
        qs = q[n_img:]
        ref = round8(out["x_hat"][n_img:].detach().float())
        lam_mv = torch.tensor([mv_lambda(int(k) + 1) for k in qs.tolist()], device=dev).view(-1, 1, 1, 1)
        loss_p, psnr_p, rate_p = 0.0, 0.0, 0.0
        for cur in seq[1:]:
            # the encoder chooses the block size per frame: train on all of them (torch's generator,
            # checkpointed, draws it)
            block = tc.motion_blocks[int(torch.randint(len(tc.motion_blocks), ()))]
            mv = motion.search(cur, ref, lam=lam_mv * motion.BLOCK / block, block=block, radius=tc.search_radius)
            pred = motion.compensate(ref, mv, field=ENCODER_FIELD)  # the field the encoder codes with
            mvd = mv - motion.mv_prediction(mv)
            o = fwd["inter"](cur, pred, qs, mvd)
            dd = mse_yuv(o["x_hat"], cur)
            rr = bpp(o["likelihoods"], pixels)
            loss_p = loss_p + (lambdas[qs] * 255**2 * dd + rr).mean()
            psnr_p += _psnr(dd.detach()).mean().item()
            rate_p += rr.detach().mean().item()
            ref = round8(o["x_hat"].detach().float())
        k = len(seq) - 1
        loss = loss + loss_p / k
        stats.update(p_psnr=psnr_p / k, p_bpp=rate_p / k)
    return {"loss": loss, **stats}
