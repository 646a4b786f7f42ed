"""Batches of environments (dm-control or Gymnasium): `make_envs` -> `VecEnv`.

A `VecEnv` steps ``N`` environments (`experiments.envs.make_env`), in this process or one
process each, and returns the keys of a single environment stacked to ``[N, ...]``. An
environment that returned ``is_last`` is reset on the following `step` (its action is
ignored), so the caller just keeps stepping. Environment ``i`` is seeded ``seeds[i]`` (the
runner passes ``envs.env_seed(run seed, i)``, a hash of both), or ``seed + i`` without them.

Workers are started with 'spawn': forking a process that holds an OpenGL context is unsafe.
Importing this module imports `experiments.envs`, which sets ``MUJOCO_GL`` before dm_control
loads, so a spawned worker renders with the same backend.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import pickle
import signal
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

import numpy as np

from experiments.envs import Env, Spec, check_int, check_task, make_env


class _RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the cause of the re-raised exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f"\n\nin the worker process:\n{self.tb}"


def _error_reply(err: BaseException) -> tuple[str, tuple[bytes | None, str]]:
    tb = "".join(traceback.format_exception(err))
    try:
        payload: bytes | None = pickle.dumps(err)
    except Exception:
        payload = None
    return ("error", (payload, tb))


def _describe(env: Env) -> tuple[Spec, int, int, int | None, bool]:
    return env.obs_spec, env.act_dim, env.action_repeat, env.max_agent_steps, env.discrete


def _worker_main(conn: Connection, env_kwargs: dict[str, Any]) -> None:
    """Serve ('reset' | 'step' | 'close', arg) requests for one environment over ``conn``.

    Runs in a process started with the 'spawn' context: importing this module (to unpickle this
    function) sets MUJOCO_GL before dm_control is imported, and no OpenGL context is inherited.
    Ctrl-C in a terminal reaches the whole process group; workers ignore it so that the parent
    can finish its step, save, and close them.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    env = None
    try:
        try:
            env = make_env(**env_kwargs)
        except Exception as err:
            conn.send(_error_reply(err))
            return
        conn.send(("ok", _describe(env)))
        while True:
            command, arg = conn.recv()
            if command == "close":
                conn.send(("ok", None))
                return
            try:
                result = env.reset(arg) if command == "reset" else env.step(arg)
            except Exception as err:
                conn.send(_error_reply(err))
            else:
                conn.send(("ok", result))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        # Parent interrupted or gone: exit quietly, it reports the failure.
        pass
    finally:
        if env is not None:
            env.close()
        conn.close()


class _InProcessWorker:
    """Runs an environment in this process behind the same request/reply interface as a process."""

    pid = None

    def __init__(self, env_kwargs: dict[str, Any]) -> None:
        self._env = make_env(**env_kwargs)
        self._reply: tuple[str, Any] = ("ok", _describe(self._env))

    def request(self, command: str, arg: Any = None) -> None:
        try:
            result = self._env.reset(arg) if command == "reset" else self._env.step(arg)
        except Exception as err:
            self._reply = ("error", (err, ""))
        else:
            self._reply = ("ok", result)

    def reply(self) -> tuple[str, Any]:
        return self._reply

    def close(self) -> None:
        self._env.close()


class _ProcessWorker:
    """Runs an environment in a spawned process; requests and replies travel over a pipe."""

    def __init__(self, ctx: Any, env_kwargs: dict[str, Any]) -> None:
        self._conn, child_conn = ctx.Pipe()
        self._process = ctx.Process(target=_worker_main, args=(child_conn, env_kwargs), daemon=True)
        self._process.start()
        child_conn.close()
        self.pid: int | None = self._process.pid

    def request(self, command: str, arg: Any = None) -> None:
        self._conn.send((command, arg))

    def reply(self) -> tuple[str, Any]:
        try:
            status, payload = self._conn.recv()
        except (EOFError, ConnectionError) as err:
            self._process.join(timeout=1.0)
            raise RuntimeError(
                f"environment worker pid {self.pid} exited unexpectedly "
                f"(exit code {self._process.exitcode})"
            ) from err
        if status == "error":
            data, tb = payload
            try:
                err = pickle.loads(data) if data is not None else RuntimeError(tb)
            except Exception:
                err = RuntimeError(tb)
            return ("error", (err, tb))
        return status, payload

    def close(self, timeout: float = 5.0) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(("close", None))
                if self._conn.poll(timeout):
                    self._conn.recv()
            except (EOFError, OSError):
                pass
        # Joining also reaps a worker that already exited, so none stays a zombie.
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


class VecEnv:
    """``N`` environments stepped together; outputs are the single-env dicts stacked to
    ``[N, ...]``.

    Auto-reset (DreamerV3's convention): after environment i returned ``is_last``, the next
    `step` ignores ``actions[i]`` and returns environment i's reset observation (``is_first=True``,
    reward 0), so the caller keeps stepping. `step` before `reset` returns reset observations.

    Build with `make_envs`. With ``parallel=True`` each environment lives in its own process and
    all step at once; with ``parallel=False`` they step in turn in this process. Both give the
    same outputs for the same seeds and actions. An exception inside an environment is re-raised
    here with its original type, chained to the worker's traceback.
    """

    def __init__(self, env_kwargs: Sequence[dict[str, Any]], parallel: bool) -> None:
        self.parallel = bool(parallel)
        self._workers: list[_InProcessWorker | _ProcessWorker] = []
        self._closed = False
        try:
            if self.parallel:
                ctx = mp.get_context("spawn")
                self._workers = [_ProcessWorker(ctx, kwargs) for kwargs in env_kwargs]
            else:
                self._workers = [_InProcessWorker(kwargs) for kwargs in env_kwargs]
            specs = self._gather()
        except BaseException:
            self.close()
            raise
        self.obs_spec: Spec
        (self.obs_spec, self.act_dim, self.action_repeat, self.max_agent_steps, self.discrete) = (
            specs[0]
        )
        self.num_envs = len(self._workers)
        self._needs_reset = np.ones(self.num_envs, dtype=bool)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers (empty when stepping in this process)."""
        return [w.pid for w in self._workers if w.pid is not None]

    def _gather(self) -> list[Any]:
        # Read every reply before raising so that no pipe holds a stale reply afterwards.
        replies = [worker.reply() for worker in self._workers]
        for status, payload in replies:
            if status == "error":
                err, tb = payload
                if tb and self.parallel:
                    raise err from _RemoteTraceback(tb)
                raise err
        return [payload for _, payload in replies]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("VecEnv is closed; create a new one with make_envs()")

    @staticmethod
    def _stack(results: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {key: np.stack([np.asarray(r[key]) for r in results]) for key in results[0]}

    def reset(self, seeds: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Reset every environment (environment i's RNG re-seeded with ``seeds[i]``, if given).
        Returns the observation keys plus flags, each ``[N, ...]``."""
        self._check_open()
        if seeds is not None and len(seeds) != self.num_envs:
            raise ValueError(f"{len(seeds)} seeds for {self.num_envs} environments; give one each")
        for i, worker in enumerate(self._workers):
            worker.request("reset", None if seeds is None else int(seeds[i]))
        results = self._gather()
        self._needs_reset[:] = False
        return self._stack(results)

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Step every environment with ``actions: [N, A]``; returns dicts of ``[N, ...]`` arrays.

        Environments that ended on the previous call are reset instead (their action is ignored).
        """
        self._check_open()
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (self.num_envs, self.act_dim):
            raise ValueError(
                f"actions must have shape [num_envs, act_dim] = ({self.num_envs}, "
                f"{self.act_dim}), got {actions.shape}"
            )
        for i, worker in enumerate(self._workers):
            if self._needs_reset[i]:
                worker.request("reset")
            else:
                worker.request("step", actions[i])
        results = self._gather()
        out = self._stack(results)
        self._needs_reset[:] = out["is_last"]
        return out

    def close(self) -> None:
        """Stop the workers (joined, so none is left as a zombie) and free the environments."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            worker.close()

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Interpreter shutdown may already have torn down what close() needs.
        with contextlib.suppress(Exception):
            self.close()


def make_envs(
    task: str,
    obs: str = "proprio",
    num_envs: int = 1,
    seed: int = 0,
    parallel: bool = False,
    action_repeat: int | None = None,
    size: tuple[int, int] = (64, 64),
    camera: int | None = None,
    fast_render: bool = False,
    time_limit: int = 0,
    seeds: Sequence[int] | None = None,
    gray: bool = False,
    atari: dict[str, Any] | None = None,
) -> VecEnv:
    """Build ``num_envs`` copies of a task as one `VecEnv`; environment i is seeded ``seed + i``
    (or ``seeds[i]`` when given: one seed per environment).

    Arguments other than ``num_envs`` and ``parallel`` are those of `envs.make_env`: images
    of ``size`` (height, width), one gray channel with ``gray``, the Atari options ``atari``.
    ``parallel=True`` gives each environment its own process (started with 'spawn': forking a
    process that holds an OpenGL context is unsafe). Scripts that use it need an
    ``if __name__ == '__main__':`` guard, as for any spawned multiprocessing.
    """
    num_envs = check_int("num_envs", num_envs, 1)
    seed = check_int("seed", seed, 0, 2**32 - num_envs + 1)
    if seeds is None:
        seeds = [seed + i for i in range(num_envs)]
    if len(seeds) != num_envs:
        raise ValueError(f"{len(seeds)} seeds for {num_envs} environments; give one each")
    seeds = [check_int("seeds[i]", s, 0, 2**32) for s in seeds]
    # Fail here, not inside the workers, on a bad name.
    check_task(task)
    kwargs = [
        dict(
            task=task,
            obs=obs,
            seed=seeds[i],
            action_repeat=action_repeat,
            size=tuple(size),
            camera=camera,
            fast_render=fast_render,
            time_limit=time_limit,
            gray=gray,
            atari=atari,
        )
        for i in range(num_envs)
    ]
    return VecEnv(kwargs, parallel=parallel)


__all__ = ["VecEnv", "make_envs"]
