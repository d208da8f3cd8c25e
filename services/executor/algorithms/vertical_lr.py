"""ferry.hetero_lr: vertical logistic regression between a guest, hosts and an arbiter.

The protocol and its math are services/executor/vertical/lr.py; these roles only
move its messages (services/executor/vertical/conversation.py) and keep state:

- arbiter: makes a Paillier key pair for this attempt (the private key never
  leaves its memory), sends the public key, decrypts masked gradients and the
  batch losses, and after each epoch tells everyone whether the loss converged.
- guest: label and its features (+ intercept); computes [[d]] and the loss.
- host: its features; sends [[u_h]], returns its masked gradient; with several
  hosts, each adds the loss's cross terms with the hosts before it.

Guest and hosts checkpoint their weights after every epoch; a resumed or
retried step starts from the fewest epochs any party finished. At the end the
host sends the guest its plain partial scores u_h of the held-out rows (as FATE's
prediction does) and the guest reports accuracy, AUC and log-loss there. Each
party keeps only its own weights (artifact hetero-lr-<step>).
"""

from __future__ import annotations

import statistics

import numpy as np

from services.executor.vertical import lr
from services.executor.vertical.conversation import Conversation
from services.executor.vertical.paillier import PaillierDecryptor, PlainDecryptor
from services.executor.vertical.training import (EpochCheckpoints, check_rows, identity, load_local_rows,
                                                 off_loop, receive_backend, start_epoch)
from shared.algorithms import RoleResult
from shared.errors import DataError


def _party(ctx, role: str) -> list[str]:
    return sorted(p.party for p in ctx.task.peers if p.role == role)


def _others(ctx) -> list[str]:
    return sorted(p.party for p in ctx.task.peers if p.party != ctx.task.party)


def _batches(n_train: int, p, epoch: int) -> list[np.ndarray]:
    return lr.batch_positions(n_train, int(p["batch_size"]), int(p["seed"]), epoch)


def _seq(epoch: int, n_batches: int, b: int) -> int:
    return epoch * n_batches + b + 1


def _save_model(ctx, w, rows, role: str, epochs: int) -> str:
    name = f"hetero-lr-{ctx.task.step}"
    ctx.artifacts.save(name, {"w": w, "mean": rows.standardiser.mean, "std": rows.standardiser.std},
                       {"role": role, "features": rows.features, "id_column": rows.id_column,
                        "intercept": role == "guest", "epochs": epochs, "dataset": ctx.task.data_ref})
    return name


async def _masked_step(ctx, conv, backend, arbiter, enc_grad, seq, w, n, lr_e, intercept):
    masked, masks = await off_loop(backend.mask, enc_grad)
    exponents = [getattr(m, "exponent", 0) for m in masked]
    await conv.send(arbiter, "g", seq, await off_loop(backend.to_wire, masked))
    answer, _ = await conv.expect(arbiter, "g_plain", seq)
    grad = backend.unmask(answer, masks, exponents, arbiter)
    if grad.shape != w.shape:
        raise DataError(f"{arbiter} returned {grad.shape[0]} gradient values for {w.shape[0]} weights")
    return lr.step(w, grad, n, lr_e, float(ctx.params["alpha"]), intercept)


class _Trainer:
    """The epoch loop guest and host share; `batch` is the role's part of one mini-batch."""

    label = intercept = False

    async def run(self, ctx) -> RoleResult:
        self.ctx, p = ctx, ctx.params
        self.rows = load_local_rows(ctx, label=self.label, intercept=self.intercept)
        self.arbiter = _party(ctx, "arbiter")[0]
        self.guest, self.hosts = _party(ctx, "guest")[0], _party(ctx, "host")
        width = self.rows.x_train.shape[1]
        self.checkpoints = EpochCheckpoints(ctx, width)
        conv = await Conversation.open(ctx, _others(ctx), p["timeout_s"])
        try:
            await conv.handshake({"rows": float(self.rows.n_rows), "done": float(self.checkpoints.done)})
            check_rows(conv, self.rows.n_rows, [q for q in [self.guest] + self.hosts if q != ctx.task.party])
            self.conv = conv
            self.backend, plan = await receive_backend(conv, self.arbiter, int(p["key_bits"]))
            start = start_epoch(conv, self.checkpoints.done)
            w = self.checkpoints.weights_for(start)
            if start > 0:
                ctx.log.info("hetero_lr.resumed", start_epoch=start, own_done=self.checkpoints.done)
            times, epoch = [], start - 1
            for epoch in range(start, int(p["epochs"]) if not plan.get("finished") else start):
                began = ctx.clock.monotonic()
                w_before, w = w, await self.epoch(epoch, w)
                verdict = (await conv.expect(self.arbiter, "epoch", epoch))[1]
                self.checkpoints.save(epoch, w, w_before, bool(verdict["converged"]))
                times.append(ctx.clock.monotonic() - began)
                await ctx.report(round=epoch + 1, total_rounds=int(p["epochs"]), stage="training",
                                 metrics={"loss": verdict["loss"], "epoch_s": times[-1]})
                ctx.check_stop()
                if verdict["converged"]:
                    break
            model = _save_model(ctx, w, self.rows, ctx.task.role, epoch + 1)
            metrics = await self.finish(w)
        finally:
            await conv.close()
        metrics.update({"epochs": float(epoch + 1), "bytes_sent": float(conv.sent_bytes),
                        "s_per_epoch": statistics.median(times) if times else float("nan")})
        return RoleResult(metrics=metrics, outputs={"model": model})

    async def epoch(self, epoch: int, w: np.ndarray) -> np.ndarray:
        p = self.ctx.params
        lr_e = lr.learning_rate(p["lr_schedule"], float(p["lr"]), float(p["lr_decay"]), epoch)
        batches = _batches(len(self.rows.x_train), p, epoch)
        for b, pos in enumerate(batches):
            w = await self.batch(_seq(epoch, len(batches), b), pos, w, lr_e)
        return w


def _unpack(arrays, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


class HeteroLrGuest(_Trainer):
    label = intercept = True

    async def batch(self, seq, pos, w, lr_e):
        be, conv, x = self.backend, self.conv, self.rows.x_train[pos]
        y = lr.labels_pm(self.rows.y_train[pos], self.ctx.task.data_ref)
        enc_u, enc_s = [], []
        for host in self.hosts:
            arrays, _ = await conv.expect(host, "u", seq)
            enc_u.append(be.from_wire(_unpack(arrays, "u."), host))
            enc_s.append(be.from_wire(_unpack(arrays, "s."), host)[0])
            if len(enc_u[-1]) != len(pos):
                raise DataError(f"{host} sent {len(enc_u[-1])} partial scores for a batch of {len(pos)}")
        u_g = x @ w
        enc_wx, enc_d = await off_loop(lr.guest_residual, be, enc_u, u_g, y)
        await conv.send(self.hosts, "d", seq, await off_loop(be.to_wire, enc_d))
        # Two or more hosts: each host h' gets [[u_h]] of the hosts before it, for the loss's cross terms.
        for j, later in enumerate(self.hosts):
            for earlier, enc in zip(self.hosts[:j], enc_u[:j]):
                await conv.send(later, f"u_of:{earlier}", seq, await off_loop(be.to_wire, enc))
        cross = [be.from_wire((await conv.expect(later, f"cross:{earlier}", seq))[0], later)[0]
                 for j, later in enumerate(self.hosts) for earlier in self.hosts[:j]]
        loss = await off_loop(lr.guest_loss_sum, be, enc_wx, enc_u, enc_s, cross, u_g, y)
        await conv.send(self.arbiter, "loss", seq, await off_loop(be.to_wire, [loss]), {"n": float(len(pos))})
        grad = await off_loop(lr.gradient_sum, be, enc_d, x)
        return await _masked_step(self.ctx, conv, be, self.arbiter, grad, seq, w, len(pos), lr_e, True)

    async def finish(self, w) -> dict[str, float]:
        u = self.rows.x_test @ w
        for host in self.hosts:
            arrays, _ = await self.conv.expect(host, "u_test", 0)
            u_h = np.asarray(arrays.get("u", np.empty(0)), np.float64)
            if u_h.shape != u.shape:
                raise DataError(f"{host} sent {u_h.shape} held-out scores for {u.shape[0]} held-out rows")
            u = u + u_h
        scores = lr.scores(lr.sigmoid(u), self.rows.y_test)
        result = {f"test_{k}": v for k, v in scores.items()}
        await self.conv.send(self.hosts + [self.arbiter], "done", 0, metrics=result)
        return result


class HeteroLrHost(_Trainer):
    async def batch(self, seq, pos, w, lr_e):
        be, conv, x = self.backend, self.conv, self.rows.x_train[pos]
        u, enc_u, enc_s = await off_loop(lr.host_forward, be, w, x)
        wire_u, wire_s = await off_loop(be.to_wire, enc_u), await off_loop(be.to_wire, [enc_s])
        await conv.send(self.guest, "u", seq, {**{f"u.{k}": v for k, v in wire_u.items()},
                                               **{f"s.{k}": v for k, v in wire_s.items()}})
        for earlier in self.hosts[:self.hosts.index(self.ctx.task.party)]:
            enc_other = be.from_wire((await conv.expect(self.guest, f"u_of:{earlier}", seq))[0], self.guest)
            if len(enc_other) != len(pos):
                raise DataError(f"{self.guest} forwarded {len(enc_other)} scores of {earlier} for a batch of {len(pos)}")
            cross = await off_loop(lr.cross_term, be, enc_other, u)
            await conv.send(self.guest, f"cross:{earlier}", seq, await off_loop(be.to_wire, [cross]))
        enc_d = be.from_wire((await conv.expect(self.guest, "d", seq))[0], self.guest)
        if len(enc_d) != len(pos):
            raise DataError(f"{self.guest} sent {len(enc_d)} residuals for a batch of {len(pos)}")
        grad = await off_loop(lr.gradient_sum, be, enc_d, x)
        return await _masked_step(self.ctx, conv, be, self.arbiter, grad, seq, w, len(pos), lr_e, False)

    async def finish(self, w) -> dict[str, float]:
        await self.conv.send(self.guest, "u_test", 0, {"u": self.rows.x_test @ w})
        return dict((await self.conv.expect(self.guest, "done", 0))[1])


class HeteroLrArbiter:
    async def run(self, ctx) -> RoleResult:
        p = ctx.params
        guest, hosts = _party(ctx, "guest")[0], _party(ctx, "host")
        parties = [guest] + hosts
        saved = ctx.checkpoints.load_latest()
        losses = list(saved.meta["losses"]) if saved is not None and saved.meta.get("params") == identity(p) else []
        if p["insecure"]:
            ctx.log.warning("hetero_lr.INSECURE", encryption=p["encryption"], key_bits=p["key_bits"],
                            why="insecure: true allows plain or short-key training; for development only")
        conv = await Conversation.open(ctx, parties, p["timeout_s"])
        try:
            await conv.handshake({"done": float(len(losses))})
            n_rows = {int(conv.hello[q]["rows"]) for q in parties}
            if len(n_rows) != 1:
                raise DataError(f"parties hold different numbers of aligned rows: "
                                f"{ {q: int(conv.hello[q]['rows']) for q in parties} }")
            start = start_epoch(conv, len(losses))
            losses = losses[:start]
            finished = start >= int(p["epochs"]) or _converged(losses, float(p["tol"]))
            encrypted = p["encryption"] == "paillier"
            keys = await off_loop(PaillierDecryptor, int(p["key_bits"])) if encrypted else PlainDecryptor()
            await conv.send(parties, "key", 0, keys.backend.key_wire(),
                            {"encrypted": float(encrypted), "finished": float(finished)})
            n_train = len(lr.split_positions(n_rows.pop(), float(p["test_fraction"]), int(p["seed"]))[0])
            for epoch in range(start, int(p["epochs"]) if not finished else start):
                batches = _batches(n_train, p, epoch)
                total, rows = 0.0, 0
                for b in range(len(batches)):
                    seq = _seq(epoch, len(batches), b)
                    arrays, metrics = await conv.expect(guest, "loss", seq)
                    total += float((await off_loop(keys.decrypt, arrays, guest))[0])
                    rows += int(metrics["n"])
                    for q in parties:
                        masked, _ = await conv.expect(q, "g", seq)
                        await conv.send(q, "g_plain", seq, await off_loop(keys.decrypt_masked, masked, q))
                losses.append(total / rows)
                converged = _converged(losses, float(p["tol"]))
                ctx.checkpoints.save({}, {"losses": losses, "params": identity(p)})
                await conv.send(parties, "epoch", epoch, metrics={"loss": losses[-1], "converged": float(converged)})
                await ctx.report(round=epoch + 1, total_rounds=int(p["epochs"]), stage="training",
                                 metrics={"loss": losses[-1]})
                ctx.check_stop()
                if converged:
                    break
            result = dict((await conv.expect(guest, "done", 0))[1])
        finally:
            await conv.close()
        result.update({"epochs": float(len(losses)), "train_loss": losses[-1] if losses else float("nan")})
        return RoleResult(metrics=result)


def _converged(losses: list[float], tol: float) -> bool:
    return len(losses) >= 2 and abs(losses[-1] - losses[-2]) < tol
