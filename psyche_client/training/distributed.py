"""Several processes, one client: `torchrun --nproc-per-node N -m psyche_client join …`.

Rank 0 is the client the network sees: it talks to the coordinator and to peers, holds the
master copy of the model (what is hashed, snapshotted, verified, shared and checkpointed) and
the DeMo momentum. Ranks > 0 talk only to rank 0, over torch.distributed, and train their slice
of each assigned batch. The control path is a loop of small commands that rank 0 broadcasts
(`broadcast_object_list` on a gloo group) and every worker executes in the same order:

* ``load``: the model's structure (pickled with every tensor left out, see `_skeleton`) and the
  run's settings; every rank builds its compute copy from it, then rank 0 streams the tensors;
* ``sync``: rank 0 streams its parameters again (after it changed them itself: FSDP applies, a
  resync or a checkpoint load); noticed from the tensors' version counters, so the client's
  other code needs no hooks;
* ``train``: the whole batch; rank r trains on rows r, r+N, … and the weighted gradients are
  summed onto rank 0 (`dist.reduce`, or FSDP's reduce-scatter then a gather), which compresses
  them: DeMo state exists only on rank 0;
* ``apply``: the agreed results (data parallel only), which every rank applies to its own
  replica; ``ping`` (keeps an idle control group within its timeout); ``stop``.

Two layouts of the compute copy:

* data parallel (``dp``): every rank holds the whole model; rank 0 computes on its master copy
  when that lives on rank 0's compute device (else on a copy, refreshed like FSDP's below).
  After an apply every rank holds identical parameters because every rank applies the same
  results with the same code: the apply is exact by construction (integer DCT basis, sign
  step; see optimizer.py), which is the same property that keeps separate 1-rank clients
  identical. Broadcasting the results costs their size (≈ 1/100 of the model in 1-bit mode);
  broadcasting the parameters would cost the model's size every step.
* FSDP2 (``fsdp``, `torch.distributed.fsdp.fully_shard` on every block and the root): each
  rank holds 1/N of the parameters, for a model whose weights, gradients and activations do
  not fit one device. Rank 0 applies the results to its master copy (host memory) and streams
  the parameters to the shards: identical by construction.

Either way every `check_every`-th apply each worker hashes its parameters (`param_hash` format;
in FSDP the full tensors it received) and rank 0 compares them with its own: a mismatch stops
the client (`RanksDiverged`) rather than letting it publish results from diverged replicas.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import pickle
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from psyche_client.training.aggregate import ApplyScratch
from psyche_client.training.hashing import param_hash
from psyche_client.training.model import input_embedding_names
from psyche_client.training.optimizer import DeMoConfig, apply_results
from psyche_client.training.result import DeMoResult
from psyche_client.training.tiles import TileLayout

log = logging.getLogger("psyche.client")

MODES = ("auto", "dp", "fsdp")
PING_S = 60.0
"""Rank 0 sends a ping when no command went out for this long, so idle workers (a lobby, a
warmup) stay within the control group's timeout."""
CONTROL_TIMEOUT = timedelta(minutes=30)
"""A worker that hears nothing from rank 0 for this long (no command, no ping) gives up."""
FSDP_MEMORY_FACTOR = 4
"""`auto` picks FSDP when this many times the model's parameter bytes (weights, gradients,
headroom for activations and communication buffers) exceed one device's memory."""


class RanksDiverged(RuntimeError):
    """A worker's parameters differ from rank 0's after an apply."""


def launched() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


@dataclass
class Session:
    """This process's place in a multi-rank client (one per process, from `start`)."""

    rank: int
    world: int
    local_rank: int
    control: Any  # the gloo process group carrying commands
    mode: str = "auto"
    check_every: int = 1
    events_path: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_sent: float = field(default_factory=time.monotonic)
    closed: bool = False

    @property
    def device(self) -> torch.device:
        if torch.cuda.is_available() and torch.cuda.device_count() > self.local_rank:
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    # Commands (rank 0 sends, workers receive; the lock keeps every command and the
    # collectives it implies in one order across threads).

    def send(self, *command: Any) -> None:
        box = [command]
        dist.broadcast_object_list(box, src=0, group=self.control)
        self.last_sent = time.monotonic()

    def receive(self) -> tuple[Any, ...]:
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return tuple(box[0])

    def event(self, kind: str, **fields: Any) -> None:
        if self.events_path is None:
            return
        with open(self.events_path, "a") as f:
            f.write(json.dumps({"event": kind, "time": time.time(), **fields}) + "\n")

    def close(self) -> None:
        """Rank 0: tell the workers to exit; every rank: leave the process group."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception), self.lock:
            if self.rank == 0:
                self.send("stop")
            dist.destroy_process_group()


_session: Session | None = None


def start(
    mode: str = "auto", check_every: int = 1, events_path: Path | None = None
) -> Session | None:
    """Join the torchrun group (None when not launched with several processes)."""
    global _session
    where = launched()
    if where is None:
        return None
    if mode not in MODES:
        raise ValueError(f"parallel mode must be one of {', '.join(MODES)}")
    rank, world, local_rank = where
    cuda = torch.cuda.is_available() and torch.cuda.device_count() > local_rank
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    if events_path is not None and rank > 0:
        events_path = events_path.with_name(f"{events_path.name}.rank{rank}")
    _session = Session(rank, world, local_rank, control, mode, check_every, events_path)
    if rank == 0:
        threading.Thread(target=_keepalive, args=(_session,), daemon=True).start()
    return _session


def active() -> Session | None:
    """Rank 0's session, when this process leads a multi-rank client."""
    return _session if _session is not None and _session.rank == 0 else None


def _keepalive(session: Session) -> None:
    while not session.closed:
        time.sleep(PING_S / 4)
        with session.lock:
            if not session.closed and time.monotonic() - session.last_sent > PING_S:
                session.send("ping")


# The model's structure without its tensors.


class _SkeletonPickler(pickle.Pickler):
    """Pickles a module with every tensor replaced by (index, shape, dtype, kind), so its
    structure travels in a few kB whatever its size; tied tensors keep one index."""

    def __init__(self, f: io.BytesIO) -> None:
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self.ids: dict[int, int] = {}

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, torch.Tensor):
            return None
        i = self.ids.setdefault(id(obj), len(self.ids))
        dtype = str(obj.dtype).removeprefix("torch.")
        return (i, tuple(obj.shape), dtype, isinstance(obj, nn.Parameter), obj.requires_grad)


class _SkeletonUnpickler(pickle.Unpickler):
    def __init__(self, f: io.BytesIO, device: torch.device) -> None:
        super().__init__(f)
        self.device = device
        self.made: dict[int, torch.Tensor] = {}

    def persistent_load(self, pid: Any) -> torch.Tensor:
        i, shape, dtype, is_param, requires_grad = pid
        if i not in self.made:
            t = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
            self.made[i] = nn.Parameter(t, requires_grad) if is_param else t
        return self.made[i]


def skeleton(model: nn.Module) -> bytes:
    """The module's structure, for `rebuild`."""
    buf = io.BytesIO()
    try:
        _SkeletonPickler(buf).dump(model)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise RuntimeError(
            f"the model ({type(model).__name__}) cannot be sent to the other ranks: {e}"
        ) from e
    return buf.getvalue()


def rebuild(blob: bytes, device: torch.device) -> nn.Module:
    """The module of `skeleton`, every tensor allocated (not filled) on `device`."""
    model = _SkeletonUnpickler(io.BytesIO(blob), device).load()
    assert isinstance(model, nn.Module)
    return model


def _tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """(name, tensor, is_parameter) in one order on every rank: parameters, then buffers."""
    for name, p in model.named_parameters():
        yield name, p, True
    for name, b in model.named_buffers():
        yield name, b, False


# The compute copy every rank trains on.


@dataclass
class Replica:
    """This rank's compute copy of the model and what it needs to train and apply."""

    session: Session
    model: nn.Module
    fsdp: bool
    micro_batch: int | None
    demo: DeMoConfig
    names: list[str]  # parameters DeMo trains, in model order
    lr_scales: dict[str, float]  # DeMoConfig.lr_scales of the model's input embedding
    layout: TileLayout | None = None
    scratch: ApplyScratch = field(default_factory=ApplyScratch)

    @classmethod
    def build(
        cls,
        session: Session,
        blob: bytes,
        fsdp: bool,
        micro_batch: int | None,
        demo: DeMoConfig,
        device: torch.device,
    ) -> Replica:
        if fsdp:  # built on meta, sharded, then each rank allocates only its shards
            model = rebuild(blob, torch.device("meta"))
            _shard(model, session.world, device)
            model.to_empty(device=device)
        else:
            model = rebuild(blob, device)
        return cls.of(session, model, fsdp, micro_batch, demo)

    @classmethod
    def of(
        cls,
        session: Session,
        model: nn.Module,
        fsdp: bool,
        micro_batch: int | None,
        demo: DeMoConfig,
    ) -> Replica:
        """A replica over `model` as it is: the parameters DeMo trains and their step scales."""
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        scales = demo.lr_scales(input_embedding_names(model))
        return cls(session, model, fsdp, micro_batch, demo, names, scales)

    def receive(self, source: nn.Module | None, digest: bool) -> str | None:
        """Fill every parameter and buffer from rank 0's `source` (rank 0 passes its master
        copy, workers None); the `param_hash` of what arrived when `digest`."""
        h = hashlib.sha256() if digest else None
        src = {n: t for n, t, _ in _tensors(source)} if source is not None else {}
        device = _comm_device(self.session)
        for name, t, is_param in list(_tensors(self.model)):
            if source is not None and src[name] is t:  # rank 0's master is its replica
                dist.broadcast(t.detach(), src=0)
                continue
            full = (
                src[name].detach().to(device)
                if source is not None
                else torch.empty(tuple(t.shape), dtype=t.dtype, device=device)
            )
            dist.broadcast(full, src=0)
            with torch.no_grad():
                if is_param and _is_dtensor(t):
                    from torch.distributed.tensor import DTensor, distribute_tensor

                    assert isinstance(t, DTensor)
                    local = distribute_tensor(full, t.device_mesh, t.placements, src_data_rank=None)
                    t.to_local().copy_(local.to_local())
                else:
                    t.copy_(full)
            if h is not None and is_param:
                _feed(h, name, full)
        return h.hexdigest() if h is not None else None

    def gradients(
        self, batch: torch.Tensor, total: int
    ) -> tuple[dict[str, torch.Tensor], float, int]:
        """Weighted gradients of this rank's rows of `batch` (weight: rows / `total`), its
        summed loss (Σ loss·rows) and its token count."""
        rank, world = self.session.rank, self.session.world
        mine = batch[rank::world]
        mb = self.micro_batch or max(1, math.ceil(total / world))
        # FSDP gathers parameters in every forward/backward: all ranks run the same number of
        # micro-batches (a rank short of rows runs a zero-weight one on a stand-in row).
        parts = math.ceil(math.ceil(total / world) / mb) if self.fsdp else math.ceil(len(mine) / mb)
        device = next(iter(self.model.parameters())).device
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for i in range(parts):
            part = mine[i * mb : (i + 1) * mb]
            weight = part.shape[0] / total
            if part.shape[0] == 0:
                part = batch[:1]
            part = part.to(device)
            _, loss = self.model(part[:, :-1], part[:, 1:])
            assert loss is not None
            (loss * weight).backward()
            loss_sum += loss.item() * part.shape[0] * (weight > 0)
        params = dict(self.model.named_parameters())
        grads: dict[str, torch.Tensor] = {}
        for n in self.names:
            g = params[n].grad
            if g is None:
                g = torch.zeros_like(params[n])
            grads[n] = g
        tokens = int(mine.shape[0] * (batch.shape[1] - 1))
        return grads, loss_sum, tokens

    def reduce(
        self, grads: dict[str, torch.Tensor], device: torch.device
    ) -> dict[str, torch.Tensor]:
        """The ranks' gradients summed, on rank 0 and on `device` (workers get unspecified
        values). One parameter at a time, so a worker never holds more than one full one."""
        out: dict[str, torch.Tensor] = {}
        for n in self.names:
            g = grads[n]
            if _is_dtensor(g):
                full = g.full_tensor()  # type: ignore[attr-defined]
                if self.session.rank == 0:
                    out[n] = full.to(device)
            else:
                dist.reduce(g, dst=0, op=dist.ReduceOp.SUM)
                out[n] = g.to(device)
        self.model.zero_grad(set_to_none=True)
        return out

    def apply(self, results: Sequence[DeMoResult], lr: float | None) -> None:
        params = dict(self.model.named_parameters())
        trained = {n: params[n] for n in self.names}
        if self.layout is None:
            self.layout = TileLayout(
                {n: tuple(p.shape) for n, p in trained.items()}, self.demo.chunk_size
            )
        apply_results(
            trained,
            results,
            self.demo,
            lr=lr,
            layout=self.layout,
            scratch=self.scratch,
            lr_scales=self.lr_scales,
        )


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _comm_device(session: Session) -> torch.device:
    """Where collectives of model tensors run: the GPU under NCCL, else the CPU (gloo)."""
    return session.device


def _feed(h: Any, name: str, t: torch.Tensor) -> None:
    """One parameter into a running hash, exactly as `param_hash` does."""
    t = t.detach().to("cpu").contiguous()
    meta = f"{name}|{t.dtype}|{tuple(t.shape)}".encode()
    h.update(struct.pack("<I", len(meta)) + meta)
    raw = t.view(torch.uint8) if t.numel() else t.new_empty(0, dtype=torch.uint8)
    h.update(raw.numpy().tobytes())


def _shard(model: nn.Module, world: int, device: torch.device) -> None:
    """FSDP2 on every block (each element of a ModuleList: the transformer layers of any
    common architecture) and on the root; gradients summed, not averaged (we weight them)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    blocks = [b for m in model.modules() if isinstance(m, nn.ModuleList) for b in m]
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM)


def choose_fsdp(mode: str, model: nn.Module, device: torch.device) -> bool:
    """`fsdp` and `dp` as asked; `auto`: FSDP when the model does not comfortably fit one GPU
    (`FSDP_MEMORY_FACTOR`), data parallel otherwise and always on CPUs."""
    if mode != "auto":
        return mode == "fsdp"
    if device.type != "cuda":
        return False
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return size * FSDP_MEMORY_FACTOR > torch.cuda.get_device_properties(device).total_memory


# Rank 0's side.


class Engine:
    """Rank 0's handle on the workers for one model (a `Trainer` holds one when the client
    runs with several ranks)."""

    def __init__(
        self,
        session: Session,
        master: nn.Module,
        demo: DeMoConfig,
        micro_batch: int | None,
        stream: bool | None = None,
    ) -> None:
        self.session = session
        self.master = master
        self.applies = 0
        self.device = next(iter(master.parameters())).device
        self.fsdp = choose_fsdp(session.mode, master, session.device)
        # Rank 0 computes on its master copy when that already lives on its compute device;
        # otherwise (FSDP, or a master in host memory while the ranks train on GPUs) on a copy
        # of its own, and the master's parameters are streamed to every copy after each apply.
        self.stream = (self.fsdp or self.device != session.device) if stream is None else stream
        blob = skeleton(master)
        with session.lock:
            session.send("load", blob, self.fsdp, micro_batch, demo)
            if self.stream:
                self.replica = Replica.build(
                    session, blob, self.fsdp, micro_batch, demo, session.device
                )
            else:
                self.replica = Replica.of(session, master, False, micro_batch, demo)
            self.replica.receive(master, digest=False)
            self._versions = self._seen()
        layout = "fsdp" if self.fsdp else "dp"
        log.info("training on %d ranks (%s)", session.world, layout)
        session.event("ranks", world=session.world, layout=layout)

    def _seen(self) -> list[int]:
        return [t._version for _, t, _ in _tensors(self.master)]

    def _sync_if_changed(self) -> None:
        """Rank 0 changed its parameters outside this engine (resync, checkpoint): stream them
        to the workers before they train again."""
        if self._seen() != self._versions:
            self.session.send("sync")
            self.replica.receive(self.master, digest=False)
            self._versions = self._seen()

    def gradients(self, batch: torch.Tensor) -> tuple[dict[str, torch.Tensor], float, int]:
        """The batch's mean-loss gradients, summed over every rank's share, on rank 0; the
        batch's mean loss and this client's token count."""
        with self.session.lock:
            self._sync_if_changed()
            self.session.send("train", batch)
            grads, loss_sum, tokens = self.replica.gradients(batch, batch.shape[0])
            out = self.replica.reduce(grads, self.device)
            stats = torch.tensor([loss_sum, float(tokens)], dtype=torch.float64)
            dist.reduce(stats, dst=0, op=dist.ReduceOp.SUM, group=self.session.control)
        return out, float(stats[0]) / batch.shape[0], int(stats[1])

    def apply(
        self, results: Sequence[DeMoResult], lr: float | None, local: Callable[[], None]
    ) -> None:
        """Apply on every rank (`local` applies to the master copy) and check agreement."""
        if not results:
            return
        self.applies += 1
        check = self.session.check_every > 0 and self.applies % self.session.check_every == 0
        with self.session.lock:
            self._sync_if_changed()
            if self.stream:
                local()
                self.session.send("sync", check)
                self.replica.receive(self.master, digest=False)
            else:
                self.session.send("apply", [r.to_bytes() for r in results], lr, check)
                local()
            self._versions = self._seen()
            if check:
                mine = param_hash(self.master)
                hashes: list[Any] = [None] * self.session.world
                dist.gather_object(mine, hashes, dst=0, group=self.session.control)
                bad = [r for r, h in enumerate(hashes) if h != mine]
                if bad:
                    raise RanksDiverged(
                        f"rank(s) {bad} hold different parameters than rank 0 after an apply"
                    )


# The workers' side.


def serve(session: Session) -> None:
    """A worker's loop: execute rank 0's commands until it says stop (or goes away)."""
    replica: Replica | None = None
    applied = 0
    while True:
        command = session.receive()
        kind = command[0]
        if kind == "stop":
            break
        if kind == "ping":
            continue
        if kind == "load":
            _, blob, fsdp, micro_batch, demo = command
            replica = Replica.build(session, blob, fsdp, micro_batch, demo, session.device)
            replica.receive(None, digest=False)
            continue
        assert replica is not None, f"{kind} before load"
        if kind == "sync":
            check = len(command) > 1 and bool(command[1])
            digest = replica.receive(None, digest=check)
            if check:
                applied += 1
                _report(session, digest, applied)
        elif kind == "train":
            batch = command[1]
            grads, loss_sum, tokens = replica.gradients(batch, batch.shape[0])
            replica.reduce(grads, torch.device("cpu"))
            stats = torch.tensor([loss_sum, float(tokens)], dtype=torch.float64)
            dist.reduce(stats, dst=0, op=dist.ReduceOp.SUM, group=session.control)
        elif kind == "apply":
            _, raw, lr, check = command
            replica.apply([DeMoResult.from_bytes(r) for r in raw], lr)
            applied += 1
            if check:
                _report(session, param_hash(replica.model), applied)
        else:
            raise RuntimeError(f"unknown command {kind!r} from rank 0")
    session.close()


def _report(session: Session, digest: str | None, applied: int) -> None:
    dist.gather_object(digest, None, dst=0, group=session.control)
    session.event("applied", rank=session.rank, applies=applied, hash=digest)
